/* backoff.h - exponential backoff with full jitter, capped: the one retry delay of
 * handoffd (relay deliveries, Direct Line reconnects, token and send retries). Full jitter
 * spreads a crowd of failed clients evenly over the window, so they do not return at once. */
#ifndef HANDOFFD_BACKOFF_H
#define HANDOFFD_BACKOFF_H

#include <stdint.h>

struct rng;

struct backoff {
	uint64_t base_ms;	/* the window of attempt 0 */
	uint64_t cap_ms;	/* the window never grows past it */
};

/* A random delay in [0, min(cap, base * 2^attempt)] milliseconds. */
uint64_t backoff_delay_ms(const struct backoff *b, struct rng *rng, unsigned attempt);

#endif
