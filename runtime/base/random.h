/* random.h - a fast pseudo-random generator for retry jitter and ids that must differ
 * but need not be secret (clientActivityID prefixes, echo markers). Nothing here is for
 * secrets: tokens, nonces and crypto.uuid come from OpenSSL's RAND_bytes. Each owner keeps
 * its own generator, so nothing is shared between parts or threads. */
#ifndef HANDOFFD_RANDOM_H
#define HANDOFFD_RANDOM_H

#include <stdint.h>

struct rng {
	uint64_t state;		/* xorshift64*: never 0 */
};

/* Seeds from getrandom(2); if that fails, from the time and the generator's address,
 * which is still enough to spread retries of different processes. */
void rng_seed(struct rng *r);
/* The next 64 random bits. */
uint64_t rng_next(struct rng *r);

#endif
