#include "fdio.h"

#include <errno.h>
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
