/*
 * complete.c: the candidates for the word being completed, read off the
 * grammar table (parser.c) and nothing else, so a new row completes
 * without touching the shell script.
 *
 * What is offered where (the words as farmctl's own parsers read them):
 *   before the command   farmctl's global options (-s takes a path);
 *   in the command words the next word of every row the typed words start;
 *   after a row's words  its options not typed yet, --json, -o (rows with
 *                        output), and for the slot due: the alternatives
 *                        of a "a|b" name, ":file" for FILE and PATH,
 *                        ":dir" for DIR; an option's value likewise.
 * Rows with the same words are alternatives, so their candidates add up
 * ("history ingest" offers files for HEIGHT FILE and for PATH...).
 * Completion runs no request: it must not need a running farmd.
 */
#include "complete.h"

#include <string.h>

#include "parser.h"
#include "words.h"

#define COMPLETE_MAX 256                /* distinct candidates printed */

struct complete {
	FILE *f;
	const char *cur;                /* the word being completed */
	struct { const char *p; size_t n; } seen[COMPLETE_MAX];
	int nseen;
};

/* Prints w (n bytes) once, if it starts with the current word;
 * directives (":file") whatever the word. */
static void
complete_offer(struct complete *c, const char *w, size_t n)
{
	size_t lc = strlen(c->cur);

	if (w[0] != ':' && (n < lc || strncmp(w, c->cur, lc) != 0))
		return;
	for (int i = 0; i < c->nseen; i++)
		if (c->seen[i].n == n && strncmp(c->seen[i].p, w, n) == 0)
			return;
	if (c->nseen == COMPLETE_MAX)
		return;
	c->seen[c->nseen].p = w;
	c->seen[c->nseen++].n = n;
	fprintf(c->f, "%.*s\n", (int)n, w);
}

static void
complete_word(struct complete *c, const char *w)
{
	complete_offer(c, w, strlen(w));
}

/* Word i of a space-separated list, *n its length; NULL past the end. */
static const char *
complete_nth(const char *s, int i, size_t *n)
{
	for (s += strspn(s, " "); *s != '\0'; s += strspn(s, " ")) {
		*n = strcspn(s, " ");
		if (i-- == 0)
			return s;
		s += *n;
	}
	return NULL;
}

/* A value of this kind, its placeholder `name` (n bytes): "a|b" offers a
 * and b, paths a directive. */
static void
complete_value(struct complete *c, enum parse_kind kind, const char *name, size_t n)
{
	const char *bar = memchr(name, '|', n), *end = name + n;

	if (kind == PARSE_FILE || kind == PARSE_PATH) {
		complete_word(c, ":file");
	} else if (kind == PARSE_DIR) {
		complete_word(c, ":dir");
	} else if (bar != NULL) {
		for (const char *p = name; p < end; p = bar + 1) {
			bar = memchr(p, '|', (size_t)(end - p));
			if (bar == NULL)
				bar = end;
			complete_offer(c, p, (size_t)(bar - p));
		}
	}
}

/* Was option word o (n bytes) typed among args? */
static int
complete_typed(char **args, int nargs, const char *o, size_t n)
{
	for (int j = 0; j < nargs; j++)
		if (strlen(args[j]) == n && strncmp(args[j], o, n) == 0)
			return 1;
	return 0;
}

/* After row r's words: args are the complete words typed since. */
static void
complete_args(struct complete *c, const struct parse_cmd *r, char **args, int nargs)
{
	const struct parse_arg *opt = NULL, *slot;
	int k = 0, left = 0, options = 0, min, max;
	size_t n;

	for (const struct parse_arg *a = r->args; a < r->args + PARSE_MAX_ARGS && a->name; a++)
		options |= parse_is_option(a);
	/* As parse_walk reads them: an option takes its value words. */
	for (int j = 0; j < nargs; j++) {
		if (left > 0) {
			left--;
			continue;
		}
		if (options && args[j][0] == '-') {
			opt = parse_option(r, args[j]);
			left = opt ? words_count(opt->name) - 1 : 1;
			continue;
		}
		k++;
	}
	if (left > 0) {
		const char *w;

		if (opt != NULL &&
		    (w = complete_nth(opt->name, words_count(opt->name) - left, &n)) != NULL)
			complete_value(c, opt->kind, w, n);
		return;
	}
	for (const struct parse_arg *a = r->args; a < r->args + PARSE_MAX_ARGS && a->name; a++) {
		n = strcspn(a->name, " ");
		if (parse_is_option(a) && !complete_typed(args, nargs, a->name, n))
			complete_offer(c, a->name, n);
	}
	if (c->cur[0] == '-') {
		complete_word(c, "--json");
		if (r->output != PARSE_OUT_NONE)
			complete_word(c, "-o");
	}
	slot = parse_slot(r, k, &min, &max);
	if (slot != NULL && k < max)
		complete_value(c, slot->kind, slot->name, strlen(slot->name));
}

int
complete_print(FILE *f, int argc, char **argv)
{
	static const char *const globals[] = { "-s", "--json", "--help", "--version" };
	struct complete c = { .f = f, .cur = argc > 0 ? argv[argc - 1] : "" };
	char *words[argc > 0 ? argc : 1];
	int ntyped = argc > 0 ? argc - 1 : 0, i = 0, m = 0;
	const struct parse_cmd *rows;
	size_t nrows;

	/* Global options first, as ctl_options reads them. */
	for (; i < ntyped && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "-s") == 0 && ++i == ntyped) {
			complete_word(&c, ":file");
			return 0;
		}
	}
	/* --json and -o FILE may stand anywhere after the command. */
	for (; i < ntyped; i++) {
		if (strcmp(argv[i], "--json") == 0)
			continue;
		if (m > 0 && strcmp(argv[i], "-o") == 0) {
			if (++i == ntyped) {
				complete_word(&c, ":file");
				return 0;
			}
			continue;
		}
		words[m++] = argv[i];
	}
	if (m == 0 && c.cur[0] == '-')
		for (size_t g = 0; g < sizeof(globals) / sizeof(globals[0]); g++)
			complete_word(&c, globals[g]);
	rows = parse_table(&nrows);
	for (size_t r = 0; r < nrows; r++) {
		int nw = words_count(rows[r].words), same = 0;
		const char *w;
		size_t n = 0;

		while (same < m && same < nw && (w = complete_nth(rows[r].words, same, &n)) != NULL &&
		    strlen(words[same]) == n && strncmp(words[same], w, n) == 0)
			same++;
		if (same == m && m < nw) {
			w = complete_nth(rows[r].words, m, &n);
			complete_offer(&c, w, n);
		} else if (same == nw) {
			complete_args(&c, &rows[r], words + nw, m - nw);
		}
	}
	return 0;
}
