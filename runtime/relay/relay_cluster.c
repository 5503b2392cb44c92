/* relay_cluster.c - the relay as one member of several instances on one PostgreSQL:
 * membership (cluster.h) on the store's own connection, so every batch of the store is
 * fenced; which conversations this instance holds; the inbound table in between.
 *
 * Every hub event goes through the inbound table, whichever instance received it: the
 * entry points (relay.c) store it with a claim of its key and a wake-up of its owner, all
 * in one batch, and the 202 waits for that commit. The owner, woken, reads the key's rows
 * in the database's order (seq) and applies each through the same relay function,
 * deleting it in the same batch as what it caused: nothing applied twice, nothing lost,
 * and the order per conversation is the database's, across instances. (The design left
 * an owner's own events out of the table; that lets an event received here overtake one
 * forwarded by a peer a moment earlier, whose wake-up is still on its way.)
 *
 * A key this instance comes to own (a claim won, orphans taken over) is loaded
 * (store_load), adopted (resumed as after a restart: Direct Line from the stored
 * watermark, what is queued delivered) and its inbound rows replayed. Nothing is sent to
 * a bot or a hub, and no stream opened, while the lease is not valid (relay_kick and
 * open_dl ask relay_cluster_may_act); the tick lets the held-back work go once it is.
 * Taken over (lost): every conversation is dropped without a write, in-flight calls find
 * nothing when they end, the store forgets everything.
 *
 * Keys are tracked here by what this instance knows of them:
 *   FORWARDED  an event was stored here; on its wake-up: do we own the key?
 *   CHECKING   cluster_claim asks
 *   LOADING    ours: store_load under way
 *   HELD       ours: adopted; wake-ups replay its rows */
#include "relay/relay_internal.h"

#include "base/clock.h"
#include "base/config.h"
#include "base/hd_runtime.h"
#include "base/log.h"
#include "base/metrics.h"
#include "net/loop.h"
#include "relay/cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 250		/* retries, the lease gate, the leave */
#define KEY_BUCKETS 4096
#define LEAVE_RELEASE_MS 5000	/* after the drain's timeout, to commit and release */
#define SWEEP_TICKS 40		/* ticks between two looks for inbound rows nobody owns */

enum ck_state { CK_FORWARDED, CK_CHECKING, CK_LOADING, CK_HELD };

struct ck {
	struct ck *next;
	enum ck_state state;
	bool reading;		/* an inbound read is under way */
	bool again;		/* woken meanwhile: look again */
	bool retry;		/* failed: the tick tries again */
	char key[];
};

enum leave_phase { LEAVE_NONE, LEAVE_IDLE, LEAVE_COMMIT, LEAVE_RELEASE, LEAVE_DONE };

struct relay_cluster {
	struct relay *r;
	struct cluster *c;
	struct loop_timer *tick;
	struct ck *keys[KEY_BUCKETS];
	size_t nkeys;
	uint64_t generation;	/* +1 at each lost */
	uint64_t claims;	/* keys found ours after an event stored here claimed them */
	bool applying;		/* replaying: the entry points act, not forward */
	bool sweeping;		/* a look for unowned inbound rows is under way */
	unsigned ticks;
	bool held_back;
	enum leave_phase leave;
	uint64_t leave_deadline_ms;
	void (*leave_done)(void *arg);
	void *leave_arg;
};

/* What an asynchronous step remembers: the relay (outlives every callback of the
 * store and the cluster), the generation and the key. */
struct kref {
	struct relay *r;
	uint64_t generation;
	char key[];
};

/* {===== keys */

static uint64_t key_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

static struct ck **ck_slot(struct relay_cluster *cl, const char *key)
{
	struct ck **p = &cl->keys[key_hash(key) % KEY_BUCKETS];

	while (*p && strcmp((*p)->key, key) != 0)
		p = &(*p)->next;
	return p;
}

static struct ck *ck_find(struct relay_cluster *cl, const char *key)
{
	return *ck_slot(cl, key);
}

static struct ck *ck_add(struct relay_cluster *cl, const char *key, enum ck_state state)
{
	struct ck **p = ck_slot(cl, key);
	size_t len = strlen(key);

	if (*p)
		return *p;
	if (!(*p = calloc(1, sizeof(**p) + len + 1)))
		return NULL;
	memcpy((*p)->key, key, len + 1);
	(*p)->state = state;
	cl->nkeys++;
	return *p;
}

static void ck_remove(struct relay_cluster *cl, struct ck *ck)
{
	struct ck **p = ck_slot(cl, ck->key);

	if (*p == ck) {
		*p = ck->next;
		cl->nkeys--;
		free(ck);
	}
}

static void ck_clear(struct relay_cluster *cl)
{
	for (size_t i = 0; i < KEY_BUCKETS; i++) {
		while (cl->keys[i]) {
			struct ck *ck = cl->keys[i];

			cl->keys[i] = ck->next;
			free(ck);
		}
	}
	cl->nkeys = 0;
}

static struct kref *kref_new(struct relay_cluster *cl, const char *key)
{
	size_t len = strlen(key);
	struct kref *k = malloc(sizeof(*k) + len + 1);

	if (k) {
		k->r = cl->r;
		k->generation = cl->generation;
		memcpy(k->key, key, len + 1);
	}
	return k;
}

/* The key K's step is about, if it still concerns this generation; K is freed by the
 * caller. */
static struct ck *kref_key(const struct kref *k, struct relay_cluster **out)
{
	struct relay_cluster *cl = k->r->cluster;

	*out = cl;
	return cl && cl->generation == k->generation ? ck_find(cl, k->key) : NULL;
}

/* }===== */

/* {===== applying the inbound rows */

static int apply(struct relay_cluster *cl, const struct store_inbound *in)
{
	struct relay *r = cl->r;
	bool needs_payload = strcmp(in->op, "customer") == 0 || strcmp(in->op, "to_bot") == 0 ||
			     strcmp(in->op, "agent") == 0;
	int rc = -EINVAL;

	if (needs_payload && !in->payload)
		return -EINVAL;
	cl->applying = true;
	if (strcmp(in->op, "customer") == 0)
		rc = relay_customer(r, in->id, in->arg, in->payload, in->len);
	else if (strcmp(in->op, "to_bot") == 0)
		rc = relay_to_bot(r, in->id, in->payload, in->len);
	else if (strcmp(in->op, "agent") == 0)
		rc = relay_agent(r, in->id, in->payload, in->len);
	else if (strcmp(in->op, "handoff_event") == 0 && in->arg)
		rc = relay_handoff_event(r, in->id, in->arg, in->flag);
	else if (strcmp(in->op, "end") == 0)
		rc = relay_end(r, in->id);
	else if (strcmp(in->op, "set_data") == 0 && in->arg)
		rc = relay_set_data(r, in->id, in->arg);
	cl->applying = false;
	return rc == 1 ? 0 : rc;
}

/* Failures that pass: the row stays and is applied later, in its turn. */
static bool for_later(int rc)
{
	return rc == -EAGAIN || rc == -ENOBUFS || rc == -ENOSPC || rc == -EIO || rc == -ENOMEM;
}

static void replay(struct relay_cluster *cl, struct ck *ck);

static void on_rows(void *arg, int err, const struct store_inbound *rows, size_t n)
{
	struct kref *k = arg;
	struct relay_cluster *cl;
	struct ck *ck = kref_key(k, &cl);

	if (!ck || ck->state != CK_HELD) {
		free(k);
		return;
	}
	ck->reading = false;
	if (err) {
		ck->retry = true;
		free(k);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		int rc = apply(cl, &rows[i]);

		if (for_later(rc)) {
			ck->retry = true;
			break;
		}
		if (rc < 0)
			log_warn(cl->r->rt->log, "cluster.inbound_refused", "conv=%s op=%s seq=%" PRId64 " error=\"%s\"",
				 k->key, rows[i].op, rows[i].seq, strerror(-rc));
		store_inbound_done(cl->r->store, rows[i].seq);
	}
	if (!ck->retry && (n == STORE_INBOUND_READ_MAX || ck->again))
		replay(cl, ck);
	free(k);
}

/* Reads KEY's inbound rows (once more after the read under way, if one is). */
static void replay(struct relay_cluster *cl, struct ck *ck)
{
	struct kref *k;

	if (ck->reading) {
		ck->again = true;
		return;
	}
	if (cl->leave != LEAVE_NONE)
		return;	/* the next owner replays what is left */
	ck->again = ck->retry = false;
	if (!(k = kref_new(cl, ck->key)) || store_inbound_read(cl->r->store, ck->key, on_rows, k) < 0) {
		free(k);
		ck->retry = true;
		return;
	}
	ck->reading = true;
}

/* }===== */

/* {===== coming to own a key */

static void on_loaded(void *arg, int err)
{
	struct kref *k = arg;
	struct relay_cluster *cl;
	struct ck *ck = kref_key(k, &cl);

	if (ck && ck->state == CK_LOADING) {
		ck->reading = false;
		if (err) {
			log_warn(cl->r->rt->log, "cluster.load_failed", "conv=%s error=\"%s\"", k->key, strerror(-err));
			ck->retry = true;
		} else {
			ck->state = CK_HELD;
			relay_adopt(cl->r, k->key);
			replay(cl, ck);
		}
	}
	free(k);
}

static void load(struct relay_cluster *cl, struct ck *ck)
{
	struct kref *k;

	ck->state = CK_LOADING;
	ck->again = ck->retry = ck->reading = false;
	if (convstore_get(cl->r->convs, ck->key)) {	/* in memory already */
		ck->state = CK_HELD;
		replay(cl, ck);
		return;
	}
	if (!(k = kref_new(cl, ck->key)) || store_load(cl->r->store, ck->key, on_loaded, k) < 0) {
		free(k);
		ck->retry = true;
		return;
	}
	ck->reading = true;	/* LOADING: the load is under way */
}

static void on_checked(void *arg, int err, bool mine, const char *owner)
{
	struct kref *k = arg;
	struct relay_cluster *cl;
	struct ck *ck = kref_key(k, &cl);

	(void)owner;
	if (ck && ck->state == CK_CHECKING) {
		if (err) {
			ck->state = CK_FORWARDED;
			ck->retry = true;
		} else if (mine) {
			cl->claims++;
			load(cl, ck);
		} else {
			ck_remove(cl, ck);	/* its owner was woken too */
		}
	}
	free(k);
}

/* An event stored here was committed: is its key ours (claimed with it, or before)? */
static void check(struct relay_cluster *cl, struct ck *ck)
{
	struct kref *k;

	ck->retry = false;
	if (cl->leave != LEAVE_NONE) {
		ck_remove(cl, ck);	/* leaving: whoever owns it next replays it */
		return;
	}
	if (!(k = kref_new(cl, ck->key)) || cluster_claim(cl->c, ck->key, on_checked, k) < 0) {
		free(k);
		ck->retry = true;
		return;
	}
	ck->state = CK_CHECKING;
	ck->again = false;
}

static void wake(struct relay_cluster *cl, struct ck *ck)
{
	switch (ck->state) {
	case CK_FORWARDED:
		check(cl, ck);
		break;
	case CK_CHECKING:
	case CK_LOADING:
		ck->again = true;	/* the load reads the rows anyway */
		break;
	case CK_HELD:
		replay(cl, ck);
		break;
	}
}

/* Inbound rows whose key nobody owns: stored before their instance registered, or by an
 * instance that died before it claimed them. Claimed here like an event stored here. */
static void on_unowned(void *arg, int err, const char *const *keys, size_t n)
{
	struct relay *r = arg;
	struct relay_cluster *cl = r->cluster;

	if (!cl)
		return;
	cl->sweeping = false;
	for (size_t i = 0; !err && i < n; i++) {
		struct ck *ck = ck_add(cl, keys[i], CK_FORWARDED);

		if (ck && ck->state == CK_FORWARDED)
			check(cl, ck);
	}
}

static void sweep(struct relay_cluster *cl)
{
	if (!cl->sweeping && cl->leave == LEAVE_NONE && store_inbound_unowned(cl->r->store, on_unowned, cl->r) == 0)
		cl->sweeping = true;
}

/* }===== */

/* {===== the cluster's callbacks */

static void on_registered(void *arg, const char *node, int64_t epoch)
{
	struct relay_cluster *cl = arg;

	if (store_set_owner(cl->r->store, node, epoch) < 0)
		log_error(cl->r->rt->log, "cluster.owner_refused", "node=%s", node);
	sweep(cl);
}

static void on_lost(void *arg, int64_t old_epoch)
{
	struct relay_cluster *cl = arg;
	size_t held = convstore_count(cl->r->convs);

	cl->generation++;
	if (relay_drop_all(cl->r) < 0)
		log_error(cl->r->rt->log, "cluster.drop_failed", "reason=\"out of memory\"");
	store_forget_all(cl->r->store);
	ck_clear(cl);
	log_warn(cl->r->rt->log, "cluster.dropped", "epoch=%" PRId64 " conversations=%zu", old_epoch, held);
}

static void on_claimed(void *arg, const char *const *keys, size_t n)
{
	struct relay_cluster *cl = arg;

	for (size_t i = 0; i < n; i++) {
		struct ck *ck = ck_add(cl, keys[i], CK_LOADING);

		if (!ck)
			log_error(cl->r->rt->log, "cluster.claim_lost", "conv=%s reason=\"out of memory\"", keys[i]);
		else if (ck->state != CK_HELD && !(ck->state == CK_LOADING && ck->reading))
			load(cl, ck);
	}
}

static void on_woken(void *arg, const char *key)
{
	struct relay_cluster *cl = arg;
	struct ck *ck;

	if (key) {
		if ((ck = ck_find(cl, key)))
			wake(cl, ck);
		return;
	}
	for (size_t i = 0; i < KEY_BUCKETS; i++) {
		for (struct ck *c = cl->keys[i], *next; c; c = next) {
			next = c->next;	/* check may remove C */
			wake(cl, c);
		}
	}
}

/* }===== */

/* {===== the tick: retries, the lease gate, the leave */

static void leave_finish(struct relay_cluster *cl)
{
	cl->leave = LEAVE_DONE;
	if (cl->leave_done)
		cl->leave_done(cl->leave_arg);
}

static void on_released(void *arg, int err)
{
	struct relay_cluster *cl = arg;

	if (err && err != -EPERM && clock_mono_ms() < cl->leave_deadline_ms + LEAVE_RELEASE_MS) {
		cl->leave = LEAVE_COMMIT;	/* try again at the next tick */
		return;
	}
	log_info(cl->r->rt->log, "cluster.left", "released=%s", err ? "no" : "yes");
	leave_finish(cl);
}

/* ARG is the relay, not the cluster part: a second wait queued by a later tick may still
 * be pending when relay_free frees that part, and the store's close runs it after. */
static void on_left_committed(void *arg)
{
	struct relay_cluster *cl = ((struct relay *)arg)->cluster;
	int rc;

	if (!cl || cl->leave != LEAVE_COMMIT)
		return;
	cl->leave = LEAVE_RELEASE;
	rc = cluster_release_all(cl->c, on_released, cl);
	if (rc < 0)
		on_released(cl, rc);
}

static void count_busy(struct conversation *c, void *arg)
{
	size_t *n = arg;

	for (int q = 0; q < QUEUE_COUNT; q++)
		*n += c->queues[q].busy;
}

static void leave_step(struct relay_cluster *cl)
{
	size_t busy = 0;

	if (cl->leave == LEAVE_IDLE) {
		convstore_each(cl->r->convs, count_busy, &busy);
		if (busy && clock_mono_ms() < cl->leave_deadline_ms)
			return;
		if (busy)
			log_warn(cl->r->rt->log, "cluster.leave_deadline", "busy=%zu", busy);
		/* What the bot says after the last commit would be taken in and never written:
		 * the streams close first, and the next owner reads it from the stored watermark. */
		relay_close_streams(cl->r);
		cl->leave = LEAVE_COMMIT;
	}
	if (cl->leave == LEAVE_COMMIT) {
		store_flush(cl->r->store);
		if (store_after_commit(cl->r->store, on_left_committed, cl->r) < 0)
			on_released(cl, -ENOMEM);
	} else if (cl->leave == LEAVE_RELEASE && clock_mono_ms() > cl->leave_deadline_ms + LEAVE_RELEASE_MS) {
		on_released(cl, -ETIMEDOUT);
	}
}

static void on_tick(void *arg)
{
	struct relay_cluster *cl = arg;

	if (cl->leave != LEAVE_NONE) {
		if (cl->leave != LEAVE_DONE)
			leave_step(cl);
		return;
	}
	if (++cl->ticks % SWEEP_TICKS == 0)
		sweep(cl);
	if (cl->held_back && relay_cluster_may_act(cl->r)) {
		cl->held_back = false;
		relay_act_again(cl->r);
	}
	for (size_t i = 0; i < KEY_BUCKETS; i++) {
		for (struct ck *ck = cl->keys[i], *next; ck; ck = next) {
			next = ck->next;
			if (!ck->retry)
				continue;
			if (ck->state == CK_FORWARDED)
				check(cl, ck);
			else if (ck->state == CK_LOADING)
				load(cl, ck);
			else if (ck->state == CK_HELD)
				replay(cl, ck);
		}
	}
}

/* }===== */

/* {===== relay_internal.h and relay.h */

void relay_set_origin(struct relay *r, const char *origin)
{
	r->origin = origin;
}

bool relay_cluster_forwards(const struct relay *r)
{
	return r->cluster && !r->cluster->applying;
}

int relay_cluster_forward(struct relay *r, const char *op, const char *id, const char *arg, bool flag,
			  const char *payload, size_t len)
{
	char key[CLUSTER_KEY_MAX];
	struct store_inbound in = { .key = key, .op = (char *)op, .id = (char *)id, .arg = (char *)arg,
				    .flag = flag, .payload = (char *)payload, .len = len, .origin = (char *)r->origin };
	int n = snprintf(key, sizeof(key), "%s:%s", r->front, id);

	if (!id[0] || n < 0 || (size_t)n >= sizeof(key))
		return -EINVAL;
	if (payload && (len < 2 || payload[0] != '{'))
		return -EINVAL;
	if (strcmp(op, "set_data") == 0 && (!arg || arg[0] != '{'))
		return -EINVAL;
	if (store_inbound_add(r->store, &in) < 0)
		return -EIO;
	if (!ck_add(r->cluster, key, CK_FORWARDED))
		log_warn(r->rt->log, "cluster.forward_untracked", "conv=%s reason=\"out of memory\"", key);
	return 0;
}

struct fetch_req {
	struct relay *r;
	void (*fn)(void *arg, int err, const struct relay_conv_view *v);
	void *arg;
};

static void on_conv_fetched(void *arg, int err, const struct store_conv *sc)
{
	struct fetch_req *f = arg;
	size_t skip = strlen(f->r->front) + 1;
	struct relay_conv_view v;

	if (err || !sc->key || strlen(sc->key) < skip || strcmp(sc->state, "closed") == 0) {
		f->fn(f->arg, err ? err : -ENOENT, NULL);
	} else {
		v = (struct relay_conv_view){ .key = sc->key, .id = sc->key + skip, .state = sc->state,
					      .user_json = sc->user_json, .data_json = sc->hub_data,
					      .handoff_id = sc->handoff_id, .dl_conversation_id = sc->dl_conversation_id };
		f->fn(f->arg, 0, &v);
	}
	free(f);
}

int relay_conversation_fetch(struct relay *r, const char *id,
			     void (*fn)(void *arg, int err, const struct relay_conv_view *v), void *arg)
{
	char key[CLUSTER_KEY_MAX];
	struct fetch_req *f;
	int n, rc;

	if (!r->cluster)
		return -EOPNOTSUPP;
	n = snprintf(key, sizeof(key), "%s:%s", r->front, id);
	if (!id[0] || n < 0 || (size_t)n >= sizeof(key))
		return -EINVAL;
	if (!(f = calloc(1, sizeof(*f))))
		return -ENOMEM;
	*f = (struct fetch_req){ r, fn, arg };
	rc = store_conv_fetch(r->store, key, on_conv_fetched, f);
	if (rc < 0) {
		free(f);
		return rc;
	}
	return -EINPROGRESS;
}

bool relay_cluster_lease_valid(const struct relay *r)
{
	return !r->cluster || cluster_lease_valid(r->cluster->c);
}

bool relay_cluster_may_act(const struct relay *r)
{
	return relay_cluster_lease_valid(r) && (!r->cluster || r->cluster->leave == LEAVE_NONE);
}

void relay_cluster_held_back(struct relay *r)
{
	if (r->cluster)
		r->cluster->held_back = true;
}

uint64_t relay_cluster_generation(const struct relay *r)
{
	return r->cluster ? r->cluster->generation : UINT64_MAX;
}

bool relay_cluster_stats(const struct relay *r, struct cluster_stats *out)
{
	const struct relay_cluster *cl = r ? r->cluster : NULL;

	if (!cl)
		return false;
	cluster_stats(cl->c, out);
	/* The module counts what it claimed itself; events claim their keys in the store's
	 * batches. What this instance holds is counted here. */
	out->owned = 0;
	for (size_t i = 0; i < KEY_BUCKETS; i++)
		for (const struct ck *ck = cl->keys[i]; ck; ck = ck->next)
			out->owned += ck->state == CK_HELD || ck->state == CK_LOADING;
	out->claims += cl->claims;
	return true;
}

int relay_cluster_leave(struct relay *r, uint64_t timeout_ms, void (*done)(void *arg), void *arg)
{
	struct relay_cluster *cl = r ? r->cluster : NULL;

	if (!cl)
		return -EOPNOTSUPP;
	if (cl->leave != LEAVE_NONE)
		return 0;
	cl->leave = LEAVE_IDLE;
	cl->leave_deadline_ms = clock_mono_ms() + timeout_ms;
	cl->leave_done = done;
	cl->leave_arg = arg;
	if (cluster_drain_begin(cl->c) < 0)
		log_warn(r->rt->log, "cluster.drain_refused", "reason=\"not registered\"");
	log_info(r->rt->log, "cluster.leaving", "conversations=%zu timeout_ms=%" PRIu64, convstore_count(r->convs),
		 timeout_ms);
	leave_step(cl);
	return 0;
}

static double gauge_stat(const struct relay *r, size_t offset)
{
	struct cluster_stats s;

	if (!relay_cluster_stats(r, &s))
		return 0;
	return (double)*(const uint64_t *)((const char *)&s + offset);
}

#define GAUGE(name, field) \
	static double name(void *arg) { return gauge_stat(arg, offsetof(struct cluster_stats, field)); }
GAUGE(gauge_owned, owned)
GAUGE(gauge_peers, peers)
GAUGE(gauge_claims, claims)
GAUGE(gauge_takeovers, takeovers)
GAUGE(gauge_fenced, fenced)
GAUGE(gauge_round_trips, round_trips)
#undef GAUGE

static double gauge_commit_seconds(void *arg)
{
	struct cluster_stats s;

	if (!relay_cluster_stats(arg, &s) || !s.commit_us_count)
		return 0;
	return (double)s.commit_us_sum / (double)s.commit_us_count / 1e6;
}

static void add_metrics(struct relay *r)
{
	struct metrics *m = r->rt->metrics;

	metrics_gauge(m, "handoffd_cluster_owned", "Conversations this instance owns", gauge_owned, r);
	metrics_gauge(m, "handoffd_cluster_peers", "Live instances, this one included", gauge_peers, r);
	metrics_gauge(m, "handoffd_cluster_claims_total", "Conversations claimed on their first event", gauge_claims, r);
	metrics_gauge(m, "handoffd_cluster_takeovers_total", "Conversations taken over from instances gone",
		      gauge_takeovers, r);
	metrics_gauge(m, "handoffd_cluster_fenced_total", "Batches refused by the fence", gauge_fenced, r);
	metrics_gauge(m, "handoffd_db_round_trips_total", "Batches sent to the database", gauge_round_trips, r);
	metrics_gauge(m, "handoffd_db_commit_seconds_avg", "Mean time from sending a batch to its commit",
		      gauge_commit_seconds, r);
}

int relay_cluster_start(struct relay *r, char *err, size_t errlen)
{
	const struct config_cluster *cc = &r->rt->config->cluster;
	struct cluster_opts opts = { .node = cc->node, .heartbeat_s = cc->heartbeat, .lease_s = cc->lease };
	struct relay_cluster *cl = calloc(1, sizeof(*cl));
	struct cluster_callbacks cb = { .arg = cl, .registered = on_registered, .lost = on_lost,
					.claimed = on_claimed, .woken = on_woken };

	if (!cl) {
		snprintf(err, errlen, "out of memory starting the cluster");
		return -ENOMEM;
	}
	cl->r = r;
	cl->tick = loop_timer_new(r->rt->loop, on_tick, cl);
	cl->c = cl->tick ? cluster_new(r->rt->loop, r->rt->log, store_pg_conn(r->store), &opts, &cb) : NULL;
	if (!cl->c || loop_timer_start(cl->tick, TICK_MS, 1) < 0) {
		snprintf(err, errlen, "the cluster could not start (cluster settings, or out of memory)");
		cluster_free(cl->c);
		loop_timer_free(cl->tick);
		free(cl);
		return -EINVAL;
	}
	r->cluster = cl;
	add_metrics(r);
	return 0;
}

void relay_cluster_stop(struct relay *r)
{
	struct relay_cluster *cl = r->cluster;

	if (!cl)
		return;
	r->cluster = NULL;
	cluster_free(cl->c);
	loop_timer_free(cl->tick);
	ck_clear(cl);
	free(cl);
}

/* }===== */
