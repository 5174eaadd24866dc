/*
 * plot_expiry.c: the expiry check.
 *
 * On each new segment (and at start): learn the expiries that became
 * known, then mark what expires.  The work is cut into steps of at most
 * EXPIRY_STEP sectors, each one transaction, with the loop free between
 * them: a farm plotted at one history size learns all its expiries at
 * the same segment, and a million of them at once would stall the loop
 * for seconds.  The sectors whose expiry is unknown are found through a
 * partial index; the state changes through (farm, state, expires_at).
 *
 * Invariant: a step either commits with f->count[] moved by exactly the
 * rows it changed, or rolls back and restores count[].  Sectors in
 * flight are 'plotting', so no step touches them.
 */
#include "plot_expiry.h"

#include <inttypes.h>
#include <string.h>

#include "clock.h"
#include "db.h"
#include "farm.h"
#include "farmd.h"
#include "history.h"
#include "log.h"
#include "plot_int.h"
#include "sector.h"

/* Sectors per expiry step: about 15 ms of loop time, measured with a
 * million-sector farm (see plot_expiry_step). */
#define EXPIRY_STEP 2048

static int
plot_expiry_learn(struct plot *p, struct farm *f, uint64_t now, struct err *e)
{
	struct sector_hs todo[EXPIRY_STEP];
	int n;

	if ((n = sector_unknown_expiry(p, f, now - f->g.min_sector_lifetime, todo,
	    EXPIRY_STEP, e)) < 0)
		return -1;
	for (int i = 0; i < n; i++)
		if ((todo[i].expires_at = sector_expiry(p, f, todo[i].idx, todo[i].hs, now,
		    e)) < -1)
			return -1;
	return sector_set_expiry(p, f, todo, n, e) < 0 ? -1 : n;
}

/* One step for one farm: 1 if there is more to do, 0 if done, -1 error. */
static int
plot_expiry_step(struct plot *p, struct farm *f, uint64_t now, struct err *e)
{
	/* Expired first, so an about-to-expire sector that is already past
	 * its expiry is not moved twice. */
	static const struct { int from, to, ahead; } moves[] = {
		{ SECTOR_ABOUT_TO_EXPIRE, SECTOR_EXPIRED, 0 },
		{ SECTOR_PLOTTED, SECTOR_EXPIRED, 0 },
		{ SECTOR_PLOTTED, SECTOR_ABOUT_TO_EXPIRE, 1 },
	};
	uint64_t before[SECTOR_NSTATES];
	int n = 0, moved = 0, more;

	if (now < f->g.min_sector_lifetime)
		return 0;
	memcpy(before, f->count, sizeof(before));
	if (db_begin(p->d->db, e) < 0)
		return -1;
	if ((n = plot_expiry_learn(p, f, now, e)) < 0)
		goto fail;
	more = n == EXPIRY_STEP;
	/* The rest once every known expiry is learnt. */
	for (size_t k = 0; n < EXPIRY_STEP && k < sizeof(moves) / sizeof(moves[0]); k++) {
		int m = sector_move_due(p, f, moves[k].from, moves[k].to, now + moves[k].ahead,
		    EXPIRY_STEP, e);

		if (m < 0)
			goto fail;
		moved += m;
		more |= m == EXPIRY_STEP;
	}
	if (db_commit(p->d->db, e) < 0)
		goto fail;
	p->expiry_moved += (uint64_t)moved;
	return more;
fail:
	db_rollback(p->d->db);
	memcpy(f->count, before, sizeof(before));
	return -1;
}

/* Runs steps until every farm is done, yielding to the loop between
 * them; replots start as soon as the first sectors are marked. */
void
plot_expiry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct plot *p = arg;
	uint64_t now = history_size(p->d->history), t0 = clock_mono_us();
	struct timeval zero = { 0, 0 };
	struct farm *f;
	struct err e;
	int more = 0;

	(void)fd;
	(void)what;
	if (p->stopping)
		return;
	TAILQ_FOREACH(f, &p->farms, link) {
		int rc = plot_expiry_step(p, f, now, &e);

		if (rc < 0)
			log_err("farm %" PRIu32 ": %s", f->id, e.msg);
		more |= rc > 0;
	}
	p->expiry_us += clock_mono_us() - t0;
	if (more) {
		evtimer_add(p->expiry_ev, &zero);
	} else {
		if (p->expiry_moved > 0)
			log_info("plot: %" PRIu64 " sector expiry state changes up to history size %"
			    PRIu64 "; expiring sectors are queued for replotting", p->expiry_moved, now);
		log_debug("plot: expiry check at history size %" PRIu64 " took %" PRIu64 " us "
		    "of loop time", now, p->expiry_us);
		p->expiry_us = 0;
		p->expiry_moved = 0;
	}
	plot_kick(p);
}

void
plot_expiry_check(struct plot *p)
{
	struct timeval zero = { 0, 0 };

	if (!evtimer_pending(p->expiry_ev, NULL))
		evtimer_add(p->expiry_ev, &zero);
}

