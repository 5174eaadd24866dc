/*
 * lua_job.h: the compile and execute jobs of validation code (DESIGN.md §7),
 * callable in-process (tests/unit/test_lua_jobs.c) as well as from job.c.
 *
 * Results point into buffers owned by the struct lua_job and stay valid
 * until the next call on it.
 *
 * CompileResult: artifact set and error empty: compiled.  error set and
 * out_of_memory false: the compiler's message (deterministic: the code is
 * bad).  out_of_memory true: the byte budget ran out (transient); error
 * then also says so ("out of memory (limit N bytes)"), so check
 * out_of_memory first.
 *
 * ExecuteResult: VALID; INVALID with a reason (never empty);
 * ARTIFACT_MISMATCH when the bytes do not hash to artifact_sha256.
 * instructions: VM instructions counted in steps of LUA_JOB_HOOK_STEP.
 */
#ifndef FARMD_WORKER_LUA_JOB_H
#define FARMD_WORKER_LUA_JOB_H

#include "err.h"
#include "worker.pb-c.h"

/* Instructions between two count-hook calls: the budget's granularity
 * (a run is stopped once it has counted more than instruction_limit). */
#define LUA_JOB_HOOK_STEP 1000
/* Longest reason or compiler message returned, bytes (cut at a UTF-8
 * character boundary). */
#define LUA_JOB_MSG_MAX 1024

struct lua_job;

struct lua_job *lua_job_new(void);
void lua_job_free(struct lua_job *j);

/* Return -1 (e says why) only for a malformed job (a zero memory limit,
 * an artifact_sha256 that is not 32 bytes); any source or artifact gives
 * a result. */
int lua_job_compile(struct lua_job *j, const Farmd__CompileJob *job,
    Farmd__CompileResult **out, struct err *e);
int lua_job_execute(struct lua_job *j, const Farmd__ExecuteJob *job,
    Farmd__ExecuteResult **out, struct err *e);

#endif
