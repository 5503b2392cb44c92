/* http_url.c - the outbound client's URLs: each parsed and checked once by libcurl's URL
 * API and kept, most recently used first, for the next requests to it; and a URL made
 * fit for a log line. */
#include "net/http_url.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Parses URL into a new handle, which must be http or https. */
static int parse_url(const char *url, CURLU **out)
{
	CURLU *u = curl_url();
	char *scheme = NULL;
	int rc = -EINVAL;

	if (!u)
		return -ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	    (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0))
		rc = 0;
	curl_free(scheme);
	if (rc < 0)
		curl_url_cleanup(u);
	else
		*out = u;
	return rc;
}

void http_url_release(struct checked_url *c)
{
	if (c && --c->refs == 0) {
		curl_url_cleanup(c->handle);
		free(c->str);
		free(c);
	}
}

int http_url_get(struct http_url_cache *cache, const char *url, struct checked_url **out)
{
	struct checked_url *c;
	unsigned i;
	int rc;

	for (i = 0; i < cache->n && strcmp(cache->urls[i]->str, url) != 0; i++)
		;
	if (i < cache->n) {
		c = cache->urls[i];
	} else {
		c = calloc(1, sizeof(*c));
		if (!c || !(c->str = strdup(url))) {
			free(c);
			return -ENOMEM;
		}
		rc = parse_url(url, &c->handle);
		if (rc < 0) {
			free(c->str);
			free(c);
			return rc;
		}
		c->refs = 1;	/* the cache's */
		if (cache->n == HTTP_URL_CACHE_MAX)
			http_url_release(cache->urls[--cache->n]);
		i = cache->n++;
	}
	memmove(cache->urls + 1, cache->urls, i * sizeof(cache->urls[0]));	/* to the front */
	cache->urls[0] = c;
	c->refs++;
	*out = c;
	return 0;
}

void http_url_cache_clear(struct http_url_cache *cache)
{
	while (cache->n)
		http_url_release(cache->urls[--cache->n]);
}

static void append_str(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
	if (n > cap - 1 - *len)
		n = cap - 1 - *len;
	memcpy(out + *len, s, n);
	*len += n;
	out[*len] = '\0';
}

void http_url_redact(const char *url, char *out, size_t cap)
{
	const char *host = strstr(url, "://");
	const char *path, *at, *q;
	size_t len = 0;

	host = host ? host + 3 : url;
	path = host + strcspn(host, "/?#");
	at = memchr(host, '@', (size_t)(path - host));
	out[0] = '\0';
	append_str(out, cap, &len, url, (size_t)(host - url));
	host = at ? at + 1 : host;
	q = path + strcspn(path, "?#");
	append_str(out, cap, &len, host, (size_t)(q - host));
	while (*q == '?' || *q == '&') {
		size_t name = strcspn(q + 1, "=&#");

		append_str(out, cap, &len, q, name + 1);
		q += name + 1;
		if (*q == '=') {
			append_str(out, cap, &len, "=***", 4);
			q += 1 + strcspn(q + 1, "&#");
		}
	}
}
