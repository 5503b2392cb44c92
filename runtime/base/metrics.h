/* metrics.h - counters, gauges and histograms, rendered in the Prometheus text format at /metrics.
 * A part asks once for its counter (name plus a label set) and keeps the pointer, so
 * counting costs one increment on the hot path. */
#ifndef HANDOFFD_METRICS_H
#define HANDOFFD_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct metrics;
struct metrics_histogram;

typedef double (*metrics_gauge_fn)(void *arg);

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/* The counter NAME{LABELS} (LABELS like `reason="no match"`, or NULL), created at 0 on
 * first use. HELP is used when the family is new. Returns NULL only when out of memory;
 * the pointer stays valid until metrics_free. */
uint64_t *metrics_counter(struct metrics *m, const char *name, const char *labels, const char *help);
/* A gauge read at render time from FN(ARG). Returns 0 or -ENOMEM. */
int metrics_gauge(struct metrics *m, const char *name, const char *help, metrics_gauge_fn fn, void *arg);
/* The same for the gauge NAME{LABELS}: one series of a family. */
int metrics_gauge_labels(struct metrics *m, const char *name, const char *labels, const char *help,
			 metrics_gauge_fn fn, void *arg);

/* The buckets for chat latencies, in seconds (0.01 s .. 60 s). */
extern const double metrics_chat_buckets[];
extern const size_t metrics_chat_nbuckets;

/* The histogram NAME{LABELS} with upper bounds BOUNDS (ascending, NBOUNDS of them; +Inf
 * is added), created empty on first use; the same name and labels give the same
 * histogram. Rendered as NAME_bucket{...,le=".."}, NAME_sum and NAME_count. NULL only
 * when out of memory; valid until metrics_free. */
struct metrics_histogram *metrics_histogram(struct metrics *m, const char *name, const char *labels,
					   const char *help, const double *bounds, size_t nbounds);
/* Records VALUE in H (NULL: ignored). */
void metrics_observe(struct metrics_histogram *h, double value);

/* Adds 1 to a counter that may be NULL (an allocation failed earlier). */
static inline void metrics_inc(uint64_t *counter)
{
	if (counter)
		(*counter)++;
}

/* Appends every family to OUT in the text exposition format. */
void metrics_render(const struct metrics *m, struct evbuffer *out);

#endif
