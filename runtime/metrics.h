/* metrics.h - counters and gauges, rendered in the Prometheus text format at /metrics.
 * A part asks once for its counter (name plus a label set) and keeps the pointer, so
 * counting costs one increment on the hot path. */
#ifndef HANDOFFD_METRICS_H
#define HANDOFFD_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct metrics;

typedef double (*metrics_gauge_fn)(void *arg);

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/* The counter NAME{LABELS} (LABELS like `reason="no match"`, or NULL), created at 0 on
 * first use. HELP is used when the family is new. Returns NULL only when out of memory;
 * the pointer stays valid until metrics_free. */
uint64_t *metrics_counter(struct metrics *m, const char *name, const char *labels, const char *help);
/* A gauge read at render time from FN(ARG). Returns 0 or -ENOMEM. */
int metrics_gauge(struct metrics *m, const char *name, const char *help, metrics_gauge_fn fn, void *arg);
/* The same with a label set (`state="bot"`), one series of the family NAME. */
int metrics_gauge_labels(struct metrics *m, const char *name, const char *labels, const char *help,
			 metrics_gauge_fn fn, void *arg);

/* Adds 1 to a counter that may be NULL (an allocation failed earlier). */
static inline void metrics_inc(uint64_t *counter)
{
	if (counter)
		(*counter)++;
}

/* Appends every family to OUT in the text exposition format. */
void metrics_render(const struct metrics *m, struct evbuffer *out);

#endif
