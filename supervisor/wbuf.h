/*
 * wbuf.h: an encode worker's shared buffer (issue 12).
 *
 * Each encode worker gets, when it is spawned, a memfd of [workers]
 * encode_buffer bytes, sealed against growing and shrinking (and against
 * new seals), that farmd and the worker both map once, MAP_SHARED, for the
 * worker's life.  A job's pieces are copied into it when the job is
 * dispatched (or, for plotting, read from the block store straight into
 * it: pool.h's fill jobs), the worker encodes them in place, and the job
 * and result frames carry only offsets and lengths.
 *
 * The worker is untrusted and can write into its mapping at any time,
 * also after it answered.  What makes that harmless (the choice issue 12
 * asks to state):
 *  - every range the worker names is checked against the buffer and
 *    against the job before a byte of it is read (wbuf_check);
 *  - the answer is copied out of the mapping exactly once, into the
 *    caller's own buffer (an sjob's batch buffer, reused), and everything
 *    after that (SHA-256 of the sector, the write to plot.bin) reads only
 *    that copy: the bytes written are the bytes hashed, whatever the
 *    worker does to its mapping afterwards;
 *  - the answer carries a checksum of its bytes (hash_fast64) that the
 *    worker computed before sending it; the copy must match it, so any
 *    write into the answer after that point and before the copy ended is
 *    seen, whatever the timing: a protocol error (the worker is killed
 *    and replaced; a fill job runs again on another worker, its pieces
 *    read again; a job whose input was copied in fails, since the copy
 *    overwrote that input, and its caller starts over).  The checksum is
 *    not cryptographic: a worker that forges one is a worker that lies
 *    about its answer, which no check here can see (below);
 *  - pieces read into the buffer (fill jobs) are checked there, where the
 *    worker can write too: a piece that fails that check is read again
 *    into private memory and only that verdict counts (blockfile.h), so a
 *    worker cannot get a sound block called corrupt;
 *  - jobs that fit in a third of the buffer take its three slots in
 *    turn: a worker has at most two jobs (the one it runs and one sent
 *    ahead, pool.c), so a worker still writing over its last answer does
 *    not touch the input of either.
 * A worker that answers with wrong bytes and never touches them again is
 * as undetectable here as it was when pieces travelled in frames; the
 * sector checksum then still describes exactly the bytes on disk.
 *
 * The supervisor never reads the mapping while a job on it is in flight.
 */
#ifndef FARMD_WBUF_H
#define FARMD_WBUF_H

#include <stddef.h>
#include <stdint.h>

#include "encode_v1.h"
#include "err.h"
#include "hash.h"
#include "worker.pb-c.h"

#define WBUF_SLOTS 3

struct wbuf {
	uint8_t *map;                   /* NULL: none */
	size_t size;
	size_t slot;                    /* bytes per slot: a third, whole pages */
	uint64_t placed;                /* jobs placed in slots: the next one's */
};

/* What a buffer job is: an encode job over n pieces of piece_len bytes,
 * or an echo of len bytes.  buf is the caller's, lent until the job ends:
 * the input on submit, the output when the job succeeded, unchanged when
 * an attempt failed before its answer was copied out. */
struct wbuf_job {
	int echo;
	uint8_t *buf;
	size_t len;
	uint8_t sector_id[HASH_LEN];
	uint32_t first_offset;
	struct encode_params params;
	uint32_t piece_len, count;
	int decode;
	uint64_t off;                   /* in the worker's buffer, set by wbuf_put */
};

/* Creates the memfd, sizes, seals and maps it.  *fd is the memfd to pass
 * to the worker (the caller closes it once sent; the mapping stays). */
int wbuf_create(struct wbuf *b, size_t size, int *fd, struct err *e);
void wbuf_free(struct wbuf *b);

/* Places job j in b (sets j->off): in the next slot when it fits in
 * one, else at 0 (then it must run alone). */
void wbuf_place(struct wbuf *b, struct wbuf_job *j);
/* wbuf_place, and copies j's input there. */
void wbuf_put(struct wbuf *b, struct wbuf_job *j);
/* Whether a job of len bytes takes a slot (and may run beside another). */
int wbuf_fits_slot(const struct wbuf *b, size_t len);
/* Packs the job frame for j with job id into *out (kept, grown as
 * needed).  Returns -1 when out of memory. */
int wbuf_job_frame(const struct wbuf_job *j, uint64_t id, uint8_t **out, size_t *cap,
    size_t *len);
enum { WBUF_OK = 0, WBUF_BAD = -1, WBUF_CHANGED = -2 };

/* Takes the worker's answer res to job j: checks that it is j's kind of
 * result and that its range is j's, inside b (else WBUF_BAD, e set,
 * nothing read, j->buf unchanged); then, when copy is set, copies it into
 * j->buf once and checks the copy against the answer's checksum (else
 * WBUF_CHANGED: j->buf no longer holds the input). */
int wbuf_answer(const struct wbuf *b, const struct wbuf_job *j,
    const Farmd__JobResult *res, int copy, struct err *e);

#endif
