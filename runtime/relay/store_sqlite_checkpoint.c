/* store_sqlite_checkpoint.c - WAL checkpoints off the loop (store_sqlite_checkpoint.h).
 * The thread owns its connection; it shares nothing with the loop but the stop flag and
 * two counters, and logs nothing (the log belongs to the loop's thread). */
#include "relay/store_sqlite_checkpoint.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

struct sq_checkpointer {
	sqlite3 *db;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop;			/* under LOCK */
	atomic_uint_fast64_t runs, failures;
};

static void checkpoint(struct sq_checkpointer *c)
{
	int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);

	/* BUSY: another checkpoint (the writer's last close) is running; the next turn does it. */
	if (rc == SQLITE_OK || rc == SQLITE_BUSY)
		atomic_fetch_add(&c->runs, 1);
	else
		atomic_fetch_add(&c->failures, 1);
}

static void deadline_after(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void *run(void *arg)
{
	struct sq_checkpointer *c = arg;
	struct timespec ts;
	bool stop;

	pthread_mutex_lock(&c->lock);
	while (!c->stop) {
		deadline_after(&ts, SQ_CHECKPOINT_EVERY_MS);
		while (!c->stop && pthread_cond_timedwait(&c->wake, &c->lock, &ts) == 0)
			;
		stop = c->stop;
		pthread_mutex_unlock(&c->lock);
		if (!stop)
			checkpoint(c);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	checkpoint(c);		/* what the last turns wrote */
	return NULL;
}

static int init_sync(struct sq_checkpointer *c)
{
	pthread_condattr_t attr;
	int rc = pthread_condattr_init(&attr);

	if (rc == 0 && (rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)) == 0 &&
	    (rc = pthread_cond_init(&c->wake, &attr)) == 0 && (rc = pthread_mutex_init(&c->lock, NULL)) != 0)
		pthread_cond_destroy(&c->wake);
	pthread_condattr_destroy(&attr);
	return rc;
}

struct sq_checkpointer *sq_checkpointer_start(const char *path)
{
	struct sq_checkpointer *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	/* A connection learns the file is in WAL mode by reading it; until then its
	 * checkpoints succeed without doing anything. */
	if (sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK ||
	    sqlite3_exec(c->db, "PRAGMA schema_version", NULL, NULL, NULL) != SQLITE_OK) {
		sqlite3_close(c->db);
		free(c);
		return NULL;
	}
	if (init_sync(c) != 0) {
		sqlite3_close(c->db);
		free(c);
		return NULL;
	}
	if (pthread_create(&c->thread, NULL, run, c) != 0) {
		pthread_cond_destroy(&c->wake);
		pthread_mutex_destroy(&c->lock);
		sqlite3_close(c->db);
		free(c);
		return NULL;
	}
	return c;
}

void sq_checkpointer_stop(struct sq_checkpointer *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_cond_signal(&c->wake);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->thread, NULL);
	pthread_cond_destroy(&c->wake);
	pthread_mutex_destroy(&c->lock);
	sqlite3_close(c->db);
	free(c);
}

uint64_t sq_checkpointer_runs(const struct sq_checkpointer *c)
{
	return c ? atomic_load(&c->runs) : 0;
}

uint64_t sq_checkpointer_failures(const struct sq_checkpointer *c)
{
	return c ? atomic_load(&c->failures) : 0;
}
