/* http_server.h - the inbound HTTP listener (libevent's evhttp).
 * Routes are (method, exact path) pairs registered by the runtime (/healthz, admin) and,
 * later, by hub scripts (webhooks). Unknown paths get 404, known paths with another
 * method 405, both as small JSON bodies. */
#ifndef HANDOFFD_HTTP_SERVER_H
#define HANDOFFD_HTTP_SERVER_H

#include <stddef.h>

struct evhttp_connection;
struct evhttp_request;
struct http_listener;
struct http_listener_limits;
struct http_server;
struct log;
struct loop;

/* Bounds on what a peer may send us. */
#define HTTP_SERVER_MAX_HEADERS_BYTES (16 * 1024)
#define HTTP_SERVER_MAX_BODY_BYTES (1024 * 1024)
#define HTTP_SERVER_MAX_ROUTES 256

/* A route handler answers REQ now or later (evhttp_send_reply); ARG is the route's. */
typedef void (*http_route_fn)(struct evhttp_request *req, void *arg);

/* Binds HOST:PORT (port 0 picks a free one) with the connection LIMITS (copied). NULL on
 * failure, with the reason in ERR. */
struct http_server *http_server_new(struct loop *lp, struct log *lg, const char *host, int port,
				    const struct http_listener_limits *limits, char *err, size_t errlen);
/* Closes the listener and every connection; pending requests are dropped. */
void http_server_free(struct http_server *srv);

/* The port actually bound. */
int http_server_port(const struct http_server *srv);
/* The listener and its connection accounting (for /healthz). */
struct http_listener *http_server_listener(struct http_server *srv);

/* Adds METHOD PATH -> FN. A PATH ending in a slash and a star serves every longer path under it
 * (exact routes registered before it win). Returns 0, -EEXIST or -ENOSPC. PATH is copied. */
int http_server_route(struct http_server *srv, const char *method, const char *path,
		      http_route_fn fn, void *arg);
/* Removes every route whose ARG is ARG (a script generation going away). */
void http_server_unroute(struct http_server *srv, void *arg);

/* Stops accepting new connections; requests already received are still answered. */
void http_server_stop_accepting(struct http_server *srv);
/* Requests received but not answered yet. */
unsigned http_server_in_flight(const struct http_server *srv);

/* Calls FN(connection, ARG) if REQ's peer hangs up before the answer; FN NULL cancels.
 * (evhttp keeps one close callback per connection, and the listener holds it.) */
void http_server_watch_peer(struct http_server *srv, struct evhttp_request *req,
			    void (*fn)(struct evhttp_connection *, void *), void *arg);
/* Counts a request whose peer hung up before it was answered as no longer in flight. */
void http_server_forget(struct http_server *srv);

/* Answers REQ with STATUS and a JSON body (copied). */
void http_server_reply_json(struct evhttp_request *req, int status, const char *json);
/* "GET", "POST", ... ("OTHER" for a method we do not serve). */
const char *http_server_method(struct evhttp_request *req);
/* Whether the peer of REQ is on a loopback address. */
int http_server_peer_is_loopback(struct evhttp_request *req);

#endif
