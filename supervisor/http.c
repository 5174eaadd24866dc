/*
 * http.c: the HTTP listener ([daemon] metrics_listen; http.h).
 *
 * One evhttp on farmd's event loop.  Every answer is built synchronously
 * from in-memory and database state by the same function the admin
 * command calls (status_json, plot_json_*, history_json_status,
 * resync_json_errors, metrics_render), so /api/v1/X and `farmctl --json X`
 * are one document.  Nothing here changes state: only GET and HEAD are
 * answered, any other method gets 405.
 *
 * A slow or hostile client never stalls the loop: evhttp reads and writes
 * without blocking and buffers the answer; it reads a connection's next
 * request only after the last answer was written, so each connection
 * holds at most one answer in memory, and what it has read is capped
 * too (HTTP_READ_MAX).  Limits (the constants below): the header and body
 * sizes, an idle timeout on every connection, and a cap on open
 * connections.
 *
 * The cap: libevent 2.1 has no evhttp_set_max_connections (2.2 has) and
 * shows a connection to its user only once a request arrived.  What it
 * does offer: evhttp_set_bevcb (called as it accepts: we make the
 * connection's bufferevent, so we count it), the bufferevent's callback
 * argument (which is the evhttp_connection) and
 * evhttp_connection_set_closecb (called when evhttp frees it, however it
 * ends).  The connection does not exist yet inside the bevcb, so the close
 * callback is attached from the loop's next pass (http_attach_cb); a
 * connection freed before that has a bufferevent whose callbacks were
 * cleared, and is counted as gone there.  Invariants: open counts the
 * connections evhttp holds (those in fresh[] included); the listening
 * socket is disabled exactly while open >= HTTP_MAX_CONNECTIONS, so new
 * connections wait in the kernel's backlog until one closes.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <jansson.h>

#include "clock.h"
#include "dashboard.h"
#include "farmd.h"
#include "history.h"
#include "log.h"
#include "metrics.h"
#include "plot.h"
#include "resync.h"
#include "status.h"

/* An idle connection (no byte read or written for this long) is closed:
 * a scraper or the dashboard reconnects at once, a client that only holds
 * a slot loses it.  Also the most a stuck write may wait. */
#define HTTP_IDLE_TIMEOUT_S 10
/* Open connections at once; more wait in the backlog.  Prometheus and a
 * few dashboards need a handful. */
#define HTTP_MAX_CONNECTIONS 64
#define HTTP_BACKLOG 16
/* Request line and headers: a GET needs far less; over it evhttp 2.1
 * answers 400 (413 for a header block cut by the limit mid-line). */
#define HTTP_MAX_HEADERS (8 * 1024)
/* GET and HEAD have no body; a small one (a POST to be refused with
 * 405) is read and dropped, a larger one is 413. */
#define HTTP_MAX_BODY 1024
/* What a connection may have read and not yet parsed.  evhttp keeps
 * reading while it writes an answer (to see the peer close), so without
 * this a client that sends and never reads would grow the buffer until
 * the idle timeout; at the mark reading pauses.  Above the header and
 * body limits, so those are still seen and refused. */
#define HTTP_READ_MAX (2 * (HTTP_MAX_HEADERS + HTTP_MAX_BODY))
/* A path segment taken as a farm id or name. */
#define HTTP_ARG_MAX 64

struct http {
	struct farmd *d;
	struct evhttp *evh;
	struct evconnlistener *lev;     /* owned by evh */
	struct event *attach;           /* runs http_attach_cb */
	/* Bufferevents of connections accepted since attach last ran, each
	 * with a reference of ours so that it outlives its connection. */
	struct bufferevent *fresh[HTTP_MAX_CONNECTIONS];
	size_t nfresh;
	size_t open;                    /* connections evhttp holds */
	int closing;                    /* http_free under way: lev is gone */
	uint64_t cap_warned_ms;         /* when the cap was last logged */
	char addr[64];                  /* "HOST:PORT" bound */
};

/* ---- answers ---------------------------------------------------------- */

static void
http_free_body(const void *data, size_t len, void *arg)
{
	(void)len;
	(void)arg;
	free((void *)data);
}

/* Answers code with body of type; body is taken (freed with free())
 * unless is_static. */
static void
http_send(struct evhttp_request *req, int code, const char *reason, const char *type,
    const void *body, size_t len, int is_static)
{
	struct evkeyvalq *hd = evhttp_request_get_output_headers(req);
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	char n[24];

	snprintf(n, sizeof(n), "%zu", len);
	evhttp_add_header(hd, "Content-Type", type);
	/* HEAD: the length of what GET would send (evhttp sets none). */
	evhttp_add_header(hd, "Content-Length", n);
	evhttp_add_header(hd, "Cache-Control", "no-store");
	evhttp_add_header(hd, "X-Content-Type-Options", "nosniff");
	if (len > 0 && evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
		if (evbuffer_add_reference(out, body, len, is_static ? NULL : http_free_body,
		    NULL) < 0) {
			if (!is_static)
				free((void *)body);
			evhttp_send_error(req, 500, "Internal Server Error");
			return;
		}
	} else if (!is_static) {
		free((void *)body);
	}
	evhttp_send_reply(req, code, reason, NULL);
}

/* A JSON error body: {"error": "..."}. */
static void
http_error(struct evhttp_request *req, int code, const char *reason, const char *msg)
{
	json_t *o = json_pack("{s:s}", "error", msg);
	char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;

	json_decref(o);
	if (s == NULL) {
		evhttp_send_error(req, 500, "Internal Server Error");
		return;
	}
	http_send(req, code, reason, "application/json", s, strlen(s), 0);
}

static void
http_json(struct evhttp_request *req, json_t *doc)
{
	char *s = doc ? json_dumps(doc, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;

	json_decref(doc);
	if (s == NULL) {
		http_error(req, 500, "Internal Server Error", "out of memory");
		return;
	}
	http_send(req, 200, "OK", "application/json", s, strlen(s), 0);
}

/* ---- endpoints -------------------------------------------------------- */

typedef void (*http_handler)(struct http *h, struct evhttp_request *req, const char *arg);

static void
http_dashboard(struct http *h, struct evhttp_request *req, const char *arg)
{
	(void)h;
	(void)arg;
	http_send(req, 200, "OK", "text/html; charset=utf-8", dashboard_html, dashboard_html_len,
	    1);
}

static void
http_metrics(struct http *h, struct evhttp_request *req, const char *arg)
{
	char *text = metrics_render(h->d);

	(void)arg;
	if (text == NULL) {
		http_error(req, 500, "Internal Server Error", "metrics: out of memory");
		return;
	}
	http_send(req, 200, "OK", "text/plain; version=0.0.4", text, strlen(text), 0);
}

static void
http_status(struct http *h, struct evhttp_request *req, const char *arg)
{
	(void)arg;
	http_json(req, status_json(h->d));
}

static void
http_farms(struct http *h, struct evhttp_request *req, const char *arg)
{
	(void)arg;
	http_json(req, plot_json_farms(h->d->plot));
}

static void
http_sectors(struct http *h, struct evhttp_request *req, const char *arg)
{
	struct err e;
	json_t *a = plot_json_sectors(h->d->plot, arg, &e);

	if (a != NULL)
		http_json(req, a);
	else if (!plot_farm_known(h->d->plot, arg))
		http_error(req, 404, "Not Found", e.msg);
	else
		http_error(req, 500, "Internal Server Error", e.msg);
}

static void
http_history(struct http *h, struct evhttp_request *req, const char *arg)
{
	(void)arg;
	http_json(req, history_json_status(h->d->history));
}

static void
http_plot(struct http *h, struct evhttp_request *req, const char *arg)
{
	(void)arg;
	http_json(req, plot_json_progress(h->d->plot));
}

static void
http_block_errors(struct http *h, struct evhttp_request *req, const char *arg)
{
	(void)arg;
	http_json(req, resync_json_errors(h->d->resync));
}

/* One row per path; '*' in a pattern stands for one non-empty segment,
 * handed to the handler (the farm of /api/v1/farms/ID/sectors).  Each
 * row's document is the one of the farmctl command named beside it. */
static const struct http_route {
	const char *pattern;
	http_handler fn;
} routes[] = {
	{ "/", http_dashboard },
	{ "/metrics", http_metrics },                   /* farmctl metrics */
	{ "/api/v1/status", http_status },              /* status */
	{ "/api/v1/farms", http_farms },                /* farm list */
	{ "/api/v1/farms/*/sectors", http_sectors },    /* sectors ID */
	{ "/api/v1/history", http_history },            /* history status */
	{ "/api/v1/plot", http_plot },                  /* plot */
	{ "/api/v1/blocks/errors", http_block_errors }, /* block list-errors */
};

/* Whether path matches pattern; the segment '*' stood for goes to arg. */
static int
http_match(const char *pattern, const char *path, char *arg, size_t argsz)
{
	while (*pattern != '\0') {
		if (*pattern == '*') {
			size_t n = strcspn(path, "/");

			if (n == 0 || n >= argsz)
				return 0;
			memcpy(arg, path, n);
			arg[n] = '\0';
			path += n;
			pattern++;
			continue;
		}
		if (*pattern++ != *path++)
			return 0;
	}
	return *path == '\0';
}

static void
http_request_cb(struct evhttp_request *req, void *arg)
{
	struct http *h = arg;
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	char seg[HTTP_ARG_MAX], msg[160];

	if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
		http_error(req, 405, "Method Not Allowed",
		    "method not allowed: farmd's HTTP listener is read-only (GET, HEAD)");
		return;
	}
	if (path == NULL || path[0] == '\0')
		path = "/";
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (http_match(routes[i].pattern, path, seg, sizeof(seg))) {
			routes[i].fn(h, req, seg);
			return;
		}
	}
	snprintf(msg, sizeof(msg), "no such path: %.100s", path);
	http_error(req, 404, "Not Found", msg);
}

/* ---- connections ------------------------------------------------------ */

static void
http_conn_closed(struct http *h)
{
	h->open--;
	if (h->open == HTTP_MAX_CONNECTIONS - 1 && !h->closing)
		evconnlistener_enable(h->lev);
}

static void
http_closecb(struct evhttp_connection *evcon, void *arg)
{
	(void)evcon;
	http_conn_closed(arg);
}

/* The close callbacks of the connections accepted since the last pass. */
static void
http_attach_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http *h = arg;

	(void)fd;
	(void)what;
	for (size_t i = 0; i < h->nfresh; i++) {
		struct bufferevent *bev = h->fresh[i];
		void *evcon = NULL;

		bufferevent_getcb(bev, NULL, NULL, NULL, &evcon);
		if (evcon != NULL)
			evhttp_connection_set_closecb(evcon, http_closecb, h);
		else
			http_conn_closed(h);    /* freed already */
		bufferevent_decref(bev);
	}
	h->nfresh = 0;
}

/* evhttp's bufferevent for a connection it is accepting.  NULL (out of
 * memory) makes evhttp fail the connection. */
static struct bufferevent *
http_bev_cb(struct event_base *base, void *arg)
{
	struct http *h = arg;
	struct bufferevent *bev;

	/* The listener is off at the cap, so fresh[] has room: every entry
	 * is an open connection. */
	if (h->nfresh >= HTTP_MAX_CONNECTIONS ||
	    (bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE)) == NULL)
		return NULL;
	bufferevent_setwatermark(bev, EV_READ, 0, HTTP_READ_MAX);
	bufferevent_incref(bev);
	h->fresh[h->nfresh++] = bev;
	event_active(h->attach, EV_TIMEOUT, 0);
	if (++h->open == HTTP_MAX_CONNECTIONS) {
		uint64_t now = clock_mono_ms();

		/* Once a minute at most: a client that keeps the listener at its
		 * cap must not fill the log. */
		if (h->cap_warned_ms == 0 || now - h->cap_warned_ms >= 60000) {
			log_warn("http: %d connections open; accepting more when one closes",
			    HTTP_MAX_CONNECTIONS);
			h->cap_warned_ms = now;
		}
		evconnlistener_disable(h->lev);
	}
	return bev;
}

/* ---- listening -------------------------------------------------------- */

/* "HOST:PORT" or "[V6]:PORT" (config.c checked the shape) into host and
 * port strings. */
static int
http_split(const char *addr, char *host, size_t hsz, char *port, size_t psz)
{
	const char *colon = strrchr(addr, ':');
	size_t n;

	if (colon == NULL || strlen(colon + 1) >= psz)
		return -1;
	snprintf(port, psz, "%s", colon + 1);
	n = (size_t)(colon - addr);
	if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
		addr++;
		n -= 2;
	}
	if (n == 0 || n >= hsz)
		return -1;
	memcpy(host, addr, n);
	host[n] = '\0';
	return 0;
}

/* The address of a bound socket as "HOST:PORT", "[V6]:PORT". */
static void
http_format(int fd, char *out, size_t n)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char ip[INET6_ADDRSTRLEN];

	out[0] = '\0';
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return;
	if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		snprintf(out, n, "[%s]:%u", ip, (unsigned)ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(out, n, "%s:%u", ip, (unsigned)ntohs(s4->sin_port));
	}
}

/* A listening socket for addr: the first address of the host that
 * binds.  -1 with e naming the address and the cause. */
static int
http_listen_fd(const char *addr, struct err *e)
{
	struct addrinfo hints = { 0 }, *res, *ai;
	char host[128], port[8];
	int fd = -1, rc, one = 1, saved = 0;

	if (http_split(addr, host, sizeof(host), port, sizeof(port)) < 0)
		return err_set(e, "metrics_listen %s: bad address", addr);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0)
		return err_set(e, "metrics_listen %s: %s", addr,
		    rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd < 0) {
			saved = errno;
			continue;
		}
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, HTTP_BACKLOG) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		errno = saved;
		return err_sys(e, "metrics_listen %s: cannot listen", addr);
	}
	return fd;
}

struct http *
http_new(struct farmd *d, const char *addr, struct err *e)
{
	struct http *h = calloc(1, sizeof(*h));
	int fd = -1;

	if (h == NULL) {
		err_set(e, "metrics_listen %s: out of memory", addr);
		return NULL;
	}
	h->d = d;
	if ((h->attach = event_new(d->base, -1, 0, http_attach_cb, h)) == NULL) {
		err_set(e, "metrics_listen %s: out of memory", addr);
		goto fail;
	}
	if ((fd = http_listen_fd(addr, e)) < 0)
		goto fail;
	http_format(fd, h->addr, sizeof(h->addr));
	if ((h->evh = evhttp_new(d->base)) == NULL) {
		err_set(e, "metrics_listen %s: cannot create the HTTP server", addr);
		goto fail;
	}
	/* Backlog 0: fd listens already. */
	h->lev = evconnlistener_new(d->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE |
	    LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	if (h->lev == NULL) {
		err_set(e, "metrics_listen %s: cannot watch the socket", addr);
		goto fail;
	}
	fd = -1;                        /* the listener's */
	if (evhttp_bind_listener(h->evh, h->lev) == NULL) {
		evconnlistener_free(h->lev);
		h->lev = NULL;
		err_set(e, "metrics_listen %s: cannot start the HTTP server", addr);
		goto fail;
	}
	evhttp_set_timeout(h->evh, HTTP_IDLE_TIMEOUT_S);
	evhttp_set_max_headers_size(h->evh, HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(h->evh, HTTP_MAX_BODY);
	/* Every method reaches http_request_cb, which answers 405 to all but
	 * GET and HEAD (evhttp's own answer would be 501). */
	evhttp_set_allowed_methods(h->evh, 0xffff);
	evhttp_set_gencb(h->evh, http_request_cb, h);
	evhttp_set_bevcb(h->evh, http_bev_cb, h);
	log_info("http: listening on %s", h->addr);
	return h;
fail:
	if (fd >= 0)
		close(fd);
	http_free(h);
	return NULL;
}

void
http_free(struct http *h)
{
	if (h == NULL)
		return;
	h->closing = 1;
	/* Our references first: evhttp_free frees the connections (each
	 * closecb runs inside it) and the listener. */
	for (size_t i = 0; i < h->nfresh; i++)
		bufferevent_decref(h->fresh[i]);
	if (h->evh != NULL)
		evhttp_free(h->evh);
	if (h->attach != NULL)
		event_free(h->attach);
	free(h);
}

const char *
http_address(const struct http *h)
{
	return h->addr;
}
