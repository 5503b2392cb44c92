/* store_sqlite_checkpoint.h - the SQLite state's WAL checkpoints, on a thread of their own.
 *
 * In WAL mode with synchronous=NORMAL a commit only appends to the WAL; the fsyncs come
 * with the checkpoints that copy the WAL back into the database file. SQLite runs those
 * inside the commit that crosses wal_autocheckpoint, that is on the loop, where an fsync
 * of a busy disk stalls every conversation for milliseconds (4 to 15 ms measured under
 * load, more on slow disks). This thread checkpoints instead, on its own connection,
 * PASSIVE (it never waits for the writer and never blocks it), twice a second. */
#ifndef HANDOFFD_STORE_SQLITE_CHECKPOINT_H
#define HANDOFFD_STORE_SQLITE_CHECKPOINT_H

#include <stdint.h>

#define SQ_CHECKPOINT_EVERY_MS 500

struct sq_checkpointer;

/* Opens PATH a second time and starts the thread. NULL when either fails: the caller
 * keeps SQLite's own checkpoints (wal_autocheckpoint) then. */
struct sq_checkpointer *sq_checkpointer_start(const char *path);
/* Stops and joins the thread (one last checkpoint first) and closes its connection. */
void sq_checkpointer_stop(struct sq_checkpointer *c);
/* Checkpoints run and failed so far (read from any thread). */
uint64_t sq_checkpointer_runs(const struct sq_checkpointer *c);
uint64_t sq_checkpointer_failures(const struct sq_checkpointer *c);

#endif
