/*
 * wire.h: constants both ends of every socket agree on.  The framing is in
 * frame.h; the messages are in proto/.
 */
#ifndef FARMD_WIRE_H
#define FARMD_WIRE_H

/* Bumped on any incompatible change to proto/ messages or their meaning. */
#define WIRE_VERSION 1

/* The fd a worker finds its socketpair on. */
#define WIRE_WORKER_FD 3

enum wire_kind {
	WIRE_KIND_ENCODE,
	WIRE_KIND_COMPILE,
	WIRE_KIND_EXECUTE,
	WIRE_KIND_COUNT
};

/* Faults a test build can arm in a worker (FaultArm); they fire on the
 * worker's next job. */
#define WIRE_FAULT_SLOW_MS 2000

enum wire_fault {
	WIRE_FAULT_NONE,
	WIRE_FAULT_HANG,      /* never answer */
	WIRE_FAULT_CRASH,     /* abort() */
	WIRE_FAULT_SYSCALL,   /* open() a file: the seccomp filter must kill us */
	WIRE_FAULT_OVERSIZE,  /* answer with a frame header past the maximum */
	WIRE_FAULT_GARBAGE,   /* answer with bytes that do not unpack */
	WIRE_FAULT_SLOW,      /* sleep WIRE_FAULT_SLOW_MS, then run the job as usual */
	WIRE_FAULT_BADOFFSET, /* answer a buffer job with a range outside the buffer */
	WIRE_FAULT_SCRIBBLE,  /* answer, then write garbage over the answer in the
	                       * buffer for WIRE_FAULT_SLOW_MS */
	WIRE_FAULT_SCRIBBLE_FREE, /* answer, then write garbage over the rest of the
	                       * buffer (where the next jobs' pieces are being
	                       * read) for WIRE_FAULT_SLOW_MS */
	WIRE_FAULT_COUNT
};

/* Sandbox layers as workers report them in their hello, in the order they
 * are applied (worker/sandbox.h keeps the same order). */
#define WIRE_SANDBOX_LAYERS 5
extern const char *const wire_sandbox_layers[WIRE_SANDBOX_LAYERS];
int wire_sandbox_layer_parse(const char *name);

const char *wire_kind_name(enum wire_kind kind);
int wire_kind_parse(const char *name, enum wire_kind *out);
const char *wire_fault_name(enum wire_fault fault);
int wire_fault_parse(const char *name, enum wire_fault *out);

#endif
