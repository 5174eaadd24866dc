/*
 * blockfile.c: a block's bytes on the I/O pool (blockfile.h).
 *
 * Invariants:
 * - a temp file that blockfile_write() leaves is complete and fsynced; a
 *   failed write or place leaves none;
 * - blockfile_place() returns only after the file's directory entry (and
 *   any directory it created) is durable;
 * - every byte blockfile_read() returns as BLOCK_OK hashed to the block's
 *   name in this read; a frame that claims more than the recorded size is
 *   corrupt, never an allocation.
 */
#include "blockfile.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zstd.h>

#include "fdio.h"

#define BF_CHUNK (1u << 20)

void
blockfile_dirname(const char *path, char *out, size_t len)
{
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) : 0;

	if (n >= len)
		n = len - 1;
	memcpy(out, path, n);
	out[n] = '\0';
}

static int
bf_fail(struct blockfile_write *w, const char *fmt, const char *what)
{
	w->failed = 1;
	snprintf(w->err, sizeof(w->err), fmt, what, strerror(errno));
	return -1;
}

static int __attribute__((format(printf, 2, 3)))
bf_failf(struct blockfile_write *w, const char *fmt, ...)
{
	va_list ap;

	w->failed = 1;
	va_start(ap, fmt);
	vsnprintf(w->err, sizeof(w->err), fmt, ap);
	va_end(ap);
	return -1;
}

/* What stage 1 holds while it streams the source, on the I/O thread. */
struct bf_stream {
	EVP_MD_CTX *md;
	ZSTD_CCtx *z;                   /* NULL: the file holds the bytes as is */
	uint8_t *buf, *zbuf;
	size_t zcap;
	uint64_t got;                   /* source bytes consumed */
	int out;                        /* the temp file, -1 if none */
	int inl;                        /* an inline block: no file at all */
};

/* The digest, the inline copy or the temp file, and zstd if configured. */
static int
bf_stream_open(struct blockfile_write *w, struct bf_stream *s)
{
	s->md = EVP_MD_CTX_new();
	if (s->md == NULL || EVP_DigestInit_ex(s->md, EVP_sha256(), NULL) != 1 ||
	    (s->buf = malloc(BF_CHUNK)) == NULL ||
	    (s->inl && (w->inline_data = malloc(w->size + 1)) == NULL))
		return bf_failf(w, "out of memory");
	if (s->inl)
		return 0;
	s->out = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (s->out < 0)
		return bf_fail(w, "create %s: %s", w->tmp);
	if (w->level <= 0)
		return 0;
	s->z = ZSTD_createCCtx();
	s->zcap = ZSTD_CStreamOutSize();
	if (s->z == NULL || (s->zbuf = malloc(s->zcap)) == NULL)
		return bf_failf(w, "out of memory");
	ZSTD_CCtx_setParameter(s->z, ZSTD_c_compressionLevel, w->level);
	ZSTD_CCtx_setParameter(s->z, ZSTD_c_checksumFlag, 0);
	return 0;
}

/* The next chunk of the source at *p: its length, 0 at the end of a
 * file, -1 on a read error. */
static ssize_t
bf_next_chunk(struct blockfile_write *w, struct bf_stream *s, const uint8_t **p)
{
	ssize_t n;

	if (w->fd < 0) {
		*p = w->mem + s->got;
		return (ssize_t)(w->size - s->got < BF_CHUNK ? w->size - s->got : BF_CHUNK);
	}
	*p = s->buf;
	while ((n = read(w->fd, s->buf, BF_CHUNK)) < 0 && errno == EINTR)
		;
	if (n < 0)
		bf_fail(w, "read %s: %s", "source");
	return n;
}

/* Compresses n bytes into the temp file; end finishes the frame. */
static int
bf_compress(struct blockfile_write *w, struct bf_stream *s, const uint8_t *p, size_t n, int end)
{
	ZSTD_inBuffer in = { p, n, 0 };
	ZSTD_EndDirective mode = end ? ZSTD_e_end : ZSTD_e_continue;
	size_t rem;

	do {
		ZSTD_outBuffer ob = { s->zbuf, s->zcap, 0 };

		rem = ZSTD_compressStream2(s->z, &ob, &in, mode);
		if (ZSTD_isError(rem))
			return bf_failf(w, "zstd: %s", ZSTD_getErrorName(rem));
		if (ob.pos > 0 && fdio_write_all(s->out, s->zbuf, ob.pos) < 0)
			return bf_fail(w, "write %s: %s", w->tmp);
		w->stored += ob.pos;
	} while (mode == ZSTD_e_end ? rem != 0 : in.pos < in.size);
	return 0;
}

/* One chunk into the digest and into the inline copy or the temp file. */
static int
bf_consume(struct blockfile_write *w, struct bf_stream *s, const uint8_t *p, size_t n)
{
	if (s->got + n > w->size)
		return bf_failf(w, "source grew while it was read "
		    "(%" PRIu64 " bytes expected)", w->size);
	EVP_DigestUpdate(s->md, p, n);
	if (s->inl)
		memcpy(w->inline_data + s->got, p, n);
	else if (s->z != NULL) {
		if (bf_compress(w, s, p, n, s->got + n == w->size || n == 0) < 0)
			return -1;
	} else if (n > 0) {
		if (fdio_write_all(s->out, p, n) < 0)
			return bf_fail(w, "write %s: %s", w->tmp);
		w->stored += n;
	}
	s->got += n;
	return 0;
}

/* The whole source.  A file is read until read() says it ended (so one
 * that grew is refused), except that a compressed one stops at its size,
 * where its frame was finished. */
static int
bf_stream_copy(struct blockfile_write *w, struct bf_stream *s)
{
	for (;;) {
		const uint8_t *p;
		ssize_t n = bf_next_chunk(w, s, &p);

		if (n < 0 || bf_consume(w, s, p, (size_t)n) < 0)
			return -1;
		if (n == 0 || (w->fd < 0 && s->got == w->size))
			break;
		if (s->z != NULL && s->got == w->size)
			break;
	}
	if (s->got != w->size)
		return bf_failf(w, "source shrank while it was read "
		    "(%" PRIu64 " of %" PRIu64 " bytes)", s->got, w->size);
	return 0;
}

/* The block's name, and its temp file on disk. */
static void
bf_stream_seal(struct blockfile_write *w, struct bf_stream *s)
{
	EVP_DigestFinal_ex(s->md, w->hash, NULL);
	if (s->inl)
		w->stored = w->size;
	else if (fsync(s->out) < 0) {
		bf_fail(w, "fsync %s: %s", w->tmp);
		return;
	}
	w->compressed = s->z != NULL;
}

/* Closes everything; a failed put leaves no temp file. */
static void
bf_stream_close(struct blockfile_write *w, struct bf_stream *s)
{
	if (s->out >= 0 && close(s->out) < 0 && !w->failed)
		bf_fail(w, "close %s: %s", w->tmp);
	if (w->failed && !s->inl)
		unlink(w->tmp);
	if (w->fd >= 0) {
		close(w->fd);
		w->fd = -1;
	}
	ZSTD_freeCCtx(s->z);
	EVP_MD_CTX_free(s->md);
	free(s->zbuf);
	free(s->buf);
}

/* Streams the source through SHA-256 (and zstd) into a temp file, or
 * into memory for an inline block. */
void
blockfile_write(struct blockfile_write *w)
{
	struct bf_stream s = { .out = -1, .inl = w->inl };

	if (bf_stream_open(w, &s) == 0 && bf_stream_copy(w, &s) == 0)
		bf_stream_seal(w, &s);
	bf_stream_close(w, &s);
}

/* Renames the temp file into place and makes that durable. */
void
blockfile_place(struct blockfile_write *w, const char *final, const char *root)
{
	char d1[PATH_MAX + 80], d2[PATH_MAX + 80];
	int new1, new2;

	blockfile_dirname(final, d2, sizeof(d2));
	blockfile_dirname(d2, d1, sizeof(d1));
	new1 = mkdir(d1, 0750) == 0;
	if (!new1 && errno != EEXIST) {
		bf_fail(w, "mkdir %s: %s", d1);
		unlink(w->tmp);
		return;
	}
	new2 = mkdir(d2, 0750) == 0;
	if (!new2 && errno != EEXIST) {
		bf_fail(w, "mkdir %s: %s", d2);
		unlink(w->tmp);
		return;
	}
	if (rename(w->tmp, final) < 0) {
		bf_fail(w, "rename to %s: %s", final);
		unlink(w->tmp);
		return;
	}
	/* The file's entry; a parent only when this put created a directory
	 * in it (measured: two fewer fsyncs per put once the fan-out exists). */
	if (fdio_fsync_dir(d2) < 0 || (new2 && fdio_fsync_dir(d1) < 0) ||
	    (new1 && fdio_fsync_dir(root) < 0))
		bf_fail(w, "fsync directory of %s: %s", final);
}

/* ---- read ---------------------------------------------------------- */

/* The bytes of a file read into raw (r->dst itself when the file is
 * stored as is), decompressed if need be, into r->data, r->have of them
 * (checked later: blockfile_read_many). */
static void
blockfile_decode(struct blockfile_read *r, uint8_t *raw, size_t len)
{
	size_t n;

	if (!r->compressed) {
		r->data = raw;
		r->have = len;
		return;
	}
	/* Decompress into exactly the recorded size: a frame claiming more
	 * is corrupt, never an allocation. */
	r->data = r->dst != NULL ? r->dst : malloc(r->size + 1);
	if (r->data == NULL) {
		r->st = BLOCK_IOERR;
		snprintf(r->err, sizeof(r->err), "out of memory");
		free(raw);
		return;
	}
	n = ZSTD_decompress(r->data, r->size, raw, len);
	free(raw);
	if (ZSTD_isError(n)) {
		r->st = BLOCK_CORRUPT;
		snprintf(r->err, sizeof(r->err), "zstd: %s", ZSTD_getErrorName(n));
	} else {
		r->have = n;
	}
}

/* Reads and decodes r->path into r->data; BLOCK_OK here means only that
 * there are r->have bytes to check. */
static void
blockfile_load(struct blockfile_read *r)
{
	uint8_t *raw = NULL;
	struct stat st;
	ssize_t got;
	int fd;

	fd = open(r->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r->st = errno == ENOENT ? BLOCK_MISSING : BLOCK_IOERR;
		snprintf(r->err, sizeof(r->err), "%s: %s", r->path, strerror(errno));
		return;
	}
	if (r->dst != NULL && !r->compressed) {
		/* Straight into the caller's room, which is exactly the
		 * recorded size, without an fstat (a plotted sector reads 64
		 * files: a syscall each is about 1 % of the supervisor's CPU
		 * while plotting).  A shorter file is corrupt; the bytes of a
		 * longer one past the block are not read, and what is read is
		 * checked like any block, while the scrub, which reads whole
		 * files, finds the length wrong. */
		got = fdio_pread_all(fd, r->dst, (size_t)r->size, 0);
		close(fd);
		if (got < 0) {
			r->st = BLOCK_IOERR;
			snprintf(r->err, sizeof(r->err), "%s: read: %s", r->path, strerror(errno));
		} else if ((uint64_t)got != r->size) {
			r->st = BLOCK_CORRUPT;
			snprintf(r->err, sizeof(r->err), "the file holds %zd bytes, the block is %"
			    PRIu64, got, r->size);
		} else {
			r->read = r->size;
			blockfile_decode(r, r->dst, (size_t)got);
		}
		return;
	}
	if (fstat(fd, &st) < 0) {
		r->st = BLOCK_IOERR;
		snprintf(r->err, sizeof(r->err), "%s: fstat: %s", r->path, strerror(errno));
		close(fd);
		return;
	}
	if ((raw = malloc((size_t)st.st_size + 1)) == NULL) {
		r->st = BLOCK_IOERR;
		snprintf(r->err, sizeof(r->err), "%s: out of memory for %lld bytes",
		    r->path, (long long)st.st_size);
		close(fd);
		return;
	}
	got = fdio_pread_all(fd, raw, (size_t)st.st_size, 0);
	close(fd);
	if (got != (ssize_t)st.st_size) {
		r->st = BLOCK_IOERR;
		snprintf(r->err, sizeof(r->err), "%s: read: %s", r->path,
		    got >= 0 ? "unexpected end of file" : strerror(errno));
		free(raw);
		return;
	}
	r->read = (uint64_t)st.st_size;
	blockfile_decode(r, raw, (size_t)st.st_size);
}

void
blockfile_check_many(struct blockfile_read *const *r, size_t n)
{
	int todo[BLOCKFILE_MANY_MAX];

	for (size_t i = 0; i < n; i++) {
		todo[i] = r[i]->st == BLOCK_OK;
		if (todo[i] && r[i]->have != r[i]->size) {
			r[i]->st = BLOCK_CORRUPT;
			snprintf(r[i]->err, sizeof(r[i]->err), "it holds %zu bytes, the block is %"
			    PRIu64, r[i]->have, r[i]->size);
			todo[i] = 0;
		}
	}
	for (size_t i = 0; i < n; i++) {
		const uint8_t *p[BLOCKFILE_MANY_MAX];
		uint8_t h[BLOCKFILE_MANY_MAX][HASH_LEN];
		size_t idx[BLOCKFILE_MANY_MAX], m = 0;

		if (!todo[i])
			continue;
		for (size_t k = i; k < n; k++)
			if (todo[k] && r[k]->size == r[i]->size) {
				todo[k] = 0;
				idx[m] = k;
				p[m++] = r[k]->data;
			}
		hash_sha256_many(p, m, r[i]->size, h);
		for (size_t k = 0; k < m; k++)
			if (memcmp(h[k], r[idx[k]]->hash, HASH_LEN) != 0) {
				r[idx[k]]->st = BLOCK_CORRUPT;
				snprintf(r[idx[k]]->err, sizeof(r[idx[k]]->err),
				    "its bytes do not hash to its name");
			}
	}
}

/* A mismatch in a shared room may be the other process writing there
 * while the bytes were checked (a hostile worker into its own buffer):
 * the file is read again into private memory, and only that verdict
 * counts.  Good bytes are then copied into the room. */
static void
blockfile_confirm(struct blockfile_read *r)
{
	struct blockfile_read priv, *pp = &priv;

	memset(&priv, 0, sizeof(priv));
	memcpy(priv.path, r->path, sizeof(priv.path));
	memcpy(priv.hash, r->hash, HASH_LEN);
	priv.size = r->size;
	priv.compressed = r->compressed;
	blockfile_load(&priv);
	blockfile_check_many(&pp, 1);
	r->read += priv.read;
	r->st = priv.st;
	memcpy(r->err, priv.err, sizeof(r->err));
	if (priv.st == BLOCK_OK) {
		r->confirmed = 1;
		memcpy(r->dst, priv.data, (size_t)r->size);
		r->data = r->dst;
		r->have = (size_t)r->size;
	}
	free(priv.data);
}

void
blockfile_read_many(struct blockfile_read *const *r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		blockfile_load(r[i]);
	blockfile_check_many(r, n);
	for (size_t i = 0; i < n; i++) {
		char bad[PATH_MAX + 96], dir[PATH_MAX + 80];

		if (r[i]->st == BLOCK_CORRUPT && r[i]->dst_shared && r[i]->dst != NULL)
			blockfile_confirm(r[i]);
		if (r[i]->st != BLOCK_CORRUPT)
			continue;
		/* Out of the way, kept for inspection; the name is free for a
		 * repaired copy. */
		snprintf(bad, sizeof(bad), "%s.corrupted", r[i]->path);
		if (rename(r[i]->path, bad) == 0) {
			blockfile_dirname(r[i]->path, dir, sizeof(dir));
			fdio_fsync_dir(dir);
		}
	}
}

void
blockfile_read(struct blockfile_read *r)
{
	blockfile_read_many(&r, 1);
}
