/* relay_desk.h - the seam between the relay and the hub scripts.
 *
 * The relay owns conversations, their states and the outbox; the scripting part owns
 * every lua_State. The relay reaches the scripts only through struct relay_desk_ops,
 * which the scripting part implements (script/desk.c) and daemon/runtime.c hands to
 * relay_new; the scripts reach the relay through relay.h (bindings/handoff.c). What
 * crosses is plain C, borrowed for the duration of the call it is passed to. */
#ifndef HANDOFFD_RELAY_DESK_H
#define HANDOFFD_RELAY_DESK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config_route;
struct hd_handoff;
struct metrics;
struct relay;

/* A conversation as hub calls see it (conv): strings borrowed, NULL when unset. */
struct relay_conv_view {
	const char *key, *id, *state;
	const char *user_json;		/* {"id":..,"name":..} as the hub named the customer */
	const char *data_json;		/* conv.data as JSON text */
	const char *handoff_id, *dl_conversation_id;
};

/* Where a handoff goes: the routing rules' answer, or the configured fallback. */
struct route_decision {
	const char *queue, *skill, *agent, *reason;	/* queue is never NULL */
	double priority;
	bool has_priority;
	int rule;		/* 1-based index of the matching rule; 0: a rules function or fallback */
	bool fallback;		/* the rules did not decide */
	char why[256];		/* why the fallback was used */
};

/* Writes D as the JSON object that `handoffd route` prints and the admin API shows;
 * returns the length or -ENOSPC. */
int route_decision_json(const struct route_decision *d, char *buf, size_t cap);
/* A copy of D in one block (free() frees it), or NULL when out of memory. */
struct route_decision *route_decision_dup(const struct route_decision *d);
/* Fills D with the configured fallback FB (strings borrowed from FB) and WHY. */
void route_decision_fallback(struct route_decision *d, const struct config_route *fb, const char *why);

/* The count of handoffs sent to the fallback destination (created at 0 at start-up so
 * that dashboards find it). */
uint64_t *route_fallbacks_counter(struct metrics *m);

/* Which hub module a call is for: the front (the customer's side) or the desk. */
enum relay_role { RELAY_FRONT, RELAY_DESK };

/* One delivery to a hub module: ROLE's FN ("to_user", "to_agent", "conversation_end")
 * with ARG, an activity or event as JSON text, for conversation ID (key KEY) of RELAY.
 * What it points to stays valid until DONE is called; the conversation is read through
 * relay_conversation_of when the task starts (an earlier task may have changed it). */
struct relay_hub_call {
	struct relay *relay;
	const char *key, *id;
	enum relay_role role;
	const char *fn;
	const char *arg;
	size_t arg_len;
};

/* The handoff of conversation ID to the desk: the routing rules (unless ROUTE is
 * decided already: a retry) and then the desk's escalate, both on the one handoff object
 * made from HANDOFF. Valid until DONE is called, like a relay_hub_call. */
struct relay_escalation {
	struct relay *relay;
	const char *key, *id;
	const struct hd_handoff *handoff;
	const struct route_decision *route;
};

/* What a call came to; valid during the callback only.
 *   delivered        the hub took it (escalate: handed over, or "accepted")
 *   retry            failed for now: try again, no sooner than RETRY_AFTER_S (0: backoff)
 *   error            why it failed (delivered false); "aborted" when it never ran
 *   answer           escalate's answer when it was a string ("accepted"), else NULL
 *   data_json        conv.data after the call when the call changed it, else NULL */
struct relay_outcome {
	bool delivered, retry;
	double retry_after_s;
	const char *error, *answer, *data_json;
};

typedef void (*relay_outcome_fn)(const struct relay_outcome *o, void *arg);
/* The rules decided (or the fallback applies): before the desk is called. */
typedef void (*relay_routed_fn)(const struct route_decision *d, void *arg);

/* Implemented by the scripting part. Each call runs as a task ordered with the other
 * tasks of the conversation's key. 0: DONE will be called once (maybe before the
 * return); a negative errno (no scripts loaded, out of memory): it will not. */
struct relay_desk_ops {
	void *ctx;
	int (*call)(void *ctx, const struct relay_hub_call *call, relay_outcome_fn done, void *arg);
	/* ROUTED is called once when E->ROUTE is NULL and the rules ran (not when the task
	 * was aborted before). */
	int (*escalate)(void *ctx, const struct relay_escalation *e, relay_routed_fn routed,
			relay_outcome_fn done, void *arg);
};

#endif
