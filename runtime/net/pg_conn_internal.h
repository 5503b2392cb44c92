/* pg_conn_internal.h - what pg_conn.c and pg_conn_batch.c share and nothing else includes:
 * the connection's private struct, its queued statements and batches, and the helpers one
 * of the two files calls in the other. The public API stays in pg_conn.h. */
#ifndef HANDOFFD_PG_CONN_INTERNAL_H
#define HANDOFFD_PG_CONN_INTERNAL_H

#include "net/pg_conn.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REASON_MAX 512		/* a server or libpq message kept for callers, cut beyond */

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

/* {===== pg_conn.c: the connection */

/* Copies a libpq message, trimmed of its trailing newline, for callers. */
void pgc_copy_reason(char *out, size_t cap, const char *msg);
/* Starts a frame that runs callers' callbacks (see pg_conn.c on `depth`). */
void pgc_enter(struct pg_conn *pc);
/* Ends a frame; the outermost one releases a connection freed meanwhile. */
void pgc_leave(struct pg_conn *pc);
/* Sends what libpq buffered, watching for writability while some is left. 0 or -1. */
int pgc_flush(struct pg_conn *pc);
/* The connection died or is given up while up: batches fail with ERR, then reconnect. */
void pgc_lost(struct pg_conn *pc, int err, const char *why);

/* }===== */

/* {===== pg_conn_batch.c: statements and batches */

/* Frees a statement and the result it kept. */
void pgc_stmt_free(struct pg_stmt *s);
/* Runs the callback of every statement of B with ERR (0: committed) and frees them. */
void pgc_finish_batch(struct pg_conn *pc, struct pg_batch *b, int err, const char *msg);
/* The end-of-turn timer: the pending batch goes out. */
void pgc_on_send_timer(void *arg);
/* Reads every result libpq has complete without waiting, matching them to the flight. */
void pgc_read_results(struct pg_conn *pc);
/* Drops whatever libpq parsed while nothing was in flight. */
void pgc_drop_unexpected(PGconn *conn);

/* }===== */

#endif
