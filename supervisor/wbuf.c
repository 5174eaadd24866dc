/*
 * wbuf.c: an encode worker's shared buffer (wbuf.h says why it is safe).
 *
 * Invariants:
 *  - the memfd is sealed F_SEAL_GROW|F_SEAL_SHRINK|F_SEAL_SEAL before it
 *    is mapped or passed: a worker cannot truncate it under our mapping
 *    (which would turn our reads into SIGBUS) nor loosen the seals;
 *  - a range from the worker is compared with the job's own, in 64-bit
 *    arithmetic that cannot wrap, before the mapping is touched.
 */
#include "wbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "frame.h"

int
wbuf_create(struct wbuf *b, size_t size, int *fd, struct err *e)
{
	int mfd;

	memset(b, 0, sizeof(*b));
	mfd = memfd_create("farmd-encode-buffer", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0)
		return err_sys(e, "encode buffer: memfd_create");
	if (ftruncate(mfd, (off_t)size) < 0) {
		err_sys(e, "encode buffer: ftruncate to %zu bytes", size);
		close(mfd);
		return -1;
	}
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0) {
		err_sys(e, "encode buffer: sealing");
		close(mfd);
		return -1;
	}
	/* Populated now, once per worker: no first-touch faults while plotting. */
	b->map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, mfd, 0);
	if (b->map == MAP_FAILED) {
		b->map = NULL;
		err_sys(e, "encode buffer: mmap of %zu bytes", size);
		close(mfd);
		return -1;
	}
	b->size = size;
	b->slot = size / WBUF_SLOTS / 4096 * 4096;
	*fd = mfd;
	return 0;
}

void
wbuf_free(struct wbuf *b)
{
	if (b->map != NULL)
		munmap(b->map, b->size);
	b->map = NULL;
	b->size = 0;
}

int
wbuf_fits_slot(const struct wbuf *b, size_t len)
{
	return len <= b->slot;
}

void
wbuf_place(struct wbuf *b, struct wbuf_job *j)
{
	/* Slots by turns (wbuf.h: a worker still writing over its last
	 * answer then misses the two inputs it may hold). */
	if (wbuf_fits_slot(b, j->len))
		j->off = (b->placed++ % WBUF_SLOTS) * b->slot;
	else
		j->off = 0;
}

void
wbuf_put(struct wbuf *b, struct wbuf_job *j)
{
	wbuf_place(b, j);
	memcpy(b->map + j->off, j->buf, j->len);
}

int
wbuf_job_frame(const struct wbuf_job *j, uint64_t id, uint8_t **out, size_t *cap,
    size_t *len)
{
	Farmd__WorkerMsg msg = FARMD__WORKER_MSG__INIT;
	Farmd__Job job = FARMD__JOB__INIT;
	Farmd__EncodeJob ej = FARMD__ENCODE_JOB__INIT;
	Farmd__EchoJob echo = FARMD__ECHO_JOB__INIT;

	job.id = id;
	if (j->echo) {
		echo.buf_offset = j->off;
		echo.length = j->len;
		job.body_case = FARMD__JOB__BODY_ECHO;
		job.echo = &echo;
	} else {
		ej.sector_id.data = (uint8_t *)j->sector_id;
		ej.sector_id.len = HASH_LEN;
		ej.first_offset = j->first_offset;
		ej.scrypt_n = j->params.n;
		ej.scrypt_r = j->params.r;
		ej.scrypt_p = j->params.p;
		ej.decode = j->decode;
		ej.buf_offset = j->off;
		ej.piece_len = j->piece_len;
		ej.count = j->count;
		job.body_case = FARMD__JOB__BODY_ENCODE;
		job.encode = &ej;
	}
	msg.m_case = FARMD__WORKER_MSG__M_JOB;
	msg.job = &job;
	return frame_pack_into(&msg.base, out, cap, len);
}

int
wbuf_answer(const struct wbuf *b, const struct wbuf_job *j, const Farmd__JobResult *res,
    int copy, struct err *e)
{
	uint64_t off, len, sum;

	if (j->echo && res->body_case == FARMD__JOB_RESULT__BODY_ECHO) {
		off = res->echo->buf_offset;
		len = res->echo->length;
		sum = res->echo->checksum;
	} else if (!j->echo && res->body_case == FARMD__JOB_RESULT__BODY_ENCODE &&
	    res->encode->n_pieces == 0) {
		off = res->encode->buf_offset;
		len = res->encode->length;
		sum = res->encode->checksum;
	} else {
		err_set(e, "answered a buffer job with another kind of result");
		return WBUF_BAD;
	}
	if (off > b->size || len > b->size - off) {
		err_set(e, "answered with bytes [%llu, +%llu) outside its %zu-byte buffer",
		    (unsigned long long)off, (unsigned long long)len, b->size);
		return WBUF_BAD;
	}
	if (off != j->off || len != j->len) {
		err_set(e, "answered with bytes [%llu, +%llu) of its buffer, the job's are "
		    "[%llu, +%zu)", (unsigned long long)off, (unsigned long long)len,
		    (unsigned long long)j->off, j->len);
		return WBUF_BAD;
	}
	if (!copy)
		return WBUF_OK;
	/* One pass: the checksum is of the copy, as it is made. */
	if (hash_fast64_copy(j->buf, b->map + off, len) != sum) {
		err_set(e, "wrote into its buffer while answering");
		return WBUF_CHANGED;
	}
	return WBUF_OK;
}
