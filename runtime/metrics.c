/* metrics.c - the registry of counters and gauges and their text rendering.
 * Series are kept in creation order, grouped by family when rendered; there are few of
 * them (tens), so lookups by name are a linear scan done once per call site. */
#include "metrics.h"

#include <errno.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

struct series {
	char *name;
	char *labels;		/* NULL: none */
	char *help;
	uint64_t value;
	metrics_gauge_fn gauge;	/* non-NULL: a gauge */
	void *arg;
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
		if (!s->gauge && strcmp(s->name, name) == 0 && same(s->labels, labels))
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
			    first->gauge ? "gauge" : "counter");
	for (const struct series *s = first; s; s = s->next) {
		if (strcmp(s->name, first->name) != 0)
			continue;
		if (s->gauge && s->labels)
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
