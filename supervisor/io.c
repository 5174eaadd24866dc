/*
 * io.c: a fixed pool of threads fed by one FIFO; completions come back
 * through an eventfd watched by the loop.
 */
#include "io.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct io_task {
	struct io_task *next;
	io_work_fn work;
	io_done_fn done;
	void *arg;
};

struct io_queue {
	struct io_task *head, *tail;
};

struct io {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct io_queue todo;           /* under lock */
	struct io_queue finished;       /* under lock */
	int stopping;                   /* under lock */
	int pending;                    /* loop only */
	int efd;
	struct event *ev;
	int nthreads;
	pthread_t threads[];
};

static void
io_queue_push(struct io_queue *q, struct io_task *t)
{
	t->next = NULL;
	if (q->tail != NULL)
		q->tail->next = t;
	else
		q->head = t;
	q->tail = t;
}

static struct io_task *
io_queue_pop(struct io_queue *q)
{
	struct io_task *t = q->head;

	if (t != NULL) {
		q->head = t->next;
		if (q->head == NULL)
			q->tail = NULL;
	}
	return t;
}

static void *
io_thread(void *arg)
{
	struct io *io = arg;
	uint64_t one = 1;

	pthread_mutex_lock(&io->lock);
	for (;;) {
		struct io_task *t;

		while ((t = io_queue_pop(&io->todo)) == NULL && !io->stopping)
			pthread_cond_wait(&io->cond, &io->lock);
		if (t == NULL)
			break;
		pthread_mutex_unlock(&io->lock);
		t->work(t->arg);
		pthread_mutex_lock(&io->lock);
		/* The loop takes the whole list when woken, so only the first
		 * completion since it last did needs to wake it: one eventfd
		 * write and one wake-up per batch, not per task (a sector's
		 * 64 piece reads were 64 of each). */
		if (io->finished.head == NULL)
			(void)!write(io->efd, &one, sizeof(one));
		io_queue_push(&io->finished, t);
	}
	pthread_mutex_unlock(&io->lock);
	return NULL;
}

static void
io_complete(struct io *io)
{
	struct io_queue done;
	struct io_task *t;

	pthread_mutex_lock(&io->lock);
	done = io->finished;
	io->finished.head = io->finished.tail = NULL;
	pthread_mutex_unlock(&io->lock);
	while ((t = io_queue_pop(&done)) != NULL) {
		io->pending--;
		if (t->done != NULL)
			t->done(t->arg);
		free(t);
	}
}

static void
io_event_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t n;

	(void)what;
	(void)!read(fd, &n, sizeof(n));
	io_complete(arg);
}

struct io *
io_new(struct event_base *base, int threads, struct err *e)
{
	struct io *io = calloc(1, sizeof(*io) + sizeof(pthread_t) * (size_t)threads);

	if (io == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&io->lock, NULL);
	pthread_cond_init(&io->cond, NULL);
	io->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (io->efd < 0) {
		err_sys(e, "eventfd");
		free(io);
		return NULL;
	}
	io->ev = event_new(base, io->efd, EV_READ | EV_PERSIST, io_event_cb, io);
	if (io->ev == NULL || event_add(io->ev, NULL) < 0) {
		err_set(e, "cannot watch the I/O pool");
		io_free(io);
		return NULL;
	}
	for (int i = 0; i < threads; i++) {
		int rc = pthread_create(&io->threads[i], NULL, io_thread, io);

		if (rc != 0) {
			errno = rc;
			err_sys(e, "I/O thread");
			io_free(io);
			return NULL;
		}
		io->nthreads++;
	}
	return io;
}

int
io_submit(struct io *io, io_work_fn work, io_done_fn done, void *arg)
{
	struct io_task *t = malloc(sizeof(*t));

	if (t == NULL)
		return -1;
	t->work = work;
	t->done = done;
	t->arg = arg;
	pthread_mutex_lock(&io->lock);
	io_queue_push(&io->todo, t);
	pthread_cond_signal(&io->cond);
	pthread_mutex_unlock(&io->lock);
	io->pending++;
	return 0;
}

int
io_pending(const struct io *io)
{
	return io->pending;
}

void
io_free(struct io *io)
{
	if (io == NULL)
		return;
	pthread_mutex_lock(&io->lock);
	io->stopping = 1;
	pthread_cond_broadcast(&io->cond);
	pthread_mutex_unlock(&io->lock);
	/* Threads finish the queue before they see stopping with nothing
	 * left, so every submitted task completes. */
	for (int i = 0; i < io->nthreads; i++)
		pthread_join(io->threads[i], NULL);
	io_complete(io);
	if (io->ev != NULL)
		event_free(io->ev);
	close(io->efd);
	pthread_cond_destroy(&io->cond);
	pthread_mutex_destroy(&io->lock);
	free(io);
}
