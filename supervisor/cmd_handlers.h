/*
 * cmd_handlers.h: the handlers the command table (cmd.c) points at, one
 * file per subsystem's commands (cmd_block.c, cmd_farm.c, ...).  Each is
 * called with its access and argument count already checked and ends in
 * exactly one control_reply*() (now or from a callback).
 */
#ifndef FARMD_CMD_HANDLERS_H
#define FARMD_CMD_HANDLERS_H

#include "control.h"

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
void cmd_artifact_list(struct control_req *req, int argc, char **argv);
void cmd_artifact_prepare(struct control_req *req, int argc, char **argv);
void cmd_artifact_prune(struct control_req *req, int argc, char **argv);
void cmd_cluster_status(struct control_req *req, int argc, char **argv);
void cmd_cluster_peers(struct control_req *req, int argc, char **argv);
void cmd_debug_encode(struct control_req *req, int argc, char **argv);
void cmd_debug_echo(struct control_req *req, int argc, char **argv);
void cmd_debug_fault(struct control_req *req, int argc, char **argv);

#endif
