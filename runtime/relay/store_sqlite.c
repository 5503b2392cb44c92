/* store_sqlite.c - SQLite behind the store API (store.c dispatches here for a
 * "sqlite:PATH" state): schema, prepared statements, group commit. Knows nothing about
 * what a conversation state means or how the outbox is delivered; convstore.c and
 * relay.c decide that. */
#include "relay/store_backend.h"
#include "relay/store_sqlite_checkpoint.h"

#include "base/clock.h"
#include "base/log.h"
#include "net/loop.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STORE_AFTER_COMMIT_MAX 65536

static const char *const SCHEMA =
	"PRAGMA journal_mode=WAL;"
	"PRAGMA synchronous=NORMAL;"
	"CREATE TABLE IF NOT EXISTS conversations ("
	"  key TEXT PRIMARY KEY, state TEXT NOT NULL, user_json TEXT, dl_conversation_id TEXT,"
	"  dl_token TEXT, dl_token_expiry INTEGER, watermark TEXT, dl_seen BLOB, hub_data TEXT,"
	"  handoff_id TEXT, updated_at INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, at INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS outbox ("
	"  id INTEGER PRIMARY KEY, key TEXT NOT NULL, queue TEXT NOT NULL,"
	"  payload BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL DEFAULT 0,"
	"  created INTEGER NOT NULL DEFAULT 0, role TEXT, fn TEXT);"
	"CREATE TABLE IF NOT EXISTS outbox_ids (one INTEGER PRIMARY KEY CHECK (one = 1), reserved INTEGER NOT NULL);"
	"CREATE INDEX IF NOT EXISTS outbox_by_queue ON outbox (key, queue, id);"
	"CREATE INDEX IF NOT EXISTS conversations_by_state ON conversations (state, updated_at);"
	"CREATE INDEX IF NOT EXISTS events_by_time ON events (at);"	/* expiry without a full scan */
	"PRAGMA user_version = 2;";

/* The schema version this code writes (PRAGMA user_version). 0 is the first layout,
 * whose hub items were an envelope {"role":R,"fn":F,"<member>":RAW} in the payload;
 * 1 has ROLE and FN as columns and RAW alone as the payload; 2 gives outbox ids from
 * blocks reserved in outbox_ids instead of AUTOINCREMENT (see take_outbox_id). */
#define STORE_SCHEMA_VERSION 2

/* Outbox ids reserved by one write of outbox_ids. */
#define OUTBOX_ID_BLOCK 4096

/* Version 0 -> 1, once, in one transaction: the columns, and each queued hub item
 * unwrapped by SQLite's JSON functions (the envelope's third member is the payload). */
static const char *const MIGRATE_1 =
	"BEGIN;"
	"ALTER TABLE outbox ADD COLUMN role TEXT;"
	"ALTER TABLE outbox ADD COLUMN fn TEXT;"
	"UPDATE outbox SET role = json_extract(CAST(payload AS TEXT), '$.role'),"
	"  fn = json_extract(CAST(payload AS TEXT), '$.fn'),"
	"  payload = CAST((SELECT value FROM json_each(CAST(outbox.payload AS TEXT))"
	"                  WHERE key NOT IN ('role', 'fn') LIMIT 1) AS BLOB)"
	"  WHERE queue = 'to_hub' AND json_valid(CAST(payload AS TEXT))"
	"  AND json_type(CAST(payload AS TEXT), '$.fn') = 'text';"
	"PRAGMA user_version = 1;"
	"COMMIT;";

/* Version 1 -> 2, once, in one transaction: the outbox without AUTOINCREMENT (rebuilt, as
 * SQLite cannot drop it from a table), its ids going on above every one handed out. */
static const char *const MIGRATE_2 =
	"BEGIN;"
	"CREATE TABLE outbox_ids (one INTEGER PRIMARY KEY CHECK (one = 1), reserved INTEGER NOT NULL);"
	"INSERT INTO outbox_ids (one, reserved) SELECT 1, MAX("
	"  COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0),"
	"  COALESCE((SELECT MAX(id) FROM outbox), 0)) + 1;"
	"CREATE TABLE outbox_2 ("
	"  id INTEGER PRIMARY KEY, key TEXT NOT NULL, queue TEXT NOT NULL,"
	"  payload BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL DEFAULT 0,"
	"  created INTEGER NOT NULL DEFAULT 0, role TEXT, fn TEXT);"
	"INSERT INTO outbox_2 (id, key, queue, payload, attempts, next_at, created, role, fn)"
	"  SELECT id, key, queue, payload, attempts, next_at, created, role, fn FROM outbox;"
	"DROP TABLE outbox;"
	"ALTER TABLE outbox_2 RENAME TO outbox;"
	"CREATE INDEX outbox_by_queue ON outbox (key, queue, id);"
	"PRAGMA user_version = 2;"
	"COMMIT;";



enum stmt {
	S_BEGIN, S_COMMIT, S_CONV_PUT, S_CONV_GET, S_CONV_OPEN,
	S_EVENT_ADD, S_EVENT_DEL, S_EVENT_EXPIRE,
	S_OUT_ADD, S_OUT_HEAD, S_OUT_DONE, S_OUT_RETRY, S_OUT_QUEUES, S_OUT_COUNT,
	S_PURGE_OUTBOX, S_PURGE_CONVS, S_IDS_RESERVE, S_NSTMT
};

static const char *const SQL[S_NSTMT] = {
	[S_BEGIN] = "BEGIN",
	[S_COMMIT] = "COMMIT",
	[S_CONV_PUT] = "INSERT INTO conversations (key, state, user_json, dl_conversation_id, dl_token,"
		       " dl_token_expiry, watermark, dl_seen, hub_data, handoff_id, updated_at)"
		       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
		       " ON CONFLICT (key) DO UPDATE SET state = ?2, user_json = ?3, dl_conversation_id = ?4,"
		       " dl_token = ?5, dl_token_expiry = ?6, watermark = ?7, dl_seen = ?8, hub_data = ?9,"
		       " handoff_id = ?10, updated_at = ?11",
	[S_CONV_GET] = "SELECT key, state, user_json, dl_conversation_id, dl_token, dl_token_expiry,"
		       " watermark, dl_seen, hub_data, handoff_id, updated_at FROM conversations WHERE key = ?1",
	[S_CONV_OPEN] = "SELECT key, state, user_json, dl_conversation_id, dl_token, dl_token_expiry,"
			" watermark, dl_seen, hub_data, handoff_id, updated_at FROM conversations"
			" WHERE state <> 'closed'",
	[S_EVENT_ADD] = "INSERT OR IGNORE INTO events (id, at) VALUES (?1, ?2)",
	[S_EVENT_DEL] = "DELETE FROM events WHERE id = ?1",
	[S_EVENT_EXPIRE] = "DELETE FROM events WHERE at < ?1",
	[S_OUT_ADD] = "INSERT INTO outbox (key, queue, payload, created, role, fn, id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[S_OUT_HEAD] = "SELECT id, key, queue, payload, attempts, next_at, created, role, fn FROM outbox"
		       " WHERE key = ?1 AND queue = ?2 ORDER BY id LIMIT 1",
	[S_OUT_DONE] = "DELETE FROM outbox WHERE id = ?1",
	[S_OUT_RETRY] = "UPDATE outbox SET attempts = ?2, next_at = ?3 WHERE id = ?1",
	[S_OUT_QUEUES] = "SELECT DISTINCT key, queue FROM outbox",
	[S_OUT_COUNT] = "SELECT COUNT(*) FROM outbox WHERE key = ?1 AND queue = ?2",
	/* Both take the same oldest batch of ended rows: the outbox leftovers first, while
	 * their rows still say whose they are. */
	[S_PURGE_OUTBOX] = "DELETE FROM outbox WHERE key IN (SELECT key FROM conversations"
			   " WHERE state = 'closed' AND updated_at < ?1 ORDER BY updated_at LIMIT ?2)",
	[S_PURGE_CONVS] = "DELETE FROM conversations WHERE key IN (SELECT key FROM conversations"
			  " WHERE state = 'closed' AND updated_at < ?1 ORDER BY updated_at LIMIT ?2)",
	[S_IDS_RESERVE] = "INSERT OR REPLACE INTO outbox_ids (one, reserved) VALUES (1, ?1)",
};

struct after_commit {
	store_commit_fn fn;
	void *arg;
};

struct store_impl {
	sqlite3 *db;
	struct log *log;
	sqlite3_stmt *stmt[S_NSTMT];
	bool in_txn;
	struct loop_timer *flush;	/* commits at the end of the loop turn */
	struct after_commit *after;
	size_t nafter, capafter;
	store_commit_fn before;		/* writes deferred to the commit (store_before_commit) */
	void *before_arg;
	uint64_t writes;		/* since open: for event-id expiry pacing */
	int64_t event_ttl_s;		/* how long hub event ids are remembered */
	int64_t next_id;		/* the next outbox id */
	int64_t ids_end;		/* ids below it are reserved in outbox_ids */
	struct sq_checkpointer *checkpointer;	/* NULL: SQLite checkpoints in the commits */
	uint64_t checkpoint_failures;	/* the checkpointer's, as last logged */
};

static int sq_flush(struct store_impl *st);
static void report_checkpoints(struct store_impl *st);
static void start_checkpointer(struct store_impl *st, const char *path);
static void sq_close(struct store_impl *st);
static int sq_event_expire(struct store_impl *st, int64_t before_s);

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

static int db_error(struct store_impl *st, const char *what)
{
	log_error(st->log, "store.error", "what=%s error=\"%s\"", what, sqlite3_errmsg(st->db));
	return -EIO;
}

/* Resets S after use and reports a failed step. */
static int finish(struct store_impl *st, sqlite3_stmt *s, int rc, const char *what)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return db_error(st, what);
	return 0;
}

static void on_flush(void *arg)
{
	sq_flush(arg);
}

/* Every write goes through here: it joins the turn's transaction. */
static int write_begin(struct store_impl *st)
{
	int rc;

	if (st->in_txn)
		return 0;
	rc = sqlite3_step(st->stmt[S_BEGIN]);
	sqlite3_reset(st->stmt[S_BEGIN]);
	if (rc != SQLITE_DONE)
		return db_error(st, "begin");
	st->in_txn = true;
	if (st->flush)
		loop_timer_start(st->flush, 0, 0);
	return 0;
}

static int sq_flush(struct store_impl *st)
{
	size_t n;
	int rc = 0;

	if (st->in_txn) {
		int sq;

		if (st->before)
			st->before(st->before_arg);	/* its writes join this transaction */
		sq = sqlite3_step(st->stmt[S_COMMIT]);

		sqlite3_reset(st->stmt[S_COMMIT]);
		st->in_txn = false;
		if (sq != SQLITE_DONE) {
			rc = db_error(st, "commit");
			st->ids_end = st->next_id;	/* its reservation may be lost too */
		}
		if (st->checkpointer)
			report_checkpoints(st);
	}
	/* Callbacks may write again (a new transaction) and queue more callbacks: run only
	 * the ones that belong to this commit. */
	n = st->nafter;
	for (size_t i = 0; i < n; i++)
		st->after[i].fn(st->after[i].arg);
	if (st->nafter > n)
		memmove(st->after, st->after + n, (st->nafter - n) * sizeof(*st->after));
	st->nafter -= n;
	return rc;
}

static bool sq_write_pending(const struct store_impl *st)
{
	return st->in_txn;
}

static int sq_begin(struct store_impl *st)
{
	return write_begin(st);
}

static void sq_before_commit(struct store_impl *st, store_commit_fn fn, void *arg)
{
	st->before = fn;
	st->before_arg = arg;
}

static int sq_after_commit(struct store_impl *st, store_commit_fn fn, void *arg)
{
	if (!st->in_txn) {
		fn(arg);
		return 0;
	}
	if (st->nafter == st->capafter) {
		size_t cap = st->capafter ? st->capafter * 2 : 64;
		struct after_commit *a;

		if (cap > STORE_AFTER_COMMIT_MAX || !(a = realloc(st->after, cap * sizeof(*a))))
			return -ENOMEM;
		st->after = a;
		st->capafter = cap;
	}
	st->after[st->nafter++] = (struct after_commit){ fn, arg };
	return 0;
}

static int create_private(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

	if (fd < 0) {
		snprintf(err, errlen, "cannot open state %s: %s", path, strerror(errno));
		return -errno;
	}
	fchmod(fd, 0600);	/* it holds Direct Line tokens */
	close(fd);
	return 0;
}

/* One integer out of SQL (a PRAGMA, a count); -1 when it cannot be read. */
static int64_t query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s;
	int64_t v = -1;

	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

/* Runs SQL, the step to VERSION, in its own transaction. */
static int migrate_to(struct store_impl *st, const char *path, const char *sql, int version, char *err,
		      size_t errlen)
{
	if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "state %s: upgrading to schema version %d: %s", path, version,
			 sqlite3_errmsg(st->db));
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		return -EIO;
	}
	log_info(st->log, "store.migrated", "path=%s version=%d", path, version);
	return 0;
}

/* Brings a state written by an earlier handoffd to this version; refuses a later one
 * (its rows could mean something this code does not know). */
static int migrate(struct store_impl *st, const char *path, char *err, size_t errlen)
{
	int64_t version = query_int(st->db, "PRAGMA user_version");
	int64_t tables = query_int(st->db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'outbox'");

	if (version < 0 || tables < 0)
		return -EIO;
	if (version > STORE_SCHEMA_VERSION) {
		snprintf(err, errlen, "state %s has schema version %lld; this handoffd knows up to %d", path,
			 (long long)version, STORE_SCHEMA_VERSION);
		return -EPROTO;
	}
	if (version == STORE_SCHEMA_VERSION || tables == 0)	/* current, or new: SCHEMA makes it */
		return 0;
	if (version < 1 && migrate_to(st, path, MIGRATE_1, 1, err, errlen) < 0)
		return -EIO;
	return migrate_to(st, path, MIGRATE_2, 2, err, errlen);
}

/* At open: ids go on above every one reserved or stored. */
static int load_outbox_ids(struct store_impl *st)
{
	st->next_id = query_int(st->db, "SELECT MAX((SELECT COALESCE(MAX(reserved), 1) FROM outbox_ids),"
					" (SELECT COALESCE(MAX(id), 0) + 1 FROM outbox))");
	st->ids_end = st->next_id;	/* the first row reserves a block */
	return st->next_id > 0 ? 0 : -EIO;
}

struct store_impl *store_sqlite_open(struct loop *lp, struct log *lg, const char *path, char *err, size_t errlen)
{
	struct store_impl *st = calloc(1, sizeof(*st));

	if (!st || create_private(path, err, errlen) < 0) {
		if (!st)
			snprintf(err, errlen, "out of memory opening the state");
		free(st);
		return NULL;
	}
	if (errlen)
		err[0] = '\0';	/* migrate() may say more precisely what failed */
	st->log = lg;
	st->event_ttl_s = STORE_EVENT_ID_TTL_S;
	/* Each connection is used by one thread (this one by the loop's, the checkpointer's
	 * by its own): no per-connection mutex, and no memory statistics (a global mutex on
	 * every SQLite allocation; refused, harmlessly, once SQLite is initialised). */
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK ||
	    sqlite3_busy_timeout(st->db, 5000) != SQLITE_OK || migrate(st, path, err, errlen) < 0 ||
	    sqlite3_exec(st->db, SCHEMA, NULL, NULL, NULL) != SQLITE_OK || load_outbox_ids(st) < 0) {
		if (!err[0])
			snprintf(err, errlen, "cannot open state %s: %s", path, sqlite3_errmsg(st->db));
		sq_close(st);
		return NULL;
	}
	for (int i = 0; i < S_NSTMT; i++) {
		if (sqlite3_prepare_v3(st->db, SQL[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i], NULL) != SQLITE_OK) {
			snprintf(err, errlen, "state %s: %s", path, sqlite3_errmsg(st->db));
			sq_close(st);
			return NULL;
		}
	}
	if (lp && !(st->flush = loop_timer_new(lp, on_flush, st))) {
		snprintf(err, errlen, "out of memory opening the state");
		sq_close(st);
		return NULL;
	}
	if (lp)
		start_checkpointer(st, path);
	return st;
}

/* Moves the WAL checkpoints (and their fsyncs) off the loop; without the thread SQLite
 * keeps doing them in the commits, as before. */
static void start_checkpointer(struct store_impl *st, const char *path)
{
	st->checkpointer = sq_checkpointer_start(path);
	if (!st->checkpointer) {
		log_warn(st->log, "store.checkpointer", "error=\"cannot start the checkpoint thread\" fallback=in_commits");
		return;
	}
	if (sqlite3_exec(st->db, "PRAGMA wal_autocheckpoint=0", NULL, NULL, NULL) != SQLITE_OK) {
		sq_checkpointer_stop(st->checkpointer);
		st->checkpointer = NULL;
	}
}

/* The thread cannot log (the log is the loop's): failures are told from here. */
static void report_checkpoints(struct store_impl *st)
{
	uint64_t failed = sq_checkpointer_failures(st->checkpointer);

	if (failed != st->checkpoint_failures) {
		log_warn(st->log, "store.checkpoint_failed", "failures=%llu", (unsigned long long)failed);
		st->checkpoint_failures = failed;
	}
}

static void sq_close(struct store_impl *st)
{
	if (!st)
		return;
	if (st->db)
		sq_flush(st);
	sq_checkpointer_stop(st->checkpointer);	/* before the last connection closes */
	for (int i = 0; i < S_NSTMT; i++)
		sqlite3_finalize(st->stmt[i]);
	sqlite3_close(st->db);
	loop_timer_free(st->flush);
	free(st->after);
	free(st);
}

/* ---- conversations ---- */

/* SQLITE_STATIC: no copy. Every statement is stepped and finish()ed (reset, bindings
 * cleared) before the function that bound V returns, so V outlives its binding. */
static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, i);
}

static int sq_conv_put(struct store_impl *st, const struct store_conv *c)
{
	sqlite3_stmt *s = st->stmt[S_CONV_PUT];

	if (write_begin(st) < 0)
		return -EIO;
	bind_text(s, 1, c->key);
	bind_text(s, 2, c->state ? c->state : "bot");
	bind_text(s, 3, c->user_json);
	bind_text(s, 4, c->dl_conversation_id);
	bind_text(s, 5, c->dl_token);
	sqlite3_bind_int64(s, 6, c->dl_token_expiry);
	bind_text(s, 7, c->watermark);
	if (c->nseen)
		sqlite3_bind_blob(s, 8, c->seen, (int)(c->nseen * sizeof(*c->seen)), SQLITE_STATIC);
	else
		sqlite3_bind_null(s, 8);
	bind_text(s, 9, c->hub_data);
	bind_text(s, 10, c->handoff_id);
	sqlite3_bind_int64(s, 11, now_s());
	return finish(st, s, sqlite3_step(s), "conv_put");
}

static char *column_dup(sqlite3_stmt *s, int i)
{
	const unsigned char *v = sqlite3_column_text(s, i);

	return v ? strdup((const char *)v) : NULL;
}

static void read_seen(sqlite3_stmt *s, int i, struct store_conv *c)
{
	size_t n = (size_t)sqlite3_column_bytes(s, i) / sizeof(*c->seen);

	if (n == 0 || !(c->seen = malloc(n * sizeof(*c->seen))))
		return;	/* without the dedupe set a resume relies on the watermark alone */
	memcpy(c->seen, sqlite3_column_blob(s, i), n * sizeof(*c->seen));
	c->nseen = n;
}

static void read_conv(sqlite3_stmt *s, struct store_conv *c)
{
	c->key = column_dup(s, 0);
	c->state = column_dup(s, 1);
	c->user_json = column_dup(s, 2);
	c->dl_conversation_id = column_dup(s, 3);
	c->dl_token = column_dup(s, 4);
	c->dl_token_expiry = sqlite3_column_int64(s, 5);
	c->watermark = column_dup(s, 6);
	read_seen(s, 7, c);
	c->hub_data = column_dup(s, 8);
	c->handoff_id = column_dup(s, 9);
	c->updated_at = sqlite3_column_int64(s, 10);
}

static int sq_conv_get(struct store_impl *st, const char *key, struct store_conv *out)
{
	sqlite3_stmt *s = st->stmt[S_CONV_GET];
	int rc;

	memset(out, 0, sizeof(*out));
	bind_text(s, 1, key);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		read_conv(s, out);
	if (finish(st, s, rc, "conv_get") < 0)
		return -EIO;
	return rc == SQLITE_ROW ? 0 : -ENOENT;
}

static int sq_conv_each_open(struct store_impl *st, store_conv_fn fn, void *arg)
{
	sqlite3_stmt *s = st->stmt[S_CONV_OPEN];
	int rc, stop = 0;

	while (!stop && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct store_conv c = { 0 };

		read_conv(s, &c);
		stop = fn(&c, arg);
		store_conv_clear(&c);
	}
	return stop ? (sqlite3_reset(s), stop) : finish(st, s, rc, "conv_each");
}

static int purge_step(struct store_impl *st, enum stmt which, int64_t before_s, const char *what)
{
	sqlite3_stmt *s = st->stmt[which];

	sqlite3_bind_int64(s, 1, before_s);
	sqlite3_bind_int(s, 2, STORE_PURGE_BATCH);
	if (finish(st, s, sqlite3_step(s), what) < 0)
		return -EIO;
	return sqlite3_changes(st->db);
}

static int sq_purge_ended(struct store_impl *st, int64_t before_s, int64_t events_before_s)
{
	int n;

	if (write_begin(st) < 0 || purge_step(st, S_PURGE_OUTBOX, before_s, "purge_outbox") < 0)
		return -EIO;
	n = purge_step(st, S_PURGE_CONVS, before_s, "purge_conversations");
	if (n >= 0 && n < STORE_PURGE_BATCH)
		sq_event_expire(st, events_before_s);
	return n;
}


/* ---- dedupe ---- */

static int sq_event_add(struct store_impl *st, const char *event_id)
{
	sqlite3_stmt *s = st->stmt[S_EVENT_ADD];
	int added;

	if (write_begin(st) < 0)
		return -EIO;
	bind_text(s, 1, event_id);
	sqlite3_bind_int64(s, 2, now_s());
	if (finish(st, s, sqlite3_step(s), "event_add") < 0)
		return -EIO;
	added = sqlite3_changes(st->db) > 0;
	if (++st->writes % 1024 == 0)	/* expire old ids now and then, not on every event */
		sq_event_expire(st, now_s() - st->event_ttl_s);
	return added;
}

/* A write statement whose one parameter is V. */
static int write_int64(struct store_impl *st, enum stmt which, int64_t v, const char *what)
{
	sqlite3_stmt *s = st->stmt[which];

	if (write_begin(st) < 0)
		return -EIO;
	sqlite3_bind_int64(s, 1, v);
	return finish(st, s, sqlite3_step(s), what);
}

static int sq_event_expire(struct store_impl *st, int64_t before_s)
{
	return write_int64(st, S_EVENT_EXPIRE, before_s, "event_expire");
}

static void sq_set_event_ttl(struct store_impl *st, int64_t ttl_s)
{
	st->event_ttl_s = ttl_s;
}

static int sq_event_delete(struct store_impl *st, const char *event_id)
{
	sqlite3_stmt *s = st->stmt[S_EVENT_DEL];

	if (write_begin(st) < 0)
		return -EIO;
	bind_text(s, 1, event_id);
	return finish(st, s, sqlite3_step(s), "event_delete");
}

/* ---- outbox ---- */

/* The id for the next outbox row, in the open write transaction. SQLite's AUTOINCREMENT
 * would write its sqlite_sequence table in every transaction that adds a row (a page more
 * in the WAL, two writes); instead ids are reserved OUTBOX_ID_BLOCK at a time in
 * outbox_ids, in the transaction of the first row past the last block, so an id is never
 * handed out twice, even after a crash: none leaves the process before its row is
 * committed, and the reservation with it. */
static int64_t take_outbox_id(struct store_impl *st)
{
	sqlite3_stmt *s = st->stmt[S_IDS_RESERVE];

	if (st->next_id < st->ids_end)
		return st->next_id;
	sqlite3_bind_int64(s, 1, st->next_id + OUTBOX_ID_BLOCK);
	if (finish(st, s, sqlite3_step(s), "outbox_ids") < 0)
		return -EIO;
	st->ids_end = st->next_id + OUTBOX_ID_BLOCK;
	return st->next_id;
}

static int64_t sq_outbox_add_call(struct store_impl *st, const char *key, const char *queue, const char *role,
			      const char *fn, const char *payload, size_t len)
{
	sqlite3_stmt *s = st->stmt[S_OUT_ADD];
	int64_t id;

	if (write_begin(st) < 0 || (id = take_outbox_id(st)) < 0)
		return -EIO;
	bind_text(s, 1, key);
	bind_text(s, 2, queue);
	sqlite3_bind_blob(s, 3, payload, (int)len, SQLITE_TRANSIENT);
	sqlite3_bind_int64(s, 4, clock_wall_ms());
	bind_text(s, 5, role);
	bind_text(s, 6, fn);
	sqlite3_bind_int64(s, 7, id);
	if (finish(st, s, sqlite3_step(s), "outbox_add") < 0)
		return -EIO;
	st->next_id++;
	return id;
}

static int sq_outbox_head(struct store_impl *st, const char *key, const char *queue, struct store_item *out)
{
	sqlite3_stmt *s = st->stmt[S_OUT_HEAD];
	bool short_of_memory = false;
	int rc;

	memset(out, 0, sizeof(*out));
	bind_text(s, 1, key);
	bind_text(s, 2, queue);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		int n = sqlite3_column_bytes(s, 3);
		const void *p = sqlite3_column_blob(s, 3);

		out->id = sqlite3_column_int64(s, 0);
		out->key = column_dup(s, 1);
		out->queue = column_dup(s, 2);
		out->payload = malloc((size_t)n + 1);
		if (out->payload) {
			if (n > 0)
				memcpy(out->payload, p, (size_t)n);
			out->payload[n] = '\0';
		}
		out->payload_len = (size_t)n;
		out->attempts = sqlite3_column_int(s, 4);
		out->next_at_ms = sqlite3_column_int64(s, 5);
		out->created_ms = sqlite3_column_int64(s, 6);
		out->role = column_dup(s, 7);
		out->fn = column_dup(s, 8);
		short_of_memory = !out->key || !out->queue || !out->payload ||
				  (sqlite3_column_type(s, 7) != SQLITE_NULL && !out->role) ||
				  (sqlite3_column_type(s, 8) != SQLITE_NULL && !out->fn);
	}
	if (finish(st, s, rc, "outbox_head") < 0)
		return -EIO;
	if (short_of_memory) {
		store_item_clear(out);
		return -ENOMEM;
	}
	return rc == SQLITE_ROW ? 0 : -ENOENT;
}

static int sq_outbox_done(struct store_impl *st, int64_t id)
{
	return write_int64(st, S_OUT_DONE, id, "outbox_done");
}

static int sq_outbox_count(struct store_impl *st, const char *key, const char *queue)
{
	sqlite3_stmt *s = st->stmt[S_OUT_COUNT];
	int rc, n = 0;

	bind_text(s, 1, key);
	bind_text(s, 2, queue);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		n = sqlite3_column_int(s, 0);
	if (finish(st, s, rc, "outbox_count") < 0)
		return -EIO;
	return n;
}

static int sq_outbox_retry(struct store_impl *st, int64_t id, int attempts, int64_t next_at_ms)
{
	sqlite3_stmt *s = st->stmt[S_OUT_RETRY];

	if (write_begin(st) < 0)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int(s, 2, attempts);
	sqlite3_bind_int64(s, 3, next_at_ms);
	return finish(st, s, sqlite3_step(s), "outbox_retry");
}

static int sq_outbox_each_queue(struct store_impl *st, int (*fn)(const char *key, const char *queue, void *arg), void *arg)
{
	sqlite3_stmt *s = st->stmt[S_OUT_QUEUES];
	int rc, stop = 0;

	while (!stop && (rc = sqlite3_step(s)) == SQLITE_ROW)
		stop = fn((const char *)sqlite3_column_text(s, 0), (const char *)sqlite3_column_text(s, 1), arg);
	return stop ? (sqlite3_reset(s), stop) : finish(st, s, rc, "outbox_queues");
}

const struct store_backend store_sqlite_backend = {
	.close = sq_close,
	.flush = sq_flush,
	.write_pending = sq_write_pending,
	.after_commit = sq_after_commit,
	.begin = sq_begin,
	.before_commit = sq_before_commit,
	.conv_put = sq_conv_put,
	.conv_get = sq_conv_get,
	.conv_each_open = sq_conv_each_open,
	.purge_ended = sq_purge_ended,
	.event_add = sq_event_add,
	.event_delete = sq_event_delete,
	.set_event_ttl = sq_set_event_ttl,
	.outbox_add_call = sq_outbox_add_call,
	.outbox_head = sq_outbox_head,
	.outbox_done = sq_outbox_done,
	.outbox_count = sq_outbox_count,
	.outbox_retry = sq_outbox_retry,
	.outbox_each_queue = sq_outbox_each_queue,
};
