/*
 * cmd_debug.c: farmctl debug … commands, which drive a worker job by hand
 * for known-answer checks and IPC measurements from the outside, and arm
 * faults in fault-injection builds.  Like every handler, each ends in
 * exactly one control_reply*(), now or from a job callback.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockstore.h"
#include "clock.h"
#include "cluster.h"
#include "cmd_handlers.h"
#include "encode_v1.h"
#include "farmd.h"
#include "hash.h"
#include "io.h"
#include "plot.h"
#include "plotter.h"
#include "pool.h"
#include "reply.h"
#include "scrub.h"

/* debug encode: the piece file is read on the I/O pool (a slow or remote
 * file must not hold the loop), then sent to an encode worker. */
struct enc_cmd {
	struct control_req *req;
	int fd;
	size_t max;
	uint8_t sector_id[HASH_LEN];
	uint32_t offset;
	uint64_t n;
	uint32_t r, p;
	uint8_t *data;
	size_t len;
	char err[ERR_MSG_MAX];
};

static void
enc_read_work(void *arg)
{
	struct enc_cmd *c = arg;
	const char *name = c->req->argv[4];
	struct stat st;
	ssize_t n;

	if (fstat(c->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(c->err, sizeof(c->err), "%s: not a regular file", name);
		return;
	}
	if ((size_t)st.st_size > c->max) {
		snprintf(c->err, sizeof(c->err), "%s: %lld bytes is more than %zu", name,
		    (long long)st.st_size, c->max);
		return;
	}
	if ((c->data = malloc((size_t)st.st_size + 1)) == NULL) {
		snprintf(c->err, sizeof(c->err), "out of memory");
		return;
	}
	n = pread(c->fd, c->data, (size_t)st.st_size, 0);
	if (n != st.st_size)
		snprintf(c->err, sizeof(c->err), "%s: read: %s", name,
		    n < 0 ? strerror(errno) : "file shrank");
	c->len = n > 0 ? (size_t)n : 0;
}

static void cmd_debug_encode_done(uint64_t id, const Farmd__JobResult *res,
    const char *error, void *arg);

static void
enc_read_done(void *arg)
{
	struct enc_cmd *c = arg;
	struct pool_job_opts opts = { .max_attempts = 5, .retry_delay_ms = 100 };
	struct encode_params params = { c->n, c->r, c->p };
	ProtobufCBinaryData piece = { c->len, c->data };
	struct err e;

	close(c->fd);
	if (c->err[0])
		control_reply_err(c->req, "%s", c->err);
	else if (pool_submit_encode(c->req->d->pool, c->sector_id, c->offset, &params, &piece,
	    1, 0, &opts, cmd_debug_encode_done, c->req, &e) == 0)
		control_reply_err(c->req, "%s", e.msg);
	free(c->data);
	free(c);
}

static void
cmd_debug_encode_done(uint64_t id, const Farmd__JobResult *res, const char *error,
    void *arg)
{
	struct control_req *req = arg;

	(void)id;
	if (error != NULL)
		control_reply_err(req, "%s", error);
	else if (res->body_case != FARMD__JOB_RESULT__BODY_ENCODE || res->encode->n_pieces != 1)
		control_reply_err(req, "encode worker answered with no piece");
	else
		control_reply_data(req, json_pack("{s:I}", "bytes",
		    (json_int_t)res->encode->pieces[0].len), NULL,
		    res->encode->pieces[0].data, res->encode->pieces[0].len, NULL);
}

/* debug encode SECTOR_ID OFFSET FILE [N R P]: one piece through a real
 * encode worker (format v1), for known-answer checks from the outside. */
void
cmd_debug_encode(struct control_req *req, int argc, char **argv)
{
	struct enc_cmd *c;
	uint8_t sector_id[HASH_LEN];
	uint64_t off, n = 1024, r = 8, p = 1;

	if (hex_decode(argv[0], sector_id, HASH_LEN) < 0) {
		control_reply_err(req, "sector id '%s': not 64 hex characters", argv[0]);
		return;
	}
	if (cmd_parse_uint(argv[1], 0, UINT32_MAX, &off) < 0) {
		control_reply_err(req, "piece offset '%s': not a number below 2^32", argv[1]);
		return;
	}
	if (argc == 6) {
		if (cmd_parse_uint(argv[3], 2, 1u << 20, &n) < 0 || (n & (n - 1)) ||
		    cmd_parse_uint(argv[4], 1, 32, &r) < 0 || cmd_parse_uint(argv[5], 1, 16, &p) < 0) {
			control_reply_err(req, "scrypt parameters N=%s r=%s p=%s: N must be a power "
			    "of two up to 2^20, r 1..32, p 1..16", argv[3], argv[4], argv[5]);
			return;
		}
	} else if (argc != 3) {
		control_reply_err(req, "usage: debug encode SECTOR_ID OFFSET FILE [N R P]");
		return;
	}
	if (req->nfds < 1 || req->fds[0] < 0) {
		control_reply_err(req, "%s: no file descriptor was passed for it", argv[2]);
		return;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		control_reply_err(req, "out of memory");
		return;
	}
	c->req = req;
	c->fd = req->fds[0];
	req->fds[0] = -1;
	c->max = req->d->cfg.daemon.max_frame / 2;
	memcpy(c->sector_id, sector_id, HASH_LEN);
	c->offset = (uint32_t)off;
	c->n = n;
	c->r = (uint32_t)r;
	c->p = (uint32_t)p;
	if (io_submit(req->d->io, enc_read_work, enc_read_done, c) < 0) {
		close(c->fd);
		free(c);
		control_reply_err(req, "out of memory");
	}
}

/* debug echo SIZE COUNT: COUNT sequential echo jobs of SIZE bytes through
 * one encode worker; reports IPC throughput and round-trip latency.  From
 * ECHO_BUF_MIN bytes (and up to [workers] encode_buffer) the payload goes
 * the way plotting's pieces go, through the worker's shared buffer, where
 * the worker inverts every byte; below that, in frames.  Every answer's
 * bytes are checked. */
#define ECHO_BUF_MIN 65536

struct echo_run {
	struct control_req *req;
	uint8_t *payload;
	size_t size;
	int shared;                     /* through the shared buffer */
	uint8_t expect;                 /* every byte of the next answer */
	unsigned count, done;
	uint64_t start_us, last_us;
	uint64_t *rtt_us;
};

static void cmd_echo_next(struct echo_run *run);

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void
cmd_echo_free(struct echo_run *run)
{
	free(run->payload);
	free(run->rtt_us);
	free(run);
}

static void
cmd_echo_done(uint64_t id, const Farmd__JobResult *res, const char *error, void *arg)
{
	struct echo_run *run = arg;
	uint64_t now = clock_mono_us();
	const uint8_t *got = NULL;

	(void)id;
	if (error == NULL && run->shared)
		got = run->payload;     /* the pool copied the answer here */
	else if (error == NULL && res->body_case == FARMD__JOB_RESULT__BODY_ECHO &&
	    res->echo->data.len == run->size)
		got = res->echo->data.data;
	if (got == NULL || (run->size > 0 && (got[0] != run->expect ||
	    memcmp(got, got + 1, run->size - 1) != 0))) {
		control_reply_err(run->req, "echo job %u: %s", run->done,
		    error ? error : "wrong answer");
		cmd_echo_free(run);
		return;
	}
	/* In the shared buffer the payload comes back inverted and is sent
	 * again as it came: the next answer is the original. */
	if (run->shared)
		run->expect ^= 0xff;
	run->rtt_us[run->done++] = now - run->last_us;
	if (run->done < run->count) {
		cmd_echo_next(run);
		return;
	}
	{
		double secs = (double)(now - run->start_us) / 1e6;
		double mbps = 2.0 * (double)run->size * run->count / secs / 1e6;
		char text[256];

		qsort(run->rtt_us, run->count, sizeof(uint64_t), cmp_u64);
		snprintf(text, sizeof(text), "%u round trips of %zu bytes%s: %.1f MB/s "
		    "(both directions), rtt median %llu us, p99 %llu us\n", run->count,
		    run->size, run->shared ? " (shared buffer)" : "", mbps, (unsigned long long)run->rtt_us[run->count / 2],
		    (unsigned long long)run->rtt_us[run->count * 99 / 100]);
		control_reply(run->req, json_pack("{s:I, s:i, s:b, s:f, s:I, s:I}",
		    "size", (json_int_t)run->size, "count", (int)run->count,
		    "shared_buffer", run->shared,
		    "mb_per_s", mbps, "rtt_median_us", (json_int_t)run->rtt_us[run->count / 2],
		    "rtt_p99_us", (json_int_t)run->rtt_us[run->count * 99 / 100]), text);
	}
	cmd_echo_free(run);
}

static void
cmd_echo_next(struct echo_run *run)
{
	struct pool_job_opts opts = { .max_attempts = 1 };
	Farmd__Job job = FARMD__JOB__INIT;
	Farmd__EchoJob ej = FARMD__ECHO_JOB__INIT;
	struct err e;

	uint64_t id;

	ej.data.data = run->payload;
	ej.data.len = run->size;
	job.body_case = FARMD__JOB__BODY_ECHO;
	job.echo = &ej;
	run->last_us = clock_mono_us();
	if (run->shared)
		id = pool_submit_echo_buf(run->req->d->pool, run->payload, run->size, &opts,
		    cmd_echo_done, run, &e);
	else
		id = pool_submit(run->req->d->pool, WIRE_KIND_ENCODE, &job, &opts,
		    cmd_echo_done, run, &e);
	if (id == 0) {
		control_reply_err(run->req, "%s", e.msg);
		cmd_echo_free(run);
	}
}

void
cmd_debug_echo(struct control_req *req, int argc, char **argv)
{
	struct echo_run *run;
	uint64_t size, count = 100;

	if (cmd_parse_uint(argv[0], 0, req->d->cfg.daemon.max_frame / 2, &size) < 0 ||
	    (argc > 1 && cmd_parse_uint(argv[1], 1, 1000000, &count) < 0)) {
		control_reply_err(req, "debug echo: SIZE up to %llu bytes, COUNT 1..1000000",
		    (unsigned long long)req->d->cfg.daemon.max_frame / 2);
		return;
	}
	if ((run = calloc(1, sizeof(*run))) == NULL ||
	    (run->payload = malloc(size + 1)) == NULL ||
	    (run->rtt_us = calloc(count, sizeof(uint64_t))) == NULL) {
		if (run != NULL)
			cmd_echo_free(run);
		control_reply_err(req, "out of memory");
		return;
	}
	memset(run->payload, 0xa5, size);
	run->req = req;
	run->size = size;
	run->shared = size >= ECHO_BUF_MIN && size <= pool_buffer_size(req->d->pool);
	run->expect = run->shared ? 0x5a : 0xa5;
	run->count = (unsigned)count;
	run->start_us = clock_mono_us();
	cmd_echo_next(run);
}

#ifdef FAULT_INJECTION
static int
fault_plot(struct farmd *d, const char *fault)
{
	if (strcmp(fault, "write") != 0)
		return -1;
	plot_arm_write_fault(d->plot);
	return 0;
}

static int
fault_block(struct farmd *d, const char *fault)
{
	return blockstore_arm_fault(d->blocks, fault);
}

static int
fault_cluster(struct farmd *d, const char *fault)
{
	return cluster_arm_fault(d->cluster, fault);
}

static int
fault_scrub(struct farmd *d, const char *fault)
{
	return scrub_arm_fault(d->scrub, fault);
}

static int
fault_plotter(struct farmd *d, const char *fault)
{
	return plotter_arm_fault(d->plotter, fault);
}

/* The faults armed in subsystems (a worker kind's faults go to the
 * pool): one row per KIND; arm returns -1 for a FAULT it does not have. */
static const struct {
	const char *kind;
	int (*arm)(struct farmd *d, const char *fault);
} debug_faults[] = {
	{ "plot", fault_plot },
	{ "block", fault_block },
	{ "cluster", fault_cluster },
	{ "plotter", fault_plotter },
	{ "scrub", fault_scrub },
};
#endif

void
cmd_debug_fault(struct control_req *req, int argc, char **argv)
{
#ifdef FAULT_INJECTION
	enum wire_kind kind;
	enum wire_fault fault;
	struct err e;

	(void)argc;
	for (size_t i = 0; i < sizeof(debug_faults) / sizeof(debug_faults[0]); i++)
		if (strcmp(argv[0], debug_faults[i].kind) == 0 &&
		    debug_faults[i].arm(req->d, argv[1]) == 0) {
			control_reply(req, json_pack("{s:s, s:s}", "kind", argv[0], "fault",
			    argv[1]), "armed\n");
			return;
		}
	if (wire_kind_parse(argv[0], &kind) < 0 || wire_fault_parse(argv[1], &fault) < 0 ||
	    fault == WIRE_FAULT_NONE) {
		control_reply_err(req, "debug fault: KIND is encode|compile|execute, FAULT is "
		    "hang|crash|syscall|oversize|garbage|slow|badoffset|scribble|scribble-free; or plot "
		    "write; or block "
		    "commit|slow-delete; or cluster lie; or plotter wrong-piece; or scrub slow");
		return;
	}
	if (pool_arm_fault(req->d->pool, kind, fault, &e) < 0) {
		control_reply_err(req, "%s", e.msg);
		return;
	}
	control_reply(req, json_pack("{s:s, s:s}", "kind", argv[0], "fault", argv[1]),
	    "armed\n");
#else
	(void)argc;
	(void)argv;
	control_reply_err(req, "fault injection is not compiled into this farmd "
	    "(build with -Dfault_injection=true)");
#endif
}
