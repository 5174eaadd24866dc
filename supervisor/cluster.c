/*
 * cluster.c: the NATS connection on farmd's loop (cluster.h).
 *
 * Threads.  cnats' libevent adapter makes the loop do the connection's
 * reads and writes, but cnats still calls message handlers from its
 * delivery thread and connection events (disconnected, reconnected,
 * closed) from its own callback thread.  Those handlers do one thing:
 * append an item to q_head under q_mu and bump an eventfd; the loop's
 * q_ev drains the queue and dispatches, on the loop.  We chose this over
 * natsSubscription_NextMsg polled from a timer: a poll adds up to its
 * period to every hop of a stream (a 2 MiB block is 3 hops, gap repair is
 * thousands), and the queue costs one eventfd write per burst (the fd is
 * bumped only when the queue was empty).  Global message delivery with
 * one thread keeps cnats at a fixed two threads however many
 * subscriptions exist.  Publishes are flushed by the loop itself
 * (natsOptions_SetSendAsap: the write event is armed at once) rather than
 * by cnats' flusher thread, which waits 1 ms after a publish and is one
 * more thread that each reconnect stops and starts again.
 *
 * Reconnects.  cnats' reconnect thread finds a server that is back, but
 * with an event loop cnats keeps the connection's protocol parser across
 * reconnects (its own read thread makes a new one per socket; the
 * event-loop read path never does).  A server that died in the middle of
 * a message to us leaves that parser inside the message, and the new
 * socket's bytes are then taken for the rest of it: up to max_payload of
 * everything the server sends (announcements, answers, PONGs) is lost,
 * and the node hears nothing until the PINGs find the connection stale.
 * So a reconnect is taken as word that the server is back and nothing
 * more: the connection is replaced at once by a fresh one (redial_cb),
 * which starts with a fresh parser.  Every queued item carries its
 * connection; those of a connection already replaced are dropped (a
 * message of the old one must not reach a sid the new one reuses).
 *
 * Replies.  One wildcard subscription "<inbox>.*" carries every answer,
 * chunk and ack addressed to this node; the last token is a route id
 * (cluster_route_add), looked up on the loop.  An id no longer routed
 * (a request that timed out) drops the message.
 */
#include "cluster_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <nats/adapters/libevent.h>

#include "clock.h"
#include "farmd.h"
#include "log.h"

#define CLUSTER_RECONNECT_WAIT_MS 1000  /* a restarted server is found within ~1 s */
#define CLUSTER_CONNECT_TIMEOUT_MS 2000
#define CLUSTER_MALFORMED_LOG_MS 10000
#define CLUSTER_REDIAL_MS 2000          /* after cnats gave a connection up (auth refused) */
/* Liveness: cnats PINGs the server every CLUSTER_PING_MS and counts the
 * connection stale (and reconnects) when more than CLUSTER_PINGS_OUT go
 * unanswered, about 20 s.  cnats' default (2 min, 2 out) leaves a hung
 * server, or a path that carries nothing in one direction, "connected"
 * for 4 min or more.  A PING that cannot be written or a PONG that is
 * never read ends such a connection either way. */
#define CLUSTER_PING_MS 5000
#define CLUSTER_PINGS_OUT 3

enum qkind { QI_MSG, QI_CONNECTED, QI_RECONNECTED, QI_DISCONNECTED, QI_CLOSED };

struct cluster_qitem {
	enum qkind kind;
	int64_t sid;                    /* QI_MSG: the cnats subscription id */
	natsMsg *msg;
	natsConnection *nc;             /* whose (compared, never dereferenced) */
	struct cluster_qitem *next;
};

struct cluster_route {
	uint64_t id;
	cluster_route_cb cb;
	void *arg;
	struct cluster_route *next;
};

/* A request waiting for its first answer. */
struct creq {
	struct cluster *c;
	uint64_t id;                    /* its route id too */
	struct event *timer;
	cluster_reply_cb cb;
	void *arg;
	bool unavailable;               /* could not start: the timer reports it */
};


static const char *const state_names[] = {
	[CLUSTER_DISABLED] = "disabled", [CLUSTER_CONNECTING] = "connecting",
	[CLUSTER_CONNECTED] = "connected", [CLUSTER_RECONNECTING] = "reconnecting",
	[CLUSTER_CLOSED] = "closed",
};

const char *
cluster_state_name(enum cluster_state st)
{
	return state_names[st];
}

void
cluster_preinit(void)
{
	natsLibevent_Init();
}

uint64_t
cluster_next_id(struct cluster *c)
{
	return ++c->next_id;
}

/* ---- hand-off from cnats' threads ------------------------------------ */

static void
q_push(struct cluster *c, enum qkind kind, int64_t sid, natsMsg *msg, natsConnection *nc)
{
	struct cluster_qitem *it = calloc(1, sizeof(*it));
	uint64_t one = 1;
	bool wake;

	if (it == NULL) {
		if (msg != NULL)
			natsMsg_Destroy(msg);
		return;
	}
	it->kind = kind;
	it->sid = sid;
	it->msg = msg;
	it->nc = nc;
	pthread_mutex_lock(&c->q_mu);
	wake = c->q_head == NULL;
	if (c->q_tail != NULL)
		c->q_tail->next = it;
	else
		c->q_head = it;
	c->q_tail = it;
	pthread_mutex_unlock(&c->q_mu);
	if (wake && write(c->q_fd, &one, sizeof(one)) < 0)
		(void)0;        /* the counter is already non-zero: the loop will look */
}

static void
on_nats_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
	(void)nc;
	q_push(closure, QI_MSG, natsSubscription_GetID(sub), msg, nc);
}

/* A new connection's first connect (retried in the background). */
static void
on_nats_connected(natsConnection *nc, void *closure)
{
	q_push(closure, QI_CONNECTED, 0, NULL, nc);
}

/* cnats reconnected a connection that was lost: replaced (file comment). */
static void
on_nats_reconnected(natsConnection *nc, void *closure)
{
	q_push(closure, QI_RECONNECTED, 0, NULL, nc);
}

static void
on_nats_disconnected(natsConnection *nc, void *closure)
{
	q_push(closure, QI_DISCONNECTED, 0, NULL, nc);
}

static void
on_nats_closed(natsConnection *nc, void *closure)
{
	q_push(closure, QI_CLOSED, 0, NULL, nc);
}

/* ---- dispatch on the loop -------------------------------------------- */

static struct cluster_route *
route_find(struct cluster *c, uint64_t id)
{
	for (struct cluster_route *r = c->routes; r != NULL; r = r->next)
		if (r->id == id)
			return r;
	return NULL;
}

/* "<inbox>.<id>" → the route's callback; anything else is dropped. */
static void
inbox_msg(void *arg, const struct cluster_msg *m)
{
	struct cluster *c = arg;
	size_t n = strlen(c->inbox);
	struct cluster_route *r;
	char *end;
	uint64_t id;

	if (strncmp(m->subject, c->inbox, n) != 0 || m->subject[n] != '.')
		return;
	errno = 0;
	id = strtoull(m->subject + n + 1, &end, 10);
	if (errno != 0 || *end != '\0' || (r = route_find(c, id)) == NULL)
		return;
	r->cb(r->arg, m);
}

static void
dispatch_msg(struct cluster *c, int64_t sid, natsMsg *nm)
{
	struct cluster_msg m = {
		natsMsg_GetSubject(nm), natsMsg_GetReply(nm),
		(const uint8_t *)natsMsg_GetData(nm), (size_t)natsMsg_GetDataLength(nm),
		natsMsg_IsNoResponders(nm),
	};

	if (m.reply != NULL && m.reply[0] == '\0')
		m.reply = NULL;
	c->st.bytes_received += m.len;
	for (struct cluster_sub *s = c->subs; s != NULL; s = s->next) {
		if ((int64_t)s->id == sid) {
			s->cb(s->arg, &m);
			return;
		}
	}
}

static void sub_attach(struct cluster *c, struct cluster_sub *s);

static void
set_state(struct cluster *c, enum cluster_state st)
{
	if (c->state == st || c->state == CLUSTER_CLOSED)
		return;
	if (st == CLUSTER_CONNECTED) {
		int64_t mp = natsConnection_GetMaxPayload(c->nc);

		c->max_payload = mp > 0 ? (uint64_t)mp : CLUSTER_DEFAULT_PAYLOAD;
		if (c->state == CLUSTER_RECONNECTING)
			c->st.reconnects++;
		log_info("cluster: connected to %s as node %s (max_payload %" PRIu64 " bytes)",
		    c->d->cfg.cluster.nats, c->node, c->max_payload);
	} else if (st == CLUSTER_RECONNECTING) {
		log_warn("cluster: lost the NATS server; reconnecting (farmd goes on alone)");
	}
	c->state = st;
	/* A subscription cnats refused while the server was away (sub_attach
	 * left it without a handle) is made now, not only after a redial:
	 * cnats resends only the ones it holds. */
	for (struct cluster_sub *s = c->subs; st == CLUSTER_CONNECTED && s != NULL; s = s->next)
		if (s->ns == NULL)
			sub_attach(c, s);
	for (int i = 0; st == CLUSTER_CONNECTED && i < c->nparts; i++)
		if (c->parts[i]->connected != NULL)
			c->parts[i]->connected(c);
}

void
cluster_reload(struct cluster *c)
{
	for (int i = 0; i < c->nparts; i++)
		if (c->parts[i]->reload != NULL)
			c->parts[i]->reload(c);
}

void
cluster_add_part(struct cluster *c, const struct cluster_part *part)
{
	if (c->nparts < CLUSTER_MAX_PARTS)
		c->parts[c->nparts++] = part;
}

/* cnats closes a connection for good on some errors (the server refused
 * our credentials); unless we are stopping, a new one is made after
 * CLUSTER_REDIAL_MS, forever, like a reconnect. */
static void
closed(struct cluster *c)
{
	struct timeval tv = clock_tv(CLUSTER_REDIAL_MS);
	const char *why = "";

	if (c->stopping) {
		set_state(c, CLUSTER_CLOSED);
		return;
	}
	if (c->nc != NULL)
		natsConnection_GetLastError(c->nc, &why);
	if (c->redials++ % 30 == 0)
		log_warn("cluster: the connection to %s was closed (%s); trying a new one every "
		    "%d s", c->d->cfg.cluster.nats, why != NULL && why[0] ? why : "no reason given",
		    CLUSTER_REDIAL_MS / 1000);
	if (c->state == CLUSTER_CONNECTED)
		c->state = CLUSTER_RECONNECTING;
	evtimer_add(c->redial, &tv);
}

/* The whole queue, taken from cnats' threads. */
static struct cluster_qitem *
q_take(struct cluster *c)
{
	struct cluster_qitem *it;

	pthread_mutex_lock(&c->q_mu);
	it = c->q_head;
	c->q_head = c->q_tail = NULL;
	pthread_mutex_unlock(&c->q_mu);
	return it;
}

/* lib: the NATS library is still open (nats_CloseAndWait not called). */
static void
q_item_free(struct cluster_qitem *it, bool lib)
{
	if (it->msg != NULL && lib)
		natsMsg_Destroy(it->msg);
	free(it);
}

static void
q_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct cluster *c = arg;
	struct cluster_qitem *it, *next;
	uint64_t v;

	(void)what;
	if (read(fd, &v, sizeof(v)) < 0)
		(void)0;        /* EAGAIN: another pass took it */
	for (it = q_take(c); it != NULL; it = next) {
		next = it->next;
		if (it->nc != c->nc) {  /* from a connection already replaced */
			q_item_free(it, true);
			continue;
		}
		switch (it->kind) {
		case QI_MSG:
			if (c->state != CLUSTER_CLOSED)
				dispatch_msg(c, it->sid, it->msg);
			break;
		case QI_CONNECTED:
			set_state(c, CLUSTER_CONNECTED);
			break;
		case QI_RECONNECTED:
			if (!c->stopping) {
				struct timeval now = clock_tv(0);

				log_info("cluster: %s is back; replacing the connection",
				    c->d->cfg.cluster.nats);
				evtimer_add(c->redial, &now);
			}
			break;
		case QI_DISCONNECTED:
			set_state(c, CLUSTER_RECONNECTING);
			break;
		case QI_CLOSED:
			closed(c);
			break;
		}
		q_item_free(it, true);
	}
}

/* ---- deferred calls --------------------------------------------------- */

static void
defer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct cdefer *df = arg, **pp;

	(void)fd;
	(void)what;
	for (pp = &df->c->defers; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == df) {
			*pp = df->next;
			break;
		}
	}
	event_free(df->ev);
	df->fn(df->arg);
	free(df);
}

void
cluster_defer(struct cluster *c, void (*fn)(void *arg), void *arg)
{
	struct cdefer *df = calloc(1, sizeof(*df));

	if (df == NULL || (df->ev = event_new(c->d->base, -1, 0, defer_cb, df)) == NULL) {
		free(df);
		fn(arg);        /* out of memory: now rather than never */
		return;
	}
	df->fn = fn;
	df->arg = arg;
	df->c = c;
	df->next = c->defers;
	c->defers = df;
	event_active(df->ev, EV_TIMEOUT, 0);
}

/* ---- routes, subscriptions, publishing -------------------------------- */

void
cluster_new_inbox(struct cluster *c, char out[CLUSTER_SUBJECT_MAX])
{
	snprintf(out, CLUSTER_SUBJECT_MAX, "%s.%" PRIu64, c->inbox, cluster_next_id(c));
}

uint64_t
cluster_route_add(struct cluster *c, cluster_route_cb cb, void *arg,
    char subject[CLUSTER_SUBJECT_MAX])
{
	struct cluster_route *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return 0;
	r->id = cluster_next_id(c);
	r->cb = cb;
	r->arg = arg;
	r->next = c->routes;
	c->routes = r;
	snprintf(subject, CLUSTER_SUBJECT_MAX, "%s.%" PRIu64, c->inbox, r->id);
	return r->id;
}

void
cluster_route_del(struct cluster *c, uint64_t id)
{
	for (struct cluster_route **pp = &c->routes; *pp != NULL; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			struct cluster_route *r = *pp;

			*pp = r->next;
			free(r);
			return;
		}
	}
}

static int
unavailable(const struct cluster *c, struct err *e)
{
	if (c->state == CLUSTER_DISABLED)
		return err_set(e, "cluster disabled ([cluster] nats is empty)");
	if (c->stopping)
		return err_set(e, "cluster: farmd is stopping");
	return err_set(e, "cluster: not connected to %s (%s)", c->d->cfg.cluster.nats,
	    cluster_state_name(c->state));
}

/* Subscribes s on the current connection; a failure leaves it detached
 * until the next connection (closed() → redial). */
static void
sub_attach(struct cluster *c, struct cluster_sub *s)
{
	natsStatus ns;

	if (c->nc == NULL)
		return;
	ns = s->queue[0] != '\0' ? natsConnection_QueueSubscribe(&s->ns, c->nc, s->subject,
	    s->queue, on_nats_msg, c) : natsConnection_Subscribe(&s->ns, c->nc, s->subject,
	    on_nats_msg, c);
	if (ns != NATS_OK) {
		log_debug("cluster: subscribe %s: %s (again with the next connection)", s->subject,
		    natsStatus_GetText(ns));
		s->ns = NULL;
		return;
	}
	/* Generous: a burst (1,000 garbage messages, a window of chunks) is
	 * queued, not dropped; each message is at most max_payload. */
	natsSubscription_SetPendingLimits(s->ns, 65536, 256 * 1024 * 1024);
	s->id = (uint64_t)natsSubscription_GetID(s->ns);
}

static void
sub_detach(struct cluster_sub *s)
{
	if (s->ns != NULL) {
		natsSubscription_Unsubscribe(s->ns);
		natsSubscription_Destroy(s->ns);
		s->ns = NULL;
	}
	s->id = 0;
}

struct cluster_sub *
cluster_subscribe(struct cluster *c, const char *subject, const char *queue,
    cluster_msg_cb cb, void *arg, struct err *e)
{
	struct cluster_sub *s;

	if (c->state == CLUSTER_DISABLED || c->stopping) {
		unavailable(c, e);
		return NULL;
	}
	if (strlen(subject) >= sizeof(s->subject) || (queue != NULL && strlen(queue) >= sizeof(s->queue))) {
		err_set(e, "cluster: subject or queue too long: %s", subject);
		return NULL;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	s->c = c;
	snprintf(s->subject, sizeof(s->subject), "%s", subject);
	snprintf(s->queue, sizeof(s->queue), "%s", queue != NULL ? queue : "");
	s->cb = cb;
	s->arg = arg;
	sub_attach(c, s);
	s->next = c->subs;
	c->subs = s;
	return s;
}

/* The redial: every subscription moves to a new connection.  What is still
 * queued from the old one is dropped when the queue is drained (its items
 * name their connection), so no message reaches a sid the new one reuses. */
static void
redial_cb(evutil_socket_t fd, short what, void *arg)
{
	struct cluster *c = arg;
	natsStatus st;

	(void)fd;
	(void)what;
	if (c->stopping)
		return;
	for (struct cluster_sub *s = c->subs; s != NULL; s = s->next)
		sub_detach(s);
	natsConnection_Destroy(c->nc);
	c->nc = NULL;
	st = natsConnection_Connect(&c->nc, c->opts);
	if (st != NATS_OK && st != NATS_NOT_YET_CONNECTED) {
		c->nc = NULL;
		closed(c);
		return;
	}
	for (struct cluster_sub *s = c->subs; s != NULL; s = s->next)
		sub_attach(c, s);
	if (st == NATS_OK)
		set_state(c, CLUSTER_CONNECTED);
}

void
cluster_unsubscribe(struct cluster_sub *s)
{
	if (s == NULL)
		return;
	for (struct cluster_sub **pp = &s->c->subs; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	sub_detach(s);
	free(s);
}

int
cluster_publish(struct cluster *c, const char *subject, const char *reply,
    const uint8_t *data, size_t len, struct err *e)
{
	natsStatus ns;

	if (c->state != CLUSTER_CONNECTED)
		return unavailable(c, e);
	if (len > c->max_payload)
		return err_set(e, "cluster: %s: %zu bytes is more than the server's max_payload "
		    "(%" PRIu64 ")", subject, len, c->max_payload);
	ns = reply != NULL ? natsConnection_PublishRequest(c->nc, subject, reply, data, (int)len) :
	    natsConnection_Publish(c->nc, subject, data, (int)len);
	if (ns != NATS_OK)
		return err_set(e, "cluster: publish %s: %s", subject, natsStatus_GetText(ns));
	c->st.bytes_sent += len;
	return 0;
}

int
cluster_publish_pb(struct cluster *c, const char *subject, const char *reply,
    const ProtobufCMessage *msg, struct err *e)
{
	size_t n = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(n + 1);
	int rc;

	if (buf == NULL)
		return err_set(e, "out of memory");
	protobuf_c_message_pack(msg, buf);
	rc = cluster_publish(c, subject, reply, buf, n, e);
	free(buf);
	return rc;
}

ProtobufCMessage *
cluster_unpack(struct cluster *c, const ProtobufCMessageDescriptor *desc,
    const struct cluster_msg *m, size_t max, struct frame_alloc *fa)
{
	const ProtobufCFieldDescriptor *vf = protobuf_c_message_descriptor_get_field(desc, 1);
	ProtobufCMessage *msg;
	uint32_t version;
	struct err e;

	if (m->len > max) {
		err_set(&e, "%zu bytes, more than a %s may be (%zu)", m->len, desc->short_name, max);
		goto bad;
	}
	if ((msg = frame_unpack(desc, m->data, m->len, fa, &e)) == NULL)
		goto bad;
	memcpy(&version, (const char *)msg + vf->offset, sizeof(version));
	if (version != CLUSTER_PROTO_VERSION) {
		err_set(&e, "%s version %" PRIu32 " (this farmd speaks %d)", desc->short_name,
		    version, CLUSTER_PROTO_VERSION);
		protobuf_c_message_free_unpacked(msg, &fa->pb);
		goto bad;
	}
	return msg;
bad:
	cluster_note_malformed(c, m->subject, e.msg);
	return NULL;
}

void
cluster_note_malformed(struct cluster *c, const char *subject, const char *why)
{
	uint64_t now = clock_mono_ms();

	c->st.malformed++;
	if (c->malformed_logged_ms == 0 || now - c->malformed_logged_ms >= CLUSTER_MALFORMED_LOG_MS) {
		c->malformed_logged_ms = now;
		log_warn("cluster: dropped a malformed message on %s: %s (%" PRIu64 " so far; "
		    "logged at most every 10 s)", subject, why, c->st.malformed);
	}
}

void
cluster_count(struct cluster *c, uint64_t sent, uint64_t received)
{
	c->st.bytes_sent += sent;
	c->st.bytes_received += received;
}

/* ---- requests ---------------------------------------------------------- */

static void
creq_end(struct creq *q)
{
	cluster_route_del(q->c, q->id);
	event_free(q->timer);
	free(q);
}

static void
creq_answer(void *arg, const struct cluster_msg *m)
{
	struct creq *q = arg;
	cluster_reply_cb cb = q->cb;
	void *cbarg = q->arg;

	if (m->no_responders) {
		q->c->st.failures++;
		creq_end(q);
		cb(cbarg, CLUSTER_TIMEOUT, NULL, 0, "no node listens on that subject");
		return;
	}
	q->c->st.answers++;
	creq_end(q);
	cb(cbarg, CLUSTER_OK, m->data, m->len, NULL);
}

static void
creq_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct creq *q = arg;
	cluster_reply_cb cb = q->cb;
	void *cbarg = q->arg;
	bool unavail = q->unavailable;

	(void)fd;
	(void)what;
	q->c->st.failures++;
	creq_end(q);
	if (unavail)
		cb(cbarg, CLUSTER_UNAVAILABLE, NULL, 0, "cluster not connected");
	else
		cb(cbarg, CLUSTER_TIMEOUT, NULL, 0, "no answer in time");
}

uint64_t
cluster_request(struct cluster *c, const char *subject, const uint8_t *data,
    size_t len, uint64_t timeout_ms, cluster_reply_cb cb, void *arg)
{
	char inbox[CLUSTER_SUBJECT_MAX];
	struct creq *q = calloc(1, sizeof(*q));
	struct timeval tv = clock_tv(timeout_ms);
	struct err e;

	if (q == NULL || (q->timer = evtimer_new(c->d->base, creq_timeout, q)) == NULL) {
		free(q);
		return 0;
	}
	q->c = c;
	q->cb = cb;
	q->arg = arg;
	if ((q->id = cluster_route_add(c, creq_answer, q, inbox)) == 0 ||
	    cluster_publish(c, subject, inbox, data, len, &e) < 0) {
		/* Fails from the loop, as the header says, with the timer at 0. */
		q->unavailable = true;
		tv = clock_tv(0);
	}
	c->st.requests++;
	evtimer_add(q->timer, &tv);
	return q->id;
}

void
cluster_request_cancel(struct cluster *c, uint64_t handle)
{
	struct cluster_route *r = route_find(c, handle);

	if (r != NULL && r->cb == creq_answer)
		creq_end(r->arg);
}

/* ---- life ------------------------------------------------------------ */

/* "<hostname>-<8 hex of SHA-256(state dir)>", hostname characters outside
 * [A-Za-z0-9_-] made '-', so the name is one subject token. */
static void
default_node(struct cluster *c)
{
	char host[40] = "farmd", hex[HASH_HEX_LEN + 1];
	uint8_t h[HASH_LEN];

	if (gethostname(host, sizeof(host) - 1) < 0 || host[0] == '\0')
		snprintf(host, sizeof(host), "farmd");
	host[sizeof(host) - 1] = '\0';
	for (char *p = host; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
			*p = '-';
	hash_sha256(c->d->state_dir, strlen(c->d->state_dir), h);
	hex_encode(h, 4, hex);
	snprintf(c->node, sizeof(c->node), "%s-%.8s", host, hex);
}

static int
nats_fail(struct err *e, const char *what, natsStatus s)
{
	return err_set(e, "[cluster] %s: %s", what, natsStatus_GetText(s));
}

static int
cluster_options(struct cluster *c, struct err *e)
{
	const struct config *cfg = &c->d->cfg;
	natsStatus s;

	if ((s = natsOptions_Create(&c->opts)) != NATS_OK)
		return nats_fail(e, "options", s);
	if ((s = natsOptions_SetServers(c->opts, NULL, 0)) != NATS_OK ||
	    (s = natsOptions_SetURL(c->opts, cfg->cluster.nats)) != NATS_OK)
		return nats_fail(e, "nats", s);
	if (cfg->cluster.user[0] != '\0' && (s = natsOptions_SetUserInfo(c->opts,
	    cfg->cluster.user, cfg->cluster.password)) != NATS_OK)
		return nats_fail(e, "user", s);
	if (cfg->cluster.creds[0] != '\0' && (s = natsOptions_SetUserCredentialsFromFiles(c->opts,
	    cfg->cluster.creds, NULL)) != NATS_OK)
		return nats_fail(e, "creds", s);
	if (cfg->cluster.tls_ca[0] != '\0' && ((s = natsOptions_SetSecure(c->opts, true)) != NATS_OK ||
	    (s = natsOptions_LoadCATrustedCertificates(c->opts, cfg->cluster.tls_ca)) != NATS_OK))
		return nats_fail(e, "tls_ca", s);
	if ((s = natsOptions_SetName(c->opts, c->node)) != NATS_OK ||
	    (s = natsOptions_SetNoEcho(c->opts, true)) != NATS_OK ||
	    (s = natsOptions_SetTimeout(c->opts, CLUSTER_CONNECT_TIMEOUT_MS)) != NATS_OK ||
	    (s = natsOptions_SetAllowReconnect(c->opts, true)) != NATS_OK ||
	    (s = natsOptions_SetMaxReconnect(c->opts, -1)) != NATS_OK ||
	    (s = natsOptions_SetReconnectWait(c->opts, CLUSTER_RECONNECT_WAIT_MS)) != NATS_OK ||
	    (s = natsOptions_SetReconnectBufSize(c->opts, 0)) != NATS_OK ||
	    (s = natsOptions_SetPingInterval(c->opts, CLUSTER_PING_MS)) != NATS_OK ||
	    (s = natsOptions_SetMaxPingsOut(c->opts, CLUSTER_PINGS_OUT)) != NATS_OK ||
	    (s = natsOptions_SetSendAsap(c->opts, true)) != NATS_OK ||
	    (s = natsOptions_SetRetryOnFailedConnect(c->opts, true, on_nats_connected, c)) != NATS_OK ||
	    (s = natsOptions_SetDisconnectedCB(c->opts, on_nats_disconnected, c)) != NATS_OK ||
	    (s = natsOptions_SetReconnectedCB(c->opts, on_nats_reconnected, c)) != NATS_OK ||
	    (s = natsOptions_SetClosedCB(c->opts, on_nats_closed, c)) != NATS_OK ||
	    (s = natsOptions_UseGlobalMessageDelivery(c->opts, true)) != NATS_OK ||
	    (s = natsOptions_SetEventLoop(c->opts, c->d->base, natsLibevent_Attach,
	    natsLibevent_Read, natsLibevent_Write, natsLibevent_Detach)) != NATS_OK)
		return nats_fail(e, "options", s);
	return 0;
}

static int
cluster_connect(struct cluster *c, struct err *e)
{
	natsStatus s;
	char *inbox = NULL;

	if ((s = nats_Open(-1)) != NATS_OK || (s = nats_SetMessageDeliveryPoolSize(1)) != NATS_OK)
		return nats_fail(e, "library", s);
	if (cluster_options(c, e) < 0)
		return -1;
	if ((s = natsInbox_Create(&inbox)) != NATS_OK)
		return nats_fail(e, "inbox", s);
	snprintf(c->inbox, sizeof(c->inbox), "%s", inbox);
	natsInbox_Destroy(inbox);
	s = natsConnection_Connect(&c->nc, c->opts);
	if (s == NATS_OK) {
		c->state = CLUSTER_CONNECTING;
		set_state(c, CLUSTER_CONNECTED);
	} else if (s == NATS_NOT_YET_CONNECTED) {
		const char *why = nats_GetLastError(NULL);

		c->state = CLUSTER_CONNECTING;
		log_warn("cluster: not connected to %s yet (%s); retrying in the background",
		    c->d->cfg.cluster.nats, why != NULL && why[0] ? why : "no answer");
	} else {
		return nats_fail(e, "nats", s);
	}
	return 0;
}

struct cluster *
cluster_new(struct farmd *d, struct err *e)
{
	struct cluster *c = calloc(1, sizeof(*c));
	char wild[CLUSTER_SUBJECT_MAX];

	if (c == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	c->d = d;
	c->q_fd = -1;
	c->max_payload = CLUSTER_DEFAULT_PAYLOAD;
	pthread_mutex_init(&c->q_mu, NULL);
	if (d->cfg.cluster.node[0] != '\0')
		snprintf(c->node, sizeof(c->node), "%s", d->cfg.cluster.node);
	else
		default_node(c);
	if (d->cfg.cluster.nats[0] == '\0') {
		c->state = CLUSTER_DISABLED;
		return c;
	}
	c->q_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->q_fd < 0 || (c->q_ev = event_new(d->base, c->q_fd, EV_READ | EV_PERSIST,
	    q_drain_cb, c)) == NULL || event_add(c->q_ev, NULL) < 0) {
		err_sys(e, "cluster: eventfd");
		goto fail;
	}
	if ((c->redial = evtimer_new(d->base, redial_cb, c)) == NULL) {
		err_set(e, "out of memory");
		goto fail;
	}
	if (cluster_connect(c, e) < 0)
		goto fail;
	snprintf(wild, sizeof(wild), "%s.*", c->inbox);
	if ((c->inbox_sub = cluster_subscribe(c, wild, NULL, inbox_msg, c, e)) == NULL)
		goto fail;
	return c;
fail:
	cluster_free(c);
	return NULL;
}

/* Every request and stream still waiting fails now ("farmd is
 * stopping"), from the loop, so their owners can finish. */
int
cluster_quiesce(struct cluster *c)
{
	if (c == NULL)
		return 1;
	if (c->state != CLUSTER_DISABLED && !c->stopping) {
		c->stopping = true;
		if (c->redial != NULL)
			evtimer_del(c->redial);
		/* Parts first, while still connected (peers say goodbye). */
		for (int i = 0; i < c->nparts; i++)
			if (c->parts[i]->stop != NULL)
				c->parts[i]->stop(c);
		c->state = CLUSTER_CLOSED;
		for (struct cluster_route *r = c->routes; r != NULL; r = r->next) {
			if (r->cb == creq_answer) {
				struct creq *q = r->arg;

				q->unavailable = true;
				event_active(q->timer, EV_TIMEOUT, 0);
			}
		}
	}
	return c->defers == NULL;
}

/* Everything on the queue from cnats' threads.  Its messages must be
 * destroyed while the library is open (lib): cnats hands a delivered
 * message back to its collector thread, whose lock nats_CloseAndWait
 * destroys.  After that only events are queued (the closed and
 * disconnected callbacks run after the connection is closed; a closed
 * connection delivers no messages). */
static void
q_free(struct cluster *c, bool lib)
{
	for (struct cluster_qitem *it = q_take(c), *next; it != NULL; it = next) {
		next = it->next;
		q_item_free(it, lib);
	}
}

void
cluster_free(struct cluster *c)
{
	if (c == NULL)
		return;
	for (int i = c->nparts; i-- > 0;)
		c->parts[i]->free(c);
	while (c->subs != NULL)
		cluster_unsubscribe(c->subs);
	while (c->routes != NULL)
		cluster_route_del(c, c->routes->id);
	if (c->nc != NULL) {
		natsConnection_Close(c->nc);
		natsConnection_Destroy(c->nc);
	}
	natsOptions_Destroy(c->opts);
	/* Queued messages before the library closes (q_free; one destroyed
	 * after it crashed farmd in natsMutex_Lock(NULL), seen in
	 * scripts/demo-cluster), the events cnats queues while closing after. */
	q_free(c, true);
	if (c->state != CLUSTER_DISABLED)
		nats_CloseAndWait(2000);
	q_free(c, false);
	while (c->defers != NULL) {
		struct cdefer *df = c->defers;

		c->defers = df->next;
		event_free(df->ev);
		free(df);
	}
	if (c->q_ev != NULL)
		event_free(c->q_ev);
	if (c->redial != NULL)
		event_free(c->redial);
	if (c->q_fd >= 0)
		close(c->q_fd);
	pthread_mutex_destroy(&c->q_mu);
	free(c);
}

/* ---- queries --------------------------------------------------------- */

bool
cluster_enabled(const struct cluster *c)
{
	return c->state != CLUSTER_DISABLED;
}

enum cluster_state
cluster_state(const struct cluster *c)
{
	return c->state;
}

const char *
cluster_node(const struct cluster *c)
{
	return c->node;
}

size_t
cluster_max_payload(const struct cluster *c)
{
	return (size_t)c->max_payload;
}

void
cluster_set_offer(struct cluster *c, unsigned roles, uint32_t free_encode)
{
	c->roles = roles;
	c->free_encode = free_encode;
}

void
cluster_set_height(struct cluster *c, uint64_t height, uint64_t archived)
{
	c->height = height;
	c->archived = archived;
}

void
cluster_on_height(struct cluster *c, void (*cb)(void *arg), void *arg)
{
	c->height_cb = cb;
	c->height_arg = arg;
}

void
cluster_stats(const struct cluster *c, struct cluster_stats *out)
{
	*out = c->st;
	out->state = c->state;
	out->max_payload = c->state == CLUSTER_DISABLED ? 0 : c->max_payload;
}

#ifdef FAULT_INJECTION
int
cluster_arm_fault(struct cluster *c, const char *fault)
{
	if (strcmp(fault, "lie") != 0)
		return -1;
	c->lie = true;
	return 0;
}
#endif
