/*
 * pool.h: worker pools.  One pool per kind (encode, compile, execute) of
 * fork+exec'd, sandboxed farmd-worker processes, and the jobs sent to them.
 *
 * A job is submitted once and its callback runs exactly once: with the
 * worker's result, with the worker's deterministic error, or after its
 * last attempt failed (worker died, deadline passed, protocol error).
 * Attempts that fail for those transient reasons are retried on a fresh
 * worker after opts.retry_delay_ms.
 */
#ifndef FARMD_POOL_H
#define FARMD_POOL_H

#include <stdint.h>

#include <jansson.h>

#include "encode_v1.h"
#include "err.h"
#include "wire.h"
#include "worker.pb-c.h"

struct farmd;
struct pool;

struct pool_job_opts {
	int max_attempts;            /* >= 1; 0 means retry without limit */
	uint64_t retry_delay_ms;
	uint64_t timeout_ms;         /* 0: [workers] job_timeout */
};

/* res is valid only during the call; error is NULL on success. */
typedef void (*pool_done_cb)(uint64_t job_id, const Farmd__JobResult *res,
    const char *error, void *arg);

/* What the pools report upward (to main), instead of calling it. */
struct pool_hooks {
	/* farmd must not go on (a worker lacks a sandbox layer and [daemon]
	 * sandbox_required is set): stop with reason as a fatal error. */
	void (*fatal)(void *arg, const char *reason);
	/* A restart was scheduled or a pool became degraded or recovered:
	 * the STATUS line may have changed. */
	void (*health)(void *arg);
	void *arg;
};

/* One pool's state and counters, as status, `farmctl status` tables and
 * metrics show them. */
struct pool_kind_stats {
	const char *kind;               /* wire_kind_name() */
	uint32_t size;                  /* configured */
	uint32_t alive;                 /* hello received, not exiting */
	uint32_t queued;                /* jobs waiting for a worker */
	int degraded;
	const char *health;             /* "degraded", "ok" or "starting" */
	double last_replace_ms;         /* death to replacement's hello, last time */
	char kernel[16];                /* the last hello's scrypt kernel, "" if none */
	uint64_t restarts;              /* replacements scheduled */
	uint64_t crashes;               /* exits not asked for */
	uint64_t timeouts;              /* killed for exceeding a job deadline */
	uint64_t jobs_done;             /* answered by a worker */
	uint64_t jobs_failed;           /* attempts that failed */
	uint64_t jobs_retried;
};

struct pool_stats {
	struct pool_kind_stats kinds[WIRE_KIND_COUNT];  /* by enum wire_kind */
	uint64_t protocol_errors;       /* worker connections dropped for one */
	/* By wire_sandbox_layers[]: every worker that reported the layer has
	 * it (with none reporting, the last hello's word). */
	int sandbox[WIRE_SANDBOX_LAYERS];
};

/* One worker, as status and `farmctl workers` show it. */
struct pool_worker_info {
	int pid;
	const char *kind;               /* wire_kind_name() */
	const char *state;              /* "starting", "idle", "busy", "exiting" */
	int has_job;
	uint64_t job;                   /* the job it runs, if has_job */
	char kernel[16];                /* from its hello, "" if none */
};

struct pool *pool_new(struct farmd *d, const struct pool_hooks *hooks, struct err *e);
void pool_free(struct pool *p);

/* Spawns the configured workers. */
int pool_start(struct pool *p, struct err *e);
/* Every pool has its initial workers up (hello received). */
int pool_ready(const struct pool *p);

/* Packs job (its id is assigned here) and queues it.  Returns the id, or
 * 0 with e set. */
uint64_t pool_submit(struct pool *p, enum wire_kind kind, Farmd__Job *job,
    const struct pool_job_opts *opts, pool_done_cb cb, void *arg, struct err *e);
/* An encode job (format v1) for n pieces at sector_id's offsets
 * [first_offset, first_offset + n); decoding is the same transform. */
uint64_t pool_submit_encode(struct pool *p, const uint8_t sector_id[HASH_LEN],
    uint32_t first_offset, const struct encode_params *params,
    const ProtobufCBinaryData *pieces, size_t n, int decode,
    const struct pool_job_opts *opts, pool_done_cb cb, void *arg, struct err *e);
/* The same job with its pieces in the worker's shared buffer (wbuf.h):
 * buf holds n pieces of piece_len bytes and is lent to the pool until the
 * callback runs or the job is cancelled.  When the callback sees no error,
 * buf holds the encoded pieces; after an error it holds either the input
 * (the attempts failed before an answer was taken) or nothing useful.
 * At most pool_buffer_size() bytes. */
uint64_t pool_submit_encode_buf(struct pool *p, const uint8_t sector_id[HASH_LEN],
    uint32_t first_offset, const struct encode_params *params, uint8_t *buf,
    uint32_t piece_len, uint32_t n, int decode, const struct pool_job_opts *opts,
    pool_done_cb cb, void *arg, struct err *e);
/* A fill job's input, written by its owner straight into the worker's
 * shared buffer once the job has a worker: dst (len bytes) is lent until
 * pool_filled().  Called from the loop, never from inside a pool call,
 * once per attempt: a worker that died before the input was in place
 * costs no attempt, and the job is placed (and filled) again. */
typedef void (*pool_fill_cb)(uint64_t job_id, uint8_t *dst, size_t len, void *arg);
/* pool_submit_encode_buf without the copy in: fill puts the n pieces in
 * place (plotting reads them from the block store there), the encoded
 * pieces are copied out into out (n × piece_len bytes, lent as above).
 * A retry fills again, so every attempt has its input. */
uint64_t pool_submit_encode_fill(struct pool *p, const uint8_t sector_id[HASH_LEN],
    uint32_t first_offset, const struct encode_params *params, uint8_t *out,
    uint32_t piece_len, uint32_t n, const struct pool_job_opts *opts, pool_fill_cb fill,
    pool_done_cb cb, void *arg, struct err *e);
/* The input of fill job job_id is in place (error NULL: the job goes to
 * its worker), or could not be had (the job ends with error, no attempt
 * made).  Owed for every fill begun, also after pool_cancel (until then
 * the worker's buffer is kept for it); it may run the job's callback. */
void pool_filled(struct pool *p, uint64_t job_id, const char *error);
/* An echo through an encode worker's shared buffer: buf (len bytes, lent
 * as above) comes back with every byte inverted. */
uint64_t pool_submit_echo_buf(struct pool *p, uint8_t *buf, size_t len,
    const struct pool_job_opts *opts, pool_done_cb cb, void *arg, struct err *e);
/* [workers] encode_buffer: the most a buffer job may hold. */
size_t pool_buffer_size(const struct pool *p);
/* An encode result's pieces if it has n of them, each len bytes; NULL if
 * the worker answered with another shape. */
const ProtobufCBinaryData *pool_encode_pieces(const Farmd__JobResult *res, size_t n,
    size_t len);

/* Forgets a job: its callback will not run.  A running attempt finishes
 * on its worker and its answer is dropped. */
void pool_cancel(struct pool *p, uint64_t job_id);

/* SIGCHLD: reaps every exited child. */
void pool_reap(struct pool *p);

/* Begins shutdown: no new jobs start, workers are told to exit and are
 * killed if they have not after grace_ms.  pool_alive() reaches 0 when
 * every worker has been reaped. */
void pool_shutdown(struct pool *p, uint64_t grace_ms);
int pool_alive(const struct pool *p);

/* Re-derives each pool's degraded state now (after a reload changed the
 * restart policy); otherwise the pools keep it current themselves. */
void pool_recheck(struct pool *p);

void pool_stats(const struct pool *p, struct pool_stats *s);

/* The workers now: an array of *n (caller frees; NULL, *n 0, when there
 * are none or no memory). */
struct pool_worker_info *pool_workers(const struct pool *p, size_t *n);

/* Sandbox layers: name → all workers have it. */
json_t *pool_json_sandbox(const struct pool_stats *s);
json_t *pool_json_pools(const struct pool_stats *s);
json_t *pool_json_workers(const struct pool_worker_info *w, size_t n);
/* Kinds whose pool is degraded, for the STATUS line; 0 if none. */
int pool_degraded(const struct pool *p);

#ifdef FAULT_INJECTION
/* Arms fault f in the next job dispatched to a worker of kind. */
int pool_arm_fault(struct pool *p, enum wire_kind kind, enum wire_fault f,
    struct err *e);
#endif

#endif
