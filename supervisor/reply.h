/*
 * reply.h: what admin command handlers build their answers from: a text
 * buffer for the human tables, reads of JSON fields, and the parsing of
 * numeric arguments.  Below every cmd*.c, so the command files depend on
 * it and on control, never on the command table (cmd.c).
 */
#ifndef FARMD_REPLY_H
#define FARMD_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "control.h"

/* Text output: truncated, never overflowing, at sizeof(s) - 1 bytes. */
struct tbuf {
	char s[65536];
	size_t len;
};

void tb_printf(struct tbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An empty buffer (caller frees), or NULL after replying "out of memory"
 * to req. */
struct tbuf *tb_new(struct control_req *req);
/* Replies v (taken) as JSON with the text render writes from it; drops v
 * after replying "out of memory" when there is no buffer. */
void reply_table(struct control_req *req, json_t *v, void (*render)(struct tbuf *b, json_t *v));
/* Fields of a JSON object: "" or 0 when absent. */
const char *js(json_t *o, const char *key);
long long ji(json_t *o, const char *key);
/* A decimal argument: digits only, from min to max.  -1 if not. */
int cmd_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

#endif
