/*
 * cmd_history.c: farmctl history … commands.  farmctl turns
 * `history ingest PATH...` into one `history ingest HEIGHT NAME` request
 * per file, with the file as a descriptor.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_handlers.h"
#include "farmd.h"
#include "history.h"
#include "human.h"
#include "reply.h"

static void
cmd_ingest_done(void *arg, const char *error, const char *text)
{
	struct control_req *req = arg;

	if (error != NULL)
		control_reply_err(req, "%s", error);
	else
		control_reply(req, json_pack("{s:s}", "result", text), text);
}

void
cmd_history_ingest(struct control_req *req, int argc, char **argv)
{
	uint64_t height;
	int fd;

	(void)argc;
	if (cmd_parse_uint(argv[0], 1, INT64_MAX, &height) < 0) {
		control_reply_err(req, "history ingest: height '%s' is not a number >= 1", argv[0]);
		return;
	}
	if (req->nfds < 1) {
		control_reply_err(req, "history ingest: no file descriptor was passed");
		return;
	}
	fd = req->fds[0];
	req->fds[0] = -1;
	history_ingest_fd(req->d->history, height, fd, argv[1], cmd_ingest_done, req);
}

/* The archiver's line: its state, and why when it says more.  A reason
 * that already starts with the state ("waiting for the block at height
 * 71" in state "waiting") is shown alone, never "waiting: waiting ...". */
static void
cmd_archiver_text(struct tbuf *b, const char *state, const char *why)
{
	size_t n = strlen(state);

	if (why[0] == '\0')
		tb_printf(b, "archiver         %s\n", state);
	else if (strncmp(why, state, n) == 0 && (why[n] == ' ' || why[n] == ':'))
		tb_printf(b, "archiver         %s\n", why);
	else
		tb_printf(b, "archiver         %s: %s\n", state, why);
}

static void
cmd_history_status_text(struct tbuf *b, json_t *st)
{
	char fill[HUMAN_LEN], seg[HUMAN_LEN];
	json_t *w;
	size_t i;

	tb_printf(b, "archived height  %lld\nhistory size     %lld segments\npending          %lld "
	    "blocks\nsegment fill     %s of %s\n", ji(st, "archived_height"),
	    ji(st, "history_size"), ji(st, "pending"),
	    human_size(fill, (uint64_t)ji(st, "segment_fill_bytes")),
	    human_size(seg, (uint64_t)ji(st, "piece_size") * (uint64_t)ji(st, "pieces_per_segment")));
	cmd_archiver_text(b, js(st, "state"), js(st, "waiting"));
	tb_printf(b, "wanted          ");
	json_array_foreach(json_object_get(st, "wanted"), i, w)
		tb_printf(b, " %lld", json_integer_value(w));
	tb_printf(b, "\n");
	json_array_foreach(json_object_get(st, "rejected"), i, w)
		tb_printf(b, "rejected         height %lld, block %.16s: %s\n", ji(w, "height"),
		    js(w, "hash"), js(w, "reason"));
}

void
cmd_history_status(struct control_req *req, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	reply_table(req, history_json_status(req->d->history), cmd_history_status_text);
}

static void
cmd_history_segments_text(struct tbuf *b, json_t *segs)
{
	json_t *s;
	size_t i;

	tb_printf(b, "%-6s %-64s %11s %s\n", "INDEX", "ROOT", "LAST_HEIGHT", "PIECES");
	json_array_foreach(segs, i, s)
		tb_printf(b, "%-6lld %-64s %11lld %zu\n", json_integer_value(json_object_get(s, "index")),
		    json_string_value(json_object_get(s, "root")),
		    json_integer_value(json_object_get(s, "last_height")),
		    json_array_size(json_object_get(s, "pieces")));
}

void
cmd_history_segments(struct control_req *req, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	reply_table(req, history_json_segments(req->d->history), cmd_history_segments_text);
}
