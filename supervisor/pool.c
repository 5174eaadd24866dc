/*
 * pool.c: worker processes and the jobs they run.
 *
 * Invariants:
 * - a job is in exactly one place: its kind's queue, a worker (w->job,
 *   or w->next: sent ahead, below), or waiting on its retry timer; its
 *   callback runs once, then it is freed;
 * - a worker is freed only when reaped (waitpid), so a pid we signal is
 *   always our own child, never a recycled one;
 * - a failed attempt is settled in one place, pool_job_attempt_failed(),
 *   from pool_reap(): the exit status is the most precise reason, unless
 *   we killed the worker ourselves (timeout, protocol error) and said why;
 * - an encode worker has its shared buffer (wbuf.h) from its spawn to its
 *   reaping, or longer while a fill still writes into it (w->fills: the
 *   reaped worker waits on pool->zombies); a buffer job's input is copied
 *   into it at dispatch, or, for a fill job, read into it by the job's
 *   owner (pool_filled sends the job then), and its answer is copied out
 *   of it (once, checked) before the callback, so the caller's buffer
 *   holds the input until an attempt succeeds;
 * - a worker reads its frames in the order it runs the jobs: a job placed
 *   ahead of one still filling waits for that one's frame (job->sent);
 * - a busy encode worker may hold one more buffer job, sent ahead (its
 *   input in the next slot of the buffer, its frame behind the running
 *   job's), so that it starts that job the moment it has answered,
 *   without waiting for our answer to its answer: plotting keeps the
 *   worker busy instead of idle for a round trip per job.  The job sent
 *   ahead is not running: its deadline starts when it does, and when the
 *   worker dies first it goes back to the head of the queue, the attempt
 *   not counted.
 */
#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backoff.h"
#include "clock.h"
#include "farmd.h"
#include "frame.h"
#include "fsm.h"
#include "log.h"
#include "peer.h"
#include "wire.h"

#include "pool_int.h"

static void pool_dispatch(struct pool_kind *pk);
static int pool_spawn(struct pool_kind *pk, struct err *e);
static void pool_schedule_restart(struct pool_kind *pk);
static void pool_recover_cb(evutil_socket_t fd, short what, void *arg);

static uint32_t
pool_kind_size(const struct config *c, enum wire_kind kind)
{
	switch (kind) {
	case WIRE_KIND_ENCODE: return c->workers.encode;
	case WIRE_KIND_COMPILE: return c->workers.compile;
	default: return c->workers.execute;
	}
}

struct pool *
pool_new(struct farmd *d, const struct pool_hooks *hooks, struct err *e)
{
	struct pool *p = calloc(1, sizeof(*p));

	if (p == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	p->d = d;
	p->hooks = *hooks;
	p->next_id = 1;
	TAILQ_INIT(&p->jobs);
	TAILQ_INIT(&p->zombies);
	for (int k = 0; k < WIRE_KIND_COUNT; k++) {
		struct pool_kind *pk = &p->kinds[k];

		pk->pool = p;
		pk->kind = (enum wire_kind)k;
		pk->size = pool_kind_size(&d->cfg, pk->kind);
		TAILQ_INIT(&pk->workers);
		TAILQ_INIT(&pk->queue);
		LIST_INIT(&pk->respawns);
		if ((pk->recover_ev = evtimer_new(d->base, pool_recover_cb, pk)) == NULL) {
			err_set(e, "out of memory");
			pool_free(p);
			return NULL;
		}
	}
	for (int i = 0; i < WIRE_SANDBOX_LAYERS; i++)
		p->last_layers[i] = -1;
	return p;
}

/* ---- jobs ---------------------------------------------------------- */

static void
pool_job_free(struct pool_job *job)
{
	if (job->listed)
		TAILQ_REMOVE(&job->pk->pool->jobs, job, all);
	if (job->retry_ev != NULL)
		event_free(job->retry_ev);
	if (job->fill_ev != NULL)
		event_free(job->fill_ev);
	free(job->frame);
	free(job);
}

/* Unlisted before the callback runs: whatever the callback does (cancel,
 * shut down, submit) can no longer find this job. */
static void
pool_job_finish(struct pool_job *job, const Farmd__JobResult *res, const char *error)
{
	TAILQ_REMOVE(&job->pk->pool->jobs, job, all);
	job->listed = 0;
	if (!job->cancelled)
		job->cb(job->id, res, error, job->arg);
	pool_job_free(job);
}

static void
pool_job_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pool_job *job = arg;

	(void)fd;
	(void)what;
	if (job->cancelled) {
		pool_job_free(job);
		return;
	}
	/* A retry goes first: it has waited longest. */
	TAILQ_INSERT_HEAD(&job->pk->queue, job, entry);
	pool_dispatch(job->pk);
}

static void
pool_job_attempt_failed(struct pool_job *job, const char *reason)
{
	struct pool *p = job->pk->pool;
	struct timeval tv;
	char msg[ERR_MSG_MAX];

	job->pk->jobs_failed++;
	job->worker = NULL;
	if (job->cancelled) {
		pool_job_free(job);
		return;
	}
	if (p->stopping || (job->opts.max_attempts > 0 &&
	    job->attempts >= job->opts.max_attempts)) {
		snprintf(msg, sizeof(msg), "%s job %llu failed after %d attempt%s: %s",
		    wire_kind_name(job->pk->kind), (unsigned long long)job->id,
		    job->attempts, job->attempts == 1 ? "" : "s", reason);
		log_warn("%s", msg);
		pool_job_finish(job, NULL, msg);
		return;
	}
	log_info("%s job %llu attempt %d failed (%s); retrying in %llu ms",
	    wire_kind_name(job->pk->kind), (unsigned long long)job->id,
	    job->attempts, reason, (unsigned long long)job->opts.retry_delay_ms);
	job->pk->jobs_retried++;
	if (job->retry_ev == NULL)
		job->retry_ev = evtimer_new(p->d->base, pool_job_retry_cb, job);
	tv = clock_tv(job->opts.retry_delay_ms);
	evtimer_add(job->retry_ev, &tv);
}

/* A job placed on a worker that will not run it (it ended first, or the
 * job's input never reached it): back to the head of the queue, the
 * attempt not counted. */
static void
pool_job_requeue(struct pool_job *job)
{
	job->worker = NULL;
	job->sent = 0;
	job->attempts--;
	if (job->cancelled) {
		pool_job_free(job);
	} else if (job->pk->pool->stopping) {
		pool_job_finish(job, NULL, "farmd is shutting down");
	} else {
		TAILQ_INSERT_HEAD(&job->pk->queue, job, entry);
	}
}

/* A job sent ahead to a worker that ended before starting it. */
static void
pool_job_unsend(struct pool_job *job)
{
	log_info("%s job %llu was sent ahead to worker %d, which ended before starting it; "
	    "queued again", wire_kind_name(job->pk->kind), (unsigned long long)job->id,
	    (int)job->worker->pid);
	pool_job_requeue(job);
}

static void pool_fill_ev_cb(evutil_socket_t fd, short what, void *arg);

static struct pool_job *
pool_job_new(struct pool *p, enum wire_kind kind, const struct pool_job_opts *opts,
    pool_done_cb cb, void *arg, struct err *e)
{
	struct pool_job *j;

	if (p->stopping) {
		err_set(e, "farmd is shutting down");
		return NULL;
	}
	if (p->kinds[kind].size == 0) {
		err_set(e, "no %s workers are configured ([workers] %s = 0)",
		    wire_kind_name(kind), wire_kind_name(kind));
		return NULL;
	}
	if ((j = calloc(1, sizeof(*j))) == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	j->pk = &p->kinds[kind];
	j->id = p->next_id++;
	j->opts = *opts;
	j->cb = cb;
	j->arg = arg;
	return j;
}

static uint64_t
pool_job_queue(struct pool *p, struct pool_job *j)
{
	TAILQ_INSERT_TAIL(&p->jobs, j, all);
	j->listed = 1;
	TAILQ_INSERT_TAIL(&j->pk->queue, j, entry);
	pool_dispatch(j->pk);
	return j->id;
}

uint64_t
pool_submit(struct pool *p, enum wire_kind kind, Farmd__Job *job,
    const struct pool_job_opts *opts, pool_done_cb cb, void *arg, struct err *e)
{
	Farmd__WorkerMsg msg = FARMD__WORKER_MSG__INIT;
	struct pool_job *j;

	if ((j = pool_job_new(p, kind, opts, cb, arg, e)) == NULL)
		return 0;
	job->id = j->id;
	msg.m_case = FARMD__WORKER_MSG__M_JOB;
	msg.job = job;
	j->frame = frame_pack(&msg.base, &j->len);
	if (j->frame == NULL || j->len - FRAME_HDR_LEN > p->d->cfg.daemon.max_frame) {
		err_set(e, "%s job of %zu bytes exceeds [daemon] max_frame",
		    wire_kind_name(kind), j->frame ? j->len : 0);
		free(j->frame);
		free(j);
		return 0;
	}
	return pool_job_queue(p, j);
}

/* A buffer job: lend describes it; it fits any encode worker's buffer.
 * With fill, its owner writes the input (else it is copied from lend). */
static uint64_t
pool_submit_lent(struct pool *p, const struct wbuf_job *lend, pool_fill_cb fill,
    const struct pool_job_opts *opts, pool_done_cb cb, void *arg, struct err *e)
{
	struct pool_job *j;

	if (lend->len == 0 || lend->len > p->d->cfg.workers.encode_buffer) {
		err_set(e, "encode job of %zu bytes: [workers] encode_buffer is %llu", lend->len,
		    (unsigned long long)p->d->cfg.workers.encode_buffer);
		return 0;
	}
	if ((j = pool_job_new(p, WIRE_KIND_ENCODE, opts, cb, arg, e)) == NULL)
		return 0;
	j->lent = 1;
	j->lend = *lend;
	if (fill != NULL) {
		j->fill = fill;
		if ((j->fill_ev = event_new(p->d->base, -1, 0, pool_fill_ev_cb, j)) == NULL) {
			pool_job_free(j);
			err_set(e, "out of memory");
			return 0;
		}
	}
	return pool_job_queue(p, j);
}

static void
pool_encode_lend(struct wbuf_job *l, const uint8_t sector_id[HASH_LEN], uint32_t first_offset,
    const struct encode_params *params, uint8_t *buf, uint32_t piece_len, uint32_t n,
    int decode)
{
	memset(l, 0, sizeof(*l));
	memcpy(l->sector_id, sector_id, HASH_LEN);
	l->buf = buf;
	l->len = (size_t)piece_len * n;
	l->first_offset = first_offset;
	l->params = *params;
	l->piece_len = piece_len;
	l->count = n;
	l->decode = decode;
}

uint64_t
pool_submit_encode_buf(struct pool *p, const uint8_t sector_id[HASH_LEN],
    uint32_t first_offset, const struct encode_params *params, uint8_t *buf,
    uint32_t piece_len, uint32_t n, int decode, const struct pool_job_opts *opts,
    pool_done_cb cb, void *arg, struct err *e)
{
	struct wbuf_job l;

	pool_encode_lend(&l, sector_id, first_offset, params, buf, piece_len, n, decode);
	return pool_submit_lent(p, &l, NULL, opts, cb, arg, e);
}

uint64_t
pool_submit_encode_fill(struct pool *p, const uint8_t sector_id[HASH_LEN],
    uint32_t first_offset, const struct encode_params *params, uint8_t *out,
    uint32_t piece_len, uint32_t n, const struct pool_job_opts *opts, pool_fill_cb fill,
    pool_done_cb cb, void *arg, struct err *e)
{
	struct wbuf_job l;

	pool_encode_lend(&l, sector_id, first_offset, params, out, piece_len, n, 0);
	return pool_submit_lent(p, &l, fill, opts, cb, arg, e);
}

uint64_t
pool_submit_echo_buf(struct pool *p, uint8_t *buf, size_t len,
    const struct pool_job_opts *opts, pool_done_cb cb, void *arg, struct err *e)
{
	struct wbuf_job l = { 0 };

	l.echo = 1;
	l.buf = buf;
	l.len = len;
	return pool_submit_lent(p, &l, NULL, opts, cb, arg, e);
}

size_t
pool_buffer_size(const struct pool *p)
{
	return p->d->cfg.workers.encode_buffer;
}

uint64_t
pool_submit_encode(struct pool *p, const uint8_t sector_id[HASH_LEN], uint32_t first_offset,
    const struct encode_params *params, const ProtobufCBinaryData *pieces, size_t n,
    int decode, const struct pool_job_opts *opts, pool_done_cb cb, void *arg, struct err *e)
{
	Farmd__Job job = FARMD__JOB__INIT;
	Farmd__EncodeJob ej = FARMD__ENCODE_JOB__INIT;

	ej.sector_id.data = (uint8_t *)sector_id;
	ej.sector_id.len = HASH_LEN;
	ej.first_offset = first_offset;
	ej.scrypt_n = params->n;
	ej.scrypt_r = params->r;
	ej.scrypt_p = params->p;
	ej.n_pieces = n;
	ej.pieces = (ProtobufCBinaryData *)pieces;
	ej.decode = decode;
	job.body_case = FARMD__JOB__BODY_ENCODE;
	job.encode = &ej;
	/* Packed here: the caller's buffers are its own again on return. */
	return pool_submit(p, WIRE_KIND_ENCODE, &job, opts, cb, arg, e);
}

const ProtobufCBinaryData *
pool_encode_pieces(const Farmd__JobResult *res, size_t n, size_t len)
{
	if (res->body_case != FARMD__JOB_RESULT__BODY_ENCODE || res->encode->n_pieces != n)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (res->encode->pieces[i].len != len)
			return NULL;
	return res->encode->pieces;
}

void
pool_cancel(struct pool *p, uint64_t id)
{
	struct pool_job *job;

	TAILQ_FOREACH(job, &p->jobs, all) {
		if (job->id != id)
			continue;
		job->cancelled = 1;
		/* Queued: drop now.  Running or waiting to retry: dropped
		 * when that ends. */
		if (job->worker == NULL && (job->retry_ev == NULL ||
		    !evtimer_pending(job->retry_ev, NULL))) {
			TAILQ_REMOVE(&job->pk->queue, job, entry);
			pool_job_free(job);
		}
		return;
	}
}

/* ---- workers ------------------------------------------------------- */

/* Entering W_EXITING kills the process; pool_reap and the close of its
 * socket finish it. */
static int
worker_exit_step(void *arg)
{
	struct worker *w = arg;

	if (w->deadline != NULL)
		evtimer_del(w->deadline);
	kill(w->pid, SIGKILL);
	return FSM_ASYNC;
}

static void
worker_label(const void *obj, char *buf, size_t len)
{
	const struct worker *w = obj;

	snprintf(buf, len, "%s worker %d", wire_kind_name(w->pk->kind), (int)w->pid);
}

static const struct fsm_state worker_states[W_NSTATES] = {
	[W_STARTING] = { "starting", NULL },
	[W_IDLE] = { "idle", NULL },
	[W_BUSY] = { "busy", NULL },
	[W_EXITING] = { "exiting", worker_exit_step },
};

static const struct fsm_def worker_fsm = {
	.name = "worker",
	.states = worker_states,
	.nstates = W_NSTATES,
	.error = W_EXITING,
	.final = W_EXITING,
	.label = worker_label,
};


static void
worker_end(struct worker *w, const char *reason)
{
	if (worker_is(w, W_EXITING))
		return;
	if (reason != NULL && w->reason[0] == '\0')
		snprintf(w->reason, sizeof(w->reason), "%s", reason);
	fsm_enter(&w->fsm, w, W_EXITING);
}

static void
worker_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	char reason[64];
	uint64_t ms = w->job->opts.timeout_ms;

	(void)fd;
	(void)what;
	if (ms % 1000 == 0)
		snprintf(reason, sizeof(reason), "timeout after %llus", (unsigned long long)(ms / 1000));
	else
		snprintf(reason, sizeof(reason), "timeout after %llums", (unsigned long long)ms);
	w->pk->timeouts++;
	log_warn("%s worker %d: job %llu: %s; killing it", wire_kind_name(w->pk->kind),
	    (int)w->pid, (unsigned long long)w->job->id, reason);
	worker_end(w, reason);
}

static int
worker_hello(struct worker *w, const Farmd__WorkerHello *h, struct err *e)
{
	struct pool *p = w->pk->pool;

	if (h->version != WIRE_VERSION)
		return err_set(e, "protocol version %u, expected %u", h->version, WIRE_VERSION);
	if (strcmp(h->kind, wire_kind_name(w->pk->kind)) != 0)
		return err_set(e, "says it is a %s worker", h->kind);
	for (size_t i = 0; i < h->n_layers; i++) {
		int idx = wire_sandbox_layer_parse(h->layers[i]->name);

		if (idx < 0)
			continue;
		w->layers[idx] = h->layers[i]->active;
		p->last_layers[idx] = h->layers[i]->active;
		if (!h->layers[i]->active && p->d->cfg.daemon.sandbox_required) {
			char why[ERR_MSG_MAX];

			snprintf(why, sizeof(why), "sandbox layer %s is unavailable (%s) and "
			    "[daemon] sandbox_required = true", h->layers[i]->name,
			    h->layers[i]->detail);
			p->hooks.fatal(p->hooks.arg, why);
		}
	}
	/* Untrusted text: bounded copy, shown as is in status. */
	snprintf(w->kernel, sizeof(w->kernel), "%s", h->kernel ? h->kernel : "");
	memcpy(w->pk->kernel, w->kernel, sizeof(w->kernel));
	fsm_enter(&w->fsm, w, W_IDLE);
	w->pk->hellos++;
	if (w->pk->died_us != 0) {
		w->pk->replace_us = clock_mono_us() - w->pk->died_us;
		w->pk->died_us = 0;
	}
	log_debug("%s worker %d ready", wire_kind_name(w->pk->kind), (int)w->pid);
	pool_dispatch(w->pk);
	return 0;
}

static int
worker_result(struct worker *w, const Farmd__JobResult *res, struct err *e)
{
	struct pool_job *job = w->job;

	if (!worker_is(w, W_BUSY) || job == NULL)
		return err_set(e, "result for job %llu while idle", (unsigned long long)res->id);
	if (res->id != job->id || !job->sent)
		return err_set(e, "result for job %llu while running job %llu%s",
		    (unsigned long long)res->id, (unsigned long long)job->id,
		    job->sent ? "" : " (not sent yet)");
	/* The job frame is lent to the peer until written: an answer before
	 * all of it left is a lie, and freeing the job now would send freed
	 * memory.  What may still wait is the frame of the job sent ahead,
	 * which went out after it. */
	if (peer_queued(w->peer) > (w->next != NULL && w->next->sent ? w->next->len : 0))
		return err_set(e, "answered job %llu before reading all of it",
		    (unsigned long long)job->id);
	if (job->lent && res->error[0] == '\0') {
		int rc = wbuf_answer(&w->wb, &job->lend, res, !job->cancelled, e);

		/* The copy overwrote the input: this attempt is the last, and
		 * the caller starts over (an sjob from its pieces), unless the
		 * job reads its input anew for each attempt. */
		if (rc == WBUF_CHANGED && job->fill == NULL)
			job->opts.max_attempts = job->attempts;
		if (rc != WBUF_OK)
			return err_wrap(e, "job %llu", (unsigned long long)job->id);
	}
	evtimer_del(w->deadline);
	w->job = NULL;
	if (w->next != NULL) {
		/* The job sent ahead runs now: its deadline from here (one
		 * still filling is sent, and timed, by pool_filled). */
		w->job = w->next;
		w->next = NULL;
		if (w->job->sent) {
			struct timeval tv = clock_tv(w->job->opts.timeout_ms);

			evtimer_add(w->deadline, &tv);
		}
	} else {
		fsm_enter(&w->fsm, w, W_IDLE);
	}
	w->pk->jobs_done++;
	pool_job_finish(job, res, res->error[0] ? res->error : NULL);
	pool_dispatch(w->pk);
	return 0;
}

static int
worker_msg_cb(struct peer *peer, const uint8_t *body, size_t len, int *fds, int nfds,
    void *arg, struct err *e)
{
	struct worker *w = arg;
	struct frame_alloc fa;
	Farmd__WorkerMsg *msg;
	int rc;

	(void)peer;
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	msg = (Farmd__WorkerMsg *)frame_unpack(&farmd__worker_msg__descriptor, body,
	    len, &fa, e);
	if (msg == NULL)
		return -1;
	if (nfds > 0)
		rc = err_set(e, "unexpected descriptors");
	else if (worker_is(w, W_STARTING) && msg->m_case != FARMD__WORKER_MSG__M_HELLO)
		rc = err_set(e, "first message is not a hello");
	else if (msg->m_case == FARMD__WORKER_MSG__M_HELLO && worker_is(w, W_STARTING))
		rc = worker_hello(w, msg->hello, e);
	else if (msg->m_case == FARMD__WORKER_MSG__M_RESULT)
		rc = worker_result(w, msg->result, e);
	else
		rc = err_set(e, "unexpected message (case %d)", (int)msg->m_case);
	protobuf_c_message_free_unpacked(&msg->base, &fa.pb);
	return rc;
}

static void
worker_close_cb(struct peer *peer, enum peer_close how, const char *reason, void *arg)
{
	struct worker *w = arg;
	struct pool *p = w->pk->pool;

	(void)peer;
	/* EOF is how a crash first shows; the exit status will say more. */
	if (how != PEER_CLOSED) {
		char why[ERR_MSG_MAX];

		p->protocol_errors++;
		snprintf(why, sizeof(why), "protocol error: %s", reason);
		log_warn("%s worker %d: %s; killing it", wire_kind_name(w->pk->kind),
		    (int)w->pid, why);
		worker_end(w, why);
	} else {
		worker_end(w, NULL);
	}
}

/* Worker stderr is a pipe we relay into our own stderr: the worker's
 * RLIMIT_FSIZE is 0, so it could not write to a log file itself, and
 * its lines arrive whole (one write(2) each, below PIPE_BUF). */
static void
worker_log_drain(struct worker *w)
{
	char buf[4096];
	ssize_t n = -1;

	/* Bounded per wake-up: a flooding worker cannot hold the loop. */
	for (int i = 0; i < 16 && (n = read(w->log_fd, buf, sizeof(buf))) > 0; i++)
		(void)!write(STDERR_FILENO, buf, (size_t)n);
	if (n == 0 && w->log_ev != NULL)
		event_del(w->log_ev);
}

static void
worker_log_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	worker_log_drain(arg);
}

/* Frees w, or, while a fill still writes into its buffer, all of it but
 * the buffer: it then waits on pool->zombies for the last pool_filled. */
static void
worker_free(struct worker *w)
{
	if (w->log_fd >= 0) {
		worker_log_drain(w);
		close(w->log_fd);
		w->log_fd = -1;
	}
	if (w->log_ev != NULL)
		event_free(w->log_ev);
	w->log_ev = NULL;
	peer_free(w->peer);
	w->peer = NULL;
	if (w->deadline != NULL)
		event_free(w->deadline);
	w->deadline = NULL;
	free(w->out[0]);
	free(w->out[1]);
	w->out[0] = w->out[1] = NULL;
	w->job = w->next = NULL;
	if (w->fills > 0) {
		w->gone = 1;
		TAILQ_INSERT_TAIL(&w->pk->pool->zombies, w, entry);
		return;
	}
	wbuf_free(&w->wb);
	free(w);
}

/* Runs in the child between fork and exec: async-signal-safe calls only. */
static void __attribute__((noreturn))
pool_child(const char *path, const char *kind, int fd, int log_fd, pid_t parent,
    const char *max_frame, char *kernel_env)
{
	struct sigaction sa;
	sigset_t none;
	char *argv[] = { "farmd-worker", "--kind", (char *)kind, "--max-frame",
		(char *)max_frame, NULL };
	/* A clean environment; FARMD_KERNEL (if set) forces an encode
	 * worker's scrypt kernel. */
	char *envp[] = { kernel_env, NULL };
	int null;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (int s = 1; s < NSIG; s++)
		sigaction(s, &sa, NULL);
	/* Dies with the supervisor, even on kill -9; re-check the parent
	 * because it may have died before prctl. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(127);
	if (fd == WIRE_WORKER_FD)
		fcntl(fd, F_SETFD, 0);
	else if (dup2(fd, WIRE_WORKER_FD) < 0)
		_exit(127);
	null = open("/dev/null", O_RDONLY);
	if (null >= 0 && null != STDIN_FILENO)
		dup2(null, STDIN_FILENO);
	if (dup2(log_fd, STDERR_FILENO) < 0)
		_exit(127);
	close_range(WIRE_WORKER_FD + 1, ~0U, 0);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execve(path, argv, envp);
	_exit(127);
}

/* An encode worker's shared buffer goes first on its socket, before the
 * peer makes it non-blocking: one small frame into an empty socket. */
static int
worker_give_buffer(struct worker *w, int sock, size_t size, struct err *e)
{
	Farmd__WorkerMsg msg = FARMD__WORKER_MSG__INIT;
	Farmd__Buffer b = FARMD__BUFFER__INIT;
	int fd, rc;

	if (wbuf_create(&w->wb, size, &fd, e) < 0)
		return -1;
	b.size = size;
	msg.m_case = FARMD__WORKER_MSG__M_BUFFER;
	msg.buffer = &b;
	rc = frame_send_msg(sock, &msg.base, &fd, 1, e);
	close(fd);
	return rc;
}

static int
pool_spawn(struct pool_kind *pk, struct err *e)
{
	struct pool *p = pk->pool;
	struct worker *w;
	struct err be;
	sigset_t all, old;
	char max_frame[32], kernel_env[64] = "";
	const char *kernel = getenv("FARMD_KERNEL");
	int sv[2], lp[2], buf = 4 << 20;
	pid_t pid, parent = getpid();

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return err_sys(e, "%s worker: socketpair", wire_kind_name(pk->kind));
	if (pipe2(lp, O_CLOEXEC) < 0) {
		close(sv[0]);
		close(sv[1]);
		return err_sys(e, "%s worker: pipe", wire_kind_name(pk->kind));
	}
	/* Large buffers: a 1 MiB job moves in one or two syscalls. */
	for (int i = 0; i < 2; i++) {
		setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
		setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	}
	snprintf(max_frame, sizeof(max_frame), "%llu",
	    (unsigned long long)p->d->cfg.daemon.max_frame);
	if (kernel != NULL && pk->kind == WIRE_KIND_ENCODE)
		snprintf(kernel_env, sizeof(kernel_env), "FARMD_KERNEL=%s", kernel);
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	pid = fork();
	if (pid == 0)
		pool_child(p->d->worker_path, wire_kind_name(pk->kind), sv[1], lp[1],
		    parent, max_frame, kernel_env[0] ? kernel_env : NULL);
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(sv[1]);
	close(lp[1]);
	if (pid < 0) {
		close(sv[0]);
		close(lp[0]);
		return err_sys(e, "%s worker: fork", wire_kind_name(pk->kind));
	}
	w = calloc(1, sizeof(*w));
	if (w == NULL) {
		/* The child dies on EOF of its socket; pool_reap reaps it. */
		close(sv[0]);
		close(lp[0]);
		kill(pid, SIGKILL);
		return err_set(e, "out of memory");
	}
	w->log_fd = lp[0];
	evutil_make_socket_nonblocking(lp[0]);
	w->log_ev = event_new(p->d->base, lp[0], EV_READ | EV_PERSIST, worker_log_cb, w);
	if (w->log_ev != NULL)
		event_add(w->log_ev, NULL);
	w->pk = pk;
	w->pid = pid;
	fsm_init(&w->fsm, &worker_fsm, W_STARTING);
	for (int i = 0; i < WIRE_SANDBOX_LAYERS; i++)
		w->layers[i] = -1;
	w->deadline = evtimer_new(p->d->base, worker_deadline_cb, w);
	be.msg[0] = '\0';
	if (pk->kind == WIRE_KIND_ENCODE &&
	    worker_give_buffer(w, sv[0], p->d->cfg.workers.encode_buffer, &be) < 0)
		log_err("encode worker %d: %s", (int)pid, be.msg);
	w->peer = peer_new(p->d->base, sv[0], p->d->cfg.daemon.max_frame,
	    worker_msg_cb, worker_close_cb, w);
	TAILQ_INSERT_TAIL(&pk->workers, w, entry);
	if (w->peer == NULL || w->deadline == NULL) {
		if (w->peer == NULL)
			close(sv[0]);
		worker_end(w, "cannot watch its socket");
	} else if (be.msg[0] != '\0') {
		worker_end(w, "cannot give it its shared buffer");
	}
	log_debug("%s worker %d spawned", wire_kind_name(pk->kind), (int)pid);
	return 0;
}

static unsigned
pool_recent_restarts(struct pool_kind *pk, uint64_t now)
{
	const struct config *c = &pk->pool->d->cfg;
	unsigned n = 0;

	for (int i = 0; i < RESTART_RING; i++)
		if (pk->restart_ms[i] != 0 && now - pk->restart_ms[i] < c->workers.restart_period_ms)
			n++;
	return n;
}

/*
 * Degraded is a function of the restart history: once fewer than
 * restart_intensity restarts fall within the last restart_period, the
 * pool is healthy again even if nothing has died since.  While degraded,
 * recover_ev waits for the oldest restart in the window to leave it.
 */
static void
pool_kind_recheck(struct pool_kind *pk)
{
	const struct config *c = &pk->pool->d->cfg;
	uint64_t now = clock_mono_ms(), next = 0;
	struct timeval tv;

	if (!pk->degraded)
		return;
	if (pool_recent_restarts(pk, now) < c->workers.restart_intensity) {
		pk->degraded = 0;
		evtimer_del(pk->recover_ev);
		log_info("%s pool recovered", wire_kind_name(pk->kind));
		pk->pool->hooks.health(pk->pool->hooks.arg);
		return;
	}
	for (int i = 0; i < RESTART_RING; i++) {
		uint64_t t = pk->restart_ms[i];

		if (t != 0 && now - t < c->workers.restart_period_ms &&
		    (next == 0 || t + c->workers.restart_period_ms - now < next))
			next = t + c->workers.restart_period_ms - now;
	}
	tv = clock_tv(next != 0 ? next : 1);
	evtimer_add(pk->recover_ev, &tv);
}

static void
pool_recover_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	pool_kind_recheck(arg);
}

static void
pool_respawn_cb(evutil_socket_t fd, short what, void *arg)
{
	struct respawn *r = arg;
	struct pool_kind *pk = r->pk;
	struct err e;

	(void)fd;
	(void)what;
	LIST_REMOVE(r, entry);
	event_free(r->ev);
	free(r);
	pk->pending--;
	if (pk->pool->stopping)
		return;
	if (pool_spawn(pk, &e) < 0) {
		/* Counted as a restart, so the back-off grows. */
		log_err("%s", e.msg);
		pool_schedule_restart(pk);
	}
}

/* Schedules one replacement worker of pk after the back-off the restart
 * history calls for. */
static void
pool_schedule_restart(struct pool_kind *pk)
{
	const struct config *c = &pk->pool->d->cfg;
	uint64_t now = clock_mono_ms(), delay;
	unsigned recent = pool_recent_restarts(pk, now);
	unsigned intensity = c->workers.restart_intensity;
	struct respawn *r;
	struct timeval tv;
	int was;

	/* What the restart history said until now comes first (it may have
	 * ended a degraded spell), then this restart's verdict. */
	pool_kind_recheck(pk);
	was = pk->degraded;
	pk->degraded = recent >= intensity;
	delay = pk->degraded ? c->workers.restart_backoff_max_ms :
	    backoff_restart_ms(recent, c->workers.restart_backoff_max_ms);
	if (pk->degraded && !was)
		log_err("%s pool degraded: %u restarts within %llu ms; restarting every %llu ms",
		    wire_kind_name(pk->kind), recent,
		    (unsigned long long)c->workers.restart_period_ms, (unsigned long long)delay);
	pk->restart_ms[pk->restart_next++ % RESTART_RING] = now ? now : 1;
	pk->restarts++;
	if (pk->degraded)
		pool_kind_recheck(pk);
	if ((r = calloc(1, sizeof(*r))) == NULL ||
	    (r->ev = evtimer_new(pk->pool->d->base, pool_respawn_cb, r)) == NULL) {
		free(r);
		log_err("%s pool: out of memory scheduling a restart", wire_kind_name(pk->kind));
		return;
	}
	r->pk = pk;
	LIST_INSERT_HEAD(&pk->respawns, r, entry);
	tv = clock_tv(delay);
	pk->pending++;
	evtimer_add(r->ev, &tv);
	pk->pool->hooks.health(pk->pool->hooks.arg);
}

/* One place formats how a child ended (PostgreSQL's LogChildExit). */
static void
pool_exit_reason(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "worker died: exit status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "worker died: signal %d (%s)%s", WTERMSIG(status),
		    strsignal(WTERMSIG(status)),
		    WTERMSIG(status) == SIGSYS ? ": forbidden system call" : "");
	else
		snprintf(buf, len, "worker died: status 0x%x", status);
}

static struct worker *
pool_find_pid(struct pool *p, pid_t pid)
{
	for (int k = 0; k < WIRE_KIND_COUNT; k++) {
		struct worker *w;

		TAILQ_FOREACH(w, &p->kinds[k].workers, entry)
			if (w->pid == pid)
				return w;
	}
	return NULL;
}

void
pool_reap(struct pool *p)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct worker *w = pool_find_pid(p, pid);
		struct pool_kind *pk;
		char how[160];
		int asked;

		if (w == NULL)
			continue;
		pk = w->pk;
		pool_exit_reason(status, how, sizeof(how));
		asked = p->stopping;
		if (!asked) {
			pk->crashes += w->reason[0] == '\0';
			log_warn("%s worker %d %s%s%s%s", wire_kind_name(pk->kind), (int)pid,
			    how + strlen("worker "), w->job ? " while running a job" : "",
			    w->reason[0] ? "; killed for: " : "", w->reason);
		}
		TAILQ_REMOVE(&pk->workers, w, entry);
		/* A job still filling is placed again when its fill ends
		 * (pool_filled): until then its input goes into w's buffer. */
		if (w->next != NULL && !w->next->filling)
			pool_job_unsend(w->next);
		if (w->job != NULL && !w->job->filling && !w->job->sent)
			pool_job_unsend(w->job);        /* promoted behind a fill, never sent */
		else if (w->job != NULL && !w->job->filling)
			pool_job_attempt_failed(w->job, w->reason[0] ? w->reason : how);
		worker_free(w);
		if (!p->stopping && pool_kind_size(&p->d->cfg, pk->kind) > 0) {
			if (pk->died_us == 0)
				pk->died_us = clock_mono_us();
			pool_schedule_restart(pk);
		}
	}
}

/* ---- dispatch ------------------------------------------------------ */

/* Puts job's frame on w's socket, and times it when it is the job w
 * runs.  A job w runs after another is sent only once that one is. */
static void
pool_send_frame(struct worker *w, struct pool_job *job)
{
	struct pool_job *other = job == w->job ? w->next : w->job;

	if (job->lent) {
		/* The frame is lent to the peer until answered; a worker holds
		 * at most two jobs, so the other one's out[] is free. */
		job->out = other != NULL && other->sent ? !other->out : 0;
		if (wbuf_job_frame(&job->lend, job->id, &w->out[job->out], &w->out_cap[job->out],
		    &job->len) < 0) {
			worker_end(w, "out of memory packing a job");
			return;
		}
		peer_send_borrowed(w->peer, w->out[job->out], job->len);
	} else {
		peer_send_borrowed(w->peer, job->frame, job->len);
	}
	job->sent = 1;
	if (job == w->job) {
		struct timeval tv = clock_tv(job->opts.timeout_ms);

		evtimer_add(w->deadline, &tv);
	}
}

/* Places job on w: to run (w idle) or, ahead, to run after w's job.  Its
 * input goes into w's buffer now (copied, or read by its owner: then it
 * is sent by pool_filled). */
static void
pool_send(struct worker *w, struct pool_job *job, int ahead)
{
	struct pool_kind *pk = w->pk;

	TAILQ_REMOVE(&pk->queue, job, entry);
	job->attempts++;
	job->worker = w;
	job->sent = 0;
	if (job->opts.timeout_ms == 0)
		job->opts.timeout_ms = pk->pool->d->cfg.workers.job_timeout_ms;
	if (ahead) {
		w->next = job;
	} else {
		w->job = job;
		fsm_enter(&w->fsm, w, W_BUSY);
		w->reason[0] = '\0';
	}
#ifdef FAULT_INJECTION
	if (pk->fault != WIRE_FAULT_NONE) {
		Farmd__WorkerMsg m = FARMD__WORKER_MSG__INIT;
		Farmd__FaultArm fa = FARMD__FAULT_ARM__INIT;

		fa.fault = pk->fault;
		m.m_case = FARMD__WORKER_MSG__M_FAULT;
		m.fault = &fa;
		log_warn("fault injection: arming '%s' in %s worker %d",
		    wire_fault_name(pk->fault), wire_kind_name(pk->kind), (int)w->pid);
		pk->fault = WIRE_FAULT_NONE;
		peer_send(w->peer, &m.base);
	}
#endif
	if (job->fill != NULL) {
		wbuf_place(&w->wb, &job->lend);
		job->filling = 1;
		w->fills++;
		event_active(job->fill_ev, EV_TIMEOUT, 0);      /* from the loop */
		return;
	}
	if (job->lent)
		wbuf_put(&w->wb, &job->lend);
	if (!ahead || w->job->sent)
		pool_send_frame(w, job);
}

/* A job placed on w leaves it unsent: w goes on with what else it holds. */
static void
worker_drop(struct worker *w, struct pool_job *job)
{
	if (w->next == job) {
		w->next = NULL;
		return;
	}
	w->job = w->next;
	w->next = NULL;
	if (w->job == NULL) {
		if (worker_is(w, W_BUSY))
			fsm_enter(&w->fsm, w, W_IDLE);
	} else if (!w->job->filling && !worker_is(w, W_EXITING) && !w->pk->pool->stopping) {
		pool_send_frame(w, w->job);
	}
}

static void
pool_fill_ev_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pool_job *job = arg;
	struct worker *w = job->worker;

	(void)fd;
	(void)what;
	if (job->cancelled || w->gone || worker_is(w, W_EXITING) || job->pk->pool->stopping) {
		pool_filled(job->pk->pool, job->id, NULL);      /* not sent (below) */
		return;
	}
	job->fill(job->id, w->wb.map + job->lend.off, job->lend.len, job->arg);
}

void
pool_filled(struct pool *p, uint64_t id, const char *error)
{
	struct pool_job *job;
	struct pool_kind *pk;
	struct worker *w;

	TAILQ_FOREACH(job, &p->jobs, all)
		if (job->id == id)
			break;
	if (job == NULL || !job->filling)
		return;
	pk = job->pk;
	w = job->worker;
	job->filling = 0;
	w->fills--;
	if (w->gone) {
		/* Reaped while the input was read: placed again, unless the
		 * input could not be had. */
		if (w->fills == 0) {
			TAILQ_REMOVE(&p->zombies, w, entry);
			wbuf_free(&w->wb);
			free(w);
		}
		if (error != NULL) {
			job->worker = NULL;
			job->attempts--;
			pool_job_finish(job, NULL, error);
		} else {
			pool_job_requeue(job);
		}
		pool_dispatch(pk);
		return;
	}
	if (error == NULL && !job->cancelled && !p->stopping && !worker_is(w, W_EXITING)) {
		if (job == w->job || w->job->sent)
			pool_send_frame(w, job);
		if (job == w->job && w->next != NULL && !w->next->filling && !w->next->sent)
			pool_send_frame(w, w->next);
		return;
	}
	worker_drop(w, job);
	if (error == NULL && !job->cancelled && !p->stopping) {
		pool_job_requeue(job);          /* its worker is ending */
	} else {
		job->worker = NULL;
		job->attempts--;
		pool_job_finish(job, NULL, error != NULL ? error : "farmd is shutting down");
	}
	pool_dispatch(pk);
}

/* Whether job may be sent ahead to w: both take a slot of its buffer. */
static int
pool_may_send_ahead(const struct worker *w, const struct pool_job *job)
{
	return worker_is(w, W_BUSY) && w->next == NULL && w->job->lent && job->lent &&
	    wbuf_fits_slot(&w->wb, w->job->lend.len) && wbuf_fits_slot(&w->wb, job->lend.len);
}

static void
pool_dispatch(struct pool_kind *pk)
{
	struct worker *w;
	struct pool_job *job;

	if (pk->pool->stopping)
		return;
	/* Idle workers first, then one job ahead to each busy one, in queue
	 * order: the head of the queue never waits behind a later job. */
	TAILQ_FOREACH(w, &pk->workers, entry) {
		if ((job = TAILQ_FIRST(&pk->queue)) == NULL)
			return;
		if (worker_is(w, W_IDLE))
			pool_send(w, job, 0);
	}
	TAILQ_FOREACH(w, &pk->workers, entry) {
		if ((job = TAILQ_FIRST(&pk->queue)) == NULL)
			return;
		if (pool_may_send_ahead(w, job))
			pool_send(w, job, 1);
	}
}

/* ---- lifecycle ----------------------------------------------------- */

int
pool_start(struct pool *p, struct err *e)
{
	for (int k = 0; k < WIRE_KIND_COUNT; k++) {
		struct pool_kind *pk = &p->kinds[k];

		for (uint32_t i = 0; i < pk->size; i++)
			if (pool_spawn(pk, e) < 0)
				return -1;
	}
	return 0;
}

int
pool_ready(const struct pool *p)
{
	for (int k = 0; k < WIRE_KIND_COUNT; k++)
		if ((uint32_t)p->kinds[k].hellos < p->kinds[k].size)
			return 0;
	return 1;
}

static void
pool_kill_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pool *p = arg;

	(void)fd;
	(void)what;
	for (int k = 0; k < WIRE_KIND_COUNT; k++) {
		struct worker *w;

		TAILQ_FOREACH(w, &p->kinds[k].workers, entry) {
			log_warn("%s worker %d did not exit; killing it",
			    wire_kind_name(w->pk->kind), (int)w->pid);
			kill(w->pid, SIGKILL);
		}
	}
}

void
pool_shutdown(struct pool *p, uint64_t grace_ms)
{
	struct timeval tv = clock_tv(grace_ms);
	struct pool_job *job;

	if (p->stopping)
		return;
	p->stopping = 1;
	/* Queued and retrying jobs end now; running ones when reaped.  A
	 * callback may change the list, so start over after each. */
	for (;;) {
		TAILQ_FOREACH(job, &p->jobs, all)
			if (job->worker == NULL)
				break;
		if (job == NULL)
			break;
		if (job->retry_ev != NULL && evtimer_pending(job->retry_ev, NULL))
			evtimer_del(job->retry_ev);
		else
			TAILQ_REMOVE(&job->pk->queue, job, entry);
		pool_job_finish(job, NULL, "farmd is shutting down");
	}
	for (int k = 0; k < WIRE_KIND_COUNT; k++) {
		struct worker *w;

		TAILQ_FOREACH(w, &p->kinds[k].workers, entry) {
			/* EOF ends an idle worker's loop; SIGTERM a busy one. */
			peer_free(w->peer);
			w->peer = NULL;
			if (w->deadline != NULL)
				evtimer_del(w->deadline);
			kill(w->pid, SIGTERM);
		}
	}
	p->kill_ev = evtimer_new(p->d->base, pool_kill_cb, p);
	evtimer_add(p->kill_ev, &tv);
}

int
pool_alive(const struct pool *p)
{
	int n = 0;

	for (int k = 0; k < WIRE_KIND_COUNT; k++) {
		const struct worker *w;

		TAILQ_FOREACH(w, &p->kinds[k].workers, entry)
			n++;
	}
	return n;
}

void
pool_free(struct pool *p)
{
	struct pool_job *job;
	struct worker *w;

	if (p == NULL)
		return;
	for (int k = 0; k < WIRE_KIND_COUNT; k++) {
		struct respawn *r;

		while ((w = TAILQ_FIRST(&p->kinds[k].workers)) != NULL) {
			TAILQ_REMOVE(&p->kinds[k].workers, w, entry);
			kill(w->pid, SIGKILL);
			waitpid(w->pid, NULL, 0);
			worker_free(w);
		}
		while ((r = LIST_FIRST(&p->kinds[k].respawns)) != NULL) {
			LIST_REMOVE(r, entry);
			event_free(r->ev);
			free(r);
		}
		if (p->kinds[k].recover_ev != NULL)
			event_free(p->kinds[k].recover_ev);
	}
	while ((w = TAILQ_FIRST(&p->zombies)) != NULL) {
		TAILQ_REMOVE(&p->zombies, w, entry);
		wbuf_free(&w->wb);
		free(w);
	}
	while ((job = TAILQ_FIRST(&p->jobs)) != NULL)
		pool_job_free(job);
	if (p->kill_ev != NULL)
		event_free(p->kill_ev);
	free(p);
}

void
pool_recheck(struct pool *p)
{
	for (int k = 0; k < WIRE_KIND_COUNT; k++)
		pool_kind_recheck(&p->kinds[k]);
}

int
pool_degraded(const struct pool *p)
{
	for (int k = 0; k < WIRE_KIND_COUNT; k++)
		if (p->kinds[k].degraded)
			return 1;
	return 0;
}

#ifdef FAULT_INJECTION
int
pool_arm_fault(struct pool *p, enum wire_kind kind, enum wire_fault f, struct err *e)
{
	if (p->kinds[kind].size == 0)
		return err_set(e, "no %s workers are configured", wire_kind_name(kind));
	p->kinds[kind].fault = f;
	log_warn("fault injection: '%s' armed for the next %s job", wire_fault_name(f),
	    wire_kind_name(kind));
	return 0;
}
#endif
