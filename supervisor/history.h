/*
 * history.h: finalized chain history (DESIGN §4).  Blocks are ingested in
 * any order; the archiver processes heights strictly in order from its
 * checkpoint, appends each block's record to the history stream, cuts a
 * segment every pieces_per_segment × piece_size bytes, stores its pieces
 * in the block store and records its Merkle root and header.
 */
#ifndef FARMD_HISTORY_H
#define FARMD_HISTORY_H

#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "hash.h"

struct farmd;
struct history;

/* Called on the loop after each new segment commits. */
typedef void (*history_segment_cb)(void *arg, uint64_t index, const uint8_t root[HASH_LEN]);

/* Returns NULL with e set; *config_error says the failure is a bad
 * configuration (exit 78), e.g. geometry that differs from the state dir. */
struct history *history_new(struct farmd *d, int *config_error, struct err *e);
void history_free(struct history *h);

/* Ingests the block in fd (the client's file; closed by us) at height. */
typedef void (*history_ingest_cb)(void *arg, const char *error, const char *text);
void history_ingest_fd(struct history *h, uint64_t height, int fd, const char *name,
    history_ingest_cb cb, void *arg);

/* Ingests len bytes from memory (a peer's answer) through the same path
 * and checks as history_ingest_fd; the bytes are copied before it returns. */
void history_ingest_mem(struct history *h, uint64_t height, const uint8_t *data, size_t len,
    const char *name, history_ingest_cb cb, void *arg);

/* The hash recorded at height (archived or pending): 1, 0 none, -1 error. */
int history_block_hash(struct history *h, uint64_t height, uint8_t hash[HASH_LEN]);

/* Called (on the loop, from the archiver's step) each time the archiver
 * comes to rest waiting for a height that has no block: gap repair asks
 * peers for it.  One listener. */
typedef void (*history_want_cb)(void *arg, uint64_t height);
void history_on_want(struct history *h, history_want_cb cb, void *arg);
/* The highest height with a block recorded (archived or pending), 0 none. */
uint64_t history_top_height(struct history *h);
/* The height the archiver waits for a block of, 0 when it is not waiting
 * for a missing one. */
uint64_t history_wanted_height(const struct history *h);

int history_subscribe(struct history *h, history_segment_cb cb, void *arg);

json_t *history_json_status(struct history *h);
json_t *history_json_segments(struct history *h);

/* For metrics. */
uint64_t history_archived_height(const struct history *h);
uint64_t history_size(const struct history *h);
void history_counters(const struct history *h, uint64_t *ingested, uint64_t *rejections);

/* Stops starting new steps; true when none is in flight. */
int history_quiesce(struct history *h);

#endif
