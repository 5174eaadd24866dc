/*
 * artifacts.c: the artifact cache as a whole (artifact.h): start-up
 * reconciliation, the list, the prune, statistics.  The per-artifact
 * machine and executions are artifact.c.
 *
 * Start-up (DESIGN §7), before anything can ask for an artifact:
 * - a row left `preparing` by a crash goes (it is prepared again when
 *   needed);
 * - a `prepared` row whose file is missing, of another size or another
 *   SHA-256 goes back to needing preparation (its row goes, logged once);
 * - in artifacts/, `*.tmp` files and `*.art` files no prepared row names
 *   are removed; nothing else there, and nothing outside it, is touched.
 */
#include "artifact.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "artifact_int.h"
#include "artifact_prune.h"
#include "clock.h"
#include "db.h"
#include "farmd.h"
#include "fdio.h"
#include "log.h"

/* Whether the file holds exactly size bytes hashing to sha; why says
 * what differs. */
static int
artifacts_file_ok(const char *path, uint64_t size, const uint8_t sha[HASH_LEN], char *why,
    size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	uint8_t *buf, got[HASH_LEN];
	int ok = 0;

	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(why, len, "its file is missing (%s)", strerror(errno));
	} else if ((uint64_t)st.st_size != size) {
		snprintf(why, len, "its file holds %lld bytes, not %" PRIu64,
		    (long long)st.st_size, size);
	} else if ((buf = malloc(size ? size : 1)) == NULL) {
		snprintf(why, len, "out of memory");
	} else {
		if (fdio_pread_all(fd, buf, size, 0) == (ssize_t)size) {
			hash_sha256(buf, size, got);
			ok = memcmp(got, sha, HASH_LEN) == 0;
		}
		if (!ok)
			snprintf(why, len, "its file's SHA-256 differs");
		free(buf);
	}
	if (fd >= 0)
		close(fd);
	return ok;
}

static enum artifact_error
artifacts_kind_parse(const char *s)
{
	for (int k = 0; k < ARTIFACT_KINDS; k++)
		if (s != NULL && k != ARTIFACT_OK && strcmp(s, artifact_kind_name[k]) == 0)
			return (enum artifact_error)k;
	return ARTIFACT_TRANSIENT;
}

/* One row into an artifact, checking a prepared row's file. */
static int
artifacts_load_row(struct artifacts *s, sqlite3_stmt *st, uint64_t *used, struct err *e)
{
	struct artifact_id id;
	struct artifact *a;
	const char *state = (const char *)sqlite3_column_text(st, 2);
	int prepared = state != NULL && strcmp(state, "prepared") == 0;
	char path[PATH_MAX + 8], why[160];

	if (sqlite3_column_bytes(st, 0) != HASH_LEN || sqlite3_column_bytes(st, 1) != HASH_LEN)
		return 0;
	memcpy(id.code, sqlite3_column_blob(st, 0), HASH_LEN);
	memcpy(id.params, sqlite3_column_blob(st, 1), HASH_LEN);
	if ((a = artifact_new(s, &id, prepared ? A_PREPARED : A_FAILED)) == NULL)
		return err_set(e, "out of memory");
	a->size = (uint64_t)sqlite3_column_int64(st, 3);
	if (sqlite3_column_bytes(st, 4) == HASH_LEN)
		memcpy(a->sha, sqlite3_column_blob(st, 4), HASH_LEN);
	a->last_needed_ms = a->needed_written_ms = (uint64_t)sqlite3_column_int64(st, 5);
	a->failures = (uint32_t)sqlite3_column_int64(st, 6);
	snprintf(a->error, sizeof(a->error), "%s", sqlite3_column_text(st, 7) ?
	    (const char *)sqlite3_column_text(st, 7) : "");
	a->last_failure_ms = (uint64_t)sqlite3_column_int64(st, 8);
	a->kind = prepared ? ARTIFACT_OK : artifacts_kind_parse(
	    (const char *)sqlite3_column_text(st, 9));
	if (!prepared)
		return 0;
	artifact_path(s, a, "art", path, sizeof(path));
	if (!artifacts_file_ok(path, a->size, a->sha, why, sizeof(why))) {
		log_warn("artifact %.12s: %s; it will be prepared again when needed", a->hex, why);
		unlink(path);
		fsm_init(&a->m, a->m.def, A_IDLE);
		return artifact_row_save(a, e);
	}
	*used += a->size;
	return 0;
}

static int
artifacts_load(struct artifacts *s, uint64_t *used, struct err *e)
{
	sqlite3_stmt *st;
	int rc = 0;

	if (db_exec(s->d->db, "DELETE FROM artifacts WHERE state = 'preparing'", e) < 0)
		return -1;
	st = db_prepare(s->d->db, "SELECT code_hash, params_hash, state, size, sha256, "
	    "last_needed_ms, failures, last_error, last_failure_ms, error_kind FROM artifacts", e);
	if (st == NULL)
		return -1;
	while (rc == 0 && sqlite3_step(st) == SQLITE_ROW)
		rc = artifacts_load_row(s, st, used, e);
	sqlite3_finalize(st);
	return rc;
}

/* Whether name is "<id hex>.art" of a prepared artifact. */
static int
artifacts_named(struct artifacts *s, const char *name)
{
	size_t n = strlen(name);

	if (n != ARTIFACT_ID_HEX_LEN + 4 || strcmp(name + ARTIFACT_ID_HEX_LEN, ".art") != 0)
		return 0;
	for (struct artifact *a = s->list; a != NULL; a = a->next)
		if (a->m.state == A_PREPARED && strncmp(a->hex, name, ARTIFACT_ID_HEX_LEN) == 0)
			return 1;
	return 0;
}

/* Temp files and .art files without a prepared row go. */
static int
artifacts_sweep(struct artifacts *s, struct err *e)
{
	DIR *dir = opendir(s->dir);
	struct dirent *de;
	char path[PATH_MAX + 300];
	int removed = 0;

	if (dir == NULL)
		return err_set(e, "%s: %s", s->dir, strerror(errno));
	while ((de = readdir(dir)) != NULL) {
		size_t n = strlen(de->d_name);
		int tmp = n > 4 && strcmp(de->d_name + n - 4, ".tmp") == 0;
		int art = n > 4 && strcmp(de->d_name + n - 4, ".art") == 0;

		if (!tmp && !(art && !artifacts_named(s, de->d_name)))
			continue;
		snprintf(path, sizeof(path), "%s/%s", s->dir, de->d_name);
		if (unlink(path) == 0) {
			log_info("artifacts: removed %s (%s)", de->d_name,
			    tmp ? "a temp file" : "no row names it");
			removed++;
		}
	}
	closedir(dir);
	if (removed > 0 && fdio_fsync_dir(s->dir) < 0)
		log_warn("%s: fsync: %s", s->dir, strerror(errno));
	return 0;
}

static void
artifacts_prune_tick(evutil_socket_t fd, short what, void *arg)
{
	struct artifacts *s = arg;
	json_t *removed = NULL;
	struct err e;

	(void)fd;
	(void)what;
	if (artifacts_prune(s, &removed, &e) < 0)
		log_warn("artifacts: prune: %s", e.msg);
	json_decref(removed);
}

struct artifacts *
artifacts_new(struct farmd *d, struct err *e)
{
	struct artifacts *s = calloc(1, sizeof(*s));
	struct timeval tv = clock_tv(ARTIFACT_PRUNE_MS);
	uint64_t used = 0, stale = 0;

	if (s == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	s->d = d;
	snprintf(s->dir, sizeof(s->dir), "%s/artifacts", d->state_dir);
	if (mkdir(s->dir, 0755) < 0 && errno != EEXIST) {
		err_set(e, "%s: %s", s->dir, strerror(errno));
		goto fail;
	}
	if (artifacts_load(s, &used, e) < 0 || artifacts_sweep(s, e) < 0 ||
	    budget_init(&s->budget, d->db, "artifacts", d->cfg.artifacts.budget, used, &stale,
	    e) < 0)
		goto fail;
	s->st.cache_bytes = used;
	if ((s->prune_ev = event_new(d->base, -1, EV_PERSIST, artifacts_prune_tick, s)) == NULL ||
	    event_add(s->prune_ev, &tv) < 0) {
		err_set(e, "cannot arm the artifact prune timer");
		goto fail;
	}
	return s;
fail:
	artifacts_free(s);
	return NULL;
}

void
artifacts_free(struct artifacts *s)
{
	struct artifact *a, *next;

	if (s == NULL)
		return;
	s->stopping = 1;
	while (s->execs != NULL) {
		struct exec *x = s->execs;

		s->execs = x->next;
		free(x->src);
		free(x->body);
		free(x->art);
		free(x);
	}
	for (a = s->list; a != NULL; a = next) {
		next = a->next;
		for (struct waiter *w = a->waiters; w != NULL; w = w->next)
			if (w->cb == artifact_exec_ready)
				w->cb = NULL;   /* its exec is freed above */
		artifact_free(a);
	}
	if (s->prune_ev != NULL)
		event_free(s->prune_ev);
	free(s);
}

int
artifacts_quiesce(struct artifacts *s)
{
	s->stopping = 1;
	for (struct artifact *a = s->list; a != NULL; a = a->next)
		if (a->job_id != 0) {
			pool_cancel(s->d->pool, a->job_id);
			a->job_id = 0;
		}
	return s->io_inflight == 0;
}

/* ---- prune ----------------------------------------------------------------- */

static int
artifacts_remove(struct artifacts *s, struct artifact *a, struct err *e)
{
	char path[PATH_MAX + 8];
	uint64_t size = a->size;

	fsm_enter(&a->m, a, A_IDLE);
	if (artifact_row_save(a, e) < 0)
		return -1;
	artifact_path(s, a, "art", path, sizeof(path));
	if (unlink(path) < 0 && errno != ENOENT)
		log_warn("%s: unlink: %s", path, strerror(errno));
	s->budget.used -= size < s->budget.used ? size : s->budget.used;
	log_info("artifact %.12s pruned (%" PRIu64 " bytes, last needed %" PRIu64 " ms ago)",
	    a->hex, size, clock_real_ms() - a->last_needed_ms);
	return 0;
}

int
artifacts_prune(struct artifacts *s, json_t **removed, struct err *e)
{
	struct artifact_prune_row *rows;
	struct artifact **as;
	size_t n = 0, k, *out;
	int rc = 0;

	*removed = json_array();
	for (struct artifact *a = s->list; a != NULL; a = a->next)
		n += a->m.state == A_PREPARED;
	rows = calloc(n + 1, sizeof(*rows));
	as = calloc(n + 1, sizeof(*as));
	out = calloc(n + 1, sizeof(*out));
	if (rows == NULL || as == NULL || out == NULL || *removed == NULL) {
		rc = err_set(e, "out of memory");
		goto done;
	}
	n = 0;
	for (struct artifact *a = s->list; a != NULL; a = a->next)
		if (a->m.state == A_PREPARED) {
			as[n] = a;
			rows[n].size = a->size;
			rows[n++].last_needed_ms = a->last_needed_ms;
		}
	k = artifact_prune_choose(rows, n, clock_real_ms(), s->d->cfg.artifacts.cache_limit,
	    s->d->cfg.artifacts.min_stale_time_ms, out);
	for (size_t i = 0; i < k && rc == 0; i++) {
		json_array_append_new(*removed, json_pack("{s:s, s:I}", "id", as[out[i]]->hex,
		    "size", (json_int_t)as[out[i]]->size));
		rc = artifacts_remove(s, as[out[i]], e);
	}
done:
	free(rows);
	free(as);
	free(out);
	return rc;
}

/* ---- list, stats ------------------------------------------------------------ */

json_t *
artifacts_json_list(struct artifacts *s)
{
	json_t *list = json_array();
	char code[HASH_HEX_LEN + 1], params[HASH_HEX_LEN + 1];

	for (struct artifact *a = s->list; a != NULL && list != NULL; a = a->next) {
		if (a->m.state == A_IDLE)
			continue;
		hex_encode(a->id.code, HASH_LEN, code);
		hex_encode(a->id.params, HASH_LEN, params);
		json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:o}",
		    "code_hash", code, "params_hash", params,
		    "state", artifact_state_public[a->m.state],
		    "size", (json_int_t)(a->m.state == A_PREPARED ? a->size : 0),
		    "last_needed_ms", (json_int_t)a->last_needed_ms,
		    "failures", (json_int_t)a->failures,
		    "error", a->error[0] ? json_string(a->error) : json_null()));
	}
	return list;
}

void
artifacts_stats(const struct artifacts *s, struct artifact_stats *out)
{
	*out = s->st;
	out->cache_bytes = 0;
	out->preparing = out->prepared = out->failed = 0;
	for (const struct artifact *a = s->list; a != NULL; a = a->next) {
		if (a->m.state == A_PREPARED) {
			out->prepared++;
			out->cache_bytes += a->size;
		} else if (a->m.state == A_FAILED) {
			out->failed++;
		} else if (a->m.state != A_IDLE) {
			out->preparing++;
		}
	}
}

void
artifacts_set_budget(struct artifacts *s, uint64_t limit)
{
	s->budget.limit = limit;
}
