/*
 * cmd.h: admin commands.  One table row per command: the words that name
 * it, who may run it, and its handler (cmd.c, and cmd_handlers.h for the
 * handlers in the subsystems' cmd_*.c).  cmd is the top of the command
 * side: control hands it requests through the dispatch function it was
 * given, and what cmd needs from main comes in struct cmd_env.
 */
#ifndef FARMD_CMD_H
#define FARMD_CMD_H

#include "control.h"

/* What the supervisor's own commands need from main. */
struct cmd_env {
	/* `farmctl shutdown`: an orderly stop, code 0, with reason. */
	void (*stop)(void *arg, int code, const char *reason);
	void *arg;
};

/* A control_dispatch_cb (env: a struct cmd_env that outlives the
 * control).  Finds the command for req->argv, checks access and runs it.
 * Always leads to exactly one reply. */
void cmd_dispatch(struct control_req *req, void *env);

#endif
