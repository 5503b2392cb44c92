/* store_pg_load.c - the blocking side of the PostgreSQL state, used before the loop serves
 * (open) and after it stopped (close), and by `handoffd -t`: connect, migrate the schema
 * in one transaction, load every conversation row and outbox item into the mirror, and
 * pick the first outbox id of this run. store_pg.c is the asynchronous side. */
#include "relay/store_pg_load.h"
#include "relay/cluster.h"

#include "relay/store_backend.h"
#include "relay/store_pg_schema.h"

#include "base/log.h"
#include "net/pg_conn.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PG_OPEN_TIMEOUT_S "10"

static void quiet_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;	/* "relation already exists, skipping" and the like */
}

PGconn *store_pg_connect(const char *conninfo, char *err, size_t errlen)
{
	/* Our timeout first: one in the string overrides it. */
	const char *keys[] = { "connect_timeout", "dbname", NULL };
	const char *values[] = { PG_OPEN_TIMEOUT_S, conninfo, NULL };
	PGconn *conn = PQconnectdbParams(keys, values, 1);

	if (!conn || PQstatus(conn) != CONNECTION_OK) {
		snprintf(err, errlen, "database unreachable: %s", conn ? PQerrorMessage(conn) : "out of memory");
		err[strcspn(err, "\n")] = '\0';
		PQfinish(conn);
		return NULL;
	}
	PQsetNoticeProcessor(conn, quiet_notice, NULL);
	return conn;
}

/* Runs SQL; the result on success (the caller clears it), NULL with ERR. */
static PGresult *exec_sync(PGconn *conn, const char *sql, const char *what, char *err, size_t errlen)
{
	PGresult *r = PQexec(conn, sql);
	ExecStatusType s = PQresultStatus(r);

	if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK)
		return r;
	snprintf(err, errlen, "state: %s: %s", what, PQresultErrorMessage(r));
	err[strcspn(err, "\n")] = '\0';
	PQclear(r);
	return NULL;
}

int store_pg_exec(PGconn *conn, const char *sql, const char *what, char *err, size_t errlen)
{
	PGresult *r = exec_sync(conn, sql, what, err, errlen);

	PQclear(r);
	return r ? 0 : -EIO;
}

int64_t store_pg_int(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

const char *store_pg_str(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

/* Brings the schema to this code's version in one transaction; refuses a newer one
 * (its rows could mean something this code does not know). */
static int migrate(struct log *lg, PGconn *conn, char *err, size_t errlen)
{
	int want = store_pg_schema_version();
	PGresult *r;
	int have;
	char sql[128];

	if (store_pg_exec(conn, "BEGIN", "begin", err, errlen) < 0 ||
	    store_pg_exec(conn, "CREATE TABLE IF NOT EXISTS handoffd_schema (version integer NOT NULL);"
			  "LOCK TABLE handoffd_schema IN EXCLUSIVE MODE", "schema table", err, errlen) < 0 ||
	    !(r = exec_sync(conn, "SELECT coalesce(max(version), 0) FROM handoffd_schema", "schema version", err,
			    errlen)))
		goto fail;
	have = (int)store_pg_int(r, 0, 0);
	PQclear(r);
	if (have > want) {
		snprintf(err, errlen, "state: schema version %d, expected %d (written by a newer handoffd)", have, want);
		goto fail;
	}
	for (int i = have; i < want; i++)
		if (store_pg_exec(conn, store_pg_migrations[i], "migrating the schema", err, errlen) < 0)
			goto fail;
	for (size_t i = 0; i < cluster_schema_count; i++)	/* each may run again */
		if (store_pg_exec(conn, cluster_schema_sql[i], "the cluster's schema", err, errlen) < 0)
			goto fail;
	snprintf(sql, sizeof(sql), "DELETE FROM handoffd_schema; INSERT INTO handoffd_schema VALUES (%d)", want);
	if ((have < want && store_pg_exec(conn, sql, "schema version", err, errlen) < 0) ||
	    store_pg_exec(conn, "COMMIT", "commit", err, errlen) < 0)
		goto fail;
	if (have < want)
		log_info(lg, "store.migrated", "from=%d to=%d", have, want);
	return 0;
fail:
	PQclear(PQexec(conn, "ROLLBACK"));
	return -EIO;
}

/* Direct Line's dedupe set from its bytea. */
static void load_seen(const PGresult *r, int row, int col, struct store_conv *c)
{
	size_t n = 0;
	unsigned char *b;

	if (PQgetisnull(r, row, col))
		return;
	b = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &n);
	n /= sizeof(*c->seen);
	if (b && n && (c->seen = malloc(n * sizeof(*c->seen)))) {
		memcpy(c->seen, b, n * sizeof(*c->seen));
		c->nseen = n;
	}
	PQfreemem(b);
}

void store_pg_conv_of_row(const PGresult *r, int row, struct store_conv *c)
{
	*c = (struct store_conv){
		.key = (char *)store_pg_str(r, row, 0), .state = (char *)store_pg_str(r, row, 1),
		.user_json = (char *)store_pg_str(r, row, 2), .dl_conversation_id = (char *)store_pg_str(r, row, 3),
		.dl_token = (char *)store_pg_str(r, row, 4), .dl_token_expiry = store_pg_int(r, row, 5),
		.watermark = (char *)store_pg_str(r, row, 6), .hub_data = (char *)store_pg_str(r, row, 8),
		.handoff_id = (char *)store_pg_str(r, row, 9), .updated_at = store_pg_int(r, row, 10),
	};
	load_seen(r, row, 7, c);
}

static int load_conversations(struct pgm *m, PGconn *conn, char *err, size_t errlen)
{
	PGresult *r = exec_sync(conn, "SELECT key, state, user_json, dl_conversation_id, dl_token, dl_token_expiry,"
				      " watermark, dl_seen, hub_data, handoff_id, updated_at FROM conversations",
				"loading conversations", err, errlen);
	int rc = 0;

	for (int i = 0; r && rc == 0 && i < PQntuples(r); i++) {
		struct store_conv c;

		store_pg_conv_of_row(r, i, &c);
		rc = pgm_conv_put(m, &c, c.updated_at);
		free(c.seen);
	}
	PQclear(r);
	if (r && rc < 0)
		snprintf(err, errlen, "out of memory loading the state");
	return r && rc == 0 ? 0 : -EIO;
}

static int load_outbox(struct pgm *m, PGconn *conn, char *err, size_t errlen)
{
	PGresult *r = exec_sync(conn, "SELECT id, key, queue, payload, attempts, next_at, created, role, fn"
				      " FROM outbox ORDER BY id", "loading the outbox", err, errlen);
	bool ok = r != NULL;

	for (int i = 0; ok && i < PQntuples(r); i++) {
		size_t len = 0;
		unsigned char *payload = PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 3), &len);
		struct pgm_item it = { .id = store_pg_int(r, i, 0), .payload = (char *)payload, .len = len,
				       .attempts = (int)store_pg_int(r, i, 4), .next_at_ms = store_pg_int(r, i, 5),
				       .created_ms = store_pg_int(r, i, 6), .role = (char *)store_pg_str(r, i, 7),
				       .fn = (char *)store_pg_str(r, i, 8) };

		/* The relay writes a bot message's attempt and then POSTs it; SQLite commits the
		 * attempt first (same turn), here the commit comes a round trip later, so a kill may
		 * have lost it: every queued bot message counts as maybe sent, and Direct Line
		 * looks for it before posting it again. */
		if (it.attempts == 0 && strcmp(store_pg_str(r, i, 2), "to_bot") == 0)
			it.attempts = 1;
		ok = payload && pgm_item_add(m, store_pg_str(r, i, 1), store_pg_str(r, i, 2), &it);
		PQfreemem(payload);
		if (!ok)
			snprintf(err, errlen, "out of memory loading the state");
	}
	PQclear(r);
	return ok ? 0 : -EIO;
}

/* The first outbox id of this run: past every id an earlier run may have handed out. */
static int start_ids(int64_t *next_id, PGconn *conn, char *err, size_t errlen)
{
	PGresult *r = exec_sync(conn, "SELECT greatest((SELECT last_value FROM handoffd_outbox_id),"
				      " (SELECT coalesce(max(id), 0) FROM outbox))", "outbox ids", err, errlen);
	char sql[96];

	if (!r)
		return -EIO;
	*next_id = store_pg_int(r, 0, 0) + PG_ID_GAP;
	PQclear(r);
	snprintf(sql, sizeof(sql), "SELECT setval('handoffd_outbox_id', %" PRId64 ")", *next_id);
	return store_pg_exec(conn, sql, "outbox ids", err, errlen);
}

int store_pg_load(struct log *lg, PGconn *conn, struct pgm *m, int64_t *next_id, char *err, size_t errlen)
{
	if (migrate(lg, conn, err, errlen) < 0 || load_conversations(m, conn, err, errlen) < 0 ||
	    load_outbox(m, conn, err, errlen) < 0 || start_ids(next_id, conn, err, errlen) < 0)
		return -EIO;
	return 0;
}

int store_pg_prepare(struct log *lg, PGconn *conn, int64_t *first_id, char *err, size_t errlen)
{
	PGresult *r;

	if (migrate(lg, conn, err, errlen) < 0 ||
	    !(r = exec_sync(conn, "SELECT nextval('handoffd_outbox_block')", "outbox ids", err, errlen)))
		return -EIO;
	*first_id = store_pg_int(r, 0, 0);
	PQclear(r);
	return 0;
}

/* {===== handoffd -t */

int store_pg_check(const char *conninfo, char *err, size_t errlen)
{
	struct pg_conn_opts opts = { .conninfo = conninfo };
	char out[32], why[512];
	int rc = pg_conn_check_sync(&opts, "SELECT to_regclass('handoffd_schema') IS NOT NULL", out, sizeof(out),
				    why, sizeof(why));
	long have;

	if (rc == 0 && strcmp(out, "t") == 0)
		rc = pg_conn_check_sync(&opts, "SELECT coalesce(max(version), 0) FROM handoffd_schema", out,
					sizeof(out), why, sizeof(why));
	else if (rc == 0)
		return 0;	/* a new database: the schema is made at start */
	if (rc == -ECONNREFUSED) {
		snprintf(err, errlen, "database unreachable: %s", why);
		return -1;
	}
	if (rc < 0) {
		snprintf(err, errlen, "database check failed: %s", why);
		return -1;
	}
	have = strtol(out, NULL, 10);
	if (have > store_pg_schema_version()) {
		snprintf(err, errlen, "database schema version %ld, expected %d (written by a newer handoffd)", have,
			 store_pg_schema_version());
		return -1;
	}
	return 0;
}

/* }===== */
