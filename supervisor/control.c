/*
 * control.c: the admin socket.
 *
 * Protocol: the client sends AdminHello; we answer AdminHello (or an
 * AdminResponse error, then close).  Then one AdminRequest at a time, each
 * answered by one AdminResponse.  Reading pauses while a request is being
 * answered, so a slow command never interleaves replies.  A frame that is
 * too large or does not unpack drops that client only.
 */
#include "control.h"

#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin.pb-c.h"
#include "clock.h"
#include "farmd.h"
#include "log.h"
#include "peer.h"
#include "wire.h"

#define CONTROL_MAX_ARGS 1024
#define CONTROL_MAX_GROUPS 256
/* Requests are argv plus descriptors: small.  Bounds what any uid that
 * may connect can make us allocate before access is decided. */
#define CONTROL_MAX_FRAME (1u << 20)
/* Output queued for a client that does not read its answers. */
#define CONTROL_MAX_QUEUED (8u << 20)
#define CONTROL_EMFILE_PAUSE_MS 100

struct control_client {
	TAILQ_ENTRY(control_client) entry;
	struct control *c;
	struct peer *peer;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	enum control_access access;
	int greeted;
	struct control_req *req;        /* in flight */
};

TAILQ_HEAD(client_list, control_client);
TAILQ_HEAD(req_list, control_req);

struct control {
	struct farmd *d;
	int fd;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct event *ev;
	struct event *resume_ev;        /* listener paused on EMFILE */
	struct client_list clients;
	size_t nclients;
	struct req_list reqs;           /* unanswered */
	gid_t admin_gid, monitor_gid;
	int have_admin_gid, have_monitor_gid;
	control_dispatch_cb dispatch;
	void *dispatch_arg;
	struct control_stats stats;     /* clients: see nclients */
	int draining;                   /* shutting down: run no new request */
};

static void
control_client_free(struct control_client *cl)
{
	TAILQ_REMOVE(&cl->c->clients, cl, entry);
	cl->c->nclients--;
	if (cl->req != NULL)
		cl->req->client = NULL;         /* answered into the void */
	peer_free(cl->peer);
	free(cl);
}

static void
control_req_free(struct control_req *req)
{
	if (req->c != NULL)
		TAILQ_REMOVE(&req->c->reqs, req, pending);
	for (int i = 0; i < req->argc; i++)
		free(req->argv[i]);
	free(req->argv);
	for (int i = 0; i < req->nfds; i++)
		if (req->fds[i] >= 0)
			close(req->fds[i]);
	free(req);
}

static void
control_send_response(struct control_client *cl, Farmd__AdminResponse *resp)
{
	Farmd__AdminMsg msg = FARMD__ADMIN_MSG__INIT;

	msg.m_case = FARMD__ADMIN_MSG__M_RESPONSE;
	msg.response = resp;
	peer_send(cl->peer, &msg.base);
}

static void
control_finish(struct control_req *req, Farmd__AdminResponse *resp)
{
	struct control_client *cl = req->client;

	if (!resp->ok && req->c != NULL)
		req->c->stats.errors++;
	if (cl != NULL) {
		control_send_response(cl, resp);
		cl->req = NULL;
		peer_pause(cl->peer, 0);
	}
	control_req_free(req);
}

void
control_reply_data(struct control_req *req, json_t *json, const char *text,
    const uint8_t *data, size_t len, const char *warning)
{
	Farmd__AdminResponse resp = FARMD__ADMIN_RESPONSE__INIT;
	char *js = NULL;

	resp.ok = 1;
	if (json != NULL) {
		js = json_dumps(json, JSON_COMPACT | JSON_ENSURE_ASCII);
		json_decref(json);
	}
	resp.json = js ? js : "";
	resp.text = (char *)(text ? text : "");
	resp.warning = (char *)(warning ? warning : "");
	resp.data.data = (uint8_t *)data;
	resp.data.len = len;
	control_finish(req, &resp);
	free(js);
}

void
control_reply(struct control_req *req, json_t *json, const char *text)
{
	control_reply_data(req, json, text, NULL, 0, NULL);
}

static void
control_reply_verr(struct control_req *req, const char *fmt, va_list ap)
{
	Farmd__AdminResponse resp = FARMD__ADMIN_RESPONSE__INIT;
	char msg[ERR_MSG_MAX];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	resp.ok = 0;
	resp.error = msg;
	control_finish(req, &resp);
}

void
control_reply_err(struct control_req *req, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	control_reply_verr(req, fmt, ap);
	va_end(ap);
}

void
control_reply_denied(struct control_req *req, const char *fmt, ...)
{
	va_list ap;

	if (req->c != NULL)
		req->c->stats.denied++;
	va_start(ap, fmt);
	control_reply_verr(req, fmt, ap);
	va_end(ap);
}

/* Refuses a connection with a message, then drops it once sent. */
static int
control_refuse(struct control_client *cl, const char *msg, struct err *e)
{
	Farmd__AdminResponse resp = FARMD__ADMIN_RESPONSE__INIT;

	resp.ok = 0;
	resp.error = (char *)msg;
	control_send_response(cl, &resp);
	return err_set(e, "%s", msg);
}

static int
control_request(struct control_client *cl, const Farmd__AdminRequest *r,
    int *fds, int nfds, struct err *e)
{
	struct control_req *req;

	if (r->n_argv == 0 || r->n_argv > CONTROL_MAX_ARGS)
		return err_set(e, "request with %zu arguments", r->n_argv);
	if ((int)r->nfds != nfds)
		return err_set(e, "request announces %u descriptors, %d arrived", r->nfds, nfds);
	req = calloc(1, sizeof(*req));
	if (req == NULL || (req->argv = calloc(r->n_argv + 1, sizeof(char *))) == NULL) {
		free(req);
		return err_set(e, "out of memory");
	}
	req->d = cl->c->d;
	req->arg = cl->c->dispatch_arg;
	req->client = cl;
	req->json = r->json;
	req->uid = cl->uid;
	req->pid = cl->pid;
	req->access = cl->access;
	for (size_t i = 0; i < r->n_argv; i++) {
		if ((req->argv[i] = strdup(r->argv[i])) == NULL) {
			control_req_free(req);
			return err_set(e, "out of memory");
		}
		req->argc++;
	}
	/* Owned by req only from here: the caller closes them on failure. */
	memcpy(req->fds, fds, sizeof(int) * nfds);
	req->nfds = nfds;
	req->c = cl->c;
	TAILQ_INSERT_TAIL(&cl->c->reqs, req, pending);
	cl->req = req;
	cl->c->stats.requests++;
	peer_pause(cl->peer, 1);
	/* A client that keeps sending (an ingest of many files) would keep
	 * disk work in flight and hold the shutdown open for as long. */
	if (cl->c->draining)
		control_reply_err(req, "farmd is shutting down");
	else
		cl->c->dispatch(req, cl->c->dispatch_arg);
	return 0;
}

static int
control_msg_cb(struct peer *p, const uint8_t *body, size_t len, int *fds, int nfds,
    void *arg, struct err *e)
{
	struct control_client *cl = arg;
	struct frame_alloc fa;
	Farmd__AdminMsg *msg;
	int rc = 0;

	(void)p;
	msg = (Farmd__AdminMsg *)frame_unpack(&farmd__admin_msg__descriptor, body, len,
	    &fa, e);
	if (msg == NULL) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return -1;
	}
	if (!cl->greeted) {
		if (msg->m_case != FARMD__ADMIN_MSG__M_HELLO)
			rc = control_refuse(cl, "protocol error: the first message must be a hello", e);
		else if (msg->hello->version != WIRE_VERSION) {
			char why[128];

			snprintf(why, sizeof(why), "protocol version %u is not supported "
			    "(farmd speaks %u)", msg->hello->version, WIRE_VERSION);
			rc = control_refuse(cl, why, e);
		} else {
			Farmd__AdminMsg out = FARMD__ADMIN_MSG__INIT;
			Farmd__AdminHello h = FARMD__ADMIN_HELLO__INIT;

			h.version = WIRE_VERSION;
			out.m_case = FARMD__ADMIN_MSG__M_HELLO;
			out.hello = &h;
			peer_send(cl->peer, &out.base);
			cl->greeted = 1;
		}
	} else if (msg->m_case == FARMD__ADMIN_MSG__M_REQUEST && cl->req == NULL) {
		rc = control_request(cl, msg->request, fds, nfds, e);
		nfds = rc == 0 ? 0 : nfds;
	} else {
		rc = err_set(e, "unexpected message (case %d)", (int)msg->m_case);
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	protobuf_c_message_free_unpacked(&msg->base, &fa.pb);
	return rc;
}

static void
control_close_cb(struct peer *p, enum peer_close how, const char *reason, void *arg)
{
	struct control_client *cl = arg;

	(void)p;
	/* The client leaving, or us dropping a refused one, is no error. */
	if (how == PEER_FAILED) {
		cl->c->stats.protocol_errors++;
		log_warn("admin client pid %d uid %u: %s; disconnected", (int)cl->pid,
		    (unsigned)cl->uid, reason);
	}
	control_client_free(cl);
}

/* Root and the daemon's own user may do everything; then admin_group,
 * then monitor_group, by primary or supplementary group. */
static enum control_access
control_access_of(struct control *c, int fd, const struct ucred *cred)
{
	gid_t groups[CONTROL_MAX_GROUPS];
	socklen_t len = sizeof(groups);
	int n, admin = 0, monitor = 0;

	if (cred->uid == 0 || cred->uid == geteuid())
		return ACCESS_ADMIN;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
		len = 0;
	n = (int)(len / sizeof(gid_t));
	for (int i = -1; i < n; i++) {
		gid_t g = i < 0 ? cred->gid : groups[i];

		admin |= c->have_admin_gid && g == c->admin_gid;
		monitor |= c->have_monitor_gid && g == c->monitor_gid;
	}
	return admin ? ACCESS_ADMIN : monitor ? ACCESS_MONITOR : ACCESS_NONE;
}

static void
control_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct control *c = arg;
	struct control_client *cl, *o;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct err e;
	uint32_t same = 0;
	int fd;

	(void)what;
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE) {
			/* The listener stays readable: stop watching it for a
			 * moment instead of spinning. */
			struct timeval tv = clock_tv(CONTROL_EMFILE_PAUSE_MS);

			log_warn("admin socket: accept: %s; pausing new connections",
			    strerror(errno));
			event_del(c->ev);
			evtimer_add(c->resume_ev, &tv);
		} else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			log_warn("admin socket: accept: %s", strerror(errno));
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		log_warn("admin socket: SO_PEERCRED: %s", strerror(errno));
		close(fd);
		return;
	}
	if ((cl = calloc(1, sizeof(*cl))) == NULL) {
		close(fd);
		return;
	}
	cl->c = c;
	cl->uid = cred.uid;
	cl->gid = cred.gid;
	cl->pid = cred.pid;
	cl->access = control_access_of(c, fd, &cred);
	cl->peer = peer_new(c->d->base, fd, CONTROL_MAX_FRAME, control_msg_cb,
	    control_close_cb, cl);
	if (cl->peer == NULL) {
		close(fd);
		free(cl);
		return;
	}
	peer_set_out_limit(cl->peer, CONTROL_MAX_QUEUED);
	TAILQ_FOREACH(o, &c->clients, entry)
		same += o->uid == cl->uid;
	TAILQ_INSERT_TAIL(&c->clients, cl, entry);
	c->nclients++;
	if (same >= c->d->cfg.daemon.admin_clients_per_uid && cred.uid != 0) {
		char why[160];

		snprintf(why, sizeof(why), "too many admin connections for uid %u (limit %u)",
		    (unsigned)cred.uid, c->d->cfg.daemon.admin_clients_per_uid);
		log_warn("admin client pid %d: %s", (int)cred.pid, why);
		control_refuse(cl, why, &e);
		/* Close once the refusal is written: stop reading, and let
		 * the kernel deliver what is queued before we drop it. */
		peer_end(cl->peer, "refused");
	}
}

static void
control_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct control *c = arg;

	(void)fd;
	(void)what;
	if (c->ev != NULL)
		event_add(c->ev, NULL);
}

static int
control_group(const char *name, gid_t *gid, int *have, struct err *e)
{
	struct group gr, *res = NULL;
	char buf[4096];

	*have = 0;
	if (name[0] == '\0')
		return 0;
	if (getgrnam_r(name, &gr, buf, sizeof(buf), &res) != 0 || res == NULL)
		return err_set(e, "group '%s' does not exist", name);
	*gid = gr.gr_gid;
	*have = 1;
	return 0;
}

/* A path that accepts connections belongs to a live farmd; one that
 * refuses is a stale socket from a crash and is removed. */
static int
control_claim_path(const char *path, struct err *e)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, rc;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : err_sys(e, "admin socket %s", path);
	if (!S_ISSOCK(st.st_mode))
		return err_set(e, "admin socket %s exists and is not a socket", path);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return err_sys(e, "socket");
	rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	if (rc == 0)
		return err_set(e, "admin socket %s is live: another farmd is running", path);
	if (unlink(path) < 0 && errno != ENOENT)
		return err_sys(e, "remove stale admin socket %s", path);
	return 0;
}

struct control *
control_new(struct farmd *d, const char *path, control_dispatch_cb dispatch,
    void *dispatch_arg, struct err *e)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct control *c;
	gid_t sock_gid;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		err_set(e, "admin socket path %s is longer than %zu bytes", path,
		    sizeof(sa.sun_path) - 1);
		return NULL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		err_set(e, "out of memory");
		return NULL;
	}
	c->d = d;
	c->dispatch = dispatch;
	c->dispatch_arg = dispatch_arg;
	c->fd = -1;
	TAILQ_INIT(&c->clients);
	TAILQ_INIT(&c->reqs);
	snprintf(c->path, sizeof(c->path), "%s", path);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (control_group(d->cfg.daemon.admin_group, &c->admin_gid, &c->have_admin_gid, e) < 0 ||
	    control_group(d->cfg.daemon.monitor_group, &c->monitor_gid, &c->have_monitor_gid, e) < 0 ||
	    control_claim_path(path, e) < 0)
		goto fail;
	if ((c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0) {
		err_sys(e, "socket");
		goto fail;
	}
	if (bind(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err_sys(e, "bind admin socket %s", path);
		goto fail;
	}
	/* The socket's group is the one whose members connect without being
	 * root or us: monitor_group if set (status, metrics), else
	 * admin_group.  Access is then decided per request from the peer's
	 * credentials, not from the file mode. */
	sock_gid = c->have_monitor_gid ? c->monitor_gid : c->have_admin_gid ?
	    c->admin_gid : (gid_t)-1;
	if ((sock_gid != (gid_t)-1 && chown(path, (uid_t)-1, sock_gid) < 0) ||
	    chmod(path, 0660) < 0) {
		err_sys(e, "admin socket %s: set owner/mode", path);
		goto fail;
	}
	if (listen(c->fd, 64) < 0) {
		err_sys(e, "listen on %s", path);
		goto fail;
	}
	c->ev = event_new(d->base, c->fd, EV_READ | EV_PERSIST, control_accept_cb, c);
	c->resume_ev = evtimer_new(d->base, control_resume_cb, c);
	if (c->ev == NULL || c->resume_ev == NULL || event_add(c->ev, NULL) < 0) {
		err_set(e, "cannot watch admin socket");
		goto fail;
	}
	return c;
fail:
	if (c->fd >= 0) {
		close(c->fd);
		unlink(path);
	}
	if (c->ev != NULL)
		event_free(c->ev);
	if (c->resume_ev != NULL)
		event_free(c->resume_ev);
	free(c);
	return NULL;
}

void
control_close_listener(struct control *c)
{
	if (c == NULL)
		return;
	c->draining = 1;
	if (c->fd < 0)
		return;
	event_free(c->ev);
	c->ev = NULL;
	event_free(c->resume_ev);
	c->resume_ev = NULL;
	close(c->fd);
	c->fd = -1;
	unlink(c->path);
}

void
control_free(struct control *c)
{
	struct control_client *cl;
	struct control_req *req;

	if (c == NULL)
		return;
	control_close_listener(c);
	while ((cl = TAILQ_FIRST(&c->clients)) != NULL)
		control_client_free(cl);
	while ((req = TAILQ_FIRST(&c->reqs)) != NULL) {
		TAILQ_REMOVE(&c->reqs, req, pending);
		req->c = NULL;
	}
	free(c);
}

void
control_stats(const struct control *c, struct control_stats *s)
{
	*s = c->stats;
	s->clients = c->nclients;
}
