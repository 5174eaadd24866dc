/*
 * plot_json.c: plotting as the admin commands and the metrics show it:
 * `farm list`, `farm sectors`, `plot progress`, and the figures of the
 * status summary and of the per-farm metrics (struct plot_summary,
 * struct plot_farm_stats; their readers render them).
 *
 * Everything here reads state, it never reconstructs it: the counts are
 * the farms' count[] (kept by sector.c), the phases the jobs' states,
 * and the events the ring the jobs write.
 */
#include "plot.h"

#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "farm.h"
#include "farmd.h"
#include "history.h"
#include "plot_int.h"
#include "sector.h"
#include "sjob.h"

static const char *const ph_names[PH_COUNT] = { "total", "read", "encode", "write" };

json_t *
plot_json_farms(struct plot *p)
{
	json_t *a = json_array();
	struct farm *f;

	TAILQ_FOREACH(f, &p->farms, link)
		json_array_append_new(a, farm_json(p, f));
	return a;
}

json_t *
plot_json_sectors(struct plot *p, const char *farm, struct err *e)
{
	struct farm *only = NULL;

	if (farm != NULL && (only = farm_lookup(p, farm, e)) == NULL)
		return NULL;
	return sector_json(p, only, e);
}

int
plot_farm_known(struct plot *p, const char *farm)
{
	struct err e;

	return farm_lookup(p, farm, &e) != NULL;
}

json_t *
plot_json_progress(struct plot *p)
{
	json_t *farms = json_array(), *events = json_array();
	uint64_t hs = history_size(p->d->history), waiting_total = 0;
	int idle = 1;
	struct farm *f;
	struct sjob *j;

	/* idle: nothing in flight and nothing queued.  Sectors that need
	 * plotting while the history is empty are not queued (nothing can
	 * start) but waiting_for_history, so that `plot --follow` and the
	 * text can tell "done" from "waiting". */
	TAILQ_FOREACH(f, &p->farms, link) {
		json_t *fl = json_array(), *fo;
		uint64_t queued = f->fd < 0 || hs == 0 ? 0 : farm_queued(f);
		uint64_t waiting = f->fd >= 0 && hs == 0 ? farm_queued(f) : 0;

		TAILQ_FOREACH(j, &p->jobs, link)
			if (j->f == f)
				json_array_append_new(fl, json_pack("{s:I, s:s, s:I, s:I, s:I, s:s}",
				    "index", (json_int_t)j->index, "phase", sjob_phase(j),
				    "pieces_done", (json_int_t)j->pieces_done,
				    "pieces_total", (json_int_t)f->g.pieces_in_sector,
				    "history_size", (json_int_t)j->history_size,
				    "error", sjob_waiting(j) ? j->error : ""));
		if (f->in_flight > 0 || queued > 0)
			idle = 0;
		waiting_total += waiting;
		fo = json_pack("{s:I, s:s, s:I, s:I, s:s, s:o, s:I, s:I, s:s, s:I}",
		    "id", (json_int_t)f->id, "dir", f->dir,
		    "sectors", (json_int_t)f->g.sectors,
		    "plotted", (json_int_t)farm_plotted(f),
		    "state", farm_state(p, f), "in_flight", fl, "queued", (json_int_t)queued,
		    "errors", (json_int_t)f->errors_total, "last_error", f->last_error,
		    "sectors_plotted_total", (json_int_t)f->plotted_total);
		json_object_set_new(fo, "waiting_for_history", json_integer((json_int_t)waiting));
		json_array_append_new(farms, fo);
	}
	for (uint64_t i = p->nevents > PLOT_EVENTS ? p->nevents - PLOT_EVENTS : 0;
	    i < p->nevents; i++) {
		const struct plot_event *ev = &p->events[i % PLOT_EVENTS];

		json_array_append_new(events, json_pack("{s:I, s:I, s:I, s:s, s:I}",
		    "ms", (json_int_t)ev->ms, "farm", (json_int_t)ev->farm,
		    "index", (json_int_t)ev->index, "event", ev->event,
		    "took_ms", (json_int_t)ev->took_ms));
	}
	return json_pack("{s:b, s:I, s:I, s:o, s:o}", "idle", idle,
	    "waiting_for_history", (json_int_t)waiting_total, "history_size", (json_int_t)hs,
	    "farms", farms, "events", events);
}

void
plot_summary(struct plot *p, struct plot_summary *s)
{
	struct farm *f;

	memset(s, 0, sizeof(*s));
	s->last_error = "";
	TAILQ_FOREACH(f, &p->farms, link) {
		s->farms++;
		s->sectors += f->g.sectors;
		s->plotted += farm_plotted(f);
		s->in_flight += f->in_flight;
		s->errors += f->errors_total;
		s->unusable_farms += f->fd < 0;
		if (f->last_error[0])
			s->last_error = f->last_error;
		if (f->fd < 0)
			s->last_error = f->error;
	}
}

json_t *
plot_json_summary(const struct plot_summary *s)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:s}", "farms",
	    (json_int_t)s->farms, "sectors", (json_int_t)s->sectors,
	    "plotted", (json_int_t)s->plotted, "in_flight", (json_int_t)s->in_flight,
	    "errors", (json_int_t)s->errors, "unusable_farms", (json_int_t)s->unusable_farms,
	    "last_error", s->last_error);
}

_Static_assert(PLOT_SECTOR_STATES == SECTOR_NSTATES, "plot.h's count of sector states");
_Static_assert(PLOT_PHASES == PH_COUNT, "plot.h's count of phases");

static void
plot_farm_stats_of(const struct farm *f, struct plot_farm_stats *s)
{
	s->id = f->id;
	s->usable = f->fd >= 0;
	s->in_flight = f->in_flight;
	s->plotted_total = f->plotted_total;
	s->errors_total = f->errors_total;
	for (int k = 0; k < SECTOR_NSTATES; k++) {
		s->sectors[k].name = sector_names[k];
		s->sectors[k].n = f->count[k];
	}
	for (int ph = 0; ph < PH_COUNT; ph++) {
		s->hist[ph].phase = ph_names[ph];
		memcpy(s->hist[ph].bucket, f->hist[ph].bucket, sizeof(s->hist[ph].bucket));
		s->hist[ph].count = f->hist[ph].count;
		s->hist[ph].sum = f->hist[ph].sum;
	}
}

struct plot_farm_stats *
plot_farm_stats(struct plot *p, size_t *n)
{
	struct plot_farm_stats *a;
	struct farm *f;
	size_t i = 0;

	*n = 0;
	TAILQ_FOREACH(f, &p->farms, link)
		i++;
	if (i == 0 || (a = calloc(i, sizeof(*a))) == NULL)
		return NULL;
	TAILQ_FOREACH(f, &p->farms, link)
		plot_farm_stats_of(f, &a[(*n)++]);
	return a;
}
