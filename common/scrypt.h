/*
 * scrypt.h: scrypt (RFC 7914) for a batch of independent instances that
 * share N, r, p and the salt and differ in their passwords: the seeds of
 * one sector's pieces (encoding format v1, DESIGN.md §6).
 *
 * Every kernel returns exactly the bytes of OpenSSL's EVP_PBE_scrypt
 * (the contract; tests/unit/test_scrypt.c checks it).  PBKDF2-HMAC-SHA256
 * is OpenSSL's; the ROMix/BlockMix/Salsa20/8 core is ours:
 *   portable  OpenSSL's scrypt, one instance at a time;
 *   avx2      8 instances in the 32-bit lanes of ymm registers;
 *   avx512    16 instances in the 32-bit lanes of zmm registers
 *             (needs AVX-512F, BW and VL).
 * The kernel is chosen once per process (scrypt_kernel_select), normally
 * the best this CPU runs; FARMD_KERNEL=portable|avx2|avx512 forces one.
 *
 * Memory: a SIMD context keeps one work area, allocated on first use and
 * reused (grown only when a batch needs more): lanes * 128*r*N bytes of V
 * (256 MiB for 16 lanes at N=16384, r=8; 16 MiB at N=1024) plus 48*128*r
 * bytes of scratch.  A pass whose V would exceed SCRYPT_V_MAX runs in
 * fewer lanes, or (one instance's V alone is larger) on the portable path.
 */
#ifndef FARMD_SCRYPT_H
#define FARMD_SCRYPT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

enum scrypt_kernel {
	SCRYPT_KERNEL_PORTABLE,
	SCRYPT_KERNEL_AVX2,
	SCRYPT_KERNEL_AVX512,
};
#define SCRYPT_KERNEL_COUNT 3

/* The largest V a context allocates (its scratch adds < 400 KiB). */
#define SCRYPT_V_MAX ((size_t)1 << 30)

/* "portable", "avx2", "avx512". */
const char *scrypt_kernel_name(enum scrypt_kernel k);
int scrypt_kernel_parse(const char *name, enum scrypt_kernel *k);
/* This build and this CPU can run k (portable: always). */
int scrypt_kernel_available(enum scrypt_kernel k);
/* Instances per SIMD pass: 1, 8, 16. */
unsigned scrypt_kernel_lanes(enum scrypt_kernel k);
/* The fastest available kernel. */
enum scrypt_kernel scrypt_kernel_best(void);
/*
 * The kernel to use: `forced` (FARMD_KERNEL's value; NULL or "" for the
 * best) if it names an available kernel.  An unknown or unavailable name
 * is refused with a one-line message.
 */
int scrypt_kernel_select(const char *forced, enum scrypt_kernel *k,
    struct err *e);

/* One password of a batch. */
struct scrypt_pw {
	const uint8_t *data;
	size_t len;
};

struct scrypt_ctx;

/*
 * Prefetches the OpenSSL algorithms (PBKDF2 with SHA-256, and SCRYPT for
 * the portable path) and runs each once: call before a sandbox closes.
 * After it, scrypt_batch() does no file or provider access; it may mmap
 * (the work area, once per size) and take uncontended locks.
 */
struct scrypt_ctx *scrypt_ctx_new(enum scrypt_kernel k, struct err *e);
void scrypt_ctx_free(struct scrypt_ctx *ctx);
enum scrypt_kernel scrypt_ctx_kernel(const struct scrypt_ctx *ctx);
/* Bytes of work area held now. */
size_t scrypt_ctx_mem(const struct scrypt_ctx *ctx);
/*
 * A SIMD pass over fewer instances than lanes costs nearly a full pass.
 * A remainder of fewer than `min` instances runs on the portable path
 * instead (default: the break-even measured for the kernel, see
 * scrypt.c); 1 sends every remainder through the SIMD kernel, padded.
 */
void scrypt_ctx_set_pad_min(struct scrypt_ctx *ctx, unsigned min);

/*
 * out + i*dklen = scrypt(pw[i], salt, N, r, p, dklen) for i < count, the
 * bytes EVP_PBE_scrypt returns.  N a power of two >= 2, r, p >= 1,
 * 1 <= dklen.  Returns -1 with e set on bad parameters or when memory
 * runs out.
 */
int scrypt_batch(struct scrypt_ctx *ctx, const struct scrypt_pw *pw,
    size_t count, const uint8_t *salt, size_t saltlen, uint64_t N, uint32_t r,
    uint32_t p, uint8_t *out, size_t dklen, struct err *e);

#endif
