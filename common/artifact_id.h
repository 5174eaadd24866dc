/*
 * artifact_id.h: the id of a validation-code artifact (DESIGN.md §7).
 *
 * An artifact is the stripped bytecode one compile worker made of one
 * source under one set of executor params, so its id is the pair
 *
 *   code_sha256   = SHA-256 of the source bytes exactly as the block
 *                   carries them (no normalisation);
 *   params_sha256 = SHA-256 of the canonical params text, the ASCII bytes
 *
 *       "lua=" MAJOR "." MINOR "." RELEASE ";memory=" M ";instructions=" I
 *
 *     with the Lua version of lua.h at build time and M, I the byte and
 *     instruction budgets in decimal without leading zeros, no NUL, no
 *     newline: e.g. "lua=5.4.4;memory=67108864;instructions=100000000".
 *
 * Changing either budget in config (or the Lua release) changes the id, so
 * new artifacts get prepared and old ones age out by pruning.
 *
 * Text form (farmctl, logs, file names): hex(code_sha256) immediately
 * followed by hex(params_sha256), 128 lowercase hex characters, no
 * separator; the file is artifacts/<hex id>.art.
 */
#ifndef FARMD_ARTIFACT_ID_H
#define FARMD_ARTIFACT_ID_H

#include <stddef.h>
#include <stdint.h>

#include "hash.h"

#define ARTIFACT_ID_HEX_LEN (2 * HASH_HEX_LEN)
/* Longest canonical params text, with its NUL. */
#define ARTIFACT_PARAMS_MAX 96
/* "<128 hex>.art" with its NUL. */
#define ARTIFACT_FILE_NAME_MAX (ARTIFACT_ID_HEX_LEN + sizeof(".art"))

struct artifact_params {
	uint64_t memory_limit;          /* bytes a lua_State may hold */
	uint64_t instruction_limit;     /* VM instructions per execution */
};

struct artifact_id {
	uint8_t code[HASH_LEN];
	uint8_t params[HASH_LEN];
};

/* "5.4.4": the Lua release the worker is built against. */
const char *artifact_lua_version(void);

/* Writes the canonical params text into out; returns its length. */
size_t artifact_params_text(const struct artifact_params *p,
    char out[ARTIFACT_PARAMS_MAX]);
void artifact_params_hash(const struct artifact_params *p, uint8_t out[HASH_LEN]);

void artifact_id_make(const void *src, size_t len, const struct artifact_params *p,
    struct artifact_id *id);

/* out: ARTIFACT_ID_HEX_LEN + 1 bytes. */
void artifact_id_hex(const struct artifact_id *id, char *out);
/* Exactly ARTIFACT_ID_HEX_LEN hex characters (either case); -1 otherwise. */
int artifact_id_parse(const char *hex, struct artifact_id *id);
/* "<hex id>.art"; out: ARTIFACT_FILE_NAME_MAX bytes. */
void artifact_id_file_name(const struct artifact_id *id, char *out);

#endif
