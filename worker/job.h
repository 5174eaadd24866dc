/*
 * job.h: the work a farmd-worker does.  Each kind prepares what it needs
 * (algorithm handles, interpreters) before the sandbox closes, then turns
 * one Job into one JobResult.
 */
#ifndef FARMD_WORKER_JOB_H
#define FARMD_WORKER_JOB_H

#include "err.h"
#include "scrypt.h"
#include "wire.h"
#include "worker.pb-c.h"

struct job_ctx;

/* Everything that may open files or load code happens here, before
 * sandbox_apply().  kernel: the scrypt kernel an encode worker uses
 * (chosen once per worker, scrypt_kernel_select); other kinds ignore it. */
struct job_ctx *job_ctx_new(enum wire_kind kind, enum scrypt_kernel kernel,
    struct err *e);
void job_ctx_free(struct job_ctx *ctx);
/* An encode worker's shared buffer (mapped by main.c for the worker's
 * life): jobs with a count, and echoes with a length, work in it. */
void job_ctx_set_buffer(struct job_ctx *ctx, uint8_t *buf, size_t size);

/* Runs job and fills res (whose buffers are owned by ctx until the next
 * call).  A deterministic failure sets res->error; returns -1 only when
 * the worker can no longer be trusted to continue (it then exits). */
int job_run(struct job_ctx *ctx, const Farmd__Job *job, Farmd__JobResult *res,
    struct err *e);

#endif
