/*
 * test_rep_store: the replica store (replica/rep_store.h) on the real
 * qemu-storage-daemon and qemu-img, in a mkdtemp directory. Two small
 * disks; every cycle writes a known pattern and zero ranges into an
 * in-memory model, and every point kept must read back exactly as the
 * model was when it was made (qemu-img convert -U of its top files), after
 * prunes, aborts, a re-attach and a SIGKILLed daemon.
 *
 * With HCA_TEST_POOL set (and HCA_TEST_CEPH_CONF, the ceph.conf), the same
 * model checks run on a store kept in that RBD pool instead (the points
 * read through their json: specs), with the tests that belong to it: a
 * half cycle or an unindexed snapshot left by a crash is undone at the
 * next open, a seed is refused, destroy removes the images.
 * tests/integration/test_replica_pool.sh runs it so on a devcluster.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <qb/qblog.h>

#include "replica/rep_digest.h"
#include "replica/rep_store.h"

#define NDISKS 2
#define KEEP 3
#define MAXPT 16

static const uint64_t disk_size[NDISKS] = { 16u << 20, 8u << 20 };
static const char *pool, *ceph_conf; /* a store in an RBD pool */

struct t {
	char tmp[256], dir[512];
	struct rep_store_cfg cfg;
	struct rep_store *s;
	uint8_t *cur[NDISKS];		    /* the model now */
	uint8_t *at[MAXPT + 1][NDISKS];	    /* the model at point N (NULL: not kept) */
	uint64_t rng;
	uint64_t next; /* the next cycle's number */
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t rnd(struct t *t)
{
	t->rng ^= t->rng << 13;
	t->rng ^= t->rng >> 7;
	t->rng ^= t->rng << 17;
	return t->rng;
}

static int setup(void **state)
{
	struct t *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	snprintf(t->tmp, sizeof(t->tmp), "/tmp/test_rep_store.XXXXXX");
	assert_non_null(mkdtemp(t->tmp));
	snprintf(t->dir, sizeof(t->dir), "%s/replica/vm1", t->tmp);
	t->cfg.dir = t->dir;
	t->cfg.vm = "vm1";
	t->cfg.ndisks = NDISKS;
	t->cfg.keep = KEEP;
	t->cfg.pool = pool;
	t->cfg.ceph_conf = ceph_conf;
	t->cfg.node = "testnode";
	for (unsigned i = 0; i < NDISKS; i++) {
		snprintf(t->cfg.disks[i].name, sizeof(t->cfg.disks[i].name), "disk%u", i);
		t->cfg.disks[i].size = disk_size[i];
		t->cur[i] = calloc(1, disk_size[i]);
		assert_non_null(t->cur[i]);
	}
	t->rng = 0x9e3779b97f4a7c15ull;
	t->next = 1;
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;
	char cmd[PATH_MAX + 16];

	rep_store_close(t->s, true);
	if (pool && rep_store_destroy(t->dir, cmd, sizeof(cmd)) < 0)
		fprintf(stderr, "cannot remove the store's images: %s\n", cmd);
	for (unsigned i = 0; i < NDISKS; i++) {
		free(t->cur[i]);
		for (unsigned p = 0; p <= MAXPT; p++)
			free(t->at[p][i]);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->tmp);
	if (getenv("TEST_KEEP"))
		fprintf(stderr, "kept %s\n", t->tmp);
	else if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", t->tmp);
	free(t);
	return 0;
}

static void store_open(struct t *t)
{
	char err[256] = "";
	int rc = rep_store_open(&t->cfg, &t->s, err, sizeof(err));

	if (rc)
		fprintf(stderr, "open: %s\n", err);
	assert_int_equal(rc, 0);
}

/* Some extents and zero ranges into disk @d, in the store and the model. */
static void scribble(struct t *t, unsigned d, unsigned n)
{
	static uint8_t buf[256 << 10];

	for (unsigned k = 0; k < n; k++) {
		uint64_t len = ((rnd(t) % 64) + 1) * 4096;
		uint64_t off = (rnd(t) % ((disk_size[d] - len) / 512)) * 512;

		if (k % 4 == 3) {
			assert_int_equal(rep_store_zero(t->s, d, off, len), 0);
			memset(t->cur[d] + off, 0, len);
			continue;
		}
		for (uint64_t i = 0; i < len; i += 8) {
			uint64_t v = rnd(t);
			memcpy(buf + i, &v, 8);
		}
		assert_int_equal(rep_store_write(t->s, d, off, buf, len), 0);
		memcpy(t->cur[d] + off, buf, len);
	}
}

/* One cycle on the newest point: writes, commit; the model kept for it. */
static void cycle(struct t *t, unsigned n)
{
	uint64_t id = t->next++;
	char err[256] = "";

	assert_true(id <= MAXPT);
	assert_int_equal(rep_store_begin(t->s, id, rep_store_newest(t->s), id == 1, false, err,
					 sizeof(err)),
			 0);
	for (unsigned d = 0; d < NDISKS; d++)
		scribble(t, d, n);
	assert_int_equal(rep_store_commit(t->s, id, 1000 + id, id % 2, n, err, sizeof(err)), 0);
	for (unsigned d = 0; d < NDISKS; d++) {
		t->at[id][d] = malloc(disk_size[d]);
		assert_non_null(t->at[id][d]);
		memcpy(t->at[id][d], t->cur[d], disk_size[d]);
	}
}

/* Does point @id read as its model on every disk? */
static void check_point(struct t *t, uint64_t id)
{
	char paths[NDISKS][PATH_MAX], out[PATH_MAX], cmd[3 * PATH_MAX];
	uint8_t *buf;

	assert_int_equal(rep_store_point_files(t->s, id, paths, NDISKS), NDISKS);
	for (unsigned d = 0; d < NDISKS; d++) {
		FILE *f;

		snprintf(out, sizeof(out), "%s/check.raw", t->tmp);
		/* a pool's point is a json: spec that names its format */
		snprintf(cmd, sizeof(cmd), "qemu-img convert -U %s -O raw '%s' '%s'",
			 pool ? "" : "-f qcow2", paths[d], out);
		assert_int_equal(system(cmd), 0);
		buf = malloc(disk_size[d] + 1);
		assert_non_null(buf);
		assert_non_null(f = fopen(out, "r"));
		assert_int_equal(fread(buf, 1, disk_size[d] + 1, f), disk_size[d]);
		fclose(f);
		if (memcmp(buf, t->at[id][d], disk_size[d]))
			fail_msg("point %" PRIu64 " disk %u differs from its model", id, d);
		free(buf);
		unlink(out);
	}
}

/* The points are @ids (oldest first), and each reads as its model. */
static void check_points(struct t *t, const uint64_t *ids, unsigned n)
{
	struct rep_store_point p[MAXPT];

	assert_int_equal(rep_store_points(t->s, p, MAXPT), n);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(p[i].id, ids[i]);
		assert_int_equal(p[i].time_ms, 1000 + ids[i]);
		check_point(t, ids[i]);
	}
	assert_int_equal(rep_store_newest(t->s), n ? ids[n - 1] : 0);
}

/* A live process (not a zombie: the daemon's parent may be a PID 1 that
 * reaps late). */
static bool qsd_alive(int pid)
{
	char path[64], st = 'X';
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (pid <= 0 || !(f = fopen(path, "r")))
		return false;
	if (fscanf(f, "%*d (%*[^)]) %c", &st) != 1)
		st = 'X';
	fclose(f);
	return st != 'Z' && st != 'X';
}

/* ---- tests ---- */

static void points_and_prunes(void **state)
{
	struct t *t = *state;
	static const uint64_t last3[][3] = { { 1 }, { 1, 2 }, { 1, 2, 3 }, { 2, 3, 4 },
					     { 3, 4, 5 }, { 4, 5, 6 } };
	struct stat st;

	store_open(t);
	assert_int_equal(rep_store_newest(t->s), 0);
	for (unsigned c = 0; c < 6; c++) {
		int64_t t0 = now_ms();
		cycle(t, 40);
		print_message("cycle %u (commit + prune) %lld ms\n", c + 1,
			      (long long)(now_ms() - t0));
		check_points(t, last3[c], c < 3 ? c + 1 : 3);
	}
	/* pruned points leave no files behind */
	char path[PATH_MAX + 32];
	struct rep_store_point p[MAXPT];
	rep_store_points(t->s, p, MAXPT);
	snprintf(path, sizeof(path), "%s/d0.1.qcow2", t->dir);
	assert_int_equal(stat(path, &st), -1);
	/* the index says the same after a re-open */
	assert_int_equal(rep_store_read_points(t->dir, p, MAXPT), 3);
	assert_int_equal(p[0].id, 4);
	assert_true(p[1].app_consistent);
	assert_int_equal(p[2].bytes, 40);
}

static void stale_busy_abort(void **state)
{
	struct t *t = *state;
	char err[256] = "";

	store_open(t);
	cycle(t, 20);
	cycle(t, 20);
	/* a base newer than the newest point: what it lacks was never shipped */
	assert_int_equal(rep_store_begin(t->s, 3, 5, false, false, err, sizeof(err)), -ESTALE);
	assert_non_null(strstr(err, "point 5"));
	assert_non_null(strstr(err, "is 2"));
	/* an older base (the source missed the last ack): its changes rewrite
	 * everything since, so they apply on the newest */
	assert_int_equal(rep_store_begin(t->s, 3, 1, false, false, err, sizeof(err)), 0);
	assert_int_equal(rep_store_abort(t->s, err, sizeof(err)), 0);
	assert_int_equal(rep_store_write(t->s, 0, 0, "x", 1), -EPIPE); /* no cycle */
	assert_int_equal(rep_store_begin(t->s, 3, 2, false, false, err, sizeof(err)), 0);
	assert_int_equal(rep_store_begin(t->s, 3, 2, false, false, err, sizeof(err)), -EBUSY);
	assert_int_equal(rep_store_write(t->s, 1, disk_size[1] - 4096, err, 8192), -ERANGE);
	/* a half cycle, dropped: the model does not see it */
	memset(err, 0x5a, sizeof(err));
	for (uint64_t off = 0; off < disk_size[0]; off += 1 << 20)
		assert_int_equal(rep_store_write(t->s, 0, off, err, sizeof(err)), 0);
	assert_int_equal(rep_store_abort(t->s, err, sizeof(err)), 0);
	/* the next cycle starts clean on point 2 */
	t->next = 3;
	cycle(t, 10);
	static const uint64_t ids[] = { 1, 2, 3 };
	check_points(t, ids, 3);
	/* a full copy may come on anything */
	assert_int_equal(rep_store_begin(t->s, 4, 0, true, false, err, sizeof(err)), 0);
	assert_int_equal(rep_store_abort(t->s, err, sizeof(err)), 0);
}

static void reopen_and_crash(void **state)
{
	struct t *t = *state;
	char err[256] = "";
	int pid, pid2;

	store_open(t);
	cycle(t, 20);
	cycle(t, 20);
	pid = rep_store_daemon_pid(t->s);
	assert_true(qsd_alive(pid));
	/* hcad restarts: the daemon stays meanwhile; the next open has it
	 * quit (it flushes) and starts another from the files */
	rep_store_close(t->s, false);
	t->s = NULL;
	assert_true(qsd_alive(pid));
	store_open(t);
	assert_false(qsd_alive(pid));
	pid = rep_store_daemon_pid(t->s);
	assert_true(qsd_alive(pid));
	static const uint64_t ids[] = { 1, 2 };
	check_points(t, ids, 2);
	/* a half cycle when hcad went: dropped at the next open */
	assert_int_equal(rep_store_begin(t->s, 3, 2, false, false, err, sizeof(err)), 0);
	assert_int_equal(rep_store_write(t->s, 0, 0, err, sizeof(err)), 0);
	rep_store_close(t->s, false);
	t->s = NULL;
	store_open(t);
	pid = rep_store_daemon_pid(t->s);
	t->next = 3;
	cycle(t, 10);
	static const uint64_t ids3[] = { 1, 2, 3 };
	check_points(t, ids3, 3);
	/* the daemon killed mid-cycle: a new one, the half cycle gone */
	assert_int_equal(rep_store_begin(t->s, 4, 3, false, false, err, sizeof(err)), 0);
	memset(err, 0x77, sizeof(err));
	assert_int_equal(rep_store_write(t->s, 1, 4096, err, sizeof(err)), 0);
	assert_int_equal(kill(pid, SIGKILL), 0);
	rep_store_close(t->s, false);
	t->s = NULL;
	for (int i = 0; i < 200 && qsd_alive(pid); i++)
		usleep(10000);
	store_open(t);
	pid2 = rep_store_daemon_pid(t->s);
	assert_true(pid2 != pid && qsd_alive(pid2));
	check_points(t, ids3, 3);
	cycle(t, 10); /* point 4, on point 3's model: without the half cycle */
	static const uint64_t ids4[] = { 2, 3, 4 };
	check_points(t, ids4, 3);
	/* killed between cycles while the store stays open: begin starts another */
	assert_int_equal(kill(pid2, SIGKILL), 0);
	for (int i = 0; i < 200 && qsd_alive(pid2); i++)
		usleep(10000);
	cycle(t, 10);
	static const uint64_t ids5[] = { 3, 4, 5 };
	check_points(t, ids5, 3);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* The digests of the newest point: every block listed is the model's, every
 * block not listed reads as zeros in it; a bounded call says where to go
 * on; a resync's cycle applies on exactly that point; none while a cycle
 * is open. */
static void digests_of_newest(void **state)
{
	struct t *t = *state;
	struct rep_store_digests dg;
	char err[256] = "";
	const uint32_t g = 4096;
	uint64_t size = disk_size[0], listed = 0;

	store_open(t);
	cycle(t, 20);
	cycle(t, 20);
	assert_int_equal(rep_store_digests(t->s, 0, 0, g, REP_DIGEST_REPLY_MAX, &dg, err,
					   sizeof(err)), 0);
	assert_int_equal(dg.point, 2);
	assert_int_equal(dg.next, size);
	uint8_t *seen = calloc(size / g, 1);
	assert_non_null(seen);
	for (size_t r = 0; r < dg.nruns; r++)
		for (size_t k = 0; k < dg.runs[r].n; k++) {
			uint64_t off = dg.runs[r].off + k * g;
			uint8_t want[REP_DIGEST_LEN];
			assert_true(off + g <= size);
			rep_digest(t->cur[0] + off, g, want);
			assert_memory_equal(dg.dg + (dg.runs[r].first + k) * REP_DIGEST_LEN, want,
					    REP_DIGEST_LEN);
			seen[off / g] = 1;
			listed++;
		}
	for (uint64_t b = 0; b < size / g; b++)
		if (!seen[b])
			assert_true(all_zero(t->cur[0] + b * g, g));
	assert_true(listed > 0 && listed < size / g);
	free(seen);
	rep_store_digests_free(&dg);
	/* three blocks at a time: the next call goes on from there */
	assert_int_equal(rep_store_digests(t->s, 0, 0, g, 3, &dg, err, sizeof(err)), 0);
	assert_true(dg.next < size && dg.next % g == 0);
	size_t n3 = 0;
	for (size_t r = 0; r < dg.nruns; r++)
		n3 += dg.runs[r].n;
	assert_int_equal(n3, 3);
	rep_store_digests_free(&dg);
	assert_int_equal(rep_store_digests(t->s, 0, 1, g, 3, &dg, err, sizeof(err)), -EINVAL);
	assert_int_equal(rep_store_digests(t->s, 0, 0, 3000, 3, &dg, err, sizeof(err)), -EINVAL);
	assert_int_equal(rep_store_digests(t->s, 9, 0, g, 3, &dg, err, sizeof(err)), -ERANGE);
	/* a resync applies on exactly the point its digests came from */
	assert_int_equal(rep_store_begin(t->s, 3, 1, false, true, err, sizeof(err)), -ESTALE);
	assert_non_null(strstr(err, "compared again"));
	assert_int_equal(rep_store_begin(t->s, 3, 2, false, true, err, sizeof(err)), 0);
	assert_int_equal(rep_store_digests(t->s, 0, 0, g, 3, &dg, err, sizeof(err)), -EBUSY);
	assert_int_equal(rep_store_abort(t->s, err, sizeof(err)), 0);
}

/* A store seeded from local images: its one point reads as they do, its
 * digests are theirs, and cycles go on on it (a reversed relation). */
static void seeded_store(void **state)
{
	struct t *t = *state;
	struct rep_seed_src src[NDISKS];
	struct rep_store_digests dg;
	char err[256] = "";

	/* whatever the directory held goes */
	store_open(t);
	cycle(t, 5);
	rep_store_close(t->s, true);
	t->s = NULL;
	for (unsigned d = 0; d < NDISKS; d++) {
		FILE *f;
		/* some data at random places, the rest holes */
		for (unsigned k = 0; k < 16; k++) {
			uint64_t off = rnd(t) % (disk_size[d] / 4096) * 4096;
			for (unsigned i = 0; i < 4096; i += 8) {
				uint64_t v = rnd(t);
				memcpy(t->cur[d] + off + i, &v, 8);
			}
		}
		snprintf(src[d].path, sizeof(src[d].path), "%s/src%u.raw", t->tmp, d);
		src[d].raw = true;
		assert_non_null(f = fopen(src[d].path, "w"));
		assert_int_equal(fwrite(t->cur[d], 1, disk_size[d], f), disk_size[d]);
		fclose(f);
		t->at[5][d] = malloc(disk_size[d]);
		assert_non_null(t->at[5][d]);
		memcpy(t->at[5][d], t->cur[d], disk_size[d]);
	}
	int rc = rep_store_seed(&t->cfg, 5, src, &t->s, err, sizeof(err));
	if (rc)
		fprintf(stderr, "seed: %s\n", err);
	assert_int_equal(rc, 0);
	assert_int_equal(rep_store_newest(t->s), 5);
	check_point(t, 5);
	assert_int_equal(rep_store_digests(t->s, 0, 0, 4096, REP_DIGEST_REPLY_MAX, &dg, err,
					   sizeof(err)), 0);
	assert_int_equal(dg.point, 5);
	for (size_t r = 0; r < dg.nruns; r++)
		for (size_t k = 0; k < dg.runs[r].n; k++) {
			uint8_t want[REP_DIGEST_LEN];
			rep_digest(t->cur[0] + dg.runs[r].off + k * 4096, 4096, want);
			assert_memory_equal(dg.dg + (dg.runs[r].first + k) * REP_DIGEST_LEN, want,
					    REP_DIGEST_LEN);
		}
	rep_store_digests_free(&dg);
	/* a resync on it, then cycles as usual */
	assert_int_equal(rep_store_begin(t->s, 6, 5, false, true, err, sizeof(err)), 0);
	assert_int_equal(rep_store_abort(t->s, err, sizeof(err)), 0);
	t->next = 6;
	cycle(t, 10);
	check_point(t, 6);
	check_point(t, 5);
	/* a bad image: nothing is left behind */
	rep_store_close(t->s, true);
	t->s = NULL;
	snprintf(src[1].path, sizeof(src[1].path), "%s/missing.raw", t->tmp);
	assert_int_equal(rep_store_seed(&t->cfg, 5, src, &t->s, err, sizeof(err)), -EIO);
	assert_null(t->s);
	assert_non_null(strstr(err, "missing.raw"));
	assert_int_equal(access(t->dir, F_OK), -1);
}

static void held_point_kept(void **state)
{
	struct t *t = *state;

	store_open(t);
	cycle(t, 10);
	cycle(t, 10);
	assert_int_equal(rep_store_hold(t->s, 2, true), 0);
	assert_int_equal(rep_store_hold(t->s, 9, true), -ENOENT);
	for (int i = 0; i < 3; i++)
		cycle(t, 10);
	/* a held point stops every prune: a prune of 1 would write the base
	 * that 2's copy reads */
	static const uint64_t ids[] = { 1, 2, 3, 4, 5 };
	check_points(t, ids, 5);
	struct rep_store_point p[MAXPT];
	assert_int_equal(rep_store_read_points(t->dir, p, MAXPT), 5);
	assert_false(p[0].held);
	assert_true(p[1].held);
	assert_int_equal(rep_store_hold(t->s, 2, false), 0);
	cycle(t, 10);
	static const uint64_t ids2[] = { 4, 5, 6 };
	check_points(t, ids2, 3);
}

static void other_disks_refused(void **state)
{
	struct t *t = *state;
	char err[256] = "";

	store_open(t);
	cycle(t, 5);
	rep_store_close(t->s, false);
	t->s = NULL;
	t->cfg.disks[1].size *= 2;
	assert_int_equal(rep_store_open(&t->cfg, &t->s, err, sizeof(err)), -EINVAL);
	assert_null(t->s);
	assert_non_null(strstr(err, "disks changed"));
	t->cfg.disks[1].size /= 2;
	t->cfg.ndisks = 1;
	assert_int_equal(rep_store_open(&t->cfg, &t->s, err, sizeof(err)), -EINVAL);
	/* no disks given: those of the index (hold, release after an hcad restart) */
	t->cfg.ndisks = 0;
	store_open(t);
	struct rep_disk dk[REP_DISKS_MAX];
	assert_int_equal(rep_store_disks(t->s, dk, REP_DISKS_MAX), NDISKS);
	assert_string_equal(dk[1].name, "disk1");
	assert_int_equal(dk[1].size, disk_size[1]);
	static const uint64_t ids[] = { 1 };
	check_points(t, ids, 1);
	rep_store_close(t->s, true);
	t->s = NULL;
	char other[600];
	snprintf(other, sizeof(other), "%s/none", t->tmp);
	t->cfg.dir = other;
	assert_int_equal(rep_store_open(&t->cfg, &t->s, err, sizeof(err)), -ENOENT);
	t->cfg.dir = t->dir;
	t->cfg.ndisks = NDISKS;
}

static void destroy_removes_all(void **state)
{
	struct t *t = *state;
	char err[256] = "";
	struct stat st;
	int pid;

	store_open(t);
	cycle(t, 5);
	pid = rep_store_daemon_pid(t->s);
	rep_store_close(t->s, false);
	t->s = NULL;
	assert_true(qsd_alive(pid));
	assert_int_equal(rep_store_destroy(t->dir, err, sizeof(err)), 0);
	assert_int_equal(stat(t->dir, &st), -1);
	assert_false(qsd_alive(pid));
	assert_int_equal(rep_store_destroy(t->dir, err, sizeof(err)), 0);
}

/* ---- a store in an RBD pool ---- */

/* the snapshots of the store's image of disk @d, "p1 p2" (from the rbd CLI) */
static void snaps_of(struct t *t, unsigned d, char *out, size_t len)
{
	char cmd[1024];
	FILE *f;
	size_t n;

	snprintf(cmd, sizeof(cmd), "rbd %s%s snap ls %s/hca-replica.testnode.vm1.disk%u --format json | "
		 "python3 -c 'import json,sys; print(\" \".join(s[\"name\"] for s in "
		 "json.load(sys.stdin)))'", ceph_conf ? "-c " : "", ceph_conf ? ceph_conf : "",
		 pool, d);
	assert_non_null(f = popen(cmd, "r"));
	n = fread(out, 1, len - 1, f);
	out[n] = '\0';
	if (n && out[n - 1] == '\n')
		out[n - 1] = '\0';
	pclose(f);
	(void)t;
}

/* hcad went mid-cycle, or between a point's snapshots and its index: the
 * next open puts the heads back to the newest point and removes the
 * snapshots the index does not name */
static void pool_reopen(void **state)
{
	struct t *t = *state;
	char err[256] = "", snaps[256];

	store_open(t);
	cycle(t, 20);
	cycle(t, 20);
	assert_int_equal(rep_store_daemon_pid(t->s), -1);
	assert_string_equal(rep_store_pool(t->s), pool);
	/* a half cycle, then hcad gone */
	assert_int_equal(rep_store_begin(t->s, 3, 2, false, false, err, sizeof(err)), 0);
	memset(err, 0x77, sizeof(err));
	for (uint64_t off = 0; off < disk_size[1]; off += 1 << 20)
		assert_int_equal(rep_store_write(t->s, 1, off, err, sizeof(err)), 0);
	assert_int_equal(rep_store_zero(t->s, 0, 0, disk_size[0]), 0);
	rep_store_close(t->s, false);
	t->s = NULL;
	store_open(t);
	static const uint64_t ids[] = { 1, 2 };
	check_points(t, ids, 2);
	t->next = 3;
	cycle(t, 10); /* on point 2's model: the half cycle is gone */
	static const uint64_t ids3[] = { 1, 2, 3 };
	check_points(t, ids3, 3);
	/* a point's snapshots made, the index not written: a stray */
	char cmd[1024];
	for (unsigned d = 0; d < NDISKS; d++) {
		snprintf(cmd, sizeof(cmd), "rbd %s%s snap create %s/hca-replica.testnode.vm1.disk%u@p9",
			 ceph_conf ? "-c " : "", ceph_conf ? ceph_conf : "", pool, d);
		assert_int_equal(system(cmd), 0);
	}
	rep_store_close(t->s, false);
	t->s = NULL;
	store_open(t);
	check_points(t, ids3, 3);
	snaps_of(t, 0, snaps, sizeof(snaps));
	assert_string_equal(snaps, "p1 p2 p3");
	cycle(t, 10); /* 4: 1 pruned, its snapshots with it */
	snaps_of(t, 1, snaps, sizeof(snaps));
	assert_string_equal(snaps, "p2 p3 p4");
	/* aborted while open: the same */
	assert_int_equal(rep_store_begin(t->s, 5, 4, false, false, err, sizeof(err)), 0);
	assert_int_equal(rep_store_write(t->s, 0, 8192, err, sizeof(err)), 0);
	assert_int_equal(rep_store_abort(t->s, err, sizeof(err)), 0);
	static const uint64_t ids4[] = { 2, 3, 4 };
	check_points(t, ids4, 3);
}

static void pool_seed_refused(void **state)
{
	struct t *t = *state;
	struct rep_seed_src src[NDISKS] = { { "/dev/null", true }, { "/dev/null", true } };
	char err[256] = "";

	assert_int_equal(rep_store_seed(&t->cfg, 5, src, &t->s, err, sizeof(err)), -EOPNOTSUPP);
	assert_null(t->s);
	/* a store in files is not opened as one in a pool, nor the reverse */
	store_open(t);
	cycle(t, 5);
	rep_store_close(t->s, false);
	t->s = NULL;
	t->cfg.pool = NULL;
	assert_int_equal(rep_store_open(&t->cfg, &t->s, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "in pool"));
	t->cfg.pool = "a/b";
	assert_int_equal(rep_store_open(&t->cfg, &t->s, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "pool name"));
	t->cfg.pool = pool;
}

static void pool_destroy_removes_images(void **state)
{
	struct t *t = *state;
	char err[256] = "", cmd[1024];

	store_open(t);
	cycle(t, 5);
	rep_store_close(t->s, false);
	t->s = NULL;
	assert_int_equal(rep_store_destroy(t->dir, err, sizeof(err)), 0);
	assert_int_equal(access(t->dir, F_OK), -1);
	snprintf(cmd, sizeof(cmd), "rbd %s%s ls %s | grep -q hca-replica.testnode.vm1.",
		 ceph_conf ? "-c " : "", ceph_conf ? ceph_conf : "", pool);
	assert_int_not_equal(system(cmd), 0);
}

/* no Ceph where the conf says: a clear error, nothing made */
static void pool_unreachable(void **state)
{
	struct t *t = *state;
	char err[256] = "";

	t->cfg.ceph_conf = "/nonexistent/ceph.conf";
	t->cfg.pool = "rbd";
	assert_int_equal(rep_store_open(&t->cfg, &t->s, err, sizeof(err)), -EIO);
	assert_null(t->s);
	assert_non_null(strstr(err, "/nonexistent/ceph.conf"));
	assert_int_equal(rep_store_read_points(t->dir, NULL, 0), 0);
	t->cfg.pool = "bad name";
	assert_int_equal(rep_store_open(&t->cfg, &t->s, err, sizeof(err)), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(points_and_prunes, setup, teardown),
		cmocka_unit_test_setup_teardown(stale_busy_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(digests_of_newest, setup, teardown),
		cmocka_unit_test_setup_teardown(seeded_store, setup, teardown),
		cmocka_unit_test_setup_teardown(reopen_and_crash, setup, teardown),
		cmocka_unit_test_setup_teardown(held_point_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(other_disks_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(destroy_removes_all, setup, teardown),
		cmocka_unit_test_setup_teardown(pool_unreachable, setup, teardown),
	};
	const struct CMUnitTest in_pool[] = {
		cmocka_unit_test_setup_teardown(points_and_prunes, setup, teardown),
		cmocka_unit_test_setup_teardown(stale_busy_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(digests_of_newest, setup, teardown),
		cmocka_unit_test_setup_teardown(held_point_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(other_disks_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(pool_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(pool_seed_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(pool_destroy_removes_images, setup, teardown),
	};
	int rc;

	if (access("/usr/bin/qemu-storage-daemon", X_OK)) {
		fprintf(stderr, "test_rep_store: no qemu-storage-daemon, skipped\n");
		return 77;
	}
	signal(SIGPIPE, SIG_IGN);
	qb_log_init("test_rep_store", LOG_USER, LOG_EMERG);
	qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
	if (getenv("TEST_VERBOSE")) {
		qb_log_ctl(QB_LOG_STDERR, QB_LOG_CONF_ENABLED, QB_TRUE);
		qb_log_filter_ctl(QB_LOG_STDERR, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*",
				  LOG_INFO);
	}
	pool = getenv("HCA_TEST_POOL");
	ceph_conf = getenv("HCA_TEST_CEPH_CONF");
	if (pool && *pool)
		rc = cmocka_run_group_tests_name("test_rep_store (RBD pool)", in_pool, NULL, NULL);
	else
		rc = (pool = NULL, cmocka_run_group_tests(tests, NULL, NULL));
	qb_log_fini();
	return rc;
}
