/*
 * sread.c: sector read: pread the piece (I/O pool) → decode (encode
 * worker) → piece root (I/O pool) → reply.
 *
 * Invariants:
 *  - Only a sector that holds plotted data and is not in flight is read;
 *    the row read at the start is what the bytes are judged against.
 *  - A piece whose root does not match marks the sector damaged only if
 *    the row and the job are unchanged since the start: the sector may
 *    have been replotted meanwhile.
 *  - Every struct sread is on p->reads until its one reply.
 */
#include "sread.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "encode_v1.h"
#include "farm.h"
#include "farmd.h"
#include "io.h"
#include "merkle.h"
#include "plot_int.h"
#include "pool.h"
#include "sector.h"
#include "sjob.h"

/* A sector read in flight (pool job or I/O). */
struct sread {
	struct plot *p;
	struct farm *f;
	uint32_t idx, offset;
	struct sector_row row;
	uint8_t sector_id[HASH_LEN];
	uint64_t piece_index;
	uint8_t root[HASH_LEN];
	uint8_t *buf;
	int io_err;
	int root_ok;
	uint64_t job_id;
	plot_read_cb cb;
	void *arg;
	TAILQ_ENTRY(sread) link;
};

static void
sread_finish(struct sread *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Replies (an error when fmt is set) and frees. */
static void
sread_finish(struct sread *r, const char *fmt, ...)
{
	char msg[ERR_MSG_MAX];
	va_list ap;

	TAILQ_REMOVE(&r->p->reads, r, link);
	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		free(r->buf);
		r->cb(r->arg, NULL, 0, msg);
	} else {
		r->cb(r->arg, r->buf, r->f->g.piece_size, NULL);
	}
	free(r);
}

static void
sread_root_work(void *arg)
{
	struct sread *r = arg;
	uint8_t root[HASH_LEN];

	r->root_ok = merkle_root(r->buf, r->f->g.piece_size / 32, root) == 0 &&
	    memcmp(root, r->root, HASH_LEN) == 0;
}

static void
sread_root_done(void *arg)
{
	struct sread *r = arg;

	if (r->root_ok) {
		sread_finish(r, NULL);
		return;
	}
	if (r->p->stopping || !sjob_sector_unchanged(r->p, r->f, r->idx, &r->row)) {
		sread_finish(r, "sector %" PRIu32 "/%" PRIu32 " changed while it was read; try "
		    "again", r->f->id, r->idx);
		return;
	}
	sector_mark_damaged(r->p, r->f, r->idx, &r->row, "a decoded piece does not match its "
	    "piece root");
	sread_finish(r, "sector %" PRIu32 "/%" PRIu32 " piece offset %" PRIu32 " (piece %"
	    PRIu64 "): decoded bytes do not match the piece root; the sector is marked for "
	    "replotting", r->f->id, r->idx, r->offset, r->piece_index);
}

static void
sread_decode_cb(uint64_t job_id, const Farmd__JobResult *res, const char *error, void *arg)
{
	struct sread *r = arg;

	(void)job_id;
	(void)res;
	r->job_id = 0;
	/* r->buf now holds the decoded piece (lent to the pool). */
	if (error != NULL) {
		sread_finish(r, "decode: %s", error);
		return;
	}
	if (io_submit(r->p->d->io, sread_root_work, sread_root_done, r) < 0)
		sread_finish(r, "cannot queue the piece root check");
}

static void
sread_pread_work(void *arg)
{
	struct sread *r = arg;
	off_t off = (off_t)((uint64_t)r->idx * r->f->g.sector_size +
	    (uint64_t)r->offset * r->f->g.piece_size);
	ssize_t n = pread(r->f->fd, r->buf, r->f->g.piece_size, off);

	r->io_err = n < 0 ? errno : (uint64_t)n != r->f->g.piece_size ? EIO : 0;
}

static void
sread_pread_done(void *arg)
{
	struct sread *r = arg;
	struct pool_job_opts opts = { PLOT_JOB_ATTEMPTS, r->p->d->cfg.plotting.retry_delay_ms, 0 };
	struct err e;

	if (r->io_err) {
		sread_finish(r, "read %s/%s: %s", r->f->dir, FARMDIR_PLOT, strerror(r->io_err));
		return;
	}
	if (r->p->stopping) {
		sread_finish(r, "farmd is shutting down");
		return;
	}
	if ((r->job_id = pool_submit_encode_buf(r->p->d->pool, r->sector_id, r->offset,
	    &r->f->g.scrypt, r->buf, (uint32_t)r->f->g.piece_size, 1, 1, &opts,
	    sread_decode_cb, r, &e)) == 0)
		sread_finish(r, "decode: %s", e.msg);
}

void
plot_sector_read(struct plot *p, const char *farm, uint32_t sector, uint32_t offset,
    plot_read_cb cb, void *arg)
{
	struct sread *r = calloc(1, sizeof(*r));
	uint8_t hash[HASH_LEN];
	struct farm *f;
	struct err e;

	if (r == NULL) {
		cb(arg, NULL, 0, "out of memory");
		return;
	}
	r->p = p;
	r->cb = cb;
	r->arg = arg;
	TAILQ_INSERT_TAIL(&p->reads, r, link);
	if ((f = r->f = farm_lookup(p, farm, &e)) == NULL) {
		sread_finish(r, "sector read: %s", e.msg);
		return;
	}
	r->idx = sector;
	r->offset = offset;
	if (sector >= f->g.sectors) {
		sread_finish(r, "sector read: SECTOR %" PRIu32 " is not below %" PRIu32 " (farm %"
		    PRIu32 ")", sector, f->g.sectors, f->id);
		return;
	}
	if (offset >= f->g.pieces_in_sector) {
		sread_finish(r, "sector read: PIECE_OFFSET %" PRIu32 " is not below %" PRIu32,
		    offset, f->g.pieces_in_sector);
		return;
	}
	if (f->fd < 0) {
		sread_finish(r, "farm %" PRIu32 " is not usable: %s", f->id, f->error);
		return;
	}
	if (sector_get(p, f, r->idx, &r->row, &e) < 0) {
		sread_finish(r, "%s", e.msg);
		return;
	}
	if (!r->row.have_checksum || sjob_find(p, f, r->idx) != NULL) {
		sread_finish(r, "sector %" PRIu32 "/%" PRIu32 " holds no plotted data now (%s)",
		    f->id, r->idx, sjob_find(p, f, r->idx) ? "being plotted" :
		    sector_names[r->row.state]);
		return;
	}
	encode_v1_sector_id(f->pkh, r->idx, r->row.history_size, r->sector_id);
	if (sector_piece(p, f, r->sector_id, r->row.history_size, r->offset, &r->piece_index,
	    hash, r->root, &e) < 0) {
		sread_finish(r, "%s", e.msg);
		return;
	}
	if ((r->buf = malloc(f->g.piece_size)) == NULL) {
		sread_finish(r, "out of memory");
		return;
	}
	if (io_submit(p->d->io, sread_pread_work, sread_pread_done, r) < 0)
		sread_finish(r, "cannot queue the read");
}

void
sread_cancel_all(struct plot *p)
{
	struct sread *r, *rt;

	for (r = TAILQ_FIRST(&p->reads); r != NULL; r = rt) {
		rt = TAILQ_NEXT(r, link);
		if (r->job_id != 0) {
			pool_cancel(p->d->pool, r->job_id);
			sread_finish(r, "farmd is shutting down");
		}
	}
}
