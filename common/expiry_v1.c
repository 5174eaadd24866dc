/*
 * expiry_v1.c: sector expiry v1 (DESIGN.md §6).  Pure functions of their
 * arguments; the clock (history size now) is a parameter.
 *
 * All arithmetic is u64.  With realistic values (history sizes and
 * lifetimes far below 2^62) nothing wraps; the formulas are applied
 * literally without overflow checks.
 */
#include "expiry_v1.h"

#include <string.h>

uint64_t
expiry_v1_check(uint64_t history_size, uint64_t min_sector_lifetime)
{
	return history_size + min_sector_lifetime;
}

uint64_t
expiry_v1_expires_at(const uint8_t sector_id[HASH_LEN],
    uint64_t history_size, uint64_t min_sector_lifetime,
    const uint8_t root[HASH_LEN])
{
	uint64_t check = expiry_v1_check(history_size, min_sector_lifetime);
	uint64_t last = min_sector_lifetime + 4 * history_size;
	uint8_t buf[2 * HASH_LEN], d[HASH_LEN];

	if (last <= check)
		return check;
	memcpy(buf, sector_id, HASH_LEN);
	memcpy(buf + HASH_LEN, root, HASH_LEN);
	hash_sha256(buf, sizeof(buf), d);	/* SHA-256(sector_id || root) */
	return check + be64_get(d) % (last - check);
}

bool
expiry_v1_about_to_expire(uint64_t expires_at, uint64_t history_size_now)
{
	return history_size_now + 1 >= expires_at;
}

bool
expiry_v1_expired(uint64_t expires_at, uint64_t history_size_now)
{
	return history_size_now >= expires_at;
}
