/*
 * blockfile.h: a block's bytes, the block store's work on the I/O pool
 * (DESIGN §5).  Writing streams a source through SHA-256 (and zstd) into
 * a temp file, or into memory for an inline block, then renames the file
 * into place durably; reading loads a file back, decompresses it and
 * checks it against the block's name.  Each call works on its own job
 * struct and touches no database and no shared state, so it is safe on
 * any thread; the block store (blockstore.c) does everything else on the
 * loop.
 */
#ifndef FARMD_BLOCKFILE_H
#define FARMD_BLOCKFILE_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "hash.h"

/* What a read found.  MISSING: the block's row names a file that is gone
 * (damage: a get queues it for resync); NOT_FOUND: the store has no row
 * for the block at all ("no such block": never stored, or deleted on
 * purpose), which is no damage and set by the store, never by a read of
 * a file. */
enum block_status { BLOCK_OK, BLOCK_MISSING, BLOCK_CORRUPT, BLOCK_IOERR, BLOCK_NOT_FOUND };

struct blockfile_write {
	/* in */
	int fd;                         /* source (closed here), or -1: mem */
	const uint8_t *mem;             /* memory source (the caller's) */
	uint64_t size;                  /* expected bytes */
	int level;                      /* zstd level, 0 = none */
	int inl;                        /* inline: into inline_data, no file */
	char tmp[PATH_MAX + 64];        /* the temp file */
	/* out */
	uint8_t hash[HASH_LEN];
	uint64_t stored;                /* bytes in the file (or inline) */
	int compressed;
	uint8_t *inline_data;           /* inl: the bytes; the caller frees */
	int failed;
	char err[ERR_MSG_MAX];
};

/* Streams the source into w->tmp (fsynced) or w->inline_data and names
 * it; on failure no temp file is left. */
void blockfile_write(struct blockfile_write *w);
/* Renames w->tmp to final and fsyncs the directories that changed, up to
 * root (the store's directory, whose two-level fan-out it creates as
 * needed); on failure no temp file is left. */
void blockfile_place(struct blockfile_write *w, const char *final, const char *root);

struct blockfile_read {
	/* in */
	char path[PATH_MAX + 80];
	uint8_t hash[HASH_LEN];
	uint64_t size;
	int compressed;
	uint8_t *dst;                   /* NULL: data is malloc'd; else the bytes go
	                                 * here (room for size of them) */
	int dst_shared;                 /* dst is memory another process may write
	                                 * (an encode worker's buffer): a mismatch
	                                 * there is read again privately before the
	                                 * file is called corrupt */
	/* out */
	uint8_t *data;                  /* the bytes, size of them: dst, or the
	                                 * caller frees them */
	uint64_t read;                  /* bytes read from disk */
	size_t have;                    /* bytes in data (== size once checked) */
	int confirmed;                  /* dst_shared: sound only when read again */
	enum block_status st;
	char err[ERR_MSG_MAX];
};

/* Reads r->path; a corrupt file is renamed *.corrupted (kept for
 * inspection, its name free for a repaired copy).  With r->dst an
 * uncompressed file is read straight into it (no allocation, no copy),
 * a compressed one decompressed into it; a file whose size cannot be
 * r->size bytes is corrupt before a byte is read. */
void blockfile_read(struct blockfile_read *r);
/* blockfile_read of n ≤ BLOCKFILE_MANY_MAX files, the blocks of one
 * size hashed together (several times faster where the CPU has AVX-512:
 * hash_sha256_many). */
#define BLOCKFILE_MANY_MAX 16
void blockfile_read_many(struct blockfile_read *const *r, size_t n);
/* Checks the r[i]->have bytes at r[i]->data of every r[i] still BLOCK_OK
 * against its hash and size (BLOCK_CORRUPT if not), those of one size
 * together (hash_sha256_many: a part's pieces are one size). */
void blockfile_check_many(struct blockfile_read *const *r, size_t n);

/* The directory part of path. */
void blockfile_dirname(const char *path, char *out, size_t len);

#endif
