/* The prune choice of DESIGN §7: a pure function, the clock a parameter. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "artifact_prune.h"

#define H (3600u * 1000u)
#define NOW (1700000000000ull)

START_TEST(test_under_the_limit_nothing_goes)
{
	struct artifact_prune_row r[] = { { 100, NOW - 10 * H }, { 200, NOW - 20 * H } };
	size_t out[2];

	ck_assert_uint_eq(artifact_prune_choose(r, 2, NOW, 300, 0, out), 0);
	ck_assert_uint_eq(artifact_prune_choose(r, 0, NOW, 0, 0, out), 0);
}
END_TEST

START_TEST(test_least_recently_needed_first_until_under)
{
	struct artifact_prune_row r[] = {
		{ 600, NOW - 1 * H }, { 600, NOW - 5 * H }, { 600, NOW - 3 * H }, { 600, NOW - 2 * H },
	};
	size_t out[4];

	/* 2400 bytes, limit 1024: the two oldest (1 then 2) bring it to 1200,
	 * a third (3) to 600. */
	ck_assert_uint_eq(artifact_prune_choose(r, 4, NOW, 1024, 0, out), 3);
	ck_assert_uint_eq(out[0], 1);
	ck_assert_uint_eq(out[1], 2);
	ck_assert_uint_eq(out[2], 3);
	/* Limit 1200: two go. */
	ck_assert_uint_eq(artifact_prune_choose(r, 4, NOW, 1200, 0, out), 2);
}
END_TEST

START_TEST(test_never_one_needed_within_min_stale)
{
	struct artifact_prune_row r[] = {
		{ 600, NOW - 1 * H }, { 600, NOW - 5 * H }, { 600, NOW - 3 * H },
	};
	size_t out[3];

	ck_assert_uint_eq(artifact_prune_choose(r, 3, NOW, 0, 24 * H, out), 0);
	/* Stale after 4 h: only the 5 h old one. */
	ck_assert_uint_eq(artifact_prune_choose(r, 3, NOW, 0, 4 * H, out), 1);
	ck_assert_uint_eq(out[0], 1);
	/* The same rows later: the clock decides, so 2 h on, two go. */
	ck_assert_uint_eq(artifact_prune_choose(r, 3, NOW + 2 * H, 0, 4 * H, out), 2);
	/* Needed exactly min_stale ago is stale; a future time is fresh. */
	ck_assert_uint_eq(artifact_prune_choose(r, 3, NOW, 0, 3 * H, out), 2);
	r[1].last_needed_ms = NOW + H;
	r[2].last_needed_ms = NOW + H;
	r[0].last_needed_ms = NOW + H;
	ck_assert_uint_eq(artifact_prune_choose(r, 3, NOW, 0, 0, out), 0);
}
END_TEST

START_TEST(test_ties_go_by_index)
{
	struct artifact_prune_row r[] = { { 10, NOW - H }, { 10, NOW - H }, { 10, NOW - H } };
	size_t out[3];

	ck_assert_uint_eq(artifact_prune_choose(r, 3, NOW, 15, 0, out), 2);
	ck_assert_uint_eq(out[0], 0);
	ck_assert_uint_eq(out[1], 1);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("artifact_prune");
	TCase *tc = tcase_create("artifact_prune");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_under_the_limit_nothing_goes);
	tcase_add_test(tc, test_least_recently_needed_first_until_under);
	tcase_add_test(tc, test_never_one_needed_within_min_stale);
	tcase_add_test(tc, test_ties_go_by_index);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
