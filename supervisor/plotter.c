/*
 * plotter.c: remote plotting, the plotter's side (plotter.h has the flow).
 *
 * Invariants:
 *  - A sector job is checked whole before anything is allocated for it:
 *    version, the sizes of every field, a geometry within the bounds a
 *    farm can have, one piece hash per offset in order, a chunk size
 *    that fits the server's max_payload, and a sector id equal to the
 *    one its inputs give (format v1).
 *  - A job's machine (pj_states, run by fsm.c) goes FETCH → ENCODE →
 *    SEND per batch, then DONE; every failure reaches FAILED, which tells
 *    the farmer (an ERROR chunk) and frees the job once no callback of
 *    it is outstanding (pending counts block reads, fetches and encode
 *    jobs).
 *  - Exactly one chunk is unacknowledged at a time: the farmer acks a
 *    chunk once its bytes are in its buffer, so the farmer's disk paces
 *    this node.
 */
#include "plotter.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "blockstore.h"
#include "clock.h"
#include "cluster.h"
#include "encode_v1.h"
#include "farmd.h"
#include "frame.h"
#include "fsm.h"
#include "log.h"
#include "pool.h"
#include "rplot.h"
#include "rplot.pb-c.h"

#define PLOTTER_BATCH_BYTES (16u << 20)   /* a multiple of RPLOT_CHUNK_MAX */
#define PLOTTER_JOB_PIECES 16           /* pieces per encode job, as sjob.c */
#define PLOTTER_PIECE_MIN 4096u
#define PLOTTER_PIECE_MAX (16u << 20)
#define PLOTTER_PIECES_MAX 65536u
#define PLOTTER_TICK_MS 1000            /* capacity re-check (workers come and go) */

enum pj_state { PJ_FETCH, PJ_ENCODE, PJ_SEND, PJ_DONE, PJ_FAILED, PJ_NSTATES };

static const char *const pj_names[PJ_NSTATES] = {
	[PJ_FETCH] = "fetching", [PJ_ENCODE] = "encoding", [PJ_SEND] = "sending",
	[PJ_DONE] = "done", [PJ_FAILED] = "failed",
};

struct pjob;

struct plotter {
	struct farmd *d;
	struct cluster_sub *free_sub, *sector_sub;
	struct event *tick;
	TAILQ_HEAD(, pjob) jobs;
	uint32_t njobs;
	char subject[CLUSTER_SUBJECT_MAX];
	int started, stopping;
	struct plotter_stats st;
#ifdef FAULT_INJECTION
	int wrong_piece;
#endif
};

/* One piece read or fetch, or one encode job, of the current batch. */
struct pj_part {
	struct pjob *j;
	uint32_t slot, n;               /* within the batch */
	uint64_t handle;                /* pool job or cluster fetch; 0 once answered */
};

struct pjob {
	struct plotter *pl;
	struct fsm m;
	uint64_t id;                    /* the farmer's attempt id */
	char reply[CLUSTER_SUBJECT_MAX];
	char farmer[CLUSTER_NODE_MAX];
	uint32_t sector_index;
	uint8_t sector_id[HASH_LEN];
	struct encode_params scrypt;
	uint32_t piece_size, pieces, chunk_bytes;
	uint8_t (*hashes)[HASH_LEN];
	uint32_t batch_first, batch_n, batch_max;
	uint8_t *buf;
	struct pj_part *parts;          /* batch_max of them */
	uint32_t nparts, pending;
	int failed, wrong;
	uint64_t sent;                  /* bytes of the sector acknowledged */
	uint64_t req;                   /* the chunk request in flight */
	struct event *ping;
	char error[ERR_MSG_MAX];
	TAILQ_ENTRY(pjob) link;
};

static struct cluster *
pj_cluster(const struct pjob *j)
{
	return j->pl->d->cluster;
}

/* Records why the job fails; the first failure is the reason. */
#define pj_fail(j, ...) do {                                                  \
	if (!(j)->failed) {                                                   \
		(j)->failed = 1;                                              \
		snprintf((j)->error, sizeof((j)->error), __VA_ARGS__);        \
	}                                                                     \
} while (0)

/* A completion of the current step; the last one moves the job on. */
static void
pj_complete(struct pjob *j, enum pj_state next)
{
	if (--j->pending > 0)
		return;
	fsm_enter(&j->m, j, j->failed ? PJ_FAILED : (int)next);
}

/* ---- capacity ---------------------------------------------------------------- */

static void plotter_free_cb(void *arg, const struct cluster_msg *m);

/* Sector jobs this node takes now: one per live encode worker, none
 * while encode jobs queue (its own farms come first). */
static uint32_t
plotter_free_slots(const struct plotter *pl)
{
	struct pool_stats ps;
	const struct pool_kind_stats *k;

	if (!pl->started || pl->stopping || !pl->d->cfg.cluster.plotter)
		return 0;
	pool_stats(pl->d->pool, &ps);
	k = &ps.kinds[WIRE_KIND_ENCODE];
	if (k->queued > 0 || k->alive <= pl->njobs)
		return 0;
	return k->alive - pl->njobs;
}

/* Subscribed to plotter.free exactly while there is a free slot. */
static void
plotter_offer_update(struct plotter *pl)
{
	uint32_t free = plotter_free_slots(pl);
	struct err e;

	pl->st.free = free;
	pl->st.active = pl->njobs;
	if (pl->started)
		cluster_set_offer(pl->d->cluster, pl->d->cfg.cluster.plotter ?
		    CLUSTER_ROLE_PLOTTER : 0, free);
	if (free > 0 && pl->free_sub == NULL) {
		if ((pl->free_sub = cluster_subscribe(pl->d->cluster, CLUSTER_SUBJ_PLOTTER_FREE,
		    CLUSTER_QUEUE_PLOTTER, plotter_free_cb, pl, &e)) == NULL)
			log_warn("plotter: subscribe %s: %s", CLUSTER_SUBJ_PLOTTER_FREE, e.msg);
	} else if (free == 0 && pl->free_sub != NULL) {
		cluster_unsubscribe(pl->free_sub);
		pl->free_sub = NULL;
	}
}

static void
plotter_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	plotter_offer_update(arg);
}

static int
pow2(uint64_t v)
{
	return v != 0 && (v & (v - 1)) == 0;
}

static int
subject_ok(const char *s)
{
	return s[0] != '\0' && strlen(s) < CLUSTER_SUBJECT_MAX && strpbrk(s, " \t\r\n*>") == NULL;
}

/* plotter.free: where to send a sector, while a slot is free. */
static void
plotter_free_cb(void *arg, const struct cluster_msg *m)
{
	struct plotter *pl = arg;
	Farmd__PlotterOffer o = FARMD__PLOTTER_OFFER__INIT;
	uint8_t buf[CLUSTER_SUBJECT_MAX + CLUSTER_NODE_MAX + 32];
	uint32_t free = plotter_free_slots(pl);
	Farmd__PlotterAsk *ask;
	struct frame_alloc fa;
	struct err e;

	frame_alloc_init(&fa, 4 * m->len + 1024);
	if (m->len > 1024 || (ask = farmd__plotter_ask__unpack(&fa.pb, m->len, m->data)) == NULL) {
		cluster_note_malformed(pl->d->cluster, m->subject, "plotter ask does not unpack");
		return;
	}
	if (ask->version != CLUSTER_PROTO_VERSION || m->reply == NULL || !subject_ok(m->reply)) {
		farmd__plotter_ask__free_unpacked(ask, &fa.pb);
		cluster_note_malformed(pl->d->cluster, m->subject, "plotter ask of another version "
		    "or without a reply subject");
		return;
	}
	farmd__plotter_ask__free_unpacked(ask, &fa.pb);
	if (free == 0)
		return;                 /* the subscription ends at the next update */
	o.version = CLUSTER_PROTO_VERSION;
	o.node = (char *)cluster_node(pl->d->cluster);
	o.subject = pl->subject;
	o.free = free;
	if (farmd__plotter_offer__get_packed_size(&o) <= sizeof(buf) &&
	    cluster_publish(pl->d->cluster, m->reply, NULL, buf,
	    farmd__plotter_offer__pack(&o, buf), &e) < 0)
		log_debug("plotter: offer: %s", e.msg);
}

/* ---- a sector job arrives -------------------------------------------------------- */

/* Every field of a sector job, before anything is allocated for it. */
static int
plotter_check_job(const struct plotter *pl, const Farmd__SectorJob *sj, char *why, size_t n)
{
	uint8_t sid[HASH_LEN];

	if (sj->version != CLUSTER_PROTO_VERSION)
		return snprintf(why, n, "version %" PRIu32 ", not %d", sj->version,
		    CLUSTER_PROTO_VERSION), -1;
	if (!subject_ok(sj->reply) || strlen(sj->farmer) >= CLUSTER_NODE_MAX)
		return snprintf(why, n, "unusable reply subject or farmer name"), -1;
	if (sj->public_key_hash.len != HASH_LEN || sj->sector_id.len != HASH_LEN)
		return snprintf(why, n, "public_key_hash and sector_id must be 32 bytes"), -1;
	if (!pow2(sj->piece_size) || sj->piece_size < PLOTTER_PIECE_MIN ||
	    sj->piece_size > PLOTTER_PIECE_MAX || sj->pieces_in_sector == 0 ||
	    sj->pieces_in_sector > PLOTTER_PIECES_MAX)
		return snprintf(why, n, "geometry %" PRIu32 " pieces of %" PRIu32 " bytes is out "
		    "of bounds", sj->pieces_in_sector, sj->piece_size), -1;
	if (!pow2(sj->scrypt_n) || sj->scrypt_n < 2 || sj->scrypt_n > (1u << 20) ||
	    sj->scrypt_r < 1 || sj->scrypt_r > 32 || sj->scrypt_p < 1 || sj->scrypt_p > 16)
		return snprintf(why, n, "scrypt parameters out of bounds"), -1;
	if (!pow2(sj->chunk_bytes) || sj->chunk_bytes < 1024 || sj->chunk_bytes > RPLOT_CHUNK_MAX ||
	    sj->chunk_bytes + 1024 > cluster_max_payload(pl->d->cluster))
		return snprintf(why, n, "chunk_bytes %" PRIu32 " does not fit", sj->chunk_bytes), -1;
	if (sj->n_pieces != sj->pieces_in_sector)
		return snprintf(why, n, "%zu piece hashes for %" PRIu32 " pieces", sj->n_pieces,
		    sj->pieces_in_sector), -1;
	for (size_t i = 0; i < sj->n_pieces; i++)
		if (sj->pieces[i]->offset != i || sj->pieces[i]->hash.len != HASH_LEN)
			return snprintf(why, n, "piece %zu: offset %" PRIu32 " or hash length %zu",
			    i, sj->pieces[i]->offset, sj->pieces[i]->hash.len), -1;
	encode_v1_sector_id(sj->public_key_hash.data, sj->sector_index, sj->history_size, sid);
	if (memcmp(sid, sj->sector_id.data, HASH_LEN) != 0)
		return snprintf(why, n, "sector_id is not the one its inputs give"), -1;
	return 0;
}

static void pj_ping_cb(evutil_socket_t fd, short what, void *arg);
static const struct fsm_def pj_fsm;

static struct pjob *
pj_new(struct plotter *pl, const Farmd__SectorJob *sj)
{
	struct pjob *j = calloc(1, sizeof(*j));
	uint64_t batch = PLOTTER_BATCH_BYTES / sj->piece_size;

	if (j == NULL)
		return NULL;
	if (batch > sj->pieces_in_sector)
		batch = sj->pieces_in_sector;
	j->pl = pl;
	j->id = sj->job;
	snprintf(j->reply, sizeof(j->reply), "%s", sj->reply);
	snprintf(j->farmer, sizeof(j->farmer), "%s", sj->farmer);
	j->sector_index = sj->sector_index;
	memcpy(j->sector_id, sj->sector_id.data, HASH_LEN);
	j->scrypt = (struct encode_params){ sj->scrypt_n, sj->scrypt_r, sj->scrypt_p };
	j->piece_size = sj->piece_size;
	j->pieces = sj->pieces_in_sector;
	j->chunk_bytes = sj->chunk_bytes;
	j->batch_max = (uint32_t)batch;
	j->hashes = malloc((size_t)j->pieces * HASH_LEN);
	j->buf = malloc((size_t)batch * j->piece_size);
	j->parts = calloc(batch, sizeof(*j->parts));
	j->ping = event_new(pl->d->base, -1, EV_PERSIST, pj_ping_cb, j);
	if (j->hashes == NULL || j->buf == NULL || j->parts == NULL || j->ping == NULL) {
		free(j->hashes);
		free(j->buf);
		free(j->parts);
		if (j->ping != NULL)
			event_free(j->ping);
		free(j);
		return NULL;
	}
	for (uint32_t i = 0; i < j->pieces; i++)
		memcpy(j->hashes[i], sj->pieces[i]->hash.data, HASH_LEN);
	fsm_init(&j->m, &pj_fsm, PJ_FETCH);
	return j;
}

static void
plotter_answer(struct plotter *pl, const char *reply, const char *error, int busy)
{
	Farmd__SectorAccept a = FARMD__SECTOR_ACCEPT__INIT;
	uint8_t buf[ERR_MSG_MAX + 16];
	struct err e;

	a.version = CLUSTER_PROTO_VERSION;
	a.error = (char *)(error ? error : "");
	a.busy = busy;
	if (farmd__sector_accept__get_packed_size(&a) <= sizeof(buf))
		(void)cluster_publish(pl->d->cluster, reply, NULL, buf,
		    farmd__sector_accept__pack(&a, buf), &e);
}

/* farmd.v1.plotter.<node>.sector */
static void
plotter_sector_cb(void *arg, const struct cluster_msg *m)
{
	struct plotter *pl = arg;
	struct frame_alloc fa;
	Farmd__SectorJob *sj;
	char why[ERR_MSG_MAX];
	struct timeval tv = clock_tv(PLOTTER_PING_MS);
	struct pjob *j;

	if (m->reply == NULL || !subject_ok(m->reply)) {
		cluster_note_malformed(pl->d->cluster, m->subject, "sector job without a reply");
		return;
	}
	frame_alloc_init(&fa, 4 * m->len + 4096);
	if ((sj = farmd__sector_job__unpack(&fa.pb, m->len, m->data)) == NULL) {
		cluster_note_malformed(pl->d->cluster, m->subject, "sector job does not unpack");
		return;
	}
	if (plotter_check_job(pl, sj, why, sizeof(why)) < 0) {
		cluster_note_malformed(pl->d->cluster, m->subject, why);
		pl->st.refused++;
		plotter_answer(pl, m->reply, why, 0);
	} else if (plotter_free_slots(pl) == 0) {
		pl->st.refused++;
		plotter_answer(pl, m->reply, "no free encode worker", 1);
	} else if ((j = pj_new(pl, sj)) == NULL) {
		pl->st.refused++;
		plotter_answer(pl, m->reply, "out of memory", 1);
	} else {
#ifdef FAULT_INJECTION
		j->wrong = pl->wrong_piece;
		pl->wrong_piece = 0;
#endif
		TAILQ_INSERT_TAIL(&pl->jobs, j, link);
		pl->njobs++;
		pl->st.accepted++;
		plotter_answer(pl, m->reply, NULL, 0);
		log_info("plotter: sector %" PRIu32 " of %s accepted (%" PRIu32 " pieces of %"
		    PRIu32 " bytes)", j->sector_index, j->farmer, j->pieces, j->piece_size);
		event_add(j->ping, &tv);
		plotter_offer_update(pl);
		fsm_enter(&j->m, j, PJ_FETCH);
	}
	farmd__sector_job__free_unpacked(sj, &fa.pb);
}

/* ---- fetch: the batch's pieces ------------------------------------------------ */

static void
pj_piece_done(struct pj_part *t, const uint8_t *data, size_t len, const char *error)
{
	struct pjob *j = t->j;

	t->handle = 0;
	if (error != NULL)
		pj_fail(j, "piece at offset %" PRIu32 ": %s", j->batch_first + t->slot, error);
	else if (len != j->piece_size)
		pj_fail(j, "piece at offset %" PRIu32 ": %zu bytes, not %" PRIu32,
		    j->batch_first + t->slot, len, j->piece_size);
	else if (!j->failed)
		memcpy(j->buf + (uint64_t)t->slot * j->piece_size, data, len);
	pj_complete(j, PJ_ENCODE);
}

static void
pj_fetch_cb(void *arg, enum cluster_status st, uint8_t *data, size_t len,
    const char *node, const char *error)
{
	struct pj_part *t = arg;

	(void)node;
	if (st == CLUSTER_OK)
		t->j->pl->st.pieces_fetched++;
	pj_piece_done(t, st == CLUSTER_OK ? data : NULL, len, st == CLUSTER_OK ? NULL :
	    error ? error : "no peer has it");
	free(data);
}

/* The block store first; a piece this node lacks comes from peers. */
static void
pj_local_cb(void *arg, uint8_t *data, size_t len, enum block_status st, const char *error)
{
	struct pj_part *t = arg;
	struct pjob *j = t->j;

	(void)error;
	if (st == BLOCK_OK || j->failed || j->pl->stopping) {
		pj_piece_done(t, data, len, st == BLOCK_OK ? NULL : "not fetched");
		free(data);
		return;
	}
	free(data);
	t->handle = cluster_fetch_block(pj_cluster(j), j->hashes[j->batch_first + t->slot],
	    j->piece_size, pj_fetch_cb, t);
}

static int
pj_fetch(void *arg)
{
	struct pjob *j = arg;

	j->batch_n = j->pieces - j->batch_first;
	if (j->batch_n > j->batch_max)
		j->batch_n = j->batch_max;
	j->nparts = j->batch_n;
	j->pending = 1;
	for (uint32_t i = 0; i < j->batch_n; i++) {
		struct pj_part *t = &j->parts[i];

		*t = (struct pj_part){ j, i, 1, 0 };
		j->pending++;
		blockstore_verify(j->pl->d->blocks, j->hashes[j->batch_first + i], pj_local_cb, t);
	}
	pj_complete(j, PJ_ENCODE);
	return FSM_ASYNC;
}

/* ---- encode ------------------------------------------------------------------ */

static void
pj_encode_cb(uint64_t job_id, const Farmd__JobResult *res, const char *error, void *arg)
{
	struct pj_part *t = arg;
	struct pjob *j = t->j;
	const ProtobufCBinaryData *out;

	(void)job_id;
	t->handle = 0;
	if (error != NULL)
		pj_fail(j, "encode: %s", error);
	else if ((out = pool_encode_pieces(res, t->n, j->piece_size)) == NULL)
		pj_fail(j, "encode worker answered with the wrong pieces");
	else
		for (uint32_t i = 0; i < t->n; i++)
			memcpy(j->buf + (uint64_t)(t->slot + i) * j->piece_size, out[i].data,
			    j->piece_size);
	pj_complete(j, PJ_SEND);
}

static int
pj_encode(void *arg)
{
	struct pjob *j = arg;
	struct pool_job_opts opts = { 3, j->pl->d->cfg.plotting.retry_delay_ms, 0 };
	uint64_t frame_max = j->pl->d->cfg.daemon.max_frame;
	uint32_t per = PLOTTER_JOB_PIECES;
	ProtobufCBinaryData pieces[PLOTTER_JOB_PIECES];

	if ((uint64_t)per * j->piece_size + 4096 > frame_max)
		per = frame_max > 4096 + j->piece_size ?
		    (uint32_t)((frame_max - 4096) / j->piece_size) : 1;
	j->nparts = 0;
	j->pending = 1;
	for (uint32_t first = 0; first < j->batch_n && !j->failed; first += per) {
		struct pj_part *t = &j->parts[j->nparts];
		struct err e;

		*t = (struct pj_part){ j, first, j->batch_n - first < per ? j->batch_n - first : per,
			0 };
		for (uint32_t i = 0; i < t->n; i++)
			pieces[i] = (ProtobufCBinaryData){ j->piece_size,
				j->buf + (uint64_t)(first + i) * j->piece_size };
		t->handle = pool_submit_encode(j->pl->d->pool, j->sector_id, j->batch_first + first,
		    &j->scrypt, pieces, t->n, 0, &opts, pj_encode_cb, t, &e);
		if (t->handle == 0) {
			pj_fail(j, "encode: %s", e.msg);
			break;
		}
		j->nparts++;
		j->pending++;
	}
	pj_complete(j, PJ_SEND);
	return FSM_ASYNC;
}

/* ---- send: chunk by chunk, each after the last one's ack ----------------------- */

static void pj_ack_cb(void *arg, enum cluster_status st, const uint8_t *data, size_t len,
    const char *error);

static uint64_t
pj_batch_end(const struct pjob *j)
{
	return (uint64_t)(j->batch_first + j->batch_n) * j->piece_size;
}

/* The next chunk's length: chunk_bytes, or what is left of the batch. */
static uint64_t
pj_chunk_len(const struct pjob *j)
{
	uint64_t rest = pj_batch_end(j) - j->sent;

	return rest < j->chunk_bytes ? rest : j->chunk_bytes;
}

static int
pj_send_chunk(struct pjob *j)
{
	Farmd__SectorChunk c = FARMD__SECTOR_CHUNK__INIT;
	uint64_t start = (uint64_t)j->batch_first * j->piece_size, len = pj_chunk_len(j);
	uint8_t *msg;
	size_t n;

	c.version = CLUSTER_PROTO_VERSION;
	c.job = j->id;
	c.kind = FARMD__SECTOR_CHUNK__KIND__DATA;
	c.pos = j->sent;
	c.data = (ProtobufCBinaryData){ len, j->buf + (j->sent - start) };
	c.node = (char *)cluster_node(pj_cluster(j));
	n = farmd__sector_chunk__get_packed_size(&c);
	if ((msg = malloc(n)) == NULL) {
		snprintf(j->error, sizeof(j->error), "out of memory");
		return PJ_FAILED;
	}
	farmd__sector_chunk__pack(&c, msg);
	j->req = cluster_request(pj_cluster(j), j->reply, msg, n, PLOTTER_ACK_MS, pj_ack_cb, j);
	free(msg);
	return FSM_ASYNC;
}

static void
pj_ack_cb(void *arg, enum cluster_status st, const uint8_t *data, size_t len,
    const char *error)
{
	struct pjob *j = arg;
	uint64_t want = j->sent + pj_chunk_len(j);
	struct frame_alloc fa;
	Farmd__ChunkAck *a;

	j->req = 0;
	if (st != CLUSTER_OK) {
		snprintf(j->error, sizeof(j->error), "chunk at byte %" PRIu64 " to %s: %s", j->sent,
		    j->farmer, error ? error : "not acknowledged");
		fsm_enter(&j->m, j, PJ_FAILED);
		return;
	}
	frame_alloc_init(&fa, 4 * len + 1024);
	if ((a = farmd__chunk_ack__unpack(&fa.pb, len, data)) == NULL ||
	    a->version != CLUSTER_PROTO_VERSION || a->job != j->id || a->error[0] != '\0' ||
	    a->next != want) {
		snprintf(j->error, sizeof(j->error), "%s stopped the sector: %.200s", j->farmer,
		    a != NULL && a->error[0] ? a->error : "a malformed or wrong ack");
		if (a != NULL)
			farmd__chunk_ack__free_unpacked(a, &fa.pb);
		fsm_enter(&j->m, j, PJ_FAILED);
		return;
	}
	farmd__chunk_ack__free_unpacked(a, &fa.pb);
	j->pl->st.bytes_sent += want - j->sent;
	j->sent = want;
	if (j->sent < pj_batch_end(j)) {
		fsm_enter(&j->m, j, pj_send_chunk(j));
		return;
	}
	j->batch_first += j->batch_n;
	fsm_enter(&j->m, j, j->batch_first < j->pieces ? PJ_FETCH : PJ_DONE);
}

static int
pj_send(void *arg)
{
	struct pjob *j = arg;

#ifdef FAULT_INJECTION
	if (j->wrong)                   /* test hook: every piece altered */
		for (uint32_t i = 0; i < j->batch_n; i++)
			j->buf[(uint64_t)i * j->piece_size] ^= 0x5a;
#endif
	return pj_send_chunk(j);
}

static void
pj_ping_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pjob *j = arg;
	Farmd__SectorChunk c = FARMD__SECTOR_CHUNK__INIT;
	uint8_t buf[CLUSTER_NODE_MAX + 64];
	struct err e;

	(void)fd;
	(void)what;
	c.version = CLUSTER_PROTO_VERSION;
	c.job = j->id;
	c.kind = FARMD__SECTOR_CHUNK__KIND__PING;
	c.node = (char *)cluster_node(pj_cluster(j));
	if (farmd__sector_chunk__get_packed_size(&c) <= sizeof(buf))
		(void)cluster_publish(pj_cluster(j), j->reply, NULL, buf,
		    farmd__sector_chunk__pack(&c, buf), &e);
}

/* ---- the end ------------------------------------------------------------------ */

static void
pj_free(struct pjob *j)
{
	struct plotter *pl = j->pl;

	TAILQ_REMOVE(&pl->jobs, j, link);
	pl->njobs--;
	event_free(j->ping);
	free(j->hashes);
	free(j->buf);
	free(j->parts);
	free(j);
	plotter_offer_update(pl);
}

static int
pj_done(void *arg)
{
	struct pjob *j = arg;

	j->pl->st.done++;
	log_info("plotter: sector %" PRIu32 " of %s sent (%" PRIu64 " bytes)", j->sector_index,
	    j->farmer, j->sent);
	pj_free(j);
	return FSM_ASYNC;
}

static int
pj_failed(void *arg)
{
	struct pjob *j = arg;
	Farmd__SectorChunk c = FARMD__SECTOR_CHUNK__INIT;
	uint8_t buf[ERR_MSG_MAX + CLUSTER_NODE_MAX + 64];
	struct err e;

	j->pl->st.failed++;
	log_warn("plotter: sector %" PRIu32 " of %s: %s", j->sector_index, j->farmer, j->error);
	c.version = CLUSTER_PROTO_VERSION;
	c.job = j->id;
	c.kind = FARMD__SECTOR_CHUNK__KIND__ERROR;
	c.error = j->error;
	c.node = (char *)cluster_node(pj_cluster(j));
	if (farmd__sector_chunk__get_packed_size(&c) <= sizeof(buf))
		(void)cluster_publish(pj_cluster(j), j->reply, NULL, buf,
		    farmd__sector_chunk__pack(&c, buf), &e);
	pj_free(j);
	return FSM_ASYNC;
}

static void
pj_label(const void *obj, char *buf, size_t len)
{
	const struct pjob *j = obj;

	snprintf(buf, len, "plotter job %s/%" PRIu32, j->farmer, j->sector_index);
}

static const struct fsm_state pj_states[PJ_NSTATES] = {
	[PJ_FETCH] = { "fetch", pj_fetch },
	[PJ_ENCODE] = { "encode", pj_encode },
	[PJ_SEND] = { "send", pj_send },
	[PJ_DONE] = { "done", pj_done },
	[PJ_FAILED] = { "failed", pj_failed },
};

static const struct fsm_def pj_fsm = {
	.name = "plotter", .states = pj_states, .nstates = PJ_NSTATES,
	.error = PJ_FAILED, .final = PJ_DONE, .label = pj_label,
};

/* ---- the public side ------------------------------------------------------------ */

struct plotter *
plotter_new(struct farmd *d, struct err *e)
{
	struct plotter *pl = calloc(1, sizeof(*pl));

	if (pl == NULL || (pl->tick = event_new(d->base, -1, EV_PERSIST, plotter_tick_cb,
	    pl)) == NULL) {
		free(pl);
		err_set(e, "out of memory");
		return NULL;
	}
	pl->d = d;
	TAILQ_INIT(&pl->jobs);
	return pl;
}

int
plotter_start(struct plotter *pl, struct err *e)
{
	struct timeval tv = clock_tv(PLOTTER_TICK_MS);

	if (!cluster_enabled(pl->d->cluster))
		return 0;
	if (snprintf(pl->subject, sizeof(pl->subject), CLUSTER_SUBJ_PLOTTER_SECTOR_FMT,
	    cluster_node(pl->d->cluster)) >= (int)sizeof(pl->subject))
		return err_set(e, "plotter: node name too long for a subject");
	/* Always subscribed: a job that arrives while plotter is off is
	 * refused with a reason rather than left to time out. */
	if ((pl->sector_sub = cluster_subscribe(pl->d->cluster, pl->subject, NULL,
	    plotter_sector_cb, pl, e)) == NULL)
		return -1;
	pl->started = 1;
	event_add(pl->tick, &tv);
	plotter_offer_update(pl);
	return 0;
}

/* Ends a job at shutdown: what can be cancelled is; block reads finish
 * on the I/O pool and their completion reaches FAILED. */
static void
pj_cancel(struct pjob *j)
{
	uint32_t n = 0;

	pj_fail(j, "the plotter is shutting down");
	if (j->req != 0) {
		cluster_request_cancel(pj_cluster(j), j->req);
		j->req = 0;
		fsm_enter(&j->m, j, PJ_FAILED);
		return;
	}
	for (uint32_t i = 0; i < j->nparts; i++) {
		struct pj_part *t = &j->parts[i];

		if (t->handle == 0)
			continue;
		if (j->m.state == PJ_ENCODE)
			pool_cancel(j->pl->d->pool, t->handle);
		else
			cluster_fetch_cancel(pj_cluster(j), t->handle);
		t->handle = 0;
		n++;
	}
	/* Their callbacks will not come: count them done at once (the last
	 * completion frees j, so nothing of j is touched after it). */
	if (n > 0) {
		j->pending -= n - 1;
		pj_complete(j, PJ_FAILED);
	}
}

int
plotter_quiesce(struct plotter *pl)
{
	if (pl == NULL)
		return 1;
	if (!pl->stopping) {
		struct pjob *j, *jt;

		pl->stopping = 1;
		event_del(pl->tick);
		plotter_offer_update(pl);
		cluster_unsubscribe(pl->sector_sub);
		pl->sector_sub = NULL;
		for (j = TAILQ_FIRST(&pl->jobs); j != NULL; j = jt) {
			jt = TAILQ_NEXT(j, link);
			pj_cancel(j);
		}
	}
	return TAILQ_EMPTY(&pl->jobs);
}

void
plotter_free(struct plotter *pl)
{
	if (pl == NULL)
		return;
	pl->stopping = 1;
	cluster_unsubscribe(pl->free_sub);
	cluster_unsubscribe(pl->sector_sub);
	while (!TAILQ_EMPTY(&pl->jobs))
		pj_free(TAILQ_FIRST(&pl->jobs));
	event_free(pl->tick);
	free(pl);
}

void
plotter_stats(const struct plotter *pl, struct plotter_stats *s)
{
	*s = pl->st;
	s->free = plotter_free_slots(pl);
	s->active = pl->njobs;
}

json_t *
plotter_json(const struct plotter *pl)
{
	json_t *list = json_array();
	const struct pjob *j;

	TAILQ_FOREACH(j, &pl->jobs, link)
		json_array_append_new(list, json_pack("{s:s, s:I, s:s, s:I}", "farmer", j->farmer,
		    "sector", (json_int_t)j->sector_index, "state", pj_names[j->m.state],
		    "sent", (json_int_t)j->sent));
	return json_pack("{s:b, s:s, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:I}",
	    "enabled", pl->d->cfg.cluster.plotter, "subject", pl->subject,
	    "free", (json_int_t)plotter_free_slots(pl), "jobs", list,
	    "accepted", (json_int_t)pl->st.accepted, "refused", (json_int_t)pl->st.refused,
	    "done", (json_int_t)pl->st.done, "failed", (json_int_t)pl->st.failed,
	    "pieces_fetched", (json_int_t)pl->st.pieces_fetched,
	    "bytes_sent", (json_int_t)pl->st.bytes_sent);
}

#ifdef FAULT_INJECTION
int
plotter_arm_fault(struct plotter *pl, const char *fault)
{
	if (strcmp(fault, "wrong-piece") != 0)
		return -1;
	pl->wrong_piece = 1;
	return 0;
}
#endif
