/* routing.h - where a handoff goes: the routing rules, or the configured fallback.
 * The rules run inside a task of the conversation (so they keep its order and its CPU
 * budget): handoff.relay's route() calls them protected and hands their answer to a
 * settle function made here, which turns it into a route_decision (relay/relay_desk.h);
 * a rule error, a script error or no match gives config.fallback, logged and counted.
 * The escalation task (desk.c) routes this way before the desk's escalate; `handoffd
 * route` runs route() alone (routing_decide). */
#ifndef HANDOFFD_ROUTING_H
#define HANDOFFD_ROUTING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "relay/relay_desk.h"
#include "script/script_host.h"

struct hd_runtime;
struct hd_handoff;

/* DECISION is valid during the call only. */
typedef void (*routing_done_fn)(const struct route_decision *decision, void *arg);

/* Who hears the decision: DONE(decision, ARG), once. Owned by the caller, alive until
 * the task that routes ends. */
struct routing_settle {
	struct hd_runtime *rt;
	const char *key;	/* the task's key, for the log */
	routing_done_fn done;
	void *arg;
	bool decided;		/* DONE has been called */
};

/* Pushes route()'s arguments after the handoff: the rules (nil when none are loaded),
 * handoff.route's evaluate, and the settle function, which calls S's DONE and returns
 * the destination as hub scripts get it (a table shaped like route_decision_json). */
void routing_push_rules(lua_State *co, struct routing_settle *s);

/* Pushes D as the route table of escalate(conv, h, route). */
void routing_push_route(lua_State *co, const struct route_decision *d);

/* The fallback for a task that ended before it settled: WHY says how it ended. */
void routing_settle_failed(struct routing_settle *s, const char *why);

/* Runs the rules on HANDOFF (as a handoff object; HANDOFF must outlive the task), as a
 * task of its own. KEY orders it with the conversation's other callbacks.
 * Returns 0 (DONE will be called, maybe before this returns) or a negative errno (it
 * will not). */
int routing_decide(struct hd_runtime *rt, const char *key, const struct hd_handoff *handoff,
		   routing_done_fn done, void *arg);

#endif
