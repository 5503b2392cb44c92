/* pg_conn.h - one asynchronous PostgreSQL connection on the loop, writing in group commits.
 * libpq does the protocol; this part drives it from the libevent loop without ever waiting
 * on the database: a non-blocking connect (PQconnectStart/PQconnectPoll), pipeline mode,
 * and automatic reconnection with a capped backoff. What the statements mean (schema,
 * migrations, retries towards hubs) belongs to the callers (the store backend, later).
 *
 * Group commit: statements queued during one loop turn form one batch, sent at the end of
 * the turn in one pipeline as s1; ...; sN; Sync, which the server runs as one implicit
 * transaction committed at the Sync: a burst costs one commit, not one per statement.
 * Callers never queue transaction control (BEGIN, COMMIT, ROLLBACK) themselves. One batch is in flight at a time; what is queued meanwhile forms
 * the next batch. Statements queued from the same callback, without returning to the loop,
 * always land in the same transaction.
 *
 * Lifetime rules, in one place:
 * - pg_conn_queue() either fails (negative errno, the callback is never called) or succeeds
 *   and then the callback runs exactly once, later, from the loop, never inside
 *   pg_conn_queue() itself.
 * - Every callback of a batch runs after the batch's outcome is known, with the same
 *   outcome: err 0 means the whole transaction committed (and RES is the statement's own
 *   result); an error means none of it did, except for -ECONNRESET and -ETIMEDOUT: the
 *   connection died or was given up after the batch may have reached the server, so the
 *   outcome is unknown and writes must be idempotent (the caller answers 503, the hub
 *   retries).
 * - A statement error at the server (-EPROTO) aborts the whole batch: every statement of
 *   that turn fails with the server's message. Callers write statements that cannot fail
 *   on data (ON CONFLICT ...).
 * - pg_conn_free() calls every pending callback with -ECANCELED before it returns. It may
 *   be called from inside any callback of the same connection (the memory is released
 *   when the callback returns); during free, pg_conn_queue() refuses with -ESHUTDOWN.
 *
 * Batch prologue (fencing): pg_conn_set_prologue() gives a statement that goes first in
 * every batch, so every transaction of this connection starts with it (the cluster module
 * sends SELECT hd_fence(node, epoch) there). When the prologue fails, nothing of the batch
 * committed: every statement gets -EPERM, and the prologue's hook hears the SQLSTATE
 * first, before any statement callback of that batch runs. Statements queued with
 * pg_conn_queue_bare() go without the prologue, in a batch of their own (consecutive bare
 * statements of a turn share one): registration, LISTEN, migrations. Batches leave in
 * queue order, each with the prologue current when it is sent.
 *
 * Notifications: pg_conn_listen() names a channel, LISTENed now and again on every new
 * connection; pg_conn_set_notify()'s hook gets each notification, and a NULL channel when
 * listening (re)started on a new connection (whatever was sent meanwhile was missed).
 *
 * Errors (negative errno; pg_conn_strerror() gives the stable, lowercase reason):
 *   -ENOTCONN "database unavailable" (not connected: answer 503 and retry later),
 *   -ECONNRESET "connection lost", -ETIMEDOUT "timeout" (no answer within batch_timeout_ms:
 *   the connection is dropped and made again), -EPROTO "statement failed", -EBUSY "too many statements
 *   queued", -EMSGSIZE "statement too large", -EINVAL "invalid statement", -ENOMEM
 *   "out of memory", -ECANCELED "cancelled", -ESHUTDOWN "shutting down", -EPERM "fenced"
 *   (the batch prologue failed, whatever its SQLSTATE; nothing of the batch committed).
 *   During the callbacks of a failed batch, pg_conn_batch_sqlstate() gives the server's
 *   SQLSTATE ("" when the failure was not the server's).
 *
 * Memory is bounded: at most max_queued statements and max_queued_bytes of SQL and
 * parameters wait or fly at once. Result rows are held by libpq until the batch's
 * callbacks ran; callers keep their SELECTs bounded (LIMIT).
 *
 * One wait remains inside libpq: a host given by name is resolved with getaddrinfo() when
 * an attempt starts. Numeric hosts (host=127.0.0.1, hostaddr=) and unix sockets never
 * wait; a resolver of our own feeding hostaddr is left for when it matters. */
#ifndef HANDOFFD_PG_CONN_H
#define HANDOFFD_PG_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Defaults for struct pg_conn_opts fields left at 0. */
#define PG_CONN_MAX_QUEUED 10000		/* statements waiting or in flight */
#define PG_CONN_MAX_QUEUED_BYTES (16u << 20)	/* their SQL and parameters */
#define PG_CONN_CONNECT_TIMEOUT_MS 10000	/* one connection attempt */
#define PG_CONN_BATCH_TIMEOUT_MS 30000		/* a batch's answer; then the connection is given up */
#define PG_CONN_BACKOFF_MIN_MS 100		/* first retry after a failure */
#define PG_CONN_BACKOFF_MAX_MS 5000		/* the backoff doubles up to this */
#define PG_CONN_MAX_PARAMS 64			/* parameters of one statement */
#define PG_CONN_MAX_CHANNELS 4			/* LISTEN channels of one connection */

struct loop;
struct log;
struct pg_conn;
struct pg_result;	/* libpq's PGresult; include <libpq-fe.h> to read it */

struct pg_conn_opts {
	const char *conninfo;		/* any libpq connection string or URI (copied) */
	const char *password;		/* NULL: the string's own, or libpq's PGPASSWORD/.pgpass */
	unsigned max_queued;
	size_t max_queued_bytes;
	uint32_t connect_timeout_ms;
	uint32_t batch_timeout_ms;
	uint32_t backoff_min_ms;
	uint32_t backoff_max_ms;
};

/* The connection came up (UP, REASON NULL) or went down / failed to come up (REASON says
 * why, libpq's or the server's message, borrowed for the call). Runs from the loop; may
 * queue statements (when UP) or free the connection. */
typedef void (*pg_state_fn)(void *arg, bool up, const char *reason);

/* A statement's outcome (see the lifetime rules above). RES is the statement's result on
 * success (PGRES_COMMAND_OK or PGRES_TUPLES_OK), NULL otherwise; MSG the reason on
 * failure, NULL on success. Both are borrowed for the call only. */
typedef void (*pg_done_fn)(void *arg, int err, const char *msg, const struct pg_result *res);

/* The batch prologue failed (see above): SQLSTATE (5 characters, "" if unknown) and MSG,
 * the server's message, are borrowed for the call. Runs before the batch's statement
 * callbacks; may queue statements (they go after what is already queued) or change the
 * prologue. */
typedef void (*pg_prologue_fn)(void *arg, const char *sqlstate, const char *msg);

/* A notification on a LISTENed CHANNEL with its PAYLOAD (borrowed), or CHANNEL NULL:
 * listening started on a new connection, notifications sent meanwhile were missed. */
typedef void (*pg_notify_fn)(void *arg, const char *channel, const char *payload);

/* Figures for tests and metrics. */
struct pg_conn_stats {
	bool up;
	unsigned queued;		/* statements waiting or in flight */
	uint64_t batches_committed, batches_failed;
	uint64_t batches_fenced;	/* failed because the prologue failed (also in batches_failed) */
	uint64_t round_trips;		/* batches sent: one pipeline and its Sync each */
	uint64_t commit_us_sum, commit_us_count;	/* send to commit of committed batches */
	uint64_t statements_committed;
	uint64_t connects;		/* successful connections, the first one included */
	uint64_t connect_failures;	/* attempts that did not come up */
};

/* Starts connecting at once (the first attempt begins inside this call, without waiting).
 * STATE is told about every change. NULL on a missing conninfo or allocation failure;
 * a malformed conninfo is reported through STATE and retried like any failure. */
struct pg_conn *pg_conn_new(struct loop *lp, struct log *lg, const struct pg_conn_opts *opts,
			    pg_state_fn state, void *arg);
void pg_conn_free(struct pg_conn *pc);

/* Queues SQL with NPARAMS text parameters ($1...; a NULL entry is SQL NULL) into the
 * current turn's batch. Everything is copied. DONE may be NULL (fire and forget: the batch
 * still commits or fails as a whole). Returns 0 or a negative errno (see above). */
int pg_conn_queue(struct pg_conn *pc, const char *sql, int nparams, const char *const *params,
		  pg_done_fn done, void *arg);

/* The same, but without the batch prologue, in a batch of its own (shared only with the
 * bare statements queued right before or after it in the same turn). */
int pg_conn_queue_bare(struct pg_conn *pc, const char *sql, int nparams, const char *const *params,
		       pg_done_fn done, void *arg);

/* Sets (SQL non-NULL) or clears the statement sent first in every later batch, with
 * NPARAMS text parameters (copied), and ON_FAIL (may be NULL), told when it fails. A batch
 * already sent keeps the prologue it went with. Returns 0, -EINVAL or -ENOMEM (the
 * previous prologue stays). */
int pg_conn_set_prologue(struct pg_conn *pc, const char *sql, int nparams, const char *const *params,
			 pg_prologue_fn on_fail, void *arg);

/* Who hears notifications (one hook per connection; FN NULL: nobody). */
void pg_conn_set_notify(struct pg_conn *pc, pg_notify_fn fn, void *arg);
/* LISTENs on CHANNEL (letters, digits, '_', at most 63), now if up and again after every
 * reconnect (bare statements). Returns 0, -EINVAL, -ENOSPC (PG_CONN_MAX_CHANNELS) or
 * -ENOMEM. A channel given twice is listened once. */
int pg_conn_listen(struct pg_conn *pc, const char *channel);

/* The SQLSTATE of the failed batch whose callbacks are running ("" otherwise). */
const char *pg_conn_batch_sqlstate(const struct pg_conn *pc);
/* Whether SQLSTATE is one the server rolls a transaction back with so that it be sent
 * again: class 40 (40P01 a deadlock, 40001 a serialization failure). */
bool pg_conn_sqlstate_retry(const char *sqlstate);

bool pg_conn_is_up(const struct pg_conn *pc);
void pg_conn_stats(const struct pg_conn *pc, struct pg_conn_stats *out);
const char *pg_conn_strerror(int err);

/* SYNCHRONOUS, for `handoffd -t` only, never on the loop: connects with a timeout, runs
 * SQL and writes the first column of its first row to OUT ("" when no row). Returns 0, or
 * -ECONNREFUSED (could not connect: ERR says why) or -EPROTO (the query failed). */
int pg_conn_check_sync(const struct pg_conn_opts *opts, const char *sql, char *out,
		       size_t outlen, char *err, size_t errlen);

#endif
