/* cmd_parse.c - `handoffd parse FILE|-`: parses a Direct Line payload the way the daemon
 * does and prints what it found as one JSON object on one line (the contract other
 * tools depend on; see README). A payload the parser refuses prints nothing on stdout,
 * one line on stderr, "handoffd: FILE: <reason> at byte <offset>", and exits 65.
 * The parsing is activity.c's and handoff.c's; this file reads and prints. */
#include "daemon/cli.h"

#include <handoffd/handoff.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void)
{
	fprintf(stderr, "usage: handoffd parse FILE|-\n");
	return EXIT_USAGE;
}

/* Reads FP whole, but no more than LIMIT + 1 bytes: one byte too many is enough for the
 * parser to refuse the payload as too large. Leaves HD_PARSE_PADDING zero bytes after
 * the data so that it is parsed in place. NULL with errno set on failure. */
static char *slurp(FILE *fp, size_t limit, size_t *len)
{
	size_t cap = 64 * 1024, n = 0;
	char *buf = malloc(cap + HD_PARSE_PADDING), *p;

	while (buf) {
		size_t want = cap - n < limit + 1 - n ? cap - n : limit + 1 - n;
		size_t got = fread(buf + n, 1, want, fp);
		n += got;
		if (got < want || n > limit) {
			if (ferror(fp)) {
				int e = errno ? errno : EIO;
				free(buf);
				errno = e;
				return NULL;
			}
			memset(buf + n, 0, HD_PARSE_PADDING);
			*len = n;
			return buf;
		}
		cap *= 2;
		if (!(p = realloc(buf, cap + HD_PARSE_PADDING)))
			free(buf);
		buf = p;
	}
	errno = ENOMEM;
	return NULL;
}

/* {==== JSON output */

static void put_str(FILE *out, struct hd_str s)
{
	if (!s.ptr) {
		fputs("null", out);
		return;
	}
	putc('"', out);
	for (size_t i = 0; i < s.len; i++) {
		unsigned char c = (unsigned char)s.ptr[i];
		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", out);
		else if (c == '\t')
			fputs("\\t", out);
		else if (c < 0x20)
			fprintf(out, "\\u%04x", c);
		else
			putc(c, out);
	}
	putc('"', out);
}

static void put_cstr(FILE *out, const char *s)
{
	put_str(out, (struct hd_str){ s, s ? strlen(s) : 0 });
}

/* A context value, written compactly; numbers keep the text they were sent with. */
static void put_node(FILE *out, const struct hd_node *n)
{
	const struct hd_node *c = n + 1;

	switch (n->kind) {
	case HD_OBJECT:
	case HD_ARRAY:
		putc(n->kind == HD_OBJECT ? '{' : '[', out);
		for (uint32_t i = 0; i < n->count; i++, c += c->size) {
			if (i)
				putc(',', out);
			if (n->kind == HD_OBJECT) {
				put_str(out, (struct hd_str){ c->key.ptr ? c->key.ptr : "", c->key.len });
				putc(':', out);
			}
			put_node(out, c);
		}
		putc(n->kind == HD_OBJECT ? '}' : ']', out);
		break;
	case HD_STRING:
		put_str(out, n->str);
		break;
	case HD_NUMBER:
		fwrite(n->raw.ptr, 1, n->raw.len, out);
		break;
	case HD_TRUE:
		fputs("true", out);
		break;
	case HD_FALSE:
		fputs("false", out);
		break;
	default:
		fputs("null", out);
		break;
	}
}

/* {"NAMES[0]":VALUES[0],...} */
static void put_members(FILE *out, const char *const *names, const struct hd_str *values, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		fprintf(out, "%c\"%s\":", i ? ',' : '{', names[i]);
		put_str(out, values[i]);
	}
	putc('}', out);
}

static void put_party(FILE *out, const char *name, const struct hd_party *p)
{
	static const char *const names[] = { "id", "name", "role" };
	const struct hd_str values[] = { p->id, p->name, p->role };

	fprintf(out, "\"%s\":", name);
	put_members(out, names, values, 3);
}

static void put_context(FILE *out, const struct hd_context *c)
{
	putc('{', out);
	for (int f = 0; f < HD_CTX_NFIELDS; f++) {
		fprintf(out, "\"%s\":", hd_context_field_name(f));
		if (c->field[f])
			put_node(out, c->field[f]);
		else
			fputs("null", out);
		putc(',', out);
	}
	fputs("\"vars\":", out);
	if (c->vars)
		put_node(out, c->vars);
	else
		fputs("{}", out);
	putc('}', out);
}

static void put_transcript(FILE *out, const struct hd_transcript *t)
{
	fprintf(out, "{\"count\":%zu,\"error\":", t->count);
	put_cstr(out, t->error);
	fputs(",\"entries\":[", out);
	for (size_t i = 0; i < t->count; i++) {
		static const char *const names[] = { "id", "type", "role", "name", "text", "timestamp" };
		const struct hd_transcript_entry *e = &t->entries[i];
		const struct hd_str values[] = { e->id, e->type, e->role, e->name, e->text, e->timestamp };
		if (i)
			putc(',', out);
		put_members(out, names, values, 6);
	}
	fputs("]}", out);
}

static void put_handoff(FILE *out, const struct hd_handoff *h)
{
	fputs("{\"id\":", out);
	put_str(out, h->activity_id);
	fputs(",\"conversation_id\":", out);
	put_str(out, h->conversation_id);
	putc(',', out);
	put_party(out, "user", &h->user);
	putc(',', out);
	put_party(out, "bot", &h->bot);
	fputs(",\"context\":", out);
	put_context(out, &h->context);
	fputs(",\"transcript\":", out);
	put_transcript(out, &h->transcript);
	putc('}', out);
}

static void put_set(FILE *out, const struct hd_activity_set *set)
{
	const struct hd_handoff *h = hd_activity_set_handoff(set);

	fputs("{\"watermark\":", out);
	put_str(out, set->watermark);
	fprintf(out, ",\"activities\":%zu,\"handoff\":%s,\"handoff_event\":", set->count,
		h ? "true" : "false");
	if (h)
		put_handoff(out, h);
	else
		fputs("null", out);
	fputs("}\n", out);
}

/* }==== */

static int parse_and_print(const char *name, const char *buf, size_t len)
{
	struct hd_activity_parser *p = hd_activity_parser_new(NULL);
	struct hd_activity_set set;
	struct hd_parse_error err;
	int rc;

	if (!p) {
		fprintf(stderr, "handoffd: out of memory\n");
		return EXIT_FAIL;
	}
	rc = hd_activity_parse(p, buf, len, len + HD_PARSE_PADDING, &set, &err);
	if (rc == 0) {
		put_set(stdout, &set);
		rc = fflush(stdout) ? EXIT_FAIL : EXIT_OK;
	} else if (err.status == HD_PARSE_NOMEM) {
		fprintf(stderr, "handoffd: %s: out of memory\n", name);
		rc = EXIT_FAIL;
	} else {
		fprintf(stderr, "handoffd: %s: %s at byte %zu\n", name, err.reason, err.offset);
		rc = EXIT_DATAERR;
	}
	hd_activity_parser_free(p);
	return rc;
}

char *cli_read_payload(const char *path, size_t *len)
{
	FILE *fp = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	char *buf;

	if (!fp) {
		fprintf(stderr, "handoffd: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	errno = 0;
	buf = slurp(fp, HD_PARSE_MAX_BYTES_DEFAULT, len);
	if (!buf)
		fprintf(stderr, "handoffd: %s: %s\n", path, strerror(errno));
	if (fp != stdin)
		fclose(fp);
	return buf;
}

int cmd_parse(int argc, char **argv)
{
	char *buf;
	size_t len;
	int rc;

	if (argc != 2 || (argv[1][0] == '-' && argv[1][1]))
		return usage();
	buf = cli_read_payload(argv[1], &len);
	if (!buf)
		return EXIT_FAIL;
	rc = parse_and_print(argv[1], buf, len);
	free(buf);
	return rc;
}
