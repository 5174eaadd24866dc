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

/* The meta table: small named values fixed at creation (geometry) or
 * updated rarely.  get returns 1 if found, 0 if not, -1 on error. */
int db_meta_get(struct db *db, const char *key, char *val, size_t len, struct err *e);
int db_meta_set(struct db *db, const char *key, const char *val, struct err *e);
/* The same for a value kept as a decimal uint64_t; get returns dflt when
 * the key is absent or cannot be read. */
uint64_t db_meta_get_u64(struct db *db, const char *key, uint64_t dflt);
int db_meta_set_u64(struct db *db, const char *key, uint64_t val, struct err *e);

#endif
