/*
 * cmd_artifact.c: `farmctl artifact list | prepare FILE | prune` (DESIGN
 * §7, §11).  Like every handler, each ends in exactly one reply.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "artifact.h"
#include "artifact_id.h"
#include "clock.h"
#include "cmd_handlers.h"
#include "farmd.h"
#include "fdio.h"
#include "human.h"
#include "io.h"
#include "reply.h"

#define CMD_ARTIFACT_SOURCE_MAX (16u << 20)     /* bytes of Lua source */

static void
cmd_artifact_list_text(struct tbuf *b, json_t *v)
{
	size_t i;
	json_t *o;
	int64_t now = (int64_t)clock_real_ms();
	char size[HUMAN_LEN], ago[HUMAN_LEN];

	if (json_array_size(v) == 0) {
		tb_printf(b, "no artifacts\n");
		return;
	}
	tb_printf(b, "%-25s %-10s %9s %-14s %8s  %s\n", "ID", "STATE", "SIZE", "LAST NEEDED",
	    "FAILURES", "ERROR");
	json_array_foreach(v, i, o) {
		const char *err = json_string_value(json_object_get(o, "error"));

		tb_printf(b, "%.12s-%.12s %-10s %9s %-14s %8lld  %s\n", js(o, "code_hash"),
		    js(o, "params_hash"), js(o, "state"),
		    human_size(size, (uint64_t)ji(o, "size")),
		    ji(o, "last_needed_ms") ? human_ago(ago, ji(o, "last_needed_ms"), now) : "-",
		    ji(o, "failures"), err != NULL ? err : "");
	}
}

void
cmd_artifact_list(struct control_req *req, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	reply_table(req, artifacts_json_list(req->d->artifacts), cmd_artifact_list_text);
}

struct prep {
	struct control_req *req;
	int fd;
	uint8_t *src;
	size_t len;
	char err[ERR_MSG_MAX];
};

static void
prep_ready(void *arg, const char *id_hex, enum artifact_error kind, const char *error)
{
	struct prep *p = arg;
	char text[ARTIFACT_ID_HEX_LEN + 2];

	if (kind != ARTIFACT_OK) {
		control_reply_err(p->req, "artifact prepare: %s", error);
	} else {
		snprintf(text, sizeof(text), "%s\n", id_hex);
		control_reply(p->req, json_pack("{s:s, s:s}", "id", id_hex, "state", "prepared"),
		    text);
	}
	free(p->src);
	free(p);
}

/* On the I/O pool: the client's file, whole. */
static void
prep_read_work(void *arg)
{
	struct prep *p = arg;
	struct stat st;
	ssize_t n;

	if (fstat(p->fd, &st) < 0 || !S_ISREG(st.st_mode))
		snprintf(p->err, sizeof(p->err), "not a regular file");
	else if ((uint64_t)st.st_size > CMD_ARTIFACT_SOURCE_MAX)
		snprintf(p->err, sizeof(p->err), "%lld bytes is more source than %u",
		    (long long)st.st_size, CMD_ARTIFACT_SOURCE_MAX);
	else if ((p->src = malloc((size_t)st.st_size + 1)) == NULL)
		snprintf(p->err, sizeof(p->err), "out of memory");
	else if ((n = fdio_pread_all(p->fd, p->src, (size_t)st.st_size, 0)) != st.st_size)
		snprintf(p->err, sizeof(p->err), "read: %s", n < 0 ? strerror(errno) :
		    "file shrank");
	else
		p->len = (size_t)n;
	close(p->fd);
	p->fd = -1;
}

static void
prep_read_done(void *arg)
{
	struct prep *p = arg;

	if (p->err[0] != '\0') {
		control_reply_err(p->req, "artifact prepare: %s", p->err);
		free(p->src);
		free(p);
		return;
	}
	artifact_prepare(p->req->d->artifacts, p->src, p->len, prep_ready, p);
}

void
cmd_artifact_prepare(struct control_req *req, int argc, char **argv)
{
	struct prep *p;

	(void)argc;
	(void)argv;
	if (req->nfds < 1) {
		control_reply_err(req, "artifact prepare: no file descriptor was passed");
		return;
	}
	if ((p = calloc(1, sizeof(*p))) == NULL) {
		control_reply_err(req, "artifact prepare: out of memory");
		return;
	}
	p->req = req;
	p->fd = req->fds[0];
	req->fds[0] = -1;               /* prep_read_work closes it */
	if (io_submit(req->d->io, prep_read_work, prep_read_done, p) < 0) {
		close(p->fd);
		free(p);
		control_reply_err(req, "artifact prepare: cannot queue the read");
	}
}

void
cmd_artifact_prune(struct control_req *req, int argc, char **argv)
{
	json_t *removed = NULL, *o;
	struct tbuf *b;
	struct err e;
	size_t i;
	char size[HUMAN_LEN];

	(void)argc;
	(void)argv;
	if (artifacts_prune(req->d->artifacts, &removed, &e) < 0) {
		json_decref(removed);
		control_reply_err(req, "artifact prune: %s", e.msg);
		return;
	}
	if ((b = tb_new(req)) == NULL) {
		json_decref(removed);
		return;
	}
	json_array_foreach(removed, i, o)
		tb_printf(b, "removed %s (%s)\n", js(o, "id"),
		    human_size(size, (uint64_t)ji(o, "size")));
	if (json_array_size(removed) == 0)
		tb_printf(b, "nothing to prune\n");
	control_reply(req, json_pack("{s:o}", "removed", removed), b->s);
	free(b);
}
