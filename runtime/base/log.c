/* log.c - formats, redacts and writes log lines.
 * Owns the output target (stderr or an append-only file) and the list of secrets.
 * Knows nothing about what is logged: parts pass an event name and key=value fields. */
#include "base/log.h"

#include "base/clock.h"
#include "base/json_text.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
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

void log_redact_secret(char *buf, size_t cap, const char *secret)
{
	size_t len = strlen(secret);

	if (len == 0)
		return;
	for (char *p = strstr(buf, secret); p; p = strstr(p, secret)) {
		splice_redacted(buf, cap, p, len);
		p += strlen(REDACTED);
	}
}

void log_redact(const struct log *lg, char *buf, size_t cap)
{
	static const char *const markers[] = {
		"Bearer ", "bearer ", "?t=", "&t=", "token=", "secret=", "\"token\":\"",
		"\"secret\":\"", "Basic ", "password=", "\"password\":\"",
		"_token\":\"", "_secret\":\"",	/* OAuth answers: access_token, client_secret */
	};

	for (size_t i = 0; i < lg->nsecrets; i++)
		log_redact_secret(buf, cap, lg->secrets[i]);
	for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++)
		redact_after(buf, cap, markers[i]);
}

static size_t format_time(char *buf, size_t cap)
{
	uint64_t ms = clock_wall_ms();
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	size_t n;

	gmtime_r(&secs, &tm);
	n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(buf + n, cap - n, ".%03dZ", (int)(ms % 1000));
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

/* {===== Values: what a caller logs through %s is data, never line structure */

/* The length of the well-formed UTF-8 sequence at S (at most N bytes), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t k;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		k = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		k = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		k = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;	/* overlong */
	else if (s[0] == 0xed)
		hi = 0x9f;	/* surrogates */
	else if (s[0] == 0xf0)
		lo = 0x90;	/* overlong */
	else if (s[0] == 0xf4)
		hi = 0x8f;	/* above U+10FFFF */
	if (n < k || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < k; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return k;
}

/* Appends the first SLEN bytes of S for a text line: control characters, quotes,
 * backslashes and bytes that are not UTF-8 escaped (\n \r \t \" \\ \xNN), so a value
 * can neither end the line nor close the quotes around it, and the line stays UTF-8.
 * Stops early rather than overflow; OUT stays terminated. */
static size_t text_escape(char *out, size_t cap, size_t len, const char *s, size_t slen)
{
	for (size_t i = 0; i < slen && len + 5 < cap; i++) {
		unsigned char c = (unsigned char)s[i];
		size_t k = c >= 0x80 ? utf8_len((const unsigned char *)s + i, slen - i) : 1;

		if (k > 1) {
			memcpy(out + len, s + i, k);
			len += k;
			i += k - 1;
		} else if (k == 0) {
			len += (size_t)snprintf(out + len, cap - len, "\\x%02x", c);
		} else if (c == '"' || c == '\\') {
			out[len++] = '\\';
			out[len++] = (char)c;
		} else if (c == '\n' || c == '\r' || c == '\t') {
			out[len++] = '\\';
			out[len++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
		} else if (c < 0x20 || c == 0x7f) {
			len += (size_t)snprintf(out + len, cap - len, "\\x%02x", c);
		} else {
			out[len++] = (char)c;
		}
	}
	if (len < cap)
		out[len] = '\0';
	return len;
}

/* Appends one value: redacted first (escaping would hide a secret from the match), then
 * escaped; outside quotes, a value with a space or a quote gets quotes of its own. A NUL
 * inside (Lua strings may hold one) is written as \x00, each piece redacted alone. */
static size_t append_value(const struct log *lg, char *out, size_t cap, size_t len, const char *v,
			   size_t vlen, bool in_quotes)
{
	char raw[LOG_LINE_MAX];
	size_t n = vlen < sizeof(raw) - 1 ? vlen : sizeof(raw) - 1;
	bool quote = !in_quotes && (memchr(v, ' ', n) || memchr(v, '"', n));

	if (quote && len + 3 >= cap)
		return len;
	if (quote)
		out[len++] = '"';
	for (size_t at = 0; at <= n;) {
		const char *nul = memchr(v + at, '\0', n - at);
		size_t piece = nul ? (size_t)(nul - (v + at)) : n - at;

		memcpy(raw, v + at, piece);
		raw[piece] = '\0';
		log_redact(lg, raw, sizeof(raw));
		len = text_escape(out, quote ? cap - 1 : cap, len, raw, strlen(raw));
		if (!nul)
			break;
		len = text_escape(out, quote ? cap - 1 : cap, len, "", 1);
		at += piece + 1;
	}
	if (quote) {
		out[len++] = '"';
		out[len] = '\0';
	}
	return len;
}

/* One printf conversion other than %s, formatted by snprintf from its own spec. */
static int format_number(char *out, size_t cap, const char *spec, char conv, const char *lenmod,
			 va_list *ap)
{
	bool l = lenmod[0] == 'l' && lenmod[1] != 'l', ll = lenmod[0] == 'l' && lenmod[1] == 'l';

	switch (conv) {
	case 'd': case 'i': case 'c':
		if (ll) return snprintf(out, cap, spec, va_arg(*ap, long long));
		if (l) return snprintf(out, cap, spec, va_arg(*ap, long));
		if (lenmod[0] == 'z') return snprintf(out, cap, spec, va_arg(*ap, ssize_t));
		if (lenmod[0] == 'j') return snprintf(out, cap, spec, va_arg(*ap, intmax_t));
		if (lenmod[0] == 't') return snprintf(out, cap, spec, va_arg(*ap, ptrdiff_t));
		return snprintf(out, cap, spec, va_arg(*ap, int));
	case 'u': case 'x': case 'X': case 'o':
		if (ll) return snprintf(out, cap, spec, va_arg(*ap, unsigned long long));
		if (l) return snprintf(out, cap, spec, va_arg(*ap, unsigned long));
		if (lenmod[0] == 'z') return snprintf(out, cap, spec, va_arg(*ap, size_t));
		if (lenmod[0] == 'j') return snprintf(out, cap, spec, va_arg(*ap, uintmax_t));
		if (lenmod[0] == 't') return snprintf(out, cap, spec, va_arg(*ap, ptrdiff_t));
		return snprintf(out, cap, spec, va_arg(*ap, unsigned));
	case 'f': case 'F': case 'g': case 'G': case 'e': case 'E': case 'a': case 'A':
		if (lenmod[0] == 'L') return snprintf(out, cap, spec, va_arg(*ap, long double));
		return snprintf(out, cap, spec, va_arg(*ap, double));
	case 'p':
		return snprintf(out, cap, spec, va_arg(*ap, void *));
	default:
		return 0;	/* %n and unknown conversions write nothing */
	}
}

/* Reads a width or precision: digits, or '*' taken from AP. -1 when absent. */
static int read_count(const char **f, va_list *ap)
{
	int n = 0;

	if (**f == '*') {
		(*f)++;
		return va_arg(*ap, int);
	}
	if (!isdigit((unsigned char)**f))
		return -1;
	while (isdigit((unsigned char)**f))
		n = n * 10 + (*(*f)++ - '0');
	return n;
}

/* Formats one conversion starting after '%' at *F; returns the new length of OUT. */
static size_t format_one(const struct log *lg, char *out, size_t cap, size_t len, const char **f,
			 va_list *ap, bool in_quotes)
{
	char flags[8] = "", lenmod[3] = "", spec[48], num[128];
	size_t nf = 0, nl = 0;
	int width, prec = -1, n;
	char conv;

	while (**f && strchr("-+ #0", **f) && nf < sizeof(flags) - 1)
		flags[nf++] = *(*f)++;
	width = read_count(f, ap);
	if (**f == '.') {
		(*f)++;
		prec = read_count(f, ap);
		if (prec < 0)
			prec = 0;
	}
	while (**f && strchr("hlLzjt", **f) && nl < sizeof(lenmod) - 1)
		lenmod[nl++] = *(*f)++;
	conv = **f;
	if (conv)
		(*f)++;
	if (conv == '%') {
		append(out, cap, &len, "%");
		return len;
	}
	if (conv == 's') {
		const char *s = va_arg(*ap, const char *);

		if (!s)
			s = "(null)";
		return append_value(lg, out, cap, len, s, prec >= 0 ? strnlen(s, (size_t)prec) : strlen(s),
				    in_quotes);
	}
	snprintf(spec, sizeof(spec), "%%%s", flags);
	if (width >= 0)
		snprintf(spec + strlen(spec), sizeof(spec) - strlen(spec), "%d", width);
	if (prec >= 0)
		snprintf(spec + strlen(spec), sizeof(spec) - strlen(spec), ".%d", prec);
	snprintf(spec + strlen(spec), sizeof(spec) - strlen(spec), "%s%c", lenmod, conv);
	n = format_number(num, sizeof(num), spec, conv, lenmod, ap);
	if (n > 0)
		append(out, cap, &len, num);
	return len;
}

/* printf for log fields: the format's own text is line structure and is copied, every
 * %s argument is a value and goes through append_value. Quotes in the format say
 * whether a value already sits between quotes (key="%s"). */
static size_t format_fields(const struct log *lg, char *out, size_t cap, const char *fmt, va_list ap)
{
	size_t len = 0;
	bool in_quotes = false;
	va_list args;

	va_copy(args, ap);
	out[0] = '\0';
	for (const char *f = fmt; *f && len + 1 < cap;) {
		if (*f != '%') {
			if (*f == '"')
				in_quotes = !in_quotes;
			out[len++] = *f++;
			out[len] = '\0';
			continue;
		}
		f++;
		len = format_one(lg, out, cap, len, &f, &args, in_quotes);
	}
	va_end(args);
	return len;
}

/* Undoes text_escape for the JSON form of a line. */
static size_t text_unescape(const char *s, size_t n, char *out, size_t cap)
{
	size_t len = 0;

	for (size_t i = 0; i < n && len + 2 < cap; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\\' && i + 1 < n) {
			c = (unsigned char)s[++i];
			if (c == 'n')
				c = '\n';
			else if (c == 'r')
				c = '\r';
			else if (c == 't')
				c = '\t';
			else if (c == 'x' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
				 isxdigit((unsigned char)s[i + 2])) {
				char hex[3] = { s[i + 1], s[i + 2], '\0' };

				c = (unsigned char)strtol(hex, NULL, 16);
				i += 2;
				if (c >= 0x80) {	/* a stray byte: as U+0080-U+00FF, so JSON stays UTF-8 */
					out[len++] = (char)(0xc0 | (c >> 6));
					c = (unsigned char)(0x80 | (c & 0x3f));
				}
			}
		}
		out[len++] = (char)c;
	}
	out[len] = '\0';
	return len;
}

/* }===== */

static void append_json_value(char *out, size_t cap, size_t *len, const char *v, size_t vlen)
{
	char raw[LOG_LINE_MAX];
	size_t n = text_unescape(v, vlen, raw, sizeof(raw));

	*len = json_text_escape(out, cap, *len, raw, n);
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
			append_json_value(out, cap, len, key, strlen(key));
			append(out, cap, len, "\"");
			return;
		}
		val = eq + 1;
		if (*val == '"') {
			val++;
			for (end = val; *end && *end != '"'; end++)
				if (*end == '\\' && end[1])
					end++;	/* an escaped quote does not end the value */
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
		append_json_value(out, cap, len, val, (size_t)(end - val));
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

/* Writes one line from BODY, fields already formatted and escaped. */
static void emit(struct log *lg, enum log_level level, const char *event, char *body)
{
	char ts[40], ev[256], line[LOG_LINE_MAX * 2];
	size_t len = 0;

	format_time(ts, sizeof(ts));
	log_redact(lg, body, LOG_LINE_MAX);	/* markers the format text and a value make together */
	if (lg->json) {
		len = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"",
				       ts, level_names[level]);
		len = json_text_escape(line, sizeof(line), len, event, strlen(event));
		append(line, sizeof(line), &len, "\"");
		fields_to_json(line, sizeof(line), &len, body);
		append(line, sizeof(line), &len, "}");
	} else {
		text_escape(ev, sizeof(ev), 0, event, strlen(event));
		len = (size_t)snprintf(line, sizeof(line), "%s %s %s%s%s", ts, level_names[level], ev,
				       body[0] ? " " : "", body);
		if (len >= sizeof(line) - 1)
			len = sizeof(line) - 2;
	}
	line[len++] = '\n';
	write_all(lg->fd, line, len);
}

void log_vwrite(struct log *lg, enum log_level level, const char *event, const char *fields,
		va_list ap)
{
	char body[LOG_LINE_MAX];

	if (level < lg->level)
		return;
	format_fields(lg, body, sizeof(body), fields ? fields : "", ap);
	emit(lg, level, event, body);
}

size_t log_append_field(const struct log *lg, char *buf, size_t cap, size_t len, const char *key,
			const char *value, size_t vlen)
{
	if (len + 2 >= cap)
		return len;
	if (len > 0)
		buf[len++] = ' ';
	/* A key is line structure: anything but a plain name would let it forge a field. */
	for (const char *k = key; *k && len + 2 < cap; k++)
		buf[len++] = isalnum((unsigned char)*k) || strchr("_.-", *k) ? *k : '_';
	buf[len++] = '=';
	buf[len] = '\0';
	return append_value(lg, buf, cap, len, value, vlen, false);
}

void log_write_fields(struct log *lg, enum log_level level, const char *event, const char *fields)
{
	char body[LOG_LINE_MAX];

	if (level < lg->level)
		return;
	snprintf(body, sizeof(body), "%s", fields);
	emit(lg, level, event, body);
}

void log_write(struct log *lg, enum log_level level, const char *event, const char *fields, ...)
{
	va_list ap;

	va_start(ap, fields);
	log_vwrite(lg, level, event, fields, ap);
	va_end(ap);
}
