/* cluster.h - membership of several handoffd instances sharing one PostgreSQL: who owns
 * which conversation, under a fenced lease, and wake-ups between instances.
 *
 * The contract, in one place:
 * - Each instance is a `node` (cluster.node, default "hostname:pid") with an `epoch` taken
 *   from a sequence at every (re)registration. Its row in `nodes` carries a heartbeat,
 *   renewed every cluster.heartbeat seconds by the database's own clock.
 * - Fencing: once registered, every batch of the shared pg_conn starts with
 *   SELECT hd_fence(node, epoch) (pg_conn's prologue), which takes FOR KEY SHARE on the
 *   node's row and raises SQLSTATE HD001 when the row is gone or carries another epoch.
 *   So a write of this instance commits only while its row is the one it registered, and
 *   no one removes that row while such a write is in flight.
 * - Lease: an instance whose heartbeat is older than cluster.lease (database time) is
 *   dead; another instance removes its row (never while one of its batches holds the
 *   lock) and the dead node's conversations (`owners` rows whose node and epoch no longer
 *   match a row of `nodes`) are orphans. Live instances claim orphans so that every live
 *   instance ends up with an even share of all owned conversations; claimed keys go to
 *   on_claimed. Locally, cluster_lease_valid() is true only while the last committed
 *   heartbeat was queued less than lease - margin ago (monotonic): the relay sends to no
 *   bot and no hub without it, so an instance resumed after a stall does nothing before
 *   it knows whether it was fenced.
 * - Lost: a batch refused with HD001 means this instance was taken over. on_lost runs
 *   first (before the refused statements' callbacks see -EPERM): the owner drops every
 *   conversation without further side effects. The module then registers again with a new
 *   epoch (on_registered again). Statements queued before the re-registration still go
 *   with the old epoch and fail: none of them can commit on behalf of the new epoch.
 * - Wake-ups: cluster_notify(key) sends NOTIFY in the current batch, delivered only when
 *   it commits; every instance hears it (on_woken(key)) and the one that owns the key
 *   acts. on_woken(NULL) means: listening started anew on a new database connection,
 *   wake-ups sent meanwhile were missed, check every conversation.
 * - Drain: cluster_drain_begin() marks the node draining (it claims nothing more, peers
 *   count it out of their shares) while it finishes in-flight work; cluster_release_all()
 *   then removes its row and tells the others, who claim its conversations at once (no
 *   lease to wait for).
 *
 * Order at start-up: the schema (cluster_schema_sql, run by the store's migrations) must
 * exist before cluster_new; nothing that must be fenced should be queued on the pg_conn
 * before on_registered (until then batches carry no prologue).
 *
 * Callbacks run from the loop, never inside a call of this API; cluster_free() is not
 * called from inside them. The pg_conn is borrowed: it must outlive the cluster; the
 * cluster sets its prologue, its notification hook and LISTENs on two channels. */
#ifndef HANDOFFD_CLUSTER_H
#define HANDOFFD_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLUSTER_NODE_MAX 128		/* bytes of a node name */
#define CLUSTER_KEY_MAX 512		/* bytes of a conversation key */
#define CLUSTER_CLAIM_ROUND_MAX 500	/* orphans claimed per round (one batch) */
#define CLUSTER_SWEEP_EVERY 5		/* heartbeats between two looks for orphans */
#define CLUSTER_MARGIN_MAX_MS 1000	/* safety margin of the local lease check */
#define CLUSTER_CHANNEL "handoffd_wake"		/* NOTIFY: conversation keys */
#define CLUSTER_RELEASE_CHANNEL "handoffd_release"	/* NOTIFY: nodes that went away */

struct loop;
struct log;
struct pg_conn;
struct cluster;

/* The schema (the tables nodes and owners, the sequence handoffd_epoch, the function
 * hd_fence), as statements to run in this order; each may run again (IF NOT EXISTS, OR
 * REPLACE). */
extern const char *const cluster_schema_sql[];
extern const size_t cluster_schema_count;
/* The claim of a key (parameters: key, node, epoch): it becomes the node's unless a live
 * node owns it; RETURNING node when it did. cluster_claim's, and the store's with an
 * inbound row. */
extern const char cluster_sql_claim[];

struct cluster_opts {
	const char *node;	/* NULL or "": hostname:pid; unique among running instances */
	double heartbeat_s;	/* 0: 2 */
	double lease_s;		/* 0: 10; at least twice the heartbeat */
};

struct cluster_callbacks {
	void *arg;
	/* Registered with EPOCH (at start, and again after every lost). */
	void (*registered)(void *arg, const char *node, int64_t epoch);
	/* Taken over: drop every conversation, no side effects (no send, no write). */
	void (*lost)(void *arg, int64_t old_epoch);
	/* Orphaned conversations now owned here: load and resume them. KEYS borrowed. */
	void (*claimed)(void *arg, const char *const *keys, size_t n);
	/* A wake-up for KEY (the owner acts), or NULL (see above). */
	void (*woken)(void *arg, const char *key);
};

/* The outcome of cluster_claim: ERR 0 and MINE (now owned here, or already), or ERR 0,
 * !MINE and OWNER (another live node's name, borrowed), or ERR < 0 (pg_conn's errors,
 * -ENOTCONN when not registered, -ESHUTDOWN after release). */
typedef void (*cluster_claim_fn)(void *arg, int err, bool mine, const char *owner);
/* ERR 0: done and committed. */
typedef void (*cluster_done_fn)(void *arg, int err);

struct cluster_stats {
	char node[CLUSTER_NODE_MAX];
	int64_t epoch;			/* 0 while not registered */
	bool registered, lease_valid;
	uint64_t owned;			/* conversations owned here, as this module counts them */
	uint64_t peers;			/* live nodes, this one included, at the last heartbeat */
	uint64_t claims;		/* keys won by cluster_claim */
	uint64_t takeovers;		/* orphaned keys claimed */
	uint64_t nodes_expired;		/* dead nodes' rows this instance removed */
	uint64_t fenced;		/* batches refused by the fence (HD001) */
	uint64_t lost;			/* times this instance was taken over */
	uint64_t round_trips;		/* pg_conn's, every statement of the connection */
	uint64_t commit_us_sum, commit_us_count;
};

/* Starts registering at once (from the loop). NULL on bad options or out of memory. */
struct cluster *cluster_new(struct loop *lp, struct log *lg, struct pg_conn *pc,
			    const struct cluster_opts *opts, const struct cluster_callbacks *cb);
/* Stops heartbeats and takes the prologue and notification hook off the pg_conn; queued
 * operations' callbacks are not called afterwards. Does not release (cluster_release_all
 * first for a graceful exit). */
void cluster_free(struct cluster *c);

bool cluster_lease_valid(const struct cluster *c);

/* Claims KEY if nobody (alive) owns it. CB runs once (not when it returns an error).
 * Returns 0 or a negative errno. */
int cluster_claim(struct cluster *c, const char *key, cluster_claim_fn cb, void *arg);
/* Gives KEY up (a conversation that ended). CB may be NULL. */
int cluster_release(struct cluster *c, const char *key, cluster_done_fn cb, void *arg);
/* Queues a wake-up for KEY into the current batch: sent if that batch commits. */
int cluster_notify(struct cluster *c, const char *key);
/* Starts a graceful drain: claims (cluster_claim, orphans) stop, -ESHUTDOWN; releases,
 * writes and heartbeats go on. Returns 0 (also when already draining) or an error. */
int cluster_drain_begin(struct cluster *c);
/* Gives up every conversation and leaves the cluster: the node row goes, its owners rows
 * become orphans that the others claim on the notification sent in the same batch. Then
 * the module is idle (no heartbeat; every later batch of the pg_conn is fenced). CB
 * (may be NULL) hears 0, or -EPERM when the node had been taken over already (out
 * either way), or another error (still in, draining: call again). */
int cluster_release_all(struct cluster *c, cluster_done_fn cb, void *arg);

void cluster_stats(const struct cluster *c, struct cluster_stats *out);

/* {===== the pure parts, apart for tests */

/* How many of ORPHANS one live node claims so that each of LIVE nodes ends up with at
 * most ceil(TOTAL / LIVE) of all TOTAL owned keys, given that it owns MINE; at most CAP. */
uint64_t cluster_fair_share(uint64_t orphans, uint64_t total, uint64_t live, uint64_t mine,
			    uint64_t cap);

/* The local lease check: renewed with the monotonic time a heartbeat that committed was
 * queued; valid while now - that < lease - margin (margin: a quarter of the lease, at
 * most CLUSTER_MARGIN_MAX_MS). */
struct cluster_lease {
	uint64_t lease_ms;
	uint64_t renewed_at_ms;
	bool held;
};

void cluster_lease_init(struct cluster_lease *l, uint64_t lease_ms);
void cluster_lease_renew(struct cluster_lease *l, uint64_t queued_at_ms);
void cluster_lease_drop(struct cluster_lease *l);
bool cluster_lease_valid_at(const struct cluster_lease *l, uint64_t now_ms);

/* }===== */

#endif
