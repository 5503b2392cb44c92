/* http_server.c - evhttp and the route table.
 * Owns the parser's size limits, the checks every request passes before its route and
 * the count of requests in flight (the graceful shutdown waits on it). The listening
 * socket and the connection limits are http_listener.c's. What a route answers is the
 * business of whoever registered it. */
#include "net/http_server.h"

#include "net/http_listener.h"
#include "base/log.h"
#include "net/loop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct route {
	char method[8];
	char *path;
	http_route_fn fn;
	void *arg;
};

struct http_server {
	struct evhttp *http;
	struct http_listener *listener;
	struct log *log;
	unsigned in_flight;
	struct route routes[HTTP_SERVER_MAX_ROUTES];
	size_t nroutes;
};

const char *http_server_method(struct evhttp_request *req)
{
	switch (evhttp_request_get_command(req)) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_PATCH: return "PATCH";
	case EVHTTP_REQ_HEAD: return "HEAD";
	case EVHTTP_REQ_OPTIONS: return "OPTIONS";
	default: return "OTHER";
	}
}

void http_server_reply_json(struct evhttp_request *req, int status, const char *json)
{
	struct evbuffer *body = evbuffer_new();

	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	if (body)
		evbuffer_add(body, json, strlen(json));
	evhttp_send_reply(req, status, NULL, body);
	if (body)
		evbuffer_free(body);
}

int http_server_peer_is_loopback(struct evhttp_request *req)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(req);
	const struct sockaddr *sa = conn ? evhttp_connection_get_addr(conn) : NULL;

	if (!sa)
		return 0;
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		/* A [::] listener sees IPv4 peers as ::ffff:a.b.c.d. */
		if (IN6_IS_ADDR_V4MAPPED(a))
			return a->s6_addr[12] == 127;
		return IN6_IS_ADDR_LOOPBACK(a);
	}
	return 0;
}

static void on_complete(struct evhttp_request *req, void *arg)
{
	struct http_server *srv = arg;

	if (srv->in_flight > 0)
		srv->in_flight--;
	http_listener_request_done(srv->listener, req);
}

/* Two Content-Length headers that differ: evhttp reads the body by the first, a proxy
 * in front may have used the other, and the rest of the stream would be read as a
 * smuggled request (RFC 9112 6.3 says reject). */
static int content_length_ambiguous(struct evhttp_request *req)
{
	const char *first = NULL;
	struct evkeyval *h;

	for (h = evhttp_request_get_input_headers(req)->tqh_first; h; h = h->next.tqe_next) {
		if (evutil_ascii_strcasecmp(h->key, "Content-Length") != 0)
			continue;
		if (first && strcmp(first, h->value) != 0)
			return 1;
		first = h->value;
	}
	return 0;
}

/* PATH is ROUTE, or starts with ROUTE's prefix when ROUTE ends in a slash and a star (and goes on). */
static bool route_matches(const char *route, const char *path)
{
	size_t n = strlen(route);

	if (n >= 2 && route[n - 1] == '*' && route[n - 2] == '/')
		return strncmp(route, path, n - 1) == 0 && path[n - 1] != '\0';
	return strcmp(route, path) == 0;
}

static void dispatch(struct evhttp_request *req, void *arg)
{
	struct http_server *srv = arg;
	const char *method = http_server_method(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	int path_known = 0;

	srv->in_flight++;
	evhttp_request_set_on_complete_cb(req, on_complete, srv);
	http_listener_request_received(srv->listener, req);
	if (content_length_ambiguous(req)) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
		http_server_reply_json(req, 400, "{\"error\":\"conflicting Content-Length headers\"}");
		return;
	}
	if (!path || !*path)
		path = "/";
	for (size_t i = 0; i < srv->nroutes; i++) {
		struct route *r = &srv->routes[i];

		if (!route_matches(r->path, path))
			continue;
		path_known = 1;
		if (strcmp(r->method, method) == 0) {
			r->fn(req, r->arg);
			return;
		}
	}
	if (path_known)
		http_server_reply_json(req, 405, "{\"error\":\"method not allowed\"}");
	else
		http_server_reply_json(req, 404, "{\"error\":\"not found\"}");
}

struct http_server *http_server_new(struct loop *lp, struct log *lg, const char *host, int port,
				    const struct http_listener_limits *limits, char *err, size_t errlen)
{
	double timeout = limits->request_timeout > limits->idle_timeout ? limits->request_timeout
								     : limits->idle_timeout;
	struct timeval tv = { .tv_sec = (time_t)timeout + 1 };

	struct http_server *srv = calloc(1, sizeof(*srv));

	if (!srv || !(srv->http = evhttp_new(loop_base(lp)))) {
		snprintf(err, errlen, "out of memory creating the HTTP listener");
		http_server_free(srv);
		return NULL;
	}
	srv->log = lg;
	evhttp_set_max_headers_size(srv->http, HTTP_SERVER_MAX_HEADERS_BYTES);
	evhttp_set_max_body_size(srv->http, HTTP_SERVER_MAX_BODY_BYTES);
	/* Reading is bounded by the listener's deadlines; this bounds a peer that stops
	 * reading our answer. */
	evhttp_set_timeout_tv(srv->http, &tv);
	evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
				   EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH | EVHTTP_REQ_HEAD);
	evhttp_set_gencb(srv->http, dispatch, srv);
	srv->listener = http_listener_new(loop_base(lp), lg, srv->http, host, port, limits, err, errlen);
	if (!srv->listener) {
		http_server_free(srv);
		return NULL;
	}
	return srv;
}

void http_server_free(struct http_server *srv)
{
	if (!srv)
		return;
	if (srv->http)
		evhttp_free(srv->http);	/* first: closing connections reports to the listener */
	http_listener_free(srv->listener);
	for (size_t i = 0; i < srv->nroutes; i++)
		free(srv->routes[i].path);
	free(srv);
}

int http_server_port(const struct http_server *srv)
{
	return http_listener_port(srv->listener);
}

struct http_listener *http_server_listener(struct http_server *srv)
{
	return srv->listener;
}

int http_server_route(struct http_server *srv, const char *method, const char *path,
		      http_route_fn fn, void *arg)
{
	struct route *r;

	for (size_t i = 0; i < srv->nroutes; i++)
		if (strcmp(srv->routes[i].method, method) == 0 && strcmp(srv->routes[i].path, path) == 0)
			return -EEXIST;
	if (srv->nroutes == HTTP_SERVER_MAX_ROUTES || strlen(method) >= sizeof(r->method))
		return -ENOSPC;
	r = &srv->routes[srv->nroutes];
	r->path = strdup(path);
	if (!r->path)
		return -ENOMEM;
	strcpy(r->method, method);
	r->fn = fn;
	r->arg = arg;
	srv->nroutes++;
	return 0;
}

void http_server_unroute(struct http_server *srv, void *arg)
{
	size_t kept = 0;

	for (size_t i = 0; i < srv->nroutes; i++) {
		if (srv->routes[i].arg == arg)
			free(srv->routes[i].path);
		else
			srv->routes[kept++] = srv->routes[i];
	}
	srv->nroutes = kept;
}

void http_server_stop_accepting(struct http_server *srv)
{
	http_listener_close(srv->listener);
}

unsigned http_server_in_flight(const struct http_server *srv)
{
	return srv->in_flight;
}

void http_server_watch_peer(struct http_server *srv, struct evhttp_request *req,
			    void (*fn)(struct evhttp_connection *, void *), void *arg)
{
	if (http_listener_watch_peer(srv->listener, req, fn, arg) < 0)
		evhttp_connection_set_closecb(evhttp_request_get_connection(req), fn, arg);
}

void http_server_forget(struct http_server *srv)
{
	if (srv && srv->in_flight > 0)
		srv->in_flight--;
}
