/*
 * complete.h: shell completion from farmctl's grammar table (parser.c),
 * the only source of truth: `farmctl --complete WORD...` prints the
 * candidates for the last WORD, and the bash completion script
 * (contrib/bash-completion/farmctl) is a few lines that call it.
 */
#ifndef FARMD_CTL_COMPLETE_H
#define FARMD_CTL_COMPLETE_H

#include <stdio.h>

/*
 * argv: the words typed after `farmctl`, the last one the word being
 * completed (possibly empty; argc 0 means one empty word).  Prints one
 * candidate per line that starts with that word, in table order without
 * repeats, plus the directives ":file" (complete file and directory
 * names) and ":dir" (directory names) where an argument is a path.
 * Returns 0.
 */
int complete_print(FILE *f, int argc, char **argv);

#endif
