/*
 * sector.c: the sectors table (DESIGN §6).
 *
 * Invariants:
 *  - A row says 'plotting' (checksum NULL) from before the first byte of
 *    its range is written until the fdatasync that ends the rewrite has
 *    returned; only then does a commit give it a checksum (sjob.c drives
 *    this through sector_move).  So after a crash every row with a
 *    checksum describes bytes that are on disk.
 *  - f->count[] mirrors the table: every single-sector state change goes
 *    through sector_move(); bulk updates adjust count[] by what they
 *    changed, or recount.
 *
 * The queries that walk many rows go through indexes: the partial index
 * of sectors whose expiry is unknown, (farm, state, expires_at) for the
 * queue and the expiry moves, and the primary key for the scrub.
 */
#include "sector.h"

#include <inttypes.h>
#include <string.h>

#include <sqlite3.h>

#include "clock.h"
#include "db.h"
#include "encode_v1.h"
#include "expiry_v1.h"
#include "farmd.h"
#include "farmdir.h"
#include "log.h"
#include "plot_int.h"

const char *const sector_names[SECTOR_NSTATES] = {
	"empty", "plotting", "plotted", "about_to_expire", "expired",
};

int
sector_recount(struct plot *p, struct farm *f, struct err *e)
{
	sqlite3_stmt *st = db_prepare(p->d->db,
	    "SELECT state, COUNT(*) FROM sectors WHERE farm = ? GROUP BY state", e);
	int rc;

	if (st == NULL)
		return -1;
	memset(f->count, 0, sizeof(f->count));
	sqlite3_bind_int64(st, 1, f->id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *s = (const char *)sqlite3_column_text(st, 0);

		for (int k = 0; k < SECTOR_NSTATES; k++)
			if (s != NULL && strcmp(s, sector_names[k]) == 0)
				f->count[k] = (uint64_t)sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : err_set(e, "sectors of farm %" PRIu32 ": %s", f->id,
	    sqlite3_errmsg(db_handle(p->d->db)));
}

static int
sector_state_parse(const char *s)
{
	for (int k = 0; k < SECTOR_NSTATES; k++)
		if (s != NULL && strcmp(s, sector_names[k]) == 0)
			return k;
	return -1;
}

int
sector_get(struct plot *p, struct farm *f, uint32_t idx, struct sector_row *r,
    struct err *e)
{
	sqlite3_stmt *st = db_stmt(p->d->db, DB_SECTOR_GET);

	sqlite3_bind_int64(st, 1, f->id);
	sqlite3_bind_int64(st, 2, idx);
	if (sqlite3_step(st) != SQLITE_ROW) {
		db_stmt_done(st);
		return err_set(e, "farm %" PRIu32 " has no sector %" PRIu32, f->id, idx);
	}
	r->state = sector_state_parse((const char *)sqlite3_column_text(st, 0));
	r->history_size = (uint64_t)sqlite3_column_int64(st, 1);
	r->have_checksum = sqlite3_column_bytes(st, 2) == HASH_LEN;
	if (r->have_checksum)
		memcpy(r->checksum, sqlite3_column_blob(st, 2), HASH_LEN);
	r->expires_at = sqlite3_column_type(st, 3) == SQLITE_NULL ? -1 :
	    sqlite3_column_int64(st, 3);
	db_stmt_done(st);
	return r->state < 0 ? err_set(e, "sector %" PRIu32 "/%" PRIu32 ": bad state", f->id,
	    idx) : 0;
}

/* The one place a single sector's state changes. */
int
sector_move(struct plot *p, struct farm *f, uint32_t idx, int to, uint64_t history_size,
    const uint8_t *checksum, int64_t expires_at, int plotted_at, struct err *e)
{
	struct sector_row old;
	sqlite3_stmt *st;
	uint64_t now = clock_real_ms();
	int rc;

	if (sector_get(p, f, idx, &old, e) < 0)
		return -1;
	st = db_stmt(p->d->db, DB_SECTOR_MOVE);
	sqlite3_bind_text(st, 1, sector_names[to], -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)history_size);
	if (checksum != NULL)
		sqlite3_bind_blob(st, 3, checksum, HASH_LEN, SQLITE_STATIC);
	if (expires_at >= 0)
		sqlite3_bind_int64(st, 4, expires_at);
	sqlite3_bind_int(st, 5, plotted_at != SECTOR_AT_KEEP);
	if (plotted_at == SECTOR_AT_CLEAR)
		sqlite3_bind_null(st, 6);
	else
		sqlite3_bind_int64(st, 6, (int64_t)now);
	sqlite3_bind_int64(st, 7, (int64_t)now);
	sqlite3_bind_int64(st, 8, f->id);
	sqlite3_bind_int64(st, 9, idx);
	rc = sqlite3_step(st);
	db_stmt_done(st);
	if (rc != SQLITE_DONE)
		return err_set(e, "sector %" PRIu32 "/%" PRIu32 ": %s", f->id, idx,
		    sqlite3_errmsg(db_handle(p->d->db)));
	f->count[old.state]--;
	f->count[to]++;
	return 0;
}

void
sector_mark_damaged(struct plot *p, struct farm *f, uint32_t idx,
    const struct sector_row *r, const char *why)
{
	struct err e;

	if (sector_move(p, f, idx, SECTOR_EXPIRED, r->history_size, NULL, r->expires_at,
	    SECTOR_AT_KEEP, &e) < 0) {
		log_err("sector %" PRIu32 "/%" PRIu32 ": %s (and cannot mark it: %s)", f->id, idx,
		    why, e.msg);
		return;
	}
	log_warn("sector %" PRIu32 "/%" PRIu32 ": %s; marked expired for replotting", f->id,
	    idx, why);
	plot_kick(p);
}

int
sector_piece(struct plot *p, const struct farm *f, const uint8_t sector_id[HASH_LEN],
    uint64_t history_size, uint32_t offset, uint64_t *index, uint8_t hash[HASH_LEN],
    uint8_t root[HASH_LEN], struct err *e)
{
	uint64_t pi = encode_v1_piece_index(sector_id, offset, history_size,
	    f->g.pieces_per_segment, f->g.recent_segments, f->g.recent_history_fraction);
	/* Prepared once (db.c): this runs for every piece plotted. */
	sqlite3_stmt *st = db_stmt(p->d->db, DB_SEGMENT_PIECE);
	int ok;

	*index = pi;
	sqlite3_bind_int64(st, 1, (int64_t)(pi / f->g.pieces_per_segment));
	sqlite3_bind_int64(st, 2, (int64_t)(pi % f->g.pieces_per_segment));
	ok = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == HASH_LEN &&
	    sqlite3_column_bytes(st, 1) == HASH_LEN;
	if (ok) {
		memcpy(hash, sqlite3_column_blob(st, 0), HASH_LEN);
		memcpy(root, sqlite3_column_blob(st, 1), HASH_LEN);
	}
	db_stmt_done(st);
	return ok ? 0 : err_set(e, "piece %" PRIu64 " is not in segment_pieces", pi);
}

/* The segment whose root decides an expiry. */
static int
segment_root(struct plot *p, uint64_t index, uint8_t root[HASH_LEN], struct err *e)
{
	sqlite3_stmt *st = db_prepare(p->d->db, "SELECT root FROM segments WHERE idx = ?", e);
	int ok;

	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, (int64_t)index);
	ok = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == HASH_LEN;
	if (ok)
		memcpy(root, sqlite3_column_blob(st, 0), HASH_LEN);
	sqlite3_finalize(st);
	return ok ? 0 : err_set(e, "segment %" PRIu64 " is not archived", index);
}

int64_t
sector_expiry(struct plot *p, struct farm *f, uint32_t idx, uint64_t hs, uint64_t now,
    struct err *e)
{
	uint64_t check = expiry_v1_check(hs, f->g.min_sector_lifetime);
	uint8_t sid[HASH_LEN], root[HASH_LEN];

	if (now < check)
		return -1;
	if (segment_root(p, check - 1, root, e) < 0)
		return -2;
	encode_v1_sector_id(f->pkh, idx, hs, sid);
	return (int64_t)expiry_v1_expires_at(sid, hs, f->g.min_sector_lifetime, root);
}

int
sector_state_for(int64_t expires_at, uint64_t now)
{
	if (expires_at < 0)
		return SECTOR_PLOTTED;
	if (expiry_v1_expired((uint64_t)expires_at, now))
		return SECTOR_EXPIRED;
	if (expiry_v1_about_to_expire((uint64_t)expires_at, now))
		return SECTOR_ABOUT_TO_EXPIRE;
	return SECTOR_PLOTTED;
}

int
sector_create(struct plot *p, struct farm *f, uint64_t now_ms, struct err *e)
{
	sqlite3_stmt *st = db_prepare(p->d->db, "INSERT INTO sectors (farm, idx, state, pieces, "
	    "format, updated_ms) VALUES (?, ?, 'empty', ?, ?, ?)", e);

	if (st == NULL)
		return -1;
	for (uint32_t i = 0; i < f->g.sectors; i++) {
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, f->id);
		sqlite3_bind_int64(st, 2, i);
		sqlite3_bind_int64(st, 3, f->g.pieces_in_sector);
		sqlite3_bind_int64(st, 4, FARMDIR_FORMAT_V1);
		sqlite3_bind_int64(st, 5, (int64_t)now_ms);
		if (sqlite3_step(st) != SQLITE_DONE) {
			err_set(e, "farms: %s", sqlite3_errmsg(db_handle(p->d->db)));
			sqlite3_finalize(st);
			return -1;
		}
	}
	sqlite3_finalize(st);
	return 0;
}

/* Run once for each sector the scheduler starts, on every pump: the
 * persistent statement (db.h), reset before the caller starts the
 * sector, since starting one writes its row and a read must not be open
 * across a write. */
int
sector_queue_first(struct plot *p, struct farm *f, int state, uint32_t limit,
    int (*busy)(struct plot *, const struct farm *, uint32_t), uint32_t *idx,
    struct err *e)
{
	sqlite3_stmt *st = db_stmt(p->d->db, DB_SECTOR_QUEUE_FIRST);
	int found = 0, rc = SQLITE_DONE;

	sqlite3_bind_int64(st, 1, f->id);
	sqlite3_bind_text(st, 2, sector_names[state], -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (int64_t)limit);
	while (!found && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		*idx = (uint32_t)sqlite3_column_int64(st, 0);
		found = !busy(p, f, *idx);
	}
	if (!found && rc != SQLITE_DONE)
		found = err_set(e, "sectors of farm %" PRIu32 ": %s", f->id,
		    sqlite3_errmsg(db_handle(p->d->db)));
	db_stmt_done(st);
	return found;
}

/* Collected first: updating expires_at moves rows within the index the
 * query walks. */
int
sector_unknown_expiry(struct plot *p, struct farm *f, uint64_t max_hs,
    struct sector_hs *todo, int max, struct err *e)
{
	sqlite3_stmt *st = db_prepare(p->d->db, "SELECT idx, history_size FROM sectors WHERE "
	    "farm = ? AND state = 'plotted' AND expires_at IS NULL AND history_size <= ? "
	    "LIMIT ?", e);
	int n = 0, rc;

	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, f->id);
	sqlite3_bind_int64(st, 2, (int64_t)max_hs);
	sqlite3_bind_int(st, 3, max);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		todo[n].idx = (uint32_t)sqlite3_column_int64(st, 0);
		todo[n++].hs = (uint64_t)sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return err_set(e, "expiry check: %s", sqlite3_errmsg(db_handle(p->d->db)));
	return n;
}

int
sector_set_expiry(struct plot *p, struct farm *f, const struct sector_hs *todo, int n,
    struct err *e)
{
	sqlite3_stmt *st = db_prepare(p->d->db, "UPDATE sectors SET expires_at = ? WHERE "
	    "farm = ? AND idx = ?", e);

	if (st == NULL)
		return -1;
	for (int i = 0; i < n; i++) {
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, todo[i].expires_at);
		sqlite3_bind_int64(st, 2, f->id);
		sqlite3_bind_int64(st, 3, todo[i].idx);
		if (sqlite3_step(st) != SQLITE_DONE) {
			sqlite3_finalize(st);
			return err_set(e, "expiry check: %s", sqlite3_errmsg(db_handle(p->d->db)));
		}
	}
	sqlite3_finalize(st);
	return 0;
}

/* Bulk: count[] follows by the number of rows changed. */
int
sector_move_due(struct plot *p, struct farm *f, int from, int to, uint64_t limit,
    int max, struct err *e)
{
	sqlite3_stmt *st = db_prepare(p->d->db, "UPDATE sectors SET state = ?, updated_ms = ? "
	    "WHERE (farm, idx) IN (SELECT farm, idx FROM sectors WHERE farm = ? AND state = ? "
	    "AND expires_at <= ? LIMIT ?)", e);
	int n;

	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, sector_names[to], -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)clock_real_ms());
	sqlite3_bind_int64(st, 3, f->id);
	sqlite3_bind_text(st, 4, sector_names[from], -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, (int64_t)limit);
	sqlite3_bind_int(st, 6, max);
	if (sqlite3_step(st) != SQLITE_DONE) {
		sqlite3_finalize(st);
		return err_set(e, "expiry check: %s", sqlite3_errmsg(db_handle(p->d->db)));
	}
	sqlite3_finalize(st);
	n = sqlite3_changes(db_handle(p->d->db));
	f->count[from] -= (uint64_t)n;
	f->count[to] += (uint64_t)n;
	return n;
}

static json_t *
sector_int_or_null(int null, int64_t v)
{
	return null ? json_null() : json_integer(v);
}

json_t *
sector_json(struct plot *p, const struct farm *only, struct err *e)
{
	sqlite3_stmt *st;
	json_t *a;
	int rc;

	st = db_prepare(p->d->db, "SELECT farm, idx, state, history_size, checksum, expires_at, "
	    "plotted_at_ms FROM sectors WHERE ? < 0 OR farm = ? ORDER BY farm, idx", e);
	if (st == NULL)
		return NULL;
	sqlite3_bind_int64(st, 1, only ? 0 : -1);
	sqlite3_bind_int64(st, 2, only ? only->id : 0);
	a = json_array();
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		char hex[HASH_HEX_LEN + 1];
		int has = sqlite3_column_bytes(st, 4) == HASH_LEN;

		if (has)
			hex_encode(sqlite3_column_blob(st, 4), HASH_LEN, hex);
		json_array_append_new(a, json_pack("{s:I, s:I, s:s, s:o, s:o, s:o, s:o}",
		    "farm", (json_int_t)sqlite3_column_int64(st, 0),
		    "index", (json_int_t)sqlite3_column_int64(st, 1),
		    "state", (const char *)sqlite3_column_text(st, 2),
		    "history_size", sector_int_or_null(sqlite3_column_type(st, 3) == SQLITE_NULL,
		    sqlite3_column_int64(st, 3)),
		    "checksum", has ? json_string(hex) : json_null(),
		    "expires_at", sector_int_or_null(sqlite3_column_type(st, 5) == SQLITE_NULL,
		    sqlite3_column_int64(st, 5)),
		    "plotted_at", sector_int_or_null(sqlite3_column_type(st, 6) == SQLITE_NULL,
		    sqlite3_column_int64(st, 6))));
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		json_decref(a);
		err_set(e, "sectors: %s", sqlite3_errmsg(db_handle(p->d->db)));
		return NULL;
	}
	return a;
}

/* A row-value comparison, so the primary key is searched, not scanned:
 * a scrub is n lookups, not n scans. */
int
sector_next_plotted(struct plot *p, int have, uint32_t farm, uint32_t idx,
    uint32_t *nfarm, uint32_t *nidx, struct err *e)
{
	sqlite3_stmt *st = db_prepare(p->d->db, "SELECT farm, idx FROM sectors WHERE "
	    "(farm, idx) > (?, ?) AND checksum IS NOT NULL ORDER BY farm, idx LIMIT 1", e);
	int found, rc;

	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, have ? (int64_t)farm : -1);
	sqlite3_bind_int64(st, 2, have ? (int64_t)idx : -1);
	rc = sqlite3_step(st);
	found = rc == SQLITE_ROW;
	if (found) {
		*nfarm = (uint32_t)sqlite3_column_int64(st, 0);
		*nidx = (uint32_t)sqlite3_column_int64(st, 1);
	} else if (rc != SQLITE_DONE) {
		err_set(e, "%s", sqlite3_errmsg(db_handle(p->d->db)));
		found = -1;
	}
	sqlite3_finalize(st);
	return found;
}
