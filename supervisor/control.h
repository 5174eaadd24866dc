/*
 * control.h: the admin socket.  Accepts farmctl connections, decides
 * access from the peer's credentials (SO_PEERCRED, SO_PEERGROUPS), reads
 * one request at a time per connection and guarantees exactly one
 * response to each, even when the client leaves before it is ready.
 * What a request means is not its business: it hands each one to the
 * dispatch function it was given (the command table, cmd.c).
 */
#ifndef FARMD_CONTROL_H
#define FARMD_CONTROL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include <jansson.h>

#include "err.h"
#include "frame.h"

struct farmd;
struct control;
struct control_client;

enum control_access { ACCESS_NONE, ACCESS_MONITOR, ACCESS_ADMIN };

/* A request being answered.  Handlers own it until they reply; a reply
 * frees it.  fds[] are the descriptors the client passed (files named on
 * its command line), in argument order; a handler that keeps one sets the
 * slot to -1. */
struct control_req {
	struct farmd *d;
	struct control_client *client;  /* NULL once the client has gone */
	int argc;
	char **argv;
	int json;
	int fds[FRAME_MAX_FDS];
	int nfds;
	uid_t uid;
	pid_t pid;
	enum control_access access;
	void *arg;                      /* control_new's dispatch_arg */
	/* control.c's: its list of unanswered requests (c is NULL once the
	 * control is freed, so a late reply counts nothing). */
	struct control *c;
	TAILQ_ENTRY(control_req) pending;
};

/* Runs one request; it must lead to exactly one reply (now or later). */
typedef void (*control_dispatch_cb)(struct control_req *req, void *arg);

/* Counters and gauges for metrics. */
struct control_stats {
	uint64_t requests;              /* requests received */
	uint64_t errors;                /* answered with an error */
	uint64_t denied;                /* refused for lack of access */
	uint64_t protocol_errors;       /* connections dropped for a protocol error */
	size_t clients;                 /* connections open */
};

struct control *control_new(struct farmd *d, const char *path,
    control_dispatch_cb dispatch, void *dispatch_arg, struct err *e);
/* Stops accepting, for a shutdown.  Requests in hand finish; later ones on
 * existing connections are answered "farmd is shutting down" without being
 * run, so the work in flight drains. */
void control_close_listener(struct control *c);
void control_free(struct control *c);

/* Replies.  Each frees req.  json is stolen (may be NULL: text only); text
 * is copied. */
void control_reply(struct control_req *req, json_t *json, const char *text);
void control_reply_data(struct control_req *req, json_t *json, const char *text,
    const uint8_t *data, size_t len, const char *warning);
void control_reply_err(struct control_req *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* An error reply to a request its peer may not make (counted as denied). */
void control_reply_denied(struct control_req *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void control_stats(const struct control *c, struct control_stats *s);

#endif
