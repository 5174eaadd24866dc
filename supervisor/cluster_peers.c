/*
 * cluster_peers.c: membership.  Every node publishes a NodeAnnounce on
 * farmd.v1.node.announce every 10 s, on (re)connect, and when it hears a
 * node it did not know (so a newcomer learns the cluster in one round
 * trip, not in 10 s); a peer not heard for 3 intervals is forgotten.
 * A node marked bad (wrong bytes, a failed spot check) keeps its entry
 * until the mark expires, even when it stops announcing, so it cannot
 * clear its record by going quiet.
 *
 * Names are what peers claim: they are for logs, exclusion lists and
 * bad marks, never for trust; bytes are trusted only once verified.
 */
#include "cluster_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "cluster.pb-c.h"
#include "farmd.h"
#include "log.h"

#define ANNOUNCE_AGAIN_MS 100           /* newcomers answered at most 10 times a second */

struct cluster_peers {
	struct cluster *c;
	struct cluster_sub *sub;
	struct event *timer;
	struct event *again;            /* a newcomer's answer, held by the rate limit */
	struct cluster_peer v[CLUSTER_MAX_PEERS];
	size_t n;
	uint64_t last_sent_ms;          /* monotonic */
};

static size_t peers_count(struct cluster *c);

static bool
valid_node(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n < CLUSTER_NODE_MAX && s[strspn(s, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")] == '\0';
}

static void
announce(struct cluster *c, bool leaving)
{
	Farmd__NodeAnnounce a = FARMD__NODE_ANNOUNCE__INIT;
	struct err e;

	a.version = CLUSTER_PROTO_VERSION;
	a.node = c->node;
	a.farmd_version = (char *)FARMD_VERSION;
	a.roles = c->roles | CLUSTER_ROLE_ARCHIVE |
	    (c->d->cfg.cluster.plotter ? CLUSTER_ROLE_PLOTTER : 0);
	a.free_encode = c->free_encode;
	a.leaving = leaving;
	a.height = c->height;
	a.archived = c->archived;
	if (cluster_publish_pb(c, CLUSTER_SUBJ_ANNOUNCE, NULL, &a.base, &e) == 0)
		c->peers->last_sent_ms = clock_mono_ms();
	else
		log_debug("cluster: announce: %s", e.msg);
}

void
cluster_announce_now(struct cluster *c)
{
	if (c->peers != NULL && c->state == CLUSTER_CONNECTED)
		announce(c, false);
}

static struct cluster_peer *
peer_find(struct cluster_peers *p, const char *node)
{
	for (size_t i = 0; i < p->n; i++)
		if (strcmp(p->v[i].node, node) == 0)
			return &p->v[i];
	return NULL;
}

static void
peer_drop(struct cluster_peers *p, struct cluster_peer *x)
{
	*x = p->v[--p->n];
}

/* Forgets peers silent for 3 intervals (unless marked bad, until the mark
 * ends). */
static void
peers_expire(struct cluster_peers *p)
{
	uint64_t now = clock_real_ms();

	for (size_t i = p->n; i-- > 0;) {
		struct cluster_peer *x = &p->v[i];

		if (x->last_seen_ms + CLUSTER_FORGET_MS < now && x->bad_until_ms <= now) {
			if (x->last_seen_ms != 0)
				log_info("cluster: peer %s forgotten (no announcement for %d s)",
				    x->node, CLUSTER_FORGET_MS / 1000);
			peer_drop(p, x);
		}
	}
	p->c->st.peers = peers_count(p->c);
}

/* A slot for node, new if need be (NULL when the table is full). */
static struct cluster_peer *
peer_slot(struct cluster_peers *p, const char *node)
{
	struct cluster_peer *x = peer_find(p, node);

	if (x != NULL)
		return x;
	peers_expire(p);
	if (p->n == CLUSTER_MAX_PEERS)
		return NULL;
	x = &p->v[p->n++];
	memset(x, 0, sizeof(*x));
	snprintf(x->node, sizeof(x->node), "%s", node);
	return x;
}

static void
announce_msg(void *arg, const struct cluster_msg *m)
{
	struct cluster_peers *p = arg;
	struct cluster *c = p->c;
	struct frame_alloc fa;
	Farmd__NodeAnnounce *a = (Farmd__NodeAnnounce *)cluster_unpack(c,
	    &farmd__node_announce__descriptor, m, CLUSTER_CTRL_MAX, &fa);
	struct cluster_peer *x;
	bool fresh, changed;

	if (a == NULL)
		return;
	if (!valid_node(a->node) || strlen(a->farmd_version) >= sizeof(x->version)) {
		cluster_note_malformed(c, m->subject, "NodeAnnounce: bad node name or version");
		goto out;
	}
	if (strcmp(a->node, c->node) == 0)
		goto out;               /* another farmd using our name: ignore it */
	x = peer_find(p, a->node);
	if (a->leaving) {
		if (x != NULL && x->last_seen_ms != 0)
			log_info("cluster: peer %s left", a->node);
		if (x != NULL && x->bad_until_ms <= clock_real_ms())
			peer_drop(p, x);
		c->st.peers = peers_count(c);
		goto out;
	}
	fresh = x == NULL || x->last_seen_ms == 0;
	if ((x = peer_slot(p, a->node)) == NULL)
		goto out;
	changed = x->height != a->height || x->archived != a->archived;
	x->height = a->height;
	x->archived = a->archived;
	if (changed && c->height_cb != NULL)
		c->height_cb(c->height_arg);
	snprintf(x->version, sizeof(x->version), "%s", a->farmd_version);
	x->roles = a->roles;
	x->free_encode = a->free_encode;
	x->last_seen_ms = clock_real_ms();
	c->st.peers = peers_count(c);
	if (fresh) {
		uint64_t since = clock_mono_ms() - p->last_sent_ms;

		log_info("cluster: peer %s joined (farmd %s)", x->node, x->version);
		if (since >= ANNOUNCE_AGAIN_MS) {
			announce(c, false);
		} else if (!evtimer_pending(p->again, NULL)) {
			struct timeval tv = clock_tv(ANNOUNCE_AGAIN_MS - since);

			evtimer_add(p->again, &tv);     /* later, not never */
		}
	}
out:
	protobuf_c_message_free_unpacked(&a->base, &fa.pb);
}

static void
announce_tick(evutil_socket_t fd, short what, void *arg)
{
	struct cluster_peers *p = arg;

	(void)fd;
	(void)what;
	peers_expire(p);
	if (p->c->state == CLUSTER_CONNECTED)
		announce(p->c, false);
}

static void
announce_again(evutil_socket_t fd, short what, void *arg)
{
	struct cluster_peers *p = arg;

	(void)fd;
	(void)what;
	cluster_announce_now(p->c);
}

static void
peers_leave(struct cluster *c)
{
	if (c->state == CLUSTER_CONNECTED)
		announce(c, true);
}

static void
peers_free(struct cluster *c)
{
	struct cluster_peers *p = c->peers;

	if (p == NULL)
		return;
	cluster_unsubscribe(p->sub);
	if (p->timer != NULL)
		event_free(p->timer);
	if (p->again != NULL)
		event_free(p->again);
	free(p);
	c->peers = NULL;
}

static const struct cluster_part peers_part = {
	cluster_announce_now, peers_leave, peers_free, cluster_announce_now,
};

int
cluster_peers_start(struct cluster *c, struct err *e)
{
	struct cluster_peers *p;
	struct timeval tv = clock_tv(CLUSTER_ANNOUNCE_MS);

	if (!cluster_enabled(c))
		return 0;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return err_set(e, "out of memory");
	p->c = c;
	c->peers = p;
	cluster_add_part(c, &peers_part);
	if ((p->timer = event_new(c->d->base, -1, EV_PERSIST, announce_tick, p)) == NULL ||
	    event_add(p->timer, &tv) < 0 ||
	    (p->again = evtimer_new(c->d->base, announce_again, p)) == NULL)
		return err_set(e, "cluster: cannot start the announce timer");
	if ((p->sub = cluster_subscribe(c, CLUSTER_SUBJ_ANNOUNCE, NULL, announce_msg, p, e)) == NULL)
		return -1;
	cluster_announce_now(c);
	return 0;
}

/* Peers heard from within the forget window. */
static bool
peer_live(const struct cluster_peer *x, uint64_t now)
{
	return x->last_seen_ms != 0 && x->last_seen_ms + CLUSTER_FORGET_MS >= now;
}

static size_t
peers_count(struct cluster *c)
{
	uint64_t now = clock_real_ms();
	size_t n = 0;

	for (size_t i = 0; c->peers != NULL && i < c->peers->n; i++)
		n += peer_live(&c->peers->v[i], now);
	return n;
}

uint64_t
cluster_peers_height(struct cluster *c)
{
	uint64_t now = clock_real_ms(), top = 0;

	for (size_t i = 0; c->peers != NULL && i < c->peers->n; i++)
		if (peer_live(&c->peers->v[i], now) && c->peers->v[i].height > top)
			top = c->peers->v[i].height;
	return top;
}

static int
newest_first(const void *a, const void *b)
{
	const struct cluster_peer *x = a, *y = b;

	return x->last_seen_ms < y->last_seen_ms ? 1 : x->last_seen_ms > y->last_seen_ms ? -1 :
	    strcmp(x->node, y->node);
}

struct cluster_peer *
cluster_peers(struct cluster *c, size_t *n)
{
	uint64_t now = clock_real_ms();
	struct cluster_peer *out = calloc(CLUSTER_MAX_PEERS, sizeof(*out));

	*n = 0;
	if (out == NULL)
		return NULL;
	for (size_t i = 0; c->peers != NULL && i < c->peers->n; i++)
		if (peer_live(&c->peers->v[i], now))
			out[(*n)++] = c->peers->v[i];
	qsort(out, *n, sizeof(*out), newest_first);
	return out;
}

void
cluster_peer_mark_bad(struct cluster *c, const char *node, uint64_t ms)
{
	struct cluster_peer *x;

	c->st.bad_peers++;
	if (c->peers == NULL || !valid_node(node) || (x = peer_slot(c->peers, node)) == NULL)
		return;
	x->bad_answers++;
	x->bad_until_ms = clock_real_ms() + ms;
}

bool
cluster_peer_is_bad(struct cluster *c, const char *node)
{
	struct cluster_peer *x = c->peers != NULL ? peer_find(c->peers, node) : NULL;

	return x != NULL && x->bad_until_ms > clock_real_ms();
}

static json_t *
roles_json(unsigned roles)
{
	static const struct { unsigned bit; const char *name; } names[] = {
		{ CLUSTER_ROLE_ARCHIVE, "archive" }, { CLUSTER_ROLE_PLOTTER, "plotter" },
		{ CLUSTER_ROLE_FARMER, "farmer" },
	};
	json_t *a = json_array();

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (roles & names[i].bit)
			json_array_append_new(a, json_string(names[i].name));
	return a;
}

json_t *
cluster_json_peers(struct cluster *c)
{
	uint64_t now = clock_real_ms();
	json_t *a = json_array();
	struct cluster_peer *v;
	size_t n;

	if ((v = cluster_peers(c, &n)) == NULL)
		return a;
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_pack("{s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:f, s:I, s:b}",
		    "node", v[i].node, "version", v[i].version, "roles", roles_json(v[i].roles),
		    "free_encode", (json_int_t)v[i].free_encode, "height", (json_int_t)v[i].height,
		    "archived", (json_int_t)v[i].archived,
		    "last_seen_ms", (json_int_t)v[i].last_seen_ms,
		    "last_seen_s_ago", (double)(now - v[i].last_seen_ms) / 1000.0,
		    "bad_answers", (json_int_t)v[i].bad_answers,
		    "bad", v[i].bad_until_ms > now));
	free(v);
	return a;
}

json_t *
cluster_json_status(struct cluster *c)
{
	struct cluster_stats st;

	cluster_stats(c, &st);
	return json_pack("{s:s, s:s, s:s, s:I, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
	    "s:I, s:I}}", "state", cluster_state_name(c->state), "node", c->node,
	    "nats", c->d->cfg.cluster.nats, "max_payload", (json_int_t)st.max_payload,
	    "peers", cluster_json_peers(c), "counters",
	    "requests", (json_int_t)st.requests, "answers", (json_int_t)st.answers,
	    "served", (json_int_t)st.served, "bytes_sent", (json_int_t)st.bytes_sent,
	    "bytes_received", (json_int_t)st.bytes_received, "failures", (json_int_t)st.failures,
	    "bad_peers", (json_int_t)st.bad_peers, "malformed", (json_int_t)st.malformed,
	    "reconnects", (json_int_t)st.reconnects);
}

