/*
 * resyncq.h: the resync queue's two tables in state.db (DESIGN §5).
 *
 * resync_queue holds one item per hash, keyed by (due time, hash);
 * resync_errors holds each block a read found missing or corrupt: its
 * consecutive failures, last and next try and the reason.  This module is
 * only the table work.  The block store owns it and records here what it
 * finds (a damaged block, a repair, a block with no references left); the
 * resync runner (resync.c) drains it.  It depends on state.db alone and
 * reaches the runner only through the wake hook the runner registers.
 */
#ifndef FARMD_RESYNCQ_H
#define FARMD_RESYNCQ_H

#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "hash.h"

struct farmd;
struct resyncq;

/* A queue row as read. */
struct resyncq_item {
	uint8_t hash[HASH_LEN];
	uint64_t due_ms;
};

/* What deciding an item needs: the block's row and its error entry. */
struct resyncq_block {
	int64_t refs;                   /* -1: no row for the block */
	int64_t zero_since_ms;          /* when refs fell to 0 */
	int64_t next_try_ms;            /* -1: not in the error table */
};

struct resyncq *resyncq_new(struct farmd *d, struct err *e);
void resyncq_free(struct resyncq *q);
/* wake(arg) runs (on the loop) whenever an item becomes due now; NULL
 * unregisters. */
void resyncq_set_wake(struct resyncq *q, void (*wake)(void *arg), void *arg);

/* Queues hash for processing at due_ms (real time); idempotent, and an
 * item already queued only ever moves earlier. */
int resyncq_enqueue(struct resyncq *q, const uint8_t hash[HASH_LEN], uint64_t due_ms,
    struct err *e);
/* A read or scrub found a referenced block missing or corrupt: it enters
 * the error table (if not there yet) and is queued now. */
void resyncq_report(struct resyncq *q, const uint8_t hash[HASH_LEN], const char *reason);
/* The block's bytes were stored again (put), or it has no row left: its
 * error is cleared and its item made due now. */
void resyncq_satisfied(struct resyncq *q, const uint8_t hash[HASH_LEN]);
/* Forgets a block entirely (purge). */
void resyncq_forget(struct resyncq *q, const uint8_t hash[HASH_LEN]);
/* Makes errored blocks due now, ignoring their back-off (hash NULL: all).
 * Returns how many. */
int resyncq_retry_now(struct resyncq *q, const uint8_t *hash, struct err *e);

json_t *resyncq_json_errors(struct resyncq *q);
uint64_t resyncq_len(struct resyncq *q);
uint64_t resyncq_error_count(struct resyncq *q);

/* ---- the runner's side: an item's steps ---- */

/* Reads up to max of the first items, in order, that are due at now_ms
 * into out; the first one not due yet, if read, lowers *next_ms to its
 * time.  Returns how many, -1 if the queue cannot be read (logged). */
int resyncq_due(struct resyncq *q, uint64_t now_ms, struct resyncq_item *out, int max,
    uint64_t *next_ms);
/* Fills *out for hash (refs -1 if the block has no row). */
void resyncq_block(struct resyncq *q, const uint8_t hash[HASH_LEN],
    struct resyncq_block *out);
/* The block was collected: nothing is left to repair. */
void resyncq_collected(struct resyncq *q, const uint8_t hash[HASH_LEN]);
/* One more failed try at now_ms: counts it in the error table and sets
 * the next try to now_ms + base × 2^min(errors − 1, 6), which it returns;
 * *errors is the count. */
uint64_t resyncq_failed(struct resyncq *q, const uint8_t hash[HASH_LEN], const char *reason,
    uint64_t now_ms, int64_t *errors);
/* Moves the item read at due_ms to to_ms; an item that moved meanwhile
 * stays where it is. */
void resyncq_move(struct resyncq *q, const uint8_t hash[HASH_LEN], uint64_t due_ms,
    uint64_t to_ms);
/* Removes the item read at due_ms, unless it moved meanwhile. */
void resyncq_done(struct resyncq *q, const uint8_t hash[HASH_LEN], uint64_t due_ms);

#endif
