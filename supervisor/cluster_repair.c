/*
 * cluster_repair.c: gap repair (cluster_repair.h).
 *
 * The archiver tells us when it comes to rest at a height with no block
 * (history_on_want); a 1 s tick covers back-offs and reconnections.  We
 * then ask for the heights from archived + 1 on, `window` of them at once:
 * the window starts at 1, doubles with every height a peer delivers (up to
 * REPAIR_WINDOW) and falls back to 1 when one goes unanswered, so a node
 * catching up keeps many requests in flight while a node at the tip of
 * the chain asks for one height, with back-off, and no more.
 *
 * Only heights some live peer holds are asked for: every node announces
 * the highest height it has a block of (cluster_set_height, kept current
 * by our 1 s tick), so a node at the tip asks nobody for the next height
 * until a peer has it, and a peer announcing a new top wakes us.
 *
 * Each height has its own back-off (common/backoff.c, the resync schedule
 * with a 1 s base: 1 s, 2 s, ... 64 s), kept in its slot until the height
 * is ingested or archived.  An answer is not trusted: it goes through
 * history_ingest_mem, the operator's ingest path, and the archiver checks
 * its parent hash and validation code before it is archived.
 */
#include "cluster_repair.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "backoff.h"
#include "clock.h"
#include "cluster.h"
#include "farmd.h"
#include "history.h"
#include "log.h"

#define REPAIR_WINDOW 32
#define REPAIR_RETRY_BASE_MS 1000
#define REPAIR_TICK_MS 1000

struct slot {
	struct cluster_repair *r;
	bool used;
	bool busy;                      /* a fetch or its ingest is in flight */
	uint64_t height;
	unsigned errors;
	uint64_t next_ms;               /* monotonic: not before */
	size_t len;
	char node[CLUSTER_NODE_MAX];
};

struct cluster_repair {
	struct farmd *d;
	struct event *timer;            /* the 1 s tick */
	struct event *kick;             /* a wake-up: the same work, now */
	struct slot slots[REPAIR_WINDOW];
	size_t window;
	uint64_t advertised;            /* the top height last announced */
	uint64_t advertised_archived;
	uint64_t advertised_ms;         /* monotonic */
	int busy;
	int stopping;
	struct cluster_repair_stats st;
};

/* Not event_active on the tick: libevent reschedules an activated
 * EV_PERSIST timer one period after its pending expiry, so each wake-up
 * pushed the tick a second further out (100 repaired heights: no tick
 * for 100 s, and a peer back from an outage never heard our new top). */
static void
repair_wake(struct cluster_repair *r)
{
	if (!r->stopping && r->kick != NULL)
		event_active(r->kick, EV_TIMEOUT, 0);
}

static void
slot_failed(struct slot *s, bool timeout)
{
	struct cluster_repair *r = s->r;

	s->busy = false;
	r->busy--;
	s->errors++;
	s->next_ms = clock_mono_ms() + backoff_resync_ms(REPAIR_RETRY_BASE_MS, s->errors);
	if (timeout)
		r->window = 1;
	repair_wake(r);
}

static void
repair_ingested(void *arg, const char *error, const char *text)
{
	struct slot *s = arg;
	struct cluster_repair *r = s->r;

	(void)text;
	if (error != NULL) {
		r->st.refused++;
		log_warn("gap repair: the block peer %s sent for height %" PRIu64 " was refused: %s",
		    s->node, s->height, error);
		slot_failed(s, false);
		return;
	}
	r->st.repaired++;
	r->st.bytes += s->len;
	r->window = r->window * 2 > REPAIR_WINDOW ? REPAIR_WINDOW : r->window * 2;
	s->busy = false;
	s->used = false;
	r->busy--;
	repair_wake(r);
}

static void
repair_fetched(void *arg, enum cluster_status st, uint8_t *data, size_t len,
    const char *node, const char *error)
{
	struct slot *s = arg;
	struct cluster_repair *r = s->r;
	char name[CLUSTER_NODE_MAX + 32];

	if (st != CLUSTER_OK) {
		log_debug("gap repair: height %" PRIu64 ": %s", s->height, error);
		slot_failed(s, st == CLUSTER_TIMEOUT);
		return;
	}
	snprintf(s->node, sizeof(s->node), "%s", node);
	snprintf(name, sizeof(name), "peer %s", node);
	s->len = len;
	history_ingest_mem(r->d->history, s->height, data, len, name, repair_ingested, s);
	free(data);
}

/* The slot of height, a free one for it, or NULL when all are taken. */
static struct slot *
slot_for(struct cluster_repair *r, uint64_t height, uint64_t archived)
{
	struct slot *free_slot = NULL;

	for (size_t i = 0; i < REPAIR_WINDOW; i++) {
		struct slot *s = &r->slots[i];

		if (s->used && s->height == height)
			return s;
		if (s->used && !s->busy && s->height <= archived)
			s->used = false;
		if (!s->used && free_slot == NULL)
			free_slot = s;
	}
	if (free_slot != NULL) {
		memset(free_slot, 0, sizeof(*free_slot));
		free_slot->r = r;
		free_slot->height = height;
	}
	return free_slot;
}

static void
repair_pump(struct cluster_repair *r)
{
	struct farmd *d = r->d;
	uint64_t archived = history_archived_height(d->history), now = clock_mono_ms();
	uint64_t limit = cluster_peers_height(d->cluster);
	uint8_t hash[HASH_LEN];

	if (r->stopping || cluster_state(d->cluster) != CLUSTER_CONNECTED)
		return;
	if (history_wanted_height(d->history) == 0 && r->window <= 1)
		return;         /* not waiting, not catching up */
	for (uint64_t ht = archived + 1; ht < archived + 1 + r->window && ht <= limit; ht++) {
		struct slot *s;
		int rc = history_block_hash(d->history, ht, hash);

		if (rc != 0)
			continue;       /* present (or unreadable: the archiver reports it) */
		if ((s = slot_for(r, ht, archived)) == NULL)
			break;
		if (s->busy || s->next_ms > now)
			continue;
		s->used = true;
		s->busy = true;
		r->busy++;
		r->st.asked++;
		cluster_fetch_height(d->cluster, ht, d->cfg.daemon.max_frame, repair_fetched, s);
	}
}

/* Peers learn our new top within a second of an ingest. */
static void
repair_advertise(struct cluster_repair *r)
{
	uint64_t top, done, now = clock_mono_ms();

	if (now - r->advertised_ms < REPAIR_TICK_MS)
		return;         /* at most once a tick, however often we are woken */
	top = history_top_height(r->d->history);
	done = history_archived_height(r->d->history);
	if (top != r->advertised || done != r->advertised_archived) {
		r->advertised_ms = now;
		r->advertised = top;
		r->advertised_archived = done;
		log_debug("gap repair: we hold heights up to %" PRIu64 ", archived %" PRIu64,
		    top, done);
		cluster_set_height(r->d->cluster, top, done);
		cluster_announce_now(r->d->cluster);
	}
}

static void
repair_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	repair_advertise(arg);
	repair_pump(arg);
}

/* A peer's heights changed: what backed off may be there now. */
static void
repair_new_height(void *arg)
{
	struct cluster_repair *r = arg;

	for (size_t i = 0; i < REPAIR_WINDOW; i++)
		if (r->slots[i].used && !r->slots[i].busy)
			r->slots[i].next_ms = 0;
	r->window = r->window < 4 ? 4 : r->window;
	repair_wake(r);
}

static void
repair_want(void *arg, uint64_t height)
{
	(void)height;
	repair_wake(arg);
}

struct cluster_repair *
cluster_repair_new(struct farmd *d, struct err *e)
{
	struct cluster_repair *r = calloc(1, sizeof(*r));
	struct timeval tv = clock_tv(REPAIR_TICK_MS);

	if (r == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	r->d = d;
	r->window = 1;
	if (!cluster_enabled(d->cluster))
		return r;
	if ((r->timer = event_new(d->base, -1, EV_PERSIST, repair_tick, r)) == NULL ||
	    (r->kick = event_new(d->base, -1, 0, repair_tick, r)) == NULL ||
	    event_add(r->timer, &tv) < 0) {
		cluster_repair_free(r);
		err_set(e, "cannot start the gap repair timer");
		return NULL;
	}
	history_on_want(d->history, repair_want, r);
	cluster_on_height(d->cluster, repair_new_height, r);
	repair_advertise(r);
	return r;
}

int
cluster_repair_quiesce(struct cluster_repair *r)
{
	if (r == NULL)
		return 1;
	r->stopping = 1;
	if (r->timer != NULL)
		event_del(r->timer);
	if (r->kick != NULL)
		event_del(r->kick);
	return r->busy == 0;
}

void
cluster_repair_free(struct cluster_repair *r)
{
	if (r == NULL)
		return;
	if (r->timer != NULL) {
		history_on_want(r->d->history, NULL, NULL);
		cluster_on_height(r->d->cluster, NULL, NULL);
		event_free(r->timer);
	}
	if (r->kick != NULL)
		event_free(r->kick);
	free(r);
}

void
cluster_repair_stats(const struct cluster_repair *r, struct cluster_repair_stats *out)
{
	*out = r->st;
	out->window = r->window;
}
