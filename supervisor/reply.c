/*
 * reply.c: text buffers, JSON field reads and argument parsing for the
 * admin command handlers (reply.h).
 */
#include "reply.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void
tb_printf(struct tbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->len >= sizeof(b->s) - 1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->s + b->len, sizeof(b->s) - b->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		b->len += (size_t)n < sizeof(b->s) - b->len ? (size_t)n : sizeof(b->s) - b->len - 1;
}

struct tbuf *
tb_new(struct control_req *req)
{
	struct tbuf *b = malloc(sizeof(*b));

	if (b == NULL)
		control_reply_err(req, "out of memory");
	else
		b->len = 0;
	return b;
}

void
reply_table(struct control_req *req, json_t *v, void (*render)(struct tbuf *b, json_t *v))
{
	struct tbuf *b = tb_new(req);

	if (b == NULL) {
		json_decref(v);
		return;
	}
	render(b, v);
	control_reply(req, v, b->s);
	free(b);
}

const char *
js(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

long long
ji(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

int
cmd_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}
