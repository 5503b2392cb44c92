/* relay_inspect.h - the relay's conversations as the admin inspection API shows them
 * (GET /admin/conversations, /admin/conversations/{key}) and the operator's two ways to
 * unstick one (end it, give it back to the bot). Answers are JSON written to an evbuffer.
 * Message text is never shown; SHOW_CONTENT (admin.show_content) adds the customer as
 * the hub named them and the hub data's values. */
#ifndef HANDOFFD_RELAY_INSPECT_H
#define HANDOFFD_RELAY_INSPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct relay;

#define RELAY_INSPECT_LIMIT_DEFAULT 100
#define RELAY_INSPECT_LIMIT_MAX 1000

/* {"conversations":[...], "next": key or null}: up to LIMIT conversations in key order,
 * after the key AFTER (NULL: from the start), in STATE (NULL: any). 0, -EINVAL for an
 * unknown state, -ENOMEM. */
int relay_inspect_list(struct relay *r, const char *state, size_t limit, const char *after,
		       struct evbuffer *out);
/* The conversation KEY in full. 0, -ENOENT, -ENOMEM. */
int relay_inspect_show(struct relay *r, const char *key, bool show_content, struct evbuffer *out);
/* Ends KEY as the front would (relay_end). 0 or -ENOENT. */
int relay_inspect_end(struct relay *r, const char *key);
/* Completes KEY's handoff with the customer back to the bot. 0, -ENOENT, -EINVAL. */
int relay_inspect_return_to_bot(struct relay *r, const char *key);

/* One conversation as lists and the status page show it. Strings are borrowed for the
 * duration of the callback. Times are wall-clock ms, 0 when not known (the conversation
 * was resumed by this process and nothing happened since). */
struct relay_conv_summary {
	const char *key;
	const char *state;	/* bot, routing, agent, closed, ... */
	const char *stream;	/* streaming, parked, none */
	const char *handoff_id;	/* NULL: none yet */
	const char *route_json;	/* the routing decision of the handoff, NULL: none */
	uint64_t opened_ms, last_to_bot_ms, last_to_hub_ms;
	uint64_t handoff_ms;	/* the handoff under way or last started */
	unsigned queued_to_bot, queued_to_hub;
	bool retrying;		/* a delivery waits for its retry */
};

typedef void (*relay_inspect_fn)(const struct relay_conv_summary *s, void *arg);
/* Calls FN for every conversation (in no particular order). */
void relay_inspect_each(struct relay *r, relay_inspect_fn fn, void *arg);

/* KEY's summary into *S and its events (NULL: none yet); -ENOENT when there is no such
 * conversation. Both are borrowed until the next relay call. */
struct conv_events;
int relay_inspect_one(struct relay *r, const char *key, struct relay_conv_summary *s,
		      const struct conv_events **events);

/* The relay's delivery counters since start, for the status page. */
struct relay_totals {
	uint64_t to_bot, to_hub, retries, dropped;
	uint64_t handoffs_started, handoffs_accepted, handoffs_failed, handoffs_completed;
};
void relay_inspect_totals(const struct relay *r, struct relay_totals *t);

#endif
