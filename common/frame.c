#include "frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hash.h"

void
frame_rd_init(struct frame_rd *rd, size_t max)
{
	memset(rd, 0, sizeof(*rd));
	rd->max = max;
}

void
frame_rd_space(struct frame_rd *rd, uint8_t **p, size_t *n)
{
	if (rd->hdr_got < FRAME_HDR_LEN) {
		*p = rd->hdr + rd->hdr_got;
		*n = FRAME_HDR_LEN - rd->hdr_got;
	} else {
		*p = rd->body + rd->body_got;
		*n = rd->body_len - rd->body_got;
	}
}

int
frame_rd_commit(struct frame_rd *rd, size_t n, struct err *e)
{
	if (rd->hdr_got < FRAME_HDR_LEN) {
		rd->hdr_got += n;
		if (rd->hdr_got < FRAME_HDR_LEN)
			return FRAME_MORE;
		rd->body_len = be32_get(rd->hdr);
		if (rd->body_len > rd->max)
			return err_set(e, "frame of %zu bytes exceeds the maximum of %zu",
			    rd->body_len, rd->max);
		/* +1 so a zero-length frame still has a buffer to hand over.
		 * The buffer of the last frame is reused when it is large
		 * enough and not one of the rare huge ones. */
		if (rd->body_len + 1 > rd->body_cap ||
		    (rd->body_cap > FRAME_RD_KEEP && rd->body_len < FRAME_RD_KEEP)) {
			size_t cap = rd->body_len + 1 < 4096 ? 4096 : rd->body_len + 1;

			free(rd->body);
			rd->body_cap = 0;
			if ((rd->body = malloc(cap)) == NULL)
				return err_set(e, "frame of %zu bytes: out of memory",
				    rd->body_len);
			rd->body_cap = cap;
		}
		rd->body_got = 0;
	} else {
		rd->body_got += n;
	}
	return rd->body_got == rd->body_len ? FRAME_READY : FRAME_MORE;
}

uint8_t *
frame_rd_take(struct frame_rd *rd, size_t *len, int *fds, int *nfds)
{
	uint8_t *body = rd->body;

	*len = rd->body_len;
	if (fds != NULL) {
		memcpy(fds, rd->fds, sizeof(int) * rd->nfds);
		*nfds = rd->nfds;
	} else {
		for (int i = 0; i < rd->nfds; i++)
			close(rd->fds[i]);
	}
	rd->body = NULL;
	rd->body_cap = 0;
	rd->body_len = rd->body_got = rd->hdr_got = 0;
	rd->nfds = 0;
	return body;
}

const uint8_t *
frame_rd_body(struct frame_rd *rd, size_t *len, int *fds, int *nfds)
{
	*len = rd->body_len;
	if (fds != NULL) {
		memcpy(fds, rd->fds, sizeof(int) * rd->nfds);
		*nfds = rd->nfds;
	} else {
		for (int i = 0; i < rd->nfds; i++)
			close(rd->fds[i]);
	}
	rd->body_len = rd->body_got = rd->hdr_got = 0;
	rd->nfds = 0;
	return rd->body;
}

void
frame_rd_reset(struct frame_rd *rd)
{
	for (int i = 0; i < rd->nfds; i++)
		close(rd->fds[i]);
	free(rd->body);
	frame_rd_init(rd, rd->max);
}

/* Collects SCM_RIGHTS descriptors; any beyond FRAME_MAX_FDS are closed and
 * make the frame an error, so a peer cannot exhaust our descriptor table. */
static int
frame_rd_cmsg(struct frame_rd *rd, struct msghdr *mh, struct err *e)
{
	int over = 0;

	if (mh->msg_flags & MSG_CTRUNC)
		over = 1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c != NULL; c = CMSG_NXTHDR(mh, c)) {
		int n;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (rd->nfds < FRAME_MAX_FDS)
				rd->fds[rd->nfds++] = fd;
			else {
				close(fd);
				over = 1;
			}
		}
	}
	if (over)
		return err_set(e, "more than %d descriptors passed with one frame",
		    FRAME_MAX_FDS);
	return 0;
}

int
frame_rd_recv(struct frame_rd *rd, int fd, int *eof, struct err *e)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * FRAME_MAX_FDS)];
	} cbuf;

	*eof = 0;
	for (;;) {
		struct iovec iov;
		struct msghdr mh = { 0 };
		uint8_t *p;
		size_t n;
		ssize_t got;
		int rc;

		frame_rd_space(rd, &p, &n);
		iov.iov_base = p;
		iov.iov_len = n;
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof(cbuf.buf);
		got = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return FRAME_MORE;
			/* A peer that died with our data unread resets the
			 * connection: that is its end, like EOF, and the cause
			 * (its exit status) is told elsewhere. */
			if (errno != ECONNRESET)
				return err_sys(e, "recvmsg");
			got = 0;
			mh.msg_controllen = 0;
		}
		if (mh.msg_controllen > 0 && frame_rd_cmsg(rd, &mh, e) < 0)
			return FRAME_ERROR;
		if (got == 0) {
			if (rd->hdr_got == 0) {
				*eof = 1;
				return FRAME_MORE;
			}
			return err_set(e, "truncated frame (connection closed after %zu of %zu bytes)",
			    rd->hdr_got < FRAME_HDR_LEN ? rd->hdr_got : FRAME_HDR_LEN + rd->body_got,
			    rd->hdr_got < FRAME_HDR_LEN ? (size_t)FRAME_HDR_LEN : FRAME_HDR_LEN + rd->body_len);
		}
		rc = frame_rd_commit(rd, (size_t)got, e);
		/* A zero-length body is complete as soon as its header is. */
		if (rc != FRAME_MORE)
			return rc;
	}
}

uint8_t *
frame_pack(const ProtobufCMessage *m, size_t *len)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf;

	if (n > UINT32_MAX)
		return NULL;
	buf = malloc(FRAME_HDR_LEN + n);
	if (buf == NULL)
		return NULL;
	be32_put(buf, (uint32_t)n);
	protobuf_c_message_pack(m, buf + FRAME_HDR_LEN);
	*len = FRAME_HDR_LEN + n;
	return buf;
}

int
frame_pack_into(const ProtobufCMessage *m, uint8_t **buf, size_t *cap, size_t *len)
{
	size_t n = protobuf_c_message_get_packed_size(m);

	if (n > UINT32_MAX)
		return -1;
	if (FRAME_HDR_LEN + n > *cap) {
		size_t want = FRAME_HDR_LEN + n < 4096 ? 4096 : FRAME_HDR_LEN + n;
		uint8_t *nb = realloc(*buf, want);

		if (nb == NULL)
			return -1;
		*buf = nb;
		*cap = want;
	}
	be32_put(*buf, (uint32_t)n);
	protobuf_c_message_pack(m, *buf + FRAME_HDR_LEN);
	*len = FRAME_HDR_LEN + n;
	return 0;
}

int
frame_send(int fd, const uint8_t *frame, size_t len, const int *fds, int nfds,
    struct err *e)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * FRAME_MAX_FDS)];
	} cbuf;
	size_t off = 0;

	if (nfds > FRAME_MAX_FDS)
		return err_set(e, "too many descriptors (%d) for one frame", nfds);
	while (off < len) {
		struct iovec iov = { (void *)(frame + off), len - off };
		struct msghdr mh = { 0 };
		ssize_t n;

		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		if (off == 0 && nfds > 0) {
			struct cmsghdr *c;

			memset(&cbuf, 0, sizeof(cbuf));
			mh.msg_control = cbuf.buf;
			mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
			c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
			memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
		}
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return err_sys(e, "sendmsg");
		}
		off += (size_t)n;
	}
	return 0;
}

int
frame_send_msg(int fd, const ProtobufCMessage *m, const int *fds, int nfds,
    struct err *e)
{
	size_t len;
	uint8_t *buf = frame_pack(m, &len);
	int rc;

	if (buf == NULL)
		return err_set(e, "cannot pack message: out of memory");
	rc = frame_send(fd, buf, len, fds, nfds, e);
	free(buf);
	return rc;
}

int
frame_recv(int fd, size_t max, uint8_t **body, size_t *len, int *fds, int *nfds,
    struct err *e)
{
	struct frame_rd rd;
	int eof, rc;

	frame_rd_init(&rd, max);
	rc = frame_rd_recv(&rd, fd, &eof, e);
	if (rc == FRAME_READY) {
		*body = frame_rd_take(&rd, len, fds, nfds);
		return 0;
	}
	frame_rd_reset(&rd);
	if (rc == FRAME_MORE && eof)
		return 1;
	if (rc == FRAME_MORE)
		return err_set(e, "recv: socket is non-blocking");
	return -1;
}

static void *
frame_alloc_alloc(void *data, size_t size)
{
	struct frame_alloc *a = data;

	if (size > a->limit - a->used)
		return NULL;
	a->used += size;
	return malloc(size);
}

static void
frame_alloc_free(void *data, void *p)
{
	(void)data;
	free(p);
}

void
frame_alloc_init(struct frame_alloc *a, size_t limit)
{
	a->pb.alloc = frame_alloc_alloc;
	a->pb.free = frame_alloc_free;
	a->pb.allocator_data = a;
	a->used = 0;
	a->limit = limit;
}

ProtobufCMessage *
frame_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *body,
    size_t len, struct frame_alloc *a, struct err *e)
{
	ProtobufCMessage *m;

	/* Every allocation protobuf-c makes is bounded by what the bytes
	 * describe; a repeated field of empty elements is the worst case, a
	 * struct (<= 128 bytes) per 2 input bytes. */
	frame_alloc_init(a, 64 * len + 65536);
	m = protobuf_c_message_unpack(desc, &a->pb, len, body);
	if (m == NULL)
		err_set(e, "%s: %zu bytes do not unpack%s", desc->short_name, len,
		    a->used >= a->limit ? " (allocation limit)" : "");
	return m;
}
