/* Retry schedules of DESIGN §2 and §5: pure functions, no clock. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "backoff.h"

#define MIN_MS (60u * 1000u)

START_TEST(test_resync_doubles_to_64_minutes)
{
	/* errors 1..7 → 1, 2, 4, 8, 16, 32, 64 min; then it stays at 64. */
	static const uint64_t want[] = { 1, 2, 4, 8, 16, 32, 64, 64, 64 };

	for (unsigned e = 1; e <= sizeof(want) / sizeof(want[0]); e++)
		ck_assert_uint_eq(backoff_resync_ms(MIN_MS, e), want[e - 1] * MIN_MS);
	ck_assert_uint_eq(backoff_resync_ms(MIN_MS, 1000000), 64 * MIN_MS);
}
END_TEST

START_TEST(test_resync_next_try_from_last_try)
{
	/* An injected clock: each failure at last_try schedules
	 * last_try + base × 2^min(errors-1, 6). */
	uint64_t last_try = 1700000000000ull;

	for (unsigned e = 1; e <= 10; e++) {
		uint64_t next = last_try + backoff_resync_ms(MIN_MS, e);

		ck_assert_uint_eq(next - last_try, (uint64_t)MIN_MS << (e - 1 < 6 ? e - 1 : 6));
		last_try = next;
	}
}
END_TEST

START_TEST(test_resync_base_is_configurable)
{
	ck_assert_uint_eq(backoff_resync_ms(1000, 1), 1000);
	ck_assert_uint_eq(backoff_resync_ms(1000, 3), 4000);
	ck_assert_uint_eq(backoff_resync_ms(1000, 0), 1000);
}
END_TEST

START_TEST(test_restart_first_is_immediate_then_doubles)
{
	ck_assert_uint_eq(backoff_restart_ms(0, 30000), 0);
	ck_assert_uint_eq(backoff_restart_ms(1, 30000), 100);
	ck_assert_uint_eq(backoff_restart_ms(2, 30000), 200);
	ck_assert_uint_eq(backoff_restart_ms(3, 30000), 400);
	ck_assert_uint_eq(backoff_restart_ms(9, 30000), 25600);
	ck_assert_uint_eq(backoff_restart_ms(10, 30000), 30000);
	ck_assert_uint_eq(backoff_restart_ms(64, 30000), 30000);
	ck_assert_uint_eq(backoff_restart_ms(5, 50), 50);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("backoff");
	TCase *tc = tcase_create("backoff");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_resync_doubles_to_64_minutes);
	tcase_add_test(tc, test_resync_next_try_from_last_try);
	tcase_add_test(tc, test_resync_base_is_configurable);
	tcase_add_test(tc, test_restart_first_is_immediate_then_doubles);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
