/*
 * err.c: every setter formats into a buffer of its own and copies it
 * into e->msg last, so an argument may be e->msg itself ("x: %s", e->msg)
 * without overlapping source and destination in vsnprintf.
 */
#include "err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

int
err_set(struct err *e, const char *fmt, ...)
{
	char buf[ERR_MSG_MAX];
	va_list ap;

	if (e == NULL)
		return -1;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	memcpy(e->msg, buf, strlen(buf) + 1);
	return -1;
}

int
err_sys(struct err *e, const char *fmt, ...)
{
	int saved = errno;
	char buf[ERR_MSG_MAX];
	size_t n;
	va_list ap;

	if (e == NULL)
		return -1;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	n = strlen(buf);
	snprintf(buf + n, sizeof(buf) - n, ": %s", strerror(saved));
	memcpy(e->msg, buf, strlen(buf) + 1);
	errno = saved;
	return -1;
}

int
err_wrap(struct err *e, const char *fmt, ...)
{
	char prefix[ERR_MSG_MAX], old[ERR_MSG_MAX];
	va_list ap;

	if (e == NULL)
		return -1;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, e->msg, sizeof(old));
	snprintf(e->msg, sizeof(e->msg), "%s: %s", prefix, old);
	return -1;
}

int
err_ossl(struct err *e, const char *what)
{
	unsigned long code = ERR_get_error();
	char buf[256];

	ERR_clear_error();
	if (code == 0)
		return err_set(e, "%s failed", what);
	ERR_error_string_n(code, buf, sizeof(buf));
	return err_set(e, "%s: %s", what, buf);
}
