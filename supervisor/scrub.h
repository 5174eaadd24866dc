/*
 * scrub.h: reads and verifies every stored block, slowly (DESIGN §5).
 * After checking a block that took t, it sleeps tranquility × t.  Its
 * position (the last hash checked, in hash order) is persisted, so a
 * restart continues where it stopped.  It runs on a randomised schedule
 * (scrub_interval ± 1/6) and on command.
 */
#ifndef FARMD_SCRUB_H
#define FARMD_SCRUB_H

#include <jansson.h>

#include "err.h"

struct farmd;
struct scrub;

struct scrub *scrub_new(struct farmd *d, struct err *e);
void scrub_free(struct scrub *s);

/* Commands: each returns -1 with a message when not possible now. */
int scrub_start(struct scrub *s, struct err *e);
int scrub_pause(struct scrub *s, struct err *e);
int scrub_resume(struct scrub *s, struct err *e);
int scrub_cancel(struct scrub *s, struct err *e);
json_t *scrub_json(struct scrub *s);

/* Stops scheduling; true when no block is being verified. */
int scrub_quiesce(struct scrub *s);

#endif
