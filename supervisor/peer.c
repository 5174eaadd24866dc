/*
 * peer.c: framed connections on the loop.
 *
 * Reads go straight into the peer's frame buffer (frame_rd), which is kept
 * from one frame to the next and lent to on_msg; writes are a
 * FIFO of packed frames drained with writev/sendmsg when the socket is
 * writable.  At most PEER_BURST frames are handled per wakeup so that one
 * chatty peer cannot starve the others.
 */
#include "peer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "frame.h"

#define PEER_BURST 32
#define PEER_IOV 16

struct peer_out {
	struct peer_out *next;
	uint8_t *buf;
	size_t len;
	size_t off;
	int borrowed;   /* the caller keeps buf alive and frees it */
};

struct peer {
	int fd;
	int closed;
	int paused;                     /* by the owner */
	int throttled;                  /* by us: output above the limit */
	size_t out_limit;               /* 0: none */
	struct event *rev;
	struct event *wev;
	struct frame_rd rd;
	struct peer_out *head, **tail;
	size_t queued;
	peer_msg_cb on_msg;
	peer_close_cb on_close;
	void *arg;
};

static void peer_read_cb(evutil_socket_t fd, short what, void *arg);

static void
peer_out_free(struct peer_out *o)
{
	if (!o->borrowed)
		free(o->buf);
	free(o);
}
static void peer_write_cb(evutil_socket_t fd, short what, void *arg);

struct peer *
peer_new(struct event_base *base, int fd, size_t max_frame, peer_msg_cb on_msg,
    peer_close_cb on_close, void *arg)
{
	struct peer *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->fd = fd;
	p->tail = &p->head;
	p->on_msg = on_msg;
	p->on_close = on_close;
	p->arg = arg;
	frame_rd_init(&p->rd, max_frame);
	evutil_make_socket_nonblocking(fd);
	p->rev = event_new(base, fd, EV_READ | EV_PERSIST, peer_read_cb, p);
	p->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, peer_write_cb, p);
	if (p->rev == NULL || p->wev == NULL || event_add(p->rev, NULL) < 0) {
		peer_free(p);
		return NULL;
	}
	return p;
}

static void
peer_stop(struct peer *p)
{
	p->closed = 1;
	if (p->rev != NULL)
		event_del(p->rev);
	if (p->wev != NULL)
		event_del(p->wev);
}

void
peer_free(struct peer *p)
{
	struct peer_out *o, *next;

	if (p == NULL)
		return;
	peer_stop(p);
	if (p->rev != NULL)
		event_free(p->rev);
	if (p->wev != NULL)
		event_free(p->wev);
	for (o = p->head; o != NULL; o = next) {
		next = o->next;
		peer_out_free(o);
	}
	frame_rd_reset(&p->rd);
	if (p->fd >= 0)
		close(p->fd);
	free(p);
}

static void
peer_close(struct peer *p, enum peer_close how, const char *reason)
{
	if (p->closed)
		return;
	peer_stop(p);
	p->on_close(p, how, reason, p->arg);
}

void
peer_end(struct peer *p, const char *reason)
{
	peer_close(p, PEER_ENDED, reason);
}

static void
peer_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct peer *p = arg;
	struct err e;

	(void)what;
	for (int i = 0; i < PEER_BURST && !p->closed && !p->paused; i++) {
		/* A peer that does not read what we send stops being read
		 * until it catches up: our queue for it stays bounded. */
		if (p->out_limit != 0 && p->queued > p->out_limit) {
			p->throttled = 1;
			event_del(p->rev);
			return;
		}
		const uint8_t *body;
		size_t len;
		int fds[FRAME_MAX_FDS], nfds, eof, rc;

		rc = frame_rd_recv(&p->rd, fd, &eof, &e);
		if (rc == FRAME_ERROR) {
			peer_close(p, PEER_FAILED, e.msg);
			return;
		}
		if (rc == FRAME_MORE) {
			if (eof)
				peer_close(p, PEER_CLOSED, "connection closed");
			return;
		}
		body = frame_rd_body(&p->rd, &len, fds, &nfds);
		if (p->on_msg(p, body, len, fds, nfds, p->arg, &e) < 0) {
			peer_close(p, PEER_FAILED, e.msg);
			return;
		}
	}
}

/* Writes what the socket takes.  Returns 0 when drained or when the
 * socket would block, -1 (errno set) on failure. */
static int
peer_flush(struct peer *p)
{
	while (p->head != NULL) {
		struct iovec iov[PEER_IOV];
		struct peer_out *o = p->head;
		ssize_t n;
		int cnt = 0;

		for (; o != NULL && cnt < PEER_IOV; o = o->next, cnt++) {
			iov[cnt].iov_base = o->buf + o->off;
			iov[cnt].iov_len = o->len - o->off;
		}
		n = writev(p->fd, iov, cnt);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -1;
		}
		while (n > 0) {
			o = p->head;
			if ((size_t)n < o->len - o->off) {
				o->off += (size_t)n;
				break;
			}
			n -= (ssize_t)(o->len - o->off);
			p->queued -= o->len;
			p->head = o->next;
			if (p->head == NULL)
				p->tail = &p->head;
			peer_out_free(o);
		}
	}
	return 0;
}

static void
peer_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct peer *p = arg;

	(void)fd;
	(void)what;
	if (peer_flush(p) < 0) {
		if (errno == EPIPE || errno == ECONNRESET)
			peer_close(p, PEER_CLOSED, "connection closed");
		else
			peer_close(p, PEER_FAILED, strerror(errno));
		return;
	}
	if (p->head == NULL)
		event_del(p->wev);
	if (p->throttled && p->queued <= p->out_limit / 2) {
		p->throttled = 0;
		if (!p->paused) {
			event_add(p->rev, NULL);
			event_active(p->rev, EV_READ, 0);
		}
	}
}

static int
peer_queue(struct peer *p, uint8_t *frame, size_t len, int borrowed)
{
	struct peer_out *o;

	if (p->closed || (o = calloc(1, sizeof(*o))) == NULL) {
		if (!borrowed)
			free(frame);
		return -1;
	}
	o->borrowed = borrowed;
	o->buf = frame;
	o->len = len;
	*p->tail = o;
	p->tail = &o->next;
	p->queued += len;
	/* Try at once: most frames fit in the socket buffer and the peer
	 * sees them without another trip round the loop.  A failure is left
	 * for the write callback to report, so on_close never runs inside a
	 * caller's peer_send(). */
	if (p->head == o && peer_flush(p) < 0) {
		event_add(p->wev, NULL);
		event_active(p->wev, EV_WRITE, 0);
		return 0;
	}
	if (p->head != NULL)
		event_add(p->wev, NULL);
	return 0;
}

int
peer_send_frame(struct peer *p, uint8_t *frame, size_t len)
{
	return peer_queue(p, frame, len, 0);
}

int
peer_send_borrowed(struct peer *p, const uint8_t *frame, size_t len)
{
	return peer_queue(p, (uint8_t *)frame, len, 1);
}

int
peer_send(struct peer *p, const ProtobufCMessage *m)
{
	size_t len;
	uint8_t *buf;

	if (p->closed)
		return -1;
	buf = frame_pack(m, &len);
	if (buf == NULL)
		return -1;
	return peer_send_frame(p, buf, len);
}

void
peer_pause(struct peer *p, int paused)
{
	p->paused = paused;
	if (p->closed || p->throttled)
		return;
	if (paused)
		event_del(p->rev);
	else {
		event_add(p->rev, NULL);
		/* Bytes may already be buffered in the kernel; the persistent
		 * event fires again if so. */
		event_active(p->rev, EV_READ, 0);
	}
}

size_t
peer_queued(const struct peer *p)
{
	return p->queued;
}

void
peer_set_out_limit(struct peer *p, size_t bytes)
{
	p->out_limit = bytes;
}
