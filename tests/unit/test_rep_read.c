/*
 * test_rep_read: the reader of a view against the real thing: a qcow2 with
 * a persistent 4 KiB bitmap, written by qemu-io (which records into the
 * enabled bitmap and stores it at close), frozen with `qemu-img bitmap
 * --disable` as the cut's transaction would, and exported by
 * qemu-storage-daemon with the bitmap. The chunks are checked exactly in
 * bitmap mode and against a model of the disk in full mode; then the error
 * paths, and last (it changes the image) the trim.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "replica/rep_read.h"
#include "replica/rep_wire.h"

#define KiB 1024ull
#define MiB (1024ull * KiB)
#define SIZE (16 * MiB)
#define NOUT 64

struct fx {
	char top[64];		/* mkdtemp'd */
	char img[128], sock[128], log[128];
	pid_t qsd;
	unsigned char *model;	/* what the disk holds */
};

/* The writes, in order; P < 0: write-zeroes, P == -2: discard. */
static const struct op {
	uint64_t off, len;
	int p;
	bool before;		/* before the bitmap was added: not dirty */
} ops[] = {
	{ 0, 64 * KiB, 0x11, true },
	{ 60 * KiB, 8 * KiB, 0x22, false },
	{ 1 * MiB, 4 * KiB, 0x5a, false },
	{ 2 * MiB, 64 * KiB, -1, false },
	{ 3 * MiB, 64 * KiB, -2, false },
	{ 4 * MiB, 3 * MiB, 0x33, false },
	{ 10 * MiB, 128 * KiB, 0x66, false },
	{ 10 * MiB + 64 * KiB, 64 * KiB, -1, false },
};

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int run(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

/* qemu-io arguments for ops[] with .before == @before. */
static void qemu_io_args(bool before, char *buf, size_t len)
{
	size_t o = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		const struct op *p = &ops[i];
		if (p->before != before)
			continue;
		if (p->p >= 0)
			o += snprintf(buf + o, len - o, " -c 'write -P 0x%x %llu %llu'", p->p,
				      (unsigned long long)p->off, (unsigned long long)p->len);
		else
			o += snprintf(buf + o, len - o, " -c '%s %llu %llu'",
				      p->p == -1 ? "write -z" : "discard",
				      (unsigned long long)p->off, (unsigned long long)p->len);
	}
}

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static int start_qsd(struct fx *f)
{
	char blockdev[512], exp[256];
	struct timespec ts = { 0, 20 * 1000 * 1000 };

	snprintf(blockdev, sizeof(blockdev),
		 "{\"driver\":\"qcow2\",\"node-name\":\"n\",\"discard\":\"unmap\","
		 "\"file\":{\"driver\":\"file\",\"filename\":\"%s\"}}", f->img);
	snprintf(exp, sizeof(exp), "{\"type\":\"nbd\",\"id\":\"e\",\"node-name\":\"n\","
		 "\"name\":\"e\",\"writable\":true,\"bitmaps\":[\"hca-rep-1\"]}");
	f->qsd = fork();
	if (f->qsd < 0)
		return -1;
	if (f->qsd == 0) {
		char srv[200];
		int fd = open(f->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		snprintf(srv, sizeof(srv), "addr.type=unix,addr.path=%s", f->sock);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execlp("qemu-storage-daemon", "qemu-storage-daemon", "--blockdev", blockdev,
		       "--nbd-server", srv, "--export", exp, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 250 && !exists(f->sock); i++)
		nanosleep(&ts, NULL);
	return exists(f->sock) ? 0 : -1;
}

static void model_apply(unsigned char *m)
{
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		memset(m + ops[i].off, ops[i].p >= 0 ? ops[i].p : 0, ops[i].len);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char args[1024];

	snprintf(f->top, sizeof(f->top), "/tmp/hca-rep-read-XXXXXX");
	if (!mkdtemp(f->top))
		return -1;
	snprintf(f->img, sizeof(f->img), "%s/d.qcow2", f->top);
	snprintf(f->sock, sizeof(f->sock), "%s/nbd.sock", f->top);
	snprintf(f->log, sizeof(f->log), "%s/qsd.log", f->top);
	f->model = calloc(1, SIZE);
	model_apply(f->model);
	if (run("qemu-img create -q -f qcow2 %s %llu", f->img, SIZE))
		return -1;
	qemu_io_args(true, args, sizeof(args));
	if (run("qemu-io -f qcow2%s %s >/dev/null", args, f->img) ||
	    run("qemu-img bitmap --add -g 4096 %s hca-rep-1", f->img))
		return -1;
	qemu_io_args(false, args, sizeof(args));
	/* the bitmap is enabled: qemu-io's writes land in it; then frozen,
	 * like the cut's transaction does (an enabled bitmap cannot be
	 * exported read-only either) */
	if (run("qemu-io -f qcow2%s %s >/dev/null", args, f->img) ||
	    run("qemu-img bitmap --disable %s hca-rep-1", f->img))
		return -1;
	if (start_qsd(f)) {
		run("cat %s >&2", f->log);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	if (f->qsd > 0) {
		kill(f->qsd, SIGTERM);
		waitpid(f->qsd, NULL, 0);
	}
	run("rm -rf %s", f->top);
	free(f->model);
	free(f);
	return 0;
}

/* Every chunk of the reader, checked for bounds, order and content. */
struct got {
	size_t n;
	struct rep_chunk c[256];
	uint64_t data;
};

static void read_all(struct fx *f, const char *bitmap, bool trim, size_t max_bytes, size_t nout,
		     struct got *g)
{
	char err[256] = "";
	struct rep_reader *r = rep_reader_open(f->sock, "e", bitmap, trim, err, sizeof(err));
	struct rep_chunk out[NOUT];
	size_t n;

	if (!r)
		fail_msg("open: %s", err);
	assert_int_equal(rep_reader_size(r), SIZE);
	memset(g, 0, sizeof(*g));
	do {
		assert_int_equal(rep_reader_next(r, max_bytes, out, nout, &n, err, sizeof(err)), 0);
		for (size_t i = 0; i < n; i++) {
			struct rep_chunk *c = &out[i];
			assert_true(c->len > 0);
			assert_true(c->off + c->len <= SIZE);
			if (g->n)
				assert_true(c->off >= g->c[g->n - 1].off + g->c[g->n - 1].len);
			if (c->buf) {
				assert_true(c->len <= REP_EXTENT_MAX);
				assert_memory_equal(c->buf, f->model + c->off, c->len);
				g->data += c->len;
			} else {
				for (uint64_t b = 0; b < c->len; b++)
					assert_int_equal(f->model[c->off + b], 0);
			}
			assert_true(g->n < sizeof(g->c) / sizeof(g->c[0]));
			g->c[g->n++] = (struct rep_chunk){ c->off, c->len, c->buf ? (void *)1 : NULL };
		}
		/* the cursor may have moved on over clean ranges */
		if (n)
			assert_true(rep_reader_pos(r) >= out[n - 1].off + out[n - 1].len);
		rep_chunks_free(out, n);
	} while (n);
	assert_int_equal(rep_reader_pos(r), SIZE);
	rep_reader_close(r);
}

#define D(o, l) { (o), (l), (void *)1 }
#define Z(o, l) { (o), (l), NULL }

static void expect(const struct got *g, const struct rep_chunk *want, size_t n)
{
	for (size_t i = 0; i < g->n && i < n; i++) {
		if (g->c[i].off != want[i].off || g->c[i].len != want[i].len ||
		    !g->c[i].buf != !want[i].buf)
			fail_msg("chunk %zu: got %s %llu+%llu, want %s %llu+%llu", i,
				 g->c[i].buf ? "data" : "zero", (unsigned long long)g->c[i].off,
				 (unsigned long long)g->c[i].len, want[i].buf ? "data" : "zero",
				 (unsigned long long)want[i].off, (unsigned long long)want[i].len);
	}
	assert_int_equal(g->n, n);
}

/* Exactly the dirty ranges; the write made before the bitmap is not one. */
static void bitmap_mode_reads_the_dirty_ranges(void **state)
{
	static const struct rep_chunk want[] = {
		D(60 * KiB, 8 * KiB),	/* 0..60k was written before hca-rep-1 */
		D(1 * MiB, 4 * KiB),
		Z(2 * MiB, 64 * KiB),	/* write-zeroes */
		Z(3 * MiB, 64 * KiB),	/* discard */
		D(4 * MiB, MiB), D(5 * MiB, MiB), D(6 * MiB, MiB),
		D(10 * MiB, 64 * KiB), Z(10 * MiB + 64 * KiB, 64 * KiB),
	};
	struct got g;

	read_all(*state, "hca-rep-1", false, 64 * MiB, NOUT, &g);
	expect(&g, want, sizeof(want) / sizeof(want[0]));
}

/* Every byte once; holes and zeros never read. */
static void full_mode_covers_the_disk(void **state)
{
	struct got g;
	uint64_t at = 0;

	read_all(*state, NULL, false, 64 * MiB, NOUT, &g);
	for (size_t i = 0; i < g.n; i++) {
		assert_int_equal(g.c[i].off, at);
		at += g.c[i].len;
	}
	assert_int_equal(at, SIZE);
	/* both writes, coalesced: as written, or as whole clusters (QEMU
	 * reports either, depending on what the file layer says) */
	assert_true(g.c[0].buf);
	assert_in_range(g.c[0].len, 68 * KiB, 128 * KiB);
	assert_in_range(g.data, 68 * KiB + 4 * KiB + 3 * MiB + 64 * KiB,
			128 * KiB + 64 * KiB + 3 * MiB + 64 * KiB);
}

/* One chunk at a time, one byte of data at a time: the same ranges. */
static void small_calls_give_the_same_ranges(void **state)
{
	struct got a, b;
	uint64_t ea = 0, eb = 0;

	read_all(*state, "hca-rep-1", false, 64 * MiB, NOUT, &a);
	read_all(*state, "hca-rep-1", false, 1, 1, &b);
	assert_int_equal(a.data, b.data);
	for (size_t i = 0; i < a.n; i++)
		ea += a.c[i].len;
	for (size_t i = 0; i < b.n; i++)
		eb += b.c[i].len;
	assert_int_equal(ea, eb);
	assert_int_equal(b.n, a.n); /* nothing here is adjacent across calls */
}

/* max_bytes: a call stops once it has that much data. */
static void a_call_is_bounded(void **state)
{
	struct fx *f = *state;
	char err[256];
	struct rep_reader *r = rep_reader_open(f->sock, "e", "hca-rep-1", false, err, sizeof(err));
	struct rep_chunk out[NOUT];
	size_t n;

	assert_non_null(r);
	assert_int_equal(rep_reader_next(r, 10 * KiB, out, NOUT, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 2); /* 8 KiB, then 4 KiB reaches the bound */
	assert_int_equal(rep_reader_pos(r), 1 * MiB + 4 * KiB);
	rep_chunks_free(out, n);
	assert_null(out[0].buf);
	assert_int_equal(rep_reader_next(r, 2 * MiB, out, NOUT, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 4); /* two zero ranges, 2 MiB of data */
	assert_int_equal(out[3].off + out[3].len, 6 * MiB);
	rep_chunks_free(out, n);
	assert_int_equal(rep_reader_next(r, 2 * MiB, out, 0, &n, err, sizeof(err)), -EINVAL);
	rep_reader_close(r);
}

static void what_cannot_be_read(void **state)
{
	struct fx *f = *state;
	char err[256] = "", nosock[200];

	errno = 0;
	assert_null(rep_reader_open(f->sock, "e", "hca-rep-9", false, err, sizeof(err)));
	assert_int_equal(errno, ENOTSUP);
	assert_non_null(strstr(err, "qemu:dirty-bitmap:hca-rep-9"));

	errno = 0;
	assert_null(rep_reader_open(f->sock, "nosuch", NULL, false, err, sizeof(err)));
	assert_true(errno != 0);
	assert_non_null(strstr(err, "nosuch"));

	snprintf(nosock, sizeof(nosock), "%s/none.sock", f->top);
	errno = 0;
	assert_null(rep_reader_open(nosock, "e", NULL, false, err, sizeof(err)));
	assert_int_equal(errno, ENOENT);

	assert_null(rep_reader_open(f->sock, "e", "", false, err, sizeof(err)));
	assert_int_equal(errno, EINVAL);
	assert_null(rep_reader_open(NULL, "e", NULL, false, err, sizeof(err)));
	rep_reader_close(NULL);
}

/* Last: after a read with trim, everything behind the cursor is gone from
 * the export: what was read, and the clean data beside it (0x11 at 0..60K,
 * in the cluster that also holds the dirty 60K..68K), which the view never
 * needs again. Here the cursor ended at the disk's end: nothing is left. */
static void trim_drops_what_was_read(void **state)
{
	struct fx *f = *state;
	char err[256];
	struct rep_reader *r = rep_reader_open(f->sock, "e", NULL, false, err, sizeof(err));
	struct rep_chunk out[NOUT];
	struct got g;
	size_t n;

	read_all(f, "hca-rep-1", true, 64 * MiB, NOUT, &g);
	assert_non_null(r);
	uint64_t seen = 0;
	do {
		assert_int_equal(rep_reader_next(r, 64 * MiB, out, NOUT, &n, err, sizeof(err)), 0);
		for (size_t i = 0; i < n; i++) {
			assert_null(out[i].buf); /* a zero range: no data left */
			seen += out[i].len;
		}
		rep_chunks_free(out, n);
	} while (n);
	assert_int_equal(seen, SIZE);
	rep_reader_close(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(bitmap_mode_reads_the_dirty_ranges),
		cmocka_unit_test(full_mode_covers_the_disk),
		cmocka_unit_test(small_calls_give_the_same_ranges),
		cmocka_unit_test(a_call_is_bounded),
		cmocka_unit_test(what_cannot_be_read),
		cmocka_unit_test(trim_drops_what_was_read),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
