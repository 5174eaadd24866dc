/*
 * farmctl: the operator's client.  Thin on purpose: it parses global
 * options, finds the command in its grammar (parser.c), opens the files
 * named on the command line (so farmd reads them with the caller's
 * permissions), sends one request per command and prints the answer:
 * farmd's text, or its JSON with --json.  A few commands run here
 * (ctl_actions[]); everything else, unknown commands included, goes to
 * farmd as typed, which judges it.  `farmctl --complete WORD...` (not in
 * the help: the shell's completion script calls it) prints the candidates
 * for the last WORD (complete.c).
 *
 * Exit codes: 0 success, 1 an error answered by farmd, 2 usage or cannot
 * connect.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "admin.pb-c.h"
#include "chain.h"
#include "complete.h"
#include "frame.h"
#include "parser.h"
#include "wire.h"

#define CTL_DEFAULT_SOCKET "/var/lib/farmd/farmd.sock"
#define CTL_MAX_FRAME (1u << 30)

enum { EXIT_OK = 0, EXIT_FARMD = 1, EXIT_USAGE = 2 };

struct ctl {
	const char *socket;
	int json;
	const char *out_path;           /* -o FILE */
	int fd;
};

static void __attribute__((noreturn, format(printf, 2, 3)))
die(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("farmctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

static Farmd__AdminMsg *
ctl_recv(struct ctl *c, struct frame_alloc *fa, uint8_t **body)
{
	Farmd__AdminMsg *m;
	size_t len;
	int fds[FRAME_MAX_FDS], nfds = 0, rc;
	struct err e;

	rc = frame_recv(c->fd, CTL_MAX_FRAME, body, &len, fds, &nfds, &e);
	if (rc == 1)
		die(EXIT_USAGE, "%s: farmd closed the connection", c->socket);
	if (rc < 0)
		die(EXIT_USAGE, "%s: %s", c->socket, e.msg);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	m = (Farmd__AdminMsg *)frame_unpack(&farmd__admin_msg__descriptor, *body, len, fa, &e);
	if (m == NULL)
		die(EXIT_USAGE, "%s: %s", c->socket, e.msg);
	return m;
}

static void
ctl_connect(struct ctl *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	Farmd__AdminMsg msg = FARMD__ADMIN_MSG__INIT, *in;
	Farmd__AdminHello hello = FARMD__ADMIN_HELLO__INIT;
	struct frame_alloc fa;
	struct err e;
	uint8_t *body;

	if (strlen(c->socket) >= sizeof(sa.sun_path))
		die(EXIT_USAGE, "socket path %s is too long", c->socket);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", c->socket);
	if ((c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		die(EXIT_USAGE, "socket: %s", strerror(errno));
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die(EXIT_USAGE, "cannot connect to %s: %s (is farmd running? use -s or "
		    "FARMD_SOCKET)", c->socket, strerror(errno));
	hello.version = WIRE_VERSION;
	msg.m_case = FARMD__ADMIN_MSG__M_HELLO;
	msg.hello = &hello;
	/* farmd may refuse us before reading the hello (too many
	 * connections); its refusal is then waiting in our receive buffer,
	 * so read before giving up on a failed send. */
	if (frame_send_msg(c->fd, &msg.base, NULL, 0, &e) < 0 && errno != EPIPE &&
	    errno != ECONNRESET)
		die(EXIT_USAGE, "%s: %s", c->socket, e.msg);
	in = ctl_recv(c, &fa, &body);
	if (in->m_case == FARMD__ADMIN_MSG__M_RESPONSE)
		die(EXIT_FARMD, "%s", in->response->error);
	if (in->m_case != FARMD__ADMIN_MSG__M_HELLO || in->hello->version != WIRE_VERSION)
		die(EXIT_USAGE, "%s: farmd answered with an unexpected hello", c->socket);
	protobuf_c_message_free_unpacked(&in->base, &fa.pb);
	free(body);
}

/* Makes the command's DIR arguments absolute and opens its files, the
 * output first if farmd writes it.  Returns the count of descriptors;
 * *abs (the caller frees each) holds the paths made here. */
static int
ctl_open_files(struct ctl *c, const struct parse_result *res, int argc, char **argv,
    int *fds, char **abs)
{
	const enum parse_kind *kinds = res->kinds;
	char cwd[PATH_MAX];
	int n = 0;

	if (res->cmd != NULL && res->cmd->output == PARSE_OUT_PASS) {
		fds[n] = c->out_path == NULL ? dup(STDOUT_FILENO) :
		    open(c->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fds[n] < 0)
			die(EXIT_USAGE, "%s: %s", c->out_path ? c->out_path : "stdout",
			    strerror(errno));
		n++;
	}
	for (int a = 0; a < argc; a++) {
		abs[a] = NULL;
		if (kinds[a] == PARSE_DIR && argv[a][0] != '/') {
			if (getcwd(cwd, sizeof(cwd)) == NULL)
				die(EXIT_USAGE, "getcwd: %s", strerror(errno));
			if (asprintf(&abs[a], "%s/%s", cwd, argv[a]) < 0)
				die(EXIT_USAGE, "out of memory");
			argv[a] = abs[a];
		}
		if (kinds[a] != PARSE_FILE)
			continue;
		if (n == FRAME_MAX_FDS)
			die(EXIT_USAGE, "at most %d files per command", FRAME_MAX_FDS);
		if ((fds[n] = open(argv[a], O_RDONLY | O_CLOEXEC)) < 0)
			die(EXIT_USAGE, "%s: %s", argv[a], strerror(errno));
		n++;
	}
	return n;
}

static void
ctl_write_all(int fd, const uint8_t *p, size_t len, const char *what)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die(EXIT_USAGE, "write %s: %s", what, strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

/* Sends one request on the open connection and returns farmd's answer
 * (free it with protobuf_c_message_free_unpacked and *body with free). */
static Farmd__AdminMsg *
ctl_exchange(struct ctl *c, int argc, char **argv, int json, int *fds, int nfds,
    struct frame_alloc *fa, uint8_t **body)
{
	Farmd__AdminMsg msg = FARMD__ADMIN_MSG__INIT, *in;
	Farmd__AdminRequest req = FARMD__ADMIN_REQUEST__INIT;
	struct err e;

	req.n_argv = (size_t)argc;
	req.argv = argv;
	req.json = json;
	req.nfds = (uint32_t)nfds;
	msg.m_case = FARMD__ADMIN_MSG__M_REQUEST;
	msg.request = &req;
	if (frame_send_msg(c->fd, &msg.base, fds, nfds, &e) < 0)
		die(EXIT_USAGE, "%s: %s", c->socket, e.msg);
	in = ctl_recv(c, fa, body);
	if (in->m_case != FARMD__ADMIN_MSG__M_RESPONSE)
		die(EXIT_USAGE, "%s: farmd answered with an unexpected message", c->socket);
	return in;
}

/* One request on the open connection; prints the answer. */
static int
ctl_request(struct ctl *c, int argc, char **argv, int *fds, int nfds, int output)
{
	struct frame_alloc fa;
	uint8_t *body;
	Farmd__AdminMsg *in = ctl_exchange(c, argc, argv, c->json, fds, nfds, &fa, &body);
	Farmd__AdminResponse *r = in->response;
	int rc = EXIT_OK;

	if (r->warning[0])
		fprintf(stderr, "farmctl: warning: %s\n", r->warning);
	if (!r->ok) {
		fprintf(stderr, "farmctl: %s\n", r->error);
		rc = EXIT_FARMD;
	} else {
		if (!output && (r->data.len > 0 || c->out_path != NULL)) {
			int ofd = STDOUT_FILENO;

			if (c->out_path != NULL &&
			    (ofd = open(c->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
				die(EXIT_USAGE, "%s: %s", c->out_path, strerror(errno));
			ctl_write_all(ofd, r->data.data, r->data.len,
			    c->out_path ? c->out_path : "stdout");
			if (ofd != STDOUT_FILENO && close(ofd) < 0)
				die(EXIT_USAGE, "%s: %s", c->out_path, strerror(errno));
		}
		if (c->json && !(output && c->out_path == NULL))
			printf("%s\n", r->json[0] ? r->json : "{}");
		else if (r->data.len == 0 || c->out_path != NULL)
			fputs(r->text, stdout);
	}
	protobuf_c_message_free_unpacked(&in->base, &fa.pb);
	free(body);
	if (fflush(stdout) != 0)
		die(EXIT_USAGE, "stdout: %s", strerror(errno));
	return rc;
}

/* A request whose JSON answer farmctl uses itself: the JSON text
 * (caller frees), or NULL after printing farmd's error. */
static char *
ctl_request_json(struct ctl *c, int argc, char **argv)
{
	struct frame_alloc fa;
	uint8_t *body;
	Farmd__AdminMsg *in = ctl_exchange(c, argc, argv, 1, NULL, 0, &fa, &body);
	char *out = NULL;

	if (!in->response->ok)
		fprintf(stderr, "farmctl: %s\n", in->response->error);
	else if ((out = strdup(in->response->json)) == NULL)
		die(EXIT_USAGE, "out of memory");
	protobuf_c_message_free_unpacked(&in->base, &fa.pb);
	free(body);
	return out;
}

/* A command farmd runs: one request, with the files its row names. */
static int
ctl_run(struct ctl *c, const struct parse_result *res, int argc, char **argv)
{
	int fds[FRAME_MAX_FDS], nfds, rc;
	char **abs;

	if ((abs = calloc((size_t)argc, sizeof(char *))) == NULL)
		die(EXIT_USAGE, "out of memory");
	nfds = ctl_open_files(c, res, argc, argv, fds, abs);
	ctl_connect(c);
	rc = ctl_request(c, argc, argv, fds, nfds,
	    res->cmd != NULL && res->cmd->output == PARSE_OUT_PASS);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	for (int i = 0; i < argc; i++)
		free(abs[i]);
	free(abs);
	close(c->fd);
	return rc;
}

static int
ctl_cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The height a block file's name gives: NNNNNN.blk. */
static int
ctl_height_of(const char *path, char *out, size_t len)
{
	const char *base = strrchr(path, '/');
	size_t n;

	base = base ? base + 1 : path;
	n = strspn(base, "0123456789");
	if (n == 0 || strcmp(base + n, ".blk") != 0 || n >= len)
		return -1;
	memcpy(out, base, n);
	out[n] = '\0';
	return 0;
}

/* history ingest HEIGHT FILE (explicit), or history ingest PATH...
 * (files named NNNNNN.blk, or directories of them): one request per file
 * on one connection.  Exit 1 if any was refused. */
static int
ctl_history_ingest(struct ctl *c, int argc, char **argv, int explicit)
{
	char **files = NULL, height[32];
	size_t nfiles = 0, cap = 0;
	int rc = EXIT_OK;

	for (int i = explicit ? 1 : 0; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) < 0)
			die(EXIT_USAGE, "%s: %s", argv[i], strerror(errno));
		if (S_ISDIR(st.st_mode)) {
			DIR *dir = opendir(argv[i]);
			struct dirent *de;

			if (dir == NULL)
				die(EXIT_USAGE, "%s: %s", argv[i], strerror(errno));
			while ((de = readdir(dir)) != NULL) {
				size_t l = strlen(de->d_name);

				if (l < 5 || strcmp(de->d_name + l - 4, ".blk") != 0)
					continue;
				if (nfiles == cap && (files = realloc(files, (cap = cap ? cap * 2 : 256) *
				    sizeof(char *))) == NULL)
					die(EXIT_USAGE, "out of memory");
				if (asprintf(&files[nfiles++], "%s/%s", argv[i], de->d_name) < 0)
					die(EXIT_USAGE, "out of memory");
			}
			closedir(dir);
		} else {
			if (nfiles == cap && (files = realloc(files, (cap = cap ? cap * 2 : 256) *
			    sizeof(char *))) == NULL)
				die(EXIT_USAGE, "out of memory");
			if ((files[nfiles++] = strdup(argv[i])) == NULL)
				die(EXIT_USAGE, "out of memory");
		}
	}
	qsort(files, nfiles, sizeof(char *), ctl_cmp_str);
	for (size_t i = 0; i < nfiles; i++)
		if (!explicit && ctl_height_of(files[i], height, sizeof(height)) < 0)
			die(EXIT_USAGE, "%s: cannot tell its height (name it NNNNNN.blk, or use "
			    "history ingest HEIGHT FILE)", files[i]);
	ctl_connect(c);
	for (size_t i = 0; i < nfiles; i++) {
		char *rargv[4] = { "history", "ingest", height, files[i] };
		int fd = open(files[i], O_RDONLY | O_CLOEXEC);

		if (explicit)
			snprintf(height, sizeof(height), "%s", argv[0]);
		else
			ctl_height_of(files[i], height, sizeof(height));
		if (fd < 0) {
			fprintf(stderr, "farmctl: %s: %s\n", files[i], strerror(errno));
			rc = EXIT_FARMD;
			continue;
		}
		if (ctl_request(c, 4, rargv, &fd, 1, 0) != EXIT_OK)
			rc = EXIT_FARMD;
		close(fd);
		free(files[i]);
	}
	free(files);
	close(c->fd);
	return rc;
}

static int
ctl_ingest_at(struct ctl *c, const struct parse_result *res, int argc, char **argv)
{
	return ctl_history_ingest(c, argc - res->nwords, argv + res->nwords, 1);
}

static int
ctl_ingest(struct ctl *c, const struct parse_result *res, int argc, char **argv)
{
	return ctl_history_ingest(c, argc - res->nwords, argv + res->nwords, 0);
}

/* One line per farm: a bar on a terminal, plain text otherwise. */
static void
ctl_plot_render(json_t *o, int tty)
{
	json_t *f, *s;
	size_t i, k;

	json_array_foreach(json_object_get(o, "farms"), i, f) {
		long long total = json_integer_value(json_object_get(f, "sectors"));
		long long done = json_integer_value(json_object_get(f, "plotted"));
		long long id = json_integer_value(json_object_get(f, "id"));
		long long waiting = json_integer_value(json_object_get(f, "waiting_for_history"));
		char bar[41], flight[256] = "";
		size_t fl = 0;
		int w = total > 0 ? (int)(done * 40 / total) : 40;

		memset(bar, '#', (size_t)w);
		memset(bar + w, '.', (size_t)(40 - w));
		bar[40] = '\0';
		json_array_foreach(json_object_get(f, "in_flight"), k, s)
			if (fl < sizeof(flight) - 64)
				fl += (size_t)snprintf(flight + fl, sizeof(flight) - fl, " [%lld %s %lld/%lld]",
				    (long long)json_integer_value(json_object_get(s, "index")),
				    json_string_value(json_object_get(s, "phase")),
				    (long long)json_integer_value(json_object_get(s, "pieces_done")),
				    (long long)json_integer_value(json_object_get(s, "pieces_total")));
		if (tty)
			printf("\r\033[Kfarm %lld [%s] %lld/%lld%s%s", id, bar, done, total, flight,
			    waiting > 0 ? " waiting for history" : "");
		else
			printf("farm %lld: %lld/%lld sectors plotted, %lld queued%s\n", id, done,
			    total, (long long)json_integer_value(json_object_get(f, "queued")), flight);
		if (!tty && waiting > 0)
			printf("waiting for history: %lld sector%s in farm %lld\n", waiting,
			    waiting == 1 ? "" : "s", id);
		if (tty && i + 1 < json_array_size(json_object_get(o, "farms")))
			printf("\n");
	}
	fflush(stdout);
}

/* plot --follow: polls `plot` until plotting is idle with nothing
 * waiting for history: a farm added before any history keeps it
 * following (and saying so) until its sectors are plotted. */
static int
ctl_plot_follow(struct ctl *c, const struct parse_result *res, int argc, char **argv)
{
	char *rargv[1] = { "plot" };
	int tty = isatty(STDOUT_FILENO), nfarms = 0;
	char *last = NULL;

	(void)res;
	(void)argc;
	(void)argv;
	ctl_connect(c);
	for (;;) {
		json_t *o;
		json_error_t je;
		char *text;

		if ((text = ctl_request_json(c, 1, rargv)) == NULL)
			return EXIT_FARMD;
		if ((o = json_loads(text, 0, &je)) == NULL)
			die(EXIT_USAGE, "farmd sent bad JSON: %s", je.text);
		if (tty && nfarms > 1)
			printf("\033[%dA", nfarms - 1);
		nfarms = (int)json_array_size(json_object_get(o, "farms"));
		/* Plain output: a line when something changed. */
		if (tty || last == NULL || strcmp(last, text) != 0)
			ctl_plot_render(o, tty);
		free(last);
		last = text;
		if (json_is_true(json_object_get(o, "idle")) &&
		    json_integer_value(json_object_get(o, "waiting_for_history")) == 0) {
			printf("%splotting is idle\n", tty ? "\n" : "");
			json_decref(o);
			break;
		}
		json_decref(o);
		usleep(tty ? 200000 : 1000000);
	}
	free(last);
	close(c->fd);
	return EXIT_OK;
}

static int
ctl_chain(struct ctl *c, const struct parse_result *res, int argc, char **argv)
{
	(void)c;
	return chain_generate(argc - res->nwords, argv + res->nwords);
}

static int
ctl_help(struct ctl *c, const struct parse_result *res, int argc, char **argv)
{
	(void)c;
	(void)res;
	(void)argc;
	(void)argv;
	parse_help(stdout, CTL_DEFAULT_SOCKET);
	return EXIT_OK;
}

/* Who runs each action of the grammar (parser.h). */
static int (*const ctl_actions[PARSE_NACTIONS])(struct ctl *, const struct parse_result *,
    int, char **) = {
	[PARSE_REQUEST] = ctl_run,
	[PARSE_HELP] = ctl_help,
	[PARSE_CHAIN] = ctl_chain,
	[PARSE_INGEST_AT] = ctl_ingest_at,
	[PARSE_INGEST] = ctl_ingest,
	[PARSE_FOLLOW] = ctl_plot_follow,
};

static void __attribute__((noreturn))
usage(void)
{
	parse_help(stderr, CTL_DEFAULT_SOCKET);
	exit(EXIT_USAGE);
}

/* Global options come first; --json and -o may stand anywhere after the
 * command.  Returns the count of command words and arguments in args. */
static int
ctl_options(struct ctl *c, int argc, char **argv, char **args)
{
	int n = 0;

	for (int i = 1; i < argc; i++) {
		if (n == 0 && strcmp(argv[i], "-s") == 0 && i + 1 < argc)
			c->socket = argv[++i];
		else if (n == 0 && strncmp(argv[i], "--socket=", 9) == 0)
			c->socket = argv[i] + 9;
		else if (strcmp(argv[i], "--json") == 0)
			c->json = 1;
		else if (n == 0 && (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0))
			usage();
		else if (n == 0 && strcmp(argv[i], "--version") == 0) {
			printf("farmctl %s\n", FARMD_VERSION);
			exit(EXIT_OK);
		} else if (n > 0 && strcmp(argv[i], "-o") == 0 && i + 1 < argc)
			c->out_path = argv[++i];
		else if (n == 0 && argv[i][0] == '-')
			die(EXIT_USAGE, "unknown option '%s' (see farmctl --help)", argv[i]);
		else
			args[n++] = argv[i];
	}
	return n;
}

int
main(int argc, char **argv)
{
	struct ctl c = { 0 };
	struct parse_result res;
	char **args;
	int n, rc;

	if (argc >= 2 && strcmp(argv[1], "--complete") == 0)
		return complete_print(stdout, argc - 2, argv + 2) < 0 || fflush(stdout) != 0 ?
		    EXIT_USAGE : EXIT_OK;
	c.socket = getenv("FARMD_SOCKET");
	if ((args = calloc((size_t)argc + 1, sizeof(char *))) == NULL ||
	    (res.kinds = calloc((size_t)argc + 1, sizeof(*res.kinds))) == NULL)
		die(EXIT_USAGE, "out of memory");
	if ((n = ctl_options(&c, argc, argv, args)) == 0)
		usage();
	if (c.socket == NULL || c.socket[0] == '\0')
		c.socket = CTL_DEFAULT_SOCKET;
	if (parse(n, args, &res) < 0) {
		parse_usage(stderr, res.cmd->words);
		exit(EXIT_USAGE);
	}
	rc = ctl_actions[res.cmd != NULL ? res.cmd->action : PARSE_REQUEST](&c, &res, n, args);
	free(res.kinds);
	free(args);
	return rc;
}
