/*
 * farmdir.c: farm directories, identities and plot files.
 *
 * Creation order is chosen so a crash at any point leaves either nothing
 * the database knows about, or a complete farm: the directory, the
 * identity (temp file, fsync, link) and plot.bin (fallocate, fsync) are
 * made and fsynced, with their directory, before the farm's row commits.
 * A crash before the commit leaves files that a later `farm add` of the
 * same DIR reports as "in use" (plot.bin exists); the operator removes
 * them.  That is deliberate: farmd never deletes a plot.bin it did not
 * just make.
 */
#include "farmdir.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "fdio.h"

static const struct farmdir_profile profiles[] = {
	{ "demo", 64, 4, 2, 0.1, { 1024, 8, 1 } },
	{ "production", 1000, 4, 2, 0.1, { 16384, 8, 1 } },
};

const struct farmdir_profile *
farmdir_profile_find(const char *name)
{
	for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++)
		if (strcmp(profiles[i].name, name) == 0)
			return &profiles[i];
	return NULL;
}

static int
farmdir_pkh(EVP_PKEY *key, uint8_t pkh[HASH_LEN], struct err *e)
{
	uint8_t pub[32];
	size_t len = sizeof(pub);

	if (EVP_PKEY_get_raw_public_key(key, pub, &len) != 1 || len != sizeof(pub))
		return err_set(e, "cannot derive the Ed25519 public key");
	hash_sha256(pub, len, pkh);
	return 0;
}

/* An encrypted key would make OpenSSL ask for a passphrase on a
 * terminal; refuse instead. */
static int
farmdir_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return 0;
}

int
farmdir_identity_load(const char *path, uint8_t pkh[HASH_LEN], struct err *e)
{
	struct stat st;
	EVP_PKEY *key;
	FILE *f;
	int fd, rc;

	/* Untrusted file: no symlink, no blocking open of a FIFO. */
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0)
		return err_sys(e, "%s", path);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > 64 * 1024) {
		close(fd);
		return err_set(e, "%s: not a regular file of at most 64 KiB", path);
	}
	if ((f = fdopen(fd, "r")) == NULL) {
		close(fd);
		return err_sys(e, "%s", path);
	}
	if (st.st_mode & 077) {
		fclose(f);
		return err_set(e, "%s: private key is accessible by others (mode %04o); "
		    "chmod 600 it", path, (unsigned)(st.st_mode & 07777));
	}
	key = PEM_read_PrivateKey(f, NULL, farmdir_no_passphrase, NULL);
	fclose(f);
	if (key == NULL)
		return err_set(e, "%s: not a PEM private key", path);
	if (EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519)
		rc = err_set(e, "%s: not an Ed25519 key", path);
	else
		rc = farmdir_pkh(key, pkh, e);
	EVP_PKEY_free(key);
	return rc;
}

static int
farmdir_fsync_path(const char *path, struct err *e)
{
	if (fdio_fsync_dir(path) < 0)
		return err_sys(e, "fsync %s", path);
	return 0;
}

/* A new key: a unique temp file (0600), fsync, then link() to its name,
 * which fails rather than replace a key that appeared meanwhile. */
static int
farmdir_identity_create(const char *dir, uint8_t pkh[HASH_LEN], struct err *e)
{
	char tmp[PATH_MAX + 32], path[PATH_MAX + 32];
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	FILE *f = NULL;
	int fd = -1;

	snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", dir, FARMDIR_IDENTITY);
	snprintf(path, sizeof(path), "%s/%s", dir, FARMDIR_IDENTITY);
	if (key == NULL) {
		err_set(e, "cannot generate an Ed25519 key");
		tmp[0] = '\0';
		goto fail;
	}
	if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
		err_sys(e, "%s", tmp);
		tmp[0] = '\0';
		goto fail;
	}
	if (fchmod(fd, 0600) < 0 || (f = fdopen(fd, "w")) == NULL) {
		err_sys(e, "%s", tmp);
		goto fail;
	}
	fd = -1;
	if (PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) != 1 ||
	    fflush(f) != 0 || fsync(fileno(f)) < 0) {
		err_sys(e, "%s: write", tmp);
		goto fail;
	}
	if (fclose(f) != 0) {
		f = NULL;
		err_sys(e, "%s: write", tmp);
		goto fail;
	}
	f = NULL;
	if (farmdir_pkh(key, pkh, e) < 0)
		goto fail;
	if (link(tmp, path) < 0) {
		err_sys(e, "%s", path);
		goto fail;
	}
	unlink(tmp);
	EVP_PKEY_free(key);
	return 0;
fail:
	if (f != NULL)
		fclose(f);
	if (fd >= 0)
		close(fd);
	if (tmp[0] != '\0')
		unlink(tmp);
	EVP_PKEY_free(key);
	return -1;
}

static uint64_t
farmdir_available(const char *dir)
{
	struct statvfs sv;

	if (statvfs(dir, &sv) < 0)
		return 0;
	return (uint64_t)sv.f_bavail * sv.f_frsize;
}

static int
farmdir_no_space(struct farmdir_create *c)
{
	return err_set(&c->e, "farm %s: %s needs %" PRIu64 " bytes (%" PRIu32 " sectors of %"
	    PRIu64 "), only %" PRIu64 " available", c->dir, FARMDIR_PLOT,
	    c->geom.sector_size * c->geom.sectors, c->geom.sectors, c->geom.sector_size,
	    farmdir_available(c->dir));
}

/* Preallocates plot.bin: real blocks, so a full disk shows now and not
 * in the middle of plotting a sector. */
static int
farmdir_plot_create(struct farmdir_create *c)
{
	char path[PATH_MAX + 32];
	uint64_t size = c->geom.sector_size * c->geom.sectors;
	int rc;

	snprintf(path, sizeof(path), "%s/%s", c->dir, FARMDIR_PLOT);
	if (farmdir_available(c->dir) < size)
		return farmdir_no_space(c);
	if ((c->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640)) < 0)
		return err_sys(&c->e, "farm %s: create %s", c->dir, FARMDIR_PLOT);
	c->made_plot = 1;
	if (flock(c->fd, LOCK_EX | LOCK_NB) < 0)
		return err_set(&c->e, "farm %s is in use: %s is locked by another process",
		    c->dir, FARMDIR_PLOT);
	rc = fallocate(c->fd, 0, 0, (off_t)size);
	if (rc < 0 && (errno == EOPNOTSUPP || errno == ENOSYS))
		rc = -(errno = posix_fallocate(c->fd, 0, (off_t)size));
	if (rc != 0) {
		if (errno == ENOSPC || errno == EDQUOT)
			return farmdir_no_space(c);
		return err_sys(&c->e, "farm %s: preallocate %s", c->dir, FARMDIR_PLOT);
	}
	if (fsync(c->fd) < 0)
		return err_sys(&c->e, "farm %s: fsync %s", c->dir, FARMDIR_PLOT);
	return 0;
}

int
farmdir_create(struct farmdir_create *c)
{
	char path[PATH_MAX + 32], parent[PATH_MAX];
	struct stat st;

	c->fd = -1;
	c->made_dir = c->made_identity = c->made_plot = 0;
	if (mkdir(c->dir, 0750) == 0) {
		c->made_dir = 1;
	} else if (errno != EEXIST) {
		err_sys(&c->e, "farm %s: create directory", c->dir);
		goto fail;
	} else if (stat(c->dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		err_set(&c->e, "farm %s: not a directory", c->dir);
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/%s", c->dir, FARMDIR_PLOT);
	if (lstat(path, &st) == 0) {
		err_set(&c->e, "farm %s is in use: it already holds a %s", c->dir, FARMDIR_PLOT);
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/%s", c->dir, FARMDIR_IDENTITY);
	if (lstat(path, &st) == 0) {
		if (farmdir_identity_load(path, c->pkh, &c->e) < 0) {
			err_wrap(&c->e, "farm %s: existing identity", c->dir);
			goto fail;
		}
	} else if (farmdir_identity_create(c->dir, c->pkh, &c->e) < 0) {
		err_wrap(&c->e, "farm %s: identity", c->dir);
		goto fail;
	} else {
		c->made_identity = 1;
	}
	if (farmdir_plot_create(c) < 0 || farmdir_fsync_path(c->dir, &c->e) < 0)
		goto fail;
	snprintf(parent, sizeof(parent), "%s", c->dir);
	if (c->made_dir && farmdir_fsync_path(dirname(parent), &c->e) < 0)
		goto fail;
	return 0;
fail:
	farmdir_create_undo(c);
	return -1;
}

void
farmdir_create_undo(struct farmdir_create *c)
{
	char path[PATH_MAX + 32];

	if (c->made_plot) {
		snprintf(path, sizeof(path), "%s/%s", c->dir, FARMDIR_PLOT);
		unlink(path);
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	if (c->made_identity) {
		snprintf(path, sizeof(path), "%s/%s", c->dir, FARMDIR_IDENTITY);
		unlink(path);
	}
	if (c->made_dir)
		rmdir(c->dir);
	c->made_dir = c->made_identity = c->made_plot = 0;
}

int
farmdir_open(const char *dir, const struct farmdir_geom *g, const uint8_t pkh[HASH_LEN],
    struct err *e)
{
	char path[PATH_MAX + 32];
	uint8_t have[HASH_LEN];
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, FARMDIR_IDENTITY);
	if (farmdir_identity_load(path, have, e) < 0)
		return -1;
	if (memcmp(have, pkh, HASH_LEN) != 0)
		return err_set(e, "%s: identity differs from the one this farm was created with",
		    path);
	snprintf(path, sizeof(path), "%s/%s", dir, FARMDIR_PLOT);
	if ((fd = open(path, O_RDWR | O_CLOEXEC)) < 0)
		return err_sys(e, "%s", path);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size != g->sector_size * g->sectors) {
		close(fd);
		return err_set(e, "%s: size %lld, expected %" PRIu64 " (%" PRIu32 " sectors of %"
		    PRIu64 ")", path, (long long)st.st_size, g->sector_size * g->sectors,
		    g->sectors, g->sector_size);
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		close(fd);
		return err_set(e, "%s is locked by another process", path);
	}
	return fd;
}
