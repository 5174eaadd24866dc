/*
 * budget.h: disk budgets (DESIGN §8).  A store has a limit and what it
 * uses; every in-flight write first reserves its expected size, and the
 * reservation is persisted so that one left by a crash is found and
 * returned at start.  Check: used + reserved + wanted <= limit.
 */
#ifndef FARMD_BUDGET_H
#define FARMD_BUDGET_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct db;

struct budget {
	const char *store;              /* "blocks", "artifacts" */
	uint64_t limit;                 /* CONFIG_UNLIMITED for none */
	uint64_t used;                  /* bytes committed to the store */
	uint64_t reserved;              /* bytes of live reservations */
	struct db *db;
};

/* Deletes reservations left by a previous run (no job is live at start)
 * and returns how many bytes they held. */
int budget_init(struct budget *b, struct db *db, const char *store, uint64_t limit,
    uint64_t used, uint64_t *stale, struct err *e);

/* Whether bytes fit now, for a write that completes in one database
 * transaction (nothing to reserve across a crash). */
int budget_check(const struct budget *b, uint64_t bytes, struct err *e);

/* Reserves bytes; *id names the reservation.  Fails with a message naming
 * the store, the bytes used and the limit. */
int budget_reserve(struct budget *b, uint64_t bytes, int64_t *id, struct err *e);
/* Records in a reservation the name (e.g. a block hash) of the file its
 * write is about to put into place, so the start-up clean-up can find a
 * file that a crash left without the row that would name it.  Like the
 * reservation itself it is not fsynced: it reaches the disk with the next
 * durable commit, and a kill -9 (not a power cut) always leaves it. */
int budget_name(struct budget *b, int64_t id, const void *name, size_t len, struct err *e);
/* Ends a reservation; committed bytes (0 on failure) become used. */
void budget_release(struct budget *b, int64_t id, uint64_t reserved, uint64_t committed);

#endif
