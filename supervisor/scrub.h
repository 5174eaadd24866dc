/*
 * scrub.h: reads and verifies every stored item, slowly (DESIGN §5).
 *
 * A run walks its sources in order (the blocks, then the plotted
 * sectors: main.c passes them to scrub_new), each from its first item to
 * its last.  After checking an item that took t, it sleeps tranquility
 * × t.  Its phase (the source in hand), the position in each source (the
 * last item checked) and the counters are persisted, so a restart
 * continues where it stopped.  It runs on a randomised schedule
 * (scrub_interval ± 1/6) and on command.
 */
#ifndef FARMD_SCRUB_H
#define FARMD_SCRUB_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

struct farmd;
struct scrub;

/* A position names an item of a source as text, "" before the first:
 * it is stored as is under the source's meta key, so a source picks its
 * format (a block's hash in hex, a sector's "farm:index"). */
#define SCRUB_POS_MAX 80
#define SCRUB_MAX_SOURCES 4

/* What a check found (the int a scrub_check_cb gets). */
enum scrub_result {
	SCRUB_FAILED = -2,      /* could not check now: the run stops in error, in place */
	SCRUB_SKIPPED = -1,     /* gone or busy meanwhile: not counted as checked */
	SCRUB_OK = 0,
	SCRUB_CORRUPT = 1,      /* corrupt or missing: the source's owner repairs it */
};
typedef void (*scrub_check_cb)(void *arg, int result);

/* One kind of item the scrub walks: a row of the table given to
 * scrub_new.  The scrub knows nothing else about it. */
struct scrub_source {
	const char *name;               /* meta scrub.phase while in hand */
	/* The first item after pos ("": the first of all) into item:
	 * 1 found, 0 none left, -1 error (e set). */
	int (*next)(struct farmd *d, const char *pos, char item[SCRUB_POS_MAX],
	    struct err *e);
	/* Verifies item; cb runs exactly once, perhaps before check returns. */
	void (*check)(struct farmd *d, const char *item, scrub_check_cb cb, void *arg);
	/* The meta keys of its position and counters. */
	const char *pos_key, *checked_key, *corruptions_key;
};

/* The blocks in the block store, in hash order. */
extern const struct scrub_source scrub_source_blocks;

/* sources: a NULL-terminated table of rows, walked in order; the rows
 * (not the table) must outlive s. */
struct scrub *scrub_new(struct farmd *d, const struct scrub_source *const *sources,
    struct err *e);
void scrub_free(struct scrub *s);

/* Commands: each returns -1 with a message when not possible now. */
int scrub_start(struct scrub *s, struct err *e);
int scrub_pause(struct scrub *s, struct err *e);
int scrub_resume(struct scrub *s, struct err *e);
int scrub_cancel(struct scrub *s, struct err *e);

/* What status and metrics show.  Counters are the current or last run's;
 * the strings live as long as s and until its next change. */
struct scrub_stats {
	const char *state;              /* "idle", "running" or "paused" */
	const char *phase;              /* the source in hand: "blocks", "sectors" */
	const char *position;           /* in the blocks: the last hash checked, or "" */
	uint64_t started_ms, last_done_ms, next_run_ms;
	uint64_t checked, corruptions;                  /* blocks */
	uint64_t sectors_checked, sector_corruptions;   /* plotted sectors */
	double tranquility;
};
void scrub_stats(const struct scrub *s, struct scrub_stats *out);
json_t *scrub_json(struct scrub *s);

/* debug fault scrub slow (FAULT_INJECTION builds): -1 for another fault. */
int scrub_arm_fault(struct scrub *s, const char *fault);

/* Stops scheduling; true when no item is being verified. */
int scrub_quiesce(struct scrub *s);

#endif
