/*
 * bench_kernel.c: single-core rates of the encoding kernel and hashing
 * (DESIGN.md §13).  One line per figure:
 *
 *   <name> <value> <unit>
 *
 * MB = 10^6 bytes (as `openssl speed` counts).  Usage:
 *
 *   bench_kernel [SECONDS]      (time per measurement, default 1)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "encode_v1.h"
#include "err.h"
#include "hash.h"
#include "merkle.h"

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

	/* Full encode_v1_piece (scrypt + ChaCha20), 64 KiB pieces, demo. */
	n = 0;
	t0 = now();
	do {
		if (encode_v1_piece(ctx, id, (uint32_t)n, &demo, buf, buf,
		    piece64k, &e) < 0)
			die("piece", &e);
		n++;
	} while ((t = now() - t0) < secs);
	printf("encode_piece_64KiB_demo %.1f pieces/s\n", (double)n / t);
	printf("encode_piece_64KiB_demo_bytes %.1f MB/s\n",
	    (double)n * piece64k / t / 1e6);

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
