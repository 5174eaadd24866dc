/*
 * cluster_stream.c: acknowledged chunked streams (cluster_stream.h).
 *
 * Invariants:
 *  - a receiver allocates its buffer once, from the total of the first
 *    chunk, after checking it against max_total; every later chunk must
 *    declare the same total, start at `next` and end within total, so the
 *    buffer is written in order, once, within bounds;
 *  - a receiver is pinned to the node of the first chunk or ping it
 *    accepts, and its data to the first chunk's ack subject: any other
 *    sender gets "busy" and nothing of its bytes is kept;
 *  - a sender has at most CLUSTER_STREAM_WINDOW chunks unacknowledged and
 *    fails when no ack moves it forward for CLUSTER_STREAM_ACK_MS;
 *  - every stream ends exactly once, through recv_end or send_end, which
 *    remove its route and timer before calling back.
 * NATS keeps order on one connection and drops nothing while connected,
 * so there is no retransmission: a lost connection fails the stream and
 * its owner asks again.
 */
#include "cluster_stream.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "cluster.pb-c.h"
#include "cluster_int.h"
#include "farmd.h"
#include "log.h"

struct srecv {
	struct cluster *c;
	uint64_t id;                    /* route id = handle */
	char inbox[CLUSTER_SUBJECT_MAX];
	char node[CLUSTER_NODE_MAX];    /* pinned sender node; "" = none yet */
	char sender[CLUSTER_SUBJECT_MAX];       /* pinned ack subject */
	uint8_t *buf;
	size_t total, next, max_total;
	bool started;                   /* first data chunk seen */
	enum cluster_status fail;       /* != OK: the timer reports this */
	uint64_t idle_ms;
	struct event *timer;
	cluster_stream_cb cb;
	void *arg;
	struct srecv *next_r;
};

struct ssend {
	struct cluster *c;
	uint64_t id;                    /* route id of the ack inbox = handle */
	char reply[CLUSTER_SUBJECT_MAX];
	char acks[CLUSTER_SUBJECT_MAX];
	uint8_t *data;
	size_t len, sent, acked, chunk;
	bool started;
	enum cluster_status fail;
	char why[200];
	struct event *timer;
	cluster_send_cb cb;
	void *arg;
	struct ssend *next_s;
};

struct cluster_stream_set {
	struct cluster *c;
	struct srecv *recvs;
	struct ssend *sends;
};

static void streams_stop(struct cluster *c);
static void streams_free(struct cluster *c);
static const struct cluster_part streams_part = { NULL, streams_stop, streams_free, NULL };

/* The set, made on first use (a node that never streams has none). */
static struct cluster_stream_set *
streams(struct cluster *c)
{
	if (c->streams == NULL && (c->streams = calloc(1, sizeof(*c->streams))) != NULL) {
		c->streams->c = c;
		cluster_add_part(c, &streams_part);
	}
	if (c->streams == NULL)
		abort();        /* a few bytes; farmd cannot run without them */
	return c->streams;
}

/* ---- receiving -------------------------------------------------------- */

static void
recv_end(struct srecv *r, enum cluster_status st, const char *error)
{
	struct cluster *c = r->c;
	cluster_stream_cb cb = r->cb;
	void *arg = r->arg;
	uint8_t *data = st == CLUSTER_OK ? r->buf : NULL;
	size_t len = r->total;
	char node[CLUSTER_NODE_MAX];

	for (struct srecv **pp = &streams(c)->recvs; *pp != NULL; pp = &(*pp)->next_r) {
		if (*pp == r) {
			*pp = r->next_r;
			break;
		}
	}
	cluster_route_del(c, r->id);
	event_free(r->timer);
	snprintf(node, sizeof(node), "%s", r->node);
	if (st != CLUSTER_OK)
		free(r->buf);
	free(r);
	if (st == CLUSTER_OK)
		c->st.answers++;
	else
		c->st.failures++;
	cb(arg, st, data, st == CLUSTER_OK ? len : 0, node, error);
}

static void
recv_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct srecv *r = arg;

	(void)fd;
	(void)what;
	if (r->fail == CLUSTER_UNAVAILABLE)
		recv_end(r, r->fail, "cluster not connected");
	else
		recv_end(r, CLUSTER_TIMEOUT, r->node[0] ? "the sender went silent" :
		    "no answer in time");
}

static void
recv_touch(struct srecv *r)
{
	struct timeval tv = clock_tv(r->idle_ms);

	evtimer_add(r->timer, &tv);
}

static void
recv_ack(struct srecv *r, const char *to, uint64_t next, const char *error)
{
	Farmd__StreamAck a = FARMD__STREAM_ACK__INIT;
	struct err e;

	a.version = CLUSTER_PROTO_VERSION;
	a.next = next;
	a.error = (char *)(error != NULL ? error : "");
	(void)cluster_publish_pb(r->c, to, NULL, &a.base, &e);
}

/* The checks of the invariants above; NULL when the chunk fits. */
static const char *
recv_check(struct srecv *r, const Farmd__StreamChunk *k)
{
	if (k->total > r->max_total)
		return "total larger than the receiver accepts";
	if (r->started && k->total != r->total)
		return "total changed between chunks";
	if (k->offset != r->next)
		return "chunk out of place";
	if (k->data.len > k->total - k->offset)
		return "chunk beyond the total";
	if (k->data.len == 0 && k->total != 0)
		return "empty chunk";
	return NULL;
}

static void
recv_chunk(struct srecv *r, const struct cluster_msg *m, const Farmd__StreamChunk *k)
{
	const char *bad;

	if (m->reply == NULL) {
		cluster_note_malformed(r->c, m->subject, "StreamChunk without an ack subject");
		return;
	}
	if (r->sender[0] != '\0' && strcmp(r->sender, m->reply) != 0) {
		recv_ack(r, m->reply, 0, "busy");
		return;
	}
	if ((bad = recv_check(r, k)) != NULL) {
		char why[160];

		snprintf(why, sizeof(why), "stream from %s: %s", r->node, bad);
		cluster_note_malformed(r->c, m->subject, why);
		recv_ack(r, m->reply, r->next, bad);
		recv_end(r, CLUSTER_BAD_ANSWER, why);
		return;
	}
	if (!r->started) {
		snprintf(r->sender, sizeof(r->sender), "%s", m->reply);
		r->total = (size_t)k->total;
		if ((r->buf = malloc(r->total + 1)) == NULL) {
			recv_ack(r, m->reply, 0, "out of memory");
			recv_end(r, CLUSTER_BAD_ANSWER, "out of memory");
			return;
		}
		r->started = true;
	}
	memcpy(r->buf + r->next, k->data.data, k->data.len);
	r->next += k->data.len;
	recv_ack(r, m->reply, r->next, NULL);
	if (r->next == r->total)
		recv_end(r, CLUSTER_OK, NULL);
	else
		recv_touch(r);
}

static void
recv_msg(void *arg, const struct cluster_msg *m)
{
	struct srecv *r = arg;
	struct cluster *c = r->c;
	struct frame_alloc fa;
	Farmd__StreamChunk *k;

	if (m->no_responders) {         /* no peer at all subscribes to the subject */
		recv_end(r, CLUSTER_TIMEOUT, "no peer listens");
		return;
	}
	k = (Farmd__StreamChunk *)cluster_unpack(c, &farmd__stream_chunk__descriptor, m,
	    c->max_payload + CLUSTER_CHUNK_OVERHEAD, &fa);
	if (k == NULL)
		return;
	if (strlen(k->node) >= CLUSTER_NODE_MAX) {
		cluster_note_malformed(c, m->subject, "StreamChunk: node name too long");
	} else if (r->node[0] != '\0' && strcmp(r->node, k->node) != 0) {
		if (m->reply != NULL)
			recv_ack(r, m->reply, 0, "busy");
	} else {
		snprintf(r->node, sizeof(r->node), "%s", k->node);
		if (k->error[0] != '\0') {
			char why[256];

			snprintf(why, sizeof(why), "%s: %.200s", k->node, k->error);
			recv_end(r, CLUSTER_REMOTE_ERROR, why);
		} else if (k->ping) {
			recv_touch(r);
		} else {
			recv_chunk(r, m, k);
		}
	}
	protobuf_c_message_free_unpacked(&k->base, &fa.pb);
}

uint64_t
cluster_stream_request(struct cluster *c, const char *subject, const uint8_t *req,
    size_t len, size_t max_total, uint64_t first_ms, uint64_t idle_ms,
    cluster_stream_cb cb, void *arg)
{
	struct srecv *r = calloc(1, sizeof(*r));
	struct timeval tv = clock_tv(first_ms);
	struct err e;

	if (r == NULL || (r->timer = evtimer_new(c->d->base, recv_timeout, r)) == NULL) {
		free(r);
		return 0;
	}
	r->c = c;
	r->max_total = max_total;
	r->idle_ms = idle_ms;
	r->cb = cb;
	r->arg = arg;
	c->st.requests++;
	if ((r->id = cluster_route_add(c, recv_msg, r, r->inbox)) == 0 ||
	    cluster_publish(c, subject, r->inbox, req, len, &e) < 0) {
		r->fail = CLUSTER_UNAVAILABLE;
		tv = clock_tv(0);
	}
	r->next_r = streams(c)->recvs;
	streams(c)->recvs = r;
	if (r->id == 0)
		r->id = cluster_next_id(c);
	evtimer_add(r->timer, &tv);
	return r->id;
}

void
cluster_stream_cancel(struct cluster *c, uint64_t handle)
{
	if (c->streams == NULL)
		return;
	for (struct srecv **pp = &c->streams->recvs; *pp != NULL; pp = &(*pp)->next_r) {
		struct srecv *r = *pp;

		if (r->id == handle) {
			*pp = r->next_r;
			cluster_route_del(c, r->id);
			event_free(r->timer);
			free(r->buf);
			free(r);
			return;
		}
	}
}

/* ---- sending ---------------------------------------------------------- */

static void
send_end(struct ssend *s, enum cluster_status st, const char *error)
{
	struct cluster *c = s->c;
	cluster_send_cb cb = s->cb;
	void *arg = s->arg;
	char why[256];

	snprintf(why, sizeof(why), "%s", error != NULL ? error : "");
	for (struct ssend **pp = &streams(c)->sends; *pp != NULL; pp = &(*pp)->next_s) {
		if (*pp == s) {
			*pp = s->next_s;
			break;
		}
	}
	cluster_route_del(c, s->id);
	event_free(s->timer);
	free(s->data);
	free(s);
	if (cb != NULL)
		cb(arg, st, st == CLUSTER_OK ? NULL : why);
}

static void
send_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct ssend *s = arg;

	(void)fd;
	(void)what;
	if (s->fail != CLUSTER_OK)
		send_end(s, s->fail, s->why);
	else
		send_end(s, CLUSTER_TIMEOUT, "the receiver stopped acknowledging");
}

static void
send_touch(struct ssend *s)
{
	struct timeval tv = clock_tv(CLUSTER_STREAM_ACK_MS);

	evtimer_add(s->timer, &tv);
}

/* Sends chunks while the window has room. -1 when publishing failed (the
 * stream is then ended). */
static int
send_pump(struct ssend *s)
{
	while ((s->sent < s->len || !s->started) && s->sent - s->acked < CLUSTER_STREAM_WINDOW * s->chunk) {
		Farmd__StreamChunk k = FARMD__STREAM_CHUNK__INIT;
		size_t n = s->len - s->sent < s->chunk ? s->len - s->sent : s->chunk;
		struct err e;

		k.version = CLUSTER_PROTO_VERSION;
		k.node = s->c->node;
		k.total = s->len;
		k.offset = s->sent;
		k.data.data = s->data + s->sent;
		k.data.len = n;
		if (cluster_publish_pb(s->c, s->reply, s->acks, &k.base, &e) < 0) {
			send_end(s, CLUSTER_UNAVAILABLE, e.msg);
			return -1;
		}
		s->sent += n;
		s->started = true;
	}
	return 0;
}

static void
send_ack(void *arg, const struct cluster_msg *m)
{
	struct ssend *s = arg;
	struct frame_alloc fa;
	Farmd__StreamAck *a;
	char why[256];

	if (m->no_responders) {         /* the receiver's inbox is gone */
		send_end(s, CLUSTER_TIMEOUT, "the receiver is gone");
		return;
	}
	a = (Farmd__StreamAck *)cluster_unpack(s->c, &farmd__stream_ack__descriptor, m,
	    CLUSTER_CTRL_MAX, &fa);
	if (a == NULL)
		return;
	if (a->error[0] != '\0') {
		snprintf(why, sizeof(why), "the receiver said: %.200s", a->error);
		protobuf_c_message_free_unpacked(&a->base, &fa.pb);
		send_end(s, CLUSTER_REMOTE_ERROR, why);
		return;
	}
	if (a->next > s->acked && a->next <= s->sent) {
		s->acked = (size_t)a->next;
		send_touch(s);
	}
	protobuf_c_message_free_unpacked(&a->base, &fa.pb);
	if (s->acked == s->len)
		send_end(s, CLUSTER_OK, NULL);
	else
		(void)send_pump(s);
}

uint64_t
cluster_stream_send(struct cluster *c, const char *reply, uint8_t *data, size_t len,
    cluster_send_cb cb, void *arg)
{
	struct ssend *s = calloc(1, sizeof(*s));
	struct timeval now = clock_tv(0);

	if (s == NULL || (s->timer = evtimer_new(c->d->base, send_timeout, s)) == NULL) {
		free(s);
		free(data);
		return 0;
	}
	s->c = c;
	s->data = data;
	s->len = len;
	s->cb = cb;
	s->arg = arg;
	snprintf(s->reply, sizeof(s->reply), "%s", reply);
	s->chunk = c->max_payload > 2 * CLUSTER_CHUNK_OVERHEAD ?
	    c->max_payload - CLUSTER_CHUNK_OVERHEAD : c->max_payload / 2;
	s->next_s = streams(c)->sends;
	streams(c)->sends = s;
	if (c->state != CLUSTER_CONNECTED || (s->id = cluster_route_add(c, send_ack, s, s->acks)) == 0) {
		s->fail = CLUSTER_UNAVAILABLE;
		snprintf(s->why, sizeof(s->why), "cluster not connected");
		s->id = s->id != 0 ? s->id : cluster_next_id(c);
		evtimer_add(s->timer, &now);
		return s->id;
	}
	send_touch(s);
	if (send_pump(s) < 0)
		return 0;
	return s->id;
}

void
cluster_stream_send_cancel(struct cluster *c, uint64_t handle)
{
	if (c->streams == NULL)
		return;
	for (struct ssend *s = c->streams->sends; s != NULL; s = s->next_s) {
		if (s->id == handle) {
			s->cb = NULL;
			send_end(s, CLUSTER_UNAVAILABLE, "cancelled");
			return;
		}
	}
}

static int
stream_control(struct cluster *c, const char *reply, bool ping, const char *why,
    struct err *e)
{
	Farmd__StreamChunk k = FARMD__STREAM_CHUNK__INIT;
	char text[201];

	snprintf(text, sizeof(text), "%s", why != NULL ? why : "");
	k.version = CLUSTER_PROTO_VERSION;
	k.node = c->node;
	k.ping = ping;
	k.error = text;
	return cluster_publish_pb(c, reply, NULL, &k.base, e);
}

int
cluster_stream_ping(struct cluster *c, const char *reply, struct err *e)
{
	return stream_control(c, reply, true, NULL, e);
}

int
cluster_stream_error(struct cluster *c, const char *reply, const char *why, struct err *e)
{
	return stream_control(c, reply, false, why[0] != '\0' ? why : "error", e);
}

/* ---- the set ---------------------------------------------------------- */

/* cluster_quiesce: every stream ends now, its owner called back (on the
 * loop) with CLUSTER_UNAVAILABLE. */
static void
streams_stop(struct cluster *c)
{
	struct cluster_stream_set *s = c->streams;

	while (s->recvs != NULL)
		recv_end(s->recvs, CLUSTER_UNAVAILABLE, "farmd is stopping");
	while (s->sends != NULL)
		send_end(s->sends, CLUSTER_UNAVAILABLE, "farmd is stopping");
}

static void
streams_free(struct cluster *c)
{
	struct cluster_stream_set *s = c->streams;

	while (s->recvs != NULL)
		cluster_stream_cancel(c, s->recvs->id);
	while (s->sends != NULL)
		cluster_stream_send_cancel(c, s->sends->id);
	free(s);
	c->streams = NULL;
}
