/*
 * words.c: matching argument vectors against space-separated command
 * words.  A word matches only as a whole ("block" never matches "blo").
 */
#include "words.h"

#include <string.h>

int
words_match(const char *words, int argc, char *const *argv)
{
	const char *w = words;
	int i = 0;

	while (*w != '\0') {
		size_t n = strcspn(w, " ");

		if (i >= argc || strlen(argv[i]) != n || strncmp(argv[i], w, n) != 0)
			return 0;
		i++;
		w += n;
		w += *w == ' ';
	}
	return i;
}

int
words_count(const char *s)
{
	int n = 0;

	for (s += strspn(s, " "); *s != '\0'; s += strspn(s, " ")) {
		s += strcspn(s, " ");
		n++;
	}
	return n;
}
