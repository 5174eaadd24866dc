/*
 * plot.h: farms' sectors, the plotting scheduler and the per-sector
 * pipeline (DESIGN §6, §9).
 *
 * Scheduler: every farm has at most [plotting] max_sectors_per_farm
 * sectors in flight.  The queue is the sectors table itself, read in
 * priority order when a slot frees (interrupted, never plotted, expired,
 * about to expire; the last two earliest expiry first), so nothing is
 * queued in memory and a sector cannot be picked twice.
 *
 * Pipeline per sector: MARK (state 'plotting' committed before a byte
 * changes) → READ pieces from the block store → ENCODE in encode workers
 * → WRITE at index × sector_size (I/O pool) → … per batch … → SYNC
 * (fdatasync, checksum) → COMMIT (history size, checksum, expiry, state).
 * Any failure → ERROR → retried from MARK after [plotting] retry_delay.
 */
#ifndef FARMD_PLOT_H
#define FARMD_PLOT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

struct farmd;
struct plot;

/* Histogram buckets (seconds) of the plotting time metrics. */
#define PLOT_HIST_BUCKETS 12
extern const double plot_hist_bounds[PLOT_HIST_BUCKETS];

/* Loads and opens the farms (a farm whose files are unusable is kept,
 * in state "error", and not plotted). */
struct plot *plot_new(struct farmd *d, struct err *e);
/* Subscribes to new segments, checks expiries and starts plotting. */
int plot_start(struct plot *p, struct err *e);
void plot_free(struct plot *p);
/* Stops starting work and cancels worker jobs; true when nothing of
 * plotting is in flight any more. */
int plot_quiesce(struct plot *p);

/* Replies: exactly one call, json stolen, or error set. */
typedef void (*plot_reply_cb)(void *arg, json_t *json, const char *error);

/* farm add: dir must be absolute. */
void plot_farm_add(struct plot *p, const char *dir, uint32_t sectors,
    const char *profile, plot_reply_cb cb, void *arg);
json_t *plot_json_farms(struct plot *p);
/* farm: id or directory, NULL for all. */
json_t *plot_json_sectors(struct plot *p, const char *farm, struct err *e);
/* Whether farm (an id or directory) names a farm: tells an unknown farm
 * from another failure of plot_json_sectors. */
int plot_farm_known(struct plot *p, const char *farm);
json_t *plot_json_progress(struct plot *p);

/* Plotting in figures: the status summary and the per-farm metrics. */
struct plot_summary {
	uint64_t farms, sectors, plotted, in_flight, errors, unusable_farms;
	const char *last_error;         /* "" if none; valid until the loop runs on */
};
#define PLOT_SECTOR_STATES 5            /* empty … expired */
#define PLOT_PHASES 4                   /* total, read, encode, write */
struct plot_farm_stats {
	uint32_t id;
	/* All uint64_t, so metrics reads them alike. */
	uint64_t usable;                /* 1 when its files are open */
	uint64_t in_flight;
	uint64_t plotted_total, errors_total;
	struct { const char *name; uint64_t n; } sectors[PLOT_SECTOR_STATES];
	struct {
		const char *phase;
		uint64_t bucket[PLOT_HIST_BUCKETS];     /* non-cumulative */
		uint64_t count;
		double sum;                             /* seconds */
	} hist[PLOT_PHASES];
};
void plot_summary(struct plot *p, struct plot_summary *s);
json_t *plot_json_summary(const struct plot_summary *s);
/* One entry per farm, in farm order (caller frees); NULL with *n = 0
 * when there is no farm or no memory. */
struct plot_farm_stats *plot_farm_stats(struct plot *p, size_t *n);

/* sector read: the decoded piece, checked against its piece root. */
typedef void (*plot_read_cb)(void *arg, uint8_t *data, size_t len, const char *error);
void plot_sector_read(struct plot *p, const char *farm, uint32_t sector,
    uint32_t offset, plot_read_cb cb, void *arg);

#ifdef FAULT_INJECTION
/* The next sector write fails with EIO. */
void plot_arm_write_fault(struct plot *p);
#endif

#endif
