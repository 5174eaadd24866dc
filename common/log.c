#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Process-wide by nature: stderr is process-wide too. */
static struct {
	const char *ident;
	enum log_level level;
	int journal;
} logger = { "farmd", LOG_LVL_INFO, 0 };

void
log_init(const char *ident)
{
	logger.ident = ident;
	logger.journal = getenv("JOURNAL_STREAM") != NULL;
}

void
log_set_level(enum log_level level)
{
	logger.level = level;
}

int
log_level_parse(const char *s, enum log_level *out)
{
	static const struct { const char *name; enum log_level lvl; } names[] = {
		{ "error", LOG_LVL_ERR }, { "warn", LOG_LVL_WARN },
		{ "info", LOG_LVL_INFO }, { "debug", LOG_LVL_DEBUG },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(s, names[i].name) == 0) {
			*out = names[i].lvl;
			return 0;
		}
	}
	return -1;
}

int
log_enabled(enum log_level level)
{
	return level <= logger.level;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *tags[] = { [LOG_LVL_ERR] = "error",
		[LOG_LVL_WARN] = "warn", [LOG_LVL_INFO] = "info",
		[LOG_LVL_DEBUG] = "debug" };
	char line[2048];
	int n = 0;
	va_list ap;

	if (level > logger.level)
		return;
	if (logger.journal)
		n = snprintf(line, sizeof(line), "<%d>", (int)level);
	n += snprintf(line + n, sizeof(line) - n, "%s[%d]: %s: ", logger.ident,
	    (int)getpid(), tags[level]);
	va_start(ap, fmt);
	if (n < (int)sizeof(line))
		vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	/* One write(2) per line so concurrent writers never interleave. */
	n = (int)strnlen(line, sizeof(line) - 2);
	line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, n);
}
