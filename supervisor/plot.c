/*
 * plot.c: the owner of plotting and its scheduler (plot.h).
 *
 * The other plotting files: farm.c (the registry of farms, farm add),
 * farmdir.c (a farm's files), sector.c (the sectors table), sjob.c (the
 * pipeline of one sector), plot_expiry.c, sread.c (sector read),
 * plot_scrub.c and plot_json.c; plot_int.h is what they share.  This
 * file is the top of them: the others never call it, they kick the
 * scheduler through p->kick (plot_kick).
 *
 * Invariants:
 *  - A sector is in flight (a struct sjob exists) at most once: the
 *    scheduler skips in-flight indexes, and scrub, sector read and
 *    expiry never change a sector that is in flight.
 *  - Nothing is queued in memory: the queue is the sectors table, read
 *    in priority order whenever a slot may have freed (a job done, a
 *    farm added, a segment archived, a sector marked damaged).
 */
#include "plot.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "farm.h"
#include "farmd.h"
#include "history.h"
#include "log.h"
#include "plot_expiry.h"
#include "plot_int.h"
#include "sector.h"
#include "sjob.h"
#include "sread.h"

static int
plot_in_flight(struct plot *p, const struct farm *f, uint32_t idx)
{
	return sjob_find(p, f, idx) != NULL;
}

/* Fills f's free slots in priority order: interrupted, never plotted,
 * expired, about to expire (expires_at is NULL for the first two, so one
 * index order serves all four). */
static void
plot_pump_farm(struct plot *p, struct farm *f)
{
	static const int order[] = { SECTOR_PLOTTING, SECTOR_EMPTY, SECTOR_EXPIRED,
		SECTOR_ABOUT_TO_EXPIRE };
	uint32_t max = p->d->cfg.plotting.max_sectors_per_farm, idx;
	struct err e;
	int rc;

	if (f->fd < 0 || f->in_flight >= max)
		return;
	for (size_t k = 0; k < sizeof(order) / sizeof(order[0]) && f->in_flight < max; k++) {
		if (f->count[order[k]] == 0)
			continue;
		/* In-flight sectors may be among the first rows. */
		rc = 0;
		while (f->in_flight < max && (rc = sector_queue_first(p, f, order[k],
		    max + f->in_flight, plot_in_flight, &idx, &e)) == 1) {
			if (sjob_start(p, f, idx) < 0) {
				log_err("farm %" PRIu32 ": out of memory starting sector %" PRIu32,
				    f->id, idx);
				break;
			}
		}
		if (rc < 0) {
			log_err("farm %" PRIu32 ": %s", f->id, e.msg);
			return;
		}
	}
}

/* p->kick: what the lower modules call through plot_kick(). */
static void
plot_pump(struct plot *p)
{
	struct farm *f;

	if (!p->started || p->stopping || history_size(p->d->history) == 0)
		return;
	TAILQ_FOREACH(f, &p->farms, link)
		plot_pump_farm(p, f);
}

static void
plot_segment_cb(void *arg, uint64_t index, const uint8_t root[HASH_LEN])
{
	struct plot *p = arg;

	(void)index;
	(void)root;
	if (p->stopping)
		return;
	plot_expiry_check(p);
	plot_pump(p);
}

struct plot *
plot_new(struct farmd *d, struct err *e)
{
	struct plot *p = calloc(1, sizeof(*p));
	struct farm *f;
	uint64_t n = 0;

	if (p == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	p->d = d;
	p->kick = plot_pump;
	TAILQ_INIT(&p->farms);
	TAILQ_INIT(&p->jobs);
	TAILQ_INIT(&p->reads);
	TAILQ_INIT(&p->adding);
	if ((p->expiry_ev = evtimer_new(d->base, plot_expiry_cb, p)) == NULL) {
		err_set(e, "out of memory");
		plot_free(p);
		return NULL;
	}
	if (farm_load(p, e) < 0) {
		plot_free(p);
		return NULL;
	}
	TAILQ_FOREACH(f, &p->farms, link)
		n += f->count[SECTOR_PLOTTING];
	if (n > 0)
		log_info("plot: %" PRIu64 " sectors were interrupted mid-plot; replotting them", n);
	return p;
}

int
plot_start(struct plot *p, struct err *e)
{
	if (history_subscribe(p->d->history, plot_segment_cb, p) < 0)
		return err_set(e, "cannot subscribe to new segments");
	p->started = 1;
	plot_expiry_check(p);
	plot_pump(p);
	return 0;
}

void
plot_farm_add(struct plot *p, const char *dir, uint32_t sectors, const char *profile,
    plot_reply_cb cb, void *arg)
{
	farm_add(p, dir, sectors, profile, cb, arg);
}

#ifdef FAULT_INJECTION
void
plot_arm_write_fault(struct plot *p)
{
	p->write_fault = 1;
}
#endif

int
plot_quiesce(struct plot *p)
{
	if (!p->stopping) {
		p->stopping = 1;
		__atomic_store_n(&p->cancel, 1, __ATOMIC_RELAXED);
		/* Worker jobs are cancelled (their callbacks will not run);
		 * disk work in flight finishes and its completion frees the
		 * job.  Interrupted sectors stay 'plotting' and are
		 * replotted after the restart. */
		sjob_cancel_all(p);
		sread_cancel_all(p);
	}
	return TAILQ_EMPTY(&p->jobs) && TAILQ_EMPTY(&p->reads) && TAILQ_EMPTY(&p->adding) &&
	    p->checks == 0;
}

void
plot_free(struct plot *p)
{
	if (p == NULL)
		return;
	while (!TAILQ_EMPTY(&p->jobs))
		sjob_free(TAILQ_FIRST(&p->jobs));
	sjob_spares_free(p);
	if (p->expiry_ev != NULL)
		event_free(p->expiry_ev);
	farm_free_all(p);
	free(p);
}
