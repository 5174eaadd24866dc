/*
 * resync.c: the persistent resync queue.
 *
 * An item is processed by a small state machine (DESIGN §9):
 *
 *   CHECK ──► COLLECT ──────────────► DONE       refcount 0, delay passed
 *     │  └──► REQUEUE                            refcount 0, delay not passed,
 *     │                                          or back-off not passed
 *     └────► VERIFY ─► DONE                      referenced, stored copy good
 *               └────► FETCH ─► FAILED ─► REQUEUE   missing/corrupt, no source
 *
 * The queue row stays until the item is DONE or REQUEUEd (new row
 * inserted before the old one is removed), so a crash at any point
 * processes the item again; every step is idempotent.
 *
 * Fetching from peers plugs in at resync_fetch(): today no peers exist,
 * so a referenced block whose only copy is gone stays in the error table,
 * retried with back-off, until a put of the same bytes satisfies it.
 */
#include "resync.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "backoff.h"
#include "blockstore.h"
#include "clock.h"
#include "db.h"
#include "farmd.h"
#include "log.h"

#define RESYNC_INFLIGHT 8
#define RESYNC_BATCH 64
#define RESYNC_IDLE_MS 1000

enum resync_state {
	RS_CHECK, RS_COLLECT, RS_VERIFY, RS_FETCH, RS_FAILED, RS_REQUEUE, RS_DONE,
};

static const char *const rs_names[] = {
	[RS_CHECK] = "check", [RS_COLLECT] = "collect", [RS_VERIFY] = "verify",
	[RS_FETCH] = "fetch", [RS_FAILED] = "failed", [RS_REQUEUE] = "requeue",
	[RS_DONE] = "done",
};

struct resync_item {
	struct resync *r;
	uint8_t hash[HASH_LEN];
	uint64_t due_ms;                /* its queue row */
	uint64_t requeue_ms;            /* RS_REQUEUE: the new due time */
	enum resync_state state;
	uint64_t started_us;
	char reason[128];
};

struct resync {
	struct farmd *d;
	struct event *timer;
	struct resync_item *inflight[RESYNC_INFLIGHT];
	int ninflight;
	int stopping;
	uint64_t done, failed, collected, last_us;
};

static void resync_item_enter(struct resync_item *it, enum resync_state next);
static void resync_pump(struct resync *r);

/* Runs one of db.c's statements on hash (?1) with ?2 = a and ?3 = b; a
 * statement with fewer parameters ignores the extra ones. */
static int
rs_exec_hash(struct resync *r, enum db_stmt_id id, const uint8_t hash[HASH_LEN],
    int64_t a, int64_t b, struct err *e)
{
	sqlite3_stmt *st = db_stmt(r->d->db, id);
	int rc;

	sqlite3_bind_blob(st, 1, hash, HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, a);
	sqlite3_bind_int64(st, 3, b);
	rc = sqlite3_step(st) == SQLITE_DONE ? 0 :
	    err_set(e, "state.db: resync: %s", sqlite3_errmsg(db_handle(r->d->db)));
	db_stmt_done(st);
	return rc;
}

int
resync_enqueue(struct resync *r, const uint8_t hash[HASH_LEN], uint64_t due_ms, struct err *e)
{
	if (rs_exec_hash(r, DB_RESYNC_ENQUEUE, hash, (int64_t)due_ms, 0, e) < 0)
		return -1;
	if (due_ms <= clock_real_ms() && r->timer != NULL)
		event_active(r->timer, EV_TIMEOUT, 0);
	return 0;
}

void
resync_report(struct resync *r, const uint8_t hash[HASH_LEN], const char *reason)
{
	uint64_t now = clock_real_ms();
	sqlite3_stmt *st;
	struct err e;

	/* First sighting: one error, first retry after the base delay; a
	 * block already in the table keeps its count and back-off. */
	st = db_prepare(r->d->db, "INSERT INTO resync_errors (hash, errors, last_try_ms, "
	    "next_try_ms, reason) VALUES (?1, 1, ?2, ?3, ?4) "
	    "ON CONFLICT (hash) DO UPDATE SET reason = ?4", &e);
	if (st == NULL) {
		log_err("%s", e.msg);
		return;
	}
	sqlite3_bind_blob(st, 1, hash, HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)now);
	sqlite3_bind_int64(st, 3, (int64_t)(now +
	    backoff_resync_ms(r->d->cfg.blocks.resync_retry_base_ms, 1)));
	sqlite3_bind_text(st, 4, reason, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		log_err("state.db: record block error: %s", sqlite3_errmsg(db_handle(r->d->db)));
	sqlite3_finalize(st);
	if (resync_enqueue(r, hash, now, &e) < 0)
		log_err("%s", e.msg);
}

void
resync_satisfied(struct resync *r, const uint8_t hash[HASH_LEN])
{
	struct err e;

	if (rs_exec_hash(r, DB_RESYNC_ERROR_DELETE, hash,
	    0, 0, &e) < 0)
		log_err("%s", e.msg);
	else if (sqlite3_changes(db_handle(r->d->db)) > 0) {
		char hex[HASH_HEX_LEN + 1];

		block_hex(hash, hex);
		log_info("block %s repaired", hex);
		/* Its item waits for a back-off that no longer applies: due
		 * now, its check finds the block healthy (or collectable). */
		if (resync_enqueue(r, hash, clock_real_ms(), &e) < 0)
			log_err("%s", e.msg);
	}
}

void
resync_forget(struct resync *r, const uint8_t hash[HASH_LEN])
{
	struct err e;

	if (rs_exec_hash(r, DB_RESYNC_ERROR_DELETE, hash,
	    0, 0, &e) < 0 ||
	    rs_exec_hash(r, DB_RESYNC_QUEUE_DELETE, hash,
	    0, 0, &e) < 0)
		log_err("%s", e.msg);
}

int
resync_retry_now(struct resync *r, const uint8_t *hash, struct err *e)
{
	uint64_t now = clock_real_ms();
	sqlite3_stmt *st;
	int n = 0;

	if (db_begin(r->d->db, e) < 0)
		return -1;
	st = db_prepare(r->d->db, hash ?
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
		if (rs_exec_hash(r, DB_RESYNC_ENQUEUE, h, (int64_t)now, 0, e) < 0) {
			sqlite3_finalize(st);
			goto fail;
		}
		n++;
	}
	sqlite3_finalize(st);
	if (db_commit(r->d->db, e) < 0)
		goto fail;
	if (r->timer != NULL)
		event_active(r->timer, EV_TIMEOUT, 0);
	return n;
fail:
	db_rollback(r->d->db);
	return -1;
}

/* ---- the item state machine ------------------------------------------ */

static void
rs_collect_done(void *arg, int result, const char *error)
{
	struct resync_item *it = arg;

	if (result < 0) {
		snprintf(it->reason, sizeof(it->reason), "%s", error);
		resync_item_enter(it, RS_FAILED);
		return;
	}
	if (result > 0) {
		char hex[HASH_HEX_LEN + 1];
		struct err e;

		/* Gone on purpose: nothing left to repair. */
		if (rs_exec_hash(it->r, DB_RESYNC_ERROR_DELETE, it->hash,
		    0, 0, &e) < 0)
			log_err("%s", e.msg);
		block_hex(it->hash, hex);
		log_info("block %s collected (unreferenced for %llu ms)", hex,
		    (unsigned long long)it->r->d->cfg.blocks.gc_delay_ms);
		it->r->collected++;
	}
	resync_item_enter(it, RS_DONE);
}

static void
rs_verify_done(void *arg, uint8_t *data, size_t len, enum block_status st,
    const char *error)
{
	struct resync_item *it = arg;

	(void)len;
	free(data);
	if (st == BLOCK_OK) {
		resync_satisfied(it->r, it->hash);
		resync_item_enter(it, RS_DONE);
		return;
	}
	snprintf(it->reason, sizeof(it->reason), "%s", st == BLOCK_CORRUPT ? "corrupt" :
	    st == BLOCK_MISSING ? "missing" : error);
	resync_item_enter(it, RS_FETCH);
}

/* The seam for fetching a block from peers.  With no peer configured
 * there is nothing to try and the attempt fails honestly. */
static void
resync_fetch(struct resync_item *it)
{
	snprintf(it->reason + strlen(it->reason), sizeof(it->reason) - strlen(it->reason),
	    "; no peer to fetch it from");
	resync_item_enter(it, RS_FAILED);
}

/* CHECK: decide from the block's row and its error entry. */
static enum resync_state
rs_check(struct resync_item *it)
{
	struct resync *r = it->r;
	uint64_t now = clock_real_ms();
	sqlite3_stmt *st;
	int64_t refs = -1, zero_since = 0, next_try = -1;

	st = db_stmt(r->d->db, DB_RESYNC_CHECK);
	sqlite3_bind_blob(st, 1, it->hash, HASH_LEN, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		refs = sqlite3_column_int64(st, 0);
		zero_since = sqlite3_column_int64(st, 1);
		next_try = sqlite3_column_type(st, 2) == SQLITE_NULL ? -1 :
		    sqlite3_column_int64(st, 2);
	}
	db_stmt_done(st);
	if (refs < 0) {
		resync_satisfied(r, it->hash);  /* no block, nothing to repair */
		return RS_DONE;
	}
	if (refs == 0) {
		uint64_t at = (uint64_t)zero_since + r->d->cfg.blocks.gc_delay_ms;

		if (at > now) {
			it->requeue_ms = at;
			return RS_REQUEUE;
		}
		return RS_COLLECT;
	}
	if (next_try < 0)
		return RS_DONE;                 /* referenced and not known bad */
	if ((uint64_t)next_try > now) {
		it->requeue_ms = (uint64_t)next_try;
		return RS_REQUEUE;
	}
	return RS_VERIFY;
}

/* FAILED: one more error; retry at last_try + base × 2^min(errors-1, 6). */
static enum resync_state
rs_failed(struct resync_item *it)
{
	struct resync *r = it->r;
	uint64_t now = clock_real_ms();
	sqlite3_stmt *st;
	struct err e;
	int64_t errors = 1;
	char hex[HASH_HEX_LEN + 1];

	st = db_prepare(r->d->db, "INSERT INTO resync_errors (hash, errors, last_try_ms, "
	    "next_try_ms, reason) VALUES (?1, 1, ?2, ?2, ?3) ON CONFLICT (hash) DO UPDATE SET "
	    "errors = errors + 1, last_try_ms = ?2, reason = ?3 RETURNING errors", &e);
	if (st != NULL) {
		sqlite3_bind_blob(st, 1, it->hash, HASH_LEN, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (int64_t)now);
		sqlite3_bind_text(st, 3, it->reason, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_ROW)
			errors = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	it->requeue_ms = now + backoff_resync_ms(r->d->cfg.blocks.resync_retry_base_ms,
	    (unsigned)errors);
	if (rs_exec_hash(r, DB_RESYNC_ERROR_NEXT_TRY,
	    it->hash, (int64_t)it->requeue_ms, 0, &e) < 0)
		log_err("%s", e.msg);
	r->failed++;
	block_hex(it->hash, hex);
	log_warn("resync of block %s failed (%s), error %lld; next try in %llu s", hex,
	    it->reason, (long long)errors,
	    (unsigned long long)((it->requeue_ms - now) / 1000));
	return RS_REQUEUE;
}

/* REQUEUE: the item's row moves to its new time in one statement.  A row
 * that moved meanwhile (an enqueue asked for an earlier time while this
 * item was in flight) is left where it is: it will be checked again. */
static enum resync_state
rs_requeue(struct resync_item *it)
{
	struct err e;

	if (rs_exec_hash(it->r, DB_RESYNC_QUEUE_MOVE, it->hash, (int64_t)it->due_ms,
	    (int64_t)it->requeue_ms, &e) < 0)
		log_err("%s", e.msg);
	return RS_DONE;
}

static void
rs_finish(struct resync_item *it)
{
	struct resync *r = it->r;
	struct err e;

	if (it->requeue_ms == 0 &&
	    rs_exec_hash(r, DB_RESYNC_QUEUE_DONE,
	    it->hash, (int64_t)it->due_ms, 0, &e) < 0)
		log_err("%s", e.msg);
	r->last_us = clock_mono_us() - it->started_us;
	r->done++;
	for (int i = 0; i < r->ninflight; i++) {
		if (r->inflight[i] == it) {
			r->inflight[i] = r->inflight[--r->ninflight];
			break;
		}
	}
	free(it);
	if (!r->stopping)
		event_active(r->timer, EV_TIMEOUT, 0);
}

/* The one place an item changes state: states that finish synchronously
 * return their successor; asynchronous ones continue from a callback. */
static void
resync_item_enter(struct resync_item *it, enum resync_state next)
{
	for (;;) {
		char hex[HASH_HEX_LEN + 1];

		block_hex(it->hash, hex);
		log_debug("resync %.16s: %s -> %s", hex, rs_names[it->state], rs_names[next]);
		it->state = next;
		switch (next) {
		case RS_CHECK:
			next = rs_check(it);
			continue;
		case RS_COLLECT:
			blockstore_collect(it->r->d->blocks, it->hash, clock_real_ms(),
			    rs_collect_done, it);
			return;
		case RS_VERIFY:
			blockstore_verify(it->r->d->blocks, it->hash, rs_verify_done, it);
			return;
		case RS_FETCH:
			resync_fetch(it);
			return;
		case RS_FAILED:
			next = rs_failed(it);
			continue;
		case RS_REQUEUE:
			next = rs_requeue(it);
			continue;
		case RS_DONE:
			rs_finish(it);
			return;
		}
	}
}

static int
rs_inflight(struct resync *r, const uint8_t hash[HASH_LEN])
{
	for (int i = 0; i < r->ninflight; i++)
		if (memcmp(r->inflight[i]->hash, hash, HASH_LEN) == 0)
			return 1;
	return 0;
}

/* Starts due items up to the in-flight limit, then sleeps until the next
 * due time (at most RESYNC_IDLE_MS, so items queued elsewhere are seen). */
static void
resync_pump(struct resync *r)
{
	uint64_t now = clock_real_ms(), next = now + RESYNC_IDLE_MS;
	sqlite3_stmt *st;
	struct timeval tv;
	struct err e;

	if (r->stopping || r->ninflight >= RESYNC_INFLIGHT)
		return;
	st = db_prepare(r->d->db, "SELECT hash, due_ms FROM resync_queue ORDER BY due_ms, hash "
	    "LIMIT ?", &e);
	if (st == NULL) {
		log_err("%s", e.msg);
		return;
	}
	sqlite3_bind_int(st, 1, RESYNC_BATCH);
	/* Bounded: an item that cannot leave the queue (database error) is
	 * not retried in a tight loop. */
	for (int tries = 0; tries < RESYNC_BATCH && r->ninflight < RESYNC_INFLIGHT &&
	    sqlite3_step(st) == SQLITE_ROW; tries++) {
		struct resync_item *it;
		uint64_t due = (uint64_t)sqlite3_column_int64(st, 1);

		if (due > now) {
			next = due < next ? due : next;
			break;
		}
		if (sqlite3_column_bytes(st, 0) != HASH_LEN ||
		    rs_inflight(r, sqlite3_column_blob(st, 0)))
			continue;
		if ((it = calloc(1, sizeof(*it))) == NULL)
			break;
		it->r = r;
		memcpy(it->hash, sqlite3_column_blob(st, 0), HASH_LEN);
		it->due_ms = due;
		it->started_us = clock_mono_us();
		r->inflight[r->ninflight++] = it;
		/* The statement is reset before the item touches the database. */
		sqlite3_reset(st);
		resync_item_enter(it, RS_CHECK);
	}
	sqlite3_finalize(st);
	if (r->ninflight > 0 && next > now + 50)
		next = now + 50;
	tv = clock_tv(next - now);
	evtimer_add(r->timer, &tv);
}

static void
resync_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	resync_pump(arg);
}

struct resync *
resync_new(struct farmd *d, struct err *e)
{
	struct resync *r = calloc(1, sizeof(*r));
	struct timeval now = { 0, 0 };

	if (r == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	r->d = d;
	r->timer = evtimer_new(d->base, resync_timer_cb, r);
	if (r->timer == NULL) {
		free(r);
		err_set(e, "cannot start the resync timer");
		return NULL;
	}
	evtimer_add(r->timer, &now);
	return r;
}

int
resync_quiesce(struct resync *r)
{
	r->stopping = 1;
	evtimer_del(r->timer);
	return r->ninflight == 0;
}

void
resync_free(struct resync *r)
{
	if (r == NULL)
		return;
	for (int i = 0; i < r->ninflight; i++)
		free(r->inflight[i]);
	event_free(r->timer);
	free(r);
}

static uint64_t
rs_count(struct resync *r, const char *sql)
{
	sqlite3_stmt *st = db_prepare(r->d->db, sql, NULL);
	uint64_t n = 0;

	if (st != NULL && sqlite3_step(st) == SQLITE_ROW)
		n = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

uint64_t
resync_queue_len(struct resync *r)
{
	return rs_count(r, "SELECT COUNT(*) FROM resync_queue");
}

uint64_t
resync_error_count(struct resync *r)
{
	return rs_count(r, "SELECT COUNT(*) FROM resync_errors");
}

void
resync_counters(const struct resync *r, uint64_t *done, uint64_t *failed,
    uint64_t *collected, uint64_t *last_us)
{
	*done = r->done;
	*failed = r->failed;
	*collected = r->collected;
	*last_us = r->last_us;
}

json_t *
resync_json_errors(struct resync *r)
{
	json_t *a = json_array();
	sqlite3_stmt *st = db_prepare(r->d->db, "SELECT hash, errors, last_try_ms, next_try_ms, "
	    "reason FROM resync_errors ORDER BY next_try_ms, hash", NULL);

	while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
		char hex[HASH_HEX_LEN + 1];

		if (sqlite3_column_bytes(st, 0) != HASH_LEN)
			continue;
		block_hex(sqlite3_column_blob(st, 0), hex);
		json_array_append_new(a, json_pack("{s:s, s:I, s:I, s:I, s:s}", "hash", hex,
		    "errors", (json_int_t)sqlite3_column_int64(st, 1),
		    "last_try_ms", (json_int_t)sqlite3_column_int64(st, 2),
		    "next_try_ms", (json_int_t)sqlite3_column_int64(st, 3),
		    "reason", (const char *)sqlite3_column_text(st, 4)));
	}
	sqlite3_finalize(st);
	return a;
}
