/*
 * resync.c: the resync runner.  It reads due items from the queue the
 * block store keeps (resyncq.c, which owns all the SQL) and processes up
 * to RESYNC_INFLIGHT of them at a time, each by a small state machine
 * (DESIGN §9):
 *
 *   CHECK ──► COLLECT ──────────────► DONE       refcount 0, delay passed
 *     │  └──► REQUEUE                            refcount 0, delay not passed,
 *     │                                          or back-off not passed
 *     └────► VERIFY ─► DONE                      referenced, stored copy good
 *               └────► FETCH ─► DONE               missing/corrupt: peers sent
 *                        │                          verified bytes, stored again
 *                        └──► FAILED ─► REQUEUE     no peer had it (or no cluster)
 *
 * The queue row stays until the item is DONE (row removed) or REQUEUEd
 * (row moved, one statement), so a crash at any point processes the item
 * again; every step is idempotent.
 *
 * FETCH asks the cluster (cluster_fetch_block, which verifies the bytes by
 * SHA-256 and asks another peer when one lies) and stores the answer the
 * way a re-ingest repairs a copy: blockstore_store_mem without a new
 * reference.  Without a cluster, a referenced block whose only copy is
 * gone stays in the error table, retried with back-off, until a put of
 * the same bytes satisfies it.
 */
#include "resync.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "blockstore.h"
#include "clock.h"
#include "cluster.h"
#include "farmd.h"
#include "fsm.h"
#include "log.h"
#include "resyncq.h"

#define RESYNC_INFLIGHT 8
#define RESYNC_BATCH 64
#define RESYNC_IDLE_MS 1000

enum resync_state {
	RS_CHECK, RS_COLLECT, RS_VERIFY, RS_FETCH, RS_FAILED, RS_REQUEUE, RS_DONE,
	RS_NSTATES
};

struct resync_item {
	struct resync *r;
	uint8_t hash[HASH_LEN];
	uint64_t due_ms;                /* its queue row */
	uint64_t requeue_ms;            /* RS_REQUEUE: the new due time */
	struct fsm fsm;                 /* its state: enum resync_state */
	uint8_t *fetched;               /* FETCH: the peer's verified bytes, being stored */
	char peer[CLUSTER_NODE_MAX];
	uint64_t started_us;
	char reason[128];
};

struct resync {
	struct farmd *d;
	struct resyncq *q;              /* the block store's */
	struct event *timer;
	struct resync_item *inflight[RESYNC_INFLIGHT];
	int ninflight;
	int stopping;
	uint64_t done, failed, collected, last_us;
};

static void resync_pump(struct resync *r);

static void
resync_wake(void *arg)
{
	struct resync *r = arg;

	event_active(r->timer, EV_TIMEOUT, 0);
}

int
resync_retry_now(struct resync *r, const uint8_t *hash, struct err *e)
{
	return resyncq_retry_now(r->q, hash, e);
}

/* ---- the item state machine ------------------------------------------ */

/* CHECK: decide from the block's row and its error entry. */
static int
rs_check(void *obj)
{
	struct resync_item *it = obj;
	struct resync *r = it->r;
	uint64_t now = clock_real_ms();
	struct resyncq_block b;

	resyncq_block(r->q, it->hash, &b);
	if (b.refs < 0) {
		resyncq_satisfied(r->q, it->hash);      /* no block, nothing to repair */
		return RS_DONE;
	}
	if (b.refs == 0) {
		uint64_t at = (uint64_t)b.zero_since_ms + r->d->cfg.blocks.gc_delay_ms;

		if (at > now) {
			it->requeue_ms = at;
			return RS_REQUEUE;
		}
		return RS_COLLECT;
	}
	if (b.next_try_ms < 0)
		return RS_DONE;                 /* referenced and not known bad */
	if ((uint64_t)b.next_try_ms > now) {
		it->requeue_ms = (uint64_t)b.next_try_ms;
		return RS_REQUEUE;
	}
	return RS_VERIFY;
}

static void
rs_collect_done(void *arg, int result, const char *error)
{
	struct resync_item *it = arg;

	if (result < 0) {
		snprintf(it->reason, sizeof(it->reason), "%s", error);
		fsm_enter(&it->fsm, it, RS_FAILED);
		return;
	}
	if (result > 0) {
		char hex[HASH_HEX_LEN + 1];

		/* Gone on purpose (its error went with its row). */
		block_hex(it->hash, hex);
		log_info("block %s collected (unreferenced for %llu ms)", hex,
		    (unsigned long long)it->r->d->cfg.blocks.gc_delay_ms);
		it->r->collected++;
	}
	fsm_enter(&it->fsm, it, RS_DONE);
}

static void
rs_verify_done(void *arg, uint8_t *data, size_t len, enum block_status st,
    const char *error)
{
	struct resync_item *it = arg;

	(void)len;
	free(data);
	if (st == BLOCK_OK) {
		resyncq_satisfied(it->r->q, it->hash);
		fsm_enter(&it->fsm, it, RS_DONE);
		return;
	}
	snprintf(it->reason, sizeof(it->reason), "%s", st == BLOCK_CORRUPT ? "corrupt" :
	    st == BLOCK_MISSING || st == BLOCK_NOT_FOUND ? "missing" : error);
	fsm_enter(&it->fsm, it, RS_FETCH);
}

/* COLLECT: delete the block if it is still unreferenced and old enough. */
static int
rs_collect(void *obj)
{
	struct resync_item *it = obj;

	blockstore_collect(it->r->d->blocks, it->hash, clock_real_ms(), rs_collect_done, it);
	return FSM_ASYNC;
}

/* VERIFY: read the stored copy (without reporting it: this is the check). */
static int
rs_verify(void *obj)
{
	struct resync_item *it = obj;

	blockstore_verify(it->r->d->blocks, it->hash, rs_verify_done, it);
	return FSM_ASYNC;
}

static void
rs_append_reason(struct resync_item *it, const char *fmt, const char *what)
{
	size_t n = strlen(it->reason);

	snprintf(it->reason + n, sizeof(it->reason) - n, fmt, what);
}

static void
rs_stored(void *arg, const uint8_t hash[HASH_LEN], const char *error)
{
	struct resync_item *it = arg;
	char hex[HASH_HEX_LEN + 1];

	(void)hash;
	free(it->fetched);
	it->fetched = NULL;
	if (error != NULL) {
		rs_append_reason(it, "; storing the peer's copy: %s", error);
		fsm_enter(&it->fsm, it, RS_FAILED);
		return;
	}
	resyncq_satisfied(it->r->q, it->hash);
	block_hex(it->hash, hex);
	log_info("block %s repaired from peer %s", hex, it->peer);
	fsm_enter(&it->fsm, it, RS_DONE);
}

static void
rs_fetched(void *arg, enum cluster_status st, uint8_t *data, size_t len, const char *node,
    const char *error)
{
	struct resync_item *it = arg;

	if (st != CLUSTER_OK) {
		rs_append_reason(it, "; peers: %s", error);
		fsm_enter(&it->fsm, it, RS_FAILED);
		return;
	}
	it->fetched = data;
	snprintf(it->peer, sizeof(it->peer), "%s", node);
	blockstore_store_mem(it->r->d->blocks, data, len, 1, rs_stored, it);
}

/* FETCH: from the cluster's peers, when there is a cluster. */
static int
rs_fetch(void *obj)
{
	struct resync_item *it = obj;
	struct farmd *d = it->r->d;

	if (!cluster_enabled(d->cluster)) {
		rs_append_reason(it, "%s", "; no peer to fetch it from");
		return RS_FAILED;
	}
	if (cluster_fetch_block(d->cluster, it->hash, d->cfg.daemon.max_frame, rs_fetched,
	    it) == 0) {
		rs_append_reason(it, "%s", "; out of memory");
		return RS_FAILED;
	}
	return FSM_ASYNC;
}

/* FAILED: one more error; retry at last_try + base × 2^min(errors-1, 6). */
static int
rs_failed(void *obj)
{
	struct resync_item *it = obj;
	struct resync *r = it->r;
	uint64_t now = clock_real_ms();
	int64_t errors;
	char hex[HASH_HEX_LEN + 1];

	it->requeue_ms = resyncq_failed(r->q, it->hash, it->reason, now, &errors);
	r->failed++;
	block_hex(it->hash, hex);
	log_warn("resync of block %s failed (%s), error %lld; next try in %llu s", hex,
	    it->reason, (long long)errors,
	    (unsigned long long)((it->requeue_ms - now) / 1000));
	return RS_REQUEUE;
}

/* REQUEUE: the item's row moves to its new time in one statement.  A row
 * that moved meanwhile (an enqueue asked for an earlier time while this
 * item was in flight) is left where it is: it will be checked again. */
static int
rs_requeue(void *obj)
{
	struct resync_item *it = obj;

	resyncq_move(it->r->q, it->hash, it->due_ms, it->requeue_ms);
	return RS_DONE;
}

/* DONE, the final state: the item leaves the queue (unless it moved) and
 * is freed. */
static int
rs_finish(void *obj)
{
	struct resync_item *it = obj;
	struct resync *r = it->r;

	if (it->requeue_ms == 0)
		resyncq_done(r->q, it->hash, it->due_ms);
	r->last_us = clock_mono_us() - it->started_us;
	r->done++;
	for (int i = 0; i < r->ninflight; i++) {
		if (r->inflight[i] == it) {
			r->inflight[i] = r->inflight[--r->ninflight];
			break;
		}
	}
	free(it);
	if (!r->stopping)
		event_active(r->timer, EV_TIMEOUT, 0);
	return FSM_ASYNC;
}

static void
rs_label(const void *obj, char *buf, size_t len)
{
	const struct resync_item *it = obj;
	char hex[HASH_HEX_LEN + 1];

	block_hex(it->hash, hex);
	snprintf(buf, len, "resync %.16s", hex);
}

/* fsm_enter() is the one place an item changes state; COLLECT and VERIFY
 * continue from the block store's callback. */
static const struct fsm_state rs_states[RS_NSTATES] = {
	[RS_CHECK] = { "check", rs_check },
	[RS_COLLECT] = { "collect", rs_collect },
	[RS_VERIFY] = { "verify", rs_verify },
	[RS_FETCH] = { "fetch", rs_fetch },
	[RS_FAILED] = { "failed", rs_failed },
	[RS_REQUEUE] = { "requeue", rs_requeue },
	[RS_DONE] = { "done", rs_finish },
};

static const struct fsm_def rs_machine = {
	.name = "resync",
	.states = rs_states,
	.nstates = RS_NSTATES,
	.error = RS_FAILED,
	.final = RS_DONE,
	.label = rs_label,
};

static int
rs_inflight(struct resync *r, const uint8_t hash[HASH_LEN])
{
	for (int i = 0; i < r->ninflight; i++)
		if (memcmp(r->inflight[i]->hash, hash, HASH_LEN) == 0)
			return 1;
	return 0;
}

/* Starts due items up to the in-flight limit, then sleeps until the next
 * due time (at most RESYNC_IDLE_MS, so items queued elsewhere are seen).
 * At most RESYNC_BATCH rows are read per run: an item that cannot leave
 * the queue (database error) is not retried in a tight loop. */
static void
resync_pump(struct resync *r)
{
	uint64_t now = clock_real_ms(), next = now + RESYNC_IDLE_MS;
	struct resyncq_item due[RESYNC_BATCH];
	struct timeval tv;
	int n;

	if (r->stopping || r->ninflight >= RESYNC_INFLIGHT)
		return;
	if ((n = resyncq_due(r->q, now, due, RESYNC_BATCH, &next)) < 0)
		return;
	for (int i = 0; i < n && r->ninflight < RESYNC_INFLIGHT; i++) {
		struct resync_item *it;

		if (rs_inflight(r, due[i].hash))
			continue;
		if ((it = calloc(1, sizeof(*it))) == NULL)
			break;
		it->r = r;
		memcpy(it->hash, due[i].hash, HASH_LEN);
		it->due_ms = due[i].due_ms;
		it->started_us = clock_mono_us();
		r->inflight[r->ninflight++] = it;
		fsm_init(&it->fsm, &rs_machine, RS_CHECK);
		fsm_enter(&it->fsm, it, RS_CHECK);
	}
	if (r->ninflight > 0 && next > now + 50)
		next = now + 50;
	tv = clock_tv(next - now);
	evtimer_add(r->timer, &tv);
}

static void
resync_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	resync_pump(arg);
}

struct resync *
resync_new(struct farmd *d, struct err *e)
{
	struct resync *r = calloc(1, sizeof(*r));
	struct timeval now = { 0, 0 };

	if (r == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	r->d = d;
	r->q = blockstore_resyncq(d->blocks);
	r->timer = evtimer_new(d->base, resync_timer_cb, r);
	if (r->timer == NULL) {
		free(r);
		err_set(e, "cannot start the resync timer");
		return NULL;
	}
	resyncq_set_wake(r->q, resync_wake, r);
	evtimer_add(r->timer, &now);
	return r;
}

int
resync_quiesce(struct resync *r)
{
	r->stopping = 1;
	evtimer_del(r->timer);
	return r->ninflight == 0;
}

void
resync_free(struct resync *r)
{
	if (r == NULL)
		return;
	resyncq_set_wake(r->q, NULL, NULL);
	for (int i = 0; i < r->ninflight; i++) {
		free(r->inflight[i]->fetched);
		free(r->inflight[i]);
	}
	event_free(r->timer);
	free(r);
}

uint64_t
resync_queue_len(struct resync *r)
{
	return resyncq_len(r->q);
}

uint64_t
resync_error_count(struct resync *r)
{
	return resyncq_error_count(r->q);
}

void
resync_counters(const struct resync *r, uint64_t *done, uint64_t *failed,
    uint64_t *collected, uint64_t *last_us)
{
	*done = r->done;
	*failed = r->failed;
	*collected = r->collected;
	*last_us = r->last_us;
}

json_t *
resync_json_errors(struct resync *r)
{
	return resyncq_json_errors(r->q);
}
