/*
 * frame.h: the framing used on every socket (DESIGN.md §1).
 *
 *   frame = u32 big-endian length || packed protobuf envelope
 *
 * Invariants: a length above the peer's maximum is refused before any
 * allocation; the body is read straight into its final buffer (no
 * staging copy), which a reader keeps from one frame to the next (up to
 * FRAME_RD_KEEP bytes), so a steady stream of frames touches no fresh
 * pages; descriptors (SCM_RIGHTS) travel with a frame's first
 * byte and at most FRAME_MAX_FDS of them are accepted; unpacking goes
 * through a bounded allocator so a hostile frame cannot make protobuf-c
 * allocate more than a fixed multiple of its size.
 */
#ifndef FARMD_FRAME_H
#define FARMD_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "err.h"

#define FRAME_HDR_LEN 4
#define FRAME_MAX_FDS 8
#define FRAME_MAX_DEFAULT (64u << 20)
/* A reader keeps a body buffer up to this size for the next frame; a
 * larger one is given back when a smaller frame follows. */
#define FRAME_RD_KEEP (4u << 20)

/* Incremental reader.  Usage: frame_rd_space() says where the next bytes
 * go, the caller fills some of them (recvmsg, memcpy) and reports how many
 * with frame_rd_commit(), until it returns FRAME_READY; frame_rd_body()
 * then lends the body (the buffer is kept for the next frame), or
 * frame_rd_take() hands it over. */
struct frame_rd {
	size_t max;
	uint8_t hdr[FRAME_HDR_LEN];
	size_t hdr_got;
	uint8_t *body;
	size_t body_cap;                /* allocated bytes of body */
	size_t body_len;
	size_t body_got;
	int fds[FRAME_MAX_FDS];
	int nfds;
};

enum { FRAME_ERROR = -1, FRAME_MORE = 0, FRAME_READY = 1 };

void frame_rd_init(struct frame_rd *rd, size_t max);
void frame_rd_space(struct frame_rd *rd, uint8_t **p, size_t *n);
int frame_rd_commit(struct frame_rd *rd, size_t n, struct err *e);
/* Hands over the body (caller frees; never NULL for a READY frame, even of
 * length 0) and the descriptors that came with it (caller closes). */
uint8_t *frame_rd_take(struct frame_rd *rd, size_t *len, int *fds, int *nfds);
/* Lends the body of a READY frame: valid until the next frame_rd_commit()
 * or frame_rd_reset() on rd; the descriptors are handed over as with
 * frame_rd_take(). */
const uint8_t *frame_rd_body(struct frame_rd *rd, size_t *len, int *fds, int *nfds);
/* Frees a partial frame and closes its descriptors. */
void frame_rd_reset(struct frame_rd *rd);

/* Reads from a socket into rd until a frame is READY, the socket would
 * block (FRAME_MORE) or fails.  *eof is set on orderly shutdown between
 * frames; EOF inside a frame is an error ("truncated frame"). */
int frame_rd_recv(struct frame_rd *rd, int fd, int *eof, struct err *e);

/* Packs m into a new buffer (caller frees) holding the header and body. */
uint8_t *frame_pack(const ProtobufCMessage *m, size_t *len);
/* Packs m, header and body, into *buf (of *cap bytes, grown with realloc
 * when too small and kept by the caller for the next message).  Returns 0,
 * or -1 when out of memory (*buf is then unchanged). */
int frame_pack_into(const ProtobufCMessage *m, uint8_t **buf, size_t *cap, size_t *len);

/* Blocking send of a whole frame (with optional descriptors); retries on
 * EINTR and partial writes. */
int frame_send(int fd, const uint8_t *frame, size_t len, const int *fds,
    int nfds, struct err *e);
/* Packs and sends. */
int frame_send_msg(int fd, const ProtobufCMessage *m, const int *fds, int nfds,
    struct err *e);
/* Blocking receive of one frame. Returns 1 on EOF between frames. */
int frame_recv(int fd, size_t max, uint8_t **body, size_t *len, int *fds,
    int *nfds, struct err *e);

/* A protobuf-c allocator that refuses to hand out more than limit bytes in
 * total; one per unpack, freed with the message. */
struct frame_alloc {
	ProtobufCAllocator pb;
	size_t used;
	size_t limit;
};

void frame_alloc_init(struct frame_alloc *a, size_t limit);

/* Unpacks body with a bounded allocator (limit: a multiple of len plus a
 * constant).  Returns NULL (e set) if it does not unpack. Free with
 * protobuf_c_message_free_unpacked(msg, &a->pb). */
ProtobufCMessage *frame_unpack(const ProtobufCMessageDescriptor *desc,
    const uint8_t *body, size_t len, struct frame_alloc *a, struct err *e);

#endif
