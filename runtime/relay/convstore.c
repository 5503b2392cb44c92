/* convstore.c - a chained hash table of conversations with a size limit. */
#include "relay/convstore.h"

#include "relay/conv_events.h"
#include "net/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CONVSTORE_MIN_BUCKETS 1024

struct convstore {
	struct conversation **buckets;
	size_t nbuckets, count, max;
};

static const char *const state_names[] = { "bot", "routing", "agent", "ending", "closed" };

static size_t hash(const char *s)
{
	size_t h = 1469598103934665603ull;	/* FNV-1a */

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

struct convstore *convstore_new(size_t max)
{
	struct convstore *cs = calloc(1, sizeof(*cs));

	if (!cs)
		return NULL;
	cs->buckets = calloc(CONVSTORE_MIN_BUCKETS, sizeof(*cs->buckets));
	if (!cs->buckets) {
		free(cs);
		return NULL;
	}
	cs->nbuckets = CONVSTORE_MIN_BUCKETS;
	cs->max = max;
	return cs;
}

void conv_dirty_unlink(struct conversation *c)
{
	if (!c->dirty_pprev)
		return;
	*c->dirty_pprev = c->dirty_next;
	if (c->dirty_next)
		c->dirty_next->dirty_pprev = c->dirty_pprev;
	c->dirty_next = NULL;
	c->dirty_pprev = NULL;
}

static void conv_free(struct conversation *c)
{
	/* Off the relay's dirty list, its row then not written: the relay writes it first
	 * (relay_save_now) when it must be. No dangling pointer either way. */
	conv_dirty_unlink(c);
	for (int q = 0; q < QUEUE_COUNT; q++) {
		loop_timer_free(c->queues[q].retry);
		free(c->queues[q].retry_arg);
	}
	free(c->key);
	free(c->user_json);
	free(c->hub_data);
	free(c->handoff_id);
	free(c->dl_conversation_id);
	free(c->dl_token);
	free(c->watermark);
	free(c->seen);
	free(c->route_json);
	free(c->route);
	free(c->handoff);
	conv_events_free(c->events);
	free(c);
}

void convstore_free(struct convstore *cs)
{
	if (!cs)
		return;
	for (size_t i = 0; i < cs->nbuckets; i++) {
		for (struct conversation *c = cs->buckets[i], *next; c; c = next) {
			next = c->next;
			conv_free(c);
		}
	}
	free(cs->buckets);
	free(cs);
}

struct conversation *convstore_get(struct convstore *cs, const char *key)
{
	for (struct conversation *c = cs->buckets[hash(key) & (cs->nbuckets - 1)]; c; c = c->next)
		if (strcmp(c->key, key) == 0)
			return c;
	return NULL;
}

static void grow(struct convstore *cs)
{
	size_t n = cs->nbuckets * 2;
	struct conversation **b = calloc(n, sizeof(*b));

	if (!b)
		return;	/* longer chains, still correct */
	for (size_t i = 0; i < cs->nbuckets; i++) {
		for (struct conversation *c = cs->buckets[i], *next; c; c = next) {
			next = c->next;
			c->next = b[hash(c->key) & (n - 1)];
			b[hash(c->key) & (n - 1)] = c;
		}
	}
	free(cs->buckets);
	cs->buckets = b;
	cs->nbuckets = n;
}

int convstore_add(struct convstore *cs, const char *key, struct conversation **out)
{
	struct conversation *c;
	const char *colon;
	size_t slot;

	if (convstore_get(cs, key))
		return -EEXIST;
	if (cs->max && cs->count >= cs->max)
		return -ENOSPC;
	c = calloc(1, sizeof(*c));
	if (!c || !(c->key = strdup(key))) {
		free(c);
		return -ENOMEM;
	}
	colon = strchr(c->key, ':');
	c->id = colon ? colon + 1 : c->key;
	c->state = CONV_BOT;
	slot = hash(key) & (cs->nbuckets - 1);
	c->next = cs->buckets[slot];
	cs->buckets[slot] = c;
	if (++cs->count > cs->nbuckets)
		grow(cs);
	*out = c;
	return 0;
}

void convstore_remove(struct convstore *cs, struct conversation *c)
{
	struct conversation **p = &cs->buckets[hash(c->key) & (cs->nbuckets - 1)];

	while (*p && *p != c)
		p = &(*p)->next;
	if (!*p)
		return;
	*p = c->next;
	cs->count--;
	conv_free(c);
}

size_t convstore_count(const struct convstore *cs)
{
	return cs->count;
}

void convstore_count_states(const struct convstore *cs, size_t out[CONV_STATE_COUNT])
{
	memset(out, 0, CONV_STATE_COUNT * sizeof(*out));
	for (size_t i = 0; i < cs->nbuckets; i++)
		for (const struct conversation *c = cs->buckets[i]; c; c = c->next)
			out[c->state]++;
}

void convstore_each(struct convstore *cs, void (*fn)(struct conversation *c, void *arg), void *arg)
{
	for (size_t i = 0; i < cs->nbuckets; i++)
		for (struct conversation *c = cs->buckets[i]; c; c = c->next)
			fn(c, arg);
}

const char *conv_state_name(enum conv_state s)
{
	return state_names[s];
}

int conv_state_parse(const char *name, enum conv_state *out)
{
	for (size_t i = 0; i < sizeof(state_names) / sizeof(state_names[0]); i++) {
		if (name && strcmp(name, state_names[i]) == 0) {
			*out = (enum conv_state)i;
			return 0;
		}
	}
	return -EINVAL;
}

int conv_set_string(char **slot, const char *v)
{
	char *copy = NULL;

	if (v && !(copy = strdup(v)))
		return -ENOMEM;
	free(*slot);
	*slot = copy;
	return 0;
}
