/*
 * artifact_int.h: what artifact.c (the machine, executions) and
 * artifacts.c (the cache: start-up, list, prune) share; no other module
 * includes it.
 */
#ifndef FARMD_ARTIFACT_INT_H
#define FARMD_ARTIFACT_INT_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "artifact.h"
#include "artifact_id.h"
#include "budget.h"
#include "fsm.h"
#include "pool.h"

#define ARTIFACT_JOB_ATTEMPTS 3         /* per job: worker death, deadline */
#define ARTIFACT_RETRY_DELAY_MS 100
#define ARTIFACT_MISMATCH_MAX 3         /* re-preparations per execution */
#define ARTIFACT_NEEDED_WRITE_MS 60000  /* last_needed_ms: one write a minute */
#define ARTIFACT_PRUNE_MS (3600u * 1000u)
#define ARTIFACT_HEX (ARTIFACT_ID_HEX_LEN + 1)


enum a_state { A_IDLE, A_COMPILE, A_WRITE, A_COMMIT, A_PREPARED, A_FAILED, A_NSTATES };

struct waiter {
	artifact_ready_cb cb;
	void *arg;
	struct waiter *next;
};

struct artifact {
	struct artifacts *s;
	struct fsm m;                   /* enum a_state */
	struct artifact_id id;
	char hex[ARTIFACT_HEX];
	uint8_t *src;                   /* while preparing */
	size_t src_len;
	uint8_t *bytes;                 /* the compile result, until written */
	size_t len;
	uint64_t size;
	uint8_t sha[HASH_LEN];
	uint64_t last_needed_ms, needed_written_ms;
	uint32_t failures;
	enum artifact_error kind;       /* of the last failure */
	char error[ERR_MSG_MAX];        /* last failure's message, "" if none */
	uint64_t last_failure_ms;
	uint64_t job_id;
	int64_t resv_id;
	uint64_t started_us;
	int io;                         /* a write in flight */
	char io_err[ERR_MSG_MAX];
	struct waiter *waiters;
	struct event *notify;
	struct artifact *next;
};

struct exec {
	struct artifacts *s;
	uint64_t handle;
	struct artifact *a;
	uint8_t *src;
	size_t src_len;
	uint64_t height;
	uint8_t parent[HASH_LEN];
	uint8_t *body;
	size_t body_len;
	uint8_t *art;                   /* read from the file */
	size_t art_len;
	uint8_t sha[HASH_LEN];
	char path[PATH_MAX];
	int mismatches;
	int cancelled;
	uint64_t job_id;
	uint64_t started_us;
	char err[ERR_MSG_MAX];
	artifact_exec_cb cb;
	void *arg;
	struct exec *next;
};

struct artifacts {
	struct farmd *d;
	char dir[PATH_MAX];
	struct budget budget;
	struct artifact *list;
	struct exec *execs;
	uint64_t next_handle;
	struct event *prune_ev;
	int stopping;
	int io_inflight;
	struct artifact_stats st;
};


#define ARTIFACT_KINDS 3
extern const char *const artifact_state_public[A_NSTATES];
extern const char *const artifact_kind_name[ARTIFACT_KINDS];

/* Writes the row as the state says (IDLE: deletes it). */
int artifact_row_save(struct artifact *a, struct err *e);
void artifact_path(const struct artifacts *s, const struct artifact *a, const char *ext,
    char *out, size_t len);
struct artifact *artifact_find(struct artifacts *s, const struct artifact_id *id);
/* A new artifact in state, at the head of s->list. */
struct artifact *artifact_new(struct artifacts *s, const struct artifact_id *id, int state);
/* Frees a (not unlinked from s->list); its waiters hear "shutting down". */
void artifact_free(struct artifact *a);

/* The waiter an execution registers (artifacts_free drops those). */
void artifact_exec_ready(void *arg, const char *id_hex, enum artifact_error kind,
    const char *error);

#endif
