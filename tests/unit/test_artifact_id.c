/* The artifact id bytes of common/artifact_id.h: fixed vectors (computed
 * with Python's hashlib), so a change of the canonical text is caught. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "artifact_id.h"

static const struct artifact_params defaults = { 64u << 20, 100000000 };

START_TEST(test_params_text)
{
	char text[ARTIFACT_PARAMS_MAX];
	struct artifact_params big = { UINT64_MAX, UINT64_MAX };
	size_t n;

	ck_assert_str_eq(artifact_lua_version(), "5.4.4");
	n = artifact_params_text(&defaults, text);
	ck_assert_str_eq(text, "lua=5.4.4;memory=67108864;instructions=100000000");
	ck_assert_uint_eq(n, strlen(text));
	n = artifact_params_text(&big, text);
	ck_assert_uint_eq(n, strlen(text));
	ck_assert_str_eq(text, "lua=5.4.4;memory=18446744073709551615;"
	    "instructions=18446744073709551615");
}
END_TEST

START_TEST(test_id_hex_and_file_name)
{
	static const char src[] = "function validate(b) return true end";
	struct artifact_id id, back;
	struct artifact_params other = defaults;
	char hex[ARTIFACT_ID_HEX_LEN + 1], name[ARTIFACT_FILE_NAME_MAX];
	uint8_t p2[HASH_LEN];

	artifact_id_make(src, strlen(src), &defaults, &id);
	artifact_id_hex(&id, hex);
	ck_assert_str_eq(hex,
	    "9794cf40e8363db2481a42cb345bb7fd5c49c2973f9e1e1d5e2521552a12ecc2"
	    "9a007b68ad61e38d3e7ec9ab0afe346a030f35f65299450c9aa8b43835bd988a");
	artifact_id_file_name(&id, name);
	ck_assert_uint_eq(strlen(name), 132);
	ck_assert_int_eq(strncmp(name, hex, ARTIFACT_ID_HEX_LEN), 0);
	ck_assert_str_eq(name + ARTIFACT_ID_HEX_LEN, ".art");

	ck_assert_int_eq(artifact_id_parse(hex, &back), 0);
	ck_assert_mem_eq(&back, &id, sizeof(id));
	hex[5] = 'A';   /* upper case is read too */
	ck_assert_int_eq(artifact_id_parse(hex, &back), 0);
	hex[5] = 'g';
	ck_assert_int_eq(artifact_id_parse(hex, &back), -1);
	hex[5] = '0';
	hex[127] = '\0';
	ck_assert_int_eq(artifact_id_parse(hex, &back), -1);

	/* A different limit is a different params hash, the same code hash. */
	other.instruction_limit++;
	artifact_params_hash(&other, p2);
	ck_assert(memcmp(p2, id.params, HASH_LEN) != 0);
	other = defaults;
	other.memory_limit--;
	artifact_params_hash(&other, p2);
	ck_assert(memcmp(p2, id.params, HASH_LEN) != 0);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("artifact_id");
	TCase *tc = tcase_create("artifact_id");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_params_text);
	tcase_add_test(tc, test_id_hex_and_file_name);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
