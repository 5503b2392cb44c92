/* pg_conn.c - libpq driven by the libevent loop: non-blocking connect, pipelined group
 * commits, reconnection with a capped backoff. Owns the PGconn, the event on its socket,
 * three timers (end of turn, deadline, retry) and every queued statement until its
 * callback ran. Knows nothing about what the statements mean.
 *
 * Callbacks into callers run only from the loop (socket events, timers) and from
 * pg_conn_free(), never from inside pg_conn_queue(). `depth` counts the frames that run
 * them, so a free from inside one releases the memory only when the outermost frame
 * unwinds; after every callback the frame checks `closing` and stops touching libpq. */
#include "net/pg_conn.h"

#include "base/clock.h"
#include "base/log.h"
#include "net/loop.h"

#include <errno.h>
#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REASON_MAX 512		/* a server or libpq message kept for callers, cut beyond */
#define CHANNEL_MAX 63		/* PostgreSQL's identifier length */

struct pg_stmt {
	struct pg_stmt *next;
	pg_done_fn done;
	void *arg;
	PGresult *res;		/* kept from its arrival until the batch's outcome is known */
	size_t bytes;		/* what it counts against max_queued_bytes */
	bool bare;		/* sent without the prologue, in a batch of bare statements */
	char *sql;
	int nparams;
	const char *params[];	/* then the copies of sql and the parameters */
};

/* Statements in queue order. */
struct pg_batch {
	struct pg_stmt *head, *tail;
	unsigned n;
};

enum pg_phase { PHASE_WAITING, PHASE_CONNECTING, PHASE_UP };

struct pg_conn {
	struct loop *lp;
	struct log *lg;
	pg_state_fn state;
	void *state_arg;
	struct pg_conn_opts opts;	/* defaults filled in; strings are owned copies */
	PGconn *conn;
	enum pg_phase phase;
	struct event *ev;		/* on PQsocket(conn); NULL while there is none */
	int ev_fd;
	short ev_flags;
	struct loop_timer *send_timer;	/* end of the turn: the pending batch goes out */
	struct loop_timer *deadline;	/* of the connection attempt, or of the batch in flight */
	struct loop_timer *retry;	/* the next attempt, after the backoff */
	uint32_t backoff_ms;
	struct pg_batch pending;	/* queued, not sent */
	struct pg_batch flight;		/* sent, then a Sync; awaiting results */
	struct pg_stmt *cur;		/* the flight statement whose results are being read */
	bool cur_answered;		/* a result for cur arrived; the next NULL ends it */
	bool in_prologue;		/* the results being read are the flight's prologue's */
	int flight_err;			/* the first failure seen in the flight */
	char flight_msg[REASON_MAX];
	char flight_sqlstate[6];
	char cb_sqlstate[6];		/* of the failed batch whose callbacks run */
	uint64_t flight_sent_us;
	struct pg_stmt *prologue;	/* sent first in every batch that is not bare */
	pg_prologue_fn prologue_fail;
	void *prologue_arg;
	pg_notify_fn notify;
	void *notify_arg;
	char *channels[PG_CONN_MAX_CHANNELS];
	unsigned nchannels;
	unsigned queued;
	size_t queued_bytes;
	struct pg_conn_stats stats;
	int depth;			/* frames that are running callers' callbacks */
	bool closing;			/* pg_conn_free() was called */
};

const char *pg_conn_strerror(int err)
{
	switch (err) {
	case 0: return "ok";
	case -ENOTCONN: return "database unavailable";
	case -ECONNRESET: return "connection lost";
	case -ETIMEDOUT: return "timeout";
	case -EPROTO: return "statement failed";
	case -EBUSY: return "too many statements queued";
	case -EMSGSIZE: return "statement too large";
	case -EINVAL: return "invalid statement";
	case -ENOMEM: return "out of memory";
	case -ECANCELED: return "cancelled";
	case -ESHUTDOWN: return "shutting down";
	case -EPERM: return "fenced";
	default: return "database error";
	}
}

bool pg_conn_is_up(const struct pg_conn *pc)
{
	return pc->phase == PHASE_UP;
}

void pg_conn_stats(const struct pg_conn *pc, struct pg_conn_stats *out)
{
	*out = pc->stats;
	out->up = pc->phase == PHASE_UP;
	out->queued = pc->queued;
}

/* libpq's messages end in a newline and may span lines; callers get one trimmed copy. */
static void copy_reason(char *out, size_t cap, const char *msg)
{
	size_t n;

	snprintf(out, cap, "%s", msg && *msg ? msg : "unknown error");
	n = strlen(out);
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
		out[--n] = '\0';
}

/* {===== callbacks into callers */

static void destroy(struct pg_conn *pc);

static void enter(struct pg_conn *pc)
{
	pc->depth++;
}

/* Ends a frame; the outermost one releases a connection freed meanwhile. */
static void leave(struct pg_conn *pc)
{
	if (--pc->depth == 0 && pc->closing)
		destroy(pc);
}

static void notify_state(struct pg_conn *pc, bool up, const char *reason)
{
	if (pc->state)
		pc->state(pc->state_arg, up, reason);
}

static void stmt_free(struct pg_stmt *s)
{
	if (!s)
		return;
	PQclear(s->res);
	free(s);
}

/* Runs the callback of every statement of B with ERR (0: committed) and frees them. B is
 * detached first, so callbacks may queue into fresh batches. */
static void finish_batch(struct pg_conn *pc, struct pg_batch *b, int err, const char *msg)
{
	struct pg_stmt *s = b->head;

	*b = (struct pg_batch){ 0 };
	while (s) {
		struct pg_stmt *next = s->next;

		pc->queued--;
		pc->queued_bytes -= s->bytes;
		if (s->done)
			s->done(s->arg, err, err ? msg : NULL, err ? NULL : (struct pg_result *)s->res);
		stmt_free(s);
		s = next;
	}
}

/* }===== */

/* {===== the socket's event */

static void on_socket(evutil_socket_t fd, short what, void *arg);

/* Watches the connection's current socket for FLAGS (EV_READ/EV_WRITE); the socket can
 * change during a connection attempt (another host, another address). */
static int watch(struct pg_conn *pc, short flags)
{
	int fd = pc->conn ? PQsocket(pc->conn) : -1;

	if (pc->ev && fd == pc->ev_fd && flags == pc->ev_flags)
		return 0;
	if (pc->ev)
		event_del(pc->ev);
	if (fd < 0)
		return -EBADF;
	if (!pc->ev)
		pc->ev = event_new(loop_base(pc->lp), fd, flags | EV_PERSIST, on_socket, pc);
	else
		event_assign(pc->ev, loop_base(pc->lp), fd, flags | EV_PERSIST, on_socket, pc);
	if (!pc->ev || event_add(pc->ev, NULL) < 0)
		return -ENOMEM;
	pc->ev_fd = fd;
	pc->ev_flags = flags;
	return 0;
}

static void unwatch(struct pg_conn *pc)
{
	if (pc->ev)
		event_del(pc->ev);
	pc->ev_fd = -1;
	pc->ev_flags = 0;
}

static void close_conn(struct pg_conn *pc)
{
	unwatch(pc);
	PQfinish(pc->conn);
	pc->conn = NULL;
	loop_timer_stop(pc->deadline);
	loop_timer_stop(pc->send_timer);
}

/* }===== */

/* {===== connecting */

static void on_notice(void *arg, const char *message)
{
	struct pg_conn *pc = arg;
	char msg[REASON_MAX];

	copy_reason(msg, sizeof(msg), message);
	log_debug(pc->lg, "pg.notice", "message=\"%s\"", msg);
}

static void schedule_retry(struct pg_conn *pc)
{
	loop_timer_start(pc->retry, pc->backoff_ms, 0);
	pc->backoff_ms = pc->backoff_ms >= pc->opts.backoff_max_ms / 2 ? pc->opts.backoff_max_ms :
			 pc->backoff_ms * 2;
}

/* An attempt did not come up: say why, try again after the backoff. */
static void attempt_failed(struct pg_conn *pc, const char *why)
{
	char reason[REASON_MAX];

	copy_reason(reason, sizeof(reason), why);
	close_conn(pc);
	pc->phase = PHASE_WAITING;
	pc->stats.connect_failures++;
	log_warn(pc->lg, "pg.connect_failed", "reason=\"%s\" retry_ms=%u", reason,
		 (unsigned)pc->backoff_ms);
	schedule_retry(pc);
	notify_state(pc, false, reason);
}

static void listen_all(struct pg_conn *pc);

static void came_up(struct pg_conn *pc)
{
	loop_timer_stop(pc->deadline);
	if (PQsetnonblocking(pc->conn, 1) != 0 || PQenterPipelineMode(pc->conn) != 1 ||
	    watch(pc, EV_READ) < 0) {
		attempt_failed(pc, PQerrorMessage(pc->conn));
		return;
	}
	pc->phase = PHASE_UP;
	pc->backoff_ms = pc->opts.backoff_min_ms;
	pc->stats.connects++;
	log_info(pc->lg, "pg.connected", "host=%s port=%s db=%s user=%s", PQhost(pc->conn),
		 PQport(pc->conn), PQdb(pc->conn), PQuser(pc->conn));
	listen_all(pc);		/* first in the queue: before anything the state hook queues */
	notify_state(pc, true, NULL);
}

/* One step of PQconnectPoll, then wait for what it asks for. The event is registered
 * anew every step: libpq may have closed the socket and opened another one that got the
 * same number (the next host or address), which epoll forgot while libevent did not. */
static void connect_step(struct pg_conn *pc)
{
	PostgresPollingStatusType st = PQconnectPoll(pc->conn);

	unwatch(pc);
	switch (st) {
	case PGRES_POLLING_OK:
		came_up(pc);
		return;
	case PGRES_POLLING_READING:
		if (watch(pc, EV_READ) < 0)
			attempt_failed(pc, "cannot watch the socket");
		return;
	case PGRES_POLLING_WRITING:
		if (watch(pc, EV_WRITE) < 0)
			attempt_failed(pc, "cannot watch the socket");
		return;
	default:
		attempt_failed(pc, PQerrorMessage(pc->conn));
	}
}

static void start_attempt(struct pg_conn *pc)
{
	/* The string is expanded first, so a password given apart overrides its own. */
	const char *keys[] = { "dbname", "password", NULL };
	const char *values[] = { pc->opts.conninfo, pc->opts.password, NULL };

	pc->phase = PHASE_CONNECTING;
	pc->conn = PQconnectStartParams(keys, values, 1);
	if (!pc->conn) {
		attempt_failed(pc, "out of memory");
		return;
	}
	if (PQstatus(pc->conn) == CONNECTION_BAD) {
		attempt_failed(pc, PQerrorMessage(pc->conn));
		return;
	}
	PQsetNoticeProcessor(pc->conn, on_notice, pc);
	/* PQconnectPoll ignores connect_timeout: the deadline is ours. */
	loop_timer_start(pc->deadline, pc->opts.connect_timeout_ms, 0);
	/* libpq's rule: start as if PQconnectPoll had last returned PGRES_POLLING_WRITING. */
	if (watch(pc, EV_WRITE) < 0)
		attempt_failed(pc, "cannot watch the socket");
}

static void on_retry(void *arg)
{
	struct pg_conn *pc = arg;

	enter(pc);
	start_attempt(pc);
	leave(pc);
}

static void lost(struct pg_conn *pc, int err, const char *why);

/* A silent peer (a cut network, a stuck server) must not hold callers forever. */
static void on_deadline(void *arg)
{
	struct pg_conn *pc = arg;

	enter(pc);
	if (pc->phase == PHASE_CONNECTING)
		attempt_failed(pc, "timeout");
	else if (pc->phase == PHASE_UP)
		lost(pc, -ETIMEDOUT, "no answer from the database in time");
	leave(pc);
}

/* }===== */

/* {===== batches */

/* The connection died (or is given up) while up: the flight's outcome is unknown (ERR:
 * -ECONNRESET or -ETIMEDOUT), what was never sent did not happen (-ENOTCONN). Then
 * reconnect. */
static void lost(struct pg_conn *pc, int err, const char *why)
{
	char reason[REASON_MAX];

	copy_reason(reason, sizeof(reason), why);
	close_conn(pc);
	pc->phase = PHASE_WAITING;
	log_warn(pc->lg, "pg.lost", "reason=\"%s\" in_flight=%u queued=%u", reason, pc->flight.n,
		 pc->pending.n);
	if (pc->flight.head)
		pc->stats.batches_failed++;
	schedule_retry(pc);
	finish_batch(pc, &pc->flight, err, reason);
	if (pc->closing)
		return;
	finish_batch(pc, &pc->pending, -ENOTCONN, reason);
	if (pc->closing)
		return;
	notify_state(pc, false, reason);
}

/* Sends what libpq buffered; watches for writability while some is left. Returns 0 or -1
 * (the connection failed). Reading stays on: the server may block on its own output. */
static int flush(struct pg_conn *pc)
{
	int r = PQflush(pc->conn);

	if (r < 0)
		return -1;
	return watch(pc, EV_READ | (r == 1 ? EV_WRITE : 0)) < 0 ? -1 : 0;
}

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
	if (!PQpipelineSync(pc->conn) || flush(pc) < 0)
		goto fail;
	loop_timer_start(pc->deadline, pc->opts.batch_timeout_ms, 0);
	pc->stats.round_trips++;
	pc->flight_sent_us = clock_mono_us();
	log_debug(pc->lg, "pg.batch_sent", "statements=%u prologue=%d", pc->flight.n, pro != NULL);
	return;
fail:
	/* libpq refuses only when the connection broke or memory ran out: the pipeline's
	 * state is unknown, so start over on a fresh connection. */
	lost(pc, -ECONNRESET, PQerrorMessage(pc->conn));
}

static void on_send_timer(void *arg)
{
	struct pg_conn *pc = arg;

	enter(pc);
	send_batch(pc);
	leave(pc);
}

/* The first failure of the flight is the one callers hear about. */
static void note_failure(struct pg_conn *pc, const PGresult *r)
{
	const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);

	if (pc->flight_err)
		return;
	pc->flight_err = pc->in_prologue ? -EPERM : -EPROTO;
	copy_reason(pc->flight_msg, sizeof(pc->flight_msg), PQresultErrorMessage(r));
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
	finish_batch(pc, &pc->flight, err, pc->flight_msg);
	pc->cb_sqlstate[0] = '\0';
	if (!pc->closing && pc->phase == PHASE_UP && pc->pending.head)
		loop_timer_start(pc->send_timer, 0, 0);	/* what callbacks queued joins this turn */
}

/* Reads every result libpq has complete without waiting. Returns after the batch's
 * callbacks ran (the caller checks `closing`) or when more input is needed. */
static void read_results(struct pg_conn *pc)
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
static void drop_unexpected(PGconn *conn)
{
	PGresult *r;

	while (!PQisBusy(conn) && (r = PQgetResult(conn)) != NULL)
		PQclear(r);
}

/* libpq parses notifications while reading; they are handed on after each read. */
static void deliver_notifications(struct pg_conn *pc)
{
	PGnotify *n;

	while (!pc->closing && pc->conn && (n = PQnotifies(pc->conn)) != NULL) {
		if (pc->notify)
			pc->notify(pc->notify_arg, n->relname, n->extra);
		PQfreemem(n);
	}
}

static void up_event(struct pg_conn *pc, short what)
{
	if ((what & EV_READ) && !PQconsumeInput(pc->conn)) {
		lost(pc, -ECONNRESET, PQerrorMessage(pc->conn));
		return;
	}
	if ((pc->ev_flags & EV_WRITE) && flush(pc) < 0) {
		lost(pc, -ECONNRESET, PQerrorMessage(pc->conn));
		return;
	}
	read_results(pc);
	if (pc->closing || pc->phase != PHASE_UP)
		return;
	if (PQstatus(pc->conn) == CONNECTION_BAD) {
		lost(pc, -ECONNRESET, PQerrorMessage(pc->conn));
		return;
	}
	if (!pc->flight.head)
		drop_unexpected(pc->conn);
	deliver_notifications(pc);
}

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
	struct pg_conn *pc = arg;

	(void)fd;
	enter(pc);
	if (pc->phase == PHASE_CONNECTING)
		connect_step(pc);
	else if (pc->phase == PHASE_UP)
		up_event(pc, what);
	leave(pc);
}

/* }===== */

/* {===== the public side */

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

		stmt_free(s);
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
	stmt_free(pc->prologue);	/* a batch in flight does not point at it */
	pc->prologue = s;
	pc->prologue_fail = on_fail;
	pc->prologue_arg = arg;
	return 0;
}

void pg_conn_set_notify(struct pg_conn *pc, pg_notify_fn fn, void *arg)
{
	pc->notify = fn;
	pc->notify_arg = arg;
}

const char *pg_conn_batch_sqlstate(const struct pg_conn *pc)
{
	return pc->cb_sqlstate;
}

/* The LISTEN of a new connection committed: tell the hook that it listens again. */
static void on_listening(void *arg, int err, const char *msg, const struct pg_result *res)
{
	struct pg_conn *pc = arg;

	(void)res;
	if (err) {
		if (err != -ECANCELED)
			log_warn(pc->lg, "pg.listen_failed", "reason=\"%s\"", msg ? msg : pg_conn_strerror(err));
		return;
	}
	if (pc->notify)
		pc->notify(pc->notify_arg, NULL, NULL);
}

static int queue_listen(struct pg_conn *pc, const char *channel, bool last)
{
	char sql[CHANNEL_MAX + 16];

	snprintf(sql, sizeof(sql), "LISTEN \"%s\"", channel);
	return pg_conn_queue_bare(pc, sql, 0, NULL, last ? on_listening : NULL, pc);
}

/* Every channel again, on a new connection: one bare batch, one "listening" report. */
static void listen_all(struct pg_conn *pc)
{
	for (unsigned i = 0; i < pc->nchannels; i++) {
		int err = queue_listen(pc, pc->channels[i], i + 1 == pc->nchannels);

		if (err)
			log_warn(pc->lg, "pg.listen_failed", "channel=%s reason=\"%s\"", pc->channels[i],
				 pg_conn_strerror(err));
	}
}

static bool channel_ok(const char *ch)
{
	size_t n = ch ? strlen(ch) : 0;

	if (n == 0 || n > CHANNEL_MAX)
		return false;
	for (; *ch; ch++)
		if (!(*ch == '_' || (*ch >= 'a' && *ch <= 'z') || (*ch >= 'A' && *ch <= 'Z') ||
		      (*ch >= '0' && *ch <= '9')))
			return false;
	return true;
}

int pg_conn_listen(struct pg_conn *pc, const char *channel)
{
	if (!channel_ok(channel))
		return -EINVAL;
	for (unsigned i = 0; i < pc->nchannels; i++)
		if (strcmp(pc->channels[i], channel) == 0)
			return 0;
	if (pc->nchannels == PG_CONN_MAX_CHANNELS)
		return -ENOSPC;
	if (!(pc->channels[pc->nchannels] = strdup(channel)))
		return -ENOMEM;
	pc->nchannels++;
	/* Not up yet: came_up() listens on every channel. */
	return pc->phase == PHASE_UP ? queue_listen(pc, channel, true) : 0;
}

static char *dup_opt(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void fill_defaults(struct pg_conn_opts *o)
{
	if (!o->max_queued)
		o->max_queued = PG_CONN_MAX_QUEUED;
	if (!o->max_queued_bytes)
		o->max_queued_bytes = PG_CONN_MAX_QUEUED_BYTES;
	if (!o->connect_timeout_ms)
		o->connect_timeout_ms = PG_CONN_CONNECT_TIMEOUT_MS;
	if (!o->batch_timeout_ms)
		o->batch_timeout_ms = PG_CONN_BATCH_TIMEOUT_MS;
	if (!o->backoff_min_ms)
		o->backoff_min_ms = PG_CONN_BACKOFF_MIN_MS;
	if (!o->backoff_max_ms)
		o->backoff_max_ms = PG_CONN_BACKOFF_MAX_MS;
	if (o->backoff_max_ms < o->backoff_min_ms)
		o->backoff_max_ms = o->backoff_min_ms;
}

struct pg_conn *pg_conn_new(struct loop *lp, struct log *lg, const struct pg_conn_opts *opts,
			    pg_state_fn state, void *arg)
{
	struct pg_conn *pc;

	if (!opts || !opts->conninfo)
		return NULL;
	pc = calloc(1, sizeof(*pc));
	if (!pc)
		return NULL;
	pc->lp = lp;
	pc->lg = lg;
	pc->state = state;
	pc->state_arg = arg;
	pc->ev_fd = -1;
	pc->opts = *opts;
	fill_defaults(&pc->opts);
	pc->backoff_ms = pc->opts.backoff_min_ms;
	pc->opts.conninfo = dup_opt(opts->conninfo);
	pc->opts.password = dup_opt(opts->password);
	pc->send_timer = loop_timer_new(lp, on_send_timer, pc);
	pc->deadline = loop_timer_new(lp, on_deadline, pc);
	pc->retry = loop_timer_new(lp, on_retry, pc);
	if (!pc->opts.conninfo || (opts->password && !pc->opts.password) || !pc->send_timer ||
	    !pc->deadline || !pc->retry) {
		destroy(pc);
		return NULL;
	}
	/* The first attempt starts from the loop, so STATE never runs inside this call. */
	loop_timer_start(pc->retry, 0, 0);
	return pc;
}

static void destroy(struct pg_conn *pc)
{
	if (pc->ev)
		event_free(pc->ev);
	PQfinish(pc->conn);
	loop_timer_free(pc->send_timer);
	loop_timer_free(pc->deadline);
	loop_timer_free(pc->retry);
	stmt_free(pc->prologue);
	for (unsigned i = 0; i < pc->nchannels; i++)
		free(pc->channels[i]);
	free((char *)pc->opts.conninfo);
	if (pc->opts.password) {
		/* explicit_bzero: the compiler may not drop it as a dead store. */
		explicit_bzero((char *)pc->opts.password, strlen(pc->opts.password));
		free((char *)pc->opts.password);
	}
	free(pc);
}

void pg_conn_free(struct pg_conn *pc)
{
	if (!pc || pc->closing)
		return;
	pc->closing = true;
	enter(pc);
	close_conn(pc);
	loop_timer_stop(pc->retry);
	pc->phase = PHASE_WAITING;
	finish_batch(pc, &pc->flight, -ECANCELED, "cancelled");
	finish_batch(pc, &pc->pending, -ECANCELED, "cancelled");
	leave(pc);
}

/* }===== */

/* {===== the synchronous check (handoffd -t): blocking by design, never on the loop */

int pg_conn_check_sync(const struct pg_conn_opts *opts, const char *sql, char *out,
		       size_t outlen, char *err, size_t errlen)
{
	char timeout[16];
	uint32_t ms = opts->connect_timeout_ms ? opts->connect_timeout_ms : PG_CONN_CONNECT_TIMEOUT_MS;
	/* Our timeout first: one in the string overrides it. */
	const char *keys[] = { "connect_timeout", "dbname", "password", NULL };
	const char *values[] = { timeout, opts->conninfo, opts->password, NULL };
	PGconn *conn;
	PGresult *r;
	int rc = 0;

	snprintf(timeout, sizeof(timeout), "%u", (unsigned)((ms + 999) / 1000));
	if (outlen)
		out[0] = '\0';
	conn = PQconnectdbParams(keys, values, 1);
	if (!conn || PQstatus(conn) != CONNECTION_OK) {
		copy_reason(err, errlen, conn ? PQerrorMessage(conn) : "out of memory");
		PQfinish(conn);
		return -ECONNREFUSED;
	}
	r = PQexec(conn, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
		copy_reason(err, errlen, PQresultErrorMessage(r));
		rc = -EPROTO;
	} else if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && outlen) {
		snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
	}
	PQclear(r);
	PQfinish(conn);
	return rc;
}

/* }===== */
