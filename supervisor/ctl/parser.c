/*
 * parser.c: farmctl's grammar table and what is derived from it.
 * Invariants: every command farmctl knows is one row of cmds[]; nothing
 * else in farmctl names a command's arguments (complete.c reads the rows
 * through parse_table).  No command word starts with ':' (complete.c's
 * directives do).  Adding a command is a row here plus its handler in
 * farmd (cmd.c's table and a cmd_*.c), or plus an action in farmctl.c if
 * farmctl runs it itself; the shell completion follows by itself.
 *
 * Options ("--sectors N") are NAME VALUE pairs and may stand anywhere
 * after the command words, as farmd's and chain generate's own parsers
 * read them; a '-' word a row does not declare is taken as an option
 * too, with one value, and left for farmd to report.  Rows without
 * options have only positionals, whatever they start with.
 */
#include "parser.h"

#include <limits.h>
#include <string.h>

#include "words.h"

#define A(name, kind)    { name, PARSE_##kind, 0 }
#define OPT(name, kind)  { name, PARSE_##kind, PARSE_OPT }
#define MANY(name, kind) { name, PARSE_##kind, PARSE_MANY }
#define NONE             { { NULL, 0, 0 } }
#define REQ              PARSE_REQUEST, PARSE_OUT_NONE

static const struct parse_cmd cmds[] = {
	{ "help", PARSE_HELP, PARSE_OUT_NONE, NONE, "this list" },
	{ "status", REQ, NONE, "farmd's state, plotting, pools and workers" },
	{ "workers", REQ, NONE, "one line per worker process" },
	{ "metrics", REQ, NONE, "the Prometheus exposition" },
	{ "shutdown", REQ, NONE, "stop farmd and its workers" },
	{ "block put", REQ, { A("FILE", FILE) }, "store FILE as a block; prints its hash" },
	{ "block get", PARSE_REQUEST, PARSE_OUT_PASS, { A("HASH", HASH) },
	    "write a block's bytes" },
	{ "block stat", REQ, { A("HASH", HASH) }, "size, references and state of a block" },
	{ "block rm", REQ, { A("HASH", HASH) }, "drop one reference to a block" },
	{ "block purge", REQ, { A("HASH", HASH) }, "delete a block whatever refers to it" },
	{ "block list-errors", REQ, NONE, "blocks waiting for a resync retry" },
	{ "block retry-now", REQ, { A("HASH", HASH) }, "retry a block's resync now" },
	{ "block retry-now --all", REQ, NONE, "retry every waiting block now" },
	{ "scrub start", REQ, NONE, "check every block and sector" },
	{ "scrub pause", REQ, NONE, "pause the scrub" },
	{ "scrub resume", REQ, NONE, "resume a paused scrub" },
	{ "scrub cancel", REQ, NONE, "stop the scrub" },
	{ "scrub status", REQ, NONE, "where the scrub is and what it found" },
	{ "history ingest", PARSE_INGEST_AT, PARSE_OUT_NONE,
	    { A("HEIGHT", NUMBER), A("FILE", FILE) }, "ingest one block file as HEIGHT" },
	{ "history ingest", PARSE_INGEST, PARSE_OUT_NONE, { MANY("PATH", PATH) },
	    "ingest NNNNNN.blk files, or directories of them" },
	{ "history status", REQ, NONE, "the archiver: height, pending, wanted" },
	{ "history segments", REQ, NONE, "archived segments and their roots" },
	{ "farm add", REQ, { A("DIR", DIR), A("--sectors N", NUMBER),
	    OPT("--profile demo|production", WORD) }, "create a farm in DIR and plot it" },
	{ "farm list", REQ, NONE, "farms and their state" },
	{ "sectors", REQ, { OPT("FARM", WORD) }, "the sectors of every farm, or of FARM" },
	{ "plot", REQ, NONE, "plotting progress" },
	{ "plot --follow", PARSE_FOLLOW, PARSE_OUT_NONE, NONE,
	    "show plotting progress until it is idle" },
	{ "sector read", PARSE_REQUEST, PARSE_OUT_REPLY, { A("FARM", WORD),
	    A("SECTOR", NUMBER), A("PIECE_OFFSET", NUMBER) }, "one plotted piece" },
	{ "artifact list", REQ, NONE, "validation-code artifacts and their state" },
	{ "artifact prepare", REQ, { A("FILE", FILE) }, "compile a Lua source; prints its id" },
	{ "artifact prune", REQ, NONE, "remove stale artifacts over [artifacts] cache_limit" },
	{ "cluster status", REQ, NONE, "the NATS connection, counters and peers" },
	{ "cluster peers", REQ, NONE, "the peers heard from, their roles and last seen" },
	{ "chain generate", PARSE_CHAIN, PARSE_OUT_NONE, { A("--blocks N", NUMBER),
	    OPT("--body-size BYTES", NUMBER), OPT("--code FILE@HEIGHT", WORD),
	    OPT("--seed SEED", WORD), A("--out DIR", DIR) },
	    "write a synthetic chain (needs no farmd)" },
	{ "debug encode", PARSE_REQUEST, PARSE_OUT_REPLY, { A("SECTOR_ID", HASH),
	    A("OFFSET", NUMBER), A("FILE", FILE), OPT("N R P", NUMBER) },
	    "one piece through an encode worker" },
	{ "debug echo", REQ, { A("SIZE", NUMBER), OPT("COUNT", NUMBER) },
	    "IPC round trips through an encode worker" },
	{ "debug fault", REQ, { A("KIND", WORD), A("FAULT", WORD) },
	    "arm a worker fault (fault-injection builds)" },
	{ "debug fault plot write", REQ, NONE, "fail the next sector write (idem)" },
	{ "debug fault block", REQ, { A("commit|slow-delete", WORD) },
	    "arm a block store fault (idem)" },
	{ "debug fault plotter wrong-piece", REQ, NONE,
	    "the next remote sector served has every piece wrong (idem)" },
	{ "debug fault cluster lie", REQ, NONE,
	    "answer peers' block requests with flipped bytes (idem)" },
	{ "debug fault scrub slow", REQ, NONE,
	    "the scrub sleeps at least 5 ms per item until restart (idem)" },
};

#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))
#define PARSE_HELP_COLUMN 36            /* width of the usage column of help */

const struct parse_cmd *
parse_table(size_t *n)
{
	*n = NCMDS;
	return cmds;
}

int
parse_is_option(const struct parse_arg *a)
{
	return a->name[0] == '-';
}

static int
parse_has_options(const struct parse_cmd *c)
{
	for (const struct parse_arg *a = c->args; a < c->args + PARSE_MAX_ARGS && a->name; a++)
		if (parse_is_option(a))
			return 1;
	return 0;
}

const struct parse_arg *
parse_slot(const struct parse_cmd *c, int k, int *min, int *max)
{
	const struct parse_arg *slot = NULL;
	int at = 0;

	*min = 0;
	for (const struct parse_arg *a = c->args; a < c->args + PARSE_MAX_ARGS && a->name; a++) {
		int end = at + words_count(a->name);

		if (parse_is_option(a))
			continue;
		if (k >= at && (k < end || a->flags & PARSE_MANY))
			slot = a;
		if (!(a->flags & PARSE_OPT))
			*min = end;
		at = a->flags & PARSE_MANY ? INT_MAX : end;
	}
	*max = at;
	return slot;
}

const struct parse_arg *
parse_option(const struct parse_cmd *c, const char *word)
{
	for (const struct parse_arg *a = c->args; a < c->args + PARSE_MAX_ARGS && a->name; a++) {
		size_t n = strcspn(a->name, " ");

		if (parse_is_option(a) && strlen(word) == n && strncmp(a->name, word, n) == 0)
			return a;
	}
	return NULL;
}

/*
 * Gives each argument after the words its kind.  Returns 0 if the
 * arguments fit the row (positional count in range, numbers are digits),
 * -1 if not; only local rows are held to that.
 */
static int
parse_walk(const struct parse_cmd *c, int nw, int argc, char **argv,
    enum parse_kind *kinds)
{
	int options = parse_has_options(c), k = 0, min, max, fit = 0;

	for (int i = nw; i < argc; i++) {
		const struct parse_arg *o;
		int nval;

		if (options && argv[i][0] == '-') {
			o = parse_option(c, argv[i]);
			nval = o ? words_count(o->name) - 1 : 1;
			for (; nval > 0 && i + 1 < argc; nval--)
				kinds[++i] = o ? o->kind : PARSE_WORD;
			continue;
		}
		o = parse_slot(c, k++, &min, &max);
		kinds[i] = o ? o->kind : PARSE_WORD;
		/* farmd checks the range; the empty word passes as it always did. */
		if (kinds[i] == PARSE_NUMBER && argv[i][strspn(argv[i], "0123456789")] != '\0')
			fit = -1;
	}
	parse_slot(c, 0, &min, &max);
	return k < min || k > max ? -1 : fit;
}

int
parse(int argc, char **argv, struct parse_result *res)
{
	enum parse_kind *kinds = res->kinds;
	const struct parse_cmd *longest = NULL;
	int longest_nw = 0;

	res->cmd = NULL;
	res->nwords = 0;
	for (size_t i = 0; i < NCMDS; i++) {
		const struct parse_cmd *c = &cmds[i];
		int nw = words_match(c->words, argc, argv);

		if (nw > longest_nw) {
			longest = c;
			longest_nw = nw;
		}
		if (nw > res->nwords && (c->action == PARSE_REQUEST ||
		    parse_walk(c, nw, argc, argv, kinds) == 0)) {
			res->cmd = c;
			res->nwords = nw;
		}
	}
	for (int k = 0; k < argc; k++)
		kinds[k] = PARSE_WORD;
	if (res->cmd != NULL) {
		parse_walk(res->cmd, res->nwords, argc, argv, kinds);
		return 0;
	}
	res->cmd = longest;
	res->nwords = longest_nw;
	return longest != NULL ? -1 : 0;
}

/* The row as the usage shows it: "block get HASH [-o FILE]". */
static void
parse_line(const struct parse_cmd *c, char *buf, size_t len)
{
	size_t n = (size_t)snprintf(buf, len, "%s", c->words);

	for (const struct parse_arg *a = c->args; a < c->args + PARSE_MAX_ARGS && a->name &&
	    n < len; a++)
		n += (size_t)snprintf(buf + n, len - n, " %s%s%s%s", a->flags & PARSE_OPT ? "[" : "",
		    a->name, a->flags & PARSE_MANY ? "..." : "", a->flags & PARSE_OPT ? "]" : "");
	if (c->output != PARSE_OUT_NONE && n < len)
		snprintf(buf + n, len - n, " [-o FILE]");
}

void
parse_usage(FILE *f, const char *words)
{
	const char *lead = "usage:";
	char line[256];

	for (size_t i = 0; i < NCMDS; i++) {
		if (strcmp(cmds[i].words, words) != 0)
			continue;
		parse_line(&cmds[i], line, sizeof(line));
		fprintf(f, "%s farmctl %s\n", lead, line);
		lead = "      ";
	}
}

void
parse_help(FILE *f, const char *default_socket)
{
	char line[256];

	fprintf(f, "usage: farmctl [-s SOCKET] [--json] COMMAND [ARGS]\ncommands:\n");
	for (size_t i = 0; i < NCMDS; i++) {
		parse_line(&cmds[i], line, sizeof(line));
		if (strlen(line) > PARSE_HELP_COLUMN)
			fprintf(f, "  %s\n  %-*s %s\n", line, PARSE_HELP_COLUMN, "", cmds[i].help);
		else
			fprintf(f, "  %-*s %s\n", PARSE_HELP_COLUMN, line, cmds[i].help);
	}
	fprintf(f, "the socket is -s, else $FARMD_SOCKET, else %s\n", default_socket);
}
