/*
 * metrics.h: counters that subsystems bump and the Prometheus text
 * exposition.  Counters only go up; gauges are read from subsystem state
 * when rendering, never kept twice.
 */
#ifndef FARMD_METRICS_H
#define FARMD_METRICS_H

#include <stdint.h>

#include "wire.h"

struct farmd;

struct metrics {
	uint64_t jobs_done[WIRE_KIND_COUNT];
	uint64_t jobs_failed[WIRE_KIND_COUNT];      /* attempts that failed */
	uint64_t jobs_retried[WIRE_KIND_COUNT];
	uint64_t worker_restarts[WIRE_KIND_COUNT];
	uint64_t worker_crashes[WIRE_KIND_COUNT];   /* exits not asked for */
	uint64_t worker_timeouts[WIRE_KIND_COUNT];
	uint64_t protocol_errors_worker;
	uint64_t protocol_errors_admin;
	uint64_t admin_requests;
	uint64_t admin_errors;
	uint64_t admin_denied;
};

/* Appends the exposition text to a new string (caller frees). */
char *metrics_render(struct farmd *d);

#endif
