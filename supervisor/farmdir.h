/*
 * farmdir.h: a farm is a directory on a disk holding an Ed25519 identity
 * (identity.key, mode 0600) and plot.bin, preallocated to
 * sectors × sector_size; sector i lives at byte i × sector_size
 * (DESIGN §3, §6).  Its geometry comes from a built-in profile and is
 * fixed at creation: the database keeps a copy, never the profile name
 * alone.
 *
 * This file is the farm as files on disk: profiles, identity, creating
 * and opening plot.bin.  The registry of farms is farm.c; the sectors
 * in plot.bin are sector.c's (rows) and sjob.c's (bytes).
 */
#ifndef FARMD_FARMDIR_H
#define FARMD_FARMDIR_H

#include <limits.h>
#include <stdint.h>

#include "encode_v1.h"
#include "err.h"
#include "hash.h"

#define FARMDIR_FORMAT_V1 1
#define FARMDIR_IDENTITY "identity.key"
#define FARMDIR_PLOT "plot.bin"

struct farmdir_profile {
	const char *name;
	uint32_t pieces_in_sector;
	uint32_t min_sector_lifetime;   /* segments */
	uint32_t recent_segments;
	double recent_history_fraction;
	struct encode_params scrypt;
};

/* "demo" or "production"; NULL if unknown. */
const struct farmdir_profile *farmdir_profile_find(const char *name);

/* A farm's fixed description, as stored in the farms table. */
struct farmdir_geom {
	uint32_t sectors;
	uint32_t pieces_in_sector;
	uint64_t piece_size;
	uint64_t sector_size;           /* pieces_in_sector × piece_size */
	uint32_t pieces_per_segment;
	uint32_t min_sector_lifetime;
	uint32_t recent_segments;
	double recent_history_fraction;
	struct encode_params scrypt;
	char profile[16];
};

/* A farm being created: filled by the caller, then farmdir_create() runs on
 * the I/O pool and records what it made so farmdir_create_undo() removes
 * exactly that. */
struct farmdir_create {
	char dir[PATH_MAX];
	struct farmdir_geom geom;
	uint8_t pkh[HASH_LEN];          /* out: public_key_hash */
	int fd;                         /* out: plot.bin, locked */
	int made_dir, made_identity, made_plot;
	struct err e;
};

/* Blocking (I/O pool): creates DIR if needed, adopts or generates the
 * identity and preallocates plot.bin.  On failure nothing it made is
 * left and c->e says why. */
int farmdir_create(struct farmdir_create *c);
/* Removes what farmdir_create made (the database refused the farm). */
void farmdir_create_undo(struct farmdir_create *c);

/* Opens an existing farm's plot.bin: its size must be
 * sectors × sector_size, its identity must hash to pkh, and no other
 * process may hold it (flock).  Returns the descriptor, or -1. */
int farmdir_open(const char *dir, const struct farmdir_geom *g, const uint8_t pkh[HASH_LEN],
    struct err *e);

/* public_key_hash = SHA-256(raw Ed25519 public key) of a PEM key file. */
int farmdir_identity_load(const char *path, uint8_t pkh[HASH_LEN], struct err *e);

#endif
