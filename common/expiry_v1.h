/*
 * expiry_v1.h: sector expiry v1 (DESIGN.md §6).  Pure functions; the
 * caller supplies the root of segment (check - 1) once history reaches it.
 */
#ifndef FARMD_EXPIRY_V1_H
#define FARMD_EXPIRY_V1_H

#include <stdbool.h>
#include <stdint.h>

#include "hash.h"

/* check = history_size + min_sector_lifetime; the history size at which
 * the expiry becomes known. */
uint64_t expiry_v1_check(uint64_t history_size, uint64_t min_sector_lifetime);

/* expires_at for a sector plotted at history_size, given root = root of
 * segment (check - 1). */
uint64_t expiry_v1_expires_at(const uint8_t sector_id[HASH_LEN],
    uint64_t history_size, uint64_t min_sector_lifetime,
    const uint8_t root[HASH_LEN]);

/* history_size_now + 1 >= expires_at */
bool expiry_v1_about_to_expire(uint64_t expires_at, uint64_t history_size_now);
/* history_size_now >= expires_at */
bool expiry_v1_expired(uint64_t expires_at, uint64_t history_size_now);

#endif
