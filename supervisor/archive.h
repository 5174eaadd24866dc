/*
 * archive.h: what history.c (ingest, the public API) and archive.c (the
 * archiver) share; no other module includes it.
 *
 * struct history is owned by history.c, which creates and frees it.  The
 * archiver alone changes the fields from "Persisted" down, and commits
 * them with the segments they describe; ingest only reads archived,
 * cur_h and the machine's state (through archive_holds and
 * archive_state_name) and counts what it ingested.
 */
#ifndef FARMD_ARCHIVE_H
#define FARMD_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "err.h"
#include "fsm.h"
#include "hash.h"
#include "history.h"

#define HISTORY_MAX_SUBS 8

struct archive_code_wait;

/* The archiver's states (archive.c has the machine). */
enum arch_state {
	AS_RECOVER, AS_NEXT, AS_READ, AS_VALIDATE, AS_EXECUTE, AS_UPGRADE, AS_APPEND, AS_CUT, AS_STORE,
	AS_COMMIT, AS_WAIT, AS_REJECTED, AS_ERROR, AS_NSTATES
};

/* A record in the partial segment buffer: start may be negative for the
 * first one (its head is in a committed segment). */
struct rec {
	uint64_t height;
	int64_t start;
	uint64_t len;                   /* whole record */
};

/* A cut segment waiting for the commit of the block that completed it. */
struct seg {
	uint64_t index;
	uint64_t last_height;
	uint8_t root[HASH_LEN];
	uint8_t header[HASH_LEN];
	uint8_t prev[HASH_LEN];
	uint8_t *piece_roots;           /* pps × 32 */
	uint8_t *piece_hashes;          /* pps × 32 */
	uint8_t *bytes;                 /* seg_size, until stored */
	uint32_t stored;                /* pieces stored so far */
	int failed;
	char err[ERR_MSG_MAX];
};

struct history {
	struct farmd *d;
	uint64_t piece_size;
	uint32_t pps;
	uint64_t seg_size;
	/* Persisted. */
	uint64_t archived;
	uint64_t buf_height, buf_offset;
	uint64_t released;              /* chain blocks released up to */
	uint64_t nsegments;
	uint8_t last_header[HASH_LEN];
	/* The partial segment. */
	uint8_t *buf;
	size_t buf_len, buf_cap;
	struct rec *recs;
	size_t nrecs, recs_cap;
	/* The block in hand. */
	struct fsm m;                   /* enum arch_state; archive.c enters it */
	uint64_t cur_h;
	uint8_t cur_hash[HASH_LEN];
	uint8_t *cur_data;
	size_t cur_len;
	uint8_t cur_parent[HASH_LEN];   /* hash of block cur_h - 1 */
	int cur_valid;                  /* set by validate_work */
	uint8_t *cur_code;              /* the block's validation code, if any */
	size_t cur_code_len;
	uint64_t code_exec;             /* artifact_execute handle in flight */
	struct archive_code_wait *code_wait;    /* a preparation in flight */
	char cur_why[ERR_MSG_MAX];
	uint64_t recover_h;
	struct seg **segs;              /* cut, not yet committed */
	size_t nsegs;
	uint64_t release_upto;          /* chain blocks to release at commit */
	int inflight;
	int dirty;                      /* the block in hand changed the buffer */
	int stopping;
	char waiting[ERR_MSG_MAX];      /* why WAIT or ERROR, for status */
	struct event *wake;
	uint64_t ingested, rejections;
	struct { history_segment_cb cb; void *arg; } subs[HISTORY_MAX_SUBS];
	history_want_cb want_cb;        /* gap repair (history_on_want) */
	void *want_arg;
	uint64_t wanted;                /* the missing height WAIT is for; 0 = none */
	int nsubs;
};

/* Creates the archiver's wake event on base: 0, or -1 (out of memory). */
int archive_init(struct history *h, struct event_base *base);
/* Starts the archiver from the persisted checkpoint (h loaded). */
void archive_start(struct history *h);
/* Wakes a waiting archiver: a block it may want was ingested. */
void archive_kick(struct history *h);
/* Stops starting new steps; true when none is in flight. */
int archive_quiesce(struct history *h);
/* Frees what the archiver holds (not h itself). */
void archive_free(struct history *h);
/* The state's name, as status shows it. */
const char *archive_state_name(const struct history *h);
/* True if height is archived or being archived: its block may no longer
 * change. */
int archive_holds(const struct history *h, uint64_t height);

/* Hash of the history row at height: 1 found, 0 not, -1 error. */
int archive_row(struct history *h, uint64_t height, uint8_t hash[HASH_LEN]);
/* Unpacks a block and checks that it belongs at height (and after the
 * block whose hash is parent, when given).  Pure, so it runs on the I/O
 * pool.  Returns 0, or -1 with the reason in why. */
int archive_check_block(const uint8_t *data, size_t len, uint64_t height,
    const uint8_t *parent, char *why, size_t whylen);

#endif
