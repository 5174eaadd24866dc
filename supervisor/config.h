/*
 * config.h: farmd's INI configuration (DESIGN.md §14).  Every key has a
 * default, so an absent file is a valid configuration.  Unknown sections
 * or keys and bad values are refused with "FILE:LINE: reason".  Sizes take
 * K/M/G/T (powers of 1024), durations ms/s/m/h/d.
 */
#ifndef FARMD_CONFIG_H
#define FARMD_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "log.h"

#define CONFIG_UNLIMITED UINT64_MAX

/* [cluster] remote_plotting: use other nodes' plotters never, only when
 * every local encode worker is busy, or first. */
enum config_remote_plotting {
	REMOTE_PLOTTING_OFF, REMOTE_PLOTTING_OVERFLOW, REMOTE_PLOTTING_PREFER
};

struct config {
	struct {
		char admin_socket[PATH_MAX];    /* "" = <state dir>/farmd.sock */
		char admin_group[64];           /* "" = none */
		char monitor_group[64];
		bool sandbox_required;
		char metrics_listen[128];       /* "" = off; "HOST:PORT" */
		enum log_level log_level;
		uint32_t admin_clients_per_uid; /* added key, default 16 */
		uint64_t max_frame;             /* added key, default 64M */
	} daemon;
	struct {
		uint32_t encode;                /* default: CPU count */
		uint32_t compile;
		uint32_t execute;
		char worker_binary[PATH_MAX];   /* "" = search (main.c) */
		uint64_t encode_buffer;         /* added key, default 16M: wbuf.h */
		uint64_t job_timeout_ms;
		uint64_t restart_backoff_max_ms;
		uint32_t restart_intensity;
		uint64_t restart_period_ms;
	} workers;
	struct {
		int compression_level;          /* 0 = none, else zstd level 1..22 */
		uint64_t gc_delay_ms;
		uint64_t resync_retry_base_ms;
		uint64_t budget;                /* bytes, CONFIG_UNLIMITED */
		uint64_t scrub_interval_ms;
		double scrub_tranquility;
	} blocks;
	struct {
		uint64_t piece_size;
		uint32_t pieces_per_segment;
		bool keep_archived_blocks;
	} history;
	struct {
		uint32_t max_sectors_per_farm;
		uint64_t retry_delay_ms;
	} plotting;
	struct {
		uint64_t cache_limit;
		uint64_t min_stale_time_ms;
		uint64_t budget;
		uint64_t retry_cooldown_ms;
		uint32_t max_retries;
		uint64_t memory_limit;          /* added key, default 64M */
		uint64_t instruction_limit;     /* added key, default 10^8 */
	} artifacts;
	struct {
		char nats[512];                 /* "" = no cluster; URL[,URL...] */
		char node[64];                  /* "" = <hostname>-<state dir hash> */
		char user[128];
		char password[128];
		char creds[PATH_MAX];           /* "" = none; a readable file */
		char tls_ca[PATH_MAX];          /* "" = none; a readable file */
		bool plotter;
		enum config_remote_plotting remote_plotting;
		uint32_t verify_pieces;
	} cluster;
	/* The first key set in the file that farmd parses but does not act
	 * on yet (line 0: none): see config_refuse_unimplemented(). */
	struct {
		int line;
		char key[64];
		char why[96];
	} unimplemented;
};

void config_defaults(struct config *c);

/* Loads path over the defaults already in c.  On error c is unchanged and
 * e says "path:line: reason" (or "path: reason" when the file cannot be
 * read). */
int config_load(struct config *c, const char *path, struct err *e);

/* Refuses a configuration that sets a key farmd does not act on yet
 * (e says "path:line: [section] key: not implemented yet ..."), so an
 * operator's setting never silently does nothing.  0 when there is none. */
int config_refuse_unimplemented(const struct config *c, const char *path, struct err *e);

/* Copies the reloadable keys of next into live (SIGHUP).  A changed key
 * that cannot be reloaded is reported in e (one line naming the keys) and
 * nothing is applied; returns -1 then. */
int config_reload(struct config *live, const struct config *next, struct err *e);

/* Value parsers shared with farmctl-facing code. "unlimited" is accepted by
 * config_parse_size only when allow_unlimited. */
int config_parse_size(const char *s, bool allow_unlimited, uint64_t *out);
int config_parse_duration_ms(const char *s, uint64_t *out);

#endif
