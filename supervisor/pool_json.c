/*
 * pool_json.c: the JSON documents of pools, workers and sandbox layers
 * (status, `farmctl workers`), from the snapshots pool.h hands out.
 */
#include "pool.h"

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
