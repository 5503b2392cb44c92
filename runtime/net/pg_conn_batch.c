/* pg_conn_batch.c - pg_conn's statement queue and its pipelined batches: statements are
 * copied in as queued (bounded by max_queued and max_queued_bytes), go out at the end of
 * the loop's turn as one implicit transaction (the prologue first, unless bare), their
 * results are matched to them in order, and their callbacks hear the batch's outcome.
 * Connecting, the socket and losing the connection are pg_conn.c's. */
#include "net/pg_conn.h"

#include "base/clock.h"
#include "base/log.h"
#include "net/loop.h"
#include "net/pg_conn_internal.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* {===== statements */

static struct pg_stmt *stmt_new(const char *sql, int nparams, const char *const *params)
{
	size_t head = sizeof(struct pg_stmt) + (size_t)nparams * sizeof(char *);
	size_t bytes = head + strlen(sql) + 1;
	struct pg_stmt *s;
	char *p;

	for (int i = 0; i < nparams; i++)
		bytes += params[i] ? strlen(params[i]) + 1 : 0;
	s = calloc(1, bytes);
	if (!s)
		return NULL;
	s->bytes = bytes;
	s->nparams = nparams;
	p = (char *)s + head;
	s->sql = memcpy(p, sql, strlen(sql) + 1);
	p += strlen(sql) + 1;
	for (int i = 0; i < nparams; i++) {
		if (!params[i])
			continue;
		s->params[i] = memcpy(p, params[i], strlen(params[i]) + 1);
		p += strlen(params[i]) + 1;
	}
	return s;
}

void pgc_stmt_free(struct pg_stmt *s)
{
	if (!s)
		return;
	PQclear(s->res);
	free(s);
}

/* Runs the callback of every statement of B with ERR (0: committed) and frees them. B is
 * detached first, so callbacks may queue into fresh batches. */
void pgc_finish_batch(struct pg_conn *pc, struct pg_batch *b, int err, const char *msg)
{
	struct pg_stmt *s = b->head;

	*b = (struct pg_batch){ 0 };
	while (s) {
		struct pg_stmt *next = s->next;

		pc->queued--;
		pc->queued_bytes -= s->bytes;
		if (s->done)
			s->done(s->arg, err, err ? msg : NULL, err ? NULL : (struct pg_result *)s->res);
		pgc_stmt_free(s);
		s = next;
	}
}

/* }===== */

/* {===== queueing */

static int queue_stmt(struct pg_conn *pc, const char *sql, int nparams, const char *const *params,
		      pg_done_fn done, void *arg, bool bare)
{
	struct pg_stmt *s;

	if (pc->closing)
		return -ESHUTDOWN;
	if (!sql || nparams < 0 || nparams > PG_CONN_MAX_PARAMS || (nparams > 0 && !params))
		return -EINVAL;
	if (pc->phase != PHASE_UP)
		return -ENOTCONN;
	if (pc->queued >= pc->opts.max_queued)
		return -EBUSY;
	s = stmt_new(sql, nparams, params);
	if (!s)
		return -ENOMEM;
	if (s->bytes > pc->opts.max_queued_bytes || pc->queued_bytes + s->bytes > pc->opts.max_queued_bytes) {
		int err = s->bytes > pc->opts.max_queued_bytes ? -EMSGSIZE : -EBUSY;

		pgc_stmt_free(s);
		return err;
	}
	s->done = done;
	s->arg = arg;
	s->bare = bare;
	if (pc->pending.tail)
		pc->pending.tail->next = s;
	else
		pc->pending.head = s;
	pc->pending.tail = s;
	pc->pending.n++;
	pc->queued++;
	pc->queued_bytes += s->bytes;
	if (!pc->flight.head && !loop_timer_pending(pc->send_timer))
		loop_timer_start(pc->send_timer, 0, 0);
	return 0;
}

int pg_conn_queue(struct pg_conn *pc, const char *sql, int nparams, const char *const *params,
		  pg_done_fn done, void *arg)
{
	return queue_stmt(pc, sql, nparams, params, done, arg, false);
}

int pg_conn_queue_bare(struct pg_conn *pc, const char *sql, int nparams, const char *const *params,
		       pg_done_fn done, void *arg)
{
	return queue_stmt(pc, sql, nparams, params, done, arg, true);
}

int pg_conn_set_prologue(struct pg_conn *pc, const char *sql, int nparams, const char *const *params,
			 pg_prologue_fn on_fail, void *arg)
{
	struct pg_stmt *s = NULL;

	if (nparams < 0 || nparams > PG_CONN_MAX_PARAMS || (nparams > 0 && !params))
		return -EINVAL;
	if (sql && !(s = stmt_new(sql, nparams, params)))
		return -ENOMEM;
	pgc_stmt_free(pc->prologue);	/* a batch in flight does not point at it */
	pc->prologue = s;
	pc->prologue_fail = on_fail;
	pc->prologue_arg = arg;
	return 0;
}

const char *pg_conn_batch_sqlstate(const struct pg_conn *pc)
{
	return pc->cb_sqlstate;
}

bool pg_conn_sqlstate_retry(const char *sqlstate)
{
	return strncmp(sqlstate, "40", 2) == 0;
}

/* }===== */

/* {===== batches */

/* The pending batch goes out as one transaction: the statements, then one Sync. No
 * BEGIN/COMMIT: the server runs everything up to a Sync as one implicit transaction,
 * commits it at the Sync, and rolls it back entirely when a statement fails (an explicit
 * block would stay open and aborted, since the pipeline skips the COMMIT after an error). */
/* Moves the first run of pending statements that agree on `bare` into the flight. */
static void take_run(struct pg_conn *pc)
{
	struct pg_stmt *last = pc->pending.head;
	unsigned n = 1;

	while (last->next && last->next->bare == pc->pending.head->bare) {
		last = last->next;
		n++;
	}
	pc->flight = (struct pg_batch){ .head = pc->pending.head, .tail = last, .n = n };
	pc->pending.head = last->next;
	if (!pc->pending.head)
		pc->pending.tail = NULL;
	pc->pending.n -= n;
	last->next = NULL;
}

static void send_batch(struct pg_conn *pc)
{
	const struct pg_stmt *pro;

	if (pc->phase != PHASE_UP || pc->flight.head || !pc->pending.head)
		return;
	take_run(pc);
	pc->cur = pc->flight.head;
	pc->cur_answered = false;
	pc->flight_err = 0;
	pc->flight_msg[0] = '\0';
	pc->flight_sqlstate[0] = '\0';
	pro = pc->flight.head->bare ? NULL : pc->prologue;
	pc->in_prologue = pro != NULL;
	if (pro && !PQsendQueryParams(pc->conn, pro->sql, pro->nparams, NULL, pro->params, NULL, NULL, 0))
		goto fail;
	for (struct pg_stmt *s = pc->flight.head; s; s = s->next)
		if (!PQsendQueryParams(pc->conn, s->sql, s->nparams, NULL, s->params, NULL, NULL, 0))
			goto fail;
	if (!PQpipelineSync(pc->conn) || pgc_flush(pc) < 0)
		goto fail;
	loop_timer_start(pc->deadline, pc->opts.batch_timeout_ms, 0);
	pc->stats.round_trips++;
	pc->flight_sent_us = clock_mono_us();
	log_debug(pc->lg, "pg.batch_sent", "statements=%u prologue=%d", pc->flight.n, pro != NULL);
	return;
fail:
	/* libpq refuses only when the connection broke or memory ran out: the pipeline's
	 * state is unknown, so start over on a fresh connection. */
	pgc_lost(pc, -ECONNRESET, PQerrorMessage(pc->conn));
}

void pgc_on_send_timer(void *arg)
{
	struct pg_conn *pc = arg;

	pgc_enter(pc);
	send_batch(pc);
	pgc_leave(pc);
}

/* The first failure of the flight is the one callers hear about. */
static void note_failure(struct pg_conn *pc, const PGresult *r)
{
	const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);

	if (pc->flight_err)
		return;
	pc->flight_err = pc->in_prologue ? -EPERM : -EPROTO;
	pgc_copy_reason(pc->flight_msg, sizeof(pc->flight_msg), PQresultErrorMessage(r));
	snprintf(pc->flight_sqlstate, sizeof(pc->flight_sqlstate), "%s", state ? state : "");
}

/* One result of the flight: kept with its statement, or noted as the failure. Returns
 * true when it was the Sync, the batch's end. */
static bool take_result(struct pg_conn *pc, PGresult *r)
{
	ExecStatusType st = PQresultStatus(r);

	if (st == PGRES_PIPELINE_SYNC) {
		PQclear(r);
		return true;
	}
	pc->cur_answered = true;
	if (st == PGRES_FATAL_ERROR)
		note_failure(pc, r);
	/* Only a statement whose caller will look at it keeps its result until the end. */
	if (!pc->in_prologue && pc->cur && pc->cur->done && !pc->cur->res &&
	    (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)) {
		pc->cur->res = r;
		return false;
	}
	PQclear(r);
	return false;
}

/* A NULL from PQgetResult ends the current statement's results. */
static void next_statement(struct pg_conn *pc)
{
	pc->cur_answered = false;
	pc->cur = pc->cur ? pc->cur->next : NULL;
}

static void batch_done(struct pg_conn *pc)
{
	int err = pc->flight_err;

	loop_timer_stop(pc->deadline);
	if (err) {
		pc->stats.batches_failed++;
		pc->stats.batches_fenced += err == -EPERM;
		/* Rolled back to be sent again: the caller does. */
		if (pg_conn_sqlstate_retry(pc->flight_sqlstate))
			log_info(pc->lg, "pg.batch_rolled_back", "statements=%u sqlstate=%s", pc->flight.n,
				 pc->flight_sqlstate);
		else
			log_warn(pc->lg, "pg.batch_failed", "statements=%u sqlstate=%s prologue=%d reason=\"%s\"",
				 pc->flight.n, pc->flight_sqlstate, err == -EPERM, pc->flight_msg);
	} else {
		pc->stats.batches_committed++;
		pc->stats.statements_committed += pc->flight.n;
		pc->stats.commit_us_sum += clock_mono_us() - pc->flight_sent_us;
		pc->stats.commit_us_count++;
	}
	pc->cur = NULL;
	pc->cur_answered = false;
	memcpy(pc->cb_sqlstate, pc->flight_sqlstate, sizeof(pc->cb_sqlstate));
	/* The prologue's owner hears first: it may have to drop state before the statements'
	 * callbacks see the failure. */
	if (err == -EPERM && pc->prologue_fail) {
		pc->prologue_fail(pc->prologue_arg, pc->flight_sqlstate, pc->flight_msg);
		if (pc->closing)
			return;	/* pg_conn_free() cancelled the flight */
	}
	pgc_finish_batch(pc, &pc->flight, err, pc->flight_msg);
	pc->cb_sqlstate[0] = '\0';
	if (!pc->closing && pc->phase == PHASE_UP && pc->pending.head)
		loop_timer_start(pc->send_timer, 0, 0);	/* what callbacks queued joins this turn */
}

/* Reads every result libpq has complete without waiting. Returns after the batch's
 * callbacks ran (the caller checks `closing`) or when more input is needed. */
void pgc_read_results(struct pg_conn *pc)
{
	/* A broken connection stops here: the caller sees CONNECTION_BAD and starts over. */
	while (pc->flight.head && PQstatus(pc->conn) != CONNECTION_BAD && !PQisBusy(pc->conn)) {
		PGresult *r = PQgetResult(pc->conn);

		if (!r) {
			if (!pc->cur_answered)
				return;
			if (pc->in_prologue) {
				pc->in_prologue = false;
				pc->cur_answered = false;
			} else {
				next_statement(pc);
			}
			continue;
		}
		if (take_result(pc, r)) {
			batch_done(pc);
			return;
		}
	}
}

/* Nothing is in flight, so nothing is expected; whatever libpq parsed is dropped. */
void pgc_drop_unexpected(PGconn *conn)
{
	PGresult *r;

	while (!PQisBusy(conn) && (r = PQgetResult(conn)) != NULL)
		PQclear(r);
}

/* }===== */
