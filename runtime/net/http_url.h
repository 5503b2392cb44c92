/* http_url.h - the outbound client's URLs (http_url.c). */
#ifndef HANDOFFD_HTTP_URL_H
#define HANDOFFD_HTTP_URL_H

#include <curl/curl.h>
#include <stddef.h>

/* URLs kept parsed: parsing one costs libcurl about 5k instructions, and requests go to
 * a few URLs again and again (a hub's endpoint, a busy conversation's activities). */
#define HTTP_URL_CACHE_MAX 8

/* A URL that libcurl parsed as http or https, shared by the transfers to it: libcurl only
 * reads the CURLU it is given (it works on a copy). */
struct checked_url {
	CURLU *handle;
	char *str;			/* as the caller gave it */
	unsigned refs;			/* transfers using it, and the cache while there */
};

struct http_url_cache {
	struct checked_url *urls[HTTP_URL_CACHE_MAX];	/* most recently used first */
	unsigned n;
};

/* The checked form of URL, with a reference for the caller: from CACHE when a recent
 * request went to the same URL, else parsed and cached, the least recently used entry
 * making room. 0, -EINVAL (not an http or https URL) or -ENOMEM. */
int http_url_get(struct http_url_cache *cache, const char *url, struct checked_url **out);
/* Drops a reference; NULL is fine. */
void http_url_release(struct checked_url *c);
/* Drops the cache's references. */
void http_url_cache_clear(struct http_url_cache *cache);

/* URL for a log line into OUT (CAP bytes, cut if longer): no user:password, no fragment,
 * every query value replaced by ***. */
void http_url_redact(const char *url, char *out, size_t cap);

#endif
