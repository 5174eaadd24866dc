/*
 * sjob.c: the sector pipeline (sjob.h has the steps).
 *
 * Invariants:
 *  - A sector row says 'plotting' (checksum NULL) from before the first
 *    byte of its range is written until the fdatasync that ends the
 *    rewrite has returned; only then does a commit give it a checksum.
 *    So after a crash at any moment every row with a checksum describes
 *    bytes that are on disk, and every 'plotting' row is replotted.
 *  - The machine is the table sjob_states (run by fsm.c: fsm_enter() is
 *    the one place a job's state changes); a step that waits for
 *    completions returns FSM_ASYNC and the last completion
 *    (sjob_complete) moves the job on.  The first failure is the reason
 *    shown.  The state names are internal (the transition log); what
 *    `plot progress` shows is the separate table sjob_phases.
 *
 * The pipeline works in batches of at most PLOT_BATCH_BYTES so memory
 * stays bounded for large sectors (a production sector is 1000 MiB);
 * a demo sector (4 MiB) is one batch.  Each batch is split into encode
 * jobs of a few pieces (at most [workers] encode_buffer bytes each) so W
 * workers keep W cores busy.  A part is a fill job (pool.h): once the pool
 * has placed it in a worker's shared buffer, its pieces are read by one
 * I/O task straight into that place and verified there (sjob_part_fill:
 * no allocation, no copy in; a mismatch there is confirmed by a private
 * read before a block is called corrupt, since the worker can write into
 * its buffer at any time), the worker encodes them in place, and the pool
 * copies the encoded pieces into the batch buffer, once, when it is
 * answered (wbuf.h).  The batch is hashed and written from there, with
 * O_DIRECT: from the batch buffer to the disk, not through fresh
 * page-cache pages (sjob_mark says why).  A retried part reads its pieces
 * again: the block store, not a buffer, is where its input lives.
 *
 * A local batch streams, without a barrier between its steps: every
 * part's job is submitted at once and read when it gets a worker (so at
 * most two parts per worker are read ahead of their encoding), and
 * encoded parts are written to plot.bin and hashed in piece order (one write at a time: the checksum is one SHA-256 stream) while
 * later parts still encode.  What is left after the last part is
 * encoded is its own write, the fdatasync and the commit.  A remote
 * attempt's batch (rplot.h) goes READ → WRITE whole, as before.
 *
 * Memory and overlap: a job holds one batch buffer; the pool is shared
 * by all jobs, so while one sector is written and synced (I/O pool) the
 * workers encode the next sector's batch ([plotting] max_sectors_per_farm
 * jobs per farm are in flight).  The bound is max_sectors_per_farm ×
 * farms × PLOT_BATCH_BYTES for batches, plus PLOT_SPARE_BUFS kept batch
 * buffers, plus encode workers × encode_buffer of shared memory.  Batch
 * buffers are reused from one job to the next (no fresh pages per sector).
 */
#include "sjob.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "blockstore.h"
#include "clock.h"
#include "db.h"
#include "encode_v1.h"
#include "farmd.h"
#include "fdio.h"
#include "history.h"
#include "io.h"
#include "log.h"
#include "plot_int.h"
#include "pool.h"
#include "rplot.h"
#include "sector.h"

#define PLOT_BATCH_BYTES (16u << 20)
/* Pieces per encode job (and per read of the block store, so at most
 * BLOCKSTORE_BATCH_MAX): one full pass of the widest scrypt kernel (16
 * lanes of AVX-512, scrypt.h); an 8-piece job ran half-empty passes that
 * cost most of a full one.  A job's frame also stays within max_frame
 * (sjob_encode). */
#define PLOT_JOB_PIECES_MAX 16
_Static_assert(PLOT_JOB_PIECES_MAX <= BLOCKSTORE_BATCH_MAX, "a part is one read");
/* Batch buffers are aligned for huge pages. */
#define SJOB_HUGE (2u << 20)
/* What a direct write of plot.bin needs aligned: buffer, offset, length
 * (the file system's block; every device's logical block divides it). */
#define SJOB_DIO_ALIGN 4096u

/* The public phase of each state (`plot progress`). */
static const char *const sjob_phases[SJOB_NSTATES] = {
	[SJOB_MARK] = "queued", [SJOB_READ] = "reading", [SJOB_ENCODE] = "encoding",
	[SJOB_WRITE] = "writing", [SJOB_SYNC] = "writing", [SJOB_COMMIT] = "written",
	[SJOB_DONE] = "done", [SJOB_ERROR] = "error", [SJOB_WAIT] = "waiting",
};

/* One encode job of a batch. */
struct sjob_part {
	struct sjob *j;
	uint32_t first;                 /* piece offset within the batch */
	uint32_t n;
	uint64_t job_id;                /* 0 once answered */
	uint64_t fill_id;               /* the job its pieces are being read for */
	uint32_t unread;                /* pieces of this read not returned yet */
	int fill_failed;                /* a piece of this read failed */
	int filled;                     /* its read is over (or moot): counted once */
	int encoded;
};

struct sjob *
sjob_find(struct plot *p, const struct farm *f, uint32_t idx)
{
	struct sjob *j;

	TAILQ_FOREACH(j, &p->jobs, link)
		if (j->f == f && j->index == idx)
			return j;
	return NULL;
}

const char *
sjob_phase(const struct sjob *j)
{
	/* A streaming batch is writing once its last part is encoded. */
	if (j->m.state == SJOB_ENCODE && j->nparts > 0 && j->parts_encoded == j->nparts)
		return "writing";
	return sjob_phases[j->m.state];
}

int
sjob_waiting(const struct sjob *j)
{
	return j->m.state == SJOB_WAIT;
}

int
sjob_sector_unchanged(struct plot *p, struct farm *f, uint32_t idx,
    const struct sector_row *then)
{
	struct sector_row now;
	struct err e;

	return sjob_find(p, f, idx) == NULL && sector_get(p, f, idx, &now, &e) == 0 &&
	    now.have_checksum && then->have_checksum &&
	    memcmp(now.checksum, then->checksum, HASH_LEN) == 0 &&
	    now.history_size == then->history_size && now.state == then->state;
}

/* A progress event: kept in the ring `plot progress` shows. */
static void
sjob_event(struct sjob *j, const char *event, uint64_t took_us)
{
	struct plot_event *ev = &j->p->events[j->p->nevents++ % PLOT_EVENTS];

	ev->ms = clock_real_ms();
	ev->farm = j->f->id;
	ev->index = j->index;
	ev->event = event;
	ev->took_ms = took_us / 1000;
	log_debug("sector %" PRIu32 "/%" PRIu32 ": %s (%" PRIu64 " ms)", j->f->id, j->index,
	    event, took_us / 1000);
}

/* Closes the current phase's timer into phase ph. */
static uint64_t
sjob_phase_end(struct sjob *j, int ph)
{
	uint64_t now = clock_mono_us(), took = now - j->t_phase_us;

	j->phase_us[ph] += took;
	j->t_phase_us = now;
	return took;
}

static void
sjob_fail(struct sjob *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
sjob_fail(struct sjob *j, const char *fmt, ...)
{
	va_list ap;

	if (j->failed)
		return;                 /* the first failure is the reason */
	j->failed = 1;
	va_start(ap, fmt);
	vsnprintf(j->error, sizeof(j->error), fmt, ap);
	va_end(ap);
}

/* A new batch buffer, on transparent huge pages where the kernel offers
 * them (madvise mode): its first touch is then two faults per 4 MiB, not
 * a thousand. */
static uint8_t *
sjob_buf_alloc(size_t len)
{
	size_t span = len + SJOB_HUGE;
	uint8_t *m, *b;

	m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	/* Aligned to a huge page: the rest of the span goes back. */
	b = (uint8_t *)(((uintptr_t)m + SJOB_HUGE - 1) & ~(uintptr_t)(SJOB_HUGE - 1));
	if (b > m)
		munmap(m, (size_t)(b - m));
	if (m + span > b + len)
		munmap(b + len, (size_t)(m + span - (b + len)));
	(void)madvise(b, len, MADV_HUGEPAGE);
	return b;
}

static void
sjob_buf_release(uint8_t *b, size_t len)
{
	if (b != NULL)
		munmap(b, len);
}

/* A batch buffer of len bytes: a kept one of that size if there is one. */
static uint8_t *
sjob_buf_get(struct plot *p, size_t len)
{
	for (int i = 0; i < p->nspare; i++)
		if (p->spare[i].len == len) {
			uint8_t *b = p->spare[i].buf;

			p->spare[i] = p->spare[--p->nspare];
			return b;
		}
	return sjob_buf_alloc(len);
}

static void
sjob_buf_put(struct plot *p, uint8_t *buf, size_t len)
{
	if (buf == NULL)
		return;
	if (p->nspare == PLOT_SPARE_BUFS) {
		/* Keep the newest: the oldest is likeliest of a size no
		 * longer plotted. */
		sjob_buf_release(p->spare[0].buf, p->spare[0].len);
		p->spare[0] = p->spare[--p->nspare];
	}
	p->spare[p->nspare].buf = buf;
	p->spare[p->nspare++].len = len;
}

void
sjob_spares_free(struct plot *p)
{
	while (p->nspare > 0) {
		p->nspare--;
		sjob_buf_release(p->spare[p->nspare].buf, p->spare[p->nspare].len);
	}
}

void
sjob_free(struct sjob *j)
{
	struct plot *p = j->p;

	TAILQ_REMOVE(&p->jobs, j, link);
	j->f->in_flight--;
	if (j->fd >= 0)
		close(j->fd);
	if (j->timer != NULL)
		event_free(j->timer);
	rplot_job_free(j->rp);
	EVP_MD_CTX_free(j->sha);
	free(j->parts);
	sjob_buf_put(p, j->buf, (size_t)j->batch_max * j->f->g.piece_size);
	free(j);
}

/* A completion of the current step.  The last one moves the job on, or
 * frees it when plotting is stopping. */
static void
sjob_complete(struct sjob *j, enum sjob_state next)
{
	if (--j->pending > 0)
		return;
	if (j->p->stopping) {
		sjob_free(j);
		return;
	}
	fsm_enter(&j->m, j, j->failed ? SJOB_ERROR : (int)next);
}

static int
sjob_mark(void *arg)
{
	struct sjob *j = arg;
	struct plot *p = j->p;
	char path[PATH_MAX + 16];
	struct err e;

	j->failed = 0;
	j->error[0] = '\0';
	j->history_size = history_size(p->d->history);
	if (j->history_size == 0) {
		sjob_fail(j, "history is empty");
		return SJOB_ERROR;
	}
	encode_v1_sector_id(j->f->pkh, j->index, j->history_size, j->sector_id);
	/* Fresh for each attempt, so an earlier attempt's error is not
	 * reported to (or hidden from) this one. */
	if (j->fd >= 0)
		close(j->fd);
	snprintf(path, sizeof(path), "%s/%s", j->f->dir, FARMDIR_PLOT);
	/* O_DIRECT: a sector goes from the batch buffer to the disk without
	 * passing through the page cache, where every write of a plot would
	 * take fresh pages (on this kind of VM a first touch costs ~13 us a
	 * page: it was 44% of the supervisor's CPU while plotting) and push
	 * out what is worth caching; plot.bin is read rarely (proofs, scrub).
	 * A file system without O_DIRECT gets buffered writes. */
	j->fd = open(path, O_WRONLY | O_CLOEXEC | O_DIRECT);
	if (j->fd < 0 && errno == EINVAL)
		j->fd = open(path, O_WRONLY | O_CLOEXEC);
	if (j->fd < 0) {
		sjob_fail(j, "%s: %s", path, strerror(errno));
		return SJOB_ERROR;
	}
	if (sector_move(p, j->f, j->index, SECTOR_PLOTTING, j->history_size, NULL, -1,
	    SECTOR_AT_CLEAR, &e) < 0) {
		sjob_fail(j, "%s", e.msg);
		return SJOB_ERROR;
	}
	if (EVP_DigestInit_ex(j->sha, EVP_sha256(), NULL) != 1) {
		sjob_fail(j, "SHA-256 init failed");
		return SJOB_ERROR;
	}
	j->batch_first = 0;
	j->batch_n = 0;
	j->pieces_done = 0;
	j->rp = rplot_attempt(p->d->rplot, j->rp, p, j->f, j->index, j->history_size,
	    j->sector_id);
	j->t_start_us = j->t_phase_us = clock_mono_us();
	memset(j->phase_us, 0, sizeof(j->phase_us));
	sjob_event(j, "queued", 0);
	return SJOB_READ;
}

struct sjob_piece {
	struct sjob *j;
	uint32_t slot;                  /* within the batch */
	uint64_t piece_index;
};

static void sjob_settle(struct sjob *j);

/* A part's read is over, however it went (counted once: READ ends at the
 * first, and a retried part is read again without counting). */
static void
sjob_part_read_over(struct sjob_part *part)
{
	if (!part->filled) {
		part->filled = 1;
		part->j->parts_filled++;
	}
}

static void
sjob_piece_cb(void *arg, uint8_t *data, size_t len, enum block_status st, const char *error)
{
	struct sjob_piece *t = arg;
	struct sjob *j = t->j;
	struct sjob_part *part = &j->parts[t->slot / j->per];

	/* Read into the worker's buffer itself (sjob_part_fill). */
	(void)st;
	(void)data;
	(void)len;
	if (error != NULL) {
		sjob_fail(j, "piece %" PRIu64 ": %s; the sector waits for resync", t->piece_index,
		    error);
		part->fill_failed = 1;
	}
	free(t);
	if (--part->unread == 0) {
		/* The part's input is in place, or its job ends here.  This
		 * read's hold on j->pending lasts across the hand-off, whose
		 * callbacks may settle j. */
		sjob_part_read_over(part);
		if (!j->failed && j->parts_filled == 1)
			sjob_event(j, "encoding", 0);
		pool_filled(j->p->d->pool, part->fill_id, part->fill_failed || j->failed ?
		    "not encoded: the sector failed" : NULL);
	}
	j->pending--;
	sjob_settle(j);
}

/* A batch from the remote plotter, or word that this attempt plots
 * locally after all (no plotter answered: the first batch is read here). */
static void
sjob_remote_cb(void *arg, enum rplot_fill st, const char *error)
{
	struct sjob *j = arg;

	if (st == RPLOT_LOCAL && !j->p->stopping) {
		rplot_job_free(j->rp);
		j->rp = NULL;
		j->batch_n = 0;
		j->pending = 0;
		fsm_enter(&j->m, j, SJOB_READ);
		return;
	}
	if (st == RPLOT_FILLED)
		j->pieces_done += j->batch_n;
	else
		sjob_fail(j, "%s", error ? error : "remote plotting stopped");
	sjob_complete(j, SJOB_WRITE);
}

/* Splits the batch into encode jobs: per pieces each (the last may have
 * fewer), so W workers share it and a job fits a worker's buffer. */
static void
sjob_parts(struct sjob *j)
{
	struct plot *p = j->p;
	uint32_t workers = p->d->cfg.workers.encode ? p->d->cfg.workers.encode : 1;
	uint32_t per = (j->batch_n + workers - 1) / workers;

	if (per > PLOT_JOB_PIECES_MAX)
		per = PLOT_JOB_PIECES_MAX;
	if (per > pool_buffer_size(p->d->pool) / j->f->g.piece_size)
		per = (uint32_t)(pool_buffer_size(p->d->pool) / j->f->g.piece_size);
	if (per == 0)
		per = 1;
	j->per = per;
	j->nparts = 0;
	for (uint32_t first = 0; first < j->batch_n; first += per) {
		struct sjob_part *part = &j->parts[j->nparts++];

		part->j = j;
		part->first = first;
		part->n = j->batch_n - first < per ? j->batch_n - first : per;
		part->job_id = part->fill_id = 0;
		part->unread = 0;
		part->fill_failed = part->filled = part->encoded = 0;
	}
	j->parts_encoded = 0;
	j->parts_filled = 0;
	j->write_next = 0;
	j->writing = 0;
}

static void sjob_part_fill(uint64_t job_id, uint8_t *dst, size_t len, void *arg);
static void sjob_encode_cb(uint64_t job_id, const Farmd__JobResult *res, const char *error,
    void *arg);

/* READ: the pieces of the next batch, each part's read into its worker's
 * buffer when the pool places its job there (sjob_part_fill), each piece
 * verified by the block store (a missing or corrupt one is reported to
 * resync there); ENCODE begins once the first part is read (the rest are
 * read as workers take them); or, for a remote attempt, the batch encoded by the plotter (then on to
 * WRITE). */
static int
sjob_read(void *arg)
{
	struct sjob *j = arg;
	struct plot *p = j->p;
	struct farm *f = j->f;
	struct pool_job_opts opts = { PLOT_JOB_ATTEMPTS, p->d->cfg.plotting.retry_delay_ms, 0 };
	struct err e;

	if (j->batch_n > 0)
		sjob_phase_end(j, PH_WRITE);
	j->batch_first += j->batch_n;
	j->batch_n = f->g.pieces_in_sector - j->batch_first;
	if (j->batch_n > j->batch_max)
		j->batch_n = j->batch_max;
	sjob_event(j, "reading", 0);
	j->nparts = 0;
	j->pending = 1;                 /* held until every part is submitted */
	if (j->rp != NULL) {
		rplot_fill(j->rp, j->buf, j->batch_first, j->batch_n, sjob_remote_cb, j);
		return FSM_ASYNC;
	}
	sjob_parts(j);
	/* Each part waits for a worker; its pieces are read then, into the
	 * place the pool gave it (sjob_part_fill). */
	for (uint32_t k = 0; k < j->nparts && !j->failed; k++) {
		struct sjob_part *part = &j->parts[k];

		part->job_id = pool_submit_encode_fill(p->d->pool, j->sector_id,
		    j->batch_first + part->first, &f->g.scrypt,
		    j->buf + (uint64_t)part->first * f->g.piece_size, (uint32_t)f->g.piece_size,
		    part->n, &opts, sjob_part_fill, sjob_encode_cb, part, &e);
		if (part->job_id == 0)
			sjob_fail(j, "encode: %s", e.msg);
		else
			j->pending++;
	}
	for (uint32_t k = 0; k < j->nparts; k++)
		if (j->parts[k].job_id == 0)
			sjob_part_read_over(&j->parts[k]);      /* never submitted */
	j->pending--;
	if (j->pending == 0)
		return SJOB_ERROR;
	return FSM_ASYNC;
}

/* The pool placed a part's job in a worker's buffer at dst: its pieces,
 * looked up in one read transaction (on its own each statement takes and
 * drops SQLite's WAL read lock: fcntl calls on state.db-shm), are read
 * there by one I/O task, verified where they land (shared: a mismatch is
 * confirmed privately, blockstore.h). */
static void
sjob_part_fill(uint64_t job_id, uint8_t *dst, size_t len, void *arg)
{
	struct sjob_part *part = arg;
	struct sjob *j = part->j;
	struct plot *p = j->p;
	struct farm *f = j->f;
	uint8_t hashes[BLOCKSTORE_BATCH_MAX][HASH_LEN], root[HASH_LEN];
	void *args[BLOCKSTORE_BATCH_MAX];
	uint32_t n = 0;
	struct err e;
	int tx;

	(void)len;
	/* After a failure the pieces are still read, not encoded: every bad
	 * piece of the batch is reported to resync by one attempt. */
	if (p->stopping) {
		pool_filled(p->d->pool, job_id, "not encoded: farmd is stopping");
		return;
	}
	/* Held while the transaction is open: what the reads call back at
	 * once (an inline block, one not found) cannot move j on. */
	j->pending++;
	tx = db_begin(p->d->db, &e) == 0;
	for (; n < part->n; n++) {
		struct sjob_piece *t;
		uint64_t pi;

		if (sector_piece(p, f, j->sector_id, j->history_size,
		    j->batch_first + part->first + n, &pi, hashes[n], root, &e) < 0) {
			sjob_fail(j, "%s", e.msg);
			break;
		}
		if ((t = malloc(sizeof(*t))) == NULL) {
			sjob_fail(j, "out of memory");
			break;
		}
		t->j = j;
		t->slot = part->first + n;
		t->piece_index = pi;
		args[n] = t;
	}
	if (n == part->n) {
		part->fill_id = job_id;
		part->fill_failed = 0;
		part->unread = n;
		j->pending += n;
		blockstore_get_many_into(p->d->blocks, n, (const uint8_t (*)[HASH_LEN])hashes,
		    dst, (size_t)f->g.piece_size, 1, sjob_piece_cb, args);
	}
	if (tx && db_commit(p->d->db, &e) < 0)
		db_rollback(p->d->db);
	if (n < part->n) {
		while (n > 0)
			free(args[--n]);
		sjob_part_read_over(part);
		pool_filled(p->d->pool, job_id, "not encoded: the sector failed");
	}
	j->pending--;
	sjob_settle(j);
}

static void
sjob_encode_cb(uint64_t job_id, const Farmd__JobResult *res, const char *error, void *arg)
{
	struct sjob_part *part = arg;
	struct sjob *j = part->j;

	(void)job_id;
	(void)res;
	part->job_id = 0;
	sjob_part_read_over(part);      /* an attempt that ended unread */
	/* The pool took the answer out of the worker's buffer into ours,
	 * checked (wbuf.h): what is hashed and written is j->buf. */
	if (error != NULL) {
		sjob_fail(j, "encode: %s", error);
	} else {
		part->encoded = 1;
		j->parts_encoded++;
		j->pieces_done += part->n;
	}
	j->pending--;
	sjob_settle(j);
}

static void sjob_part_write_work(void *arg);
static void sjob_part_write_done(void *arg);

/* Starts what the batch's progress allows: the write of the next encoded
 * part in order (one at a time), which adds to j->pending. */
static void
sjob_pump(struct sjob *j)
{
	struct plot *p = j->p;

	if (j->failed || p->stopping)
		return;
	if (!j->failed && !j->writing && j->write_next < j->nparts &&
	    j->parts[j->write_next].encoded) {
		if (j->write_next == 0)
			sjob_event(j, "writing", 0);
#ifdef FAULT_INJECTION
		j->write_fault = p->write_fault;
		p->write_fault = 0;
#endif
		j->writing = 1;
		j->pending++;
		if (io_submit(p->d->io, sjob_part_write_work, sjob_part_write_done, j) < 0) {
			j->writing = 0;
			j->pending--;
			sjob_fail(j, "cannot queue the write");
		}
	}
}

/* After a completion: start what is now possible, and move on once the
 * batch is read (READ → ENCODE) and once nothing of it is outstanding. */
static void
sjob_settle(struct sjob *j)
{
	if (j->p->stopping) {
		if (j->pending == 0)
			sjob_free(j);
		return;
	}
	sjob_pump(j);
	if (j->m.state == SJOB_READ) {
		/* Encoding from the first part read: the rest are read as
		 * workers take them. */
		if (j->parts_filled > 0)
			fsm_enter(&j->m, j, SJOB_ENCODE);
		return;
	}
	if (j->m.state == SJOB_ENCODE && j->pending == 0)
		fsm_enter(&j->m, j, j->failed ? SJOB_ERROR : j->batch_first + j->batch_n <
		    j->f->g.pieces_in_sector ? SJOB_READ : SJOB_SYNC);
}

/* ENCODE: every piece of the batch is read (the parts' jobs are under
 * way or done); the batch ends when its last part is written. */
static int
sjob_encode(void *arg)
{
	struct sjob *j = arg;

	sjob_phase_end(j, PH_READ);
	sjob_pump(j);
	if (j->pending > 0)
		return FSM_ASYNC;
	if (j->failed)
		return SJOB_ERROR;
	return j->batch_first + j->batch_n < j->f->g.pieces_in_sector ? SJOB_READ : SJOB_SYNC;
}

/* I/O pool: a write of plot.bin, direct when the range allows it (a
 * range or file system that does not: the descriptor goes buffered). */
static int
sjob_pwrite(int fd, const uint8_t *b, size_t len, off_t off)
{
	int fl = fcntl(fd, F_GETFL);
	int direct = fl >= 0 && (fl & O_DIRECT);

	if (direct && (((uintptr_t)b | (uint64_t)off | len) & (SJOB_DIO_ALIGN - 1)) != 0 &&
	    fcntl(fd, F_SETFL, fl & ~O_DIRECT) == 0)
		direct = 0;
	if (fdio_pwrite_all(fd, b, len, off) == 0)
		return 0;
	if (!direct || errno != EINVAL || fcntl(fd, F_SETFL, fl & ~O_DIRECT) < 0)
		return -1;
	return fdio_pwrite_all(fd, b, len, off);
}

/* I/O pool: n pieces of the batch from piece first on, at their place in
 * plot.bin, and into the checksum (in order: one write at a time). */
static void
sjob_write_range(struct sjob *j, uint32_t first, uint32_t n)
{
	uint64_t ps = j->f->g.piece_size, len = (uint64_t)n * ps;
	off_t off = (off_t)((uint64_t)j->index * j->f->g.sector_size +
	    (uint64_t)(j->batch_first + first) * ps);
	const uint8_t *b = j->buf + (uint64_t)first * ps;

	j->io_err = 0;
	if (j->write_fault) {
		j->io_err = EIO;
		return;
	}
	if (sjob_pwrite(j->fd, b, (size_t)len, off) < 0) {
		j->io_err = errno;
		return;
	}
	if (EVP_DigestUpdate(j->sha, b, (size_t)len) != 1)
		j->io_err = EINVAL;
}

/* I/O pool: the next encoded part (parts in order). */
static void
sjob_part_write_work(void *arg)
{
	struct sjob *j = arg;
	const struct sjob_part *part = &j->parts[j->write_next];

	sjob_write_range(j, part->first, part->n);
}

static void
sjob_part_write_done(void *arg)
{
	struct sjob *j = arg;

	j->writing = 0;
	if (j->io_err)
		sjob_fail(j, "write %s/%s at sector %" PRIu32 ": %s", j->f->dir, FARMDIR_PLOT,
		    j->index, strerror(j->io_err));
	else if (++j->write_next == j->nparts) {
		sjob_phase_end(j, PH_ENCODE);
		if (j->batch_first + j->batch_n == j->f->g.pieces_in_sector)
			sjob_event(j, "encoded", j->phase_us[PH_ENCODE]);
	}
	j->pending--;
	sjob_settle(j);
}

/* Queues the disk work of a step (WRITE, SYNC): its completion moves
 * the job on. */
static int
sjob_io(struct sjob *j, void (*work)(void *), void (*done)(void *), const char *what)
{
	j->pending = 1;
	if (io_submit(j->p->d->io, work, done, j) < 0) {
		j->pending = 0;
		sjob_fail(j, "cannot queue the %s", what);
		return SJOB_ERROR;
	}
	return FSM_ASYNC;
}

/* I/O pool: the whole batch (a remote attempt's). */
static void
sjob_write_work(void *arg)
{
	struct sjob *j = arg;

	sjob_write_range(j, 0, j->batch_n);
}

static void
sjob_write_done(void *arg)
{
	struct sjob *j = arg;

	if (j->io_err)
		sjob_fail(j, "write %s/%s at sector %" PRIu32 ": %s", j->f->dir, FARMDIR_PLOT,
		    j->index, strerror(j->io_err));
	sjob_complete(j, j->batch_first + j->batch_n < j->f->g.pieces_in_sector ?
	    SJOB_READ : SJOB_SYNC);
}

static int
sjob_write(void *arg)
{
	struct sjob *j = arg;
	sjob_phase_end(j, PH_ENCODE);
	if (j->batch_first + j->batch_n == j->f->g.pieces_in_sector)
		sjob_event(j, "encoded", j->phase_us[PH_ENCODE]);
	sjob_event(j, "writing", 0);
#ifdef FAULT_INJECTION
	j->write_fault = j->p->write_fault;
	j->p->write_fault = 0;
#endif
	return sjob_io(j, sjob_write_work, sjob_write_done, "write");
}

static void
sjob_sync_work(void *arg)
{
	struct sjob *j = arg;
	unsigned int len = 0;

	j->io_err = 0;
	if (fdatasync(j->fd) < 0)
		j->io_err = errno;
	else if (EVP_DigestFinal_ex(j->sha, j->checksum, &len) != 1 || len != HASH_LEN)
		j->io_err = EINVAL;
}

static void
sjob_sync_done(void *arg)
{
	struct sjob *j = arg;

	if (j->io_err)
		sjob_fail(j, "fdatasync %s/%s: %s", j->f->dir, FARMDIR_PLOT, strerror(j->io_err));
	sjob_complete(j, SJOB_COMMIT);
}

static int
sjob_sync(void *arg)
{
	struct sjob *j = arg;
	return sjob_io(j, sjob_sync_work, sjob_sync_done, "fdatasync");
}

/* COMMIT: the bytes are on disk; now the row may say so. */
static int
sjob_commit(void *arg)
{
	struct sjob *j = arg;
	struct plot *p = j->p;
	struct farm *f = j->f;
	uint64_t now = history_size(p->d->history);
	char hex[HASH_HEX_LEN + 1];
	int64_t exp;
	struct err e;
	int to;

	sjob_phase_end(j, PH_WRITE);
	sjob_event(j, "written", j->phase_us[PH_WRITE]);
	if (db_begin(p->d->db, &e) < 0)
		goto fail;
	if ((exp = sector_expiry(p, f, j->index, j->history_size, now, &e)) < -1)
		goto rollback;
	to = sector_state_for(exp, now);
	if (sector_move(p, f, j->index, to, j->history_size, j->checksum, exp, SECTOR_AT_SET,
	    &e) < 0)
		goto rollback;
	if (db_commit(p->d->db, &e) < 0)
		goto rollback;
	f->plotted_total++;
	for (int ph = 0; ph < PH_COUNT; ph++)
		farm_hist_add(f, ph, ph == PH_TOTAL ? clock_mono_us() - j->t_start_us :
		    j->phase_us[ph]);
	hex_encode(j->checksum, 8, hex);
	log_info("sector %" PRIu32 "/%" PRIu32 " plotted at history size %" PRIu64 " in %"
	    PRIu64 " ms (read %" PRIu64 ", encode %" PRIu64 ", write %" PRIu64 "), checksum %s…",
	    f->id, j->index, j->history_size, (clock_mono_us() - j->t_start_us) / 1000,
	    j->phase_us[PH_READ] / 1000, j->phase_us[PH_ENCODE] / 1000,
	    j->phase_us[PH_WRITE] / 1000, hex);
	return SJOB_DONE;
rollback:
	db_rollback(p->d->db);
	/* The rolled-back move left count[] as it was. */
	sector_recount(p, f, &e);
fail:
	sjob_fail(j, "commit: %s", e.msg);
	return SJOB_ERROR;
}

static void
sjob_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sjob *j = arg;

	(void)fd;
	(void)what;
	if (j->p->stopping)
		return;
	fsm_enter(&j->m, j, SJOB_MARK);
}

/* ERROR: counted and shown; the sector stays 'plotting' and the job
 * starts over from MARK after retry_delay. */
static int
sjob_error(void *arg)
{
	struct sjob *j = arg;
	struct farm *f = j->f;
	uint64_t ms = j->p->d->cfg.plotting.retry_delay_ms;
	struct timeval tv = clock_tv(ms);

	f->errors_total++;
	snprintf(f->last_error, sizeof(f->last_error), "sector %" PRIu32 ": %s", j->index,
	    j->error);
	sjob_event(j, "error", 0);
	/* A sector waiting for a piece fails the same way every second. */
	if (strcmp(j->last_logged, j->error) != 0) {
		log_warn("sector %" PRIu32 "/%" PRIu32 ": %s; retrying every %" PRIu64 " ms",
		    f->id, j->index, j->error, ms);
		snprintf(j->last_logged, sizeof(j->last_logged), "%s", j->error);
	}
	evtimer_add(j->timer, &tv);
	return SJOB_WAIT;
}

/* DONE, the final state: the job is gone and its slot free. */
static int
sjob_done(void *arg)
{
	struct sjob *j = arg;
	struct plot *p = j->p;

	sjob_free(j);
	plot_kick(p);
	return FSM_ASYNC;
}

static void
sjob_label(const void *obj, char *buf, size_t len)
{
	const struct sjob *j = obj;

	snprintf(buf, len, "sector %" PRIu32 "/%" PRIu32, j->f->id, j->index);
}

/* The machine (DESIGN §9): internal names, for the transition log. */
static const struct fsm_state sjob_states[SJOB_NSTATES] = {
	[SJOB_MARK] = { "mark", sjob_mark },
	[SJOB_READ] = { "read", sjob_read },
	[SJOB_ENCODE] = { "encode", sjob_encode },
	[SJOB_WRITE] = { "write", sjob_write },
	[SJOB_SYNC] = { "sync", sjob_sync },
	[SJOB_COMMIT] = { "commit", sjob_commit },
	[SJOB_DONE] = { "done", sjob_done },
	[SJOB_ERROR] = { "error", sjob_error },
	[SJOB_WAIT] = { "wait", NULL },         /* retry_delay: sjob_timer_cb */
};

static const struct fsm_def sjob_fsm = {
	.name = "sector", .states = sjob_states, .nstates = SJOB_NSTATES,
	.error = SJOB_ERROR, .final = SJOB_DONE, .label = sjob_label,
};

int
sjob_start(struct plot *p, struct farm *f, uint32_t idx)
{
	struct sjob *j = calloc(1, sizeof(*j));
	uint64_t batch = PLOT_BATCH_BYTES / f->g.piece_size;

	if (j == NULL)
		return -1;
	if (batch == 0)
		batch = 1;
	if (batch > f->g.pieces_in_sector)
		batch = f->g.pieces_in_sector;
	j->batch_max = (uint32_t)batch;
	j->p = p;
	j->f = f;
	j->index = idx;
	fsm_init(&j->m, &sjob_fsm, SJOB_MARK);
	j->fd = -1;
	j->buf = sjob_buf_get(p, batch * f->g.piece_size);
	j->parts = calloc(j->batch_max, sizeof(*j->parts));   /* ≥ 1 piece each */
	j->sha = EVP_MD_CTX_new();
	j->timer = evtimer_new(p->d->base, sjob_timer_cb, j);
	TAILQ_INSERT_TAIL(&p->jobs, j, link);
	f->in_flight++;
	if (j->buf == NULL || j->parts == NULL || j->sha == NULL || j->timer == NULL) {
		sjob_free(j);
		return -1;
	}
	fsm_enter(&j->m, j, SJOB_MARK);
	return 0;
}

void
sjob_cancel_all(struct plot *p)
{
	struct sjob *j, *jt;

	for (j = TAILQ_FIRST(&p->jobs); j != NULL; j = jt) {
		jt = TAILQ_NEXT(j, link);
		for (uint32_t i = 0; i < j->nparts; i++)
			if (j->parts[i].job_id != 0) {
				pool_cancel(p->d->pool, j->parts[i].job_id);
				j->parts[i].job_id = 0;
				j->pending--;
			}
		if (j->rp != NULL && rplot_job_cancel(j->rp))
			j->pending--;
		/* What is still on the I/O pool frees the job when it
		 * returns (sjob_settle, sjob_complete). */
		if (j->m.state == SJOB_WAIT || (j->pending == 0 && (j->m.state == SJOB_ENCODE ||
		    j->m.state == SJOB_READ)))
			sjob_free(j);
	}
}
