/*
 * metrics.c: Prometheus text exposition (version 0.0.4).  Names are
 * farmd_<subsystem>_<what>[_total] in base units (seconds, bytes: a
 * duration kept in ms or us is rendered as float seconds), every family
 * has HELP and TYPE, and the text passes `promtool check metrics`
 * (tests/integration/test_ops_output.py).  Every value, counter or
 * gauge, is read at render time from the stats its subsystem exposes
 * (pool_stats, control_stats, plot_farm_stats, ...): metrics keeps no
 * count of its own, and nothing below it knows it exists.
 */
#include "metrics.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact.h"
#include "blockstore.h"
#include "clock.h"
#include "cluster.h"
#include "cluster_repair.h"
#include "control.h"
#include "farmd.h"
#include "history.h"
#include "plot.h"
#include "plotter.h"
#include "pool.h"
#include "resync.h"
#include "rplot.h"
#include "scrub.h"

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

/* One family labelled by worker kind. */
static void
mb_by_kind(struct mbuf *b, const struct pool_stats *ps, const char *name, const char *type,
    const char *help, const uint64_t v[WIRE_KIND_COUNT])
{
	mb_head(b, name, type, help);
	for (int k = 0; k < WIRE_KIND_COUNT; k++)
		mb_printf(b, "%s{kind=\"%s\"} %llu\n", name, ps->kinds[k].kind,
		    (unsigned long long)v[k]);
}

static void
mb_counter(struct mbuf *b, const char *name, const char *help, uint64_t v)
{
	mb_head(b, name, "counter", help);
	mb_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* The pools' gauges, then their counters, each family by kind. */
static void
metrics_pools(struct mbuf *b, const struct pool_stats *ps)
{
	uint64_t alive[WIRE_KIND_COUNT], size[WIRE_KIND_COUNT], degraded[WIRE_KIND_COUNT];
	uint64_t queued[WIRE_KIND_COUNT], restarts[WIRE_KIND_COUNT], crashes[WIRE_KIND_COUNT];
	uint64_t timeouts[WIRE_KIND_COUNT], done[WIRE_KIND_COUNT], failed[WIRE_KIND_COUNT];
	uint64_t retried[WIRE_KIND_COUNT];

	for (int k = 0; k < WIRE_KIND_COUNT; k++) {
		const struct pool_kind_stats *ks = &ps->kinds[k];

		alive[k] = ks->alive;
		size[k] = ks->size;
		degraded[k] = ks->degraded != 0;
		queued[k] = ks->queued;
		restarts[k] = ks->restarts;
		crashes[k] = ks->crashes;
		timeouts[k] = ks->timeouts;
		done[k] = ks->jobs_done;
		failed[k] = ks->jobs_failed;
		retried[k] = ks->jobs_retried;
	}
	mb_by_kind(b, ps, "farmd_workers", "gauge", "Workers alive (hello received), by kind.",
	    alive);
	mb_by_kind(b, ps, "farmd_workers_configured", "gauge", "Configured pool size, by kind.",
	    size);
	mb_by_kind(b, ps, "farmd_pool_degraded", "gauge",
	    "1 when the pool hit its restart intensity limit.", degraded);
	mb_by_kind(b, ps, "farmd_jobs_queued", "gauge", "Jobs waiting for a worker, by kind.",
	    queued);
	mb_by_kind(b, ps, "farmd_worker_restarts_total", "counter",
	    "Worker replacements, by kind.", restarts);
	mb_by_kind(b, ps, "farmd_worker_crashes_total", "counter",
	    "Workers that died without being asked to, by kind.", crashes);
	mb_by_kind(b, ps, "farmd_worker_timeouts_total", "counter",
	    "Workers killed for exceeding a job deadline, by kind.", timeouts);
	mb_by_kind(b, ps, "farmd_jobs_done_total", "counter",
	    "Jobs answered by a worker, by kind.", done);
	mb_by_kind(b, ps, "farmd_jobs_failed_total", "counter",
	    "Job attempts that failed (worker died, timeout, protocol error), by kind.", failed);
	mb_by_kind(b, ps, "farmd_jobs_retried_total", "counter", "Job attempts retried, by kind.",
	    retried);
}

static void
mb_gauge(struct mbuf *b, const char *name, const char *help, uint64_t v)
{
	mb_head(b, name, "gauge", help);
	mb_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* Derived from the scrub's own stats: its counters are per run. */
static void
metrics_scrub(struct mbuf *b, struct farmd *d)
{
	struct scrub_stats st;
	int64_t started, done;
	int running;

	scrub_stats(d->scrub, &st);
	started = (int64_t)st.started_ms;
	done = (int64_t)st.last_done_ms;
	running = strcmp(st.state, "idle") != 0;
	mb_gauge(b, "farmd_scrub_running", "1 while a scrub run is under way (or paused).",
	    (uint64_t)running);
	mb_gauge(b, "farmd_scrub_checked_blocks", "Blocks checked by the current or last run.",
	    st.checked);
	mb_gauge(b, "farmd_scrub_corruptions", "Corrupt or missing blocks found by the current "
	    "or last run.", st.corruptions);
	mb_head(b, "farmd_scrub_last_run_seconds", "gauge",
	    "Duration of the last finished scrub run.");
	mb_printf(b, "farmd_scrub_last_run_seconds %.3f\n",
	    !running && done >= started && started > 0 ? (double)(done - started) / 1000.0 : 0.0);
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
	mb_head(b, "farmd_resync_last_item_seconds", "gauge",
	    "Duration of the last resync item.");
	mb_printf(b, "farmd_resync_last_item_seconds %.6f\n", (double)last_us / 1e6);
	metrics_scrub(b, d);
}

/* One family from a per-farm value: the uint64_t at offset off in struct
 * plot_farm_stats. */
static void
mb_farm_value(struct mbuf *b, const struct plot_farm_stats *fs, size_t n, const char *name,
    const char *type, const char *help, size_t off)
{
	mb_head(b, name, type, help);
	for (size_t i = 0; i < n; i++) {
		uint64_t v;

		memcpy(&v, (const char *)&fs[i] + off, sizeof(v));
		mb_printf(b, "%s{farm=\"%lld\"} %lld\n", name, (long long)fs[i].id, (long long)v);
	}
}

static void
mb_farm_hist(struct mbuf *b, const struct plot_farm_stats *fs, size_t n)
{
	mb_head(b, "farmd_farm_plot_seconds", "histogram",
	    "Time per plotted sector: total and its read, encode and write phases.");
	for (size_t i = 0; i < n; i++)
		for (int ph = 0; ph < PLOT_PHASES; ph++) {
			long long farm = (long long)fs[i].id, cum = 0;
			const char *key = fs[i].hist[ph].phase;

			for (int k = 0; k < PLOT_HIST_BUCKETS; k++) {
				cum += (long long)fs[i].hist[ph].bucket[k];
				mb_printf(b, "farmd_farm_plot_seconds_bucket{farm=\"%lld\",phase=\"%s\","
				    "le=\"%g\"} %lld\n", farm, key, plot_hist_bounds[k], cum);
			}
			mb_printf(b, "farmd_farm_plot_seconds_bucket{farm=\"%lld\",phase=\"%s\","
			    "le=\"+Inf\"} %lld\n", farm, key, (long long)fs[i].hist[ph].count);
			mb_printf(b, "farmd_farm_plot_seconds_sum{farm=\"%lld\",phase=\"%s\"} %.6f\n",
			    farm, key, fs[i].hist[ph].sum);
			mb_printf(b, "farmd_farm_plot_seconds_count{farm=\"%lld\",phase=\"%s\"} %lld\n",
			    farm, key, (long long)fs[i].hist[ph].count);
		}
}

#define FARM_FIELD(m) offsetof(struct plot_farm_stats, m)

/* One family per farm value, labelled by farm (and state or phase). */
static void
metrics_farms(struct mbuf *b, struct farmd *d)
{
	size_t n;
	struct plot_farm_stats *fs = plot_farm_stats(d->plot, &n);

	mb_head(b, "farmd_farm_sectors", "gauge", "Sectors by state, per farm.");
	for (size_t i = 0; i < n; i++)
		for (int k = 0; k < PLOT_SECTOR_STATES; k++)
			mb_printf(b, "farmd_farm_sectors{farm=\"%lld\",state=\"%s\"} %lld\n",
			    (long long)fs[i].id, fs[i].sectors[k].name, (long long)fs[i].sectors[k].n);
	mb_farm_value(b, fs, n, "farmd_farm_sectors_in_flight", "gauge",
	    "Sectors being plotted, per farm.", FARM_FIELD(in_flight));
	mb_farm_value(b, fs, n, "farmd_farm_usable", "gauge",
	    "1 when the farm's files are usable.", FARM_FIELD(usable));
	mb_farm_value(b, fs, n, "farmd_farm_sectors_plotted_total", "counter",
	    "Sectors plotted (or replotted) since start, per farm.", FARM_FIELD(plotted_total));
	mb_farm_value(b, fs, n, "farmd_farm_plot_errors_total", "counter",
	    "Sector pipeline failures (each retried), per farm.", FARM_FIELD(errors_total));
	mb_farm_hist(b, fs, n);
	free(fs);
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

static void
mb_hist(struct mbuf *b, const char *name, const char *help, const struct artifact_hist *h)
{
	mb_head(b, name, "histogram", help);
	for (int i = 0; i < ARTIFACT_BUCKETS; i++)
		mb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, artifact_buckets[i],
		    (unsigned long long)h->bucket[i]);
	mb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
	    (unsigned long long)h->count, name, h->sum, name, (unsigned long long)h->count);
}

/* Validation code (DESIGN §7): artifact_stats. */
static void
metrics_artifacts(struct mbuf *b, struct farmd *d)
{
	struct artifact_stats st;

	artifacts_stats(d->artifacts, &st);
	mb_counter(b, "farmd_artifact_compile_jobs_total", "Compile jobs submitted.",
	    st.compile_jobs);
	mb_hist(b, "farmd_artifact_prepare_seconds", "Compile jobs answered, by duration.",
	    &st.prepare);
	mb_hist(b, "farmd_artifact_execute_seconds", "Execute jobs answered, by duration.",
	    &st.execute);
	mb_head(b, "farmd_artifact_failures_total", "counter",
	    "Artifact preparations that failed, by kind.");
	mb_printf(b, "farmd_artifact_failures_total{kind=\"deterministic\"} %llu\n"
	    "farmd_artifact_failures_total{kind=\"transient\"} %llu\n",
	    (unsigned long long)st.failures_deterministic,
	    (unsigned long long)st.failures_transient);
	mb_counter(b, "farmd_artifact_mismatches_total",
	    "Executions that found an artifact's file changed (it was prepared again).",
	    st.mismatches);
	mb_gauge(b, "farmd_artifact_cache_bytes", "Bytes of prepared artifacts.", st.cache_bytes);
	mb_head(b, "farmd_artifacts", "gauge", "Artifacts by state.");
	mb_printf(b, "farmd_artifacts{state=\"preparing\"} %llu\n"
	    "farmd_artifacts{state=\"prepared\"} %llu\nfarmd_artifacts{state=\"failed\"} %llu\n",
	    (unsigned long long)st.preparing, (unsigned long long)st.prepared,
	    (unsigned long long)st.failed);
}

/* The cluster (DESIGN §15): cluster_stats and gap repair's own. */
static void
metrics_cluster(struct mbuf *b, struct farmd *d)
{
	struct cluster_repair_stats rs;
	struct cluster_stats st;

	cluster_stats(d->cluster, &st);
	cluster_repair_stats(d->repair, &rs);
	mb_head(b, "farmd_cluster_state", "gauge", "1 for the cluster connection's state.");
	for (int i = CLUSTER_DISABLED; i <= CLUSTER_CLOSED; i++)
		mb_printf(b, "farmd_cluster_state{state=\"%s\"} %d\n",
		    cluster_state_name((enum cluster_state)i), (int)st.state == i);
	mb_gauge(b, "farmd_cluster_peers", "Peers heard from in the last 30 s.", st.peers);
	mb_gauge(b, "farmd_cluster_max_payload_bytes", "The NATS server's max_payload.",
	    st.max_payload);
	const struct { const char *name, *help; uint64_t v; } counters[] = {
		{ "farmd_cluster_requests_total", "Requests sent to peers.", st.requests },
		{ "farmd_cluster_answers_total", "Answers received complete.", st.answers },
		{ "farmd_cluster_served_total", "Peers' requests this node answered.", st.served },
		{ "farmd_cluster_sent_bytes_total", "Payload bytes published.", st.bytes_sent },
		{ "farmd_cluster_received_bytes_total", "Payload bytes received.",
		  st.bytes_received },
		{ "farmd_cluster_failures_total", "Requests that failed or timed out.", st.failures },
		{ "farmd_cluster_bad_peer_answers_total",
		  "Answers from peers with wrong bytes (the peer is marked bad).", st.bad_peers },
		{ "farmd_cluster_malformed_total", "Messages dropped as malformed.", st.malformed },
		{ "farmd_cluster_reconnects_total", "Reconnections to the NATS server.",
		  st.reconnects },
		{ "farmd_gap_repair_requests_total", "Heights asked of peers.", rs.asked },
		{ "farmd_gap_repair_heights_total", "Heights ingested from peers.", rs.repaired },
		{ "farmd_gap_repair_refused_total", "Peers' blocks the ingest refused.", rs.refused },
		{ "farmd_gap_repair_bytes_total", "Bytes of blocks ingested from peers.", rs.bytes },
	};

	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
		mb_counter(b, counters[i].name, counters[i].help, counters[i].v);
}

/* A counter family with one sample per result label. */
static void
mb_results(struct mbuf *b, const char *name, const char *help, const char *const *result,
    const uint64_t *v, size_t n)
{
	mb_head(b, name, "counter", help);
	for (size_t i = 0; i < n; i++)
		mb_printf(b, "%s{result=\"%s\"} %llu\n", name, result[i], (unsigned long long)v[i]);
}

/* Remote plotting, both sides (rplot_stats, plotter_stats), and the
 * peers marked bad now (a failed spot check, a lying block answer). */
static void
metrics_rplot(struct mbuf *b, struct farmd *d)
{
	uint64_t now = clock_real_ms(), bad = 0;
	struct plotter_stats ps;
	struct rplot_stats rs;
	struct cluster_peer *peers;
	size_t n = 0;

	rplot_stats(d->rplot, &rs);
	plotter_stats(d->plotter, &ps);
	if ((peers = cluster_peers(d->cluster, &n)) != NULL)
		for (size_t i = 0; i < n; i++)
			bad += peers[i].bad_until_ms > now;
	free(peers);
	mb_gauge(b, "farmd_cluster_peers_bad", "Peers marked bad now.", bad);
	mb_gauge(b, "farmd_cluster_remote_sectors_in_flight",
	    "Sector attempts plotted by remote plotters now.", rs.in_flight);
	mb_results(b, "farmd_cluster_remote_sectors_total",
	    "Remote sector attempts by outcome (local: no plotter answered).",
	    (const char *const[]){ "plotted", "failed", "local" },
	    (const uint64_t[]){ rs.plotted, rs.failed, rs.fallbacks }, 3);
	mb_counter(b, "farmd_cluster_remote_spot_checks_failed_total",
	    "Remote sectors whose decoded pieces did not match their piece roots.",
	    rs.spot_checks_failed);
	mb_counter(b, "farmd_cluster_remote_received_bytes_total",
	    "Encoded sector bytes received from plotters.", rs.bytes_received);
	mb_counter(b, "farmd_cluster_remote_chunks_refused_total",
	    "Chunks from plotters of the wrong length or position.", rs.chunks_refused);
	mb_gauge(b, "farmd_cluster_plotter_free", "Sector jobs this plotter takes now.", ps.free);
	mb_results(b, "farmd_cluster_plotter_sectors_total", "Sector jobs of farmers by outcome.",
	    (const char *const[]){ "done", "failed", "refused" },
	    (const uint64_t[]){ ps.done, ps.failed, ps.refused }, 3);
	mb_counter(b, "farmd_cluster_plotter_sent_bytes_total",
	    "Encoded bytes farmers acknowledged.", ps.bytes_sent);
	mb_counter(b, "farmd_cluster_plotter_fetched_pieces_total",
	    "Pieces this plotter lacked and fetched from peers.", ps.pieces_fetched);
}

char *
metrics_render(struct farmd *d)
{
	struct mbuf b = { 0 };
	struct pool_stats ps;
	struct control_stats cs;

	pool_stats(d->pool, &ps);
	control_stats(d->control, &cs);
	mb_printf(&b, "%s", "");
	mb_head(&b, "farmd_up", "gauge", "1 while farmd runs.");
	mb_printf(&b, "farmd_up 1\n");
	mb_head(&b, "farmd_uptime_seconds", "gauge", "Seconds since farmd started.");
	mb_printf(&b, "farmd_uptime_seconds %llu\n",
	    (unsigned long long)((clock_mono_ms() - d->start_mono_ms) / 1000));
	metrics_pools(&b, &ps);
	mb_counter(&b, "farmd_protocol_errors_worker_total",
	    "Worker connections dropped for a protocol error.", ps.protocol_errors);
	mb_counter(&b, "farmd_protocol_errors_admin_total",
	    "Admin connections dropped for a protocol error.", cs.protocol_errors);
	mb_counter(&b, "farmd_admin_requests_total", "Admin requests received.", cs.requests);
	mb_counter(&b, "farmd_admin_errors_total", "Admin requests answered with an error.",
	    cs.errors);
	mb_counter(&b, "farmd_admin_denied_total", "Admin requests refused for lack of access.",
	    cs.denied);
	metrics_blocks(&b, d);
	metrics_history(&b, d);
	metrics_artifacts(&b, d);
	metrics_farms(&b, d);
	metrics_cluster(&b, d);
	metrics_rplot(&b, d);
	mb_head(&b, "farmd_admin_clients", "gauge", "Admin connections open.");
	mb_printf(&b, "farmd_admin_clients %zu\n", cs.clients);
	return b.s;
}
