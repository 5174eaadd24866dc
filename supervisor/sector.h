/*
 * sector.h: the sectors table, one row per sector of a farm (DESIGN §6),
 * and what a row implies: the piece a sector holds at an offset and the
 * segment its expiry is drawn from.
 *
 * Every SQL statement on `sectors` is run from sector.c (the queue's is
 * a persistent statement, its text in db.c with the others).  A single
 * sector's state changes only through sector_move(), which keeps the
 * farm's count[] in step; the one bulk change, sector_move_due(), moves count[]
 * by the rows it changed; farm.c sets a new farm's count[] once its
 * rows (sector_create) commit, and sector_recount() rebuilds it.
 */
#ifndef FARMD_SECTOR_H
#define FARMD_SECTOR_H

#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "hash.h"

struct farm;
struct plot;

enum sector_state {
	SECTOR_EMPTY, SECTOR_PLOTTING, SECTOR_PLOTTED, SECTOR_ABOUT_TO_EXPIRE,
	SECTOR_EXPIRED, SECTOR_NSTATES
};

/* The state names, as stored in the table and shown in JSON. */
extern const char *const sector_names[SECTOR_NSTATES];

/* A sector's row, as far as the pipeline, scrub and read care. */
struct sector_row {
	int state;
	uint64_t history_size;
	int have_checksum;
	uint8_t checksum[HASH_LEN];
	int64_t expires_at;             /* -1: unknown */
};

int sector_get(struct plot *p, struct farm *f, uint32_t idx, struct sector_row *r,
    struct err *e);

/* What sector_move does to plotted_at_ms. */
enum { SECTOR_AT_KEEP, SECTOR_AT_SET, SECTOR_AT_CLEAR };

/* The one place a single sector's state changes.  checksum NULL and
 * expires_at -1 store NULL. */
int sector_move(struct plot *p, struct farm *f, uint32_t idx, int to, uint64_t history_size,
    const uint8_t *checksum, int64_t expires_at, int plotted_at, struct err *e);

/* Marks a sector whose bytes are wrong (scrub, sector read) expired for
 * replotting, and kicks the scheduler. */
void sector_mark_damaged(struct plot *p, struct farm *f, uint32_t idx,
    const struct sector_row *r, const char *why);

/* The piece a sector holds at offset (format v1): its global index, its
 * block hash and its piece root. */
int sector_piece(struct plot *p, const struct farm *f, const uint8_t sector_id[HASH_LEN],
    uint64_t history_size, uint32_t offset, uint64_t *index, uint8_t hash[HASH_LEN],
    uint8_t root[HASH_LEN], struct err *e);

/* expires_at of a sector plotted at hs, or -1 while history has not
 * reached its check point; -2 on error. */
int64_t sector_expiry(struct plot *p, struct farm *f, uint32_t idx, uint64_t hs,
    uint64_t now, struct err *e);
/* The state a freshly plotted sector with that expiry is in. */
int sector_state_for(int64_t expires_at, uint64_t now);

/* Rebuilds f->count[] from the table. */
int sector_recount(struct plot *p, struct farm *f, struct err *e);
/* The rows of a new farm, all 'empty', inside the caller's transaction. */
int sector_create(struct plot *p, struct farm *f, uint64_t now_ms, struct err *e);

/* The scheduler's queue: the first sector of f in state, earliest expiry
 * first, among the first limit rows, that busy() does not reject.
 * 1 found (*idx), 0 none, -1 error (e set). */
int sector_queue_first(struct plot *p, struct farm *f, int state, uint32_t limit,
    int (*busy)(struct plot *, const struct farm *, uint32_t), uint32_t *idx,
    struct err *e);

/* Expiry check: plotted sectors whose expiry is not known yet. */
struct sector_hs {
	uint32_t idx;
	uint64_t hs;                    /* history_size */
	int64_t expires_at;             /* filled by the caller for sector_set_expiry */
};
/* Up to max plotted sectors of f with expires_at NULL and history_size
 * <= max_hs; returns how many. */
int sector_unknown_expiry(struct plot *p, struct farm *f, uint64_t max_hs,
    struct sector_hs *todo, int max, struct err *e);
int sector_set_expiry(struct plot *p, struct farm *f, const struct sector_hs *todo, int n,
    struct err *e);
/* Moves up to max sectors from one state to another when
 * expires_at <= limit; returns how many. */
int sector_move_due(struct plot *p, struct farm *f, int from, int to, uint64_t limit,
    int max, struct err *e);

/* The rows of one farm (only) or of all (NULL), as `farm sectors` shows them. */
json_t *sector_json(struct plot *p, const struct farm *only, struct err *e);
/* The first sector holding content after (farm, idx), or the first of
 * all when !have: 1 found, 0 end, -1 error (e set). */
int sector_next_plotted(struct plot *p, int have, uint32_t farm, uint32_t idx,
    uint32_t *nfarm, uint32_t *nidx, struct err *e);

#endif
