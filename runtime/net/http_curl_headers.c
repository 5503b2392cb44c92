/* http_curl_headers.c - a response's headers copied out of libcurl into one block the
 * response owns. */
#include "net/http_curl_headers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* libcurl 7.88 hands an empty value as "\r": trailing white space is cut here. */
static size_t value_len(const char *v)
{
	size_t n = strlen(v);

	while (n > 0 && strchr(" \t\r\n", v[n - 1]))
		n--;
	return n;
}

/* Appends S (N bytes) and a NUL to the block being built, growing it. */
static int append_str0(char **block, size_t *used, size_t *cap, const char *s, size_t n)
{
	if (n + 1 > *cap - *used) {
		size_t want = *cap ? *cap * 2 : 1024;
		char *p;

		if (want < *used + n + 1)
			want = *used + n + 1;
		p = realloc(*block, want);
		if (!p)
			return -ENOMEM;
		*block = p;
		*cap = want;
	}
	memcpy(*block + *used, s, n);
	(*block)[*used + n] = '\0';
	*used += n + 1;
	return 0;
}

/* One walk over libcurl's list, since each step of it scans the whole list again. */
int http_curl_headers_copy(CURL *e, char **block, const struct http_header **out, size_t *count)
{
	struct curl_header *h = NULL;
	struct http_header *arr;
	size_t n = 0, used = 0, cap = 0, off;
	const char *s;
	char *p;

	*block = NULL;
	*out = NULL;
	*count = 0;
	while ((h = curl_easy_nextheader(e, CURLH_HEADER, -1, h))) {
		if (append_str0(block, &used, &cap, h->name, strlen(h->name)) < 0 ||
		    append_str0(block, &used, &cap, h->value, value_len(h->value)) < 0)
			return -ENOMEM;
		n++;
	}
	if (n == 0)
		return 0;
	off = (used + _Alignof(struct http_header) - 1) / _Alignof(struct http_header) *
	      _Alignof(struct http_header);
	p = realloc(*block, off + n * sizeof(*arr));
	if (!p)
		return -ENOMEM;
	*block = p;
	arr = (struct http_header *)(p + off);
	for (size_t i = 0, at = 0; i < n; i++) {
		s = p + at;
		arr[i].name = s;
		at += strlen(s) + 1;
		s = p + at;
		arr[i].value = s;
		at += strlen(s) + 1;
	}
	*out = arr;
	*count = n;
	return 0;
}
