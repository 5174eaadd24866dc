/*
 * sandbox.h: the layers a worker puts between itself and the host before
 * it reads its first job (DESIGN.md §2), applied in this order:
 * rlimits, no_new_privs, namespaces, landlock, seccomp.  A layer the
 * kernel does not offer is reported unavailable with the reason; the
 * supervisor decides whether that is fatal ([daemon] sandbox_required).
 */
#ifndef FARMD_SANDBOX_H
#define FARMD_SANDBOX_H

#include <stdbool.h>

#include "err.h"

enum sandbox_layer {
	SANDBOX_RLIMITS,
	SANDBOX_NO_NEW_PRIVS,
	SANDBOX_NAMESPACES,
	SANDBOX_LANDLOCK,
	SANDBOX_SECCOMP,
	SANDBOX_NLAYERS
};

struct sandbox_report {
	bool active[SANDBOX_NLAYERS];
	char detail[SANDBOX_NLAYERS][160];
};

/* "rlimits", "no_new_privs", "namespaces", "landlock", "seccomp" */
const char *sandbox_layer_name(enum sandbox_layer layer);

/* Applies every layer to the calling process, filling rep.  Returns -1
 * (with e set) only when a layer failed half-way so that the process is
 * in an unknown state and must exit; an unavailable layer is not an
 * error.  After success any syscall outside the allowlist kills the
 * process with SIGSYS. */
int sandbox_apply(struct sandbox_report *rep, struct err *e);

/* farmd-worker --check-sandbox: applies the sandbox in a forked child (the
 * caller stays unsandboxed), then writes one line per layer to fd, e.g.
 * "rlimits: active (core 0, ...)" or "landlock: unavailable (kernel ABI 0:
 * ENOSYS)", with write(2) only.  Returns 0 if every layer is active, 1
 * otherwise (or if the probe could not run). */
int sandbox_check_print(int fd);

#endif
