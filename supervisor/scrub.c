/*
 * scrub.c: the scrubber as a state machine (DESIGN §9) on the fsm runner.
 *
 *   IDLE ─start/schedule─► NEXT ─► VERIFY ─► CHECKED ─► SLEEP ─► NEXT …
 *     ▲                     │ ▲                 │
 *     └──── end of run ─────┘ ├─resume─ PAUSED ◄┘ pause (after the item in hand)
 *                             └─resume─ ERROR ◄── a failed query, allocation,
 *                                                 check or save
 *   cancel: any state ─► IDLE
 *
 * A run walks the sources given to scrub_new in order (the blocks, then
 * the plotted sectors); it knows them only by their rows.  NEXT asks the
 * source in hand for the first item after its position and moves on to
 * the next source at the end of one; VERIFY hands the item to the
 * source's check (a block is read through the block store, which reports
 * corrupt or missing blocks to resync; a sector is rehashed against its
 * checksum, and a mismatch is marked expired, so it is replotted);
 * CHECKED counts the answer and moves the position; SLEEP waits
 * tranquility × the time the item took.
 *
 * Invariants:
 * - fsm_enter is the only writer of the state;
 * - status and the meta table show the public state (sc_public): ERROR
 *   shows, and is saved, as "paused", as it was before it had a state of
 *   its own, so resume retries it and a restart keeps it paused;
 * - the run's state, phase, positions and counters live in the meta
 *   table under the keys of each source's row, saved at most every
 *   SCRUB_SAVE_MS, so a crash re-checks at most a few items;
 * - an answer that arrives after a cancel or restart of its run (a new
 *   generation) is dropped.
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
#include "fsm.h"
#include "log.h"

#define SCRUB_SAVE_MS 500
#define SCRUB_SCHEDULE_CHECK_MS 60000

enum scrub_state {
	SC_IDLE, SC_NEXT, SC_VERIFY, SC_CHECKED, SC_SLEEP, SC_PAUSED, SC_ERROR, SC_NSTATES
};

/* A source and where the run is in it. */
struct scrub_walk {
	const struct scrub_source *src;
	char pos[SCRUB_POS_MAX];        /* the last item checked, "" for none */
	uint64_t checked, corruptions;
};

struct scrub {
	struct farmd *d;
	struct fsm m;
	int want_pause;
	int stopping;
	struct scrub_walk walk[SCRUB_MAX_SOURCES];
	int nwalk;
	int phase;                      /* the walk in hand */
	char cur[SCRUB_POS_MAX];        /* the item being verified */
	int result;                     /* its answer (enum scrub_result) */
	uint64_t took_us;
	uint64_t started_ms, last_done_ms, next_run_ms;
	uint64_t verify_started_us, last_saved_ms;
	char error[ERR_MSG_MAX];        /* why ERROR was entered */
	uint64_t gen;                   /* bumped by start and cancel */
	int inflight;                   /* verifies not yet answered */
	struct event *timer;            /* SLEEP wake-up and schedule checks */
#ifdef FAULT_INJECTION
	unsigned slow_ms;               /* debug fault scrub slow: the least sleep */
#endif
};

/* A verify in flight, tied to the run that asked for it. */
struct scrub_ticket {
	struct scrub *s;
	uint64_t gen;
};

static int scrub_idle(void *obj);
static int scrub_next(void *obj);
static int scrub_verify(void *obj);
static int scrub_checked(void *obj);
static int scrub_sleep(void *obj);
static int scrub_stop(void *obj);

static const struct fsm_state sc_states[SC_NSTATES] = {
	[SC_IDLE] =     { "idle", scrub_idle },         /* arms the schedule */
	[SC_NEXT] =     { "next", scrub_next },
	[SC_VERIFY] =   { "verify", scrub_verify },     /* until the source answers */
	[SC_CHECKED] =  { "checked", scrub_checked },
	[SC_SLEEP] =    { "sleep", scrub_sleep },       /* until the timer */
	[SC_PAUSED] =   { "paused", scrub_stop },       /* until resume or cancel */
	[SC_ERROR] =    { "error", scrub_stop },        /* until resume or cancel */
};

static const struct fsm_def sc_def = {
	.name = "scrub", .states = sc_states, .nstates = SC_NSTATES,
	.error = SC_ERROR, .final = -1,
};

/* What status shows and scrub.state holds (unchanged formats). */
static const char *const sc_public[SC_NSTATES] = {
	[SC_IDLE] = "idle", [SC_NEXT] = "running", [SC_VERIFY] = "running",
	[SC_CHECKED] = "running", [SC_SLEEP] = "running", [SC_PAUSED] = "paused",
	[SC_ERROR] = "paused",
};

static const char *
scrub_public_state(const struct scrub *s)
{
	return sc_public[s->m.state];
}

/* Enters ERROR's cause; returns the state to go to. */
static int
scrub_fail(struct scrub *s, const char *msg)
{
	snprintf(s->error, sizeof(s->error), "%s", msg);
	return SC_ERROR;
}

static int
scrub_save(struct scrub *s)
{
	char v[64];
	struct err e;

	if (db_begin(s->d->db, &e) < 0)
		goto fail;
#define SAVE(key, fmt, val) do { snprintf(v, sizeof(v), fmt, val); \
	if (db_meta_set(s->d->db, key, v, &e) < 0) goto rollback; } while (0)
	SAVE("scrub.state", "%s", scrub_public_state(s));
	SAVE("scrub.started_ms", "%" PRIu64, s->started_ms);
	SAVE("scrub.last_done_ms", "%" PRIu64, s->last_done_ms);
	SAVE("scrub.next_run_ms", "%" PRIu64, s->next_run_ms);
	SAVE("scrub.phase", "%s", s->walk[s->phase].src->name);
	for (int i = 0; i < s->nwalk; i++) {
		const struct scrub_walk *w = &s->walk[i];

		SAVE(w->src->checked_key, "%" PRIu64, w->checked);
		SAVE(w->src->corruptions_key, "%" PRIu64, w->corruptions);
		if (db_meta_set(s->d->db, w->src->pos_key, w->pos, &e) < 0)
			goto rollback;
	}
#undef SAVE
	if (db_commit(s->d->db, &e) < 0)
		goto rollback;
	s->last_saved_ms = clock_mono_ms();
	return 0;
rollback:
	db_rollback(s->d->db);
fail:
	log_err("scrub: cannot save progress: %s", e.msg);
	snprintf(s->error, sizeof(s->error), "cannot save progress: %s", e.msg);
	return -1;
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

static void
scrub_rewind(struct scrub *s)
{
	for (int i = 0; i < s->nwalk; i++)
		s->walk[i].pos[0] = '\0';
	s->phase = 0;
}

static const struct scrub_walk *
scrub_walk_named(const struct scrub *s, const char *name)
{
	for (int i = 0; i < s->nwalk; i++)
		if (strcmp(s->walk[i].src->name, name) == 0)
			return &s->walk[i];
	return NULL;
}

static uint64_t
scrub_blocks_checked(const struct scrub *s)
{
	struct scrub_stats st;

	scrub_stats(s, &st);
	return st.checked;
}

/* ---- the steps -------------------------------------------------------- */

/* IDLE: the run is over (or cancelled); the schedule starts the next. */
static int
scrub_idle(void *obj)
{
	struct scrub *s = obj;

	scrub_rewind(s);
	scrub_save(s);
	scrub_arm_schedule(s);
	return FSM_ASYNC;
}

static void
scrub_log_finished(const struct scrub *s)
{
	struct scrub_stats st;

	scrub_stats(s, &st);
	log_info("scrub finished: %" PRIu64 " blocks checked, %" PRIu64 " corrupt or missing; "
	    "%" PRIu64 " sectors checked, %" PRIu64 " corrupt", st.checked, st.corruptions,
	    st.sectors_checked, st.sector_corruptions);
}

/* NEXT: the first item after the position in the source in hand, else
 * in the sources after it; at the end of the last the run is over. */
static int
scrub_next(void *obj)
{
	struct scrub *s = obj;
	struct err e = { "" };
	char why[ERR_MSG_MAX + 32];

	for (;;) {
		struct scrub_walk *w = &s->walk[s->phase];
		int rc = w->src->next(s->d, w->pos, s->cur, &e);

		if (rc > 0)
			return SC_VERIFY;
		if (rc < 0) {
			snprintf(why, sizeof(why), "%s: %s", w->src->name, e.msg);
			return scrub_fail(s, why);
		}
		if (s->phase + 1 == s->nwalk)
			break;
		s->phase++;
	}
	s->last_done_ms = clock_real_ms();
	s->next_run_ms = scrub_next_run(s, s->last_done_ms);
	scrub_log_finished(s);
	return SC_IDLE;
}

static void
scrub_check_done(void *arg, int result)
{
	struct scrub_ticket *t = arg;
	struct scrub *s = t->s;
	int stale = t->gen != s->gen || s->m.state != SC_VERIFY;

	free(t);
	s->inflight--;
	if (stale)
		return;
	s->result = result;
	s->took_us = clock_mono_us() - s->verify_started_us;
	fsm_enter(&s->m, s, SC_CHECKED);
}

/* VERIFY: hands the item to its source; scrub_check_done goes on. */
static int
scrub_verify(void *obj)
{
	struct scrub *s = obj;
	struct scrub_ticket *t = malloc(sizeof(*t));

	if (t == NULL)
		return scrub_fail(s, "out of memory");
	t->s = s;
	t->gen = s->gen;
	s->inflight++;
	s->verify_started_us = clock_mono_us();
	s->walk[s->phase].src->check(s->d, s->cur, scrub_check_done, t);
	return FSM_ASYNC;
}

/* CHECKED: move the position, count, save now and then; then pause or
 * sleep.  A skipped item moves the position but is not counted. */
static int
scrub_checked(void *obj)
{
	struct scrub *s = obj;
	struct scrub_walk *w = &s->walk[s->phase];
	uint64_t total = 0;

	if (s->result == SCRUB_FAILED) {
		snprintf(s->error, sizeof(s->error), "%s %s: cannot check it now", w->src->name,
		    s->cur);
		return SC_ERROR;
	}
	memcpy(w->pos, s->cur, sizeof(w->pos));
	w->checked += s->result >= 0;
	w->corruptions += s->result == SCRUB_CORRUPT;
	if (s->stopping) {
		scrub_save(s);          /* saved as running: continues at start */
		return FSM_ASYNC;
	}
	for (int i = 0; i < s->nwalk; i++)
		total += s->walk[i].checked;
	if ((total == 1 || clock_mono_ms() - s->last_saved_ms >= SCRUB_SAVE_MS) &&
	    scrub_save(s) < 0)
		return SC_ERROR;
	return s->want_pause ? SC_PAUSED : SC_SLEEP;
}

/* SLEEP: tranquility × the time the item took; the timer goes on. */
static int
scrub_sleep(void *obj)
{
	struct scrub *s = obj;
	uint64_t ms = (uint64_t)((double)s->took_us * s->d->cfg.blocks.scrub_tranquility /
	    1000.0);

#ifdef FAULT_INJECTION
	if (ms < s->slow_ms)
		ms = s->slow_ms;
#endif
	scrub_arm(s, ms);
	return FSM_ASYNC;
}

#ifdef FAULT_INJECTION
/* "slow": at least SCRUB_SLOW_MS between items, so a run over a small
 * store lasts long enough on any machine for a test to interrupt it. */
#define SCRUB_SLOW_MS 5

int
scrub_arm_fault(struct scrub *s, const char *fault)
{
	if (strcmp(fault, "slow") != 0)
		return -1;
	s->slow_ms = SCRUB_SLOW_MS;
	return 0;
}
#endif

/* PAUSED and ERROR: saved as paused; resume or cancel goes on. */
static int
scrub_stop(void *obj)
{
	struct scrub *s = obj;

	if (s->m.state == SC_ERROR)
		log_err("scrub: %s; paused (scrub resume retries)", s->error);
	s->want_pause = 0;
	scrub_save(s);
	return FSM_ASYNC;
}

/* ---- events and commands ---------------------------------------------- */

static void
scrub_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct scrub *s = arg;
	struct err e;

	(void)fd;
	(void)what;
	if (s->stopping)
		return;
	if (s->m.state == SC_SLEEP) {
		fsm_enter(&s->m, s, SC_NEXT);
		return;
	}
	if (s->m.state == SC_IDLE) {
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
	if (s->m.state != SC_IDLE)
		return err_set(e, "scrub is %s already%s", scrub_public_state(s),
		    strcmp(scrub_public_state(s), "paused") == 0 ? " (resume or cancel it)" : "");
	scrub_rewind(s);
	for (int i = 0; i < s->nwalk; i++)
		s->walk[i].checked = s->walk[i].corruptions = 0;
	s->gen++;
	s->started_ms = clock_real_ms();
	evtimer_del(s->timer);
	log_info("scrub started (tranquility %g)", s->d->cfg.blocks.scrub_tranquility);
	fsm_enter(&s->m, s, SC_NEXT);
	if (s->m.state != SC_IDLE)
		scrub_save(s);
	return 0;
}

int
scrub_pause(struct scrub *s, struct err *e)
{
	if (s->m.state == SC_IDLE || strcmp(scrub_public_state(s), "paused") == 0)
		return err_set(e, "scrub is %s, not running", scrub_public_state(s));
	if (s->m.state == SC_VERIFY) {
		s->want_pause = 1;      /* after the item in hand */
		return 0;
	}
	evtimer_del(s->timer);
	fsm_enter(&s->m, s, SC_PAUSED);
	return 0;
}

int
scrub_resume(struct scrub *s, struct err *e)
{
	if (s->m.state != SC_PAUSED && s->m.state != SC_ERROR)
		return err_set(e, "scrub is %s, not paused", scrub_public_state(s));
	fsm_enter(&s->m, s, SC_NEXT);
	return 0;
}

int
scrub_cancel(struct scrub *s, struct err *e)
{
	if (s->m.state == SC_IDLE)
		return err_set(e, "scrub is not running");
	/* An answer for the item in hand still arrives; the new generation
	 * makes it stale. */
	s->want_pause = 0;
	s->gen++;
	evtimer_del(s->timer);
	log_info("scrub cancelled after %" PRIu64 " blocks", scrub_blocks_checked(s));
	s->next_run_ms = scrub_next_run(s, clock_real_ms());
	fsm_enter(&s->m, s, SC_IDLE);
	return 0;
}

/* ---- status ----------------------------------------------------------- */

void
scrub_stats(const struct scrub *s, struct scrub_stats *out)
{
	const struct scrub_walk *b = scrub_walk_named(s, "blocks");
	const struct scrub_walk *sec = scrub_walk_named(s, "sectors");
	static const struct scrub_walk none = { .pos = "" };

	if (b == NULL)
		b = &none;
	if (sec == NULL)
		sec = &none;
	*out = (struct scrub_stats){
		.state			= scrub_public_state(s),
		.phase			= s->walk[s->phase].src->name,
		.position		= b->pos,
		.started_ms		= s->started_ms,
		.last_done_ms		= s->last_done_ms,
		.next_run_ms		= s->next_run_ms,
		.checked		= b->checked,
		.corruptions		= b->corruptions,
		.sectors_checked	= sec->checked,
		.sector_corruptions	= sec->corruptions,
		.tranquility		= s->d->cfg.blocks.scrub_tranquility,
	};
}

json_t *
scrub_json(struct scrub *s)
{
	struct scrub_stats st;

	scrub_stats(s, &st);
	return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:f}",
	    "state", st.state, "phase", st.phase,
	    "sectors_checked", (json_int_t)st.sectors_checked,
	    "sector_corruptions", (json_int_t)st.sector_corruptions,
	    "checked", (json_int_t)st.checked,
	    "corruptions", (json_int_t)st.corruptions, "position", st.position,
	    "started_ms", (json_int_t)st.started_ms,
	    "last_done_ms", (json_int_t)st.last_done_ms,
	    "next_run_ms", (json_int_t)st.next_run_ms,
	    "tranquility", st.tranquility);
}

/* ---- the blocks source ------------------------------------------------ */

static int
scrub_blocks_next(struct farmd *d, const char *pos, char item[SCRUB_POS_MAX], struct err *e)
{
	uint8_t after[HASH_LEN];
	int have = pos[0] != '\0' && hex_decode(pos, after, HASH_LEN) == 0;
	sqlite3_stmt *st;
	int found;

	st = db_prepare(d->db, have ?
	    "SELECT hash FROM blocks WHERE hash > ? ORDER BY hash LIMIT 1" :
	    "SELECT hash FROM blocks ORDER BY hash LIMIT 1", e);
	if (st == NULL)
		return -1;
	if (have)
		sqlite3_bind_blob(st, 1, after, HASH_LEN, SQLITE_STATIC);
	found = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == HASH_LEN;
	if (found)
		block_hex(sqlite3_column_blob(st, 0), item);
	sqlite3_finalize(st);
	return found;
}

struct scrub_block_check {
	scrub_check_cb cb;
	void *arg;
};

static void
scrub_block_done(void *arg, uint8_t *data, size_t len, enum block_status st,
    const char *error)
{
	struct scrub_block_check c = *(struct scrub_block_check *)arg;

	(void)len;
	free(data);
	free(arg);
	/* A row deleted meanwhile is not a corruption. */
	c.cb(c.arg, st == BLOCK_CORRUPT ||
	    (st == BLOCK_MISSING && error != NULL));
}

/* Reads the block through the block store, which reports a corrupt or
 * missing block to resync. */
static void
scrub_blocks_check(struct farmd *d, const char *item, scrub_check_cb cb, void *arg)
{
	uint8_t hash[HASH_LEN];
	struct scrub_block_check *c;

	if (hex_decode(item, hash, HASH_LEN) < 0 || (c = malloc(sizeof(*c))) == NULL) {
		cb(arg, SCRUB_FAILED);
		return;
	}
	c->cb = cb;
	c->arg = arg;
	blockstore_get(d->blocks, hash, scrub_block_done, c);
}

const struct scrub_source scrub_source_blocks = {
	.name = "blocks", .next = scrub_blocks_next, .check = scrub_blocks_check,
	.pos_key = "scrub.position", .checked_key = "scrub.checked",
	.corruptions_key = "scrub.corruptions",
};

/* ---- lifecycle -------------------------------------------------------- */

static void
scrub_load(struct scrub *s)
{
	struct db *db = s->d->db;
	char phase[32] = "";

	s->started_ms = db_meta_get_u64(db, "scrub.started_ms", 0);
	s->last_done_ms = db_meta_get_u64(db, "scrub.last_done_ms", 0);
	s->next_run_ms = db_meta_get_u64(db, "scrub.next_run_ms", 0);
	db_meta_get(db, "scrub.phase", phase, sizeof(phase), NULL);
	for (int i = 0; i < s->nwalk; i++) {
		struct scrub_walk *w = &s->walk[i];

		w->checked = db_meta_get_u64(db, w->src->checked_key, 0);
		w->corruptions = db_meta_get_u64(db, w->src->corruptions_key, 0);
		db_meta_get(db, w->src->pos_key, w->pos, sizeof(w->pos), NULL);
		if (strcmp(phase, w->src->name) == 0)
			s->phase = i;
	}
	if (s->next_run_ms == 0)
		s->next_run_ms = scrub_next_run(s, clock_real_ms());
}

struct scrub *
scrub_new(struct farmd *d, const struct scrub_source *const *sources, struct err *e)
{
	struct scrub *s = calloc(1, sizeof(*s));
	char state[32] = "";

	if (s == NULL || (s->timer = evtimer_new(d->base, scrub_timer_cb, s)) == NULL) {
		free(s);
		err_set(e, "out of memory");
		return NULL;
	}
	s->d = d;
	for (; sources[s->nwalk] != NULL; s->nwalk++) {
		if (s->nwalk == SCRUB_MAX_SOURCES) {
			scrub_free(s);
			err_set(e, "scrub: more than %d sources", SCRUB_MAX_SOURCES);
			return NULL;
		}
		s->walk[s->nwalk].src = sources[s->nwalk];
	}
	if (s->nwalk == 0) {
		scrub_free(s);
		err_set(e, "scrub: no sources");
		return NULL;
	}
	scrub_load(s);
	db_meta_get(d->db, "scrub.state", state, sizeof(state), NULL);
	fsm_init(&s->m, &sc_def, strcmp(state, "paused") == 0 ? SC_PAUSED : SC_IDLE);
	if (strcmp(state, "running") == 0) {
		log_info("scrub resumes after %" PRIu64 " blocks checked", scrub_blocks_checked(s));
		fsm_enter(&s->m, s, SC_NEXT);
	} else if (s->m.state == SC_IDLE) {
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
		if (s->m.state != SC_IDLE && s->m.state != SC_VERIFY)
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
