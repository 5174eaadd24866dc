/*
 * db.h: state.db.  SQLite in WAL mode with synchronous=FULL: a commit that
 * returned is on disk, which is what "acknowledged" means in farmd.  The
 * schema is versioned by PRAGMA user_version and only ever migrated
 * forward; a database from a newer farmd is refused.
 */
#ifndef FARMD_DB_H
#define FARMD_DB_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "err.h"

struct db;

struct db *db_open(const char *path, struct err *e);
/* Checkpoints the WAL into the main file and closes. */
void db_close(struct db *db);
sqlite3 *db_handle(struct db *db);

int db_exec(struct db *db, const char *sql, struct err *e);
int db_begin(struct db *db, struct err *e);
int db_commit(struct db *db, struct err *e);
void db_rollback(struct db *db);

/* Prepares sql; the statement belongs to the caller (sqlite3_finalize). */
sqlite3_stmt *db_prepare(struct db *db, const char *sql, struct err *e);

/* The statements of the hot paths (a block's put, get and reference
 * changes, a resync item's steps), prepared once when state.db opens and
 * finalized when it closes; their SQL is in db.c.  db_stmt hands one out
 * reset and unbound, never NULL; the caller steps it and hands it back
 * with db_stmt_done (reset, bindings cleared: no pointer it bound with
 * SQLITE_STATIC outlives the call, no read stays open).  One user at a
 * time: never hold one across a call that could use the same one. */
enum db_stmt_id {
	DB_BLOCK_STORED,                /* a block's stored bytes, if any */
	DB_BLOCK_INSERT_NOREF,          /* put, unreferenced (queued for GC) */
	DB_BLOCK_INSERT_REF,            /* put, one more reference */
	DB_BLOCK_INCREF,
	DB_BLOCK_DECREF,
	DB_BLOCK_READ,                  /* what a get needs */
	DB_BLOCK_STAT,                  /* a block and its error state */
	DB_RESYNC_ENQUEUE,
	DB_RESYNC_CHECK,                /* refcount, zero since, next try */
	DB_RESYNC_ERROR_DELETE,
	DB_RESYNC_ERROR_NEXT_TRY,
	DB_RESYNC_QUEUE_DELETE,
	DB_RESYNC_QUEUE_DONE,           /* delete an item not moved meanwhile */
	DB_RESYNC_QUEUE_MOVE,           /* move an item not moved meanwhile */
	DB_SECTOR_QUEUE_FIRST,          /* the plotting queue (sector.c) */
	DB_SEGMENT_PIECE,               /* a piece's hash and root (sector.c, per piece plotted) */
	DB_SECTOR_GET,                  /* a sector's row (sector.c) */
	DB_SECTOR_MOVE,                 /* a sector's state change (sector.c, twice per plot) */
	DB_NSTMT
};

sqlite3_stmt *db_stmt(struct db *db, enum db_stmt_id id);
void db_stmt_done(sqlite3_stmt *st);

/* The meta table: small named values fixed at creation (geometry) or
 * updated rarely.  get returns 1 if found, 0 if not, -1 on error. */
int db_meta_get(struct db *db, const char *key, char *val, size_t len, struct err *e);
int db_meta_set(struct db *db, const char *key, const char *val, struct err *e);
/* The same for a value kept as a decimal uint64_t; get returns dflt when
 * the key is absent or cannot be read. */
uint64_t db_meta_get_u64(struct db *db, const char *key, uint64_t dflt);
int db_meta_set_u64(struct db *db, const char *key, uint64_t val, struct err *e);

#endif
