/* conv_events.c - the per-conversation ring of recent lifecycle events. */
#include "relay/conv_events.h"
#include "base/clock.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const kind_names[CONV_EV_KIND_COUNT] = {
	"opened", "handoff", "routed", "escalated", "accepted", "completed", "failed", "retry", "error", "state",
};

const char *conv_event_kind_name(enum conv_event_kind k)
{
	return (unsigned)k < CONV_EV_KIND_COUNT ? kind_names[k] : "?";
}

static struct conv_events *ensure(struct conv_events **evp)
{
	if (!*evp) {
		*evp = calloc(1, sizeof(**evp));
		if (*evp)
			(*evp)->opened_ms = clock_wall_ms();
	}
	return *evp;
}

/* Room for one more event: the ring grows (its events stay in order at the start) until
 * it holds CONV_EVENTS_MAX, then the oldest is overwritten. */
static bool make_room(struct conv_events *ev)
{
	unsigned cap = ev->cap ? ev->cap * 2 : 8;
	struct conv_event *ring;

	if (ev->count < ev->cap || ev->cap == CONV_EVENTS_MAX)
		return true;
	if (cap > CONV_EVENTS_MAX)
		cap = CONV_EVENTS_MAX;
	ring = realloc(ev->ring, cap * sizeof(*ring));
	if (!ring)
		return false;
	ev->ring = ring;
	ev->cap = cap;
	ev->next = ev->count;	/* it had not wrapped: the events fill the start */
	return true;
}

void conv_events_add(struct conv_events **evp, enum conv_event_kind kind, const char *fmt, ...)
{
	struct conv_events *ev = ensure(evp);
	struct conv_event *e;
	va_list ap;

	if (!ev || !make_room(ev))
		return;
	e = &ev->ring[ev->next];
	ev->next = (ev->next + 1) % ev->cap;
	if (ev->count < ev->cap)
		ev->count++;
	e->at_ms = clock_wall_ms();
	e->kind = kind;
	va_start(ap, fmt);
	vsnprintf(e->detail, sizeof(e->detail), fmt, ap);
	va_end(ap);
}

const struct conv_event *conv_events_at(const struct conv_events *ev, unsigned i)
{
	if (!ev || i >= ev->count)
		return NULL;
	return &ev->ring[(ev->next + ev->cap - ev->count + i) % ev->cap];
}

void conv_events_free(struct conv_events *ev)
{
	if (ev)
		free(ev->ring);
	free(ev);
}
