/*
 * metrics.h: the Prometheus text exposition.  It keeps no state: every
 * value is read from the subsystems' own stats when rendering, so
 * metrics depends on them and none of them on metrics.
 */
#ifndef FARMD_METRICS_H
#define FARMD_METRICS_H

struct farmd;

/* Appends the exposition text to a new string (caller frees). */
char *metrics_render(struct farmd *d);

#endif
