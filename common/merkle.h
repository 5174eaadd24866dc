/*
 * merkle.h: RFC 6962-style SHA-256 Merkle trees (DESIGN.md §4).
 * leaf = H(0x00 || 32-byte chunk), node = H(0x01 || left || right).
 * Every count is a power of two (checked).
 */
#ifndef FARMD_MERKLE_H
#define FARMD_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#include "hash.h"

/* Root over nchunks consecutive 32-byte chunks of data (nchunks a power of
 * two, >= 1).  A piece root is merkle_root(piece, piece_size / 32); a
 * segment root is merkle_root(concatenated piece roots, pieces). Returns -1
 * if nchunks is not a power of two. */
int merkle_root(const uint8_t *data, size_t nchunks, uint8_t root[HASH_LEN]);

/* Segment header hash: SHA-256(u64 index || root || prev_header_hash || u64 last_height). */
void merkle_segment_header_hash(uint64_t index, const uint8_t root[HASH_LEN],
    const uint8_t prev_header_hash[HASH_LEN], uint64_t last_height,
    uint8_t out[HASH_LEN]);

#endif
