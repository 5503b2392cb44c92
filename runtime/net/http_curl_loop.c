/* http_curl_loop.c - libcurl's multi interface on the libevent loop: curl says which
 * sockets to watch and when to call it back, the loop watches and calls.
 *
 * A kept-alive connection's socket between two requests is "parked": curl says
 * CURL_POLL_REMOVE when a transfer ends and asks for the socket again when the next request
 * takes the connection, and freeing and making its event each time would cost two
 * epoll_ctl calls per request (about 5 us each on a VM). A parked event watches for
 * reading, as the next request's wait for its answer does, so taking it back costs nothing
 * (libevent's change list: an unchanged event is not deleted and added again); it sees a
 * server closing the idle connection. */
#include "net/http_curl_loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PARKED_FLAGS (EV_READ | EV_PERSIST)

/* {===== the table of parked events, by socket (small integers, reused by the kernel) */

static int parked_put(struct http_curl_loop *cl, curl_socket_t fd, struct event *ev)
{
	if (fd < 0)
		return -EINVAL;
	if ((size_t)fd >= cl->parked_cap) {
		size_t cap = cl->parked_cap ? cl->parked_cap : 64;
		struct event **grown;

		while (cap <= (size_t)fd)
			cap *= 2;
		grown = realloc(cl->parked, cap * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		memset(grown + cl->parked_cap, 0, (cap - cl->parked_cap) * sizeof(*grown));
		cl->parked = grown;
		cl->parked_cap = cap;
	}
	if (cl->parked[fd])	/* not expected: a parked socket closes through on_curl_close */
		event_free(cl->parked[fd]);
	cl->parked[fd] = ev;
	return 0;
}

/* FD's parked event, now the caller's, or NULL. */
static struct event *parked_take(struct http_curl_loop *cl, curl_socket_t fd)
{
	struct event *ev;

	if (fd < 0 || (size_t)fd >= cl->parked_cap)
		return NULL;
	ev = cl->parked[fd];
	cl->parked[fd] = NULL;
	return ev;
}

/* }===== */

/* {===== the loop calls libcurl */

static void on_socket_ready(evutil_socket_t fd, short what, void *arg)
{
	struct http_curl_loop *cl = arg;
	int action = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
		     ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
	struct event *parked = parked_take(cl, fd);
	int running;

	/* A parked socket is an idle connection's: its server closed it or spoke out of turn.
	 * It is watched no more, so as not to busy the loop; curl finds it dead on its own. */
	if (parked) {
		event_free(parked);
		return;
	}
	curl_multi_socket_action(cl->multi, fd, action, &running);
	cl->after(cl->arg);	/* may free cl */
}

static void on_curl_timeout(void *arg)
{
	struct http_curl_loop *cl = arg;
	int running;

	curl_multi_socket_action(cl->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	cl->after(cl->arg);	/* may free cl */
}

/* }===== */

/* {===== libcurl asks the loop */

/* Makes EV watch FD for FLAGS, with as few changes to the kernel's set as can be. */
static int watch(struct http_curl_loop *cl, struct event *ev, curl_socket_t fd, short flags)
{
	if (event_get_events(ev) == flags && event_pending(ev, EV_READ | EV_WRITE, NULL))
		return 0;
	/* event_assign on a pending event is undefined: delete it first. */
	event_del(ev);
	event_assign(ev, loop_base(cl->lp), fd, flags, on_socket_ready, cl);
	return event_add(ev, NULL);
}

/* Only the socket of a connection curl keeps in its cache is parked: curl closes those
 * through on_curl_close, which frees the event first. An event left on a closed socket
 * would make libevent skip registering the next socket given the same number. Resolver
 * sockets (closed without that callback) and connections being closed fail this test. */
static bool park(struct http_curl_loop *cl, CURL *easy, curl_socket_t fd, struct event *ev)
{
	curl_socket_t kept = CURL_SOCKET_BAD;

	if (!easy || curl_easy_getinfo(easy, CURLINFO_ACTIVESOCKET, &kept) != CURLE_OK ||
	    kept != fd)
		return false;
	return watch(cl, ev, fd, PARKED_FLAGS) == 0 && parked_put(cl, fd, ev) == 0;
}

/* CURLOPT_CLOSESOCKETFUNCTION */
static int on_curl_close(void *clientp, curl_socket_t fd)
{
	struct event *ev = parked_take(clientp, fd);

	if (ev)
		event_free(ev);
	return close(fd);
}

/* CURLMOPT_SOCKETFUNCTION: curl says which sockets to watch for what. The socket's event
 * is curl's per-socket pointer while curl watches it, and parked between requests. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct http_curl_loop *cl = userp;
	struct event *ev = socketp;
	short flags = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
		      ((what & CURL_POLL_OUT) ? EV_WRITE : 0);

	if (what == CURL_POLL_REMOVE) {
		if (ev && !park(cl, easy, fd, ev))
			event_free(ev);
		return 0;
	}
	if (!ev) {
		ev = parked_take(cl, fd);
		if (!ev)
			ev = event_new(loop_base(cl->lp), fd, flags, on_socket_ready, cl);
		if (!ev || curl_multi_assign(cl->multi, fd, ev) != CURLM_OK) {
			if (ev)
				event_free(ev);
			return -1;
		}
	}
	return watch(cl, ev, fd, flags) == 0 ? 0 : -1;
}

/* CURLMOPT_TIMERFUNCTION: curl wants socket_action(TIMEOUT) after MS; -1 cancels. Even 0
 * goes through the loop, as libcurl requires (no socket_action from inside its callbacks). */
static int on_curl_timer(CURLM *multi, long ms, void *userp)
{
	struct http_curl_loop *cl = userp;

	(void)multi;
	if (ms < 0) {
		loop_timer_stop(cl->timer);
		return 0;
	}
	return loop_timer_start(cl->timer, (uint64_t)ms, 0) == 0 ? 0 : -1;
}

/* }===== */

int http_curl_loop_init(struct http_curl_loop *cl, struct loop *lp, CURLM *multi, void (*after)(void *arg),
			void *arg)
{
	int rc = 0;

	*cl = (struct http_curl_loop){ .lp = lp, .multi = multi, .after = after, .arg = arg };
	cl->timer = loop_timer_new(lp, on_curl_timeout, cl);
	if (!cl->timer)
		return -ENOMEM;
	rc |= curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
	rc |= curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, cl);
	rc |= curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
	rc |= curl_multi_setopt(multi, CURLMOPT_TIMERDATA, cl);
	return rc ? -EINVAL : 0;
}

int http_curl_loop_configure(struct http_curl_loop *cl, CURL *e)
{
	int failed = 0;

	failed |= curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_curl_close);
	failed |= curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, cl);
	return failed ? -ENOMEM : 0;
}

void http_curl_loop_clear(struct http_curl_loop *cl)
{
	for (size_t i = 0; i < cl->parked_cap; i++)
		if (cl->parked[i])
			event_free(cl->parked[i]);
	free(cl->parked);
	cl->parked = NULL;
	cl->parked_cap = 0;
	loop_timer_free(cl->timer);
	cl->timer = NULL;
}
