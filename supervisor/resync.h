/*
 * resync.h: the resync queue (DESIGN §5).  Items keyed by (due time,
 * hash) in state.db; processing one checks the block's state and either
 * collects garbage (refcount 0 for longer than gc_delay) or repairs a
 * referenced block whose file is missing or corrupt.  Failures back off
 * as base × 2^min(errors − 1, 6).  Every change inserts the new item
 * before removing the old one, so a crash loses nothing.
 */
#ifndef FARMD_RESYNC_H
#define FARMD_RESYNC_H

#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "hash.h"

struct farmd;
struct resync;

struct resync *resync_new(struct farmd *d, struct err *e);
void resync_free(struct resync *r);

/* Queues hash for processing at due_ms (real time); idempotent. */
int resync_enqueue(struct resync *r, const uint8_t hash[HASH_LEN], uint64_t due_ms,
    struct err *e);
/* A read or scrub found a referenced block missing or corrupt: it enters
 * the error table (if not there yet) and is queued now. */
void resync_report(struct resync *r, const uint8_t hash[HASH_LEN], const char *reason);
/* The block's bytes were stored again (put): its error is cleared. */
void resync_satisfied(struct resync *r, const uint8_t hash[HASH_LEN]);
/* Forgets a block entirely (purge). */
void resync_forget(struct resync *r, const uint8_t hash[HASH_LEN]);
/* Makes errored blocks due now, ignoring their back-off (hash NULL: all).
 * Returns how many. */
int resync_retry_now(struct resync *r, const uint8_t *hash, struct err *e);

json_t *resync_json_errors(struct resync *r);
uint64_t resync_queue_len(struct resync *r);
uint64_t resync_error_count(struct resync *r);
/* Processing counters and the last item's duration. */
void resync_counters(const struct resync *r, uint64_t *done, uint64_t *failed,
    uint64_t *collected, uint64_t *last_us);

/* Stops starting new items; true when none is in flight. */
int resync_quiesce(struct resync *r);

#endif
