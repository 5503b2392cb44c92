/* store_pg_internal.h - what the parts of the PostgreSQL store share: the store API over
 * the mirror (store_pg.c), the write-behind log, its statements and batches
 * (store_pg_log.c) and a cluster member's part (store_pg_cluster.c: ownership, loading a
 * key taken over, the inbound table). Nothing outside those files includes it. */
#ifndef HANDOFFD_STORE_PG_INTERNAL_H
#define HANDOFFD_STORE_PG_INTERNAL_H

#include "relay/cluster.h"
#include "relay/store_backend.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pg_conn;

#define PG_BATCH_MAX 4000		/* statements per batch (pg_conn holds 10000) */
#define PG_BACKLOG_MAX 200000		/* writes waiting for the database; then writes fail */
#define PG_ID_MARK_EVERY 1000		/* ids between two high-water marks */
#define PG_PROTO_RETRIES 5
#define ENTRY_PARAMS 11

enum sql {
	Q_CONV_PUT, Q_OUT_ADD, Q_OUT_DONE, Q_OUT_RETRY, Q_ID_MARK, Q_EVENT_CHECK, Q_EVENT_ADD,
	Q_EVENT_DEL, Q_EVENT_EXPIRE, Q_PURGE_OUTBOX, Q_PURGE_CONV, Q_IN_ADD, Q_IN_CLAIM, Q_NOTIFY, Q_IN_READ,
	Q_IN_DONE, Q_IN_EXPIRE, Q_LOAD_CONV, Q_LOAD_OUTBOX, Q_BLOCK, Q_IN_UNOWNED, Q_COUNT
};

/* A statement of the log: a write (SEQ > 0, sent until it commits) or a question (SEQ 0,
 * asked once; FN hears the answer). */
struct entry {
	struct entry *next, *prev;
	struct store_impl *st;
	uint64_t seq;
	enum sql q;
	bool in_flight;
	store_event_fn fn;
	void (*rows)(void *arg, int err, const PGresult *r);	/* a question answered with rows */
	void *arg;
	int nparams;
	char *p[ENTRY_PARAMS];
};

/* An after-commit callback; SEQ 0 until its turn ended, then the last write before it. */
struct waiter {
	store_commit_fn fn;
	void *arg;
	uint64_t seq;
};

struct store_impl {
	struct loop *lp;
	struct log *lg;
	char *conninfo;
	struct pg_conn *pc;
	bool up;			/* the connection is up */
	bool down;			/* it failed since it was last up: waiters fail at once */
	bool held;			/* after a refused batch, until the retry timer */
	bool begun;			/* this turn wrote, or store_begin: the hook runs at its end */
	bool closing;
	struct pgm *m;
	struct entry *head, *tail;
	unsigned nwrites;		/* writes in the log */
	uint64_t seq;			/* the last write's */
	unsigned flight;		/* entries of the batch in flight not yet answered */
	uint64_t flight_last;		/* its last write */
	int flight_err;
	bool flight_rolled_back;	/* the server rolled it back: sent again, no one told */
	struct waiter *w;
	size_t nw, capw;
	int commit_err;			/* for the waiters running now */
	struct loop_timer *turn, *retry;
	store_commit_fn before;
	void *before_arg;
	store_commit_fn durable;	/* store_on_durable's hook */
	void *durable_arg;
	int64_t next_id, id_mark;
	int64_t event_ttl_s;
	uint64_t event_adds;
	unsigned proto_failures;
	/* STORE_PER_KEY: a cluster member */
	bool per_key;
	char node[CLUSTER_NODE_MAX];
	char epoch[24];
	uint64_t origins;		/* inbound rows added by this epoch */
	int64_t block_end;		/* next_id reaches it: the next block */
	int64_t next_block;		/* fetched ahead, or 0 */
	bool block_asked;
};

/* ---- the log (store_pg_log.c) ---- */

/* The text of statement Q. */
const char *pgs_sql(enum sql q);
void pgs_entry_free(struct entry *e);
/* Takes E out of the log (not freed). */
void pgs_unlink_entry(struct store_impl *st, struct entry *e);
/* Appends a write of Q with N text parameters (copied): 0, or -EIO (backlog full, memory). */
int pgs_write(struct store_impl *st, enum sql q, int n, const char *const *params);
/* Appends a question; ROWS hears its answer (or -ECANCELED, a connection error): the entry,
 * or NULL. */
struct entry *pgs_ask(struct store_impl *st, enum sql q, int n, const char *const *params,
		      void (*rows)(void *arg, int err, const PGresult *r), void *arg);
/* Appends Q with N text parameters (copied; NULL: SQL NULL), a write (WRITE: sent until it
 * commits) or a question: the entry, or NULL (backlog full, memory). */
struct entry *pgs_append(struct store_impl *st, enum sql q, bool write, int n, const char *const *params);
/* Runs, with ERR, the after-commit waiters whose writes are at or before UPTO. */
void pgs_run_waiters(struct store_impl *st, uint64_t upto, int err);
/* Every write up to the returned sequence number is committed (or given up). */
uint64_t pgs_durable_seq(const struct store_impl *st);
/* Makes the loop end the turn soon: what was appended goes out. */
void pgs_arm_turn(struct store_impl *st);
/* The turn timer (ST): the turn's waiters are closed and the log's head sent as a batch. */
void pgs_on_turn(void *arg);
/* The retry timer (ST): a held batch may go again. */
void pgs_on_retry(void *arg);
/* pg_conn's state callback (ST): the database came up or went down. */
void pgs_on_state(void *arg, bool up, const char *reason);
/* P as bytea's hex text input ("\x..."), malloc'ed; NULL without memory. */
char *pgs_hex_bytea(const void *p, size_t n);

/* ---- a cluster member (store_pg_cluster.c), the backend's entries ---- */

struct pg_conn *pgs_pg_conn(struct store_impl *st);
int pgs_set_owner(struct store_impl *st, const char *node, int64_t epoch);
void pgs_forget(struct store_impl *st, const char *key);
void pgs_forget_all(struct store_impl *st);
int pgs_load(struct store_impl *st, const char *key, void (*fn)(void *arg, int err), void *arg);
int pgs_inbound_add(struct store_impl *st, const struct store_inbound *in);
int pgs_inbound_read(struct store_impl *st, const char *key, store_inbound_fn fn, void *arg);
int pgs_inbound_done(struct store_impl *st, int64_t seq);
int pgs_inbound_unowned(struct store_impl *st, void (*fn)(void *arg, int err, const char *const *keys, size_t n),
			void *arg);
int pgs_conv_fetch(struct store_impl *st, const char *key,
		   void (*fn)(void *arg, int err, const struct store_conv *c), void *arg);

#endif
