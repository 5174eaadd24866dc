/*
 * history.c: ingest and the public face of the history (DESIGN §4, §9);
 * the archiver that turns ingested blocks into segments is archive.c.
 *
 * Invariants:
 * - a history row exists only for a block that was stored and checked to
 *   unpack at its height; the row and the history's reference to the block
 *   commit in one transaction, so a crash neither loses nor doubles it;
 * - a height that is archived or being archived (archive_holds) keeps its
 *   block: ingest may store the same bytes again (a repair), never others;
 * - the geometry (piece_size, pieces_per_segment) is fixed when the state
 *   dir is created and a different configuration is refused.
 */
#include "history.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "archive.h"
#include "artifact.h"
#include "blockstore.h"
#include "chain.pb-c.h"
#include "config.h"
#include "db.h"
#include "farmd.h"
#include "fdio.h"
#include "frame.h"
#include "io.h"
#include "log.h"

#define HISTORY_MAX_WANTED 100

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
	if (archive_check_block(in->data, in->len, in->height, NULL, why, sizeof(why)) < 0)
		snprintf(in->err, sizeof(in->err), "%s: %s", in->name, why);
done:
	close(in->fd);
	in->fd = -1;
}

/* A block that carries validation code has it prepared now, so the
 * artifact is ready when the archiver reaches the next height. */
static void
ingest_prepare_early(struct ingest *in)
{
	struct frame_alloc fa;
	struct err e;
	Farmd__ChainBlock *b = (Farmd__ChainBlock *)frame_unpack(&farmd__chain_block__descriptor,
	    in->data, in->len, &fa, &e);

	if (b == NULL)
		return;
	if (b->validation_code != NULL && b->validation_code[0] != '\0')
		artifact_prepare(in->h->d->artifacts, (const uint8_t *)b->validation_code,
		    strlen(b->validation_code), NULL, NULL);
	protobuf_c_message_free_unpacked(&b->base, &fa.pb);
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
	had = archive_row(h, in->height, old);
	/* Decided again now: the archiver may have reached this height
	 * while the bytes were being stored. */
	if (had == 1 && memcmp(old, in->hash, HASH_LEN) != 0 && archive_holds(h, in->height)) {
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
	ingest_prepare_early(in);
	ingest_finish(in, NULL, text);
	archive_kick(h);
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
	if (archive_holds(h, in->height)) {
		int rc = archive_row(h, in->height, old);

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

/* A memfd holding the bytes goes down the fd path: one ingest path, with
 * its checks, whatever the source. */
void
history_ingest_mem(struct history *h, uint64_t height, const uint8_t *data, size_t len,
    const char *name, history_ingest_cb cb, void *arg)
{
	int fd = memfd_create("farmd-peer-block", MFD_CLOEXEC);

	if (fd < 0 || fdio_write_all(fd, data, len) < 0) {
		char msg[ERR_MSG_MAX];

		snprintf(msg, sizeof(msg), "%s: memfd: %s", name, strerror(errno));
		if (fd >= 0)
			close(fd);
		cb(arg, msg, NULL);
		return;
	}
	history_ingest_fd(h, height, fd, name, cb, arg);
}

int
history_block_hash(struct history *h, uint64_t height, uint8_t hash[HASH_LEN])
{
	return archive_row(h, height, hash);
}

void
history_on_want(struct history *h, history_want_cb cb, void *arg)
{
	h->want_cb = cb;
	h->want_arg = arg;
}

uint64_t
history_top_height(struct history *h)
{
	sqlite3_stmt *st = db_prepare(h->d->db, "SELECT MAX(height) FROM history", NULL);
	uint64_t top = h->archived;

	if (st != NULL && sqlite3_step(st) == SQLITE_ROW &&
	    (uint64_t)sqlite3_column_int64(st, 0) > top)
		top = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return top;
}

uint64_t
history_wanted_height(const struct history *h)
{
	return h->m.state == AS_WAIT ? h->wanted : 0;
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
	st = db_prepare(h->d->db, "SELECT height, reason, hash FROM history_rejections "
	    "ORDER BY height", NULL);
	while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
		char hex[HASH_HEX_LEN + 1] = "";

		if (sqlite3_column_bytes(st, 2) == HASH_LEN)
			hex_encode(sqlite3_column_blob(st, 2), HASH_LEN, hex);
		json_array_append_new(rejected, json_pack("{s:I, s:s, s:s}", "height",
		    (json_int_t)sqlite3_column_int64(st, 0), "reason",
		    (const char *)sqlite3_column_text(st, 1), "hash", hex));
	}
	sqlite3_finalize(st);
	return json_pack("{s:I, s:o, s:I, s:I, s:I, s:o, s:s, s:s, s:I, s:I}",
	    "archived_height", (json_int_t)h->archived, "wanted", wanted,
	    "pending", (json_int_t)pending, "history_size", (json_int_t)h->nsegments,
	    "segment_fill_bytes", (json_int_t)h->buf_len, "rejected", rejected,
	    "state", archive_state_name(h), "waiting", h->waiting,
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
	if (h == NULL || archive_init(h, d->base) < 0) {
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
	if (h->archived > 0)
		log_info("history: checkpoint at height %" PRIu64 ", %" PRIu64 " segments",
		    h->archived, h->nsegments);
	archive_start(h);
	return h;
}

int
history_quiesce(struct history *h)
{
	return archive_quiesce(h);
}

void
history_free(struct history *h)
{
	if (h == NULL)
		return;
	archive_free(h);
	free(h);
}
