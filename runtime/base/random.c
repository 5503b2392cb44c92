/* random.c - xorshift64* (Marsaglia; Vigna's multiplier), see random.h. */
#include "base/random.h"

#include <stdint.h>
#include <sys/random.h>
#include <sys/types.h>
#include <time.h>

void rng_seed(struct rng *r)
{
	uint64_t v = 0;

	if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v))
		v = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)r;
	r->state = v ? v : 0x9e3779b97f4a7c15ull;	/* a zero state would stay zero */
}

uint64_t rng_next(struct rng *r)
{
	uint64_t x = r->state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	r->state = x;
	return x * 0x2545f4914f6cdd1dull;
}
