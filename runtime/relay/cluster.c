/* cluster.c - one instance's membership in the cluster, on the shared pg_conn: it
 * registers (node, epoch), fences every batch with hd_fence, heartbeats, removes dead
 * nodes, claims its share of their conversations, claims and releases single keys, and
 * carries wake-ups. The contract is in cluster.h; the arithmetic in cluster_lease.c.
 *
 * Every statement it queues carries an `op`, linked into the cluster, so that
 * cluster_free() can cut the link and the callback that pg_conn still owes only frees
 * the op. Every op remembers the epoch it was queued in: a result that arrives after a
 * re-registration is about an epoch that is gone, and is ignored.
 *
 * Choices, with their reasons:
 * - A dead node's row is removed with FOR UPDATE SKIP LOCKED, not by a DELETE that waits
 *   on its KEY SHARE: a stalled node's batch can hold the lock for long (its results fill
 *   the socket, or it stopped halfway through sending), and a waiting DELETE would hold
 *   this connection, heartbeat included. hd_cut ends such a batch's session; the row goes
 *   at a later heartbeat, when no batch of it is in flight: the same fence.
 * - The share of orphans evens out everything owned (ceil(total / live) - mine), not
 *   ceil(orphans / live): instances claim at different moments, and the latter would
 *   hand the first claimer a half, the next a quarter of what is left, and so on.
 * - An orphan is an owners row without a nodes row of the same node AND epoch, so a
 *   restart under a fixed cluster.node leaves its old conversations claimable too.
 * - Registration is DELETE then INSERT, not an upsert: an UPDATE of the row does not
 *   conflict with FOR KEY SHARE, so it would not wait for a batch of an earlier process
 *   of the same name still in flight.
 * - The lease is measured from when the heartbeat was queued, which is before it was
 *   sent: shorter, so on the safe side.
 * - A release leaves the owners rows (orphans) instead of deleting them: the others claim
 *   and resume them at once, where deleted rows would wait for their next message. */
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
#include <unistd.h>

#define DEFAULT_HEARTBEAT_S 2.0
#define DEFAULT_LEASE_S 10.0
#define CLUSTER_REGISTER_RETRY_MS 100	/* while the connection is not up yet */
#define HD001 "HD001"		/* hd_fence: this node's row is gone or has another epoch */

/* {===== the SQL */

const char *const cluster_schema_sql[] = {
	"CREATE SEQUENCE IF NOT EXISTS handoffd_epoch",
	"CREATE TABLE IF NOT EXISTS nodes (node text PRIMARY KEY, epoch bigint NOT NULL,"
	" heartbeat_at timestamptz NOT NULL, draining boolean NOT NULL DEFAULT false)",
	"CREATE TABLE IF NOT EXISTS owners (key text PRIMARY KEY, node text NOT NULL,"
	" epoch bigint NOT NULL, claimed_at timestamptz NOT NULL DEFAULT now())",
	"CREATE INDEX IF NOT EXISTS owners_node_epoch ON owners (node, epoch)",
	/* FOR KEY SHARE: a DELETE of the row (a takeover) waits for, or skips, the batch in
	 * flight that holds it; after the DELETE commits, the lookup finds nothing.
	 * A member stopped (SIGSTOP, a stall) halfway through sending a batch would hold that
	 * lock, and keep its peers from declaring it dead, for as long as it stalls. Its
	 * backend then waits for the rest of the pipeline, which is neither idle in
	 * transaction (no Sync came) nor a statement running, so no server timeout ends it.
	 * hd_cut does: the session carries its epoch (unique) in application_name for the
	 * transaction. */
	"CREATE OR REPLACE FUNCTION hd_fence(p_node text, p_epoch bigint) RETURNS void"
	" LANGUAGE plpgsql AS $$ BEGIN"
	" PERFORM set_config('application_name', 'handoffd epoch ' || p_epoch, true);"
	" PERFORM 1 FROM nodes WHERE node = p_node AND epoch = p_epoch FOR KEY SHARE;"
	" IF NOT FOUND THEN RAISE EXCEPTION 'node % epoch % is fenced', p_node, p_epoch"
	" USING ERRCODE = 'HD001'; END IF; END $$",
	/* Ends the sessions in a transaction of a member whose heartbeat is older than the
	 * lease: it is dead to the others, and its open transaction holds its row. Members
	 * share a role (or may signal each other's sessions: pg_signal_backend); where not,
	 * a warning, and the row stays until that transaction ends. */
	"CREATE OR REPLACE FUNCTION hd_cut(p_self text, p_lease float8) RETURNS void"
	" LANGUAGE plpgsql AS $$ DECLARE s record; BEGIN"
	" FOR s IN SELECT a.pid FROM pg_stat_activity a JOIN nodes n"
	" ON a.application_name = 'handoffd epoch ' || n.epoch WHERE n.node <> p_self"
	" AND n.heartbeat_at < now() - make_interval(secs => p_lease) AND a.pid <> pg_backend_pid() LOOP"
	" BEGIN PERFORM pg_terminate_backend(s.pid);"
	" EXCEPTION WHEN insufficient_privilege THEN RAISE WARNING 'hd_cut: may not end session %', s.pid; END;"
	" END LOOP; END $$",
};
const size_t cluster_schema_count = sizeof(cluster_schema_sql) / sizeof(cluster_schema_sql[0]);

/* An owners row is an orphan when no nodes row has its node and epoch: the node is gone,
 * or it registered again (a restart under the same name). A scalar subquery, not NOT
 * EXISTS: the planner turns NOT EXISTS into an anti-join, and when a row was claimed by a
 * concurrent transaction the recheck of its newest version (READ COMMITTED) keeps the
 * anti-join's old answer, so a row a live node had just claimed was taken again (seen
 * under load: two instances holding one conversation). A subquery is evaluated anew. */
#define ORPHAN(o) "(SELECT count(*) FROM nodes n WHERE n.node = " o ".node AND n.epoch = " o ".epoch) = 0"

static const char SQL_FENCE[] = "SELECT hd_fence($1, $2::bigint)";
/* Bare: a new epoch must not be fenced by the old one. The DELETE waits for a batch of
 * an earlier process of the same name that still holds the row. */
static const char SQL_UNREGISTER[] = "DELETE FROM nodes WHERE node = $1";
static const char SQL_REGISTER[] = "INSERT INTO nodes (node, epoch, heartbeat_at)"
	" VALUES ($1, nextval('handoffd_epoch'), now()) RETURNING epoch";
static const char SQL_HEARTBEAT[] = "UPDATE nodes SET heartbeat_at = now()"
	" WHERE node = $1 AND epoch = $2::bigint";
/* SKIP LOCKED: a dead node's batch still in flight holds its row; it is removed at the
 * next heartbeat instead of stalling this connection. */
static const char SQL_EXPIRE[] = "WITH gone AS (DELETE FROM nodes WHERE node IN"
	" (SELECT node FROM nodes WHERE node <> $1"
	" AND heartbeat_at < now() - make_interval(secs => $2::float8) FOR UPDATE SKIP LOCKED)"
	" RETURNING node) SELECT node, pg_notify('" CLUSTER_RELEASE_CHANNEL "', node) FROM gone";
static const char SQL_CUT[] = "SELECT hd_cut($1, $2::float8)";
static const char SQL_FIGURES[] = "SELECT"
	" (SELECT count(*) FROM owners o WHERE " ORPHAN("o") "),"
	" (SELECT count(*) FROM owners),"
	" (SELECT count(*) FROM nodes WHERE NOT draining"
	"  AND heartbeat_at >= now() - make_interval(secs => $3::float8)),"
	" (SELECT count(*) FROM owners WHERE node = $1 AND epoch = $2::bigint)";
static const char SQL_PEERS[] = "SELECT count(*) FROM nodes WHERE NOT draining"
	" AND heartbeat_at >= now() - make_interval(secs => $1::float8)";
/* SKIP LOCKED: instances claiming at the same time take disjoint rows. */
static const char SQL_TAKE_ORPHANS[] = "WITH picked AS (SELECT o.key FROM owners o WHERE "
	ORPHAN("o") " ORDER BY o.key LIMIT $3::bigint FOR UPDATE OF o SKIP LOCKED)"
	" UPDATE owners SET node = $1, epoch = $2::bigint, claimed_at = now() FROM picked"
	" WHERE owners.key = picked.key AND " ORPHAN("owners") " RETURNING owners.key";
/* A key a live node owns is left alone, unlocked: ON CONFLICT DO UPDATE locks the row even
 * when its WHERE is false, until the end of the batch, and two instances' batches that
 * forward events of the same conversations in a different order deadlocked on those
 * locks. Only a key without a row or with an orphan row at the statement's start is
 * inserted or locked; its WHERE then sees the newest version. */
const char cluster_sql_claim[] = "INSERT INTO owners (key, node, epoch) SELECT $1::text, $2::text, $3::bigint"
	" WHERE NOT EXISTS (SELECT 1 FROM owners o WHERE o.key = $1 AND NOT " ORPHAN("o") ")"
	" ON CONFLICT (key) DO UPDATE SET node = EXCLUDED.node, epoch = EXCLUDED.epoch,"
	" claimed_at = now() WHERE " ORPHAN("owners") " RETURNING node";
/* A statement of its own: it sees what committed while the INSERT waited. */
static const char SQL_OWNER[] = "SELECT node, epoch FROM owners WHERE key = $1";
static const char SQL_RELEASE[] = "DELETE FROM owners WHERE key = $1 AND node = $2 AND epoch = $3::bigint";
static const char SQL_DRAINING[] = "UPDATE nodes SET draining = true WHERE node = $1 AND epoch = $2::bigint";
static const char SQL_LEAVE[] = "DELETE FROM nodes WHERE node = $1 AND epoch = $2::bigint";
static const char SQL_NOTIFY_RELEASE[] = "SELECT pg_notify('" CLUSTER_RELEASE_CHANNEL "', $1)";
static const char SQL_NOTIFY[] = "SELECT pg_notify('" CLUSTER_CHANNEL "', $1)";

/* }===== */

/* DRAINING: still fenced and heartbeating, but claims nothing more. */
enum phase { REGISTERING, REGISTERED, DRAINING, RELEASING, RELEASED };

enum op_kind { OP_REGISTER, OP_HEARTBEAT, OP_EXPIRE, OP_PEERS, OP_FIGURES, OP_TAKE, OP_CLAIM,
	       OP_OWNER, OP_RELEASE, OP_RELEASE_ALL };

/* One cluster_claim: two statements (claim, then who owns it) share it. */
struct claim_req {
	cluster_claim_fn cb;
	void *arg;
	int refs;		/* ops that still point here */
	bool reported;
};

struct op {
	struct cluster *c;	/* NULL once the cluster is freed */
	struct op *prev, *next;
	enum op_kind kind;
	int64_t epoch;
	uint64_t queued_ms;
	struct claim_req *req;
	cluster_done_fn done;
	void *arg;
};

struct cluster {
	struct loop *lp;
	struct log *lg;
	struct pg_conn *pc;
	struct cluster_callbacks cb;
	char node[CLUSTER_NODE_MAX];
	char epoch_text[24];
	char lease_text[32];		/* seconds, for make_interval */
	uint64_t heartbeat_ms;
	enum phase phase;
	int64_t epoch;
	bool registering;		/* a registration is in flight */
	bool beating;			/* a heartbeat is in flight */
	bool in_round;			/* a claim round is in flight */
	bool round_due;			/* look for orphans at the next chance */
	unsigned beats;			/* since the last look for orphans */
	struct loop_timer *beat;	/* repeating: heartbeat, or registration retry */
	struct loop_timer *soon;	/* one-shot: a claim round in the next turn */
	struct cluster_lease lease;
	struct cluster_stats stats;
	struct op *ops;			/* queued, callback pending */
};

/* {===== ops */

static void on_result(void *arg, int err, const char *msg, const struct pg_result *res);

static struct op *op_new(struct cluster *c, enum op_kind kind)
{
	struct op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->c = c;
	op->kind = kind;
	op->epoch = c->epoch;
	op->queued_ms = clock_mono_ms();
	op->next = c->ops;
	if (c->ops)
		c->ops->prev = op;
	c->ops = op;
	return op;
}

static void op_free(struct op *op)
{
	struct cluster *c = op->c;

	if (c) {
		if (op->prev)
			op->prev->next = op->next;
		else
			c->ops = op->next;
		if (op->next)
			op->next->prev = op->prev;
	}
	if (op->req && --op->req->refs == 0)
		free(op->req);
	free(op);
}

/* Queues SQL with OP as its callback's argument (OP freed when queueing fails). */
static int queue_op(struct cluster *c, struct op *op, bool bare, const char *sql, int n,
		    const char *const *params)
{
	int err = !op ? -ENOMEM :
		  bare ? pg_conn_queue_bare(c->pc, sql, n, params, on_result, op) :
			 pg_conn_queue(c->pc, sql, n, params, on_result, op);

	if (err && op)
		op_free(op);
	return err;
}

static int queue_kind(struct cluster *c, enum op_kind kind, const char *sql, int n,
		      const char *const *params)
{
	return queue_op(c, op_new(c, kind), false, sql, n, params);
}

/* }===== */

/* {===== registration and loss */

static void start_registration(struct cluster *c)
{
	const char *params[] = { c->node };
	int err;

	if (c->registering)
		return;
	err = pg_conn_queue_bare(c->pc, SQL_UNREGISTER, 1, params, NULL, NULL);
	/* The others look for orphans at once: an earlier epoch of this name may have left
	 * some (a restart under a fixed cluster.node). */
	if (err == 0)
		err = pg_conn_queue_bare(c->pc, SQL_NOTIFY_RELEASE, 1, params, NULL, NULL);
	if (err == 0)
		err = queue_op(c, op_new(c, OP_REGISTER), true, SQL_REGISTER, 1, params);
	if (err) {
		/* Not connected yet, most often: try again shortly, not a heartbeat later. */
		log_debug(c->lg, "cluster.register_deferred", "reason=\"%s\"", pg_conn_strerror(err));
		loop_timer_start(c->soon, CLUSTER_REGISTER_RETRY_MS, 0);
		return;
	}
	c->registering = true;
}

static void on_prologue_failed(void *arg, const char *sqlstate, const char *msg);

static void registered(struct cluster *c, const PGresult *r, uint64_t queued_ms)
{
	int64_t epoch = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
	const char *params[2] = { c->node, NULL };
	char text[sizeof(c->epoch_text)];

	snprintf(text, sizeof(text), "%" PRId64, epoch);
	params[1] = text;
	/* Without the fence no write of this epoch may go out: try again next tick. */
	if (epoch <= 0 || pg_conn_set_prologue(c->pc, SQL_FENCE, 2, params, on_prologue_failed, c) < 0) {
		log_error(c->lg, "cluster.register_failed", "reason=\"no epoch or no memory\"");
		return;
	}
	c->epoch = epoch;
	memcpy(c->epoch_text, text, sizeof(text));
	c->phase = REGISTERED;
	c->beats = 0;
	c->round_due = true;	/* orphans may be waiting: a restart, a node that died alone */
	cluster_lease_renew(&c->lease, queued_ms);
	log_info(c->lg, "cluster.registered", "node=%s epoch=%" PRId64, c->node, epoch);
	if (c->cb.registered)
		c->cb.registered(c->cb.arg, c->node, epoch);
	loop_timer_start(c->soon, 0, 0);
}

/* Taken over: the owner drops everything, then a new epoch is asked for. The old
 * prologue stays until then, so what was queued meanwhile is refused, not committed. */
static void lost(struct cluster *c, const char *msg)
{
	int64_t old = c->epoch;

	c->stats.lost++;
	c->phase = REGISTERING;
	c->epoch = 0;
	c->stats.owned = 0;
	c->in_round = c->beating = false;
	cluster_lease_drop(&c->lease);
	log_warn(c->lg, "cluster.lost", "node=%s epoch=%" PRId64 " reason=\"%s\"", c->node, old, msg);
	if (c->cb.lost)
		c->cb.lost(c->cb.arg, old);
	start_registration(c);
}

static void on_prologue_failed(void *arg, const char *sqlstate, const char *msg)
{
	struct cluster *c = arg;

	if (strcmp(sqlstate, HD001) != 0) {
		log_error(c->lg, "cluster.fence_failed", "sqlstate=%s reason=\"%s\"", sqlstate, msg);
		return;
	}
	c->stats.fenced++;
	if (c->phase == REGISTERED || c->phase == DRAINING)
		lost(c, msg);
}

/* }===== */

/* {===== heartbeat, dead nodes, orphans */

static void start_round(struct cluster *c)
{
	const char *params[] = { c->node, c->epoch_text, c->lease_text };

	if (c->phase != REGISTERED || c->in_round)
		return;
	c->round_due = false;
	c->beats = 0;
	if (queue_kind(c, OP_FIGURES, SQL_FIGURES, 3, params) == 0)
		c->in_round = true;
	else
		c->round_due = true;
}

static void heartbeat(struct cluster *c)
{
	const char *params[] = { c->node, c->epoch_text };
	const char *expire[] = { c->node, c->lease_text };
	const char *peers[] = { c->lease_text };

	if (c->beating)
		return;
	if (queue_kind(c, OP_HEARTBEAT, SQL_HEARTBEAT, 2, params) < 0)
		return;
	c->beating = true;
	/* In the same transaction: a failure of these costs this heartbeat, which the next
	 * one makes up for well within the lease. */
	pg_conn_queue(c->pc, SQL_CUT, 2, expire, NULL, NULL);	/* the row goes at a later one */
	queue_kind(c, OP_EXPIRE, SQL_EXPIRE, 2, expire);
	queue_kind(c, OP_PEERS, SQL_PEERS, 1, peers);
	if (++c->beats >= CLUSTER_SWEEP_EVERY)
		c->round_due = true;
	if (c->round_due)
		start_round(c);
}

static void on_beat(void *arg)
{
	struct cluster *c = arg;

	if (c->phase == REGISTERING)
		start_registration(c);
	else if (c->phase == REGISTERED || c->phase == DRAINING || c->phase == RELEASING)
		heartbeat(c);
}

static void on_soon(void *arg)
{
	struct cluster *c = arg;

	if (c->phase == REGISTERING)
		start_registration(c);
	else if (c->round_due)
		start_round(c);
}

static uint64_t count_at(const PGresult *r, int col)
{
	return PQntuples(r) > 0 && PQnfields(r) > col ? strtoull(PQgetvalue(r, 0, col), NULL, 10) : 0;
}

static void figures(struct cluster *c, const PGresult *r)
{
	uint64_t orphans = count_at(r, 0), want;
	char limit[24];
	const char *params[] = { c->node, c->epoch_text, limit };

	c->stats.peers = count_at(r, 2);
	want = cluster_fair_share(orphans, count_at(r, 1), c->stats.peers, count_at(r, 3),
				  CLUSTER_CLAIM_ROUND_MAX);
	c->in_round = false;
	if (orphans > want)
		c->round_due = true;	/* the rest: others take it, or the next round here */
	if (want == 0)
		return;
	snprintf(limit, sizeof(limit), "%" PRIu64, want);
	if (queue_kind(c, OP_TAKE, SQL_TAKE_ORPHANS, 3, params) == 0)
		c->in_round = true;
	else
		c->round_due = true;
}

static void took(struct cluster *c, const PGresult *r)
{
	int n = PQntuples(r);
	const char **keys = n > 0 ? calloc((size_t)n, sizeof(*keys)) : NULL;

	c->in_round = false;
	if (n == CLUSTER_CLAIM_ROUND_MAX) {
		c->round_due = true;
		loop_timer_start(c->soon, 0, 0);
	}
	if (n == 0)
		return;
	c->stats.takeovers += (uint64_t)n;
	c->stats.owned += (uint64_t)n;
	log_info(c->lg, "cluster.took_over", "node=%s keys=%d", c->node, n);
	if (!keys) {
		log_error(c->lg, "cluster.took_over_lost", "reason=\"out of memory\" keys=%d", n);
		return;
	}
	for (int i = 0; i < n; i++)
		keys[i] = PQgetvalue(r, i, 0);
	if (c->cb.claimed)
		c->cb.claimed(c->cb.arg, keys, (size_t)n);
	free(keys);
}

static void expired(struct cluster *c, const PGresult *r)
{
	int n = PQntuples(r);

	for (int i = 0; i < n; i++)
		log_info(c->lg, "cluster.node_expired", "node=%s by=%s", PQgetvalue(r, i, 0), c->node);
	if (n == 0)
		return;
	c->stats.nodes_expired += (uint64_t)n;
	c->round_due = true;
	loop_timer_start(c->soon, 0, 0);
}

/* }===== */

/* {===== results */

/* Tells the caller once. WON: the key became this node's now (it counts). */
static void claim_report(struct cluster *c, struct claim_req *req, int err, const char *owner, bool won)
{
	bool mine = err == 0 && owner == c->node;

	if (req->reported)
		return;
	req->reported = true;
	if (won) {
		c->stats.claims++;
		c->stats.owned++;
	}
	req->cb(req->arg, err, mine, mine ? c->node : owner);
}

/* The INSERT: a row back means this node owns the key now. */
static void claimed_one(struct cluster *c, struct op *op, int err, const PGresult *r)
{
	if (err == 0 && PQntuples(r) == 1)
		claim_report(c, op->req, 0, c->node, true);
	else if (op->req->refs == 1)	/* the owner lookup could not be queued */
		claim_report(c, op->req, err ? err : -EBUSY, NULL, false);
}

/* The owner lookup: the INSERT did not win (or failed, with the same error). */
static void owner_of(struct cluster *c, struct op *op, int err, const PGresult *r)
{
	bool ours;

	if (err || PQntuples(r) != 1) {	/* no row: released meanwhile, the caller may retry */
		claim_report(c, op->req, err ? err : -EAGAIN, NULL, false);
		return;
	}
	ours = strcmp(PQgetvalue(r, 0, 0), c->node) == 0 && strcmp(PQgetvalue(r, 0, 1), c->epoch_text) == 0;
	claim_report(c, op->req, 0, ours ? c->node : PQgetvalue(r, 0, 0), false);
}

static void released_all(struct cluster *c, struct op *op, int err)
{
	if (err == 0 || err == -EPERM) {
		/* Committed, or this node was taken over anyway: either way it is out. */
		c->phase = RELEASED;
		c->stats.owned = 0;
		cluster_lease_drop(&c->lease);
		loop_timer_stop(c->beat);
		log_info(c->lg, "cluster.released", "node=%s epoch=%" PRId64 " err=%d", c->node, c->epoch, err);
	} else if (c->phase == RELEASING) {
		c->phase = DRAINING;	/* the caller may try again */
	}
	if (op->done)
		op->done(op->arg, err);
}

static void round_failed(struct cluster *c)
{
	c->in_round = false;
	c->round_due = c->phase == REGISTERED;
}

/* Results of the current epoch; what concerns an epoch that is gone is dropped. */
static void dispatch(struct cluster *c, struct op *op, int err, const PGresult *r)
{
	bool current = op->epoch == c->epoch;

	switch (op->kind) {
	case OP_REGISTER:
		c->registering = false;
		if (err == 0 && c->phase == REGISTERING)
			registered(c, r, op->queued_ms);
		else if (err)
			log_warn(c->lg, "cluster.register_failed", "reason=\"%s\"", pg_conn_strerror(err));
		break;
	case OP_HEARTBEAT:
		if (current)
			c->beating = false;
		if (err == 0 && current)
			cluster_lease_renew(&c->lease, op->queued_ms);
		break;
	case OP_EXPIRE:
		if (err == 0 && current)
			expired(c, r);
		break;
	case OP_PEERS:
		if (err == 0 && current)
			c->stats.peers = count_at(r, 0);
		break;
	case OP_FIGURES:
		if (!current)
			break;
		if (err == 0 && c->phase == REGISTERED)
			figures(c, r);
		else
			round_failed(c);
		break;
	case OP_TAKE:
		if (current && err == 0)
			took(c, r);
		else if (current)
			round_failed(c);
		break;
	case OP_CLAIM:
		claimed_one(c, op, current ? err : -EPERM, r);
		break;
	case OP_OWNER:
		owner_of(c, op, current ? err : -EPERM, r);
		break;
	case OP_RELEASE:
		if (err == 0 && current && atoi(PQcmdTuples((PGresult *)r)) == 1 && c->stats.owned > 0)
			c->stats.owned--;
		if (op->done)
			op->done(op->arg, err);
		break;
	case OP_RELEASE_ALL:
		released_all(c, op, err);
		break;
	}
}

static void on_result(void *arg, int err, const char *msg, const struct pg_result *res)
{
	struct op *op = arg;

	(void)msg;
	if (op->c)
		dispatch(op->c, op, err, (const PGresult *)res);
	op_free(op);
}

/* }===== */

/* {===== notifications */

static void on_notification(void *arg, const char *channel, const char *payload)
{
	struct cluster *c = arg;

	if (!channel) {
		/* Listening anew: wake-ups and releases may have been missed meanwhile. */
		c->round_due = true;
		loop_timer_start(c->soon, 0, 0);
		if (c->cb.woken)
			c->cb.woken(c->cb.arg, NULL);
	} else if (strcmp(channel, CLUSTER_CHANNEL) == 0) {
		if (c->cb.woken)
			c->cb.woken(c->cb.arg, payload);
	} else if (strcmp(channel, CLUSTER_RELEASE_CHANNEL) == 0 && strcmp(payload, c->node) != 0) {
		log_debug(c->lg, "cluster.peer_released", "node=%s", payload);
		c->round_due = true;
		loop_timer_start(c->soon, 0, 0);
	}
}

/* }===== */

/* {===== the public side */

bool cluster_lease_valid(const struct cluster *c)
{
	return (c->phase == REGISTERED || c->phase == DRAINING || c->phase == RELEASING) &&
	       cluster_lease_valid_at(&c->lease, clock_mono_ms());
}

static int usable(const struct cluster *c, const char *key)
{
	if (!key || !*key || strlen(key) >= CLUSTER_KEY_MAX)
		return -EINVAL;
	if (c->phase == REGISTERING)
		return -ENOTCONN;
	return c->phase == REGISTERED ? 0 : -ESHUTDOWN;
}

int cluster_claim(struct cluster *c, const char *key, cluster_claim_fn cb, void *arg)
{
	const char *params[] = { key, c->node, c->epoch_text };
	struct claim_req *req;
	struct op *op;
	int err = usable(c, key);

	if (err)
		return err;
	if (!cb || !(req = calloc(1, sizeof(*req))))
		return cb ? -ENOMEM : -EINVAL;
	*req = (struct claim_req){ .cb = cb, .arg = arg, .refs = 1 };
	op = op_new(c, OP_CLAIM);
	if (!op) {
		free(req);
		return -ENOMEM;
	}
	op->req = req;
	err = queue_op(c, op, false, cluster_sql_claim, 3, params);	/* frees req with op */
	if (err)
		return err;
	/* Without the lookup the claim still reports (claimed_one sees refs == 1). */
	op = op_new(c, OP_OWNER);
	if (op) {
		op->req = req;
		req->refs++;
		queue_op(c, op, false, SQL_OWNER, 1, params);	/* on failure op_free drops the reference */
	}
	return 0;
}

int cluster_release(struct cluster *c, const char *key, cluster_done_fn cb, void *arg)
{
	const char *params[] = { key, c->node, c->epoch_text };
	struct op *op;
	int err = usable(c, key);

	if (err == -ESHUTDOWN && c->phase == DRAINING)
		err = 0;	/* conversations still end while the node drains */
	if (err)
		return err;
	if (!(op = op_new(c, OP_RELEASE)))
		return -ENOMEM;
	op->done = cb;
	op->arg = arg;
	return queue_op(c, op, false, SQL_RELEASE, 3, params);
}

int cluster_notify(struct cluster *c, const char *key)
{
	const char *params[] = { key };

	if (!key || !*key || strlen(key) >= CLUSTER_KEY_MAX)
		return -EINVAL;
	return pg_conn_queue(c->pc, SQL_NOTIFY, 1, params, NULL, NULL);
}

int cluster_release_all(struct cluster *c, cluster_done_fn cb, void *arg)
{
	const char *params[] = { c->node, c->epoch_text };
	struct op *op;
	int err;

	if (c->phase != REGISTERED && c->phase != DRAINING)
		return c->phase == REGISTERING ? -ENOTCONN : -ESHUTDOWN;
	/* The owners rows stay: without their node row they are orphans, which the others
	 * claim as soon as the notification reaches them (deleted, they would be unowned
	 * until their next message, while some may have replies waiting). The NOTIFY goes
	 * first: alone (the DELETE refused) it commits harmlessly, the others find nothing. */
	err = pg_conn_queue(c->pc, SQL_NOTIFY_RELEASE, 1, params, NULL, NULL);
	if (!err && !(op = op_new(c, OP_RELEASE_ALL)))
		err = -ENOMEM;
	if (!err) {
		op->done = cb;
		op->arg = arg;
		err = queue_op(c, op, false, SQL_LEAVE, 2, params);
	}
	if (err)
		return err;
	c->phase = RELEASING;
	return 0;
}

int cluster_drain_begin(struct cluster *c)
{
	const char *params[] = { c->node, c->epoch_text };
	int err;

	if (c->phase != REGISTERED)
		return c->phase == DRAINING ? 0 : c->phase == REGISTERING ? -ENOTCONN : -ESHUTDOWN;
	err = pg_conn_queue(c->pc, SQL_DRAINING, 2, params, NULL, NULL);
	if (err == 0) {
		c->phase = DRAINING;
		log_info(c->lg, "cluster.draining", "node=%s epoch=%" PRId64, c->node, c->epoch);
	}
	return err;
}

void cluster_stats(const struct cluster *c, struct cluster_stats *out)
{
	struct pg_conn_stats ps;

	pg_conn_stats(c->pc, &ps);
	*out = c->stats;
	snprintf(out->node, sizeof(out->node), "%s", c->node);
	out->epoch = c->phase == REGISTERING || c->phase == RELEASED ? 0 : c->epoch;
	out->registered = c->phase == REGISTERED;
	out->lease_valid = cluster_lease_valid(c);
	out->round_trips = ps.round_trips;
	out->commit_us_sum = ps.commit_us_sum;
	out->commit_us_count = ps.commit_us_count;
}

static int default_node(char *out, size_t cap)
{
	char host[CLUSTER_NODE_MAX - 16];

	if (gethostname(host, sizeof(host)) < 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	return snprintf(out, cap, "%s:%ld", host, (long)getpid()) < (int)cap ? 0 : -EINVAL;
}

static int setup(struct cluster *c, const struct cluster_opts *o)
{
	double hb = o->heartbeat_s > 0 ? o->heartbeat_s : DEFAULT_HEARTBEAT_S;
	double lease = o->lease_s > 0 ? o->lease_s : DEFAULT_LEASE_S;
	int err;

	if (hb < 0.01 || lease < 2 * hb)
		return -EINVAL;
	if (o->node && *o->node) {
		if (strlen(o->node) >= sizeof(c->node))
			return -EINVAL;
		snprintf(c->node, sizeof(c->node), "%s", o->node);
	} else if ((err = default_node(c->node, sizeof(c->node))) < 0) {
		return err;
	}
	c->heartbeat_ms = (uint64_t)(hb * 1000);
	snprintf(c->lease_text, sizeof(c->lease_text), "%.3f", lease);
	cluster_lease_init(&c->lease, (uint64_t)(lease * 1000));
	snprintf(c->stats.node, sizeof(c->stats.node), "%s", c->node);
	return 0;
}

struct cluster *cluster_new(struct loop *lp, struct log *lg, struct pg_conn *pc,
			    const struct cluster_opts *opts, const struct cluster_callbacks *cb)
{
	struct cluster *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->lp = lp;
	c->lg = lg;
	c->pc = pc;
	c->cb = *cb;
	c->phase = REGISTERING;
	c->beat = loop_timer_new(lp, on_beat, c);
	c->soon = loop_timer_new(lp, on_soon, c);
	if (!pc || setup(c, opts) < 0 || !c->beat || !c->soon || pg_conn_listen(pc, CLUSTER_CHANNEL) < 0 ||
	    pg_conn_listen(pc, CLUSTER_RELEASE_CHANNEL) < 0) {
		loop_timer_free(c->beat);
		loop_timer_free(c->soon);
		free(c);
		return NULL;
	}
	pg_conn_set_notify(pc, on_notification, c);
	/* The first registration from the loop; then every heartbeat period. */
	loop_timer_start(c->beat, c->heartbeat_ms, 1);
	start_registration(c);
	return c;
}

void cluster_free(struct cluster *c)
{
	if (!c)
		return;
	for (struct op *op = c->ops; op; op = op->next)
		op->c = NULL;
	pg_conn_set_notify(c->pc, NULL, NULL);
	pg_conn_set_prologue(c->pc, NULL, 0, NULL, NULL, NULL);
	loop_timer_free(c->beat);
	loop_timer_free(c->soon);
	free(c);
}

/* }===== */
