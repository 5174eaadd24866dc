/*
 * plot_expiry.h: the expiry check (DESIGN §6): on each new segment and
 * at start, learn the expiries that became known and mark the sectors
 * that expire or are about to, so the scheduler replots them.
 */
#ifndef FARMD_PLOT_EXPIRY_H
#define FARMD_PLOT_EXPIRY_H

#include <event2/event.h>

struct plot;

/* p->expiry_ev's callback: one step per farm, then again until done. */
void plot_expiry_cb(evutil_socket_t fd, short what, void *arg);
/* Starts a check unless one is under way. */
void plot_expiry_check(struct plot *p);

#endif
