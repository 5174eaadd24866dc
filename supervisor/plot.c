/*
 * plot.c: sectors, the scheduler and the sector pipeline.
 *
 * Invariants:
 *  - A sector row says 'plotting' (checksum NULL) from before the first
 *    byte of its range is written until the fdatasync that ends the
 *    rewrite has returned; only then does a commit give it a checksum.
 *    So after a crash at any moment every row with a checksum describes
 *    bytes that are on disk, and every 'plotting' row is replotted.
 *  - A sector is in flight (a struct sjob exists) at most once: the
 *    scheduler skips in-flight indexes, and scrub, sector read and
 *    expiry never change a sector that is in flight.
 *  - f->count[] mirrors the table: every single-sector state change goes
 *    through sector_move(); bulk updates recount.
 *
 * The pipeline works in batches of at most PLOT_BATCH_BYTES so memory
 * stays bounded for large sectors (a production sector is 1000 MiB);
 * a demo sector (4 MiB) is one batch.  Each batch is split into encode
 * jobs of a few pieces so W workers keep W cores busy.
 */
#include "plot.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <sqlite3.h>

#include "blockstore.h"
#include "clock.h"
#include "db.h"
#include "expiry_v1.h"
#include "farm.h"
#include "farmd.h"
#include "fdio.h"
#include "history.h"
#include "io.h"
#include "log.h"
#include "merkle.h"
#include "pool.h"

#define PLOT_BATCH_BYTES (16u << 20)
/* Pieces per encode job: one full pass of the widest scrypt kernel (16
 * lanes of AVX-512, scrypt.h); an 8-piece job ran half-empty passes that
 * cost most of a full one.  A job's frame also stays within max_frame
 * (sj_encode). */
#define PLOT_JOB_PIECES_MAX 16
#define PLOT_JOB_ATTEMPTS 3
#define PLOT_EVENTS 64
#define PLOT_SCRUB_CHUNK (1u << 20)
/* Rows are created in one transaction on the loop (about 1 s per
 * million); a farm is one disk, and a million sectors is already a
 * petabyte of production sectors. */
#define FARM_SECTORS_MAX 1000000
/* Sectors per expiry step: about 15 ms of loop time, measured with a
 * million-sector farm (see plot_expiry_step). */
#define EXPIRY_STEP 2048

const double plot_hist_bounds[PLOT_HIST_BUCKETS] = {
	0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120,
};

enum sector_state {
	SECTOR_EMPTY, SECTOR_PLOTTING, SECTOR_PLOTTED, SECTOR_ABOUT_TO_EXPIRE,
	SECTOR_EXPIRED, SECTOR_NSTATES
};

static const char *const sector_names[SECTOR_NSTATES] = {
	"empty", "plotting", "plotted", "about_to_expire", "expired",
};

/* Time histograms per farm. */
enum { PH_TOTAL, PH_READ, PH_ENCODE, PH_WRITE, PH_COUNT };
static const char *const ph_names[PH_COUNT] = { "total", "read", "encode", "write" };

struct hist {
	uint64_t bucket[PLOT_HIST_BUCKETS];     /* non-cumulative */
	uint64_t count;
	double sum;
};

struct farm {
	uint32_t id;
	char dir[PATH_MAX];
	struct farm_geom g;
	uint8_t pkh[HASH_LEN];
	int fd;                         /* plot.bin; -1: unusable, see error */
	char error[ERR_MSG_MAX];
	uint64_t count[SECTOR_NSTATES];
	uint32_t in_flight;
	uint64_t plotted_total, errors_total;
	char last_error[ERR_MSG_MAX];
	struct hist hist[PH_COUNT];
	TAILQ_ENTRY(farm) link;
};

/* The pipeline's states (DESIGN §9).  Public phases are the progress
 * events: queued, reading, encoding, encoded, writing, written, error. */
enum sj_state {
	SJ_MARK, SJ_READ, SJ_ENCODE, SJ_WRITE, SJ_SYNC, SJ_COMMIT, SJ_DONE,
	SJ_ERROR, SJ_WAIT, SJ_ASYNC     /* ASYNC: a step is waiting for completions */
};

static const char *const sj_names[] = {
	[SJ_MARK] = "queued", [SJ_READ] = "reading", [SJ_ENCODE] = "encoding",
	[SJ_WRITE] = "writing", [SJ_SYNC] = "writing", [SJ_COMMIT] = "written",
	[SJ_DONE] = "done", [SJ_ERROR] = "error", [SJ_WAIT] = "waiting",
};

struct sjob;

/* One encode job of a batch. */
struct sj_part {
	struct sjob *j;
	uint32_t first;                 /* piece offset within the batch */
	uint32_t n;
	uint64_t job_id;                /* 0 once answered */
};

struct sjob {
	struct plot *p;
	struct farm *f;
	uint32_t index;
	enum sj_state state;
	uint64_t history_size;
	uint8_t sector_id[HASH_LEN];
	uint32_t batch_first, batch_n, batch_max;
	uint8_t *buf;                   /* batch_max × piece_size */
	struct sj_part *parts;
	uint32_t nparts;
	uint32_t pending;               /* completions the current step awaits */
	uint32_t pieces_done;
	int failed;
	int write_fault;
	/* A descriptor of its own: a writeback error is reported to one
	 * fdatasync per open file, and it must be this sector's. */
	int fd;
	EVP_MD_CTX *sha;                /* sector checksum, batches in order */
	uint8_t checksum[HASH_LEN];
	uint64_t t_start_us, t_phase_us, phase_us[PH_COUNT];
	char error[ERR_MSG_MAX];
	char last_logged[ERR_MSG_MAX];
	struct event *timer;            /* retry_delay after an error */
	int io_err;                     /* errno of the last write/sync */
	TAILQ_ENTRY(sjob) link;
};

struct plot_event {
	uint64_t ms;
	uint32_t farm, index;
	const char *event;
	uint64_t took_ms;
};

/* A sector read or scrub check in flight (pool job or I/O). */
struct sread;

struct plot {
	struct farmd *d;
	TAILQ_HEAD(, farm) farms;
	TAILQ_HEAD(, sjob) jobs;
	TAILQ_HEAD(, sread) reads;
	TAILQ_HEAD(, plot_add) adding;  /* farm adds on the I/O pool */
	int started, stopping;
	int cancel;                     /* read by I/O threads: stop long checks */
	struct event *expiry_ev;        /* the next expiry step */
	uint64_t expiry_us;             /* loop time of the check under way */
	uint64_t expiry_moved;          /* sectors it marked */
	int checks;                     /* scrub checks on the I/O pool */
	struct plot_event events[PLOT_EVENTS];
	uint64_t nevents;
#ifdef FAULT_INJECTION
	int write_fault;
#endif
};

static void sj_enter(struct sjob *j, enum sj_state next);
static void plot_pump(struct plot *p);

/* ---------------------------------------------------------------- farms */

static struct farm *
farm_by_id(struct plot *p, uint32_t id)
{
	struct farm *f;

	TAILQ_FOREACH(f, &p->farms, link)
		if (f->id == id)
			return f;
	return NULL;
}

/* A farm named by its id or its directory. */
static struct farm *
farm_lookup(struct plot *p, const char *name, struct err *e)
{
	struct farm *f;
	char *end;
	unsigned long id;

	errno = 0;
	id = strtoul(name, &end, 10);
	if (name[0] >= '0' && name[0] <= '9' && *end == '\0' && errno == 0 &&
	    id <= UINT32_MAX && (f = farm_by_id(p, (uint32_t)id)) != NULL)
		return f;
	TAILQ_FOREACH(f, &p->farms, link) {
		size_t n = strlen(f->dir);

		if (strncmp(f->dir, name, n) == 0 && (name[n] == '\0' ||
		    (name[n] == '/' && name[n + strspn(name + n, "/")] == '\0')))
			return f;
	}
	err_set(e, "no farm '%s' (farm list shows the ids and directories)", name);
	return NULL;
}

static void
farm_hist_add(struct farm *f, int ph, uint64_t us)
{
	struct hist *h = &f->hist[ph];
	double s = (double)us / 1e6;
	int b = 0;

	while (b < PLOT_HIST_BUCKETS && s > plot_hist_bounds[b])
		b++;
	if (b < PLOT_HIST_BUCKETS)
		h->bucket[b]++;
	h->count++;
	h->sum += s;
}

static int
farm_recount(struct plot *p, struct farm *f, struct err *e)
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

/* A sector's row, as far as the pipeline, scrub and read care. */
struct sector_row {
	int state;
	uint64_t history_size;
	int have_checksum;
	uint8_t checksum[HASH_LEN];
	int64_t expires_at;             /* -1: unknown */
};

static int
sector_get(struct plot *p, struct farm *f, uint32_t idx, struct sector_row *r,
    struct err *e)
{
	sqlite3_stmt *st = db_prepare(p->d->db, "SELECT state, history_size, checksum, "
	    "expires_at FROM sectors WHERE farm = ? AND idx = ?", e);
	int rc;

	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, f->id);
	sqlite3_bind_int64(st, 2, idx);
	if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
		sqlite3_finalize(st);
		return err_set(e, "farm %" PRIu32 " has no sector %" PRIu32, f->id, idx);
	}
	r->state = sector_state_parse((const char *)sqlite3_column_text(st, 0));
	r->history_size = (uint64_t)sqlite3_column_int64(st, 1);
	r->have_checksum = sqlite3_column_bytes(st, 2) == HASH_LEN;
	if (r->have_checksum)
		memcpy(r->checksum, sqlite3_column_blob(st, 2), HASH_LEN);
	r->expires_at = sqlite3_column_type(st, 3) == SQLITE_NULL ? -1 :
	    sqlite3_column_int64(st, 3);
	sqlite3_finalize(st);
	return r->state < 0 ? err_set(e, "sector %" PRIu32 "/%" PRIu32 ": bad state", f->id,
	    idx) : 0;
}

/* The one place a single sector's state changes. */
enum { AT_KEEP, AT_SET, AT_CLEAR };

static int
sector_move(struct plot *p, struct farm *f, uint32_t idx, int to, uint64_t history_size,
    const uint8_t *checksum, int64_t expires_at, int plotted_at, struct err *e)
{
	struct sector_row old;
	sqlite3_stmt *st;
	uint64_t now = clock_real_ms();
	int rc;

	if (sector_get(p, f, idx, &old, e) < 0)
		return -1;
	st = db_prepare(p->d->db, "UPDATE sectors SET state = ?, history_size = ?, "
	    "checksum = ?, expires_at = ?, plotted_at_ms = CASE ? WHEN 0 THEN plotted_at_ms "
	    "ELSE ? END, updated_ms = ? WHERE farm = ? AND idx = ?", e);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, sector_names[to], -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)history_size);
	if (checksum != NULL)
		sqlite3_bind_blob(st, 3, checksum, HASH_LEN, SQLITE_STATIC);
	if (expires_at >= 0)
		sqlite3_bind_int64(st, 4, expires_at);
	sqlite3_bind_int(st, 5, plotted_at != AT_KEEP);
	if (plotted_at == AT_CLEAR)
		sqlite3_bind_null(st, 6);
	else
		sqlite3_bind_int64(st, 6, (int64_t)now);
	sqlite3_bind_int64(st, 7, (int64_t)now);
	sqlite3_bind_int64(st, 8, f->id);
	sqlite3_bind_int64(st, 9, idx);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return err_set(e, "sector %" PRIu32 "/%" PRIu32 ": %s", f->id, idx,
		    sqlite3_errmsg(db_handle(p->d->db)));
	f->count[old.state]--;
	f->count[to]++;
	return 0;
}

/* The piece a sector holds at offset (format v1): its global index, its
 * block hash and its piece root. */
static int
sector_piece(struct plot *p, const struct farm *f, const uint8_t sector_id[HASH_LEN],
    uint64_t history_size, uint32_t offset, uint64_t *index, uint8_t hash[HASH_LEN],
    uint8_t root[HASH_LEN], struct err *e)
{
	uint64_t pi = encode_v1_piece_index(sector_id, offset, history_size,
	    f->g.pieces_per_segment, f->g.recent_segments, f->g.recent_history_fraction);
	sqlite3_stmt *st = db_prepare(p->d->db, "SELECT hash, root FROM segment_pieces WHERE "
	    "segment = ? AND k = ?", e);
	int ok;

	*index = pi;
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, (int64_t)(pi / f->g.pieces_per_segment));
	sqlite3_bind_int64(st, 2, (int64_t)(pi % f->g.pieces_per_segment));
	ok = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == HASH_LEN &&
	    sqlite3_column_bytes(st, 1) == HASH_LEN;
	if (ok) {
		memcpy(hash, sqlite3_column_blob(st, 0), HASH_LEN);
		memcpy(root, sqlite3_column_blob(st, 1), HASH_LEN);
	}
	sqlite3_finalize(st);
	return ok ? 0 : err_set(e, "piece %" PRIu64 " is not in segment_pieces", pi);
}

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

/* expires_at of a sector plotted at hs, or -1 while history has not
 * reached its check point. */
static int64_t
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

static int
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

static struct sjob *
sjob_find(struct plot *p, const struct farm *f, uint32_t idx)
{
	struct sjob *j;

	TAILQ_FOREACH(j, &p->jobs, link)
		if (j->f == f && j->index == idx)
			return j;
	return NULL;
}

/* -------------------------------------------------------------- expiry */

/* On each new segment (and at start): learn the expiries that became
 * known, then mark what expires.  The work is cut into steps of at most
 * EXPIRY_STEP sectors, each one transaction, with the loop free between
 * them: a farm plotted at one history size learns all its expiries at
 * the same segment, and a million of them at once would stall the loop
 * for seconds.  The sectors whose expiry is unknown are found through a
 * partial index; the state changes through (farm, state, expires_at). */
static int
plot_expiry_learn(struct plot *p, struct farm *f, uint64_t now, struct err *e)
{
	struct { uint32_t idx; uint64_t hs; } todo[EXPIRY_STEP];
	sqlite3_stmt *st;
	int n = 0, rc;

	/* Collected first: updating expires_at moves rows within the index
	 * the query walks. */
	st = db_prepare(p->d->db, "SELECT idx, history_size FROM sectors WHERE farm = ? AND "
	    "state = 'plotted' AND expires_at IS NULL AND history_size <= ? LIMIT ?", e);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, f->id);
	sqlite3_bind_int64(st, 2, (int64_t)(now - f->g.min_sector_lifetime));
	sqlite3_bind_int(st, 3, EXPIRY_STEP);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		todo[n].idx = (uint32_t)sqlite3_column_int64(st, 0);
		todo[n++].hs = (uint64_t)sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return err_set(e, "expiry check: %s", sqlite3_errmsg(db_handle(p->d->db)));
	if ((st = db_prepare(p->d->db, "UPDATE sectors SET expires_at = ? WHERE farm = ? AND "
	    "idx = ?", e)) == NULL)
		return -1;
	for (int i = 0; i < n; i++) {
		int64_t exp = sector_expiry(p, f, todo[i].idx, todo[i].hs, now, e);

		if (exp < -1) {
			sqlite3_finalize(st);
			return -1;
		}
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, exp);
		sqlite3_bind_int64(st, 2, f->id);
		sqlite3_bind_int64(st, 3, todo[i].idx);
		if (sqlite3_step(st) != SQLITE_DONE) {
			sqlite3_finalize(st);
			return err_set(e, "expiry check: %s", sqlite3_errmsg(db_handle(p->d->db)));
		}
	}
	sqlite3_finalize(st);
	return n;
}

/* Moves up to EXPIRY_STEP sectors from one state to another when
 * expires_at <= limit; returns how many. */
static int
plot_expiry_move(struct plot *p, struct farm *f, int from, int to, uint64_t limit,
    struct err *e)
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
	sqlite3_bind_int(st, 6, EXPIRY_STEP);
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

/* One step for one farm: 1 if there is more to do, 0 if done, -1 error. */
static int
plot_expiry_step(struct plot *p, struct farm *f, uint64_t now, struct err *e)
{
	uint64_t before[SECTOR_NSTATES];
	int n = 0, moved = 0, more;

	if (now < f->g.min_sector_lifetime)
		return 0;
	memcpy(before, f->count, sizeof(before));
	if (db_begin(p->d->db, e) < 0)
		return -1;
	if ((n = plot_expiry_learn(p, f, now, e)) < 0)
		goto fail;
	more = n == EXPIRY_STEP;
	/* Expired first, so an about-to-expire sector that is already past
	 * its expiry is not moved twice. */
	if (!more) {
		int m;

		if ((m = plot_expiry_move(p, f, SECTOR_ABOUT_TO_EXPIRE, SECTOR_EXPIRED, now, e)) < 0)
			goto fail;
		moved += m;
		more |= m == EXPIRY_STEP;
		if ((m = plot_expiry_move(p, f, SECTOR_PLOTTED, SECTOR_EXPIRED, now, e)) < 0)
			goto fail;
		moved += m;
		more |= m == EXPIRY_STEP;
		if ((m = plot_expiry_move(p, f, SECTOR_PLOTTED, SECTOR_ABOUT_TO_EXPIRE, now + 1,
		    e)) < 0)
			goto fail;
		moved += m;
		more |= m == EXPIRY_STEP;
	}
	if (db_commit(p->d->db, e) < 0)
		goto fail;
	p->expiry_moved += (uint64_t)moved;
	return more;
fail:
	db_rollback(p->d->db);
	memcpy(f->count, before, sizeof(before));
	return -1;
}

/* Runs steps until every farm is done, yielding to the loop between
 * them; replots start as soon as the first sectors are marked. */
static void
plot_expiry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct plot *p = arg;
	uint64_t now = history_size(p->d->history), t0 = clock_mono_us();
	struct timeval zero = { 0, 0 };
	struct farm *f;
	struct err e;
	int more = 0;

	(void)fd;
	(void)what;
	if (p->stopping)
		return;
	TAILQ_FOREACH(f, &p->farms, link) {
		int rc = plot_expiry_step(p, f, now, &e);

		if (rc < 0)
			log_err("farm %" PRIu32 ": %s", f->id, e.msg);
		more |= rc > 0;
	}
	p->expiry_us += clock_mono_us() - t0;
	if (more) {
		evtimer_add(p->expiry_ev, &zero);
	} else {
		if (p->expiry_moved > 0)
			log_info("plot: %" PRIu64 " sector expiry state changes up to history size %"
			    PRIu64 "; expiring sectors are queued for replotting", p->expiry_moved, now);
		log_debug("plot: expiry check at history size %" PRIu64 " took %" PRIu64 " us "
		    "of loop time", now, p->expiry_us);
		p->expiry_us = 0;
		p->expiry_moved = 0;
	}
	plot_pump(p);
}

static void
plot_expiry_check(struct plot *p)
{
	struct timeval zero = { 0, 0 };

	if (!evtimer_pending(p->expiry_ev, NULL))
		evtimer_add(p->expiry_ev, &zero);
}

static void
plot_segment_cb(void *arg, uint64_t index, const uint8_t root[HASH_LEN])
{
	struct plot *p = arg;

	(void)index;
	(void)root;
	if (p->stopping)
		return;
	plot_expiry_check(p);
	plot_pump(p);
}

/* -------------------------------------------------------------- events */

static void
plot_event(struct sjob *j, const char *event, uint64_t took_us)
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
sj_phase_end(struct sjob *j, int ph)
{
	uint64_t now = clock_mono_us(), took = now - j->t_phase_us;

	j->phase_us[ph] += took;
	j->t_phase_us = now;
	return took;
}

/* ------------------------------------------------------------ pipeline */

static void
sj_fail(struct sjob *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
sj_fail(struct sjob *j, const char *fmt, ...)
{
	va_list ap;

	if (j->failed)
		return;                 /* the first failure is the reason */
	j->failed = 1;
	va_start(ap, fmt);
	vsnprintf(j->error, sizeof(j->error), fmt, ap);
	va_end(ap);
}

static void
sjob_free(struct sjob *j)
{
	struct plot *p = j->p;

	TAILQ_REMOVE(&p->jobs, j, link);
	j->f->in_flight--;
	if (j->fd >= 0)
		close(j->fd);
	if (j->timer != NULL)
		event_free(j->timer);
	EVP_MD_CTX_free(j->sha);
	free(j->parts);
	free(j->buf);
	free(j);
}

/* A completion of the current step.  The last one moves the job on, or
 * frees it when plotting is stopping. */
static void
sj_complete(struct sjob *j, enum sj_state next)
{
	if (--j->pending > 0)
		return;
	if (j->p->stopping) {
		sjob_free(j);
		return;
	}
	sj_enter(j, j->failed ? SJ_ERROR : next);
}

static enum sj_state
sj_mark(struct sjob *j)
{
	struct plot *p = j->p;
	char path[PATH_MAX + 16];
	struct err e;

	j->failed = 0;
	j->error[0] = '\0';
	j->history_size = history_size(p->d->history);
	if (j->history_size == 0) {
		sj_fail(j, "history is empty");
		return SJ_ERROR;
	}
	encode_v1_sector_id(j->f->pkh, j->index, j->history_size, j->sector_id);
	/* Fresh for each attempt, so an earlier attempt's error is not
	 * reported to (or hidden from) this one. */
	if (j->fd >= 0)
		close(j->fd);
	snprintf(path, sizeof(path), "%s/%s", j->f->dir, FARM_PLOT);
	if ((j->fd = open(path, O_WRONLY | O_CLOEXEC)) < 0) {
		sj_fail(j, "%s: %s", path, strerror(errno));
		return SJ_ERROR;
	}
	if (sector_move(p, j->f, j->index, SECTOR_PLOTTING, j->history_size, NULL, -1,
	    AT_CLEAR, &e) < 0) {
		sj_fail(j, "%s", e.msg);
		return SJ_ERROR;
	}
	if (EVP_DigestInit_ex(j->sha, EVP_sha256(), NULL) != 1) {
		sj_fail(j, "SHA-256 init failed");
		return SJ_ERROR;
	}
	j->batch_first = 0;
	j->batch_n = 0;
	j->pieces_done = 0;
	j->t_start_us = j->t_phase_us = clock_mono_us();
	memset(j->phase_us, 0, sizeof(j->phase_us));
	plot_event(j, "queued", 0);
	return SJ_READ;
}

struct sj_piece {
	struct sjob *j;
	uint32_t slot;                  /* within the batch */
	uint64_t piece_index;
};

static void
sj_piece_cb(void *arg, uint8_t *data, size_t len, enum block_status st, const char *error)
{
	struct sj_piece *t = arg;
	struct sjob *j = t->j;
	uint64_t ps = j->f->g.piece_size;

	(void)st;
	if (error != NULL)
		sj_fail(j, "piece %" PRIu64 ": %s; the sector waits for resync", t->piece_index,
		    error);
	else if (len != ps)
		sj_fail(j, "piece %" PRIu64 ": %zu bytes, expected %" PRIu64, t->piece_index,
		    len, ps);
	else
		memcpy(j->buf + (uint64_t)t->slot * ps, data, len);
	free(data);
	free(t);
	sj_complete(j, SJ_ENCODE);
}

/* READ: the pieces of the next batch, each verified by the block store
 * (a missing or corrupt one is reported to resync there). */
static enum sj_state
sj_read(struct sjob *j)
{
	struct plot *p = j->p;
	struct farm *f = j->f;
	struct err e;

	if (j->batch_n > 0)
		sj_phase_end(j, PH_WRITE);
	j->batch_first += j->batch_n;
	j->batch_n = f->g.pieces_in_sector - j->batch_first;
	if (j->batch_n > j->batch_max)
		j->batch_n = j->batch_max;
	plot_event(j, "reading", 0);
	j->pending = 1;                 /* held until every get is issued */
	for (uint32_t i = 0; i < j->batch_n && !j->failed; i++) {
		uint8_t hash[HASH_LEN], root[HASH_LEN];
		struct sj_piece *t;
		uint64_t pi;

		if (sector_piece(p, f, j->sector_id, j->history_size, j->batch_first + i, &pi,
		    hash, root, &e) < 0) {
			sj_fail(j, "%s", e.msg);
			break;
		}
		if ((t = malloc(sizeof(*t))) == NULL) {
			sj_fail(j, "out of memory");
			break;
		}
		t->j = j;
		t->slot = i;
		t->piece_index = pi;
		j->pending++;
		blockstore_get(p->d->blocks, hash, sj_piece_cb, t);
	}
	sj_complete(j, SJ_ENCODE);
	return SJ_ASYNC;
}

static void
sj_encode_cb(uint64_t job_id, const Farmd__JobResult *res, const char *error, void *arg)
{
	struct sj_part *part = arg;
	struct sjob *j = part->j;
	uint64_t ps = j->f->g.piece_size;
	const ProtobufCBinaryData *out;

	(void)job_id;
	part->job_id = 0;
	if (error != NULL) {
		sj_fail(j, "encode: %s", error);
	} else if ((out = pool_encode_pieces(res, part->n, ps)) == NULL) {
		sj_fail(j, "encode worker answered with the wrong pieces");
	} else {
		for (uint32_t i = 0; i < part->n; i++)
			memcpy(j->buf + (uint64_t)(part->first + i) * ps, out[i].data, ps);
		j->pieces_done += part->n;
	}
	sj_complete(j, SJ_WRITE);
}

/* ENCODE: split the batch across encode jobs; the pool queues what its
 * workers cannot take yet. */
static enum sj_state
sj_encode(struct sjob *j)
{
	struct plot *p = j->p;
	struct farm *f = j->f;
	uint32_t workers = p->d->cfg.workers.encode ? p->d->cfg.workers.encode : 1;
	uint32_t per = (j->batch_n + workers - 1) / workers;
	struct pool_job_opts opts = { PLOT_JOB_ATTEMPTS, p->d->cfg.plotting.retry_delay_ms, 0 };
	ProtobufCBinaryData pieces[PLOT_JOB_PIECES_MAX];

	sj_phase_end(j, PH_READ);
	plot_event(j, "encoding", 0);
	if (per > PLOT_JOB_PIECES_MAX)
		per = PLOT_JOB_PIECES_MAX;
	/* The request frame: the pieces plus a few hundred bytes of fields. */
	if (per > (p->d->cfg.daemon.max_frame - 4096) / f->g.piece_size)
		per = (uint32_t)((p->d->cfg.daemon.max_frame - 4096) / f->g.piece_size);
	if (per == 0)
		per = 1;
	j->nparts = 0;
	j->pending = 1;
	for (uint32_t first = 0; first < j->batch_n && !j->failed; first += per) {
		struct sj_part *part = &j->parts[j->nparts];
		struct err e;

		part->j = j;
		part->first = first;
		part->n = j->batch_n - first < per ? j->batch_n - first : per;
		for (uint32_t i = 0; i < part->n; i++) {
			pieces[i].data = j->buf + (uint64_t)(first + i) * f->g.piece_size;
			pieces[i].len = f->g.piece_size;
		}
		part->job_id = pool_submit_encode(p->d->pool, j->sector_id,
		    j->batch_first + first, &f->g.scrypt, pieces, part->n, 0, &opts,
		    sj_encode_cb, part, &e);
		if (part->job_id == 0) {
			sj_fail(j, "encode: %s", e.msg);
			break;
		}
		j->nparts++;
		j->pending++;
	}
	sj_complete(j, SJ_WRITE);
	return SJ_ASYNC;
}

/* I/O pool: the batch at its place in plot.bin, and into the checksum. */
static void
sj_write_work(void *arg)
{
	struct sjob *j = arg;
	uint64_t len = (uint64_t)j->batch_n * j->f->g.piece_size;
	off_t off = (off_t)((uint64_t)j->index * j->f->g.sector_size +
	    (uint64_t)j->batch_first * j->f->g.piece_size);
	const uint8_t *b = j->buf;

	j->io_err = 0;
	if (j->write_fault) {
		j->io_err = EIO;
		return;
	}
	if (fdio_pwrite_all(j->fd, b, (size_t)len, off) < 0) {
		j->io_err = errno;
		return;
	}
	if (EVP_DigestUpdate(j->sha, j->buf, (size_t)j->batch_n * j->f->g.piece_size) != 1)
		j->io_err = EINVAL;
}

static void
sj_write_done(void *arg)
{
	struct sjob *j = arg;

	if (j->io_err)
		sj_fail(j, "write %s/%s at sector %" PRIu32 ": %s", j->f->dir, FARM_PLOT,
		    j->index, strerror(j->io_err));
	sj_complete(j, j->batch_first + j->batch_n < j->f->g.pieces_in_sector ?
	    SJ_READ : SJ_SYNC);
}

static enum sj_state
sj_write(struct sjob *j)
{
	sj_phase_end(j, PH_ENCODE);
	if (j->batch_first + j->batch_n == j->f->g.pieces_in_sector)
		plot_event(j, "encoded", j->phase_us[PH_ENCODE]);
	plot_event(j, "writing", 0);
#ifdef FAULT_INJECTION
	j->write_fault = j->p->write_fault;
	j->p->write_fault = 0;
#endif
	j->pending = 1;
	if (io_submit(j->p->d->io, sj_write_work, sj_write_done, j) < 0) {
		j->pending = 0;
		sj_fail(j, "cannot queue the write");
		return SJ_ERROR;
	}
	return SJ_ASYNC;
}

static void
sj_sync_work(void *arg)
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
sj_sync_done(void *arg)
{
	struct sjob *j = arg;

	if (j->io_err)
		sj_fail(j, "fdatasync %s/%s: %s", j->f->dir, FARM_PLOT, strerror(j->io_err));
	sj_complete(j, SJ_COMMIT);
}

static enum sj_state
sj_sync(struct sjob *j)
{
	j->pending = 1;
	if (io_submit(j->p->d->io, sj_sync_work, sj_sync_done, j) < 0) {
		j->pending = 0;
		sj_fail(j, "cannot queue the fdatasync");
		return SJ_ERROR;
	}
	return SJ_ASYNC;
}

/* COMMIT: the bytes are on disk; now the row may say so. */
static enum sj_state
sj_commit(struct sjob *j)
{
	struct plot *p = j->p;
	struct farm *f = j->f;
	uint64_t now = history_size(p->d->history);
	char hex[HASH_HEX_LEN + 1];
	int64_t exp;
	struct err e;
	int to;

	sj_phase_end(j, PH_WRITE);
	plot_event(j, "written", j->phase_us[PH_WRITE]);
	if (db_begin(p->d->db, &e) < 0)
		goto fail;
	if ((exp = sector_expiry(p, f, j->index, j->history_size, now, &e)) < -1)
		goto rollback;
	to = sector_state_for(exp, now);
	if (sector_move(p, f, j->index, to, j->history_size, j->checksum, exp, AT_SET, &e) < 0)
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
	return SJ_DONE;
rollback:
	db_rollback(p->d->db);
	/* The rolled-back move left count[] as it was. */
	farm_recount(p, f, &e);
fail:
	sj_fail(j, "commit: %s", e.msg);
	return SJ_ERROR;
}

static void
sj_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sjob *j = arg;

	(void)fd;
	(void)what;
	if (j->p->stopping)
		return;
	sj_enter(j, SJ_MARK);
}

/* ERROR: counted and shown; the sector stays 'plotting' and the job
 * starts over from MARK after retry_delay. */
static enum sj_state
sj_error(struct sjob *j)
{
	struct farm *f = j->f;
	uint64_t ms = j->p->d->cfg.plotting.retry_delay_ms;
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	f->errors_total++;
	snprintf(f->last_error, sizeof(f->last_error), "sector %" PRIu32 ": %s", j->index,
	    j->error);
	plot_event(j, "error", 0);
	/* A sector waiting for a piece fails the same way every second. */
	if (strcmp(j->last_logged, j->error) != 0) {
		log_warn("sector %" PRIu32 "/%" PRIu32 ": %s; retrying every %" PRIu64 " ms",
		    f->id, j->index, j->error, ms);
		snprintf(j->last_logged, sizeof(j->last_logged), "%s", j->error);
	}
	evtimer_add(j->timer, &tv);
	return SJ_WAIT;
}

/* The one place a sector job's state changes (DESIGN §9). */
static void
sj_enter(struct sjob *j, enum sj_state next)
{
	while (next != SJ_ASYNC) {
		log_debug("sector %" PRIu32 "/%" PRIu32 ": %s -> %s", j->f->id, j->index,
		    sj_names[j->state], sj_names[next]);
		j->state = next;
		switch (next) {
		case SJ_MARK: next = sj_mark(j); break;
		case SJ_READ: next = sj_read(j); break;
		case SJ_ENCODE: next = sj_encode(j); break;
		case SJ_WRITE: next = sj_write(j); break;
		case SJ_SYNC: next = sj_sync(j); break;
		case SJ_COMMIT: next = sj_commit(j); break;
		case SJ_ERROR: next = sj_error(j); break;
		case SJ_WAIT: return;
		case SJ_DONE: {
			struct plot *p = j->p;

			sjob_free(j);
			plot_pump(p);
			return;
		}
		case SJ_ASYNC: return;
		}
	}
}

static int
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
	j->fd = -1;
	j->buf = malloc(batch * f->g.piece_size);
	j->parts = calloc(j->batch_max, sizeof(*j->parts));   /* ≥ 1 piece each */
	j->sha = EVP_MD_CTX_new();
	j->timer = evtimer_new(p->d->base, sj_timer_cb, j);
	TAILQ_INSERT_TAIL(&p->jobs, j, link);
	f->in_flight++;
	if (j->buf == NULL || j->parts == NULL || j->sha == NULL || j->timer == NULL) {
		sjob_free(j);
		return -1;
	}
	sj_enter(j, SJ_MARK);
	return 0;
}

/* ----------------------------------------------------------- scheduler */

/* Fills f's free slots in priority order: interrupted, never plotted,
 * expired, about to expire (expires_at is NULL for the first two, so one
 * index order serves all four). */
static void
plot_pump_farm(struct plot *p, struct farm *f)
{
	static const int order[] = { SECTOR_PLOTTING, SECTOR_EMPTY, SECTOR_EXPIRED,
		SECTOR_ABOUT_TO_EXPIRE };
	uint32_t max = p->d->cfg.plotting.max_sectors_per_farm;
	sqlite3_stmt *st;
	struct err e;

	if (f->fd < 0 || f->in_flight >= max)
		return;
	st = db_prepare(p->d->db, "SELECT idx FROM sectors WHERE farm = ? AND state = ? "
	    "ORDER BY expires_at, idx LIMIT ?", &e);
	if (st == NULL) {
		log_err("farm %" PRIu32 ": %s", f->id, e.msg);
		return;
	}
	for (size_t k = 0; k < sizeof(order) / sizeof(order[0]) && f->in_flight < max; k++) {
		if (f->count[order[k]] == 0)
			continue;
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, f->id);
		sqlite3_bind_text(st, 2, sector_names[order[k]], -1, SQLITE_STATIC);
		/* In-flight sectors may be among the first rows. */
		sqlite3_bind_int64(st, 3, (int64_t)(max + f->in_flight));
		while (f->in_flight < max && sqlite3_step(st) == SQLITE_ROW) {
			uint32_t idx = (uint32_t)sqlite3_column_int64(st, 0);

			if (sjob_find(p, f, idx) != NULL)
				continue;
			/* The statement must not be open across a write. */
			sqlite3_reset(st);
			if (sjob_start(p, f, idx) < 0) {
				log_err("farm %" PRIu32 ": out of memory starting sector %" PRIu32,
				    f->id, idx);
				break;
			}
			sqlite3_bind_int64(st, 3, (int64_t)(max + f->in_flight));
		}
	}
	sqlite3_finalize(st);
}

static void
plot_pump(struct plot *p)
{
	struct farm *f;

	if (!p->started || p->stopping || history_size(p->d->history) == 0)
		return;
	TAILQ_FOREACH(f, &p->farms, link)
		plot_pump_farm(p, f);
}

/* -------------------------------------------------------------- set-up */

static int
plot_load(struct plot *p, struct err *e)
{
	sqlite3_stmt *st = db_prepare(p->d->db, "SELECT id, dir, sectors, profile, "
	    "pieces_in_sector, sector_size, min_sector_lifetime, recent_segments, "
	    "recent_history_fraction, scrypt_n, scrypt_r, scrypt_p, public_key_hash "
	    "FROM farms ORDER BY id", e);
	int rc;

	if (st == NULL)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct farm *f = calloc(1, sizeof(*f));

		if (f == NULL) {
			sqlite3_finalize(st);
			return err_set(e, "out of memory");
		}
		f->id = (uint32_t)sqlite3_column_int64(st, 0);
		snprintf(f->dir, sizeof(f->dir), "%s", (const char *)sqlite3_column_text(st, 1));
		f->g.sectors = (uint32_t)sqlite3_column_int64(st, 2);
		snprintf(f->g.profile, sizeof(f->g.profile), "%s",
		    (const char *)sqlite3_column_text(st, 3));
		f->g.pieces_in_sector = (uint32_t)sqlite3_column_int64(st, 4);
		f->g.sector_size = (uint64_t)sqlite3_column_int64(st, 5);
		f->g.min_sector_lifetime = (uint32_t)sqlite3_column_int64(st, 6);
		f->g.recent_segments = (uint32_t)sqlite3_column_int64(st, 7);
		f->g.recent_history_fraction = sqlite3_column_double(st, 8);
		f->g.scrypt.n = (uint64_t)sqlite3_column_int64(st, 9);
		f->g.scrypt.r = (uint32_t)sqlite3_column_int64(st, 10);
		f->g.scrypt.p = (uint32_t)sqlite3_column_int64(st, 11);
		f->g.piece_size = p->d->cfg.history.piece_size;
		f->g.pieces_per_segment = p->d->cfg.history.pieces_per_segment;
		if (sqlite3_column_bytes(st, 12) == HASH_LEN)
			memcpy(f->pkh, sqlite3_column_blob(st, 12), HASH_LEN);
		TAILQ_INSERT_TAIL(&p->farms, f, link);
		f->fd = -1;
		if (f->g.sector_size != (uint64_t)f->g.pieces_in_sector * f->g.piece_size ||
		    f->g.sectors == 0 || f->g.sectors > FARM_SECTORS_MAX) {
			snprintf(f->error, sizeof(f->error), "geometry in state.db is inconsistent: "
			    "%" PRIu32 " sectors of %" PRIu64 " bytes, %" PRIu32 " pieces of %" PRIu64,
			    f->g.sectors, f->g.sector_size, f->g.pieces_in_sector, f->g.piece_size);
		} else if ((f->fd = farm_open(f->dir, &f->g, f->pkh, e)) < 0) {
			snprintf(f->error, sizeof(f->error), "%s", e->msg);
		}
		if (f->fd < 0)
			log_err("farm %" PRIu32 " (%s) is not usable, not plotting it: %s", f->id,
			    f->dir, f->error);
		if (farm_recount(p, f, e) < 0) {
			sqlite3_finalize(st);
			return -1;
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : err_set(e, "farms: %s", sqlite3_errmsg(db_handle(p->d->db)));
}

struct plot *
plot_new(struct farmd *d, struct err *e)
{
	struct plot *p = calloc(1, sizeof(*p));
	struct farm *f;
	uint64_t n = 0;

	if (p == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	p->d = d;
	TAILQ_INIT(&p->farms);
	TAILQ_INIT(&p->jobs);
	TAILQ_INIT(&p->reads);
	TAILQ_INIT(&p->adding);
	if ((p->expiry_ev = evtimer_new(d->base, plot_expiry_cb, p)) == NULL) {
		err_set(e, "out of memory");
		plot_free(p);
		return NULL;
	}
	if (plot_load(p, e) < 0) {
		plot_free(p);
		return NULL;
	}
	TAILQ_FOREACH(f, &p->farms, link)
		n += f->count[SECTOR_PLOTTING];
	if (n > 0)
		log_info("plot: %" PRIu64 " sectors were interrupted mid-plot; replotting them", n);
	return p;
}

int
plot_start(struct plot *p, struct err *e)
{
	if (history_subscribe(p->d->history, plot_segment_cb, p) < 0)
		return err_set(e, "cannot subscribe to new segments");
	p->started = 1;
	plot_expiry_check(p);
	plot_pump(p);
	return 0;
}

/* ------------------------------------------------------------ farm add */

struct plot_add {
	struct plot *p;
	struct farm_create c;
	plot_reply_cb cb;
	void *arg;
	TAILQ_ENTRY(plot_add) link;
};

static json_t *plot_json_farm(struct plot *p, struct farm *f);

static void
plot_add_work(void *arg)
{
	struct plot_add *a = arg;

	farm_create(&a->c);
}

static int
plot_add_commit(struct plot *p, struct farm *f, struct err *e)
{
	sqlite3_stmt *st = NULL;
	uint64_t now = clock_real_ms();
	int rc;

	if (db_begin(p->d->db, e) < 0)
		return -1;
	if ((st = db_prepare(p->d->db, "INSERT INTO farms (id, dir, sectors, profile, "
	    "pieces_in_sector, sector_size, min_sector_lifetime, recent_segments, "
	    "recent_history_fraction, scrypt_n, scrypt_r, scrypt_p, public_key_hash, "
	    "created_ms) VALUES ((SELECT COALESCE(MAX(id) + 1, 0) FROM farms), "
	    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id", e)) == NULL)
		goto fail;
	sqlite3_bind_text(st, 1, f->dir, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, f->g.sectors);
	sqlite3_bind_text(st, 3, f->g.profile, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, f->g.pieces_in_sector);
	sqlite3_bind_int64(st, 5, (int64_t)f->g.sector_size);
	sqlite3_bind_int64(st, 6, f->g.min_sector_lifetime);
	sqlite3_bind_int64(st, 7, f->g.recent_segments);
	sqlite3_bind_double(st, 8, f->g.recent_history_fraction);
	sqlite3_bind_int64(st, 9, (int64_t)f->g.scrypt.n);
	sqlite3_bind_int64(st, 10, f->g.scrypt.r);
	sqlite3_bind_int64(st, 11, f->g.scrypt.p);
	sqlite3_bind_blob(st, 12, f->pkh, HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 13, (int64_t)now);
	if (sqlite3_step(st) != SQLITE_ROW)
		goto sqlfail;
	f->id = (uint32_t)sqlite3_column_int64(st, 0);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto sqlfail;
	sqlite3_finalize(st);
	if ((st = db_prepare(p->d->db, "INSERT INTO sectors (farm, idx, state, pieces, format, "
	    "updated_ms) VALUES (?, ?, 'empty', ?, ?, ?)", e)) == NULL)
		goto fail;
	for (uint32_t i = 0; i < f->g.sectors; i++) {
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, f->id);
		sqlite3_bind_int64(st, 2, i);
		sqlite3_bind_int64(st, 3, f->g.pieces_in_sector);
		sqlite3_bind_int64(st, 4, FARM_FORMAT_V1);
		sqlite3_bind_int64(st, 5, (int64_t)now);
		if ((rc = sqlite3_step(st)) != SQLITE_DONE)
			goto sqlfail;
	}
	sqlite3_finalize(st);
	if (db_commit(p->d->db, e) < 0) {
		db_rollback(p->d->db);
		return -1;
	}
	f->count[SECTOR_EMPTY] = f->g.sectors;
	return 0;
sqlfail:
	err_set(e, "farms: %s", sqlite3_errmsg(db_handle(p->d->db)));
fail:
	sqlite3_finalize(st);
	db_rollback(p->d->db);
	return -1;
}

static void
plot_add_done(void *arg)
{
	struct plot_add *a = arg;
	struct plot *p = a->p;
	struct farm *f = NULL;
	char hex[HASH_HEX_LEN + 1];
	struct err e;

	TAILQ_REMOVE(&p->adding, a, link);
	if (a->c.fd < 0) {              /* farm_create failed and cleaned up */
		a->cb(a->arg, NULL, a->c.e.msg);
		free(a);
		return;
	}
	if ((f = calloc(1, sizeof(*f))) == NULL) {
		err_set(&e, "out of memory");
		goto undo;
	}
	snprintf(f->dir, sizeof(f->dir), "%s", a->c.dir);
	f->g = a->c.geom;
	memcpy(f->pkh, a->c.pkh, HASH_LEN);
	if (plot_add_commit(p, f, &e) < 0)
		goto undo;
	f->fd = a->c.fd;
	TAILQ_INSERT_TAIL(&p->farms, f, link);
	hex_encode(f->pkh, HASH_LEN, hex);
	log_info("farm %" PRIu32 " added: %s, %" PRIu32 " %s sectors of %" PRIu64 " bytes, "
	    "public key hash %s", f->id, f->dir, f->g.sectors, f->g.profile, f->g.sector_size,
	    hex);
	a->cb(a->arg, plot_json_farm(p, f), NULL);
	free(a);
	plot_pump(p);
	return;
undo:
	free(f);
	farm_create_undo(&a->c);
	a->cb(a->arg, NULL, e.msg);
	free(a);
}

void
plot_farm_add(struct plot *p, const char *dir, uint32_t sectors, const char *profile,
    plot_reply_cb cb, void *arg)
{
	const struct farm_profile *prof = farm_profile_find(profile);
	uint64_t sector_size, total;
	struct plot_add *a, *o;
	struct farm *f;
	size_t n;

	if (prof == NULL) {
		cb(arg, NULL, "farm add: unknown profile (demo or production)");
		return;
	}
	if (dir[0] != '/') {
		cb(arg, NULL, "farm add: DIR must be an absolute path");
		return;
	}
	if (sectors == 0 || sectors > FARM_SECTORS_MAX) {
		cb(arg, NULL, "farm add: --sectors must be from 1 to 1000000");
		return;
	}
	if (__builtin_mul_overflow((uint64_t)prof->pieces_in_sector,
	    p->d->cfg.history.piece_size, &sector_size) ||
	    __builtin_mul_overflow(sector_size, (uint64_t)sectors, &total) ||
	    total > INT64_MAX) {
		cb(arg, NULL, "farm add: sectors × sector size does not fit in a file");
		return;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL) {
		cb(arg, NULL, "out of memory");
		return;
	}
	n = (size_t)snprintf(a->c.dir, sizeof(a->c.dir), "%s", dir);
	if (n >= sizeof(a->c.dir)) {
		cb(arg, NULL, "farm add: DIR is longer than PATH_MAX");
		free(a);
		return;
	}
	while (n > 1 && a->c.dir[n - 1] == '/')
		a->c.dir[--n] = '\0';
	/* Two adds of one DIR at once would race for its identity. */
	TAILQ_FOREACH(o, &p->adding, link)
		if (strcmp(o->c.dir, a->c.dir) == 0) {
			cb(arg, NULL, "farm add: DIR is in use: another farm add of it is under way");
			free(a);
			return;
		}
	TAILQ_FOREACH(f, &p->farms, link)
		if (strcmp(f->dir, a->c.dir) == 0) {
			char msg[PATH_MAX + 64];

			snprintf(msg, sizeof(msg), "farm %s is in use: it is farm %" PRIu32
			    " already", a->c.dir, f->id);
			cb(arg, NULL, msg);
			free(a);
			return;
		}
	a->p = p;
	a->cb = cb;
	a->arg = arg;
	a->c.fd = -1;
	a->c.geom.sectors = sectors;
	a->c.geom.pieces_in_sector = prof->pieces_in_sector;
	a->c.geom.piece_size = p->d->cfg.history.piece_size;
	a->c.geom.sector_size = sector_size;
	a->c.geom.pieces_per_segment = p->d->cfg.history.pieces_per_segment;
	a->c.geom.min_sector_lifetime = prof->min_sector_lifetime;
	a->c.geom.recent_segments = prof->recent_segments;
	a->c.geom.recent_history_fraction = prof->recent_history_fraction;
	a->c.geom.scrypt = prof->scrypt;
	snprintf(a->c.geom.profile, sizeof(a->c.geom.profile), "%s", prof->name);
	if (p->stopping || io_submit(p->d->io, plot_add_work, plot_add_done, a) < 0) {
		cb(arg, NULL, p->stopping ? "farmd is shutting down" : "cannot queue the farm add");
		free(a);
		return;
	}
	TAILQ_INSERT_TAIL(&p->adding, a, link);
}

/* ---------------------------------------------------------------- JSON */

static uint64_t
farm_queued(const struct farm *f)
{
	uint64_t q = f->count[SECTOR_EMPTY] + f->count[SECTOR_PLOTTING] +
	    f->count[SECTOR_EXPIRED] + f->count[SECTOR_ABOUT_TO_EXPIRE];

	return q > f->in_flight ? q - f->in_flight : 0;
}

/* Sectors whose content is current: plotted, or plotted and due for a
 * replot soon. */
static uint64_t
farm_plotted(const struct farm *f)
{
	return f->count[SECTOR_PLOTTED] + f->count[SECTOR_ABOUT_TO_EXPIRE];
}

static const char *
farm_state(struct plot *p, const struct farm *f)
{
	if (f->fd < 0)
		return "error";
	if (f->in_flight > 0)
		return "plotting";
	if (farm_queued(f) == 0)
		return "idle";
	return history_size(p->d->history) == 0 ? "waiting" : "plotting";
}

static json_t *
plot_json_farm(struct plot *p, struct farm *f)
{
	char hex[HASH_HEX_LEN + 1];

	hex_encode(f->pkh, HASH_LEN, hex);
	return json_pack("{s:I, s:s, s:I, s:I, s:s, s:I, s:s, s:s, s:s, s:I}",
	    "id", (json_int_t)f->id, "dir", f->dir, "sectors", (json_int_t)f->g.sectors,
	    "sector_size", (json_int_t)f->g.sector_size, "public_key_hash", hex,
	    "plotted", (json_int_t)farm_plotted(f),
	    "state", farm_state(p, f), "profile", f->g.profile, "error", f->error,
	    "pieces_in_sector", (json_int_t)f->g.pieces_in_sector);
}

json_t *
plot_json_farms(struct plot *p)
{
	json_t *a = json_array();
	struct farm *f;

	TAILQ_FOREACH(f, &p->farms, link)
		json_array_append_new(a, plot_json_farm(p, f));
	return a;
}

static json_t *
json_int_or_null(int null, int64_t v)
{
	return null ? json_null() : json_integer(v);
}

json_t *
plot_json_sectors(struct plot *p, const char *farm, struct err *e)
{
	struct farm *only = NULL;
	sqlite3_stmt *st;
	json_t *a;
	int rc;

	if (farm != NULL && (only = farm_lookup(p, farm, e)) == NULL)
		return NULL;
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
		    "history_size", json_int_or_null(sqlite3_column_type(st, 3) == SQLITE_NULL,
		    sqlite3_column_int64(st, 3)),
		    "checksum", has ? json_string(hex) : json_null(),
		    "expires_at", json_int_or_null(sqlite3_column_type(st, 5) == SQLITE_NULL,
		    sqlite3_column_int64(st, 5)),
		    "plotted_at", json_int_or_null(sqlite3_column_type(st, 6) == SQLITE_NULL,
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

json_t *
plot_json_progress(struct plot *p)
{
	json_t *farms = json_array(), *events = json_array();
	uint64_t hs = history_size(p->d->history);
	int idle = 1;
	struct farm *f;
	struct sjob *j;

	TAILQ_FOREACH(f, &p->farms, link) {
		json_t *fl = json_array();
		uint64_t queued = f->fd < 0 || hs == 0 ? 0 : farm_queued(f);

		TAILQ_FOREACH(j, &p->jobs, link)
			if (j->f == f)
				json_array_append_new(fl, json_pack("{s:I, s:s, s:I, s:I, s:I, s:s}",
				    "index", (json_int_t)j->index, "phase", sj_names[j->state],
				    "pieces_done", (json_int_t)j->pieces_done,
				    "pieces_total", (json_int_t)f->g.pieces_in_sector,
				    "history_size", (json_int_t)j->history_size,
				    "error", j->state == SJ_WAIT ? j->error : ""));
		if (f->in_flight > 0 || queued > 0)
			idle = 0;
		json_array_append_new(farms, json_pack("{s:I, s:s, s:I, s:I, s:s, s:o, s:I, s:I, "
		    "s:s, s:I}", "id", (json_int_t)f->id, "dir", f->dir,
		    "sectors", (json_int_t)f->g.sectors,
		    "plotted", (json_int_t)farm_plotted(f),
		    "state", farm_state(p, f), "in_flight", fl, "queued", (json_int_t)queued,
		    "errors", (json_int_t)f->errors_total, "last_error", f->last_error,
		    "sectors_plotted_total", (json_int_t)f->plotted_total));
	}
	for (uint64_t i = p->nevents > PLOT_EVENTS ? p->nevents - PLOT_EVENTS : 0;
	    i < p->nevents; i++) {
		const struct plot_event *ev = &p->events[i % PLOT_EVENTS];

		json_array_append_new(events, json_pack("{s:I, s:I, s:I, s:s, s:I}",
		    "ms", (json_int_t)ev->ms, "farm", (json_int_t)ev->farm,
		    "index", (json_int_t)ev->index, "event", ev->event,
		    "took_ms", (json_int_t)ev->took_ms));
	}
	return json_pack("{s:b, s:I, s:o, s:o}", "idle", idle, "history_size", (json_int_t)hs,
	    "farms", farms, "events", events);
}

json_t *
plot_json_summary(struct plot *p)
{
	uint64_t farms = 0, sectors = 0, plotted = 0, in_flight = 0, errors = 0, unusable = 0;
	const char *last_error = "";
	struct farm *f;

	TAILQ_FOREACH(f, &p->farms, link) {
		farms++;
		sectors += f->g.sectors;
		plotted += farm_plotted(f);
		in_flight += f->in_flight;
		errors += f->errors_total;
		unusable += f->fd < 0;
		if (f->last_error[0])
			last_error = f->last_error;
		if (f->fd < 0)
			last_error = f->error;
	}
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:s}", "farms",
	    (json_int_t)farms, "sectors", (json_int_t)sectors,
	    "plotted", (json_int_t)plotted, "in_flight", (json_int_t)in_flight,
	    "errors", (json_int_t)errors, "unusable_farms", (json_int_t)unusable,
	    "last_error", last_error);
}

json_t *
plot_json_metrics(struct plot *p)
{
	json_t *a = json_array();
	struct farm *f;

	TAILQ_FOREACH(f, &p->farms, link) {
		json_t *states = json_object(), *hists = json_object();

		for (int k = 0; k < SECTOR_NSTATES; k++)
			json_object_set_new(states, sector_names[k], json_integer((json_int_t)f->count[k]));
		for (int ph = 0; ph < PH_COUNT; ph++) {
			json_t *b = json_array();

			for (int k = 0; k < PLOT_HIST_BUCKETS; k++)
				json_array_append_new(b, json_integer((json_int_t)f->hist[ph].bucket[k]));
			json_object_set_new(hists, ph_names[ph], json_pack("{s:o, s:I, s:f}",
			    "buckets", b, "count", (json_int_t)f->hist[ph].count,
			    "sum", f->hist[ph].sum));
		}
		json_array_append_new(a, json_pack("{s:I, s:o, s:I, s:I, s:I, s:b, s:o}",
		    "farm", (json_int_t)f->id, "states", states,
		    "plotted_total", (json_int_t)f->plotted_total,
		    "errors_total", (json_int_t)f->errors_total,
		    "in_flight", (json_int_t)f->in_flight, "usable", f->fd >= 0, "hist", hists));
	}
	return a;
}

/* --------------------------------------------------------- sector read */

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

/* The row and the sector's job may have changed while the read was on
 * the I/O pool: only an unchanged, idle sector can be judged. */
static int
sector_unchanged(struct plot *p, struct farm *f, uint32_t idx, const struct sector_row *then)
{
	struct sector_row now;
	struct err e;

	return sjob_find(p, f, idx) == NULL && sector_get(p, f, idx, &now, &e) == 0 &&
	    now.have_checksum && then->have_checksum &&
	    memcmp(now.checksum, then->checksum, HASH_LEN) == 0 &&
	    now.history_size == then->history_size && now.state == then->state;
}

/* Marks a sector whose bytes are wrong for replotting. */
static void
plot_mark_damaged(struct plot *p, struct farm *f, uint32_t idx, const struct sector_row *r,
    const char *why)
{
	struct err e;

	if (sector_move(p, f, idx, SECTOR_EXPIRED, r->history_size, NULL, r->expires_at,
	    AT_KEEP, &e) < 0) {
		log_err("sector %" PRIu32 "/%" PRIu32 ": %s (and cannot mark it: %s)", f->id, idx,
		    why, e.msg);
		return;
	}
	log_warn("sector %" PRIu32 "/%" PRIu32 ": %s; marked expired for replotting", f->id,
	    idx, why);
	plot_pump(p);
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
	if (r->p->stopping || !sector_unchanged(r->p, r->f, r->idx, &r->row)) {
		sread_finish(r, "sector %" PRIu32 "/%" PRIu32 " changed while it was read; try "
		    "again", r->f->id, r->idx);
		return;
	}
	plot_mark_damaged(r->p, r->f, r->idx, &r->row, "a decoded piece does not match its "
	    "piece root");
	sread_finish(r, "sector %" PRIu32 "/%" PRIu32 " piece offset %" PRIu32 " (piece %"
	    PRIu64 "): decoded bytes do not match the piece root; the sector is marked for "
	    "replotting", r->f->id, r->idx, r->offset, r->piece_index);
}

static void
sread_decode_cb(uint64_t job_id, const Farmd__JobResult *res, const char *error, void *arg)
{
	struct sread *r = arg;
	const ProtobufCBinaryData *out;

	(void)job_id;
	r->job_id = 0;
	if (error != NULL) {
		sread_finish(r, "decode: %s", error);
		return;
	}
	if ((out = pool_encode_pieces(res, 1, r->f->g.piece_size)) == NULL) {
		sread_finish(r, "decode: the worker answered with the wrong piece");
		return;
	}
	memcpy(r->buf, out[0].data, r->f->g.piece_size);
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
	ProtobufCBinaryData piece = { r->f->g.piece_size, r->buf };
	struct err e;

	if (r->io_err) {
		sread_finish(r, "read %s/%s: %s", r->f->dir, FARM_PLOT, strerror(r->io_err));
		return;
	}
	if (r->p->stopping) {
		sread_finish(r, "farmd is shutting down");
		return;
	}
	if ((r->job_id = pool_submit_encode(r->p->d->pool, r->sector_id, r->offset,
	    &r->f->g.scrypt, &piece, 1, 1, &opts, sread_decode_cb, r, &e)) == 0)
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

/* ---------------------------------------------------------- plot scrub */

int
plot_scrub_next(struct plot *p, int have, uint32_t farm, uint32_t idx, uint32_t *nfarm,
    uint32_t *nidx)
{
	sqlite3_stmt *st;
	struct err e;
	int found, rc;

	/* A row-value comparison, so the primary key is searched, not
	 * scanned: a scrub is n lookups, not n scans. */
	st = db_prepare(p->d->db, "SELECT farm, idx FROM sectors WHERE (farm, idx) > (?, ?) "
	    "AND checksum IS NOT NULL ORDER BY farm, idx LIMIT 1", &e);
	if (st == NULL) {
		log_err("plot scrub: %s", e.msg);
		return -1;
	}
	sqlite3_bind_int64(st, 1, have ? (int64_t)farm : -1);
	sqlite3_bind_int64(st, 2, have ? (int64_t)idx : -1);
	rc = sqlite3_step(st);
	found = rc == SQLITE_ROW;
	if (found) {
		*nfarm = (uint32_t)sqlite3_column_int64(st, 0);
		*nidx = (uint32_t)sqlite3_column_int64(st, 1);
	} else if (rc != SQLITE_DONE) {
		log_err("plot scrub: %s", sqlite3_errmsg(db_handle(p->d->db)));
		found = -1;
	}
	sqlite3_finalize(st);
	return found;
}

struct pcheck {
	struct plot *p;
	struct farm *f;
	uint32_t idx;
	struct sector_row row;
	uint8_t sum[HASH_LEN];
	int io_err;
	plot_scrub_cb cb;
	void *arg;
};

static void
pcheck_work(void *arg)
{
	struct pcheck *c = arg;
	uint64_t left = c->f->g.sector_size;
	off_t off = (off_t)((uint64_t)c->idx * c->f->g.sector_size);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t *buf = malloc(PLOT_SCRUB_CHUNK);
	unsigned int len;

	c->io_err = md == NULL || buf == NULL ? ENOMEM : 0;
	if (!c->io_err && EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		c->io_err = EINVAL;
	while (!c->io_err && left > 0) {
		if (__atomic_load_n(&c->p->cancel, __ATOMIC_RELAXED)) {
			c->io_err = ECANCELED;
			break;
		}
		size_t want = left < PLOT_SCRUB_CHUNK ? (size_t)left : PLOT_SCRUB_CHUNK;
		ssize_t n = pread(c->f->fd, buf, want, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			c->io_err = n < 0 ? errno : EIO;
			break;
		}
		if (EVP_DigestUpdate(md, buf, (size_t)n) != 1) {
			c->io_err = EINVAL;
			break;
		}
		left -= (uint64_t)n;
		off += n;
	}
	if (!c->io_err && EVP_DigestFinal_ex(md, c->sum, &len) != 1)
		c->io_err = EINVAL;
	EVP_MD_CTX_free(md);
	free(buf);
}

static void
pcheck_done(void *arg)
{
	struct pcheck *c = arg;
	struct plot *p = c->p;
	int result = -1;

	p->checks--;
	if (p->stopping || c->io_err == ECANCELED) {
		result = -1;
	} else if (c->io_err == EIO && sector_unchanged(p, c->f, c->idx, &c->row)) {
		/* Unreadable bytes are damaged bytes: replot them. */
		result = 1;
		plot_mark_damaged(p, c->f, c->idx, &c->row, "plot scrub: read failed: "
		    "Input/output error");
	} else if (c->io_err) {
		log_warn("plot scrub: sector %" PRIu32 "/%" PRIu32 ": %s", c->f->id, c->idx,
		    strerror(c->io_err));
	} else if (sector_unchanged(p, c->f, c->idx, &c->row)) {
		result = memcmp(c->sum, c->row.checksum, HASH_LEN) != 0;
		if (result == 1)
			plot_mark_damaged(p, c->f, c->idx, &c->row, "plot scrub: bytes do not "
			    "match the checksum");
	}
	c->cb(c->arg, result);
	free(c);
}

void
plot_scrub_sector(struct plot *p, uint32_t farm, uint32_t idx, plot_scrub_cb cb, void *arg)
{
	struct farm *f = farm_by_id(p, farm);
	struct pcheck *c;
	struct err e;

	if (p->stopping || f == NULL || f->fd < 0 || idx >= f->g.sectors ||
	    sjob_find(p, f, idx) != NULL ||
	    (c = calloc(1, sizeof(*c))) == NULL) {
		cb(arg, -1);
		return;
	}
	c->p = p;
	c->f = f;
	c->idx = idx;
	c->cb = cb;
	c->arg = arg;
	if (sector_get(p, f, idx, &c->row, &e) < 0 || !c->row.have_checksum ||
	    io_submit(p->d->io, pcheck_work, pcheck_done, c) < 0) {
		free(c);
		cb(arg, -1);
		return;
	}
	p->checks++;
}

/* ------------------------------------------------------------ teardown */

#ifdef FAULT_INJECTION
void
plot_arm_write_fault(struct plot *p)
{
	p->write_fault = 1;
}
#endif

int
plot_quiesce(struct plot *p)
{
	struct sjob *j, *jt;
	struct sread *r, *rt;

	if (!p->stopping) {
		p->stopping = 1;
		__atomic_store_n(&p->cancel, 1, __ATOMIC_RELAXED);
		/* Worker jobs are cancelled (their callbacks will not run);
		 * disk work in flight finishes and its completion frees the
		 * job.  Interrupted sectors stay 'plotting' and are
		 * replotted after the restart. */
		for (j = TAILQ_FIRST(&p->jobs); j != NULL; j = jt) {
			jt = TAILQ_NEXT(j, link);
			for (uint32_t i = 0; i < j->nparts; i++)
				if (j->parts[i].job_id != 0) {
					pool_cancel(p->d->pool, j->parts[i].job_id);
					j->parts[i].job_id = 0;
					j->pending--;
				}
			if (j->state == SJ_WAIT || (j->state == SJ_ENCODE && j->pending == 0))
				sjob_free(j);
		}
		for (r = TAILQ_FIRST(&p->reads); r != NULL; r = rt) {
			rt = TAILQ_NEXT(r, link);
			if (r->job_id != 0) {
				pool_cancel(p->d->pool, r->job_id);
				sread_finish(r, "farmd is shutting down");
			}
		}
	}
	return TAILQ_EMPTY(&p->jobs) && TAILQ_EMPTY(&p->reads) && TAILQ_EMPTY(&p->adding) &&
	    p->checks == 0;
}

void
plot_free(struct plot *p)
{
	struct farm *f;

	if (p == NULL)
		return;
	while (!TAILQ_EMPTY(&p->jobs))
		sjob_free(TAILQ_FIRST(&p->jobs));
	if (p->expiry_ev != NULL)
		event_free(p->expiry_ev);
	while ((f = TAILQ_FIRST(&p->farms)) != NULL) {
		TAILQ_REMOVE(&p->farms, f, link);
		if (f->fd >= 0)
			close(f->fd);
		free(f);
	}
	free(p);
}
