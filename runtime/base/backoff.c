/* backoff.c - capped exponential backoff with full jitter (see backoff.h). */
#include "base/backoff.h"

#include "base/random.h"

uint64_t backoff_delay_ms(const struct backoff *b, struct rng *rng, unsigned attempt)
{
	uint64_t window = b->base_ms;

	/* Doubling stops at the cap; 64 rounds bound the loop even for a zero base. */
	for (unsigned i = 0; i < attempt && i < 64 && window < b->cap_ms; i++)
		window *= 2;
	if (window > b->cap_ms)
		window = b->cap_ms;
	return rng_next(rng) % (window + 1);
}
