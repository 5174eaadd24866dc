/* An encode worker's shared buffer, farmd's side (supervisor/wbuf.c):
 * the seals, where jobs go, and the checks on a worker's answer. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "hash_int.h"
#include "wbuf.h"

#define SIZE (1u << 20)

START_TEST(test_sealed_and_mapped)
{
	struct wbuf b;
	struct err e;
	int fd, seals;

	ck_assert_int_eq(wbuf_create(&b, SIZE, &fd, &e), 0);
	ck_assert_ptr_nonnull(b.map);
	ck_assert_uint_eq(b.size, SIZE);
	seals = fcntl(fd, F_GET_SEALS);
	ck_assert_int_eq(seals, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
	/* A worker holding the fd can neither shrink it under our mapping
	 * nor lift the seals. */
	ck_assert_int_eq(ftruncate(fd, SIZE / 2), -1);
	ck_assert_int_eq(errno, EPERM);
	ck_assert_int_eq(ftruncate(fd, SIZE * 2), -1);
	ck_assert_int_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), -1);
	ck_assert_int_eq(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	b.map[0] = 1;
	b.map[SIZE - 1] = 2;
	close(fd);
	wbuf_free(&b);
	ck_assert_ptr_null(b.map);
	wbuf_free(&b);          /* twice is a no-op */
}
END_TEST

static void
job(struct wbuf_job *j, uint8_t *buf, size_t len, int echo)
{
	memset(j, 0, sizeof(*j));
	j->buf = buf;
	j->len = len;
	j->echo = echo;
	j->piece_len = (uint32_t)len;
	j->count = 1;
}

START_TEST(test_put_takes_slots_by_turns)
{
	struct wbuf b;
	struct wbuf_job j;
	struct err e;
	uint8_t *in = malloc(SIZE);
	size_t slot = SIZE / 3 / 4096 * 4096;
	int fd;

	ck_assert_int_eq(wbuf_create(&b, SIZE, &fd, &e), 0);
	close(fd);
	memset(in, 0x42, SIZE);
	job(&j, in, 4096, 0);
	ck_assert(wbuf_fits_slot(&b, 4096));
	wbuf_put(&b, &j);
	ck_assert_uint_eq(j.off, 0);
	ck_assert_int_eq(b.map[0], 0x42);
	wbuf_put(&b, &j);
	ck_assert_uint_eq(j.off, slot);
	ck_assert_int_eq(b.map[slot + 4095], 0x42);
	wbuf_put(&b, &j);
	ck_assert_uint_eq(j.off, 2 * slot);
	wbuf_put(&b, &j);
	ck_assert_uint_eq(j.off, 0);
	/* A whole slot still fits; one byte more runs alone, from 0. */
	job(&j, in, slot, 0);
	ck_assert(wbuf_fits_slot(&b, slot));
	wbuf_put(&b, &j);
	ck_assert_uint_eq(j.off, slot);
	job(&j, in, slot + 1, 0);
	ck_assert(!wbuf_fits_slot(&b, slot + 1));
	wbuf_put(&b, &j);
	ck_assert_uint_eq(j.off, 0);
	wbuf_put(&b, &j);
	ck_assert_uint_eq(j.off, 0);
	job(&j, in, SIZE, 1);
	wbuf_put(&b, &j);
	ck_assert_uint_eq(j.off, 0);
	ck_assert_int_eq(b.map[SIZE - 1], 0x42);
	wbuf_free(&b);
	free(in);
}
END_TEST

static void
result(Farmd__JobResult *res, Farmd__EncodeResult *er, Farmd__EchoJob *echo, int is_echo,
    uint64_t off, uint64_t len, uint64_t sum)
{
	farmd__job_result__init(res);
	farmd__encode_result__init(er);
	farmd__echo_job__init(echo);
	if (is_echo) {
		echo->buf_offset = off;
		echo->length = len;
		echo->checksum = sum;
		res->body_case = FARMD__JOB_RESULT__BODY_ECHO;
		res->echo = echo;
	} else {
		er->buf_offset = off;
		er->length = len;
		er->checksum = sum;
		res->body_case = FARMD__JOB_RESULT__BODY_ENCODE;
		res->encode = er;
	}
}

START_TEST(test_answer_checked_before_read)
{
	struct wbuf b;
	struct wbuf_job j;
	Farmd__JobResult res;
	Farmd__EncodeResult er;
	Farmd__EchoJob echo;
	struct err e;
	uint8_t in[8192], keep[8192];
	int fd;

	ck_assert_int_eq(wbuf_create(&b, SIZE, &fd, &e), 0);
	close(fd);
	memset(in, 0x11, sizeof(in));
	memcpy(keep, in, sizeof(in));
	job(&j, in, sizeof(in), 0);
	wbuf_put(&b, &j);
	memset(b.map + j.off, 0x77, sizeof(in));       /* the worker's answer */

	/* Outside the buffer, wrapping, not the job's range, another kind:
	 * refused, and the caller's input is untouched. */
	const uint64_t bad[][2] = {
		{ SIZE - 4096, 8192 }, { SIZE + 1, 0 }, { UINT64_MAX, 2 },
		{ 4096, UINT64_MAX }, { 0, sizeof(in) - 1 }, { 4096, sizeof(in) },
		{ 0, sizeof(in) + 1 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		result(&res, &er, &echo, 0, bad[i][0], bad[i][1], 0);
		ck_assert_int_eq(wbuf_answer(&b, &j, &res, 1, &e), WBUF_BAD);
		ck_assert_mem_eq(in, keep, sizeof(in));
	}
	ck_assert_ptr_nonnull(strstr(e.msg, "job's are"));
	result(&res, &er, &echo, 0, SIZE, 1, 0);
	ck_assert_int_eq(wbuf_answer(&b, &j, &res, 1, &e), WBUF_BAD);
	ck_assert_ptr_nonnull(strstr(e.msg, "outside its 1048576-byte buffer"));
	result(&res, &er, &echo, 1, j.off, sizeof(in), 0);
	ck_assert_int_eq(wbuf_answer(&b, &j, &res, 1, &e), WBUF_BAD);
	ck_assert_mem_eq(in, keep, sizeof(in));
	/* Pieces as bytes in a buffer job's answer: refused too. */
	result(&res, &er, &echo, 0, j.off, sizeof(in), hash_fast64(b.map + j.off, sizeof(in)));
	er.n_pieces = 1;
	ck_assert_int_eq(wbuf_answer(&b, &j, &res, 1, &e), WBUF_BAD);
	er.n_pieces = 0;

	/* The right range: checked but not copied for a cancelled job… */
	ck_assert_int_eq(wbuf_answer(&b, &j, &res, 0, &e), WBUF_OK);
	ck_assert_mem_eq(in, keep, sizeof(in));
	/* …and copied once otherwise. */
	ck_assert_int_eq(wbuf_answer(&b, &j, &res, 1, &e), WBUF_OK);
	for (size_t i = 0; i < sizeof(in); i++)
		ck_assert_int_eq(in[i], 0x77);
	/* One byte changed after the answer was sent (its checksum): seen. */
	b.map[j.off + 5000] ^= 1;
	ck_assert_int_eq(wbuf_answer(&b, &j, &res, 1, &e), WBUF_CHANGED);
	ck_assert_str_eq(e.msg, "wrote into its buffer while answering");
	wbuf_free(&b);
}
END_TEST

/* A writer that never stops (a hostile worker after its answer): the copy
 * does not match the answer's checksum, and that is reported. */
START_TEST(test_scribble_while_answering_is_caught)
{
	struct wbuf b;
	struct wbuf_job j;
	Farmd__JobResult res;
	Farmd__EncodeResult er;
	Farmd__EchoJob echo;
	struct err e;
	uint8_t *in = malloc(SIZE / 2);
	struct timespec t0, t;
	int fd, status, rc = WBUF_OK;
	pid_t pid;

	ck_assert_int_eq(wbuf_create(&b, SIZE, &fd, &e), 0);
	memset(in, 0, SIZE / 2);
	job(&j, in, SIZE / 2, 0);
	wbuf_put(&b, &j);
	/* The answer as sent: what the mapping holds before the writer starts. */
	result(&res, &er, &echo, 0, j.off, SIZE / 2, hash_fast64(b.map + j.off, SIZE / 2));
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		uint8_t *p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

		for (uint8_t v = 1;; v++)
			memset(p, v, SIZE / 2);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		rc = wbuf_answer(&b, &j, &res, 1, &e);
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while (rc == WBUF_OK && t.tv_sec - t0.tv_sec < 10);
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	ck_assert_int_eq(rc, WBUF_CHANGED);
	ck_assert_str_eq(e.msg, "wrote into its buffer while answering");
	close(fd);
	wbuf_free(&b);
	free(in);
}
END_TEST

START_TEST(test_checksum)
{
	uint8_t a[4096], c[4096];

	/* No period: no two stripes or blocks alike. */
	for (size_t i = 0; i < sizeof(a); i++)
		a[i] = (uint8_t)((i * 7 + 3) ^ (i >> 8));
	memcpy(c, a, sizeof(a));
	ck_assert_uint_eq(hash_fast64(a, sizeof(a)), hash_fast64(c, sizeof(c)));
	/* Every single-bit change, in a word and in the tail, and a swap of
	 * two words, changes it. */
	for (size_t i = 0; i < sizeof(a); i += 37) {
		c[i] ^= 0x10;
		ck_assert_uint_ne(hash_fast64(a, sizeof(a)), hash_fast64(c, sizeof(c)));
		c[i] ^= 0x10;
	}
	c[4093] ^= 1;
	ck_assert_uint_ne(hash_fast64(a, 4095), hash_fast64(c, 4095));
	c[4093] ^= 1;
	memcpy(c, a + 8, 8);
	memcpy(c + 8, a, 8);
	ck_assert_uint_ne(hash_fast64(a, sizeof(a)), hash_fast64(c, sizeof(c)));
	ck_assert_uint_ne(hash_fast64(a, 100), hash_fast64(a, 101));
	/* Two stripes of a block swapped, and two blocks swapped. */
	memcpy(c, a, sizeof(a));
	memcpy(c, a + 64, 64);
	memcpy(c + 64, a, 64);
	ck_assert_uint_ne(hash_fast64(a, sizeof(a)), hash_fast64(c, sizeof(c)));
	memcpy(c, a, sizeof(a));
	memcpy(c, a + 1024, 1024);
	memcpy(c + 1024, a, 1024);
	ck_assert_uint_ne(hash_fast64(a, sizeof(a)), hash_fast64(c, sizeof(c)));
}
END_TEST

/* The AVX-512 blocks give what the portable ones give, and the copy forms
 * what hashing the copy gives (copying every byte and no other), at every
 * length class (empty, tail only, stripes only, blocks and a tail, past
 * the portable copy's chunk, megabytes) and alignment. */
START_TEST(test_checksum_kernels_agree)
{
	static const size_t lens[] = { 0, 1, 7, 8, 63, 64, 65, 1000, 1023, 1024, 1025,
		2048, 16383, 65536 + 13, 1 << 20, (3 << 20) - 1 };
	size_t max = 3 << 20;
	uint8_t *buf = malloc(max + 8), *dst = malloc(max + 16);
	uint64_t x = 0x0123456789abcdefULL;

	ck_assert_ptr_nonnull(buf);
	ck_assert_ptr_nonnull(dst);
	for (size_t i = 0; i < max + 8; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
	if (!hash_simd())
		fprintf(stderr, "test_checksum_kernels_agree: no AVX-512F here, portable only\n");
	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++)
		for (size_t off = 0; off < 8; off++) {
			uint64_t want = hash_fast64_with(buf + off, lens[k], 0);

			ck_assert_uint_eq(hash_fast64(buf + off, lens[k]), want);
			if (hash_simd())
				ck_assert_uint_eq(hash_fast64_with(buf + off, lens[k], 1), want);
			/* The copy forms: the same checksum, and the bytes. */
			for (int simd = 0; simd <= hash_simd(); simd++) {
				memset(dst, 0x5a, 7 - off + lens[k] + 1);
				ck_assert_uint_eq(hash_fast64_copy_with(dst + 7 - off, buf + off,
				    lens[k], simd), want);
				ck_assert_mem_eq(dst + 7 - off, buf + off, lens[k]);
				ck_assert_uint_eq(dst[7 - off + lens[k]], 0x5a);
			}
		}
	free(dst);
	free(buf);
}
END_TEST

START_TEST(test_job_frame)
{
	struct wbuf_job j;
	uint8_t *out = NULL, in[64];
	size_t cap = 0, len;
	struct frame_alloc fa;
	Farmd__WorkerMsg *m;
	struct err e;

	job(&j, in, sizeof(in), 0);
	memset(j.sector_id, 0xab, HASH_LEN);
	j.first_offset = 7;
	j.params = (struct encode_params){ 1024, 8, 1 };
	j.piece_len = 32;
	j.count = 2;
	j.off = 4096;
	ck_assert_int_eq(wbuf_job_frame(&j, 42, &out, &cap, &len), 0);
	ck_assert_uint_ge(cap, len);
	m = (Farmd__WorkerMsg *)frame_unpack(&farmd__worker_msg__descriptor,
	    out + FRAME_HDR_LEN, len - FRAME_HDR_LEN, &fa, &e);
	ck_assert_ptr_nonnull(m);
	ck_assert_int_eq(m->m_case, FARMD__WORKER_MSG__M_JOB);
	ck_assert_uint_eq(m->job->id, 42);
	ck_assert_int_eq(m->job->body_case, FARMD__JOB__BODY_ENCODE);
	ck_assert_uint_eq(m->job->encode->buf_offset, 4096);
	ck_assert_uint_eq(m->job->encode->count, 2);
	ck_assert_uint_eq(m->job->encode->piece_len, 32);
	ck_assert_uint_eq(m->job->encode->n_pieces, 0);
	ck_assert_uint_eq(m->job->encode->first_offset, 7);
	ck_assert_uint_eq(m->job->encode->sector_id.len, HASH_LEN);
	protobuf_c_message_free_unpacked(&m->base, &fa.pb);
	/* The buffer is kept for the next frame. */
	{
		uint8_t *was = out;

		ck_assert_int_eq(wbuf_job_frame(&j, 43, &out, &cap, &len), 0);
		ck_assert_ptr_eq(out, was);
	}
	free(out);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("wbuf");
	TCase *tc = tcase_create("wbuf");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_sealed_and_mapped);
	tcase_add_test(tc, test_put_takes_slots_by_turns);
	tcase_add_test(tc, test_answer_checked_before_read);
	tcase_add_test(tc, test_scribble_while_answering_is_caught);
	tcase_add_test(tc, test_job_frame);
	tcase_add_test(tc, test_checksum);
	tcase_add_test(tc, test_checksum_kernels_agree);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
