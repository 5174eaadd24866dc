/*
 * blockstore.c: storing, reading and deleting blocks.
 *
 * Invariants:
 * - a row with data NULL names a file that was written, fsynced, renamed
 *   into place and whose directory was fsynced before the row committed;
 * - every byte returned by a read was hashed and matched the block's name
 *   in this read;
 * - work on one hash that changes its file (store, collect, purge) is
 *   serialised through bs->busy: a put that meets a hash being deleted
 *   waits for the delete to finish, so it can never lose a fresh file;
 * - a block whose last reference goes (decref, or a new block stored
 *   with noref) is queued for collection in the transaction that drops
 *   it, so a crash cannot leave garbage that nothing collects;
 * - hashing, compression and the reads and writes of block files run on
 *   the I/O pool (blockfile.c, bs_del_work); the loop touches the
 *   database, hashes only inline blocks (under BLOCK_INLINE_MAX bytes)
 *   and does no file work beyond a stat() or an unlink().
 */
#include "blockstore.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include <sqlite3.h>

#include "blockfile.h"
#include "budget.h"
#include "clock.h"
#include "config.h"
#include "db.h"
#include "farmd.h"
#include "fdio.h"
#include "io.h"
#include "log.h"
#include "resyncq.h"

struct blockstore {
	struct farmd *d;
	char dir[PATH_MAX];
	char tmpdir[PATH_MAX + 8];
	struct budget budget;
	struct resyncq *q;              /* blocks that need resync */
	uint64_t blocks, bytes;
	uint64_t bytes_read, bytes_written, corruptions, missing;
	uint64_t tmp_seq;
	uint64_t shared_confirms;       /* reads found sound only when read again */
	uint8_t (*busy)[HASH_LEN];      /* hashes being deleted: as many as */
	size_t nbusy, busy_cap;         /* deletes in flight, no fixed cap */
#ifdef FAULT_INJECTION
	int crash_before_commit;        /* debug fault block commit */
	int slow_delete;                /* debug fault block slow-delete */
#endif
};

void
block_hex(const uint8_t hash[HASH_LEN], char out[HASH_HEX_LEN + 1])
{
	hex_encode(hash, HASH_LEN, out);
}

static void
bs_path(const struct blockstore *bs, const uint8_t hash[HASH_LEN], int compressed,
    char *out, size_t len)
{
	char hex[HASH_HEX_LEN + 1];

	block_hex(hash, hex);
	snprintf(out, len, "%s/%.2s/%.2s/%s%s", bs->dir, hex, hex + 2, hex,
	    compressed ? ".zst" : "");
}

static int
bs_busy(const struct blockstore *bs, const uint8_t hash[HASH_LEN])
{
	for (size_t i = 0; i < bs->nbusy; i++)
		if (memcmp(bs->busy[i], hash, HASH_LEN) == 0)
			return 1;
	return 0;
}

/* Room for one more busy hash, made before a delete commits to anything,
 * so that bs_busy_add() cannot fail afterwards. */
static int
bs_busy_reserve(struct blockstore *bs)
{
	size_t cap = bs->busy_cap ? 2 * bs->busy_cap : 64;
	uint8_t (*nb)[HASH_LEN];

	if (bs->nbusy < bs->busy_cap)
		return 0;
	if ((nb = realloc(bs->busy, cap * HASH_LEN)) == NULL)
		return -1;
	bs->busy = nb;
	bs->busy_cap = cap;
	return 0;
}

static void
bs_busy_add(struct blockstore *bs, const uint8_t hash[HASH_LEN])
{
	memcpy(bs->busy[bs->nbusy++], hash, HASH_LEN);
}

static void
bs_busy_del(struct blockstore *bs, const uint8_t hash[HASH_LEN])
{
	for (size_t i = 0; i < bs->nbusy; i++) {
		if (memcmp(bs->busy[i], hash, HASH_LEN) == 0) {
			memmove(bs->busy[i], bs->busy[i + 1], (size_t)(bs->nbusy - i - 1) * HASH_LEN);
			bs->nbusy--;
			return;
		}
	}
}

/* ---- put ------------------------------------------------------------- */

struct put_op {
	struct blockstore *bs;
	struct blockfile_write w;       /* the source, the temp file, the name */
	int64_t resv_id;
	uint64_t resv;
	char final[PATH_MAX + 80];
	block_put_cb cb;
	void *arg;
	struct event *wait_ev;
	int noref;                      /* store the bytes, take no reference */
};

static void bs_put_stage1_done(void *arg);

/* Stage 1, on the I/O pool: the source into a temp file or memory. */
static void
bs_put_stage1(void *arg)
{
	struct put_op *op = arg;

	blockfile_write(&op->w);
}

/* Stage 2, on the I/O pool: the temp file into place, durably. */
static void
bs_put_stage2(void *arg)
{
	struct put_op *op = arg;

	blockfile_place(&op->w, op->final, op->bs->dir);
}

static void
bs_put_finish(struct put_op *op, const char *error)
{
	if (op->resv_id != 0)
		budget_release(&op->bs->budget, op->resv_id, op->resv, 0);
	op->cb(op->arg, error ? NULL : op->w.hash, error);
	if (op->wait_ev != NULL)
		event_free(op->wait_ev);
	free(op->w.inline_data);
	free(op);
}

/* Commits the row that names the block (new, repaired or one more ref). */
static int
bs_commit_row(struct put_op *op, struct err *e)
{
	struct blockstore *bs = op->bs;
	struct db *db = bs->d->db;
	sqlite3_stmt *st = NULL;
	int64_t old_stored = -1;
	uint64_t delta;

	if (db_begin(db, e) < 0)
		return -1;
	st = db_stmt(db, DB_BLOCK_STORED);
	sqlite3_bind_blob(st, 1, op->w.hash, HASH_LEN, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		old_stored = sqlite3_column_int64(st, 0);
	db_stmt_done(st);
	/* With noref a new row starts unreferenced (and is queued for GC);
	 * the caller references it in its own transaction. */
	st = db_stmt(db, op->noref ? DB_BLOCK_INSERT_NOREF : DB_BLOCK_INSERT_REF);
	if (op->noref)
		sqlite3_bind_int64(st, 6, (int64_t)clock_real_ms());
	sqlite3_bind_blob(st, 1, op->w.hash, HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)op->w.size);
	sqlite3_bind_int64(st, 3, (int64_t)op->w.stored);
	sqlite3_bind_int(st, 4, op->w.compressed);
	if (op->w.inline_data != NULL)
		sqlite3_bind_blob(st, 5, op->w.inline_data, (int)op->w.size, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 5);
	if (sqlite3_step(st) != SQLITE_DONE) {
		err_set(e, "state.db: store block row: %s", sqlite3_errmsg(db_handle(db)));
		goto fail;
	}
	db_stmt_done(st);
	st = NULL;
	delta = old_stored < 0 ? op->w.stored : op->w.stored - (uint64_t)old_stored;
	if (op->resv_id != 0) {
		budget_release(&bs->budget, op->resv_id, op->resv, delta);
		op->resv_id = 0;
	} else {
		bs->budget.used += delta;
	}
	if (op->noref && old_stored < 0 && resyncq_enqueue(bs->q, op->w.hash,
	    clock_real_ms() + bs->d->cfg.blocks.gc_delay_ms, e) < 0)
		goto fail;
	if (db_commit(db, e) < 0)
		goto fail;
	if (old_stored < 0) {
		bs->blocks++;
		bs->bytes += op->w.size;
	}
	bs->bytes_written += op->w.stored;
	resyncq_satisfied(bs->q, op->w.hash);
	return 0;
fail:
	db_stmt_done(st);
	db_rollback(db);
	return -1;
}

static void
bs_put_stage2_done(void *arg)
{
	struct put_op *op = arg;
	struct err e;

	if (op->w.failed) {
		bs_put_finish(op, op->w.err);
		return;
	}
#ifdef FAULT_INJECTION
	if (op->bs->crash_before_commit) {
		log_warn("fault injection: killed after renaming %s, before its row commits",
		    op->final);
		kill(getpid(), SIGKILL);
	}
#endif
	if (bs_commit_row(op, &e) < 0) {
		/* The file stays: a later put or scrub finds it again. */
		bs_put_finish(op, e.msg);
		return;
	}
	bs_put_finish(op, NULL);
}

/* An existing, healthy block only gains a reference. */
static int
bs_incref(struct blockstore *bs, const uint8_t hash[HASH_LEN], struct err *e)
{
	sqlite3_stmt *st = db_stmt(bs->d->db, DB_BLOCK_INCREF);
	int rc;

	sqlite3_bind_blob(st, 1, hash, HASH_LEN, SQLITE_STATIC);
	rc = sqlite3_step(st) == SQLITE_DONE ? 0 :
	    err_set(e, "state.db: add reference: %s", sqlite3_errmsg(db_handle(bs->d->db)));
	db_stmt_done(st);
	return rc;
}

static void
bs_put_wait_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	bs_put_stage1_done(arg);
}

static void
bs_put_stage1_done(void *arg)
{
	struct put_op *op = arg;
	struct blockstore *bs = op->bs;
	struct block_info info;
	struct stat st;
	struct err e;
	int found;

	if (op->w.failed) {
		bs_put_finish(op, op->w.err);
		return;
	}
	if (bs_busy(bs, op->w.hash)) {
		/* Being deleted right now: store it afresh once that is done. */
		struct timeval tv = clock_tv(10);

		if (op->wait_ev == NULL)
			op->wait_ev = evtimer_new(bs->d->base, bs_put_wait_cb, op);
		evtimer_add(op->wait_ev, &tv);
		return;
	}
	found = blockstore_stat(bs, op->w.hash, &info, &e);
	if (found < 0) {
		if (op->w.inline_data == NULL)
			unlink(op->w.tmp);
		bs_put_finish(op, e.msg);
		return;
	}
	if (op->w.inline_data != NULL) {
		bs_put_finish(op, bs_commit_row(op, &e) < 0 ? e.msg : NULL);
		return;
	}
	/* A second put of a stored block does not rewrite it, unless the
	 * stored copy is known bad or gone: then this put repairs it. */
	if (found && strcmp(info.state, "error") != 0 && !info.inline_ &&
	    (bs_path(bs, op->w.hash, info.compressed, op->final, sizeof(op->final)),
	    stat(op->final, &st) == 0)) {
		unlink(op->w.tmp);
		bs_put_finish(op, !op->noref && bs_incref(bs, op->w.hash, &e) < 0 ? e.msg : NULL);
		return;
	}
	bs_path(bs, op->w.hash, op->w.compressed, op->final, sizeof(op->final));
	/* Before the rename: a crash between rename and commit leaves a
	 * file that only this name leads back to (bs_reconcile). */
	if (op->resv_id != 0 &&
	    budget_name(&bs->budget, op->resv_id, op->w.hash, HASH_LEN, &e) < 0) {
		unlink(op->w.tmp);
		bs_put_finish(op, e.msg);
		return;
	}
	if (io_submit(bs->d->io, bs_put_stage2, bs_put_stage2_done, op) < 0) {
		unlink(op->w.tmp);
		bs_put_finish(op, "out of memory");
	}
}

static void
bs_put_start(struct blockstore *bs, struct put_op *op)
{
	struct err e;

	op->bs = bs;
	op->w.level = bs->d->cfg.blocks.compression_level;
	op->w.inl = op->w.size < BLOCK_INLINE_MAX;
	snprintf(op->w.tmp, sizeof(op->w.tmp), "%s/%d-%" PRIu64 ".tmp", bs->tmpdir,
	    (int)getpid(), ++bs->tmp_seq);
	if (op->w.size >= BLOCK_INLINE_MAX) {
		if (budget_reserve(&bs->budget, op->w.size, &op->resv_id, &e) < 0) {
			bs_put_finish(op, e.msg);
			return;
		}
		op->resv = op->w.size;
	} else if (budget_check(&bs->budget, op->w.size, &e) < 0) {
		bs_put_finish(op, e.msg);
		return;
	}
	if (io_submit(bs->d->io, bs_put_stage1, bs_put_stage1_done, op) < 0)
		bs_put_finish(op, "out of memory");
}

void
blockstore_put_fd(struct blockstore *bs, int fd, block_put_cb cb, void *arg)
{
	struct put_op *op = calloc(1, sizeof(*op));
	struct stat st;

	if (op == NULL) {
		close(fd);
		cb(arg, NULL, "out of memory");
		return;
	}
	op->cb = cb;
	op->arg = arg;
	op->w.fd = fd;
	op->bs = bs;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		op->w.fd = -1;
		bs_put_finish(op, "not a regular file");
		return;
	}
	op->w.size = (uint64_t)st.st_size;
	bs_put_start(bs, op);
}

void
blockstore_store_mem(struct blockstore *bs, const uint8_t *data, size_t len, int noref,
    block_put_cb cb, void *arg)
{
	struct put_op *op = calloc(1, sizeof(*op));

	if (op == NULL) {
		cb(arg, NULL, "out of memory");
		return;
	}
	op->w.mem = data;
	op->noref = noref;
	op->w.fd = -1;
	op->w.size = len;
	op->cb = cb;
	op->arg = arg;
	op->bs = bs;
	bs_put_start(bs, op);
}

/* ---- get ------------------------------------------------------------- */

struct get_op {
	struct blockstore *bs;
	struct blockfile_read f;        /* the file, what it held, the verdict */
	block_get_cb cb;
	void *arg;
	int report;
	int inline_;
};

/* On the I/O pool. */
static void
bs_get_work(void *arg)
{
	struct get_op *op = arg;

	blockfile_read(&op->f);
}

static void
bs_get_done(void *arg)
{
	struct get_op *op = arg;
	struct blockstore *bs = op->bs;
	char hex[HASH_HEX_LEN + 1], msg[ERR_MSG_MAX + 128];

	bs->bytes_read += op->f.read;
	block_hex(op->f.hash, hex);
	if (op->f.st == BLOCK_OK) {
		/* Logged 1st, 2nd, 4th, 8th... time: a worker at it cannot
		 * flood the log. */
		if (op->f.confirmed)
			bs->shared_confirms++;
		if (op->f.confirmed && (bs->shared_confirms & (bs->shared_confirms - 1)) == 0)
			log_warn("block %s did not verify in an encode worker's buffer (the "
			    "worker wrote there while it was read) and is sound read again "
			    "privately (%llu such reads so far)", hex,
			    (unsigned long long)bs->shared_confirms);
		op->cb(op->arg, op->f.data, op->f.size, BLOCK_OK, NULL);
		free(op);
		return;
	}
	if (op->f.data != op->f.dst)
		free(op->f.data);
	if (op->f.st == BLOCK_CORRUPT && op->inline_) {
		bs->corruptions++;
		snprintf(msg, sizeof(msg), "block %s is corrupt: its inline copy in state.db "
		    "does not hash to its name; queued for resync", hex);
	} else if (op->f.st == BLOCK_CORRUPT) {
		bs->corruptions++;
		snprintf(msg, sizeof(msg), "block %s is corrupt: %s; moved to %s.corrupted and "
		    "queued for resync", hex, op->f.err, op->f.path);
	} else if (op->f.st == BLOCK_MISSING) {
		bs->missing++;
		snprintf(msg, sizeof(msg), "block %s is missing (%s); queued for resync", hex,
		    op->f.err);
	} else {
		snprintf(msg, sizeof(msg), "block %s: %s", hex, op->f.err);
	}
	/* Resync's own checks report through their state machine. */
	if (op->f.st != BLOCK_IOERR && op->report) {
		log_warn("%s", msg);
		resyncq_report(bs->q, op->f.hash,
		    op->f.st == BLOCK_CORRUPT ? "corrupt" : "missing");
	}
	op->cb(op->arg, NULL, 0, op->f.st, msg);
	free(op);
}

/* The row of a block to read: NULL when cb has run already (no such
 * block, an inline one verified here, a failure), else the op whose file
 * the I/O pool reads (bs_get_work, then bs_get_done). */
static struct get_op *
bs_lookup(struct blockstore *bs, const uint8_t hash[HASH_LEN], int report, uint8_t *dst,
    size_t cap, int shared, block_get_cb cb, void *arg)
{
	struct get_op *op = calloc(1, sizeof(*op));
	sqlite3_stmt *st;
	struct err e;
	char hex[HASH_HEX_LEN + 1];

	if (op == NULL) {
		cb(arg, NULL, 0, BLOCK_IOERR, "out of memory");
		return NULL;
	}
	op->bs = bs;
	memcpy(op->f.hash, hash, HASH_LEN);
	op->cb = cb;
	op->arg = arg;
	op->report = report;
	block_hex(hash, hex);
	st = db_stmt(bs->d->db, DB_BLOCK_READ);
	sqlite3_bind_blob(st, 1, hash, HASH_LEN, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_ROW) {
		db_stmt_done(st);
		free(op);
		snprintf(e.msg, sizeof(e.msg), "block %s: no such block", hex);
		cb(arg, NULL, 0, BLOCK_NOT_FOUND, e.msg);
		return NULL;
	}
	op->f.size = (uint64_t)sqlite3_column_int64(st, 0);
	op->f.compressed = sqlite3_column_int(st, 1);
	if (dst != NULL && op->f.size != cap) {
		db_stmt_done(st);
		snprintf(e.msg, sizeof(e.msg), "block %s: %" PRIu64 " bytes, %zu expected", hex,
		    op->f.size, cap);
		free(op);
		cb(arg, NULL, 0, BLOCK_IOERR, e.msg);
		return NULL;
	}
	op->f.dst = dst;
	op->f.dst_shared = shared;
	if (sqlite3_column_type(st, 2) == SQLITE_BLOB || op->f.size < BLOCK_INLINE_MAX) {
		/* Inline: small enough to verify right here, in SQLite's own
		 * copy (a shared room could change under the check). */
		const uint8_t *p = sqlite3_column_blob(st, 2);
		size_t n = (size_t)sqlite3_column_bytes(st, 2);
		struct blockfile_read *fp = &op->f;

		op->inline_ = 1;
		op->f.data = p != NULL ? (uint8_t *)p : (uint8_t *)"";
		op->f.have = n;
		op->f.read = n;
		blockfile_check_many(&fp, 1);
		op->f.data = dst != NULL && n <= cap ? dst : malloc(n + 1);
		if (op->f.data != NULL && n > 0)
			memcpy(op->f.data, p, n);
		db_stmt_done(st);
		if (op->f.data == NULL) {
			free(op);
			cb(arg, NULL, 0, BLOCK_IOERR, "out of memory");
			return NULL;
		}
		bs_get_done(op);
		return NULL;
	}
	db_stmt_done(st);
	bs_path(bs, hash, op->f.compressed, op->f.path, sizeof(op->f.path));
	return op;
}

static void
bs_read(struct blockstore *bs, const uint8_t hash[HASH_LEN], int report, block_get_cb cb,
    void *arg)
{
	struct get_op *op = bs_lookup(bs, hash, report, NULL, 0, 0, cb, arg);

	if (op != NULL && io_submit(bs->d->io, bs_get_work, bs_get_done, op) < 0) {
		free(op);
		cb(arg, NULL, 0, BLOCK_IOERR, "out of memory");
	}
}

/* Several files read by one I/O task (one hand-off each way). */
struct get_batch {
	size_t n;
	struct get_op *ops[BLOCKSTORE_BATCH_MAX];
};

static void
bs_batch_work(void *arg)
{
	struct get_batch *b = arg;
	struct blockfile_read *f[BLOCKSTORE_BATCH_MAX];

	for (size_t i = 0; i < b->n; i++)
		f[i] = &b->ops[i]->f;
	blockfile_read_many(f, b->n);
}

static void
bs_batch_done(void *arg)
{
	struct get_batch *b = arg;

	for (size_t i = 0; i < b->n; i++)
		bs_get_done(b->ops[i]);
	free(b);
}

void
blockstore_get(struct blockstore *bs, const uint8_t hash[HASH_LEN], block_get_cb cb,
    void *arg)
{
	bs_read(bs, hash, 1, cb, arg);
}

void
blockstore_get_many_into(struct blockstore *bs, size_t n, const uint8_t (*hashes)[HASH_LEN],
    uint8_t *dst, size_t len, int shared, block_get_cb cb, void *const *args)
{
	struct get_batch *b = calloc(1, sizeof(*b));

	for (size_t i = 0; i < n; i++) {
		struct get_op *op;

		if (b == NULL || i >= BLOCKSTORE_BATCH_MAX) {
			cb(args[i], NULL, 0, BLOCK_IOERR, b == NULL ? "out of memory" :
			    "too many blocks in one read");
			continue;
		}
		op = bs_lookup(bs, hashes[i], 1, dst + i * len, len, shared, cb, args[i]);
		if (op != NULL)
			b->ops[b->n++] = op;
	}
	if (b == NULL)
		return;
	if (b->n == 0) {
		free(b);
		return;
	}
	if (io_submit(bs->d->io, bs_batch_work, bs_batch_done, b) < 0) {
		for (size_t i = 0; i < b->n; i++) {
			block_get_cb c = b->ops[i]->cb;
			void *a = b->ops[i]->arg;

			free(b->ops[i]);
			c(a, NULL, 0, BLOCK_IOERR, "out of memory");
		}
		free(b);
	}
}

void
blockstore_verify(struct blockstore *bs, const uint8_t hash[HASH_LEN], block_get_cb cb,
    void *arg)
{
	bs_read(bs, hash, 0, cb, arg);
}

/* ---- metadata -------------------------------------------------------- */

int
blockstore_stat(struct blockstore *bs, const uint8_t hash[HASH_LEN],
    struct block_info *out, struct err *e)
{
	sqlite3_stmt *st = db_stmt(bs->d->db, DB_BLOCK_STAT);
	int rc;

	sqlite3_bind_blob(st, 1, hash, HASH_LEN, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		memcpy(out->hash, hash, HASH_LEN);
		out->size = (uint64_t)sqlite3_column_int64(st, 0);
		out->stored = (uint64_t)sqlite3_column_int64(st, 1);
		out->refcount = sqlite3_column_int64(st, 2);
		out->compressed = sqlite3_column_int(st, 3);
		out->inline_ = sqlite3_column_int(st, 4);
		out->state = sqlite3_column_int(st, 5) ? "error" :
		    out->refcount == 0 ? "unreferenced" : "ok";
		rc = 1;
	} else if (rc == SQLITE_DONE) {
		rc = 0;
	} else {
		rc = err_set(e, "state.db: stat block: %s", sqlite3_errmsg(db_handle(bs->d->db)));
	}
	db_stmt_done(st);
	return rc;
}

int
blockstore_resolve(struct blockstore *bs, const char *hex, uint8_t hash[HASH_LEN],
    struct err *e)
{
	uint8_t lo[HASH_LEN], hi[HASH_LEN];
	size_t n = strlen(hex);
	sqlite3_stmt *st;
	int found = 0;

	if (n == HASH_HEX_LEN && hex_decode(hex, hash, HASH_LEN) == 0)
		return 0;
	if (n < 8 || n > HASH_HEX_LEN)
		return err_set(e, "'%s': give a block hash or a prefix of at least 8 hex digits", hex);
	/* The prefix bounds the range [prefix00…, prefixff…]. */
	{
		char a[HASH_HEX_LEN + 1], b[HASH_HEX_LEN + 1];

		memset(a, '0', HASH_HEX_LEN);
		memset(b, 'f', HASH_HEX_LEN);
		memcpy(a, hex, n);
		memcpy(b, hex, n);
		a[HASH_HEX_LEN] = b[HASH_HEX_LEN] = '\0';
		if (hex_decode(a, lo, HASH_LEN) < 0 || hex_decode(b, hi, HASH_LEN) < 0)
			return err_set(e, "'%s' is not hexadecimal", hex);
	}
	st = db_prepare(bs->d->db, "SELECT hash FROM blocks WHERE hash BETWEEN ? AND ? LIMIT 2", e);
	if (st == NULL)
		return -1;
	sqlite3_bind_blob(st, 1, lo, HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, hi, HASH_LEN, SQLITE_STATIC);
	while (sqlite3_step(st) == SQLITE_ROW) {
		if (found++ == 0)
			memcpy(hash, sqlite3_column_blob(st, 0), HASH_LEN);
	}
	sqlite3_finalize(st);
	if (found == 0)
		return err_set(e, "no block matches '%s'", hex);
	if (found > 1)
		return err_set(e, "'%s' matches more than one block; give more digits", hex);
	return 0;
}

int
blockstore_incref(struct blockstore *bs, const uint8_t hash[HASH_LEN], struct err *e)
{
	char hex[HASH_HEX_LEN + 1];

	if (bs_incref(bs, hash, e) < 0)
		return -1;
	if (sqlite3_changes(db_handle(bs->d->db)) != 1) {
		block_hex(hash, hex);
		return err_set(e, "block %s: no such block", hex);
	}
	return 0;
}

int
blockstore_decref(struct blockstore *bs, const uint8_t hash[HASH_LEN], int64_t *left,
    struct err *e)
{
	struct block_info info;
	sqlite3_stmt *st;
	uint64_t now = clock_real_ms();
	char hex[HASH_HEX_LEN + 1];
	int found = blockstore_stat(bs, hash, &info, e);

	block_hex(hash, hex);
	if (found < 0)
		return -1;
	if (found == 0)
		return err_set(e, "block %s: no such block", hex);
	if (info.refcount <= 0)
		return err_set(e, "block %s has no references left", hex);
	if (db_begin(bs->d->db, e) < 0)
		return -1;
	st = db_stmt(bs->d->db, DB_BLOCK_DECREF);
	sqlite3_bind_blob(st, 1, hash, HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)now);
	if (sqlite3_step(st) != SQLITE_DONE) {
		err_set(e, "state.db: drop reference: %s", sqlite3_errmsg(db_handle(bs->d->db)));
		db_stmt_done(st);
		goto fail;
	}
	db_stmt_done(st);
	*left = info.refcount - 1;
	if (*left == 0 && resyncq_enqueue(bs->q, hash,
	    now + bs->d->cfg.blocks.gc_delay_ms, e) < 0)
		goto fail;
	return db_commit(bs->d->db, e);
fail:
	db_rollback(bs->d->db);
	return -1;
}

/* ---- deletion (collect, purge) --------------------------------------- */

struct del_op {
	struct blockstore *bs;
	uint8_t hash[HASH_LEN];
	char path[PATH_MAX + 80];
	int failed;
	char err[ERR_MSG_MAX];
	block_done_cb cb;
	void *arg;
	int slow;                       /* fault injection: wait before unlink */
};

static void
bs_del_work(void *arg)
{
	struct del_op *op = arg;
	char dir[PATH_MAX + 80];
	size_t n = strlen(op->path);

	if (op->slow)
		usleep(100 * 1000);

	/* Both spellings: compression may have changed since it was stored. */
	if (unlink(op->path) < 0 && errno != ENOENT) {
		op->failed = 1;
		snprintf(op->err, sizeof(op->err), "unlink %s: %s", op->path, strerror(errno));
		return;
	}
	{
		char alt[PATH_MAX + 96];

		/* The .corrupted copy a read set aside goes with the block. */
		snprintf(alt, sizeof(alt), "%s.corrupted", op->path);
		unlink(alt);
		if (n > 4 && strcmp(op->path + n - 4, ".zst") == 0)
			op->path[n - 4] = '\0';
		else
			strncat(op->path, ".zst", sizeof(op->path) - n - 1);
		unlink(op->path);
		snprintf(alt, sizeof(alt), "%s.corrupted", op->path);
		unlink(alt);
	}
	blockfile_dirname(op->path, dir, sizeof(dir));
	fdio_fsync_dir(dir);
}

static void
bs_del_done(void *arg)
{
	struct del_op *op = arg;

	bs_busy_del(op->bs, op->hash);
	op->cb(op->arg, op->failed ? -1 : 1, op->failed ? op->err : NULL);
	free(op);
}

/* Deletes the row (already decided), then the file off the loop.  The
 * hash is busy until the file is gone, so no put can race the unlink. */
static int
bs_delete(struct blockstore *bs, const uint8_t hash[HASH_LEN], const char *cond,
    block_done_cb cb, void *arg, int64_t *refs, struct err *e)
{
	struct del_op *op;
	struct block_info info;
	sqlite3_stmt *st;
	char sql[160];
	int found = blockstore_stat(bs, hash, &info, e);

	if (found <= 0)
		return found < 0 ? -1 : 0;
	if (bs_busy(bs, hash))
		return 0;
	if (bs_busy_reserve(bs) < 0 || (op = calloc(1, sizeof(*op))) == NULL)
		return err_set(e, "out of memory");
	snprintf(sql, sizeof(sql), "DELETE FROM blocks WHERE hash = ? %s", cond);
	if ((st = db_prepare(bs->d->db, sql, e)) == NULL) {
		free(op);
		return -1;
	}
	sqlite3_bind_blob(st, 1, hash, HASH_LEN, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE) {
		sqlite3_finalize(st);
		free(op);
		return err_set(e, "state.db: delete block: %s", sqlite3_errmsg(db_handle(bs->d->db)));
	}
	sqlite3_finalize(st);
	if (sqlite3_changes(db_handle(bs->d->db)) == 0) {
		free(op);
		return 0;
	}
	bs->blocks--;
	bs->bytes -= info.size;
	bs->budget.used -= info.stored < bs->budget.used ? info.stored : bs->budget.used;
	*refs = info.refcount;
	op->bs = bs;
	memcpy(op->hash, hash, HASH_LEN);
	op->cb = cb;
	op->arg = arg;
	if (info.inline_) {
		op->cb(op->arg, 1, NULL);
		free(op);
		return 1;
	}
	bs_path(bs, hash, info.compressed, op->path, sizeof(op->path));
#ifdef FAULT_INJECTION
	op->slow = bs->slow_delete;
#endif
	bs_busy_add(bs, hash);
	if (io_submit(bs->d->io, bs_del_work, bs_del_done, op) < 0) {
		bs_busy_del(bs, hash);
		free(op);
		return err_set(e, "out of memory");
	}
	return 1;
}

static void
bs_noop_done(void *arg, int result, const char *error)
{
	(void)arg;
	if (result < 0)
		log_warn("%s", error);
}

void
blockstore_collect(struct blockstore *bs, const uint8_t hash[HASH_LEN], uint64_t now_ms,
    block_done_cb cb, void *arg)
{
	char cond[96];
	int64_t refs;
	struct err e;
	int rc;

	snprintf(cond, sizeof(cond), "AND refcount = 0 AND zero_since_ms <= %" PRIu64,
	    now_ms - (now_ms > bs->d->cfg.blocks.gc_delay_ms ? bs->d->cfg.blocks.gc_delay_ms : now_ms));
	rc = bs_delete(bs, hash, cond, cb, arg, &refs, &e);
	if (rc <= 0) {
		cb(arg, rc, rc < 0 ? e.msg : NULL);
		return;
	}
	/* Gone on purpose, row first: its error goes with the row, before
	 * the file's unlink (off the loop) completes, so that no answer
	 * ever lists an error for a block stat no longer knows. */
	resyncq_collected(bs->q, hash);
}

int
blockstore_purge(struct blockstore *bs, const uint8_t hash[HASH_LEN], int64_t *refs,
    struct err *e)
{
	char hex[HASH_HEX_LEN + 1];
	int rc;

	block_hex(hash, hex);
	if (bs_busy(bs, hash))
		return err_set(e, "block %s is being deleted already", hex);
	rc = bs_delete(bs, hash, "", bs_noop_done, NULL, refs, e);
	if (rc < 0)
		return -1;
	if (rc == 0)
		return err_set(e, "block %s: no such block", hex);
	resyncq_forget(bs->q, hash);
	log_warn("block %s purged with %lld reference%s", hex, (long long)*refs,
	    *refs == 1 ? "" : "s");
	return 0;
}

/* ---- lifecycle ------------------------------------------------------- */

/* A put killed after it renamed its file into place but before the row
 * that names it committed leaves a file nothing refers to and no budget
 * counts.  Its reservation, still in the table, names the hash: remove
 * every spelling of that block's file that no row names.  (A spelling a
 * row does name holds the same bytes, written and fsynced before the
 * rename, and stays.)  Runs before budget_init() deletes the
 * reservations; nothing else in the store is walked. */
static void
bs_reconcile(struct blockstore *bs)
{
	sqlite3_stmt *st = db_prepare(bs->d->db, "SELECT r.hash, b.compressed, b.data IS NULL "
	    "FROM reservations r LEFT JOIN blocks b ON b.hash = r.hash "
	    "WHERE r.store = 'blocks' AND r.hash IS NOT NULL", NULL);
	int n = 0;

	while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
		int row = sqlite3_column_type(st, 1) != SQLITE_NULL;
		int named_z = row && sqlite3_column_int(st, 2) ? sqlite3_column_int(st, 1) : -1;
		char path[PATH_MAX + 80], dir[PATH_MAX + 80];

		if (sqlite3_column_bytes(st, 0) != HASH_LEN)
			continue;
		for (int z = 0; z <= 1; z++) {
			if (z == named_z)
				continue;
			bs_path(bs, sqlite3_column_blob(st, 0), z, path, sizeof(path));
			if (unlink(path) == 0) {
				log_info("blocks: removed %s, left without its row by an "
				    "interrupted put", path);
				blockfile_dirname(path, dir, sizeof(dir));
				fdio_fsync_dir(dir);
				n++;
			}
		}
	}
	sqlite3_finalize(st);
	if (n > 0)
		log_info("blocks: removed %d block file%s left by interrupted puts", n,
		    n == 1 ? "" : "s");
}

/* Temp files are never named by a row: whatever a crash left is garbage. */
static void
bs_clean_tmp(struct blockstore *bs)
{
	DIR *dir = opendir(bs->tmpdir);
	struct dirent *de;
	int n = 0;

	if (dir == NULL)
		return;
	while ((de = readdir(dir)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (unlinkat(dirfd(dir), de->d_name, 0) == 0)
			n++;
	}
	closedir(dir);
	if (n > 0) {
		fdio_fsync_dir(bs->tmpdir);
		log_info("blocks: removed %d temp file%s left by an interrupted write", n,
		    n == 1 ? "" : "s");
	}
}

struct blockstore *
blockstore_new(struct farmd *d, struct err *e)
{
	struct blockstore *bs = calloc(1, sizeof(*bs));
	sqlite3_stmt *st;
	uint64_t stored = 0, stale;

	if (bs == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	bs->d = d;
	snprintf(bs->dir, sizeof(bs->dir), "%s/blocks", d->state_dir);
	snprintf(bs->tmpdir, sizeof(bs->tmpdir), "%s/tmp", bs->dir);
	if ((mkdir(bs->dir, 0750) < 0 && errno != EEXIST) ||
	    (mkdir(bs->tmpdir, 0750) < 0 && errno != EEXIST)) {
		err_sys(e, "%s", bs->dir);
		free(bs);
		return NULL;
	}
	bs_clean_tmp(bs);
	bs_reconcile(bs);
	st = db_prepare(d->db, "SELECT COUNT(*), COALESCE(SUM(size), 0), "
	    "COALESCE(SUM(stored), 0) FROM blocks", e);
	if (st == NULL) {
		free(bs);
		return NULL;
	}
	if (sqlite3_step(st) == SQLITE_ROW) {
		bs->blocks = (uint64_t)sqlite3_column_int64(st, 0);
		bs->bytes = (uint64_t)sqlite3_column_int64(st, 1);
		stored = (uint64_t)sqlite3_column_int64(st, 2);
	}
	sqlite3_finalize(st);
	if (budget_init(&bs->budget, d->db, "blocks", d->cfg.blocks.budget, stored, &stale, e) < 0 ||
	    (bs->q = resyncq_new(d, e)) == NULL) {
		free(bs);
		return NULL;
	}
	return bs;
}

void
blockstore_free(struct blockstore *bs)
{
	if (bs == NULL)
		return;
	resyncq_free(bs->q);
	free(bs->busy);
	free(bs);
}

struct resyncq *
blockstore_resyncq(struct blockstore *bs)
{
	return bs->q;
}

void
blockstore_stats(const struct blockstore *bs, struct blockstore_stats *out)
{
	out->blocks = bs->blocks;
	out->bytes = bs->bytes;
	out->stored = bs->budget.used;
	out->bytes_read = bs->bytes_read;
	out->bytes_written = bs->bytes_written;
	out->corruptions = bs->corruptions;
	out->missing = bs->missing;
	out->reserved = bs->budget.reserved;
	out->budget = bs->budget.limit;
}

void
blockstore_set_budget(struct blockstore *bs, uint64_t limit)
{
	bs->budget.limit = limit;
}

#ifdef FAULT_INJECTION
int
blockstore_arm_fault(struct blockstore *bs, const char *fault)
{
	if (strcmp(fault, "commit") == 0)
		bs->crash_before_commit = 1;
	else if (strcmp(fault, "slow-delete") == 0)
		bs->slow_delete = 1;
	else
		return -1;
	return 0;
}
#endif
