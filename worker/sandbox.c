/*
 * sandbox.c: the worker sandbox (DESIGN.md §2).
 *
 * sandbox_apply() puts five layers between a worker and the host, in this
 * order, and records each one in a struct sandbox_report:
 *
 *   rlimits       no core files, few descriptors, an address-space cap
 *                 (not under AddressSanitizer, whose shadow memory
 *                 reserves terabytes of address space) and no writes to
 *                 regular files;
 *   no_new_privs  nothing the worker could exec gains privileges (it
 *                 cannot exec anyway, see seccomp);
 *   namespaces    new user, mount, net and ipc namespaces: in the new user
 *                 namespace the worker's uid is unmapped and its
 *                 capabilities no longer reach the host, even though the
 *                 supervisor runs as root;
 *   landlock      a ruleset that handles every filesystem access right the
 *                 kernel's ABI knows and grants none, so every path lookup
 *                 that opens, creates, removes or executes is denied;
 *   seccomp       a libseccomp allowlist of what the job loop needs; any
 *                 other syscall kills the whole process (SIGSYS).
 *
 * A layer the kernel does not offer is reported unavailable with the
 * reason and is not an error: the supervisor decides whether that is fatal
 * ([daemon] sandbox_required).  Every layer is applied whole or not at
 * all (each ends in syscalls that take effect atomically; rlimits only
 * shrink), so sandbox_apply() never leaves the process in an unknown
 * state and does not return -1 today; the -1 is kept in the API for a
 * layer that could fail half-way.
 *
 * What runs after the sandbox (see the allowlist below): blocking
 * read/recvmsg and write/sendmsg on the IPC socket and on memfds received
 * over it, malloc/realloc/free up to ~1 GiB blocks, OpenSSL EVP scrypt and
 * ChaCha20 (fetched and run once before the sandbox closes), protobuf-c,
 * snprintf + write(2) for log lines, Lua 5.4 (malloc/realloc/free only:
 * compile and execute jobs, worker/lua_job.c; their SHA-256 is primed
 * before the sandbox, since OpenSSL's first digest opens its config file),
 * and in fault-injection builds sleeping, abort() and a forbidden open().
 */
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/landlock.h>
#include <seccomp.h>

#include "fdio.h"

/* ---- Build flavour ---------------------------------------------------- */

/* AddressSanitizer: its shadow memory reserves ~20 TiB of address space
 * (so no RLIMIT_AS), and its runtime includes LeakSanitizer. */
#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_ASAN 1
#endif
#endif
#ifndef SANDBOX_ASAN
#define SANDBOX_ASAN 0
#endif

/* Any sanitizer runtime (ASan, UBSan), which wants to print reports from
 * inside the sandbox.  GCC has no macro for -fsanitize=undefined alone; a
 * build can say so with -DFARMD_SANITIZER=1. */
#if SANDBOX_ASAN || defined(FARMD_SANITIZER)
#define SANDBOX_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(undefined_behavior_sanitizer)
#define SANDBOX_SANITIZER 1
#endif
#endif
#ifndef SANDBOX_SANITIZER
#define SANDBOX_SANITIZER 0
#endif

#if SANDBOX_SANITIZER
#include <sanitizer/common_interface_defs.h>
#endif
#if SANDBOX_ASAN
#include <sanitizer/lsan_interface.h>
#endif

/* ---- Tunables --------------------------------------------------------- */

/* Descriptors: 0, 1, 2, the IPC socket (3) and the few memfds a job may
 * carry over SCM_RIGHTS (FRAME_MAX_FDS), with room to spare. */
#define SANDBOX_NOFILE 16
/* Address space.  A production sector is ~1000 MiB (1000 pieces of 1 MiB)
 * and may be held several times over at once (received frame, unpacked
 * message, encoded output, packed reply), plus the scrypt work area
 * (16 lanes × 128·r·N: 256 MiB for the production profile, reused for the
 * worker's life) and the mapped libraries.  8 GiB leaves room for that while
 * still stopping a runaway allocation long before it hurts the host. */
#define SANDBOX_AS_LIMIT (8ULL << 30)

/* ---- Landlock constants the libc headers may not have ------------------ */

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif
#ifndef LANDLOCK_CREATE_RULESET_VERSION
#define LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#endif

/* Filesystem access rights by the ABI version that introduced them
 * (include/uapi/linux/landlock.h); defined here by value because the
 * installed headers may predate the running kernel. */
#define LL_FS_ABI1 ((1ULL << 13) - 1)	/* EXECUTE .. MAKE_SYM */
#define LL_FS_REFER (1ULL << 13)	/* ABI 2 */
#define LL_FS_TRUNCATE (1ULL << 14)	/* ABI 3 */
#define LL_FS_IOCTL_DEV (1ULL << 15)	/* ABI 5 */
#define LL_NET_BIND_TCP (1ULL << 0)	/* ABI 4 */
#define LL_NET_CONNECT_TCP (1ULL << 1)	/* ABI 4 */
#define LL_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)	/* ABI 6 */
#define LL_SCOPE_SIGNAL (1ULL << 1)	/* ABI 6 */
/* The newest ABI whose rights this file knows. */
#define LL_ABI_KNOWN 7

/* struct landlock_ruleset_attr as of ABI 6; older kernels are given a
 * prefix of it (the size argument says how much). */
struct ll_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;	/* ABI >= 4 */
	uint64_t scoped;		/* ABI >= 6 */
};

/* ---- Small helpers ---------------------------------------------------- */

static const char *
errname(int err)
{
	const char *s = strerrorname_np(err);

	return s != NULL ? s : "unknown error";
}

static void
set_layer(struct sandbox_report *rep, enum sandbox_layer l, bool active,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
set_layer(struct sandbox_report *rep, enum sandbox_layer l, bool active,
    const char *fmt, ...)
{
	va_list ap;

	rep->active[l] = active;
	va_start(ap, fmt);
	vsnprintf(rep->detail[l], sizeof(rep->detail[l]), fmt, ap);
	va_end(ap);
}

const char *
sandbox_layer_name(enum sandbox_layer layer)
{
	static const char *const names[SANDBOX_NLAYERS] = {
		[SANDBOX_RLIMITS] = "rlimits",
		[SANDBOX_NO_NEW_PRIVS] = "no_new_privs",
		[SANDBOX_NAMESPACES] = "namespaces",
		[SANDBOX_LANDLOCK] = "landlock",
		[SANDBOX_SECCOMP] = "seccomp",
	};

	if ((unsigned)layer >= SANDBOX_NLAYERS)
		return "unknown";
	return names[layer];
}

/* ---- Layer 1: rlimits ------------------------------------------------- */

static void
apply_rlimits(struct sandbox_report *rep)
{
	struct {
		int res;
		const char *name;
		rlim_t value;
	} lims[] = {
		{ RLIMIT_CORE, "core", 0 },
		{ RLIMIT_NOFILE, "nofile", SANDBOX_NOFILE },
#if !SANDBOX_ASAN
		{ RLIMIT_AS, "as", SANDBOX_AS_LIMIT },
#endif
		{ RLIMIT_FSIZE, "fsize", 0 },
	};
	size_t n = sizeof(lims) / sizeof(lims[0]);
	char fsize[48], as[48];

	/* RLIMIT_NPROC is deliberately left alone: it counts every process
	 * of the uid, and workers share the supervisor's uid.  seccomp stops
	 * fork/clone instead. */
	/* fsize 0 holds even for log lines: farmd gives workers a pipe as
	 * stderr and relays it, and the worker ignores SIGXFSZ in case it
	 * is run some other way with stderr on a file. */
	snprintf(fsize, sizeof(fsize), "fsize 0");
#if SANDBOX_ASAN
	snprintf(as, sizeof(as), "as not capped (AddressSanitizer build)");
#else
	snprintf(as, sizeof(as), "as %llu GiB", SANDBOX_AS_LIMIT >> 30);
#endif

	for (size_t i = 0; i < n; i++) {
		struct rlimit rl = { lims[i].value, lims[i].value };

		if (setrlimit(lims[i].res, &rl) < 0) {
			/* Limits only ever shrink, so the process is in a known
			 * state: the ones before this are in force. */
			set_layer(rep, SANDBOX_RLIMITS, false,
			    "setrlimit(%s): %s", lims[i].name, errname(errno));
			return;
		}
	}
	set_layer(rep, SANDBOX_RLIMITS, true, "core 0, nofile %d, %s, %s",
	    SANDBOX_NOFILE, as, fsize);
}

/* ---- Layer 2: no_new_privs -------------------------------------------- */

static void
apply_no_new_privs(struct sandbox_report *rep)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		set_layer(rep, SANDBOX_NO_NEW_PRIVS, false,
		    "prctl(PR_SET_NO_NEW_PRIVS): %s", errname(errno));
	else
		set_layer(rep, SANDBOX_NO_NEW_PRIVS, true, "set");
}

/* ---- Layer 3: namespaces ---------------------------------------------- */

static void
apply_namespaces(struct sandbox_report *rep)
{
	static const struct {
		int flag;
		const char *name;
	} ns[] = {
		{ CLONE_NEWUSER, "user" },
		{ CLONE_NEWNS, "mount" },
		{ CLONE_NEWNET, "net" },
		{ CLONE_NEWIPC, "ipc" },
	};
	const size_t n = sizeof(ns) / sizeof(ns[0]);
	int all = 0, done = 0, failed_err[4] = { 0 };
	char on[64] = "", off[96] = "";
	size_t lon = 0, loff = 0;

	for (size_t i = 0; i < n; i++)
		all |= ns[i].flag;

	if (unshare(all) == 0) {
		done = all;
	} else {
		/* Fall back one namespace at a time.  The user namespace goes
		 * first: once in it, the others need no host privilege. */
		for (size_t i = 0; i < n; i++) {
			if (unshare(ns[i].flag) == 0)
				done |= ns[i].flag;
			else
				failed_err[i] = errno;
		}
	}

	for (size_t i = 0; i < n; i++) {
		if (done & ns[i].flag)
			lon += snprintf(on + lon, sizeof(on) - lon, "%s%s",
			    lon ? " " : "", ns[i].name);
		else if (loff < sizeof(off))
			loff += snprintf(off + loff, sizeof(off) - loff,
			    "%s%s: %s", loff ? ", " : "", ns[i].name,
			    errname(failed_err[i]));
	}
	if (done == 0)
		set_layer(rep, SANDBOX_NAMESPACES, false, "unshare: %s", off);
	else if (done == all)
		set_layer(rep, SANDBOX_NAMESPACES, true, "%s", on);
	else
		set_layer(rep, SANDBOX_NAMESPACES, true, "%s; not: %s", on, off);
}

/* ---- Layer 4: landlock ------------------------------------------------ */

static void
apply_landlock(struct sandbox_report *rep)
{
	struct ll_ruleset_attr attr = { 0 };
	size_t size = sizeof(attr.handled_access_fs);
	char extra[64] = "";
	long abi;
	int fd;

	abi = syscall(SYS_landlock_create_ruleset, NULL, 0,
	    LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 0) {
		int err = errno;

		if (err == EOPNOTSUPP)
			set_layer(rep, SANDBOX_LANDLOCK, false,
			    "kernel ABI 0: %s (disabled at boot)", errname(err));
		else
			set_layer(rep, SANDBOX_LANDLOCK, false,
			    "kernel ABI 0: %s", errname(err));
		return;
	}

	attr.handled_access_fs = LL_FS_ABI1;
	if (abi >= 2)
		attr.handled_access_fs |= LL_FS_REFER;
	if (abi >= 3)
		attr.handled_access_fs |= LL_FS_TRUNCATE;
	if (abi >= 4) {
		attr.handled_access_net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP;
		size = offsetof(struct ll_ruleset_attr, scoped);
	}
	if (abi >= 5)
		attr.handled_access_fs |= LL_FS_IOCTL_DEV;
	if (abi >= 6) {
		attr.scoped = LL_SCOPE_ABSTRACT_UNIX_SOCKET | LL_SCOPE_SIGNAL;
		size = sizeof(attr);
	}
	if (abi >= 4)
		snprintf(extra, sizeof(extra), "; no tcp bind/connect%s",
		    abi >= 6 ? "; signals, abstract unix sockets scoped" : "");

	fd = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0U);
	if (fd < 0) {
		set_layer(rep, SANDBOX_LANDLOCK, false,
		    "kernel ABI %ld: landlock_create_ruleset: %s", abi,
		    errname(errno));
		return;
	}
	/* No rules: every handled access is denied everywhere. */
	if (syscall(SYS_landlock_restrict_self, fd, 0U) < 0) {
		int err = errno;

		close(fd);
		set_layer(rep, SANDBOX_LANDLOCK, false,
		    "kernel ABI %ld: landlock_restrict_self: %s", abi,
		    errname(err));
		return;
	}
	close(fd);
	set_layer(rep, SANDBOX_LANDLOCK, true,
	    "ABI %ld%s: all filesystem access denied (0x%llx)%s", abi,
	    abi > LL_ABI_KNOWN ? " (newer than this build knows)" : "",
	    (unsigned long long)attr.handled_access_fs, extra);
}

/* ---- Layer 5: seccomp ------------------------------------------------- */

/*
 * The allowlist.  Everything else kills the process (SCMP_ACT_KILL_PROCESS,
 * also for a foreign architecture's syscall ABI).
 */
static const int seccomp_allow[] = {
	/* IPC on fd 3 (frame.c: recvmsg/sendmsg), memfds, log lines. */
	SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev),
	SCMP_SYS(recvmsg), SCMP_SYS(sendmsg), SCMP_SYS(close),
	/* malloc/free/realloc: brk for the main arena, mmap/munmap for
	 * blocks over the mmap threshold (sectors, 16 MiB scrypt work area),
	 * mremap for realloc of mmapped blocks (Lua, protobuf-c buffers),
	 * madvise/mprotect for trimming.  mmap and mprotect are further
	 * restricted to non-executable protections below. */
	SCMP_SYS(brk), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(madvise),
	/* OpenSSL's (uncontended) locks; glibc's lock fallback. */
	SCMP_SYS(futex),
	/* Leaving. */
	SCMP_SYS(exit), SCMP_SYS(exit_group),
	/* Signals: return from a handler; glibc blocks signals around
	 * raise(), abort() resets a SIGABRT handler with rt_sigaction before
	 * re-raising (stage 2 of abort). */
	SCMP_SYS(rt_sigreturn), SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigaction),
	/* Time and sleeping (log timestamps, deadlines, fault-injection
	 * hang).  clock_gettime/gettimeofday/time are normally vDSO calls; the
	 * syscalls are their fallback (and CPU-time clocks always trap).
	 * restart_syscall: a sleep interrupted by SIGSTOP/SIGCONT (a debugger,
	 * ^Z under a shell) is resumed by the kernel through it. */
	SCMP_SYS(clock_gettime), SCMP_SYS(gettimeofday), SCMP_SYS(time),
	SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep), SCMP_SYS(pause),
	SCMP_SYS(restart_syscall),
	/* Identity: log lines carry the pid; raise() asks for both. */
	SCMP_SYS(getpid), SCMP_SYS(gettid),
	/* OpenSSL's DRBG reseeding. */
	SCMP_SYS(getrandom),
};

#if SANDBOX_SANITIZER
/*
 * Sanitizer builds only (never in a normal build).  An ASan/UBSan report
 * made inside the sandbox calls these; they are answered with EPERM
 * instead of killing the process, so the report gets printed (and the
 * runtime exits with its own status).  Nothing is executed, so this
 * widens nothing:
 *   ioctl     isatty(2) to decide on colours, once per report line;
 *   readlink  /proc/self/exe, the binary's name for the report;
 *   open      the runtime's raw open(2) of /proc/self/maps and
 *             /proc/self/cmdline (glibc's open() is openat, still fatal).
 * The symbolizer is primed before the sandbox closes (sandbox_apply), so
 * stack traces are still symbolized.
 */
static const int seccomp_errno_sanitizer[] = {
	SCMP_SYS(ioctl), SCMP_SYS(readlink), SCMP_SYS(open),
};
#endif
#if SANDBOX_ASAN
/*
 * AddressSanitizer builds only: allowed.  The compiler puts a call to
 * __asan_handle_no_return() before every noreturn call (exit, _exit,
 * abort, longjmp), and it asserts that sigaltstack(NULL, &old) succeeds
 * to learn whether it runs on the signal stack.  It only concerns the
 * calling thread's own signal stack.
 */
static const int seccomp_allow_asan[] = {
	SCMP_SYS(sigaltstack),
};
#endif

/* Syscalls allowed with conditions, in seccomp_build(): mmap (anonymous,
 * or MAP_SHARED of a given descriptor), mprotect, tgkill. */
#define SECCOMP_NCOND 3

static int
seccomp_build(scmp_filter_ctx ctx, const char **what)
{
	int rc;

	*what = "seccomp_attr_set";
	rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (rc < 0)
		return rc;
	/* A worker is single-threaded, but should a thread ever exist, the
	 * filter covers it too (or loading fails). */
	rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	if (rc < 0)
		return rc;

	*what = "seccomp_rule_add";
	for (size_t i = 0; i < sizeof(seccomp_allow) / sizeof(seccomp_allow[0]); i++) {
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, seccomp_allow[i], 0);
		if (rc < 0)
			return rc;
	}
#if SANDBOX_ASAN
	for (size_t i = 0; i < sizeof(seccomp_allow_asan) /
	    sizeof(seccomp_allow_asan[0]); i++) {
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, seccomp_allow_asan[i], 0);
		if (rc < 0)
			return rc;
	}
#endif
#if SANDBOX_SANITIZER
	for (size_t i = 0; i < sizeof(seccomp_errno_sanitizer) /
	    sizeof(seccomp_errno_sanitizer[0]); i++) {
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM),
		    seccomp_errno_sanitizer[i], 0);
		if (rc < 0)
			return rc;
	}
#endif

	/* W^X: no new executable memory (no JIT anywhere in a worker; Lua
	 * interprets bytecode).  mmap: anonymous memory (malloc), or a
	 * MAP_SHARED mapping of a descriptor the worker was given (it opens
	 * none: an encode worker's shared buffer, a memfd); never PROT_EXEC,
	 * and no MAP_PRIVATE file mapping (the way a loader maps code). */
	rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 2,
	    SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0),
	    SCMP_A3(SCMP_CMP_MASKED_EQ, MAP_ANONYMOUS, MAP_ANONYMOUS));
	if (rc < 0)
		return rc;
	rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 2,
	    SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0),
	    SCMP_A3(SCMP_CMP_MASKED_EQ, MAP_ANONYMOUS | MAP_TYPE, MAP_SHARED));
	if (rc < 0)
		return rc;
	rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
	    SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	if (rc < 0)
		return rc;

	/* abort()/raise() signal the calling thread: tgkill(getpid(), tid,
	 * sig).  Only our own thread group. */
	rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
	    SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid()));
	return rc;
}

static void
apply_seccomp(struct sandbox_report *rep)
{
	scmp_filter_ctx ctx;
	const char *what = "";
	int rc;

	ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	if (ctx == NULL) {
		set_layer(rep, SANDBOX_SECCOMP, false, "seccomp_init failed");
		return;
	}
	rc = seccomp_build(ctx, &what);
	if (rc < 0) {
		seccomp_release(ctx);
		set_layer(rep, SANDBOX_SECCOMP, false, "%s: %s", what,
		    errname(-rc));
		return;
	}
	/* The detail is written before loading: after it, formatting is
	 * still allowed (no syscalls) but keep the window small. */
	set_layer(rep, SANDBOX_SECCOMP, true,
	    "%zu syscalls allowed (no PROT_EXEC, tgkill to self), "
	    "any other kills the process%s",
	    sizeof(seccomp_allow) / sizeof(seccomp_allow[0]) + SECCOMP_NCOND
#if SANDBOX_ASAN
	    + sizeof(seccomp_allow_asan) / sizeof(seccomp_allow_asan[0])
#endif
	    ,
#if SANDBOX_ASAN
	    "; ASan build: +sigaltstack; ioctl, readlink, open fail with EPERM"
#elif SANDBOX_SANITIZER
	    "; sanitizer build: ioctl, readlink, open fail with EPERM"
#else
	    ""
#endif
	    );
	rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc < 0)
		set_layer(rep, SANDBOX_SECCOMP, false, "seccomp_load: %s",
		    errname(-rc));
}

/* ---- Everything ------------------------------------------------------- */

int
sandbox_apply(struct sandbox_report *rep, struct err *e)
{
	(void)e;
	memset(rep, 0, sizeof(*rep));

#if SANDBOX_ASAN
	/* LeakSanitizer's exit-time check stops the world with clone and
	 * ptrace and reads /proc/self/maps: none of that survives the
	 * sandbox.  Run the check now instead (it then skips the exit-time
	 * one); leaks made after this point go unreported.  (Under strace or
	 * gdb LSan cannot run and exits: use ASAN_OPTIONS=detect_leaks=0.) */
	__lsan_do_leak_check();
#endif
#if SANDBOX_SANITIZER
	{
		/* Let the runtime cache /proc/self/maps, and prime the
		 * symbolizer (it reads the binary's debug info once) so
		 * reports made inside the sandbox still show function names
		 * and lines. */
		__sanitizer_sandbox_arguments sa = { 0, -1, 0 };
		char buf[128];

		__sanitizer_sandbox_on_notify(&sa);
		__sanitizer_symbolize_pc(__builtin_return_address(0), "%p %F %L",
		    buf, sizeof(buf));
	}
#endif

	apply_rlimits(rep);
	apply_no_new_privs(rep);
	apply_namespaces(rep);
	apply_landlock(rep);
	apply_seccomp(rep);
	return 0;
}

/* ---- farmd-worker --check-sandbox ------------------------------------- */

/* What the probe child sends back: one write, well under PIPE_BUF. */
struct check_msg {
	int rc;
	struct sandbox_report rep;
	struct err err;
};

int
sandbox_check_print(int fd)
{
	struct check_msg msg;
	char line[sizeof(msg.rep.detail[0]) + 64];
	int p[2], status, all = 1;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0) {
		snprintf(line, sizeof(line), "error: pipe: %s\n", errname(errno));
		(void)fdio_write_all(fd, line, strlen(line));
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		snprintf(line, sizeof(line), "error: fork: %s\n", errname(errno));
		(void)fdio_write_all(fd, line, strlen(line));
		close(p[0]);
		close(p[1]);
		return 1;
	}
	if (pid == 0) {
		/* The probe: sandbox itself, report, leave without running
		 * the parent's atexit handlers. */
		close(p[0]);
		memset(&msg, 0, sizeof(msg));
		msg.rc = sandbox_apply(&msg.rep, &msg.err);
		_exit(fdio_write_all(p[1], &msg, sizeof(msg)) < 0 ? 1 : 0);
	}
	close(p[1]);
	memset(&msg, 0, sizeof(msg));
	if (fdio_read_all(p[0], &msg, sizeof(msg)) != (ssize_t)sizeof(msg))
		msg.rc = -2;
	close(p[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;

	if (msg.rc == -2) {
		if (WIFSIGNALED(status))
			snprintf(line, sizeof(line),
			    "error: sandbox probe killed by signal %d (%s)\n",
			    WTERMSIG(status), sigabbrev_np(WTERMSIG(status)) ?
			    sigabbrev_np(WTERMSIG(status)) : "?");
		else
			snprintf(line, sizeof(line),
			    "error: sandbox probe exited with status %d before reporting\n",
			    WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		(void)fdio_write_all(fd, line, strlen(line));
		return 1;
	}
	for (int l = 0; l < SANDBOX_NLAYERS; l++) {
		msg.rep.detail[l][sizeof(msg.rep.detail[l]) - 1] = '\0';
		snprintf(line, sizeof(line), "%s: %s (%s)\n",
		    sandbox_layer_name((enum sandbox_layer)l),
		    msg.rep.active[l] ? "active" : "unavailable",
		    msg.rep.detail[l]);
		if (fdio_write_all(fd, line, strlen(line)) < 0)
			return 1;
		if (!msg.rep.active[l])
			all = 0;
	}
	if (msg.rc < 0) {
		msg.err.msg[sizeof(msg.err.msg) - 1] = '\0';
		snprintf(line, sizeof(line), "error: %.150s\n", msg.err.msg);
		(void)fdio_write_all(fd, line, strlen(line));
		return 1;
	}
	return all ? 0 : 1;
}
