/*
 * pool_int.h: the pools' internals, shared by pool.c (workers, jobs,
 * restarts) and pool_status.c (what status, metrics and the JSON
 * documents read).  Nothing else includes it.
 */
#ifndef FARMD_POOL_INT_H
#define FARMD_POOL_INT_H

#include <sys/queue.h>
#include <sys/types.h>

#include <event2/event.h>

#include "fsm.h"
#include "pool.h"
#include "wbuf.h"

#define RESTART_RING 256

/* The worker machine (fsm.h): starting until its hello, then idle and busy
 * by turns, exiting once we ended it (the names are the status "state"). */
enum worker_state { W_STARTING, W_IDLE, W_BUSY, W_EXITING, W_NSTATES };

struct pool_kind;

struct worker {
	TAILQ_ENTRY(worker) entry;
	struct pool_kind *pk;
	pid_t pid;
	struct fsm fsm;                 /* enum worker_state */
	struct peer *peer;
	struct pool_job *job;           /* the job it runs */
	struct pool_job *next;          /* a buffer job sent ahead, or NULL */
	struct event *deadline;         /* job's */
	int log_fd;                     /* read end of its stderr pipe */
	struct event *log_ev;
	char reason[200];               /* why we ended it, if we did */
	int layers[WIRE_SANDBOX_LAYERS]; /* -1 unknown, 0/1 from hello */
	char kernel[16];                /* encode: scrypt kernel from hello */
	struct wbuf wb;                 /* encode: the shared buffer */
	int fills;                      /* fill jobs whose input is being read into wb:
	                                 * wb outlives the worker until they end */
	int gone;                       /* reaped, kept for those fills (pool->zombies) */
	uint8_t *out[2];                /* buffer jobs' frames (job's, next's), reused */
	size_t out_cap[2];
};

struct pool_job {
	TAILQ_ENTRY(pool_job) entry;    /* kind queue */
	TAILQ_ENTRY(pool_job) all;      /* pool->jobs */
	struct pool_kind *pk;
	uint64_t id;
	uint8_t *frame;                 /* NULL for a buffer job: packed at dispatch */
	size_t len;
	int lent;                       /* a buffer job: lend says what */
	struct wbuf_job lend;
	int out;                        /* lent: which of its worker's out[] holds its frame */
	pool_fill_cb fill;              /* a fill job: its owner writes the input */
	struct event *fill_ev;          /* runs fill, from the loop, once placed */
	int filling;                    /* placed on a worker, input not in yet */
	int sent;                       /* its frame is on its worker's socket */
	struct pool_job_opts opts;
	int attempts;
	int cancelled;
	int listed;                     /* on pool->jobs */
	pool_done_cb cb;
	void *arg;
	struct worker *worker;
	struct event *retry_ev;
};

TAILQ_HEAD(worker_list, worker);
TAILQ_HEAD(job_list, pool_job);

struct pool_kind {
	struct pool *pool;
	enum wire_kind kind;
	uint32_t size;
	struct worker_list workers;
	struct job_list queue;
	uint64_t restarts;
	uint64_t jobs_done, jobs_failed, jobs_retried;
	uint64_t crashes, timeouts;
	uint64_t restart_ms[RESTART_RING];
	unsigned restart_next;
	int pending;                    /* replacements scheduled */
	LIST_HEAD(, respawn) respawns;  /* their timers */
	int degraded;
	struct event *recover_ev;       /* when degraded: the next time it may end */
	int hellos;                     /* workers that ever said hello */
	uint64_t died_us;               /* last unplanned death, until replaced */
	uint64_t replace_us;            /* death to replacement's hello, last time */
	enum wire_fault fault;
	char kernel[16];                /* the last hello's scrypt kernel */
};

struct pool {
	struct farmd *d;
	struct pool_hooks hooks;
	struct pool_kind kinds[WIRE_KIND_COUNT];
	uint64_t protocol_errors;
	struct job_list jobs;
	struct worker_list zombies;     /* reaped workers whose buffer a fill holds */
	uint64_t next_id;
	int stopping;
	struct event *kill_ev;
	int last_layers[WIRE_SANDBOX_LAYERS];
};

struct respawn {
	LIST_ENTRY(respawn) entry;
	struct pool_kind *pk;
	struct event *ev;
};

static inline int
worker_is(const struct worker *w, enum worker_state st)
{
	return w->fsm.state == (int)st;
}

#endif
