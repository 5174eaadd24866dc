/* struct err setters: a message may be built from the message it replaces. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "fdio.h"

START_TEST(test_set_from_own_message)
{
	struct err e;

	err_set(&e, "cannot record");
	ck_assert_int_eq(err_set(&e, "segment %d piece %u: %s", 3, 7u, e.msg), -1);
	ck_assert_str_eq(e.msg, "segment 3 piece 7: cannot record");
	errno = ENOSPC;
	err_sys(&e, "write %s", e.msg);
	ck_assert_str_eq(e.msg, "write segment 3 piece 7: cannot record: No space left on device");
	err_wrap(&e, "block %s", "ab12");
	ck_assert_str_eq(e.msg,
	    "block ab12: write segment 3 piece 7: cannot record: No space left on device");
}
END_TEST

START_TEST(test_set_truncates_long_messages)
{
	struct err e;
	char big[2 * ERR_MSG_MAX];

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	err_set(&e, "%s", big);
	ck_assert_uint_eq(strlen(e.msg), ERR_MSG_MAX - 1);
	err_set(&e, "y%s", e.msg);
	ck_assert_uint_eq(strlen(e.msg), ERR_MSG_MAX - 1);
	ck_assert_int_eq(e.msg[0], 'y');
	ck_assert_int_eq(err_set(NULL, "ignored"), -1);
}
END_TEST

/* A full device shows as ENOSPC, never as a stale errno. */
START_TEST(test_write_all_full_device)
{
	char buf[4096] = { 0 };
	int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	errno = 0;
	ck_assert_int_eq(fdio_write_all(fd, buf, sizeof(buf)), -1);
	ck_assert_int_eq(errno, ENOSPC);
	close(fd);
	fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	ck_assert_int_eq(fdio_write_all(fd, buf, sizeof(buf)), 0);
	ck_assert_int_eq(fdio_pwrite_all(fd, buf, sizeof(buf), -1), -1);
	ck_assert_int_eq(errno, EINVAL);
	close(fd);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("err");
	TCase *tc = tcase_create("err");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_set_from_own_message);
	tcase_add_test(tc, test_set_truncates_long_messages);
	tcase_add_test(tc, test_write_all_full_device);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
