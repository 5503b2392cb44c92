/* http_listener.c - our own evconnlistener feeding evhttp, and the accounting of the
 * connections it accepts.
 *
 * libevent 2.1 hands accepted sockets to evhttp inside the listener's callback and offers
 * no public way to see them first, so the accounting hooks in where evhttp asks for a
 * bufferevent (evhttp_set_bevcb): the connection is counted there, and admitted (address
 * checked, close callback installed, deadline armed) one loop turn later, once evhttp has
 * attached the socket. A connection over a limit gets a canned 503 and is closed at once,
 * before it can cost the others anything.
 *
 * Each connection has one timer: the whole-request deadline while a request is arriving
 * (it counts from the first byte, however slowly the rest trickles in), nothing while the
 * request is handled, the idle timeout between requests. Both run a little long, by a random
 * part of up to a tenth: clients that connected together (a crowd reconnecting after a cut-off,
 * a balancer's pool) would otherwise all time out in the same loop turn, and thousands of
 * answers and reconnections at once hold up the relay's sockets. Bytes received are counted
 * per connection until the request is answered; their sum across connections is capped.
 *
 * When accept() fails for want of descriptors the listener pauses and retries on a timer
 * instead of spinning; a spare descriptor lets it answer and close one waiting connection
 * per retry, so clients hear 503 rather than hang. Connections already open, /healthz on
 * them included, keep being served. */
#include "net/http_listener.h"

#include "base/clock.h"
#include "base/log.h"
#include "base/random.h"
#include "net/loop.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024
#define ACCEPT_RETRY_MS 250
/* Connections accepted in one loop turn before the listener steps aside for a turn: a
 * reconnecting crowd (thousands of clients cut off by the same deadline) would otherwise
 * be accepted in one callback while the relay's sockets wait. */
#define ACCEPT_BURST 64
#define WARN_INTERVAL_MS 10000
#define PEER_BUCKETS 1024
/* Descriptors the automatic connection limit leaves for the store, the log and scripts. */
#define FD_HEADROOM 64

enum conn_phase {
	CONN_ADMITTING,		/* counted; evhttp has not attached the socket yet */
	CONN_READING,		/* a request is arriving: the deadline runs */
	CONN_HANDLING,		/* read completely; a route is answering */
	CONN_IDLE,		/* keep-alive, waiting for the next request */
	CONN_REFUSING,		/* over a limit: the timer answers and closes */
};

enum warn_kind { WARN_ACCEPT, WARN_RESUMED, WARN_CONNECTIONS, WARN_PER_IP, WARN_BUFFERED, WARN_KINDS };

struct peer {
	unsigned char addr[16];		/* IPv6, IPv4 as ::ffff:a.b.c.d */
	unsigned count;
	struct peer *next;
};

struct conn {
	struct http_listener *hl;
	struct bufferevent *bev;		/* evhttp's; we hold a reference while admitting */
	struct evbuffer_cb_entry *input_cb;
	struct evhttp_connection *evcon;	/* NULL until admitted */
	struct event *timer;
	struct peer *peer;			/* NULL without a per-address limit */
	void (*peer_gone)(struct evhttp_connection *, void *);	/* a route waiting on the peer */
	void *peer_gone_arg;
	struct conn *prev, *next;
	int fd;
	enum conn_phase phase;
	int refuse_status;
	size_t held;				/* request bytes received since the last answer */
};

struct http_listener {
	struct event_base *base;
	struct log *log;
	struct evhttp *http;
	struct evhttp_bound_socket *bound;	/* owned by evhttp; NULL once closed */
	struct event *retry;
	struct event *burst_end;		/* the turn's accepting is over: listen again */
	unsigned burst;				/* accepted in this turn; ACCEPT_BURST: disabled */
	struct http_listener_limits limits;
	struct http_listener *next_listener;
	struct conn *conns;			/* every counted connection */
	struct conn **by_fd;			/* admitted connections by descriptor */
	size_t nby_fd;
	struct peer *peers[PEER_BUCKETS];
	int port;
	int spare_fd;
	unsigned nconns;
	size_t buffered;
	bool accept_paused;
	struct rng rng;				/* spreads the deadlines */
	uint64_t last_warn_ms[WARN_KINDS];
	unsigned long suppressed[WARN_KINDS];
	unsigned long refused, timed_out, fd_exhausted;
};

/* libevent gives the listener's error callback the evhttp as its argument (the user data
 * evhttp_bind_listener installed), so the error callback finds its listener here. */
static struct http_listener *listeners;

static struct http_listener *listener_of(struct evconnlistener *lev)
{
	for (struct http_listener *hl = listeners; hl; hl = hl->next_listener)
		if (hl->bound && evhttp_bound_socket_get_listener(hl->bound) == lev)
			return hl;
	return NULL;
}

/* One warning per kind per WARN_INTERVAL_MS; the ones in between are counted. */
static bool warn_due(struct http_listener *hl, enum warn_kind kind, unsigned long *suppressed)
{
	uint64_t now = clock_mono_ms();

	if (hl->last_warn_ms[kind] && now - hl->last_warn_ms[kind] < WARN_INTERVAL_MS) {
		hl->suppressed[kind]++;
		return false;
	}
	hl->last_warn_ms[kind] = now;
	*suppressed = hl->suppressed[kind];
	hl->suppressed[kind] = 0;
	return true;
}

/* Starts C's timer for SECONDS and up to a tenth more (see the top of the file). */
static void arm(struct conn *c, double seconds)
{
	struct timeval tv;

	seconds += seconds / 10 * (double)(rng_next(&c->hl->rng) >> 11) / (double)(1ull << 53);
	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	event_add(c->timer, &tv);
}

/* ---- the peer address table (only with a per-address limit) ---- */

static size_t peer_bucket(const unsigned char addr[16])
{
	uint32_t h = 2166136261u;

	for (int i = 0; i < 16; i++)
		h = (h ^ addr[i]) * 16777619u;
	return h % PEER_BUCKETS;
}

static int peer_key(int fd, unsigned char key[16])
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	memset(key, 0, 16);
	if (ss.ss_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
		return 0;
	}
	if (ss.ss_family == AF_INET6) {
		memcpy(key, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
		return 0;
	}
	return -1;
}

static struct peer *peer_take(struct http_listener *hl, const unsigned char key[16])
{
	struct peer **head = &hl->peers[peer_bucket(key)];

	for (struct peer *p = *head; p; p = p->next) {
		if (memcmp(p->addr, key, 16) == 0) {
			p->count++;
			return p;
		}
	}
	struct peer *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	memcpy(p->addr, key, 16);
	p->count = 1;
	p->next = *head;
	*head = p;
	return p;
}

static void peer_release(struct http_listener *hl, struct peer *p)
{
	struct peer **link = &hl->peers[peer_bucket(p->addr)];

	if (--p->count > 0)
		return;
	while (*link != p)
		link = &(*link)->next;
	*link = p->next;
	free(p);
}

/* ---- connections ---- */

static int table_put(struct http_listener *hl, struct conn *c)
{
	if (c->fd < 0)
		return -1;
	if ((size_t)c->fd >= hl->nby_fd) {
		size_t n = hl->nby_fd ? hl->nby_fd : 256;
		struct conn **t;

		while (n <= (size_t)c->fd)
			n *= 2;
		t = realloc(hl->by_fd, n * sizeof(*t));
		if (!t)
			return -1;
		memset(t + hl->nby_fd, 0, (n - hl->nby_fd) * sizeof(*t));
		hl->by_fd = t;
		hl->nby_fd = n;
	}
	hl->by_fd[c->fd] = c;
	return 0;
}

/* Forgets C entirely; its bufferevent is evhttp's business (or already gone). */
static void conn_release(struct conn *c)
{
	struct http_listener *hl = c->hl;

	hl->buffered -= c->held;
	if (c->peer)
		peer_release(hl, c->peer);
	if (c->fd >= 0 && (size_t)c->fd < hl->nby_fd && hl->by_fd[c->fd] == c)
		hl->by_fd[c->fd] = NULL;
	if (c->prev)
		c->prev->next = c->next;
	else
		hl->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	hl->nconns--;
	event_free(c->timer);
	free(c);
}

static void on_close(struct evhttp_connection *evcon, void *arg)
{
	struct conn *c = arg;

	if (c->peer_gone)
		c->peer_gone(evcon, c->peer_gone_arg);
	evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input_cb);
	conn_release(c);
}

/* Answers STATUS on the socket itself and closes the connection (C is freed). */
static void refuse(struct conn *c, int status)
{
	const char *reason = status == 408 ? "Request Timeout" : "Service Unavailable";
	const char *body = status == 408 ? "{\"error\":\"request timeout\"}" : "{\"error\":\"busy\"}";
	char buf[256];
	int n = snprintf(buf, sizeof(buf),
			 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
			 "Connection: close\r\n\r\n%s", status, reason, strlen(body), body);

	/* Best effort: a peer whose socket buffer is full was not reading anyway. */
	if (send(c->fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
		/* nothing more to do: the connection closes either way */
	}
	evhttp_connection_free(c->evcon);	/* calls on_close */
}

static const char *over_limit(struct conn *c)
{
	struct http_listener *hl = c->hl;
	unsigned char key[16];

	if (hl->nconns > hl->limits.connections)
		return "connections";
	if (!hl->limits.connections_per_ip)
		return NULL;
	if (peer_key(c->fd, key) < 0 || !(c->peer = peer_take(hl, key)))
		return "connections_per_ip";
	return c->peer->count > hl->limits.connections_per_ip ? "connections_per_ip" : NULL;
}

static void warn_refused(struct http_listener *hl, const char *limit)
{
	enum warn_kind kind = strcmp(limit, "connections") == 0 ? WARN_CONNECTIONS : WARN_PER_IP;
	unsigned long suppressed;

	if (warn_due(hl, kind, &suppressed))
		log_warn(hl->log, "http.refused", "limit=%s open=%u max=%u per_ip_max=%u suppressed=%lu",
			 limit, hl->nconns, hl->limits.connections, hl->limits.connections_per_ip, suppressed);
}

/* evhttp has attached the socket: find its connection, check the limits, start the clock. */
static void admit(struct conn *c)
{
	struct http_listener *hl = c->hl;
	void *cbarg = NULL;
	const char *limit;

	bufferevent_getcb(c->bev, NULL, NULL, NULL, &cbarg);
	if (!cbarg) {	/* evhttp gave the connection up before we saw it */
		evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input_cb);
		bufferevent_decref(c->bev);
		conn_release(c);
		return;
	}
	c->evcon = cbarg;
	c->fd = bufferevent_getfd(c->bev);
	evhttp_connection_set_closecb(c->evcon, on_close, c);
	bufferevent_decref(c->bev);	/* evhttp's connection keeps it alive from now on */
	limit = table_put(hl, c) < 0 ? "memory" : over_limit(c);
	if (limit) {
		hl->refused++;
		warn_refused(hl, limit);
		refuse(c, 503);
		return;
	}
	c->phase = CONN_READING;
	arm(c, hl->limits.request_timeout);
}

static void on_conn_timer(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	switch (c->phase) {
	case CONN_ADMITTING:
		admit(c);
		break;
	case CONN_READING:
		c->hl->timed_out++;
		log_debug(c->hl->log, "http.request_timeout", "held_bytes=%zu", c->held);
		refuse(c, 408);
		break;
	case CONN_IDLE:
		c->hl->timed_out++;
		evhttp_connection_free(c->evcon);
		break;
	case CONN_REFUSING:
		refuse(c, c->refuse_status);
		break;
	case CONN_HANDLING:
		break;
	}
}

/* Bytes arrived on C: a request begins, and the bytes count against the shared cap. */
static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct conn *c = arg;
	struct http_listener *hl = c->hl;
	unsigned long suppressed;

	(void)buf;
	if (!info->n_added)
		return;
	c->held += info->n_added;
	hl->buffered += info->n_added;
	if (c->phase == CONN_IDLE) {
		c->phase = CONN_READING;
		arm(c, hl->limits.request_timeout);
	}
	if (hl->buffered <= hl->limits.buffered_bytes || c->phase != CONN_READING)
		return;
	/* Closing here would free the bufferevent under its own read callback: the timer
	 * does it on this loop turn instead. */
	hl->refused++;
	if (warn_due(hl, WARN_BUFFERED, &suppressed))
		log_warn(hl->log, "http.refused", "limit=buffered_mb held_bytes=%zu max_bytes=%zu suppressed=%lu",
			 hl->buffered, hl->limits.buffered_bytes, suppressed);
	c->phase = CONN_REFUSING;
	c->refuse_status = 503;
	event_del(c->timer);
	event_active(c->timer, EV_TIMEOUT, 1);
}

/* evhttp's hook for a new connection's bufferevent: the connection is counted here. */
/* After this turn's other ready events (made active before it), the listener resumes. */
static void on_burst_end(evutil_socket_t fd, short what, void *arg)
{
	struct http_listener *hl = arg;

	(void)fd;
	(void)what;
	/* Only a full burst disabled the listener (an accept error ends a burst short of it). */
	if (hl->burst >= ACCEPT_BURST && hl->bound)
		evconnlistener_enable(evhttp_bound_socket_get_listener(hl->bound));
	hl->burst = 0;
}

/* libevent's listener accepts until accept() runs dry, unless disabled in between. */
static void count_burst(struct http_listener *hl)
{
	if (hl->burst++ == 0)
		event_active(hl->burst_end, EV_TIMEOUT, 1);
	if (hl->burst == ACCEPT_BURST && hl->bound)
		evconnlistener_disable(evhttp_bound_socket_get_listener(hl->bound));
}

static struct bufferevent *on_new_connection(struct event_base *base, void *arg)
{
	struct http_listener *hl = arg;
	struct conn *c = calloc(1, sizeof(*c));

	if (hl->accept_paused) {	/* accept() just worked again; rate limited like the pause */
		unsigned long suppressed;

		hl->accept_paused = false;
		if (warn_due(hl, WARN_RESUMED, &suppressed))
			log_info(hl->log, "http.accept_resumed", "open=%u suppressed=%lu", hl->nconns, suppressed);
	}
	count_burst(hl);
	if (!c)
		return NULL;	/* evhttp makes its own; this one connection goes uncounted */
	c->hl = hl;
	c->fd = -1;
	c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	c->timer = event_new(base, -1, 0, on_conn_timer, c);
	c->input_cb = c->bev ? evbuffer_add_cb(bufferevent_get_input(c->bev), on_input, c) : NULL;
	if (!c->bev || !c->timer || !c->input_cb) {
		if (c->bev)
			bufferevent_free(c->bev);
		if (c->timer)
			event_free(c->timer);
		free(c);
		return NULL;
	}
	bufferevent_incref(c->bev);	/* until admit(): evhttp may drop it on its own error */
	c->next = hl->conns;
	if (hl->conns)
		hl->conns->prev = c;
	hl->conns = c;
	hl->nconns++;
	event_active(c->timer, EV_TIMEOUT, 1);
	return c->bev;
}

/* ---- descriptor exhaustion ---- */

/* With the spare descriptor given up for a moment, one waiting client hears 503. */
static void shed_one(struct http_listener *hl, evutil_socket_t lfd)
{
	static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
				   "Connection: close\r\n\r\n";
	int fd;

	if (hl->spare_fd < 0)
		return;
	close(hl->spare_fd);
	fd = accept(lfd, NULL, NULL);
	if (fd >= 0) {
		if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
			/* the client is gone or not reading; closing is all that is left */
		}
		close(fd);
		hl->refused++;
	}
	hl->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
	struct http_listener *hl = listener_of(lev);
	int err = EVUTIL_SOCKET_ERROR();
	unsigned long suppressed;
	struct timeval tv = { 0, ACCEPT_RETRY_MS * 1000 };

	(void)arg;
	/* Level-triggered: left enabled, the listener would fail again at once, forever. */
	evconnlistener_disable(lev);
	if (!hl)
		return;
	if (err == EMFILE || err == ENFILE) {
		hl->fd_exhausted++;
		hl->accept_paused = true;
		shed_one(hl, evconnlistener_get_fd(lev));
	}
	if (warn_due(hl, WARN_ACCEPT, &suppressed))
		log_warn(hl->log, "http.accept_paused", "error=\"%s\" open=%u retry_ms=%d suppressed=%lu",
			 strerror(err), hl->nconns, ACCEPT_RETRY_MS, suppressed);
	event_add(hl->retry, &tv);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	struct http_listener *hl = arg;

	(void)fd;
	(void)what;
	if (hl->bound)
		evconnlistener_enable(evhttp_bound_socket_get_listener(hl->bound));
}

/* ---- the listener ---- */

static unsigned auto_connections(void)
{
	struct rlimit rl;
	rlim_t n;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return 65536;
	n = rl.rlim_cur > 4 * FD_HEADROOM ? rl.rlim_cur - FD_HEADROOM : rl.rlim_cur * 3 / 4;
	/* Half for inbound HTTP, half for Direct Line streams and calls to the hub. */
	n /= 2;
	return n < 1 ? 1 : n > UINT_MAX ? UINT_MAX : (unsigned)n;
}

static struct evconnlistener *bind_listener(struct http_listener *hl, const char *host, int port,
					    char *err, size_t errlen)
{
	struct evutil_addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
					 .ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_ADDRCONFIG };
	struct evutil_addrinfo *ai = NULL;
	struct evconnlistener *lev = NULL;
	char portstr[16];
	int rc;

	snprintf(portstr, sizeof(portstr), "%d", port);
	rc = evutil_getaddrinfo(host, portstr, &hints, &ai);
	if (rc != 0) {
		snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, evutil_gai_strerror(rc));
		return NULL;
	}
	lev = evconnlistener_new_bind(hl->base, NULL, NULL,
				      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE,
				      LISTEN_BACKLOG, ai->ai_addr, (int)ai->ai_addrlen);
	if (!lev)
		snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
	evutil_freeaddrinfo(ai);
	return lev;
}

static int bound_port(evutil_socket_t fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

struct http_listener *http_listener_new(struct event_base *base, struct log *lg, struct evhttp *http,
					const char *host, int port, const struct http_listener_limits *limits,
					char *err, size_t errlen)
{
	struct http_listener *hl = calloc(1, sizeof(*hl));
	struct evconnlistener *lev;

	if (!hl || !(hl->retry = event_new(base, -1, 0, on_retry, hl)) ||
	    !(hl->burst_end = event_new(base, -1, 0, on_burst_end, hl))) {
		if (hl && hl->retry)
			event_free(hl->retry);
		snprintf(err, errlen, "out of memory creating the HTTP listener");
		free(hl);
		return NULL;
	}
	hl->base = base;
	hl->log = lg;
	hl->http = http;
	hl->limits = *limits;
	rng_seed(&hl->rng);
	if (!hl->limits.connections)
		hl->limits.connections = auto_connections();
	hl->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	lev = bind_listener(hl, host, port, err, errlen);
	if (!lev || !(hl->bound = evhttp_bind_listener(http, lev))) {
		if (lev && !hl->bound) {
			evconnlistener_free(lev);
			snprintf(err, errlen, "out of memory creating the HTTP listener");
		}
		http_listener_free(hl);
		return NULL;
	}
	evconnlistener_set_error_cb(lev, on_accept_error);
	evhttp_set_bevcb(http, on_new_connection, hl);
	hl->port = bound_port(evconnlistener_get_fd(lev));
	hl->next_listener = listeners;
	listeners = hl;
	log_debug(lg, "http.limits", "connections=%u per_ip=%u request_timeout_s=%g idle_timeout_s=%g "
		  "buffered_bytes=%zu", hl->limits.connections, hl->limits.connections_per_ip,
		  hl->limits.request_timeout, hl->limits.idle_timeout, hl->limits.buffered_bytes);
	return hl;
}

void http_listener_close(struct http_listener *hl)
{
	if (!hl || !hl->bound)
		return;
	evhttp_del_accept_socket(hl->http, hl->bound);	/* frees the evconnlistener too */
	hl->bound = NULL;
	event_del(hl->retry);
	event_del(hl->burst_end);
}

void http_listener_free(struct http_listener *hl)
{
	struct http_listener **link = &listeners;

	if (!hl)
		return;
	hl->bound = NULL;	/* evhttp_free, called before this, freed it */
	while (*link && *link != hl)
		link = &(*link)->next_listener;
	if (*link)
		*link = hl->next_listener;
	/* evhttp_free (before this) closed every admitted connection through on_close; what
	 * is left was still being admitted and holds a reference on its bufferevent. */
	while (hl->conns) {
		struct conn *c = hl->conns;

		if (c->phase == CONN_ADMITTING) {
			evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input_cb);
			bufferevent_decref(c->bev);
		}
		conn_release(c);
	}
	for (size_t i = 0; i < PEER_BUCKETS; i++) {
		while (hl->peers[i]) {
			struct peer *p = hl->peers[i];

			hl->peers[i] = p->next;
			free(p);
		}
	}
	if (hl->spare_fd >= 0)
		close(hl->spare_fd);
	if (hl->retry)
		event_free(hl->retry);
	if (hl->burst_end)
		event_free(hl->burst_end);
	free(hl->by_fd);
	free(hl);
}

int http_listener_port(const struct http_listener *hl)
{
	return hl->port;
}

void http_listener_stats(const struct http_listener *hl, struct http_listener_stats *out)
{
	out->connections = hl->nconns;
	out->connections_max = hl->limits.connections;
	out->buffered_bytes = hl->buffered;
	out->accept_paused = hl->accept_paused;
	out->refused = hl->refused;
	out->timed_out = hl->timed_out;
	out->fd_exhausted = hl->fd_exhausted;
}

void http_listener_health_json(const struct http_listener *hl, char *buf, size_t len)
{
	struct http_listener_stats st;

	http_listener_stats(hl, &st);
	snprintf(buf, len, "{\"connections\":%u,\"connections_max\":%u,\"buffered_bytes\":%zu,"
		 "\"accept_paused\":%s,\"refused\":%lu,\"timed_out\":%lu,\"fd_exhausted\":%lu}",
		 st.connections, st.connections_max, st.buffered_bytes, st.accept_paused ? "true" : "false",
		 st.refused, st.timed_out, st.fd_exhausted);
}

static struct conn *conn_of(struct http_listener *hl, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
	evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
	struct conn *c;

	if (fd < 0 || (size_t)fd >= hl->nby_fd)
		return NULL;
	c = hl->by_fd[fd];
	return c && c->evcon == evcon ? c : NULL;
}

void http_listener_request_received(struct http_listener *hl, struct evhttp_request *req)
{
	struct conn *c = conn_of(hl, req);

	if (!c)
		return;
	c->phase = CONN_HANDLING;
	event_del(c->timer);
}

void http_listener_request_done(struct http_listener *hl, struct evhttp_request *req)
{
	struct conn *c = conn_of(hl, req);
	size_t pipelined;

	if (!c)
		return;
	/* What is left in the input buffer belongs to the next request. */
	pipelined = evbuffer_get_length(bufferevent_get_input(c->bev));
	if (pipelined > c->held)
		pipelined = c->held;
	hl->buffered -= c->held - pipelined;
	c->held = pipelined;
	c->phase = pipelined ? CONN_READING : CONN_IDLE;
	arm(c, pipelined ? hl->limits.request_timeout : hl->limits.idle_timeout);
}

int http_listener_watch_peer(struct http_listener *hl, struct evhttp_request *req,
			     void (*fn)(struct evhttp_connection *, void *), void *arg)
{
	struct conn *c = conn_of(hl, req);

	if (!c)
		return -1;
	c->peer_gone = fn;
	c->peer_gone_arg = arg;
	return 0;
}
