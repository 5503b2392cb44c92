/* http_parked.h - the events of kept-alive connections' sockets while the connections wait
 * in libcurl's cache (http_parked.c). */
#ifndef HANDOFFD_HTTP_PARKED_H
#define HANDOFFD_HTTP_PARKED_H

#include <event2/event.h>
#include <stddef.h>

/* Events by socket: a socket has at most one, and only while it is open. */
struct http_parked {
	struct event **ev;	/* indexed by socket */
	size_t cap;
};

/* Keeps EV for FD. 0, or -ENOMEM (EV is then the caller's still). */
int http_parked_put(struct http_parked *p, evutil_socket_t fd, struct event *ev);
/* FD's event, now the caller's, or NULL. */
struct event *http_parked_take(struct http_parked *p, evutil_socket_t fd);
/* Frees the events left, and the table. */
void http_parked_clear(struct http_parked *p);

#endif
