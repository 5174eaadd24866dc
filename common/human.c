/*
 * human.c: sizes, times and durations for people (human.h).
 */
#include "human.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

const char *
human_size(char buf[HUMAN_LEN], uint64_t bytes)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double v = (double)bytes;
	int u = -1;

	if (bytes < 1024) {
		snprintf(buf, HUMAN_LEN, "%llu B", (unsigned long long)bytes);
		return buf;
	}
	/* 1023.96 KiB would print as "1024.0 KiB": move up a unit when the
	 * rounded value reaches 1024. */
	while (u + 1 < (int)(sizeof(units) / sizeof(units[0])) && v >= 1023.95) {
		v /= 1024.0;
		u++;
	}
	snprintf(buf, HUMAN_LEN, "%.1f %s", v, units[u]);
	return buf;
}

const char *
human_time(char buf[HUMAN_LEN], int64_t epoch_ms)
{
	time_t t = (time_t)(epoch_ms / 1000);
	struct tm tm;
	size_t n;

	if (epoch_ms <= 0 || localtime_r(&t, &tm) == NULL ||
	    (n = strftime(buf, HUMAN_LEN, "%Y-%m-%dT%H:%M:%S%z", &tm)) < 5) {
		snprintf(buf, HUMAN_LEN, "-");
		return buf;
	}
	/* strftime's %z is +hhmm; ISO-8601's extended form is +hh:mm. */
	memmove(buf + n - 1, buf + n - 2, 3);
	buf[n - 2] = ':';
	return buf;
}

const char *
human_duration(char buf[HUMAN_LEN], uint64_t s)
{
	unsigned long long v = s;

	if (v < 60)
		snprintf(buf, HUMAN_LEN, "%llu s", v);
	else if (v < 3600)
		snprintf(buf, HUMAN_LEN, "%llu min %llu s", v / 60, v % 60);
	else if (v < 86400)
		snprintf(buf, HUMAN_LEN, "%llu h %llu min", v / 3600, v % 3600 / 60);
	else
		snprintf(buf, HUMAN_LEN, "%llu d %llu h", v / 86400, v % 86400 / 3600);
	return buf;
}

const char *
human_ago(char buf[HUMAN_LEN], int64_t epoch_ms, int64_t now_ms)
{
	int64_t d = now_ms - epoch_ms;
	unsigned long long s = (unsigned long long)(d < 0 ? -d : d) / 1000, v;
	const char *unit;

	if (epoch_ms <= 0) {
		snprintf(buf, HUMAN_LEN, "-");
		return buf;
	}
	if (s == 0) {
		snprintf(buf, HUMAN_LEN, "now");
		return buf;
	}
	if (s < 120) {
		v = s;
		unit = "s";
	} else if (s < 2 * 3600) {
		v = s / 60;
		unit = "min";
	} else if (s < 2 * 86400) {
		v = s / 3600;
		unit = "h";
	} else {
		v = s / 86400;
		unit = "d";
	}
	if (d > 0)
		snprintf(buf, HUMAN_LEN, "%llu %s ago", v, unit);
	else
		snprintf(buf, HUMAN_LEN, "in %llu %s", v, unit);
	return buf;
}
