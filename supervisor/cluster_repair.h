/*
 * cluster_repair.h: gap repair (DESIGN §15).  While the archiver waits
 * for a height whose block is missing, peers are asked for it
 * (farmd.v1.history.get) and for the heights just after it, with a
 * back-off per height; an answer is ingested through the normal ingest
 * path, whose checks (height, unpacking) and the archiver's (parent hash,
 * validation code) it passes like any block an operator ingests.
 */
#ifndef FARMD_CLUSTER_REPAIR_H
#define FARMD_CLUSTER_REPAIR_H

#include <stdint.h>

#include "err.h"

struct farmd;
struct cluster_repair;

struct cluster_repair_stats {
	uint64_t asked;                 /* history.get requests sent */
	uint64_t repaired;              /* heights ingested from peers */
	uint64_t refused;               /* answers the ingest refused */
	uint64_t bytes;                 /* bytes of blocks ingested from peers */
	uint64_t window;                /* heights asked at once now */
};

/* Needs d->cluster and d->history; does nothing when the cluster is
 * disabled. */
struct cluster_repair *cluster_repair_new(struct farmd *d, struct err *e);
/* Starts nothing new; true when no ingest it started is in flight. */
int cluster_repair_quiesce(struct cluster_repair *r);
void cluster_repair_free(struct cluster_repair *r);
void cluster_repair_stats(const struct cluster_repair *r, struct cluster_repair_stats *out);

#endif
