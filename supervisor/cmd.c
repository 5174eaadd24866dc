/*
 * cmd.c: the admin command table, its dispatch and the commands of the
 * supervisor itself.  Subsystems add their commands as rows here, with a
 * handler in their cmd_*.c that ends in exactly one control_reply*()
 * (now or from a callback).  Invariants: every request gets exactly one
 * reply; a handler runs only after its access level and argument count
 * were checked, so it may index argv[0..min_args-1] unchecked.
 */
#include "cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_handlers.h"
#include "farmd.h"
#include "human.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "reply.h"
#include "status.h"
#include "words.h"

struct cmd {
	const char *words;              /* "status", "block put", ... */
	enum control_access access;
	int min_args, max_args;         /* after the words; -1 = no limit */
	const char *usage;
	void (*fn)(struct control_req *req, int argc, char **argv);
};

/* ---- text tables ---------------------------------------------------- */

/* The tables render the JSON documents, so text and --json never differ
 * in what they say. */
static void
tb_workers(struct tbuf *b, json_t *a)
{
	json_t *w;
	size_t i;

	tb_printf(b, "%-8s %-8s %-9s %s\n", "PID", "KIND", "STATE", "JOB");
	json_array_foreach(a, i, w) {
		if (json_is_integer(json_object_get(w, "job")))
			tb_printf(b, "%-8lld %-8s %-9s %lld\n", ji(w, "pid"), js(w, "kind"),
			    js(w, "state"), ji(w, "job"));
		else
			tb_printf(b, "%-8lld %-8s %-9s -\n", ji(w, "pid"), js(w, "kind"),
			    js(w, "state"));
	}
}

static void
tb_pools(struct tbuf *b, json_t *a)
{
	json_t *k;
	size_t i;

	tb_printf(b, "%-8s %5s %6s %9s %7s  %-8s %s\n", "POOL", "SIZE", "ALIVE", "RESTARTS",
	    "QUEUED", "STATE", "KERNEL");
	json_array_foreach(a, i, k)
		tb_printf(b, "%-8s %5lld %6lld %9lld %7lld  %-8s %s\n", js(k, "kind"),
		    ji(k, "size"), ji(k, "alive"), ji(k, "restarts"), ji(k, "queued"),
		    js(k, "state"), js(k, "kernel")[0] ? js(k, "kernel") : "-");
}

static void
tb_plotting(struct tbuf *b, json_t *pl)
{
	long long farms = ji(pl, "farms"), errors = ji(pl, "errors");

	tb_printf(b, "plotting     %lld farm%s, %lld/%lld sectors plotted, %lld in flight, %lld "
	    "error%s%s%s\n\n", farms, farms == 1 ? "" : "s", ji(pl, "plotted"),
	    ji(pl, "sectors"), ji(pl, "in_flight"), errors, errors == 1 ? "" : "s",
	    js(pl, "last_error")[0] ? "; last: " : "", js(pl, "last_error"));
}

/* "off" without a cluster: the node name matters only in one. */
static void
tb_cluster_line(struct tbuf *b, json_t *c)
{
	size_t n = json_array_size(json_object_get(c, "peers"));

	if (strcmp(js(c, "state"), "disabled") == 0)
		tb_printf(b, "cluster      off\n");
	else
		tb_printf(b, "cluster      %s as %s, %zu peer%s\n", js(c, "state"), js(c, "node"), n,
		    n == 1 ? "" : "s");
}

static void
tb_status(struct tbuf *b, json_t *o)
{
	json_t *sandbox = json_object_get(o, "sandbox");
	char up[HUMAN_LEN];

	tb_printf(b, "farmd %s  pid %lld  up %s  %s\n", js(o, "version"), ji(o, "pid"),
	    human_duration(up, (uint64_t)ji(o, "uptime_s")), js(o, "state"));
	tb_printf(b, "state dir    %s\nadmin socket %s\nhttp         %s\nsandbox     ",
	    js(o, "state_dir"), js(o, "admin_socket"),
	    js(o, "http_listen")[0] ? js(o, "http_listen") : "off");
	for (int i = 0; i < WIRE_SANDBOX_LAYERS; i++)
		tb_printf(b, " %s%s", json_is_true(json_object_get(sandbox,
		    wire_sandbox_layers[i])) ? "+" : "-", wire_sandbox_layers[i]);
	tb_printf(b, "\n");
	tb_cluster_line(b, json_object_get(o, "cluster"));
	tb_plotting(b, json_object_get(o, "plotting"));
	tb_pools(b, json_object_get(o, "pools"));
	tb_printf(b, "\n");
	tb_workers(b, json_object_get(o, "workers"));
}

/* ---- supervisor commands -------------------------------------------- */

static void
cmd_status(struct control_req *req, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	reply_table(req, status_json(req->d), tb_status);
}

static void
cmd_workers(struct control_req *req, int argc, char **argv)
{
	struct pool_worker_info *w;
	size_t n;

	(void)argc;
	(void)argv;
	w = pool_workers(req->d->pool, &n);
	reply_table(req, pool_json_workers(w, n), tb_workers);
	free(w);
}

static void
cmd_shutdown(struct control_req *req, int argc, char **argv)
{
	const struct cmd_env *env = req->arg;
	char why[96];

	(void)argc;
	(void)argv;
	snprintf(why, sizeof(why), "shutdown requested by uid %u (pid %d)",
	    (unsigned)req->uid, (int)req->pid);
	control_reply(req, json_pack("{s:b}", "stopping", 1), "farmd is shutting down\n");
	env->stop(env->arg, 0, why);
}

static void
cmd_metrics(struct control_req *req, int argc, char **argv)
{
	char *text = metrics_render(req->d);

	(void)argc;
	(void)argv;
	control_reply(req, json_pack("{s:s}", "exposition", text), text);
	free(text);
}

/* ---- table and dispatch --------------------------------------------- */

/* One row per command; cmd_find picks the longest match, so rows may
 * stand in any order (a subsystem's rows together). */
static const struct cmd cmds[] = {
	{ "status", ACCESS_MONITOR, 0, 0, "status", cmd_status },
	{ "workers", ACCESS_MONITOR, 0, 0, "workers", cmd_workers },
	{ "metrics", ACCESS_MONITOR, 0, 0, "metrics", cmd_metrics },
	{ "shutdown", ACCESS_ADMIN, 0, 0, "shutdown", cmd_shutdown },
	{ "block put", ACCESS_ADMIN, 1, 1, "block put FILE", cmd_block_put },
	{ "block get", ACCESS_ADMIN, 1, 1, "block get HASH [-o FILE]", cmd_block_get },
	{ "block stat", ACCESS_MONITOR, 1, 1, "block stat HASH", cmd_block_stat },
	{ "block rm", ACCESS_ADMIN, 1, 1, "block rm HASH", cmd_block_rm },
	{ "block purge", ACCESS_ADMIN, 1, 1, "block purge HASH", cmd_block_purge },
	{ "block list-errors", ACCESS_MONITOR, 0, 0, "block list-errors",
	    cmd_block_list_errors },
	{ "block retry-now", ACCESS_ADMIN, 1, 1, "block retry-now (HASH | --all)",
	    cmd_block_retry_now },
	{ "scrub", ACCESS_ADMIN, 1, 1, "scrub start|pause|resume|cancel|status", cmd_scrub },
	{ "scrub status", ACCESS_MONITOR, 0, 0, "scrub status", cmd_scrub },
	{ "history ingest", ACCESS_ADMIN, 2, 2, "history ingest HEIGHT FILE | PATH...",
	    cmd_history_ingest },
	{ "history status", ACCESS_MONITOR, 0, 0, "history status", cmd_history_status },
	{ "history segments", ACCESS_MONITOR, 0, 0, "history segments", cmd_history_segments },
	{ "farm add", ACCESS_ADMIN, 3, 5, "farm add DIR --sectors N [--profile demo|production]",
	    cmd_farm_add },
	{ "farm list", ACCESS_MONITOR, 0, 0, "farm list", cmd_farm_list },
	{ "sectors", ACCESS_MONITOR, 0, 1, "sectors [FARM]", cmd_sectors },
	{ "plot", ACCESS_MONITOR, 0, 0, "plot [--follow]", cmd_plot },
	{ "sector read", ACCESS_ADMIN, 3, 3, "sector read FARM SECTOR PIECE_OFFSET [-o FILE]",
	    cmd_sector_read },
	{ "artifact list", ACCESS_MONITOR, 0, 0, "artifact list", cmd_artifact_list },
	{ "artifact prepare", ACCESS_ADMIN, 1, 1, "artifact prepare FILE", cmd_artifact_prepare },
	{ "artifact prune", ACCESS_ADMIN, 0, 0, "artifact prune", cmd_artifact_prune },
	{ "cluster status", ACCESS_MONITOR, 0, 0, "cluster status", cmd_cluster_status },
	{ "cluster peers", ACCESS_MONITOR, 0, 0, "cluster peers", cmd_cluster_peers },
	{ "debug encode", ACCESS_ADMIN, 3, 6, "debug encode SECTOR_ID OFFSET FILE [N R P]",
	    cmd_debug_encode },
	{ "debug echo", ACCESS_ADMIN, 1, 2, "debug echo SIZE [COUNT]", cmd_debug_echo },
	{ "debug fault", ACCESS_ADMIN, 2, 2, "debug fault KIND FAULT", cmd_debug_fault },
};

/*
 * The row for argv: among the rows whose words argv starts with, the one
 * with the most words ("scrub status" over "scrub"), so the order of
 * cmds[] does not matter.  No two rows have the same words.  *nwords is
 * the number of argv entries its words take.
 */
static const struct cmd *
cmd_find(int argc, char **argv, int *nwords)
{
	const struct cmd *best = NULL;

	*nwords = 0;
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		int nw = words_match(cmds[i].words, argc, argv);

		if (nw > *nwords) {
			best = &cmds[i];
			*nwords = nw;
		}
	}
	return best;
}

void
cmd_dispatch(struct control_req *req, void *env)
{
	static const char *const levels[] = { "none", "monitor", "admin" };
	int nw, nargs;
	const struct cmd *c = cmd_find(req->argc, req->argv, &nw);

	if (c == NULL) {
		control_reply_err(req, "unknown command '%s'", req->argv[0]);
		return;
	}
	(void)env;                      /* req->arg, for the handlers */
	nargs = req->argc - nw;
	if (req->access < c->access) {
		log_warn("admin: uid %u (pid %d) denied '%s': needs %s access",
		    (unsigned)req->uid, (int)req->pid, c->words, levels[c->access]);
		control_reply_denied(req, "permission denied: '%s' needs %s access "
		    "(uid %u has %s)", c->words, levels[c->access], (unsigned)req->uid,
		    levels[req->access]);
		return;
	}
	if (nargs < c->min_args || (c->max_args >= 0 && nargs > c->max_args)) {
		control_reply_err(req, "usage: farmctl %s", c->usage);
		return;
	}
	c->fn(req, nargs, req->argv + nw);
}
