/*
 * cmd_farm.c: farmctl farm …, sectors, plot and sector read.  farmctl
 * sends DIR as an absolute path and turns `plot --follow` into repeated
 * `plot` requests.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_handlers.h"
#include "farmd.h"
#include "human.h"
#include "plot.h"
#include "reply.h"

#define SECTORS_TEXT_MAX 500            /* rows shown as text; --json has all */

static void
cmd_farm_add_done(void *arg, json_t *json, const char *error)
{
	struct control_req *req = arg;
	char text[1024], sz[HUMAN_LEN];

	if (error != NULL) {
		control_reply_err(req, "%s", error);
		return;
	}
	snprintf(text, sizeof(text), "farm %lld added: %s, %lld %s sectors of %s\n"
	    "public key hash %s\n", ji(json, "id"), js(json, "dir"), ji(json, "sectors"),
	    js(json, "profile"), human_size(sz, (uint64_t)ji(json, "sector_size")),
	    js(json, "public_key_hash"));
	control_reply(req, json, text);
}

/* farm add DIR --sectors N [--profile demo|production] */
void
cmd_farm_add(struct control_req *req, int argc, char **argv)
{
	const char *dir = NULL, *profile = "demo";
	uint64_t n = 0;
	int have_n = 0;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--sectors") == 0 && i + 1 < argc) {
			if (cmd_parse_uint(argv[++i], 1, UINT32_MAX, &n) < 0) {
				control_reply_err(req, "farm add: --sectors '%s' is not a number from 1 "
				    "to %u", argv[i], UINT32_MAX);
				return;
			}
			have_n = 1;
		} else if (strcmp(argv[i], "--profile") == 0 && i + 1 < argc) {
			profile = argv[++i];
		} else if (argv[i][0] != '-' && dir == NULL) {
			dir = argv[i];
		} else {
			control_reply_err(req, "farm add: unexpected '%s' (usage: farm add DIR "
			    "--sectors N [--profile demo|production])", argv[i]);
			return;
		}
	}
	if (dir == NULL || !have_n) {
		control_reply_err(req, "usage: farm add DIR --sectors N [--profile demo|production]");
		return;
	}
	plot_farm_add(req->d->plot, dir, (uint32_t)n, profile, cmd_farm_add_done, req);
}

static void
cmd_farm_list_text(struct tbuf *b, json_t *a)
{
	json_t *f;
	size_t i;

	tb_printf(b, "%-4s %-10s %8s %11s %8s %-8s %s\n", "ID", "PROFILE", "SECTORS",
	    "SECTOR_SIZE", "PLOTTED", "STATE", "DIR");
	json_array_foreach(a, i, f) {
		char sz[HUMAN_LEN];

		tb_printf(b, "%-4lld %-10s %8lld %11s %8lld %-8s %s\n", ji(f, "id"),
		    js(f, "profile"), ji(f, "sectors"),
		    human_size(sz, (uint64_t)ji(f, "sector_size")), ji(f, "plotted"),
		    js(f, "state"), js(f, "dir"));
		if (js(f, "error")[0])
			tb_printf(b, "     error: %s\n", js(f, "error"));
	}
}

void
cmd_farm_list(struct control_req *req, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	reply_table(req, plot_json_farms(req->d->plot), cmd_farm_list_text);
}

static void
cmd_sectors_text(struct tbuf *b, json_t *a)
{
	json_t *s;
	size_t i;

	tb_printf(b, "%-4s %6s %-15s %7s %7s %-16s %s\n", "FARM", "INDEX", "STATE", "HISTORY",
	    "EXPIRES", "CHECKSUM", "PLOTTED_AT");
	json_array_foreach(a, i, s) {
		json_t *hs = json_object_get(s, "history_size"), *ex = json_object_get(s, "expires_at");
		json_t *pa = json_object_get(s, "plotted_at");
		char hsb[24] = "-", exb[24] = "-", pab[HUMAN_LEN] = "-";

		if (i == SECTORS_TEXT_MAX) {
			tb_printf(b, "… %zu more (use --json)\n", json_array_size(a) - i);
			break;
		}
		if (json_is_integer(hs))
			snprintf(hsb, sizeof(hsb), "%lld", (long long)json_integer_value(hs));
		if (json_is_integer(ex))
			snprintf(exb, sizeof(exb), "%lld", (long long)json_integer_value(ex));
		if (json_is_integer(pa))
			human_time(pab, json_integer_value(pa));
		tb_printf(b, "%-4lld %6lld %-15s %7s %7s %-16.16s %s\n", ji(s, "farm"),
		    ji(s, "index"), js(s, "state"), hsb, exb,
		    json_is_string(json_object_get(s, "checksum")) ? js(s, "checksum") : "-", pab);
	}
}

void
cmd_sectors(struct control_req *req, int argc, char **argv)
{
	struct err e;
	json_t *a = plot_json_sectors(req->d->plot, argc > 0 ? argv[0] : NULL, &e);

	if (a == NULL) {
		control_reply_err(req, "%s", e.msg);
		return;
	}
	reply_table(req, a, cmd_sectors_text);
}

static void
cmd_plot_text(struct tbuf *b, json_t *o)
{
	json_t *f, *s;
	size_t i, k;

	if (json_is_true(json_object_get(o, "idle")) && ji(o, "waiting_for_history") > 0)
		tb_printf(b, "history size %lld; plotting is waiting for history (%lld sectors)\n",
		    ji(o, "history_size"), ji(o, "waiting_for_history"));
	else
		tb_printf(b, "history size %lld; plotting is %s\n", ji(o, "history_size"),
		    json_is_true(json_object_get(o, "idle")) ? "idle" : "busy");
	json_array_foreach(json_object_get(o, "farms"), i, f) {
		tb_printf(b, "farm %lld %s: %lld/%lld plotted, %zu in flight, %lld queued, ",
		    ji(f, "id"), js(f, "state"), ji(f, "plotted"), ji(f, "sectors"),
		    json_array_size(json_object_get(f, "in_flight")), ji(f, "queued"));
		if (ji(f, "waiting_for_history") > 0)
			tb_printf(b, "%lld waiting for history, ", ji(f, "waiting_for_history"));
		tb_printf(b, "%lld plotted since start, %lld error%s%s%s\n",
		    ji(f, "sectors_plotted_total"), ji(f, "errors"), ji(f, "errors") == 1 ? "" : "s",
		    js(f, "last_error")[0] ? "; last: " : "", js(f, "last_error"));
		json_array_foreach(json_object_get(f, "in_flight"), k, s)
			tb_printf(b, "  sector %lld %s %lld/%lld pieces encoded at history size "
			    "%lld%s%s\n", ji(s, "index"), js(s, "phase"), ji(s, "pieces_done"),
			    ji(s, "pieces_total"), ji(s, "history_size"),
			    js(s, "error")[0] ? ": " : "", js(s, "error"));
	}
}

void
cmd_plot(struct control_req *req, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	reply_table(req, plot_json_progress(req->d->plot), cmd_plot_text);
}

static void
cmd_sector_read_done(void *arg, uint8_t *data, size_t len, const char *error)
{
	struct control_req *req = arg;

	if (error != NULL) {
		control_reply_err(req, "%s", error);
		return;
	}
	control_reply_data(req, json_pack("{s:I}", "bytes", (json_int_t)len), "", data, len,
	    NULL);
	free(data);
}

void
cmd_sector_read(struct control_req *req, int argc, char **argv)
{
	uint64_t sector, offset;

	(void)argc;
	if (cmd_parse_uint(argv[1], 0, UINT32_MAX, &sector) < 0 ||
	    cmd_parse_uint(argv[2], 0, UINT32_MAX, &offset) < 0) {
		control_reply_err(req, "sector read: SECTOR '%s' and PIECE_OFFSET '%s' must be "
		    "numbers", argv[1], argv[2]);
		return;
	}
	plot_sector_read(req->d->plot, argv[0], (uint32_t)sector, (uint32_t)offset,
	    cmd_sector_read_done, req);
}
