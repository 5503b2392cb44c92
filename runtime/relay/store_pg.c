/* store_pg.c - PostgreSQL behind the store API, for a "postgresql://..." state.
 *
 * The relay reads synchronously and the loop must never wait on the database, so reads
 * are answered from an in-memory mirror (store_pg_mirror.c) of every conversation row and
 * outbox item, loaded once at open with the schema's migrations (store_pg_load.c: the only
 * blocking part, before the daemon serves). Every write changes the mirror at once and joins a log
 * of statements written behind through pg_conn (store_pg_log.c): what one loop turn wrote
 * goes out as one batch, one transaction (group commit), after the before-commit hook added
 * its rows.
 *
 * Durability and failures:
 * - store_after_commit callbacks run once the batch carrying every write made before
 *   them has committed; store_commit_error() says 0 then.
 * - A batch that fails (database down, connection lost, timeout, a statement refused)
 *   keeps its writes in the log: they are sent again, in order, once the connection is
 *   back, so nothing promised to nobody (a bot's reply, a delivery done) is lost. The
 *   waiters of that batch (and of every turn while the database is down) run at once with
 *   store_commit_error() < 0: the hub is answered 503 and delivers again; the writes are
 *   not undone, so the caller must not undo them either (the binding says "not
 *   confirmed", and handoff.events keeps the event id: the retry finds it).
 * - Every statement can run twice (a batch whose outcome is unknown is sent again):
 *   upserts, inserts ON CONFLICT DO NOTHING, deletes and updates by id.
 * - A batch refused by the server (-EPROTO) is retried PG_PROTO_RETRIES times, a second
 *   apart; then its writes are dropped from the log (logged: the mirror still has them).
 *   One the server rolled back for a deadlock or a serialization failure (SQLSTATE class
 *   40) is sent again at once, its waiters still waiting: not a refusal.
 *
 * Outbox ids are handoffd's, not the database's: the mirror must hand one out at once.
 * They count up from the high-water mark kept in the sequence handoffd_outbox_id (written
 * behind every PG_ID_MARK_EVERY ids) plus PG_ID_GAP at each open, so they are unique and
 * increasing per queue and a restart never reuses one, even one whose write was lost.
 *
 * Hub event ids (dedupe) are the database's answer, not the mirror's (instances will share
 * it): store_event_add_async asks "SELECT 1", and a fresh id's INSERT joins the log in the
 * same turn as the effect the caller then writes, so both commit together. Until it
 * committed the id is marked in the mirror and a second delivery of it is answered
 * -EIO (503, retried) rather than "new". */
#include "relay/store_pg_internal.h"
#include "relay/store_pg_load.h"
#include "relay/store_pg_mirror.h"
#include "relay/store_pg_schema.h"
#include "relay/cluster.h"

#include "base/clock.h"
#include "base/log.h"
#include "net/loop.h"
#include "net/pg_conn.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

/* {===== the store API */

static bool pgs_write_pending(const struct store_impl *st)
{
	return st->begun || st->nwrites > 0;
}

static int pgs_flush(struct store_impl *st)
{
	loop_timer_stop(st->turn);
	pgs_on_turn(st);
	return 0;
}

static int pgs_after_commit(struct store_impl *st, store_commit_fn fn, void *arg)
{
	if (!pgs_write_pending(st)) {
		fn(arg);
		return 0;
	}
	if (st->nw == st->capw) {
		size_t cap = st->capw ? st->capw * 2 : 64;
		struct waiter *w = realloc(st->w, cap * sizeof(*w));

		if (!w)
			return -ENOMEM;
		st->w = w;
		st->capw = cap;
	}
	st->w[st->nw++] = (struct waiter){ fn, arg, 0 };
	pgs_arm_turn(st);
	return 0;
}

static int pgs_commit_error(const struct store_impl *st)
{
	return st->commit_err;
}

static int pgs_begin(struct store_impl *st)
{
	st->begun = true;
	pgs_arm_turn(st);
	return 0;
}

static void pgs_before_commit(struct store_impl *st, store_commit_fn fn, void *arg)
{
	st->before = fn;
	st->before_arg = arg;
}

/* "\x" and two hex digits a byte: bytea's text input. */
char *pgs_hex_bytea(const void *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *b = p;
	char *s = malloc(2 * n + 3), *o = s;

	if (!s)
		return NULL;
	*o++ = '\\';
	*o++ = 'x';
	for (size_t i = 0; i < n; i++) {
		*o++ = digits[b[i] >> 4];
		*o++ = digits[b[i] & 15];
	}
	*o = '\0';
	return s;
}

static int pgs_conv_put(struct store_impl *st, const struct store_conv *c)
{
	char expiry[24], updated[24];
	char *seen = c->nseen ? pgs_hex_bytea(c->seen, c->nseen * sizeof(*c->seen)) : NULL;
	int64_t now = now_s();
	const char *p[] = { c->key, c->state ? c->state : "bot", c->user_json, c->dl_conversation_id,
			    c->dl_token, expiry, c->watermark, seen, c->hub_data, c->handoff_id, updated };
	int rc;

	if ((c->nseen && !seen) || st->nwrites >= PG_BACKLOG_MAX || pgm_conv_put(st->m, c, now) < 0) {
		free(seen);
		log_error(st->lg, "store.error", "what=conv_put conv=%s", c->key);
		return -EIO;
	}
	snprintf(expiry, sizeof(expiry), "%" PRId64, c->dl_token_expiry);
	snprintf(updated, sizeof(updated), "%" PRId64, now);
	rc = pgs_write(st, Q_CONV_PUT, 11, p);
	free(seen);
	return rc;
}

static int pgs_conv_get(struct store_impl *st, const char *key, struct store_conv *out)
{
	return pgm_conv_get(st->m, key, out);
}

static int pgs_conv_each_open(struct store_impl *st, store_conv_fn fn, void *arg)
{
	return pgm_conv_each_open(st->m, fn, arg);
}

static int pgs_event_expire(struct store_impl *st, int64_t before_s)
{
	char at[24];
	const char *p[] = { at };

	snprintf(at, sizeof(at), "%" PRId64, before_s);
	if (st->per_key) {	/* applied inbound rows go with the event ids of their time */
		char ms[24];
		const char *q[] = { ms };

		snprintf(ms, sizeof(ms), "%" PRId64, before_s * 1000);
		pgs_write(st, Q_IN_EXPIRE, 1, q);
	}
	return pgs_write(st, Q_EVENT_EXPIRE, 1, p);
}

static void purge_gone(void *arg, const char *key)
{
	struct store_impl *st = arg;

	pgs_write(st, Q_PURGE_OUTBOX, 1, &key);
	pgs_write(st, Q_PURGE_CONV, 1, &key);
}

static int pgs_purge_ended(struct store_impl *st, int64_t before_s, int64_t events_before_s)
{
	int n = pgm_purge(st->m, before_s, STORE_PURGE_BATCH, purge_gone, st);

	if (n >= 0 && n < STORE_PURGE_BATCH)
		pgs_event_expire(st, events_before_s);
	return n < 0 ? -EIO : n;
}

static int pgs_event_add_async(struct store_impl *st, const char *event_id, store_event_fn fn, void *arg)
{
	struct entry *e;

	if (st->down || pgm_mark_get(st->m, event_id))
		return -EIO;	/* unreachable, or a delivery of it is being written: retried */
	if (!(e = pgs_append(st, Q_EVENT_CHECK, false, 1, &event_id)))
		return -ENOMEM;
	e->fn = fn;
	e->arg = arg;
	return -EINPROGRESS;
}

static int pgs_event_delete(struct store_impl *st, const char *event_id)
{
	pgm_mark_del(st->m, event_id, 0);
	return pgs_write(st, Q_EVENT_DEL, 1, &event_id);
}

static void pgs_set_event_ttl(struct store_impl *st, int64_t ttl_s)
{
	st->event_ttl_s = ttl_s;
}

/* {===== outbox id blocks (STORE_PER_KEY): each instance takes PG_ID_BLOCK ids at a time
 * from one sequence, so no two hand out the same id; the next block is fetched when half
 * of the current one is used. Ids grow per instance; a conversation taken over whose
 * items carry ids above ours waits for a fresh block (above them) before it is used. */

static void on_block(void *arg, int err, const PGresult *r)
{
	struct store_impl *st = arg;

	st->block_asked = false;
	if (err || PQntuples(r) != 1) {
		log_warn(st->lg, "store.id_block_failed", "reason=\"%s\"", pg_conn_strerror(err ? err : -EPROTO));
		return;
	}
	st->next_block = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
}

static void ask_block(struct store_impl *st)
{
	if (!st->block_asked && !st->next_block && pgs_ask(st, Q_BLOCK, 0, NULL, on_block, st))
		st->block_asked = true;
}

static int next_outbox_id(struct store_impl *st, int64_t *id)
{
	if (st->next_id >= st->block_end) {
		if (!st->next_block) {
			ask_block(st);
			return -EAGAIN;
		}
		st->next_id = st->next_block;
		st->block_end = st->next_block + PG_ID_BLOCK;
		st->next_block = 0;
	}
	if (st->block_end - st->next_id < PG_ID_BLOCK / 2)
		ask_block(st);
	*id = st->next_id++;
	return 0;
}

/* }===== */

static int64_t pgs_outbox_add_call(struct store_impl *st, const char *key, const char *queue, const char *role,
				   const char *fn, const char *payload, size_t len)
{
	struct pgm_item src = { .id = st->next_id, .role = (char *)role, .fn = (char *)fn,
				.payload = (char *)payload, .len = len, .created_ms = (int64_t)clock_wall_ms() };
	char id[24], created[24], *hex = pgs_hex_bytea(payload, len);
	const char *p[] = { id, key, queue, hex, created, role, fn };
	int rc;

	if (st->per_key && next_outbox_id(st, &src.id) < 0) {
		free(hex);
		log_error(st->lg, "store.error", "what=outbox_add conv=%s reason=\"no outbox id block\"", key);
		return -EIO;
	}
	src.seq = st->seq + 1;	/* the OUT_ADD written below */
	if (!hex || st->nwrites + 1 >= PG_BACKLOG_MAX || !pgm_item_add(st->m, key, queue, &src)) {
		free(hex);
		log_error(st->lg, "store.error", "what=outbox_add conv=%s", key);
		return -EIO;
	}
	snprintf(id, sizeof(id), "%" PRId64, src.id);
	snprintf(created, sizeof(created), "%" PRId64, src.created_ms);
	rc = pgs_write(st, Q_OUT_ADD, 7, p);
	free(hex);
	if (rc < 0)
		return rc;
	if (!st->per_key && ++st->next_id > st->id_mark) {	/* the high-water mark moves ahead of the ids */
		st->id_mark = st->next_id + PG_ID_MARK_EVERY;
		snprintf(id, sizeof(id), "%" PRId64, st->id_mark);
		pgs_write(st, Q_ID_MARK, 1, p);
	}
	return src.id;
}

static char *dup_or_null(const char *s, bool *short_of_memory)
{
	char *d = s ? strdup(s) : NULL;

	*short_of_memory |= s && !d;
	return d;
}

static int pgs_outbox_head(struct store_impl *st, const char *key, const char *queue, struct store_item *out)
{
	struct pgm_item *it = pgm_head(st->m, key, queue);
	bool short_of_memory = false;

	memset(out, 0, sizeof(*out));
	if (!it)
		return -ENOENT;
	out->id = it->id;
	out->key = dup_or_null(key, &short_of_memory);
	out->queue = dup_or_null(queue, &short_of_memory);
	out->role = dup_or_null(it->role, &short_of_memory);
	out->fn = dup_or_null(it->fn, &short_of_memory);
	if ((out->payload = malloc(it->len + 1)))
		memcpy(out->payload, it->payload, it->len + 1);
	out->payload_len = it->len;
	out->attempts = it->attempts;
	out->next_at_ms = it->next_at_ms;
	out->created_ms = it->created_ms;
	if (short_of_memory || !out->payload) {
		store_item_clear(out);
		return -ENOMEM;
	}
	return 0;
}

static int pgs_outbox_done(struct store_impl *st, int64_t id)
{
	struct pgm_item *it = pgm_item_find(st->m, id);
	char s[24];
	const char *p[] = { s };

	if (!it)
		return 0;	/* gone already, as a DELETE of a missing row */
	pgm_item_remove(st->m, it);
	snprintf(s, sizeof(s), "%" PRId64, id);
	return pgs_write(st, Q_OUT_DONE, 1, p);
}

static int pgs_outbox_count(struct store_impl *st, const char *key, const char *queue)
{
	return pgm_count(st->m, key, queue);
}

static int pgs_outbox_retry(struct store_impl *st, int64_t id, int attempts, int64_t next_at_ms)
{
	struct pgm_item *it = pgm_item_find(st->m, id);
	char s[24], a[16], n[24];
	const char *p[] = { s, a, n };

	if (!it)
		return 0;
	it->attempts = attempts;
	it->next_at_ms = next_at_ms;
	snprintf(s, sizeof(s), "%" PRId64, id);
	snprintf(a, sizeof(a), "%d", attempts);
	snprintf(n, sizeof(n), "%" PRId64, next_at_ms);
	return pgs_write(st, Q_OUT_RETRY, 3, p);
}

static bool pgs_outbox_durable(struct store_impl *st, int64_t id)
{
	struct pgm_item *it = pgm_item_find(st->m, id);

	return !it || it->seq <= pgs_durable_seq(st);
}

static void pgs_on_durable(struct store_impl *st, store_commit_fn fn, void *arg)
{
	st->durable = fn;
	st->durable_arg = arg;
}

static int pgs_outbox_each_queue(struct store_impl *st, int (*fn)(const char *key, const char *queue, void *arg),
				 void *arg)
{
	return pgm_each_queue(st->m, fn, arg);
}

/* }===== */

/* {===== opening and closing (their blocking parts are store_pg_load.c's) */

static void pgs_close(struct store_impl *st);

struct store_impl *store_pg_open(struct loop *lp, struct log *lg, const char *conninfo, unsigned flags, char *err,
				 size_t errlen)
{
	struct store_impl *st = calloc(1, sizeof(*st));
	struct pg_conn_opts opts = { .conninfo = conninfo };
	PGconn *conn;

	if (!st || !(st->conninfo = strdup(conninfo)) || !(st->m = pgm_new())) {
		snprintf(err, errlen, "out of memory opening the state");
		pgs_close(st);
		return NULL;
	}
	st->lp = lp;
	st->lg = lg;
	st->event_ttl_s = STORE_EVENT_ID_TTL_S;
	st->per_key = flags & STORE_PER_KEY;
	conn = store_pg_connect(conninfo, err, errlen);
	if (!conn || (st->per_key ? store_pg_prepare(lg, conn, &st->next_id, err, errlen)
				  : store_pg_load(lg, conn, st->m, &st->next_id, err, errlen)) < 0) {
		PQfinish(conn);
		pgs_close(st);
		return NULL;
	}
	st->id_mark = st->next_id;	/* the mark written at open: the first id writes the next */
	if (st->per_key)
		st->block_end = st->next_id + PG_ID_BLOCK;	/* the first block, taken at open */
	log_info(lg, "store.opened", "backend=postgresql host=%s port=%s db=%s schema=%d", PQhost(conn), PQport(conn),
		 PQdb(conn), store_pg_schema_version());
	PQfinish(conn);
	st->turn = loop_timer_new(lp, pgs_on_turn, st);
	st->retry = loop_timer_new(lp, pgs_on_retry, st);
	st->pc = st->turn && st->retry ? pg_conn_new(lp, lg, &opts, pgs_on_state, st) : NULL;
	if (!st->pc) {
		snprintf(err, errlen, "out of memory opening the state");
		pgs_close(st);
		return NULL;
	}
	return st;
}

/* At close the writes still in the log go in one blocking transaction: the loop is over,
 * and what the bot said in the last moments must not be lost. */
static int write_log_sync(struct store_impl *st)
{
	char err[512];
	PGconn *conn;
	int rc = 0;
	unsigned n = 0;

	if (!st->nwrites)
		return 0;
	if (!(conn = store_pg_connect(st->conninfo, err, sizeof(err))) || store_pg_exec(conn, "BEGIN", "begin", err, sizeof(err)) < 0) {
		rc = -ENOTCONN;
		goto out;
	}
	for (struct entry *e = st->head; e && rc == 0; e = e->next) {
		PGresult *r;

		if (!e->seq)
			continue;
		r = PQexecParams(conn, pgs_sql(e->q), e->nparams, NULL, (const char *const *)e->p, NULL, NULL, 0);
		if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
			snprintf(err, sizeof(err), "%s", PQresultErrorMessage(r));
			err[strcspn(err, "\n")] = '\0';
			rc = -EPROTO;
		}
		PQclear(r);
		n++;
	}
	if (rc == 0 && store_pg_exec(conn, "COMMIT", "commit", err, sizeof(err)) < 0)
		rc = -EIO;
out:
	if (rc < 0)
		log_error(st->lg, "store.close_failed", "writes_lost=%u reason=\"%s\"", st->nwrites, err);
	else
		log_info(st->lg, "store.closed", "writes_at_close=%u", n);
	PQfinish(conn);
	return rc;
}

static void pgs_close(struct store_impl *st)
{
	int rc;

	if (!st)
		return;
	if (st->pc) {
		if (st->begun && st->before)
			st->before(st->before_arg);
		st->closing = true;
		pg_conn_free(st->pc);	/* what flies fails -ECANCELED: writes stay in the log */
		/* A cluster member's writes must go fenced, which a connection of its own would
		 * not be: what it did not commit, the next owner does again. */
		rc = st->per_key ? -ESHUTDOWN : write_log_sync(st);
		if (st->per_key && st->nwrites)
			log_warn(st->lg, "store.closed", "writes_not_written=%u", st->nwrites);
		for (size_t i = 0; i < st->nw; i++)
			st->w[i].seq = 1;
		pgs_run_waiters(st, UINT64_MAX, rc);
	}
	while (st->head) {
		struct entry *e = st->head;

		pgs_unlink_entry(st, e);
		if (!e->seq && e->rows)
			e->rows(e->arg, -ECANCELED, NULL);
		else if (!e->seq)
			e->fn(e->arg, -ECANCELED);
		pgs_entry_free(e);
	}
	loop_timer_free(st->turn);
	loop_timer_free(st->retry);
	pgm_free(st->m);
	free(st->w);
	free(st->conninfo);
	free(st);
}

/* }===== */

const struct store_backend store_pg_backend = {
	.close = pgs_close,
	.flush = pgs_flush,
	.write_pending = pgs_write_pending,
	.after_commit = pgs_after_commit,
	.begin = pgs_begin,
	.before_commit = pgs_before_commit,
	.commit_error = pgs_commit_error,
	.conv_put = pgs_conv_put,
	.conv_get = pgs_conv_get,
	.conv_each_open = pgs_conv_each_open,
	.purge_ended = pgs_purge_ended,
	.event_add_async = pgs_event_add_async,
	.event_delete = pgs_event_delete,
	.set_event_ttl = pgs_set_event_ttl,
	.outbox_add_call = pgs_outbox_add_call,
	.outbox_head = pgs_outbox_head,
	.outbox_done = pgs_outbox_done,
	.outbox_count = pgs_outbox_count,
	.outbox_retry = pgs_outbox_retry,
	.outbox_each_queue = pgs_outbox_each_queue,
	.pg_conn = pgs_pg_conn,
	.set_owner = pgs_set_owner,
	.load = pgs_load,
	.forget = pgs_forget,
	.forget_all = pgs_forget_all,
	.inbound_add = pgs_inbound_add,
	.inbound_read = pgs_inbound_read,
	.inbound_done = pgs_inbound_done,
	.inbound_unowned = pgs_inbound_unowned,
	.conv_fetch = pgs_conv_fetch,
	.outbox_durable = pgs_outbox_durable,
	.on_durable = pgs_on_durable,
};
