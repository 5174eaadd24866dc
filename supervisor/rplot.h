/*
 * rplot.h: remote plotting, the farmer's side (DESIGN §15, issue 15).
 *
 * A sector job (sjob.c) asks, at each attempt's MARK, whether this
 * attempt plots remotely (rplot_attempt).  A remote attempt replaces
 * only where the encoded pieces come from: instead of READ (block store)
 * and ENCODE (local workers) the job calls rplot_fill() for each batch,
 * and writes, fdatasyncs, checksums and commits the sector through its
 * own code, exactly like a local one (mark before overwrite included).
 *
 * A remote attempt: offer (request farmd.v1.plotter.free, answered by a
 * free plotter of queue group farmd.plotter; while none is free or only
 * plotters marked bad answer, the attempt plots locally when this node has
 * encode workers, else waits and asks again) → send the sector job to
 * farmd.v1.plotter.<node>.sector → receive the encoded sector as chunks
 * on an inbox of ours, each checked for length and position and
 * acknowledged once consumed → spot-check [cluster] verify_pieces random
 * pieces (decoded here, compared with their piece roots) before the last
 * batch is handed over.  A plotter silent for RPLOT_PING_TIMEOUT_MS, or
 * that answers an error, loses the sector (the attempt fails; the sjob
 * retries after retry_delay, elsewhere or locally); a failed spot check
 * also marks the plotter bad for RPLOT_BAD_MS and makes the sector's
 * next attempt local when this node has encode workers.
 */
#ifndef FARMD_RPLOT_H
#define FARMD_RPLOT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "hash.h"

#define RPLOT_PING_TIMEOUT_MS 15000
/* The largest chunk a farmer asks for: a plotter's batch (16 MiB) holds
 * whole chunks. */
#define RPLOT_CHUNK_MAX (1u << 20)
#define RPLOT_BAD_MS (3600u * 1000u)

struct farmd;
struct farm;
struct plot;
struct rplot;
struct rplot_job;

struct rplot *rplot_new(struct farmd *d, struct err *e);
void rplot_free(struct rplot *r);

/* An attempt of sector idx of f at history_size is starting.  prev is
 * the sector's previous remote attempt (NULL if none): it is freed here
 * and its outcome weighs on the choice.  Returns the new remote attempt
 * (already asking for a plotter), or NULL: this attempt plots locally
 * (remote_plotting off, or overflow with a local worker free, or the
 * cluster is not connected and local workers exist, or the last remote
 * attempt failed its spot check and local workers exist). */
struct rplot_job *rplot_attempt(struct rplot *r, struct rplot_job *prev, struct plot *p,
    struct farm *f, uint32_t idx, uint64_t history_size, const uint8_t sector_id[HASH_LEN]);

enum rplot_fill {
	RPLOT_FILLED,                   /* buf holds the encoded pieces */
	RPLOT_LOCAL,                    /* no free plotter: plot this attempt locally */
	RPLOT_FAILED,                   /* error says why */
};
typedef void (*rplot_fill_cb)(void *arg, enum rplot_fill st, const char *error);

/* Fills buf with the encoded pieces [first, first + n) of the sector
 * (batches in order, whole pieces).  cb runs once, from the loop or
 * from this call, unless the job is cancelled or freed first.  The last
 * batch's cb comes only after the spot check passed. */
void rplot_fill(struct rplot_job *j, uint8_t *buf, uint32_t first, uint32_t n,
    rplot_fill_cb cb, void *arg);
/* Shutdown: nothing more is called back.  Returns 1 when a fill was
 * pending (its callback will now never run). */
int rplot_job_cancel(struct rplot_job *j);
/* NULL is a no-op.  Tells the plotter to stop when it still works. */
void rplot_job_free(struct rplot_job *j);
/* The plotter of an attempt ("" before one answered). */
const char *rplot_job_plotter(const struct rplot_job *j);

struct rplot_stats {
	uint64_t in_flight;             /* remote attempts under way */
	uint64_t offers;                /* plotter.free requests */
	uint64_t plotted;               /* remote sectors handed over complete */
	uint64_t failed;                /* remote attempts that failed */
	uint64_t spot_checks_failed;
	uint64_t fallbacks;             /* attempts that went local: no plotter */
	uint64_t bytes_received;        /* encoded bytes received */
	uint64_t chunks_refused;        /* wrong length or position */
};
void rplot_stats(const struct rplot *r, struct rplot_stats *s);
/* {mode, in_flight: [{farm, sector, plotter, state, received}], counters} */
json_t *rplot_json(const struct rplot *r);

#endif
