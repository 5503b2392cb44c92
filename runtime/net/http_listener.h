/* http_listener.h - the listening socket in front of evhttp and the accounting of its
 * connections: how many there are (in total and per peer address), how long a request may
 * take to arrive, how long a keep-alive connection may idle, how many request bytes all
 * connections may hold, and what happens when the process runs out of descriptors.
 * evhttp still parses and answers; this part decides who gets to talk to it and for how
 * long. http_server.c tells it when a request has been read and when it was answered. */
#ifndef HANDOFFD_HTTP_LISTENER_H
#define HANDOFFD_HTTP_LISTENER_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct evhttp;
struct evhttp_connection;
struct evhttp_request;
struct http_listener;
struct log;

struct http_listener_limits {
	unsigned connections;		/* open connections; 0: sized from RLIMIT_NOFILE */
	unsigned connections_per_ip;	/* per peer address; 0: no per-address limit */
	double request_timeout;		/* seconds for a whole request, headers and body */
	double idle_timeout;		/* seconds a keep-alive connection may wait for its next request */
	size_t buffered_bytes;		/* request bytes held by all connections together */
};

/* What /healthz and the metrics show. */
struct http_listener_stats {
	unsigned connections;		/* open now */
	unsigned connections_max;	/* the limit in force */
	size_t buffered_bytes;		/* request bytes held now */
	bool accept_paused;		/* out of descriptors: accepting waits for a retry */
	unsigned long refused;		/* connections closed at once: over a limit or shed */
	unsigned long timed_out;	/* requests that did not arrive in time, idle connections closed */
	unsigned long fd_exhausted;	/* times accept() failed for want of descriptors */
};

/* Binds HOST:PORT for HTTP (evhttp parses the requests). NULL on failure, reason in ERR. */
struct http_listener *http_listener_new(struct event_base *base, struct log *lg, struct evhttp *http,
					const char *host, int port, const struct http_listener_limits *limits,
					char *err, size_t errlen);
/* Frees the accounting. Call it after evhttp_free(), which closes the listening socket
 * and the connections (reporting each one here). */
void http_listener_free(struct http_listener *hl);
/* Stops accepting new connections (graceful stop). */
void http_listener_close(struct http_listener *hl);

/* The port actually bound (port 0 picks one). */
int http_listener_port(const struct http_listener *hl);
void http_listener_stats(const struct http_listener *hl, struct http_listener_stats *out);
/* The stats as a JSON object, for /healthz. */
void http_listener_health_json(const struct http_listener *hl, char *buf, size_t len);

/* REQ has arrived completely: its deadline no longer runs. */
void http_listener_request_received(struct http_listener *hl, struct evhttp_request *req);
/* REQ was answered: its bytes are released and the connection idles until the next one. */
void http_listener_request_done(struct http_listener *hl, struct evhttp_request *req);

/* Calls FN(connection, ARG) when REQ's connection closes (FN NULL: no longer). The
 * listener holds the connection's only close callback, so others ask it here. Returns -1
 * for a connection it does not know (one accepted while memory ran out). */
int http_listener_watch_peer(struct http_listener *hl, struct evhttp_request *req,
			     void (*fn)(struct evhttp_connection *, void *), void *arg);

#endif
