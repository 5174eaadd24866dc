/*
 * plot_json.c: plotting as the admin commands and the metrics show it:
 * `farm list`, `farm sectors`, `plot progress`, the status summary and
 * the per-farm metrics.
 *
 * Everything here reads state, it never reconstructs it: the counts are
 * the farms' count[] (kept by sector.c), the phases the jobs' states,
 * and the events the ring the jobs write.
 */
#include "plot.h"

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

json_t *
plot_json_progress(struct plot *p)
{
	json_t *farms = json_array(), *events = json_array();
	uint64_t hs = history_size(p->d->history);
	int idle = 1;
	struct farm *f;
	struct sjob *j;

	TAILQ_FOREACH(f, &p->farms, link) {
		json_t *fl = json_array();
		uint64_t queued = f->fd < 0 || hs == 0 ? 0 : farm_queued(f);

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
		json_array_append_new(farms, json_pack("{s:I, s:s, s:I, s:I, s:s, s:o, s:I, s:I, "
		    "s:s, s:I}", "id", (json_int_t)f->id, "dir", f->dir,
		    "sectors", (json_int_t)f->g.sectors,
		    "plotted", (json_int_t)farm_plotted(f),
		    "state", farm_state(p, f), "in_flight", fl, "queued", (json_int_t)queued,
		    "errors", (json_int_t)f->errors_total, "last_error", f->last_error,
		    "sectors_plotted_total", (json_int_t)f->plotted_total));
	}
	for (uint64_t i = p->nevents > PLOT_EVENTS ? p->nevents - PLOT_EVENTS : 0;
	    i < p->nevents; i++) {
		const struct plot_event *ev = &p->events[i % PLOT_EVENTS];

		json_array_append_new(events, json_pack("{s:I, s:I, s:I, s:s, s:I}",
		    "ms", (json_int_t)ev->ms, "farm", (json_int_t)ev->farm,
		    "index", (json_int_t)ev->index, "event", ev->event,
		    "took_ms", (json_int_t)ev->took_ms));
	}
	return json_pack("{s:b, s:I, s:o, s:o}", "idle", idle, "history_size", (json_int_t)hs,
	    "farms", farms, "events", events);
}

json_t *
plot_json_summary(struct plot *p)
{
	uint64_t farms = 0, sectors = 0, plotted = 0, in_flight = 0, errors = 0, unusable = 0;
	const char *last_error = "";
	struct farm *f;

	TAILQ_FOREACH(f, &p->farms, link) {
		farms++;
		sectors += f->g.sectors;
		plotted += farm_plotted(f);
		in_flight += f->in_flight;
		errors += f->errors_total;
		unusable += f->fd < 0;
		if (f->last_error[0])
			last_error = f->last_error;
		if (f->fd < 0)
			last_error = f->error;
	}
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:s}", "farms",
	    (json_int_t)farms, "sectors", (json_int_t)sectors,
	    "plotted", (json_int_t)plotted, "in_flight", (json_int_t)in_flight,
	    "errors", (json_int_t)errors, "unusable_farms", (json_int_t)unusable,
	    "last_error", last_error);
}

json_t *
plot_json_metrics(struct plot *p)
{
	json_t *a = json_array();
	struct farm *f;

	TAILQ_FOREACH(f, &p->farms, link) {
		json_t *states = json_object(), *hists = json_object();

		for (int k = 0; k < SECTOR_NSTATES; k++)
			json_object_set_new(states, sector_names[k], json_integer((json_int_t)f->count[k]));
		for (int ph = 0; ph < PH_COUNT; ph++) {
			json_t *b = json_array();

			for (int k = 0; k < PLOT_HIST_BUCKETS; k++)
				json_array_append_new(b, json_integer((json_int_t)f->hist[ph].bucket[k]));
			json_object_set_new(hists, ph_names[ph], json_pack("{s:o, s:I, s:f}",
			    "buckets", b, "count", (json_int_t)f->hist[ph].count,
			    "sum", f->hist[ph].sum));
		}
		json_array_append_new(a, json_pack("{s:I, s:o, s:I, s:I, s:I, s:b, s:o}",
		    "farm", (json_int_t)f->id, "states", states,
		    "plotted_total", (json_int_t)f->plotted_total,
		    "errors_total", (json_int_t)f->errors_total,
		    "in_flight", (json_int_t)f->in_flight, "usable", f->fd >= 0, "hist", hists));
	}
	return a;
}
