/* store_pg_mirror.c - the PostgreSQL backend's in-memory rows: three chained hash tables
 * (conversations by key, outbox queues by key and queue, outbox items by id); each queue
 * holds its items in id order as a doubly linked list, since items leave from the head
 * (delivered) but may leave from anywhere (a purge). */
#include "relay/store_pg_mirror.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MIN_BUCKETS 1024
#define FNV_BASIS 1469598103934665603ull

/* {===== a chained hash table of pgm_links */

struct htab {
	struct pgm_link **b;
	size_t nb, n;
};

static uint64_t hash_str(uint64_t h, const char *s)
{
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;	/* FNV-1a */
	return h;
}

static uint64_t hash_id(int64_t id)
{
	return (uint64_t)id * 0x9e3779b97f4a7c15ull;
}

static int htab_init(struct htab *t)
{
	t->b = calloc(MIN_BUCKETS, sizeof(*t->b));
	t->nb = MIN_BUCKETS;
	t->n = 0;
	return t->b ? 0 : -ENOMEM;
}

/* Doubles the buckets when the table is full; a failed grow keeps the table as it is. */
static void htab_grow(struct htab *t)
{
	size_t nb = t->nb * 2;
	struct pgm_link **b;

	if (t->n < t->nb || !(b = calloc(nb, sizeof(*b))))
		return;
	for (size_t i = 0; i < t->nb; i++) {
		for (struct pgm_link *l = t->b[i], *next; l; l = next) {
			next = l->next;
			l->next = b[l->hash % nb];
			b[l->hash % nb] = l;
		}
	}
	free(t->b);
	t->b = b;
	t->nb = nb;
}

static void htab_insert(struct htab *t, struct pgm_link *l)
{
	htab_grow(t);
	l->next = t->b[l->hash % t->nb];
	t->b[l->hash % t->nb] = l;
	t->n++;
}

static void htab_remove(struct htab *t, struct pgm_link *l)
{
	struct pgm_link **p = &t->b[l->hash % t->nb];

	while (*p && *p != l)
		p = &(*p)->next;
	if (*p) {
		*p = l->next;
		t->n--;
	}
}

/* }===== */

struct pgm_conv {
	struct pgm_link link;
	struct store_conv c;
	bool purging;		/* picked by the running pgm_purge */
};

struct pgm_queue {
	struct pgm_link link;
	char *key, *queue;
	struct pgm_item *head, *tail;
	int n;
};

struct pgm_mark {
	struct pgm_link link;
	uint64_t seq;
	char id[];
};

struct pgm {
	struct htab convs, queues, items, marks;
};

struct pgm *pgm_new(void)
{
	struct pgm *m = calloc(1, sizeof(*m));

	if (!m || htab_init(&m->convs) < 0 || htab_init(&m->queues) < 0 || htab_init(&m->items) < 0 ||
	    htab_init(&m->marks) < 0) {
		pgm_free(m);
		return NULL;
	}
	return m;
}

static void item_free(struct pgm_item *it)
{
	free(it->role);
	free(it->fn);
	free(it->payload);
	free(it);
}

void pgm_free(struct pgm *m)
{
	if (!m)
		return;
	for (size_t i = 0; m->convs.b && i < m->convs.nb; i++) {
		for (struct pgm_link *l = m->convs.b[i], *next; l; l = next) {
			next = l->next;
			store_conv_clear(&((struct pgm_conv *)l)->c);
			free(l);
		}
	}
	for (size_t i = 0; m->queues.b && i < m->queues.nb; i++) {
		for (struct pgm_link *l = m->queues.b[i], *next; l; l = next) {
			struct pgm_queue *q = (struct pgm_queue *)l;

			next = l->next;
			for (struct pgm_item *it = q->head, *n; it; it = n) {
				n = it->next_in_queue;
				item_free(it);
			}
			free(q->key);
			free(q->queue);
			free(q);
		}
	}
	for (size_t i = 0; m->marks.b && i < m->marks.nb; i++) {
		for (struct pgm_link *l = m->marks.b[i], *next; l; l = next) {
			next = l->next;
			free(l);
		}
	}
	free(m->marks.b);
	free(m->convs.b);
	free(m->queues.b);
	free(m->items.b);
	free(m);
}

/* {===== conversations */

static struct pgm_conv *conv_find(struct pgm *m, const char *key)
{
	uint64_t h = hash_str(FNV_BASIS, key);

	for (struct pgm_link *l = m->convs.b[h % m->convs.nb]; l; l = l->next)
		if (l->hash == h && strcmp(((struct pgm_conv *)l)->c.key, key) == 0)
			return (struct pgm_conv *)l;
	return NULL;
}

static int dup_field(char **dst, const char *src)
{
	*dst = src ? strdup(src) : NULL;
	return src && !*dst ? -ENOMEM : 0;
}

/* A deep copy of SRC into DST (zeroed first); -ENOMEM leaves DST cleared. */
static int conv_copy(struct store_conv *dst, const struct store_conv *src)
{
	int rc = 0;

	memset(dst, 0, sizeof(*dst));
	rc |= dup_field(&dst->key, src->key);
	rc |= dup_field(&dst->state, src->state ? src->state : "bot");
	rc |= dup_field(&dst->user_json, src->user_json);
	rc |= dup_field(&dst->dl_conversation_id, src->dl_conversation_id);
	rc |= dup_field(&dst->dl_token, src->dl_token);
	rc |= dup_field(&dst->watermark, src->watermark);
	rc |= dup_field(&dst->hub_data, src->hub_data);
	rc |= dup_field(&dst->handoff_id, src->handoff_id);
	dst->dl_token_expiry = src->dl_token_expiry;
	dst->updated_at = src->updated_at;
	if (src->nseen) {
		dst->seen = malloc(src->nseen * sizeof(*dst->seen));
		if (dst->seen) {
			memcpy(dst->seen, src->seen, src->nseen * sizeof(*dst->seen));
			dst->nseen = src->nseen;
		} else {
			rc = -ENOMEM;
		}
	}
	if (rc) {
		store_conv_clear(dst);
		return -ENOMEM;
	}
	return 0;
}

int pgm_conv_put(struct pgm *m, const struct store_conv *c, int64_t updated_at)
{
	struct pgm_conv *pc = conv_find(m, c->key);
	struct store_conv copy;

	if (conv_copy(&copy, c) < 0)
		return -ENOMEM;
	copy.updated_at = updated_at;
	if (pc) {
		store_conv_clear(&pc->c);
		pc->c = copy;
		return 0;
	}
	if (!(pc = calloc(1, sizeof(*pc)))) {
		store_conv_clear(&copy);
		return -ENOMEM;
	}
	pc->c = copy;
	pc->link.hash = hash_str(FNV_BASIS, c->key);
	htab_insert(&m->convs, &pc->link);
	return 0;
}

int pgm_conv_get(struct pgm *m, const char *key, struct store_conv *out)
{
	struct pgm_conv *pc = conv_find(m, key);

	memset(out, 0, sizeof(*out));
	if (!pc)
		return -ENOENT;
	return conv_copy(out, &pc->c);
}

/* The keys of the rows that MATCH, copied: callers then change the table freely. */
static char **conv_keys(struct pgm *m, bool (*match)(const struct store_conv *c, const void *arg),
			const void *arg, size_t *n)
{
	char **keys = calloc(m->convs.n + 1, sizeof(*keys));

	*n = 0;
	for (size_t i = 0; keys && i < m->convs.nb; i++) {
		for (struct pgm_link *l = m->convs.b[i]; l; l = l->next) {
			const struct store_conv *c = &((struct pgm_conv *)l)->c;

			if (match(c, arg) && (keys[*n] = strdup(c->key)))
				(*n)++;
		}
	}
	return keys;
}

static void free_keys(char **keys, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
}

static bool is_open(const struct store_conv *c, const void *arg)
{
	(void)arg;
	return strcmp(c->state, "closed") != 0;
}

int pgm_conv_each_open(struct pgm *m, store_conv_fn fn, void *arg)
{
	size_t n;
	char **keys = conv_keys(m, is_open, NULL, &n);
	int stop = 0;

	if (!keys)
		return -ENOMEM;
	for (size_t i = 0; i < n && !stop; i++) {
		struct store_conv c;

		if (pgm_conv_get(m, keys[i], &c) < 0)
			continue;
		stop = fn(&c, arg);
		store_conv_clear(&c);
	}
	free_keys(keys, n);
	return stop;
}

/* }===== */

/* {===== outbox */

static uint64_t queue_hash(const char *key, const char *queue)
{
	return hash_str(hash_str(FNV_BASIS, key) ^ 0x1f, queue);
}

static struct pgm_queue *queue_find(struct pgm *m, const char *key, const char *queue)
{
	uint64_t h = queue_hash(key, queue);

	for (struct pgm_link *l = m->queues.b[h % m->queues.nb]; l; l = l->next) {
		struct pgm_queue *q = (struct pgm_queue *)l;

		if (l->hash == h && strcmp(q->key, key) == 0 && strcmp(q->queue, queue) == 0)
			return q;
	}
	return NULL;
}

static struct pgm_queue *queue_get(struct pgm *m, const char *key, const char *queue)
{
	struct pgm_queue *q = queue_find(m, key, queue);

	if (q)
		return q;
	if (!(q = calloc(1, sizeof(*q))) || !(q->key = strdup(key)) || !(q->queue = strdup(queue))) {
		if (q)
			free(q->key);
		free(q);
		return NULL;
	}
	q->link.hash = queue_hash(key, queue);
	htab_insert(&m->queues, &q->link);
	return q;
}

struct pgm_item *pgm_item_add(struct pgm *m, const char *key, const char *queue, const struct pgm_item *src)
{
	struct pgm_queue *q = queue_get(m, key, queue);
	struct pgm_item *it = q ? calloc(1, sizeof(*it)) : NULL;

	if (!it || dup_field(&it->role, src->role) < 0 || dup_field(&it->fn, src->fn) < 0 ||
	    !(it->payload = malloc(src->len + 1))) {
		if (it)
			item_free(it);
		if (q && !q->n) {
			htab_remove(&m->queues, &q->link);
			free(q->key);
			free(q->queue);
			free(q);
		}
		return NULL;
	}
	if (src->len)
		memcpy(it->payload, src->payload, src->len);
	it->payload[src->len] = '\0';
	it->len = src->len;
	it->id = src->id;
	it->attempts = src->attempts;
	it->next_at_ms = src->next_at_ms;
	it->created_ms = src->created_ms;
	it->seq = src->seq;
	it->queue = q;
	it->prev_in_queue = q->tail;
	if (q->tail)
		q->tail->next_in_queue = it;
	else
		q->head = it;
	q->tail = it;
	q->n++;
	it->by_id.hash = hash_id(it->id);
	htab_insert(&m->items, &it->by_id);
	return it;
}

struct pgm_item *pgm_item_find(struct pgm *m, int64_t id)
{
	uint64_t h = hash_id(id);

	for (struct pgm_link *l = m->items.b[h % m->items.nb]; l; l = l->next)
		if (((struct pgm_item *)l)->id == id)
			return (struct pgm_item *)l;
	return NULL;
}

void pgm_item_remove(struct pgm *m, struct pgm_item *it)
{
	struct pgm_queue *q = it->queue;

	if (it->prev_in_queue)
		it->prev_in_queue->next_in_queue = it->next_in_queue;
	else
		q->head = it->next_in_queue;
	if (it->next_in_queue)
		it->next_in_queue->prev_in_queue = it->prev_in_queue;
	else
		q->tail = it->prev_in_queue;
	htab_remove(&m->items, &it->by_id);
	item_free(it);
	if (--q->n == 0) {	/* an empty queue goes: keys of ended conversations do not pile up */
		htab_remove(&m->queues, &q->link);
		free(q->key);
		free(q->queue);
		free(q);
	}
}

struct pgm_item *pgm_head(struct pgm *m, const char *key, const char *queue)
{
	struct pgm_queue *q = queue_find(m, key, queue);

	return q ? q->head : NULL;
}

int pgm_count(struct pgm *m, const char *key, const char *queue)
{
	struct pgm_queue *q = queue_find(m, key, queue);

	return q ? q->n : 0;
}

int pgm_each_queue(struct pgm *m, int (*fn)(const char *key, const char *queue, void *arg), void *arg)
{
	size_t n = 0, cap = m->queues.n;
	char **pairs = calloc(2 * cap + 1, sizeof(*pairs));
	int stop = 0;

	if (!pairs)
		return -ENOMEM;
	for (size_t i = 0; i < m->queues.nb; i++) {
		for (struct pgm_link *l = m->queues.b[i]; l && n < cap; l = l->next) {
			struct pgm_queue *q = (struct pgm_queue *)l;

			pairs[2 * n] = strdup(q->key);
			pairs[2 * n + 1] = strdup(q->queue);
			n++;
		}
	}
	for (size_t i = 0; i < n && !stop; i++)
		if (pairs[2 * i] && pairs[2 * i + 1] && queue_find(m, pairs[2 * i], pairs[2 * i + 1]))
			stop = fn(pairs[2 * i], pairs[2 * i + 1], arg);
	free_keys(pairs, 2 * n);
	return stop;
}

void pgm_forget(struct pgm *m, const char *key, const char *const *queues)
{
	struct pgm_conv *pc = conv_find(m, key);

	if (pc) {
		htab_remove(&m->convs, &pc->link);
		store_conv_clear(&pc->c);
		free(pc);
	}
	for (size_t i = 0; queues[i]; i++) {
		struct pgm_queue *q = queue_find(m, key, queues[i]);

		while (q && q->n > 1)
			pgm_item_remove(m, q->head);
		if (q)
			pgm_item_remove(m, q->head);	/* the last one frees Q */
	}
}

int64_t pgm_max_id(struct pgm *m, const char *key, const char *const *queues)
{
	int64_t max = 0;

	for (size_t i = 0; queues[i]; i++) {
		struct pgm_queue *q = queue_find(m, key, queues[i]);

		if (q && q->tail && q->tail->id > max)
			max = q->tail->id;
	}
	return max;
}

/* }===== */

/* {===== purge */

struct purge_pick {
	struct pgm_conv *conv;
	int64_t at;
};

static int by_time(const void *a, const void *b)
{
	int64_t x = ((const struct purge_pick *)a)->at, y = ((const struct purge_pick *)b)->at;

	return x < y ? -1 : x > y;
}

/* Removes every item whose conversation is being purged, in one pass over the queues. */
static void drop_purged_items(struct pgm *m)
{
	for (size_t i = 0; i < m->queues.nb; i++) {
		struct pgm_link *l = m->queues.b[i];

		while (l) {
			struct pgm_queue *q = (struct pgm_queue *)l;
			struct pgm_conv *pc = conv_find(m, q->key);

			l = l->next;
			if (!pc || !pc->purging)
				continue;
			while (q->n > 1)
				pgm_item_remove(m, q->head);
			pgm_item_remove(m, q->head);	/* the last one frees Q */
		}
	}
}

int pgm_purge(struct pgm *m, int64_t before_s, int max, void (*gone)(void *arg, const char *key), void *arg)
{
	struct purge_pick *picks = calloc(m->convs.n + 1, sizeof(*picks));
	size_t n = 0;

	if (!picks)
		return -ENOMEM;
	for (size_t i = 0; i < m->convs.nb; i++) {
		for (struct pgm_link *l = m->convs.b[i]; l; l = l->next) {
			struct pgm_conv *pc = (struct pgm_conv *)l;

			if (strcmp(pc->c.state, "closed") == 0 && pc->c.updated_at < before_s)
				picks[n++] = (struct purge_pick){ pc, pc->c.updated_at };
		}
	}
	qsort(picks, n, sizeof(*picks), by_time);
	if (n > (size_t)max)
		n = (size_t)max;
	for (size_t i = 0; i < n; i++) {
		picks[i].conv->purging = true;
		gone(arg, picks[i].conv->c.key);
	}
	if (n)
		drop_purged_items(m);
	for (size_t i = 0; i < n; i++) {
		struct pgm_conv *pc = picks[i].conv;

		htab_remove(&m->convs, &pc->link);
		store_conv_clear(&pc->c);
		free(pc);
	}
	free(picks);
	return (int)n;
}

/* }===== */

/* {===== marks */

static struct pgm_mark *mark_find(struct pgm *m, const char *id)
{
	uint64_t h = hash_str(FNV_BASIS, id);

	for (struct pgm_link *l = m->marks.b[h % m->marks.nb]; l; l = l->next)
		if (l->hash == h && strcmp(((struct pgm_mark *)l)->id, id) == 0)
			return (struct pgm_mark *)l;
	return NULL;
}

int pgm_mark_set(struct pgm *m, const char *id, uint64_t seq)
{
	struct pgm_mark *k = mark_find(m, id);

	if (k) {
		k->seq = seq;
		return 0;
	}
	if (!(k = malloc(sizeof(*k) + strlen(id) + 1)))
		return -ENOMEM;
	strcpy(k->id, id);
	k->seq = seq;
	k->link.hash = hash_str(FNV_BASIS, id);
	htab_insert(&m->marks, &k->link);
	return 0;
}

uint64_t pgm_mark_get(struct pgm *m, const char *id)
{
	struct pgm_mark *k = mark_find(m, id);

	return k ? k->seq : 0;
}

void pgm_mark_del(struct pgm *m, const char *id, uint64_t seq)
{
	struct pgm_mark *k = mark_find(m, id);

	if (k && (!seq || k->seq == seq)) {
		htab_remove(&m->marks, &k->link);
		free(k);
	}
}

/* }===== */
