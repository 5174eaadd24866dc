/*
 * metrics.c: Prometheus text exposition (version 0.0.4).  Names are
 * farmd_<subsystem>_<what>[_total]; counters come from struct metrics,
 * gauges are read from the subsystems at render time.
 */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "blockstore.h"
#include "clock.h"
#include "history.h"
#include "plot.h"
#include "resync.h"
#include "scrub.h"
#include "control.h"
#include "farmd.h"
#include "pool.h"

struct mbuf {
	char *s;
	size_t len, cap;
};

static void __attribute__((format(printf, 2, 3)))
mb_printf(struct mbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		b->cap = (b->cap + (size_t)n + 1) * 2;
		if ((b->s = realloc(b->s, b->cap)) == NULL)
			abort();
	}
}

static void
mb_head(struct mbuf *b, const char *name, const char *type, const char *help)
{
	mb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One counter family labelled by worker kind. */
static void
mb_by_kind(struct mbuf *b, const char *name, const char *help, const uint64_t *v)
{
	mb_head(b, name, "counter", help);
	for (int k = 0; k < WIRE_KIND_COUNT; k++)
		mb_printf(b, "%s{kind=\"%s\"} %llu\n", name, wire_kind_name((enum wire_kind)k),
		    (unsigned long long)v[k]);
}

static void
mb_counter(struct mbuf *b, const char *name, const char *help, uint64_t v)
{
	mb_head(b, name, "counter", help);
	mb_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* One gauge family by worker kind, read from the pools' status: the
 * integer field key, or 1/0 for "field key equals match". */
static void
mb_pool_gauge(struct mbuf *b, json_t *pools, const char *name, const char *help,
    const char *key, const char *match)
{
	json_t *p;
	size_t i;

	mb_head(b, name, "gauge", help);
	json_array_foreach(pools, i, p) {
		json_t *v = json_object_get(p, key);

		mb_printf(b, "%s{kind=\"%s\"} %lld\n", name,
		    json_string_value(json_object_get(p, "kind")), match != NULL ?
		    (long long)(strcmp(json_string_value(v), match) == 0) : json_integer_value(v));
	}
}

static void
metrics_pools(struct mbuf *b, struct farmd *d)
{
	json_t *pools = pool_json_pools(d->pool);

	mb_pool_gauge(b, pools, "farmd_workers", "Workers alive (hello received), by kind.",
	    "alive", NULL);
	mb_pool_gauge(b, pools, "farmd_workers_configured", "Configured pool size, by kind.",
	    "size", NULL);
	mb_pool_gauge(b, pools, "farmd_pool_degraded",
	    "1 when the pool hit its restart intensity limit.", "state", "degraded");
	mb_pool_gauge(b, pools, "farmd_jobs_queued", "Jobs waiting for a worker, by kind.",
	    "queued", NULL);
	json_decref(pools);
}

static void
mb_gauge(struct mbuf *b, const char *name, const char *help, uint64_t v)
{
	mb_head(b, name, "gauge", help);
	mb_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* Derived from the scrub's own status: its counters are per run. */
static void
metrics_scrub(struct mbuf *b, struct farmd *d)
{
	json_t *st = scrub_json(d->scrub);
	int64_t started = json_integer_value(json_object_get(st, "started_ms"));
	int64_t done = json_integer_value(json_object_get(st, "last_done_ms"));
	int running = strcmp(json_string_value(json_object_get(st, "state")), "idle") != 0;

	mb_gauge(b, "farmd_scrub_running", "1 while a scrub run is under way (or paused).",
	    (uint64_t)running);
	mb_gauge(b, "farmd_scrub_checked_blocks", "Blocks checked by the current or last run.",
	    (uint64_t)json_integer_value(json_object_get(st, "checked")));
	mb_gauge(b, "farmd_scrub_corruptions", "Corrupt or missing blocks found by the current "
	    "or last run.", (uint64_t)json_integer_value(json_object_get(st, "corruptions")));
	mb_head(b, "farmd_scrub_last_run_seconds", "gauge",
	    "Duration of the last finished scrub run.");
	mb_printf(b, "farmd_scrub_last_run_seconds %.3f\n",
	    !running && done >= started && started > 0 ? (double)(done - started) / 1000.0 : 0.0);
	json_decref(st);
}

static void
metrics_blocks(struct mbuf *b, struct farmd *d)
{
	struct blockstore_stats s;
	uint64_t done, failed, collected, last_us;

	blockstore_stats(d->blocks, &s);
	resync_counters(d->resync, &done, &failed, &collected, &last_us);
	mb_gauge(b, "farmd_blocks", "Blocks stored.", s.blocks);
	mb_gauge(b, "farmd_block_bytes", "Logical bytes of stored blocks.", s.bytes);
	mb_gauge(b, "farmd_block_stored_bytes", "Bytes the block store uses (disk and inline).",
	    s.stored);
	mb_gauge(b, "farmd_block_reserved_bytes", "Bytes reserved by writes in flight.",
	    s.reserved);
	mb_counter(b, "farmd_block_read_bytes_total", "Bytes read from block files and rows.",
	    s.bytes_read);
	mb_counter(b, "farmd_block_written_bytes_total", "Bytes written for blocks.",
	    s.bytes_written);
	mb_counter(b, "farmd_block_corruptions_total", "Reads that found a block corrupt.",
	    s.corruptions);
	mb_counter(b, "farmd_block_missing_total", "Reads that found a block file missing.",
	    s.missing);
	mb_gauge(b, "farmd_resync_queue_length", "Items in the resync queue.",
	    resync_queue_len(d->resync));
	mb_gauge(b, "farmd_block_errors", "Blocks in the resync error table.",
	    resync_error_count(d->resync));
	mb_counter(b, "farmd_resync_items_total", "Resync items processed.", done);
	mb_counter(b, "farmd_resync_failures_total", "Resync attempts that failed.", failed);
	mb_counter(b, "farmd_blocks_collected_total", "Unreferenced blocks deleted.", collected);
	mb_gauge(b, "farmd_resync_last_item_microseconds", "Duration of the last resync item.",
	    last_us);
	metrics_scrub(b, d);
}

/* One family from a per-farm integer (or boolean) field. */
static void
mb_farm_value(struct mbuf *b, json_t *farms, const char *name, const char *type,
    const char *help, const char *key)
{
	json_t *f;
	size_t i;

	mb_head(b, name, type, help);
	json_array_foreach(farms, i, f) {
		json_t *v = json_object_get(f, key);

		mb_printf(b, "%s{farm=\"%lld\"} %lld\n", name,
		    (long long)json_integer_value(json_object_get(f, "farm")),
		    json_is_boolean(v) ? (long long)json_is_true(v) : (long long)json_integer_value(v));
	}
}

/* One family per farm value, labelled by farm (and state or phase). */
static void
metrics_farms(struct mbuf *b, struct farmd *d)
{
	json_t *farms = plot_json_metrics(d->plot), *f, *v;
	const char *key;
	size_t i;

	mb_head(b, "farmd_farm_sectors", "gauge", "Sectors by state, per farm.");
	json_array_foreach(farms, i, f)
		json_object_foreach(json_object_get(f, "states"), key, v)
			mb_printf(b, "farmd_farm_sectors{farm=\"%lld\",state=\"%s\"} %lld\n",
			    (long long)json_integer_value(json_object_get(f, "farm")), key,
			    (long long)json_integer_value(v));
	mb_farm_value(b, farms, "farmd_farm_sectors_in_flight", "gauge",
	    "Sectors being plotted, per farm.", "in_flight");
	mb_farm_value(b, farms, "farmd_farm_usable", "gauge",
	    "1 when the farm's files are usable.", "usable");
	mb_farm_value(b, farms, "farmd_farm_sectors_plotted_total", "counter",
	    "Sectors plotted (or replotted) since start, per farm.", "plotted_total");
	mb_farm_value(b, farms, "farmd_farm_plot_errors_total", "counter",
	    "Sector pipeline failures (each retried), per farm.", "errors_total");
	mb_head(b, "farmd_farm_plot_seconds", "histogram",
	    "Time per plotted sector: total and its read, encode and write phases.");
	json_array_foreach(farms, i, f)
		json_object_foreach(json_object_get(f, "hist"), key, v) {
			long long farm = (long long)json_integer_value(json_object_get(f, "farm"));
			json_t *bk = json_object_get(v, "buckets");
			long long cum = 0;

			for (int k = 0; k < PLOT_HIST_BUCKETS; k++) {
				cum += (long long)json_integer_value(json_array_get(bk, (size_t)k));
				mb_printf(b, "farmd_farm_plot_seconds_bucket{farm=\"%lld\",phase=\"%s\","
				    "le=\"%g\"} %lld\n", farm, key, plot_hist_bounds[k], cum);
			}
			mb_printf(b, "farmd_farm_plot_seconds_bucket{farm=\"%lld\",phase=\"%s\","
			    "le=\"+Inf\"} %lld\n", farm, key,
			    (long long)json_integer_value(json_object_get(v, "count")));
			mb_printf(b, "farmd_farm_plot_seconds_sum{farm=\"%lld\",phase=\"%s\"} %.6f\n",
			    farm, key, json_real_value(json_object_get(v, "sum")));
			mb_printf(b, "farmd_farm_plot_seconds_count{farm=\"%lld\",phase=\"%s\"} %lld\n",
			    farm, key, (long long)json_integer_value(json_object_get(v, "count")));
		}
	json_decref(farms);
}

static void
metrics_history(struct mbuf *b, struct farmd *d)
{
	uint64_t ingested, rejections;

	history_counters(d->history, &ingested, &rejections);
	mb_gauge(b, "farmd_history_archived_height", "Last archived height (the checkpoint).",
	    history_archived_height(d->history));
	mb_gauge(b, "farmd_history_size", "Segments archived.", history_size(d->history));
	mb_counter(b, "farmd_history_blocks_ingested_total", "Chain blocks ingested.", ingested);
	mb_counter(b, "farmd_history_rejections_total", "Blocks the archiver rejected.",
	    rejections);
}

char *
metrics_render(struct farmd *d)
{
	struct metrics *m = d->metrics;
	struct mbuf b = { 0 };

	mb_printf(&b, "%s", "");
	mb_head(&b, "farmd_up", "gauge", "1 while farmd runs.");
	mb_printf(&b, "farmd_up 1\n");
	mb_head(&b, "farmd_uptime_seconds", "gauge", "Seconds since farmd started.");
	mb_printf(&b, "farmd_uptime_seconds %llu\n",
	    (unsigned long long)((clock_mono_ms() - d->start_mono_ms) / 1000));
	metrics_pools(&b, d);
	mb_by_kind(&b, "farmd_worker_restarts_total", "Worker replacements, by kind.",
	    m->worker_restarts);
	mb_by_kind(&b, "farmd_worker_crashes_total",
	    "Workers that died without being asked to, by kind.", m->worker_crashes);
	mb_by_kind(&b, "farmd_worker_timeouts_total",
	    "Workers killed for exceeding a job deadline, by kind.", m->worker_timeouts);
	mb_by_kind(&b, "farmd_jobs_done_total", "Jobs answered by a worker, by kind.",
	    m->jobs_done);
	mb_by_kind(&b, "farmd_jobs_failed_total",
	    "Job attempts that failed (worker died, timeout, protocol error), by kind.",
	    m->jobs_failed);
	mb_by_kind(&b, "farmd_jobs_retried_total", "Job attempts retried, by kind.",
	    m->jobs_retried);
	mb_counter(&b, "farmd_protocol_errors_worker_total",
	    "Worker connections dropped for a protocol error.", m->protocol_errors_worker);
	mb_counter(&b, "farmd_protocol_errors_admin_total",
	    "Admin connections dropped for a protocol error.", m->protocol_errors_admin);
	mb_counter(&b, "farmd_admin_requests_total", "Admin requests received.",
	    m->admin_requests);
	mb_counter(&b, "farmd_admin_errors_total", "Admin requests answered with an error.",
	    m->admin_errors);
	mb_counter(&b, "farmd_admin_denied_total", "Admin requests refused for lack of access.",
	    m->admin_denied);
	metrics_blocks(&b, d);
	metrics_history(&b, d);
	metrics_farms(&b, d);
	mb_head(&b, "farmd_admin_clients", "gauge", "Admin connections open.");
	mb_printf(&b, "farmd_admin_clients %zu\n", control_clients(d->control));
	return b.s;
}
