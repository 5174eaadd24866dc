/*
 * test_config.c: the INI loader (DESIGN.md §14): defaults, every key,
 * the "path:line: reason" errors, reload and the value parsers.
 */
#include <check.h>
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

#define KIB (UINT64_C(1) << 10)
#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)
#define TIB (UINT64_C(1) << 40)
#define SEC UINT64_C(1000)
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

static char tmp_paths[64][64];
static int ntmp;

/* Writes len bytes to a fresh temp file; the path lives until teardown. */
static const char *
write_tmp_n(const char *content, size_t len)
{
	char *path;
	int fd;

	ck_assert_int_lt(ntmp, 64);
	path = tmp_paths[ntmp++];
	snprintf(path, 64, "/tmp/farmd-test-config.XXXXXX");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, content, len), (ssize_t)len);
	close(fd);
	return path;
}

static const char *
write_tmp(const char *content)
{
	return write_tmp_n(content, strlen(content));
}

static void
teardown(void)
{
	for (int i = 0; i < ntmp; i++)
		unlink(tmp_paths[i]);
	ntmp = 0;
}

/* Loads content over the defaults; fills *path with the file used. */
static int
load_str(const char *content, struct config *c, struct err *e, const char **path)
{
	const char *p = write_tmp(content);

	if (path != NULL)
		*path = p;
	config_defaults(c);
	return config_load(c, p, e);
}

/* The load fails with exactly "PATH:LINE: reason" and leaves c alone. */
static void
expect_err_at(const char *content, int line, const char *reason)
{
	struct config c, before;
	struct err e = { "" };
	char want[ERR_MSG_MAX + 64];
	const char *path;

	config_defaults(&c);
	path = write_tmp(content);
	config_defaults(&c);
	memcpy(&before, &c, sizeof(c));
	ck_assert_int_eq(config_load(&c, path, &e), -1);
	snprintf(want, sizeof(want), "%s:%d: %s", path, line, reason);
	ck_assert_str_eq(e.msg, want);
	ck_assert_msg(memcmp(&before, &c, sizeof(c)) == 0,
	    "config changed by a failed load");
}

static const char *
root_group(void)
{
	struct group *g = getgrgid(0);

	ck_assert_ptr_nonnull(g);
	return g->gr_name;
}

/* ---- defaults -------------------------------------------------------- */

START_TEST(test_defaults)
{
	struct config c;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	if (ncpu < 1)
		ncpu = 1;
	if (ncpu > 256)
		ncpu = 256;
	memset(&c, 0xa5, sizeof(c));
	config_defaults(&c);

	ck_assert_str_eq(c.daemon.admin_socket, "");
	ck_assert_str_eq(c.daemon.admin_group, "");
	ck_assert_str_eq(c.daemon.monitor_group, "");
	ck_assert(!c.daemon.sandbox_required);
	ck_assert_str_eq(c.daemon.metrics_listen, "");
	ck_assert_int_eq(c.daemon.log_level, LOG_LVL_INFO);
	ck_assert_uint_eq(c.daemon.admin_clients_per_uid, 16);
	ck_assert_uint_eq(c.daemon.max_frame, 64 * MIB);

	ck_assert_uint_eq(c.workers.encode, (uint32_t)ncpu);
	ck_assert_uint_eq(c.workers.compile, 1);
	ck_assert_uint_eq(c.workers.execute, 1);
	ck_assert_uint_eq(c.workers.job_timeout_ms, 60 * SEC);
	ck_assert_uint_eq(c.workers.restart_backoff_max_ms, 30 * SEC);
	ck_assert_uint_eq(c.workers.restart_intensity, 10);
	ck_assert_uint_eq(c.workers.restart_period_ms, 60 * SEC);

	ck_assert_int_eq(c.blocks.compression_level, 0);
	ck_assert_uint_eq(c.blocks.gc_delay_ms, 10 * MIN);
	ck_assert_uint_eq(c.blocks.resync_retry_base_ms, 60 * SEC);
	ck_assert_uint_eq(c.blocks.budget, CONFIG_UNLIMITED);
	ck_assert_uint_eq(c.blocks.scrub_interval_ms, 30 * DAY);
	ck_assert_double_eq(c.blocks.scrub_tranquility, 4.0);

	ck_assert_uint_eq(c.history.piece_size, 64 * KIB);
	ck_assert_uint_eq(c.history.pieces_per_segment, 16);
	ck_assert(c.history.keep_archived_blocks);

	ck_assert_uint_eq(c.plotting.max_sectors_per_farm, 2);
	ck_assert_uint_eq(c.plotting.retry_delay_ms, 1 * SEC);

	ck_assert_uint_eq(c.artifacts.cache_limit, 10 * GIB);
	ck_assert_uint_eq(c.artifacts.min_stale_time_ms, 24 * HOUR);
	ck_assert_uint_eq(c.artifacts.budget, CONFIG_UNLIMITED);
	ck_assert_uint_eq(c.artifacts.retry_cooldown_ms, 15 * MIN);
	ck_assert_uint_eq(c.artifacts.max_retries, 5);
	ck_assert_uint_eq(c.artifacts.memory_limit, 64 * MIB);
	ck_assert_uint_eq(c.artifacts.instruction_limit, 100000000);
}
END_TEST

/* The §14 defaults written out as a file load to the built-in defaults. */
START_TEST(test_defaults_as_file)
{
	struct config c, d;
	struct err e = { "" };
	char text[2048];

	config_defaults(&d);
	snprintf(text, sizeof(text),
	    "[daemon]\nadmin_socket =\nadmin_group =\nmonitor_group =\n"
	    "sandbox_required = false\nmetrics_listen =\nlog_level = info\n"
	    "admin_clients_per_uid = 16\nmax_frame = 64M\n"
	    "[workers]\nencode = %u\ncompile = 1\nexecute = 1\nworker_binary =\n"
	    "job_timeout = 60s\nrestart_backoff_max = 30s\nrestart_intensity = 10\nrestart_period = 60s\n"
	    "[blocks]\ncompression = none\ngc_delay = 10m\nresync_retry_base = 60s\n"
	    "budget = unlimited\nscrub_interval = 30d\nscrub_tranquility = 4\n"
	    "[history]\npiece_size = 64K\npieces_per_segment = 16\n"
	    "keep_archived_blocks = true\n"
	    "[plotting]\nmax_sectors_per_farm = 2\nretry_delay = 1s\n"
	    "[artifacts]\ncache_limit = 10G\nmin_stale_time = 24h\nbudget = unlimited\n"
	    "retry_cooldown = 15m\nmax_retries = 5\nmemory_limit = 64M\n"
	    "instruction_limit = 100000000\n",
	    d.workers.encode);
	ck_assert_int_eq(load_str(text, &c, &e, NULL), 0);
	ck_assert_mem_eq(&c, &d, sizeof(c));
}
END_TEST

/* ---- every key ------------------------------------------------------- */

START_TEST(test_every_key)
{
	struct config c;
	struct err e = { "" };
	char text[4096];
	const char *grp = root_group();

	snprintf(text, sizeof(text),
	    "[daemon]\n"
	    "admin_socket = /run/farmd/admin.sock\n"
	    "admin_group = %s\n"
	    "monitor_group = %s\n"
	    "sandbox_required = true\n"
	    "metrics_listen = 127.0.0.1:9616\n"
	    "log_level = debug\n"
	    "admin_clients_per_uid = 4\n"
	    "max_frame = 1G\n"
	    "[workers]\n"
	    "encode = 7\n"
	    "compile = 0\n"
	    "execute = 256\n"
	    "worker_binary = /bin/sh\n"
	    "job_timeout = 250ms\n"
	    "restart_backoff_max = 2s\n"
	    "restart_intensity = 3\n"
	    "restart_period = 5m\n"
	    "[blocks]\n"
	    "compression = zstd:19\n"
	    "gc_delay = 0\n"
	    "resync_retry_base = 1h30m\n"
	    "budget = 3T\n"
	    "scrub_interval = 2d\n"
	    "scrub_tranquility = 0.25\n"
	    "[history]\n"
	    "piece_size = 1M\n"
	    "pieces_per_segment = 256\n"
	    "keep_archived_blocks = no\n"
	    "[plotting]\n"
	    "max_sectors_per_farm = 9\n"
	    "retry_delay = 10ms\n"
	    "[artifacts]\n"
	    "cache_limit = 512MiB\n"
	    "min_stale_time = 7d\n"
	    "budget = 100G\n"
	    "retry_cooldown = 90s\n"
	    "max_retries = 0\n"
	    "memory_limit = 1M\n"
	    "instruction_limit = 1000000000000\n",
	    grp, grp);
	ck_assert_msg(load_str(text, &c, &e, NULL) == 0, "%s", e.msg);

	ck_assert_str_eq(c.daemon.admin_socket, "/run/farmd/admin.sock");
	ck_assert_str_eq(c.daemon.admin_group, grp);
	ck_assert_str_eq(c.daemon.monitor_group, grp);
	ck_assert(c.daemon.sandbox_required);
	ck_assert_str_eq(c.daemon.metrics_listen, "127.0.0.1:9616");
	ck_assert_int_eq(c.daemon.log_level, LOG_LVL_DEBUG);
	ck_assert_uint_eq(c.daemon.admin_clients_per_uid, 4);
	ck_assert_uint_eq(c.daemon.max_frame, GIB);

	ck_assert_uint_eq(c.workers.encode, 7);
	ck_assert_uint_eq(c.workers.compile, 0);
	ck_assert_uint_eq(c.workers.execute, 256);
	ck_assert_str_eq(c.workers.worker_binary, "/bin/sh");
	ck_assert_uint_eq(c.workers.job_timeout_ms, 250);
	ck_assert_uint_eq(c.workers.restart_backoff_max_ms, 2 * SEC);
	ck_assert_uint_eq(c.workers.restart_intensity, 3);
	ck_assert_uint_eq(c.workers.restart_period_ms, 5 * MIN);

	ck_assert_int_eq(c.blocks.compression_level, 19);
	ck_assert_uint_eq(c.blocks.gc_delay_ms, 0);
	ck_assert_uint_eq(c.blocks.resync_retry_base_ms, 90 * MIN);
	ck_assert_uint_eq(c.blocks.budget, 3 * TIB);
	ck_assert_uint_eq(c.blocks.scrub_interval_ms, 2 * DAY);
	ck_assert_double_eq(c.blocks.scrub_tranquility, 0.25);

	ck_assert_uint_eq(c.history.piece_size, MIB);
	ck_assert_uint_eq(c.history.pieces_per_segment, 256);
	ck_assert(!c.history.keep_archived_blocks);

	ck_assert_uint_eq(c.plotting.max_sectors_per_farm, 9);
	ck_assert_uint_eq(c.plotting.retry_delay_ms, 10);

	ck_assert_uint_eq(c.artifacts.cache_limit, 512 * MIB);
	ck_assert_uint_eq(c.artifacts.min_stale_time_ms, 7 * DAY);
	ck_assert_uint_eq(c.artifacts.budget, 100 * GIB);
	ck_assert_uint_eq(c.artifacts.retry_cooldown_ms, 90 * SEC);
	ck_assert_uint_eq(c.artifacts.max_retries, 0);
	ck_assert_uint_eq(c.artifacts.memory_limit, MIB);
	ck_assert_uint_eq(c.artifacts.instruction_limit, UINT64_C(1000000000000));
}
END_TEST

/* The executor limits' ranges ([artifacts] memory_limit, instruction_limit). */
START_TEST(test_artifact_limits_range)
{
	struct config c;
	struct err e = { "" };

	ck_assert_int_eq(load_str("[artifacts]\nmemory_limit = 4G\n", &c, &e, NULL), 0);
	ck_assert_uint_eq(c.artifacts.memory_limit, 4 * GIB);
	ck_assert_int_eq(load_str("[artifacts]\ninstruction_limit = 1000\n", &c, &e, NULL), 0);
	ck_assert_uint_eq(c.artifacts.instruction_limit, 1000);
	expect_err_at("[artifacts]\nmemory_limit = 1023K\n", 2,
	    "[artifacts] memory_limit: '1023K' out of range (1M..4G)");
	expect_err_at("[artifacts]\n\nmemory_limit = 5G\n", 3,
	    "[artifacts] memory_limit: '5G' out of range (1M..4G)");
	expect_err_at("[artifacts]\nmemory_limit = unlimited\n", 2,
	    "[artifacts] memory_limit: bad size 'unlimited' (use a number with optional K/M/G/T)");
	expect_err_at("[artifacts]\ninstruction_limit = 999\n", 2,
	    "[artifacts] instruction_limit: '999' out of range (1000..1000000000000)");
	expect_err_at("[artifacts]\ninstruction_limit = 1000000000001\n", 2,
	    "[artifacts] instruction_limit: '1000000000001' out of range (1000..1000000000000)");
	expect_err_at("[artifacts]\ninstruction_limit = 1e9\n", 2,
	    "[artifacts] instruction_limit: bad number '1e9'");
}
END_TEST

/* Value variants each key type takes. */
START_TEST(test_value_variants)
{
	struct config c;
	struct err e = { "" };

	ck_assert_int_eq(load_str("[blocks]\ncompression = zstd\n", &c, &e, NULL), 0);
	ck_assert_int_eq(c.blocks.compression_level, 3);
	ck_assert_int_eq(load_str("[blocks]\ncompression = zstd:1\n", &c, &e, NULL), 0);
	ck_assert_int_eq(c.blocks.compression_level, 1);
	ck_assert_int_eq(load_str("[blocks]\ncompression = zstd:22\n", &c, &e, NULL), 0);
	ck_assert_int_eq(c.blocks.compression_level, 22);
	ck_assert_int_eq(load_str("[blocks]\ncompression = none\n", &c, &e, NULL), 0);
	ck_assert_int_eq(c.blocks.compression_level, 0);

	for (const char *const *t = (const char *const[]){ "true", "yes", "on", "1",
	    "TRUE", "On", NULL }; *t != NULL; t++) {
		char text[128];

		snprintf(text, sizeof(text), "[daemon]\nsandbox_required = %s\n", *t);
		ck_assert_int_eq(load_str(text, &c, &e, NULL), 0);
		ck_assert(c.daemon.sandbox_required);
	}
	for (const char *const *t = (const char *const[]){ "false", "no", "off", "0",
	    "False", NULL }; *t != NULL; t++) {
		char text[128];

		snprintf(text, sizeof(text), "[history]\nkeep_archived_blocks = %s\n", *t);
		ck_assert_int_eq(load_str(text, &c, &e, NULL), 0);
		ck_assert(!c.history.keep_archived_blocks);
	}

	ck_assert_int_eq(load_str("[daemon]\nlog_level = error\n", &c, &e, NULL), 0);
	ck_assert_int_eq(c.daemon.log_level, LOG_LVL_ERR);
	ck_assert_int_eq(load_str("[daemon]\nlog_level = warn\n", &c, &e, NULL), 0);
	ck_assert_int_eq(c.daemon.log_level, LOG_LVL_WARN);

	ck_assert_int_eq(load_str("[daemon]\nmetrics_listen = [::1]:9616\n", &c, &e, NULL), 0);
	ck_assert_str_eq(c.daemon.metrics_listen, "[::1]:9616");
	ck_assert_int_eq(load_str("[daemon]\nmetrics_listen = localhost:65535\n", &c, &e, NULL), 0);
	ck_assert_str_eq(c.daemon.metrics_listen, "localhost:65535");
	/* Port 0: any free port (status shows the one bound). */
	ck_assert_int_eq(load_str("[daemon]\nmetrics_listen = 127.0.0.1:0\n", &c, &e, NULL), 0);
	ck_assert_str_eq(c.daemon.metrics_listen, "127.0.0.1:0");

	/* Bounds of the ranges. */
	ck_assert_int_eq(load_str("[history]\npiece_size = 4K\npieces_per_segment = 1\n",
	    &c, &e, NULL), 0);
	ck_assert_uint_eq(c.history.piece_size, 4 * KIB);
	ck_assert_uint_eq(c.history.pieces_per_segment, 1);
	ck_assert_int_eq(load_str("[history]\npiece_size = 16M\npieces_per_segment = 65536\n",
	    &c, &e, NULL), 0);
	ck_assert_uint_eq(c.history.piece_size, 16 * MIB);
	ck_assert_uint_eq(c.history.pieces_per_segment, 65536);
	ck_assert_int_eq(load_str("[daemon]\nmax_frame = 4096\n", &c, &e, NULL), 0);
	ck_assert_uint_eq(c.daemon.max_frame, 4096);
	ck_assert_int_eq(load_str("[workers]\nencode = 1\nrestart_intensity = 1\n",
	    &c, &e, NULL), 0);
	ck_assert_uint_eq(c.workers.encode, 1);
	ck_assert_int_eq(load_str("[workers]\njob_timeout = 3650d\n", &c, &e, NULL), 0);
	ck_assert_uint_eq(c.workers.job_timeout_ms, 3650 * DAY);
	ck_assert_int_eq(load_str("[blocks]\nscrub_tranquility = 0\n", &c, &e, NULL), 0);
	ck_assert_double_eq(c.blocks.scrub_tranquility, 0.0);
	ck_assert_int_eq(load_str("[blocks]\nscrub_tranquility = 12.5\nbudget = 0\n",
	    &c, &e, NULL), 0);
	ck_assert_double_eq(c.blocks.scrub_tranquility, 12.5);
	ck_assert_uint_eq(c.blocks.budget, 0);
	ck_assert_int_eq(load_str("[artifacts]\nbudget = UNLIMITED\n", &c, &e, NULL), 0);
	ck_assert_uint_eq(c.artifacts.budget, CONFIG_UNLIMITED);
}
END_TEST

/* ---- file syntax ------------------------------------------------------- */

START_TEST(test_syntax_accepted)
{
	struct config c;
	struct err e = { "" };

	ck_assert_msg(load_str(
	    "\xEF\xBB\xBF; farmd config\r\n"
	    "# another comment\r\n"
	    "\r\n"
	    "  [workers]   ; trailing comment\r\n"
	    "\tencode=3\r\n"
	    "   compile   =   2   ; inline comment\r\n"
	    "execute: 4\n"
	    "[blocks]\n"
	    "budget = 1 G\n"
	    "[workers]\n"
	    "job_timeout = 5s", &c, &e, NULL) == 0, "%s", e.msg);
	ck_assert_uint_eq(c.workers.encode, 3);
	ck_assert_uint_eq(c.workers.compile, 2);
	ck_assert_uint_eq(c.workers.execute, 4);
	ck_assert_uint_eq(c.blocks.budget, GIB);
	ck_assert_uint_eq(c.workers.job_timeout_ms, 5 * SEC);

	/* An empty file and a comments-only file are the defaults. */
	ck_assert_int_eq(load_str("", &c, &e, NULL), 0);
	ck_assert_int_eq(load_str("; nothing\n# here\n", &c, &e, NULL), 0);
	ck_assert_uint_eq(c.workers.compile, 1);
	/* An empty known section is fine. */
	ck_assert_int_eq(load_str("[plotting]\n", &c, &e, NULL), 0);
}
END_TEST

/* A partial file keeps every other value; a load applies over c. */
START_TEST(test_partial)
{
	struct config c, d;
	struct err e = { "" };
	const char *p1 = write_tmp("[history]\npiece_size = 1M\n");
	const char *p2 = write_tmp("[workers]\ncompile = 5\n");

	config_defaults(&c);
	config_defaults(&d);
	ck_assert_int_eq(config_load(&c, p1, &e), 0);
	ck_assert_uint_eq(c.history.piece_size, MIB);
	d.history.piece_size = MIB;
	ck_assert_mem_eq(&c, &d, sizeof(c));

	ck_assert_int_eq(config_load(&c, p2, &e), 0);
	d.workers.compile = 5;
	ck_assert_mem_eq(&c, &d, sizeof(c));
}
END_TEST

/* ---- errors -------------------------------------------------------------- */

START_TEST(test_err_structure)
{
	expect_err_at("[daemon]\nlog_level = info\nfoo = 1\n", 3,
	    "unknown key 'foo' in [daemon]");
	expect_err_at("[daemon]\n[nosuch]\nx = 1\n", 2, "unknown section [nosuch]");
	expect_err_at("; c\n[nosuch]\n", 2, "unknown section [nosuch]");
	expect_err_at("[Daemon]\n", 1, "unknown section [Daemon]");
	expect_err_at("encode = 2\n[workers]\n", 1, "key 'encode' outside any section");
	expect_err_at("[workers]\nencode = 2\ncompile = 1\n\nencode = 3\n", 5,
	    "duplicate key 'encode' in [workers] (first set on line 2)");
	/* The same key in two sections is not a duplicate. */
	expect_err_at("[blocks]\nbudget = 1G\n[artifacts]\nbudget = 1G\n[blocks]\nbudget = 2G\n",
	    6, "duplicate key 'budget' in [blocks] (first set on line 2)");
	expect_err_at("[workers]\nencode = 2\nthis is not a pair\n", 3, "syntax error");
	expect_err_at("[workers\nencode = 2\n", 1, "syntax error");
	expect_err_at("[workers] encode = 2\n", 1, "syntax error");
	/* inih continuation lines are not a thing here: an indented value
	 * line is just a line without '='. */
	expect_err_at("[workers]\nencode = 2\n   3\n", 3, "syntax error");
	/* The first error wins. */
	expect_err_at("[workers]\nbad line\nfoo = 1\n", 2, "syntax error");
	expect_err_at("[workers]\nfoo = 1\nbad line\n", 2, "unknown key 'foo' in [workers]");
}
END_TEST

START_TEST(test_err_long_line)
{
	char text[1024];

	snprintf(text, sizeof(text), "[daemon]\n\nadmin_socket = /%0400d\n", 0);
	expect_err_at(text, 3, "line too long (max 198 characters)");
	snprintf(text, sizeof(text), "[daemon]\nadmin_socket = /%0120d\n", 0);
	expect_err_at(text, 2, "[daemon] admin_socket: path too long (max 107 bytes)");
}
END_TEST

START_TEST(test_err_odd_files)
{
	static const char nul[] = "[workers]\nencode = 2\ncompile = 1\0junk\n";
	struct config c, before;
	struct err e = { "" };
	char want[ERR_MSG_MAX + 64];
	const char *p = write_tmp_n(nul, sizeof(nul) - 1);

	config_defaults(&c);
	memcpy(&before, &c, sizeof(c));
	ck_assert_int_eq(config_load(&c, p, &e), -1);
	snprintf(want, sizeof(want), "%s:3: NUL byte in line", p);
	ck_assert_str_eq(e.msg, want);
	ck_assert_mem_eq(&c, &before, sizeof(c));

	/* An endless file is refused after 1 MiB, not read forever. */
	ck_assert_int_eq(config_load(&c, "/dev/zero", &e), -1);
	snprintf(want, sizeof(want), "/dev/zero: cannot read: %s", strerror(EFBIG));
	ck_assert_str_eq(e.msg, want);
	ck_assert_mem_eq(&c, &before, sizeof(c));
}
END_TEST

START_TEST(test_err_values)
{
	/* [workers] worker_binary: absolute, existing, an executable file. */
	const char *plain = write_tmp("not a program\n");
	char text[256], want[256];

	expect_err_at("[workers]\nworker_binary = farmd-worker\n", 2,
	    "[workers] worker_binary: 'farmd-worker' is not an absolute path");
	expect_err_at("[workers]\nworker_binary = /nonexistent/farmd-worker\n", 2,
	    "[workers] worker_binary: /nonexistent/farmd-worker: No such file or directory");
	expect_err_at("[workers]\nworker_binary = /tmp\n", 2,
	    "[workers] worker_binary: /tmp is not an executable file");
	chmod(plain, 0644);
	snprintf(text, sizeof(text), "[workers]\n\nworker_binary = %s\n", plain);
	snprintf(want, sizeof(want), "[workers] worker_binary: %s is not an executable file",
	    plain);
	expect_err_at(text, 3, want);           /* root too: no x bit at all */

	expect_err_at("[blocks]\n\n\n\n\n\ngc_delay = ten\n", 7,
	    "[blocks] gc_delay: bad duration 'ten' (use ms/s/m/h/d)");
	expect_err_at("[blocks]\ngc_delay = 10\n", 2,
	    "[blocks] gc_delay: bad duration '10' (use ms/s/m/h/d)");
	expect_err_at("[blocks]\ngc_delay =\n", 2,
	    "[blocks] gc_delay: bad duration '' (use ms/s/m/h/d)");
	expect_err_at("[workers]\njob_timeout = 0\n", 2,
	    "[workers] job_timeout: '0' out of range (1ms..3650d)");
	expect_err_at("[workers]\njob_timeout = 3651d\n", 2,
	    "[workers] job_timeout: '3651d' out of range (1ms..3650d)");
	expect_err_at("[plotting]\nretry_delay = 99999999999999999999ms\n", 2,
	    "[plotting] retry_delay: '99999999999999999999ms' out of range (0..3650d)");

	expect_err_at("[blocks]\nbudget = lots\n", 2,
	    "[blocks] budget: bad size 'lots' (use a number with optional K/M/G/T, or unlimited)");
	expect_err_at("[artifacts]\ncache_limit = unlimited\n", 2,
	    "[artifacts] cache_limit: bad size 'unlimited' (use a number with optional K/M/G/T)");
	expect_err_at("[artifacts]\ncache_limit = 20000000T\n", 2,
	    "[artifacts] cache_limit: size '20000000T' too large");
	expect_err_at("[daemon]\nmax_frame = 2G\n", 2,
	    "[daemon] max_frame: '2G' out of range (4K..1G)");
	expect_err_at("[daemon]\nmax_frame = 1000\n", 2,
	    "[daemon] max_frame: '1000' out of range (4K..1G)");
	expect_err_at("[history]\npiece_size = 3000\n", 2,
	    "[history] piece_size: '3000' out of range (a power of two 4K..16M)");
	expect_err_at("[history]\npiece_size = 48K\n", 2,
	    "[history] piece_size: '48K' out of range (a power of two 4K..16M)");
	expect_err_at("[history]\npiece_size = 32M\n", 2,
	    "[history] piece_size: '32M' out of range (a power of two 4K..16M)");
	expect_err_at("[history]\npieces_per_segment = 12\n", 2,
	    "[history] pieces_per_segment: '12' out of range (a power of two 1..65536)");
	expect_err_at("[history]\npieces_per_segment = 131072\n", 2,
	    "[history] pieces_per_segment: '131072' out of range (a power of two 1..65536)");

	/* encode = 0: a farmer that plots only through remote plotters. */
	expect_err_at("[workers]\nencode = 257\n", 2, "[workers] encode: '257' out of range (0..256)");
	expect_err_at("[workers]\ncompile = 257\n", 2, "[workers] compile: '257' out of range (0..256)");
	expect_err_at("[workers]\nexecute = -1\n", 2, "[workers] execute: bad number '-1'");
	expect_err_at("[workers]\nexecute = 2x\n", 2, "[workers] execute: bad number '2x'");
	expect_err_at("[workers]\nrestart_intensity = 0\n", 2,
	    "[workers] restart_intensity: '0' out of range (1..1000000)");
	expect_err_at("[workers]\nencode = 99999999999999999999999\n", 2,
	    "[workers] encode: '99999999999999999999999' out of range (0..256)");
	expect_err_at("[plotting]\nmax_sectors_per_farm = 0\n", 2,
	    "[plotting] max_sectors_per_farm: '0' out of range (1..65536)");
	expect_err_at("[daemon]\nadmin_clients_per_uid = 0\n", 2,
	    "[daemon] admin_clients_per_uid: '0' out of range (1..1024)");

	expect_err_at("[blocks]\nscrub_tranquility = -1\n", 2,
	    "[blocks] scrub_tranquility: bad number '-1' (use digits with an optional decimal point)");
	expect_err_at("[blocks]\nscrub_tranquility = nan\n", 2,
	    "[blocks] scrub_tranquility: bad number 'nan' (use digits with an optional decimal point)");
	expect_err_at("[blocks]\nscrub_tranquility = 1e3\n", 2,
	    "[blocks] scrub_tranquility: bad number '1e3' (use digits with an optional decimal point)");

	expect_err_at("[blocks]\ncompression = zstd:23\n", 2,
	    "[blocks] compression: bad value 'zstd:23' (use none, zstd or zstd:LEVEL with LEVEL 1..22)");
	expect_err_at("[blocks]\ncompression = zstd:0\n", 2,
	    "[blocks] compression: bad value 'zstd:0' (use none, zstd or zstd:LEVEL with LEVEL 1..22)");
	expect_err_at("[blocks]\ncompression = lz4\n", 2,
	    "[blocks] compression: bad value 'lz4' (use none, zstd or zstd:LEVEL with LEVEL 1..22)");

	expect_err_at("[daemon]\nsandbox_required = maybe\n", 2,
	    "[daemon] sandbox_required: bad boolean 'maybe' (use true or false)");
	expect_err_at("[daemon]\nlog_level = verbose\n", 2,
	    "[daemon] log_level: unknown level 'verbose' (use error, warn, info or debug)");
	/* '#' is not an inline comment (';' after a blank is). */
	expect_err_at("[daemon]\nlog_level = debug # chatty\n", 2,
	    "[daemon] log_level: unknown level 'debug # chatty' (use error, warn, info or debug)");
	expect_err_at("[daemon]\nadmin_group = farmd-no-such-group-xyz\n", 2,
	    "[daemon] admin_group: unknown group 'farmd-no-such-group-xyz'");
	expect_err_at("[daemon]\nmonitor_group = farmd-no-such-group-xyz\n", 2,
	    "[daemon] monitor_group: unknown group 'farmd-no-such-group-xyz'");

	expect_err_at("[daemon]\nmetrics_listen = 9616\n", 2,
	    "[daemon] metrics_listen: bad address '9616' (missing ':PORT')");
	expect_err_at("[daemon]\nmetrics_listen = 127.0.0.1:65536\n", 2,
	    "[daemon] metrics_listen: bad address '127.0.0.1:65536' (port must be a number 0..65535)");
	expect_err_at("[daemon]\nmetrics_listen = 127.0.0.1:http\n", 2,
	    "[daemon] metrics_listen: bad address '127.0.0.1:http' (port must be a number 0..65535)");
	expect_err_at("[daemon]\nmetrics_listen = :9616\n", 2,
	    "[daemon] metrics_listen: bad address ':9616' (missing host (use 0.0.0.0:PORT to listen everywhere))");
	expect_err_at("[daemon]\nmetrics_listen = ::1:9616\n", 2,
	    "[daemon] metrics_listen: bad address '::1:9616' (put an IPv6 host in brackets, as in [::1]:9616)");
}
END_TEST

START_TEST(test_err_unreadable)
{
	struct config c, before;
	struct err e = { "" };
	char want[ERR_MSG_MAX + 64];
	char dir[] = "/tmp/farmd-test-config-dir.XXXXXX";

	config_defaults(&c);
	memcpy(&before, &c, sizeof(c));
	ck_assert_int_eq(config_load(&c, "/nonexistent/farmd.ini", &e), -1);
	ck_assert_str_eq(e.msg, "/nonexistent/farmd.ini: cannot read: No such file or directory");
	ck_assert_mem_eq(&c, &before, sizeof(c));

	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(config_load(&c, dir, &e), -1);
	snprintf(want, sizeof(want), "%s: cannot read: %s", dir, strerror(EISDIR));
	ck_assert_str_eq(e.msg, want);
	ck_assert_mem_eq(&c, &before, sizeof(c));
	rmdir(dir);

	if (geteuid() != 0) {
		const char *p = write_tmp("[workers]\nencode = 2\n");

		ck_assert_int_eq(chmod(p, 0), 0);
		ck_assert_int_eq(config_load(&c, p, &e), -1);
		snprintf(want, sizeof(want), "%s: cannot read: %s", p, strerror(EACCES));
		ck_assert_str_eq(e.msg, want);
		ck_assert_mem_eq(&c, &before, sizeof(c));
	}
}
END_TEST

/* ---- reload --------------------------------------------------------------- */

START_TEST(test_reload_accept)
{
	struct config live, next, want;
	struct err e = { "" };

	config_defaults(&live);
	config_defaults(&next);
	next.daemon.log_level = LOG_LVL_DEBUG;
	next.workers.job_timeout_ms = 5 * SEC;
	next.workers.restart_backoff_max_ms = 1 * SEC;
	next.workers.restart_intensity = 99;
	next.workers.restart_period_ms = 10 * SEC;
	next.blocks.gc_delay_ms = 1;
	next.blocks.resync_retry_base_ms = 2;
	next.blocks.budget = 5 * GIB;
	next.blocks.scrub_interval_ms = 3;
	next.blocks.scrub_tranquility = 0.5;
	next.plotting.max_sectors_per_farm = 8;
	next.plotting.retry_delay_ms = 4;
	next.artifacts.cache_limit = 1 * GIB;
	next.artifacts.min_stale_time_ms = 5;
	next.artifacts.budget = 2 * GIB;
	next.artifacts.retry_cooldown_ms = 6;
	next.artifacts.max_retries = 7;
	next.artifacts.memory_limit = 8 * MIB;
	next.artifacts.instruction_limit = 9000;
	memcpy(&want, &next, sizeof(want));

	ck_assert_int_eq(config_reload(&live, &next, &e), 0);
	ck_assert_mem_eq(&live, &want, sizeof(live));

	/* Nothing changed is fine too. */
	ck_assert_int_eq(config_reload(&live, &next, &e), 0);
	ck_assert_mem_eq(&live, &want, sizeof(live));
}
END_TEST

/* Changes the i-th non-reloadable key in c and names it; NULL past the end. */
static const char *
change_one(struct config *c, int i)
{
	switch (i) {
	case 0: strcpy(c->daemon.admin_socket, "/x"); return "[daemon] admin_socket";
	case 1: strcpy(c->daemon.admin_group, "root"); return "[daemon] admin_group";
	case 2: strcpy(c->daemon.monitor_group, "root"); return "[daemon] monitor_group";
	case 3: c->daemon.sandbox_required = true; return "[daemon] sandbox_required";
	case 4: strcpy(c->daemon.metrics_listen, "a:1"); return "[daemon] metrics_listen";
	case 5: c->daemon.admin_clients_per_uid = 1; return "[daemon] admin_clients_per_uid";
	case 6: c->daemon.max_frame = 4096; return "[daemon] max_frame";
	case 7: c->workers.encode += 1; return "[workers] encode";
	case 8: c->workers.compile = 3; return "[workers] compile";
	case 9: c->workers.execute = 3; return "[workers] execute";
	case 10: c->blocks.compression_level = 3; return "[blocks] compression";
	case 11: c->history.piece_size = 1 << 20; return "[history] piece_size";
	case 12: c->history.pieces_per_segment = 2; return "[history] pieces_per_segment";
	case 13: c->history.keep_archived_blocks = false; return "[history] keep_archived_blocks";
	case 14: strcpy(c->workers.worker_binary, "/bin/sh"); return "[workers] worker_binary";
	default: return NULL;
	}
}

START_TEST(test_reload_refuse)
{
	struct config live, next, before;
	struct err e = { "" };

	config_defaults(&live);
	memcpy(&before, &live, sizeof(live));
	config_defaults(&next);
	next.daemon.log_level = LOG_LVL_DEBUG;          /* reloadable */
	next.history.piece_size = MIB;
	next.workers.encode = live.workers.encode + 1;
	ck_assert_int_eq(config_reload(&live, &next, &e), -1);
	ck_assert_str_eq(e.msg,
	    "not reloadable without restart: [workers] encode, [history] piece_size");
	ck_assert_mem_eq(&live, &before, sizeof(live));

	/* Each non-reloadable key on its own. */
	for (int i = 0; change_one(&next, i) != NULL; i++) {
		char want[256];
		const char *name;

		config_defaults(&next);
		name = change_one(&next, i);
		ck_assert_int_eq(config_reload(&live, &next, &e), -1);
		snprintf(want, sizeof(want), "not reloadable without restart: %s", name);
		ck_assert_str_eq(e.msg, want);
		ck_assert_mem_eq(&live, &before, sizeof(live));
	}
}
END_TEST

/* Reload from two loaded files, as SIGHUP does. */
START_TEST(test_reload_files)
{
	struct config live, next;
	struct err e = { "" };

	ck_assert_int_eq(load_str("[history]\npiece_size = 1M\n[daemon]\nlog_level = warn\n",
	    &live, &e, NULL), 0);
	ck_assert_int_eq(load_str("[history]\npiece_size = 1M\n[daemon]\nlog_level = debug\n"
	    "[plotting]\nmax_sectors_per_farm = 5\n", &next, &e, NULL), 0);
	ck_assert_int_eq(config_reload(&live, &next, &e), 0);
	ck_assert_int_eq(live.daemon.log_level, LOG_LVL_DEBUG);
	ck_assert_uint_eq(live.plotting.max_sectors_per_farm, 5);

	ck_assert_int_eq(load_str("[daemon]\nlog_level = debug\n", &next, &e, NULL), 0);
	ck_assert_int_eq(config_reload(&live, &next, &e), -1);
	ck_assert_str_eq(e.msg, "not reloadable without restart: [history] piece_size");
	ck_assert_uint_eq(live.history.piece_size, MIB);
}
END_TEST

/* ---- value parsers -------------------------------------------------------- */

static void
size_ok(const char *s, bool unl, uint64_t want)
{
	uint64_t v = 12345;

	ck_assert_msg(config_parse_size(s, unl, &v) == 0, "'%s' refused", s);
	ck_assert_msg(v == want, "'%s' -> %llu, want %llu", s,
	    (unsigned long long)v, (unsigned long long)want);
}

static void
size_bad(const char *s, bool unl, int want_errno)
{
	uint64_t v = 12345;

	errno = 0;
	ck_assert_msg(config_parse_size(s, unl, &v) == -1, "'%s' accepted", s);
	ck_assert_msg(errno == want_errno, "'%s': errno %d, want %d", s, errno, want_errno);
	ck_assert_uint_eq(v, 12345);
}

/* Keys parsed but not acted on yet would be refused by name and line
 * (config_refuse_unimplemented); since the HTTP listener and validation
 * code landed, none is left: every key below is accepted and acts. */
START_TEST(test_unimplemented_refused)
{
	struct config c;
	struct err e = { "" };
	const char *path;

	ck_assert_int_eq(load_str("[daemon]\nmetrics_listen =\n[workers]\nencode = 1\n"
	    "[artifacts]\ncache_limit = 10G\nbudget = unlimited\n", &c, &e, &path), 0);
	ck_assert_int_eq(config_refuse_unimplemented(&c, path, &e), 0);
	ck_assert_int_eq(load_str("[daemon]\nmetrics_listen = 127.0.0.1:9616\n", &c, &e, &path), 0);
	ck_assert_int_eq(config_refuse_unimplemented(&c, path, &e), 0);
	ck_assert_int_eq(load_str("[artifacts]\ncache_limit = 1K\nmin_stale_time = 0\n"
	    "budget = 1G\nretry_cooldown = 1s\nmax_retries = 1\nmemory_limit = 2M\n"
	    "instruction_limit = 5000\n", &c, &e, &path), 0);
	ck_assert_msg(config_refuse_unimplemented(&c, path, &e) == 0, "%s", e.msg);
	/* A bad value is still a bad value, reported as such. */
	expect_err_at("[artifacts]\nmax_retries = x\n", 2,
	    "[artifacts] max_retries: bad number 'x'");
}
END_TEST

START_TEST(test_parse_size)
{
	size_ok("0", false, 0);
	size_ok("1", false, 1);
	size_ok("1K", false, KIB);
	size_ok("1k", false, KIB);
	size_ok("1KiB", false, KIB);
	size_ok("1kib", false, KIB);
	size_ok("64K", false, 64 * KIB);
	size_ok("3M", false, 3 * MIB);
	size_ok("3MiB", false, 3 * MIB);
	size_ok("1G", false, GIB);
	size_ok("1g", false, GIB);
	size_ok("10GiB", false, 10 * GIB);
	size_ok("16T", false, 16 * TIB);
	size_ok("16t", false, 16 * TIB);
	size_ok("2TiB", false, 2 * TIB);
	size_ok("  7 G  ", false, 7 * GIB);
	size_ok("007", false, 7);
	size_ok("0K", false, 0);
	size_ok("16777215T", false, UINT64_C(16777215) << 40);
	size_ok("18446744073709551614", false, UINT64_MAX - 1);
	size_ok("unlimited", true, CONFIG_UNLIMITED);
	size_ok(" Unlimited ", true, CONFIG_UNLIMITED);

	size_bad("unlimited", false, EINVAL);
	size_bad("", false, EINVAL);
	size_bad("   ", false, EINVAL);
	size_bad("", true, EINVAL);
	size_bad(NULL, false, EINVAL);
	size_bad("-1", false, EINVAL);
	size_bad("+1", false, EINVAL);
	size_bad("12x", false, EINVAL);
	size_bad("K", false, EINVAL);
	size_bad("1KB", false, EINVAL);
	size_bad("1Ki", false, EINVAL);
	size_bad("1.5G", false, EINVAL);
	size_bad("1 2", false, EINVAL);
	size_bad("0x10", false, EINVAL);
	size_bad("1P", false, EINVAL);
	size_bad("18446744073709551615", false, ERANGE);   /* = CONFIG_UNLIMITED */
	size_bad("18446744073709551616", false, ERANGE);
	size_bad("99999999999999999999999999", true, ERANGE);
	size_bad("16777216T", false, ERANGE);
	size_bad("17179869184G", false, ERANGE);
}
END_TEST

static void
dur_ok(const char *s, uint64_t want)
{
	uint64_t v = 12345;

	ck_assert_msg(config_parse_duration_ms(s, &v) == 0, "'%s' refused", s);
	ck_assert_msg(v == want, "'%s' -> %llu, want %llu", s,
	    (unsigned long long)v, (unsigned long long)want);
}

static void
dur_bad(const char *s, int want_errno)
{
	uint64_t v = 12345;

	errno = 0;
	ck_assert_msg(config_parse_duration_ms(s, &v) == -1, "'%s' accepted", s);
	ck_assert_msg(errno == want_errno, "'%s': errno %d, want %d", s, errno, want_errno);
	ck_assert_uint_eq(v, 12345);
}

START_TEST(test_parse_duration)
{
	dur_ok("0", 0);
	dur_ok("000", 0);
	dur_ok(" 0 ", 0);
	dur_ok("0ms", 0);
	dur_ok("0s", 0);
	dur_ok("1ms", 1);
	dur_ok("250ms", 250);
	dur_ok("1s", SEC);
	dur_ok("60s", 60 * SEC);
	dur_ok("10m", 10 * MIN);
	dur_ok("24h", 24 * HOUR);
	dur_ok("30d", 30 * DAY);
	dur_ok("1h30m", 90 * MIN);
	dur_ok("1m 30s", 90 * SEC);
	dur_ok("2 s", 2 * SEC);
	dur_ok("1d2h3m4s5ms", DAY + 2 * HOUR + 3 * MIN + 4 * SEC + 5);
	dur_ok("213503982334d", UINT64_C(213503982334) * DAY);
	dur_ok("18446744073709551615ms", UINT64_MAX);

	dur_bad("", EINVAL);
	dur_bad("  ", EINVAL);
	dur_bad(NULL, EINVAL);
	dur_bad("5", EINVAL);
	dur_bad("-1", EINVAL);
	dur_bad("-1s", EINVAL);
	dur_bad("1.5s", EINVAL);
	dur_bad("ten", EINVAL);
	dur_bad("10S", EINVAL);
	dur_bad("5min", EINVAL);
	dur_bad("5sec", EINVAL);
	dur_bad("s", EINVAL);
	dur_bad("0 5s", EINVAL);
	dur_bad("5s0", EINVAL);
	dur_bad("12x", EINVAL);
	dur_bad("1w", EINVAL);
	dur_bad("18446744073709551616ms", ERANGE);
	dur_bad("213503982335d", ERANGE);
	dur_bad("99999999999999999999999s", ERANGE);
	dur_bad("18446744073709551615ms1ms", ERANGE);
}
END_TEST

static Suite *
config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc;

	tc = tcase_create("defaults");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_defaults_as_file);
	suite_add_tcase(s, tc);

	tc = tcase_create("keys");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, test_every_key);
	tcase_add_test(tc, test_value_variants);
	tcase_add_test(tc, test_syntax_accepted);
	tcase_add_test(tc, test_partial);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, test_err_structure);
	tcase_add_test(tc, test_err_long_line);
	tcase_add_test(tc, test_err_odd_files);
	tcase_add_test(tc, test_err_values);
	tcase_add_test(tc, test_err_unreadable);
	tcase_add_test(tc, test_unimplemented_refused);
	tcase_add_test(tc, test_artifact_limits_range);
	suite_add_tcase(s, tc);

	tc = tcase_create("reload");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, test_reload_accept);
	tcase_add_test(tc, test_reload_refuse);
	tcase_add_test(tc, test_reload_files);
	suite_add_tcase(s, tc);

	tc = tcase_create("parsers");
	tcase_add_test(tc, test_parse_size);
	tcase_add_test(tc, test_parse_duration);
	suite_add_tcase(s, tc);

	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(config_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
