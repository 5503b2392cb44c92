/* json_text.c - JSON string escaping into bounded buffers (see json_text.h). */
#include "base/json_text.h"

#include <stdio.h>
#include <string.h>

size_t json_text_escape(char *out, size_t cap, size_t len, const char *s, size_t slen)
{
	/* 7 bytes of headroom: the longest escape (\u00XX) plus the terminating NUL. */
	for (size_t i = 0; i < slen && len + 7 < cap; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\') {
			out[len++] = '\\';
			out[len++] = (char)c;
		} else if (c < 0x20) {
			len += (size_t)snprintf(out + len, cap - len, "\\u%04x", c);
		} else {
			out[len++] = (char)c;
		}
	}
	if (len < cap)
		out[len] = '\0';
	return len;
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
