/*
 * status.h: the `status` document (DESIGN.md §11), built in one place for
 * its two readers: the admin command (cmd.c, which also renders it as
 * text) and the HTTP listener's /api/v1/status (http.c).
 */
#ifndef FARMD_STATUS_H
#define FARMD_STATUS_H

#include <jansson.h>

struct farmd;

/* A new object (caller owns it): version, pid, uptime_s, state_dir,
 * admin_socket, http_listen (the address bound, "HOST:PORT", or null when
 * the listener is off), state, sandbox, pools, workers, plotting. */
json_t *status_json(struct farmd *d);

#endif
