/*
 * farmd-worker: one sandboxed job loop.
 *
 * Started only by farmd (fork+exec, the socketpair on fd 3, an environment
 * that holds at most FARMD_KERNEL).  Prepares its kind's state, closes
 * the sandbox, says hello, then answers one job at a time until the
 * supervisor hangs up.
 *
 * An encode worker chooses its scrypt kernel once, here: the best this CPU
 * runs, or the one FARMD_KERNEL names (portable|avx2|avx512).  A kernel
 * the CPU cannot run is refused before the hello: the worker exits 1 with
 * a one-line reason on stderr, which farmd logs.  It never opens
 * a file, socket or process once sandboxed; any attempt is fatal by design.
 *
 * An encode worker's first message from farmd is its shared buffer (a
 * sealed memfd, proto Buffer), which it maps MAP_SHARED once for its life,
 * before its hello, and keeps open; jobs then name ranges of it (job.c).
 *
 * No fresh pages per job: frames are read into one kept buffer (frame_rd)
 * and answers packed into another; glibc is told not to give freed memory
 * back to the kernel (M_TRIM_THRESHOLD) nor to serve large blocks with
 * their own mmap (M_MMAP_THRESHOLD), which would be fresh pages each time
 * a bytes job's buffers are allocated again.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "hash.h"
#include "job.h"
#include "log.h"
#include "sandbox.h"
#include "scrypt.h"
#include "wire.h"
#include "worker.pb-c.h"

struct worker {
	enum wire_kind kind;
	enum scrypt_kernel kernel;
	size_t max_frame;
	struct job_ctx *job;
	enum wire_fault fault;          /* armed for the next job (test builds) */
	struct frame_rd rd;             /* its body buffer is kept */
	uint8_t *out;                   /* answers are packed here, kept */
	size_t out_cap;
	uint8_t *buf;                   /* the shared buffer, NULL until given */
	size_t buf_size;
	int buf_fd;
};

static int
worker_hello(struct worker *w, const struct sandbox_report *rep, struct err *e)
{
	Farmd__WorkerMsg msg = FARMD__WORKER_MSG__INIT;
	Farmd__WorkerHello hello = FARMD__WORKER_HELLO__INIT;
	Farmd__SandboxLayer layers[SANDBOX_NLAYERS], *lp[SANDBOX_NLAYERS];

	for (int i = 0; i < SANDBOX_NLAYERS; i++) {
		farmd__sandbox_layer__init(&layers[i]);
		layers[i].name = (char *)sandbox_layer_name((enum sandbox_layer)i);
		layers[i].active = rep->active[i];
		layers[i].detail = (char *)rep->detail[i];
		lp[i] = &layers[i];
	}
	hello.version = WIRE_VERSION;
	hello.kind = (char *)wire_kind_name(w->kind);
	hello.pid = (int32_t)getpid();
	hello.n_layers = SANDBOX_NLAYERS;
	hello.layers = lp;
	if (w->kind == WIRE_KIND_ENCODE)
		hello.kernel = (char *)scrypt_kernel_name(w->kernel);
	msg.m_case = FARMD__WORKER_MSG__M_HELLO;
	msg.hello = &hello;
	return frame_send_msg(WIRE_WORKER_FD, &msg.base, NULL, 0, e);
}

#ifdef FAULT_INJECTION
/* Misbehaves as armed.  Returns 1 when the fault replaced the answer. */
static int
worker_fault(struct worker *w, struct err *e)
{
	enum wire_fault f = w->fault;
	uint8_t frame[FRAME_HDR_LEN + 16];

	w->fault = WIRE_FAULT_NONE;
	switch (f) {
	case WIRE_FAULT_HANG:
		log_warn("fault injection: hanging");
		for (;;)
			sleep(3600);
	case WIRE_FAULT_CRASH:
		log_warn("fault injection: crashing");
		abort();
	case WIRE_FAULT_SYSCALL:
		log_warn("fault injection: attempting open(2)");
		(void)!open("/etc/hostname", O_RDONLY);
		log_err("fault injection: open(2) was not stopped by the sandbox");
		_exit(1);
	case WIRE_FAULT_OVERSIZE:
		log_warn("fault injection: sending an oversize frame");
		be32_put(frame, (uint32_t)(w->max_frame + 1));
		memset(frame + FRAME_HDR_LEN, 0, 16);
		return frame_send(WIRE_WORKER_FD, frame, sizeof(frame), NULL, 0, e) < 0 ? -1 : 1;
	case WIRE_FAULT_GARBAGE:
		log_warn("fault injection: sending garbage");
		be32_put(frame, 16);
		memset(frame + FRAME_HDR_LEN, 0xff, 16);
		return frame_send(WIRE_WORKER_FD, frame, sizeof(frame), NULL, 0, e) < 0 ? -1 : 1;
	case WIRE_FAULT_SLOW:
		/* A slow job (a compile of a large source): time for a test to
		 * kill the worker while it holds the job. */
		log_warn("fault injection: sleeping %d ms before the job", WIRE_FAULT_SLOW_MS);
		usleep(WIRE_FAULT_SLOW_MS * 1000);
		return 0;
	default:
		return 0;
	}
}

/* The range of the shared buffer an answer names, if it names one. */
static uint64_t *
worker_answer_range(Farmd__JobResult *res, uint64_t **len)
{
	if (res->body_case == FARMD__JOB_RESULT__BODY_ENCODE && res->encode->n_pieces == 0) {
		*len = &res->encode->length;
		return &res->encode->buf_offset;
	}
	if (res->body_case == FARMD__JOB_RESULT__BODY_ECHO && res->echo->length > 0) {
		*len = &res->echo->length;
		return &res->echo->buf_offset;
	}
	return NULL;
}

/* badoffset: the answer names bytes past the end of the buffer. */
static void
worker_badoffset(struct worker *w, Farmd__JobResult *res)
{
	uint64_t *off, *len;

	if ((off = worker_answer_range(res, &len)) == NULL)
		return;
	log_warn("fault injection: answering with a range outside the buffer");
	*off = w->buf_size - 4096;
	*len = 8192;
}

static void
worker_scribble_range(uint8_t *b, uint64_t len, uint8_t v)
{
	for (uint64_t i = 0; i < len; i += 4096)
		memset(b + i, v, len - i < 4096 ? len - i : 4096);
}

/* Bytes waiting on the socket (up to 4 KiB), without taking them. */
static size_t
worker_queued(void)
{
	char b[4096];
	struct iovec iov = { b, sizeof(b) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n = recvmsg(WIRE_WORKER_FD, &mh, MSG_PEEK | MSG_DONTWAIT);

	return n > 0 ? (size_t)n : 0;
}

/* scribble: after the answer is sent, garbage over the answer's bytes in
 * the buffer, pass after pass (a new value each), for WIRE_FAULT_SLOW_MS.
 * Not until the next frame: the supervisor may have sent the next job
 * ahead (pool.c), so a frame waiting says nothing about whether it has
 * taken its copy of this answer yet.
 * scribble-free (rest): over every byte but the answer's, where farmd
 * reads the pieces of the jobs to come, until a frame more than those
 * already waiting arrives (at most 5 × WIRE_FAULT_SLOW_MS): farmd sends a
 * job whose pieces it reads into the buffer only once they are in and
 * checked, so the scribbling spans that whole read whatever the timing. */
static void
worker_scribble(struct worker *w, Farmd__JobResult *res, int rest)
{
	uint64_t *off, *len;
	struct timespec t0, t;
	uint8_t v = 0x11;
	unsigned passes = 1;
	size_t queued = rest ? worker_queued() : 0;

	if ((off = worker_answer_range(res, &len)) == NULL || w->buf == NULL ||
	    *off > w->buf_size || *len > w->buf_size - *off)
		return;
	/* At once, before anything else (the log line comes after): the
	 * supervisor is reading the answer now. */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;; passes++) {
		long ms;

		if (!rest) {
			worker_scribble_range(w->buf + *off, *len, v);
		} else {
			/* A byte a page, so that every piece there changes
			 * many times while one is read and checked. */
			for (uint64_t i = passes % 4096; i < w->buf_size; i += 4096)
				if (i < *off || i >= *off + *len)
					w->buf[i] = v;
		}
		v += 0x22;
		clock_gettime(CLOCK_MONOTONIC, &t);
		ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
		if (!rest ? ms >= WIRE_FAULT_SLOW_MS :
		    ms >= 5 * WIRE_FAULT_SLOW_MS || worker_queued() > queued)
			break;
	}
	log_warn("fault injection: scribbled over %s in the shared buffer (%u passes)",
	    rest ? "all but the answer" : "the answer", passes);
}
#endif

static int
worker_send(struct worker *w, const ProtobufCMessage *m, struct err *e)
{
	size_t len;

	if (frame_pack_into(m, &w->out, &w->out_cap, &len) < 0)
		return err_set(e, "cannot pack the answer: out of memory");
	return frame_send(WIRE_WORKER_FD, w->out, len, NULL, 0, e);
}

static int
worker_job(struct worker *w, const Farmd__Job *job, struct err *e)
{
	Farmd__WorkerMsg out = FARMD__WORKER_MSG__INIT;
	Farmd__JobResult res = FARMD__JOB_RESULT__INIT;
#ifdef FAULT_INJECTION
	enum wire_fault after = WIRE_FAULT_NONE;

	if (w->fault == WIRE_FAULT_BADOFFSET || w->fault == WIRE_FAULT_SCRIBBLE ||
	    w->fault == WIRE_FAULT_SCRIBBLE_FREE) {
		after = w->fault;
		w->fault = WIRE_FAULT_NONE;
	} else if (w->fault != WIRE_FAULT_NONE) {
		int rc = worker_fault(w, e);

		if (rc != 0)
			return rc < 0 ? -1 : 0;
	}
#endif
	if (job_run(w->job, job, &res, e) < 0)
		return -1;
	out.m_case = FARMD__WORKER_MSG__M_RESULT;
	out.result = &res;
#ifdef FAULT_INJECTION
	if (after == WIRE_FAULT_BADOFFSET)
		worker_badoffset(w, &res);
	if (worker_send(w, &out.base, e) < 0)
		return -1;
	if (after == WIRE_FAULT_SCRIBBLE || after == WIRE_FAULT_SCRIBBLE_FREE)
		worker_scribble(w, &res, after == WIRE_FAULT_SCRIBBLE_FREE);
	return 0;
#else
	return worker_send(w, &out.base, e);
#endif
}

/* The shared buffer: once, to an encode worker, with its memfd. */
static int
worker_buffer(struct worker *w, const Farmd__Buffer *b, int *fds, int *nfds,
    struct err *e)
{
	void *p;

	if (w->kind != WIRE_KIND_ENCODE || w->buf != NULL)
		return err_set(e, "unexpected shared buffer");
	if (*nfds != 1 || b->size == 0 || b->size > SIZE_MAX)
		return err_set(e, "shared buffer: %d descriptors, %llu bytes", *nfds,
		    (unsigned long long)b->size);
	p = mmap(NULL, (size_t)b->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
	    fds[0], 0);
	if (p == MAP_FAILED)
		return err_sys(e, "shared buffer: mmap of %llu bytes",
		    (unsigned long long)b->size);
	/* Kept open: farmd's view of what the worker holds stays exact. */
	w->buf_fd = fds[0];
	*nfds = 0;
	w->buf = p;
	w->buf_size = (size_t)b->size;
	job_ctx_set_buffer(w->job, w->buf, w->buf_size);
	return 0;
}

/* Reads and handles one message from farmd (the socket blocks): 1 on
 * orderly EOF, 0 when handled, -1 on any error (logged by the caller). */
static int
worker_step(struct worker *w, struct err *e)
{
	struct frame_alloc fa;
	Farmd__WorkerMsg *msg;
	const uint8_t *body;
	size_t len;
	int fds[FRAME_MAX_FDS], nfds = 0, rc, eof;

	/* The socket blocks: this returns a whole frame, EOF or an error. */
	rc = frame_rd_recv(&w->rd, WIRE_WORKER_FD, &eof, e);
	if (rc == FRAME_MORE && eof)
		return 1;
	if (rc != FRAME_READY)
		return rc == FRAME_MORE ? err_set(e, "recv: socket is non-blocking") : -1;
	body = frame_rd_body(&w->rd, &len, fds, &nfds);
	msg = (Farmd__WorkerMsg *)frame_unpack(&farmd__worker_msg__descriptor,
	    body, len, &fa, e);
	if (msg == NULL) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return -1;
	}
	switch (msg->m_case) {
	case FARMD__WORKER_MSG__M_BUFFER:
		rc = worker_buffer(w, msg->buffer, fds, &nfds, e);
		break;
	case FARMD__WORKER_MSG__M_JOB:
		rc = worker_job(w, msg->job, e);
		break;
	case FARMD__WORKER_MSG__M_FAULT:
#ifdef FAULT_INJECTION
		w->fault = (enum wire_fault)msg->fault->fault;
		rc = 0;
#else
		rc = err_set(e, "fault injection is not compiled in");
#endif
		break;
	default:
		rc = err_set(e, "unexpected message %d from supervisor", (int)msg->m_case);
		break;
	}
	protobuf_c_message_free_unpacked(&msg->base, &fa.pb);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (rc < 0)
		return -1;
	return 0;
}

/* Returns 0 on orderly EOF, -1 on any error (logged by the caller). */
static int
worker_loop(struct worker *w, struct err *e)
{
	int rc;

	while ((rc = worker_step(w, e)) == 0)
		;
	return rc > 0 ? 0 : -1;
}

static void
usage(void)
{
	fprintf(stderr, "usage: farmd-worker --kind encode|compile|execute [--max-frame BYTES]\n"
	    "       farmd-worker --check-sandbox\n"
	    "farmd-worker is started by farmd; it is not meant to be run by hand.\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct worker w = { .max_frame = FRAME_MAX_DEFAULT, .buf_fd = -1 };
	struct sandbox_report rep;
	struct stat st;
	struct err e;
	const char *kind = NULL;
	int rc;

	log_init("farmd-worker");
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--check-sandbox") == 0)
			return sandbox_check_print(STDOUT_FILENO);
		else if (strcmp(argv[i], "--kind") == 0 && i + 1 < argc)
			kind = argv[++i];
		else if (strcmp(argv[i], "--max-frame") == 0 && i + 1 < argc)
			w.max_frame = strtoull(argv[++i], NULL, 10);
		else
			usage();
	}
	if (kind == NULL || wire_kind_parse(kind, &w.kind) < 0 || w.max_frame < 1024)
		usage();
	if (fstat(WIRE_WORKER_FD, &st) < 0 || !S_ISSOCK(st.st_mode)) {
		log_err("fd %d is not a socket: farmd-worker runs only under farmd",
		    WIRE_WORKER_FD);
		return 2;
	}
	if (w.kind == WIRE_KIND_ENCODE &&
	    scrypt_kernel_select(getenv("FARMD_KERNEL"), &w.kernel, &e) < 0) {
		log_err("%s worker: %s", kind, e.msg);
		return 1;
	}
	w.job = job_ctx_new(w.kind, w.kernel, &e);
	if (w.job == NULL) {
		log_err("%s worker: %s", kind, e.msg);
		return 1;
	}
	/* Freed memory stays ours for the next job (no fresh pages). */
	mallopt(M_MMAP_THRESHOLD, 32 << 20);   /* glibc's largest */
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	/* RLIMIT_FSIZE is 0: when stderr is a regular file (not the journal
	 * or a pipe) a log line must fail with EFBIG, not kill us. */
	signal(SIGXFSZ, SIG_IGN);
	if (sandbox_apply(&rep, &e) < 0) {
		log_err("%s worker: sandbox: %s", kind, e.msg);
		return 1;
	}
	/* An encode worker maps its shared buffer, farmd's first message,
	 * before its hello: a worker farmd counts as started has it. */
	frame_rd_init(&w.rd, w.max_frame);
	if (w.kind == WIRE_KIND_ENCODE) {
		rc = worker_step(&w, &e);
		if (rc > 0 || (rc == 0 && w.buf == NULL)) {
			log_err("%s worker: farmd's first message was not the shared buffer", kind);
			return 1;
		}
		if (rc < 0) {
			log_err("%s worker: %s", kind, e.msg);
			return 1;
		}
	}
	rc = worker_hello(&w, &rep, &e) < 0 || worker_loop(&w, &e) < 0;
	if (rc)
		log_err("%s worker: %s", kind, e.msg);
	job_ctx_free(w.job);
	frame_rd_reset(&w.rd);
	free(w.out);
	if (w.buf != NULL)
		munmap(w.buf, w.buf_size);
	if (w.buf_fd >= 0)
		close(w.buf_fd);
	return rc;
}
