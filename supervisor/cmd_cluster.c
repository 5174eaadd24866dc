/*
 * cmd_cluster.c: farmctl cluster status | peers.  Both read the cluster's
 * own documents (cluster_json_status, cluster_json_peers); the tables are
 * rendered from that JSON, so text and --json say the same.
 */
#include <stdio.h>

#include "cluster.h"
#include "cmd_handlers.h"
#include "farmd.h"
#include "plotter.h"
#include "reply.h"
#include "rplot.h"

static void
tb_peers(struct tbuf *b, json_t *a)
{
	json_t *p, *r;
	size_t i, j;

	if (json_array_size(a) == 0) {
		tb_printf(b, "no peers\n");
		return;
	}
	tb_printf(b, "%-32s %-10s %-22s %5s %21s %10s %s\n", "NODE", "VERSION", "ROLES", "FREE",
	    "ARCHIVED/HEIGHT", "LAST SEEN", "BAD");
	json_array_foreach(a, i, p) {
		char roles[64] = "";
		size_t n = 0;

		json_array_foreach(json_object_get(p, "roles"), j, r)
			if (n < sizeof(roles))
				n += (size_t)snprintf(roles + n, sizeof(roles) - n, "%s%s", j ? "," : "",
				    json_string_value(r));
		tb_printf(b, "%-32s %-10s %-22s %5lld %10lld/%-10lld %8.1fs %s\n", js(p, "node"),
		    js(p, "version"), roles[0] ? roles : "-", ji(p, "free_encode"), ji(p, "archived"),
		    ji(p, "height"),
		    json_real_value(json_object_get(p, "last_seen_s_ago")),
		    json_is_true(json_object_get(p, "bad")) ? "yes" : "no");
	}
}

/* Remote plotting (rplot.c, plotter.c): both sides of this node. */
static void
tb_remote(struct tbuf *b, json_t *r, json_t *p)
{
	json_t *j;
	size_t i;

	tb_printf(b, "remote plot  %s: %lld plotted, %lld failed (%lld spot checks), %lld went "
	    "local, %lld bytes received\n", js(r, "mode"), ji(r, "plotted"), ji(r, "failed"),
	    ji(r, "spot_checks_failed"), ji(r, "fallbacks"), ji(r, "bytes_received"));
	json_array_foreach(json_object_get(r, "in_flight"), i, j)
		tb_printf(b, "             sector %lld/%lld on %s: %s, %lld bytes\n", ji(j, "farm"),
		    ji(j, "sector"), js(j, "plotter")[0] ? js(j, "plotter") : "-", js(j, "state"),
		    ji(j, "received"));
	tb_printf(b, "plotter      %s, %lld free: %lld done, %lld failed, %lld refused, %lld "
	    "pieces fetched, %lld bytes sent\n\n", json_is_true(json_object_get(p, "enabled")) ?
	    "on" : "off", ji(p, "free"), ji(p, "done"), ji(p, "failed"), ji(p, "refused"),
	    ji(p, "pieces_fetched"), ji(p, "bytes_sent"));
}

static void
tb_cluster(struct tbuf *b, json_t *o)
{
	json_t *k = json_object_get(o, "counters");

	tb_printf(b, "state        %s\nnode         %s\nnats         %s\nmax_payload  %lld\n",
	    js(o, "state"), js(o, "node"), js(o, "nats")[0] ? js(o, "nats") : "-",
	    ji(o, "max_payload"));
	tb_printf(b, "requests     %lld sent, %lld answered, %lld failed; %lld served\n",
	    ji(k, "requests"), ji(k, "answers"), ji(k, "failures"), ji(k, "served"));
	tb_printf(b, "bytes        %lld sent, %lld received\n", ji(k, "bytes_sent"),
	    ji(k, "bytes_received"));
	tb_printf(b, "bad peers    %lld answers; malformed %lld; reconnects %lld\n\n",
	    ji(k, "bad_peers"), ji(k, "malformed"), ji(k, "reconnects"));
	tb_remote(b, json_object_get(o, "remote_plotting"), json_object_get(o, "plotter"));
	tb_peers(b, json_object_get(o, "peers"));
}

void
cmd_cluster_status(struct control_req *req, int argc, char **argv)
{
	json_t *doc = cluster_json_status(req->d->cluster);

	(void)argc;
	(void)argv;
	json_object_set_new(doc, "remote_plotting", rplot_json(req->d->rplot));
	json_object_set_new(doc, "plotter", plotter_json(req->d->plotter));
	reply_table(req, doc, tb_cluster);
}

void
cmd_cluster_peers(struct control_req *req, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	reply_table(req, cluster_json_peers(req->d->cluster), tb_peers);
}
