/*
 * job.c: job bodies.  Results point into buffers owned by the job_ctx and
 * reused from one job to the next, so a steady stream of same-sized jobs
 * allocates nothing (the SIMD scrypt work area included: scrypt.h).
 *
 * Encoding: with the portable kernel every piece goes through
 * encode_v1_piece() (OpenSSL's scrypt, one at a time); with a SIMD
 * kernel the job's seeds are derived as one batch (encode_v1_seeds, the
 * same bytes) and each piece is then masked with its seed.
 *
 * Pieces come in the job's bytes or, for jobs with a count, in the
 * worker's shared buffer (job_ctx_set_buffer; main.c maps it), where
 * they are encoded in place (ChaCha20 masking is a stream XOR, safe with
 * in == out) and the result names the same range.  An echo job in the
 * buffer inverts every byte there, so each byte is read and written.
 *
 * Compile and execute jobs (validation code) are lua_job.c's; a job of a
 * kind the worker was not started for is refused with a job error.
 */
#include "job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "encode_v1.h"
#include "lua_job.h"
#include "scrypt.h"

/* Seeds derived per batch call; a multiple of every kernel's lanes. */
#define JOB_SEEDS 64

struct job_ctx {
	enum wire_kind kind;
	struct encode_v1_ctx *enc;
	struct scrypt_ctx *sc;          /* NULL: portable kernel */
	uint8_t seeds[JOB_SEEDS][HASH_LEN];
	/* Result storage, reused. */
	Farmd__EncodeResult enc_res;
	ProtobufCBinaryData *pieces;
	uint8_t *buf;
	size_t buf_cap;
	size_t pieces_cap;
	Farmd__EchoJob echo_res;
	struct lua_job *lua;            /* compile and execute workers */
	uint8_t *shm;                   /* the shared buffer, NULL until given */
	size_t shm_size;
	char errbuf[ERR_MSG_MAX];
};

struct job_ctx *
job_ctx_new(enum wire_kind kind, enum scrypt_kernel kernel, struct err *e)
{
	struct job_ctx *ctx = calloc(1, sizeof(*ctx));

	if (ctx == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	ctx->kind = kind;
	if (kind == WIRE_KIND_ENCODE) {
		ctx->enc = encode_v1_ctx_new(e);
		if (ctx->enc == NULL) {
			free(ctx);
			return NULL;
		}
		if (kernel != SCRYPT_KERNEL_PORTABLE &&
		    (ctx->sc = scrypt_ctx_new(kernel, e)) == NULL) {
			job_ctx_free(ctx);
			return NULL;
		}
	}
	if ((kind == WIRE_KIND_COMPILE || kind == WIRE_KIND_EXECUTE) &&
	    (ctx->lua = lua_job_new()) == NULL) {
		err_set(e, "out of memory");
		job_ctx_free(ctx);
		return NULL;
	}
	return ctx;
}

void
job_ctx_free(struct job_ctx *ctx)
{
	if (ctx == NULL)
		return;
	encode_v1_ctx_free(ctx->enc);
	scrypt_ctx_free(ctx->sc);
	lua_job_free(ctx->lua);
	OPENSSL_cleanse(ctx->seeds, sizeof(ctx->seeds));
	free(ctx->pieces);
	free(ctx->buf);
	free(ctx);
}

void
job_ctx_set_buffer(struct job_ctx *ctx, uint8_t *buf, size_t size)
{
	ctx->shm = buf;
	ctx->shm_size = size;
}

/* The job's range [off, off + len) of the shared buffer, or NULL. */
static uint8_t *
job_shm(struct job_ctx *ctx, uint64_t off, uint64_t len)
{
	if (ctx->shm == NULL || off > ctx->shm_size || len > ctx->shm_size - off)
		return NULL;
	return ctx->shm + off;
}

static int
job_reserve(struct job_ctx *ctx, size_t bytes, size_t npieces)
{
	if (bytes > ctx->buf_cap) {
		uint8_t *nb = realloc(ctx->buf, bytes);

		if (nb == NULL)
			return -1;
		ctx->buf = nb;
		ctx->buf_cap = bytes;
	}
	if (npieces > ctx->pieces_cap) {
		ProtobufCBinaryData *np = realloc(ctx->pieces, npieces * sizeof(*np));

		if (np == NULL)
			return -1;
		ctx->pieces = np;
		ctx->pieces_cap = npieces;
	}
	return 0;
}

static void
job_fail(struct job_ctx *ctx, Farmd__JobResult *res, const char *msg)
{
	snprintf(ctx->errbuf, sizeof(ctx->errbuf), "%s", msg);
	res->error = ctx->errbuf;
}

/* Piece i of the job's total into out (in == out is fine).  Portable
 * kernel: encode_v1_piece.  SIMD kernel: the seeds of pieces
 * i..i+JOB_SEEDS-1 are derived as one batch when i reaches them, then the
 * piece is masked with its own. */
static int
job_encode_one(struct job_ctx *ctx, const Farmd__EncodeJob *j, size_t i, size_t total,
    const struct encode_params *params, const uint8_t *in, uint8_t *out, size_t len,
    struct err *e)
{
	uint32_t offset = j->first_offset + (uint32_t)i;

	if (ctx->sc == NULL)
		return encode_v1_piece(ctx->enc, j->sector_id.data, offset, params,
		    in, out, len, e);
	if (i % JOB_SEEDS == 0) {
		size_t n = total - i < JOB_SEEDS ? total - i : JOB_SEEDS;

		if (encode_v1_seeds(ctx->sc, j->sector_id.data, offset, n, params,
		    ctx->seeds[0], e) < 0)
			return -1;
	}
	if (encode_v1_mask(ctx->enc, ctx->seeds[i % JOB_SEEDS], in, out, len, e) < 0)
		return err_wrap(e, "piece offset %u", offset);
	return 0;
}

/* An encode job in the shared buffer: in place. */
static int
job_encode_shm(struct job_ctx *ctx, const Farmd__EncodeJob *j, Farmd__JobResult *res)
{
	struct encode_params params = { j->scrypt_n, j->scrypt_r, j->scrypt_p };
	uint64_t len = (uint64_t)j->count * j->piece_len;
	uint8_t *p = job_shm(ctx, j->buf_offset, len);
	struct err e;

	if (p == NULL || j->piece_len == 0) {
		job_fail(ctx, res, "encode job: its pieces are not inside the shared buffer");
		return 0;
	}
	for (uint32_t i = 0; i < j->count; i++) {
		uint8_t *piece = p + (uint64_t)i * j->piece_len;

		if (job_encode_one(ctx, j, i, j->count, &params, piece, piece, j->piece_len,
		    &e) < 0) {
			job_fail(ctx, res, e.msg);
			OPENSSL_cleanse(ctx->seeds, sizeof(ctx->seeds));
			return 0;
		}
	}
	OPENSSL_cleanse(ctx->seeds, sizeof(ctx->seeds));
	farmd__encode_result__init(&ctx->enc_res);
	ctx->enc_res.buf_offset = j->buf_offset;
	ctx->enc_res.length = len;
	ctx->enc_res.checksum = hash_fast64(p, len);
	res->body_case = FARMD__JOB_RESULT__BODY_ENCODE;
	res->encode = &ctx->enc_res;
	return 0;
}

/* An echo in the shared buffer: every byte inverted in place. */
static void
job_echo_shm(struct job_ctx *ctx, const Farmd__EchoJob *j, Farmd__JobResult *res)
{
	uint8_t *p = job_shm(ctx, j->buf_offset, j->length);
	uint64_t n = j->length, i = 0;

	if (p == NULL) {
		job_fail(ctx, res, "echo job: its payload is not inside the shared buffer");
		return;
	}
	for (; i + 8 <= n; i += 8) {
		uint64_t v;

		memcpy(&v, p + i, 8);
		v = ~v;
		memcpy(p + i, &v, 8);
	}
	for (; i < n; i++)
		p[i] = (uint8_t)~p[i];
	farmd__echo_job__init(&ctx->echo_res);
	ctx->echo_res.buf_offset = j->buf_offset;
	ctx->echo_res.length = j->length;
	ctx->echo_res.checksum = hash_fast64(p, n);
	res->body_case = FARMD__JOB_RESULT__BODY_ECHO;
	res->echo = &ctx->echo_res;
}

static int
job_encode(struct job_ctx *ctx, const Farmd__EncodeJob *j, Farmd__JobResult *res)
{
	struct encode_params params = { j->scrypt_n, j->scrypt_r, j->scrypt_p };
	size_t total = 0, off = 0;
	struct err e;

	if (ctx->enc == NULL) {
		job_fail(ctx, res, "encode job sent to a non-encode worker");
		return 0;
	}
	if (j->sector_id.len != HASH_LEN) {
		job_fail(ctx, res, "encode job: sector_id is not 32 bytes");
		return 0;
	}
	if (j->count > 0)
		return job_encode_shm(ctx, j, res);
	for (size_t i = 0; i < j->n_pieces; i++)
		total += j->pieces[i].len;
	if (job_reserve(ctx, total, j->n_pieces) < 0) {
		job_fail(ctx, res, "encode job: out of memory");
		return 0;
	}
	for (size_t i = 0; i < j->n_pieces; i++) {
		uint8_t *out = ctx->buf + off;

		if (job_encode_one(ctx, j, i, j->n_pieces, &params, j->pieces[i].data, out,
		    j->pieces[i].len, &e) < 0) {
			job_fail(ctx, res, e.msg);
			OPENSSL_cleanse(ctx->seeds, sizeof(ctx->seeds));
			return 0;
		}
		ctx->pieces[i].data = out;
		ctx->pieces[i].len = j->pieces[i].len;
		off += j->pieces[i].len;
	}
	OPENSSL_cleanse(ctx->seeds, sizeof(ctx->seeds));
	farmd__encode_result__init(&ctx->enc_res);
	ctx->enc_res.n_pieces = j->n_pieces;
	ctx->enc_res.pieces = ctx->pieces;
	res->body_case = FARMD__JOB_RESULT__BODY_ENCODE;
	res->encode = &ctx->enc_res;
	return 0;
}

static int
job_compile(struct job_ctx *ctx, const Farmd__CompileJob *j, Farmd__JobResult *res)
{
	struct err e;

	if (ctx->kind != WIRE_KIND_COMPILE) {
		job_fail(ctx, res, "compile job sent to a non-compile worker");
		return 0;
	}
	if (lua_job_compile(ctx->lua, j, &res->compile, &e) < 0) {
		job_fail(ctx, res, e.msg);
		return 0;
	}
	res->body_case = FARMD__JOB_RESULT__BODY_COMPILE;
	return 0;
}

static int
job_execute(struct job_ctx *ctx, const Farmd__ExecuteJob *j, Farmd__JobResult *res)
{
	struct err e;

	if (ctx->kind != WIRE_KIND_EXECUTE) {
		job_fail(ctx, res, "execute job sent to a non-execute worker");
		return 0;
	}
	if (lua_job_execute(ctx->lua, j, &res->execute, &e) < 0) {
		job_fail(ctx, res, e.msg);
		return 0;
	}
	res->body_case = FARMD__JOB_RESULT__BODY_EXECUTE;
	return 0;
}

int
job_run(struct job_ctx *ctx, const Farmd__Job *job, Farmd__JobResult *res,
    struct err *e)
{
	(void)e;
	res->id = job->id;
	switch (job->body_case) {
	case FARMD__JOB__BODY_ENCODE:
		return job_encode(ctx, job->encode, res);
	case FARMD__JOB__BODY_COMPILE:
		return job_compile(ctx, job->compile, res);
	case FARMD__JOB__BODY_EXECUTE:
		return job_execute(ctx, job->execute, res);
	case FARMD__JOB__BODY_ECHO:
		if (job->echo->length > 0) {
			if (ctx->kind != WIRE_KIND_ENCODE)
				job_fail(ctx, res, "echo in a shared buffer: not an encode worker");
			else
				job_echo_shm(ctx, job->echo, res);
			return 0;
		}
		/* The payload is returned as is: the caller keeps the request
		 * alive until the result is packed. */
		farmd__echo_job__init(&ctx->echo_res);
		ctx->echo_res.data = job->echo->data;
		res->body_case = FARMD__JOB_RESULT__BODY_ECHO;
		res->echo = &ctx->echo_res;
		return 0;
	default:
		job_fail(ctx, res, "job with no known body");
		return 0;
	}
}
