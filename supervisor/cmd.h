/*
 * cmd.h: admin commands.  One table row per command: the words that name
 * it, who may run it, and its handler (cmd.c).
 */
#ifndef FARMD_CMD_H
#define FARMD_CMD_H

#include <stddef.h>

#include "control.h"

/* Finds the command for req->argv, checks access and runs it.  Always
 * leads to exactly one reply. */
void cmd_dispatch(struct control_req *req);

/* Text output, shared by the command files. */
struct tbuf {
	char s[65536];
	size_t len;
};

void tb_printf(struct tbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An empty buffer, or NULL after replying "out of memory" to req. */
struct tbuf *tb_new(struct control_req *req);
/* Fields of a JSON object: "" or 0 when absent. */
const char *js(json_t *o, const char *key);
long long ji(json_t *o, const char *key);
/* A decimal argument: digits only, from min to max.  -1 if not. */
int cmd_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Handlers in other files (one file per subsystem's commands). */
void cmd_block_put(struct control_req *req, int argc, char **argv);
void cmd_block_get(struct control_req *req, int argc, char **argv);
void cmd_block_stat(struct control_req *req, int argc, char **argv);
void cmd_block_rm(struct control_req *req, int argc, char **argv);
void cmd_block_purge(struct control_req *req, int argc, char **argv);
void cmd_block_list_errors(struct control_req *req, int argc, char **argv);
void cmd_block_retry_now(struct control_req *req, int argc, char **argv);
void cmd_scrub(struct control_req *req, int argc, char **argv);
void cmd_history_ingest(struct control_req *req, int argc, char **argv);
void cmd_history_status(struct control_req *req, int argc, char **argv);
void cmd_history_segments(struct control_req *req, int argc, char **argv);
void cmd_farm_add(struct control_req *req, int argc, char **argv);
void cmd_farm_list(struct control_req *req, int argc, char **argv);
void cmd_sectors(struct control_req *req, int argc, char **argv);
void cmd_plot(struct control_req *req, int argc, char **argv);
void cmd_sector_read(struct control_req *req, int argc, char **argv);
void cmd_debug_encode(struct control_req *req, int argc, char **argv);
void cmd_debug_echo(struct control_req *req, int argc, char **argv);
void cmd_debug_fault(struct control_req *req, int argc, char **argv);

#endif
