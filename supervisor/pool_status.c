/*
 * pool_status.c: what the pools look like from outside: the snapshots
 * pool.h hands out (pool_stats, pool_workers) and their JSON documents
 * (status, `farmctl workers`).  Read only: nothing here changes a pool.
 */
#include <stdlib.h>
#include <string.h>

#include "pool_int.h"

/* ---- status -------------------------------------------------------- */

static int
pool_sandbox_layer(const struct pool *p, int i)
{
	int all = p->last_layers[i] == 1, any = 0;

	for (int k = 0; k < WIRE_KIND_COUNT; k++) {
		const struct worker *w;

		TAILQ_FOREACH(w, &p->kinds[k].workers, entry) {
			if (w->layers[i] < 0)
				continue;
			if (!any)
				all = 1;
			any = 1;
			all = all && w->layers[i] == 1;
		}
	}
	return all;
}

static int
pool_kind_alive(const struct pool_kind *pk)
{
	const struct worker *w;
	int n = 0;

	TAILQ_FOREACH(w, &pk->workers, entry)
		n += worker_is(w, W_IDLE) || worker_is(w, W_BUSY);
	return n;
}

void
pool_stats(const struct pool *p, struct pool_stats *s)
{
	memset(s, 0, sizeof(*s));
	s->protocol_errors = p->protocol_errors;
	for (int i = 0; i < WIRE_SANDBOX_LAYERS; i++)
		s->sandbox[i] = pool_sandbox_layer(p, i);
	for (int k = 0; k < WIRE_KIND_COUNT; k++) {
		const struct pool_kind *pk = &p->kinds[k];
		struct pool_kind_stats *ks = &s->kinds[k];
		const struct pool_job *j;

		ks->kind = wire_kind_name(pk->kind);
		ks->size = pk->size;
		ks->alive = (uint32_t)pool_kind_alive(pk);
		ks->degraded = pk->degraded;
		ks->health = pk->degraded ? "degraded" : ks->alive >= pk->size ? "ok" : "starting";
		TAILQ_FOREACH(j, &pk->queue, entry)
			ks->queued++;
		ks->last_replace_ms = (double)pk->replace_us / 1000.0;
		memcpy(ks->kernel, pk->kernel, sizeof(ks->kernel));
		ks->restarts = pk->restarts;
		ks->crashes = pk->crashes;
		ks->timeouts = pk->timeouts;
		ks->jobs_done = pk->jobs_done;
		ks->jobs_failed = pk->jobs_failed;
		ks->jobs_retried = pk->jobs_retried;
	}
}

struct pool_worker_info *
pool_workers(const struct pool *p, size_t *n)
{
	struct pool_worker_info *out;
	const struct worker *w;
	size_t i = 0;

	*n = 0;
	for (int k = 0; k < WIRE_KIND_COUNT; k++)
		TAILQ_FOREACH(w, &p->kinds[k].workers, entry)
			(*n)++;
	if (*n == 0 || (out = calloc(*n, sizeof(*out))) == NULL) {
		*n = 0;
		return NULL;
	}
	for (int k = 0; k < WIRE_KIND_COUNT; k++) {
		TAILQ_FOREACH(w, &p->kinds[k].workers, entry) {
			struct pool_worker_info *wi = &out[i++];

			wi->pid = (int)w->pid;
			wi->kind = wire_kind_name(w->pk->kind);
			wi->state = fsm_state_name(&w->fsm);
			wi->has_job = w->job != NULL;
			wi->job = w->job ? w->job->id : 0;
			memcpy(wi->kernel, w->kernel, sizeof(wi->kernel));
		}
	}
	return out;
}


json_t *
pool_json_sandbox(const struct pool_stats *s)
{
	json_t *o = json_object();

	for (int i = 0; i < WIRE_SANDBOX_LAYERS; i++)
		json_object_set_new(o, wire_sandbox_layers[i], json_boolean(s->sandbox[i]));
	return o;
}

json_t *
pool_json_pools(const struct pool_stats *s)
{
	json_t *a = json_array();

	for (int k = 0; k < WIRE_KIND_COUNT; k++) {
		const struct pool_kind_stats *ks = &s->kinds[k];

		json_array_append_new(a, json_pack("{s:s, s:i, s:i, s:I, s:s, s:i, s:f, s:o}",
		    "kind", ks->kind, "size", (int)ks->size,
		    "alive", (int)ks->alive, "restarts", (json_int_t)ks->restarts,
		    "state", ks->health, "queued", (int)ks->queued,
		    "last_replace_ms", ks->last_replace_ms,
		    "kernel", ks->kernel[0] ? json_string(ks->kernel) : json_null()));
	}
	return a;
}

json_t *
pool_json_workers(const struct pool_worker_info *w, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; i < n; i++) {
		json_t *job = w[i].has_job ? json_integer((json_int_t)w[i].job) : json_null();

		json_array_append_new(a, json_pack("{s:i, s:s, s:s, s:o, s:o}",
		    "pid", w[i].pid, "kind", w[i].kind, "state", w[i].state, "job", job,
		    "kernel", w[i].kernel[0] ? json_string(w[i].kernel) : json_null()));
	}
	return a;
}
