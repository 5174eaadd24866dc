/*
 * artifact.h: validation-code artifacts (DESIGN §7, §8, §9).
 *
 * An artifact is named by (SHA-256 of the Lua source, SHA-256 of the
 * canonical executor params).  Each one the supervisor knows runs one
 * state machine on the fsm runner (idle → compile → write → commit →
 * prepared, or failed); requests that arrive while it prepares wait on
 * the same job.  Its row in the `artifacts` table and its file
 * `artifacts/<id>.art` survive restarts.  Executions read the file on the
 * I/O pool and send its bytes to an execute worker: the supervisor never
 * loads them into a Lua state.
 */
#ifndef FARMD_ARTIFACT_H
#define FARMD_ARTIFACT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "hash.h"

struct farmd;
struct artifacts;

/* Why a preparation failed (the kind recorded in the row). */
enum artifact_error {
	ARTIFACT_OK,
	ARTIFACT_DETERMINISTIC,         /* the compiler's message: never retried */
	ARTIFACT_TRANSIENT,             /* timeout, crash, memory, disk: may retry */
};

/* The outcome of a preparation; id_hex names it ("<code>-<params>"). */
typedef void (*artifact_ready_cb)(void *arg, const char *id_hex,
    enum artifact_error kind, const char *error);

/* The outcome of an execution: verdict 1 valid, 0 invalid (reason says
 * why), -1 not decided (error: transient, ask again later; kind
 * ARTIFACT_DETERMINISTIC when the code itself does not compile). */
typedef void (*artifact_exec_cb)(void *arg, int verdict, enum artifact_error kind,
    const char *reason);

struct artifact_block {
	uint64_t height;
	const uint8_t *parent_hash;     /* HASH_LEN */
	const uint8_t *body;
	size_t body_len;
};

/* Statistics for metrics. */
#define ARTIFACT_BUCKETS 12
extern const double artifact_buckets[ARTIFACT_BUCKETS];   /* seconds */

struct artifact_hist {
	uint64_t count;
	double sum;                     /* seconds */
	uint64_t bucket[ARTIFACT_BUCKETS];      /* cumulative, le artifact_buckets[i] */
};

struct artifact_stats {
	struct artifact_hist prepare;   /* compile jobs answered */
	struct artifact_hist execute;   /* execute jobs answered */
	uint64_t compile_jobs;          /* compile jobs submitted */
	uint64_t failures_deterministic;
	uint64_t failures_transient;
	uint64_t mismatches;            /* executions that found the file changed */
	uint64_t cache_bytes;           /* prepared artifacts */
	uint64_t preparing, prepared, failed;
};

struct artifacts *artifacts_new(struct farmd *d, struct err *e);
void artifacts_free(struct artifacts *s);
/* Stops starting new work; true when none is in flight. */
int artifacts_quiesce(struct artifacts *s);

/* Prepares source (copied) unless it is prepared; cb (may be NULL) runs
 * once with the outcome, never before this returns. */
void artifact_prepare(struct artifacts *s, const uint8_t *src, size_t len,
    artifact_ready_cb cb, void *arg);
/* Runs validate(block) of source's artifact (preparing it first if need
 * be); cb runs once, never before this returns.  Returns a handle for
 * artifact_exec_cancel, 0 if out of memory (cb will not run). */
uint64_t artifact_execute(struct artifacts *s, const uint8_t *src, size_t len,
    const struct artifact_block *b, artifact_exec_cb cb, void *arg);
void artifact_exec_cancel(struct artifacts *s, uint64_t handle);

/* Removes what the prune rule picks (DESIGN §7) now; *removed lists
 * their ids (caller frees). */
int artifacts_prune(struct artifacts *s, json_t **removed, struct err *e);

json_t *artifacts_json_list(struct artifacts *s);
void artifacts_stats(const struct artifacts *s, struct artifact_stats *out);
/* After a reload: the budget's limit. */
void artifacts_set_budget(struct artifacts *s, uint64_t limit);

#endif
