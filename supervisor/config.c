/*
 * config.c: farmd's INI configuration (DESIGN.md §14).
 *
 * Keys, defaults and (R) the keys a SIGHUP reloads:
 *
 * [daemon]    admin_socket = <state dir>/farmd.sock   admin_group =   monitor_group =
 *             sandbox_required = false   metrics_listen =   log_level = info (R)
 * [workers]   encode = <CPU count>   compile = 1   execute = 1   job_timeout = 60s (R)
 *             restart_backoff_max = 30s (R)   restart_intensity = 10 (R)
 *             restart_period = 60s (R)
 * [blocks]    compression = none   gc_delay = 10m (R)   resync_retry_base = 60s (R)
 *             budget = unlimited (R)   scrub_interval = 30d (R)   scrub_tranquility = 4 (R)
 * [history]   piece_size = 64K   pieces_per_segment = 16   keep_archived_blocks = true
 * [plotting]  max_sectors_per_farm = 2 (R)   retry_delay = 1s (R)
 * [cluster]   nats =   node = <hostname>-<hash>   user =   password =   creds =
 *             tls_ca =   plotter = false (R)   remote_plotting = off (R)
 *             verify_pieces = 2 (R)    (doc/CLUSTER.md; the connection keys are
 *                                       not reloadable: they name the server and
 *                                       who we are to it and to the peers)
 * [artifacts] cache_limit = 10G (R)   min_stale_time = 24h (R)   budget = unlimited (R)
 *             retry_cooldown = 15m (R)   max_retries = 5 (R)
 *             memory_limit = 64M (R)       (bytes one lua_State may hold, in compile
 *                                           and execute workers alike; 1M..4G)
 *             instruction_limit = 100000000 (R) (Lua VM instructions one execution
 *                                           may run, counted; 1000..10^12)
 *             Both limits are part of the artifact id (common/artifact_id.h), so
 *             reloading either is safe: requests made after the reload use new
 *             ids and get new artifacts; the old ones age out by pruning.
 *
 * A key flagged F_UNIMPL in keys[] would be parsed and checked but not
 * acted on yet; farmd refuses to start or reload with one set to anything
 * but its default (config_refuse_unimplemented), so a setting never
 * silently does nothing.  No key carries the flag today.
 *
 * farmd additions, in the same style:
 *
 * [daemon]    admin_clients_per_uid = 16   (admin connections one uid may hold
 *                                           open at once; 1..1024)
 *             max_frame = 64M              (largest frame accepted on worker and
 *                                           admin sockets; 4K..1G)
 * [workers]   worker_binary =              (the farmd-worker to run; empty: beside
 *                                           farmd, then the installed libexecdir;
 *                                           an absolute path to an executable file)
 *             encode_buffer = 16M          (the memfd each encode worker shares
 *                                           with farmd for its job's pieces, mapped
 *                                           once for the worker's life; 64K..1G; an
 *                                           encode job holds at most this many bytes)
 *
 * An empty admin_socket means <state dir>/farmd.sock (the caller resolves it);
 * empty admin_group / monitor_group mean no group; an empty metrics_listen
 * means no HTTP listener (http.c), and its port may be 0: any free port,
 * which `farmctl status` shows as http_listen.  metrics_listen is not
 * reloadable: a SIGHUP that changes it is refused, the listener stays.
 * An empty worker_binary means the search that main.c's farmd_worker_path
 * describes.  worker_binary is not reloadable: workers of two builds, with
 * possibly different protocols, would then run side by side.
 *
 * Value grammar (surrounding whitespace is ignored everywhere):
 *   size      DIGITS [K|M|G|T|KiB|MiB|GiB|TiB], suffix case-insensitive,
 *             powers of 1024, optional blanks between number and suffix; the
 *             budgets also take "unlimited".  No fractions, no sign.
 *   duration  one or more TERMs, TERM = DIGITS UNIT, UNIT = ms|s|m|h|d
 *             (lowercase), e.g. "90s", "1h30m"; a bare "0" is also accepted.
 *             Every duration key is capped at 3650d.
 *   count     DIGITS, checked against the key's range.
 *   boolean   true|false|yes|no|on|off|1|0 (case-insensitive).
 *   number    DIGITS[.DIGITS] (scrub_tranquility), non-negative, locale-free.
 *   group     an existing group name (checked with getgrnam_r).
 *   listen    HOST:PORT, PORT 0..65535 (0: any free one), an IPv6 HOST in
 *             brackets.
 *   program   an absolute path to an executable regular file (checked when
 *             the file is read).
 *
 * File syntax (inih): [section] headers, key = value lines, full-line
 * comments starting with ';' or '#', inline comments starting with " ;".
 * Leading whitespace is ignored, so indented lines are ordinary lines
 * (inih's continuation lines are not used).  Section and key names are
 * case-sensitive.
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <ini.h>

#define KIB (UINT64_C(1) << 10)
#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)

#define MS_S   UINT64_C(1000)
#define MS_M   (60 * MS_S)
#define MS_H   (60 * MS_M)
#define MS_D   (24 * MS_H)
#define DURATION_MAX (3650 * MS_D)

#define CONFIG_FILE_MAX (1 << 20)    /* bytes; a config file is small */

enum ktype {
	K_PATH,         /* admin_socket */
	K_PROGRAM,      /* worker_binary: absolute, an executable file */
	K_GROUP,
	K_LISTEN,
	K_BOOL,
	K_LOGLEVEL,
	K_COUNT,        /* uint32_t or uint64_t plain integer, [min, max] */
	K_SIZE,         /* uint64_t bytes, [min, max] */
	K_DURATION,     /* uint64_t ms, [min, max] */
	K_NUMBER,       /* double, [min, max] */
	K_COMPRESSION,  /* int level */
	K_STRING,       /* char[]: checked by F_TOKEN / F_FILE / F_URL */
	K_REMOTE,       /* enum config_remote_plotting */
};

#define F_RELOAD     0x1   /* SIGHUP may change it */
#define F_UNLIMITED  0x2   /* size: "unlimited" allowed */
#define F_POW2       0x4   /* must be a power of two */
#define F_UNIMPL     0x8   /* parsed and checked, but nothing acts on it yet */
#define F_TOKEN      0x10  /* string: a NATS subject token ([A-Za-z0-9_-]) */
#define F_FILE       0x20  /* string: empty or a readable regular file */
#define F_URL        0x40  /* string: empty or nats://|tls://HOST:PORT[,...] */

struct key {
	const char *section;
	const char *name;
	enum ktype type;
	size_t off, size;
	uint64_t min, max;
	unsigned flags;
};

#define FIELD(m) offsetof(struct config, m), sizeof(((struct config *)0)->m)

static const struct key keys[] = {
	{ "daemon", "admin_socket", K_PATH, FIELD(daemon.admin_socket), 0, 0, 0 },
	{ "daemon", "admin_group", K_GROUP, FIELD(daemon.admin_group), 0, 0, 0 },
	{ "daemon", "monitor_group", K_GROUP, FIELD(daemon.monitor_group), 0, 0, 0 },
	{ "daemon", "sandbox_required", K_BOOL, FIELD(daemon.sandbox_required), 0, 0, 0 },
	{ "daemon", "metrics_listen", K_LISTEN, FIELD(daemon.metrics_listen), 0, 0, 0 },
	{ "daemon", "log_level", K_LOGLEVEL, FIELD(daemon.log_level), 0, 0, F_RELOAD },
	{ "daemon", "admin_clients_per_uid", K_COUNT, FIELD(daemon.admin_clients_per_uid),
	  1, 1024, 0 },
	{ "daemon", "max_frame", K_SIZE, FIELD(daemon.max_frame), 4 * KIB, GIB, 0 },

	{ "workers", "encode", K_COUNT, FIELD(workers.encode), 0, 256, 0 },
	{ "workers", "compile", K_COUNT, FIELD(workers.compile), 0, 256, 0 },
	{ "workers", "execute", K_COUNT, FIELD(workers.execute), 0, 256, 0 },
	{ "workers", "worker_binary", K_PROGRAM, FIELD(workers.worker_binary), 0, 0, 0 },
	{ "workers", "encode_buffer", K_SIZE, FIELD(workers.encode_buffer), 64 * KIB, GIB, 0 },
	{ "workers", "job_timeout", K_DURATION, FIELD(workers.job_timeout_ms),
	  1, DURATION_MAX, F_RELOAD },
	{ "workers", "restart_backoff_max", K_DURATION, FIELD(workers.restart_backoff_max_ms),
	  0, DURATION_MAX, F_RELOAD },
	{ "workers", "restart_intensity", K_COUNT, FIELD(workers.restart_intensity),
	  1, 1000000, F_RELOAD },
	{ "workers", "restart_period", K_DURATION, FIELD(workers.restart_period_ms),
	  1, DURATION_MAX, F_RELOAD },

	{ "blocks", "compression", K_COMPRESSION, FIELD(blocks.compression_level), 0, 0, 0 },
	{ "blocks", "gc_delay", K_DURATION, FIELD(blocks.gc_delay_ms),
	  0, DURATION_MAX, F_RELOAD },
	{ "blocks", "resync_retry_base", K_DURATION, FIELD(blocks.resync_retry_base_ms),
	  0, DURATION_MAX, F_RELOAD },
	{ "blocks", "budget", K_SIZE, FIELD(blocks.budget),
	  0, CONFIG_UNLIMITED, F_RELOAD | F_UNLIMITED },
	{ "blocks", "scrub_interval", K_DURATION, FIELD(blocks.scrub_interval_ms),
	  0, DURATION_MAX, F_RELOAD },
	{ "blocks", "scrub_tranquility", K_NUMBER, FIELD(blocks.scrub_tranquility),
	  0, 1000000, F_RELOAD },

	{ "history", "piece_size", K_SIZE, FIELD(history.piece_size),
	  4 * KIB, 16 * MIB, F_POW2 },
	{ "history", "pieces_per_segment", K_COUNT, FIELD(history.pieces_per_segment),
	  1, 65536, F_POW2 },
	{ "history", "keep_archived_blocks", K_BOOL, FIELD(history.keep_archived_blocks),
	  0, 0, 0 },

	{ "plotting", "max_sectors_per_farm", K_COUNT, FIELD(plotting.max_sectors_per_farm),
	  1, 65536, F_RELOAD },
	{ "plotting", "retry_delay", K_DURATION, FIELD(plotting.retry_delay_ms),
	  0, DURATION_MAX, F_RELOAD },

	{ "artifacts", "cache_limit", K_SIZE, FIELD(artifacts.cache_limit),
	  0, CONFIG_UNLIMITED - 1, F_RELOAD },
	{ "artifacts", "min_stale_time", K_DURATION, FIELD(artifacts.min_stale_time_ms),
	  0, DURATION_MAX, F_RELOAD },
	{ "artifacts", "budget", K_SIZE, FIELD(artifacts.budget),
	  0, CONFIG_UNLIMITED, F_RELOAD | F_UNLIMITED },
	{ "artifacts", "retry_cooldown", K_DURATION, FIELD(artifacts.retry_cooldown_ms),
	  0, DURATION_MAX, F_RELOAD },
	{ "artifacts", "max_retries", K_COUNT, FIELD(artifacts.max_retries),
	  0, 1000000, F_RELOAD },
	{ "artifacts", "memory_limit", K_SIZE, FIELD(artifacts.memory_limit),
	  MIB, 4 * GIB, F_RELOAD },
	{ "artifacts", "instruction_limit", K_COUNT, FIELD(artifacts.instruction_limit),
	  1000, UINT64_C(1000000000000), F_RELOAD },

	{ "cluster", "nats", K_STRING, FIELD(cluster.nats), 0, 0, F_URL },
	{ "cluster", "node", K_STRING, FIELD(cluster.node), 0, 0, F_TOKEN },
	{ "cluster", "user", K_STRING, FIELD(cluster.user), 0, 0, 0 },
	{ "cluster", "password", K_STRING, FIELD(cluster.password), 0, 0, 0 },
	{ "cluster", "creds", K_STRING, FIELD(cluster.creds), 0, 0, F_FILE },
	{ "cluster", "tls_ca", K_STRING, FIELD(cluster.tls_ca), 0, 0, F_FILE },
	{ "cluster", "plotter", K_BOOL, FIELD(cluster.plotter), 0, 0, F_RELOAD },
	{ "cluster", "remote_plotting", K_REMOTE, FIELD(cluster.remote_plotting), 0, 0, F_RELOAD },
	{ "cluster", "verify_pieces", K_COUNT, FIELD(cluster.verify_pieces), 1, 1024, F_RELOAD },
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static const char *const sections[] = {
	"daemon", "workers", "blocks", "history", "plotting", "artifacts", "cluster",
};

/* ---- defaults ---------------------------------------------------------- */

void
config_defaults(struct config *c)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	memset(c, 0, sizeof(*c));
	c->daemon.sandbox_required = false;
	c->daemon.log_level = LOG_LVL_INFO;
	c->daemon.admin_clients_per_uid = 16;
	c->daemon.max_frame = 64 * MIB;

	if (ncpu < 1)
		ncpu = 1;
	if (ncpu > 256)
		ncpu = 256;
	c->workers.encode = (uint32_t)ncpu;
	c->workers.compile = 1;
	c->workers.encode_buffer = 16 * MIB;
	c->workers.execute = 1;
	c->workers.job_timeout_ms = 60 * MS_S;
	c->workers.restart_backoff_max_ms = 30 * MS_S;
	c->workers.restart_intensity = 10;
	c->workers.restart_period_ms = 60 * MS_S;

	c->blocks.compression_level = 0;
	c->blocks.gc_delay_ms = 10 * MS_M;
	c->blocks.resync_retry_base_ms = 60 * MS_S;
	c->blocks.budget = CONFIG_UNLIMITED;
	c->blocks.scrub_interval_ms = 30 * MS_D;
	c->blocks.scrub_tranquility = 4;

	c->history.piece_size = 64 * KIB;
	c->history.pieces_per_segment = 16;
	c->history.keep_archived_blocks = true;

	c->plotting.max_sectors_per_farm = 2;
	c->plotting.retry_delay_ms = 1 * MS_S;

	c->artifacts.cache_limit = 10 * GIB;
	c->artifacts.min_stale_time_ms = 24 * MS_H;
	c->artifacts.budget = CONFIG_UNLIMITED;
	c->artifacts.retry_cooldown_ms = 15 * MS_M;
	c->artifacts.max_retries = 5;
	c->artifacts.memory_limit = 64 * MIB;
	c->artifacts.instruction_limit = 100000000;

	c->cluster.plotter = false;
	c->cluster.remote_plotting = REMOTE_PLOTTING_OFF;
	c->cluster.verify_pieces = 2;
}

/* ---- value parsers ----------------------------------------------------- */

static int
is_blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

static const char *
skip_blanks(const char *p)
{
	while (is_blank(*p))
		p++;
	return p;
}

/* Reads DIGITS at *p.  Returns -1 (EINVAL) without a digit; sets *over
 * when the number does not fit in 64 bits. */
static int
read_digits(const char **p, uint64_t *out, bool *over)
{
	const char *s = *p;
	uint64_t v = 0;

	if (*s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned d = (unsigned)(*s - '0');

		if (v > (UINT64_MAX - d) / 10)
			*over = true;
		else
			v = v * 10 + d;
	}
	*p = s;
	*out = v;
	return 0;
}

/* Does s (up to trailing blanks) equal word, case-insensitively? */
static bool
is_word(const char *s, const char *word)
{
	size_t n = strlen(word);

	return strncasecmp(s, word, n) == 0 && *skip_blanks(s + n) == '\0';
}

/* A unit after a number: its name and what it stands for. */
struct unit {
	const char *name;
	uint64_t value;
};

/* The value of the first of the n units *p starts with (compared without
 * case when nocase), *p stepped past it; 0, *p unchanged, when none. */
static uint64_t
read_unit(const char **p, const struct unit *u, size_t n, bool nocase)
{
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(u[i].name);

		if ((nocase ? strncasecmp(*p, u[i].name, len) : strncmp(*p, u[i].name, len)) == 0) {
			*p += len;
			return u[i].value;
		}
	}
	return 0;
}

int
config_parse_size(const char *s, bool allow_unlimited, uint64_t *out)
{
	static const struct unit sfx[] = {
		{ "KiB", 10 }, { "MiB", 20 }, { "GiB", 30 }, { "TiB", 40 },
		{ "K", 10 }, { "M", 20 }, { "G", 30 }, { "T", 40 },
	};
	bool over = false;
	uint64_t n, shift;
	const char *p;

	if (s == NULL)
		goto inval;
	p = skip_blanks(s);
	if (allow_unlimited && is_word(p, "unlimited")) {
		*out = CONFIG_UNLIMITED;
		return 0;
	}
	if (read_digits(&p, &n, &over) < 0)
		goto inval;
	p = skip_blanks(p);
	shift = read_unit(&p, sfx, sizeof(sfx) / sizeof(sfx[0]), true);
	if (*skip_blanks(p) != '\0')
		goto inval;
	/* UINT64_MAX itself is CONFIG_UNLIMITED, so it is out of range. */
	if (over || n > (UINT64_MAX - 1) >> shift) {
		errno = ERANGE;
		return -1;
	}
	*out = n << shift;
	return 0;
inval:
	errno = EINVAL;
	return -1;
}

int
config_parse_duration_ms(const char *s, uint64_t *out)
{
	static const struct unit units[] = {
		{ "ms", 1 }, { "s", MS_S }, { "m", MS_M }, { "h", MS_H }, { "d", MS_D },
	};
	bool over = false;
	uint64_t total = 0;
	const char *p;
	int terms = 0;

	if (s == NULL)
		goto inval;
	p = skip_blanks(s);
	if (*p == '\0')
		goto inval;
	while (*p != '\0') {
		uint64_t n, mult;

		if (read_digits(&p, &n, &over) < 0)
			goto inval;
		p = skip_blanks(p);
		mult = read_unit(&p, units, sizeof(units) / sizeof(units[0]), false);
		if (mult == 0) {
			/* Only a lone "0" may omit its unit. */
			if (terms == 0 && n == 0 && !over && *p == '\0')
				break;
			goto inval;
		}
		if (n > UINT64_MAX / mult || total > UINT64_MAX - n * mult)
			over = true;
		else
			total += n * mult;
		terms++;
		p = skip_blanks(p);
	}
	if (over) {
		errno = ERANGE;
		return -1;
	}
	*out = total;
	return 0;
inval:
	errno = EINVAL;
	return -1;
}

static int
parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

/* DIGITS[.DIGITS], at most 15 significant digits, so the result is the
 * correctly rounded value whatever the locale. */
static int
parse_number(const char *s, double *out)
{
	static const double pow10[] = {
		1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
		1e12, 1e13, 1e14, 1e15,
	};
	uint64_t mant = 0;
	int digits = 0, frac = 0;
	bool seen = false, dot = false;

	for (const char *p = s; *p != '\0'; p++) {
		if (*p == '.' && !dot) {
			dot = true;
			continue;
		}
		if (*p < '0' || *p > '9')
			return -1;
		seen = true;
		if (mant == 0 && *p == '0' && !dot)
			continue;
		if (++digits > 15)
			return -1;
		mant = mant * 10 + (uint64_t)(*p - '0');
		if (dot)
			frac++;
	}
	if (!seen)
		return -1;
	*out = (double)mant / pow10[frac];
	return 0;
}

static bool
is_pow2(uint64_t v)
{
	return v != 0 && (v & (v - 1)) == 0;
}

static void
fmt_size(char *buf, size_t n, uint64_t v)
{
	static const char sfx[] = "KMGT";

	if (v == CONFIG_UNLIMITED) {
		snprintf(buf, n, "unlimited");
		return;
	}
	for (int i = 3; i >= 0; i--) {
		unsigned shift = 10 * (unsigned)(i + 1);

		if (v != 0 && v % (UINT64_C(1) << shift) == 0) {
			snprintf(buf, n, "%" PRIu64 "%c", v >> shift, sfx[i]);
			return;
		}
	}
	snprintf(buf, n, "%" PRIu64, v);
}

static void
fmt_duration(char *buf, size_t n, uint64_t ms)
{
	static const struct { uint64_t ms; const char *unit; } u[] = {
		{ MS_D, "d" }, { MS_H, "h" }, { MS_M, "m" }, { MS_S, "s" },
	};

	if (ms == 0) {
		snprintf(buf, n, "0");
		return;
	}
	for (size_t i = 0; i < sizeof(u) / sizeof(u[0]); i++) {
		if (ms % u[i].ms == 0) {
			snprintf(buf, n, "%" PRIu64 "%s", ms / u[i].ms, u[i].unit);
			return;
		}
	}
	snprintf(buf, n, "%" PRIu64 "ms", ms);
}

/* 1 if the group exists, 0 if not, -1 with errno on a lookup failure. */
static int
group_exists(const char *name)
{
	long sz = sysconf(_SC_GETGR_R_SIZE_MAX);
	struct group gr, *res = NULL;
	char *buf;
	int rc;

	if (sz <= 0)
		sz = 1024;
	for (;;) {
		buf = malloc((size_t)sz);
		if (buf == NULL)
			return -1;
		rc = getgrnam_r(name, &gr, buf, (size_t)sz, &res);
		free(buf);
		if (rc == ERANGE && sz < (1L << 24)) {
			sz *= 2;
			continue;
		}
		break;
	}
	if (rc == 0)
		return res != NULL;
	if (rc == ENOENT || rc == ESRCH || rc == EBADF || rc == EPERM)
		return 0;
	errno = rc;
	return -1;
}

/* HOST:PORT; an IPv6 host in brackets. */
static int
check_listen(const char *s, char *why, size_t n)
{
	const char *colon = strrchr(s, ':');
	uint64_t port;
	bool over = false;
	const char *p;
	size_t hlen;

	if (colon == NULL) {
		snprintf(why, n, "missing ':PORT'");
		return -1;
	}
	hlen = (size_t)(colon - s);
	if (hlen == 0) {
		snprintf(why, n, "missing host (use 0.0.0.0:PORT to listen everywhere)");
		return -1;
	}
	for (size_t i = 0; i < hlen; i++) {
		if (is_blank(s[i])) {
			snprintf(why, n, "blank in host");
			return -1;
		}
	}
	if (s[0] == '[') {
		if (hlen < 3 || s[hlen - 1] != ']' ||
		    memchr(s + 1, ']', hlen - 2) != NULL ||
		    memchr(s + 1, '[', hlen - 2) != NULL) {
			snprintf(why, n, "bad bracketed IPv6 host");
			return -1;
		}
	} else if (memchr(s, ':', hlen) != NULL || memchr(s, '[', hlen) != NULL ||
	    memchr(s, ']', hlen) != NULL) {
		snprintf(why, n, "put an IPv6 host in brackets, as in [::1]:9616");
		return -1;
	}
	p = colon + 1;
	if (read_digits(&p, &port, &over) < 0 || *p != '\0' || over ||
	    port > 65535) {
		snprintf(why, n, "port must be a number 0..65535");
		return -1;
	}
	return 0;
}

/* ---- loading ------------------------------------------------------------ */

struct loader {
	FILE *f;
	struct config cfg;
	int line;               /* line the reader handed to inih last */
	size_t bytes;
	int read_errno;         /* nonzero: the file could not be read */
	int err_line;           /* first error found here, 0 = none */
	char err[ERR_MSG_MAX];
	int seen[NKEYS];        /* line a key was set on, 0 = not yet */
};

static void
fail(struct loader *L, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
fail(struct loader *L, const char *fmt, ...)
{
	va_list ap;

	if (L->err_line != 0)
		return;
	L->err_line = L->line;
	va_start(ap, fmt);
	vsnprintf(L->err, sizeof(L->err), fmt, ap);
	va_end(ap);
}

static bool
known_section(const char *s, size_t n)
{
	for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++) {
		if (strlen(sections[i]) == n && memcmp(sections[i], s, n) == 0)
			return true;
	}
	return false;
}

/* Section headers are checked here, where empty and unknown sections are
 * still visible (inih calls the handler for key lines only). */
static void
check_section_line(struct loader *L, const char *s)
{
	const char *end = strchr(s + 1, ']');
	const char *rest;

	if (end == NULL)
		return;         /* inih reports it as a syntax error */
	if (!known_section(s + 1, (size_t)(end - s - 1))) {
		fail(L, "unknown section [%.*s]", (int)(end - s - 1), s + 1);
		return;
	}
	rest = skip_blanks(end + 1);
	if (*rest != '\0' && *rest != ';' && *rest != '#')
		fail(L, "syntax error");
}

/*
 * fgets-style reader for ini_parse_stream.  It counts lines (the packaged
 * inih has no line numbers in the handler), strips leading blanks (so no
 * line is an inih continuation line), refuses overlong lines and NUL bytes
 * rather than letting inih split them, and stops at the first error.
 */
static char *
read_line(char *str, int num, void *stream)
{
	struct loader *L = stream;
	char buf[4096];
	size_t len = 0, full = 0;
	bool nul = false;
	int ch = EOF;
	char *s;

	if (L->err_line != 0 || L->read_errno != 0 || num < 3)
		return NULL;
	while ((ch = getc(L->f)) != EOF) {
		if (++L->bytes > CONFIG_FILE_MAX) {
			L->read_errno = EFBIG;
			return NULL;
		}
		if (ch == '\n')
			break;
		if (ch == '\0')
			nul = true;
		if (len < sizeof(buf) - 1)
			buf[len++] = (char)ch;
		full++;
	}
	if (ch == EOF) {
		if (ferror(L->f)) {
			L->read_errno = errno != 0 ? errno : EIO;
			return NULL;
		}
		if (full == 0)
			return NULL;
	}
	L->line++;
	buf[len] = '\0';
	s = buf;
	if (L->line == 1 && strncmp(s, "\xEF\xBB\xBF", 3) == 0)
		s += 3;
	s = (char *)skip_blanks(s);
	len = strlen(s);
	while (len > 0 && (s[len - 1] == '\r' || is_blank(s[len - 1])))
		s[--len] = '\0';
	if (nul) {
		fail(L, "NUL byte in line");
		s = buf, s[0] = '\0', len = 0;
	} else if (full > sizeof(buf) - 1 || len > (size_t)num - 2) {
		fail(L, "line too long (max %d characters)", num - 2);
		s = buf, s[0] = '\0', len = 0;
	} else if (s[0] == '[') {
		check_section_line(L, s);
	}
	memcpy(str, s, len);
	str[len] = '\n';
	str[len + 1] = '\0';
	return str;
}

static void *
field(struct config *c, const struct key *k)
{
	return (char *)c + k->off;
}

static void
set_count(struct config *c, const struct key *k, uint64_t v)
{
	if (k->size == sizeof(uint32_t)) {
		uint32_t v32 = (uint32_t)v;

		memcpy(field(c, k), &v32, sizeof(v32));
	} else {
		memcpy(field(c, k), &v, sizeof(v));
	}
}

/* One setter per key type: each checks v, then stores it or fail()s with
 * the message naming [section] key. */
typedef void (*setter)(struct loader *L, const struct key *k, const char *v);

static void
set_path(struct loader *L, const struct key *k, const char *v)
{
	if (strlen(v) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		fail(L, "[%s] %s: path too long (max %zu bytes)", k->section, k->name,
		    sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		return;
	}
	strcpy(field(&L->cfg, k), v);
}

static void
set_program(struct loader *L, const struct key *k, const char *v)
{
	struct stat st;

	if (*v != '\0') {
		if (strlen(v) >= k->size) {
			fail(L, "[%s] %s: path too long (max %zu bytes)", k->section, k->name,
			    k->size - 1);
			return;
		}
		if (v[0] != '/') {
			fail(L, "[%s] %s: '%s' is not an absolute path", k->section, k->name, v);
			return;
		}
		if (stat(v, &st) < 0) {
			fail(L, "[%s] %s: %s: %s", k->section, k->name, v, strerror(errno));
			return;
		}
		if (!S_ISREG(st.st_mode) || access(v, X_OK) < 0) {
			fail(L, "[%s] %s: %s is not an executable file", k->section, k->name, v);
			return;
		}
	}
	strcpy(field(&L->cfg, k), v);
}

static void
set_group(struct loader *L, const struct key *k, const char *v)
{
	const char *sec = k->section, *name = k->name;

	if (*v != '\0') {
		int rc;

		if (strlen(v) >= k->size) {
			fail(L, "[%s] %s: group name too long (max %zu bytes)",
			    sec, name, k->size - 1);
			return;
		}
		rc = group_exists(v);
		if (rc < 0) {
			fail(L, "[%s] %s: cannot look up group '%s': %s", sec,
			    name, v, strerror(errno));
			return;
		}
		if (rc == 0) {
			fail(L, "[%s] %s: unknown group '%s'", sec, name, v);
			return;
		}
	}
	strcpy(field(&L->cfg, k), v);
}

static void
set_listen(struct loader *L, const struct key *k, const char *v)
{
	char why[128];

	if (*v != '\0') {
		if (strlen(v) >= k->size) {
			fail(L, "[%s] %s: value too long (max %zu bytes)", k->section,
			    k->name, k->size - 1);
			return;
		}
		if (check_listen(v, why, sizeof(why)) < 0) {
			fail(L, "[%s] %s: bad address '%s' (%s)", k->section, k->name, v,
			    why);
			return;
		}
	}
	strcpy(field(&L->cfg, k), v);
}

static void
set_bool(struct loader *L, const struct key *k, const char *v)
{
	bool b;

	if (parse_bool(v, &b) < 0) {
		fail(L, "[%s] %s: bad boolean '%s' (use true or false)", k->section,
		    k->name, v);
		return;
	}
	memcpy(field(&L->cfg, k), &b, sizeof(b));
}

static void
set_loglevel(struct loader *L, const struct key *k, const char *v)
{
	enum log_level lvl;

	if (log_level_parse(v, &lvl) < 0) {
		fail(L, "[%s] %s: unknown level '%s' (use error, warn, info "
		    "or debug)", k->section, k->name, v);
		return;
	}
	memcpy(field(&L->cfg, k), &lvl, sizeof(lvl));
}

static void
set_countkey(struct loader *L, const struct key *k, const char *v)
{
	const char *p = v;
	bool over = false;
	uint64_t n;

	if (read_digits(&p, &n, &over) < 0 || *p != '\0') {
		fail(L, "[%s] %s: bad number '%s'", k->section, k->name, v);
		return;
	}
	if (over || n < k->min || n > k->max || ((k->flags & F_POW2) && !is_pow2(n))) {
		fail(L, "[%s] %s: '%s' out of range (%s%" PRIu64 "..%" PRIu64 ")",
		    k->section, k->name, v, (k->flags & F_POW2) ? "a power of two " : "",
		    k->min, k->max);
		return;
	}
	set_count(&L->cfg, k, n);
}

static void
set_size(struct loader *L, const struct key *k, const char *v)
{
	const char *sec = k->section, *name = k->name;
	char lo[32], hi[32];
	uint64_t n;

	if (config_parse_size(v, k->flags & F_UNLIMITED, &n) < 0) {
		if (errno == ERANGE)
			fail(L, "[%s] %s: size '%s' too large", sec, name, v);
		else
			fail(L, "[%s] %s: bad size '%s' (use a number with "
			    "optional K/M/G/T%s)", sec, name, v,
			    (k->flags & F_UNLIMITED) ? ", or unlimited" : "");
		return;
	}
	if (n != CONFIG_UNLIMITED &&
	    (n < k->min || n > k->max || ((k->flags & F_POW2) && !is_pow2(n)))) {
		fmt_size(lo, sizeof(lo), k->min);
		fmt_size(hi, sizeof(hi), k->max);
		fail(L, "[%s] %s: '%s' out of range (%s%s..%s)", sec, name, v,
		    (k->flags & F_POW2) ? "a power of two " : "", lo, hi);
		return;
	}
	memcpy(field(&L->cfg, k), &n, sizeof(n));
}

static void
set_duration(struct loader *L, const struct key *k, const char *v)
{
	char lo[32], hi[32];
	uint64_t n;
	bool over;

	over = config_parse_duration_ms(v, &n) < 0;
	if (over && errno != ERANGE) {
		fail(L, "[%s] %s: bad duration '%s' (use ms/s/m/h/d)", k->section,
		    k->name, v);
		return;
	}
	if (over || n < k->min || n > k->max) {
		fmt_duration(lo, sizeof(lo), k->min);
		fmt_duration(hi, sizeof(hi), k->max);
		fail(L, "[%s] %s: '%s' out of range (%s..%s)", k->section, k->name, v,
		    lo, hi);
		return;
	}
	memcpy(field(&L->cfg, k), &n, sizeof(n));
}

static void
set_number(struct loader *L, const struct key *k, const char *v)
{
	double d;

	if (parse_number(v, &d) < 0) {
		fail(L, "[%s] %s: bad number '%s' (use digits with an optional "
		    "decimal point)", k->section, k->name, v);
		return;
	}
	if (d < (double)k->min || d > (double)k->max) {
		fail(L, "[%s] %s: '%s' out of range (%" PRIu64 "..%" PRIu64 ")",
		    k->section, k->name, v, k->min, k->max);
		return;
	}
	memcpy(field(&L->cfg, k), &d, sizeof(d));
}

static void
set_compression(struct loader *L, const struct key *k, const char *v)
{
	int level = -1;
	bool over = false;
	const char *p;
	uint64_t n;

	if (strcmp(v, "none") == 0) {
		level = 0;
	} else if (strcmp(v, "zstd") == 0) {
		level = 3;
	} else if (strncmp(v, "zstd:", 5) == 0) {
		p = v + 5;
		if (read_digits(&p, &n, &over) == 0 && *p == '\0' && !over &&
		    n >= 1 && n <= 22)
			level = (int)n;
	}
	if (level < 0) {
		fail(L, "[%s] %s: bad value '%s' (use none, zstd or "
		    "zstd:LEVEL with LEVEL 1..22)", k->section, k->name, v);
		return;
	}
	memcpy(field(&L->cfg, k), &level, sizeof(level));
}

/* Why v is not a nats://|tls://HOST:PORT list, or NULL when it is. */
static const char *
bad_urls(const char *v)
{
	for (const char *p = v; *p != '\0';) {
		size_t n = strcspn(p, ","), pre = strncmp(p, "nats://", 7) == 0 ? 7 :
		    strncmp(p, "tls://", 6) == 0 ? 6 : 0;

		if (pre == 0)
			return "each URL starts with nats:// or tls://";
		if (n <= pre || memchr(p, ' ', n) != NULL)
			return "a URL without a host, or with a blank";
		p += n + (p[n] == ',');
	}
	return NULL;
}

static void
set_string(struct loader *L, const struct key *k, const char *v)
{
	const char *why = NULL;

	if (strlen(v) >= k->size)
		why = "value too long";
	else if ((k->flags & F_TOKEN) && v[strspn(v, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")] != '\0')
		why = "only letters, digits, '_' and '-' (it is part of NATS subjects)";
	else if ((k->flags & F_FILE) && *v != '\0' && access(v, R_OK) < 0)
		why = strerror(errno);
	else if (k->flags & F_URL)
		why = bad_urls(v);
	if (why != NULL) {
		fail(L, "[%s] %s: '%s': %s", k->section, k->name, v, why);
		return;
	}
	strcpy(field(&L->cfg, k), v);
}

static void
set_remote(struct loader *L, const struct key *k, const char *v)
{
	static const char *const names[] = { "off", "overflow", "prefer" };

	for (int i = 0; i < 3; i++) {
		if (strcmp(v, names[i]) == 0) {
			enum config_remote_plotting r = (enum config_remote_plotting)i;

			memcpy(field(&L->cfg, k), &r, sizeof(r));
			return;
		}
	}
	fail(L, "[%s] %s: bad value '%s' (use off, overflow or prefer)", k->section, k->name, v);
}

static const setter setters[] = {
	[K_PATH] = set_path, [K_PROGRAM] = set_program, [K_GROUP] = set_group,
	[K_LISTEN] = set_listen,
	[K_BOOL] = set_bool, [K_LOGLEVEL] = set_loglevel, [K_COUNT] = set_countkey,
	[K_SIZE] = set_size, [K_DURATION] = set_duration, [K_NUMBER] = set_number,
	[K_COMPRESSION] = set_compression, [K_STRING] = set_string, [K_REMOTE] = set_remote,
};

static void
set_value(struct loader *L, const struct key *k, const char *v)
{
	setters[k->type](L, k, v);
}

static bool field_equal(const struct config *a, const struct config *b, const struct key *k);

/* A key set to its default asks for what farmd does anyway. */
static bool
is_default(const struct config *c, const struct key *k)
{
	struct config def;

	config_defaults(&def);
	return field_equal(c, &def, k);
}

static int
handler(void *user, const char *section, const char *name, const char *value)
{
	struct loader *L = user;
	bool sec_known = false;

	if (L->err_line != 0)
		return 1;       /* only the first error is reported */
	if (*section == '\0') {
		fail(L, "key '%s' outside any section", name);
		return 0;
	}
	for (size_t i = 0; i < NKEYS; i++) {
		const struct key *k = &keys[i];

		if (strcmp(k->section, section) != 0)
			continue;
		sec_known = true;
		if (strcmp(k->name, name) != 0)
			continue;
		if (L->seen[i] != 0) {
			fail(L, "duplicate key '%s' in [%s] (first set on line %d)",
			    name, section, L->seen[i]);
			return 0;
		}
		L->seen[i] = L->line;
		set_value(L, k, value != NULL ? value : "");
		if (L->err_line == 0 && (k->flags & F_UNIMPL) && !is_default(&L->cfg, k) &&
		    L->cfg.unimplemented.line == 0) {
			L->cfg.unimplemented.line = L->line;
			snprintf(L->cfg.unimplemented.key, sizeof(L->cfg.unimplemented.key),
			    "[%s] %s", k->section, k->name);
			snprintf(L->cfg.unimplemented.why, sizeof(L->cfg.unimplemented.why),
			    "farmd keeps no validation-code artifacts yet");
		}
		return L->err_line == 0;
	}
	if (!sec_known)
		fail(L, "unknown section [%s]", section);
	else
		fail(L, "unknown key '%s' in [%s]", name, section);
	return 0;
}

int
config_load(struct config *c, const char *path, struct err *e)
{
	struct loader *L;
	int rc, ret = -1;

	L = calloc(1, sizeof(*L));
	if (L == NULL)
		return err_sys(e, "%s: cannot read", path);
	L->f = fopen(path, "re");
	if (L->f == NULL) {
		err_sys(e, "%s: cannot read", path);
		free(L);
		return -1;
	}
	L->cfg = *c;
	errno = 0;
	rc = ini_parse_stream(read_line, L, handler, L);
	fclose(L->f);

	if (L->read_errno != 0) {
		err_set(e, "%s: cannot read: %s", path, strerror(L->read_errno));
	} else if (L->err_line != 0 && (rc <= 0 || L->err_line <= rc)) {
		err_set(e, "%s:%d: %s", path, L->err_line, L->err);
	} else if (rc > 0) {
		err_set(e, "%s:%d: syntax error", path, rc);
	} else if (rc < 0) {
		err_set(e, "%s: cannot read: %s", path, strerror(ENOMEM));
	} else {
		*c = L->cfg;
		ret = 0;
	}
	free(L);
	return ret;
}

int
config_refuse_unimplemented(const struct config *c, const char *path, struct err *e)
{
	if (c->unimplemented.line == 0)
		return 0;
	return err_set(e, "%s:%d: %s: not implemented yet (%s); remove the key",
	    path, c->unimplemented.line, c->unimplemented.key, c->unimplemented.why);
}

/* ---- reload ------------------------------------------------------------- */

static bool
field_equal(const struct config *a, const struct config *b, const struct key *k)
{
	const char *fa = (const char *)a + k->off, *fb = (const char *)b + k->off;

	switch (k->type) {
	case K_PATH:
	case K_PROGRAM:
	case K_GROUP:
	case K_LISTEN:
	case K_STRING:
		return strncmp(fa, fb, k->size) == 0;
	case K_BOOL:
		return *(const bool *)fa == *(const bool *)fb;
	case K_NUMBER:
		return *(const double *)fa == *(const double *)fb;
	default:
		return memcmp(fa, fb, k->size) == 0;
	}
}

int
config_reload(struct config *live, const struct config *next, struct err *e)
{
	char msg[ERR_MSG_MAX];
	size_t len = 0;
	int changed = 0;

	for (size_t i = 0; i < NKEYS; i++) {
		const struct key *k = &keys[i];
		int n;

		if ((k->flags & F_RELOAD) || field_equal(live, next, k))
			continue;
		n = snprintf(msg + len, sizeof(msg) - len, "%s[%s] %s",
		    changed ? ", " : "", k->section, k->name);
		if (n > 0)
			len += (size_t)n < sizeof(msg) - len ? (size_t)n : sizeof(msg) - len - 1;
		changed++;
	}
	if (changed)
		return err_set(e, "not reloadable without restart: %s", msg);
	for (size_t i = 0; i < NKEYS; i++) {
		const struct key *k = &keys[i];

		if (k->flags & F_RELOAD)
			memcpy((char *)live + k->off, (const char *)next + k->off, k->size);
	}
	return 0;
}
