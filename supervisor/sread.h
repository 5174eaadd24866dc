/*
 * sread.h: sector read (`sector read`, plot_sector_read in plot.h): one
 * piece read back from plot.bin, decoded by an encode worker and checked
 * against its piece root.
 */
#ifndef FARMD_SREAD_H
#define FARMD_SREAD_H

struct plot;

/* Shutdown: the reads waiting for a worker are answered "farmd is
 * shutting down"; those on the I/O pool finish by themselves. */
void sread_cancel_all(struct plot *p);

#endif
