/* http_curl_headers.h - a response's headers copied out of libcurl (http_curl_headers.c). */
#ifndef HANDOFFD_HTTP_CURL_HEADERS_H
#define HANDOFFD_HTTP_CURL_HEADERS_H

#include "net/http_client.h"

#include <curl/curl.h>
#include <stddef.h>

/* Copies the final response's headers of E into one block: the strings, then the array
 * that points into them (*OUT, *COUNT). *BLOCK is what to free, also on failure. 0 or
 * -ENOMEM. */
int http_curl_headers_copy(CURL *e, char **block, const struct http_header **out, size_t *count);

#endif
