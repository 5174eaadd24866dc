/*
 * io.h: disk work off the event loop.  A few threads run work functions
 * (read, hash, compress, write, fsync, rename); each completion runs its
 * done function back on the loop.  Tasks run concurrently and complete in
 * no particular order: steps that must follow each other (write, fsync,
 * rename) belong in one task or are chained through done functions.
 *
 * Work functions touch only the data their task owns: no database, no
 * loop state.  Done functions run on the loop and may do anything.
 */
#ifndef FARMD_IO_H
#define FARMD_IO_H

#include <event2/event.h>

#include "err.h"

struct io;

typedef void (*io_work_fn)(void *arg);
typedef void (*io_done_fn)(void *arg);

struct io *io_new(struct event_base *base, int threads, struct err *e);
/* Waits for queued work to finish, runs the remaining done functions,
 * then stops the threads. */
void io_free(struct io *io);

/* Queues work; done (may be NULL) runs on the loop afterwards. */
int io_submit(struct io *io, io_work_fn work, io_done_fn done, void *arg);

/* Tasks queued or running. */
int io_pending(const struct io *io);

#endif
