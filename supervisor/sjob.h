/*
 * sjob.h: a sector job, the pipeline that (re)plots one sector
 * (DESIGN §9):
 *
 *   MARK (state 'plotting' committed before a byte changes) → READ pieces
 *   from the block store → ENCODE in encode workers → WRITE at
 *   index × sector_size (I/O pool) → … per batch … → SYNC (fdatasync,
 *   checksum) → COMMIT (history size, checksum, expiry, state).
 *   Any failure → ERROR → WAIT, retried from MARK after [plotting]
 *   retry_delay.
 *
 * The scheduler (plot.c) starts jobs; a job frees itself when it is done
 * and kicks the scheduler (plot_kick) for the next.
 */
#ifndef FARMD_SJOB_H
#define FARMD_SJOB_H

#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <openssl/evp.h>

#include "err.h"
#include "farm.h"
#include "fsm.h"
#include "hash.h"

struct plot;
struct rplot_job;

/* The pipeline's states (the machine is sjob.c's table, run by fsm.c).
 * Their names there are internal, for the transition log; what status
 * shows is sjob_phase(). */
enum sjob_state {
	SJOB_MARK, SJOB_READ, SJOB_ENCODE, SJOB_WRITE, SJOB_SYNC, SJOB_COMMIT, SJOB_DONE,
	SJOB_ERROR, SJOB_WAIT, SJOB_NSTATES
};

struct sjob_part;

struct sjob {
	struct plot *p;
	struct farm *f;
	uint32_t index;
	struct fsm m;                   /* an enum sjob_state; fsm_enter() sets it */
	uint64_t history_size;
	uint8_t sector_id[HASH_LEN];
	uint32_t batch_first, batch_n, batch_max;
	uint8_t *buf;                   /* batch_max × piece_size */
	struct sjob_part *parts;
	uint32_t nparts, per;           /* the batch's encode jobs, per pieces each */
	uint32_t parts_encoded;
	uint32_t write_next;            /* the next part to write (in order) */
	int writing;                    /* a part write is on the I/O pool */
	uint32_t parts_filled;          /* parts whose read is over (READ ends at nparts) */
	uint32_t pending;               /* completions the current step awaits */
	uint32_t pieces_done;
	int failed;
	int write_fault;
	/* A descriptor of its own: a writeback error is reported to one
	 * fdatasync per open file, and it must be this sector's. */
	int fd;
	EVP_MD_CTX *sha;                /* sector checksum, batches in order */
	uint8_t checksum[HASH_LEN];
	uint64_t t_start_us, t_phase_us, phase_us[PH_COUNT];
	char error[ERR_MSG_MAX];
	char last_logged[ERR_MSG_MAX];
	struct event *timer;            /* retry_delay after an error */
	int io_err;                     /* errno of the last write/sync */
	/* This attempt's remote plotter (rplot.h), NULL when it plots
	 * locally: it fills the batches instead of READ and ENCODE. */
	struct rplot_job *rp;
	TAILQ_ENTRY(sjob) link;
};

/* Starts plotting sector idx of f: -1 when out of memory. */
int sjob_start(struct plot *p, struct farm *f, uint32_t idx);
/* The job of that sector, NULL if it is not in flight. */
struct sjob *sjob_find(struct plot *p, const struct farm *f, uint32_t idx);
void sjob_free(struct sjob *j);
/* The public phase of a job, as `plot progress` shows it: queued,
 * reading, encoding, writing, written, done, error or waiting. */
const char *sjob_phase(const struct sjob *j);
/* True while the job waits out retry_delay after an error (j->error is
 * the reason). */
int sjob_waiting(const struct sjob *j);
/* The row and the sector's job may have changed while a read or check
 * was on the I/O pool: only an unchanged, idle sector can be judged. */
int sjob_sector_unchanged(struct plot *p, struct farm *f, uint32_t idx,
    const struct sector_row *then);
/* Shutdown: cancels the worker jobs and frees the jobs that nothing
 * else will complete; the others free themselves when their disk work
 * returns. */
void sjob_cancel_all(struct plot *p);
/* Frees the batch buffers kept for later jobs (plot_free). */
void sjob_spares_free(struct plot *p);

#endif
