/* pg_conn.c - libpq driven by the libevent loop: non-blocking connect, pipelined group
 * commits, reconnection with a capped backoff. Owns the PGconn, the event on its socket,
 * three timers (end of turn, deadline, retry) and every queued statement until its
 * callback ran. Knows nothing about what the statements mean. This file is the
 * connection: connecting and reconnecting, the socket's event, losing the connection,
 * LISTEN/NOTIFY, creating and freeing it, and the synchronous check; the statement queue
 * and the pipelined batches (what is sent, which result is whose, the outcome callbacks)
 * are pg_conn_batch.c's.
 *
 * Callbacks into callers run only from the loop (socket events, timers) and from
 * pg_conn_free(), never from inside pg_conn_queue(). `depth` counts the frames that run
 * them, so a free from inside one releases the memory only when the outermost frame
 * unwinds; after every callback the frame checks `closing` and stops touching libpq. */
#include "net/pg_conn.h"

#include "base/log.h"
#include "net/loop.h"
#include "net/pg_conn_internal.h"

#include <errno.h>
#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHANNEL_MAX 63		/* PostgreSQL's identifier length */

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
void pgc_copy_reason(char *out, size_t cap, const char *msg)
{
	size_t n;

	snprintf(out, cap, "%s", msg && *msg ? msg : "unknown error");
	n = strlen(out);
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
		out[--n] = '\0';
}

/* {===== callbacks into callers */

static void destroy(struct pg_conn *pc);

void pgc_enter(struct pg_conn *pc)
{
	pc->depth++;
}

/* Ends a frame; the outermost one releases a connection freed meanwhile. */
void pgc_leave(struct pg_conn *pc)
{
	if (--pc->depth == 0 && pc->closing)
		destroy(pc);
}

static void notify_state(struct pg_conn *pc, bool up, const char *reason)
{
	if (pc->state)
		pc->state(pc->state_arg, up, reason);
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

/* Sends what libpq buffered; watches for writability while some is left. Returns 0 or -1
 * (the connection failed). Reading stays on: the server may block on its own output. */
int pgc_flush(struct pg_conn *pc)
{
	int r = PQflush(pc->conn);

	if (r < 0)
		return -1;
	return watch(pc, EV_READ | (r == 1 ? EV_WRITE : 0)) < 0 ? -1 : 0;
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

	pgc_copy_reason(msg, sizeof(msg), message);
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

	pgc_copy_reason(reason, sizeof(reason), why);
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

	pgc_enter(pc);
	start_attempt(pc);
	pgc_leave(pc);
}

/* A silent peer (a cut network, a stuck server) must not hold callers forever. */
static void on_deadline(void *arg)
{
	struct pg_conn *pc = arg;

	pgc_enter(pc);
	if (pc->phase == PHASE_CONNECTING)
		attempt_failed(pc, "timeout");
	else if (pc->phase == PHASE_UP)
		pgc_lost(pc, -ETIMEDOUT, "no answer from the database in time");
	pgc_leave(pc);
}

/* }===== */

/* {===== the connection while up */

/* The connection died (or is given up) while up: the flight's outcome is unknown (ERR:
 * -ECONNRESET or -ETIMEDOUT), what was never sent did not happen (-ENOTCONN). Then
 * reconnect. */
void pgc_lost(struct pg_conn *pc, int err, const char *why)
{
	char reason[REASON_MAX];

	pgc_copy_reason(reason, sizeof(reason), why);
	close_conn(pc);
	pc->phase = PHASE_WAITING;
	log_warn(pc->lg, "pg.lost", "reason=\"%s\" in_flight=%u queued=%u", reason, pc->flight.n,
		 pc->pending.n);
	if (pc->flight.head)
		pc->stats.batches_failed++;
	schedule_retry(pc);
	pgc_finish_batch(pc, &pc->flight, err, reason);
	if (pc->closing)
		return;
	pgc_finish_batch(pc, &pc->pending, -ENOTCONN, reason);
	if (pc->closing)
		return;
	notify_state(pc, false, reason);
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
		pgc_lost(pc, -ECONNRESET, PQerrorMessage(pc->conn));
		return;
	}
	if ((pc->ev_flags & EV_WRITE) && pgc_flush(pc) < 0) {
		pgc_lost(pc, -ECONNRESET, PQerrorMessage(pc->conn));
		return;
	}
	pgc_read_results(pc);
	if (pc->closing || pc->phase != PHASE_UP)
		return;
	if (PQstatus(pc->conn) == CONNECTION_BAD) {
		pgc_lost(pc, -ECONNRESET, PQerrorMessage(pc->conn));
		return;
	}
	if (!pc->flight.head)
		pgc_drop_unexpected(pc->conn);
	deliver_notifications(pc);
}

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
	struct pg_conn *pc = arg;

	(void)fd;
	pgc_enter(pc);
	if (pc->phase == PHASE_CONNECTING)
		connect_step(pc);
	else if (pc->phase == PHASE_UP)
		up_event(pc, what);
	pgc_leave(pc);
}

/* }===== */

/* {===== the public side */

void pg_conn_set_notify(struct pg_conn *pc, pg_notify_fn fn, void *arg)
{
	pc->notify = fn;
	pc->notify_arg = arg;
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
	pc->send_timer = loop_timer_new(lp, pgc_on_send_timer, pc);
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
	pgc_stmt_free(pc->prologue);
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
	pgc_enter(pc);
	close_conn(pc);
	loop_timer_stop(pc->retry);
	pc->phase = PHASE_WAITING;
	pgc_finish_batch(pc, &pc->flight, -ECANCELED, "cancelled");
	pgc_finish_batch(pc, &pc->pending, -ECANCELED, "cancelled");
	pgc_leave(pc);
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
		pgc_copy_reason(err, errlen, conn ? PQerrorMessage(conn) : "out of memory");
		PQfinish(conn);
		return -ECONNREFUSED;
	}
	r = PQexec(conn, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
		pgc_copy_reason(err, errlen, PQresultErrorMessage(r));
		rc = -EPROTO;
	} else if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && outlen) {
		snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
	}
	PQclear(r);
	PQfinish(conn);
	return rc;
}

/* }===== */
