/*
 * fsm.c: the state machine runner (fsm.h).
 */
#include "fsm.h"

#include <assert.h>
#include <stdio.h>

#include "log.h"

void
fsm_init(struct fsm *m, const struct fsm_def *def, int state)
{
	assert(state >= 0 && state < def->nstates);
	m->def = def;
	m->state = state;
}

const char *
fsm_state_name(const struct fsm *m)
{
	return m->def->states[m->state].name;
}

static void
fsm_log(const struct fsm *m, const void *obj, int from, int to)
{
	const struct fsm_def *def = m->def;
	char label[96];

	if (!log_enabled(LOG_LVL_DEBUG))
		return;
	if (def->label != NULL)
		def->label(obj, label, sizeof(label));
	else
		snprintf(label, sizeof(label), "%s", def->name);
	log_debug("%s: %s -> %s", label, def->states[from].name, def->states[to].name);
}

void
fsm_enter(struct fsm *m, void *obj, int next)
{
	const struct fsm_def *def = m->def;

	while (next != FSM_ASYNC) {
		int from = m->state;
		int (*step)(void *);

		assert(next >= 0 && next < def->nstates);
		fsm_log(m, obj, from, next);
		m->state = next;
		if (def->on_change != NULL)
			def->on_change(obj, from, next);
		step = def->states[next].step;
		if (step == NULL)
			return;
		if (next == def->final) {
			step(obj);      /* may free obj and m with it */
			return;
		}
		next = step(obj);
	}
}
