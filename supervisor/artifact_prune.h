/*
 * artifact_prune.h: which prepared artifacts the prune removes (DESIGN
 * §7).  A pure function of the rows, the clock and the limits, so a unit
 * test drives it without sleeping.
 */
#ifndef FARMD_ARTIFACT_PRUNE_H
#define FARMD_ARTIFACT_PRUNE_H

#include <stddef.h>
#include <stdint.h>

struct artifact_prune_row {
	uint64_t size;
	uint64_t last_needed_ms;
};

/* While the total size of rows exceeds cache_limit, picks the least
 * recently needed row, never one needed within min_stale_ms of now.
 * Writes the picked rows' indexes to out (room for n) in the order they
 * go and returns how many. */
size_t artifact_prune_choose(const struct artifact_prune_row *rows, size_t n,
    uint64_t now_ms, uint64_t cache_limit, uint64_t min_stale_ms, size_t *out);

#endif
