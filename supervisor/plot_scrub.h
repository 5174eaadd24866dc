/*
 * plot_scrub.h: the plotted sectors as a scrub source (scrub.h).  main.c
 * hands the row to scrub_new; plot.c never calls the scrub, so neither
 * module depends on the other.
 */
#ifndef FARMD_PLOT_SCRUB_H
#define FARMD_PLOT_SCRUB_H

struct scrub_source;

/* The sectors holding content, in (farm, index) order; a position is
 * "farm:index".  A sector whose bytes do not match its checksum (or do
 * not read) is marked expired, so it is replotted. */
extern const struct scrub_source plot_scrub_sectors;

#endif
