/*
 * http.h: the HTTP listener ([daemon] metrics_listen), on farmd's event
 * loop with libevent's evhttp.  Read-only: GET and HEAD of /metrics, the
 * JSON documents under /api/v1/ (the same as `farmctl --json`), and / (the
 * dashboard, embedded at build time).  It calls the producers of those
 * documents; nothing calls it but main.
 */
#ifndef FARMD_HTTP_H
#define FARMD_HTTP_H

#include <stddef.h>

#include "err.h"

struct farmd;
struct http;

/* Listens on listen ("HOST:PORT", "[V6]:PORT"; port 0: any free one).
 * NULL with e naming the address and the cause (getaddrinfo, bind). */
struct http *http_new(struct farmd *d, const char *listen, struct err *e);
/* Frees the listener and every connection; NULL is a no-op. */
void http_free(struct http *h);
/* The address bound, "HOST:PORT" (the port actually chosen). */
const char *http_address(const struct http *h);

#endif
