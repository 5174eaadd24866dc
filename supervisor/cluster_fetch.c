/*
 * cluster_fetch.c: farmd.v1.block.get and farmd.v1.history.get, both
 * ends (doc/CLUSTER.md).
 *
 * Serving: a request names a hash (or a height, looked up in the history
 * rows); a node answers only when it holds the block and its copy reads
 * back verified (blockstore_get, which also sends a damaged copy to
 * resync), streaming the bytes to the request's reply subject.  A node
 * that lacks the block stays silent, so "nobody has it" is a timeout.
 *
 * Asking: the answer to a hash is verified by SHA-256 before the caller
 * sees it.  Wrong bytes count against the sender (its claimed node name:
 * logged, bad_peers counted, marked bad for an hour) and the block is asked
 * again with the liar excluded.  Peers already marked bad are excluded
 * from the first ask, so one liar costs one wasted answer per hour, not
 * one per block.  Hashing runs on the loop: blocks are bounded by
 * [daemon] max_frame and SHA-256 runs at over 1 GB/s, so a 2 MiB block
 * costs under 2 ms.
 */
#include "cluster_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "blockstore.h"
#include "cluster.pb-c.h"
#include "cluster_stream.h"
#include "farmd.h"
#include "history.h"
#include "log.h"

#define FETCH_FIRST_MS 2000             /* a holder answers within this */
#define FETCH_IDLE_MS 5000
#define FETCH_MAX_EXCLUDE 16
#define FETCH_ATTEMPTS 4
#define BAD_PEER_MS (60 * 60 * 1000)

struct cfetch {
	struct cluster *c;
	uint64_t id;
	bool by_height;
	uint64_t height;
	uint8_t hash[HASH_LEN];
	size_t max_len;
	char exclude[FETCH_MAX_EXCLUDE][CLUSTER_NODE_MAX];
	size_t nexclude;
	int attempts;
	uint64_t stream;
	cluster_fetch_cb cb;
	void *arg;
	struct cfetch *next;
};

struct cluster_fetch {
	struct cluster *c;
	struct cluster_sub *block_sub, *history_sub;
	struct cfetch *list;
};

/* ---- serving ---------------------------------------------------------- */

struct serve {
	struct cluster *c;
	char reply[CLUSTER_SUBJECT_MAX];
};

static void
serve_read(void *arg, uint8_t *data, size_t len, enum block_status st, const char *error)
{
	struct serve *sv = arg;

	(void)error;
	if (st == BLOCK_OK && sv->c->state == CLUSTER_CONNECTED) {
		if (sv->c->lie && len > 0)
			data[len / 2] ^= 0x01;
		sv->c->st.served++;
		cluster_stream_send(sv->c, sv->reply, data, len, NULL, NULL);
	} else {
		free(data);
	}
	free(sv);
}

static bool
excluded(struct cluster *c, char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], c->node) == 0)
			return true;
	return false;
}

/* Answers with the block named hash if this node holds it. */
static void
serve_hash(struct cluster *c, const struct cluster_msg *m, const uint8_t hash[HASH_LEN])
{
	struct block_info bi;
	struct serve *sv;
	struct err e;

	if (blockstore_stat(c->d->blocks, hash, &bi, &e) != 1 || strcmp(bi.state, "ok") != 0)
		return;
	if ((sv = calloc(1, sizeof(*sv))) == NULL)
		return;
	sv->c = c;
	snprintf(sv->reply, sizeof(sv->reply), "%s", m->reply);
	blockstore_get(c->d->blocks, hash, serve_read, sv);
}

static bool
serve_checks(struct cluster *c, const struct cluster_msg *m, size_t nexclude)
{
	if (m->reply == NULL || strlen(m->reply) >= CLUSTER_SUBJECT_MAX) {
		cluster_note_malformed(c, m->subject, "request without a usable reply subject");
		return false;
	}
	if (nexclude > FETCH_MAX_EXCLUDE) {
		cluster_note_malformed(c, m->subject, "more than 16 excluded nodes");
		return false;
	}
	return true;
}

static void
block_get_msg(void *arg, const struct cluster_msg *m)
{
	struct cluster *c = arg;
	struct frame_alloc fa;
	Farmd__BlockGet *g = (Farmd__BlockGet *)cluster_unpack(c, &farmd__block_get__descriptor,
	    m, CLUSTER_CTRL_MAX, &fa);

	if (g == NULL)
		return;
	if (g->hash.len != HASH_LEN)
		cluster_note_malformed(c, m->subject, "BlockGet: hash is not 32 bytes");
	else if (serve_checks(c, m, g->n_exclude) && !excluded(c, g->exclude, g->n_exclude))
		serve_hash(c, m, g->hash.data);
	protobuf_c_message_free_unpacked(&g->base, &fa.pb);
}

static void
history_get_msg(void *arg, const struct cluster_msg *m)
{
	struct cluster *c = arg;
	struct frame_alloc fa;
	Farmd__HistoryGet *g = (Farmd__HistoryGet *)cluster_unpack(c,
	    &farmd__history_get__descriptor, m, CLUSTER_CTRL_MAX, &fa);
	uint8_t hash[HASH_LEN];

	if (g == NULL)
		return;
	if (g->height == 0 || g->height > INT64_MAX)
		cluster_note_malformed(c, m->subject, "HistoryGet: height out of range");
	else if (serve_checks(c, m, g->n_exclude) && !excluded(c, g->exclude, g->n_exclude) &&
	    history_block_hash(c->d->history, g->height, hash) == 1)
		serve_hash(c, m, hash);
	protobuf_c_message_free_unpacked(&g->base, &fa.pb);
}

/* ---- asking ----------------------------------------------------------- */

static void fetch_done(void *arg, enum cluster_status st, uint8_t *data, size_t len,
    const char *node, const char *error);

static void
fetch_unlink(struct cfetch *f)
{
	if (f->c->fetch == NULL)
		return;
	for (struct cfetch **pp = &f->c->fetch->list; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == f) {
			*pp = f->next;
			return;
		}
	}
}

static void
fetch_end(struct cfetch *f, enum cluster_status st, uint8_t *data, size_t len,
    const char *node, const char *error)
{
	cluster_fetch_cb cb = f->cb;
	void *arg = f->arg;

	fetch_unlink(f);
	free(f);
	cb(arg, st, data, len, node, error);
}

static void
fetch_exclude(struct cfetch *f, const char *node)
{
	for (size_t i = 0; i < f->nexclude; i++)
		if (strcmp(f->exclude[i], node) == 0)
			return;
	if (f->nexclude < FETCH_MAX_EXCLUDE)
		snprintf(f->exclude[f->nexclude++], CLUSTER_NODE_MAX, "%s", node);
}

/* Publishes the request (again) with the current exclusion list. */
static void
fetch_ask(struct cfetch *f)
{
	struct cluster *c = f->c;
	char *names[FETCH_MAX_EXCLUDE];
	uint8_t buf[CLUSTER_CTRL_MAX];
	size_t n;

	for (size_t i = 0; i < f->nexclude; i++)
		names[i] = f->exclude[i];
	if (f->by_height) {
		Farmd__HistoryGet g = FARMD__HISTORY_GET__INIT;

		g.version = CLUSTER_PROTO_VERSION;
		g.height = f->height;
		g.exclude = names;
		g.n_exclude = f->nexclude;
		g.node = c->node;
		n = farmd__history_get__pack(&g, buf);
	} else {
		Farmd__BlockGet g = FARMD__BLOCK_GET__INIT;

		g.version = CLUSTER_PROTO_VERSION;
		g.hash.data = f->hash;
		g.hash.len = HASH_LEN;
		g.exclude = names;
		g.n_exclude = f->nexclude;
		g.node = c->node;
		n = farmd__block_get__pack(&g, buf);
	}
	f->attempts++;
	f->stream = cluster_stream_request(c, f->by_height ? CLUSTER_SUBJ_HISTORY_GET :
	    CLUSTER_SUBJ_BLOCK_GET, buf, n, f->max_len, FETCH_FIRST_MS, FETCH_IDLE_MS,
	    fetch_done, f);
	if (f->stream == 0)
		fetch_end(f, CLUSTER_UNAVAILABLE, NULL, 0, "", "out of memory");
}

static void
fetch_done(void *arg, enum cluster_status st, uint8_t *data, size_t len, const char *node,
    const char *error)
{
	struct cfetch *f = arg;
	struct cluster *c = f->c;
	char want[HASH_HEX_LEN + 1], got[HASH_HEX_LEN + 1], why[ERR_MSG_MAX];
	uint8_t h[HASH_LEN];

	f->stream = 0;
	if (st != CLUSTER_OK || f->by_height) {
		if (st == CLUSTER_TIMEOUT && error != NULL && strcmp(error, "no answer in time") == 0)
			error = "no peer has it";
		fetch_end(f, st, data, len, node, error);
		return;
	}
	hash_sha256(data, len, h);
	if (memcmp(h, f->hash, HASH_LEN) == 0) {
		fetch_end(f, CLUSTER_OK, data, len, node, NULL);
		return;
	}
	free(data);
	block_hex(f->hash, want);
	block_hex(h, got);
	log_warn("cluster: peer %s answered block %s with wrong bytes (%zu bytes hashing to "
	    "%.16s...); marked bad for 1 h, asking the other peers", node[0] ? node : "?", want,
	    len, got);
	cluster_peer_mark_bad(c, node, BAD_PEER_MS);
	fetch_exclude(f, node);
	if (f->attempts < FETCH_ATTEMPTS && c->state == CLUSTER_CONNECTED) {
		fetch_ask(f);
		return;
	}
	snprintf(why, sizeof(why), "peer %s sent wrong bytes", node);
	fetch_end(f, CLUSTER_BAD_ANSWER, NULL, 0, node, why);
}

static uint64_t
fetch_start(struct cluster *c, struct cfetch *f, cluster_fetch_cb cb, void *arg)
{
	struct cluster_peer *peers;
	size_t n;

	f->c = c;
	f->id = cluster_next_id(c);
	f->cb = cb;
	f->arg = arg;
	if ((peers = cluster_peers(c, &n)) != NULL) {
		for (size_t i = 0; i < n; i++)
			if (cluster_peer_is_bad(c, peers[i].node))
				fetch_exclude(f, peers[i].node);
		free(peers);
	}
	if (c->fetch != NULL) {
		f->next = c->fetch->list;
		c->fetch->list = f;
	}
	fetch_ask(f);
	return f->id;
}

uint64_t
cluster_fetch_block(struct cluster *c, const uint8_t hash[HASH_LEN], size_t max_len,
    cluster_fetch_cb cb, void *arg)
{
	struct cfetch *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return 0;
	memcpy(f->hash, hash, HASH_LEN);
	f->max_len = max_len;
	return fetch_start(c, f, cb, arg);
}

uint64_t
cluster_fetch_height(struct cluster *c, uint64_t height, size_t max_len,
    cluster_fetch_cb cb, void *arg)
{
	struct cfetch *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return 0;
	f->by_height = true;
	f->height = height;
	f->max_len = max_len;
	return fetch_start(c, f, cb, arg);
}

void
cluster_fetch_cancel(struct cluster *c, uint64_t handle)
{
	for (struct cfetch *f = c->fetch != NULL ? c->fetch->list : NULL; f != NULL; f = f->next) {
		if (f->id == handle) {
			if (f->stream != 0)
				cluster_stream_cancel(c, f->stream);
			fetch_unlink(f);
			free(f);
			return;
		}
	}
}

/* ---- life ------------------------------------------------------------- */

/* Fetches in flight are freed without a callback: farmd is past
 * quiescing, whose stream failures ended every one that had an owner. */
static void
fetch_free(struct cluster *c)
{
	struct cluster_fetch *f = c->fetch;

	if (f == NULL)
		return;
	cluster_unsubscribe(f->block_sub);
	cluster_unsubscribe(f->history_sub);
	while (f->list != NULL) {
		struct cfetch *x = f->list;

		f->list = x->next;
		free(x);
	}
	free(f);
	c->fetch = NULL;
}

static const struct cluster_part fetch_part = { NULL, NULL, fetch_free, NULL };

int
cluster_fetch_start(struct cluster *c, struct err *e)
{
	struct cluster_fetch *f;

	if (!cluster_enabled(c))
		return 0;
	if ((f = calloc(1, sizeof(*f))) == NULL)
		return err_set(e, "out of memory");
	f->c = c;
	c->fetch = f;
	cluster_add_part(c, &fetch_part);
	if ((f->block_sub = cluster_subscribe(c, CLUSTER_SUBJ_BLOCK_GET, NULL, block_get_msg, c,
	    e)) == NULL || (f->history_sub = cluster_subscribe(c, CLUSTER_SUBJ_HISTORY_GET, NULL,
	    history_get_msg, c, e)) == NULL)
		return -1;
	return 0;
}
