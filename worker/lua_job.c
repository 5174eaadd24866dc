/*
 * lua_job.c: compile and execute validation code (DESIGN.md §7).
 *
 * TRUST.  The source is hostile and is only ever parsed here, in text mode
 * ("t"): the compile job never runs it.  The artifact bytes an execute job
 * loads are NOT safe to load if they were crafted: Lua 5.4's binary loader
 * (lundump.c) checks the header and the sizes, not the consistency of the
 * bytecode, and crafted bytecode can read and write out of bounds.  They
 * are loaded anyway because they can only be ours: the bytes come from our
 * own compile worker (text source -> lua_dump), the supervisor records
 * their SHA-256 when it stores them, and the execute job checks that hash
 * before loading ("b" mode only).  Bytes that are not ours but match the
 * hash (a test's random bytes) are refused by the header check in practice;
 * at worst they crash this worker, which is sandboxed (seccomp, no
 * filesystem) and whose death the supervisor counts as transient.
 *
 * BUDGETS.  Every lua_State is made by lua_newstate with lj_alloc, which
 * refuses an allocation that would take the state's bytes above
 * memory_limit (invariant: used <= limit), so a memory bomb ends as
 * LUA_ERRMEM.  Execution counts VM instructions with a count hook every
 * LUA_JOB_HOOK_STEP instructions (chunk top level and validate alike);
 * past instruction_limit the hook raises an error and from then on fires
 * at every instruction, so a pcall inside the code cannot swallow the
 * exhaustion: the next instruction outside that pcall raises again.
 * Lua runs __gc metamethods with hooks off (lgc.c GCTM), where no budget
 * could stop them, so setmetatable refuses a metatable with a __gc field
 * (an object is marked for finalization only by setmetatable, and only if
 * the field is there then; debug.setmetatable is not offered): no code of
 * the artifact runs outside the count.  Likewise a message handler of
 * xpcall runs with hooks off when the error came from the hook itself, so
 * xpcall wraps its handler in one that, once the budget is exhausted,
 * returns the error unhandled.
 * Lua-to-Lua recursion ends in "stack overflow" (LUAI_MAXSTACK) or in the
 * byte budget, C recursion (metamethods, sort, gsub callbacks, the
 * parser) in "C stack overflow" (LUAI_MAXCCALLS): errors, never a crash.
 *
 * ENVIRONMENT.  base, string, table, math, utf8 only; from base load,
 * loadstring, dofile, loadfile, require, collectgarbage and print are
 * removed, and string.dump (it would hand bytecode back to the code);
 * setmetatable refuses __gc (above).
 * math.random is seeded with 0 and math.randomseed removed, so
 * math.random gives the same numbers on every machine.  Not removable
 * with a stock liblua: the string hash seed (luai_makeseed mixes time and
 * addresses), so the order of pairs() over string keys, and tostring()
 * or string.format("%p") of tables and functions, may differ between
 * runs; code whose verdict depends on those is not deterministic.  Nor
 * can a count hook see time spent inside one C function (a backtracking
 * string.find over a long string, repeated): the job's wall deadline is
 * the bound there, and the supervisor counts it as transient.
 *
 * OWNERSHIP.  A lua_State lives for one job; the artifact buffer, the
 * message buffer and the result structs belong to struct lua_job and are
 * reused, so a job allocates nothing for its result.
 */
#include "lua_job.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "hash.h"

struct lua_job {
	/* The state being run: budgets and what happened. */
	size_t used, limit;
	uint64_t instructions, instruction_limit;
	bool exhausted;                 /* the hook stops every instruction */

	uint8_t *art;                   /* compile output, reused */
	size_t art_len, art_cap;
	bool art_oom;                   /* the C heap refused the buffer */
	char msg[LUA_JOB_MSG_MAX];      /* error or reason */
	Farmd__CompileResult cres;
	Farmd__ExecuteResult xres;
};

struct lua_job *
lua_job_new(void)
{
	uint8_t h[HASH_LEN];

	/* Before the sandbox closes (job_ctx_new): OpenSSL's first digest
	 * loads its config file (openat), which seccomp would kill. */
	hash_sha256("", 0, h);
	return calloc(1, sizeof(struct lua_job));
}

void
lua_job_free(struct lua_job *j)
{
	if (j == NULL)
		return;
	free(j->art);
	free(j);
}

/* ---- budgets ----------------------------------------------------------- */

static void *
lj_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct lua_job *j = ud;
	void *np;

	if (ptr == NULL)
		osize = 0;      /* osize is then a type tag, not a size */
	if (nsize == 0) {
		free(ptr);
		j->used -= osize;
		return NULL;
	}
	if (nsize > osize && nsize - osize > j->limit - j->used)
		return NULL;
	np = realloc(ptr, nsize);
	if (np == NULL) {
		/* Lua assumes a shrink never fails: keep the old block. */
		if (ptr != NULL && nsize <= osize) {
			j->used -= osize - nsize;
			return ptr;
		}
		return NULL;
	}
	j->used = j->used - osize + nsize;
	return np;
}

static struct lua_job *
lj_of(lua_State *L)
{
	void *ud;

	(void)lua_getallocf(L, &ud);
	return ud;
}

static void
lj_hook(lua_State *L, lua_Debug *ar)
{
	struct lua_job *j = lj_of(L);

	(void)ar;
	if (!j->exhausted) {
		j->instructions += LUA_JOB_HOOK_STEP;
		if (j->instructions <= j->instruction_limit)
			return;
		j->exhausted = true;
		lua_sethook(L, lj_hook, LUA_MASKCOUNT, 1);
	}
	lua_pushliteral(L, "instruction budget exhausted");
	lua_error(L);
}

static lua_State *
lj_state(struct lua_job *j, uint64_t memory_limit)
{
	j->used = 0;
	j->limit = memory_limit > SIZE_MAX ? SIZE_MAX : (size_t)memory_limit;
	j->instructions = 0;
	j->exhausted = false;
	/* No panic function and no warning function: everything below runs
	 * under lua_pcall, and warnings (warn(), errors in __gc) go nowhere. */
	return lua_newstate(lj_alloc, j);
}

/* ---- messages ---------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 if none. */
static size_t
lj_utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len;
	uint32_t cp, min;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2, cp = c & 0x1f, min = 0x80;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3, cp = c & 0x0f, min = 0x800;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4, cp = c & 0x07, min = 0x10000;
	else
		return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* Copies src into j->msg as printable UTF-8 (a control character or a
 * byte that is not part of valid UTF-8 becomes '?'), cut to the buffer at
 * a character boundary: a reason ends up in logs and JSON as it is. */
static const char *
lj_msg(struct lua_job *j, const char *src, size_t n)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t o = 0;

	for (size_t i = 0; i < n;) {
		size_t l = lj_utf8_len(s + i, n - i);

		if (l == 0 || (l == 1 && (s[i] < 0x20 || s[i] == 0x7f))) {
			if (o + 1 >= sizeof(j->msg))
				break;
			j->msg[o++] = '?';
			i++;
			continue;
		}
		if (o + l >= sizeof(j->msg))
			break;
		memcpy(j->msg + o, s + i, l);
		o += l;
		i += l;
	}
	j->msg[o] = '\0';
	return j->msg;
}

static const char *
lj_msgf(struct lua_job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static const char *
lj_msgf(struct lua_job *j, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(j->msg, sizeof(j->msg), fmt, ap);
	va_end(ap);
	return j->msg;
}

/* The error object on top of L as a message in j->msg. */
static const char *
lj_error_msg(struct lua_job *j, lua_State *L)
{
	size_t n;
	const char *s;

	if (lua_type(L, -1) == LUA_TSTRING) {
		s = lua_tolstring(L, -1, &n);
		return lj_msg(j, s, n);
	}
	return lj_msgf(j, "error object is a %s value", luaL_typename(L, -1));
}

/* ---- compile ----------------------------------------------------------- */

struct lj_compile {
	struct lua_job *j;
	const Farmd__CompileJob *job;
	int load_status;                /* luaL_loadbufferx's */
};

static int
lj_writer(lua_State *L, const void *p, size_t sz, void *ud)
{
	struct lua_job *j = ud;

	(void)L;
	if (sz > j->art_cap - j->art_len) {
		size_t cap = j->art_cap ? j->art_cap : 4096;
		uint8_t *na;

		while (cap - j->art_len < sz)
			cap *= 2;
		if ((na = realloc(j->art, cap)) == NULL) {
			j->art_oom = true;
			return 1;
		}
		j->art = na;
		j->art_cap = cap;
	}
	memcpy(j->art + j->art_len, p, sz);
	j->art_len += sz;
	return 0;
}

/* Runs under lua_pcall: parse (text only), then dump stripped. */
static int
lj_compile_body(lua_State *L)
{
	struct lj_compile *c = lua_touserdata(L, 1);
	struct lua_job *j = c->j;

	c->load_status = luaL_loadbufferx(L, (const char *)c->job->source.data,
	    c->job->source.len, "=code", "t");
	if (c->load_status != LUA_OK) {
		lj_error_msg(j, L);
		return 0;
	}
	if (lua_dump(L, lj_writer, j, 1) != 0 && !j->art_oom)
		return luaL_error(L, "lua_dump failed");
	return 0;
}

int
lua_job_compile(struct lua_job *j, const Farmd__CompileJob *job,
    Farmd__CompileResult **out, struct err *e)
{
	Farmd__CompileResult *r = &j->cres;
	struct lj_compile c = { j, job, LUA_OK };
	lua_State *L;
	int status;

	if (job->memory_limit == 0)
		return err_set(e, "compile job: memory_limit is 0");
	farmd__compile_result__init(r);
	*out = r;
	j->art_len = 0;
	j->art_oom = false;
	j->msg[0] = '\0';
	if ((L = lj_state(j, job->memory_limit)) == NULL) {
		status = LUA_ERRMEM;
	} else {
		lua_pushcfunction(L, lj_compile_body);
		lua_pushlightuserdata(L, &c);
		status = lua_pcall(L, 1, 0, 0);
		if (status == LUA_OK)
			status = c.load_status;
		else if (status != LUA_ERRMEM)
			lj_error_msg(j, L);
		lua_close(L);
	}
	if (status == LUA_ERRMEM || j->art_oom) {
		r->out_of_memory = true;
		r->error = (char *)lj_msgf(j, "out of memory (limit %" PRIu64 " bytes)",
		    job->memory_limit);
		return 0;
	}
	if (status != LUA_OK) {
		r->error = j->msg[0] != '\0' ? j->msg :
		    (char *)lj_msgf(j, "compile failed (status %d)", status);
		return 0;
	}
	r->artifact.data = j->art;
	r->artifact.len = j->art_len;
	r->error = (char *)"";
	return 0;
}

/* ---- execute ----------------------------------------------------------- */

/* From the base library: what could load code, reach the outside or let
 * the code steer the collector. */
static const char *const lj_base_removed[] = {
	"load", "loadstring", "dofile", "loadfile", "require",
	"collectgarbage", "print",
};

static const luaL_Reg lj_libs[] = {
	{ LUA_GNAME, luaopen_base },
	{ LUA_STRLIBNAME, luaopen_string },
	{ LUA_TABLIBNAME, luaopen_table },
	{ LUA_MATHLIBNAME, luaopen_math },
	{ LUA_UTF8LIBNAME, luaopen_utf8 },
};

struct lj_exec {
	struct lua_job *j;
	const Farmd__ExecuteJob *job;
	const char *reason;             /* NULL: valid */
};

/* setmetatable(t, mt) without finalizers: upvalue 1 is the original. */
static int
lj_setmetatable(lua_State *L)
{
	if (lua_type(L, 2) == LUA_TTABLE) {
		lua_pushliteral(L, "__gc");
		if (lua_rawget(L, 2) != LUA_TNIL)
			return luaL_error(L, "setmetatable: __gc metamethods are not allowed");
	}
	lua_settop(L, 2);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, 2, 1);
	return 1;
}

/* xpcall's handler, upvalue 1 the code's: skipped once exhausted (then
 * it would run with hooks off, see the top of the file). */
static int
lj_msgh(lua_State *L)
{
	if (lj_of(L)->exhausted) {
		lua_settop(L, 1);
		return 1;
	}
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, 1);
	return 1;
}

/* xpcall(f, msgh, ...) with msgh wrapped; upvalue 1 is the original. */
static int
lj_xpcall(lua_State *L)
{
	luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_pushvalue(L, 2);
	lua_pushcclosure(L, lj_msgh, 1);
	lua_replace(L, 2);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
	return lua_gettop(L);
}

static void
lj_open_libs(lua_State *L)
{
	for (size_t i = 0; i < sizeof(lj_libs) / sizeof(lj_libs[0]); i++) {
		luaL_requiref(L, lj_libs[i].name, lj_libs[i].func, 1);
		lua_pop(L, 1);
	}
	for (size_t i = 0; i < sizeof(lj_base_removed) / sizeof(lj_base_removed[0]); i++) {
		lua_pushnil(L);
		lua_setglobal(L, lj_base_removed[i]);
	}
	lua_getglobal(L, "setmetatable");
	lua_pushcclosure(L, lj_setmetatable, 1);
	lua_setglobal(L, "setmetatable");
	lua_getglobal(L, "xpcall");
	lua_pushcclosure(L, lj_xpcall, 1);
	lua_setglobal(L, "xpcall");
	lua_getglobal(L, LUA_STRLIBNAME);
	lua_pushnil(L);
	lua_setfield(L, -2, "dump");
	lua_pop(L, 1);
	lua_getglobal(L, LUA_MATHLIBNAME);
	lua_getfield(L, -1, "randomseed");
	lua_pushinteger(L, 0);
	lua_call(L, 1, 0);
	lua_pushnil(L);
	lua_setfield(L, -2, "randomseed");
	lua_pop(L, 1);
}

/* The verdict of validate's results (the two values on top of L). */
static void
lj_verdict(struct lj_exec *x, lua_State *L)
{
	struct lua_job *j = x->j;
	size_t n;
	const char *s;

	if (lua_type(L, -2) == LUA_TBOOLEAN && lua_toboolean(L, -2))
		x->reason = NULL;
	else if (lua_type(L, -2) == LUA_TBOOLEAN) {
		if (lua_type(L, -1) == LUA_TSTRING && (s = lua_tolstring(L, -1, &n), n > 0))
			x->reason = lj_msg(j, s, n);
		else
			x->reason = "validate returned false";
	} else
		x->reason = lj_msgf(j, "validate returned %s, not true or false",
		    luaL_typename(L, -2));
}

/* Runs under lua_pcall: the environment, the chunk, then validate(block). */
static int
lj_exec_body(lua_State *L)
{
	struct lj_exec *x = lua_touserdata(L, 1);
	const Farmd__ExecuteJob *job = x->job;
	int status;

	lj_open_libs(L);
	lua_sethook(L, lj_hook, LUA_MASKCOUNT, LUA_JOB_HOOK_STEP);
	status = luaL_loadbufferx(L, (const char *)job->artifact.data,
	    job->artifact.len, "=code", "b");
	if (status != LUA_OK) {
		if (status == LUA_ERRMEM)
			return lua_error(L);
		return luaL_error(L, "artifact does not load: %s", lua_tostring(L, -1));
	}
	lua_call(L, 0, 0);
	if (lua_getglobal(L, "validate") != LUA_TFUNCTION) {
		x->reason = lj_msgf(x->j, "validate is not a function (a %s value)",
		    luaL_typename(L, -1));
		return 0;
	}
	lua_createtable(L, 0, 3);
	lua_pushinteger(L, (lua_Integer)job->height);
	lua_setfield(L, -2, "height");
	lua_pushlstring(L, (const char *)job->parent_hash.data, job->parent_hash.len);
	lua_setfield(L, -2, "parent_hash");
	lua_pushlstring(L, (const char *)job->body.data, job->body.len);
	lua_setfield(L, -2, "body");
	lua_call(L, 1, 2);
	lj_verdict(x, L);
	return 0;
}

int
lua_job_execute(struct lua_job *j, const Farmd__ExecuteJob *job,
    Farmd__ExecuteResult **out, struct err *e)
{
	Farmd__ExecuteResult *r = &j->xres;
	struct lj_exec x = { j, job, NULL };
	uint8_t h[HASH_LEN];
	lua_State *L;
	int status;

	if (job->artifact_sha256.len != HASH_LEN)
		return err_set(e, "execute job: artifact_sha256 is %zu bytes, not %d",
		    job->artifact_sha256.len, HASH_LEN);
	if (job->memory_limit == 0 || job->instruction_limit == 0)
		return err_set(e, "execute job: memory_limit or instruction_limit is 0");
	farmd__execute_result__init(r);
	*out = r;
	j->msg[0] = '\0';
	hash_sha256(job->artifact.data, job->artifact.len, h);
	if (memcmp(h, job->artifact_sha256.data, HASH_LEN) != 0) {
		r->verdict = FARMD__EXECUTE_RESULT__VERDICT__ARTIFACT_MISMATCH;
		r->reason = (char *)lj_msgf(j, "artifact bytes (%zu) do not hash to "
		    "the artifact's SHA-256", job->artifact.len);
		return 0;
	}
	if ((L = lj_state(j, job->memory_limit)) == NULL) {
		status = LUA_ERRMEM;
	} else {
		j->instruction_limit = job->instruction_limit;
		lua_pushcfunction(L, lj_exec_body);
		lua_pushlightuserdata(L, &x);
		status = lua_pcall(L, 1, 0, 0);
		r->instructions = j->instructions;
		if (status != LUA_OK && status != LUA_ERRMEM && !j->exhausted)
			x.reason = lj_error_msg(j, L);
		/* No more of the code runs: finalizers that lua_close calls
		 * stop at their first instruction. */
		if (!j->exhausted) {
			j->exhausted = true;
			lua_sethook(L, lj_hook, LUA_MASKCOUNT, 1);
		} else {
			status = LUA_ERRRUN;
			x.reason = lj_msgf(j, "instruction budget exhausted (%" PRIu64
			    " instructions)", job->instruction_limit);
		}
		lua_close(L);
	}
	if (status == LUA_ERRMEM) {
		x.reason = lj_msgf(j, "out of memory (limit %" PRIu64 " bytes)",
		    job->memory_limit);
	}
	if (status == LUA_OK && x.reason == NULL) {
		r->verdict = FARMD__EXECUTE_RESULT__VERDICT__VALID;
		r->reason = (char *)"";
	} else {
		r->verdict = FARMD__EXECUTE_RESULT__VERDICT__INVALID;
		r->reason = (char *)(x.reason != NULL ? x.reason : "validation failed");
	}
	return 0;
}
