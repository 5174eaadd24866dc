/*
 * plot_scrub.c: the plotted sectors as a scrub source (plot_scrub.h), the
 * row scrub.c walks after the blocks: next finds the sector holding
 * content after a position "farm:index", check re-reads it whole (I/O
 * pool) against the checksum its row recorded.
 *
 * Invariants:
 *  - A sector in flight is never checked, and a mismatch (or an EIO)
 *    marks the sector damaged only if its row and job are unchanged
 *    since the check started: it may have been replotted meanwhile.
 *  - Every check on the I/O pool is counted in p->checks until it
 *    answers, and stops early once p->cancel is set (shutdown).
 */
#include "plot_scrub.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "farm.h"
#include "farmd.h"
#include "io.h"
#include "log.h"
#include "plot_int.h"
#include "scrub.h"
#include "sector.h"
#include "sjob.h"

#define PLOT_SCRUB_CHUNK (1u << 20)

/* The first sector holding content after pos (or the first of all). */
static int
plot_scrub_next(struct farmd *d, const char *pos, char item[SCRUB_POS_MAX], struct err *e)
{
	uint32_t farm = 0, idx = 0, nfarm, nidx;
	int have = sscanf(pos, "%" SCNu32 ":%" SCNu32, &farm, &idx) == 2;
	int found = sector_next_plotted(d->plot, have, farm, idx, &nfarm, &nidx, e);

	if (found == 1)
		snprintf(item, SCRUB_POS_MAX, "%" PRIu32 ":%" PRIu32, nfarm, nidx);
	return found;
}

/* A check on the I/O pool. */
struct plot_scrub_check {
	struct plot *p;
	struct farm *f;
	uint32_t idx;
	struct sector_row row;
	uint8_t sum[HASH_LEN];
	int io_err;
	scrub_check_cb cb;
	void *arg;
};

static void
plot_scrub_work(void *arg)
{
	struct plot_scrub_check *c = arg;
	uint64_t left = c->f->g.sector_size;
	off_t off = (off_t)((uint64_t)c->idx * c->f->g.sector_size);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t *buf = malloc(PLOT_SCRUB_CHUNK);
	unsigned int len;

	c->io_err = md == NULL || buf == NULL ? ENOMEM : 0;
	if (!c->io_err && EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		c->io_err = EINVAL;
	while (!c->io_err && left > 0) {
		if (__atomic_load_n(&c->p->cancel, __ATOMIC_RELAXED)) {
			c->io_err = ECANCELED;
			break;
		}
		size_t want = left < PLOT_SCRUB_CHUNK ? (size_t)left : PLOT_SCRUB_CHUNK;
		ssize_t n = pread(c->f->fd, buf, want, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			c->io_err = n < 0 ? errno : EIO;
			break;
		}
		if (EVP_DigestUpdate(md, buf, (size_t)n) != 1) {
			c->io_err = EINVAL;
			break;
		}
		left -= (uint64_t)n;
		off += n;
	}
	if (!c->io_err && EVP_DigestFinal_ex(md, c->sum, &len) != 1)
		c->io_err = EINVAL;
	EVP_MD_CTX_free(md);
	free(buf);
}

static void
plot_scrub_done(void *arg)
{
	struct plot_scrub_check *c = arg;
	struct plot *p = c->p;
	int result = SCRUB_SKIPPED;

	p->checks--;
	if (p->stopping || c->io_err == ECANCELED) {
		result = SCRUB_SKIPPED;
	} else if (c->io_err == EIO && sjob_sector_unchanged(p, c->f, c->idx, &c->row)) {
		/* Unreadable bytes are damaged bytes: replot them. */
		result = SCRUB_CORRUPT;
		sector_mark_damaged(p, c->f, c->idx, &c->row, "plot scrub: read failed: "
		    "Input/output error");
	} else if (c->io_err) {
		log_warn("plot scrub: sector %" PRIu32 "/%" PRIu32 ": %s", c->f->id, c->idx,
		    strerror(c->io_err));
	} else if (sjob_sector_unchanged(p, c->f, c->idx, &c->row)) {
		result = memcmp(c->sum, c->row.checksum, HASH_LEN) != 0 ? SCRUB_CORRUPT : SCRUB_OK;
		if (result == SCRUB_CORRUPT)
			sector_mark_damaged(p, c->f, c->idx, &c->row, "plot scrub: bytes do not "
			    "match the checksum");
	}
	c->cb(c->arg, result);
	free(c);
}

/* A sector in flight, gone or without a checksum is skipped. */
static void
plot_scrub_check(struct farmd *d, const char *item, scrub_check_cb cb, void *arg)
{
	struct plot *p = d->plot;
	uint32_t farm, idx;
	struct farm *f;
	struct plot_scrub_check *c;
	struct err e;

	if (sscanf(item, "%" SCNu32 ":%" SCNu32, &farm, &idx) != 2) {
		cb(arg, SCRUB_SKIPPED);
		return;
	}
	f = farm_by_id(p, farm);
	if (p->stopping || f == NULL || f->fd < 0 || idx >= f->g.sectors ||
	    sjob_find(p, f, idx) != NULL ||
	    (c = calloc(1, sizeof(*c))) == NULL) {
		cb(arg, SCRUB_SKIPPED);
		return;
	}
	c->p = p;
	c->f = f;
	c->idx = idx;
	c->cb = cb;
	c->arg = arg;
	if (sector_get(p, f, idx, &c->row, &e) < 0 || !c->row.have_checksum ||
	    io_submit(p->d->io, plot_scrub_work, plot_scrub_done, c) < 0) {
		free(c);
		cb(arg, SCRUB_SKIPPED);
		return;
	}
	p->checks++;
}

const struct scrub_source plot_scrub_sectors = {
	.name = "sectors", .next = plot_scrub_next, .check = plot_scrub_check,
	.pos_key = "scrub.sector_position", .checked_key = "scrub.sectors_checked",
	.corruptions_key = "scrub.sector_corruptions",
};

