/*
 * clock.h: the two clocks.  Monotonic for intervals and deadlines, real
 * time for what is stored or shown.  Pure logic takes "now" as a
 * parameter instead of calling these, so tests need no sleeping.
 */
#ifndef FARMD_CLOCK_H
#define FARMD_CLOCK_H

#include <stdint.h>
#include <sys/time.h>

uint64_t clock_mono_ms(void);
uint64_t clock_mono_us(void);
uint64_t clock_real_ms(void);
/* An interval of ms milliseconds as the struct timeval libevent takes. */
struct timeval clock_tv(uint64_t ms);

#endif
