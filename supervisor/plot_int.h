/*
 * plot_int.h: what the plotting files share (not for callers of plot.h).
 *
 * struct plot owns everything of plotting: the farms (farm.c), the
 * sector jobs (sjob.c), the sector reads (sread.c), the farm adds on the
 * I/O pool (farm.c), the plot scrub's checks (plot_scrub.c), the expiry
 * check's timer (plot_expiry.c) and the ring of progress events.
 *
 * Invariants:
 *  - A sector is in flight (a struct sjob exists) at most once: the
 *    scheduler skips in-flight indexes, and scrub, sector read and
 *    expiry never change a sector that is in flight.
 *  - Once stopping is set nothing new starts; plot_quiesce() is true
 *    when every list is empty and no check is on the I/O pool.
 *
 * Headers point one way: farmdir.h ← sector.h ← farm.h ← sjob.h;
 * plot_int.h needs none of them.
 */
#ifndef FARMD_PLOT_INT_H
#define FARMD_PLOT_INT_H

#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "plot.h"

/* Worker attempts of one encode or decode job. */
#define PLOT_JOB_ATTEMPTS 3
#define PLOT_EVENTS 64

struct farm;
struct sector_row;

struct plot_event {
	uint64_t ms;
	uint32_t farm, index;
	const char *event;
	uint64_t took_ms;
};

struct plot {
	struct farmd *d;
	TAILQ_HEAD(, farm) farms;
	TAILQ_HEAD(, sjob) jobs;
	TAILQ_HEAD(, sread) reads;
	TAILQ_HEAD(, farm_add) adding;  /* farm adds on the I/O pool */
	int started, stopping;
	int cancel;                     /* read by I/O threads: stop long checks */
	struct event *expiry_ev;        /* the next expiry step */
	uint64_t expiry_us;             /* loop time of the check under way */
	uint64_t expiry_moved;          /* sectors it marked */
	int checks;                     /* scrub checks on the I/O pool */
	struct plot_event events[PLOT_EVENTS];
	uint64_t nevents;
#ifdef FAULT_INJECTION
	int write_fault;
#endif
};

/* The scheduler: fills every farm's free slots. */
void plot_pump(struct plot *p);

/* The row and the sector's job may have changed while a read or check
 * was on the I/O pool: only an unchanged, idle sector can be judged. */
int plot_sector_unchanged(struct plot *p, struct farm *f, uint32_t idx,
    const struct sector_row *then);
/* Marks a sector whose bytes are wrong for replotting. */
void plot_mark_damaged(struct plot *p, struct farm *f, uint32_t idx,
    const struct sector_row *r, const char *why);

#endif
