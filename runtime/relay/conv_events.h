/* conv_events.h - what happened to one conversation lately, for the admin inspection API:
 * a small ring of its last lifecycle events (opened, handoff, routed, ...) with their
 * wall-clock times, and when a message last went each way. Kept in memory only, with
 * the conversation (convstore frees it); a restart starts an empty ring. Details are
 * short descriptions made by handoffd (rule numbers, reasons), never message text. */
#ifndef HANDOFFD_CONV_EVENTS_H
#define HANDOFFD_CONV_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#define CONV_EVENTS_MAX 50
#define CONV_EVENT_DETAIL_MAX 96

enum conv_event_kind {
	CONV_EV_OPENED,
	CONV_EV_HANDOFF,	/* handoff.initiate from the bot */
	CONV_EV_ROUTED,		/* the rules chose a destination */
	CONV_EV_ESCALATED,	/* the desk took the escalation */
	CONV_EV_ACCEPTED,	/* an agent has the customer */
	CONV_EV_COMPLETED,	/* the handoff ended */
	CONV_EV_FAILED,		/* the handoff failed */
	CONV_EV_RETRY,		/* a delivery will be tried again */
	CONV_EV_ERROR,		/* a delivery was given up */
	CONV_EV_STATE,		/* any other change of state */
	CONV_EV_KIND_COUNT
};

struct conv_event {
	uint64_t at_ms;		/* wall clock */
	enum conv_event_kind kind;
	char detail[CONV_EVENT_DETAIL_MAX];
};

struct conv_events {
	/* Grows to CONV_EVENTS_MAX before it wraps: most conversations have a handful of
	 * events, and there may be tens of thousands of conversations. */
	struct conv_event *ring;
	unsigned cap, next, count;
	uint64_t opened_ms;		/* first seen by this process, wall clock */
	uint64_t last_to_bot_ms;	/* a message was last delivered to the bot */
	uint64_t last_to_hub_ms;	/* ... to the hub */
	uint64_t handoff_ms;		/* the handoff under way started (0: none) */
};

const char *conv_event_kind_name(enum conv_event_kind k);
/* Records an event in *EVP (allocated on first use; out of memory: not recorded).
 * DETAIL is printf-formatted and cut to CONV_EVENT_DETAIL_MAX. */
void conv_events_add(struct conv_events **evp, enum conv_event_kind kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The Ith event, oldest first (I < count), or NULL. */
const struct conv_event *conv_events_at(const struct conv_events *ev, unsigned i);
void conv_events_free(struct conv_events *ev);

#endif
