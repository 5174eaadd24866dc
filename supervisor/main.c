/*
 * farmd: the supervisor.
 *
 * Start-up order: arguments → config → state dir (created, then locked:
 * one farmd per state dir) → state.db → I/O pool → resync → block store
 * → history → plot → scrub → worker pools (created) → admin socket →
 * HTTP listener (metrics_listen) → workers spawned → plotting starts →
 * READY once every pool's workers said hello (or after 10 s, with a
 * warning).  Shutdown (SIGTERM, SIGINT,
 * `farmctl shutdown`, or a fatal error) runs it backwards: stop accepting,
 * quiesce plotting and scrub, end workers (SIGTERM, then SIGKILL after a
 * grace period), wait for disk work in flight, close the database after
 * a WAL checkpoint, exit 0 (or 1 with the reason).
 *
 * Nothing below calls main: the pools report fatal errors and health
 * changes through struct pool_hooks, the commands ask for a shutdown
 * through struct cmd_env.  Readiness and the end of shutdown are
 * conditions on the subsystems' state, checked after every pass of the
 * loop (farmd_loop), never polled.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "artifact.h"
#include "blockstore.h"
#include "clock.h"
#include "cluster.h"
#include "cluster_repair.h"
#include "cmd.h"
#include "config.h"
#include "control.h"
#include "db.h"
#include "farmd.h"
#include "history.h"
#include "http.h"
#include "log.h"
#include "io.h"
#include "plot.h"
#include "plot_scrub.h"
#include "plotter.h"
#include "pool.h"
#include "resync.h"
#include "rplot.h"
#include "scrub.h"

/* The configured install locations (meson.build): prefix / sbindir and
 * prefix / libexecdir, absolute. */
#ifndef FARMD_LIBEXECDIR
#define FARMD_LIBEXECDIR "/usr/libexec"
#endif
#ifndef FARMD_SBINDIR
#define FARMD_SBINDIR "/usr/sbin"
#endif

#define SHUTDOWN_GRACE_MS 1000
#define IO_THREADS 4
#define READY_WAIT_MS 10000     /* READY=1 at the latest this long after start */

/* What main owns besides struct farmd: its events and the callbacks it
 * hands down. */
struct farmd_events {
	struct event *sig[4];
	struct event *ready_deadline;   /* READY=1 even if a worker is missing */
	struct event *watchdog;
	struct cmd_env cmd;
	struct pool_hooks hooks;
};

static void
usage(FILE *f)
{
	fprintf(f, "usage: farmd --state-dir DIR [--config FILE] [--admin-socket PATH]\n"
	    "       farmd --check-sandbox [--config FILE]\n"
	    "       farmd --version\n");
}

/* sd_notify STATUS= line, from the current state. */
static void
farmd_notify_status(struct farmd *d)
{
	char line[256];
	int n;

	if (!d->ready)
		return;
	n = snprintf(line, sizeof(line), "STATUS=%s%s", d->stopping ? "stopping" : "running",
	    pool_degraded(d->pool) ? "; a worker pool is degraded" : "");
	(void)n;
	sd_notify(0, line);
}

/* The shutdown itself runs from the loop, never inside the callback that
 * asked for it: that callback's peer or job must stay valid until it
 * returns. */
static void
farmd_stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct farmd *d = arg;

	(void)fd;
	(void)what;
	sd_notify(0, "STOPPING=1");
	control_close_listener(d->control);
	/* The farmers of our plotter jobs are told while we can still talk. */
	plotter_quiesce(d->plotter);
	/* Requests to peers fail now, so the jobs waiting on them end. */
	cluster_repair_quiesce(d->repair);
	cluster_quiesce(d->cluster);
	/* Plotting first: its worker jobs are cancelled, not failed. */
	plot_quiesce(d->plot);
	scrub_quiesce(d->scrub);
	artifacts_quiesce(d->artifacts);
	pool_shutdown(d->pool, SHUTDOWN_GRACE_MS);
}

/* Starts an orderly shutdown; code 0 for a requested stop, 1 for a fatal
 * runtime failure (reason logged once and printed as the last line). */
static void
farmd_stop(struct farmd *d, int code, const char *reason)
{
	if (d->stopping)
		return;
	d->stopping = 1;
	d->exit_code = code;
	snprintf(d->exit_reason, sizeof(d->exit_reason), "%s", reason);
	if (code != 0)
		log_err("fatal: %s", reason);
	else
		log_info("stopping: %s", reason);
	if (event_base_once(d->base, -1, EV_TIMEOUT, farmd_stop_cb, d, NULL) < 0)
		farmd_stop_cb(-1, 0, d);
}

static void
farmd_stop_hook(void *arg, int code, const char *reason)
{
	farmd_stop(arg, code, reason);
}

static void
farmd_fatal_hook(void *arg, const char *reason)
{
	farmd_stop(arg, 1, reason);
}

static void
farmd_health_hook(void *arg)
{
	farmd_notify_status(arg);
}

static void
farmd_reload(struct farmd *d)
{
	struct config next;
	struct err e;

	if (d->config_path[0] == '\0') {
		log_info("SIGHUP: no config file (--config) to reload");
		return;
	}
	config_defaults(&next);
	if (config_load(&next, d->config_path, &e) < 0 ||
	    config_refuse_unimplemented(&next, d->config_path, &e) < 0) {
		log_err("reload refused: %s", e.msg);
		return;
	}
	if (config_reload(&d->cfg, &next, &e) < 0) {
		log_err("reload refused: %s", e.msg);
		return;
	}
	/* Pool sizes are not reloadable; the restart policy and job timeout
	 * are read from d->cfg where they are used. */
	log_set_level(d->cfg.daemon.log_level);
	blockstore_set_budget(d->blocks, d->cfg.blocks.budget);
	artifacts_set_budget(d->artifacts, d->cfg.artifacts.budget);
	/* A shorter restart_period or a higher intensity may end a degraded
	 * spell now. */
	pool_recheck(d->pool);
	cluster_reload(d->cluster);
	log_info("configuration reloaded from %s", d->config_path);
}

static void
farmd_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct farmd *d = arg;

	(void)what;
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		farmd_stop(d, 0, sig == SIGTERM ? "SIGTERM" : "SIGINT");
		break;
	case SIGHUP:
		farmd_reload(d);
		break;
	case SIGCHLD:
		pool_reap(d->pool);
		break;
	}
}

static void
farmd_become_ready(struct farmd *d)
{
	if (d->ready || d->stopping)
		return;
	if (!pool_ready(d->pool))
		log_warn("not every worker came up within 10 s; ready anyway");
	d->ready = 1;
	sd_notify(0, "READY=1");
	farmd_notify_status(d);
	log_info("ready: admin socket %s", d->admin_path);
}

static void
farmd_ready_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	farmd_become_ready(arg);
}

/* Stopping ends when workers are reaped and in-flight disk work has
 * finished (its completions commit or roll back). */
static int
farmd_stopped(struct farmd *d)
{
	return d->stopping && pool_alive(d->pool) == 0 && plotter_quiesce(d->plotter) &&
	    cluster_repair_quiesce(d->repair) &&
	    cluster_quiesce(d->cluster) && resync_quiesce(d->resync) &&
	    scrub_quiesce(d->scrub) && history_quiesce(d->history) && plot_quiesce(d->plot) &&
	    artifacts_quiesce(d->artifacts) &&
	    io_pending(d->io) == 0;
}

/*
 * The loop, one pass at a time (tmux's proc_loop).  Whatever makes farmd
 * ready (a worker's hello) or ends a shutdown (a reap, an I/O completion,
 * a job's end) happens in a callback, so checking after each pass sees
 * every change as soon as it happens, and an idle farmd sleeps.
 */
static void
farmd_loop(struct farmd *d)
{
	for (;;) {
		if (!d->ready && pool_ready(d->pool))
			farmd_become_ready(d);
		if (farmd_stopped(d))
			return;
		if (event_base_loop(d->base, EVLOOP_ONCE) != 0) {
			log_err("event loop ended unexpectedly");
			return;
		}
	}
}

/*
 * The farmd-worker to run, first found of:
 *   1. [workers] worker_binary, when set (config.c checked it);
 *   2. beside farmd's own executable: a build directory;
 *   3. the installed tree farmd runs from: when farmd is ROOT/FARMD_SBINDIR/farmd,
 *      ROOT/FARMD_LIBEXECDIR/farmd-worker, so a tree installed with
 *      `meson install --destdir ROOT` (or moved whole) runs its own worker;
 *   4. FARMD_LIBEXECDIR/farmd-worker, the configured location.
 * Each candidate must be executable.
 */
static int
farmd_worker_path(struct farmd *d, struct err *e)
{
	char self[PATH_MAX], *dir;
	size_t dlen, slen = strlen(FARMD_SBINDIR);
	ssize_t n;

	if (d->cfg.workers.worker_binary[0] != '\0') {
		snprintf(d->worker_path, sizeof(d->worker_path), "%s", d->cfg.workers.worker_binary);
		if (access(d->worker_path, X_OK) == 0)
			return 0;
		return err_sys(e, "[workers] worker_binary %s", d->worker_path);
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		dir = dirname(self);
		snprintf(d->worker_path, sizeof(d->worker_path), "%s/farmd-worker", dir);
		if (access(d->worker_path, X_OK) == 0)
			return 0;
		dlen = strlen(dir);
		if (dlen >= slen && strcmp(dir + dlen - slen, FARMD_SBINDIR) == 0) {
			snprintf(d->worker_path, sizeof(d->worker_path), "%.*s%s/farmd-worker",
			    (int)(dlen - slen), dir, FARMD_LIBEXECDIR);
			if (access(d->worker_path, X_OK) == 0)
				return 0;
		}
	}
	snprintf(d->worker_path, sizeof(d->worker_path), "%s/farmd-worker", FARMD_LIBEXECDIR);
	if (access(d->worker_path, X_OK) == 0)
		return 0;
	return err_set(e, "cannot find farmd-worker beside farmd or in %s (set [workers] "
	    "worker_binary)", FARMD_LIBEXECDIR);
}

/* Creates and locks the state dir.  The lock (flock on farmd.lock) lives
 * as long as the process, kill -9 included, so a stale lock cannot exist. */
static int
farmd_lock_state_dir(struct farmd *d, const char *dir, struct err *e)
{
	char path[PATH_MAX + 32], pid[32], real[PATH_MAX];
	int fd, n;

	if (mkdir(dir, 0750) < 0 && errno != EEXIST)
		return err_sys(e, "state dir %s: create", dir);
	if (realpath(dir, real) == NULL)
		return err_sys(e, "state dir %s", dir);
	snprintf(d->state_dir, sizeof(d->state_dir), "%s", real);
	snprintf(path, sizeof(path), "%s/farmd.lock", d->state_dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return err_sys(e, "state dir %s: open lock file", d->state_dir);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		n = (int)pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		close(fd);
		return err_set(e, "state dir %s is in use by another farmd (pid %s)",
		    d->state_dir, pid[0] ? pid : "?");
	}
	n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
		close(fd);
		return err_sys(e, "state dir %s: write lock file", d->state_dir);
	}
	d->lock_fd = fd;
	return 0;
}

static void
farmd_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	sd_notify(0, "WATCHDOG=1");
}

/* Signals first of all: no child may exit unseen, no SIGPIPE kill us. */
static int
farmd_signals_start(struct farmd *d, struct farmd_events *ev, struct err *e)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGCHLD };

	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		ev->sig[i] = evsignal_new(d->base, sigs[i], farmd_signal_cb, d);
		if (ev->sig[i] == NULL || event_add(ev->sig[i], NULL) < 0)
			return err_set(e, "cannot watch signal %d", sigs[i]);
	}
	return 0;
}

/* Last of the start-up: the readiness deadline and the watchdog. */
static int
farmd_timers_start(struct farmd *d, struct farmd_events *ev, struct err *e)
{
	uint64_t up = clock_mono_ms() - d->start_mono_ms, wd_usec = 0;
	struct timeval tv = clock_tv(up < READY_WAIT_MS ? READY_WAIT_MS - up : 0);

	ev->ready_deadline = evtimer_new(d->base, farmd_ready_deadline_cb, d);
	if (ev->ready_deadline == NULL || evtimer_add(ev->ready_deadline, &tv) < 0)
		return err_set(e, "cannot start the readiness timer");
	if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
		struct timeval wd = { (time_t)(wd_usec / 2 / 1000000),
			(suseconds_t)(wd_usec / 2 % 1000000) };

		ev->watchdog = event_new(d->base, -1, EV_PERSIST, farmd_watchdog_cb, d);
		if (ev->watchdog != NULL)
			event_add(ev->watchdog, &wd);
	}
	return 0;
}

/* The start-up order of farmd.h; -2 for a config error found late. */
static int
farmd_start(struct farmd *d, struct farmd_events *ev, struct err *e)
{
	char path[PATH_MAX + 16];
	int config_error = 0;

	if (d->cfg.cluster.nats[0] != '\0')
		cluster_preinit();      /* before the base: cnats needs its locks */
	if ((d->base = event_base_new()) == NULL)
		return err_set(e, "cannot create the event loop");
	if (farmd_signals_start(d, ev, e) < 0)
		return -1;
	/* Early: connecting takes a round trip, and a server that is down is
	 * retried in the background, never waited for. */
	if ((d->cluster = cluster_new(d, e)) == NULL)
		return -2;
	snprintf(path, sizeof(path), "%s/state.db", d->state_dir);
	if ((d->db = db_open(path, e)) == NULL)
		return -1;
	if ((d->io = io_new(d->base, IO_THREADS, e)) == NULL)
		return -1;
	if ((d->blocks = blockstore_new(d, e)) == NULL)
		return -1;
	if ((d->resync = resync_new(d, e)) == NULL)
		return -1;
	if ((d->artifacts = artifacts_new(d, e)) == NULL)
		return -1;
	if ((d->history = history_new(d, &config_error, e)) == NULL)
		return config_error ? -2 : -1;
	/* Serving peers needs the block store and history. */
	if (cluster_peers_start(d->cluster, e) < 0 || cluster_fetch_start(d->cluster, e) < 0 ||
	    (d->repair = cluster_repair_new(d, e)) == NULL)
		return -1;
	if ((d->rplot = rplot_new(d, e)) == NULL)
		return -1;
	if ((d->plot = plot_new(d, e)) == NULL)
		return -1;
	/* After plot: a scrub resumed mid-run may be checking sectors. */
	if ((d->scrub = scrub_new(d, (const struct scrub_source *const[]){
	    &scrub_source_blocks, &plot_scrub_sectors, NULL }, e)) == NULL)
		return -1;
	ev->hooks = (struct pool_hooks){ farmd_fatal_hook, farmd_health_hook, d };
	if ((d->pool = pool_new(d, &ev->hooks, e)) == NULL)
		return -1;
	if ((d->plotter = plotter_new(d, e)) == NULL)
		return -1;
	ev->cmd = (struct cmd_env){ farmd_stop_hook, d };
	if ((d->control = control_new(d, d->admin_path, cmd_dispatch, &ev->cmd, e)) == NULL)
		return -1;
	/* An address that cannot be bound is a runtime failure (exit 1): the
	 * config is valid, the port is taken or the host is not ours. */
	if (d->cfg.daemon.metrics_listen[0] != '\0') {
		if ((d->http = http_new(d, d->cfg.daemon.metrics_listen, e)) == NULL)
			return -1;
		snprintf(d->http_listen, sizeof(d->http_listen), "%s", http_address(d->http));
	}
	if (pool_start(d->pool, e) < 0)
		return -1;
	if (plotter_start(d->plotter, e) < 0)
		return -1;
	if (plot_start(d->plot, e) < 0)
		return -1;
	return farmd_timers_start(d, ev, e);
}

static void
farmd_teardown(struct farmd *d, struct farmd_events *ev)
{
	for (size_t i = 0; i < sizeof(ev->sig) / sizeof(ev->sig[0]); i++)
		if (ev->sig[i] != NULL)
			event_free(ev->sig[i]);
	if (ev->ready_deadline != NULL)
		event_free(ev->ready_deadline);
	if (ev->watchdog != NULL)
		event_free(ev->watchdog);
	/* Disk work first: its completions may still reach any subsystem. */
	io_free(d->io);
	plotter_free(d->plotter);
	cluster_repair_free(d->repair);
	cluster_free(d->cluster);
	http_free(d->http);
	control_free(d->control);
	pool_free(d->pool);
	scrub_free(d->scrub);
	plot_free(d->plot);
	rplot_free(d->rplot);           /* after the sector jobs that hold its jobs */
	history_free(d->history);
	artifacts_free(d->artifacts);
	resync_free(d->resync);
	blockstore_free(d->blocks);
	db_close(d->db);
	if (d->base != NULL)
		event_base_free(d->base);
	libevent_global_shutdown();
	if (d->lock_fd > 0)
		close(d->lock_fd);
}

struct farmd_args {
	const char *state_dir, *admin;
	int check_sandbox;
};

/* Command line into a and d->config_path.  Returns -1 to go on, else the
 * exit code (--version, --help, a usage error). */
static int
farmd_parse_args(struct farmd *d, int argc, char **argv, struct farmd_args *a)
{
	static const struct option opts[] = {
		{ "state-dir", required_argument, NULL, 'd' },
		{ "config", required_argument, NULL, 'c' },
		{ "admin-socket", required_argument, NULL, 's' },
		{ "check-sandbox", no_argument, NULL, 'S' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd': a->state_dir = optarg; break;
		case 'c': snprintf(d->config_path, sizeof(d->config_path), "%s", optarg); break;
		case 's': a->admin = optarg; break;
		case 'S': a->check_sandbox = 1; break;
		case 'V': printf("farmd %s\n", FARMD_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EX_CONFIG;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "farmd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return EX_CONFIG;
	}
	return -1;
}

/* Everything before the loop is built: the worker binary, the config,
 * the state dir lock, the admin path.  Returns -1 to go on, else the exit
 * code. */
static int
farmd_prepare(struct farmd *d, const struct farmd_args *a)
{
	struct err e;

	/* The config first: it may name the worker binary, which
	 * --check-sandbox runs too. */
	config_defaults(&d->cfg);
	if (d->config_path[0] != '\0' && (config_load(&d->cfg, d->config_path, &e) < 0 ||
	    config_refuse_unimplemented(&d->cfg, d->config_path, &e) < 0)) {
		fprintf(stderr, "farmd: %s\n", e.msg);
		return EX_CONFIG;
	}
	if (farmd_worker_path(d, &e) < 0) {
		fprintf(stderr, "farmd: %s\n", e.msg);
		return 1;
	}
	if (a->check_sandbox) {
		/* The worker applies its own sandbox in a child and reports. */
		execl(d->worker_path, "farmd-worker", "--check-sandbox", (char *)NULL);
		fprintf(stderr, "farmd: exec %s: %s\n", d->worker_path, strerror(errno));
		return 1;
	}
	if (a->state_dir == NULL) {
		fprintf(stderr, "farmd: --state-dir is required\n");
		usage(stderr);
		return EX_CONFIG;
	}
	log_set_level(d->cfg.daemon.log_level);
	d->start_real_ms = clock_real_ms();
	d->start_mono_ms = clock_mono_ms();
	if (farmd_lock_state_dir(d, a->state_dir, &e) < 0) {
		fprintf(stderr, "farmd: %s\n", e.msg);
		return 1;
	}
	if (a->admin != NULL)
		snprintf(d->admin_path, sizeof(d->admin_path), "%s", a->admin);
	else if (d->cfg.daemon.admin_socket[0] != '\0')
		snprintf(d->admin_path, sizeof(d->admin_path), "%s", d->cfg.daemon.admin_socket);
	else
		snprintf(d->admin_path, sizeof(d->admin_path), "%s/farmd.sock", d->state_dir);
	return -1;
}

int
main(int argc, char **argv)
{
	static struct farmd d;
	struct farmd_events ev = { 0 };
	struct farmd_args args = { 0 };
	struct err e;
	int rc;

	log_init("farmd");
	/* Plotting frees and allocates the same sizes over and over (a
	 * piece from the block store per slot, 1 MiB in production): keep
	 * freed memory instead of returning it to the kernel and faulting it
	 * in again, and serve large blocks from the heap rather than a fresh
	 * mmap each (issue 12: page faults per sector). */
	mallopt(M_MMAP_THRESHOLD, 32 << 20);   /* glibc's largest */
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	/* One arena: a piece read on any I/O thread and freed on the loop
	 * goes back where the next read, on whichever thread, finds it;
	 * an arena per thread would each have to grow to the peak first. */
	mallopt(M_ARENA_MAX, 1);
	if ((rc = farmd_parse_args(&d, argc, argv, &args)) >= 0 ||
	    (rc = farmd_prepare(&d, &args)) >= 0)
		return rc;
	if ((rc = farmd_start(&d, &ev, &e)) < 0) {
		log_err("%s", e.msg);
		fprintf(stderr, "farmd: %s\n", e.msg);
		farmd_teardown(&d, &ev);
		return rc == -2 ? EX_CONFIG : 1;
	}
	log_info("farmd %s starting: state dir %s, %u encode / %u compile / %u execute workers",
	    FARMD_VERSION, d.state_dir, d.cfg.workers.encode, d.cfg.workers.compile,
	    d.cfg.workers.execute);
	farmd_loop(&d);
	farmd_teardown(&d, &ev);
	if (d.exit_code != 0) {
		fprintf(stderr, "farmd: %s\n", d.exit_reason);
		return d.exit_code;
	}
	log_info("stopped");
	return 0;
}
