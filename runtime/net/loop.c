/* loop.c - a thin owner of the libevent base: timers and signals as small handles.
 * It stays small on purpose (Redis's ae): protocol code lives in its own part and only
 * borrows the base. */
#include "net/loop.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <stdlib.h>

struct loop {
	struct event_base *base;
	struct evdns_base *dns;	/* loop_dns's, NULL until asked for */
};

struct loop_timer {
	struct event *ev;
	loop_timer_fn fn;
	void *arg;
};

struct loop_signal {
	struct event *ev;
	loop_signal_fn fn;
	void *arg;
};

/* With the changelist, the epoll backend applies an fd's changes once per loop turn: a
 * libcurl socket switching from writing to reading, or a connection's events removed and
 * added again, costs one epoll_ctl instead of two or three (the relay went from about 40
 * system calls per message to 32). Its one caveat, fds cloned with dup() given to the
 * loop, never applies here. */
static struct event_base *base_new(void)
{
	struct event_config *cfg = event_config_new();
	struct event_base *base;

	if (!cfg)
		return NULL;
	event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return base;
}

struct loop *loop_new(void)
{
	struct loop *lp = calloc(1, sizeof(*lp));

	if (!lp)
		return NULL;
	lp->base = base_new();
	if (!lp->base) {
		free(lp);
		return NULL;
	}
	return lp;
}

void loop_free(struct loop *lp)
{
	if (!lp)
		return;
	/* A bufferevent freed while one of its deferred callbacks is queued stays allocated
	 * (its socket open) until that callback has run, and event_base_free drops queued
	 * callbacks without running them: a connection closed in the loop's last turn would
	 * leak. So what is queued runs first. Every owner of an event has freed it by now, so
	 * only such callbacks, libevent's own finalizers and the resolver's queued answers
	 * (a lookup cancelled in that turn gets one, which reads the resolver: so the resolver
	 * goes after them) are left to run. */
	if (event_base_get_num_events(lp->base, EVENT_BASE_COUNT_ACTIVE) > 0)
		event_base_loop(lp->base, EVLOOP_NONBLOCK);
	if (lp->dns)
		evdns_base_free(lp->dns, 0);	/* nobody waits for an answer by now */
	event_base_free(lp->base);
	free(lp);
}

struct event_base *loop_base(struct loop *lp)
{
	return lp->base;
}

struct evdns_base *loop_dns(struct loop *lp)
{
	/* DISABLE_WHEN_INACTIVE: an idle resolver does not keep the loop running. */
	if (!lp->dns)
		lp->dns = evdns_base_new(lp->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
							   EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	return lp->dns;
}

int loop_run(struct loop *lp)
{
	return event_base_dispatch(lp->base) < 0 ? -1 : 0;
}

void loop_stop(struct loop *lp)
{
	event_base_loopbreak(lp->base);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct loop_timer *t = arg;

	(void)fd;
	(void)what;
	t->fn(t->arg);
}

struct loop_timer *loop_timer_new(struct loop *lp, loop_timer_fn fn, void *arg)
{
	struct loop_timer *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->fn = fn;
	t->arg = arg;
	t->ev = event_new(lp->base, -1, 0, on_timer, t);
	if (!t->ev) {
		free(t);
		return NULL;
	}
	return t;
}

int loop_timer_start(struct loop_timer *t, uint64_t ms, int repeat)
{
	struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
	struct event_base *base = event_get_base(t->ev);

	event_del(t->ev);
	/* event_assign on a pending event is undefined, so it is deleted first; the flags
	 * change between one-shot and repeating use of the same handle. */
	event_assign(t->ev, base, -1, repeat ? EV_PERSIST : 0, on_timer, t);
	return event_add(t->ev, &tv);
}

void loop_timer_stop(struct loop_timer *t)
{
	event_del(t->ev);
}

int loop_timer_pending(const struct loop_timer *t)
{
	return event_pending(t->ev, EV_TIMEOUT, NULL) != 0;
}

void loop_timer_free(struct loop_timer *t)
{
	if (!t)
		return;
	event_free(t->ev);
	free(t);
}

static void on_signal(evutil_socket_t signo, short what, void *arg)
{
	struct loop_signal *s = arg;

	(void)what;
	s->fn((int)signo, s->arg);
}

struct loop_signal *loop_signal_new(struct loop *lp, int signo, loop_signal_fn fn, void *arg)
{
	struct loop_signal *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->fn = fn;
	s->arg = arg;
	s->ev = evsignal_new(lp->base, signo, on_signal, s);
	if (!s->ev || evsignal_add(s->ev, NULL) < 0) {
		loop_signal_free(s);
		return NULL;
	}
	return s;
}

void loop_signal_free(struct loop_signal *s)
{
	if (!s)
		return;
	if (s->ev)
		event_free(s->ev);
	free(s);
}
