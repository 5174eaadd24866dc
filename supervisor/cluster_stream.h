/*
 * cluster_stream.h: payloads larger than the server's max_payload, moved
 * as acknowledged chunks (doc/CLUSTER.md, "Streams").
 *
 * A stream answers one request.  The receiver publishes the request with
 * a fresh inbox as its reply subject and waits there; the sender (the
 * node that answers) publishes StreamChunk messages to that inbox, each
 * with its own ack inbox as reply subject, and the receiver acknowledges
 * every chunk with a StreamAck naming the next offset it expects.  The
 * sender keeps at most CLUSTER_STREAM_WINDOW chunks unacknowledged.
 *
 * The receiver trusts nothing: it takes chunks from the first sender only
 * (other senders are told "busy" and stop), each chunk must start at the
 * next expected offset and stay within the total the first chunk
 * declared, the total must not exceed the receiver's max_total, and an
 * idle stream (no chunk or ping for idle_ms) fails.  A sender that works
 * long before its first byte (a plotter encoding a sector) keeps the
 * stream alive with cluster_stream_ping.
 *
 * Both ends run on the loop; callbacks too.
 */
#ifndef FARMD_CLUSTER_STREAM_H
#define FARMD_CLUSTER_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "cluster.h"

#define CLUSTER_STREAM_WINDOW 4         /* chunks in flight per stream */
#define CLUSTER_STREAM_ACK_MS 5000      /* a chunk unacknowledged this long fails the send */

/* ---- receiving -------------------------------------------------------- */

/* The whole payload, or a failure.  On CLUSTER_OK data is malloc'd and the
 * callback owns it (frees it); node is the sender's claimed name (for
 * logs and bad-peer accounting; "" when unknown).  On failure data is
 * NULL and error says why (CLUSTER_REMOTE_ERROR: the sender's own words). */
typedef void (*cluster_stream_cb)(void *arg, enum cluster_status st, uint8_t *data,
    size_t len, const char *node, const char *error);

/* Publishes req (len bytes, at most max_payload) to subject with a fresh
 * inbox as reply subject and receives the answer stream there: at most
 * max_total bytes; fails if no chunk or ping arrives within first_ms of
 * the request, or within idle_ms of the previous one.  Returns a nonzero
 * handle; 0 when it could not start (cb is then called from the loop). */
uint64_t cluster_stream_request(struct cluster *c, const char *subject, const uint8_t *req,
    size_t len, size_t max_total, uint64_t first_ms, uint64_t idle_ms,
    cluster_stream_cb cb, void *arg);
/* No callback after this; unknown handles are ignored. */
void cluster_stream_cancel(struct cluster *c, uint64_t handle);

/* ---- sending ---------------------------------------------------------- */

/* The end of a send: CLUSTER_OK when the receiver acknowledged the last
 * byte; otherwise why it failed (timeout, the receiver said busy or
 * stopped, disconnected). */
typedef void (*cluster_send_cb)(void *arg, enum cluster_status st, const char *error);

/* Streams len bytes to reply (the reply subject of the request being
 * answered).  Takes ownership of data (freed when the send ends).  cb may
 * be NULL.  Returns a handle, 0 when it could not start (data freed, cb
 * called from the loop). */
uint64_t cluster_stream_send(struct cluster *c, const char *reply, uint8_t *data, size_t len,
    cluster_send_cb cb, void *arg);
/* No callback after this; the receiver will time out. */
void cluster_stream_send_cancel(struct cluster *c, uint64_t handle);

/* Keeps the receiver at reply waiting (resets its idle timer). */
int cluster_stream_ping(struct cluster *c, const char *reply, struct err *e);
/* Ends the stream at reply with an error the receiver reports as
 * CLUSTER_REMOTE_ERROR (at most 200 bytes of why). */
int cluster_stream_error(struct cluster *c, const char *reply, const char *why,
    struct err *e);

#endif
