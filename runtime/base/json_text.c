/* json_text.c - JSON string escaping into bounded buffers (see json_text.h). */
#include "base/json_text.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

/* Escapes bytes of S at OUT + LEN while each escape fits whole with the NUL after it;
 * *DONE is how many bytes of S went in. Returns the new length. */
static size_t escape(char *out, size_t cap, size_t len, const char *s, size_t slen, size_t *done)
{
	size_t i = 0;

	for (; i < slen; i++) {
		unsigned char c = (unsigned char)s[i];
		size_t w = c == '"' || c == '\\' ? 2 : c < 0x20 ? 6 : 1;

		if (len + w >= cap)
			break;
		if (w == 2) {
			out[len] = '\\';
			out[len + 1] = (char)c;
		} else if (w == 6) {
			snprintf(out + len, cap - len, "\\u%04x", c);
		} else {
			out[len] = (char)c;
		}
		len += w;
	}
	if (len < cap)
		out[len] = '\0';
	*done = i;
	return len;
}

size_t json_text_escape(char *out, size_t cap, size_t len, const char *s, size_t slen)
{
	size_t done;

	return escape(out, cap, len, s, slen, &done);
}

int json_text_escape_whole(char *out, size_t cap, const char *s)
{
	size_t slen = strlen(s), done = 0;
	size_t n = cap ? escape(out, cap, 0, s, slen, &done) : 0;

	return cap && done == slen && n <= INT_MAX ? (int)n : -ENOSPC;
}

size_t json_text_string(char *out, size_t cap, size_t len, const char *s)
{
	if (len + 3 > cap)
		return len;
	out[len++] = '"';
	len = json_text_escape(out, cap - 1, len, s, strlen(s));	/* room for the closing quote */
	out[len++] = '"';
	out[len] = '\0';
	return len;
}
