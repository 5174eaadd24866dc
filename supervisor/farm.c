/*
 * farm.c: the registry of farms (farm.h).
 *
 * Invariants:
 *  - p->farms holds every row of `farms`, in id order, from plot_new()
 *    to plot_free(); a farm joins it only after its row and all its
 *    sector rows have committed, and never leaves it.
 *  - A farm add makes its files on the I/O pool first (farmdir.c) and
 *    commits the rows after; if the rows fail, exactly what it made is
 *    removed.  Two adds of one directory are never under way at once.
 */
#include "farm.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "clock.h"
#include "db.h"
#include "farmd.h"
#include "history.h"
#include "io.h"
#include "log.h"
#include "plot_int.h"

/* Rows are created in one transaction on the loop (about 1 s per
 * million); a farm is one disk, and a million sectors is already a
 * petabyte of production sectors. */
#define FARM_SECTORS_MAX 1000000

/* A farm add on the I/O pool. */
struct farm_add {
	struct plot *p;
	struct farmdir_create c;
	plot_reply_cb cb;
	void *arg;
	TAILQ_ENTRY(farm_add) link;
};

/* Declared in plot.h (metrics.c prints them); farm_hist_add fills the
 * buckets. */
const double plot_hist_bounds[PLOT_HIST_BUCKETS] = {
	0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120,
};

struct farm *
farm_by_id(struct plot *p, uint32_t id)
{
	struct farm *f;

	TAILQ_FOREACH(f, &p->farms, link)
		if (f->id == id)
			return f;
	return NULL;
}

struct farm *
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

void
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

uint64_t
farm_queued(const struct farm *f)
{
	uint64_t q = f->count[SECTOR_EMPTY] + f->count[SECTOR_PLOTTING] +
	    f->count[SECTOR_EXPIRED] + f->count[SECTOR_ABOUT_TO_EXPIRE];

	return q > f->in_flight ? q - f->in_flight : 0;
}

/* Sectors whose content is current: plotted, or plotted and due for a
 * replot soon. */
uint64_t
farm_plotted(const struct farm *f)
{
	return f->count[SECTOR_PLOTTED] + f->count[SECTOR_ABOUT_TO_EXPIRE];
}

const char *
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

json_t *
farm_json(struct plot *p, struct farm *f)
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

int
farm_load(struct plot *p, struct err *e)
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
		} else if ((f->fd = farmdir_open(f->dir, &f->g, f->pkh, e)) < 0) {
			snprintf(f->error, sizeof(f->error), "%s", e->msg);
		}
		if (f->fd < 0)
			log_err("farm %" PRIu32 " (%s) is not usable, not plotting it: %s", f->id,
			    f->dir, f->error);
		if (sector_recount(p, f, e) < 0) {
			sqlite3_finalize(st);
			return -1;
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : err_set(e, "farms: %s", sqlite3_errmsg(db_handle(p->d->db)));
}

void
farm_free_all(struct plot *p)
{
	struct farm *f;

	while ((f = TAILQ_FIRST(&p->farms)) != NULL) {
		TAILQ_REMOVE(&p->farms, f, link);
		if (f->fd >= 0)
			close(f->fd);
		free(f);
	}
}

static void
farm_add_work(void *arg)
{
	struct farm_add *a = arg;

	farmdir_create(&a->c);
}

/* The farm's row; f->id is the next free id. */
static int
farm_insert(struct plot *p, struct farm *f, uint64_t now, struct err *e)
{
	sqlite3_stmt *st = db_prepare(p->d->db, "INSERT INTO farms (id, dir, sectors, profile, "
	    "pieces_in_sector, sector_size, min_sector_lifetime, recent_segments, "
	    "recent_history_fraction, scrypt_n, scrypt_r, scrypt_p, public_key_hash, "
	    "created_ms) VALUES ((SELECT COALESCE(MAX(id) + 1, 0) FROM farms), "
	    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id", e);
	int rc = -1;

	if (st == NULL)
		return -1;
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
	if (sqlite3_step(st) == SQLITE_ROW) {
		f->id = (uint32_t)sqlite3_column_int64(st, 0);
		if (sqlite3_step(st) == SQLITE_DONE)
			rc = 0;
	}
	if (rc < 0)
		err_set(e, "farms: %s", sqlite3_errmsg(db_handle(p->d->db)));
	sqlite3_finalize(st);
	return rc;
}

/* The farm's row and its sectors' rows, in one transaction. */
static int
farm_add_commit(struct plot *p, struct farm *f, struct err *e)
{
	uint64_t now = clock_real_ms();

	if (db_begin(p->d->db, e) < 0)
		return -1;
	if (farm_insert(p, f, now, e) < 0 || sector_create(p, f, now, e) < 0 ||
	    db_commit(p->d->db, e) < 0) {
		db_rollback(p->d->db);
		return -1;
	}
	f->count[SECTOR_EMPTY] = f->g.sectors;
	return 0;
}

static void
farm_add_done(void *arg)
{
	struct farm_add *a = arg;
	struct plot *p = a->p;
	struct farm *f = NULL;
	char hex[HASH_HEX_LEN + 1];
	struct err e;

	TAILQ_REMOVE(&p->adding, a, link);
	if (a->c.fd < 0) {              /* farmdir_create failed and cleaned up */
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
	if (farm_add_commit(p, f, &e) < 0)
		goto undo;
	f->fd = a->c.fd;
	TAILQ_INSERT_TAIL(&p->farms, f, link);
	hex_encode(f->pkh, HASH_LEN, hex);
	log_info("farm %" PRIu32 " added: %s, %" PRIu32 " %s sectors of %" PRIu64 " bytes, "
	    "public key hash %s", f->id, f->dir, f->g.sectors, f->g.profile, f->g.sector_size,
	    hex);
	a->cb(a->arg, farm_json(p, f), NULL);
	free(a);
	plot_kick(p);
	return;
undo:
	free(f);
	farmdir_create_undo(&a->c);
	a->cb(a->arg, NULL, e.msg);
	free(a);
}

/* The request's own checks: NULL if it may go on, else the reply. */
static const char *
farm_add_check(struct plot *p, const struct farmdir_profile *prof, const char *dir,
    uint32_t sectors, uint64_t *sector_size)
{
	uint64_t total;

	if (prof == NULL)
		return "farm add: unknown profile (demo or production)";
	if (dir[0] != '/')
		return "farm add: DIR must be an absolute path";
	if (sectors == 0 || sectors > FARM_SECTORS_MAX)
		return "farm add: --sectors must be from 1 to 1000000";
	if (__builtin_mul_overflow((uint64_t)prof->pieces_in_sector,
	    p->d->cfg.history.piece_size, sector_size) ||
	    __builtin_mul_overflow(*sector_size, (uint64_t)sectors, &total) ||
	    total > INT64_MAX)
		return "farm add: sectors × sector size does not fit in a file";
	return NULL;
}

/* Two adds of one DIR at once would race for its identity, and a DIR
 * that is a farm already is not added again: 1 and msg if in use. */
static int
farm_add_in_use(struct plot *p, const char *dir, char *msg, size_t len)
{
	struct farm_add *o;
	struct farm *f;

	TAILQ_FOREACH(o, &p->adding, link)
		if (strcmp(o->c.dir, dir) == 0) {
			snprintf(msg, len, "farm add: DIR is in use: another farm add of it is "
			    "under way");
			return 1;
		}
	TAILQ_FOREACH(f, &p->farms, link)
		if (strcmp(f->dir, dir) == 0) {
			snprintf(msg, len, "farm %s is in use: it is farm %" PRIu32 " already", dir,
			    f->id);
			return 1;
		}
	return 0;
}

static void
farm_add_geom(struct plot *p, struct farmdir_geom *g, const struct farmdir_profile *prof,
    uint32_t sectors, uint64_t sector_size)
{
	g->sectors = sectors;
	g->pieces_in_sector = prof->pieces_in_sector;
	g->piece_size = p->d->cfg.history.piece_size;
	g->sector_size = sector_size;
	g->pieces_per_segment = p->d->cfg.history.pieces_per_segment;
	g->min_sector_lifetime = prof->min_sector_lifetime;
	g->recent_segments = prof->recent_segments;
	g->recent_history_fraction = prof->recent_history_fraction;
	g->scrypt = prof->scrypt;
	snprintf(g->profile, sizeof(g->profile), "%s", prof->name);
}

void
farm_add(struct plot *p, const char *dir, uint32_t sectors, const char *profile,
    plot_reply_cb cb, void *arg)
{
	const struct farmdir_profile *prof = farmdir_profile_find(profile);
	char msg[PATH_MAX + 64];
	uint64_t sector_size;
	struct farm_add *a;
	const char *why;
	size_t n;

	if ((why = farm_add_check(p, prof, dir, sectors, &sector_size)) != NULL) {
		cb(arg, NULL, why);
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
	if (farm_add_in_use(p, a->c.dir, msg, sizeof(msg))) {
		cb(arg, NULL, msg);
		free(a);
		return;
	}
	a->p = p;
	a->cb = cb;
	a->arg = arg;
	a->c.fd = -1;
	farm_add_geom(p, &a->c.geom, prof, sectors, sector_size);
	if (p->stopping || io_submit(p->d->io, farm_add_work, farm_add_done, a) < 0) {
		cb(arg, NULL, p->stopping ? "farmd is shutting down" : "cannot queue the farm add");
		free(a);
		return;
	}
	TAILQ_INSERT_TAIL(&p->adding, a, link);
}
