/* human.c: sizes, local ISO-8601 times, durations and "ago" for the tables. */
#include <check.h>
#include <stdlib.h>
#include <time.h>

#include "human.h"

START_TEST(test_sizes)
{
	char b[HUMAN_LEN];

	ck_assert_str_eq(human_size(b, 0), "0 B");
	ck_assert_str_eq(human_size(b, 1023), "1023 B");
	ck_assert_str_eq(human_size(b, 1024), "1.0 KiB");
	ck_assert_str_eq(human_size(b, 5000), "4.9 KiB");
	ck_assert_str_eq(human_size(b, 4u << 20), "4.0 MiB");
	ck_assert_str_eq(human_size(b, (3ull << 30) / 2), "1.5 GiB");
	ck_assert_str_eq(human_size(b, (1ull << 20) - 1), "1.0 MiB");  /* not "1024.0 KiB" */
	ck_assert_str_eq(human_size(b, 10ull << 40), "10.0 TiB");
	ck_assert_str_eq(human_size(b, UINT64_MAX), "16.0 EiB");
}
END_TEST

START_TEST(test_times_are_local_iso8601)
{
	char b[HUMAN_LEN];

	setenv("TZ", "UTC0", 1);
	tzset();
	ck_assert_str_eq(human_time(b, 1796203504911), "2026-12-02T09:25:04+00:00");
	/* A zone east of UTC by 5:30 (POSIX TZ strings count west). */
	setenv("TZ", "IST-5:30", 1);
	tzset();
	ck_assert_str_eq(human_time(b, 1796203504911), "2026-12-02T14:55:04+05:30");
	setenv("TZ", "EST5", 1);
	tzset();
	ck_assert_str_eq(human_time(b, 1796203504911), "2026-12-02T04:25:04-05:00");
	ck_assert_str_eq(human_time(b, 0), "-");
	ck_assert_str_eq(human_time(b, -5), "-");
}
END_TEST

START_TEST(test_durations)
{
	char b[HUMAN_LEN];

	ck_assert_str_eq(human_duration(b, 0), "0 s");
	ck_assert_str_eq(human_duration(b, 49), "49 s");
	ck_assert_str_eq(human_duration(b, 725), "12 min 5 s");
	ck_assert_str_eq(human_duration(b, 3 * 3600 + 12 * 60 + 7), "3 h 12 min");
	ck_assert_str_eq(human_duration(b, 2 * 86400 + 3 * 3600 + 5), "2 d 3 h");
}
END_TEST

START_TEST(test_ago)
{
	char b[HUMAN_LEN];
	int64_t now = 1796203504911;

	ck_assert_str_eq(human_ago(b, now, now), "now");
	ck_assert_str_eq(human_ago(b, now - 999, now), "now");
	ck_assert_str_eq(human_ago(b, now - 12000, now), "12 s ago");
	ck_assert_str_eq(human_ago(b, now + 48500, now), "in 48 s");
	ck_assert_str_eq(human_ago(b, now - 300000, now), "5 min ago");
	ck_assert_str_eq(human_ago(b, now + 2 * 3600000, now), "in 2 h");
	ck_assert_str_eq(human_ago(b, now - 3 * 86400000ll, now), "3 d ago");
	ck_assert_str_eq(human_ago(b, 0, now), "-");
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("human");
	TCase *tc = tcase_create("human");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_sizes);
	tcase_add_test(tc, test_times_are_local_iso8601);
	tcase_add_test(tc, test_durations);
	tcase_add_test(tc, test_ago);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
