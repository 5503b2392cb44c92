/* store_pg_mirror.h - what the PostgreSQL backend answers reads from: every conversation
 * row and every outbox item, in memory, by key and by id. store_pg.c keeps it equal to
 * what it has written (or will write) to the database; the relay's reads never wait on
 * the database. Strings are owned copies. */
#ifndef HANDOFFD_STORE_PG_MIRROR_H
#define HANDOFFD_STORE_PG_MIRROR_H

#include "relay/store.h"

#include <stdint.h>

struct pgm;

/* A hash chain link; first member of what a table holds. */
struct pgm_link {
	struct pgm_link *next;
	uint64_t hash;
};

struct pgm_item {
	struct pgm_link by_id;
	struct pgm_item *next_in_queue, *prev_in_queue;
	struct pgm_queue *queue;
	int64_t id;
	char *role, *fn;
	char *payload;		/* NUL-terminated after LEN bytes */
	size_t len;
	int attempts;
	int64_t next_at_ms, created_ms;
	uint64_t seq;		/* the write that added it (store_pg.c); 0 loaded at open */
};

struct pgm *pgm_new(void);
void pgm_free(struct pgm *m);

/* Replaces (or adds) the row of C->key, stamped UPDATED_AT (unix seconds). */
int pgm_conv_put(struct pgm *m, const struct store_conv *c, int64_t updated_at);
/* A deep copy of KEY's row into OUT: 0, -ENOENT or -ENOMEM. */
int pgm_conv_get(struct pgm *m, const char *key, struct store_conv *out);
/* FN with a copy of every row not closed; stops at FN's first non-zero return (returned).
 * FN may change the mirror. */
int pgm_conv_each_open(struct pgm *m, store_conv_fn fn, void *arg);
/* Removes up to MAX closed rows last written before BEFORE_S, oldest first, with their
 * outbox items; GONE(ARG, key) for each before it goes. Returns how many went. */
int pgm_purge(struct pgm *m, int64_t before_s, int max, void (*gone)(void *arg, const char *key), void *arg);

/* Appends an item (IT's fields copied; its links ignored) to KEY/QUEUE. */
struct pgm_item *pgm_item_add(struct pgm *m, const char *key, const char *queue, const struct pgm_item *it);
struct pgm_item *pgm_item_find(struct pgm *m, int64_t id);
void pgm_item_remove(struct pgm *m, struct pgm_item *it);
/* The oldest item of KEY/QUEUE, or NULL. */
struct pgm_item *pgm_head(struct pgm *m, const char *key, const char *queue);
int pgm_count(struct pgm *m, const char *key, const char *queue);
/* FN(key, queue, arg) per pair that has items; FN may change the mirror. */
int pgm_each_queue(struct pgm *m, int (*fn)(const char *key, const char *queue, void *arg), void *arg);

/* Drops KEY's row and its items (QUEUES: the names, NULL-terminated) from memory. */
void pgm_forget(struct pgm *m, const char *key, const char *const *queues);
/* The largest item id of KEY in QUEUES, or 0. */
int64_t pgm_max_id(struct pgm *m, const char *key, const char *const *queues);

/* Marks: hub event ids whose INSERT is written but not yet committed, each with the
 * sequence number of that write (> 0). */
int pgm_mark_set(struct pgm *m, const char *id, uint64_t seq);
/* The mark of ID, or 0. */
uint64_t pgm_mark_get(struct pgm *m, const char *id);
/* Removes ID's mark when it is SEQ's (0: whichever). */
void pgm_mark_del(struct pgm *m, const char *id, uint64_t seq);

#endif
