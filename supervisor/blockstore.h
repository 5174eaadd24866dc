/*
 * blockstore.h: content-addressed blocks (DESIGN §5).
 *
 * A block is named by the SHA-256 of its bytes.  Blocks under
 * BLOCK_INLINE_MAX bytes live in state.db; larger ones in
 * <state dir>/blocks/ab/cd/<hash>[.zst].  Every read verifies; a get that
 * finds a block missing or corrupt queues it for resync (a corrupt file
 * is renamed *.corrupted first).  Writes go temp file → fsync → rename →
 * fsync directory before the row that names the file commits.  Hashing,
 * compression and the reads and writes of files run on the I/O pool
 * (blockfile.c); the loop hashes only inline blocks, a few KiB at most.
 */
#ifndef FARMD_BLOCKSTORE_H
#define FARMD_BLOCKSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blockfile.h"                /* enum block_status */
#include "err.h"
#include "hash.h"

#define BLOCK_INLINE_MAX 3072           /* blocks below this are inline */

struct farmd;
struct blockstore;
struct resyncq;

struct block_info {
	uint8_t hash[HASH_LEN];
	uint64_t size;
	uint64_t stored;
	int64_t refcount;
	bool inline_;
	bool compressed;
	const char *state;              /* "ok", "error", "unreferenced" */
};

/* put: hash is the block's name on success; error is NULL then. */
typedef void (*block_put_cb)(void *arg, const uint8_t hash[HASH_LEN], const char *error);
/* get/verify: st BLOCK_OK with the verified bytes in data (the callback
 * owns them and frees them) and their length; otherwise data is NULL and
 * error says why, BLOCK_NOT_FOUND meaning the store has no such block. */
typedef void (*block_get_cb)(void *arg, uint8_t *data, size_t len,
    enum block_status st, const char *error);

struct blockstore *blockstore_new(struct farmd *d, struct err *e);
void blockstore_free(struct blockstore *bs);

/* Stores the bytes read from fd (a regular file; the store closes it)
 * and takes a reference. */
void blockstore_put_fd(struct blockstore *bs, int fd, block_put_cb cb, void *arg);

/* Stores len bytes from memory the caller keeps alive and unchanged until
 * cb runs (no copy on the loop).  With noref no reference is taken: a new
 * block is then unreferenced and collected after gc_delay unless the
 * caller references it with blockstore_incref() in the meantime,
 * typically in the same transaction as the row that owns it, so a crash
 * cannot leak a reference. */
void blockstore_store_mem(struct blockstore *bs, const uint8_t *data, size_t len,
    int noref, block_put_cb cb, void *arg);
/* One more reference to a stored block (fails if it has no row). */
int blockstore_incref(struct blockstore *bs, const uint8_t hash[HASH_LEN], struct err *e);

/* Reads and verifies.  A missing or corrupt block is logged and queued
 * for resync before cb runs. */
void blockstore_get(struct blockstore *bs, const uint8_t hash[HASH_LEN],
    block_get_cb cb, void *arg);

/* blockstore_get() of n blocks (at most BLOCKSTORE_BATCH_MAX) of len bytes
 * each, block i read into dst + i × len, which must stay alive until its
 * cb runs: no allocation and no copy (a block of any other size fails,
 * nothing written).  Their files are read by one task of the I/O pool (a
 * sector's pieces: one hand-off per group, not per piece) and verified
 * together (blockfile_read_many).  cb runs once
 * for each, with args[i]; its data is then dst + i × len (not to be
 * freed), which holds garbage when that read failed.  shared: dst is
 * memory another process may write (an encode worker's buffer), so a
 * block that does not verify there is read and checked again in private
 * memory before it is called corrupt (blockfile.h). */
#define BLOCKSTORE_BATCH_MAX BLOCKFILE_MANY_MAX
void blockstore_get_many_into(struct blockstore *bs, size_t n,
    const uint8_t (*hashes)[HASH_LEN], uint8_t *dst, size_t len, int shared,
    block_get_cb cb, void *const *args);

/* Reads and verifies without reporting to resync (resync's own check). */
void blockstore_verify(struct blockstore *bs, const uint8_t hash[HASH_LEN],
    block_get_cb cb, void *arg);

/* Looks a block up: 1 found, 0 not, -1 error. */
int blockstore_stat(struct blockstore *bs, const uint8_t hash[HASH_LEN],
    struct block_info *out, struct err *e);
/* Resolves a hex hash or unambiguous prefix (>= 8 hex digits). */
int blockstore_resolve(struct blockstore *bs, const char *hex,
    uint8_t hash[HASH_LEN], struct err *e);

/* Drops one reference; at zero the block becomes garbage after gc_delay. */
int blockstore_decref(struct blockstore *bs, const uint8_t hash[HASH_LEN],
    int64_t *left, struct err *e);
/* Deletes a block now whatever its refcount; *refs says how many it had. */
int blockstore_purge(struct blockstore *bs, const uint8_t hash[HASH_LEN],
    int64_t *refs, struct err *e);

/* For resync: deletes an unreferenced block whose delay has passed; cb
 * gets 1 if it was deleted, 0 if it is referenced again, young, gone or
 * being deleted already, -1 and error on failure.  A deleted block's
 * error entry goes with its row, before cb. */
typedef void (*block_done_cb)(void *arg, int result, const char *error);
void blockstore_collect(struct blockstore *bs, const uint8_t hash[HASH_LEN],
    uint64_t now_ms, block_done_cb cb, void *arg);

/* The queue of blocks that need resync, which the store fills (a read
 * that finds damage, a repair, a last reference dropped) and the resync
 * runner drains.  The store owns it. */
struct resyncq *blockstore_resyncq(struct blockstore *bs);

/* Counters and gauges for status and metrics. */
struct blockstore_stats {
	uint64_t blocks;
	uint64_t bytes;                 /* logical */
	uint64_t stored;                /* on disk + inline */
	uint64_t bytes_read;
	uint64_t bytes_written;
	uint64_t corruptions;
	uint64_t missing;
	uint64_t reserved;
	uint64_t budget;                /* CONFIG_UNLIMITED if none */
};
void blockstore_stats(const struct blockstore *bs, struct blockstore_stats *out);

/* Reload of [blocks] budget. */
void blockstore_set_budget(struct blockstore *bs, uint64_t limit);
#ifdef FAULT_INJECTION
/* debug fault block FAULT.  commit: the next put that renames a file into
 * place kills farmd (SIGKILL) before its row commits; slow-delete: from
 * now on every file delete waits 100 ms before its unlink (widens the
 * window in which a put meets its hash being deleted).  -1: no such fault. */
int blockstore_arm_fault(struct blockstore *bs, const char *fault);
#endif

/* Hex form of a hash, into the caller's buffer. */
void block_hex(const uint8_t hash[HASH_LEN], char out[HASH_HEX_LEN + 1]);

#endif
