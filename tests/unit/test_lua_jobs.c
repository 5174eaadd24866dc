/*
 * The compile and execute jobs of validation code (worker/lua_job.c),
 * called in-process: compile results and errors, verdicts, the budgets,
 * the missing library functions, hostile artifacts and determinism.
 * One struct lua_job serves every job of a test, as in a worker.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hash.h"
#include "lua_job.h"
#include "sandbox.h"

#define MIB (UINT64_C(1) << 20)
#define MEM (64 * MIB)
#define INSTR UINT64_C(1000000)

static struct lua_job *J;

static void
setup(void)
{
	J = lua_job_new();
	ck_assert_ptr_nonnull(J);
}

static void
teardown(void)
{
	lua_job_free(J);
	J = NULL;
}

/* Compiled bytes of src (a copy the caller frees), or NULL with the
 * result's error in *error (pointing into J). */
static uint8_t *
compile_mem(const char *src, uint64_t mem, size_t *len, const char **error, int *oom)
{
	Farmd__CompileJob job = FARMD__COMPILE_JOB__INIT;
	Farmd__CompileResult *r = NULL;
	struct err e;
	uint8_t *copy;

	job.source.data = (uint8_t *)src;
	job.source.len = strlen(src);
	job.memory_limit = mem;
	ck_assert_int_eq(lua_job_compile(J, &job, &r, &e), 0);
	ck_assert_ptr_nonnull(r);
	*error = r->error;
	if (oom != NULL)
		*oom = r->out_of_memory;
	if (r->error[0] != '\0') {
		ck_assert_uint_eq(r->artifact.len, 0);
		return NULL;
	}
	ck_assert(!r->out_of_memory);
	ck_assert_uint_gt(r->artifact.len, 4);
	copy = malloc(r->artifact.len);
	memcpy(copy, r->artifact.data, r->artifact.len);
	*len = r->artifact.len;
	return copy;
}

static uint8_t *
compile_ok(const char *src, size_t *len)
{
	const char *error;
	uint8_t *art = compile_mem(src, MEM, len, &error, NULL);

	ck_assert_msg(art != NULL, "compile failed: %s", error);
	return art;
}

struct verdict {
	int verdict;
	char reason[LUA_JOB_MSG_MAX];
	uint64_t instructions;
};

static void
execute_raw(const uint8_t *art, size_t len, const uint8_t sha[HASH_LEN], uint64_t mem,
    uint64_t instr, const void *body, size_t body_len, struct verdict *v)
{
	Farmd__ExecuteJob job = FARMD__EXECUTE_JOB__INIT;
	Farmd__ExecuteResult *r = NULL;
	uint8_t parent[HASH_LEN];
	struct err e;

	memset(parent, 0xab, sizeof(parent));
	job.artifact.data = (uint8_t *)art;
	job.artifact.len = len;
	job.artifact_sha256.data = (uint8_t *)sha;
	job.artifact_sha256.len = HASH_LEN;
	job.memory_limit = mem;
	job.instruction_limit = instr;
	job.height = 7;
	job.parent_hash.data = parent;
	job.parent_hash.len = HASH_LEN;
	job.body.data = (uint8_t *)body;
	job.body.len = body_len;
	ck_assert_int_eq(lua_job_execute(J, &job, &r, &e), 0);
	ck_assert_ptr_nonnull(r);
	v->verdict = r->verdict;
	snprintf(v->reason, sizeof(v->reason), "%s", r->reason);
	v->instructions = r->instructions;
	if (r->verdict == FARMD__EXECUTE_RESULT__VERDICT__INVALID)
		ck_assert_msg(r->reason[0] != '\0', "INVALID without a reason");
}

static void
execute_lim(const char *src, uint64_t mem, uint64_t instr, const char *body,
    struct verdict *v)
{
	size_t len;
	uint8_t *art = compile_ok(src, &len), sha[HASH_LEN];

	hash_sha256(art, len, sha);
	execute_raw(art, len, sha, mem, instr, body, strlen(body), v);
	free(art);
}

static void
execute(const char *src, const char *body, struct verdict *v)
{
	execute_lim(src, MEM, INSTR, body, v);
}

/* INVALID with a reason that contains want. */
static void
expect_invalid(const char *src, const char *want)
{
	struct verdict v;

	execute(src, "body", &v);
	ck_assert_msg(v.verdict == FARMD__EXECUTE_RESULT__VERDICT__INVALID,
	    "%s: verdict %d (%s)", src, v.verdict, v.reason);
	ck_assert_msg(strstr(v.reason, want) != NULL, "%s: reason '%s' lacks '%s'",
	    src, v.reason, want);
}

/* ---- compile ---------------------------------------------------------- */

START_TEST(test_compile_ok)
{
	size_t l1, l2;
	uint8_t *a = compile_ok("function validate(b) return true end", &l1);
	uint8_t *b = compile_ok("function validate(b) return true end", &l2);

	ck_assert_int_eq(memcmp(a, "\x1bLua", 4), 0);
	/* The same source gives the same bytes. */
	ck_assert_uint_eq(l1, l2);
	ck_assert_int_eq(memcmp(a, b, l1), 0);
	free(a);
	free(b);
	/* Compiling runs nothing: neither an error nor an endless loop. */
	free(compile_ok("error('ran')", &l1));
	free(compile_ok("while true do end", &l1));
}
END_TEST

START_TEST(test_compile_errors)
{
	const char *error;
	size_t len;
	int oom;
	char deep[4096];

	ck_assert_ptr_null(compile_mem("function validate(b)\n  return true\n",
	    MEM, &len, &error, &oom));
	ck_assert(!oom);
	ck_assert_str_eq(error, "code:3: 'end' expected (to close 'function' at line 1) near <eof>");
	ck_assert_ptr_null(compile_mem("x = = 1", MEM, &len, &error, &oom));
	ck_assert_str_eq(error, "code:1: unexpected symbol near '='");
	ck_assert(!oom);
	/* Text mode only: a binary chunk is refused. */
	ck_assert_ptr_null(compile_mem("\x1bLua\x54", MEM, &len, &error, &oom));
	ck_assert_msg(strstr(error, "attempt to load a binary chunk") != NULL, "%s", error);
	/* Nesting past the C-level limit is an error, not a crash. */
	strcpy(deep, "return ");
	for (int i = 0; i < 1000; i++)
		strcat(deep, "(");
	ck_assert_ptr_null(compile_mem(deep, MEM, &len, &error, &oom));
	ck_assert_msg(strstr(error, "overflow") != NULL || strstr(error, "levels") != NULL,
	    "%s", error);
	ck_assert(!oom);
	/* A bad byte in a message is replaced, the message stays UTF-8. */
	ck_assert_ptr_null(compile_mem("x = \xff\x01", MEM, &len, &error, &oom));
	ck_assert_msg(strstr(error, "\xff") == NULL && strstr(error, "\x01") == NULL, "%s", error);
}
END_TEST

START_TEST(test_compile_out_of_memory)
{
	const char *error;
	size_t len, n = 0;
	int oom = 0;
	char *src = malloc(4 << 20);

	/* A table constructor of 400,000 constants: more than 1 MiB of state. */
	n += (size_t)sprintf(src, "local t = {");
	for (int i = 0; i < 400000; i++)
		n += (size_t)sprintf(src + n, "%d,", i);
	strcpy(src + n, "}");
	ck_assert_ptr_null(compile_mem(src, MIB, &len, &error, &oom));
	ck_assert(oom);
	ck_assert_str_eq(error, "out of memory (limit 1048576 bytes)");
	/* The same source under the default budget compiles. */
	free(compile_ok(src, &len));
	free(src);
}
END_TEST

/* ---- execute: verdicts ------------------------------------------------ */

START_TEST(test_execute_valid_and_block)
{
	struct verdict v;

	execute("function validate(b) return true end", "x", &v);
	ck_assert_int_eq(v.verdict, FARMD__EXECUTE_RESULT__VERDICT__VALID);
	ck_assert_str_eq(v.reason, "");
	execute("function validate(b)\n"
	    "  assert(math.type(b.height) == 'integer' and b.height == 7, 'height')\n"
	    "  assert(b.parent_hash == string.rep('\\xab', 32), 'parent')\n"
	    "  assert(b.body == 'hello', 'body')\n"
	    "  return true\n"
	    "end", "hello", &v);
	ck_assert_msg(v.verdict == FARMD__EXECUTE_RESULT__VERDICT__VALID, "%s", v.reason);
	/* The libraries that are there work. */
	execute("function validate(b)\n"
	    "  local t = {}\n"
	    "  for c in b.body:gmatch('.') do t[#t + 1] = c:upper() end\n"
	    "  table.sort(t)\n"
	    "  return table.concat(t) == 'EHLLO' and math.max(1, 2) == 2 and\n"
	    "      utf8.char(233) == '\\u{e9}' and select('#', 1, 2) == 2\n"
	    "end", "hello", &v);
	ck_assert_msg(v.verdict == FARMD__EXECUTE_RESULT__VERDICT__VALID, "%s", v.reason);
}
END_TEST

START_TEST(test_execute_false_and_odd_returns)
{
	expect_invalid("function validate(b) return false, 'no good' end", "no good");
	expect_invalid("function validate(b) return false end", "validate returned false");
	expect_invalid("function validate(b) return false, 42 end", "validate returned false");
	expect_invalid("function validate(b) end", "validate returned nil, not true or false");
	expect_invalid("function validate(b) return 1 end", "validate returned number");
	expect_invalid("function validate(b) return 'true' end", "validate returned string");
	expect_invalid("x = 1", "validate is not a function (a nil value)");
	expect_invalid("validate = 3", "validate is not a function (a number value)");
	expect_invalid("function validate(b) error('boom') end", "boom");
	expect_invalid("function validate(b) error({}) end", "error object is a table value");
	expect_invalid("function validate(b) return b.nothing.x end", "attempt to index a nil value");
	expect_invalid("error('at the top level')", "at the top level");
	/* A reason is cut and kept printable UTF-8. */
	{
		struct verdict v;

		execute("function validate(b) return false, '\\xff\\0ok\\u{e9}' .. string.rep('x', 5000) end",
		    "", &v);
		ck_assert_int_eq(strncmp(v.reason, "??ok\xc3\xa9xxx", 9), 0);
		ck_assert_uint_eq(strlen(v.reason), LUA_JOB_MSG_MAX - 1);
	}
}
END_TEST

START_TEST(test_execute_first_byte_ff)
{
	static const char code[] =
	    "function validate(b) if b.body:byte(1) == 0xFF then "
	    "return false, \"body starts with 0xFF\" end return true end";
	struct verdict v;

	execute(code, "\xff rest", &v);
	ck_assert_int_eq(v.verdict, FARMD__EXECUTE_RESULT__VERDICT__INVALID);
	ck_assert_str_eq(v.reason, "body starts with 0xFF");
	execute(code, "\xfe rest", &v);
	ck_assert_int_eq(v.verdict, FARMD__EXECUTE_RESULT__VERDICT__VALID);
	execute(code, "", &v);
	ck_assert_int_eq(v.verdict, FARMD__EXECUTE_RESULT__VERDICT__VALID);
}
END_TEST

/* ---- execute: hostile code -------------------------------------------- */

START_TEST(test_instruction_budget)
{
	struct verdict v;

	execute("function validate(b) while true do end end", "", &v);
	ck_assert_int_eq(v.verdict, FARMD__EXECUTE_RESULT__VERDICT__INVALID);
	ck_assert_str_eq(v.reason, "instruction budget exhausted (1000000 instructions)");
	ck_assert_uint_gt(v.instructions, INSTR);
	ck_assert_uint_le(v.instructions, INSTR + LUA_JOB_HOOK_STEP);
	/* The chunk's top level counts too. */
	expect_invalid("while true do end function validate(b) return true end",
	    "instruction budget exhausted (1000000 instructions)");
	/* A pcall inside the code cannot swallow the exhaustion. */
	expect_invalid("function validate(b) while true do pcall(function() while true do end end) end end",
	    "instruction budget exhausted");
	expect_invalid("function validate(b) local ok = pcall(function() while true do end end) return true end",
	    "instruction budget exhausted");
	expect_invalid("function validate(b) while true do xpcall(function() while true do end end,"
	    " function() while true do end end) end end", "instruction budget exhausted");
	expect_invalid("function validate(b) return xpcall(error, function() while true do end end) end",
	    "instruction budget exhausted");
	/* xpcall still works as Lua's. */
	expect_invalid("function validate(b) return false, select(2, xpcall(function() error('x') end,"
	    " function(m) return 'handled ' .. m end)) end", "handled x");
	execute("function validate(b) return xpcall(function(x, y) return x + y == 3 end, error, 1, 2) end",
	    "", &v);
	ck_assert_msg(v.verdict == FARMD__EXECUTE_RESULT__VERDICT__VALID, "%s", v.reason);
	/* Within the budget: valid, and the count is about what ran. */
	execute("function validate(b) local n = 0 for i = 1, 10000 do n = n + i end return n > 0 end",
	    "", &v);
	ck_assert_int_eq(v.verdict, FARMD__EXECUTE_RESULT__VERDICT__VALID);
	ck_assert_uint_gt(v.instructions, 10000);
	ck_assert_uint_lt(v.instructions, 100000);
	/* Finalizers run with hooks off, out of the budget's reach: none can
	 * be made.  A __gc field added after setmetatable marks nothing. */
	expect_invalid("setmetatable({}, {__gc = function() while true do end end})\n"
	    "function validate(b) return true end", "__gc metamethods are not allowed");
	expect_invalid("function validate(b) setmetatable({}, {__gc = true}) return true end",
	    "__gc metamethods are not allowed");
	execute("local mt = {} local t = setmetatable({}, mt)\n"
	    "mt.__gc = function() while true do end end t = nil\n"
	    "function validate(b) for i = 1, 1000 do local x = {} end return true end", "", &v);
	ck_assert_msg(v.verdict == FARMD__EXECUTE_RESULT__VERDICT__VALID, "%s", v.reason);
	execute("function validate(b) return getmetatable(setmetatable({}, {__index = "
	    "function() return 1 end})) ~= nil end", "", &v);
	ck_assert_msg(v.verdict == FARMD__EXECUTE_RESULT__VERDICT__VALID, "%s", v.reason);
}
END_TEST

START_TEST(test_memory_budget)
{
	struct verdict v;

	execute_lim("function validate(b) local t = {} for i = 1, 1e9 do "
	    "t[i] = string.rep('x', 1 << 20, tostring(i)) end return true end",
	    8 * MIB, INSTR, "", &v);
	ck_assert_int_eq(v.verdict, FARMD__EXECUTE_RESULT__VERDICT__INVALID);
	ck_assert_str_eq(v.reason, "out of memory (limit 8388608 bytes)");
	expect_invalid("function validate(b) return #string.rep('x', 1 << 30) > 0 end",
	    "out of memory (limit 67108864 bytes)");
	expect_invalid("function validate(b) local s = 'x' while true do s = s .. s end end",
	    "out of memory (limit 67108864 bytes)");
	/* Caught by the code: its own business, deterministically. */
	execute("function validate(b) local ok = pcall(string.rep, 'x', 1 << 40) "
	    "return false, tostring(ok) end", "", &v);
	ck_assert_str_eq(v.reason, "false");
}
END_TEST

START_TEST(test_deep_recursion)
{
	struct verdict v;

	/* Lua to Lua: the stack limit or the byte budget, either an error. */
	execute_lim("local function f(n) return f(n + 1) + 1 end "
	    "function validate(b) return f(1) end", MEM, 100 * INSTR, "", &v);
	ck_assert_int_eq(v.verdict, FARMD__EXECUTE_RESULT__VERDICT__INVALID);
	ck_assert_msg(strstr(v.reason, "stack overflow") != NULL ||
	    strstr(v.reason, "out of memory") != NULL, "%s", v.reason);
	/* Through C (metamethods, gsub callbacks): the C-level limit. */
	expect_invalid("local t = setmetatable({}, {__index = function(t, k) return t[k] end}) "
	    "function validate(b) return t.x end", "stack overflow");
	expect_invalid("local function g(s) return (s:gsub('.', g)) end "
	    "function validate(b) return g('ab') end", "stack overflow");
	expect_invalid("local t = setmetatable({}, {__lt = function(a, b) return a < b end}) "
	    "function validate(b) return t < t end", "stack overflow");
}
END_TEST

START_TEST(test_missing_functions)
{
	static const struct { const char *call, *name; } cases[] = {
		{ "os.execute('true')", "'os'" },
		{ "io.open('/etc/passwd')", "'io'" },
		{ "load('return 1')", "'load'" },
		{ "loadstring('return 1')", "'loadstring'" },
		{ "dofile('/etc/passwd')", "'dofile'" },
		{ "loadfile('/etc/passwd')", "'loadfile'" },
		{ "require('os')", "'require'" },
		{ "debug.sethook()", "'debug'" },
		{ "string.dump(validate)", "'dump'" },
		{ "('x'):dump()", "'dump'" },
		{ "collectgarbage('stop')", "'collectgarbage'" },
		{ "print('hi')", "'print'" },
		{ "package.loadlib('x', 'y')", "'package'" },
		{ "coroutine.create(print)", "'coroutine'" },
		{ "math.randomseed(1)", "'randomseed'" },
	};
	char src[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(src, sizeof(src), "function validate(b) %s return true end",
		    cases[i].call);
		expect_invalid(src, cases[i].name);
	}
}
END_TEST

START_TEST(test_math_random_is_seeded)
{
	struct verdict v1, v2;
	static const char code[] =
	    "function validate(b) return false, tostring(math.random(1, 1 << 40)) end";

	execute(code, "", &v1);
	execute(code, "", &v2);
	ck_assert_str_eq(v1.reason, v2.reason);
}
END_TEST

/* ---- execute: the artifact -------------------------------------------- */

START_TEST(test_artifact_mismatch)
{
	size_t len;
	uint8_t *art = compile_ok("function validate(b) return true end", &len), sha[HASH_LEN];
	struct verdict v;

	hash_sha256(art, len, sha);
	sha[0] ^= 1;
	execute_raw(art, len, sha, MEM, INSTR, "", 0, &v);
	ck_assert_int_eq(v.verdict, FARMD__EXECUTE_RESULT__VERDICT__ARTIFACT_MISMATCH);
	sha[0] ^= 1;
	art[len - 1] ^= 0x40;
	execute_raw(art, len, sha, MEM, INSTR, "", 0, &v);
	ck_assert_int_eq(v.verdict, FARMD__EXECUTE_RESULT__VERDICT__ARTIFACT_MISMATCH);
	art[len - 1] ^= 0x40;
	execute_raw(art, len, sha, MEM, INSTR, "", 0, &v);
	ck_assert_int_eq(v.verdict, FARMD__EXECUTE_RESULT__VERDICT__VALID);
	/* A malformed job is refused, not run. */
	{
		Farmd__ExecuteJob job = FARMD__EXECUTE_JOB__INIT;
		Farmd__ExecuteResult *r = NULL;
		struct err e;

		job.artifact.data = art;
		job.artifact.len = len;
		job.artifact_sha256.data = sha;
		job.artifact_sha256.len = 31;
		job.memory_limit = MEM;
		job.instruction_limit = INSTR;
		ck_assert_int_eq(lua_job_execute(J, &job, &r, &e), -1);
		ck_assert_ptr_nonnull(strstr(e.msg, "artifact_sha256"));
	}
	free(art);
}
END_TEST

START_TEST(test_hostile_artifacts)
{
	size_t len;
	uint8_t *art = compile_ok("function validate(b) return true end", &len);
	uint8_t buf[4096], sha[HASH_LEN];
	uint64_t x = 88172645463325252ULL;
	struct verdict v;

	/* Random bytes, a correct hash: refused by the loader. */
	for (int i = 0; i < 500; i++) {
		size_t n = 1 + (size_t)(x % sizeof(buf));

		for (size_t k = 0; k < n; k++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			buf[k] = (uint8_t)x;
		}
		if (i % 2 == 1)
			buf[0] = 0x1b;  /* past the first check */
		hash_sha256(buf, n, sha);
		execute_raw(buf, n, sha, MEM, INSTR, "", 0, &v);
		ck_assert_int_eq(v.verdict, FARMD__EXECUTE_RESULT__VERDICT__INVALID);
	}
	/* Source text in place of bytecode: binary mode only. */
	hash_sha256("return 1", 8, sha);
	execute_raw((const uint8_t *)"return 1", 8, sha, MEM, INSTR, "", 0, &v);
	ck_assert_int_eq(v.verdict, FARMD__EXECUTE_RESULT__VERDICT__INVALID);
	ck_assert_msg(strstr(v.reason, "artifact does not load") != NULL, "%s", v.reason);
	/* Every truncation of a real artifact. */
	for (size_t n = 0; n < len; n++) {
		hash_sha256(art, n, sha);
		execute_raw(art, n, sha, MEM, INSTR, "", 0, &v);
		ck_assert_int_eq(v.verdict, FARMD__EXECUTE_RESULT__VERDICT__INVALID);
		ck_assert_msg(strstr(v.reason, "artifact does not load") != NULL, "%s", v.reason);
	}
	free(art);
}
END_TEST

START_TEST(test_determinism)
{
	static const char code[] =
	    "function validate(b)\n"
	    "  local h = 0\n"
	    "  for r = 1, 200 do\n"
	    "    for i = 1, #b.body do h = (h * 31 + b.body:byte(i) + r) % 4294967296 end\n"
	    "  end\n"
	    "  if h % 2 == 0 then return false, 'even ' .. h end\n"
	    "  return true\n"
	    "end";
	struct verdict v1, v2;

	execute(code, "some block body", &v1);
	execute(code, "some block body", &v2);
	ck_assert_int_eq(v1.verdict, v2.verdict);
	ck_assert_str_eq(v1.reason, v2.reason);
	ck_assert_uint_eq(v1.instructions, v2.instructions);
	ck_assert_uint_gt(v1.instructions, 10000);
	execute("function validate(b) while true do end end", "", &v1);
	execute("function validate(b) while true do end end", "", &v2);
	ck_assert_uint_eq(v1.instructions, v2.instructions);
}
END_TEST

/* ---- inside the worker sandbox ---------------------------------------- */

/* In a sandboxed child (no check API there): compile + execute of src, 1
 * when the verdict is want and the reason contains reason. */
static int
sandboxed_case(const char *src, int want, const char *reason)
{
	Farmd__CompileJob cj = FARMD__COMPILE_JOB__INIT;
	Farmd__CompileResult *cr;
	Farmd__ExecuteJob xj = FARMD__EXECUTE_JOB__INIT;
	Farmd__ExecuteResult *xr;
	uint8_t sha[HASH_LEN], *art;
	struct err e;
	int ok;

	cj.source.data = (uint8_t *)src;
	cj.source.len = strlen(src);
	cj.memory_limit = MEM;
	if (lua_job_compile(J, &cj, &cr, &e) < 0 || cr->error[0] != '\0')
		return 0;
	if ((art = malloc(cr->artifact.len)) == NULL)
		return 0;
	memcpy(art, cr->artifact.data, cr->artifact.len);
	hash_sha256(art, cr->artifact.len, sha);
	xj.artifact.data = art;
	xj.artifact.len = cr->artifact.len;
	xj.artifact_sha256.data = sha;
	xj.artifact_sha256.len = HASH_LEN;
	xj.memory_limit = MEM;
	xj.instruction_limit = INSTR;
	xj.body.data = (uint8_t *)"\xff";
	xj.body.len = 1;
	ok = lua_job_execute(J, &xj, &xr, &e) == 0 && (int)xr->verdict == want &&
	    strstr(xr->reason, reason) != NULL;
	free(art);
	return ok;
}

/* Lua under the worker's seccomp allowlist: its allocations (brk, mmap,
 * mremap of big blocks) and everything a job does are allowed; a denied
 * syscall would kill the child with SIGSYS. */
START_TEST(test_under_sandbox)
{
	static const struct { const char *src; int want; const char *reason; } cases[] = {
		{ "function validate(b) if b.body:byte(1) == 0xFF then return false, "
		  "'body starts with 0xFF' end return true end", 1, "body starts with 0xFF" },
		{ "function validate(b) local s = string.rep('x', 16 << 20) return #s > 0 end", 0, "" },
		{ "function validate(b) local t = {} for i = 1, 1e9 do t[i] = "
		  "string.rep('x', 1 << 20, tostring(i)) end end", 1, "out of memory" },
		{ "function validate(b) local s = 'x' while true do s = s .. s end end", 1,
		  "out of memory" },
		{ "local function f(n) if n == 0 then return 0 end return 1 + f(n - 1) end "
		  "function validate(b) return f(150000) == 150000 end", 0, "" },
		{ "local t = setmetatable({}, {__index = function(t, k) return t[k] end}) "
		  "function validate(b) return t.x end", 1, "stack overflow" },
		{ "function validate(b) while true do end end", 1, "instruction budget" },
		{ "function validate(b) return os.execute('id') end", 1, "'os'" },
		{ "function validate(b) return false, string.format('%5.2f %q', math.pi, "
		  "tostring(1e308 * 10)) end", 1, " 3.14 \"inf\"" },
	};
	struct sandbox_report rep;
	struct err e;
	int status;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (sandbox_apply(&rep, &e) < 0)
			_exit(100);
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
			if (!sandboxed_case(cases[i].src, cases[i].want, cases[i].reason))
				_exit(10 + (int)i);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(!WIFSIGNALED(status), "sandboxed Lua killed by signal %d",
	    WTERMSIG(status));
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "sandboxed Lua: case %d failed", WEXITSTATUS(status) - 10);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("lua_jobs");
	TCase *tc = tcase_create("lua_jobs");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_compile_ok);
	tcase_add_test(tc, test_compile_errors);
	tcase_add_test(tc, test_compile_out_of_memory);
	tcase_add_test(tc, test_execute_valid_and_block);
	tcase_add_test(tc, test_execute_false_and_odd_returns);
	tcase_add_test(tc, test_execute_first_byte_ff);
	tcase_add_test(tc, test_instruction_budget);
	tcase_add_test(tc, test_memory_budget);
	tcase_add_test(tc, test_deep_recursion);
	tcase_add_test(tc, test_missing_functions);
	tcase_add_test(tc, test_math_random_is_seeded);
	tcase_add_test(tc, test_artifact_mismatch);
	tcase_add_test(tc, test_hostile_artifacts);
	tcase_add_test(tc, test_determinism);
	tcase_add_test(tc, test_under_sandbox);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
