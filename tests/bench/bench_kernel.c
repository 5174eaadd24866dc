/*
 * bench_kernel.c: single-core rates of the encoding kernel and hashing
 * (DESIGN.md §13).  One line per figure:
 *
 *   <name> <value> <unit>
 *
 * MB = 10^6 bytes (as `openssl speed` counts).  Usage:
 *
 *   bench_kernel [SECONDS] [encode]   (time per measurement, default 1)
 *
 * With `encode`, only what the plotting ratios of scripts/bench_plot.py
 * divide by: encode_piece_64KiB_demo_portable, encode_kernel_<name> and
 * encode_piece_64KiB_demo(_bytes), a few seconds, so that scripts/bench
 * can measure them right before each plotting run (a limit measured a
 * minute earlier on a shared machine may have seen other load).
 *
 * scrypt: every kernel this CPU runs (common/scrypt.h) and OpenSSL's
 * EVP_PBE_scrypt, both profiles, in SCRYPT_ROUNDS interleaved rounds of
 * SECONDS each; a path's figure is its best round (other load on the
 * machine slows some rounds; interleaving gives every path the same
 * chances), and scrypt_<profile>_<kernel>_vs_openssl is the ratio of the
 * figures.  encode_piece_64KiB_demo is what an encode worker runs: seeds
 * by the kernel FARMD_KERNEL selects (default: the best), in batches of
 * 16 pieces, then ChaCha20.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "encode_v1.h"
#include "err.h"
#include "hash.h"
#include "merkle.h"
#include "scrypt.h"

#define SCRYPT_ROUNDS 3
#define SALT ((const uint8_t *)ENCODE_V1_SALT)
#define SALT_LEN (sizeof(ENCODE_V1_SALT) - 1)

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void
die(const char *what, const struct err *e)
{
	fprintf(stderr, "bench_kernel: %s: %s\n", what, e->msg);
	exit(1);
}

static volatile uint8_t sink;

/* Paths measured: OpenSSL's EVP_PBE_scrypt, then each kernel. */
#define NPATHS (1 + SCRYPT_KERNEL_COUNT)

struct scrypt_bench {
	const char *profile;
	const struct encode_params *params;
	struct scrypt_ctx *ctx[SCRYPT_KERNEL_COUNT];	/* NULL: unavailable */
	double best[NPATHS];
	uint32_t next;			/* piece offsets keep changing */
};

/* One measurement of path (0: EVP_PBE_scrypt, 1 + k: kernel k), in
 * whole batches of the kernel's lanes, for at least secs. */
static double
scrypt_measure(struct scrypt_bench *b, int path, double secs)
{
	const struct encode_params *pp = b->params;
	uint8_t pw[16][HASH_LEN + 4], out[16][HASH_LEN];
	struct scrypt_pw p[16];
	unsigned lanes = path == 0 ? 1 : scrypt_kernel_lanes((enum scrypt_kernel)(path - 1));
	struct err e = { "" };
	double t0 = now(), t;
	uint64_t n = 0;

	memset(pw, 0x5c, sizeof(pw));
	do {
		for (unsigned l = 0; l < lanes; l++) {
			be32_put(pw[l] + HASH_LEN, b->next++);
			p[l] = (struct scrypt_pw){ pw[l], sizeof(pw[l]) };
		}
		if (path == 0) {
			if (EVP_PBE_scrypt((const char *)pw[0], sizeof(pw[0]), SALT, SALT_LEN,
			    pp->n, pp->r, pp->p, 64 << 20, out[0], HASH_LEN) != 1) {
				fprintf(stderr, "bench_kernel: EVP_PBE_scrypt failed\n");
				exit(1);
			}
		} else if (scrypt_batch(b->ctx[path - 1], p, lanes, SALT, SALT_LEN, pp->n,
		    pp->r, pp->p, out[0], HASH_LEN, &e) < 0) {
			die("scrypt_batch", &e);
		}
		sink ^= out[0][0];
		n += lanes;
	} while ((t = now() - t0) < secs);
	return (double)n / t;
}

static void
scrypt_report(const struct encode_params *params, const char *profile, double secs)
{
	struct scrypt_bench b = { .profile = profile, .params = params };
	struct err e = { "" };

	for (int k = 0; k < SCRYPT_KERNEL_COUNT; k++)
		if (scrypt_kernel_available((enum scrypt_kernel)k) &&
		    (b.ctx[k] = scrypt_ctx_new((enum scrypt_kernel)k, &e)) == NULL)
			die("scrypt_ctx_new", &e);
	/* A first, unmeasured batch: the work area's page faults belong to a
	 * worker's first job, not to its rate. */
	for (int path = 1; path < NPATHS; path++)
		if (b.ctx[path - 1] != NULL)
			(void)scrypt_measure(&b, path, 0);
	for (int round = 0; round < SCRYPT_ROUNDS; round++)
		for (int path = 0; path < NPATHS; path++) {
			double rate;

			if (path > 0 && b.ctx[path - 1] == NULL)
				continue;
			rate = scrypt_measure(&b, path, secs);
			if (rate > b.best[path])
				b.best[path] = rate;
		}
	printf("scrypt_%s_N%llu_r%u_p%u_openssl %.1f scrypts/s\n", profile,
	    (unsigned long long)params->n, params->r, params->p, b.best[0]);
	for (int k = 0; k < SCRYPT_KERNEL_COUNT; k++) {
		if (b.ctx[k] == NULL)
			continue;
		printf("scrypt_%s_N%llu_r%u_p%u_%s %.1f scrypts/s\n", profile,
		    (unsigned long long)params->n, params->r, params->p,
		    scrypt_kernel_name((enum scrypt_kernel)k), b.best[1 + k]);
		printf("scrypt_%s_%s_vs_openssl %.2f x\n", profile,
		    scrypt_kernel_name((enum scrypt_kernel)k), b.best[1 + k] / b.best[0]);
		scrypt_ctx_free(b.ctx[k]);
	}
}

/* encode_v1_seeds + ChaCha20 on 64 KiB demo pieces, 16 per batch. */
static double
encode_batch_rate(struct encode_v1_ctx *ctx, struct scrypt_ctx *sc,
    const uint8_t id[HASH_LEN], const struct encode_params *demo, uint8_t *buf,
    size_t piece, double secs)
{
	uint8_t seeds[16][HASH_LEN];
	struct err e = { "" };
	double t0 = now(), t;
	uint64_t n = 0;

	do {
		if (encode_v1_seeds(sc, id, (uint32_t)n, 16, demo, seeds[0], &e) < 0)
			die("encode_v1_seeds", &e);
		for (int i = 0; i < 16; i++)
			if (encode_v1_mask(ctx, seeds[i], buf + (size_t)i * piece,
			    buf + (size_t)i * piece, piece, &e) < 0)
				die("mask", &e);
		n += 16;
	} while ((t = now() - t0) < secs);
	return (double)n / t;
}

/* What the single-core figures share: one context, one 1 MiB buffer. */
struct kbench {
	struct encode_v1_ctx *ctx;
	uint8_t id[HASH_LEN], seed[HASH_LEN];
	uint8_t *buf;
};

static const struct encode_params demo = { .n = 1024, .r = 8, .p = 1 };
static const struct encode_params prod = { .n = 16384, .r = 8, .p = 1 };
#define MIB ((size_t)1 << 20)
#define PIECE_64K ((size_t)64 << 10)

/* One operation each; i is the call's number (piece offsets change). */
static void
op_mask(struct kbench *b, uint64_t i)
{
	struct err e;

	(void)i;
	if (encode_v1_mask(b->ctx, b->seed, b->buf, b->buf, MIB, &e) < 0)
		die("mask", &e);
}

static void
op_seed_demo(struct kbench *b, uint64_t i)
{
	struct err e;

	if (encode_v1_seed(b->ctx, b->id, (uint32_t)i, &demo, b->seed, &e) < 0)
		die("seed", &e);
}

static void
op_seed_prod(struct kbench *b, uint64_t i)
{
	struct err e;

	if (encode_v1_seed(b->ctx, b->id, (uint32_t)i, &prod, b->seed, &e) < 0)
		die("seed", &e);
}

/* Full encode_v1_piece (scrypt + ChaCha20), 64 KiB demo pieces: the
 * portable kernel. */
static void
op_piece(struct kbench *b, uint64_t i)
{
	struct err e;

	if (encode_v1_piece(b->ctx, b->id, (uint32_t)i, &demo, b->buf, b->buf, PIECE_64K,
	    &e) < 0)
		die("piece", &e);
}

static void
op_sha256(struct kbench *b, uint64_t i)
{
	uint8_t h[HASH_LEN];

	(void)i;
	hash_sha256(b->buf, MIB, h);
	b->buf[0] ^= h[0];
}

/* 16 pieces of 64 KiB (the 1 MiB buffer), each hashed on its own: what a
 * block store batch verifies.  OpenSSL one at a time, then the lanes. */
static void
op_sha256_pieces(struct kbench *b, uint64_t i)
{
	uint8_t h[HASH_LEN];

	(void)i;
	for (size_t k = 0; k < MIB / PIECE_64K; k++)
		hash_sha256(b->buf + k * PIECE_64K, PIECE_64K, h);
	b->buf[0] ^= h[0];
}

static void
op_sha256_lanes(struct kbench *b, uint64_t i)
{
	const uint8_t *p[MIB / PIECE_64K];
	uint8_t h[MIB / PIECE_64K][HASH_LEN];

	(void)i;
	for (size_t k = 0; k < MIB / PIECE_64K; k++)
		p[k] = b->buf + k * PIECE_64K;
	hash_sha256_many(p, MIB / PIECE_64K, PIECE_64K, h);
	b->buf[0] ^= h[0][0];
}

/* Merkle root of a 1 MiB piece (32768 chunks). */
static void
op_merkle(struct kbench *b, uint64_t i)
{
	uint8_t h[HASH_LEN];

	(void)i;
	if (merkle_root(b->buf, MIB / HASH_LEN, h) < 0) {
		fprintf(stderr, "bench_kernel: merkle_root failed\n");
		exit(1);
	}
	b->buf[0] ^= h[0];
}

/* The one timing loop: calls of op per second over at least secs. */
static double
per_second(void (*op)(struct kbench *, uint64_t), struct kbench *b, double secs)
{
	double t0 = now(), t;
	uint64_t n = 0;

	do
		op(b, n++);
	while ((t = now() - t0) < secs);
	return (double)n / t;
}

/* Printed in this order; bytes > 0: the figure is MB/s of that many
 * bytes per call, else calls per second in `unit`. */
static const struct kfigure {
	const char *name;
	void (*op)(struct kbench *, uint64_t);
	size_t bytes;
	const char *unit;
} figures[] = {
	{ "chacha20_mask_1MiB", op_mask, MIB, "MB/s" },
	{ "scrypt_seed_demo_N1024_r8_p1", op_seed_demo, 0, "seeds/s" },
	{ "scrypt_seed_production_N16384_r8_p1", op_seed_prod, 0, "seeds/s" },
	{ "encode_piece_64KiB_demo_portable", op_piece, 0, "pieces/s" },
};
static const struct kfigure hashes[] = {
	{ "sha256_1MiB", op_sha256, MIB, "MB/s" },
	{ "merkle_root_1MiB", op_merkle, MIB, "MB/s" },
};

/* The two ways of hashing 16 pieces, best of SCRYPT_ROUNDS interleaved
 * rounds each, and their ratio. */
static void
sha256_lanes_report(struct kbench *b, double secs)
{
	double best[2] = { 0, 0 };

	for (int r = 0; r < SCRYPT_ROUNDS; r++)
		for (int k = 0; k < 2; k++) {
			double v = per_second(k ? op_sha256_lanes : op_sha256_pieces, b, secs);

			if (v > best[k])
				best[k] = v;
		}
	printf("sha256_16x64KiB_openssl %.1f MB/s\n", best[0] * (double)MIB / 1e6);
	printf("sha256_16x64KiB_lanes %.1f MB/s\n", best[1] * (double)MIB / 1e6);
	printf("sha256_lanes_vs_openssl %.2f x\n", best[1] / best[0]);
}

static void
print_figures(const struct kfigure *f, size_t n, struct kbench *b, double secs)
{
	for (size_t i = 0; i < n; i++) {
		double r = per_second(f[i].op, b, secs);

		if (f[i].bytes > 0)
			printf("%s %.1f %s\n", f[i].name, r * (double)f[i].bytes / 1e6, f[i].unit);
		else
			printf("%s %.1f %s\n", f[i].name, r, f[i].unit);
	}
}

/* What an encode worker runs: its kernel, batches of 16 pieces. */
static void
encode_worker_figure(struct kbench *b, double secs)
{
	struct err e = { "" };
	enum scrypt_kernel k;
	struct scrypt_ctx *sc;
	double rate;

	if (scrypt_kernel_select(getenv("FARMD_KERNEL"), &k, &e) < 0)
		die("kernel", &e);
	if (k == SCRYPT_KERNEL_PORTABLE) {
		rate = per_second(op_piece, b, secs);
	} else {
		if ((sc = scrypt_ctx_new(k, &e)) == NULL)
			die("scrypt_ctx_new", &e);
		(void)encode_batch_rate(b->ctx, sc, b->id, &demo, b->buf, PIECE_64K, 0);
		rate = encode_batch_rate(b->ctx, sc, b->id, &demo, b->buf, PIECE_64K, secs);
		scrypt_ctx_free(sc);
	}
	printf("encode_kernel_%s 1 kernel\n", scrypt_kernel_name(k));
	printf("encode_piece_64KiB_demo %.1f pieces/s\n", rate);
	printf("encode_piece_64KiB_demo_bytes %.1f MB/s\n", rate * PIECE_64K / 1e6);
}

int
main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 1.0;
	int encode_only = argc > 2 && strcmp(argv[2], "encode") == 0;
	uint8_t pkh[HASH_LEN] = { 0 };
	struct err e = { "" };
	struct kbench b;

	if (secs <= 0 || argc > 3 || (argc > 2 && !encode_only)) {
		fprintf(stderr, "usage: bench_kernel [SECONDS] [encode]\n");
		return 2;
	}
	if ((b.buf = malloc(MIB)) == NULL) {
		perror("malloc");
		return 1;
	}
	for (size_t i = 0; i < MIB; i++)
		b.buf[i] = (uint8_t)(i * 131 + 7);
	if ((b.ctx = encode_v1_ctx_new(&e)) == NULL)
		die("encode_v1_ctx_new", &e);
	encode_v1_sector_id(pkh, 0, 1, b.id);
	if (encode_v1_seed(b.ctx, b.id, 0, &demo, b.seed, &e) < 0)
		die("seed", &e);

	if (encode_only) {
		for (size_t i = 0; i < sizeof(figures) / sizeof(figures[0]); i++)
			if (figures[i].op == op_piece)	/* the portable kernel's piece */
				print_figures(&figures[i], 1, &b, secs);
		encode_worker_figure(&b, secs);
	} else {
		print_figures(figures, sizeof(figures) / sizeof(figures[0]), &b, secs);
		encode_worker_figure(&b, secs);
		/* The scrypt kernels side by side with OpenSSL. */
		scrypt_report(&demo, "demo", secs);
		scrypt_report(&prod, "production", secs);
		print_figures(hashes, sizeof(hashes) / sizeof(hashes[0]), &b, secs);
		sha256_lanes_report(&b, secs);
	}

	sink = b.buf[0];
	encode_v1_ctx_free(b.ctx);
	free(b.buf);
	return 0;
}
