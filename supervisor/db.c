/*
 * db.c: opening, migrating and closing state.db.
 *
 * Migrations are appended, never edited: migration i takes user_version i
 * to i + 1 inside one transaction, so a crash mid-migration leaves the
 * previous version intact.  The hot paths' statements live here too,
 * prepared once after the migrations and finalized before the close; each
 * is reset and unbound whenever it is handed out or back, so none keeps a
 * read open or a caller's pointer between uses.
 */
#include "db.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct db {
	sqlite3 *h;
	int version;
	sqlite3_stmt *stmt[DB_NSTMT];   /* all prepared while h is open */
};

static const char *const migrations[] = {
	/* 0 → 1: foundation. */
	"CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;",
	/* 1 → 2: block store (DESIGN §3, §5, §8).  A row with stored > 0 and
	 * data NULL names a file that was fsynced, with its directory,
	 * before the row committed. */
	"CREATE TABLE blocks ("
	"  hash BLOB PRIMARY KEY,"          /* SHA-256 of the bytes */
	"  size INTEGER NOT NULL,"          /* logical bytes */
	"  stored INTEGER NOT NULL,"        /* bytes on disk, or inline */
	"  refcount INTEGER NOT NULL,"
	"  compressed INTEGER NOT NULL,"
	"  data BLOB,"                      /* inline bytes (size < 3072) */
	"  zero_since_ms INTEGER"           /* refcount reached 0 at */
	") WITHOUT ROWID;"
	"CREATE TABLE resync_queue (due_ms INTEGER NOT NULL, hash BLOB NOT NULL,"
	"  PRIMARY KEY (due_ms, hash)) WITHOUT ROWID;"
	"CREATE TABLE resync_errors (hash BLOB PRIMARY KEY, errors INTEGER NOT NULL,"
	"  last_try_ms INTEGER NOT NULL, next_try_ms INTEGER NOT NULL,"
	"  reason TEXT NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE reservations (id INTEGER PRIMARY KEY, store TEXT NOT NULL,"
	"  bytes INTEGER NOT NULL, created_ms INTEGER NOT NULL);",
	/* 2 → 3: history (DESIGN §4).  history holds every ingested block,
	 * pending or archived; the checkpoint and the partial segment's
	 * start live in meta and change in the same transaction as the
	 * segments they complete. */
	"CREATE TABLE history (height INTEGER PRIMARY KEY, hash BLOB NOT NULL,"
	"  size INTEGER NOT NULL);"
	"CREATE TABLE history_rejections (height INTEGER PRIMARY KEY, hash BLOB NOT NULL,"
	"  reason TEXT NOT NULL);"
	"CREATE TABLE segments (idx INTEGER PRIMARY KEY, root BLOB NOT NULL,"
	"  prev_header_hash BLOB NOT NULL, header_hash BLOB NOT NULL,"
	"  last_height INTEGER NOT NULL);"
	"CREATE TABLE segment_pieces (segment INTEGER NOT NULL, k INTEGER NOT NULL,"
	"  hash BLOB NOT NULL, root BLOB NOT NULL, PRIMARY KEY (segment, k)) WITHOUT ROWID;",
	/* 3 → 4: farms and sectors (DESIGN §3, §6).  A farm's geometry is
	 * fixed at creation by its profile and copied here, so a later
	 * change of the built-in profiles cannot reinterpret a plot.  A
	 * sector row exists for every index; checksum is non-NULL only while
	 * the sector's bytes hold the content it describes (never while
	 * state = 'plotting'). */
	"CREATE TABLE farms (id INTEGER PRIMARY KEY, dir TEXT NOT NULL UNIQUE,"
	"  sectors INTEGER NOT NULL, profile TEXT NOT NULL,"
	"  pieces_in_sector INTEGER NOT NULL, sector_size INTEGER NOT NULL,"
	"  min_sector_lifetime INTEGER NOT NULL, recent_segments INTEGER NOT NULL,"
	"  recent_history_fraction REAL NOT NULL, scrypt_n INTEGER NOT NULL,"
	"  scrypt_r INTEGER NOT NULL, scrypt_p INTEGER NOT NULL,"
	"  public_key_hash BLOB NOT NULL, created_ms INTEGER NOT NULL);"
	"CREATE TABLE sectors (farm INTEGER NOT NULL REFERENCES farms(id),"
	"  idx INTEGER NOT NULL, state TEXT NOT NULL, history_size INTEGER,"
	"  pieces INTEGER NOT NULL, format INTEGER NOT NULL, checksum BLOB,"
	"  expires_at INTEGER, plotted_at_ms INTEGER, updated_ms INTEGER NOT NULL,"
	"  PRIMARY KEY (farm, idx)) WITHOUT ROWID;"
	"CREATE INDEX sectors_by_state ON sectors (farm, state, expires_at, idx);"
	/* The plotted sectors whose expiry is not known yet: what each new
	 * segment's expiry check looks for, without walking the others. */
	"CREATE INDEX sectors_expiry_unknown ON sectors (farm, history_size)"
	"  WHERE state = 'plotted' AND expires_at IS NULL;",
	/* 4 → 5: one resync item per block, at the earliest time anything
	 * asked for (an enqueue moves it earlier, never later), so a late
	 * back-off can never hold up an earlier request such as GC.  A
	 * reservation names the block its put is about to rename into place,
	 * so a file left by a crash between rename and commit is found at
	 * start without walking the store. */
	"DELETE FROM resync_queue WHERE EXISTS (SELECT 1 FROM resync_queue q"
	"  WHERE q.hash = resync_queue.hash AND q.due_ms < resync_queue.due_ms);"
	"CREATE UNIQUE INDEX resync_queue_by_hash ON resync_queue (hash);"
	"ALTER TABLE reservations ADD COLUMN hash BLOB;",
	/* 5 → 6: validation code (DESIGN §7).  An artifact row is keyed by
	 * its id; path, size and sha256 are set while it is prepared, the
	 * failure columns after a failure (error_kind deterministic or
	 * transient).  history_code says which source is in force from which
	 * height on (the block at from_height - 1 carried it). */
	"CREATE TABLE artifacts (code_hash BLOB NOT NULL, params_hash BLOB NOT NULL,"
	"  state TEXT NOT NULL, path TEXT, size INTEGER, sha256 BLOB,"
	"  last_needed_ms INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,"
	"  last_error TEXT, last_failure_ms INTEGER, error_kind TEXT,"
	"  PRIMARY KEY (code_hash, params_hash)) WITHOUT ROWID;"
	"CREATE TABLE history_code (from_height INTEGER PRIMARY KEY,"
	"  code_hash BLOB NOT NULL, source BLOB NOT NULL);",
};

#define DB_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* The hot-path statements (db.h), written against the latest schema. */
static const char *const db_stmt_sql[DB_NSTMT] = {
	[DB_BLOCK_STORED] = "SELECT stored FROM blocks WHERE hash = ?",
	/* With noref a new row starts unreferenced (and is queued for GC);
	 * the caller references it in its own transaction. */
	[DB_BLOCK_INSERT_NOREF] =
	    "INSERT INTO blocks (hash, size, stored, refcount, compressed, data, zero_since_ms) "
	    "VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6) ON CONFLICT (hash) DO UPDATE SET "
	    "stored = excluded.stored, compressed = excluded.compressed, data = excluded.data",
	[DB_BLOCK_INSERT_REF] =
	    "INSERT INTO blocks (hash, size, stored, refcount, compressed, data, zero_since_ms) "
	    "VALUES (?1, ?2, ?3, 1, ?4, ?5, NULL) ON CONFLICT (hash) DO UPDATE SET "
	    "refcount = refcount + 1, zero_since_ms = NULL, stored = excluded.stored, "
	    "compressed = excluded.compressed, data = excluded.data",
	[DB_BLOCK_INCREF] =
	    "UPDATE blocks SET refcount = refcount + 1, zero_since_ms = NULL WHERE hash = ?",
	[DB_BLOCK_DECREF] = "UPDATE blocks SET refcount = refcount - 1, "
	    "zero_since_ms = CASE WHEN refcount = 1 THEN ?2 ELSE NULL END WHERE hash = ?1",
	[DB_BLOCK_READ] = "SELECT size, compressed, data FROM blocks WHERE hash = ?",
	[DB_BLOCK_STAT] =
	    "SELECT b.size, b.stored, b.refcount, b.compressed, b.data IS NOT NULL, "
	    "r.hash IS NOT NULL FROM blocks b LEFT JOIN resync_errors r ON r.hash = b.hash "
	    "WHERE b.hash = ?",
	/* One item per hash, due at the earliest time asked for: one
	 * statement, so a crash keeps either the old item or the moved one. */
	[DB_RESYNC_ENQUEUE] = "INSERT INTO resync_queue (hash, due_ms) VALUES (?1, ?2) "
	    "ON CONFLICT DO UPDATE SET due_ms = excluded.due_ms "
	    "WHERE excluded.due_ms < due_ms",
	[DB_RESYNC_CHECK] = "SELECT b.refcount, b.zero_since_ms, r.next_try_ms FROM "
	    "blocks b LEFT JOIN resync_errors r ON r.hash = b.hash WHERE b.hash = ?",
	[DB_RESYNC_ERROR_DELETE] = "DELETE FROM resync_errors WHERE hash = ?1",
	[DB_RESYNC_ERROR_NEXT_TRY] = "UPDATE resync_errors SET next_try_ms = ?2 WHERE hash = ?1",
	[DB_RESYNC_QUEUE_DELETE] = "DELETE FROM resync_queue WHERE hash = ?1",
	[DB_RESYNC_QUEUE_DONE] = "DELETE FROM resync_queue WHERE hash = ?1 AND due_ms = ?2",
	[DB_RESYNC_QUEUE_MOVE] = "UPDATE resync_queue SET due_ms = ?3 WHERE hash = ?1 AND "
	    "due_ms = ?2",
	[DB_SECTOR_QUEUE_FIRST] = "SELECT idx FROM sectors WHERE farm = ? AND state = ? "
	    "ORDER BY expires_at, idx LIMIT ?",
	[DB_SEGMENT_PIECE] = "SELECT hash, root FROM segment_pieces WHERE segment = ? AND k = ?",
	[DB_SECTOR_GET] = "SELECT state, history_size, checksum, expires_at FROM sectors "
	    "WHERE farm = ? AND idx = ?",
	[DB_SECTOR_MOVE] = "UPDATE sectors SET state = ?, history_size = ?, checksum = ?, "
	    "expires_at = ?, plotted_at_ms = CASE ? WHEN 0 THEN plotted_at_ms ELSE ? END, "
	    "updated_ms = ? WHERE farm = ? AND idx = ?",
};

static int
db_err(struct db *db, struct err *e, const char *what)
{
	return err_set(e, "state.db: %s: %s", what, sqlite3_errmsg(db->h));
}

int
db_exec(struct db *db, const char *sql, struct err *e)
{
	char *msg = NULL;

	if (sqlite3_exec(db->h, sql, NULL, NULL, &msg) != SQLITE_OK) {
		err_set(e, "state.db: %s", msg ? msg : sqlite3_errmsg(db->h));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

/* Transactions nest (SAVEPOINT): a subsystem's commit inside another's
 * transaction becomes part of it, so a history commit can drop block
 * references atomically with its own rows.  Only the outermost RELEASE
 * commits; with one connection and one writer there is nothing to lock
 * against, so the deferred start SAVEPOINT gives is enough. */
int
db_begin(struct db *db, struct err *e)
{
	return db_exec(db, "SAVEPOINT farmd", e);
}

int
db_commit(struct db *db, struct err *e)
{
	return db_exec(db, "RELEASE farmd", e);
}

void
db_rollback(struct db *db)
{
	if (!sqlite3_get_autocommit(db->h))
		sqlite3_exec(db->h, "ROLLBACK TO farmd; RELEASE farmd", NULL, NULL, NULL);
}

/* flags: SQLITE_PREPARE_PERSISTENT for a statement kept for the life
 * of the connection (it then stays out of the lookaside allocator). */
static sqlite3_stmt *
db_prepare_flags(struct db *db, const char *sql, unsigned flags, struct err *e)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v3(db->h, sql, -1, flags, &st, NULL) != SQLITE_OK) {
		db_err(db, e, "prepare");
		return NULL;
	}
	return st;
}

sqlite3_stmt *
db_prepare(struct db *db, const char *sql, struct err *e)
{
	return db_prepare_flags(db, sql, 0, e);
}

/* After the migrations, so every table the statements name exists. */
static int
db_stmt_prepare_all(struct db *db, struct err *e)
{
	for (int i = 0; i < DB_NSTMT; i++) {
		db->stmt[i] = db_prepare_flags(db, db_stmt_sql[i], SQLITE_PREPARE_PERSISTENT, e);
		if (db->stmt[i] == NULL)
			return -1;
	}
	return 0;
}

static void
db_stmt_finalize_all(struct db *db)
{
	for (int i = 0; i < DB_NSTMT; i++) {
		sqlite3_finalize(db->stmt[i]);
		db->stmt[i] = NULL;
	}
}

sqlite3_stmt *
db_stmt(struct db *db, enum db_stmt_id id)
{
	/* Reset again in case a caller's early return skipped db_stmt_done. */
	db_stmt_done(db->stmt[id]);
	return db->stmt[id];
}

void
db_stmt_done(sqlite3_stmt *st)
{
	if (st == NULL)
		return;
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

static int
db_user_version(struct db *db, int *v, struct err *e)
{
	sqlite3_stmt *st = db_prepare(db, "PRAGMA user_version", e);

	if (st == NULL)
		return -1;
	if (sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_finalize(st);
		return db_err(db, e, "read user_version");
	}
	*v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return 0;
}

static int
db_migrate(struct db *db, struct err *e)
{
	if (db_user_version(db, &db->version, e) < 0)
		return -1;
	if (db->version > DB_VERSION)
		return err_set(e, "state.db has schema version %d, newer than this farmd "
		    "understands (%d)", db->version, DB_VERSION);
	while (db->version < DB_VERSION) {
		char sql[64];

		if (db_begin(db, e) < 0)
			return -1;
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", db->version + 1);
		if (db_exec(db, migrations[db->version], e) < 0 || db_exec(db, sql, e) < 0) {
			db_rollback(db);
			return err_wrap(e, "migration to schema version %d", db->version + 1);
		}
		if (db_commit(db, e) < 0) {
			db_rollback(db);
			return -1;
		}
		db->version++;
		log_info("state.db migrated to schema version %d", db->version);
	}
	return 0;
}

struct db *
db_open(const char *path, struct err *e)
{
	struct db *db = calloc(1, sizeof(*db));

	if (db == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	if (sqlite3_open_v2(path, &db->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		err_set(e, "%s: %s", path, db->h ? sqlite3_errmsg(db->h) : "cannot open");
		goto fail;
	}
	sqlite3_extended_result_codes(db->h, 1);
	if (db_exec(db, "PRAGMA journal_mode = WAL", e) < 0 ||
	    db_exec(db, "PRAGMA synchronous = FULL", e) < 0 ||
	    db_exec(db, "PRAGMA foreign_keys = ON", e) < 0 ||
	    db_exec(db, "PRAGMA busy_timeout = 5000", e) < 0 ||
	    db_migrate(db, e) < 0 || db_stmt_prepare_all(db, e) < 0) {
		err_wrap(e, "%s", path);
		goto fail;
	}
	return db;
fail:
	db_stmt_finalize_all(db);
	sqlite3_close(db->h);
	free(db);
	return NULL;
}

void
db_close(struct db *db)
{
	if (db == NULL)
		return;
	db_stmt_finalize_all(db);
	sqlite3_wal_checkpoint_v2(db->h, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	if (sqlite3_close(db->h) != SQLITE_OK)
		log_warn("state.db: close: %s", sqlite3_errmsg(db->h));
	free(db);
}

sqlite3 *
db_handle(struct db *db)
{
	return db->h;
}

int
db_meta_get(struct db *db, const char *key, char *val, size_t len, struct err *e)
{
	sqlite3_stmt *st = db_prepare(db, "SELECT value FROM meta WHERE key = ?", e);
	int rc;

	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		snprintf(val, len, "%s", (const char *)sqlite3_column_text(st, 0));
		rc = 1;
	} else if (rc == SQLITE_DONE) {
		rc = 0;
	} else {
		rc = db_err(db, e, "read meta");
	}
	sqlite3_finalize(st);
	return rc;
}

int
db_meta_set(struct db *db, const char *key, const char *val, struct err *e)
{
	sqlite3_stmt *st = db_prepare(db,
	    "INSERT INTO meta (key, value) VALUES (?, ?) "
	    "ON CONFLICT (key) DO UPDATE SET value = excluded.value", e);
	int rc;

	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, val, -1, SQLITE_STATIC);
	rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(db, e, "write meta");
	sqlite3_finalize(st);
	return rc;
}

uint64_t
db_meta_get_u64(struct db *db, const char *key, uint64_t dflt)
{
	char v[64];

	if (db_meta_get(db, key, v, sizeof(v), NULL) != 1)
		return dflt;
	return strtoull(v, NULL, 10);
}

int
db_meta_set_u64(struct db *db, const char *key, uint64_t val, struct err *e)
{
	char v[32];

	snprintf(v, sizeof(v), "%" PRIu64, val);
	return db_meta_set(db, key, v, e);
}
