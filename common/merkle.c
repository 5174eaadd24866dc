/*
 * merkle.c: RFC 6962-style SHA-256 Merkle trees and the segment header
 * hash (DESIGN.md §4).
 *
 * The root is computed in one left-to-right pass with a stack of pending
 * subtree roots (one slot per level), so a 1 MiB piece (32768 chunks)
 * needs no scratch buffer and no heap allocation per hash: one EVP_MD_CTX
 * is reused for every leaf and node.
 */
#include "merkle.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define MERKLE_MAX_LEVELS 65	/* size_t chunk counts: at most 2^63 leaves */

struct merkle_hasher {
	EVP_MD *md;
	EVP_MD_CTX *ctx;
};

static void
hasher_digest(struct merkle_hasher *h, const uint8_t *buf, size_t len,
    uint8_t out[HASH_LEN])
{
	/* Failure here means OpenSSL itself is broken (or out of memory in a
	 * context that was already allocated): abort rather than return a
	 * root that was never computed (hash.c does the same). */
	if (EVP_DigestInit_ex(h->ctx, h->md, NULL) != 1 ||
	    EVP_DigestUpdate(h->ctx, buf, len) != 1 ||
	    EVP_DigestFinal_ex(h->ctx, out, NULL) != 1)
		abort();
}

/* leaf = H(0x00 || chunk) */
static void
hash_leaf(struct merkle_hasher *h, const uint8_t chunk[HASH_LEN],
    uint8_t out[HASH_LEN])
{
	uint8_t buf[1 + HASH_LEN];

	buf[0] = 0x00;
	memcpy(buf + 1, chunk, HASH_LEN);
	hasher_digest(h, buf, sizeof(buf), out);
}

/* node = H(0x01 || left || right) */
static void
hash_node(struct merkle_hasher *h, const uint8_t left[HASH_LEN],
    const uint8_t right[HASH_LEN], uint8_t out[HASH_LEN])
{
	uint8_t buf[1 + 2 * HASH_LEN];

	buf[0] = 0x01;
	memcpy(buf + 1, left, HASH_LEN);
	memcpy(buf + 1 + HASH_LEN, right, HASH_LEN);
	hasher_digest(h, buf, sizeof(buf), out);
}

int
merkle_root(const uint8_t *data, size_t nchunks, uint8_t root[HASH_LEN])
{
	uint8_t stack[MERKLE_MAX_LEVELS][HASH_LEN];
	uint8_t cur[HASH_LEN];
	struct merkle_hasher h;
	unsigned top = 0;

	if (nchunks == 0 || (nchunks & (nchunks - 1)) != 0)
		return -1;

	h.md = EVP_MD_fetch(NULL, "SHA256", NULL);
	h.ctx = EVP_MD_CTX_new();
	if (h.md == NULL || h.ctx == NULL)
		abort();

	/*
	 * Leaf i is pushed at level 0; while i has a trailing 1 bit at the
	 * current level, the pending left sibling at that level is combined
	 * with it.  Since nchunks is a power of two, the last leaf folds
	 * everything into the single slot at level log2(nchunks).
	 */
	for (size_t i = 0; i < nchunks; i++) {
		unsigned lvl = 0;
		size_t k = i;

		hash_leaf(&h, data + i * HASH_LEN, cur);
		while (k & 1) {
			hash_node(&h, stack[lvl], cur, cur);
			lvl++;
			k >>= 1;
		}
		memcpy(stack[lvl], cur, HASH_LEN);
		top = lvl;
	}
	memcpy(root, stack[top], HASH_LEN);

	EVP_MD_CTX_free(h.ctx);
	EVP_MD_free(h.md);
	return 0;
}

void
merkle_segment_header_hash(uint64_t index, const uint8_t root[HASH_LEN],
    const uint8_t prev_header_hash[HASH_LEN], uint64_t last_height,
    uint8_t out[HASH_LEN])
{
	uint8_t buf[8 + HASH_LEN + HASH_LEN + 8];

	be64_put(buf, index);
	memcpy(buf + 8, root, HASH_LEN);
	memcpy(buf + 8 + HASH_LEN, prev_header_hash, HASH_LEN);
	be64_put(buf + 8 + 2 * HASH_LEN, last_height);
	hash_sha256(buf, sizeof(buf), out);
}
