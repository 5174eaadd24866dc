/*
 * human.h: numbers as a person reads them in farmctl's tables and status
 * lines.  Only the text uses these; --json keeps the exact values (epoch
 * milliseconds, bytes).  Pure: the time zone is the process's (TZ, else
 * /etc/localtime) and "now" is a parameter.
 */
#ifndef FARMD_HUMAN_H
#define FARMD_HUMAN_H

#include <stdint.h>

#define HUMAN_LEN 40

/* "512 B", "4.0 KiB", "1.5 MiB", "2.0 GiB", "3.2 TiB": powers of 1024,
 * one decimal from KiB up.  Returns buf. */
const char *human_size(char buf[HUMAN_LEN], uint64_t bytes);

/* Local ISO-8601 to the second with the UTC offset,
 * "2026-12-02T09:15:04+00:00"; "-" when epoch_ms <= 0.  Returns buf. */
const char *human_time(char buf[HUMAN_LEN], int64_t epoch_ms);

/* A duration in one or two units: "0 s", "49 s", "12 min 5 s",
 * "3 h 12 min", "2 d 3 h".  Returns buf. */
const char *human_duration(char buf[HUMAN_LEN], uint64_t seconds);

/* When epoch_ms is, seen from now_ms, in its largest unit: "12 s ago",
 * "5 min ago", "in 48 s", "in 2 h"; "now" within a second; "-" when
 * epoch_ms <= 0.  Returns buf. */
const char *human_ago(char buf[HUMAN_LEN], int64_t epoch_ms, int64_t now_ms);

#endif
