/* http_curl_loop.h - libcurl's multi handle driven by the loop (http_curl_loop.c): the
 * events that watch its sockets, kept-alive connections' sockets parked between requests,
 * and its one timer. What the transfers are is http_client.c's business. */
#ifndef HANDOFFD_HTTP_CURL_LOOP_H
#define HANDOFFD_HTTP_CURL_LOOP_H

#include "net/loop.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

struct http_curl_loop {
	struct loop *lp;
	CURLM *multi;
	struct loop_timer *timer;	/* the one timeout libcurl asks for */
	struct event **parked;		/* by socket: idle kept-alive connections' events */
	size_t parked_cap;
	void (*after)(void *arg);	/* after each socket action; may free the owner */
	void *arg;
};

/* Makes LP drive MULTI: its socket and timer callbacks, and AFTER(ARG) after each of
 * libcurl's socket actions (which is where transfers end). 0, or -ENOMEM or -EINVAL. */
int http_curl_loop_init(struct http_curl_loop *cl, struct loop *lp, CURLM *multi, void (*after)(void *arg),
			void *arg);
/* What each easy handle run on MULTI needs: the close callback that unparks a socket. 0 or
 * -ENOMEM. */
int http_curl_loop_configure(struct http_curl_loop *cl, CURL *e);
/* Frees what is left, once curl_multi_cleanup has closed the connections. */
void http_curl_loop_clear(struct http_curl_loop *cl);

#endif
