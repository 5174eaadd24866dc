#include "budget.h"

#include <inttypes.h>
#include <sqlite3.h>

#include "clock.h"
#include "config.h"
#include "db.h"
#include "log.h"

int
budget_init(struct budget *b, struct db *db, const char *store, uint64_t limit,
    uint64_t used, uint64_t *stale, struct err *e)
{
	sqlite3_stmt *st;

	b->store = store;
	b->limit = limit;
	b->used = used;
	b->reserved = 0;
	b->db = db;
	*stale = 0;
	st = db_prepare(db, "SELECT COALESCE(SUM(bytes), 0) FROM reservations WHERE store = ?", e);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, store, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		*stale = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	st = db_prepare(db, "DELETE FROM reservations WHERE store = ?", e);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, store, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE) {
		sqlite3_finalize(st);
		return err_set(e, "%s budget: cannot delete stale reservations", store);
	}
	sqlite3_finalize(st);
	if (*stale > 0)
		log_info("%s budget: returned %" PRIu64 " bytes of reservations left by the "
		    "previous run", store, *stale);
	return 0;
}

int
budget_check(const struct budget *b, uint64_t bytes, struct err *e)
{
	if (b->limit != CONFIG_UNLIMITED &&
	    (bytes > b->limit || b->used + b->reserved > b->limit - bytes))
		return err_set(e, "%s budget exhausted: %" PRIu64 " bytes used + %" PRIu64
		    " reserved + %" PRIu64 " requested exceeds the limit of %" PRIu64 " bytes",
		    b->store, b->used, b->reserved, bytes, b->limit);
	return 0;
}

/* Runs one statement on the reservations table without an fsync.  A
 * reservation only matters to the start-up clean-up: one lost to a power
 * cut costs nothing, so its commit skips the fsync (measured: halves the
 * fsyncs per put and takes status p99 during a put stream from 28 ms to
 * the figure in the issue note); the next durable commit carries it to
 * disk anyway.  st is finalized. */
static int
budget_step_unsynced(struct budget *b, sqlite3_stmt *st, const char *what, struct err *e)
{
	int rc;

	if (db_exec(b->db, "PRAGMA synchronous = OFF", e) < 0) {
		sqlite3_finalize(st);
		return -1;
	}
	rc = sqlite3_step(st) == SQLITE_DONE ? 0 :
	    err_set(e, "%s budget: cannot %s: %s", b->store, what,
	    sqlite3_errmsg(db_handle(b->db)));
	sqlite3_finalize(st);
	if (db_exec(b->db, "PRAGMA synchronous = FULL", rc < 0 ? NULL : e) < 0)
		return -1;
	return rc;
}

int
budget_reserve(struct budget *b, uint64_t bytes, int64_t *id, struct err *e)
{
	sqlite3_stmt *st;

	if (budget_check(b, bytes, e) < 0)
		return -1;
	st = db_prepare(b->db, "INSERT INTO reservations (store, bytes, created_ms) "
	    "VALUES (?, ?, ?)", e);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, b->store, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)bytes);
	sqlite3_bind_int64(st, 3, (int64_t)clock_real_ms());
	if (budget_step_unsynced(b, st, "record reservation", e) < 0)
		return -1;
	*id = sqlite3_last_insert_rowid(db_handle(b->db));
	b->reserved += bytes;
	return 0;
}

int
budget_name(struct budget *b, int64_t id, const void *name, size_t len, struct err *e)
{
	sqlite3_stmt *st = db_prepare(b->db, "UPDATE reservations SET hash = ? WHERE id = ?", e);

	if (st == NULL)
		return -1;
	sqlite3_bind_blob(st, 1, name, (int)len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, id);
	return budget_step_unsynced(b, st, "name reservation", e);
}

void
budget_release(struct budget *b, int64_t id, uint64_t reserved, uint64_t committed)
{
	sqlite3_stmt *st = db_prepare(b->db, "DELETE FROM reservations WHERE id = ?", NULL);

	if (st != NULL) {
		sqlite3_bind_int64(st, 1, id);
		if (sqlite3_step(st) != SQLITE_DONE)
			log_warn("%s budget: cannot delete reservation %lld", b->store, (long long)id);
		sqlite3_finalize(st);
	}
	b->reserved -= reserved;
	b->used += committed;
}
