/* store_pg_log.c - the PostgreSQL store's write-behind log: the statements the store
 * appends (writes, sent until they commit; questions, asked once), the loop turn that
 * closes them into one batch and one transaction, the batches sent through pg_conn and
 * what their outcome does (retries, drops, the after-commit waiters), and the connection
 * going down and up. store_pg.c's file comment says what the log promises; what each
 * statement means is store_pg.c's and store_pg_cluster.c's. */
#include "relay/store_pg_internal.h"
#include "relay/store_pg_mirror.h"

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

static const char *const SQL[Q_COUNT] = {
	[Q_CONV_PUT] = "INSERT INTO conversations (key, state, user_json, dl_conversation_id, dl_token,"
		       " dl_token_expiry, watermark, dl_seen, hub_data, handoff_id, updated_at)"
		       " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
		       " ON CONFLICT (key) DO UPDATE SET state = EXCLUDED.state, user_json = EXCLUDED.user_json,"
		       " dl_conversation_id = EXCLUDED.dl_conversation_id, dl_token = EXCLUDED.dl_token,"
		       " dl_token_expiry = EXCLUDED.dl_token_expiry, watermark = EXCLUDED.watermark,"
		       " dl_seen = EXCLUDED.dl_seen, hub_data = EXCLUDED.hub_data,"
		       " handoff_id = EXCLUDED.handoff_id, updated_at = EXCLUDED.updated_at",
	[Q_OUT_ADD] = "INSERT INTO outbox (id, key, queue, payload, created, role, fn, attempts, next_at)"
		      " VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0) ON CONFLICT (id) DO NOTHING",
	[Q_OUT_DONE] = "DELETE FROM outbox WHERE id = $1",
	[Q_OUT_RETRY] = "UPDATE outbox SET attempts = $2, next_at = $3 WHERE id = $1",
	[Q_ID_MARK] = "SELECT setval('handoffd_outbox_id', greatest($1::bigint,"
		      " (SELECT last_value FROM handoffd_outbox_id)))",
	[Q_EVENT_CHECK] = "SELECT 1 FROM events WHERE id = $1",
	[Q_EVENT_ADD] = "INSERT INTO events (id, at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
	[Q_EVENT_DEL] = "DELETE FROM events WHERE id = $1",
	/* Bounded: a large backlog of old ids goes over several calls, no batch stalls on it. */
	[Q_EVENT_EXPIRE] = "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < $1 LIMIT 10000)",
	/* Only while the conversation is closed: another instance may have opened it again. */
	[Q_PURGE_OUTBOX] = "DELETE FROM outbox WHERE key = $1 AND EXISTS (SELECT 1 FROM conversations c"
			   " WHERE c.key = $1 AND c.state = 'closed')",
	[Q_PURGE_CONV] = "DELETE FROM conversations WHERE key = $1 AND state = 'closed'",
	[Q_IN_ADD] = "INSERT INTO inbound (origin, key, op, id, arg, flag, payload, created)"
		     " VALUES ($1, $2, $3, $4, $5, $6::boolean, $7, $8) ON CONFLICT (origin) DO NOTHING",
	[Q_IN_CLAIM] = cluster_sql_claim,
	[Q_NOTIFY] = "SELECT pg_notify('" CLUSTER_CHANNEL "', $1)",
	[Q_IN_READ] = "SELECT seq, op, id, arg, flag, payload FROM inbound WHERE key = $1 AND NOT done"
		      " ORDER BY seq LIMIT 200",
	/* Kept, not deleted: its origin must still refuse a late copy of the same delivery. */
	[Q_IN_DONE] = "UPDATE inbound SET done = true, payload = NULL WHERE seq = $1",
	[Q_IN_EXPIRE] = "DELETE FROM inbound WHERE seq IN (SELECT seq FROM inbound WHERE done AND created < $1"
			" LIMIT 10000)",
	[Q_LOAD_CONV] = "SELECT key, state, user_json, dl_conversation_id, dl_token, dl_token_expiry,"
			" watermark, dl_seen, hub_data, handoff_id, updated_at FROM conversations WHERE key = $1",
	[Q_LOAD_OUTBOX] = "SELECT id, key, queue, payload, attempts, next_at, created, role, fn"
			  " FROM outbox WHERE key = $1 ORDER BY id",
	[Q_BLOCK] = "SELECT nextval('handoffd_outbox_block')",
	[Q_IN_UNOWNED] = "SELECT DISTINCT key FROM inbound i WHERE NOT i.done AND NOT EXISTS"
			 " (SELECT 1 FROM owners o WHERE o.key = i.key) LIMIT 500",
};

const char *pgs_sql(enum sql q)
{
	return SQL[q];
}

/* {===== the log */

void pgs_entry_free(struct entry *e)
{
	for (int i = 0; i < e->nparams; i++)
		free(e->p[i]);
	free(e);
}

void pgs_unlink_entry(struct store_impl *st, struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		st->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		st->tail = e->prev;
	if (e->seq)
		st->nwrites--;
}

void pgs_arm_turn(struct store_impl *st)
{
	if (st->turn && !loop_timer_pending(st->turn))
		loop_timer_start(st->turn, 0, 0);
}

/* Appends a statement with N text parameters (NULL: SQL NULL), all copied. */
struct entry *pgs_append(struct store_impl *st, enum sql q, bool write, int n, const char *const *params)
{
	struct entry *e;

	if (write && st->nwrites >= PG_BACKLOG_MAX) {
		log_error(st->lg, "store.backlog_full", "writes=%u", st->nwrites);
		return NULL;
	}
	if (!(e = calloc(1, sizeof(*e))))
		return NULL;
	e->st = st;
	e->q = q;
	e->nparams = n;
	for (int i = 0; i < n; i++) {
		if (params[i] && !(e->p[i] = strdup(params[i]))) {
			pgs_entry_free(e);
			return NULL;
		}
	}
	if (write) {
		e->seq = ++st->seq;
		st->nwrites++;
		st->begun = true;
	}
	e->prev = st->tail;
	if (st->tail)
		st->tail->next = e;
	else
		st->head = e;
	st->tail = e;
	pgs_arm_turn(st);
	return e;
}

int pgs_write(struct store_impl *st, enum sql q, int n, const char *const *params)
{
	return pgs_append(st, q, true, n, params) ? 0 : -EIO;
}

struct entry *pgs_ask(struct store_impl *st, enum sql q, int n, const char *const *params,
			 void (*rows)(void *arg, int err, const PGresult *r), void *arg)
{
	struct entry *e = pgs_append(st, q, false, n, params);

	if (e) {
		e->rows = rows;
		e->arg = arg;
	}
	return e;
}

/* Every write before the first one still in the log is committed (or given up). */
uint64_t pgs_durable_seq(const struct store_impl *st)
{
	for (const struct entry *e = st->head; e; e = e->next)
		if (e->seq)
			return e->seq - 1;
	return st->seq;
}

/* }===== */

/* {===== waiters */

/* Runs, with ERR, the waiters whose writes are at or before UPTO (a prefix: their
 * sequence numbers grow, and those of an unfinished turn, 0, come last). */
void pgs_run_waiters(struct store_impl *st, uint64_t upto, int err)
{
	size_t n = 0;
	struct waiter *run;

	while (n < st->nw && st->w[n].seq && st->w[n].seq <= upto)
		n++;
	if (!n || !(run = malloc(n * sizeof(*run))))
		return;
	memcpy(run, st->w, n * sizeof(*run));
	memmove(st->w, st->w + n, (st->nw - n) * sizeof(*st->w));
	st->nw -= n;
	/* Callbacks may write and wait again: they land behind, in the array. */
	for (size_t i = 0; i < n; i++) {
		st->commit_err = err;
		run[i].fn(run[i].arg);
	}
	st->commit_err = 0;
	free(run);
}

/* The turn ended: its waiters wait for what was written up to now. */
static void close_turn(struct store_impl *st)
{
	for (size_t i = 0; i < st->nw; i++)
		if (!st->w[i].seq)
			st->w[i].seq = st->seq;
	pgs_run_waiters(st, pgs_durable_seq(st), 0);	/* whatever is committed already */
}

/* The database is out of reach: waiters hear it now (their writes stay in the log), and
 * questions are answered with an error. */
static void fail_waiting(struct store_impl *st, int err)
{
	struct entry *e = st->head;

	pgs_run_waiters(st, UINT64_MAX, err);
	while (e) {
		struct entry *next = e->next;

		if (!e->seq && !e->in_flight) {
			pgs_unlink_entry(st, e);
			if (e->rows)
				e->rows(e->arg, -EIO, NULL);
			else
				e->fn(e->arg, -EIO);
			pgs_entry_free(e);
		}
		e = next;
	}
}

/* }===== */

/* {===== batches */

static void on_done(void *arg, int err, const char *msg, const struct pg_result *res);

static void drop_unsendable(struct store_impl *st, struct entry *e, int rc)
{
	log_error(st->lg, "store.write_dropped", "reason=\"%s\"", pg_conn_strerror(rc));
	pgs_unlink_entry(st, e);
	if (!e->seq)
		e->fn(e->arg, -EIO);
	else if (e->q == Q_EVENT_ADD)
		pgm_mark_del(st->m, e->p[0], e->seq);
	pgs_entry_free(e);
}

/* The log's head goes out as one batch (one transaction), unless one is in flight. */
static void send(struct store_impl *st)
{
	unsigned n = 0;
	uint64_t last = 0;

	if (st->flight || st->closing || st->held || !st->head)
		return;
	if (!st->up) {
		if (st->down)
			fail_waiting(st, -ENOTCONN);
		return;
	}
	for (struct entry *e = st->head, *next; e && n < PG_BATCH_MAX; e = next) {
		int rc = pg_conn_queue(st->pc, SQL[e->q], e->nparams, (const char *const *)e->p, on_done, e);

		next = e->next;
		if (rc == -EMSGSIZE || rc == -EINVAL) {
			drop_unsendable(st, e, rc);	/* it never could go: it must not block the rest */
			continue;
		}
		if (rc < 0) {
			if (n)
				break;	/* what went out is a batch; the rest goes next */
			log_warn(st->lg, "store.send_refused", "reason=\"%s\"", pg_conn_strerror(rc));
			if (rc == -ENOTCONN) {
				st->up = false;
				st->down = true;
				fail_waiting(st, rc);
			} else {	/* a full queue empties: try again shortly */
				st->held = true;
				loop_timer_start(st->retry, 100, 0);
			}
			return;
		}
		e->in_flight = true;
		n++;
		if (e->seq)
			last = e->seq;
	}
	st->flight = n;
	st->flight_last = last;
	st->flight_err = 0;
}

void pgs_on_turn(void *arg)
{
	struct store_impl *st = arg;

	if (st->begun && st->before)
		st->before(st->before_arg);	/* its writes join this turn's batch */
	st->begun = false;
	close_turn(st);
	send(st);
}

void pgs_on_retry(void *arg)
{
	struct store_impl *st = arg;

	st->held = false;
	pgs_arm_turn(st);
}

/* Drops the writes of the batch in flight: refused again and again (they can never commit,
 * and holding them would block every write behind them), or fenced. */
static void drop_flight(struct store_impl *st, bool fenced)
{
	struct entry *e = st->head;
	unsigned n = 0;

	while (e && e->seq <= st->flight_last) {
		struct entry *next = e->next;

		if (e->seq) {
			if (e->q == Q_EVENT_ADD)
				pgm_mark_del(st->m, e->p[0], e->seq);
			pgs_unlink_entry(st, e);
			pgs_entry_free(e);
			n++;
		}
		e = next;
	}
	/* Fenced is a cluster's normal course (the new owner goes on from what committed), as
	 * in drop_log; refused again and again loses writes. */
	if (fenced)
		log_warn(st->lg, "store.writes_dropped", "writes=%u reason=\"fenced\"", n);
	else
		log_error(st->lg, "store.writes_dropped", "writes=%u reason=\"refused by the database again and again\"", n);
}

static void batch_over(struct store_impl *st)
{
	int err = st->flight_err;

	if (st->closing)
		return;
	if (!err) {
		st->proto_failures = 0;
		pgs_run_waiters(st, pgs_durable_seq(st), 0);
		if (st->durable)
			st->durable(st->durable_arg);
	} else if (st->flight_rolled_back) {
		/* A deadlock's victim, or a serialization failure: the server asks for the batch
		 * again. Its waiters wait for that, and it does not count as a refusal. */
		st->flight_rolled_back = false;
	} else {
		pgs_run_waiters(st, st->flight_last, err);
		if (err == -EPERM) {
			/* Fenced: written for an epoch that is gone; sent again, it would commit
			 * under the next one. */
			drop_flight(st, true);
			st->proto_failures = 0;
		} else if (err == -EPROTO) {
			if (++st->proto_failures >= PG_PROTO_RETRIES) {
				drop_flight(st, false);
				st->proto_failures = 0;
				if (st->durable)	/* what waited on the dropped writes may go */
					st->durable(st->durable_arg);
			}
			st->held = true;
			loop_timer_start(st->retry, 1000, 0);
			return;
		}
		/* Connection errors: pg_conn reconnects and on_state sends again. */
	}
	if (st->head)
		pgs_arm_turn(st);
}

/* A fresh event id: its INSERT joins the log now, the turn of the effect that follows. */
static int event_fresh(struct store_impl *st, const char *id)
{
	char at[24];
	const char *p[] = { id, at };
	struct entry *e;

	if (pgm_mark_get(st->m, id))
		return -EIO;	/* a delivery of it is being written: answered once it is */
	snprintf(at, sizeof(at), "%" PRId64, (int64_t)time(NULL));
	e = pgs_append(st, Q_EVENT_ADD, true, 2, p);
	if (!e || pgm_mark_set(st->m, id, e->seq) < 0)
		return -EIO;
	if (++st->event_adds % 1024 == 0) {	/* expire old ids now and then, not on every event */
		snprintf(at, sizeof(at), "%" PRId64, (int64_t)time(NULL) - st->event_ttl_s);
		pgs_write(st, Q_EVENT_EXPIRE, 1, p + 1);
	}
	return 1;
}

static void answer(struct store_impl *st, struct entry *e, int err, const struct pg_result *res)
{
	int rc;

	if (e->rows) {
		e->rows(e->arg, err ? (st->closing ? -ECANCELED : err) : 0, (const PGresult *)res);
		return;
	}
	if (err)
		rc = st->closing ? -ECANCELED : -EIO;
	else if (PQntuples((const PGresult *)res) > 0)
		rc = 0;
	else
		rc = event_fresh(st, e->p[0]);
	e->fn(e->arg, rc);
}

static void on_done(void *arg, int err, const char *msg, const struct pg_result *res)
{
	struct entry *e = arg;
	struct store_impl *st = e->st;

	st->flight--;
	e->in_flight = false;
	if (err && !st->flight_err) {
		st->flight_err = err;
		st->flight_rolled_back = err == -EPROTO && pg_conn_sqlstate_retry(pg_conn_batch_sqlstate(st->pc));
		if (!st->closing && !st->flight_rolled_back)
			log_warn(st->lg, "store.batch_failed", "reason=\"%s\" detail=\"%s\" writes_kept=%u",
				 pg_conn_strerror(err), msg ? msg : "", st->nwrites);
	}
	if (!e->seq) {
		pgs_unlink_entry(st, e);
		answer(st, e, err, res);
		pgs_entry_free(e);
	} else if (!err) {
		if (e->q == Q_EVENT_ADD)
			pgm_mark_del(st->m, e->p[0], e->seq);
		pgs_unlink_entry(st, e);
		pgs_entry_free(e);
	}
	if (!st->flight)
		batch_over(st);
}

void pgs_on_state(void *arg, bool up, const char *reason)
{
	struct store_impl *st = arg;

	st->up = up;
	if (up) {
		st->down = false;
		log_info(st->lg, "store.db_up", "writes_waiting=%u", st->nwrites);
		pgs_arm_turn(st);
		return;
	}
	st->down = true;
	log_warn(st->lg, "store.db_down", "reason=\"%s\" writes_waiting=%u", reason ? reason : "", st->nwrites);
	if (!st->flight)
		fail_waiting(st, -ENOTCONN);
}

/* }===== */
