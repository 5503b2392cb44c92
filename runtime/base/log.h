/* log.h - leveled, one-line-per-event logging with secret redaction.
 * A line is an event name plus key=value fields; with JSON output each line is one
 * JSON object. Every registered secret, bearer token and `t=`/`token=` query value is
 * replaced by "***" before the line is written, so callers may log URLs and headers. */
#ifndef HANDOFFD_LOG_H
#define HANDOFFD_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

enum log_level { LEVEL_DEBUG, LEVEL_INFO, LEVEL_WARN, LEVEL_ERROR };

struct log;

/* Logs to stderr at LEVEL_INFO in text form. NULL on allocation failure. */
struct log *log_new(void);
void log_free(struct log *lg);

/* Appends to PATH (created 0640). Returns 0 or a negative errno; the old target stays on error. */
int log_open_file(struct log *lg, const char *path);
/* Reopens the file given to log_open_file (for logrotate on SIGHUP). */
int log_reopen(struct log *lg);
void log_set_level(struct log *lg, enum log_level level);
enum log_level log_get_level(const struct log *lg);
void log_set_json(struct log *lg, bool json);
/* Parses "debug", "info", "warn", "error". Returns 0 or -EINVAL. */
int log_level_parse(const char *name, enum log_level *out);

/* Registers a string that must never appear in a log line (copied). Strings shorter
 * than 4 bytes are ignored: redacting them would mangle ordinary words. */
int log_add_secret(struct log *lg, const char *secret);

/* Writes one line: EVENT followed by the printf-formatted FIELDS, "key=value key=value".
 * Every %s argument is a value: redacted, then escaped (control characters, quotes and
 * backslashes as \n \r \t \" \\ \xNN), and quoted when it holds a space or a quote
 * unless the format already quotes it (key="%s"). The format's own text is copied. */
void log_write(struct log *lg, enum log_level level, const char *event, const char *fields, ...)
	__attribute__((format(printf, 4, 5)));
void log_vwrite(struct log *lg, enum log_level level, const char *event, const char *fields,
		va_list ap);

/* Appends " KEY=VALUE" (no space when LEN is 0) to BUF for log_write_fields: the key
 * reduced to [A-Za-z0-9_.-], the first VLEN bytes of VALUE redacted and escaped as
 * log_write does. Returns the new length; BUF stays terminated within CAP. */
size_t log_append_field(const struct log *lg, char *buf, size_t cap, size_t len, const char *key,
			const char *value, size_t vlen);
/* Writes one line from FIELDS built by log_append_field (for key=value lists whose keys
 * are data, like the scripts' log calls). */
void log_write_fields(struct log *lg, enum log_level level, const char *event, const char *fields);

/* Replaces every occurrence of SECRET in BUF (NUL-terminated, capacity CAP) by "***",
 * for text that is not a log line yet (a config error before the log is set up). */
void log_redact_secret(char *buf, size_t cap, const char *secret);

/* Redacts secrets in BUF (NUL-terminated, capacity CAP) in place. Exposed for tests. */
void log_redact(const struct log *lg, char *buf, size_t cap);

#define log_debug(lg, ...) log_write((lg), LEVEL_DEBUG, __VA_ARGS__)
#define log_info(lg, ...) log_write((lg), LEVEL_INFO, __VA_ARGS__)
#define log_warn(lg, ...) log_write((lg), LEVEL_WARN, __VA_ARGS__)
#define log_error(lg, ...) log_write((lg), LEVEL_ERROR, __VA_ARGS__)

#endif
