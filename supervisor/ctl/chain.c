/*
 * chain.c: `farmctl chain generate`, a valid synthetic chain for demos and
 * tests.  Local: it needs no farmd.  Block h is a packed ChainBlock
 * {height h, parent_hash = SHA-256 of block h-1's file (zeros for h = 1),
 * body, validation_code}.  Bodies are a SHA-256 counter stream of
 * (seed, height), so the same arguments always give the same bytes.
 *
 * --code FILE@HEIGHT (repeatable, up to CHAIN_MAX_CODES, one per height):
 * block HEIGHT carries FILE's bytes as validation_code, which installs
 * that code for the heights above it (DESIGN.md §7).  validation_code is a
 * proto string, so a file with a NUL byte is refused rather than cut.
 */
#include "chain.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain.pb-c.h"
#include "hash.h"
#include "parser.h"

#define CHAIN_MAX_BODY (64u << 20)
#define CHAIN_MAX_CODES 16

struct gen_code {
	char file[4096];
	unsigned long long height;
	char *text;                     /* the file's bytes, NUL-terminated */
};

struct gen_opts {
	unsigned long long blocks;
	unsigned long long body_size;
	const char *seed;
	const char *out;
	struct gen_code codes[CHAIN_MAX_CODES];
	int ncodes;
};

static int
gen_usage(void)
{
	parse_usage(stderr, "chain generate");
	return 2;
}

static int
gen_number(const char *s, unsigned long long *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno || *end || s[0] == '\0' || s[0] == '-' ? -1 : 0;
}

static char *
gen_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (f == NULL || fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) < 0 || (buf = malloc((size_t)n + 1)) == NULL ||
	    fread(buf, 1, (size_t)n, f) != (size_t)n) {
		if (f != NULL)
			fclose(f);
		free(buf);
		return NULL;
	}
	fclose(f);
	buf[n] = '\0';
	*len = (size_t)n;
	return buf;
}

static void
gen_body(const char *seed, uint64_t height, uint8_t *out, size_t len)
{
	uint8_t ctr[8], hb[8], block[HASH_LEN];

	be64_put(hb, height);
	for (uint64_t i = 0; i * HASH_LEN < len; i++) {
		size_t n = len - i * HASH_LEN < HASH_LEN ? len - i * HASH_LEN : HASH_LEN;

		be64_put(ctr, i);
		hash_sha256v(block, 3, seed, strlen(seed), hb, sizeof(hb), ctr, sizeof(ctr));
		memcpy(out + i * HASH_LEN, block, n);
	}
}

static int
gen_write(const char *path, const uint8_t *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	size_t off = 0;

	if (fd < 0)
		return -1;
	while (off < len) {
		ssize_t n = write(fd, buf + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			close(fd);
			return -1;
		}
		off += (size_t)n;
	}
	return close(fd);
}

/* The options of chain generate into *o: 0, or the exit code after a
 * message. */
static int
gen_options(int argc, char **argv, struct gen_opts *o)
{
	for (int i = 0; i < argc; i += 2) {            /* OPTION VALUE pairs */
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (v == NULL)
			return gen_usage();
		if (strcmp(a, "--blocks") == 0 && gen_number(v, &o->blocks) == 0)
			;
		else if (strcmp(a, "--body-size") == 0 && gen_number(v, &o->body_size) == 0)
			;
		else if (strcmp(a, "--seed") == 0)
			o->seed = v;
		else if (strcmp(a, "--out") == 0)
			o->out = v;
		else if (strcmp(a, "--code") == 0) {
			const char *at = strrchr(v, '@');
			struct gen_code *c = &o->codes[o->ncodes];

			if (o->ncodes == CHAIN_MAX_CODES) {
				fprintf(stderr, "farmctl: at most %d --code options\n", CHAIN_MAX_CODES);
				return 2;
			}
			if (at == NULL || at == v || gen_number(at + 1, &c->height) < 0 ||
			    c->height == 0 || (size_t)(at - v) >= sizeof(c->file)) {
				fprintf(stderr, "farmctl: --code takes FILE@HEIGHT (height >= 1), not '%s'\n", v);
				return 2;
			}
			for (int k = 0; k < o->ncodes; k++)
				if (o->codes[k].height == c->height) {
					fprintf(stderr, "farmctl: two --code options for height %llu\n",
					    c->height);
					return 2;
				}
			memcpy(c->file, v, (size_t)(at - v));
			c->file[at - v] = '\0';
			o->ncodes++;
		} else {
			fprintf(stderr, "farmctl: chain generate: bad option or value '%s %s'\n", a, v);
			return gen_usage();
		}
	}
	if (o->blocks == 0 || o->out == NULL || o->body_size > CHAIN_MAX_BODY)
		return gen_usage();
	for (int k = 0; k < o->ncodes; k++)
		if (o->codes[k].height > o->blocks) {
			fprintf(stderr, "farmctl: --code %s@%llu: height beyond --blocks %llu\n",
			    o->codes[k].file, o->codes[k].height, o->blocks);
			return 2;
		}
	return 0;
}

static void
gen_free_codes(struct gen_opts *o)
{
	for (int k = 0; k < o->ncodes; k++)
		free(o->codes[k].text);
}

/* Reads every --code file; 0, or 2 after a message. */
static int
gen_read_codes(struct gen_opts *o)
{
	for (int k = 0; k < o->ncodes; k++) {
		struct gen_code *c = &o->codes[k];
		size_t len;

		errno = 0;
		if ((c->text = gen_read_file(c->file, &len)) == NULL) {
			fprintf(stderr, "farmctl: %s: %s\n", c->file, strerror(errno ? errno : EIO));
			return 2;
		}
		if (len == 0 || strlen(c->text) != len) {
			fprintf(stderr, "farmctl: %s: %s\n", c->file, len == 0 ? "empty file "
			    "(an empty validation_code means no code)" : "contains a NUL byte");
			return 2;
		}
	}
	return 0;
}

/* The code block h carries, or NULL. */
static char *
gen_code_at(const struct gen_opts *o, uint64_t h)
{
	for (int k = 0; k < o->ncodes; k++)
		if (o->codes[k].height == h)
			return o->codes[k].text;
	return NULL;
}

int
chain_generate(int argc, char **argv)
{
	struct gen_opts o = { .body_size = 1024, .seed = "farmd" };
	uint8_t parent[HASH_LEN] = { 0 }, *body, *packed = NULL;
	char *code, path[4096];
	size_t cap = 0;
	int digits, rc;

	if ((rc = gen_options(argc, argv, &o)) != 0)
		return rc;
	if ((rc = gen_read_codes(&o)) != 0) {
		gen_free_codes(&o);
		return rc;
	}
	if (mkdir(o.out, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "farmctl: %s: %s\n", o.out, strerror(errno));
		gen_free_codes(&o);
		return 2;
	}
	if ((body = malloc(o.body_size + 1)) == NULL) {
		gen_free_codes(&o);
		return 2;
	}
	digits = snprintf(NULL, 0, "%llu", o.blocks);
	digits = digits < 6 ? 6 : digits;
	for (uint64_t h = 1; h <= o.blocks; h++) {
		Farmd__ChainBlock b = FARMD__CHAIN_BLOCK__INIT;
		size_t len;

		gen_body(o.seed, h, body, o.body_size);
		b.height = h;
		b.parent_hash.data = parent;
		b.parent_hash.len = HASH_LEN;
		b.body.data = body;
		b.body.len = o.body_size;
		if ((code = gen_code_at(&o, h)) != NULL)
			b.validation_code = code;
		len = farmd__chain_block__get_packed_size(&b);
		if (len > cap) {
			uint8_t *np = realloc(packed, len);

			if (np == NULL) {
				fprintf(stderr, "farmctl: block %llu: out of memory\n",
				    (unsigned long long)h);
				free(body);
				free(packed);
				gen_free_codes(&o);
				return 2;
			}
			packed = np;
			cap = len;
		}
		farmd__chain_block__pack(&b, packed);
		snprintf(path, sizeof(path), "%s/%0*llu.blk", o.out, digits, (unsigned long long)h);
		if (gen_write(path, packed, len) < 0) {
			fprintf(stderr, "farmctl: %s: %s\n", path, strerror(errno));
			free(body);
			free(packed);
			gen_free_codes(&o);
			return 2;
		}
		hash_sha256(packed, len, parent);
	}
	printf("%llu blocks written to %s\n", o.blocks, o.out);
	free(body);
	free(packed);
	gen_free_codes(&o);
	return 0;
}
