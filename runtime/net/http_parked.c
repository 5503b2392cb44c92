/* http_parked.c - a table of events by socket. Sockets are small integers, reused by the
 * kernel, so a flat array indexed by them stays as short as the highest one parked. */
#include "net/http_parked.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int http_parked_put(struct http_parked *p, evutil_socket_t fd, struct event *ev)
{
	if (fd < 0)
		return -EINVAL;
	if ((size_t)fd >= p->cap) {
		size_t cap = p->cap ? p->cap : 64;
		struct event **grown;

		while (cap <= (size_t)fd)
			cap *= 2;
		grown = realloc(p->ev, cap * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		memset(grown + p->cap, 0, (cap - p->cap) * sizeof(*grown));
		p->ev = grown;
		p->cap = cap;
	}
	if (p->ev[fd])	/* not expected: a socket closes only through its owner's take */
		event_free(p->ev[fd]);
	p->ev[fd] = ev;
	return 0;
}

struct event *http_parked_take(struct http_parked *p, evutil_socket_t fd)
{
	struct event *ev;

	if (fd < 0 || (size_t)fd >= p->cap)
		return NULL;
	ev = p->ev[fd];
	p->ev[fd] = NULL;
	return ev;
}

void http_parked_clear(struct http_parked *p)
{
	for (size_t i = 0; i < p->cap; i++)
		if (p->ev[i])
			event_free(p->ev[i]);
	free(p->ev);
	p->ev = NULL;
	p->cap = 0;
}
