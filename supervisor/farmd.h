/*
 * farmd.h: the supervisor's root state.  One instance, created by main()
 * and passed by pointer to every subsystem; nothing else is global.
 * Subsystems read it (config, loop, paths, their peers' handles); only
 * main.c changes ready, stopping and the exit fields.
 *
 * Start-up order (main.c): arguments → config → state dir lock → event
 * loop and signals → cluster (connecting) → database → I/O pool → resync → block
 * store → artifacts → history → cluster serving, gap repair → remote
 * plotting (farmer side) → plot → scrub → worker pools (created) → plotter
 * side → admin socket → HTTP listener (when metrics_listen is set) →
 * workers spawned → plotter offers → plotting starts → READY
 * (every worker said hello, or 10 s passed).
 * Shutdown runs it backwards.
 */
#ifndef FARMD_FARMD_H
#define FARMD_FARMD_H

#include <limits.h>
#include <stdint.h>

#include <event2/event.h>

#include "config.h"

struct db;
struct io;
struct pool;
struct control;
struct blockstore;
struct resync;
struct scrub;
struct history;
struct plot;
struct http;
struct artifacts;
struct cluster;
struct cluster_repair;
struct rplot;
struct plotter;

struct farmd {
	struct config cfg;
	char state_dir[PATH_MAX];
	char config_path[PATH_MAX];     /* "" = embedded defaults */
	char admin_path[PATH_MAX];
	char worker_path[PATH_MAX];
	struct event_base *base;
	struct db *db;
	struct io *io;
	struct blockstore *blocks;
	struct resync *resync;
	struct scrub *scrub;
	struct artifacts *artifacts;
	struct history *history;
	struct plot *plot;
	struct pool *pool;
	struct control *control;
	struct http *http;              /* NULL: metrics_listen is off */
	struct cluster *cluster;        /* never NULL once started; disabled without [cluster] nats */
	struct cluster_repair *repair;  /* gap repair, over the cluster */
	struct rplot *rplot;            /* remote plotting, the farmer's side */
	struct plotter *plotter;        /* remote plotting, the plotter's side */
	char http_listen[64];           /* the address bound, "HOST:PORT"; "" = off */
	int lock_fd;
	uint64_t start_real_ms;
	uint64_t start_mono_ms;
	int ready;                      /* READY=1 sent */
	int stopping;                   /* shutdown under way */
	int exit_code;
	char exit_reason[256];
};

#endif
