/*
 * fdio.h: whole-buffer reads and writes on a file descriptor.
 *
 * A short write(2) does not set errno: the cause (ENOSPC, EDQUOT, EFBIG)
 * only shows on the next call.  These loops make that call, so on failure
 * errno always names the real cause, never a stale "Success".
 * Reads loop the same way, so a caller sees one result: the whole buffer,
 * a short count only at end of file, or -1 with errno.
 */
#ifndef FARMD_FDIO_H
#define FARMD_FDIO_H

#include <stddef.h>
#include <sys/types.h>

/* Writes all len bytes (retrying EINTR and short writes); 0, or -1 with
 * errno set (ENOSPC where the kernel accepted nothing more). */
int fdio_write_all(int fd, const void *buf, size_t len);
/* The same at an offset, with pwrite(2). */
int fdio_pwrite_all(int fd, const void *buf, size_t len, off_t off);

/* Reads up to len bytes (retrying EINTR and short reads): the count read,
 * less than len only at end of file, or -1 with errno set. */
ssize_t fdio_read_all(int fd, void *buf, size_t len);
/* The same from an offset, with pread(2): the file position is left as
 * it was, so a descriptor passed in by a client reads from its start. */
ssize_t fdio_pread_all(int fd, void *buf, size_t len, off_t off);

/* fsyncs a directory so a rename, link or unlink in it is durable: 0, or
 * -1 with errno naming the open(2) or fsync(2) failure. */
int fdio_fsync_dir(const char *path);

#endif
