/*
 * history.c: ingest and the archiver (DESIGN §4, §9).
 *
 * The archiver is one state machine, one step in flight at a time:
 *
 *   RECOVER ─► NEXT ─► READ ─► VALIDATE ─► APPEND ─► CUT ─► STORE ─┐
 *      (rebuild    │ missing       │ bad parent      │   ▲          │
 *       partial)   ▼               ▼                 │   └──────────┘ more
 *                 WAIT ◄────── REJECTED              ▼
 *                  (ingest or retry timer wakes it)  COMMIT ─► NEXT
 *
 * Invariants:
 * - the checkpoint (meta history.archived), the start of the partial
 *   segment (history.buf_height, history.buf_offset), the new segments,
 *   their pieces' references and released chain blocks change in one
 *   transaction, after the pieces' bytes are durable; so a crash at any
 *   point re-processes from the checkpoint and produces the same segments
 *   (exactly-once effect);
 * - pieces are stored without a reference and referenced in that
 *   transaction, so re-processing never leaks a reference;
 * - the partial segment lives in memory and is rebuilt at start from the
 *   archived blocks it came from (they are kept until their bytes are
 *   inside committed segments).
 */
#include "history.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "blockstore.h"
#include "chain.pb-c.h"
#include "clock.h"
#include "config.h"
#include "db.h"
#include "farmd.h"
#include "fdio.h"
#include "frame.h"
#include "io.h"
#include "log.h"
#include "merkle.h"

#define HISTORY_RETRY_MS 1000
#define HISTORY_MAX_SUBS 8
#define HISTORY_RECORD_HDR 12           /* u64 height || u32 length */
#define HISTORY_MAX_WANTED 100

enum arch_state {
	AS_RECOVER, AS_NEXT, AS_READ, AS_VALIDATE, AS_APPEND, AS_CUT, AS_STORE,
	AS_COMMIT, AS_WAIT, AS_REJECTED,
};

static const char *const as_names[] = {
	[AS_RECOVER] = "recover", [AS_NEXT] = "next", [AS_READ] = "read",
	[AS_VALIDATE] = "validate", [AS_APPEND] = "append", [AS_CUT] = "cut",
	[AS_STORE] = "store", [AS_COMMIT] = "commit", [AS_WAIT] = "waiting",
	[AS_REJECTED] = "rejected",
};

/* A record in the partial segment buffer: start may be negative for the
 * first one (its head is in a committed segment). */
struct rec {
	uint64_t height;
	int64_t start;
	uint64_t len;                   /* whole record */
};

/* A cut segment waiting for the commit of the block that completed it. */
struct seg {
	uint64_t index;
	uint64_t last_height;
	uint8_t root[HASH_LEN];
	uint8_t header[HASH_LEN];
	uint8_t prev[HASH_LEN];
	uint8_t *piece_roots;           /* pps × 32 */
	uint8_t *piece_hashes;          /* pps × 32 */
	uint8_t *bytes;                 /* seg_size, until stored */
	uint32_t stored;                /* pieces stored so far */
	int failed;
	char err[ERR_MSG_MAX];
};

struct history {
	struct farmd *d;
	uint64_t piece_size;
	uint32_t pps;
	uint64_t seg_size;
	/* Persisted. */
	uint64_t archived;
	uint64_t buf_height, buf_offset;
	uint64_t released;              /* chain blocks released up to */
	uint64_t nsegments;
	uint8_t last_header[HASH_LEN];
	/* The partial segment. */
	uint8_t *buf;
	size_t buf_len, buf_cap;
	struct rec *recs;
	size_t nrecs, recs_cap;
	/* The block in hand. */
	enum arch_state state;
	uint64_t cur_h;
	uint8_t cur_hash[HASH_LEN];
	uint8_t *cur_data;
	size_t cur_len;
	uint8_t cur_parent[HASH_LEN];   /* hash of block cur_h - 1 */
	int cur_valid;                  /* set by validate_work */
	char cur_why[ERR_MSG_MAX];
	uint64_t recover_h;
	struct seg **segs;              /* cut, not yet committed */
	size_t nsegs;
	uint64_t release_upto;          /* chain blocks to release at commit */
	int inflight;
	int dirty;                      /* the block in hand changed the buffer */
	int stopping;
	char waiting[ERR_MSG_MAX];
	struct event *wake;
	uint64_t ingested, rejections;
	struct { history_segment_cb cb; void *arg; } subs[HISTORY_MAX_SUBS];
	int nsubs;
};

static void history_enter(struct history *h, enum arch_state next);

/* ---- persistence helpers -------------------------------------------- */

/* Hash of the history row at height, 1 found, 0 not, -1 error. */
static int
history_row(struct history *h, uint64_t height, uint8_t hash[HASH_LEN])
{
	sqlite3_stmt *st = db_prepare(h->d->db, "SELECT hash FROM history WHERE height = ?", NULL);
	int rc = -1;

	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, (int64_t)height);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == HASH_LEN) {
		memcpy(hash, sqlite3_column_blob(st, 0), HASH_LEN);
		rc = 1;
	} else {
		rc = rc == SQLITE_DONE ? 0 : -1;
	}
	sqlite3_finalize(st);
	return rc;
}

static int
history_rejected_hash(struct history *h, uint64_t height, const uint8_t hash[HASH_LEN])
{
	sqlite3_stmt *st = db_prepare(h->d->db, "SELECT 1 FROM history_rejections WHERE "
	    "height = ? AND hash = ?", NULL);
	int rc;

	if (st == NULL)
		return 0;
	sqlite3_bind_int64(st, 1, (int64_t)height);
	sqlite3_bind_blob(st, 2, hash, HASH_LEN, SQLITE_STATIC);
	rc = sqlite3_step(st) == SQLITE_ROW;
	sqlite3_finalize(st);
	return rc;
}

static void
history_kick(struct history *h)
{
	if (h->state == AS_WAIT && !h->stopping)
		event_active(h->wake, EV_TIMEOUT, 0);
}

static void
history_wait(struct history *h, uint64_t retry_ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
history_wait(struct history *h, uint64_t retry_ms, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(h->waiting, sizeof(h->waiting), fmt, ap);
	va_end(ap);
	if (retry_ms > 0) {
		struct timeval tv = clock_tv(retry_ms);

		evtimer_add(h->wake, &tv);
	}
}

/* ---- the partial segment -------------------------------------------- */

static int
buf_append(struct history *h, uint64_t height, const uint8_t *block, size_t len,
    uint64_t skip)
{
	uint8_t hdr[HISTORY_RECORD_HDR];
	uint64_t rlen = HISTORY_RECORD_HDR + len, add = rlen - skip;

	if (h->buf_len + add > h->buf_cap) {
		size_t cap = h->buf_cap ? h->buf_cap : h->seg_size;
		uint8_t *nb;

		while (cap < h->buf_len + add)
			cap *= 2;
		if ((nb = realloc(h->buf, cap)) == NULL)
			return -1;
		h->buf = nb;
		h->buf_cap = cap;
	}
	if (h->nrecs == h->recs_cap) {
		size_t cap = h->recs_cap ? h->recs_cap * 2 : 64;
		struct rec *nr = realloc(h->recs, cap * sizeof(*nr));

		if (nr == NULL)
			return -1;
		h->recs = nr;
		h->recs_cap = cap;
	}
	be64_put(hdr, height);
	be32_put(hdr + 8, (uint32_t)len);
	for (uint64_t i = skip; i < rlen; i++)
		h->buf[h->buf_len + i - skip] = i < HISTORY_RECORD_HDR ? hdr[i] :
		    block[i - HISTORY_RECORD_HDR];
	h->recs[h->nrecs].height = height;
	h->recs[h->nrecs].start = (int64_t)h->buf_len - (int64_t)skip;
	h->recs[h->nrecs].len = rlen;
	h->nrecs++;
	h->buf_len += add;
	return 0;
}

/* Drops the first n bytes (a cut segment): records wholly inside go
 * (and become releasable), the one holding byte n-1 is last_height. */
static void
buf_consume(struct history *h, uint64_t n, uint64_t *last_height)
{
	size_t drop = 0;

	for (size_t i = 0; i < h->nrecs; i++) {
		struct rec *r = &h->recs[i];

		if (r->start <= (int64_t)n - 1 && r->start + (int64_t)r->len > (int64_t)n - 1)
			*last_height = r->height;
		if (r->start + (int64_t)r->len <= (int64_t)n) {
			drop = i + 1;
			h->release_upto = r->height;
		}
	}
	memmove(h->recs, h->recs + drop, (h->nrecs - drop) * sizeof(*h->recs));
	h->nrecs -= drop;
	for (size_t i = 0; i < h->nrecs; i++)
		h->recs[i].start -= (int64_t)n;
	memmove(h->buf, h->buf + n, h->buf_len - n);
	h->buf_len -= n;
}

/* ---- RECOVER: rebuild the partial segment ---------------------------- */

static void
recover_read_done(void *arg, uint8_t *data, size_t len, enum block_status st, const char *error)
{
	struct history *h = arg;

	h->inflight--;
	if (error != NULL) {
		free(data);
		history_wait(h, HISTORY_RETRY_MS, "rebuilding the partial segment: block at height "
		    "%" PRIu64 ": %s", h->recover_h, error);
		h->state = AS_WAIT;
		(void)st;
		return;
	}
	if (buf_append(h, h->recover_h, data, len, h->recover_h == h->buf_height ?
	    h->buf_offset : 0) < 0) {
		free(data);
		history_wait(h, HISTORY_RETRY_MS, "out of memory");
		h->state = AS_WAIT;
		return;
	}
	free(data);
	h->recover_h++;
	if (!h->stopping)
		history_enter(h, AS_RECOVER);
}

static enum arch_state
history_recover(struct history *h)
{
	uint8_t hash[HASH_LEN];

	if (h->recover_h > h->archived)
		return AS_NEXT;
	if (history_row(h, h->recover_h, hash) != 1) {
		history_wait(h, HISTORY_RETRY_MS, "rebuilding the partial segment: no block "
		    "recorded at archived height %" PRIu64, h->recover_h);
		return AS_WAIT;
	}
	h->inflight++;
	blockstore_get(h->d->blocks, hash, recover_read_done, h);
	return AS_RECOVER;      /* continues from the callback */
}

/* Unpacks a block and checks that it belongs at height (and after the
 * block whose hash is parent, when given).  Pure, so it runs on the I/O
 * pool: a block may be as large as a frame.  Returns 0, or -1 with the
 * reason in why. */
static int
chain_check(const uint8_t *data, size_t len, uint64_t height, const uint8_t *parent,
    char *why, size_t whylen)
{
	struct frame_alloc fa;
	struct err e;
	Farmd__ChainBlock *b;
	char want[HASH_HEX_LEN + 1], got[HASH_HEX_LEN + 1];
	int rc = -1;

	b = (Farmd__ChainBlock *)frame_unpack(&farmd__chain_block__descriptor, data, len, &fa, &e);
	if (b == NULL) {
		snprintf(why, whylen, "its %zu bytes do not unpack as a ChainBlock", len);
		return -1;
	}
	if (b->height != height) {
		snprintf(why, whylen, "the block declares height %" PRIu64 ", not %" PRIu64,
		    b->height, height);
	} else if (b->parent_hash.len != HASH_LEN) {
		snprintf(why, whylen, "its parent hash is %zu bytes, not 32", b->parent_hash.len);
	} else if (parent != NULL && memcmp(b->parent_hash.data, parent, HASH_LEN) != 0) {
		hex_encode(parent, HASH_LEN, want);
		hex_encode(b->parent_hash.data, HASH_LEN, got);
		snprintf(why, whylen, "parent hash %s does not match the hash of block %" PRIu64
		    ", %s", got, height - 1, want);
	} else {
		rc = 0;
	}
	protobuf_c_message_free_unpacked(&b->base, &fa.pb);
	return rc;
}

/* ---- NEXT / READ / VALIDATE ------------------------------------------ */

static enum arch_state
history_next(struct history *h)
{
	int rc;

	h->cur_h = h->archived + 1;
	rc = history_row(h, h->cur_h, h->cur_hash);
	if (rc < 0) {
		history_wait(h, HISTORY_RETRY_MS, "state.db: cannot read height %" PRIu64, h->cur_h);
		return AS_WAIT;
	}
	if (rc == 0) {
		history_wait(h, 0, "waiting for the block at height %" PRIu64, h->cur_h);
		return AS_WAIT;
	}
	if (history_rejected_hash(h, h->cur_h, h->cur_hash)) {
		history_wait(h, 0, "block at height %" PRIu64 " was rejected; waiting for "
		    "another", h->cur_h);
		return AS_WAIT;
	}
	return AS_READ;
}

static void
read_done(void *arg, uint8_t *data, size_t len, enum block_status st, const char *error)
{
	struct history *h = arg;

	(void)st;
	h->inflight--;
	if (h->stopping) {
		free(data);
		return;
	}
	if (error != NULL) {
		free(data);
		history_wait(h, HISTORY_RETRY_MS, "block at height %" PRIu64 ": %s", h->cur_h, error);
		h->state = AS_WAIT;
		return;
	}
	h->cur_data = data;
	h->cur_len = len;
	history_enter(h, AS_VALIDATE);
}

static void
history_reject(struct history *h, const char *reason)
{
	sqlite3_stmt *st = db_prepare(h->d->db, "INSERT OR REPLACE INTO history_rejections "
	    "(height, hash, reason) VALUES (?, ?, ?)", NULL);

	if (st != NULL) {
		sqlite3_bind_int64(st, 1, (int64_t)h->cur_h);
		sqlite3_bind_blob(st, 2, h->cur_hash, HASH_LEN, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, reason, -1, SQLITE_STATIC);
		sqlite3_step(st);
		sqlite3_finalize(st);
	}
	h->rejections++;
	log_warn("archiver: block at height %" PRIu64 " rejected: %s", h->cur_h, reason);
	history_wait(h, 0, "block at height %" PRIu64 " rejected: %s", h->cur_h, reason);
}

static void
validate_work(void *arg)
{
	struct history *h = arg;

	/* The archiver is one step at a time: nothing on the loop touches
	 * the block in hand while this runs. */
	h->cur_valid = chain_check(h->cur_data, h->cur_len, h->cur_h, h->cur_parent,
	    h->cur_why, sizeof(h->cur_why)) == 0;
}

static void
validate_done(void *arg)
{
	struct history *h = arg;

	h->inflight--;
	if (h->stopping)
		return;
	if (!h->cur_valid) {
		history_reject(h, h->cur_why);
		free(h->cur_data);
		h->cur_data = NULL;
		history_enter(h, AS_REJECTED);
		return;
	}
	history_enter(h, AS_APPEND);
}

/* VALIDATE: the parent's hash comes from the database here; the block is
 * unpacked and checked on the I/O pool. */
static enum arch_state
history_validate(struct history *h)
{
	memset(h->cur_parent, 0, HASH_LEN);
	if (h->cur_h > 1 && history_row(h, h->cur_h - 1, h->cur_parent) != 1) {
		history_wait(h, HISTORY_RETRY_MS, "no block recorded at height %" PRIu64,
		    h->cur_h - 1);
		return AS_WAIT;
	}
	h->inflight++;
	if (io_submit(h->d->io, validate_work, validate_done, h) < 0) {
		h->inflight--;
		history_wait(h, HISTORY_RETRY_MS, "out of memory validating height %" PRIu64,
		    h->cur_h);
		return AS_WAIT;
	}
	return AS_VALIDATE;     /* continues from validate_done */
}

/* ---- APPEND / CUT / STORE -------------------------------------------- */

static enum arch_state
history_append(struct history *h)
{
	int rc;

	h->dirty = 1;
	rc = buf_append(h, h->cur_h, h->cur_data, h->cur_len, 0);

	free(h->cur_data);
	h->cur_data = NULL;
	if (rc < 0) {
		history_wait(h, HISTORY_RETRY_MS, "out of memory appending height %" PRIu64, h->cur_h);
		return AS_WAIT;
	}
	return h->buf_len >= h->seg_size ? AS_CUT : AS_COMMIT;
}

static void
seg_free(struct seg *s)
{
	if (s == NULL)
		return;
	free(s->piece_roots);
	free(s->piece_hashes);
	free(s->bytes);
	free(s);
}

struct cut_work {
	struct history *h;
	struct seg *s;
	uint64_t piece_size;
	uint32_t pps;
};

/* On the I/O pool: piece roots and the segment root. */
static void
cut_work(void *arg)
{
	struct cut_work *w = arg;

	for (uint32_t k = 0; k < w->pps; k++) {
		const uint8_t *p = w->s->bytes + (uint64_t)k * w->piece_size;

		merkle_root(p, w->piece_size / HASH_LEN, w->s->piece_roots + (size_t)k * HASH_LEN);
		/* The piece's name, so the commit can list it. */
		hash_sha256(p, w->piece_size, w->s->piece_hashes + (size_t)k * HASH_LEN);
	}
	merkle_root(w->s->piece_roots, w->pps, w->s->root);
}

static void
piece_stored(void *arg, const uint8_t hash[HASH_LEN], const char *error)
{
	struct history *h = arg;
	struct seg *s = h->segs[h->nsegs - 1];

	h->inflight--;
	if (error != NULL && !s->failed) {
		s->failed = 1;
		snprintf(s->err, sizeof(s->err), "%s", error);
	}
	s->stored++;
	(void)hash;
	if (s->stored < h->pps || h->stopping)
		return;
	free(s->bytes);
	s->bytes = NULL;
	if (s->failed) {
		/* Start this block over: its records and cuts are redone. */
		history_wait(h, HISTORY_RETRY_MS, "storing the pieces of segment %" PRIu64 ": %s",
		    s->index, s->err);
		h->state = AS_WAIT;
		return;
	}
	history_enter(h, h->buf_len >= h->seg_size ? AS_CUT : AS_COMMIT);
}

static void
cut_done(void *arg)
{
	struct cut_work *w = arg;
	struct history *h = w->h;
	struct seg *s = w->s;

	free(w);
	h->inflight--;
	if (h->stopping)
		return;
	merkle_segment_header_hash(s->index, s->root, s->prev, s->last_height, s->header);
	h->state = AS_STORE;
	for (uint32_t k = 0; k < h->pps; k++) {
		const uint8_t *p = s->bytes + (uint64_t)k * h->piece_size;

		h->inflight++;
		blockstore_store_mem(h->d->blocks, p, h->piece_size, 1, piece_stored, h);
	}
}

static enum arch_state
history_cut(struct history *h)
{
	struct seg *s = calloc(1, sizeof(*s)), **ns;
	struct cut_work *w = calloc(1, sizeof(*w));

	if (s == NULL || w == NULL ||
	    (s->piece_roots = malloc((size_t)h->pps * HASH_LEN)) == NULL ||
	    (s->piece_hashes = malloc((size_t)h->pps * HASH_LEN)) == NULL ||
	    (s->bytes = malloc(h->seg_size)) == NULL ||
	    (ns = realloc(h->segs, (h->nsegs + 1) * sizeof(*ns))) == NULL) {
		seg_free(s);
		free(w);
		history_wait(h, HISTORY_RETRY_MS, "out of memory cutting a segment");
		return AS_WAIT;
	}
	h->segs = ns;
	h->segs[h->nsegs++] = s;
	s->index = h->nsegments + h->nsegs - 1;
	memcpy(s->prev, h->nsegs > 1 ? h->segs[h->nsegs - 2]->header : h->last_header, HASH_LEN);
	memcpy(s->bytes, h->buf, h->seg_size);
	buf_consume(h, h->seg_size, &s->last_height);
	w->h = h;
	w->s = s;
	w->piece_size = h->piece_size;
	w->pps = h->pps;
	h->inflight++;
	if (io_submit(h->d->io, cut_work, cut_done, w) < 0) {
		h->inflight--;
		free(w);
		history_wait(h, HISTORY_RETRY_MS, "out of memory cutting a segment");
		return AS_WAIT;
	}
	return AS_CUT;          /* continues from cut_done */
}

/* ---- COMMIT ---------------------------------------------------------- */

static int
commit_segment(struct history *h, struct seg *s, struct err *e)
{
	sqlite3_stmt *st = db_prepare(h->d->db, "INSERT INTO segments (idx, root, "
	    "prev_header_hash, header_hash, last_height) VALUES (?, ?, ?, ?, ?)", e);

	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, (int64_t)s->index);
	sqlite3_bind_blob(st, 2, s->root, HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_blob(st, 3, s->prev, HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_blob(st, 4, s->header, HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, (int64_t)s->last_height);
	if (sqlite3_step(st) != SQLITE_DONE) {
		sqlite3_finalize(st);
		return err_set(e, "state.db: segment %" PRIu64 ": %s", s->index,
		    sqlite3_errmsg(db_handle(h->d->db)));
	}
	sqlite3_finalize(st);
	st = db_prepare(h->d->db, "INSERT INTO segment_pieces (segment, k, hash, root) "
	    "VALUES (?, ?, ?, ?)", e);
	if (st == NULL)
		return -1;
	for (uint32_t k = 0; k < h->pps; k++) {
		const uint8_t *ph = s->piece_hashes + (size_t)k * HASH_LEN;

		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, (int64_t)s->index);
		sqlite3_bind_int64(st, 2, k);
		sqlite3_bind_blob(st, 3, ph, HASH_LEN, SQLITE_STATIC);
		sqlite3_bind_blob(st, 4, s->piece_roots + (size_t)k * HASH_LEN, HASH_LEN,
		    SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE) {
			err_set(e, "segment %" PRIu64 " piece %u: cannot record: %s", s->index, k,
			    sqlite3_errmsg(db_handle(h->d->db)));
			sqlite3_finalize(st);
			return -1;
		}
		if (blockstore_incref(h->d->blocks, ph, e) < 0) {
			sqlite3_finalize(st);
			return err_wrap(e, "segment %" PRIu64 " piece %u", s->index, k);
		}
	}
	sqlite3_finalize(st);
	return 0;
}

/* Chain blocks whose bytes are now inside committed segments lose the
 * history's reference (keep_archived_blocks = false). */
static int
commit_release(struct history *h, struct err *e)
{
	for (uint64_t ht = h->released + 1; ht <= h->release_upto; ht++) {
		uint8_t hash[HASH_LEN];
		int64_t left;

		if (history_row(h, ht, hash) == 1 &&
		    blockstore_decref(h->d->blocks, hash, &left, e) < 0)
			return -1;
	}
	h->released = h->release_upto;
	return db_meta_set_u64(h->d->db, "history.released", h->released, e);
}

static enum arch_state
history_commit(struct history *h)
{
	uint64_t prev_released = h->released;
	uint64_t buf_height, buf_offset;
	struct err e = { "" };

	/* Where the partial segment now starts. */
	if (h->nrecs > 0) {
		buf_height = h->recs[0].height;
		buf_offset = (uint64_t)(-h->recs[0].start);
	} else {
		buf_height = h->cur_h + 1;
		buf_offset = 0;
	}
	{
		uint8_t now[HASH_LEN];

		/* Ingest refuses to replace the height in hand; check anyway
		 * that what we processed is still what the height records. */
		if (history_row(h, h->cur_h, now) != 1 || memcmp(now, h->cur_hash, HASH_LEN) != 0) {
			err_set(&e, "the block at height %" PRIu64 " changed while it was archived",
			    h->cur_h);
			goto fail;
		}
	}
	if (db_begin(h->d->db, &e) < 0)
		goto fail;
	for (size_t i = 0; i < h->nsegs; i++)
		if (commit_segment(h, h->segs[i], &e) < 0)
			goto rollback;
	if (!h->d->cfg.history.keep_archived_blocks && h->release_upto > h->released &&
	    commit_release(h, &e) < 0)
		goto rollback;
	if (db_meta_set_u64(h->d->db, "history.archived", h->cur_h, &e) < 0 ||
	    db_meta_set_u64(h->d->db, "history.buf_height", buf_height, &e) < 0 ||
	    db_meta_set_u64(h->d->db, "history.buf_offset", buf_offset, &e) < 0)
		goto rollback;
	{
		sqlite3_stmt *st = db_prepare(h->d->db, "DELETE FROM history_rejections WHERE "
		    "height <= ?", &e);

		if (st == NULL)
			goto rollback;
		sqlite3_bind_int64(st, 1, (int64_t)h->cur_h);
		sqlite3_step(st);
		sqlite3_finalize(st);
	}
	if (db_commit(h->d->db, &e) < 0)
		goto rollback;
	h->archived = h->cur_h;
	h->buf_height = buf_height;
	h->buf_offset = buf_offset;
	h->recover_h = h->archived + 1;         /* the buffer is whole */
	for (size_t i = 0; i < h->nsegs; i++) {
		struct seg *s = h->segs[i];

		h->nsegments++;
		memcpy(h->last_header, s->header, HASH_LEN);
		log_info("segment %" PRIu64 " archived (last height %" PRIu64 ")", s->index,
		    s->last_height);
		for (int k = 0; k < h->nsubs; k++)
			h->subs[k].cb(h->subs[k].arg, s->index, s->root);
		seg_free(s);
	}
	h->nsegs = 0;
	h->dirty = 0;
	h->waiting[0] = '\0';
	return AS_NEXT;
rollback:
	db_rollback(h->d->db);
	h->released = prev_released;
fail:
	history_wait(h, HISTORY_RETRY_MS, "commit of height %" PRIu64 " failed: %s", h->cur_h,
	    e.msg);
	return AS_WAIT;
}

/* The in-memory state of a block that did not commit is thrown away and
 * rebuilt from the checkpoint (the same path as after a crash). */
static void
history_reset_to_checkpoint(struct history *h)
{
	for (size_t i = 0; i < h->nsegs; i++)
		seg_free(h->segs[i]);
	h->nsegs = 0;
	free(h->cur_data);
	h->cur_data = NULL;
	h->buf_len = 0;
	h->nrecs = 0;
	h->release_upto = h->released;
	h->recover_h = h->buf_height;
	h->dirty = 0;
}

/* ---- the state machine ------------------------------------------------ */

static void
history_enter(struct history *h, enum arch_state next)
{
	for (;;) {
		if (next != h->state)
			log_debug("archiver: %s -> %s (height %" PRIu64 ")", as_names[h->state],
			    as_names[next], h->cur_h);
		h->state = next;
		switch (next) {
		case AS_RECOVER:
			next = history_recover(h);
			if (next == AS_RECOVER)
				return;
			continue;
		case AS_NEXT:
			next = history_next(h);
			continue;
		case AS_READ:
			h->inflight++;
			blockstore_get(h->d->blocks, h->cur_hash, read_done, h);
			return;
		case AS_VALIDATE:
			next = history_validate(h);
			if (next == AS_VALIDATE)
				return;
			continue;
		case AS_APPEND:
			next = history_append(h);
			continue;
		case AS_CUT:
			next = history_cut(h);
			if (next == AS_CUT)
				return;
			continue;
		case AS_STORE:
			return;
		case AS_COMMIT:
			next = history_commit(h);
			continue;
		case AS_REJECTED:
			h->state = AS_WAIT;
			return;
		case AS_WAIT:
			return;
		}
	}
}

/* WAIT ends here: a block that failed after changing the buffer starts
 * over from the checkpoint, a rebuild in progress continues, anything
 * else looks at the next height again. */
static void
history_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct history *h = arg;

	(void)fd;
	(void)what;
	if (h->stopping || h->state != AS_WAIT || h->inflight > 0)
		return;
	if (h->dirty) {
		history_reset_to_checkpoint(h);
		history_enter(h, AS_RECOVER);
	} else if (h->recover_h <= h->archived) {
		history_enter(h, AS_RECOVER);
	} else {
		history_enter(h, AS_NEXT);
	}
}

/* ---- ingest ---------------------------------------------------------- */

struct ingest {
	struct history *h;
	uint64_t height;
	int fd;
	char name[256];
	uint8_t *data;
	size_t len;
	uint8_t hash[HASH_LEN];
	char err[ERR_MSG_MAX];
	history_ingest_cb cb;
	void *arg;
};

static void
ingest_finish(struct ingest *in, const char *error, const char *text)
{
	in->cb(in->arg, error, text);
	free(in->data);
	free(in);
}

static void
ingest_read(void *arg)
{
	struct ingest *in = arg;
	struct stat st;
	ssize_t n;
	char why[ERR_MSG_MAX - 64];

	if (fstat(in->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(in->err, sizeof(in->err), "%s: not a regular file", in->name);
		goto done;
	}
	if ((uint64_t)st.st_size > in->h->d->cfg.daemon.max_frame) {
		snprintf(in->err, sizeof(in->err), "%s: %lld bytes is larger than a block may be "
		    "([daemon] max_frame)", in->name, (long long)st.st_size);
		goto done;
	}
	if ((in->data = malloc((size_t)st.st_size + 1)) == NULL) {
		snprintf(in->err, sizeof(in->err), "out of memory");
		goto done;
	}
	if ((n = fdio_pread_all(in->fd, in->data, (size_t)st.st_size, 0)) != (ssize_t)st.st_size) {
		snprintf(in->err, sizeof(in->err), "%s: read: %s", in->name,
		    n >= 0 ? "file shrank" : strerror(errno));
		goto done;
	}
	in->len = (size_t)n;
	hash_sha256(in->data, in->len, in->hash);
	if (chain_check(in->data, in->len, in->height, NULL, why, sizeof(why)) < 0)
		snprintf(in->err, sizeof(in->err), "%s: %s", in->name, why);
done:
	close(in->fd);
	in->fd = -1;
}

static void
ingest_stored(void *arg, const uint8_t hash[HASH_LEN], const char *error)
{
	struct ingest *in = arg;
	struct history *h = in->h;
	uint8_t old[HASH_LEN];
	char hex[HASH_HEX_LEN + 1], text[160];
	struct err e = { "" };
	sqlite3_stmt *st;
	int had;
	int64_t left;

	(void)left;

	(void)hash;
	if (error != NULL) {
		char msg[ERR_MSG_MAX];

		snprintf(msg, sizeof(msg), "%s: %s", in->name, error);
		ingest_finish(in, msg, NULL);
		return;
	}
	had = history_row(h, in->height, old);
	/* Decided again now: the archiver may have reached this height
	 * while the bytes were being stored. */
	if (had == 1 && memcmp(old, in->hash, HASH_LEN) != 0 && (in->height <= h->archived ||
	    (in->height == h->cur_h && h->state != AS_WAIT))) {
		char msg[ERR_MSG_MAX];

		hex_encode(old, HASH_LEN, hex);
		snprintf(msg, sizeof(msg), "%s: height %" PRIu64 " is %s with block %s; "
		    "refusing a different block", in->name, in->height,
		    in->height <= h->archived ? "archived" : "being archived", hex);
		ingest_finish(in, msg, NULL);
		return;
	}
	/* The bytes were stored without a reference: the history's reference
	 * is taken here, in the transaction that records the height, so a
	 * crash can neither lose nor double it. */
	if (db_begin(h->d->db, &e) < 0)
		goto fail;
	if (had != 1 || memcmp(old, in->hash, HASH_LEN) != 0) {
		if (had == 1 && blockstore_decref(h->d->blocks, old, &left, &e) < 0)
			goto rollback;
		if (blockstore_incref(h->d->blocks, in->hash, &e) < 0)
			goto rollback;
		st = db_prepare(h->d->db, "INSERT OR REPLACE INTO history (height, hash, size) "
		    "VALUES (?, ?, ?)", &e);
		if (st == NULL)
			goto rollback;
		sqlite3_bind_int64(st, 1, (int64_t)in->height);
		sqlite3_bind_blob(st, 2, in->hash, HASH_LEN, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (int64_t)in->len);
		if (sqlite3_step(st) != SQLITE_DONE) {
			sqlite3_finalize(st);
			err_set(&e, "state.db: record height: %s", sqlite3_errmsg(db_handle(h->d->db)));
			goto rollback;
		}
		sqlite3_finalize(st);
	}
	if (db_commit(h->d->db, &e) < 0)
		goto rollback;
	h->ingested++;
	hex_encode(in->hash, HASH_LEN, hex);
	snprintf(text, sizeof(text), "%" PRIu64 " %s%s\n", in->height, hex,
	    had == 1 && memcmp(old, in->hash, HASH_LEN) == 0 ? " (already ingested)" :
	    had == 1 ? " (replaced)" : "");
	ingest_finish(in, NULL, text);
	history_kick(h);
	return;
rollback:
	db_rollback(h->d->db);
fail:
	{
		char msg[ERR_MSG_MAX];

		/* Nothing references the stored bytes: GC takes them. */
		snprintf(msg, sizeof(msg), "%s: %s", in->name, e.msg);
		ingest_finish(in, msg, NULL);
	}
}

static void
ingest_parsed(void *arg)
{
	struct ingest *in = arg;
	struct history *h = in->h;
	uint8_t old[HASH_LEN];
	char msg[ERR_MSG_MAX], hex[HASH_HEX_LEN + 1];

	if (in->err[0]) {
		ingest_finish(in, in->err, NULL);
		return;
	}
	if (in->height <= h->archived || (in->height == h->cur_h && h->state != AS_WAIT)) {
		int rc = history_row(h, in->height, old);

		if (rc == 1 && memcmp(old, in->hash, HASH_LEN) == 0) {
			/* Re-ingest of an archived block: store it again, which
			 * repairs a damaged copy; the reference is unchanged. */
			blockstore_store_mem(h->d->blocks, in->data, in->len, 1, ingest_stored, in);
			return;
		}
		if (rc == 1)
			hex_encode(old, HASH_LEN, hex);
		else
			snprintf(hex, sizeof(hex), "?");
		snprintf(msg, sizeof(msg), "%s: height %" PRIu64 " is %s with block %s; "
		    "refusing a different block", in->name, in->height,
		    in->height <= h->archived ? "archived" : "being archived", hex);
		ingest_finish(in, msg, NULL);
		return;
	}
	blockstore_store_mem(h->d->blocks, in->data, in->len, 1, ingest_stored, in);
}

void
history_ingest_fd(struct history *h, uint64_t height, int fd, const char *name,
    history_ingest_cb cb, void *arg)
{
	struct ingest *in = calloc(1, sizeof(*in));

	if (in == NULL) {
		close(fd);
		cb(arg, "out of memory", NULL);
		return;
	}
	in->h = h;
	in->height = height;
	in->fd = fd;
	in->cb = cb;
	in->arg = arg;
	snprintf(in->name, sizeof(in->name), "%s", name);
	if (height == 0) {
		close(fd);
		ingest_finish(in, "heights start at 1", NULL);
		return;
	}
	if (io_submit(h->d->io, ingest_read, ingest_parsed, in) < 0) {
		close(fd);
		ingest_finish(in, "out of memory", NULL);
	}
}

/* ---- status ---------------------------------------------------------- */

json_t *
history_json_status(struct history *h)
{
	json_t *wanted = json_array(), *rejected = json_array();
	sqlite3_stmt *st;
	uint64_t expect = h->archived + 1, pending = 0;

	st = db_prepare(h->d->db, "SELECT height FROM history WHERE height > ? ORDER BY height", NULL);
	if (st != NULL) {
		sqlite3_bind_int64(st, 1, (int64_t)h->archived);
		while (sqlite3_step(st) == SQLITE_ROW) {
			uint64_t ht = (uint64_t)sqlite3_column_int64(st, 0);

			for (; expect < ht && json_array_size(wanted) < HISTORY_MAX_WANTED; expect++)
				json_array_append_new(wanted, json_integer((json_int_t)expect));
			expect = ht + 1;
			pending++;
		}
		sqlite3_finalize(st);
	}
	if (pending == 0)
		json_array_append_new(wanted, json_integer((json_int_t)(h->archived + 1)));
	st = db_prepare(h->d->db, "SELECT height, reason FROM history_rejections ORDER BY height", NULL);
	while (st != NULL && sqlite3_step(st) == SQLITE_ROW)
		json_array_append_new(rejected, json_pack("{s:I, s:s}", "height",
		    (json_int_t)sqlite3_column_int64(st, 0), "reason",
		    (const char *)sqlite3_column_text(st, 1)));
	sqlite3_finalize(st);
	return json_pack("{s:I, s:o, s:I, s:I, s:I, s:o, s:s, s:s, s:I, s:I}",
	    "archived_height", (json_int_t)h->archived, "wanted", wanted,
	    "pending", (json_int_t)pending, "history_size", (json_int_t)h->nsegments,
	    "segment_fill_bytes", (json_int_t)h->buf_len, "rejected", rejected,
	    "state", as_names[h->state], "waiting", h->waiting,
	    "piece_size", (json_int_t)h->piece_size, "pieces_per_segment", (json_int_t)h->pps);
}

json_t *
history_json_segments(struct history *h)
{
	json_t *a = json_array(), *seg = NULL;
	sqlite3_stmt *st = db_prepare(h->d->db, "SELECT s.idx, s.root, s.prev_header_hash, "
	    "s.header_hash, s.last_height, p.hash FROM segments s JOIN segment_pieces p "
	    "ON p.segment = s.idx ORDER BY s.idx, p.k", NULL);
	int64_t cur = -1;

	while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
		char hx[4][HASH_HEX_LEN + 1];
		int64_t idx = sqlite3_column_int64(st, 0);

		hex_encode(sqlite3_column_blob(st, 5), HASH_LEN, hx[3]);
		if (idx != cur) {
			hex_encode(sqlite3_column_blob(st, 1), HASH_LEN, hx[0]);
			hex_encode(sqlite3_column_blob(st, 2), HASH_LEN, hx[1]);
			hex_encode(sqlite3_column_blob(st, 3), HASH_LEN, hx[2]);
			seg = json_pack("{s:I, s:s, s:s, s:s, s:I, s:[]}", "index", (json_int_t)idx,
			    "root", hx[0], "prev_header_hash", hx[1], "header_hash", hx[2],
			    "last_height", (json_int_t)sqlite3_column_int64(st, 4), "pieces");
			json_array_append_new(a, seg);
			cur = idx;
		}
		json_array_append_new(json_object_get(seg, "pieces"), json_string(hx[3]));
	}
	sqlite3_finalize(st);
	return a;
}

uint64_t
history_archived_height(const struct history *h)
{
	return h->archived;
}

uint64_t
history_size(const struct history *h)
{
	return h->nsegments;
}

void
history_counters(const struct history *h, uint64_t *ingested, uint64_t *rejections)
{
	*ingested = h->ingested;
	*rejections = h->rejections;
}

int
history_subscribe(struct history *h, history_segment_cb cb, void *arg)
{
	if (h->nsubs == HISTORY_MAX_SUBS)
		return -1;
	h->subs[h->nsubs].cb = cb;
	h->subs[h->nsubs].arg = arg;
	h->nsubs++;
	return 0;
}

/* ---- lifecycle ------------------------------------------------------- */

/* Geometry is fixed when the state dir is created. */
static int
history_geometry(struct history *h, int *config_error, struct err *e)
{
	const struct config *c = &h->d->cfg;
	uint64_t ps = db_meta_get_u64(h->d->db, "history.piece_size", 0);
	uint64_t pps = db_meta_get_u64(h->d->db, "history.pieces_per_segment", 0);

	if (ps == 0) {
		if (db_begin(h->d->db, e) < 0 ||
		    db_meta_set_u64(h->d->db, "history.piece_size", c->history.piece_size, e) < 0 ||
		    db_meta_set_u64(h->d->db, "history.pieces_per_segment", c->history.pieces_per_segment, e) < 0 ||
		    db_commit(h->d->db, e) < 0) {
			db_rollback(h->d->db);
			return -1;
		}
		ps = c->history.piece_size;
		pps = c->history.pieces_per_segment;
	}
	if (ps != c->history.piece_size || pps != c->history.pieces_per_segment) {
		*config_error = 1;
		return err_set(e, "the state dir %s was created with [history] piece_size = %" PRIu64
		    " and pieces_per_segment = %" PRIu64 "; the configuration says %" PRIu64
		    " and %" PRIu32 "; history geometry cannot change", h->d->state_dir, ps, pps,
		    c->history.piece_size, c->history.pieces_per_segment);
	}
	h->piece_size = ps;
	h->pps = (uint32_t)pps;
	h->seg_size = ps * pps;
	return 0;
}

struct history *
history_new(struct farmd *d, int *config_error, struct err *e)
{
	struct history *h = calloc(1, sizeof(*h));
	sqlite3_stmt *st;

	*config_error = 0;
	if (h == NULL || (h->wake = evtimer_new(d->base, history_wake_cb, h)) == NULL) {
		free(h);
		err_set(e, "out of memory");
		return NULL;
	}
	h->d = d;
	if (history_geometry(h, config_error, e) < 0) {
		history_free(h);
		return NULL;
	}
	h->archived = db_meta_get_u64(h->d->db, "history.archived", 0);
	h->buf_height = db_meta_get_u64(h->d->db, "history.buf_height", 1);
	h->buf_offset = db_meta_get_u64(h->d->db, "history.buf_offset", 0);
	h->released = db_meta_get_u64(h->d->db, "history.released", 0);
	h->release_upto = h->released;
	st = db_prepare(d->db, "SELECT COUNT(*), (SELECT header_hash FROM segments ORDER BY idx "
	    "DESC LIMIT 1) FROM segments", e);
	if (st == NULL) {
		history_free(h);
		return NULL;
	}
	if (sqlite3_step(st) == SQLITE_ROW) {
		h->nsegments = (uint64_t)sqlite3_column_int64(st, 0);
		if (sqlite3_column_bytes(st, 1) == HASH_LEN)
			memcpy(h->last_header, sqlite3_column_blob(st, 1), HASH_LEN);
	}
	sqlite3_finalize(st);
	h->recover_h = h->buf_height;
	h->state = AS_WAIT;
	if (h->archived > 0)
		log_info("history: checkpoint at height %" PRIu64 ", %" PRIu64 " segments",
		    h->archived, h->nsegments);
	history_enter(h, AS_RECOVER);
	return h;
}

int
history_quiesce(struct history *h)
{
	h->stopping = 1;
	evtimer_del(h->wake);
	return h->inflight == 0;
}

void
history_free(struct history *h)
{
	if (h == NULL)
		return;
	for (size_t i = 0; i < h->nsegs; i++)
		seg_free(h->segs[i]);
	free(h->segs);
	free(h->cur_data);
	free(h->buf);
	free(h->recs);
	if (h->wake != NULL)
		event_free(h->wake);
	free(h);
}
