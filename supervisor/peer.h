/*
 * peer.h: a framed, non-blocking connection on the supervisor's event
 * loop.  Used for worker socketpairs and admin clients alike.
 *
 * Ownership: the owner creates and frees a peer.  Callbacks run from the
 * loop; on_msg is lent the body for the call (the peer reuses its buffer
 * for the next frame) and takes ownership of the descriptors.  When
 * on_msg returns -1, or the connection fails or closes, on_close is called
 * exactly once with the reason, the peer stops reading and writing, and
 * the owner is expected to peer_free() it (from on_close or later).
 */
#ifndef FARMD_PEER_H
#define FARMD_PEER_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <protobuf-c/protobuf-c.h>

#include "err.h"

struct peer;

/* How a connection ended; owners decide what to log and count from this,
 * never from the reason's text. */
enum peer_close {
	PEER_CLOSED,    /* the other side closed it (EOF, EPIPE, ECONNRESET);
	                 * reason "connection closed" */
	PEER_FAILED,    /* a protocol or I/O error, or on_msg failed; reason says which */
	PEER_ENDED,     /* the owner ended it (peer_end) */
};

typedef int (*peer_msg_cb)(struct peer *p, const uint8_t *body, size_t len, int *fds,
    int nfds, void *arg, struct err *e);
typedef void (*peer_close_cb)(struct peer *p, enum peer_close how, const char *reason,
    void *arg);

struct peer *peer_new(struct event_base *base, int fd, size_t max_frame,
    peer_msg_cb on_msg, peer_close_cb on_close, void *arg);
void peer_free(struct peer *p);

/* Queues a message.  Returns -1 if the peer is closed or out of memory. */
int peer_send(struct peer *p, const ProtobufCMessage *m);
/* Queues an already packed frame (takes ownership of frame). */
int peer_send_frame(struct peer *p, uint8_t *frame, size_t len);

/* Queues a frame that the caller keeps alive, unchanged, until the peer
 * is freed or the other side has answered it (it cannot answer before
 * reading all of it).  Saves a copy of large job payloads. */
int peer_send_borrowed(struct peer *p, const uint8_t *frame, size_t len);

/* Stops/starts reading (one request at a time on admin connections). */
void peer_pause(struct peer *p, int paused);
/* Stops reading while more than bytes of output wait for the peer
 * (resumes below half of it). */
void peer_set_out_limit(struct peer *p, size_t bytes);
/* Ends the connection from our side: on_close runs with PEER_ENDED and
 * reason; what is queued is not sent any more. */
void peer_end(struct peer *p, const char *reason);
size_t peer_queued(const struct peer *p);

#endif
