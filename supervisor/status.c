/*
 * status.c: the `status` document (status.h).  It reads the pools' and
 * plotting's own stats and struct farmd; it keeps no state.
 */
#include "status.h"

#include <stdlib.h>
#include <unistd.h>

#include "clock.h"
#include "cluster.h"
#include "farmd.h"
#include "plot.h"
#include "pool.h"

json_t *
status_json(struct farmd *d)
{
	struct pool_stats ps;
	struct plot_summary pl;
	struct pool_worker_info *w;
	size_t nw;
	json_t *o;

	pool_stats(d->pool, &ps);
	plot_summary(d->plot, &pl);
	w = pool_workers(d->pool, &nw);
	o = json_pack("{s:s, s:i, s:I, s:s, s:s, s:o, s:s, s:o, s:o, s:o, s:o}",
	    "version", FARMD_VERSION, "pid", (int)getpid(),
	    "uptime_s", (json_int_t)((clock_mono_ms() - d->start_mono_ms) / 1000),
	    "state_dir", d->state_dir, "admin_socket", d->admin_path,
	    "http_listen", d->http_listen[0] ? json_string(d->http_listen) : json_null(),
	    "state", d->stopping ? "stopping" : d->ready ? "running" : "starting",
	    "sandbox", pool_json_sandbox(&ps), "pools", pool_json_pools(&ps),
	    "workers", pool_json_workers(w, nw), "plotting", plot_json_summary(&pl));
	free(w);
	json_object_set_new(o, "cluster", cluster_json_status(d->cluster));
	return o;
}
