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

/* A blocking connection (10 s to connect unless CONNINFO says), notices silenced; NULL
 * with ERR ("database unreachable: ..."). */
PGconn *store_pg_connect(const char *conninfo, char *err, size_t errlen);
/* Runs SQL, discarding rows: 0, or -EIO with ERR ("state: WHAT: ..."). */
int store_pg_exec(PGconn *conn, const char *sql, const char *what, char *err, size_t errlen);
/* Migrates the schema (a newer one is refused), fills M with every conversation row and
 * outbox item, and sets *NEXT_ID past every id an earlier run handed out (recorded as the
 * new high-water mark). 0, or -EIO with ERR. */
int store_pg_load(struct log *lg, PGconn *conn, struct pgm *m, int64_t *next_id, char *err, size_t errlen);

#endif
