/* store.h - durable state: conversations, Direct Line positions, dedupe ids, outbox.
 *
 * store.c dispatches to a backend chosen by the `state` string: "postgresql://..." or
 * "postgres://..." is PostgreSQL (store_pg.c: an in-memory mirror written behind through
 * pg_conn, one transaction per loop turn); anything else is a SQLite path (store_sqlite.c).
 * What follows describes SQLite; store_pg.c's header says where PostgreSQL differs.
 *
 * SQLite in WAL mode (synchronous=NORMAL: a committed write survives the process being
 * killed; the file is created 0600 because it holds tokens). Writes are grouped: the
 * first write of a loop turn opens a transaction and the loop commits it when the turn
 * ends, so a burst of messages costs one commit. Whoever must not act before its write
 * is durable (a 202 to a hub) waits with store_after_commit().
 *
 * The schema carries its version (PRAGMA user_version); opening a state written by an
 * earlier version upgrades it once, so what an old daemon queued is still delivered.
 *
 * Strings passed in are copied by SQLite; strings handed out are malloc'd copies owned by
 * the caller (store_conv_clear frees a struct store_conv's). Errors return a negative
 * errno (-EIO for SQLite failures, logged with SQLite's message). */
#ifndef HANDOFFD_STORE_H
#define HANDOFFD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct log;
struct loop;
struct pg_conn;
struct store;

/* How long hub event ids are remembered for dedupe, unless store_set_event_ttl says. */
#define STORE_EVENT_ID_TTL_S (7 * 24 * 3600)

struct store_conv {
	char *key;		/* "<front>:<front conversation id>" */
	char *state;		/* bot, routing, agent, closed */
	char *user_json;	/* the customer as the hub named them: {"id":..,"name":..} */
	char *dl_conversation_id;
	char *dl_token;
	int64_t dl_token_expiry;	/* unix seconds; 0 unknown */
	char *watermark;
	uint64_t *seen;		/* Direct Line's dedupe set (hashes of recent activity ids) */
	size_t nseen;
	char *hub_data;		/* JSON the hub scripts keep with the conversation */
	char *handoff_id;
	int64_t updated_at;
};

typedef void (*store_commit_fn)(void *arg);
typedef int (*store_conv_fn)(const struct store_conv *c, void *arg);
/* The answer of store_event_add_async: 1 new, 0 seen, or a negative errno. */
typedef void (*store_event_fn)(void *arg, int rc);

/* Whether STATE (the config's `state` value) names a PostgreSQL database. */
bool store_is_postgresql(const char *state);
/* For `handoffd -t`: a PostgreSQL STATE is reachable and its schema is one this handoffd
 * can use (missing is fine: it is created at start). 0, or -1 with ERR. Blocks (not on
 * the loop). A SQLite path is checked when it is opened. */
int store_check(const char *state, char *err, size_t errlen);

/* Opens (creating) the database at PATH, or the PostgreSQL database PATH names (loading
 * its state before it returns: this blocks). NULL with ERR on failure. */
struct store *store_open(struct loop *lp, struct log *lg, const char *path, char *err, size_t errlen);
/* store_open with FLAGS: STORE_PER_KEY (PostgreSQL only, for a cluster member) loads
 * nothing at open; conversations come into memory one key at a time (store_load) and
 * leave it without a write (store_forget), and outbox ids are reserved in blocks that no
 * other instance is handed. At close nothing is written synchronously (what the log
 * still holds would go unfenced). */
#define STORE_PER_KEY 1u
struct store *store_open_flags(struct loop *lp, struct log *lg, const char *path, unsigned flags, char *err,
			       size_t errlen);
/* Commits what is pending and closes. */
void store_close(struct store *st);

/* Commits the open transaction now and runs the after-commit callbacks. */
int store_flush(struct store *st);
/* Whether a transaction is open (writes not yet durable). */
bool store_write_pending(const struct store *st);
/* Runs FN(ARG) once the writes made so far are committed (at once when none is pending). */
int store_after_commit(struct store *st, store_commit_fn fn, void *arg);
/* Inside an after-commit callback: 0 when the writes it waited for are committed, else
 * why not (a negative errno; PostgreSQL only: the writes stay queued and are written when
 * the database is back, so the waiter answers "not confirmed" and must not undo them). */
int store_commit_error(const struct store *st);
/* Opens the turn's transaction now (it commits when the turn ends), for a caller that
 * defers its writes to store_before_commit's hook. */
int store_begin(struct store *st);
/* FN(ARG) runs just before each commit and its writes join the committed transaction: a
 * caller writes once per turn what changed many times in it. One hook; FN NULL removes it. */
void store_before_commit(struct store *st, store_commit_fn fn, void *arg);

/* ---- conversations ---- */
int store_conv_put(struct store *st, const struct store_conv *c);
/* 0 and *OUT filled; -ENOENT when there is no such conversation. */
int store_conv_get(struct store *st, const char *key, struct store_conv *out);
/* Calls FN for every conversation not closed; stops at FN's first non-zero return. */
int store_conv_each_open(struct store *st, store_conv_fn fn, void *arg);
/* Rows of ended conversations removed per store_purge_ended call: a large backlog goes in
 * bites, so no single loop turn stalls on it. */
#define STORE_PURGE_BATCH 500
/* Removes up to STORE_PURGE_BATCH ended conversations (state closed) last written before
 * BEFORE_S (unix seconds), with their outbox leftovers; once fewer are left, hub event
 * ids recorded before EVENTS_BEFORE_S too. Returns how many conversations went, or -EIO. */
int store_purge_ended(struct store *st, int64_t before_s, int64_t events_before_s);
void store_conv_clear(struct store_conv *c);

/* ---- dedupe ---- */
/* Records a hub event id: 1 when new, 0 when seen within STORE_EVENT_ID_TTL_S. */
int store_event_add(struct store *st, const char *event_id);
/* The same, answered by the database: 1 or 0 at once (SQLite), or -EINPROGRESS and FN(ARG,
 * answer) runs later from the loop (PostgreSQL), or a negative errno (FN never runs).
 * store_event_add on a PostgreSQL state returns -EOPNOTSUPP. */
int store_event_add_async(struct store *st, const char *event_id, store_event_fn fn, void *arg);
int store_event_delete(struct store *st, const char *event_id);
/* How long store_event_add remembers an id (state_retention). */
void store_set_event_ttl(struct store *st, int64_t ttl_s);

/* ---- outbox: ordered work per conversation and queue ("to_bot", "to_hub", "inbound") ---- */
struct store_item {
	int64_t id;
	char *key;
	char *queue;
	char *role, *fn;	/* a call of a hub module: its role ("front", "desk") and function; NULL otherwise */
	char *payload;
	size_t payload_len;
	int attempts;
	int64_t next_at_ms;	/* wall clock, ms */
	int64_t created_ms;	/* when it was queued, wall clock ms */
};

/* Appends PAYLOAD; returns the item id (> 0) or a negative errno. Ids only grow: none is
 * handed out twice, also across a restart. */
int64_t store_outbox_add(struct store *st, const char *key, const char *queue, const char *payload, size_t len);
/* The same for a call of a hub module: ROLE's FN with PAYLOAD (kept as columns, so the
 * payload is the call's argument alone). */
int64_t store_outbox_add_call(struct store *st, const char *key, const char *queue, const char *role,
			      const char *fn, const char *payload, size_t len);
/* The oldest item of KEY/QUEUE: 0 and *OUT filled, or -ENOENT. */
int store_outbox_head(struct store *st, const char *key, const char *queue, struct store_item *out);
int store_outbox_done(struct store *st, int64_t id);
/* How many items KEY/QUEUE holds, or a negative errno. */
int store_outbox_count(struct store *st, const char *key, const char *queue);
int store_outbox_retry(struct store *st, int64_t id, int attempts, int64_t next_at_ms);
/* Calls FN(key, queue, arg) once per KEY/QUEUE pair that has items (restart recovery). */
int store_outbox_each_queue(struct store *st, int (*fn)(const char *key, const char *queue, void *arg), void *arg);
void store_item_clear(struct store_item *it);
/* Whether item ID's write is committed. SQLite: always (its transaction commits within the
 * turn). PostgreSQL: once the batch that carried it committed; the relay delivers nothing
 * before, so a kill -9 cannot make a message reach the bot while its hub, never answered
 * 202, will deliver it again. */
bool store_outbox_durable(struct store *st, int64_t id);
/* FN(ARG) runs after each commit that made writes durable (PostgreSQL only: SQLite's
 * writes are durable within the turn). One hook; FN NULL removes it. */
void store_on_durable(struct store *st, store_commit_fn fn, void *arg);

/* ---- a cluster member's store (STORE_PER_KEY; -EOPNOTSUPP otherwise) ---- */

/* The connection every batch goes through (a cluster shares it: its fence prologue then
 * starts every batch), or NULL (SQLite). */
struct pg_conn *store_pg_conn(struct store *st);
/* Who this instance is in the cluster (NODE copied, EPOCH > 0), for the claims that go
 * with inbound rows; called again after every registration. */
int store_set_owner(struct store *st, const char *node, int64_t epoch);
/* Loads KEY's conversation row and outbox items into memory, asynchronously: FN(ARG, 0)
 * once they are there (a key with no row is fine), or FN(ARG, negative errno). */
int store_load(struct store *st, const char *key, void (*fn)(void *arg, int err), void *arg);
/* Drops KEY (or every key) from memory, without writing anything. store_forget_all also
 * drops the writes not yet sent. */
void store_forget(struct store *st, const char *key);
void store_forget_all(struct store *st);

/* A hub event for a conversation, kept in the shared inbound table until its owner
 * applies it (relay_cluster.c). */
struct store_inbound {
	int64_t seq;		/* the database's order (0 when adding) */
	char *key;
	char *op;		/* customer, to_bot, agent, handoff_event, end, set_data */
	char *id;		/* the front's conversation id */
	char *arg;		/* user JSON, handoff state or hub data; may be NULL */
	bool flag;		/* handoff_event: back to the bot */
	char *payload;		/* the activity, NUL-terminated after LEN bytes; may be NULL */
	size_t len;
	char *origin;		/* unique to the hub event's call (a second row of it is not added);
				 * NULL: one is made (node, epoch, count) */
};
/* Writes IN in the turn's batch with this instance's claim of its key (taken if nobody
 * alive owns it) and a wake-up for its owner: all three commit together or not at all. */
int store_inbound_add(struct store *st, const struct store_inbound *in);
/* Reads up to STORE_INBOUND_READ_MAX rows of KEY in their order: FN(ARG, 0, rows, n) with
 * ROWS borrowed for the call, or FN(ARG, negative errno, NULL, 0). */
#define STORE_INBOUND_READ_MAX 200
typedef void (*store_inbound_fn)(void *arg, int err, const struct store_inbound *rows, size_t n);
int store_inbound_read(struct store *st, const char *key, store_inbound_fn fn, void *arg);
/* Row SEQ was applied: deleted in the turn's batch, with what applying it wrote. */
int store_inbound_done(struct store *st, int64_t seq);
/* KEY's row as the database has it now (a conversation held elsewhere): FN(ARG, 0, row),
 * the row borrowed for the call, or FN(ARG, -ENOENT or another negative errno, NULL). */
int store_conv_fetch(struct store *st, const char *key, void (*fn)(void *arg, int err, const struct store_conv *c),
		     void *arg);
/* Keys (up to 500) with inbound rows and no owner (stored before this instance had
 * registered, or by one that died before it claimed them): FN(ARG, 0, keys, n), KEYS
 * borrowed for the call, or FN(ARG, negative errno, NULL, 0). */
int store_inbound_unowned(struct store *st, void (*fn)(void *arg, int err, const char *const *keys, size_t n),
			  void *arg);

#endif
