/*
 * cmd.c: the admin command table and the commands of the supervisor
 * itself.  Subsystems add their commands as rows here, with a handler
 * that ends in exactly one control_reply*() (now or from a callback).
 */
#include "cmd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockstore.h"
#include "clock.h"
#include "encode_v1.h"
#include "farmd.h"
#include "hash.h"
#include "io.h"
#include "log.h"
#include "metrics.h"
#include "plot.h"
#include "pool.h"

struct cmd {
	const char *words;              /* "status", "block put", ... */
	enum control_access access;
	int min_args, max_args;         /* after the words; -1 = no limit */
	const char *usage;
	void (*fn)(struct control_req *req, int argc, char **argv);
};

/* ---- text helpers --------------------------------------------------- */

void
tb_printf(struct tbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->len >= sizeof(b->s) - 1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->s + b->len, sizeof(b->s) - b->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		b->len += (size_t)n < sizeof(b->s) - b->len ? (size_t)n : sizeof(b->s) - b->len - 1;
}

struct tbuf *
tb_new(struct control_req *req)
{
	struct tbuf *b = malloc(sizeof(*b));

	if (b == NULL)
		control_reply_err(req, "out of memory");
	else
		b->len = 0;
	return b;
}

const char *
js(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

int
cmd_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

long long
ji(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static void
tb_workers(struct tbuf *b, json_t *workers)
{
	size_t i;
	json_t *w;

	tb_printf(b, "%-8s %-8s %-9s %s\n", "PID", "KIND", "STATE", "JOB");
	json_array_foreach(workers, i, w) {
		json_t *job = json_object_get(w, "job");

		if (json_is_integer(job))
			tb_printf(b, "%-8lld %-8s %-9s %lld\n", ji(w, "pid"), js(w, "kind"),
			    js(w, "state"), (long long)json_integer_value(job));
		else
			tb_printf(b, "%-8lld %-8s %-9s -\n", ji(w, "pid"), js(w, "kind"),
			    js(w, "state"));
	}
}

static void
tb_pools(struct tbuf *b, json_t *pools)
{
	size_t i;
	json_t *p;

	tb_printf(b, "%-8s %5s %6s %9s %7s  %-8s %s\n", "POOL", "SIZE", "ALIVE", "RESTARTS",
	    "QUEUED", "STATE", "KERNEL");
	json_array_foreach(pools, i, p)
		tb_printf(b, "%-8s %5lld %6lld %9lld %7lld  %-8s %s\n", js(p, "kind"),
		    ji(p, "size"), ji(p, "alive"), ji(p, "restarts"), ji(p, "queued"),
		    js(p, "state"), *js(p, "kernel") ? js(p, "kernel") : "-");
}

/* ---- supervisor commands -------------------------------------------- */

static void
cmd_status(struct control_req *req, int argc, char **argv)
{
	struct farmd *d = req->d;
	struct tbuf *b = malloc(sizeof(*b));
	json_t *o, *sandbox, *pl;
	const char *key;
	json_t *v;

	(void)argc;
	(void)argv;
	if (b == NULL) {
		control_reply_err(req, "out of memory");
		return;
	}
	b->len = 0;
	sandbox = pool_json_sandbox(d->pool);
	o = json_pack("{s:s, s:i, s:I, s:s, s:s, s:s, s:o, s:o, s:o}",
	    "version", FARMD_VERSION, "pid", (int)getpid(),
	    "uptime_s", (json_int_t)((clock_mono_ms() - d->start_mono_ms) / 1000),
	    "state_dir", d->state_dir, "admin_socket", d->admin_path,
	    "state", d->stopping ? "stopping" : d->ready ? "running" : "starting",
	    "sandbox", sandbox, "pools", pool_json_pools(d->pool),
	    "workers", pool_json_workers(d->pool));
	tb_printf(b, "farmd %s  pid %d  up %llds  %s\n", FARMD_VERSION, (int)getpid(),
	    ji(o, "uptime_s"), js(o, "state"));
	tb_printf(b, "state dir    %s\nadmin socket %s\nsandbox     ", d->state_dir,
	    d->admin_path);
	json_object_foreach(sandbox, key, v)
		tb_printf(b, " %s%s", json_is_true(v) ? "+" : "-", key);
	tb_printf(b, "\n");
	pl = plot_json_summary(d->plot);
	tb_printf(b, "plotting     %lld farms, %lld/%lld sectors plotted, %lld in flight, %lld "
	    "errors%s%s\n\n", ji(pl, "farms"), ji(pl, "plotted"), ji(pl, "sectors"),
	    ji(pl, "in_flight"), ji(pl, "errors"), js(pl, "last_error")[0] ? "; last: " : "",
	    js(pl, "last_error"));
	json_object_set_new(o, "plotting", pl);
	tb_pools(b, json_object_get(o, "pools"));
	tb_printf(b, "\n");
	tb_workers(b, json_object_get(o, "workers"));
	control_reply(req, o, b->s);
	free(b);
}

static void
cmd_workers(struct control_req *req, int argc, char **argv)
{
	struct tbuf *b = malloc(sizeof(*b));
	json_t *w = pool_json_workers(req->d->pool);

	(void)argc;
	(void)argv;
	if (b == NULL) {
		json_decref(w);
		control_reply_err(req, "out of memory");
		return;
	}
	b->len = 0;
	tb_workers(b, w);
	control_reply(req, w, b->s);
	free(b);
}

static void
cmd_shutdown(struct control_req *req, int argc, char **argv)
{
	struct farmd *d = req->d;
	char why[96];

	(void)argc;
	(void)argv;
	snprintf(why, sizeof(why), "shutdown requested by uid %u (pid %d)",
	    (unsigned)req->uid, (int)req->pid);
	control_reply(req, json_pack("{s:b}", "stopping", 1), "farmd is shutting down\n");
	farmd_stop(d, 0, why);
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

/* ---- debug: drive a worker job by hand ------------------------------ */

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
static void
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
 * one encode worker; reports IPC throughput and round-trip latency. */
struct echo_run {
	struct control_req *req;
	uint8_t *payload;
	size_t size;
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

	(void)id;
	if (error != NULL || res->body_case != FARMD__JOB_RESULT__BODY_ECHO ||
	    res->echo->data.len != run->size) {
		control_reply_err(run->req, "echo job %u: %s", run->done,
		    error ? error : "wrong answer");
		cmd_echo_free(run);
		return;
	}
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
		snprintf(text, sizeof(text), "%u round trips of %zu bytes: %.1f MB/s "
		    "(both directions), rtt median %llu us, p99 %llu us\n", run->count,
		    run->size, mbps, (unsigned long long)run->rtt_us[run->count / 2],
		    (unsigned long long)run->rtt_us[run->count * 99 / 100]);
		control_reply(run->req, json_pack("{s:I, s:i, s:f, s:I, s:I}",
		    "size", (json_int_t)run->size, "count", (int)run->count,
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

	ej.data.data = run->payload;
	ej.data.len = run->size;
	job.body_case = FARMD__JOB__BODY_ECHO;
	job.echo = &ej;
	run->last_us = clock_mono_us();
	if (pool_submit(run->req->d->pool, WIRE_KIND_ENCODE, &job, &opts, cmd_echo_done,
	    run, &e) == 0) {
		control_reply_err(run->req, "%s", e.msg);
		cmd_echo_free(run);
	}
}

static void
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
	run->count = (unsigned)count;
	run->start_us = clock_mono_us();
	cmd_echo_next(run);
}

static void
cmd_debug_fault(struct control_req *req, int argc, char **argv)
{
#ifdef FAULT_INJECTION
	enum wire_kind kind;
	enum wire_fault fault;
	struct err e;

	(void)argc;
	if ((strcmp(argv[0], "plot") == 0 && strcmp(argv[1], "write") == 0) ||
	    (strcmp(argv[0], "block") == 0 &&
	    blockstore_arm_fault(req->d->blocks, argv[1]) == 0)) {
		if (argv[0][0] == 'p')
			plot_arm_write_fault(req->d->plot);
		control_reply(req, json_pack("{s:s, s:s}", "kind", argv[0], "fault", argv[1]),
		    "armed\n");
		return;
	}
	if (wire_kind_parse(argv[0], &kind) < 0 || wire_fault_parse(argv[1], &fault) < 0 ||
	    fault == WIRE_FAULT_NONE) {
		control_reply_err(req, "debug fault: KIND is encode|compile|execute, FAULT is "
		    "hang|crash|syscall|oversize|garbage; or plot write; or block commit|slow-delete");
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

/* ---- table and dispatch --------------------------------------------- */

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
	{ "scrub status", ACCESS_MONITOR, 0, 0, "scrub status", cmd_scrub },
	{ "scrub", ACCESS_ADMIN, 1, 1, "scrub start|pause|resume|cancel|status", cmd_scrub },
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
	{ "debug encode", ACCESS_ADMIN, 3, 6, "debug encode SECTOR_ID OFFSET FILE [N R P]",
	    cmd_debug_encode },
	{ "debug echo", ACCESS_ADMIN, 1, 2, "debug echo SIZE [COUNT]", cmd_debug_echo },
	{ "debug fault", ACCESS_ADMIN, 2, 2, "debug fault KIND FAULT", cmd_debug_fault },
};

/* Number of argv words that spell c->words, or 0. */
static int
cmd_match(const struct cmd *c, int argc, char **argv)
{
	const char *w = c->words;
	int i = 0;

	while (*w != '\0') {
		size_t n = strcspn(w, " ");

		if (i >= argc || strlen(argv[i]) != n || strncmp(argv[i], w, n) != 0)
			return 0;
		i++;
		w += n;
		w += *w == ' ';
	}
	return i;
}

void
cmd_dispatch(struct control_req *req)
{
	static const char *const levels[] = { "none", "monitor", "admin" };

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		const struct cmd *c = &cmds[i];
		int nw = cmd_match(c, req->argc, req->argv), nargs;

		if (nw == 0)
			continue;
		nargs = req->argc - nw;
		if (req->access < c->access) {
			req->d->metrics->admin_denied++;
			log_warn("admin: uid %u (pid %d) denied '%s': needs %s access",
			    (unsigned)req->uid, (int)req->pid, c->words, levels[c->access]);
			control_reply_err(req, "permission denied: '%s' needs %s access "
			    "(uid %u has %s)", c->words, levels[c->access], (unsigned)req->uid,
			    levels[req->access]);
			return;
		}
		if (nargs < c->min_args || (c->max_args >= 0 && nargs > c->max_args)) {
			control_reply_err(req, "usage: farmctl %s", c->usage);
			return;
		}
		c->fn(req, nargs, req->argv + nw);
		return;
	}
	control_reply_err(req, "unknown command '%s'", req->argv[0]);
}
