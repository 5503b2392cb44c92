/* routing.h - where a handoff goes: the routing rules, or the configured fallback.
 * The rules run as a task of the conversation (so they keep its order and its CPU
 * budget); a rule error, a script error or no match gives config.fallback, logged and
 * counted. */
#ifndef HANDOFFD_ROUTING_H
#define HANDOFFD_ROUTING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "script/script_host.h"

struct hd_runtime;
struct metrics;

struct route_decision {
	char *queue, *skill, *agent, *reason;	/* queue is never NULL */
	double priority;
	bool has_priority;
	int rule;		/* 1-based index of the matching rule; 0: a rules function or fallback */
	bool fallback;		/* the rules did not decide */
	char why[256];		/* why the fallback was used */
};

/* DECISION is valid during the call only. It is NULL only when out of memory. */
typedef void (*routing_done_fn)(const struct route_decision *decision, void *arg);

/* The count of handoffs sent to the fallback destination (created at 0 at start-up so
 * that dashboards find it). */
uint64_t *routing_fallbacks_counter(struct metrics *m);

/* Runs the rules on the handoff object that PUSH_HANDOFF(co, push_arg) pushes (one
 * value). KEY orders it with the conversation's other callbacks. Returns 0 (DONE will be
 * called, maybe before this returns) or a negative errno (it will not). */
int routing_decide(struct hd_runtime *rt, const char *key, script_push_fn push_handoff,
		   void *push_arg, routing_done_fn done, void *arg);

/* Writes DECISION as a JSON object to BUF; returns the length or -ENOSPC. */
int routing_decision_json(const struct route_decision *d, char *buf, size_t cap);

#endif
