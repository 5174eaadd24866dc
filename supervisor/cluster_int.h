/*
 * cluster_int.h: what the cluster files share (not for callers of
 * cluster.h).  cluster.c owns struct cluster: the connection, the hand-off
 * of cnats' messages to the loop, subscriptions, the reply inbox and its
 * routes, requests, counters.  cluster_peers.c keeps the membership,
 * cluster_stream.c the chunked streams, cluster_fetch.c the block.get and
 * history.get subjects (serving and asking), cluster_repair.c the
 * archiver's gap repair.  Modules point one way: repair → fetch → stream →
 * cluster.c; peers → cluster.c.
 *
 * Invariants:
 *  - every field is read and written on the loop thread only, except
 *    q_* (the hand-off queue), which cnats' threads append to under q_mu;
 *  - a route or subscription removed on the loop gets no callback after,
 *    whatever is still queued for it (items name it by id and are dropped
 *    when the id is gone).
 */
#ifndef FARMD_CLUSTER_INT_H
#define FARMD_CLUSTER_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <nats/nats.h>
#include <protobuf-c/protobuf-c.h>

#include "cluster.h"
#include "frame.h"

#define CLUSTER_MAX_PEERS 256
#define CLUSTER_ANNOUNCE_MS 10000
#define CLUSTER_FORGET_MS (3 * CLUSTER_ANNOUNCE_MS)
#define CLUSTER_DEFAULT_PAYLOAD (1u << 20)
/* Room a chunk's protobuf fields take besides its data. */
#define CLUSTER_CHUNK_OVERHEAD 256
/* A control message (announce, get, ack) is never larger. */
#define CLUSTER_CTRL_MAX 4096

struct cluster_qitem;
struct cluster_peers;
struct cluster_route;
struct cluster_fetch;
struct cluster_stream_set;
struct cluster_repair;

/* A module built on the core (peers, streams, fetch) plugs in here, so
 * that the core calls none of them by name (scripts/deps-graph: they
 * depend on cluster.c, never the other way). */
struct cluster_part {
	void (*connected)(struct cluster *c);   /* on every (re)connection; may be NULL */
	void (*stop)(struct cluster *c);        /* cluster_quiesce: end what waits */
	void (*free)(struct cluster *c);        /* cluster_free, before the connection closes */
	void (*reload)(struct cluster *c);      /* after SIGHUP applied d->cfg; may be NULL */
};
#define CLUSTER_MAX_PARTS 4

struct cdefer {
	void (*fn)(void *arg);
	void *arg;
	struct event *ev;
	struct cluster *c;
	struct cdefer *next;
};

/* A message for a route (an inbox token) or a subscription. */
typedef void (*cluster_route_cb)(void *arg, const struct cluster_msg *m);

struct cluster_sub {
	struct cluster *c;
	uint64_t id;                    /* cnats' sid on the current connection */
	natsSubscription *ns;           /* NULL while detached (no connection) */
	char subject[CLUSTER_SUBJECT_MAX];
	char queue[64];                 /* "" = none */
	cluster_msg_cb cb;
	void *arg;
	struct cluster_sub *next;
};

struct cluster {
	struct farmd *d;
	enum cluster_state state;
	char node[CLUSTER_NODE_MAX];
	char inbox[CLUSTER_SUBJECT_MAX / 2];    /* "_INBOX.<nuid>" */
	natsOptions *opts;
	natsConnection *nc;
	struct event *redial;           /* a new connection after cnats closed ours */
	uint64_t redials;
	bool stopping;                  /* cluster_quiesce ran: a close is ours */
	/* The hand-off from cnats' threads. */
	pthread_mutex_t q_mu;
	struct cluster_qitem *q_head, *q_tail;
	int q_fd;                       /* eventfd the loop reads */
	struct event *q_ev;
	/* Loop-side tables. */
	struct cluster_sub *subs;
	struct cluster_sub *inbox_sub;  /* "<inbox>.*" */
	struct cluster_route *routes;
	uint64_t next_id;
	struct cluster_peers *peers;
	struct cluster_stream_set *streams;
	struct cluster_fetch *fetch;
	unsigned roles;
	uint32_t free_encode;
	uint64_t height, archived;      /* announced */
	void (*height_cb)(void *arg);
	void *height_arg;
	uint64_t max_payload;
	struct cluster_stats st;
	uint64_t malformed_logged_ms;
	struct cdefer *defers;          /* cluster_defer calls not run yet */
	const struct cluster_part *parts[CLUSTER_MAX_PARTS];
	int nparts;
	bool lie;                       /* fault: answers flipped */
};

/* A unique id for routes, requests and streams (never 0). */
uint64_t cluster_next_id(struct cluster *c);

/* Routes messages sent to "<inbox>.<id>" to cb until removed; subject
 * gets that name.  Returns id. */
uint64_t cluster_route_add(struct cluster *c, cluster_route_cb cb, void *arg,
    char subject[CLUSTER_SUBJECT_MAX]);
void cluster_route_del(struct cluster *c, uint64_t id);

/* Runs fn(arg) from the loop soon, outside the caller's stack. */
void cluster_defer(struct cluster *c, void (*fn)(void *arg), void *arg);

/* Unpacks m's bytes as desc with the bounded allocator fa (frame.h),
 * after checking their size against max; NULL (counted as malformed,
 * logged with the subject) when it does not unpack, is too large, or its
 * version (field 1) is not CLUSTER_PROTO_VERSION.  Free with
 * protobuf_c_message_free_unpacked(msg, &fa->pb). */
ProtobufCMessage *cluster_unpack(struct cluster *c, const ProtobufCMessageDescriptor *desc,
    const struct cluster_msg *m, size_t max, struct frame_alloc *fa);

/* Packs msg and publishes it; -1 with e set. */
int cluster_publish_pb(struct cluster *c, const char *subject, const char *reply,
    const ProtobufCMessage *msg, struct err *e);

/* Plugs a part in (at most CLUSTER_MAX_PARTS); parts are called in the
 * order they were added. */
void cluster_add_part(struct cluster *c, const struct cluster_part *part);

#endif
