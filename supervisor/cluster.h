/*
 * cluster.h: farmd's NATS cluster transport (DESIGN §15, doc/CLUSTER.md).
 *
 * One connection per farmd, run on farmd's libevent loop through cnats'
 * libevent adapter.  cnats delivers subscription messages and connection
 * events on its own threads; cluster.c hands each of them to the loop
 * through a mutex-protected queue and an eventfd, so every callback
 * declared here runs on the loop, like any other farmd callback, and may
 * touch farmd state.
 *
 * With [cluster] nats empty the cluster is "disabled": cluster_new still
 * returns an object, every operation fails at once with "cluster
 * disabled" (requests call back with CLUSTER_UNAVAILABLE from the loop),
 * and farmd behaves exactly as it does without this file.  While the
 * server is away the state is "reconnecting" and cnats retries forever;
 * subscriptions survive the reconnect.
 *
 * Peers are untrusted: every payload is a versioned protobuf
 * (proto/cluster.proto) unpacked with a bounded allocator after its size
 * was checked; a malformed one is dropped and counted (cluster_note_malformed).
 */
#ifndef FARMD_CLUSTER_H
#define FARMD_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "hash.h"

struct farmd;
struct cluster;
struct cluster_sub;

/* Version of every message in proto/cluster.proto (its `version` field). */
#define CLUSTER_PROTO_VERSION 1

/* Subjects (doc/CLUSTER.md).  The plotter ones are built by the plotter
 * code: CLUSTER_SUBJ_PLOTTER_SECTOR_FMT takes the node name. */
#define CLUSTER_SUBJ_ANNOUNCE      "farmd.v1.node.announce"
#define CLUSTER_SUBJ_BLOCK_GET     "farmd.v1.block.get"
#define CLUSTER_SUBJ_HISTORY_GET   "farmd.v1.history.get"
#define CLUSTER_SUBJ_PLOTTER_FREE  "farmd.v1.plotter.free"
#define CLUSTER_QUEUE_PLOTTER      "farmd.plotter"
#define CLUSTER_SUBJ_PLOTTER_SECTOR_FMT "farmd.v1.plotter.%s.sector"

#define CLUSTER_NODE_MAX 64             /* bytes of a node name, NUL included */
#define CLUSTER_SUBJECT_MAX 256

/* Roles a node announces (bits). */
#define CLUSTER_ROLE_ARCHIVE 0x1        /* answers block.get / history.get */
#define CLUSTER_ROLE_PLOTTER 0x2        /* [cluster] plotter = true */
#define CLUSTER_ROLE_FARMER  0x4        /* has farms */

enum cluster_state {
	CLUSTER_DISABLED,               /* [cluster] nats is empty */
	CLUSTER_CONNECTING,             /* first connection not made yet */
	CLUSTER_CONNECTED,
	CLUSTER_RECONNECTING,           /* lost the server; cnats retries forever */
	CLUSTER_CLOSED,                 /* farmd is stopping */
};

/* Outcome of a request or a stream. */
enum cluster_status {
	CLUSTER_OK = 0,
	CLUSTER_TIMEOUT,                /* no (complete) answer in time */
	CLUSTER_UNAVAILABLE,            /* disabled, not connected, or stopping */
	CLUSTER_BAD_ANSWER,             /* an answer broke the protocol (counted) */
	CLUSTER_REMOTE_ERROR,           /* the peer answered with an error */
};

/* A received message, valid only during the callback. reply is NULL when
 * the sender wants no answer.  no_responders marks the server's status
 * answer to one of our requests when no node subscribes to its subject
 * (it has no data): the request can fail now instead of at its timeout. */
struct cluster_msg {
	const char *subject;
	const char *reply;
	const uint8_t *data;
	size_t len;
	bool no_responders;
};
typedef void (*cluster_msg_cb)(void *arg, const struct cluster_msg *m);

/* Answer to cluster_request: st CLUSTER_OK with the first answer's bytes
 * (valid during the callback only), else data NULL and error saying why. */
typedef void (*cluster_reply_cb)(void *arg, enum cluster_status st, const uint8_t *data,
    size_t len, const char *error);

/* A peer, as its announcements describe it. */
struct cluster_peer {
	char node[CLUSTER_NODE_MAX];
	char version[32];
	unsigned roles;                 /* CLUSTER_ROLE_* */
	uint32_t free_encode;           /* encode workers it offers now */
	uint64_t height;                /* highest height it holds a block of */
	uint64_t archived;              /* its archiver's checkpoint */
	uint64_t last_seen_ms;          /* wall clock */
	uint64_t bad_answers;           /* wrong bytes it sent us */
	uint64_t bad_until_ms;          /* wall clock; 0 = not marked bad */
};

/* Counters (metrics.c renders them). */
struct cluster_stats {
	enum cluster_state state;
	uint64_t requests;              /* requests and streams we started */
	uint64_t answers;               /* answers we received complete */
	uint64_t served;                /* requests of peers we answered */
	uint64_t bytes_sent, bytes_received;    /* payload bytes */
	uint64_t failures;              /* requests that timed out or failed */
	uint64_t bad_peers;             /* answers with wrong bytes (hash mismatch) */
	uint64_t malformed;             /* messages dropped: did not unpack, bad version, bad size */
	uint64_t reconnects;
	uint64_t max_payload;           /* the server's, 0 before the first INFO */
	size_t peers;
};

/* Before event_base_new(): cnats' libevent adapter needs libevent's
 * locking (evthread_use_pthreads) on the base it attaches to.  Called by
 * main only when [cluster] nats is set, so a farmd without a cluster runs
 * exactly as before. */
void cluster_preinit(void);

/* Starts connecting (never blocks on the server: a server that is down
 * is retried in the background).  Needs d->cfg, d->base, d->state_dir;
 * the block store and history are looked up at use, so it may be created
 * before them.  Returns NULL with e set on a bad configuration (creds or
 * tls_ca unreadable, a URL cnats refuses). */
struct cluster *cluster_new(struct farmd *d, struct err *e);
/* Membership (cluster_peers.c: announcing, hearing peers) and serving
 * block.get / history.get (cluster_fetch.c), started by main once the
 * block store and history exist; nothing when the cluster is disabled. */
int cluster_peers_start(struct cluster *c, struct err *e);
int cluster_fetch_start(struct cluster *c, struct err *e);
/* After a SIGHUP changed the reloadable [cluster] keys (plotter,
 * remote_plotting, verify_pieces) in d->cfg: the parts that use them
 * adjust, and peers hear the new roles at once. */
void cluster_reload(struct cluster *c);
/* Stops: requests and streams in flight fail (from the loop) with
 * CLUSTER_UNAVAILABLE, nothing new starts.  True when no callback is
 * still to run.  cluster_free closes the connection. */
int cluster_quiesce(struct cluster *c);
void cluster_free(struct cluster *c);

bool cluster_enabled(const struct cluster *c);
enum cluster_state cluster_state(const struct cluster *c);
const char *cluster_state_name(enum cluster_state st);
/* This node's name ([cluster] node, else "<hostname>-<8 hex of SHA-256 of
 * the state dir>"). */
const char *cluster_node(const struct cluster *c);
/* The largest payload the server takes (its INFO), or 1 MiB before the
 * first connection. */
size_t cluster_max_payload(const struct cluster *c);
/* A fresh unique subject under this connection's inbox, for replies. */
void cluster_new_inbox(struct cluster *c, char out[CLUSTER_SUBJECT_MAX]);

/* Subscribes on the loop; queue NULL for none.  Survives reconnects. */
struct cluster_sub *cluster_subscribe(struct cluster *c, const char *subject,
    const char *queue, cluster_msg_cb cb, void *arg, struct err *e);
/* Stops delivery at once (no callback after it returns); NULL is a no-op. */
void cluster_unsubscribe(struct cluster_sub *s);

/* Publishes len bytes (at most cluster_max_payload) to subject, with an
 * optional reply subject.  -1 with e set when disabled or not connected. */
int cluster_publish(struct cluster *c, const char *subject, const char *reply,
    const uint8_t *data, size_t len, struct err *e);

/* Publishes a request and calls cb once on the loop with the first answer
 * or a timeout.  Returns a nonzero handle, or 0 when it could not start
 * (cb is then called from the loop with CLUSTER_UNAVAILABLE). */
uint64_t cluster_request(struct cluster *c, const char *subject, const uint8_t *data,
    size_t len, uint64_t timeout_ms, cluster_reply_cb cb, void *arg);
/* cb of a request in flight will not be called; unknown handles are ignored. */
void cluster_request_cancel(struct cluster *c, uint64_t handle);

/* Announcement contents: roles and free encode capacity this node offers
 * (the plotter code keeps free_encode current).  announce_now sends one
 * now rather than at the next 10 s tick. */
void cluster_set_offer(struct cluster *c, unsigned roles, uint32_t free_encode);
/* The highest height this node holds a block of and its archived height,
 * announced so peers ask for heights someone has (gap repair keeps them
 * current). */
void cluster_set_height(struct cluster *c, uint64_t height, uint64_t archived);
/* The highest height a live peer announced; 0 when none. */
uint64_t cluster_peers_height(struct cluster *c);
/* Called (on the loop) when a peer announces heights that changed (it
 * may hold blocks it did not before); one listener (gap repair). */
void cluster_on_height(struct cluster *c, void (*cb)(void *arg), void *arg);
void cluster_announce_now(struct cluster *c);

/* Known peers (announced within the last 3 intervals), newest first;
 * *n set.  Caller frees the array. */
struct cluster_peer *cluster_peers(struct cluster *c, size_t *n);
/* Marks node bad until now + ms (a lying peer, a failed spot check), and
 * counts a bad answer; a node not known yet is remembered too. */
void cluster_peer_mark_bad(struct cluster *c, const char *node, uint64_t ms);
bool cluster_peer_is_bad(struct cluster *c, const char *node);

/* Fetches a block by hash from peers: the answer is verified by SHA-256
 * before cb sees it; a peer that sends other bytes is counted, logged with
 * its node name, and the block is asked again of the other peers (the
 * liar excluded), up to a few times.  max_len bounds the size accepted.
 * cb gets st CLUSTER_OK with the verified bytes, malloc'd (cb owns and
 * frees them), and the node that sent them.  Returns a handle for
 * cluster_fetch_cancel; every call that returns one gets exactly one cb,
 * from the loop, unless cancelled (0: out of memory, no cb).  Peers
 * marked bad are not asked. */
typedef void (*cluster_fetch_cb)(void *arg, enum cluster_status st, uint8_t *data,
    size_t len, const char *node, const char *error);
uint64_t cluster_fetch_block(struct cluster *c, const uint8_t hash[HASH_LEN],
    size_t max_len, cluster_fetch_cb cb, void *arg);
/* Asks peers for the block at height (history.get).  The bytes are NOT
 * verified here (a height names no hash): the caller ingests them through
 * the normal path, which checks them. */
uint64_t cluster_fetch_height(struct cluster *c, uint64_t height, size_t max_len,
    cluster_fetch_cb cb, void *arg);
void cluster_fetch_cancel(struct cluster *c, uint64_t handle);

/* A message from a peer that did not unpack, had a wrong version or an
 * impossible size: dropped, counted, logged (rate-limited) with where. */
void cluster_note_malformed(struct cluster *c, const char *subject, const char *why);
/* Counts traffic that code outside cluster.c moved (streams). */
void cluster_count(struct cluster *c, uint64_t sent, uint64_t received);

void cluster_stats(const struct cluster *c, struct cluster_stats *out);
/* {state, node, nats, max_payload, peers: [{node, version, roles, free_encode,
 * last_seen_ms, last_seen_s_ago, bad}], counters} */
json_t *cluster_json_status(struct cluster *c);
json_t *cluster_json_peers(struct cluster *c);

#ifdef FAULT_INJECTION
/* debug fault cluster FAULT.  lie: from now on this node answers
 * block.get and history.get with one byte flipped.  -1: no such fault. */
int cluster_arm_fault(struct cluster *c, const char *fault);
#endif

#endif
