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
 * Modules point one way (scripts/deps-graph): plot.c, the scheduler, on
 * top; sjob.c, sread.c and plot_expiry.c below it; then farm.c, then
 * sector.c, farmdir.c and db.c.  A lower module never calls the
 * scheduler: it kicks it through p->kick (plot_kick), and the types
 * every layer shares (struct plot, struct farm) are here, in a header
 * that is no module.  Headers point the same way: plot_int.h needs
 * plot.h, sector.h and farmdir.h; farm.h needs plot_int.h; sjob.h needs
 * farm.h.
 */
#ifndef FARMD_PLOT_INT_H
#define FARMD_PLOT_INT_H

#include <limits.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "err.h"
#include "farmdir.h"
#include "hash.h"
#include "plot.h"
#include "sector.h"

/* Worker attempts of one encode or decode job. */
#define PLOT_JOB_ATTEMPTS 3
#define PLOT_EVENTS 64

/* Time histograms per farm, one per phase of a sector job. */
enum { PH_TOTAL, PH_READ, PH_ENCODE, PH_WRITE, PH_COUNT };

struct hist {
	uint64_t bucket[PLOT_HIST_BUCKETS];     /* non-cumulative */
	uint64_t count;
	double sum;
};

/* A farm (farm.h): a row of `farms` plus what the loop keeps about it:
 * its plot.bin descriptor (farmdir.c opened it; -1 when the farm is
 * unusable), the number of its sectors in each state (sector.c keeps
 * them in step with the table), its sectors in flight and its plotting
 * time histograms.  Farms are never removed while farmd runs. */
struct farm {
	uint32_t id;
	char dir[PATH_MAX];
	struct farmdir_geom g;
	uint8_t pkh[HASH_LEN];
	int fd;                         /* plot.bin; -1: unusable, see error */
	char error[ERR_MSG_MAX];
	uint64_t count[SECTOR_NSTATES];
	uint32_t in_flight;
	uint64_t plotted_total, errors_total;
	char last_error[ERR_MSG_MAX];
	struct hist hist[PH_COUNT];
	TAILQ_ENTRY(farm) link;
};

struct plot_event {
	uint64_t ms;
	uint32_t farm, index;
	const char *event;
	uint64_t took_ms;
};

#define PLOT_SPARE_BUFS 4

struct plot {
	struct farmd *d;
	/* The scheduler (plot.c sets it): fills every farm's free slots.
	 * Lower modules call it through plot_kick() whenever a slot may have
	 * freed or a sector become due. */
	void (*kick)(struct plot *p);
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
	/* Batch buffers of ended sector jobs, kept for the next ones (sjob.c):
	 * a fresh one each sector would be fresh pages each sector. */
	struct { uint8_t *buf; size_t len; } spare[PLOT_SPARE_BUFS];
	int nspare;
#ifdef FAULT_INJECTION
	int write_fault;
#endif
};

static inline void
plot_kick(struct plot *p)
{
	p->kick(p);
}

#endif
