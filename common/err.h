/*
 * err.h: the one error type.  Functions return 0 on success and -1 on
 * failure, filling a caller-provided struct err with a one-line message
 * that names the object and the cause ("block 3fa2…: read: I/O error").
 */
#ifndef FARMD_ERR_H
#define FARMD_ERR_H

#include <stdarg.h>

#define ERR_MSG_MAX 512

struct err {
	char msg[ERR_MSG_MAX];
};

/* Sets e->msg (e may be NULL) and returns -1 so callers can
 * "return err_set(e, ...);". */
int err_set(struct err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Like err_set, appending ": strerror(errno)". */
int err_sys(struct err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prefixes an existing message: "prefix: old message". */
int err_wrap(struct err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Like err_set(e, "%s: <OpenSSL's first queued error>", what), or
 * "%s failed" when OpenSSL queued none; clears OpenSSL's error queue. */
int err_ossl(struct err *e, const char *what);

#endif
