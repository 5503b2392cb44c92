/* loop.h - the libevent base, timers and signal events, and the loop's DNS resolver.
 * Everything in handoffd runs on this one loop; parts that need raw libevent
 * (evhttp, bufferevents, libcurl's socket callbacks) take loop_base(). */
#ifndef HANDOFFD_LOOP_H
#define HANDOFFD_LOOP_H

#include <stdint.h>

struct event_base;
struct evdns_base;
struct loop;
struct loop_timer;

typedef void (*loop_timer_fn)(void *arg);
typedef void (*loop_signal_fn)(int signo, void *arg);

/* NULL on failure. */
struct loop *loop_new(void);
/* Frees the loop; every timer and signal must have been freed before. */
void loop_free(struct loop *lp);
struct event_base *loop_base(struct loop *lp);
/* The loop's resolver (libevent's evdns, on the system's nameservers), made on first use;
 * NULL without memory. Borrowed: loop_free frees it, once the answers it still has queued
 * (a cancelled lookup's among them) have been delivered. */
struct evdns_base *loop_dns(struct loop *lp);

/* Runs until loop_stop() or until nothing is left to wait for. Returns 0 or -1. */
int loop_run(struct loop *lp);
/* Makes loop_run() return after the current callback; safe inside any callback. */
void loop_stop(struct loop *lp);

/* A one-shot or repeating timer. Create it, then start it as often as needed. */
struct loop_timer *loop_timer_new(struct loop *lp, loop_timer_fn fn, void *arg);
/* (Re)arms the timer to fire once after MS milliseconds, or every MS if REPEAT. */
int loop_timer_start(struct loop_timer *t, uint64_t ms, int repeat);
void loop_timer_stop(struct loop_timer *t);
int loop_timer_pending(const struct loop_timer *t);
void loop_timer_free(struct loop_timer *t);

/* Delivers SIGNO through the loop (never in signal context). The handle lives until
 * loop_signal_free. Returns NULL on failure. */
struct loop_signal *loop_signal_new(struct loop *lp, int signo, loop_signal_fn fn, void *arg);
void loop_signal_free(struct loop_signal *s);

#endif
