/*
 * artifact_id.c: canonical executor params and artifact ids; the bytes
 * are specified in artifact_id.h and must never change for a given
 * (Lua release, memory, instructions), or every prepared artifact would
 * be orphaned.
 */
#include "artifact_id.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <lua.h>

#define ARTIFACT_LUA_VERSION \
	LUA_VERSION_MAJOR "." LUA_VERSION_MINOR "." LUA_VERSION_RELEASE

const char *
artifact_lua_version(void)
{
	return ARTIFACT_LUA_VERSION;
}

size_t
artifact_params_text(const struct artifact_params *p, char out[ARTIFACT_PARAMS_MAX])
{
	int n = snprintf(out, ARTIFACT_PARAMS_MAX,
	    "lua=%s;memory=%" PRIu64 ";instructions=%" PRIu64,
	    ARTIFACT_LUA_VERSION, p->memory_limit, p->instruction_limit);

	/* Two 20-digit numbers and a short version fit by construction. */
	return n < 0 ? 0 : (size_t)n;
}

void
artifact_params_hash(const struct artifact_params *p, uint8_t out[HASH_LEN])
{
	char text[ARTIFACT_PARAMS_MAX];
	size_t n = artifact_params_text(p, text);

	hash_sha256(text, n, out);
}

void
artifact_id_make(const void *src, size_t len, const struct artifact_params *p,
    struct artifact_id *id)
{
	hash_sha256(src, len, id->code);
	artifact_params_hash(p, id->params);
}

void
artifact_id_hex(const struct artifact_id *id, char *out)
{
	hex_encode(id->code, HASH_LEN, out);
	hex_encode(id->params, HASH_LEN, out + HASH_HEX_LEN);
}

int
artifact_id_parse(const char *hex, struct artifact_id *id)
{
	char half[HASH_HEX_LEN + 1];

	if (strlen(hex) != ARTIFACT_ID_HEX_LEN)
		return -1;
	memcpy(half, hex, HASH_HEX_LEN);
	half[HASH_HEX_LEN] = '\0';
	if (hex_decode(half, id->code, HASH_LEN) < 0 ||
	    hex_decode(hex + HASH_HEX_LEN, id->params, HASH_LEN) < 0)
		return -1;
	return 0;
}

void
artifact_id_file_name(const struct artifact_id *id, char *out)
{
	artifact_id_hex(id, out);
	memcpy(out + ARTIFACT_ID_HEX_LEN, ".art", sizeof(".art"));
}
