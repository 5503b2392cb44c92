/* dedupe.c - the bounded seen-id set (dedupe.h): a ring of hashes. Persisting it is the
 * store's business. */
#include "directline/dedupe.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DEDUPE_FIRST_CAP 8u

uint64_t dedupe_hash(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

bool dedupe_contains(const struct dedupe *d, uint64_t h)
{
	bool found = false;

	/* Most ids are new, and a new id is compared with every entry: a plain scan of the
	 * used slots (always [0, count), full or not), without an early exit, which the
	 * compiler vectorises, is several times faster than a walk from the newest. */
	for (size_t i = 0; i < d->count; i++)
		found |= d->ring[i] == h;
	return found;
}

/* While the ring is not full, HEAD is 0 and entries sit at [0, count). */
static int grow(struct dedupe *d)
{
	size_t cap = d->cap ? (size_t)d->cap * 2 : DEDUPE_FIRST_CAP;
	uint64_t *ring;

	if (cap > DEDUPE_MAX)
		cap = DEDUPE_MAX;
	ring = realloc(d->ring, cap * sizeof(*ring));
	if (!ring)
		return -ENOMEM;
	d->ring = ring;
	d->cap = (uint16_t)cap;
	return 0;
}

int dedupe_add(struct dedupe *d, uint64_t h)
{
	if (d->count == d->cap && d->cap < DEDUPE_MAX && grow(d) < 0)
		return -ENOMEM;
	if (d->count < d->cap) {
		d->ring[d->count++] = h;
		return 0;
	}
	d->ring[d->head] = h;	/* full: overwrite the oldest */
	d->head = (uint16_t)((d->head + 1) % d->cap);
	return 0;
}

/* Reverses RING[a, b). */
static void reverse(uint64_t *ring, size_t a, size_t b)
{
	while (a + 1 < b) {
		uint64_t t = ring[a];

		ring[a++] = ring[--b];
		ring[b] = t;
	}
}

size_t dedupe_items(struct dedupe *d, const uint64_t **out)
{
	if (d->head) {	/* rotate left by HEAD with three reversals */
		reverse(d->ring, 0, d->head);
		reverse(d->ring, d->head, d->count);
		reverse(d->ring, 0, d->count);
		d->head = 0;
	}
	*out = d->ring;
	return d->count;
}

void dedupe_clear(struct dedupe *d)
{
	free(d->ring);
	memset(d, 0, sizeof(*d));
}
