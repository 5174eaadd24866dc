/*
 * test_sandbox.c: the worker sandbox (worker/sandbox.c, DESIGN.md §2).
 *
 * The sandbox cannot be undone, so every test forks its own child that
 * applies it, reports back over a pipe and then does one thing; the test
 * (unsandboxed) judges the child from the outside: its exit status or
 * killing signal, and /proc/CHILD/{status,limits,ns}.  After the sandbox a
 * child only uses write/read on inherited pipes and _exit/exit, never
 * check's own API.
 */
#include <check.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <seccomp.h>

#include "sandbox.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifndef TEST_ASAN
#define TEST_ASAN 0
#endif

/* Exit codes of a sandboxed child that did not get killed. */
#define CHILD_APPLY_FAILED 120
#define CHILD_REPORT_FAILED 121
#define CHILD_SURVIVED 122	/* a forbidden call returned */
#define CHILD_BAD 123		/* an allowed operation misbehaved */
#define CHILD_EPERM 124		/* a forbidden call failed with EPERM */

struct child {
	pid_t pid;
	int from;	/* read end: report, then whatever the body writes */
	int to;		/* write end: "go" and data for the body */
	struct sandbox_report rep;
};

/* Runs in the child after the sandbox: in reads from the test, out writes
 * to it.  Returning means success (exit(0), with atexit handlers, like a
 * worker leaving main). */
typedef void (*body_fn)(int in, int out, void *arg);

/* ---- Helpers (unsandboxed side) ---------------------------------------- */

static ssize_t
read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* Forks a child that applies the sandbox, sends its report and runs body.
 * prep (if any) runs in the child before the sandbox. */
static void
child_start_prep(struct child *c, void (*prep)(void *), body_fn body, void *arg)
{
	int up[2], down[2];

	ck_assert_int_eq(pipe(up), 0);
	ck_assert_int_eq(pipe(down), 0);
	c->pid = fork();
	ck_assert_int_ge(c->pid, 0);
	if (c->pid == 0) {
		struct sandbox_report rep;
		struct err e;

		close(up[0]);
		close(down[1]);
		if (prep != NULL)
			prep(arg);
		if (sandbox_apply(&rep, &e) < 0)
			_exit(CHILD_APPLY_FAILED);
		if (write(up[1], &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
			_exit(CHILD_REPORT_FAILED);
		body(down[0], up[1], arg);
		exit(0);
	}
	close(up[1]);
	close(down[0]);
	c->from = up[0];
	c->to = down[1];
	ck_assert_int_eq(read_full(c->from, &c->rep, sizeof(c->rep)),
	    (ssize_t)sizeof(c->rep));
}

static void
child_start(struct child *c, body_fn body, void *arg)
{
	child_start_prep(c, NULL, body, arg);
}

static int
child_wait(struct child *c)
{
	int status;

	close(c->to);
	close(c->from);
	while (waitpid(c->pid, &status, 0) < 0)
		ck_assert_int_eq(errno, EINTR);
	return status;
}

static void
assert_exit0(int status)
{
	if (WIFSIGNALED(status))
		ck_abort_msg("child killed by signal %d (%s)", WTERMSIG(status),
		    sigabbrev_np(WTERMSIG(status)));
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
}

static void
assert_signal(int status, int sig)
{
	if (WIFEXITED(status))
		ck_abort_msg("child exited with %d, expected SIG%s",
		    WEXITSTATUS(status), sigabbrev_np(sig));
	ck_assert(WIFSIGNALED(status));
	ck_assert_msg(WTERMSIG(status) == sig, "killed by SIG%s, expected SIG%s",
	    sigabbrev_np(WTERMSIG(status)), sigabbrev_np(sig));
}

/* The value of "Key:" in /proc/PID/status. */
static int
proc_status_field(pid_t pid, const char *key, char *out, size_t outlen)
{
	char path[64], line[512];
	size_t klen = strlen(key);
	FILE *f;
	int found = -1;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
			char *v = line + klen + 1;

			v += strspn(v, " \t");
			v[strcspn(v, "\n")] = '\0';
			snprintf(out, outlen, "%s", v);
			found = 0;
			break;
		}
	}
	fclose(f);
	return found;
}

/* The soft limit column of a "Max ..." line in /proc/PID/limits. */
static int
proc_limit(pid_t pid, const char *name, char *out, size_t outlen)
{
	char path[64], line[512];
	FILE *f;
	int found = -1;

	snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		/* Columns: name (26 chars), soft (21), hard (21), units. */
		if (strncmp(line, name, strlen(name)) == 0 && strlen(line) > 26) {
			char *v = line + 26;

			v[strcspn(v, " ")] = '\0';
			snprintf(out, outlen, "%s", v);
			found = 0;
			break;
		}
	}
	fclose(f);
	return found;
}

static void
ns_link(pid_t pid, const char *ns, char *out, size_t outlen)
{
	char path[64];
	ssize_t n;

	if (pid == 0)
		snprintf(path, sizeof(path), "/proc/self/ns/%s", ns);
	else
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)pid, ns);
	n = readlink(path, out, outlen - 1);
	ck_assert_msg(n > 0, "readlink %s: %s", path, strerror(errno));
	out[n] = '\0';
}

/* ---- Bodies (sandboxed side) ------------------------------------------ */

/* Waits until the test closes its end (or sends a byte). */
static void
body_block(int in, int out, void *arg)
{
	char c;

	(void)out;
	(void)arg;
	while (read(in, &c, 1) < 0 && errno == EINTR)
		;
}

/* One forbidden operation per index; each must kill the child. */
static const char *const forbidden_names[] = {
	"open", "SYS_open", "openat", "socket AF_UNIX", "socket AF_INET",
	"socketpair", "fork", "pthread_create", "execve", "kill parent",
	"tgkill parent", "mmap PROT_EXEC", "mprotect PROT_EXEC",
	"setrlimit raise", "prctl", "unshare", "ptrace", "fstat", "ioctl",
	"memfd_create", "dup", "chdir", "tkill", "mmap memfd PROT_EXEC",
	"mmap memfd MAP_PRIVATE", "mmap memfd PROT_READ|PROT_WRITE|PROT_EXEC",
};

/* A memfd like an encode worker's shared buffer, made before the child
 * forks (the child inherits it, as a worker receives one). */
static int forbidden_memfd = -1;
#define NFORBIDDEN ((int)(sizeof(forbidden_names) / sizeof(forbidden_names[0])))

static void *
thread_fn(void *arg)
{
	return arg;
}

static void
body_forbidden(int in, int out, void *arg)
{
	int which = *(int *)arg;
	struct rlimit rl = { 1024, 1024 };
	struct stat st;
	struct termios tio;
	pthread_t th;
	void *p;

	(void)in;
	(void)out;
	switch (which) {
	case 0: (void)open("/etc/passwd", O_RDONLY); break;
	case 1:
		/* Sanitizer builds answer the raw open(2) with EPERM (the
		 * runtime's reports use it); glibc's open() is openat. */
		if (syscall(SYS_open, "/etc/passwd", O_RDONLY) < 0 && errno == EPERM)
			_exit(CHILD_EPERM);
		break;
	case 2: (void)openat(AT_FDCWD, "/etc/passwd", O_RDONLY); break;
	case 3: (void)socket(AF_UNIX, SOCK_STREAM, 0); break;
	case 4: (void)socket(AF_INET, SOCK_STREAM, 0); break;
	case 5: {
		int sv[2];

		(void)socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
		break;
	}
	case 6:
		if (fork() == 0)
			_exit(0);
		break;
	case 7: (void)pthread_create(&th, NULL, thread_fn, NULL); break;
	case 8: {
		char *argv[] = { "/bin/true", NULL };

		execv("/bin/true", argv);
		break;
	}
	case 9: (void)kill(getppid(), 0); break;
	case 10: (void)syscall(SYS_tgkill, getppid(), getppid(), 0); break;
	case 11:
		(void)mmap(NULL, 4096, PROT_READ | PROT_EXEC,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		break;
	case 12:
		p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			_exit(CHILD_BAD);
		(void)mprotect(p, 4096, PROT_READ | PROT_EXEC);
		break;
	case 13: (void)setrlimit(RLIMIT_NOFILE, &rl); break;
	case 14: (void)prctl(PR_SET_DUMPABLE, 1, 0, 0, 0); break;
	case 15: (void)unshare(CLONE_NEWNET); break;
	case 16: (void)syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0); break;
	case 17: (void)fstat(1, &st); break;
	case 18:	/* EPERM in sanitizer builds, like case 1 */
		if (ioctl(2, TCGETS, &tio) < 0 && errno == EPERM)
			_exit(CHILD_EPERM);
		break;
	case 19: (void)syscall(SYS_memfd_create, "x", 0); break;
	case 20: (void)dup(0); break;
	case 21: (void)chdir("/"); break;
	case 22: (void)syscall(SYS_tkill, (pid_t)syscall(SYS_gettid), 0); break;
	case 23:
		(void)mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_SHARED, forbidden_memfd, 0);
		break;
	case 24:
		(void)mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, forbidden_memfd, 0);
		break;
	case 25:
		(void)mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_SHARED,
		    forbidden_memfd, 0);
		break;
	}
	_exit(CHILD_SURVIVED);
}

static volatile sig_atomic_t usr1_seen;

static void
on_usr1(int sig)
{
	(void)sig;
	usr1_seen = 1;
}

static void
prep_usr1(void *arg)
{
	struct sigaction sa = { 0 };

	(void)arg;
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
}

/* ---- The job loop a worker runs ---------------------------------------- */

struct job_env {
	EVP_KDF_CTX *kctx;
	EVP_CIPHER_CTX *cctx;
	uint8_t seed_before[32];
	int sv;	/* child's end of a socketpair, for recvmsg/sendmsg */
	int errw;	/* stderr is redirected here before the sandbox */
};

static int
scrypt32(EVP_KDF_CTX *kctx, uint64_t n, uint8_t out[32])
{
	uint32_t r = 8, p = 1;
	uint64_t maxmem = (uint64_t)128 * r * (n + p + 2) + (1 << 20);
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD,
		    (void *)"password", 8),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
		    (void *)"farmd-encode-v1", 15),
		OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n),
		OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r),
		OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p),
		OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem),
		OSSL_PARAM_construct_end(),
	};

	return EVP_KDF_derive(kctx, out, 32, params) == 1 ? 0 : -1;
}

static int
chacha(EVP_CIPHER_CTX *cctx, const uint8_t key[32], uint8_t *buf, size_t len)
{
	static const uint8_t iv[16];	/* counter 0, nonce 0 */
	int outl;

	if (EVP_EncryptInit_ex2(cctx, NULL, key, iv, NULL) != 1)
		return -1;
	if (EVP_EncryptUpdate(cctx, buf, &outl, buf, (int)len) != 1)
		return -1;
	return 0;
}

/* Before the sandbox: what job_ctx_new() does in the worker - fetch the
 * algorithms and run each once. */
static void
job_prep(void *arg)
{
	struct job_env *env = arg;
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
	EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, "ChaCha20", NULL);
	uint8_t buf[64] = { 0 };

	if (kdf == NULL || cipher == NULL)
		_exit(CHILD_BAD);
	env->kctx = EVP_KDF_CTX_new(kdf);
	env->cctx = EVP_CIPHER_CTX_new();
	EVP_KDF_free(kdf);
	if (env->kctx == NULL || env->cctx == NULL)
		_exit(CHILD_BAD);
	if (EVP_EncryptInit_ex2(env->cctx, cipher, NULL, NULL, NULL) != 1)
		_exit(CHILD_BAD);
	EVP_CIPHER_free(cipher);
	/* Production parameters: N=16384, r=8 -> 16 MiB work area. */
	if (scrypt32(env->kctx, 16384, env->seed_before) < 0 ||
	    chacha(env->cctx, env->seed_before, buf, sizeof(buf)) < 0)
		_exit(CHILD_BAD);
	prep_usr1(NULL);
	if (dup2(env->errw, STDERR_FILENO) < 0)
		_exit(CHILD_BAD);
	close(env->errw);
}

#define CHECK(cond) do { if (!(cond)) { \
	char m_[128]; int n_ = snprintf(m_, sizeof(m_), "job loop: line %d\n", __LINE__); \
	(void)!write(out, m_, (size_t)n_); _exit(CHILD_BAD); } } while (0)

static void
body_job(int in, int out, void *arg)
{
	struct job_env *env = arg;
	struct timespec t0, t1, nap = { 0, 1000000 };
	uint8_t seed[32];
	char buf[256], cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov;
	struct msghdr mh;
	struct cmsghdr *cm;
	uint8_t *big, *p;
	size_t big_len = 64u << 20;
	int memfd, n;

	CHECK(clock_gettime(CLOCK_MONOTONIC, &t0) == 0);
	CHECK(clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1) == 0);

	/* malloc/free of big blocks, realloc growth (mremap), calloc. */
	for (int round = 0; round < 3; round++) {
		big = malloc(big_len);
		CHECK(big != NULL);
		memset(big, 0xa5, big_len);
		p = realloc(big, big_len * 2);
		CHECK(p != NULL && p[big_len - 1] == 0xa5);
		memset(p + big_len, 0x5a, big_len);
		free(p);
		p = calloc(1, 1u << 20);
		CHECK(p != NULL && p[12345] == 0);
		free(p);
	}
	/* Many small allocations: brk growth and trimming. */
	{
		void *ptrs[4096];

		for (int i = 0; i < 4096; i++)
			CHECK((ptrs[i] = malloc((size_t)(i % 512) * 64 + 1)) != NULL);
		for (int i = 0; i < 4096; i++)
			free(ptrs[i]);
	}

	/* The encoding kernel: scrypt (16 MiB work area) and ChaCha20. */
	CHECK(scrypt32(env->kctx, 16384, seed) == 0);
	CHECK(memcmp(seed, env->seed_before, sizeof(seed)) == 0);
	big = malloc(4u << 20);
	CHECK(big != NULL);
	memset(big, 0, 4u << 20);
	CHECK(chacha(env->cctx, seed, big, 4u << 20) == 0);
	CHECK(chacha(env->cctx, seed, big, 4u << 20) == 0);
	for (size_t i = 0; i < (4u << 20); i += 4096)
		CHECK(big[i] == 0);
	free(big);

	/* Log lines: snprintf + write(2), and stdio on (unbuffered) stderr. */
	n = snprintf(buf, sizeof(buf), "farmd-worker[%d]: info: job %d done in %.3f ms\n",
	    (int)getpid(), 7, 1.5);
	CHECK(write(STDERR_FILENO, buf, (size_t)n) == n);
	CHECK(fprintf(stderr, "fprintf %s %d\n", "works", 42) > 0);

	/* A message with a memfd over the IPC socket (recvmsg + SCM_RIGHTS),
	 * map it, answer with sendmsg. */
	memset(&mh, 0, sizeof(mh));
	iov.iov_base = buf;
	iov.iov_len = sizeof(buf);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	CHECK(recvmsg(env->sv, &mh, MSG_CMSG_CLOEXEC) == 4);
	cm = CMSG_FIRSTHDR(&mh);
	CHECK(cm != NULL && cm->cmsg_type == SCM_RIGHTS);
	memcpy(&memfd, CMSG_DATA(cm), sizeof(int));
	p = mmap(NULL, 1u << 20, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	CHECK(p != MAP_FAILED);
	CHECK(p[0] == 'M' && p[(1u << 20) - 1] == 'Z');
	p[1] = 'W';
	CHECK(munmap(p, 1u << 20) == 0);
	CHECK(read(memfd, buf, 2) == 2 && buf[0] == 'M' && buf[1] == 'W');
	CHECK(close(memfd) == 0);
	iov.iov_base = "done";
	iov.iov_len = 4;
	mh.msg_control = NULL;
	mh.msg_controllen = 0;
	CHECK(sendmsg(env->sv, &mh, MSG_NOSIGNAL) == 4);

	/* Plain pipes, readv/writev. */
	{
		struct iovec v[2] = { { "ab", 2 }, { "cd", 2 } };

		CHECK(writev(out, v, 2) == 4);
		CHECK(read(in, buf, 3) == 3 && memcmp(buf, "xyz", 3) == 0);
	}

	/* Time, sleeping, identity, randomness, signals to self. */
	CHECK(nanosleep(&nap, NULL) == 0);
	CHECK(clock_nanosleep(CLOCK_MONOTONIC, 0, &nap, NULL) == 0);
	CHECK(clock_gettime(CLOCK_MONOTONIC, &t1) == 0);
	CHECK(t1.tv_sec > t0.tv_sec || t1.tv_nsec > t0.tv_nsec);
	CHECK(getpid() > 0 && gettid() > 0);
	CHECK(getrandom(buf, 16, 0) == 16);
	{
		sigset_t set;

		sigemptyset(&set);
		sigaddset(&set, SIGUSR1);
		CHECK(sigprocmask(SIG_BLOCK, &set, NULL) == 0);
		CHECK(raise(SIGUSR1) == 0);	/* tgkill(own pid) */
		CHECK(!usr1_seen);
		CHECK(sigprocmask(SIG_UNBLOCK, &set, NULL) == 0);
		CHECK(usr1_seen);		/* handler ran, rt_sigreturn */
	}
	/* Leaving through exit(): atexit handlers (OpenSSL's cleanup, stdio
	 * flushing) run inside the sandbox too. */
}

/* ---- Tests ------------------------------------------------------------ */

START_TEST(test_layer_names)
{
	ck_assert_str_eq(sandbox_layer_name(SANDBOX_RLIMITS), "rlimits");
	ck_assert_str_eq(sandbox_layer_name(SANDBOX_NO_NEW_PRIVS), "no_new_privs");
	ck_assert_str_eq(sandbox_layer_name(SANDBOX_NAMESPACES), "namespaces");
	ck_assert_str_eq(sandbox_layer_name(SANDBOX_LANDLOCK), "landlock");
	ck_assert_str_eq(sandbox_layer_name(SANDBOX_SECCOMP), "seccomp");
	ck_assert_str_eq(sandbox_layer_name(SANDBOX_NLAYERS), "unknown");
	ck_assert_str_eq(sandbox_layer_name((enum sandbox_layer)-1), "unknown");
}
END_TEST

START_TEST(test_report)
{
	struct child c;

	child_start(&c, body_block, NULL);
	for (int l = 0; l < SANDBOX_NLAYERS; l++)
		ck_assert_msg(c.rep.detail[l][0] != '\0', "%s: empty detail",
		    sandbox_layer_name(l));
	/* Available on every kernel farmd supports; the kill tests rely on
	 * seccomp. */
	ck_assert_msg(c.rep.active[SANDBOX_RLIMITS], "%s", c.rep.detail[SANDBOX_RLIMITS]);
	ck_assert_msg(c.rep.active[SANDBOX_NO_NEW_PRIVS], "%s", c.rep.detail[SANDBOX_NO_NEW_PRIVS]);
	ck_assert_msg(c.rep.active[SANDBOX_SECCOMP], "%s", c.rep.detail[SANDBOX_SECCOMP]);
	if (TEST_ASAN)
		ck_assert_ptr_nonnull(strstr(c.rep.detail[SANDBOX_RLIMITS],
		    "AddressSanitizer"));
	if (c.rep.active[SANDBOX_LANDLOCK])
		ck_assert_ptr_nonnull(strstr(c.rep.detail[SANDBOX_LANDLOCK], "ABI "));
	else
		ck_assert_ptr_nonnull(strstr(c.rep.detail[SANDBOX_LANDLOCK],
		    "ABI 0"));
	fprintf(stderr, "sandbox report:\n");
	for (int l = 0; l < SANDBOX_NLAYERS; l++)
		fprintf(stderr, "  %s: %s (%s)\n", sandbox_layer_name(l),
		    c.rep.active[l] ? "active" : "unavailable", c.rep.detail[l]);
	assert_exit0(child_wait(&c));
}
END_TEST

/* fds 1 and 2 to /dev/null: not regular files, so RLIMIT_FSIZE is 0. */
static void
prep_quiet(void *arg)
{
	int fd = open("/dev/null", O_WRONLY);

	(void)arg;
	if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
		_exit(CHILD_BAD);
	close(fd);
}

START_TEST(test_proc_view)
{
	static const char *const nss[] = { "user", "mnt", "net", "ipc" };
	static const char *const names[] = { "user", "mount", "net", "ipc" };
	char v[128], mine[128], theirs[128];
	struct child c;

	child_start_prep(&c, prep_quiet, body_block, NULL);
	ck_assert_ptr_nonnull(strstr(c.rep.detail[SANDBOX_RLIMITS], "fsize 0"));

	ck_assert_int_eq(proc_status_field(c.pid, "NoNewPrivs", v, sizeof(v)), 0);
	ck_assert_str_eq(v, "1");
	ck_assert_int_eq(proc_status_field(c.pid, "Seccomp", v, sizeof(v)), 0);
	ck_assert_str_eq(v, "2");
	if (proc_status_field(c.pid, "Seccomp_filters", v, sizeof(v)) == 0)
		ck_assert_str_eq(v, "1");

	ck_assert_int_eq(proc_limit(c.pid, "Max core file size", v, sizeof(v)), 0);
	ck_assert_str_eq(v, "0");
	ck_assert_int_eq(proc_limit(c.pid, "Max file size", v, sizeof(v)), 0);
	ck_assert_str_eq(v, "0");
	ck_assert_int_eq(proc_limit(c.pid, "Max open files", v, sizeof(v)), 0);
	ck_assert_str_eq(v, "16");
	ck_assert_int_eq(proc_limit(c.pid, "Max address space", v, sizeof(v)), 0);
	ck_assert_str_eq(v, TEST_ASAN ? "unlimited" : "8589934592");
	/* NPROC is per uid and shared with the supervisor: untouched. */
	{
		struct rlimit rl;
		char want[32];

		ck_assert_int_eq(getrlimit(RLIMIT_NPROC, &rl), 0);
		if (rl.rlim_cur == RLIM_INFINITY)
			snprintf(want, sizeof(want), "unlimited");
		else
			snprintf(want, sizeof(want), "%llu",
			    (unsigned long long)rl.rlim_cur);
		ck_assert_int_eq(proc_limit(c.pid, "Max processes", v, sizeof(v)), 0);
		ck_assert_str_eq(v, want);
	}

	/* Every namespace the report names as in force differs from ours. */
	if (c.rep.active[SANDBOX_NAMESPACES]) {
		const char *d = c.rep.detail[SANDBOX_NAMESPACES];
		size_t on_len = strcspn(d, ";");
		int n_on = 0;

		for (size_t i = 0; i < 4; i++) {
			const char *hit = strstr(d, names[i]);
			bool on = hit != NULL && (size_t)(hit - d) < on_len;

			ns_link(0, nss[i], mine, sizeof(mine));
			ns_link(c.pid, nss[i], theirs, sizeof(theirs));
			if (on) {
				n_on++;
				ck_assert_msg(strcmp(mine, theirs) != 0,
				    "%s namespace not new: %s", nss[i], theirs);
			} else {
				ck_assert_str_eq(mine, theirs);
			}
		}
		ck_assert_int_gt(n_on, 0);
	} else {
		ns_link(0, "net", mine, sizeof(mine));
		ns_link(c.pid, "net", theirs, sizeof(theirs));
		ck_assert_str_eq(mine, theirs);
	}
	assert_exit0(child_wait(&c));
}
END_TEST

START_TEST(test_forbidden)
{
	int which = _i;
	struct child c;

	ck_assert_int_lt(which, NFORBIDDEN);
	forbidden_memfd = (int)syscall(SYS_memfd_create, "buffer", 0);
	ck_assert_int_ge(forbidden_memfd, 0);
	ck_assert_int_eq(ftruncate(forbidden_memfd, 4096), 0);
	child_start(&c, body_forbidden, &which);
	{
		bool sanitizer = strstr(c.rep.detail[SANDBOX_SECCOMP],
		    "fail with EPERM") != NULL;
		int status = child_wait(&c);

		if (sanitizer && (which == 1 || which == 18) &&
		    WIFEXITED(status) && WEXITSTATUS(status) == CHILD_EPERM)
			return;
		if (WIFEXITED(status))
			ck_abort_msg("%s: child exited with %d instead of dying of SIGSYS",
			    forbidden_names[which], WEXITSTATUS(status));
		ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS,
		    "%s: killed by SIG%s, expected SIGSYS", forbidden_names[which],
		    sigabbrev_np(WTERMSIG(status)));
	}
}
END_TEST

START_TEST(test_job_loop)
{
	struct job_env env = { 0 };
	int sv[2], errp[2], memfd, status;
	char buf[4096], cbuf[CMSG_SPACE(sizeof(int))];
	struct msghdr mh = { 0 };
	struct iovec iov;
	struct cmsghdr *cm;
	struct child c;
	uint8_t *p;
	ssize_t n;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	ck_assert_int_eq(pipe(errp), 0);
	env.sv = sv[1];
	env.errw = errp[1];
	child_start_prep(&c, job_prep, body_job, &env);
	close(sv[1]);
	close(errp[1]);

	/* The supervisor's side: a memfd with a payload. */
	memfd = (int)syscall(SYS_memfd_create, "sector", MFD_CLOEXEC);
	ck_assert_int_ge(memfd, 0);
	ck_assert_int_eq(ftruncate(memfd, 1 << 20), 0);
	p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	p[0] = 'M';
	p[(1 << 20) - 1] = 'Z';
	iov.iov_base = "job!";
	iov.iov_len = 4;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &memfd, sizeof(int));
	ck_assert_int_eq(sendmsg(sv[0], &mh, 0), 4);

	n = read_full(c.from, buf, 4);
	if (n != 4) {
		/* The body failed: show why. */
		status = child_wait(&c);
		n = read(errp[0], buf, sizeof(buf) - 1);
		buf[n > 0 ? n : 0] = '\0';
		ck_abort_msg("job loop child: status 0x%x, stderr: %s", status, buf);
	}
	ck_assert_int_eq(memcmp(buf, "abcd", 4), 0);
	ck_assert_int_eq(write(c.to, "xyz", 3), 3);
	ck_assert_int_eq(recv(sv[0], buf, 4, 0), 4);
	ck_assert_int_eq(memcmp(buf, "done", 4), 0);
	ck_assert_int_eq(p[1], 'W');	/* written through the child's mapping */

	status = child_wait(&c);
	n = read_full(errp[0], buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = '\0';
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fprintf(stderr, "job loop child stderr: %s\n", buf);
	assert_exit0(status);
	ck_assert_ptr_nonnull(strstr(buf, "info: job 7 done in 1.500 ms\n"));
	ck_assert_ptr_nonnull(strstr(buf, "fprintf works 42\n"));
	munmap(p, 1 << 20);
	close(memfd);
	close(sv[0]);
	close(errp[0]);
}
END_TEST

/* RLIMIT_FSIZE 0: writing to an inherited regular file raises SIGXFSZ. */
struct fsize_env {
	int fd;		/* a regular file */
	bool as_stderr;	/* ... made stderr before the sandbox */
};

static void
prep_fsize(void *arg)
{
	struct fsize_env *env = arg;

	prep_quiet(NULL);
	if (env->as_stderr && dup2(env->fd, STDERR_FILENO) < 0)
		_exit(CHILD_BAD);
}

static void
body_fsize(int in, int out, void *arg)
{
	struct fsize_env *env = arg;
	static const char line[] = "farmd-worker[1]: info: a log line\n";

	(void)in;
	(void)out;
	if (write(env->as_stderr ? STDERR_FILENO : env->fd, line,
	    sizeof(line) - 1) != (ssize_t)sizeof(line) - 1)
		_exit(CHILD_BAD);
}

START_TEST(test_fsize)
{
	struct fsize_env env;
	struct child c;

	env.fd = (int)syscall(SYS_memfd_create, "log", 0);	/* S_IFREG */
	ck_assert_int_ge(env.fd, 0);

	/* A regular file that is not stdout/stderr: capped, writing kills. */
	env.as_stderr = false;
	child_start_prep(&c, prep_fsize, body_fsize, &env);
	ck_assert_ptr_nonnull(strstr(c.rep.detail[SANDBOX_RLIMITS], "fsize 0"));
	assert_signal(child_wait(&c), SIGXFSZ);

	/* Even stderr on a regular file is capped: farmd relays worker
	 * stderr through a pipe, so a file there is a misconfiguration. */
	env.as_stderr = true;
	child_start_prep(&c, prep_fsize, body_fsize, &env);
	ck_assert_ptr_nonnull(strstr(c.rep.detail[SANDBOX_RLIMITS], "fsize 0"));
	assert_signal(child_wait(&c), SIGXFSZ);
	close(env.fd);
}
END_TEST

static void
body_abort(int in, int out, void *arg)
{
	(void)in;
	(void)out;
	(void)arg;
	abort();
}

static void
prep_abort_handler(void *arg)
{
	(void)arg;
	signal(SIGABRT, on_usr1);	/* a handler that returns */
}

/* abort() is how a worker crashes on purpose: it must die of SIGABRT, not
 * SIGSYS, with and without a SIGABRT handler installed. */
START_TEST(test_abort)
{
	struct child c;

	child_start(&c, body_abort, NULL);
	assert_signal(child_wait(&c), SIGABRT);
	child_start_prep(&c, prep_abort_handler, body_abort, NULL);
	assert_signal(child_wait(&c), SIGABRT);
}
END_TEST

static void
body_sleep(int in, int out, void *arg)
{
	struct timespec ts = { 0, 300 * 1000000 }, rem;

	(void)in;
	(void)arg;
	(void)!write(out, "s", 1);
	/* Interrupted by SIGSTOP/SIGCONT: the kernel restarts it with
	 * restart_syscall. */
	if (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL) != 0)
		_exit(CHILD_BAD);
	/* Interrupted by a handled signal: EINTR, handler ran. */
	ts.tv_sec = 5;
	ts.tv_nsec = 0;
	(void)!write(out, "t", 1);
	if (nanosleep(&ts, &rem) < 0 && errno != EINTR)
		_exit(CHILD_BAD);
	if (!usr1_seen)		/* (a late sleeper sleeps the full 5 s) */
		_exit(CHILD_BAD);
}

START_TEST(test_sleep_signals)
{
	struct timespec ts = { 0, 50 * 1000000 };
	struct child c;
	char ch;

	child_start_prep(&c, prep_usr1, body_sleep, NULL);
	ck_assert_int_eq(read_full(c.from, &ch, 1), 1);
	nanosleep(&ts, NULL);
	ck_assert_int_eq(kill(c.pid, SIGSTOP), 0);
	nanosleep(&ts, NULL);
	ck_assert_int_eq(kill(c.pid, SIGCONT), 0);
	ck_assert_int_eq(read_full(c.from, &ch, 1), 1);
	nanosleep(&ts, NULL);
	ck_assert_int_eq(kill(c.pid, SIGUSR1), 0);
	assert_exit0(child_wait(&c));
}
END_TEST

static void
body_pause(int in, int out, void *arg)
{
	(void)in;
	(void)out;
	(void)arg;
	for (;;)
		pause();
}

/* The fault-injection hang: a pause()d worker stays alive until killed. */
START_TEST(test_hang)
{
	struct timespec ts = { 0, 100 * 1000000 };
	struct child c;
	int status;

	child_start(&c, body_pause, NULL);
	nanosleep(&ts, NULL);
	ck_assert_int_eq(waitpid(c.pid, &status, WNOHANG), 0);
	ck_assert_int_eq(kill(c.pid, SIGKILL), 0);
	assert_signal(child_wait(&c), SIGKILL);
}
END_TEST

START_TEST(test_check_print)
{
	char out[4096], *line, *save = NULL;
	int p[2], rc, nl = 0, all = 1;
	ssize_t n;

	ck_assert_int_eq(pipe(p), 0);
	rc = sandbox_check_print(p[1]);
	close(p[1]);
	n = read_full(p[0], out, sizeof(out) - 1);
	close(p[0]);
	ck_assert_int_gt(n, 0);
	out[n] = '\0';
	ck_assert_int_eq(out[n - 1], '\n');

	/* We are not sandboxed: opening files still works. */
	{
		int fd = open("/proc/self/status", O_RDONLY);

		ck_assert_int_ge(fd, 0);
		close(fd);
	}

	for (line = strtok_r(out, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save), nl++) {
		const char *name = sandbox_layer_name(nl);
		size_t len = strlen(name), ll = strlen(line);

		ck_assert_int_lt(nl, SANDBOX_NLAYERS);
		ck_assert_msg(strncmp(line, name, len) == 0 && line[len] == ':',
		    "line %d: %s", nl, line);
		if (strncmp(line + len, ": active (", 10) == 0) {
			;
		} else {
			ck_assert_msg(strncmp(line + len, ": unavailable (", 15) == 0,
			    "line %d: %s", nl, line);
			all = 0;
		}
		ck_assert_int_eq(line[ll - 1], ')');
	}
	ck_assert_int_eq(nl, SANDBOX_NLAYERS);
	ck_assert_int_eq(rc, all ? 0 : 1);
}
END_TEST

/* An older or locked-down kernel, simulated with a seccomp filter under
 * the sandbox: no Landlock (ENOSYS) and no user namespaces (EPERM).  The
 * report says so, the other namespaces are still made, and
 * sandbox_check_print() answers 1. */
START_TEST(test_degraded)
{
	char out[4096];
	int p[2], status;
	pid_t pid;
	ssize_t n;

	ck_assert_int_eq(pipe(p), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		scmp_filter_ctx f = seccomp_init(SCMP_ACT_ALLOW);

		close(p[0]);
		if (f == NULL ||
		    seccomp_rule_add(f, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
		    SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER)) < 0 ||
		    seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS),
		    SCMP_SYS(landlock_create_ruleset), 0) < 0 ||
		    seccomp_load(f) < 0)
			_exit(CHILD_BAD);
		seccomp_release(f);
		_exit(sandbox_check_print(p[1]));
	}
	close(p[1]);
	n = read_full(p[0], out, sizeof(out) - 1);
	close(p[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_int_gt(n, 0);
	out[n] = '\0';
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1,
	    "status 0x%x, output:\n%s", status, out);
	ck_assert_msg(strstr(out, "\nlandlock: unavailable (kernel ABI 0: ENOSYS)\n")
	    != NULL, "%s", out);
	ck_assert_msg(strstr(out,
	    "\nnamespaces: active (mount net ipc; not: user: EPERM)\n") != NULL,
	    "%s", out);
	ck_assert_msg(strstr(out, "\nseccomp: active (") != NULL, "%s", out);
	ck_assert_msg(strncmp(out, "rlimits: active (", 17) == 0, "%s", out);
}
END_TEST

static Suite *
sandbox_suite(void)
{
	Suite *s = suite_create("sandbox");
	TCase *tc = tcase_create("sandbox");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_layer_names);
	tcase_add_test(tc, test_report);
	tcase_add_test(tc, test_proc_view);
	tcase_add_loop_test(tc, test_forbidden, 0, NFORBIDDEN);
	tcase_add_test(tc, test_job_loop);
	tcase_add_test(tc, test_fsize);
	tcase_add_test(tc, test_abort);
	tcase_add_test(tc, test_sleep_signals);
	tcase_add_test(tc, test_hang);
	tcase_add_test(tc, test_check_print);
	tcase_add_test(tc, test_degraded);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(sandbox_suite());
	int failed;

	/* Each test forks its own sandboxed children; check's fork mode adds
	 * isolation between tests on top. */
	srunner_set_fork_status(sr, CK_FORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
