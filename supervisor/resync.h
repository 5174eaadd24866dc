/*
 * resync.h: the resync runner (DESIGN §5).  It drains the queue the block
 * store keeps (resyncq.h): processing an item checks the block's state
 * and either collects garbage (refcount 0 for longer than gc_delay) or
 * repairs a referenced block whose file is missing or corrupt.  Failures
 * back off as base × 2^min(errors − 1, 6).  An item's row is removed or
 * moved only once its processing is over, each in one statement, so a
 * crash loses nothing.
 */
#ifndef FARMD_RESYNC_H
#define FARMD_RESYNC_H

#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "hash.h"

struct farmd;
struct resync;

/* Drains d->blocks' queue: the block store starts first. */
struct resync *resync_new(struct farmd *d, struct err *e);
void resync_free(struct resync *r);

/* Makes errored blocks due now, ignoring their back-off (hash NULL: all).
 * Returns how many. */
int resync_retry_now(struct resync *r, const uint8_t *hash, struct err *e);

/* The queue's error table and sizes (resyncq.h), for commands and
 * metrics. */
json_t *resync_json_errors(struct resync *r);
uint64_t resync_queue_len(struct resync *r);
uint64_t resync_error_count(struct resync *r);
/* Processing counters and the last item's duration. */
void resync_counters(const struct resync *r, uint64_t *done, uint64_t *failed,
    uint64_t *collected, uint64_t *last_us);

/* Stops starting new items; true when none is in flight. */
int resync_quiesce(struct resync *r);

#endif
