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
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
#endif

static int
worker_job(struct worker *w, const Farmd__Job *job, struct err *e)
{
	Farmd__WorkerMsg out = FARMD__WORKER_MSG__INIT;
	Farmd__JobResult res = FARMD__JOB_RESULT__INIT;

#ifdef FAULT_INJECTION
	if (w->fault != WIRE_FAULT_NONE) {
		int rc = worker_fault(w, e);

		if (rc != 0)
			return rc < 0 ? -1 : 0;
	}
#endif
	if (job_run(w->job, job, &res, e) < 0)
		return -1;
	out.m_case = FARMD__WORKER_MSG__M_RESULT;
	out.result = &res;
	return frame_send_msg(WIRE_WORKER_FD, &out.base, NULL, 0, e);
}

/* Returns 0 on orderly EOF, -1 on any error (logged by the caller). */
static int
worker_loop(struct worker *w, struct err *e)
{
	for (;;) {
		struct frame_alloc fa;
		Farmd__WorkerMsg *msg;
		uint8_t *body;
		size_t len;
		int fds[FRAME_MAX_FDS], nfds = 0, rc;

		rc = frame_recv(WIRE_WORKER_FD, w->max_frame, &body, &len, fds, &nfds, e);
		if (rc == 1)
			return 0;
		if (rc < 0)
			return -1;
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		msg = (Farmd__WorkerMsg *)frame_unpack(&farmd__worker_msg__descriptor,
		    body, len, &fa, e);
		if (msg == NULL) {
			free(body);
			return -1;
		}
		switch (msg->m_case) {
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
		free(body);
		if (rc < 0)
			return -1;
	}
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
	struct worker w = { .max_frame = FRAME_MAX_DEFAULT };
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
	/* RLIMIT_FSIZE is 0: when stderr is a regular file (not the journal
	 * or a pipe) a log line must fail with EFBIG, not kill us. */
	signal(SIGXFSZ, SIG_IGN);
	if (sandbox_apply(&rep, &e) < 0) {
		log_err("%s worker: sandbox: %s", kind, e.msg);
		return 1;
	}
	if (worker_hello(&w, &rep, &e) < 0 || (rc = worker_loop(&w, &e)) < 0) {
		log_err("%s worker: %s", kind, e.msg);
		job_ctx_free(w.job);
		return 1;
	}
	job_ctx_free(w.job);
	return 0;
}
