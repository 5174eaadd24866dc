/*
 * archive.c: the archiver (DESIGN §4, §9).
 *
 * One state machine on the fsm runner, one step in flight at a time:
 *
 *   RECOVER ─► NEXT ─► READ ─► VALIDATE ─► EXECUTE ─► UPGRADE ─► APPEND ─► CUT ─► STORE ─┐
 *      (rebuild    │ missing       │ bad parent │ invalid  │ its code   │   ▲          │
 *       partial)   ▼               ▼            ▼          ▼ fails      │   └──────────┘ more
 *                 WAIT ◄────── REJECTED ◄───────┴──────────┘            ▼
 *                  (ingest wakes it)                                    COMMIT ─► NEXT
 *
 *   EXECUTE runs validate(block) of the code in force at the height (the
 *   latest history_code row at or below it; none: the block is archived
 *   unvalidated); UPGRADE prepares the code the block itself carries and
 *   records it in force from the next height (history_code), or removes a
 *   row a block processed before a crash left there.  Both go to ERROR on
 *   a transient failure (a worker, the disk), so the height is tried again.
 *
 *   any step that fails (a read, the database, memory) ─► ERROR, which
 *   arms the retry timer; ingest or the timer wakes it.  Waking from WAIT
 *   or ERROR starts a block that had changed the buffer over from the
 *   checkpoint, continues a rebuild, or looks at the next height again.
 *
 * Invariants:
 * - fsm_enter is the only writer of the state; status shows as_public
 *   (ERROR as "waiting", as it did when the two were one state), with
 *   the cause in h->waiting;
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
#include "archive.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "artifact.h"
#include "blockstore.h"
#include "chain.pb-c.h"
#include "clock.h"
#include "config.h"
#include "db.h"
#include "farmd.h"
#include "frame.h"
#include "io.h"
#include "log.h"
#include "merkle.h"

#define HISTORY_RETRY_MS 1000
#define HISTORY_RECORD_HDR 12           /* u64 height || u32 length */

static int archive_recover(void *obj);
static int archive_next(void *obj);
static int archive_read(void *obj);
static int archive_validate(void *obj);
static int archive_execute(void *obj);
static int archive_upgrade(void *obj);
static int archive_append(void *obj);
static int archive_cut(void *obj);
static int archive_store(void *obj);
static int archive_commit(void *obj);
static int archive_rejected(void *obj);
static int archive_error(void *obj);
static void archive_label(const void *obj, char *buf, size_t len);

static const struct fsm_state as_states[AS_NSTATES] = {
	[AS_RECOVER] =  { "recover", archive_recover },   /* one archived block a step */
	[AS_NEXT] =     { "next", archive_next },
	[AS_READ] =     { "read", archive_read },         /* until read_done */
	[AS_VALIDATE] = { "validate", archive_validate }, /* until validate_done */
	[AS_EXECUTE] =  { "execute", archive_execute },   /* until execute_done */
	[AS_UPGRADE] =  { "upgrade", archive_upgrade },   /* until upgrade_done */
	[AS_APPEND] =   { "append", archive_append },
	[AS_CUT] =      { "cut", archive_cut },           /* until cut_done */
	[AS_STORE] =    { "store", archive_store },       /* until piece_stored */
	[AS_COMMIT] =   { "commit", archive_commit },
	[AS_WAIT] =     { "wait", NULL },                 /* until ingest */
	[AS_REJECTED] = { "rejected", archive_rejected },
	[AS_ERROR] =    { "error", archive_error },       /* until the retry timer */
};

static const struct fsm_def as_def = {
	.name = "archiver", .states = as_states, .nstates = AS_NSTATES,
	.error = AS_ERROR, .final = -1, .label = archive_label,
};

/* What status shows (unchanged names). */
static const char *const as_public[AS_NSTATES] = {
	[AS_RECOVER] = "recover", [AS_NEXT] = "next", [AS_READ] = "read",
	[AS_VALIDATE] = "validate", [AS_EXECUTE] = "validate", [AS_UPGRADE] = "validate",
	[AS_APPEND] = "append", [AS_CUT] = "cut",
	[AS_STORE] = "store", [AS_COMMIT] = "commit", [AS_WAIT] = "waiting",
	[AS_REJECTED] = "rejected", [AS_ERROR] = "waiting",
};

static void
archive_label(const void *obj, char *buf, size_t len)
{
	const struct history *h = obj;

	snprintf(buf, len, "archiver (height %" PRIu64 ")", h->cur_h);
}

/* WAIT or ERROR: the block in hand, if any, is not being worked on. */
static int
archive_resting(const struct history *h)
{
	return h->m.state == AS_WAIT || h->m.state == AS_ERROR;
}

/* ---- persistence helpers -------------------------------------------- */

/* Hash of the history row at height, 1 found, 0 not, -1 error. */
int
archive_row(struct history *h, uint64_t height, uint8_t hash[HASH_LEN])
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
archive_rejected_hash(struct history *h, uint64_t height, const uint8_t hash[HASH_LEN])
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

void
archive_kick(struct history *h)
{
	if (archive_resting(h) && !h->stopping)
		event_active(h->wake, EV_TIMEOUT, 0);
}

/* Says why the archiver stops (shown in status as `waiting`) and returns
 * the state to rest in: AS_WAIT for another block, AS_ERROR when a step
 * failed. */
static int archive_why(struct history *h, int state, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
archive_why(struct history *h, int state, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(h->waiting, sizeof(h->waiting), fmt, ap);
	va_end(ap);
	return state;
}

#define archive_wait(h, ...) archive_why((h), AS_WAIT, __VA_ARGS__)
#define archive_fail(h, ...) archive_why((h), AS_ERROR, __VA_ARGS__)

/* ERROR: look again after HISTORY_RETRY_MS (or at the next ingest). */
static int
archive_error(void *obj)
{
	struct history *h = obj;
	struct timeval tv = clock_tv(HISTORY_RETRY_MS);

	evtimer_add(h->wake, &tv);
	return FSM_ASYNC;
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

	(void)st;
	h->inflight--;
	if (error != NULL) {
		free(data);
		fsm_enter(&h->m, h, archive_fail(h, "rebuilding the partial segment: block at "
		    "height %" PRIu64 ": %s", h->recover_h, error));
		return;
	}
	if (buf_append(h, h->recover_h, data, len, h->recover_h == h->buf_height ?
	    h->buf_offset : 0) < 0) {
		free(data);
		fsm_enter(&h->m, h, archive_fail(h, "out of memory"));
		return;
	}
	free(data);
	h->recover_h++;
	if (!h->stopping)
		fsm_enter(&h->m, h, AS_RECOVER);
}

/* RECOVER: the next archived block of the partial segment, if any. */
static int
archive_recover(void *obj)
{
	struct history *h = obj;
	uint8_t hash[HASH_LEN];

	if (h->recover_h > h->archived)
		return AS_NEXT;
	if (archive_row(h, h->recover_h, hash) != 1)
		return archive_fail(h, "rebuilding the partial segment: no block recorded at "
		    "archived height %" PRIu64, h->recover_h);
	h->inflight++;
	blockstore_get(h->d->blocks, hash, recover_read_done, h);
	return FSM_ASYNC;       /* continues from recover_read_done */
}

/* Unpacks a block and checks that it belongs at height (and after the
 * block whose hash is parent, when given).  Pure, so it runs on the I/O
 * pool: a block may be as large as a frame.  Returns 0, or -1 with the
 * reason in why. */
int
archive_check_block(const uint8_t *data, size_t len, uint64_t height, const uint8_t *parent,
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

static int
archive_next(void *obj)
{
	struct history *h = obj;
	int rc;

	h->cur_h = h->archived + 1;
	h->wanted = 0;
	rc = archive_row(h, h->cur_h, h->cur_hash);
	if (rc < 0)
		return archive_fail(h, "state.db: cannot read height %" PRIu64, h->cur_h);
	if (rc == 0) {
		/* Ask the cluster (gap repair), which answers through ingest. */
		h->wanted = h->cur_h;
		if (h->want_cb != NULL)
			h->want_cb(h->want_arg, h->cur_h);
		return archive_wait(h, "waiting for the block at height %" PRIu64, h->cur_h);
	}
	if (archive_rejected_hash(h, h->cur_h, h->cur_hash))
		return archive_wait(h, "block at height %" PRIu64 " was rejected; waiting for "
		    "another", h->cur_h);
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
		fsm_enter(&h->m, h, archive_fail(h, "block at height %" PRIu64 ": %s", h->cur_h,
		    error));
		return;
	}
	h->cur_data = data;
	h->cur_len = len;
	fsm_enter(&h->m, h, AS_VALIDATE);
}

static int
archive_read(void *obj)
{
	struct history *h = obj;

	h->inflight++;
	blockstore_get(h->d->blocks, h->cur_hash, read_done, h);
	return FSM_ASYNC;       /* continues from read_done */
}

/* REJECTED: the block in hand does not belong at its height; recorded,
 * so the next look at the height waits for another block. */
static int
archive_rejected(void *obj)
{
	struct history *h = obj;
	const char *reason = h->cur_why;
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
	free(h->cur_data);
	h->cur_data = NULL;
	return archive_wait(h, "block at height %" PRIu64 " rejected: %s", h->cur_h, reason);
}

static void
validate_work(void *arg)
{
	struct history *h = arg;

	/* The archiver is one step at a time: nothing on the loop touches
	 * the block in hand while this runs. */
	h->cur_valid = archive_check_block(h->cur_data, h->cur_len, h->cur_h, h->cur_parent,
	    h->cur_why, sizeof(h->cur_why)) == 0;
}

static void
validate_done(void *arg)
{
	struct history *h = arg;

	h->inflight--;
	if (h->stopping)
		return;
	fsm_enter(&h->m, h, h->cur_valid ? AS_EXECUTE : AS_REJECTED);
}

/* VALIDATE: the parent's hash comes from the database here; the block is
 * unpacked and checked on the I/O pool. */
static int
archive_validate(void *obj)
{
	struct history *h = obj;

	memset(h->cur_parent, 0, HASH_LEN);
	if (h->cur_h > 1 && archive_row(h, h->cur_h - 1, h->cur_parent) != 1)
		return archive_fail(h, "no block recorded at height %" PRIu64, h->cur_h - 1);
	h->inflight++;
	if (io_submit(h->d->io, validate_work, validate_done, h) < 0) {
		h->inflight--;
		return archive_fail(h, "out of memory validating height %" PRIu64, h->cur_h);
	}
	return FSM_ASYNC;       /* continues from validate_done */
}

/* ---- EXECUTE / UPGRADE: validation code (DESIGN §7) ------------------- */

/* The source in force at height (the latest history_code row at or below
 * it): 1 with *src (caller frees), 0 none, -1 error. */
static int
archive_code_at(struct history *h, uint64_t height, uint8_t **src, size_t *len)
{
	sqlite3_stmt *st = db_prepare(h->d->db, "SELECT source FROM history_code WHERE "
	    "from_height <= ? ORDER BY from_height DESC LIMIT 1", NULL);
	int rc;

	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, (int64_t)height);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*len = (size_t)sqlite3_column_bytes(st, 0);
		if ((*src = malloc(*len + 1)) != NULL)
			memcpy(*src, sqlite3_column_blob(st, 0), *len);
		rc = *src != NULL ? 1 : -1;
	} else {
		rc = rc == SQLITE_DONE ? 0 : -1;
	}
	sqlite3_finalize(st);
	return rc;
}

static void
execute_done(void *arg, int verdict, enum artifact_error kind, const char *reason)
{
	struct history *h = arg;

	h->inflight--;
	h->code_exec = 0;
	if (h->stopping)
		return;
	if (verdict == 1) {
		fsm_enter(&h->m, h, AS_UPGRADE);
	} else if (verdict == 0) {
		snprintf(h->cur_why, sizeof(h->cur_why), "validation code: %s", reason);
		fsm_enter(&h->m, h, AS_REJECTED);
	} else {
		fsm_enter(&h->m, h, archive_fail(h, "validating height %" PRIu64 " (%s): %s",
		    h->cur_h, kind == ARTIFACT_DETERMINISTIC ? "the code in force does not "
		    "compile" : "will retry", reason));
	}
}

/* EXECUTE: takes the block's own code aside for UPGRADE and runs the code
 * in force, if any, on it. */
static int
archive_execute(void *obj)
{
	struct history *h = obj;
	struct frame_alloc fa;
	struct err e;
	Farmd__ChainBlock *b;
	struct artifact_block ab;
	uint8_t *src = NULL;
	size_t len = 0;
	int rc;

	free(h->cur_code);
	h->cur_code = NULL;
	h->cur_code_len = 0;
	b = (Farmd__ChainBlock *)frame_unpack(&farmd__chain_block__descriptor, h->cur_data,
	    h->cur_len, &fa, &e);
	if (b == NULL)
		return archive_fail(h, "height %" PRIu64 ": %s", h->cur_h, e.msg);
	if (b->validation_code != NULL && b->validation_code[0] != '\0') {
		h->cur_code_len = strlen(b->validation_code);
		h->cur_code = (uint8_t *)strdup(b->validation_code);
	}
	rc = archive_code_at(h, h->cur_h, &src, &len);
	if (rc == 1) {
		ab = (struct artifact_block){ h->cur_h, b->parent_hash.data, b->body.data,
		    b->body.len };
		h->code_exec = artifact_execute(h->d->artifacts, src, len, &ab, execute_done, h);
	}
	protobuf_c_message_free_unpacked(&b->base, &fa.pb);
	free(src);
	if ((h->cur_code_len > 0 && h->cur_code == NULL) || rc < 0 ||
	    (rc == 1 && h->code_exec == 0))
		return archive_fail(h, "height %" PRIu64 ": cannot look up its validation code",
		    h->cur_h);
	if (rc == 0)
		return AS_UPGRADE;
	h->inflight++;
	return FSM_ASYNC;       /* continues from execute_done */
}

/* A preparation the archiver waits for; it outlives the archiver when
 * farmd stops first (h is NULL then). */
struct archive_code_wait {
	struct history *h;
};

/* Records (or, for a block without code, removes) the code in force from
 * the next height on. */
static int
archive_code_record(struct history *h, struct err *e)
{
	sqlite3_stmt *st = db_prepare(h->d->db, h->cur_code != NULL ?
	    "INSERT OR REPLACE INTO history_code (from_height, code_hash, source) "
	    "VALUES (?, ?, ?)" : "DELETE FROM history_code WHERE from_height = ?", e);
	uint8_t hash[HASH_LEN];
	int rc;

	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, (int64_t)(h->cur_h + 1));
	if (h->cur_code != NULL) {
		hash_sha256(h->cur_code, h->cur_code_len, hash);
		sqlite3_bind_blob(st, 2, hash, HASH_LEN, SQLITE_STATIC);
		sqlite3_bind_blob(st, 3, h->cur_code, (int)h->cur_code_len, SQLITE_STATIC);
	}
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return err_set(e, "state.db: validation code from height %" PRIu64 ": %s",
		    h->cur_h + 1, sqlite3_errmsg(db_handle(h->d->db)));
	return 0;
}

static void
upgrade_done(void *arg, const char *id_hex, enum artifact_error kind, const char *error)
{
	struct archive_code_wait *w = arg;
	struct history *h = w->h;
	struct err e;

	(void)id_hex;
	free(w);
	if (h == NULL)
		return;
	h->code_wait = NULL;
	h->inflight--;
	if (h->stopping)
		return;
	if (kind == ARTIFACT_DETERMINISTIC) {
		snprintf(h->cur_why, sizeof(h->cur_why), "its validation code does not compile: %s",
		    error);
		fsm_enter(&h->m, h, AS_REJECTED);
	} else if (kind != ARTIFACT_OK) {
		fsm_enter(&h->m, h, archive_fail(h, "preparing the validation code of height %"
		    PRIu64 ": %s", h->cur_h, error));
	} else if (archive_code_record(h, &e) < 0) {
		fsm_enter(&h->m, h, archive_fail(h, "%s", e.msg));
	} else {
		fsm_enter(&h->m, h, AS_APPEND);
	}
}

/* UPGRADE: a block that carries code is archived only once its code is
 * prepared (code that does not compile makes it an invalid upgrade). */
static int
archive_upgrade(void *obj)
{
	struct history *h = obj;
	struct archive_code_wait *w;
	struct err e;

	if (h->cur_code == NULL) {
		if (archive_code_record(h, &e) < 0)
			return archive_fail(h, "%s", e.msg);
		return AS_APPEND;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return archive_fail(h, "out of memory");
	w->h = h;
	h->code_wait = w;
	h->inflight++;
	artifact_prepare(h->d->artifacts, h->cur_code, h->cur_code_len, upgrade_done, w);
	return FSM_ASYNC;       /* continues from upgrade_done */
}

/* ---- APPEND / CUT / STORE -------------------------------------------- */

static int
archive_append(void *obj)
{
	struct history *h = obj;
	int rc;

	h->dirty = 1;
	rc = buf_append(h, h->cur_h, h->cur_data, h->cur_len, 0);

	free(h->cur_data);
	h->cur_data = NULL;
	if (rc < 0)
		return archive_fail(h, "out of memory appending height %" PRIu64, h->cur_h);
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
		fsm_enter(&h->m, h, archive_fail(h, "storing the pieces of segment %" PRIu64
		    ": %s", s->index, s->err));
		return;
	}
	fsm_enter(&h->m, h, h->buf_len >= h->seg_size ? AS_CUT : AS_COMMIT);
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
	fsm_enter(&h->m, h, AS_STORE);
}

/* STORE: the pieces of the segment just cut, without a reference. */
static int
archive_store(void *obj)
{
	struct history *h = obj;
	struct seg *s = h->segs[h->nsegs - 1];

	for (uint32_t k = 0; k < h->pps; k++) {
		const uint8_t *p = s->bytes + (uint64_t)k * h->piece_size;

		h->inflight++;
		blockstore_store_mem(h->d->blocks, p, h->piece_size, 1, piece_stored, h);
	}
	return FSM_ASYNC;       /* continues from piece_stored */
}

static int
archive_cut(void *obj)
{
	struct history *h = obj;
	struct seg *s = calloc(1, sizeof(*s)), **ns;
	struct cut_work *w = calloc(1, sizeof(*w));

	if (s == NULL || w == NULL ||
	    (s->piece_roots = malloc((size_t)h->pps * HASH_LEN)) == NULL ||
	    (s->piece_hashes = malloc((size_t)h->pps * HASH_LEN)) == NULL ||
	    (s->bytes = malloc(h->seg_size)) == NULL ||
	    (ns = realloc(h->segs, (h->nsegs + 1) * sizeof(*ns))) == NULL) {
		seg_free(s);
		free(w);
		return archive_fail(h, "out of memory cutting a segment");
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
		return archive_fail(h, "out of memory cutting a segment");
	}
	return FSM_ASYNC;       /* continues from cut_done */
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

		if (archive_row(h, ht, hash) == 1 &&
		    blockstore_decref(h->d->blocks, hash, &left, e) < 0)
			return -1;
	}
	h->released = h->release_upto;
	return db_meta_set_u64(h->d->db, "history.released", h->released, e);
}

static int
archive_commit(void *obj)
{
	struct history *h = obj;
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
		if (archive_row(h, h->cur_h, now) != 1 || memcmp(now, h->cur_hash, HASH_LEN) != 0) {
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
	return archive_fail(h, "commit of height %" PRIu64 " failed: %s", h->cur_h, e.msg);
}

/* The in-memory state of a block that did not commit is thrown away and
 * rebuilt from the checkpoint (the same path as after a crash). */
static void
archive_reset_to_checkpoint(struct history *h)
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

/* ---- waking from WAIT or ERROR ----------------------------------------- */

/* WAIT and ERROR end here: a block that failed after changing the buffer
 * starts over from the checkpoint, a rebuild in progress continues,
 * anything else looks at the next height again. */
static void
archive_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct history *h = arg;

	(void)fd;
	(void)what;
	if (h->stopping || !archive_resting(h) || h->inflight > 0)
		return;
	if (h->dirty) {
		archive_reset_to_checkpoint(h);
		fsm_enter(&h->m, h, AS_RECOVER);
	} else if (h->recover_h <= h->archived) {
		fsm_enter(&h->m, h, AS_RECOVER);
	} else {
		fsm_enter(&h->m, h, AS_NEXT);
	}
}

/* ---- lifecycle ------------------------------------------------------- */

int
archive_init(struct history *h, struct event_base *base)
{
	fsm_init(&h->m, &as_def, AS_WAIT);
	h->wake = evtimer_new(base, archive_wake_cb, h);
	return h->wake == NULL ? -1 : 0;
}

void
archive_start(struct history *h)
{
	h->recover_h = h->buf_height;
	fsm_enter(&h->m, h, AS_RECOVER);
}

/* Worker jobs are dropped, not waited for: the height is processed
 * again from the checkpoint at the next start. */
static void
archive_drop_code(struct history *h)
{
	if (h->code_exec != 0) {
		artifact_exec_cancel(h->d->artifacts, h->code_exec);
		h->code_exec = 0;
		h->inflight--;
	}
	if (h->code_wait != NULL) {
		h->code_wait->h = NULL;
		h->code_wait = NULL;
		h->inflight--;
	}
}

void
archive_free(struct history *h)
{
	archive_drop_code(h);
	for (size_t i = 0; i < h->nsegs; i++)
		seg_free(h->segs[i]);
	free(h->segs);
	free(h->cur_data);
	free(h->cur_code);
	free(h->buf);
	free(h->recs);
	if (h->wake != NULL)
		event_free(h->wake);
}

int
archive_quiesce(struct history *h)
{
	h->stopping = 1;
	evtimer_del(h->wake);
	archive_drop_code(h);
	return h->inflight == 0;
}

const char *
archive_state_name(const struct history *h)
{
	return as_public[h->m.state];
}

int
archive_holds(const struct history *h, uint64_t height)
{
	return height <= h->archived || (height == h->cur_h && !archive_resting(h));
}
