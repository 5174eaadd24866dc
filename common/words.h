/*
 * words.h: command words, shared by farmd's command table (cmd.c) and
 * farmctl's grammar (ctl/parser.c), so both processes agree on what
 * "the command `block put`" means for an argument vector.
 */
#ifndef FARMD_WORDS_H
#define FARMD_WORDS_H

/* Number of argv[] entries that spell `words` (single spaces between
 * words), or 0 when argv does not start with all of them. */
int words_match(const char *words, int argc, char *const *argv);

/* Number of space-separated words in s ("N R P" is 3, "" is 0). */
int words_count(const char *s);

#endif
