/*
 * artifact_prune.c: the prune choice (artifact_prune.h).  Invariant: a
 * row needed within min_stale_ms is never picked, even when the rest
 * cannot bring the total under the limit; ties in last_needed_ms go by
 * index, so the choice is deterministic.
 */
#include "artifact_prune.h"

#include <stdlib.h>

/* Index of the least recently needed row not yet picked, n if none. */
static size_t
prune_oldest(const struct artifact_prune_row *rows, size_t n, const unsigned char *picked)
{
	size_t best = n;

	for (size_t i = 0; i < n; i++)
		if (!picked[i] && (best == n || rows[i].last_needed_ms < rows[best].last_needed_ms))
			best = i;
	return best;
}

size_t
artifact_prune_choose(const struct artifact_prune_row *rows, size_t n, uint64_t now_ms,
    uint64_t cache_limit, uint64_t min_stale_ms, size_t *out)
{
	unsigned char *picked;
	uint64_t total = 0;
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		total += rows[i].size;
	if (total <= cache_limit || (picked = calloc(n, 1)) == NULL)
		return 0;
	while (total > cache_limit) {
		size_t i = prune_oldest(rows, n, picked);

		if (i == n || now_ms < rows[i].last_needed_ms ||
		    now_ms - rows[i].last_needed_ms < min_stale_ms)
			break;          /* the oldest left is fresh: so are the others */
		picked[i] = 1;
		out[k++] = i;
		total -= rows[i].size;
	}
	free(picked);
	return k;
}
