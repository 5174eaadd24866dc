/*
 * cmd_block.c: farmctl block … commands.  Files travel as descriptors:
 * `block put` reads the client's file, `block get` writes into the
 * client's output (its -o file or its stdout), both off the loop.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockstore.h"
#include "cmd_handlers.h"
#include "config.h"
#include "clock.h"
#include "farmd.h"
#include "human.h"
#include "io.h"
#include "reply.h"
#include "resync.h"
#include "scrub.h"

static int
cmd_hash_arg(struct control_req *req, const char *arg, uint8_t hash[HASH_LEN])
{
	struct err e;

	if (blockstore_resolve(req->d->blocks, arg, hash, &e) < 0) {
		control_reply_err(req, "%s", e.msg);
		return -1;
	}
	return 0;
}

static void
cmd_put_done(void *arg, const uint8_t hash[HASH_LEN], const char *error)
{
	struct control_req *req = arg;
	char hex[HASH_HEX_LEN + 1], text[HASH_HEX_LEN + 2];

	if (error != NULL) {
		control_reply_err(req, "block put %s: %s", req->argv[2], error);
		return;
	}
	block_hex(hash, hex);
	snprintf(text, sizeof(text), "%s\n", hex);
	control_reply(req, json_pack("{s:s}", "hash", hex), text);
}

void
cmd_block_put(struct control_req *req, int argc, char **argv)
{
	int fd;

	(void)argc;
	(void)argv;
	if (req->nfds < 1) {
		control_reply_err(req, "block put: no file descriptor was passed");
		return;
	}
	fd = req->fds[0];
	req->fds[0] = -1;               /* the store closes it */
	blockstore_put_fd(req->d->blocks, fd, cmd_put_done, req);
}

/* block get: verified bytes go to the client's descriptor. */
struct get_out {
	struct control_req *req;
	uint8_t hash[HASH_LEN];
	uint8_t *data;
	size_t len;
	int fd;
	char err[ERR_MSG_MAX];
};

/* Writes without ever blocking for long on a pipe nobody drains: a
 * regular file takes plain writes; anything else is polled and written
 * PIPE_BUF at a time, giving up after 30 s without progress. */
static void
get_out_work(void *arg)
{
	struct get_out *g = arg;
	struct stat st;
	size_t off = 0;
	int reg = fstat(g->fd, &st) == 0 && S_ISREG(st.st_mode);

	while (off < g->len) {
		size_t chunk = reg ? g->len - off : (g->len - off < 4096 ? g->len - off : 4096);
		ssize_t n;

		if (!reg) {
			struct pollfd p = { g->fd, POLLOUT, 0 };
			int rc = poll(&p, 1, 30000);

			if (rc == 0) {
				snprintf(g->err, sizeof(g->err), "output not drained for 30 s");
				return;
			}
			if (rc < 0 && errno == EINTR)
				continue;
			if (p.revents & (POLLERR | POLLHUP)) {
				snprintf(g->err, sizeof(g->err), "output closed");
				return;
			}
		}
		n = write(g->fd, g->data + off, chunk);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			snprintf(g->err, sizeof(g->err), "write output: %s", strerror(errno));
			return;
		}
		off += (size_t)n;
	}
}

static void
get_out_done(void *arg)
{
	struct get_out *g = arg;
	char hex[HASH_HEX_LEN + 1];

	block_hex(g->hash, hex);
	if (g->err[0])
		control_reply_err(g->req, "block %s: %s", hex, g->err);
	else
		control_reply(g->req, json_pack("{s:s, s:I}", "hash", hex, "size",
		    (json_int_t)g->len), "");
	close(g->fd);
	free(g->data);
	free(g);
}

static void
cmd_get_done(void *arg, uint8_t *data, size_t len, enum block_status st, const char *error)
{
	struct get_out *g = arg;

	(void)st;
	if (error != NULL) {
		control_reply_err(g->req, "%s", error);
		close(g->fd);
		free(g);
		return;
	}
	g->data = data;
	g->len = len;
	if (io_submit(g->req->d->io, get_out_work, get_out_done, g) < 0) {
		snprintf(g->err, sizeof(g->err), "out of memory");
		get_out_done(g);
	}
}

void
cmd_block_get(struct control_req *req, int argc, char **argv)
{
	struct get_out *g;

	(void)argc;
	if (req->nfds < 1) {
		control_reply_err(req, "block get: no output descriptor was passed");
		return;
	}
	if ((g = calloc(1, sizeof(*g))) == NULL) {
		control_reply_err(req, "out of memory");
		return;
	}
	if (cmd_hash_arg(req, argv[0], g->hash) < 0) {
		free(g);
		return;
	}
	g->req = req;
	g->fd = req->fds[0];
	req->fds[0] = -1;
	blockstore_get(req->d->blocks, g->hash, cmd_get_done, g);
}

void
cmd_block_stat(struct control_req *req, int argc, char **argv)
{
	struct block_info bi;
	struct tbuf *b;
	uint8_t hash[HASH_LEN];
	char hex[HASH_HEX_LEN + 1], hs[HUMAN_LEN], ss[HUMAN_LEN];
	struct err e;
	int rc;

	(void)argc;
	if (cmd_hash_arg(req, argv[0], hash) < 0)
		return;
	if ((rc = blockstore_stat(req->d->blocks, hash, &bi, &e)) <= 0) {
		control_reply_err(req, "%s", rc < 0 ? e.msg : "no such block");
		return;
	}
	if ((b = tb_new(req)) == NULL)
		return;
	block_hex(hash, hex);
	tb_printf(b, "hash        %s\nsize        %s (%" PRIu64 " bytes)\nstored      %s (%"
	    PRIu64 " bytes%s)\nrefcount    %lld\nstate       %s\n", hex, human_size(hs, bi.size),
	    bi.size, human_size(ss, bi.stored), bi.stored,
	    bi.inline_ ? ", inline" : bi.compressed ? ", zstd" : "",
	    (long long)bi.refcount, bi.state);
	control_reply(req, json_pack("{s:s, s:I, s:I, s:I, s:b, s:b, s:s}", "hash", hex,
	    "size", (json_int_t)bi.size, "stored", (json_int_t)bi.stored,
	    "refcount", (json_int_t)bi.refcount, "inline", bi.inline_,
	    "compressed", bi.compressed, "state", bi.state), b->s);
	free(b);
}

/* Runs a reference change (decref, purge) on the block arg names: 0 with
 * its count and hex, or -1 after replying the error. */
static int
cmd_block_refs(struct control_req *req, const char *arg,
    int (*op)(struct blockstore *, const uint8_t *, int64_t *, struct err *), int64_t *n,
    char hex[HASH_HEX_LEN + 1])
{
	uint8_t hash[HASH_LEN];
	struct err e;

	if (cmd_hash_arg(req, arg, hash) < 0)
		return -1;
	if (op(req->d->blocks, hash, n, &e) < 0) {
		control_reply_err(req, "%s", e.msg);
		return -1;
	}
	block_hex(hash, hex);
	return 0;
}

void
cmd_block_rm(struct control_req *req, int argc, char **argv)
{
	char hex[HASH_HEX_LEN + 1], text[160], gc[HUMAN_LEN];
	int64_t left;

	(void)argc;
	if (cmd_block_refs(req, argv[0], blockstore_decref, &left, hex) < 0)
		return;
	if (left == 0)
		snprintf(text, sizeof(text), "%.16s…: no references left; deleted after %s "
		    "unless stored again\n", hex,
		    human_duration(gc, req->d->cfg.blocks.gc_delay_ms / 1000));
	else
		snprintf(text, sizeof(text), "%.16s…: %lld reference%s left\n", hex,
		    (long long)left, left == 1 ? "" : "s");
	control_reply(req, json_pack("{s:s, s:I}", "hash", hex, "refcount", (json_int_t)left),
	    text);
}

void
cmd_block_purge(struct control_req *req, int argc, char **argv)
{
	char hex[HASH_HEX_LEN + 1], warn[200];
	int64_t refs;

	(void)argc;
	if (cmd_block_refs(req, argv[0], blockstore_purge, &refs, hex) < 0)
		return;
	snprintf(warn, sizeof(warn), "block %.16s… purged although it had %lld reference%s; "
	    "whatever referred to it is now broken", hex, (long long)refs, refs == 1 ? "" : "s");
	control_reply_data(req, json_pack("{s:s, s:I}", "hash", hex, "refcount",
	    (json_int_t)refs), "purged\n", NULL, 0, refs > 0 ? warn : NULL);
}

static void
cmd_block_list_errors_text(struct tbuf *b, json_t *errs)
{
	int64_t now = (int64_t)clock_real_ms();
	char last[HUMAN_LEN], next[HUMAN_LEN];
	json_t *it;
	size_t i;

	tb_printf(b, "%-64s %6s %-12s %-12s  %s\n", "HASH", "ERRORS", "LAST_TRY", "NEXT_TRY",
	    "REASON");
	json_array_foreach(errs, i, it)
		tb_printf(b, "%-64s %6lld %-12s %-12s  %s\n", js(it, "hash"), ji(it, "errors"),
		    human_ago(last, ji(it, "last_try_ms"), now),
		    ji(it, "next_try_ms") <= now ? "due" : human_ago(next, ji(it, "next_try_ms"), now),
		    js(it, "reason"));
}

void
cmd_block_list_errors(struct control_req *req, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	reply_table(req, resync_json_errors(req->d->resync), cmd_block_list_errors_text);
}

void
cmd_block_retry_now(struct control_req *req, int argc, char **argv)
{
	uint8_t hash[HASH_LEN];
	char text[64];
	struct err e;
	int n;

	(void)argc;
	if (strcmp(argv[0], "--all") != 0 && cmd_hash_arg(req, argv[0], hash) < 0)
		return;
	n = resync_retry_now(req->d->resync, strcmp(argv[0], "--all") == 0 ? NULL : hash, &e);
	if (n < 0) {
		control_reply_err(req, "%s", e.msg);
		return;
	}
	snprintf(text, sizeof(text), "%d block%s queued for a retry now\n", n, n == 1 ? "" : "s");
	control_reply(req, json_pack("{s:i}", "queued", n), text);
}

/* The counts of the run in hand (or the last), then its times: when it
 * started if it is under way, else when the last ended; when the next is
 * due.  The phase is shown only while a run is under way. */
static void
cmd_scrub_text(struct tbuf *b, json_t *st)
{
	int64_t now = (int64_t)clock_real_ms();
	int idle = strcmp(js(st, "state"), "idle") == 0;
	char at[HUMAN_LEN], ago[HUMAN_LEN];

	tb_printf(b, "scrub %s%s%s%s: %lld blocks checked, %lld corrupt or missing%s%s; "
	    "%lld sectors checked, %lld corrupt\n", js(st, "state"), idle ? "" : " (",
	    idle ? "" : js(st, "phase"), idle ? "" : ")", ji(st, "checked"),
	    ji(st, "corruptions"), js(st, "position")[0] ? ", at " : "", js(st, "position"),
	    ji(st, "sectors_checked"), ji(st, "sector_corruptions"));
	if (!idle && ji(st, "started_ms") > 0)
		tb_printf(b, "started %s (%s)\n", human_time(at, ji(st, "started_ms")),
		    human_ago(ago, ji(st, "started_ms"), now));
	if (idle && ji(st, "last_done_ms") > 0)
		tb_printf(b, "last run finished %s (%s)\n", human_time(at, ji(st, "last_done_ms")),
		    human_ago(ago, ji(st, "last_done_ms"), now));
	if (idle && ji(st, "next_run_ms") > 0)
		tb_printf(b, "next run %s (%s)\n", human_time(at, ji(st, "next_run_ms")),
		    human_ago(ago, ji(st, "next_run_ms"), now));
}

/* scrub start|pause|resume|cancel|status (status comes here with no
 * argument, through its own row so monitors may read it). */
void
cmd_scrub(struct control_req *req, int argc, char **argv)
{
	static const struct {
		const char *verb;
		int (*fn)(struct scrub *, struct err *);
	} verbs[] = {
		{ "start", scrub_start }, { "pause", scrub_pause },
		{ "resume", scrub_resume }, { "cancel", scrub_cancel },
	};
	const char *verb = argc > 0 ? argv[0] : "status";
	struct tbuf *b;
	json_t *st;
	struct err e;
	size_t i;

	for (i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (strcmp(verb, verbs[i].verb) == 0)
			break;
	if (i == sizeof(verbs) / sizeof(verbs[0]) && strcmp(verb, "status") != 0) {
		control_reply_err(req, "usage: farmctl scrub start|pause|resume|cancel|status");
		return;
	}
	if (i < sizeof(verbs) / sizeof(verbs[0]) && verbs[i].fn(req->d->scrub, &e) < 0) {
		control_reply_err(req, "scrub %s: %s", verb, e.msg);
		return;
	}
	if ((b = tb_new(req)) == NULL)
		return;
	st = scrub_json(req->d->scrub);
	cmd_scrub_text(b, st);
	control_reply(req, st, b->s);
	free(b);
}
