/*
 * cmd.h: admin commands.  One table row per command: the words that name
 * it, who may run it, and its handler (cmd.c).
 */
#ifndef FARMD_CMD_H
#define FARMD_CMD_H

#include "control.h"

/* Finds the command for req->argv, checks access and runs it.  Always
 * leads to exactly one reply. */
void cmd_dispatch(struct control_req *req);

#endif
