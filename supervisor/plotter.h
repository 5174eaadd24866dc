/*
 * plotter.h: remote plotting, the plotter's side (DESIGN §15, issue 15).
 *
 * With [cluster] plotter = true this node lends its encode workers: it
 * is subscribed to farmd.v1.plotter.free in queue group farmd.plotter
 * only while it has room for one more sector (fewer sector jobs than
 * live encode workers and no encode job queued), answering with its
 * instance subject farmd.v1.plotter.<node>.sector.  A sector job there
 * is checked (version, sizes, geometry, sector id recomputed from its
 * inputs) and answered; then, batch by batch, the pieces are read from
 * the block store or fetched from peers (block.get, verified by hash),
 * encoded by this node's sandboxed workers and streamed back to the
 * farmer's inbox as chunks, each sent once the previous one was
 * acknowledged, with a ping every PLOTTER_PING_MS while it works.
 * Memory per sector job: one batch (at most 16 MiB).
 */
#ifndef FARMD_PLOTTER_H
#define FARMD_PLOTTER_H

#include <stdint.h>

#include <jansson.h>

#include "err.h"

#define PLOTTER_PING_MS 2000            /* the farmer gives up after 15 s */
#define PLOTTER_ACK_MS 60000            /* a farmer writing a batch acks late */

struct farmd;
struct plotter;

struct plotter *plotter_new(struct farmd *d, struct err *e);
/* Begins offering (when [cluster] plotter is set; a reload that changes
 * it takes effect within a second). */
int plotter_start(struct plotter *pl, struct err *e);
/* Stops offering and ends the sector jobs (the farmers are told); true
 * once nothing of them is in flight. */
int plotter_quiesce(struct plotter *pl);
void plotter_free(struct plotter *pl);

struct plotter_stats {
	uint64_t free;                  /* sector jobs it would take now */
	uint64_t active;                /* sector jobs under way */
	uint64_t accepted, refused, done, failed;
	uint64_t pieces_fetched;        /* pieces it lacked, fetched from peers */
	uint64_t bytes_sent;            /* encoded bytes acknowledged by farmers */
};
void plotter_stats(const struct plotter *pl, struct plotter_stats *s);
/* {enabled, subject, free, jobs: [{farmer, sector, state, sent}], counters} */
json_t *plotter_json(const struct plotter *pl);

#ifdef FAULT_INJECTION
/* wrong-piece: the next sector job answers with every piece altered (so
 * any spot check finds it).  -1: no such fault. */
int plotter_arm_fault(struct plotter *pl, const char *fault);
#endif

#endif
