/* dedupe.h - a bounded set of recently seen ids, one per conversation.
 * Direct Line replays activities (after a reconnect, a watermark reset, or through a GET
 * that overlaps the stream), so every inbound activity id is checked here before it is
 * dispatched. Ids are kept as 64-bit hashes in arrival order; when the set is full the
 * oldest is forgotten. The hash is stable, so the set can be persisted and given back. */
#ifndef HANDOFFD_DEDUPE_H
#define HANDOFFD_DEDUPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DEDUPE_MAX 1024u	/* ids remembered per conversation */

/* Embedded in its owner; zero-initialised is an empty set. The ring grows as needed up to
 * DEDUPE_MAX, so an idle conversation costs a few dozen bytes. */
struct dedupe {
	uint64_t *ring;
	uint16_t cap;		/* slots allocated */
	uint16_t count;		/* slots used */
	uint16_t head;		/* index of the oldest entry once the ring is full */
};

/* FNV-1a, 64 bits: the value persisted for an id. */
uint64_t dedupe_hash(const char *s, size_t len);

/* True when H is in the set. */
bool dedupe_contains(const struct dedupe *d, uint64_t h);
/* Adds H (the caller checked it is new). Returns 0 or -ENOMEM (the set is unchanged). */
int dedupe_add(struct dedupe *d, uint64_t h);
/* The entries oldest first, contiguous (the ring is rotated in place). */
size_t dedupe_items(struct dedupe *d, const uint64_t **out);
/* Empties the set and releases its memory. */
void dedupe_clear(struct dedupe *d);

#endif
