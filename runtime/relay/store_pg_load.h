/* store_pg_load.h - the blocking side of the PostgreSQL state (store_pg_load.c): never on
 * the loop. */
#ifndef HANDOFFD_STORE_PG_LOAD_H
#define HANDOFFD_STORE_PG_LOAD_H

#include "relay/store_pg_mirror.h"

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

struct log;

/* Outbox ids skipped at each open: more than can ever wait unwritten (PG_BACKLOG_MAX), so
 * an id handed out by a run whose high-water mark was lost is never handed out again. */
#define PG_ID_GAP 1000000
/* Outbox ids per block (STORE_PER_KEY): the INCREMENT of handoffd_outbox_block. */
#define PG_ID_BLOCK 1000000

/* A blocking connection (10 s to connect unless CONNINFO says), notices silenced; NULL
 * with ERR ("database unreachable: ..."). */
PGconn *store_pg_connect(const char *conninfo, char *err, size_t errlen);
/* Runs SQL, discarding rows: 0, or -EIO with ERR ("state: WHAT: ..."). */
int store_pg_exec(PGconn *conn, const char *sql, const char *what, char *err, size_t errlen);
/* Migrates the schema (a newer one is refused), fills M with every conversation row and
 * outbox item, and sets *NEXT_ID past every id an earlier run handed out (recorded as the
 * new high-water mark). 0, or -EIO with ERR. */
int store_pg_load(struct log *lg, PGconn *conn, struct pgm *m, int64_t *next_id, char *err, size_t errlen);

/* STORE_PER_KEY: migrates the schema (the cluster's tables too) and takes the first
 * outbox id block, *FIRST_ID its first id; nothing is loaded. 0, or -EIO with ERR. */
int store_pg_prepare(struct log *lg, PGconn *conn, int64_t *first_id, char *err, size_t errlen);
/* A column of a result row: NULL for SQL NULL / 0. */
const char *store_pg_str(const PGresult *r, int row, int col);
int64_t store_pg_int(const PGresult *r, int row, int col);
/* Row ROW of a SELECT of the conversations' columns, in their table order: strings
 * borrowed from R, SEEN malloc'd (the caller frees it). */
void store_pg_conv_of_row(const PGresult *r, int row, struct store_conv *c);

#endif
