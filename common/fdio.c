/*
 * fdio.c: the loops behind fdio.h.  Every path out of a loop either
 * moved all the bytes, met end of file (reads) or returns -1 with the
 * errno of the call that failed.
 */
#include "fdio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

/* off < 0: write(2) at the file position; else pwrite(2) at off. */
static int
fdio_put(int fd, const void *buf, size_t len, off_t off)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = off < 0 ? write(fd, p, len) : pwrite(fd, p, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			/* Nothing accepted and no error: a full device. */
			errno = ENOSPC;
			return -1;
		}
		p += n;
		len -= (size_t)n;
		if (off >= 0)
			off += n;
	}
	return 0;
}

int
fdio_write_all(int fd, const void *buf, size_t len)
{
	return fdio_put(fd, buf, len, -1);
}

int
fdio_pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	if (off < 0) {
		errno = EINVAL;
		return -1;
	}
	return fdio_put(fd, buf, len, off);
}

/* off < 0: read(2) from the file position; else pread(2) from off. */
static ssize_t
fdio_get(int fd, void *buf, size_t len, off_t off)
{
	uint8_t *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t n = off < 0 ? read(fd, p + got, len - got) :
		    pread(fd, p + got, len - got, off + (off_t)got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

ssize_t
fdio_read_all(int fd, void *buf, size_t len)
{
	return fdio_get(fd, buf, len, -1);
}

ssize_t
fdio_pread_all(int fd, void *buf, size_t len, off_t off)
{
	if (off < 0) {
		errno = EINVAL;
		return -1;
	}
	return fdio_get(fd, buf, len, off);
}

int
fdio_fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc, saved;

	if (fd < 0)
		return -1;
	rc = fsync(fd);
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}
