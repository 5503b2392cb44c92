/* cluster_lease.c - the arithmetic of cluster membership, apart from the database so
 * tests can drive it with a fake clock: the local lease check and the fair share of
 * orphaned conversations. See cluster.h for what they mean. */
#include "relay/cluster.h"

uint64_t cluster_fair_share(uint64_t orphans, uint64_t total, uint64_t live, uint64_t mine,
			    uint64_t cap)
{
	uint64_t target, want;

	if (live == 0)
		live = 1;	/* this node counts itself even if its heartbeat is late */
	target = total / live + (total % live != 0);
	want = target > mine ? target - mine : 0;
	if (want > orphans)
		want = orphans;
	return want > cap ? cap : want;
}

/* A quarter of the lease, at most CLUSTER_MARGIN_MAX_MS: the time a heartbeat may take
 * between being queued and starting its transaction is not the margin's job (the lease
 * is measured from the queueing, before the database's now()), the margin covers the
 * relay's own reaction time. */
static uint64_t margin_ms(uint64_t lease_ms)
{
	return lease_ms / 4 < CLUSTER_MARGIN_MAX_MS ? lease_ms / 4 : CLUSTER_MARGIN_MAX_MS;
}

void cluster_lease_init(struct cluster_lease *l, uint64_t lease_ms)
{
	*l = (struct cluster_lease){ .lease_ms = lease_ms };
}

void cluster_lease_renew(struct cluster_lease *l, uint64_t queued_at_ms)
{
	/* A heartbeat queued earlier may commit after a later one's: keep the latest. */
	if (!l->held || queued_at_ms > l->renewed_at_ms)
		l->renewed_at_ms = queued_at_ms;
	l->held = true;
}

void cluster_lease_drop(struct cluster_lease *l)
{
	l->held = false;
}

bool cluster_lease_valid_at(const struct cluster_lease *l, uint64_t now_ms)
{
	return l->held && now_ms >= l->renewed_at_ms &&
	       now_ms - l->renewed_at_ms < l->lease_ms - margin_ms(l->lease_ms);
}
