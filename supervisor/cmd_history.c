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

static void
cmd_history_status_text(struct tbuf *b, json_t *st)
{
	json_t *w;
	size_t i;

	tb_printf(b, "archived height  %lld\nhistory size     %lld segments\npending          %lld "
	    "blocks\nsegment fill     %lld bytes\narchiver         %s%s%s\nwanted          ",
	    json_integer_value(json_object_get(st, "archived_height")),
	    json_integer_value(json_object_get(st, "history_size")),
	    json_integer_value(json_object_get(st, "pending")),
	    json_integer_value(json_object_get(st, "segment_fill_bytes")),
	    json_string_value(json_object_get(st, "state")),
	    json_string_length(json_object_get(st, "waiting")) ? ": " : "",
	    json_string_value(json_object_get(st, "waiting")));
	json_array_foreach(json_object_get(st, "wanted"), i, w)
		tb_printf(b, " %lld", json_integer_value(w));
	tb_printf(b, "\n");
	json_array_foreach(json_object_get(st, "rejected"), i, w)
		tb_printf(b, "rejected         height %lld: %s\n",
		    json_integer_value(json_object_get(w, "height")),
		    json_string_value(json_object_get(w, "reason")));
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
