/* clock.h - the two clocks handoffd reads: monotonic for timeouts and durations (never
 * jumps when the wall clock is set), wall for what is stored or shown (epoch based). */
#ifndef HANDOFFD_CLOCK_H
#define HANDOFFD_CLOCK_H

#include <stdint.h>

/* Monotonic milliseconds (CLOCK_MONOTONIC): timers, deadlines, durations. */
uint64_t clock_mono_ms(void);
/* Monotonic microseconds, for short durations and systemd's MONOTONIC_USEC. */
uint64_t clock_mono_us(void);
/* Wall-clock milliseconds since the epoch (CLOCK_REALTIME): stored times, log stamps. */
uint64_t clock_wall_ms(void);

#endif
