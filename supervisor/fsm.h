/*
 * fsm.h: the one runner of the supervisor's state machines (DESIGN §9).
 *
 * A machine is a table (struct fsm_def): one row per state, holding the
 * state's name and the step run when the state is entered, plus which
 * state is the error state and which is final.  An object that runs the
 * machine embeds a struct fsm; fsm_enter() is the only place its state is
 * written and the only place a transition is logged (the idea of
 * PostgreSQL's UpdatePMState).
 *
 * A step returns the state to enter next, or FSM_ASYNC when it started
 * work whose completion calls fsm_enter() again (a worker job, a read on
 * the I/O thread, a timer).  A state without a step is a resting state:
 * entering it stops the run until something calls fsm_enter().  The
 * final state's step may free the object, so the runner touches nothing
 * after running it.
 *
 * The names in the table are internal; what a machine shows the operator
 * (status, progress events) is that machine's own, separate table.
 */
#ifndef FARMD_FSM_H
#define FARMD_FSM_H

#include <stddef.h>

#define FSM_ASYNC (-1)

struct fsm_state {
	const char *name;
	int (*step)(void *obj);         /* NULL: a resting state */
};

struct fsm_def {
	const char *name;               /* the log prefix: "sector", "scrub", ... */
	const struct fsm_state *states;
	int nstates;
	int error;                      /* the state a failed step goes to */
	int final;                      /* the object may be gone after its step */
	/* Optional: names the object in the log ("sector 1/3"). */
	void (*label)(const void *obj, char *buf, size_t len);
	/* Optional: called after every change of state, before the new
	 * state's step runs. */
	void (*on_change)(void *obj, int from, int to);
};

struct fsm {
	const struct fsm_def *def;
	int state;
};

/* Sets the machine and its first state without running anything. */
void fsm_init(struct fsm *m, const struct fsm_def *def, int state);
/* Enters next and runs steps until one returns FSM_ASYNC or a resting
 * or the final state is reached. */
void fsm_enter(struct fsm *m, void *obj, int next);
const char *fsm_state_name(const struct fsm *m);

#endif
