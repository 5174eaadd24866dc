/*
 * backoff.h: the retry schedules of DESIGN.md §2 and §5 as pure functions
 * of their inputs (no clock reads), so tests need no sleeping.
 */
#ifndef FARMD_BACKOFF_H
#define FARMD_BACKOFF_H

#include <stdint.h>

#define BACKOFF_RESTART_FIRST_MS 100

/* Delay before restarting a worker, given how many restarts of its pool
 * happened within the restart period before this one.  The first restart
 * is immediate (a single crash costs no capacity; DESIGN §13 wants a
 * replacement within 50 ms); after that 100 ms doubling up to max_ms. */
uint64_t backoff_restart_ms(unsigned recent_restarts, uint64_t max_ms);

/* Resync retry: base_ms × 2^min(errors − 1, 6); errors >= 1. */
uint64_t backoff_resync_ms(uint64_t base_ms, unsigned errors);

#endif
