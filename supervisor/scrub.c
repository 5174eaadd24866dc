/*
 * scrub.c: the scrubber as a state machine (DESIGN §9).
 *
 *   IDLE ─start/schedule─► NEXT ─► VERIFY ─► SLEEP ─► NEXT … ─► (end) IDLE
 *                           ▲                  │
 *                 resume    │   PAUSED ◄─pause─┘ (after the block in hand)
 *
 * A run has two phases: blocks, then plotted sectors.  NEXT picks the
 * first block (or sector) after the saved position; VERIFY reads a block
 * through the block store (which reports corrupt or missing blocks to
 * resync) or rehashes a sector against its checksum (plot.c marks a
 * mismatch expired, so it is replotted); SLEEP waits tranquility × the
 * time the item took.  The run's
 * state, position and counters live in the meta table and are saved at
 * most every SCRUB_SAVE_MS, so a crash re-checks at most a few blocks.
 */
#include "scrub.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "blockstore.h"
#include "clock.h"
#include "db.h"
#include "farmd.h"
#include "log.h"
#include "plot.h"

#define SCRUB_SAVE_MS 500
#define SCRUB_SCHEDULE_CHECK_MS 60000

enum scrub_state { SC_IDLE, SC_NEXT, SC_VERIFY, SC_SLEEP, SC_PAUSED };

static const char *const sc_names[] = {
	[SC_IDLE] = "idle", [SC_NEXT] = "next", [SC_VERIFY] = "verify",
	[SC_SLEEP] = "sleep", [SC_PAUSED] = "paused",
};

struct scrub {
	struct farmd *d;
	enum scrub_state state;
	int want_pause;
	int stopping;
	uint8_t position[HASH_LEN];
	int have_position;
	int sectors;                    /* phase 2: plotted sectors */
	int have_spos;
	uint32_t spos_farm, spos_idx;   /* last sector checked */
	uint32_t cur_farm, cur_idx;
	uint64_t checked, corruptions;
	uint64_t sectors_checked, sector_corruptions;
	uint64_t started_ms, last_done_ms, next_run_ms;
	uint64_t verify_started_us, last_saved_ms;
	uint8_t current[HASH_LEN];
	uint64_t gen;                   /* bumped by start and cancel */
	int inflight;                   /* verifies not yet answered */
	struct event *timer;            /* SLEEP wake-up and schedule checks */
};

/* A verify in flight, tied to the run that asked for it: an answer that
 * arrives after a cancel or restart of the run is dropped. */
struct scrub_ticket {
	struct scrub *s;
	uint64_t gen;
};

static void scrub_enter(struct scrub *s, enum scrub_state next);

static const char *
scrub_public_state(const struct scrub *s)
{
	return s->state == SC_IDLE ? "idle" : s->state == SC_PAUSED ? "paused" : "running";
}

static void
scrub_save(struct scrub *s)
{
	char pos[HASH_HEX_LEN + 1], v[64];
	struct err e;

	if (s->have_position)
		block_hex(s->position, pos);
	else
		pos[0] = '\0';
	if (db_begin(s->d->db, &e) < 0)
		goto fail;
#define SAVE(key, fmt, val) do { snprintf(v, sizeof(v), fmt, val); \
	if (db_meta_set(s->d->db, key, v, &e) < 0) goto rollback; } while (0)
	SAVE("scrub.state", "%s", scrub_public_state(s));
	SAVE("scrub.checked", "%" PRIu64, s->checked);
	SAVE("scrub.corruptions", "%" PRIu64, s->corruptions);
	SAVE("scrub.started_ms", "%" PRIu64, s->started_ms);
	SAVE("scrub.last_done_ms", "%" PRIu64, s->last_done_ms);
	SAVE("scrub.next_run_ms", "%" PRIu64, s->next_run_ms);
	SAVE("scrub.phase", "%s", s->sectors ? "sectors" : "blocks");
	SAVE("scrub.sectors_checked", "%" PRIu64, s->sectors_checked);
	SAVE("scrub.sector_corruptions", "%" PRIu64, s->sector_corruptions);
	snprintf(v, sizeof(v), "%" PRIu32 ":%" PRIu32, s->spos_farm, s->spos_idx);
	if (db_meta_set(s->d->db, "scrub.sector_position", s->have_spos ? v : "", &e) < 0)
		goto rollback;
#undef SAVE
	if (db_meta_set(s->d->db, "scrub.position", pos, &e) < 0)
		goto rollback;
	if (db_commit(s->d->db, &e) < 0)
		goto rollback;
	s->last_saved_ms = clock_mono_ms();
	return;
rollback:
	db_rollback(s->d->db);
fail:
	log_err("scrub: cannot save progress: %s", e.msg);
}

/* interval × [5/6, 7/6]: 25–35 days for the default 30. */
static uint64_t
scrub_next_run(const struct scrub *s, uint64_t now)
{
	uint64_t iv = s->d->cfg.blocks.scrub_interval_ms;
	uint64_t spread = iv / 3;

	return now + iv - iv / 6 + (spread ? arc4random_uniform(
	    spread > UINT32_MAX ? UINT32_MAX : (uint32_t)spread) : 0);
}

static void
scrub_arm(struct scrub *s, uint64_t ms)
{
	struct timeval tv = clock_tv(ms);

	evtimer_add(s->timer, &tv);
}

/* Idle: wake at the next scheduled run, or in a minute to look again
 * (the clock may jump; the config may be reloaded). */
static void
scrub_arm_schedule(struct scrub *s)
{
	uint64_t now = clock_real_ms();
	uint64_t wait = s->next_run_ms > now ? s->next_run_ms - now : 0;

	scrub_arm(s, wait < SCRUB_SCHEDULE_CHECK_MS ? wait : SCRUB_SCHEDULE_CHECK_MS);
}

/* An item (block or sector) answered: move the position, count, save
 * now and then, sleep.  corrupt < 0: a sector skipped (in flight or
 * changed meanwhile), not counted as checked. */
static void
scrub_item_done(struct scrub *s, uint64_t took_us, int corrupt)
{
	double tranq = s->d->cfg.blocks.scrub_tranquility;

	if (s->sectors) {
		s->spos_farm = s->cur_farm;
		s->spos_idx = s->cur_idx;
		s->have_spos = 1;
		s->sectors_checked += corrupt >= 0;
		s->sector_corruptions += corrupt == 1;
	} else {
		memcpy(s->position, s->current, HASH_LEN);
		s->have_position = 1;
		s->checked++;
		s->corruptions += corrupt;
	}
	if (s->stopping) {
		s->state = SC_SLEEP;    /* saved as running: continues at start */
		scrub_save(s);
		return;
	}
	if (s->checked + s->sectors_checked == 1 ||
	    clock_mono_ms() - s->last_saved_ms >= SCRUB_SAVE_MS)
		scrub_save(s);
	if (s->want_pause) {
		scrub_enter(s, SC_PAUSED);
		return;
	}
	s->state = SC_SLEEP;
	scrub_arm(s, (uint64_t)((double)took_us * tranq / 1000.0));
}

static void
scrub_verify_done(void *arg, uint8_t *data, size_t len, enum block_status st,
    const char *error)
{
	struct scrub_ticket *t = arg;
	struct scrub *s = t->s;
	int stale = t->gen != s->gen || s->state != SC_VERIFY;

	(void)len;
	free(data);
	free(t);
	s->inflight--;
	if (stale)
		return;
	/* A row deleted meanwhile is not a corruption. */
	scrub_item_done(s, clock_mono_us() - s->verify_started_us, st == BLOCK_CORRUPT ||
	    (st == BLOCK_MISSING && error != NULL));
}

static void
scrub_sector_done(void *arg, int result)
{
	struct scrub_ticket *t = arg;
	struct scrub *s = t->s;
	int stale = t->gen != s->gen || s->state != SC_VERIFY;

	free(t);
	s->inflight--;
	if (stale)
		return;
	scrub_item_done(s, clock_mono_us() - s->verify_started_us, result);
}

/* NEXT, second phase: the first plotted sector after the position. */
static enum scrub_state
scrub_next_sector(struct scrub *s)
{
	switch (plot_scrub_next(s->d->plot, s->have_spos, s->spos_farm, s->spos_idx,
	    &s->cur_farm, &s->cur_idx)) {
	case 1:
		return SC_VERIFY;
	case 0:
		return SC_IDLE;
	default:
		return SC_PAUSED;       /* logged; resume retries */
	}
}

/* The first block after the position; IDLE at the end of the blocks. */
static enum scrub_state
scrub_next_block(struct scrub *s)
{
	sqlite3_stmt *st;
	struct err e;
	int rc;

	st = db_prepare(s->d->db, s->have_position ?
	    "SELECT hash FROM blocks WHERE hash > ? ORDER BY hash LIMIT 1" :
	    "SELECT hash FROM blocks ORDER BY hash LIMIT 1", &e);
	if (st == NULL) {
		log_err("scrub: %s", e.msg);
		return SC_PAUSED;
	}
	if (s->have_position)
		sqlite3_bind_blob(st, 1, s->position, HASH_LEN, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == HASH_LEN) {
		memcpy(s->current, sqlite3_column_blob(st, 0), HASH_LEN);
		sqlite3_finalize(st);
		return SC_VERIFY;
	}
	sqlite3_finalize(st);
	return SC_IDLE;
}

/* NEXT: blocks, then sectors; at the end of both the run is over. */
static enum scrub_state
scrub_next(struct scrub *s)
{
	enum scrub_state next = s->sectors ? SC_IDLE : scrub_next_block(s);

	if (next == SC_VERIFY || next == SC_PAUSED)
		return next;
	s->sectors = 1;
	if ((next = scrub_next_sector(s)) != SC_IDLE)
		return next;
	s->last_done_ms = clock_real_ms();
	s->next_run_ms = scrub_next_run(s, s->last_done_ms);
	log_info("scrub finished: %" PRIu64 " blocks checked, %" PRIu64 " corrupt or missing; "
	    "%" PRIu64 " sectors checked, %" PRIu64 " corrupt", s->checked, s->corruptions,
	    s->sectors_checked, s->sector_corruptions);
	return SC_IDLE;
}

/* The one place the scrub's state changes. */
static void
scrub_enter(struct scrub *s, enum scrub_state next)
{
	for (;;) {
		log_debug("scrub: %s -> %s", sc_names[s->state], sc_names[next]);
		s->state = next;
		switch (next) {
		case SC_NEXT:
			next = scrub_next(s);
			continue;
		case SC_VERIFY: {
			struct scrub_ticket *t = malloc(sizeof(*t));

			if (t == NULL) {
				next = SC_PAUSED;
				continue;
			}
			t->s = s;
			t->gen = s->gen;
			s->inflight++;
			s->verify_started_us = clock_mono_us();
			if (s->sectors)
				plot_scrub_sector(s->d->plot, s->cur_farm, s->cur_idx,
				    scrub_sector_done, t);
			else
				blockstore_get(s->d->blocks, s->current, scrub_verify_done, t);
			return;
		}
		case SC_SLEEP:
			return;                 /* the timer goes on to NEXT */
		case SC_PAUSED:
			s->want_pause = 0;
			scrub_save(s);
			return;
		case SC_IDLE:
			s->have_position = 0;
			s->have_spos = 0;
			s->sectors = 0;
			scrub_save(s);
			scrub_arm_schedule(s);
			return;
		}
	}
}

static void
scrub_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct scrub *s = arg;
	struct err e;

	(void)fd;
	(void)what;
	if (s->stopping)
		return;
	if (s->state == SC_SLEEP) {
		scrub_enter(s, SC_NEXT);
		return;
	}
	if (s->state == SC_IDLE) {
		if (clock_real_ms() >= s->next_run_ms) {
			log_info("scrub: scheduled run starting");
			scrub_start(s, &e);
		} else {
			scrub_arm_schedule(s);
		}
	}
}

int
scrub_start(struct scrub *s, struct err *e)
{
	if (s->state != SC_IDLE)
		return err_set(e, "scrub is %s already%s", scrub_public_state(s),
		    s->state == SC_PAUSED ? " (resume or cancel it)" : "");
	s->have_position = 0;
	s->have_spos = 0;
	s->sectors = 0;
	s->checked = 0;
	s->corruptions = 0;
	s->sectors_checked = 0;
	s->sector_corruptions = 0;
	s->gen++;
	s->started_ms = clock_real_ms();
	evtimer_del(s->timer);
	log_info("scrub started (tranquility %g)", s->d->cfg.blocks.scrub_tranquility);
	scrub_enter(s, SC_NEXT);
	if (s->state != SC_IDLE)
		scrub_save(s);
	return 0;
}

int
scrub_pause(struct scrub *s, struct err *e)
{
	if (s->state == SC_IDLE || s->state == SC_PAUSED)
		return err_set(e, "scrub is %s, not running", scrub_public_state(s));
	if (s->state == SC_VERIFY) {
		s->want_pause = 1;      /* after the block in hand */
		return 0;
	}
	evtimer_del(s->timer);
	scrub_enter(s, SC_PAUSED);
	return 0;
}

int
scrub_resume(struct scrub *s, struct err *e)
{
	if (s->state != SC_PAUSED)
		return err_set(e, "scrub is %s, not paused", scrub_public_state(s));
	scrub_enter(s, SC_NEXT);
	return 0;
}

int
scrub_cancel(struct scrub *s, struct err *e)
{
	if (s->state == SC_IDLE)
		return err_set(e, "scrub is not running");
	/* An answer for the block in hand still arrives; the new
	 * generation makes it stale. */
	s->want_pause = 0;
	s->gen++;
	evtimer_del(s->timer);
	log_info("scrub cancelled after %" PRIu64 " blocks", s->checked);
	s->next_run_ms = scrub_next_run(s, clock_real_ms());
	scrub_enter(s, SC_IDLE);
	return 0;
}

json_t *
scrub_json(struct scrub *s)
{
	char pos[HASH_HEX_LEN + 1];

	if (s->have_position)
		block_hex(s->position, pos);
	else
		pos[0] = '\0';
	return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:f}",
	    "state", scrub_public_state(s), "phase", s->sectors ? "sectors" : "blocks",
	    "sectors_checked", (json_int_t)s->sectors_checked,
	    "sector_corruptions", (json_int_t)s->sector_corruptions,
	    "checked", (json_int_t)s->checked,
	    "corruptions", (json_int_t)s->corruptions, "position", pos,
	    "started_ms", (json_int_t)s->started_ms,
	    "last_done_ms", (json_int_t)s->last_done_ms,
	    "next_run_ms", (json_int_t)s->next_run_ms,
	    "tranquility", s->d->cfg.blocks.scrub_tranquility);
}

struct scrub *
scrub_new(struct farmd *d, struct err *e)
{
	struct scrub *s = calloc(1, sizeof(*s));
	char state[32] = "", pos[HASH_HEX_LEN + 1] = "", phase[16] = "", spos[64] = "";

	if (s == NULL || (s->timer = evtimer_new(d->base, scrub_timer_cb, s)) == NULL) {
		free(s);
		err_set(e, "out of memory");
		return NULL;
	}
	s->d = d;
	s->checked = db_meta_get_u64(d->db, "scrub.checked", 0);
	s->corruptions = db_meta_get_u64(d->db, "scrub.corruptions", 0);
	s->started_ms = db_meta_get_u64(d->db, "scrub.started_ms", 0);
	s->last_done_ms = db_meta_get_u64(d->db, "scrub.last_done_ms", 0);
	s->next_run_ms = db_meta_get_u64(d->db, "scrub.next_run_ms", 0);
	db_meta_get(d->db, "scrub.state", state, sizeof(state), NULL);
	db_meta_get(d->db, "scrub.position", pos, sizeof(pos), NULL);
	s->have_position = hex_decode(pos, s->position, HASH_LEN) == 0;
	s->sectors_checked = db_meta_get_u64(d->db, "scrub.sectors_checked", 0);
	s->sector_corruptions = db_meta_get_u64(d->db, "scrub.sector_corruptions", 0);
	db_meta_get(d->db, "scrub.phase", phase, sizeof(phase), NULL);
	db_meta_get(d->db, "scrub.sector_position", spos, sizeof(spos), NULL);
	s->sectors = strcmp(phase, "sectors") == 0;
	s->have_spos = sscanf(spos, "%" SCNu32 ":%" SCNu32, &s->spos_farm, &s->spos_idx) == 2;
	if (s->next_run_ms == 0)
		s->next_run_ms = scrub_next_run(s, clock_real_ms());
	if (strcmp(state, "running") == 0) {
		log_info("scrub resumes after %" PRIu64 " blocks checked", s->checked);
		scrub_enter(s, SC_NEXT);
	} else if (strcmp(state, "paused") == 0) {
		s->state = SC_PAUSED;
	} else {
		s->state = SC_IDLE;
		scrub_arm_schedule(s);
	}
	return s;
}

int
scrub_quiesce(struct scrub *s)
{
	if (!s->stopping) {
		s->stopping = 1;
		evtimer_del(s->timer);
		if (s->state != SC_IDLE && s->state != SC_VERIFY)
			scrub_save(s);
	}
	return s->inflight == 0;
}

void
scrub_free(struct scrub *s)
{
	if (s == NULL)
		return;
	event_free(s->timer);
	free(s);
}
