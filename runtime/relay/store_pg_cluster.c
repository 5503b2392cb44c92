/* store_pg_cluster.c - a cluster member's part of the PostgreSQL store (STORE_PER_KEY):
 * whose writes these are (node and epoch, for the fence and for inbound rows' origins), what
 * a fenced member drops, loading a key this member has just taken over, and the shared
 * inbound table (a hub event stored with its key's claim and a wake-up, read back in
 * order by the owner). The write-behind log itself is store_pg.c's. */
#include "relay/store_pg_internal.h"
#include "relay/store_pg_load.h"
#include "relay/store_pg_mirror.h"

#include "base/clock.h"
#include "base/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const KEY_QUEUES[] = { "to_bot", "to_hub", NULL };

struct pg_conn *pgs_pg_conn(struct store_impl *st)
{
	return st->pc;
}

int pgs_set_owner(struct store_impl *st, const char *node, int64_t epoch)
{
	if (!st->per_key || strlen(node) >= sizeof(st->node) || epoch <= 0)
		return -EINVAL;
	snprintf(st->node, sizeof(st->node), "%s", node);
	snprintf(st->epoch, sizeof(st->epoch), "%" PRId64, epoch);
	st->origins = 0;
	return 0;
}

/* Drops every entry not in flight: writes (and their waiters, told -EPERM) and questions
 * (answered -ECANCELED). Those in flight are dropped when their batch's answer comes. */
static void drop_log(struct store_impl *st, int err)
{
	struct entry *e = st->head;
	unsigned n = 0;

	while (e) {
		struct entry *next = e->next;

		if (!e->in_flight) {
			pgs_unlink_entry(st, e);
			if (!e->seq && e->rows)
				e->rows(e->arg, -ECANCELED, NULL);
			else if (!e->seq)
				e->fn(e->arg, -ECANCELED);
			else
				n++;
			pgs_entry_free(e);
		}
		e = next;
	}
	pgs_run_waiters(st, UINT64_MAX, err);
	if (n)
		log_warn(st->lg, "store.writes_dropped", "writes=%u reason=\"fenced\"", n);
}

void pgs_forget(struct store_impl *st, const char *key)
{
	pgm_forget(st->m, key, KEY_QUEUES);
}

void pgs_forget_all(struct store_impl *st)
{
	struct pgm *m = pgm_new();

	drop_log(st, -EPERM);
	if (!m) {
		log_error(st->lg, "store.error", "what=forget_all reason=\"out of memory\"");
		return;
	}
	pgm_free(st->m);
	st->m = m;
	st->next_block = 0;
	st->block_end = st->next_id;	/* a fresh block for the next epoch */
	st->node[0] = '\0';		/* no claims until registered again */
}

/* Row ROW of a SELECT of the conversations' columns into the mirror. */
static int mirror_row(struct store_impl *st, const PGresult *r, int row)
{
	struct store_conv c;
	int rc;

	store_pg_conv_of_row(r, row, &c);
	rc = pgm_conv_put(st->m, &c, c.updated_at);
	free(c.seen);
	return rc;
}

/* One store_load: the row, then the items, then (when they carry ids above ours) a
 * fresh block. */
struct load {
	struct store_impl *st;
	char *key;
	void (*fn)(void *arg, int err);
	void *arg;
	int err;
	int parts;		/* answers still expected */
};

static void load_finish(struct load *l)
{
	l->fn(l->arg, l->err);
	free(l->key);
	free(l);
}

static void on_load_block(void *arg, int err, const PGresult *r)
{
	struct load *l = arg;
	struct store_impl *st = l->st;

	if (!err && PQntuples(r) == 1) {
		st->next_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		st->block_end = st->next_id + PG_ID_BLOCK;
		st->next_block = 0;
	} else {
		l->err = err ? err : -EPROTO;
	}
	load_finish(l);
}

static void load_part_done(struct load *l)
{
	struct store_impl *st = l->st;

	if (--l->parts > 0)
		return;
	if (!l->err && pgm_max_id(st->m, l->key, KEY_QUEUES) >= st->next_id) {
		if (pgs_ask(st, Q_BLOCK, 0, NULL, on_load_block, l))
			return;
		l->err = -ENOMEM;
	}
	load_finish(l);
}


static void on_load_conv(void *arg, int err, const PGresult *r)
{
	struct load *l = arg;

	if (err) {
		l->err = err;
	} else if (PQntuples(r) == 1 && mirror_row(l->st, r, 0) < 0) {
		l->err = -ENOMEM;
	}
	load_part_done(l);
}

static void on_load_outbox(void *arg, int err, const PGresult *r)
{
	struct load *l = arg;

	if (err)
		l->err = err;
	for (int i = 0; !err && !l->err && i < PQntuples(r); i++) {
		size_t len = 0;
		unsigned char *payload;
		struct pgm_item it;

		if (pgm_item_find(l->st->m, store_pg_int(r, i, 0)))
			continue;	/* known already (written here) */
		payload = PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 3), &len);
		it = (struct pgm_item){ .id = store_pg_int(r, i, 0), .payload = (char *)payload, .len = len,
					.attempts = (int)store_pg_int(r, i, 4), .next_at_ms = store_pg_int(r, i, 5),
					.created_ms = store_pg_int(r, i, 6), .role = (char *)store_pg_str(r, i, 7),
					.fn = (char *)store_pg_str(r, i, 8) };
		if (!payload || !pgm_item_add(l->st->m, store_pg_str(r, i, 1), store_pg_str(r, i, 2), &it))
			l->err = -ENOMEM;
		PQfreemem(payload);
	}
	load_part_done(l);
}

int pgs_load(struct store_impl *st, const char *key, void (*fn)(void *arg, int err), void *arg)
{
	struct load *l;

	if (!st->per_key)
		return -EOPNOTSUPP;
	if (st->down)
		return -ENOTCONN;
	if (!(l = calloc(1, sizeof(*l))) || !(l->key = strdup(key))) {
		free(l);
		return -ENOMEM;
	}
	l->st = st;
	l->fn = fn;
	l->arg = arg;
	l->parts = 2;
	/* What this instance knew of KEY goes first: the database's rows replace it. */
	pgm_forget(st->m, key, KEY_QUEUES);
	if (!pgs_ask(st, Q_LOAD_CONV, 1, &key, on_load_conv, l)) {
		free(l->key);
		free(l);
		return -ENOMEM;
	}
	if (!pgs_ask(st, Q_LOAD_OUTBOX, 1, &key, on_load_outbox, l)) {
		l->err = -ENOMEM;
		load_part_done(l);	/* the row's answer finishes it */
	}
	return 0;
}

int pgs_inbound_add(struct store_impl *st, const struct store_inbound *in)
{
	char origin[CLUSTER_NODE_MAX + 48], created[24];
	char *hex = NULL;
	const char *add[] = { origin, in->key, in->op, in->id, in->arg, in->flag ? "true" : "false", NULL, created };
	const char *claim[] = { in->key, st->node, st->epoch };
	int rc;

	if (!st->per_key)
		return -EOPNOTSUPP;
	if (in->payload && !(add[6] = hex = pgs_hex_bytea(in->payload, in->len)))
		return -ENOMEM;
	if (st->nwrites + 3 >= PG_BACKLOG_MAX) {
		free(hex);
		return -EIO;
	}
	if (in->origin)
		add[0] = in->origin;	/* the hub event's call: a retry elsewhere adds no row */
	else
		snprintf(origin, sizeof(origin), "%s/%s/%" PRIu64, st->node, st->epoch, ++st->origins);
	snprintf(created, sizeof(created), "%" PRId64, (int64_t)clock_wall_ms());
	rc = pgs_write(st, Q_IN_ADD, 8, add);
	free(hex);
	/* Not registered yet (just started, or taken over a moment ago): the row waits without
	 * an owner; the relay claims its key once registered (store_inbound_unowned). */
	if (rc == 0 && st->node[0])
		rc = pgs_write(st, Q_IN_CLAIM, 3, claim);
	if (rc == 0)
		rc = pgs_write(st, Q_NOTIFY, 1, claim);
	return rc;
}

struct inbound_read {
	store_inbound_fn fn;
	void *arg;
};

static void on_inbound_rows(void *arg, int err, const PGresult *r)
{
	struct inbound_read *rd = arg;
	int n = err ? 0 : PQntuples(r);
	struct store_inbound *rows = n ? calloc((size_t)n, sizeof(*rows)) : NULL;

	if (n && !rows)
		err = -ENOMEM;
	for (int i = 0; rows && i < n; i++) {
		rows[i] = (struct store_inbound){
			.seq = store_pg_int(r, i, 0), .op = (char *)store_pg_str(r, i, 1), .id = (char *)store_pg_str(r, i, 2),
			.arg = (char *)store_pg_str(r, i, 3), .flag = store_pg_str(r, i, 4) && store_pg_str(r, i, 4)[0] == 't',
		};
		if (!PQgetisnull(r, i, 5)) {
			rows[i].payload = (char *)PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 5),
								  &rows[i].len);
			if (!rows[i].payload) {
				err = -ENOMEM;
				n = i;
			}
		}
	}
	rd->fn(rd->arg, err, err ? NULL : rows, err ? 0 : (size_t)n);
	for (int i = 0; rows && i < n; i++)
		PQfreemem(rows[i].payload);
	free(rows);
	free(rd);
}

int pgs_inbound_read(struct store_impl *st, const char *key, store_inbound_fn fn, void *arg)
{
	struct inbound_read *rd;

	if (!st->per_key)
		return -EOPNOTSUPP;
	if (st->down)
		return -ENOTCONN;
	if (!(rd = calloc(1, sizeof(*rd))))
		return -ENOMEM;
	*rd = (struct inbound_read){ fn, arg };
	if (!pgs_ask(st, Q_IN_READ, 1, &key, on_inbound_rows, rd)) {
		free(rd);
		return -ENOMEM;
	}
	return 0;
}

struct fetch {
	void (*fn)(void *arg, int err, const struct store_conv *c);
	void *arg;
};

static void on_fetched(void *arg, int err, const PGresult *r)
{
	struct fetch *f = arg;
	struct store_conv c;

	if (err || PQntuples(r) != 1) {
		f->fn(f->arg, err ? err : -ENOENT, NULL);
	} else {
		store_pg_conv_of_row(r, 0, &c);
		f->fn(f->arg, 0, &c);
		free(c.seen);
	}
	free(f);
}

int pgs_conv_fetch(struct store_impl *st, const char *key, void (*fn)(void *arg, int err, const struct store_conv *c),
			  void *arg)
{
	struct fetch *f;

	if (!st->per_key)
		return -EOPNOTSUPP;
	if (st->down)
		return -ENOTCONN;
	if (!(f = calloc(1, sizeof(*f))))
		return -ENOMEM;
	*f = (struct fetch){ fn, arg };
	if (!pgs_ask(st, Q_LOAD_CONV, 1, &key, on_fetched, f)) {
		free(f);
		return -ENOMEM;
	}
	return 0;
}

struct unowned {
	void (*fn)(void *arg, int err, const char *const *keys, size_t n);
	void *arg;
};

static void on_unowned(void *arg, int err, const PGresult *r)
{
	struct unowned *u = arg;
	int n = err ? 0 : PQntuples(r);
	const char **keys = n ? calloc((size_t)n, sizeof(*keys)) : NULL;

	for (int i = 0; keys && i < n; i++)
		keys[i] = PQgetvalue(r, i, 0);
	u->fn(u->arg, err ? err : n && !keys ? -ENOMEM : 0, keys, keys ? (size_t)n : 0);
	free(keys);
	free(u);
}

int pgs_inbound_unowned(struct store_impl *st, void (*fn)(void *arg, int err, const char *const *keys, size_t n),
			       void *arg)
{
	struct unowned *u;

	if (!st->per_key)
		return -EOPNOTSUPP;
	if (!(u = calloc(1, sizeof(*u))))
		return -ENOMEM;
	*u = (struct unowned){ fn, arg };
	if (!pgs_ask(st, Q_IN_UNOWNED, 0, NULL, on_unowned, u)) {
		free(u);
		return -ENOMEM;
	}
	return 0;
}

int pgs_inbound_done(struct store_impl *st, int64_t seq)
{
	char s[24];
	const char *p[] = { s };

	snprintf(s, sizeof(s), "%" PRId64, seq);
	return pgs_write(st, Q_IN_DONE, 1, p);
}
