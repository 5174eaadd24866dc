/*
 * rplot.c: remote plotting, the farmer's side (rplot.h has the flow).
 *
 * Invariants:
 *  - Nothing a plotter sends is trusted: every message is unpacked with
 *    a bounded allocator after its size was checked, must carry our
 *    version and attempt id, and a chunk must start exactly where the
 *    previous one ended and be exactly chunk_bytes long (the sector's
 *    last one: its rest).  Anything else fails the attempt, and a chunk
 *    that breaks these rules also marks the plotter bad for an hour, as a
 *    failed spot check does: a plotter that answers every offer first
 *    and then sends nonsense would otherwise take every sector forever.
 *  - A chunk is acknowledged only once its bytes are in the sjob's
 *    buffer, so the plotter never runs more than one chunk ahead of the
 *    farmer's disk (at most one chunk is held here while a batch is
 *    written).
 *  - Every attempt ends in RJ_DONE (the whole sector received and spot
 *    checked) or RJ_FAILED (the reason in error); a pending fill is
 *    called back exactly once, with that outcome, unless the attempt was
 *    cancelled first.
 *  - The spot check decodes on the I/O pool (a piece XOR its keystream:
 *    no parsing of untrusted data) so it works on a farmer without
 *    encode workers.
 */
#include "rplot.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "clock.h"
#include "cluster.h"
#include "encode_v1.h"
#include "farm.h"
#include "farmd.h"
#include "frame.h"
#include "fsm.h"
#include "io.h"
#include "log.h"
#include "merkle.h"
#include "plot_int.h"
#include "pool.h"
#include "rplot.pb-c.h"
#include "sector.h"

/* A plotter answers an offer at once when it is free; none answers while
 * every plotter is busy, and the attempt asks again after
 * RPLOT_REOFFER_MS (it waits for a plotter, as a local sector waits for
 * a worker: backpressure, not failure). */
#define RPLOT_OFFER_TIMEOUT_MS 1000
#define RPLOT_REOFFER_MS 25
#define RPLOT_SEND_TIMEOUT_MS 5000
#define RPLOT_OFFER_TRIES 3             /* answers from bad plotters skipped */
#define RPLOT_CHECK_MAX 64              /* spot-checked pieces per sector */

enum rj_state { RJ_WAIT, RJ_OFFER, RJ_SEND, RJ_RECV, RJ_CHECK, RJ_DONE, RJ_LOCAL, RJ_FAILED,
	RJ_NSTATES };

static const char *const rj_names[RJ_NSTATES] = {
	[RJ_WAIT] = "waiting", [RJ_OFFER] = "offer", [RJ_SEND] = "send", [RJ_RECV] = "receiving",
	[RJ_CHECK] = "checking", [RJ_DONE] = "done", [RJ_LOCAL] = "local",
	[RJ_FAILED] = "failed",
};

struct rplot {
	struct farmd *d;
	TAILQ_HEAD(, rplot_job) jobs;
	uint64_t next_id;
	struct rplot_stats st;
};

struct rplot_job {
	struct rplot *r;
	struct fsm m;                   /* an enum rj_state */
	struct plot *p;
	struct farm *f;
	uint32_t idx;
	uint64_t hs;
	uint8_t sector_id[HASH_LEN];
	uint64_t id;
	char node[CLUSTER_NODE_MAX];
	char subject[CLUSTER_SUBJECT_MAX];
	char inbox[CLUSTER_SUBJECT_MAX];
	struct cluster_sub *sub;
	uint64_t req;                   /* cluster request in flight, 0 none */
	int offers;                     /* answered by bad plotters, in a row */
	struct event *watchdog;
	struct event *reoffer;
	uint64_t sector_bytes, pos;     /* pos: bytes consumed */
	uint32_t chunk_bytes;
	/* The fill under way: buf holds bytes [fill_start, fill_end). */
	uint8_t *buf;
	uint64_t fill_start, fill_end;
	rplot_fill_cb cb;
	void *arg;
	/* A chunk that came while no fill wanted it (not acknowledged yet). */
	uint8_t *held;
	size_t held_len;
	char held_reply[CLUSTER_SUBJECT_MAX];
	/* Spot check: offsets, their piece roots, and the received pieces. */
	uint32_t ncheck;
	uint32_t check_off[RPLOT_CHECK_MAX];
	uint8_t check_root[RPLOT_CHECK_MAX][HASH_LEN];
	uint8_t *check_buf;             /* ncheck × piece_size */
	struct rj_check *check;         /* on the I/O pool, NULL when none */
	int spot_failed;
	char error[ERR_MSG_MAX];
	TAILQ_ENTRY(rplot_job) link;
};

static struct cluster *
rj_cluster(const struct rplot_job *j)
{
	return j->r->d->cluster;
}

/* ---- the attempt's end ------------------------------------------------------ */

static void
rj_stop_io(struct rplot_job *j)
{
	if (j->req != 0)
		cluster_request_cancel(rj_cluster(j), j->req);
	j->req = 0;
	cluster_unsubscribe(j->sub);
	j->sub = NULL;
	if (j->watchdog != NULL)
		evtimer_del(j->watchdog);
	if (j->reoffer != NULL)
		evtimer_del(j->reoffer);
}

/* Calls back the pending fill, if any, once. */
static void
rj_callback(struct rplot_job *j, enum rplot_fill st, const char *error)
{
	rplot_fill_cb cb = j->cb;

	j->cb = NULL;
	j->buf = NULL;
	if (cb != NULL)
		cb(j->arg, st, error);
}

static void
rj_fail(struct rplot_job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The one way an attempt fails: the reason is kept, the fill told. */
static void
rj_fail(struct rplot_job *j, const char *fmt, ...)
{
	va_list ap;

	if (j->m.state == RJ_FAILED || j->m.state == RJ_DONE || j->m.state == RJ_LOCAL)
		return;
	va_start(ap, fmt);
	vsnprintf(j->error, sizeof(j->error), fmt, ap);
	va_end(ap);
	fsm_enter(&j->m, j, RJ_FAILED);
}

/* A plotter broke the chunk protocol: it is marked bad and the attempt
 * fails with the reason. */
static void rj_violation(struct rplot_job *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
rj_violation(struct rplot_job *j, const char *fmt, ...)
{
	char why[ERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	j->r->st.chunks_refused++;
	cluster_peer_mark_bad(rj_cluster(j), j->node, RPLOT_BAD_MS);
	log_warn("plotter %s: %s; the plotter is marked bad for %u s", j->node, why,
	    RPLOT_BAD_MS / 1000);
	rj_fail(j, "plotter %s: %s", j->node, why);
}

/* Answers a chunk: error NULL acknowledges the bytes up to pos, else it
 * tells the plotter to stop (best effort either way). */
static void
rj_answer(struct rplot_job *j, const char *reply, const char *error)
{
	Farmd__ChunkAck ack = FARMD__CHUNK_ACK__INIT;
	uint8_t buf[ERR_MSG_MAX + 64];
	struct err e;

	ack.version = CLUSTER_PROTO_VERSION;
	ack.job = j->id;
	ack.next = j->pos;
	ack.error = (char *)(error != NULL ? error : "");
	if (farmd__chunk_ack__get_packed_size(&ack) <= sizeof(buf) &&
	    cluster_publish(rj_cluster(j), reply, NULL, buf, farmd__chunk_ack__pack(&ack, buf),
	    &e) < 0)
		log_debug("sector %" PRIu32 "/%" PRIu32 ": answer to %s: %s", j->f->id, j->idx,
		    j->node, e.msg);
}

/* Tells a plotter whose chunk we hold unanswered to stop. */
static void
rj_tell_stop(struct rplot_job *j, const char *why)
{
	if (j->held_reply[0] == '\0')
		return;
	rj_answer(j, j->held_reply, why);
	j->held_reply[0] = '\0';
}

static int
rj_failed(void *arg)
{
	struct rplot_job *j = arg;

	rj_stop_io(j);
	rj_tell_stop(j, j->error);
	j->r->st.failed++;
	log_warn("sector %" PRIu32 "/%" PRIu32 ": remote plotting%s%s failed: %s", j->f->id,
	    j->idx, j->node[0] ? " on " : "", j->node, j->error);
	rj_callback(j, RPLOT_FAILED, j->error);
	return FSM_ASYNC;
}

static int
rj_local(void *arg)
{
	struct rplot_job *j = arg;

	rj_stop_io(j);
	j->r->st.fallbacks++;
	log_info("sector %" PRIu32 "/%" PRIu32 ": no free plotter answered; plotting it locally",
	    j->f->id, j->idx);
	rj_callback(j, RPLOT_LOCAL, NULL);
	return FSM_ASYNC;
}

static int
rj_done(void *arg)
{
	struct rplot_job *j = arg;

	rj_stop_io(j);
	j->r->st.plotted++;
	log_info("sector %" PRIu32 "/%" PRIu32 ": encoded remotely by %s, %" PRIu32
	    " pieces spot-checked", j->f->id, j->idx, j->node, j->ncheck);
	rj_callback(j, RPLOT_FILLED, NULL);
	return FSM_ASYNC;
}

/* ---- offer: a free plotter ------------------------------------------------- */

/* Whether this node can plot the sector itself. */
static int
rj_local_workers(const struct rplot *r)
{
	return r->d->cfg.workers.encode > 0;
}

static void rj_offer_cb(void *arg, enum cluster_status st, const uint8_t *data, size_t len,
    const char *error);

static int
rj_offer(void *arg)
{
	struct rplot_job *j = arg;
	Farmd__PlotterAsk ask = FARMD__PLOTTER_ASK__INIT;
	uint8_t buf[128];

	ask.version = CLUSTER_PROTO_VERSION;
	ask.farmer = (char *)cluster_node(rj_cluster(j));
	if (farmd__plotter_ask__get_packed_size(&ask) > sizeof(buf))
		ask.farmer = (char *)"";
	j->r->st.offers++;
	j->req = cluster_request(rj_cluster(j), CLUSTER_SUBJ_PLOTTER_FREE, buf,
	    farmd__plotter_ask__pack(&ask, buf), RPLOT_OFFER_TIMEOUT_MS, rj_offer_cb, j);
	return FSM_ASYNC;
}

/* A plotter's offer: its node name and the one subject it may name. */
static int
rj_take_offer(struct rplot_job *j, const uint8_t *data, size_t len, char *why, size_t n)
{
	struct frame_alloc fa;
	Farmd__PlotterOffer *o;
	char want[CLUSTER_SUBJECT_MAX];
	int rc = -1;

	frame_alloc_init(&fa, 4 * len + 1024);
	if ((o = farmd__plotter_offer__unpack(&fa.pb, len, data)) == NULL) {
		snprintf(why, n, "an offer that does not unpack");
		return -1;
	}
	if (o->version != CLUSTER_PROTO_VERSION)
		snprintf(why, n, "an offer of version %" PRIu32, o->version);
	else if (o->node[0] == '\0' || strlen(o->node) >= CLUSTER_NODE_MAX ||
	    strpbrk(o->node, ". *>\t\r\n") != NULL)
		snprintf(why, n, "an offer with an unusable node name");
	else if (snprintf(want, sizeof(want), CLUSTER_SUBJ_PLOTTER_SECTOR_FMT, o->node) >=
	    (int)sizeof(want) || strcmp(o->subject, want) != 0)
		snprintf(why, n, "an offer from %s naming subject '%.64s'", o->node, o->subject);
	else {
		snprintf(j->node, sizeof(j->node), "%s", o->node);
		snprintf(j->subject, sizeof(j->subject), "%s", want);
		rc = 0;
	}
	farmd__plotter_offer__free_unpacked(o, &fa.pb);
	return rc;
}

/* No usable plotter now: plot locally when this node can, else wait a
 * little and ask again. */
static void
rj_no_plotter(struct rplot_job *j)
{
	j->node[0] = '\0';
	fsm_enter(&j->m, j, rj_local_workers(j->r) ? RJ_LOCAL : RJ_WAIT);
}

static int
rj_wait(void *arg)
{
	struct rplot_job *j = arg;
	struct timeval tv = clock_tv(RPLOT_REOFFER_MS);

	evtimer_add(j->reoffer, &tv);
	return FSM_ASYNC;
}

static void
rj_reoffer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rplot_job *j = arg;

	(void)fd;
	(void)what;
	fsm_enter(&j->m, j, RJ_OFFER);
}

static void
rj_offer_cb(void *arg, enum cluster_status st, const uint8_t *data, size_t len,
    const char *error)
{
	struct rplot_job *j = arg;
	char why[ERR_MSG_MAX];

	(void)error;
	j->req = 0;
	/* No answer in time, or none at all (the server's "no responders":
	 * cluster_request reports it as a timeout), or an empty one. */
	if (st != CLUSTER_OK || len == 0) {
		rj_no_plotter(j);
		return;
	}
	if (rj_take_offer(j, data, len, why, sizeof(why)) < 0) {
		cluster_note_malformed(rj_cluster(j), CLUSTER_SUBJ_PLOTTER_FREE, why);
		rj_no_plotter(j);
		return;
	}
	if (cluster_peer_is_bad(rj_cluster(j), j->node)) {
		/* The queue group picked a plotter we do not trust now: ask
		 * again at once, for another member, a few times in a row. */
		if (++j->offers < RPLOT_OFFER_TRIES) {
			j->node[0] = '\0';
			fsm_enter(&j->m, j, RJ_OFFER);
		} else {
			j->offers = 0;
			rj_no_plotter(j);
		}
		return;
	}
	fsm_enter(&j->m, j, RJ_SEND);
}

/* ---- send: the sector job ---------------------------------------------------- */

static void rj_msg_cb(void *arg, const struct cluster_msg *m);
static void rj_send_cb(void *arg, enum cluster_status st, const uint8_t *data, size_t len,
    const char *error);

static void
rj_watchdog_arm(struct rplot_job *j)
{
	struct timeval tv = clock_tv(RPLOT_PING_TIMEOUT_MS);

	evtimer_add(j->watchdog, &tv);
}

/* The sector job message: the pieces' hashes, in offset order. */
static uint8_t *
rj_pack_job(struct rplot_job *j, size_t *len, struct err *e)
{
	const struct farmdir_geom *g = &j->f->g;
	Farmd__SectorJob sj = FARMD__SECTOR_JOB__INIT;
	Farmd__RplotPiece *pieces = calloc(g->pieces_in_sector, sizeof(*pieces));
	Farmd__RplotPiece **pp = calloc(g->pieces_in_sector, sizeof(*pp));
	uint8_t (*hashes)[HASH_LEN] = calloc(g->pieces_in_sector, HASH_LEN);
	uint8_t *out = NULL;

	if (pieces == NULL || pp == NULL || hashes == NULL) {
		err_set(e, "out of memory");
		goto done;
	}
	for (uint32_t off = 0; off < g->pieces_in_sector; off++) {
		uint8_t root[HASH_LEN];
		uint64_t index;

		if (sector_piece(j->p, j->f, j->sector_id, j->hs, off, &index, hashes[off], root,
		    e) < 0)
			goto done;
		for (uint32_t k = 0; k < j->ncheck; k++)
			if (j->check_off[k] == off)
				memcpy(j->check_root[k], root, HASH_LEN);
		farmd__rplot_piece__init(&pieces[off]);
		pieces[off].offset = off;
		pieces[off].hash.data = hashes[off];
		pieces[off].hash.len = HASH_LEN;
		pp[off] = &pieces[off];
	}
	sj.version = CLUSTER_PROTO_VERSION;
	sj.job = j->id;
	sj.reply = j->inbox;
	sj.farmer = (char *)cluster_node(rj_cluster(j));
	sj.public_key_hash.data = j->f->pkh;
	sj.public_key_hash.len = HASH_LEN;
	sj.sector_index = j->idx;
	sj.history_size = j->hs;
	sj.sector_id.data = j->sector_id;
	sj.sector_id.len = HASH_LEN;
	sj.piece_size = (uint32_t)g->piece_size;
	sj.pieces_in_sector = g->pieces_in_sector;
	sj.scrypt_n = g->scrypt.n;
	sj.scrypt_r = g->scrypt.r;
	sj.scrypt_p = g->scrypt.p;
	sj.chunk_bytes = j->chunk_bytes;
	sj.n_pieces = g->pieces_in_sector;
	sj.pieces = pp;
	*len = farmd__sector_job__get_packed_size(&sj);
	if (*len > cluster_max_payload(rj_cluster(j)))
		err_set(e, "the sector job (%zu bytes) exceeds the server's max_payload", *len);
	else if ((out = malloc(*len)) == NULL)
		err_set(e, "out of memory");
	else
		farmd__sector_job__pack(&sj, out);
done:
	free(hashes);
	free(pp);
	free(pieces);
	return out;
}

/* The chunk size: the largest power of two that leaves room for the
 * message's other fields in max_payload, at most RPLOT_CHUNK_MAX, and
 * divides the batch (so no chunk straddles two batches: every batch but
 * the last has the first one's size, and the last ends the sector).
 * Below a piece when a piece does not fit a message. */
static uint32_t
rj_chunk_bytes(const struct rplot_job *j, uint64_t batch)
{
	size_t max = cluster_max_payload(rj_cluster(j));
	uint64_t c = j->f->g.piece_size;

	while (c > 4096 && c + 1024 > max)
		c /= 2;
	while (2 * c <= RPLOT_CHUNK_MAX && 2 * c + 1024 <= max && batch % (2 * c) == 0)
		c *= 2;
	return (uint32_t)c;
}

static int
rj_send(void *arg)
{
	struct rplot_job *j = arg;
	struct cluster *c = rj_cluster(j);
	uint8_t *msg;
	size_t len;
	struct err e;

	/* One token more than cluster_new_inbox gives: the cluster's own
	 * "<inbox>.*" subscription must not get a copy of every chunk. */
	cluster_new_inbox(c, j->inbox);
	if (strlen(j->inbox) + sizeof(".sector") > sizeof(j->inbox)) {
		snprintf(j->error, sizeof(j->error), "inbox subject too long");
		return RJ_FAILED;
	}
	strcat(j->inbox, ".sector");
	if ((j->sub = cluster_subscribe(c, j->inbox, NULL, rj_msg_cb, j, &e)) == NULL) {
		snprintf(j->error, sizeof(j->error), "subscribe %s: %s", j->inbox, e.msg);
		return RJ_FAILED;
	}
	/* The first batch's fill is registered: READ follows MARK at once. */
	j->chunk_bytes = rj_chunk_bytes(j, j->cb != NULL ? j->fill_end - j->fill_start :
	    j->f->g.piece_size);
	if ((msg = rj_pack_job(j, &len, &e)) == NULL) {
		snprintf(j->error, sizeof(j->error), "%s", e.msg);
		return RJ_FAILED;
	}
	j->req = cluster_request(c, j->subject, msg, len, RPLOT_SEND_TIMEOUT_MS, rj_send_cb, j);
	free(msg);
	rj_watchdog_arm(j);
	return FSM_ASYNC;
}

static void
rj_send_cb(void *arg, enum cluster_status st, const uint8_t *data, size_t len,
    const char *error)
{
	struct rplot_job *j = arg;
	struct frame_alloc fa;
	Farmd__SectorAccept *a;

	j->req = 0;
	if (st != CLUSTER_OK) {
		rj_fail(j, "plotter %s did not take the sector job: %s", j->node,
		    error ? error : "no answer");
		return;
	}
	frame_alloc_init(&fa, 4 * len + 1024);
	if ((a = farmd__sector_accept__unpack(&fa.pb, len, data)) == NULL ||
	    a->version != CLUSTER_PROTO_VERSION) {
		if (a != NULL)
			farmd__sector_accept__free_unpacked(a, &fa.pb);
		cluster_note_malformed(rj_cluster(j), j->subject, "sector accept");
		rj_fail(j, "plotter %s answered the sector job with a malformed message", j->node);
		return;
	}
	if (a->busy) {
		/* Another farmer took its last worker first. */
		farmd__sector_accept__free_unpacked(a, &fa.pb);
		rj_stop_io(j);
		rj_no_plotter(j);
		return;
	}
	if (a->error[0] != '\0') {
		rj_fail(j, "plotter %s refused the sector job: %.200s", j->node, a->error);
		farmd__sector_accept__free_unpacked(a, &fa.pb);
		return;
	}
	farmd__sector_accept__free_unpacked(a, &fa.pb);
	if (j->m.state == RJ_SEND)
		fsm_enter(&j->m, j, RJ_RECV);
}

/* ---- receive: chunks -------------------------------------------------------- */

/* The length the chunk at pos must have. */
static uint64_t
rj_chunk_len(const struct rplot_job *j, uint64_t pos)
{
	uint64_t rest = j->sector_bytes - pos;

	return rest < j->chunk_bytes ? rest : j->chunk_bytes;
}

static int rj_check(void *arg);

/* Copies a chunk (already checked) into the fill, acknowledges it, and
 * completes the fill when it is full. */
static void
rj_consume(struct rplot_job *j, const uint8_t *data, size_t len, const char *reply)
{
	uint32_t ps = (uint32_t)j->f->g.piece_size;

	memcpy(j->buf + (j->pos - j->fill_start), data, len);
	j->pos += len;
	j->r->st.bytes_received += len;
	rj_answer(j, reply, NULL);
	if (j->pos < j->fill_end)
		return;
	/* The spot-checked pieces of this batch, before the sjob reuses buf. */
	for (uint32_t k = 0; k < j->ncheck; k++) {
		uint64_t at = (uint64_t)j->check_off[k] * ps;

		if (at >= j->fill_start && at < j->fill_end)
			memcpy(j->check_buf + (uint64_t)k * ps, j->buf + (at - j->fill_start), ps);
	}
	if (j->pos == j->sector_bytes)
		fsm_enter(&j->m, j, RJ_CHECK);
	else
		rj_callback(j, RPLOT_FILLED, NULL);
}

/* Holds a chunk no fill wants yet (none is held); its ack waits for the
 * next fill.  -1: out of memory. */
static int
rj_hold(struct rplot_job *j, const uint8_t *data, size_t len, const char *reply)
{
	if ((j->held = malloc(len)) == NULL)
		return -1;
	memcpy(j->held, data, len);
	j->held_len = len;
	snprintf(j->held_reply, sizeof(j->held_reply), "%s", reply);
	return 0;
}

static void
rj_data(struct rplot_job *j, const Farmd__SectorChunk *c, const char *reply)
{
	uint64_t want = j->pos + (j->held != NULL ? j->held_len : 0);

	if (reply == NULL || strlen(reply) >= CLUSTER_SUBJECT_MAX) {
		rj_violation(j, "a chunk without a usable reply subject");
		return;
	}
	if (j->held == NULL)            /* where a refusal is answered */
		snprintf(j->held_reply, sizeof(j->held_reply), "%s", reply);
	if (c->pos != want || c->data.len != rj_chunk_len(j, want) || c->data.len == 0) {
		rj_violation(j, "sent %zu bytes at byte %" PRIu64 " of the sector; expected %"
		    PRIu64 " bytes at byte %" PRIu64, c->data.len, c->pos, rj_chunk_len(j, want),
		    want);
		return;
	}
	if (j->cb != NULL && j->held == NULL && j->pos < j->fill_end) {
		j->held_reply[0] = '\0';
		rj_consume(j, c->data.data, c->data.len, reply);
	}
	else if (j->held != NULL)
		rj_violation(j, "a chunk before the previous one was acknowledged");
	else if (rj_hold(j, c->data.data, c->data.len, reply) < 0)
		rj_fail(j, "out of memory holding a chunk of plotter %s", j->node);
}

static void
rj_msg_cb(void *arg, const struct cluster_msg *m)
{
	struct rplot_job *j = arg;
	struct frame_alloc fa;
	Farmd__SectorChunk *c;

	if (j->m.state != RJ_SEND && j->m.state != RJ_RECV)
		return;
	if (m->len > (size_t)j->chunk_bytes + 4096) {
		cluster_note_malformed(rj_cluster(j), m->subject, "chunk larger than chunk_bytes");
		rj_violation(j, "a %zu-byte message, chunks are %" PRIu32 " bytes", m->len,
		    j->chunk_bytes);
		return;
	}
	frame_alloc_init(&fa, 2 * m->len + 4096);
	if ((c = farmd__sector_chunk__unpack(&fa.pb, m->len, m->data)) == NULL ||
	    c->version != CLUSTER_PROTO_VERSION || c->job != j->id) {
		if (c != NULL)
			farmd__sector_chunk__free_unpacked(c, &fa.pb);
		cluster_note_malformed(rj_cluster(j), m->subject, "sector chunk");
		return;                 /* not our plotter's: dropped, counted */
	}
	rj_watchdog_arm(j);
	if (c->kind == FARMD__SECTOR_CHUNK__KIND__ERROR)
		rj_fail(j, "plotter %s gave up: %.200s", j->node, c->error);
	else if (c->kind == FARMD__SECTOR_CHUNK__KIND__DATA)
		rj_data(j, c, m->reply);
	farmd__sector_chunk__free_unpacked(c, &fa.pb);
}

static void
rj_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rplot_job *j = arg;

	(void)fd;
	(void)what;
	rj_fail(j, "plotter %s sent nothing for %d s", j->node, RPLOT_PING_TIMEOUT_MS / 1000);
}

/* ---- check: decode a few pieces here -------------------------------------- */

/* The spot check's task on the I/O pool: it owns its inputs, so an
 * attempt freed meanwhile (j NULL) costs only the task. */
struct rj_check {
	struct rplot_job *j;
	uint8_t sector_id[HASH_LEN];
	struct encode_params scrypt;
	uint32_t piece_size, n;
	uint32_t off[RPLOT_CHECK_MAX];
	uint8_t root[RPLOT_CHECK_MAX][HASH_LEN];
	uint8_t *pieces;                /* the attempt's check_buf; ours once j is NULL */
	int bad;                        /* the first failing index + 1 */
	char err[ERR_MSG_MAX];
};

static void
rj_check_work(void *arg)
{
	struct rj_check *t = arg;
	struct encode_v1_ctx *ctx;
	struct err e;

	if ((ctx = encode_v1_ctx_new(&e)) == NULL) {
		snprintf(t->err, sizeof(t->err), "%s", e.msg);
		return;
	}
	for (uint32_t k = 0; k < t->n && t->bad == 0; k++) {
		uint8_t *piece = t->pieces + (uint64_t)k * t->piece_size, root[HASH_LEN];

		if (encode_v1_piece(ctx, t->sector_id, t->off[k], &t->scrypt, piece, piece,
		    t->piece_size, &e) < 0) {
			snprintf(t->err, sizeof(t->err), "decode: %s", e.msg);
			break;
		}
		if (merkle_root(piece, t->piece_size / 32, root) < 0 ||
		    memcmp(root, t->root[k], HASH_LEN) != 0)
			t->bad = (int)k + 1;
	}
	encode_v1_ctx_free(ctx);
}

static void
rj_check_done(void *arg)
{
	struct rj_check *t = arg;
	struct rplot_job *j = t->j;

	if (j == NULL) {
		free(t->pieces);
		free(t);
		return;                 /* the attempt was freed meanwhile */
	}
	j->check = NULL;
	if (t->err[0] != '\0') {
		rj_fail(j, "spot check: %s", t->err);
	} else if (t->bad != 0) {
		uint32_t off = j->check_off[t->bad - 1];

		j->spot_failed = 1;
		j->r->st.spot_checks_failed++;
		cluster_peer_mark_bad(rj_cluster(j), j->node, RPLOT_BAD_MS);
		log_warn("plotter %s: piece offset %" PRIu32 " of sector %" PRIu32 "/%" PRIu32
		    " does not decode to its piece root; the plotter is marked bad for %u s",
		    j->node, off, j->f->id, j->idx, RPLOT_BAD_MS / 1000);
		rj_fail(j, "spot check failed: piece offset %" PRIu32 " from plotter %s does not "
		    "decode to its piece root", off, j->node);
	} else {
		fsm_enter(&j->m, j, RJ_DONE);
	}
	free(t);
}

static int
rj_check(void *arg)
{
	struct rplot_job *j = arg;
	struct rj_check *t;

	evtimer_del(j->watchdog);
	if (j->ncheck == 0)
		return RJ_DONE;
	if ((t = calloc(1, sizeof(*t))) == NULL) {
		snprintf(j->error, sizeof(j->error), "out of memory");
		return RJ_FAILED;
	}
	t->j = j;
	memcpy(t->sector_id, j->sector_id, HASH_LEN);
	t->scrypt = j->f->g.scrypt;
	t->piece_size = (uint32_t)j->f->g.piece_size;
	t->n = j->ncheck;
	memcpy(t->off, j->check_off, sizeof(t->off));
	memcpy(t->root, j->check_root, sizeof(t->root));
	t->pieces = j->check_buf;
	if (io_submit(j->r->d->io, rj_check_work, rj_check_done, t) < 0) {
		free(t);
		snprintf(j->error, sizeof(j->error), "cannot queue the spot check");
		return RJ_FAILED;
	}
	j->check = t;
	return FSM_ASYNC;
}

/* ---- the machine ---------------------------------------------------------- */

static void
rj_label(const void *obj, char *buf, size_t len)
{
	const struct rplot_job *j = obj;

	snprintf(buf, len, "remote sector %" PRIu32 "/%" PRIu32, j->f->id, j->idx);
}

static const struct fsm_state rj_states[RJ_NSTATES] = {
	[RJ_WAIT] = { "wait", rj_wait },        /* then rj_reoffer_cb */
	[RJ_OFFER] = { "offer", rj_offer },
	[RJ_SEND] = { "send", rj_send },
	[RJ_RECV] = { "receive", NULL },        /* chunks: rj_msg_cb */
	[RJ_CHECK] = { "check", rj_check },
	[RJ_DONE] = { "done", rj_done },
	[RJ_LOCAL] = { "local", rj_local },
	[RJ_FAILED] = { "failed", rj_failed },
};

static const struct fsm_def rj_fsm = {
	.name = "rplot", .states = rj_states, .nstates = RJ_NSTATES,
	.error = RJ_FAILED, .final = -1, .label = rj_label,
};

/* ---- the public side -------------------------------------------------------- */

/* Whether a sector starting now would wait for a local encode worker:
 * another local sector is in flight, or encode jobs are queued. */
static int
rj_local_would_wait(struct rplot *r, struct plot *p)
{
	struct pool_stats ps;
	uint64_t in_flight = 0;
	struct farm *f;

	pool_stats(r->d->pool, &ps);
	if (ps.kinds[WIRE_KIND_ENCODE].queued > 0 || ps.kinds[WIRE_KIND_ENCODE].alive == 0)
		return 1;
	TAILQ_FOREACH(f, &p->farms, link)
		in_flight += f->in_flight;
	/* in_flight counts this sector too. */
	return in_flight > 1 + r->st.in_flight;
}

/* verify_pieces distinct offsets, drawn at random. */
static void
rj_pick_checks(struct rplot_job *j, uint32_t want)
{
	uint32_t n = j->f->g.pieces_in_sector;

	if (want > n)
		want = n;
	if (want > RPLOT_CHECK_MAX)
		want = RPLOT_CHECK_MAX;
	while (j->ncheck < want) {
		uint32_t off = arc4random_uniform(n), k;

		for (k = 0; k < j->ncheck && j->check_off[k] != off; k++)
			;
		if (k == j->ncheck)
			j->check_off[j->ncheck++] = off;
	}
}

struct rplot_job *
rplot_attempt(struct rplot *r, struct rplot_job *prev, struct plot *p, struct farm *f,
    uint32_t idx, uint64_t history_size, const uint8_t sector_id[HASH_LEN])
{
	int mode = r->d->cfg.cluster.remote_plotting, spot = 0, local = rj_local_workers(r);
	struct rplot_job *j;

	if (prev != NULL) {
		spot = prev->spot_failed;
		rplot_job_free(prev);
	}
	if (mode == REMOTE_PLOTTING_OFF || (local && spot))
		return NULL;
	if (local && (cluster_state(r->d->cluster) != CLUSTER_CONNECTED ||
	    (mode == REMOTE_PLOTTING_OVERFLOW && !rj_local_would_wait(r, p))))
		return NULL;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return NULL;            /* local, then */
	j->f = f;
	rj_pick_checks(j, r->d->cfg.cluster.verify_pieces);
	if ((j->check_buf = malloc((size_t)f->g.piece_size * (j->ncheck + 1))) == NULL ||
	    (j->watchdog = evtimer_new(r->d->base, rj_watchdog_cb, j)) == NULL ||
	    (j->reoffer = evtimer_new(r->d->base, rj_reoffer_cb, j)) == NULL) {
		if (j->watchdog != NULL)
			event_free(j->watchdog);
		free(j->check_buf);
		free(j);
		return NULL;
	}
	j->r = r;
	j->p = p;
	j->f = f;
	j->idx = idx;
	j->hs = history_size;
	memcpy(j->sector_id, sector_id, HASH_LEN);
	j->id = ++r->next_id;
	j->sector_bytes = f->g.sector_size;
	TAILQ_INSERT_TAIL(&r->jobs, j, link);
	r->st.in_flight++;
	fsm_init(&j->m, &rj_fsm, RJ_OFFER);
	fsm_enter(&j->m, j, RJ_OFFER);
	return j;
}

void
rplot_fill(struct rplot_job *j, uint8_t *buf, uint32_t first, uint32_t n, rplot_fill_cb cb,
    void *arg)
{
	uint64_t ps = j->f->g.piece_size;

	j->buf = buf;
	j->fill_start = (uint64_t)first * ps;
	j->fill_end = j->fill_start + (uint64_t)n * ps;
	j->cb = cb;
	j->arg = arg;
	if (j->m.state == RJ_FAILED) {
		rj_callback(j, RPLOT_FAILED, j->error);
		return;
	}
	if (j->fill_start != j->pos) {
		rj_fail(j, "batch at byte %" PRIu64 " asked while %" PRIu64 " bytes were received",
		    j->fill_start, j->pos);
		return;
	}
	if (j->held != NULL) {
		uint8_t *held = j->held;
		char reply[CLUSTER_SUBJECT_MAX];

		j->held = NULL;
		memcpy(reply, j->held_reply, sizeof(reply));
		j->held_reply[0] = '\0';
		rj_consume(j, held, j->held_len, reply);
		free(held);
	}
}

int
rplot_job_cancel(struct rplot_job *j)
{
	int pending = j->cb != NULL;

	j->cb = NULL;
	j->buf = NULL;
	rj_stop_io(j);
	rj_tell_stop(j, "the farmer is shutting down");
	return pending;
}

void
rplot_job_free(struct rplot_job *j)
{
	if (j == NULL)
		return;
	rj_stop_io(j);
	rj_tell_stop(j, "the farmer dropped the sector");
	if (j->check != NULL) {
		/* The check on the I/O pool goes on with its own copy; it
		 * frees the pieces it reads. */
		j->check->j = NULL;
		j->check_buf = NULL;
	}
	TAILQ_REMOVE(&j->r->jobs, j, link);
	j->r->st.in_flight--;
	event_free(j->watchdog);
	event_free(j->reoffer);
	free(j->held);
	free(j->check_buf);
	free(j);
}

const char *
rplot_job_plotter(const struct rplot_job *j)
{
	return j->node;
}

struct rplot *
rplot_new(struct farmd *d, struct err *e)
{
	struct rplot *r = calloc(1, sizeof(*r));

	if (r == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	r->d = d;
	TAILQ_INIT(&r->jobs);
	return r;
}

void
rplot_free(struct rplot *r)
{
	if (r == NULL)
		return;
	while (!TAILQ_EMPTY(&r->jobs))
		rplot_job_free(TAILQ_FIRST(&r->jobs));
	free(r);
}

void
rplot_stats(const struct rplot *r, struct rplot_stats *s)
{
	*s = r->st;
}

json_t *
rplot_json(const struct rplot *r)
{
	static const char *const modes[] = { "off", "overflow", "prefer" };
	int mode = r->d->cfg.cluster.remote_plotting;
	json_t *list = json_array();
	const struct rplot_job *j;

	TAILQ_FOREACH(j, &r->jobs, link)
		json_array_append_new(list, json_pack("{s:I, s:I, s:s, s:s, s:I}",
		    "farm", (json_int_t)j->f->id, "sector", (json_int_t)j->idx, "plotter", j->node,
		    "state", rj_names[j->m.state], "received", (json_int_t)j->pos));
	return json_pack("{s:s, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
	    "mode", mode >= 0 && mode < 3 ? modes[mode] : "?", "in_flight", list,
	    "offers", (json_int_t)r->st.offers, "plotted", (json_int_t)r->st.plotted,
	    "failed", (json_int_t)r->st.failed,
	    "spot_checks_failed", (json_int_t)r->st.spot_checks_failed,
	    "fallbacks", (json_int_t)r->st.fallbacks,
	    "bytes_received", (json_int_t)r->st.bytes_received,
	    "chunks_refused", (json_int_t)r->st.chunks_refused);
}
