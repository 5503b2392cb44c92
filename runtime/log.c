/* log.c - formats, redacts and writes log lines.
 * Owns the output target (stderr or an append-only file) and the list of secrets.
 * Knows nothing about what is logged: parts pass an event name and key=value fields. */
#include "log.h"

#include "json_text.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 8192
#define LOG_SECRETS_MAX 64
#define REDACTED "***"

struct log {
	int fd;			/* 2 or an owned file descriptor */
	char *path;		/* the file given to log_open_file, for log_reopen */
	enum log_level level;
	bool json;
	char *secrets[LOG_SECRETS_MAX];
	size_t nsecrets;
};

static const char *const level_names[] = { "debug", "info", "warn", "error" };

struct log *log_new(void)
{
	struct log *lg = calloc(1, sizeof(*lg));

	if (!lg)
		return NULL;
	lg->fd = STDERR_FILENO;
	lg->level = LEVEL_INFO;
	return lg;
}

void log_free(struct log *lg)
{
	if (!lg)
		return;
	if (lg->fd != STDERR_FILENO)
		close(lg->fd);
	for (size_t i = 0; i < lg->nsecrets; i++)
		free(lg->secrets[i]);
	free(lg->path);
	free(lg);
}

static int open_append(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);

	return fd < 0 ? -errno : fd;
}

int log_open_file(struct log *lg, const char *path)
{
	char *copy = strdup(path);
	int fd;

	if (!copy)
		return -ENOMEM;
	fd = open_append(path);
	if (fd < 0) {
		free(copy);
		return fd;
	}
	if (lg->fd != STDERR_FILENO)
		close(lg->fd);
	free(lg->path);
	lg->fd = fd;
	lg->path = copy;
	return 0;
}

int log_reopen(struct log *lg)
{
	int fd;

	if (!lg->path)
		return 0;
	fd = open_append(lg->path);
	if (fd < 0)
		return fd;
	close(lg->fd);
	lg->fd = fd;
	return 0;
}

void log_set_level(struct log *lg, enum log_level level)
{
	lg->level = level;
}

enum log_level log_get_level(const struct log *lg)
{
	return lg->level;
}

void log_set_json(struct log *lg, bool json)
{
	lg->json = json;
}

int log_level_parse(const char *name, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *log_level_name(enum log_level level)
{
	return level_names[level];
}

int log_add_secret(struct log *lg, const char *secret)
{
	if (!secret || strlen(secret) < 4)
		return 0;
	for (size_t i = 0; i < lg->nsecrets; i++)
		if (strcmp(lg->secrets[i], secret) == 0)
			return 0;
	if (lg->nsecrets == LOG_SECRETS_MAX)
		return -ENOSPC;
	lg->secrets[lg->nsecrets] = strdup(secret);
	if (!lg->secrets[lg->nsecrets])
		return -ENOMEM;
	lg->nsecrets++;
	return 0;
}

/* Replaces LEN bytes at P with "***", keeping the string terminated within CAP. */
static void splice_redacted(char *buf, size_t cap, char *p, size_t len)
{
	size_t tail = strlen(p + len) + 1;
	size_t rlen = strlen(REDACTED);

	if ((size_t)(p - buf) + rlen + tail > cap)
		tail = cap - (size_t)(p - buf) - rlen;
	memmove(p + rlen, p + len, tail);
	memcpy(p, REDACTED, rlen);
	buf[cap - 1] = '\0';
}

static bool is_token_char(char c)
{
	return isalnum((unsigned char)c) || strchr("-._~+/=%:", c);
}

/* Redacts the value that follows every occurrence of MARKER. */
static void redact_after(char *buf, size_t cap, const char *marker)
{
	size_t mlen = strlen(marker);

	for (char *p = strstr(buf, marker); p; p = strstr(p, marker)) {
		char *v = p + mlen;
		size_t n = 0;

		while (v[n] && is_token_char(v[n]))
			n++;
		if (n > 0 && strncmp(v, REDACTED, n) != 0)
			splice_redacted(buf, cap, v, n);
		p = v;
	}
}

void log_redact(const struct log *lg, char *buf, size_t cap)
{
	static const char *const markers[] = {
		"Bearer ", "bearer ", "?t=", "&t=", "token=", "secret=", "\"token\":\"",
		"\"secret\":\"", "Basic ",
	};

	for (size_t i = 0; i < lg->nsecrets; i++) {
		size_t len = strlen(lg->secrets[i]);

		for (char *p = strstr(buf, lg->secrets[i]); p; p = strstr(p, lg->secrets[i])) {
			splice_redacted(buf, cap, p, len);
			p += strlen(REDACTED);
		}
	}
	for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++)
		redact_after(buf, cap, markers[i]);
}

static size_t format_time(char *buf, size_t cap)
{
	struct timeval tv;
	struct tm tm;
	size_t n;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(buf + n, cap - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
	return n;
}

static void append(char *out, size_t cap, size_t *len, const char *s)
{
	size_t n = strlen(s);

	if (*len + 1 >= cap)
		return;
	if (*len + n >= cap)
		n = cap - *len - 1;
	memcpy(out + *len, s, n);
	*len += n;
	out[*len] = '\0';
}

/* Turns `k=v k2="two words"` into `,"k":"v","k2":"two words"`. Text that is not a
 * key=value pair lands under "msg", so nothing a caller logs is dropped. */
static void fields_to_json(char *out, size_t cap, size_t *len, const char *f)
{
	while (*f) {
		const char *key, *eq, *val, *end;

		while (*f == ' ')
			f++;
		if (!*f)
			break;
		key = f;
		eq = key;
		while (*eq && *eq != '=' && *eq != ' ')
			eq++;
		if (*eq != '=') {
			append(out, cap, len, ",\"msg\":\"");
			*len = json_text_escape(out, cap, *len, key, strlen(key));
			append(out, cap, len, "\"");
			return;
		}
		val = eq + 1;
		if (*val == '"') {
			val++;
			end = val;
			while (*end && !(*end == '"' && (end[1] == ' ' || end[1] == '\0')))
				end++;
			f = *end ? end + 1 : end;
		} else {
			end = val;
			while (*end && *end != ' ')
				end++;
			f = end;
		}
		append(out, cap, len, ",\"");
		*len = json_text_escape(out, cap, *len, key, (size_t)(eq - key));
		append(out, cap, len, "\":\"");
		*len = json_text_escape(out, cap, *len, val, (size_t)(end - val));
		append(out, cap, len, "\"");
	}
}

static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;	/* a log that cannot be written must not take the daemon down */
		buf += n;
		len -= (size_t)n;
	}
}

void log_vwrite(struct log *lg, enum log_level level, const char *event, const char *fields,
		va_list ap)
{
	char ts[40], body[LOG_LINE_MAX], line[LOG_LINE_MAX * 2];
	size_t len = 0;

	if (level < lg->level)
		return;
	format_time(ts, sizeof(ts));
	vsnprintf(body, sizeof(body), fields ? fields : "", ap);
	log_redact(lg, body, sizeof(body));
	if (lg->json) {
		len = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"",
				       ts, level_names[level]);
		len = json_text_escape(line, sizeof(line), len, event, strlen(event));
		append(line, sizeof(line), &len, "\"");
		fields_to_json(line, sizeof(line), &len, body);
		append(line, sizeof(line), &len, "}");
	} else {
		len = (size_t)snprintf(line, sizeof(line), "%s %s %s%s%s", ts, level_names[level], event,
				       body[0] ? " " : "", body);
		if (len >= sizeof(line) - 1)
			len = sizeof(line) - 2;
	}
	line[len++] = '\n';
	write_all(lg->fd, line, len);
}

void log_write(struct log *lg, enum log_level level, const char *event, const char *fields, ...)
{
	va_list ap;

	va_start(ap, fields);
	log_vwrite(lg, level, event, fields, ap);
	va_end(ap);
}
