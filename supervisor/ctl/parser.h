/*
 * parser.h: farmctl's command grammar, one table row per command (the
 * shape of relayctl's parser.c).  A row gives the command words, its
 * arguments with their kinds, the output it passes and a line of help;
 * from it come the choice of command, which arguments are files to open
 * or directories to make absolute, whether the output descriptor is
 * passed, and `farmctl help`.
 *
 * farmd stays the judge of its own requests: farmctl sends every request
 * as typed (after making DIRs absolute) and farmd checks arity and
 * values, so its answers do not depend on this table.  farmctl itself
 * judges only the commands it runs locally.
 */
#ifndef FARMD_CTL_PARSER_H
#define FARMD_CTL_PARSER_H

#include <stddef.h>
#include <stdio.h>

/* What farmctl does with an argument. */
enum parse_kind {
	PARSE_WORD,             /* sent as typed; farmd reads it */
	PARSE_NUMBER,           /* digits; local rows check it, farmd its range */
	PARSE_HASH,             /* a block hash (or prefix); farmd resolves it */
	PARSE_FILE,             /* opened here: farmd reads it through the
	                         * descriptor, with the caller's permissions */
	PARSE_DIR,              /* made absolute: farmd's working directory is
	                         * not the caller's */
	PARSE_PATH,             /* a file or a directory of them, expanded here */
};

#define PARSE_OPT  0x1          /* optional: [NAME] */
#define PARSE_MANY 0x2          /* repeats: NAME... */

/* An argument.  A name that starts with '-' is an option, "--sectors N":
 * the option word and its value words, anywhere after the command words.
 * Otherwise a positional, one slot per word of its name ("N R P" is
 * three), in table order. */
struct parse_arg {
	const char *name;
	enum parse_kind kind;   /* of each word (of an option: of its value) */
	unsigned flags;
};

/* Where the answer's bytes go; both take -o FILE, else stdout. */
enum parse_output {
	PARSE_OUT_NONE,
	PARSE_OUT_REPLY,        /* farmd sends them back, farmctl writes them */
	PARSE_OUT_PASS,         /* the descriptor is passed, farmd writes it */
};

/* Who runs the command: farmd (one request), or farmctl itself. */
enum parse_action {
	PARSE_REQUEST,
	PARSE_HELP,
	PARSE_CHAIN,            /* chain generate */
	PARSE_INGEST_AT,        /* history ingest HEIGHT FILE */
	PARSE_INGEST,           /* history ingest PATH... */
	PARSE_FOLLOW,           /* plot --follow */
	PARSE_NACTIONS
};

#define PARSE_MAX_ARGS 6

struct parse_cmd {
	const char *words;
	enum parse_action action;
	enum parse_output output;
	struct parse_arg args[PARSE_MAX_ARGS];  /* up to the first NULL name */
	const char *help;
};

struct parse_result {
	const struct parse_cmd *cmd;    /* NULL: no row, sent as typed */
	int nwords;                     /* argv entries cmd->words takes */
	enum parse_kind *kinds;         /* the caller's, argc entries: of each
	                                 * argv entry (words and the unknown
	                                 * are PARSE_WORD) */
};

/*
 * Finds the row for argv and fills res->kinds (the caller points it at
 * argc entries).  Of the rows whose
 * words argv starts with, the longest wins; a local row only if its
 * arguments fit (count, numbers), else a shorter one; rows with the same
 * words are alternatives, tried in table order.  Returns 0, or -1 when
 * rows matched but no local one fit: a usage error, res->cmd is the
 * longest row matched (for parse_usage).
 */
int parse(int argc, char **argv, struct parse_result *res);

/* "usage: farmctl ..." for every row with these words. */
void parse_usage(FILE *f, const char *words);

/* The whole grammar: global options, one line per row, the socket rule. */
void parse_help(FILE *f, const char *default_socket);

/* The rows themselves, *n of them, for what else is derived from them
 * (complete.c). */
const struct parse_cmd *parse_table(size_t *n);

/* Is a an option ("--sectors N") rather than a positional? */
int parse_is_option(const struct parse_arg *a);

/* The argument positional slot k of c belongs to (NULL: none, a word),
 * and how many slots are required (*min) and allowed (*max, INT_MAX with
 * a repeating argument). */
const struct parse_arg *parse_slot(const struct parse_cmd *c, int k, int *min, int *max);

/* c's option that `word` names ("--sectors" of "--sectors N"), or NULL. */
const struct parse_arg *parse_option(const struct parse_cmd *c, const char *word);

#endif
