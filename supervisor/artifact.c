/*
 * artifact.c: the artifact cache (artifact.h; DESIGN §7, §8, §9).
 *
 * One struct artifact per id the supervisor knows (rows of the
 * `artifacts` table, plus ids asked for since start), each running this
 * machine on the fsm runner:
 *
 *   IDLE ─► COMPILE ─► WRITE ─► COMMIT ─► PREPARED
 *     ▲        │          │        │          │ the file changed (mismatch)
 *     │        └──────────┴────────┴─► FAILED ◄ (error state)
 *     └──────────────────────────────────────┘ (invalidated)
 *
 * Invariants:
 * - fsm_enter is the only writer of a->m.state; the row's state column
 *   follows it (preparing while COMPILE..COMMIT, then prepared/failed);
 * - at most one compile per artifact at a time: a request in COMPILE,
 *   WRITE or COMMIT only joins the waiter list;
 * - a prepared row names a file whose bytes were fsynced and renamed into
 *   place (directory fsynced) before the row committed; the row commits
 *   in the transaction that releases the write's budget reservation;
 * - waiters are called from a deferred event, never from inside a step or
 *   from the call that added them, so a waiter may ask again at once;
 * - the artifact bytes are read on the I/O pool and only ever sent to an
 *   execute worker.
 */
#include "artifact.h"
#include "artifact_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "artifact_id.h"
#include "artifact_prune.h"
#include "budget.h"
#include "clock.h"
#include "config.h"
#include "db.h"
#include "farmd.h"
#include "fdio.h"
#include "fsm.h"
#include "io.h"
#include "log.h"
#include "pool.h"

const double artifact_buckets[ARTIFACT_BUCKETS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
};

static int a_compile(void *obj);
static int a_write(void *obj);
static int a_commit(void *obj);
static int a_failed(void *obj);
static void a_label(const void *obj, char *buf, size_t len);
static void a_changed(void *obj, int from, int to);

static const struct fsm_state a_states[A_NSTATES] = {
	[A_IDLE] =     { "idle", NULL },
	[A_COMPILE] =  { "compile", a_compile },        /* until compile_done */
	[A_WRITE] =    { "write", a_write },            /* until write_done */
	[A_COMMIT] =   { "commit", a_commit },
	[A_PREPARED] = { "prepared", NULL },
	[A_FAILED] =   { "failed", a_failed },
};

static const struct fsm_def a_def = {
	.name = "artifact", .states = a_states, .nstates = A_NSTATES,
	.error = A_FAILED, .final = -1, .label = a_label, .on_change = a_changed,
};

/* What list, status and the row show. */
const char *const artifact_state_public[A_NSTATES] = {
	[A_IDLE] = "needed", [A_COMPILE] = "preparing", [A_WRITE] = "preparing",
	[A_COMMIT] = "preparing", [A_PREPARED] = "prepared", [A_FAILED] = "failed",
};

const char *const artifact_kind_name[ARTIFACT_KINDS] = {
	[ARTIFACT_OK] = "", [ARTIFACT_DETERMINISTIC] = "deterministic",
	[ARTIFACT_TRANSIENT] = "transient",
};

static void
a_label(const void *obj, char *buf, size_t len)
{
	const struct artifact *a = obj;

	snprintf(buf, len, "artifact %.12s", a->hex);
}

void
artifact_path(const struct artifacts *s, const struct artifact *a, const char *ext, char *out,
    size_t len)
{
	snprintf(out, len, "%s/%s.%s", s->dir, a->hex, ext);
}

static void
hist_add(struct artifact_hist *h, uint64_t started_us)
{
	double secs = (double)(clock_mono_us() - started_us) / 1e6;

	h->count++;
	h->sum += secs;
	for (int i = 0; i < ARTIFACT_BUCKETS; i++)
		if (secs <= artifact_buckets[i])
			h->bucket[i]++;
}

/* ---- rows -------------------------------------------------------------- */

/* Writes the artifact's row as its state says (IDLE: no row). */
int
artifact_row_save(struct artifact *a, struct err *e)
{
	struct db *db = a->s->d->db;
	const char *pub = artifact_state_public[a->m.state];
	char path[PATH_MAX + 8];
	sqlite3_stmt *st;
	int rc;

	if (a->m.state == A_IDLE) {
		st = db_prepare(db, "DELETE FROM artifacts WHERE code_hash = ? AND params_hash = ?", e);
		if (st == NULL)
			return -1;
		sqlite3_bind_blob(st, 1, a->id.code, HASH_LEN, SQLITE_STATIC);
		sqlite3_bind_blob(st, 2, a->id.params, HASH_LEN, SQLITE_STATIC);
	} else {
		st = db_prepare(db, "INSERT OR REPLACE INTO artifacts (code_hash, params_hash, "
		    "state, path, size, sha256, last_needed_ms, failures, last_error, "
		    "last_failure_ms, error_kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", e);
		if (st == NULL)
			return -1;
		snprintf(path, sizeof(path), "artifacts/%s.art", a->hex);
		sqlite3_bind_blob(st, 1, a->id.code, HASH_LEN, SQLITE_STATIC);
		sqlite3_bind_blob(st, 2, a->id.params, HASH_LEN, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, pub, -1, SQLITE_STATIC);
		if (a->m.state == A_PREPARED || a->m.state == A_COMMIT) {
			sqlite3_bind_text(st, 4, path, -1, SQLITE_TRANSIENT);
			sqlite3_bind_int64(st, 5, (int64_t)a->size);
			sqlite3_bind_blob(st, 6, a->sha, HASH_LEN, SQLITE_STATIC);
		}
		sqlite3_bind_int64(st, 7, (int64_t)a->last_needed_ms);
		sqlite3_bind_int64(st, 8, a->failures);
		if (a->error[0] != '\0') {
			sqlite3_bind_text(st, 9, a->error, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 10, (int64_t)a->last_failure_ms);
			sqlite3_bind_text(st, 11, artifact_kind_name[a->kind], -1, SQLITE_STATIC);
		}
	}
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return err_set(e, "state.db: artifact %.12s: %s", a->hex,
		    sqlite3_errmsg(db_handle(db)));
	return 0;
}

static void
artifact_row_save_logged(struct artifact *a)
{
	struct err e;

	if (artifact_row_save(a, &e) < 0)
		log_warn("%s", e.msg);
}

struct artifact *
artifact_find(struct artifacts *s, const struct artifact_id *id)
{
	for (struct artifact *a = s->list; a != NULL; a = a->next)
		if (memcmp(&a->id, id, sizeof(*id)) == 0)
			return a;
	return NULL;
}

static void a_notify_cb(evutil_socket_t fd, short what, void *arg);

struct artifact *
artifact_new(struct artifacts *s, const struct artifact_id *id, int state)
{
	struct artifact *a = calloc(1, sizeof(*a));

	if (a == NULL)
		return NULL;
	if ((a->notify = event_new(s->d->base, -1, 0, a_notify_cb, a)) == NULL) {
		free(a);
		return NULL;
	}
	a->s = s;
	a->id = *id;
	artifact_id_hex(id, a->hex);
	fsm_init(&a->m, &a_def, state);
	a->next = s->list;
	s->list = a;
	return a;
}

void
artifact_free(struct artifact *a)
{
	struct waiter *w, *next;

	for (w = a->waiters; w != NULL; w = next) {
		next = w->next;
		if (w->cb != NULL)
			w->cb(w->arg, a->hex, ARTIFACT_TRANSIENT, "farmd is shutting down");
		free(w);
	}
	if (a->notify != NULL)
		event_free(a->notify);
	free(a->src);
	free(a->bytes);
	free(a);
}

/* ---- waiters ------------------------------------------------------------ */

static int
a_resolved(const struct artifact *a)
{
	return a->m.state == A_PREPARED || a->m.state == A_FAILED || a->m.state == A_IDLE;
}

/* Calls the waiters with the outcome, if the artifact has one now. */
static void
a_notify_cb(evutil_socket_t fd, short what, void *arg)
{
	struct artifact *a = arg;
	struct waiter *w;

	(void)fd;
	(void)what;
	while (a_resolved(a) && (w = a->waiters) != NULL) {
		enum artifact_error kind = a->m.state == A_PREPARED ? ARTIFACT_OK :
		    a->m.state == A_FAILED ? a->kind : ARTIFACT_TRANSIENT;
		char msg[ERR_MSG_MAX];

		snprintf(msg, sizeof(msg), "%s", a->m.state == A_IDLE ?
		    "the artifact is no longer prepared" : a->error);
		a->waiters = w->next;
		if (w->cb != NULL)
			w->cb(w->arg, a->hex, kind, kind == ARTIFACT_OK ? NULL : msg);
		free(w);
	}
}

static void
a_changed(void *obj, int from, int to)
{
	struct artifact *a = obj;

	(void)from;
	if (to == A_PREPARED && a->waiters != NULL)
		event_active(a->notify, EV_TIMEOUT, 0);
}

/* ---- COMPILE ------------------------------------------------------------ */

static void
a_fail(struct artifact *a, enum artifact_error kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records why the preparation failed; the caller enters A_FAILED. */
static void
a_fail(struct artifact *a, enum artifact_error kind, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(a->error, sizeof(a->error), fmt, ap);
	va_end(ap);
	a->kind = kind;
}

static void
compile_done(uint64_t job_id, const Farmd__JobResult *res, const char *error, void *arg)
{
	struct artifact *a = arg;
	const Farmd__CompileResult *c;

	(void)job_id;
	a->job_id = 0;
	if (res != NULL)
		hist_add(&a->s->st.prepare, a->started_us);
	if (res == NULL)
		a_fail(a, ARTIFACT_TRANSIENT, "compile: %s", error);
	else if (error != NULL)
		a_fail(a, ARTIFACT_DETERMINISTIC, "compile: %s", error);
	else if (res->body_case != FARMD__JOB_RESULT__BODY_COMPILE)
		a_fail(a, ARTIFACT_TRANSIENT, "compile worker answered with another job's result");
	else if ((c = res->compile)->error != NULL && c->error[0] != '\0')
		a_fail(a, ARTIFACT_DETERMINISTIC, "%s", c->error);
	else if (c->out_of_memory)
		a_fail(a, ARTIFACT_TRANSIENT, "compile: out of memory");
	else if (c->artifact.len == 0)
		a_fail(a, ARTIFACT_TRANSIENT, "compile worker returned no bytes");
	else if ((a->bytes = malloc(c->artifact.len)) == NULL)
		a_fail(a, ARTIFACT_TRANSIENT, "out of memory");
	else {
		memcpy(a->bytes, c->artifact.data, c->artifact.len);
		a->len = c->artifact.len;
		fsm_enter(&a->m, a, A_WRITE);
		return;
	}
	fsm_enter(&a->m, a, A_FAILED);
}

/* COMPILE: a compile job for the source; the row says preparing. */
static int
a_compile(void *obj)
{
	struct artifact *a = obj;
	struct artifacts *s = a->s;
	struct pool_job_opts opts = { ARTIFACT_JOB_ATTEMPTS, ARTIFACT_RETRY_DELAY_MS, 0 };
	Farmd__Job job = FARMD__JOB__INIT;
	Farmd__CompileJob cj = FARMD__COMPILE_JOB__INIT;
	struct err e;

	artifact_row_save_logged(a);
	cj.source.data = a->src;
	cj.source.len = a->src_len;
	cj.memory_limit = s->d->cfg.artifacts.memory_limit;
	job.body_case = FARMD__JOB__BODY_COMPILE;
	job.compile = &cj;
	a->started_us = clock_mono_us();
	if (s->d->pool == NULL) {
		a_fail(a, ARTIFACT_TRANSIENT, "no compile pool yet");
		return A_FAILED;
	}
	a->job_id = pool_submit(s->d->pool, WIRE_KIND_COMPILE, &job, &opts, compile_done, a, &e);
	if (a->job_id == 0) {
		a_fail(a, ARTIFACT_TRANSIENT, "compile: %s", e.msg);
		return A_FAILED;
	}
	s->st.compile_jobs++;
	return FSM_ASYNC;
}

/* ---- WRITE / COMMIT ----------------------------------------------------- */

struct write_task {
	struct artifact *a;
	char tmp[PATH_MAX + 8], path[PATH_MAX + 8];
};

/* On the I/O pool: temp file, write, fsync, rename, fsync the directory.
 * A failure leaves no temp file. */
static void
write_work(void *arg)
{
	struct write_task *t = arg;
	struct artifact *a = t->a;
	int fd = open(t->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	hash_sha256(a->bytes, a->len, a->sha);
	if (fd < 0) {
		snprintf(a->io_err, sizeof(a->io_err), "%s: open: %s", t->tmp, strerror(errno));
		return;
	}
	if (fdio_write_all(fd, a->bytes, a->len) < 0 || fsync(fd) < 0) {
		snprintf(a->io_err, sizeof(a->io_err), "%s: write: %s", t->tmp, strerror(errno));
		close(fd);
		unlink(t->tmp);
		return;
	}
	close(fd);
	if (rename(t->tmp, t->path) < 0) {
		snprintf(a->io_err, sizeof(a->io_err), "%s: rename: %s", t->tmp, strerror(errno));
		unlink(t->tmp);
		return;
	}
	if (fdio_fsync_dir(a->s->dir) < 0)
		snprintf(a->io_err, sizeof(a->io_err), "%s: fsync: %s", a->s->dir, strerror(errno));
}

static void
write_done(void *arg)
{
	struct write_task *t = arg;
	struct artifact *a = t->a;

	a->s->io_inflight--;
	a->io = 0;
	free(t);
	free(a->bytes);
	a->bytes = NULL;
	if (a->io_err[0] != '\0') {
		budget_release(&a->s->budget, a->resv_id, a->size, 0);
		a_fail(a, ARTIFACT_TRANSIENT, "%s", a->io_err);
		fsm_enter(&a->m, a, A_FAILED);
		return;
	}
	fsm_enter(&a->m, a, A_COMMIT);
}

/* WRITE: reserve the size in the artifacts budget, then the disk work. */
static int
a_write(void *obj)
{
	struct artifact *a = obj;
	struct artifacts *s = a->s;
	struct write_task *t;
	struct err e;

	a->size = a->len;
	if (budget_reserve(&s->budget, a->size, &a->resv_id, &e) < 0) {
		a_fail(a, ARTIFACT_TRANSIENT, "artifact %.12s: %s", a->hex, e.msg);
		return A_FAILED;
	}
	if ((t = calloc(1, sizeof(*t))) == NULL) {
		budget_release(&s->budget, a->resv_id, a->size, 0);
		a_fail(a, ARTIFACT_TRANSIENT, "out of memory");
		return A_FAILED;
	}
	t->a = a;
	artifact_path(s, a, "tmp", t->tmp, sizeof(t->tmp));
	artifact_path(s, a, "art", t->path, sizeof(t->path));
	a->io_err[0] = '\0';
	if (io_submit(s->d->io, write_work, write_done, t) < 0) {
		free(t);
		budget_release(&s->budget, a->resv_id, a->size, 0);
		a_fail(a, ARTIFACT_TRANSIENT, "cannot queue the artifact's write");
		return A_FAILED;
	}
	a->io = 1;
	s->io_inflight++;
	return FSM_ASYNC;
}

/* COMMIT: the row says prepared in the transaction that ends the
 * reservation (its bytes become used). */
static int
a_commit(void *obj)
{
	struct artifact *a = obj;
	struct artifacts *s = a->s;
	struct err e;
	char path[PATH_MAX + 8];

	a->last_needed_ms = a->needed_written_ms = clock_real_ms();
	a->error[0] = '\0';
	a->kind = ARTIFACT_OK;
	if (db_begin(s->d->db, &e) < 0 || artifact_row_save(a, &e) < 0) {
		db_rollback(s->d->db);
		budget_release(&s->budget, a->resv_id, a->size, 0);
		goto fail;
	}
	budget_release(&s->budget, a->resv_id, a->size, a->size);
	if (db_commit(s->d->db, &e) < 0) {
		db_rollback(s->d->db);
		s->budget.used -= a->size;
		goto fail;
	}
	free(a->src);
	a->src = NULL;
	log_info("artifact %.12s prepared: %" PRIu64 " bytes", a->hex, a->size);
	return A_PREPARED;
fail:
	artifact_path(s, a, "art", path, sizeof(path));
	unlink(path);
	a_fail(a, ARTIFACT_TRANSIENT, "%s", e.msg);
	return A_FAILED;
}

/* FAILED (the error state): count it, record it, tell the waiters. */
static int
a_failed(void *obj)
{
	struct artifact *a = obj;
	struct artifacts *s = a->s;

	free(a->src);
	a->src = NULL;
	if (s->stopping) {
		/* Not the code's failure: the row stays preparing and the next
		 * start prepares it again. */
		event_active(a->notify, EV_TIMEOUT, 0);
		return FSM_ASYNC;
	}
	if (a->kind == ARTIFACT_OK)
		a->kind = ARTIFACT_TRANSIENT;
	a->failures++;
	a->last_failure_ms = clock_real_ms();
	if (a->kind == ARTIFACT_DETERMINISTIC)
		s->st.failures_deterministic++;
	else
		s->st.failures_transient++;
	log_warn("artifact %.12s failed (%s, failure %" PRIu32 "): %s", a->hex,
	    artifact_kind_name[a->kind], a->failures, a->error);
	artifact_row_save_logged(a);
	event_active(a->notify, EV_TIMEOUT, 0);
	return FSM_ASYNC;       /* rests until a request retries it */
}

/* ---- requests ------------------------------------------------------------ */

/* Whether a failed artifact may be prepared again now. */
static int
a_may_retry(const struct artifact *a)
{
	const struct config *c = &a->s->d->cfg;
	uint64_t now = clock_real_ms();

	return a->kind == ARTIFACT_TRANSIENT && a->failures <= c->artifacts.max_retries &&
	    now >= a->last_failure_ms && now - a->last_failure_ms >= c->artifacts.retry_cooldown_ms;
}

/* Adds a waiter and starts (or joins, or answers from) the preparation;
 * src is needed only when a compile starts.  0, or -1 out of memory. */
static int
a_want(struct artifact *a, const uint8_t *src, size_t len, artifact_ready_cb cb, void *arg)
{
	struct waiter *w = calloc(1, sizeof(*w)), **pp;

	if (w == NULL)
		return -1;
	w->cb = cb;
	w->arg = arg;
	for (pp = &a->waiters; *pp != NULL; pp = &(*pp)->next)
		;
	*pp = w;
	if (a->s->stopping) {
		a_fail(a, ARTIFACT_TRANSIENT, "farmd is shutting down");
		event_active(a->notify, EV_TIMEOUT, 0);
		return 0;
	}
	if (a->m.state == A_IDLE || (a->m.state == A_FAILED && a_may_retry(a))) {
		if ((a->src = malloc(len ? len : 1)) == NULL)
			return 0;       /* the waiter hears of it below */
		memcpy(a->src, src, len);
		a->src_len = len;
		fsm_enter(&a->m, a, A_COMPILE);
	} else if (a->m.state == A_FAILED && a->kind == ARTIFACT_TRANSIENT) {
		log_debug("artifact %.12s: not retried yet (%" PRIu32 " failures; "
		    "[artifacts] retry_cooldown, max_retries)", a->hex, a->failures);
	}
	if (a_resolved(a))
		event_active(a->notify, EV_TIMEOUT, 0);
	return 0;
}

static struct artifact *
a_lookup(struct artifacts *s, const uint8_t *src, size_t len)
{
	struct artifact_id id;
	struct artifact *a;
	struct artifact_params p = { s->d->cfg.artifacts.memory_limit,
		s->d->cfg.artifacts.instruction_limit };

	artifact_id_make(src, len, &p, &id);
	if ((a = artifact_find(s, &id)) == NULL)
		a = artifact_new(s, &id, A_IDLE);
	return a;
}

void
artifact_prepare(struct artifacts *s, const uint8_t *src, size_t len,
    artifact_ready_cb cb, void *arg)
{
	struct artifact *a = a_lookup(s, src, len);

	if (a == NULL || a_want(a, src, len, cb, arg) < 0)
		log_warn("artifact: out of memory preparing a %zu-byte source", len);
}

/* The file changed under a prepared artifact: forget it, so the next
 * request prepares it again.  The unlink is one small call, kept on the
 * loop so no later write of the same name can overtake it. */
static void
a_invalidate(struct artifact *a, const char *why)
{
	char path[PATH_MAX + 8];

	if (a->m.state != A_PREPARED)
		return;
	log_warn("artifact %.12s: %s; preparing it again", a->hex, why);
	artifact_path(a->s, a, "art", path, sizeof(path));
	unlink(path);
	a->s->budget.used -= a->size < a->s->budget.used ? a->size : a->s->budget.used;
	a->s->st.mismatches++;
	fsm_enter(&a->m, a, A_IDLE);
	artifact_row_save_logged(a);
}

/* ---- executions ------------------------------------------------------------ */


static void
exec_free(struct exec *x)
{
	struct exec **pp;

	for (pp = &x->s->execs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	free(x->src);
	free(x->body);
	free(x->art);
	free(x);
}

static void
exec_finish(struct exec *x, int verdict, enum artifact_error kind, const char *reason)
{
	if (!x->cancelled)
		x->cb(x->arg, verdict, kind, reason);
	exec_free(x);
}

/* The bytes did not match the row (or could not be read): prepare again
 * and run once more, up to ARTIFACT_MISMATCH_MAX times. */
static void
exec_mismatch(struct exec *x, const char *why)
{
	a_invalidate(x->a, why);
	if (++x->mismatches > ARTIFACT_MISMATCH_MAX) {
		exec_finish(x, -1, ARTIFACT_TRANSIENT, why);
		return;
	}
	if (a_want(x->a, x->src, x->src_len, artifact_exec_ready, x) < 0)
		exec_finish(x, -1, ARTIFACT_TRANSIENT, "out of memory");
}

/* An execution bumps last_needed_ms; the row is written at most once a
 * minute per artifact. */
static void
a_needed(struct artifact *a)
{
	uint64_t now = clock_real_ms();

	a->last_needed_ms = now;
	if (a->m.state == A_PREPARED && now - a->needed_written_ms >= ARTIFACT_NEEDED_WRITE_MS) {
		a->needed_written_ms = now;
		artifact_row_save_logged(a);
	}
}

static void
exec_done(uint64_t job_id, const Farmd__JobResult *res, const char *error, void *arg)
{
	struct exec *x = arg;
	const Farmd__ExecuteResult *r;

	(void)job_id;
	x->job_id = 0;
	if (res == NULL || error != NULL) {
		exec_finish(x, -1, ARTIFACT_TRANSIENT, error != NULL ? error : "execute failed");
		return;
	}
	hist_add(&x->s->st.execute, x->started_us);
	if (res->body_case != FARMD__JOB_RESULT__BODY_EXECUTE) {
		exec_finish(x, -1, ARTIFACT_TRANSIENT, "execute worker answered with another "
		    "job's result");
		return;
	}
	r = res->execute;
	if (r->verdict == FARMD__EXECUTE_RESULT__VERDICT__ARTIFACT_MISMATCH) {
		exec_mismatch(x, "the execute worker found the artifact's bytes changed");
		return;
	}
	a_needed(x->a);
	exec_finish(x, r->verdict == FARMD__EXECUTE_RESULT__VERDICT__VALID,
	    ARTIFACT_OK, r->reason != NULL && r->reason[0] ? r->reason : "invalid");
}

static void
exec_submit(struct exec *x)
{
	struct pool_job_opts opts = { ARTIFACT_JOB_ATTEMPTS, ARTIFACT_RETRY_DELAY_MS, 0 };
	Farmd__Job job = FARMD__JOB__INIT;
	Farmd__ExecuteJob ej = FARMD__EXECUTE_JOB__INIT;
	struct err e;

	ej.artifact.data = x->art;
	ej.artifact.len = x->art_len;
	ej.artifact_sha256.data = x->sha;
	ej.artifact_sha256.len = HASH_LEN;
	ej.memory_limit = x->s->d->cfg.artifacts.memory_limit;
	ej.instruction_limit = x->s->d->cfg.artifacts.instruction_limit;
	ej.height = x->height;
	ej.parent_hash.data = x->parent;
	ej.parent_hash.len = HASH_LEN;
	ej.body.data = x->body;
	ej.body.len = x->body_len;
	job.body_case = FARMD__JOB__BODY_EXECUTE;
	job.execute = &ej;
	x->started_us = clock_mono_us();
	x->job_id = pool_submit(x->s->d->pool, WIRE_KIND_EXECUTE, &job, &opts, exec_done, x, &e);
	free(x->art);                   /* packed into the job */
	x->art = NULL;
	if (x->job_id == 0)
		exec_finish(x, -1, ARTIFACT_TRANSIENT, e.msg);
}

/* On the I/O pool: the artifact's bytes, whole. */
static void
exec_read_work(void *arg)
{
	struct exec *x = arg;
	int fd = open(x->path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	ssize_t n;

	x->err[0] = '\0';
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(x->err, sizeof(x->err), "%s: %s", x->path, strerror(errno));
	} else if ((x->art = malloc((size_t)st.st_size + 1)) == NULL) {
		snprintf(x->err, sizeof(x->err), "out of memory");
	} else if ((n = fdio_pread_all(fd, x->art, (size_t)st.st_size, 0)) != st.st_size) {
		snprintf(x->err, sizeof(x->err), "%s: read: %s", x->path,
		    n < 0 ? strerror(errno) : "file shrank");
	} else {
		x->art_len = (size_t)n;
	}
	if (fd >= 0)
		close(fd);
}

static void
exec_read_done(void *arg)
{
	struct exec *x = arg;

	x->s->io_inflight--;
	if (x->cancelled || x->s->stopping) {
		exec_free(x);
		return;
	}
	if (x->err[0] != '\0') {
		exec_mismatch(x, x->err);
		return;
	}
	if (x->a->m.state != A_PREPARED || x->art_len != x->a->size) {
		char why[128];

		snprintf(why, sizeof(why), "its file holds %zu bytes, not %" PRIu64,
		    x->art_len, x->a->size);
		free(x->art);
		x->art = NULL;
		exec_mismatch(x, why);
		return;
	}
	memcpy(x->sha, x->a->sha, HASH_LEN);
	exec_submit(x);
}

void
artifact_exec_ready(void *arg, const char *id_hex, enum artifact_error kind, const char *error)
{
	struct exec *x = arg;

	(void)id_hex;
	if (x->cancelled || x->s->stopping) {
		exec_free(x);
		return;
	}
	if (kind != ARTIFACT_OK) {
		exec_finish(x, -1, kind, error);
		return;
	}
	artifact_path(x->s, x->a, "art", x->path, sizeof(x->path));
	if (io_submit(x->s->d->io, exec_read_work, exec_read_done, x) < 0) {
		exec_finish(x, -1, ARTIFACT_TRANSIENT, "cannot queue the artifact's read");
		return;
	}
	x->s->io_inflight++;
}

static void *
dup_bytes(const void *p, size_t len)
{
	void *q = malloc(len ? len : 1);

	if (q != NULL && len)
		memcpy(q, p, len);
	return q;
}

uint64_t
artifact_execute(struct artifacts *s, const uint8_t *src, size_t len,
    const struct artifact_block *b, artifact_exec_cb cb, void *arg)
{
	struct exec *x = calloc(1, sizeof(*x));

	if (x == NULL)
		return 0;
	x->s = s;
	x->cb = cb;
	x->arg = arg;
	x->height = b->height;
	memcpy(x->parent, b->parent_hash, HASH_LEN);
	x->src = dup_bytes(src, len);
	x->src_len = len;
	x->body = dup_bytes(b->body, b->body_len);
	x->body_len = b->body_len;
	x->a = a_lookup(s, src, len);
	if (x->src == NULL || x->body == NULL || x->a == NULL) {
		free(x->src);
		free(x->body);
		free(x);
		return 0;
	}
	x->handle = ++s->next_handle;
	x->next = s->execs;
	s->execs = x;
	if (a_want(x->a, src, len, artifact_exec_ready, x) < 0) {
		exec_free(x);
		return 0;
	}
	return x->handle;
}

void
artifact_exec_cancel(struct artifacts *s, uint64_t handle)
{
	for (struct exec *x = s->execs; x != NULL; x = x->next) {
		if (x->handle != handle)
			continue;
		x->cancelled = 1;
		if (x->job_id != 0) {
			pool_cancel(s->d->pool, x->job_id);
			exec_free(x);
		}
		return;         /* a waiter or a read frees it when it ends */
	}
}
