/*
 * fdio.h: whole-buffer reads and writes on a file descriptor.
 *
 * A short write(2) does not set errno: the cause (ENOSPC, EDQUOT, EFBIG)
 * only shows on the next call.  These loops make that call, so on failure
 * errno always names the real cause, never a stale "Success".
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

#endif
