/* conv_events.c - the per-conversation ring of recent lifecycle events. */
#include "conv_events.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

static const char *const kind_names[CONV_EV_KIND_COUNT] = {
	"opened", "handoff", "routed", "escalated", "accepted", "completed", "failed", "retry", "error", "state",
};

const char *conv_event_kind_name(enum conv_event_kind k)
{
	return (unsigned)k < CONV_EV_KIND_COUNT ? kind_names[k] : "?";
}

uint64_t conv_events_wall_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

static struct conv_events *ensure(struct conv_events **evp)
{
	if (!*evp) {
		*evp = calloc(1, sizeof(**evp));
		if (*evp)
			(*evp)->opened_ms = conv_events_wall_ms();
	}
	return *evp;
}

void conv_events_add(struct conv_events **evp, enum conv_event_kind kind, const char *fmt, ...)
{
	struct conv_events *ev = ensure(evp);
	struct conv_event *e;
	va_list ap;

	if (!ev)
		return;
	e = &ev->ring[ev->next];
	ev->next = (ev->next + 1) % CONV_EVENTS_MAX;
	if (ev->count < CONV_EVENTS_MAX)
		ev->count++;
	e->at_ms = conv_events_wall_ms();
	e->kind = kind;
	va_start(ap, fmt);
	vsnprintf(e->detail, sizeof(e->detail), fmt, ap);
	va_end(ap);
}

const struct conv_event *conv_events_at(const struct conv_events *ev, unsigned i)
{
	if (!ev || i >= ev->count)
		return NULL;
	return &ev->ring[(ev->next + CONV_EVENTS_MAX - ev->count + i) % CONV_EVENTS_MAX];
}

void conv_events_free(struct conv_events *ev)
{
	free(ev);
}
