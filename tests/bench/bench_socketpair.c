/*
 * bench_socketpair.c: the bare IPC limit of this machine, for issue 12's
 * ratio (scripts/bench prints farmd's `debug echo` rate over this one).
 *
 *   bench_socketpair SIZE COUNT [SOCKBUF]
 *
 * fork(); parent and child ping-pong a SIZE-byte message COUNT times over
 * an AF_UNIX SOCK_STREAM socketpair: the parent writes SIZE bytes, the
 * child reads all of them and writes them back, the parent reads all of
 * them.  Nothing else: no framing, no protobuf, no event loop.  Each side
 * allocates its buffer once, after the fork (a buffer touched before it
 * would take copy-on-write faults in the child), touches every page of it
 * and reuses it, so no page fault lands in the timed loop; the child says
 * it is ready with one byte before the clock starts.
 *
 * The figures are counted exactly as supervisor/cmd_debug.c counts `debug
 * echo`'s: MB/s = 2 × SIZE × COUNT / seconds / 10^6 (request and reply
 * bytes, from before the first write to after the last reply), and the
 * rtt of round trip i is from before its write to after its reply, the
 * median being element COUNT/2 of the sorted rtts and p99 element
 * COUNT*99/100.  SOCKBUF (default 4 MiB, what pool.c asks for its worker
 * sockets; 0 leaves the kernel's default) is set as SO_SNDBUF and
 * SO_RCVBUF on both ends, so the limit has farmd's socket buffers.
 *
 * Output, one figure a line as bench_kernel prints them:
 *
 *   socketpair_<SIZE>_mb_per_s <value> MB/s
 *   socketpair_<SIZE>_rtt_median_us <value> us
 *   socketpair_<SIZE>_rtt_p99_us <value> us
 *   socketpair_<SIZE>_sndbuf <bytes> bytes      (as the kernel granted it)
 *   socketpair_<SIZE>_minflt_per_round_trip <value> faults
 *
 * The last is both sides' minor page faults (getrusage) in the timed loop
 * over COUNT: about 0 shows that the limit pays for no fresh pages (the
 * child's count comes over the socket once the parent shuts its side).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Which side failed, in every message: "parent" or "child". */
static const char *side = "parent";

static void
die_sys(const char *what)
{
	fprintf(stderr, "bench_socketpair: %s: %s: %s\n", side, what, strerror(errno));
	exit(1);
}

/* All n bytes, or exit; returns 0 at EOF before the first byte. */
static int
read_full(int fd, uint8_t *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die_sys("read from the socketpair");
		if (r == 0) {
			if (got == 0)
				return 0;
			fprintf(stderr, "bench_socketpair: %s: the socketpair closed after %zu "
			    "of %zu bytes\n", side, got, n);
			exit(1);
		}
		got += (size_t)r;
	}
	return 1;
}

static void
write_full(int fd, const uint8_t *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			die_sys("write to the socketpair");
		buf += w;
		n -= (size_t)w;
	}
}

/* One buffer for the life of the process, every page written once now. */
static uint8_t *
buffer(size_t size)
{
	uint8_t *b = malloc(size + 1);

	if (b == NULL) {
		fprintf(stderr, "bench_socketpair: %s: buffer of %zu bytes: out of memory\n",
		    side, size);
		exit(1);
	}
	memset(b, 0xa5, size + 1);	/* the byte as cmd_debug.c fills echo payloads */
	return b;
}

/* Minor page faults of this process so far. */
static uint64_t
minflt(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) < 0)
		die_sys("getrusage");
	return (uint64_t)ru.ru_minflt;
}

/* Echoes until the parent shuts its side down, then sends the faults it
 * took meanwhile (8 bytes), so the parent can show the loop took none. */
static void
child(int fd, size_t size)
{
	uint64_t f0;
	uint8_t *b;

	side = "child";
	b = buffer(size);
	f0 = minflt();
	write_full(fd, (const uint8_t *)"r", 1);
	while (read_full(fd, b, size))
		write_full(fd, b, size);
	f0 = minflt() - f0;
	write_full(fd, (const uint8_t *)&f0, sizeof(f0));
	free(b);
	_exit(0);
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int
parse_size(const char *s, unsigned long long max, unsigned long long *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno == 0 && end != s && *end == '\0' && s[0] != '-' && *out <= max ? 0 : -1;
}

/* The socketpair, with sockbuf bytes of buffer each way (0: the
 * kernel's default); returns the send buffer the kernel granted. */
static int
make_pair(unsigned long long sockbuf, int sv[2])
{
	int granted;
	socklen_t len = sizeof(granted);

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die_sys("socketpair");
	for (int i = 0; sockbuf > 0 && i < 2; i++) {
		int v = (int)sockbuf;

		if (setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)) < 0 ||
		    setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)) < 0)
			die_sys("setsockopt SO_SNDBUF/SO_RCVBUF");
	}
	if (getsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &granted, &len) < 0)
		die_sys("getsockopt SO_SNDBUF");
	return granted;
}

/* The timed loop: count round trips of size bytes, each one's time in
 * rtt[]; returns the loop's time in ns. */
static uint64_t
ping_pong(int fd, uint8_t *b, size_t size, unsigned long long count, uint64_t *rtt)
{
	uint64_t t0 = now_ns();

	for (unsigned long long i = 0; i < count; i++) {
		uint64_t s = now_ns();

		write_full(fd, b, size);
		if (!read_full(fd, b, size)) {
			fprintf(stderr, "bench_socketpair: parent: the child closed the socketpair "
			    "at round trip %llu\n", i);
			exit(1);
		}
		rtt[i] = now_ns() - s;
	}
	return now_ns() - t0;
}

int
main(int argc, char **argv)
{
	unsigned long long size, count, sockbuf = 4 << 20;
	uint64_t *rtt, ns, pf0, pf1, cf;
	int sv[2], status, granted;
	uint8_t *b, ready;
	pid_t pid;

	if (argc < 3 || argc > 4 || parse_size(argv[1], 1ull << 30, &size) < 0 || size == 0 ||
	    parse_size(argv[2], 100000000, &count) < 0 || count == 0 ||
	    (argc == 4 && parse_size(argv[3], 1 << 30, &sockbuf) < 0)) {
		fprintf(stderr, "usage: bench_socketpair SIZE COUNT [SOCKBUF]  (SIZE 1..2^30 "
		    "bytes, COUNT 1..10^8, SOCKBUF bytes, 0: the kernel's default)\n");
		return 2;
	}
	granted = make_pair(sockbuf, sv);
	if ((pid = fork()) < 0)
		die_sys("fork");
	if (pid == 0) {
		close(sv[0]);
		child(sv[1], (size_t)size);
	}
	close(sv[1]);
	b = buffer((size_t)size);
	if ((rtt = calloc((size_t)count, sizeof(*rtt))) == NULL) {
		fprintf(stderr, "bench_socketpair: parent: %llu rtts: out of memory\n", count);
		return 1;
	}
	/* calloc'd pages are untouched until written: write them now. */
	memset(rtt, 0, (size_t)count * sizeof(*rtt));
	if (!read_full(sv[0], &ready, 1)) {
		fprintf(stderr, "bench_socketpair: parent: the child exited before it was ready\n");
		return 1;
	}

	pf0 = minflt();
	ns = ping_pong(sv[0], b, (size_t)size, count, rtt);
	pf1 = minflt();

	if (shutdown(sv[0], SHUT_WR) < 0)
		die_sys("shutdown of the socketpair");
	if (!read_full(sv[0], (uint8_t *)&cf, sizeof(cf))) {
		fprintf(stderr, "bench_socketpair: parent: the child exited without its fault count\n");
		return 1;
	}
	close(sv[0]);
	if (waitpid(pid, &status, 0) < 0)
		die_sys("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "bench_socketpair: child %d failed (status 0x%x)\n", (int)pid, status);
		return 1;
	}
	qsort(rtt, (size_t)count, sizeof(*rtt), cmp_u64);
	printf("socketpair_%llu_mb_per_s %.1f MB/s\n", size,
	    2.0 * (double)size * (double)count / ((double)ns / 1e9) / 1e6);
	printf("socketpair_%llu_rtt_median_us %.1f us\n", size, (double)rtt[count / 2] / 1e3);
	printf("socketpair_%llu_rtt_p99_us %.1f us\n", size, (double)rtt[count * 99 / 100] / 1e3);
	printf("socketpair_%llu_sndbuf %d bytes\n", size, granted);
	printf("socketpair_%llu_minflt_per_round_trip %.2f faults\n", size,
	    (double)(pf1 - pf0 + cf) / (double)count);
	free(rtt);
	free(b);
	return 0;
}
