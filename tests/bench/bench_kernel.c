/*
 * bench_kernel.c: single-core rates of the encoding kernel and hashing
 * (DESIGN.md §13).  One line per figure:
 *
 *   <name> <value> <unit>
 *
 * MB = 10^6 bytes (as `openssl speed` counts).  Usage:
 *
 *   bench_kernel [SECONDS]      (time per measurement, default 1)
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

int
main(int argc, char **argv)
{
	static const struct encode_params demo = { .n = 1024, .r = 8, .p = 1 };
	static const struct encode_params prod = { .n = 16384, .r = 8, .p = 1 };
	const size_t mib = 1 << 20, piece64k = 64 << 10;
	double secs = argc > 1 ? atof(argv[1]) : 1.0;
	struct err e = { "" };
	struct encode_v1_ctx *ctx;
	uint8_t id[HASH_LEN], seed[HASH_LEN], h[HASH_LEN], pkh[HASH_LEN] = { 0 };
	uint8_t *buf;
	double t0, t;
	uint64_t n;

	if (secs <= 0) {
		fprintf(stderr, "usage: bench_kernel [SECONDS]\n");
		return 2;
	}
	buf = malloc(mib);
	if (buf == NULL) {
		perror("malloc");
		return 1;
	}
	for (size_t i = 0; i < mib; i++)
		buf[i] = (uint8_t)(i * 131 + 7);
	ctx = encode_v1_ctx_new(&e);
	if (ctx == NULL)
		die("encode_v1_ctx_new", &e);
	encode_v1_sector_id(pkh, 0, 1, id);
	if (encode_v1_seed(ctx, id, 0, &demo, seed, &e) < 0)
		die("seed", &e);

	/* ChaCha20 masking, 1 MiB buffers, in place. */
	n = 0;
	t0 = now();
	do {
		if (encode_v1_mask(ctx, seed, buf, buf, mib, &e) < 0)
			die("mask", &e);
		n++;
	} while ((t = now() - t0) < secs);
	printf("chacha20_mask_1MiB %.1f MB/s\n", (double)n * mib / t / 1e6);

	/* scrypt seeds, demo and production profiles. */
	n = 0;
	t0 = now();
	do {
		if (encode_v1_seed(ctx, id, (uint32_t)n, &demo, seed, &e) < 0)
			die("seed", &e);
		n++;
	} while ((t = now() - t0) < secs);
	printf("scrypt_seed_demo_N1024_r8_p1 %.1f seeds/s\n", (double)n / t);

	n = 0;
	t0 = now();
	do {
		if (encode_v1_seed(ctx, id, (uint32_t)n, &prod, seed, &e) < 0)
			die("seed", &e);
		n++;
	} while ((t = now() - t0) < secs);
	printf("scrypt_seed_production_N16384_r8_p1 %.1f seeds/s\n", (double)n / t);

	/* Full encode_v1_piece (scrypt + ChaCha20), 64 KiB pieces, demo: the
	 * portable kernel. */
	n = 0;
	t0 = now();
	do {
		if (encode_v1_piece(ctx, id, (uint32_t)n, &demo, buf, buf,
		    piece64k, &e) < 0)
			die("piece", &e);
		n++;
	} while ((t = now() - t0) < secs);
	printf("encode_piece_64KiB_demo_portable %.1f pieces/s\n", (double)n / t);

	/* What an encode worker runs (its kernel, batches of 16 pieces). */
	{
		enum scrypt_kernel k;
		struct scrypt_ctx *sc;
		double rate = (double)n / t;

		if (scrypt_kernel_select(getenv("FARMD_KERNEL"), &k, &e) < 0)
			die("kernel", &e);
		if (k != SCRYPT_KERNEL_PORTABLE) {
			if ((sc = scrypt_ctx_new(k, &e)) == NULL)
				die("scrypt_ctx_new", &e);
			(void)encode_batch_rate(ctx, sc, id, &demo, buf, piece64k, 0);
			rate = encode_batch_rate(ctx, sc, id, &demo, buf, piece64k, secs);
			scrypt_ctx_free(sc);
		}
		printf("encode_kernel_%s 1 kernel\n", scrypt_kernel_name(k));
		printf("encode_piece_64KiB_demo %.1f pieces/s\n", rate);
		printf("encode_piece_64KiB_demo_bytes %.1f MB/s\n", rate * piece64k / 1e6);
	}

	/* The scrypt kernels side by side with OpenSSL. */
	scrypt_report(&demo, "demo", secs);
	scrypt_report(&prod, "production", secs);

	/* SHA-256 over 1 MiB. */
	n = 0;
	t0 = now();
	do {
		hash_sha256(buf, mib, h);
		buf[0] ^= h[0];
		n++;
	} while ((t = now() - t0) < secs);
	printf("sha256_1MiB %.1f MB/s\n", (double)n * mib / t / 1e6);

	/* Merkle root of a 1 MiB piece (32768 chunks). */
	n = 0;
	t0 = now();
	do {
		if (merkle_root(buf, mib / HASH_LEN, h) < 0) {
			fprintf(stderr, "bench_kernel: merkle_root failed\n");
			return 1;
		}
		buf[0] ^= h[0];
		n++;
	} while ((t = now() - t0) < secs);
	printf("merkle_root_1MiB %.1f MB/s\n", (double)n * mib / t / 1e6);

	sink = buf[0];
	encode_v1_ctx_free(ctx);
	free(buf);
	return 0;
}
