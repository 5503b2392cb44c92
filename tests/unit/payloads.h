/* payloads.h - what the parser's unit tests share: payloads from the project's
 * generator (tests/payloads/genpayload.py, run at test time) and a parse helper that
 * fails the test with the parser's reason. Header-only: each test file is one program. */
#ifndef HANDOFFD_TEST_PAYLOADS_H
#define HANDOFFD_TEST_PAYLOADS_H

#include <handoffd/handoff.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs genpayload.py with ARGS ("3 --ascii"); returns its output (malloc'd, with
 * HD_PARSE_PADDING zero bytes after it) and its length in *LEN. */
static inline char *payload_generate(const char *args, size_t *len)
{
	const char *dir = getenv("HANDOFFD_TEST_DIR");
	char cmd[1024];
	size_t cap = 1 << 16, n = 0, got;
	char *buf = malloc(cap + HD_PARSE_PADDING);
	FILE *fp;

	snprintf(cmd, sizeof(cmd), "python3 %s/payloads/genpayload.py %s", dir ? dir : "tests", args);
	fp = popen(cmd, "r");
	if (!fp || !buf)
		abort();
	while ((got = fread(buf + n, 1, cap - n, fp)) > 0) {
		n += got;
		if (n == cap && !(buf = realloc(buf, (cap *= 2) + HD_PARSE_PADDING)))
			abort();
	}
	if (pclose(fp) != 0 || n == 0)
		abort();
	memset(buf + n, 0, HD_PARSE_PADDING);
	*len = n;
	return buf;
}

/* Parses TEXT (copied by the parser) and fails the test when it is refused. */
#define parse_ok(p, text, len, set) do { \
		struct hd_parse_error err_; \
		if (hd_activity_parse((p), (text), (len), (len), (set), &err_) < 0) \
			fail_msg("refused: %s at byte %zu", err_.reason, err_.offset); \
	} while (0)

/* S as a NUL-terminated string in a static buffer, "(null)" when absent. */
static inline const char *str_of(struct hd_str s)
{
	static char out[4][512];
	static int i;
	char *o = out[i++ % 4];

	if (!s.ptr)
		return "(null)";
	snprintf(o, sizeof(out[0]), "%.*s", (int)s.len, s.ptr);
	return o;
}

#define assert_str(s, want) assert_string_equal(str_of(s), (want))

/* Parses, with P, a message whose text is hundreds of escaped 'x': what the previous
 * parse unescaped into P's buffers is overwritten, and what it kept in P's arena freed.
 * For tests of what must outlive a parse. */
static inline void parse_something_else(struct hd_activity_parser *p)
{
	char json[4096] = "{\"activities\":[{\"type\":\"message\",\"text\":\"";
	struct hd_activity_set set;
	struct hd_parse_error err;

	for (int i = 0; i < 500; i++)
		strcat(json, "\\u0078");
	strcat(json, "\"}]}");
	if (hd_activity_parse(p, json, strlen(json), strlen(json), &set, &err) < 0)
		abort();
}

#endif
