/*
 * farm.h: the registry of farms (DESIGN §6): the farms table, loaded at
 * start and grown by `farm add`, and each farm's counters.
 *
 * A farm (struct farm, plot_int.h) is a row of `farms` plus what the
 * loop keeps about it.  Farms are never removed while farmd runs.
 */
#ifndef FARMD_FARM_H
#define FARMD_FARM_H

#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "plot.h"
#include "plot_int.h"

/* struct farm, its histograms and the phases (PH_*) are in plot_int.h:
 * sector.c, below this file, keeps the farm's count[]. */

/* Loads every farm of the farms table and opens its files (a farm whose
 * files are unusable is kept, with fd -1 and error set). */
int farm_load(struct plot *p, struct err *e);
/* Closes and frees every farm. */
void farm_free_all(struct plot *p);

struct farm *farm_by_id(struct plot *p, uint32_t id);
/* A farm named by its id or its directory. */
struct farm *farm_lookup(struct plot *p, const char *name, struct err *e);

/* farm add (plot_farm_add): creates the files on the I/O pool, then the
 * rows; cb is called exactly once. */
void farm_add(struct plot *p, const char *dir, uint32_t sectors, const char *profile,
    plot_reply_cb cb, void *arg);

void farm_hist_add(struct farm *f, int ph, uint64_t us);
/* Sectors waiting for a slot. */
uint64_t farm_queued(const struct farm *f);
/* Sectors whose content is current. */
uint64_t farm_plotted(const struct farm *f);
/* "error", "plotting", "idle" or "waiting" (for history). */
const char *farm_state(struct plot *p, const struct farm *f);
/* The farm as `farm list` and `farm add` show it. */
json_t *farm_json(struct plot *p, struct farm *f);

#endif
