/* metrics.c - the registry of counters, gauges and histograms and their text rendering.
 * Series are kept in creation order, grouped by family when rendered; there are few of
 * them (tens), so lookups by name are a linear scan done once per call site. */
#include "base/metrics.h"

#include <errno.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

struct metrics_histogram {
	const double *bounds;	/* static: the caller's bucket table */
	size_t nbounds;
	uint64_t *counts;	/* per bucket, not cumulative; [nbounds] is +Inf */
	uint64_t count;
	double sum;
};

const double metrics_chat_buckets[] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 };
const size_t metrics_chat_nbuckets = sizeof(metrics_chat_buckets) / sizeof(metrics_chat_buckets[0]);

struct series {
	char *name;
	char *labels;		/* NULL: none */
	char *help;
	uint64_t value;
	metrics_gauge_fn gauge;	/* non-NULL: a gauge */
	void *arg;
	struct metrics_histogram *hist;	/* non-NULL: a histogram */
	struct series *next;
};

struct metrics {
	struct series *head, *tail;
};

struct metrics *metrics_new(void)
{
	return calloc(1, sizeof(struct metrics));
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	for (struct series *s = m->head, *next; s; s = next) {
		next = s->next;
		free(s->name);
		free(s->labels);
		free(s->help);
		if (s->hist)
			free(s->hist->counts);
		free(s->hist);
		free(s);
	}
	free(m);
}

static int same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static struct series *add(struct metrics *m, const char *name, const char *labels, const char *help)
{
	struct series *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->name = strdup(name);
	s->labels = labels ? strdup(labels) : NULL;
	s->help = strdup(help ? help : "");
	if (!s->name || (labels && !s->labels) || !s->help) {
		free(s->name);
		free(s->labels);
		free(s->help);
		free(s);
		return NULL;
	}
	if (m->tail)
		m->tail->next = s;
	else
		m->head = s;
	m->tail = s;
	return s;
}

uint64_t *metrics_counter(struct metrics *m, const char *name, const char *labels, const char *help)
{
	struct series *s;

	if (!m)
		return NULL;
	for (s = m->head; s; s = s->next)
		if (!s->gauge && !s->hist && strcmp(s->name, name) == 0 && same(s->labels, labels))
			return &s->value;
	s = add(m, name, labels, help);
	return s ? &s->value : NULL;
}

int metrics_gauge(struct metrics *m, const char *name, const char *help, metrics_gauge_fn fn, void *arg)
{
	return metrics_gauge_labels(m, name, NULL, help, fn, arg);
}

int metrics_gauge_labels(struct metrics *m, const char *name, const char *labels, const char *help,
			 metrics_gauge_fn fn, void *arg)
{
	struct series *s = add(m, name, labels, help);

	if (!s)
		return -ENOMEM;
	s->gauge = fn;
	s->arg = arg;
	return 0;
}

struct metrics_histogram *metrics_histogram(struct metrics *m, const char *name, const char *labels,
					   const char *help, const double *bounds, size_t nbounds)
{
	struct series *s;

	if (!m)
		return NULL;
	for (s = m->head; s; s = s->next)
		if (s->hist && strcmp(s->name, name) == 0 && same(s->labels, labels))
			return s->hist;
	s = add(m, name, labels, help);
	if (!s)
		return NULL;
	/* On failure the series stays, empty and unrendered as a histogram: harmless. */
	s->hist = calloc(1, sizeof(*s->hist));
	if (!s->hist || !(s->hist->counts = calloc(nbounds + 1, sizeof(uint64_t)))) {
		free(s->hist);
		s->hist = NULL;
		return NULL;
	}
	s->hist->bounds = bounds;
	s->hist->nbounds = nbounds;
	return s->hist;
}

void metrics_observe(struct metrics_histogram *h, double value)
{
	size_t i = 0;

	if (!h)
		return;
	while (i < h->nbounds && value > h->bounds[i])
		i++;
	h->counts[i]++;
	h->count++;
	h->sum += value;
}

static void render_histogram(const struct series *s, struct evbuffer *out)
{
	const struct metrics_histogram *h = s->hist;
	const char *sep = s->labels ? "," : "";
	const char *labels = s->labels ? s->labels : "";
	uint64_t cum = 0;

	for (size_t i = 0; i <= h->nbounds; i++) {
		cum += h->counts[i];
		if (i < h->nbounds)
			evbuffer_add_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", s->name, labels, sep,
					    h->bounds[i], (unsigned long long)cum);
		else
			evbuffer_add_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", s->name, labels, sep,
					    (unsigned long long)cum);
	}
	if (s->labels) {
		evbuffer_add_printf(out, "%s_sum{%s} %.17g\n", s->name, s->labels, h->sum);
		evbuffer_add_printf(out, "%s_count{%s} %llu\n", s->name, s->labels, (unsigned long long)h->count);
	} else {
		evbuffer_add_printf(out, "%s_sum %.17g\n", s->name, h->sum);
		evbuffer_add_printf(out, "%s_count %llu\n", s->name, (unsigned long long)h->count);
	}
}

static const char *family_type(const struct series *s)
{
	return s->hist ? "histogram" : s->gauge ? "gauge" : "counter";
}

static int family_rendered_before(const struct metrics *m, const struct series *upto)
{
	for (const struct series *s = m->head; s != upto; s = s->next)
		if (strcmp(s->name, upto->name) == 0)
			return 1;
	return 0;
}

static void render_family(const struct metrics *m, const struct series *first, struct evbuffer *out)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", first->name, first->help, first->name,
			    family_type(first));
	for (const struct series *s = first; s; s = s->next) {
		if (strcmp(s->name, first->name) != 0)
			continue;
		if (s->hist)
			render_histogram(s, out);
		else if (s->gauge && s->labels)
			evbuffer_add_printf(out, "%s{%s} %.17g\n", s->name, s->labels, s->gauge(s->arg));
		else if (s->gauge)
			evbuffer_add_printf(out, "%s %.17g\n", s->name, s->gauge(s->arg));
		else if (s->labels)
			evbuffer_add_printf(out, "%s{%s} %llu\n", s->name, s->labels, (unsigned long long)s->value);
		else
			evbuffer_add_printf(out, "%s %llu\n", s->name, (unsigned long long)s->value);
	}
	(void)m;
}

void metrics_render(const struct metrics *m, struct evbuffer *out)
{
	for (const struct series *s = m->head; s; s = s->next)
		if (!family_rendered_before(m, s))
			render_family(m, s, out);
}
