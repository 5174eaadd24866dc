/* The frame reader and writer (common/frame.c): byte-at-a-time arrival,
 * size cap before allocation, truncation, descriptors, bounded unpack. */
#include <check.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.pb-c.h"
#include "frame.h"
#include "hash.h"

static char *status_argv[] = { "status" };

/* The admin request "status" in m (r is its body). */
static void
status_msg(Farmd__AdminMsg *m, Farmd__AdminRequest *r)
{
	farmd__admin_msg__init(m);
	farmd__admin_request__init(r);
	r->n_argv = 1;
	r->argv = status_argv;
	m->m_case = FARMD__ADMIN_MSG__M_REQUEST;
	m->request = r;
}

static uint8_t *
pack_status(size_t *len)
{
	Farmd__AdminMsg m;
	Farmd__AdminRequest r;

	status_msg(&m, &r);
	return frame_pack(&m.base, len);
}

START_TEST(test_one_byte_at_a_time)
{
	struct frame_rd rd;
	struct err e;
	size_t len, blen;
	uint8_t *f = pack_status(&len), *body;
	int rc = FRAME_MORE;

	frame_rd_init(&rd, 1024);
	for (size_t i = 0; i < len; i++) {
		uint8_t *p;
		size_t n;

		ck_assert_int_eq(rc, FRAME_MORE);
		frame_rd_space(&rd, &p, &n);
		ck_assert_uint_ge(n, 1);
		*p = f[i];
		rc = frame_rd_commit(&rd, 1, &e);
	}
	ck_assert_int_eq(rc, FRAME_READY);
	body = frame_rd_take(&rd, &blen, NULL, NULL);
	ck_assert_uint_eq(blen, len - FRAME_HDR_LEN);
	ck_assert_mem_eq(body, f + FRAME_HDR_LEN, blen);
	free(body);
	free(f);
}
END_TEST

/* Feeds frame f (len bytes) into rd in one piece. */
static int
feed(struct frame_rd *rd, const uint8_t *f, size_t len)
{
	struct err e;
	size_t off = 0;
	int rc = FRAME_MORE;

	while (off < len && rc == FRAME_MORE) {
		uint8_t *p;
		size_t n;

		frame_rd_space(rd, &p, &n);
		if (n > len - off)
			n = len - off;
		memcpy(p, f + off, n);
		off += n;
		rc = frame_rd_commit(rd, n, &e);
	}
	return rc;
}

static uint8_t *
frame_of(size_t body, uint8_t fill, size_t *len)
{
	uint8_t *f = malloc(FRAME_HDR_LEN + body);

	be32_put(f, (uint32_t)body);
	memset(f + FRAME_HDR_LEN, fill, body);
	*len = FRAME_HDR_LEN + body;
	return f;
}

/* Bodies are read into one kept buffer: frame after frame no new
 * allocation while they fit, a huge one is given back after. */
START_TEST(test_body_buffer_reused)
{
	struct frame_rd rd;
	const uint8_t *b1, *b2, *b3;
	size_t l1, l2, l3, blen;
	uint8_t *f1 = frame_of(100000, 1, &l1), *f2 = frame_of(5000, 2, &l2),
	    *f3 = frame_of(FRAME_RD_KEEP + 1, 3, &l3);

	frame_rd_init(&rd, 64u << 20);
	ck_assert_int_eq(feed(&rd, f1, l1), FRAME_READY);
	b1 = frame_rd_body(&rd, &blen, NULL, NULL);
	ck_assert_uint_eq(blen, 100000);
	ck_assert_int_eq(b1[0], 1);
	ck_assert_int_eq(b1[99999], 1);
	ck_assert_int_eq(feed(&rd, f2, l2), FRAME_READY);
	b2 = frame_rd_body(&rd, &blen, NULL, NULL);
	ck_assert_ptr_eq(b2, b1);
	ck_assert_uint_eq(blen, 5000);
	ck_assert_int_eq(b2[4999], 2);
	ck_assert_int_eq(feed(&rd, f1, l1), FRAME_READY);
	ck_assert_ptr_eq(frame_rd_body(&rd, &blen, NULL, NULL), b1);
	/* Larger than the buffer: grown; larger than FRAME_RD_KEEP: not
	 * kept once a small frame follows. */
	ck_assert_int_eq(feed(&rd, f3, l3), FRAME_READY);
	b3 = frame_rd_body(&rd, &blen, NULL, NULL);
	ck_assert_uint_eq(blen, FRAME_RD_KEEP + 1);
	ck_assert_int_eq(b3[FRAME_RD_KEEP], 3);
	ck_assert_uint_ge(rd.body_cap, FRAME_RD_KEEP + 1);
	ck_assert_int_eq(feed(&rd, f2, l2), FRAME_READY);
	(void)frame_rd_body(&rd, &blen, NULL, NULL);
	ck_assert_uint_lt(rd.body_cap, FRAME_RD_KEEP);
	/* take() still hands a body over, and the reader starts afresh. */
	ck_assert_int_eq(feed(&rd, f2, l2), FRAME_READY);
	{
		uint8_t *own = frame_rd_take(&rd, &blen, NULL, NULL);

		ck_assert_uint_eq(blen, 5000);
		ck_assert_uint_eq(rd.body_cap, 0);
		free(own);
	}
	ck_assert_int_eq(feed(&rd, f1, l1), FRAME_READY);
	ck_assert_int_eq(frame_rd_body(&rd, &blen, NULL, NULL)[0], 1);
	frame_rd_reset(&rd);
	free(f1);
	free(f2);
	free(f3);
}
END_TEST

START_TEST(test_pack_into_kept_buffer)
{
	Farmd__AdminMsg m;
	Farmd__AdminRequest r;
	uint8_t *buf = NULL, *was, *f;
	size_t cap = 0, len, flen;

	f = pack_status(&flen);
	status_msg(&m, &r);
	ck_assert_int_eq(frame_pack_into(&m.base, &buf, &cap, &len), 0);
	ck_assert_uint_eq(len, flen);
	ck_assert_mem_eq(buf, f, len);
	was = buf;
	ck_assert_int_eq(frame_pack_into(&m.base, &buf, &cap, &len), 0);
	ck_assert_ptr_eq(buf, was);
	ck_assert_uint_ge(cap, len);
	free(buf);
	free(f);
}
END_TEST

START_TEST(test_oversize_refused_before_allocation)
{
	struct frame_rd rd;
	struct err e;
	uint8_t *p;
	size_t n;

	frame_rd_init(&rd, 100);
	frame_rd_space(&rd, &p, &n);
	ck_assert_uint_eq(n, 4);
	be32_put(p, 0xffffffffu);
	ck_assert_int_eq(frame_rd_commit(&rd, 4, &e), FRAME_ERROR);
	ck_assert_ptr_null(rd.body);
	ck_assert_ptr_nonnull(strstr(e.msg, "exceeds the maximum of 100"));
	frame_rd_reset(&rd);
}
END_TEST

START_TEST(test_zero_length_frame)
{
	struct frame_rd rd;
	struct err e;
	uint8_t *p, *body;
	size_t n, len;

	frame_rd_init(&rd, 100);
	frame_rd_space(&rd, &p, &n);
	memset(p, 0, 4);
	ck_assert_int_eq(frame_rd_commit(&rd, 4, &e), FRAME_READY);
	body = frame_rd_take(&rd, &len, NULL, NULL);
	ck_assert_ptr_nonnull(body);
	ck_assert_uint_eq(len, 0);
	free(body);
}
END_TEST

START_TEST(test_socket_roundtrip_with_descriptor_and_truncation)
{
	int sv[2], fds[FRAME_MAX_FDS], nfds = 0, devnull = open("/dev/null", O_RDONLY);
	struct err e;
	size_t len, blen;
	uint8_t *f = pack_status(&len), *body;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ck_assert_int_eq(frame_send(sv[0], f, len, &devnull, 1, &e), 0);
	ck_assert_int_eq(frame_recv(sv[1], 1024, &body, &blen, fds, &nfds, &e), 0);
	ck_assert_int_eq(nfds, 1);
	ck_assert_int_ge(fds[0], 0);
	ck_assert_mem_eq(body, f + FRAME_HDR_LEN, blen);
	close(fds[0]);
	free(body);
	/* Half a frame, then the peer goes away: an error, not EOF. */
	ck_assert_int_eq(write(sv[0], f, len / 2), (ssize_t)(len / 2));
	close(sv[0]);
	ck_assert_int_eq(frame_recv(sv[1], 1024, &body, &blen, fds, &nfds, &e), -1);
	ck_assert_ptr_nonnull(strstr(e.msg, "truncated frame"));
	close(sv[1]);
	close(devnull);
	free(f);
}
END_TEST

START_TEST(test_clean_eof_between_frames)
{
	int sv[2], fds[FRAME_MAX_FDS], nfds = 0;
	struct err e;
	uint8_t *body;
	size_t blen;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	close(sv[0]);
	ck_assert_int_eq(frame_recv(sv[1], 1024, &body, &blen, fds, &nfds, &e), 1);
	close(sv[1]);
}
END_TEST

START_TEST(test_unpack_garbage_and_bounds)
{
	static const uint8_t garbage[16] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	/* A request claiming a 100 MB argv string in a 6-byte body. */
	static const uint8_t lying[] = { 0x12, 0x04, 0x0a, 0x80, 0x80, 0x80 };
	struct frame_alloc fa;
	struct err e;

	ck_assert_ptr_null(frame_unpack(&farmd__admin_msg__descriptor, garbage,
	    sizeof(garbage), &fa, &e));
	ck_assert_ptr_nonnull(strstr(e.msg, "do not unpack"));
	ck_assert_ptr_null(frame_unpack(&farmd__admin_msg__descriptor, lying, sizeof(lying),
	    &fa, &e));
	ck_assert_uint_le(fa.used, fa.limit);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("frame");
	TCase *tc = tcase_create("frame");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_one_byte_at_a_time);
	tcase_add_test(tc, test_body_buffer_reused);
	tcase_add_test(tc, test_pack_into_kept_buffer);
	tcase_add_test(tc, test_oversize_refused_before_allocation);
	tcase_add_test(tc, test_zero_length_frame);
	tcase_add_test(tc, test_socket_roundtrip_with_descriptor_and_truncation);
	tcase_add_test(tc, test_clean_eof_between_frames);
	tcase_add_test(tc, test_unpack_garbage_and_bounds);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
