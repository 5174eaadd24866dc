/*
 * scrypt_simd.h: the interface between scrypt.c (dispatch, PBKDF2, work
 * area) and the SIMD ROMix kernels (scrypt_avx512.c, scrypt_avx2.c).
 * Internal to common/: nothing outside scrypt*.c includes it.
 *
 * A kernel runs ROMix (RFC 7914 §5) on `count` independent instances at
 * once, one instance per 32-bit lane (lanes >= count are padding: they
 * compute on whatever they read and their results are never stored).
 *
 * Memory contract, shared by every kernel:
 *  - B: count blocks of 128*r bytes, instance l at B + l*stride, read as
 *    little-endian 32-bit words (RFC 7914's byte order) and overwritten
 *    with ROMix's output.  Any alignment.
 *  - V: count * 128*r * N bytes, 64-byte aligned.  Block j of instance
 *    l lives at V + (j*count + l) * 128*r: one instance's block is one
 *    contiguous row, so the data-dependent read of ROMix's second loop
 *    uses every byte of every cache line it touches (the lane-interleaved
 *    layout that vpgatherdd wants uses 4 bytes of each 64-byte line per
 *    lane, which at N = 16384 makes the second loop DRAM-bound).
 *  - X: SCRYPT_SIMD_X_BYTES(r) bytes of scratch, 64-byte aligned.
 *  - nt: write V with non-temporal stores (no read-for-ownership of lines
 *    that are written whole, but the second loop then reads V from DRAM;
 *    scrypt.c decides from measurements per kernel and size).
 *
 * Preconditions (checked by scrypt.c): 1 <= count <= lanes, N a power of
 * two with 2 <= N <= 2^31, 1 <= r <= SCRYPT_SIMD_R_MAX.
 */
#ifndef FARMD_SCRYPT_SIMD_H
#define FARMD_SCRYPT_SIMD_H

#include <stddef.h>
#include <stdint.h>

#define SCRYPT_SIMD_R_MAX 64
/* Three lane-interleaved copies of a block for 16 lanes (the widest). */
#define SCRYPT_SIMD_X_BYTES(r) ((size_t)3 * 16 * 128 * (r))

/* How a kernel's chunk_store writes (scrypt_romix.h): aligned rows of V,
 * non-temporal into V, or the caller's B at any alignment. */
enum simd_store { SIMD_STORE_ALIGNED, SIMD_STORE_STREAM, SIMD_STORE_UNALIGNED };

void scrypt_romix_avx512(uint8_t *B, size_t stride, unsigned count,
    uint32_t N, uint32_t r, uint8_t *V, uint8_t *X, int nt);
void scrypt_romix_avx2(uint8_t *B, size_t stride, unsigned count,
    uint32_t N, uint32_t r, uint8_t *V, uint8_t *X, int nt);

#endif
