/*
 * resyncq.c: the resync queue's tables (resyncq.h).
 *
 * Invariants:
 * - resync_queue has at most one item per hash (a unique index), due at
 *   the earliest time anyone asked for;
 * - the runner removes or moves an item only by a statement that names
 *   the due time it read it with, so an earlier time asked for meanwhile
 *   is never lost: the item is simply checked again;
 * - a block stays in resync_errors from the first read that found it
 *   missing or corrupt until its bytes are stored again or it is gone
 *   (collected, purged, or its row no longer exists).
 */
#include "resyncq.h"

#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "backoff.h"
#include "clock.h"
#include "db.h"
#include "farmd.h"
#include "log.h"

struct resyncq {
	struct farmd *d;
	void (*wake)(void *arg);
	void *wake_arg;
};

struct resyncq *
resyncq_new(struct farmd *d, struct err *e)
{
	struct resyncq *q = calloc(1, sizeof(*q));

	if (q == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	q->d = d;
	return q;
}

void
resyncq_free(struct resyncq *q)
{
	free(q);
}

void
resyncq_set_wake(struct resyncq *q, void (*wake)(void *arg), void *arg)
{
	q->wake = wake;
	q->wake_arg = arg;
}

static void
rq_wake(struct resyncq *q)
{
	if (q->wake != NULL)
		q->wake(q->wake_arg);
}

/* Runs one of db.c's statements on hash (?1) with ?2 = a and ?3 = b; a
 * statement with fewer parameters ignores the extra ones. */
static int
rq_exec_hash(struct resyncq *q, enum db_stmt_id id, const uint8_t hash[HASH_LEN],
    int64_t a, int64_t b, struct err *e)
{
	sqlite3_stmt *st = db_stmt(q->d->db, id);
	int rc;

	sqlite3_bind_blob(st, 1, hash, HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, a);
	sqlite3_bind_int64(st, 3, b);
	rc = sqlite3_step(st) == SQLITE_DONE ? 0 :
	    err_set(e, "state.db: resync: %s", sqlite3_errmsg(db_handle(q->d->db)));
	db_stmt_done(st);
	return rc;
}

/* The same for the runner's steps, which log a failure and go on. */
static void
rq_exec_hash_log(struct resyncq *q, enum db_stmt_id id, const uint8_t hash[HASH_LEN],
    int64_t a, int64_t b)
{
	struct err e;

	if (rq_exec_hash(q, id, hash, a, b, &e) < 0)
		log_err("%s", e.msg);
}

int
resyncq_enqueue(struct resyncq *q, const uint8_t hash[HASH_LEN], uint64_t due_ms,
    struct err *e)
{
	if (rq_exec_hash(q, DB_RESYNC_ENQUEUE, hash, (int64_t)due_ms, 0, e) < 0)
		return -1;
	if (due_ms <= clock_real_ms())
		rq_wake(q);
	return 0;
}

void
resyncq_report(struct resyncq *q, const uint8_t hash[HASH_LEN], const char *reason)
{
	uint64_t now = clock_real_ms();
	sqlite3_stmt *st;
	struct err e;

	/* First sighting: one error, first retry after the base delay; a
	 * block already in the table keeps its count and back-off. */
	st = db_prepare(q->d->db, "INSERT INTO resync_errors (hash, errors, last_try_ms, "
	    "next_try_ms, reason) VALUES (?1, 1, ?2, ?3, ?4) "
	    "ON CONFLICT (hash) DO UPDATE SET reason = ?4", &e);
	if (st == NULL) {
		log_err("%s", e.msg);
		return;
	}
	sqlite3_bind_blob(st, 1, hash, HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)now);
	sqlite3_bind_int64(st, 3, (int64_t)(now +
	    backoff_resync_ms(q->d->cfg.blocks.resync_retry_base_ms, 1)));
	sqlite3_bind_text(st, 4, reason, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		log_err("state.db: record block error: %s", sqlite3_errmsg(db_handle(q->d->db)));
	sqlite3_finalize(st);
	if (resyncq_enqueue(q, hash, now, &e) < 0)
		log_err("%s", e.msg);
}

void
resyncq_satisfied(struct resyncq *q, const uint8_t hash[HASH_LEN])
{
	struct err e;

	if (rq_exec_hash(q, DB_RESYNC_ERROR_DELETE, hash, 0, 0, &e) < 0)
		log_err("%s", e.msg);
	else if (sqlite3_changes(db_handle(q->d->db)) > 0) {
		char hex[HASH_HEX_LEN + 1];

		hex_encode(hash, HASH_LEN, hex);
		log_info("block %s repaired", hex);
		/* Its item waits for a back-off that no longer applies: due
		 * now, its check finds the block healthy (or collectable). */
		if (resyncq_enqueue(q, hash, clock_real_ms(), &e) < 0)
			log_err("%s", e.msg);
	}
}

void
resyncq_forget(struct resyncq *q, const uint8_t hash[HASH_LEN])
{
	struct err e;

	if (rq_exec_hash(q, DB_RESYNC_ERROR_DELETE, hash, 0, 0, &e) < 0 ||
	    rq_exec_hash(q, DB_RESYNC_QUEUE_DELETE, hash, 0, 0, &e) < 0)
		log_err("%s", e.msg);
}

int
resyncq_retry_now(struct resyncq *q, const uint8_t *hash, struct err *e)
{
	uint64_t now = clock_real_ms();
	sqlite3_stmt *st;
	int n = 0;

	if (db_begin(q->d->db, e) < 0)
		return -1;
	st = db_prepare(q->d->db, hash ?
	    "UPDATE resync_errors SET next_try_ms = ?1 WHERE hash = ?2 RETURNING hash" :
	    "UPDATE resync_errors SET next_try_ms = ?1 RETURNING hash", e);
	if (st == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, (int64_t)now);
	if (hash)
		sqlite3_bind_blob(st, 2, hash, HASH_LEN, SQLITE_STATIC);
	while (sqlite3_step(st) == SQLITE_ROW) {
		uint8_t h[HASH_LEN];

		memcpy(h, sqlite3_column_blob(st, 0), HASH_LEN);
		if (rq_exec_hash(q, DB_RESYNC_ENQUEUE, h, (int64_t)now, 0, e) < 0) {
			sqlite3_finalize(st);
			goto fail;
		}
		n++;
	}
	sqlite3_finalize(st);
	if (db_commit(q->d->db, e) < 0)
		goto fail;
	rq_wake(q);
	return n;
fail:
	db_rollback(q->d->db);
	return -1;
}

static uint64_t
rq_count(struct resyncq *q, const char *sql)
{
	sqlite3_stmt *st = db_prepare(q->d->db, sql, NULL);
	uint64_t n = 0;

	if (st != NULL && sqlite3_step(st) == SQLITE_ROW)
		n = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

uint64_t
resyncq_len(struct resyncq *q)
{
	return rq_count(q, "SELECT COUNT(*) FROM resync_queue");
}

uint64_t
resyncq_error_count(struct resyncq *q)
{
	return rq_count(q, "SELECT COUNT(*) FROM resync_errors");
}

json_t *
resyncq_json_errors(struct resyncq *q)
{
	json_t *a = json_array();
	sqlite3_stmt *st = db_prepare(q->d->db, "SELECT hash, errors, last_try_ms, next_try_ms, "
	    "reason FROM resync_errors ORDER BY next_try_ms, hash", NULL);

	while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
		char hex[HASH_HEX_LEN + 1];

		if (sqlite3_column_bytes(st, 0) != HASH_LEN)
			continue;
		hex_encode(sqlite3_column_blob(st, 0), HASH_LEN, hex);
		json_array_append_new(a, json_pack("{s:s, s:I, s:I, s:I, s:s}", "hash", hex,
		    "errors", (json_int_t)sqlite3_column_int64(st, 1),
		    "last_try_ms", (json_int_t)sqlite3_column_int64(st, 2),
		    "next_try_ms", (json_int_t)sqlite3_column_int64(st, 3),
		    "reason", (const char *)sqlite3_column_text(st, 4)));
	}
	sqlite3_finalize(st);
	return a;
}

/* ---- the runner's side ----------------------------------------------- */

int
resyncq_due(struct resyncq *q, uint64_t now_ms, struct resyncq_item *out, int max,
    uint64_t *next_ms)
{
	sqlite3_stmt *st;
	struct err e;
	int n = 0;

	st = db_prepare(q->d->db, "SELECT hash, due_ms FROM resync_queue ORDER BY due_ms, hash "
	    "LIMIT ?", &e);
	if (st == NULL) {
		log_err("%s", e.msg);
		return -1;
	}
	sqlite3_bind_int(st, 1, max);
	while (n < max && sqlite3_step(st) == SQLITE_ROW) {
		uint64_t due = (uint64_t)sqlite3_column_int64(st, 1);

		if (due > now_ms) {
			*next_ms = due < *next_ms ? due : *next_ms;
			break;
		}
		if (sqlite3_column_bytes(st, 0) != HASH_LEN)
			continue;
		memcpy(out[n].hash, sqlite3_column_blob(st, 0), HASH_LEN);
		out[n++].due_ms = due;
	}
	sqlite3_finalize(st);
	return n;
}

void
resyncq_block(struct resyncq *q, const uint8_t hash[HASH_LEN], struct resyncq_block *out)
{
	sqlite3_stmt *st = db_stmt(q->d->db, DB_RESYNC_CHECK);

	out->refs = -1;
	out->zero_since_ms = 0;
	out->next_try_ms = -1;
	sqlite3_bind_blob(st, 1, hash, HASH_LEN, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		out->refs = sqlite3_column_int64(st, 0);
		out->zero_since_ms = sqlite3_column_int64(st, 1);
		out->next_try_ms = sqlite3_column_type(st, 2) == SQLITE_NULL ? -1 :
		    sqlite3_column_int64(st, 2);
	}
	db_stmt_done(st);
}

void
resyncq_collected(struct resyncq *q, const uint8_t hash[HASH_LEN])
{
	rq_exec_hash_log(q, DB_RESYNC_ERROR_DELETE, hash, 0, 0);
}

uint64_t
resyncq_failed(struct resyncq *q, const uint8_t hash[HASH_LEN], const char *reason,
    uint64_t now_ms, int64_t *errors)
{
	sqlite3_stmt *st;
	uint64_t next;

	*errors = 1;
	st = db_prepare(q->d->db, "INSERT INTO resync_errors (hash, errors, last_try_ms, "
	    "next_try_ms, reason) VALUES (?1, 1, ?2, ?2, ?3) ON CONFLICT (hash) DO UPDATE SET "
	    "errors = errors + 1, last_try_ms = ?2, reason = ?3 RETURNING errors", NULL);
	if (st != NULL) {
		sqlite3_bind_blob(st, 1, hash, HASH_LEN, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (int64_t)now_ms);
		sqlite3_bind_text(st, 3, reason, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_ROW)
			*errors = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	next = now_ms + backoff_resync_ms(q->d->cfg.blocks.resync_retry_base_ms,
	    (unsigned)*errors);
	rq_exec_hash_log(q, DB_RESYNC_ERROR_NEXT_TRY, hash, (int64_t)next, 0);
	return next;
}

void
resyncq_move(struct resyncq *q, const uint8_t hash[HASH_LEN], uint64_t due_ms, uint64_t to_ms)
{
	rq_exec_hash_log(q, DB_RESYNC_QUEUE_MOVE, hash, (int64_t)due_ms, (int64_t)to_ms);
}

void
resyncq_done(struct resyncq *q, const uint8_t hash[HASH_LEN], uint64_t due_ms)
{
	rq_exec_hash_log(q, DB_RESYNC_QUEUE_DONE, hash, (int64_t)due_ms, 0);
}
