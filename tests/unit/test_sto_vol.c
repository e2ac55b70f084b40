/*
 * test_sto_vol: the local-file volume backend against the real qemu-img,
 * checked from outside (file headers, `qemu-img info`), plus how it fails:
 * bad arguments, a qemu-img that fails, one that cannot be run. Then the
 * rbd backend against a real Ceph cluster, checked through librbd and
 * QEMU's own rbd driver (`qemu-img info rbd:...`).
 *
 * Which backends run: HCA_TEST_VOL_BACKENDS, a comma-separated list of
 * "file" (the default) and "rbd". rbd needs HCA_TEST_CEPH_CONF (and takes
 * HCA_TEST_CEPH_POOL, default "hca", and HCA_TEST_CEPH_ID, default
 * "admin"); a backend asked for but not runnable fails, it is never
 * skipped. rbd tests name their images "t<pid>x<n>-..." and remove every
 * such image at the end.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <rbd/features.h>
#include <rbd/librbd.h>

#include "storage/sto.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MiB (1ull << 20)

struct fx {
	char top[64];	/* mkdtemp'd, removed at the end */
	char dir[96];	/* the volume directory, made by open */
	struct sto_vols *s;
	char err[1024];
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->top, sizeof(f->top), "/tmp/hca-vol-XXXXXX");
	assert_non_null(mkdtemp(f->top));
	snprintf(f->dir, sizeof(f->dir), "%s/vols", f->top);
	f->s = sto_vols_open_file(f->dir, NULL, f->err, sizeof(f->err));
	assert_non_null(f->s);
	*state = f;
	return 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	return remove(path);
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	sto_vols_close(f->s);
	nftw(f->top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static int create(struct fx *f, const char *vol, uint64_t size,
		  enum sto_fmt fmt)
{
	f->err[0] = '\0';
	return sto_vol_create(f->s, vol, size, fmt, f->err, sizeof(f->err));
}

static void expect_err_names(struct fx *f, const char *what)
{
	if (!strstr(f->err, what))
		fail_msg("err '%s' does not name '%s'", f->err, what);
}

static void file_of(struct fx *f, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", f->dir, name);
}

/* Entries of the volume directory other than the lock file. */
static int entries(struct fx *f)
{
	DIR *d = opendir(f->dir);
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		     strcmp(de->d_name, ".lock");
	closedir(d);
	return n;
}

/* What qemu-img itself says about @name: its format and virtual size. */
static void qemu_img_says(struct fx *f, const char *name, const char *fmt,
			  uint64_t size)
{
	char cmd[512], out[8192];
	size_t n;
	FILE *p;
	json_t *j;

	snprintf(cmd, sizeof(cmd), "qemu-img info --output=json '%s/%s'",
		 f->dir, name);
	p = popen(cmd, "r");
	assert_non_null(p);
	n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	assert_int_equal(pclose(p), 0);
	j = json_loads(out, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "format")),
			    fmt);
	assert_int_equal(json_integer_value(json_object_get(j, "virtual-size")),
			 size);
	json_decref(j);
}

static void expect_info(struct fx *f, const char *vol, enum sto_fmt fmt,
			uint64_t size)
{
	struct sto_vol_info info;

	assert_int_equal(sto_vol_info(f->s, vol, &info, f->err,
				      sizeof(f->err)), 0);
	assert_true(info.exists);
	assert_int_equal(info.fmt, fmt);
	assert_int_equal(info.size, size);
}

static void test_open_makes_private_dir(void **state)
{
	struct fx *f = *state;
	struct stat sb;

	assert_int_equal(stat(f->dir, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	assert_string_equal(sto_vols_backend(f->s), "file");
	sto_vols_close(NULL);
}

static void test_name_valid(void **state)
{
	const char *good[] = { "web1", "0", "a.b_c-d", "vm1-disk0.data" };
	const char *bad[] = { "", "Web1", ".x", "-x", "_x", "a/b", "../x",
			      "a..b", "a b", "a#b", "x\n" };
	char long_name[STO_VOL_NAME_MAX + 2];

	for (size_t i = 0; i < ARRAY_SIZE(good); i++)
		assert_true(sto_vol_name_valid(good[i]));
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		assert_false(sto_vol_name_valid(bad[i]));
	assert_false(sto_vol_name_valid(NULL));
	memset(long_name, 'a', sizeof(long_name));
	long_name[STO_VOL_NAME_MAX] = '\0';
	assert_true(sto_vol_name_valid(long_name));
	long_name[STO_VOL_NAME_MAX] = 'a';
	long_name[STO_VOL_NAME_MAX + 1] = '\0';
	assert_false(sto_vol_name_valid(long_name));
}

static void test_create_qcow2(void **state)
{
	struct fx *f = *state;
	char path[256];
	uint8_t magic[4];
	struct stat sb;
	FILE *fp;

	assert_int_equal(create(f, "web1", 64 * MiB, STO_FMT_QCOW2), 0);
	file_of(f, "web1.qcow2", path, sizeof(path));
	fp = fopen(path, "rb");
	assert_non_null(fp);
	assert_int_equal(fread(magic, 1, 4, fp), 4);
	fclose(fp);
	assert_memory_equal(magic, "QFI\xfb", 4);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	qemu_img_says(f, "web1.qcow2", "qcow2", 64 * MiB);
	expect_info(f, "web1", STO_FMT_QCOW2, 64 * MiB);
	assert_int_equal(entries(f), 1);
}

/* A shell command's exit status (the test's own tools: qemu-img, qemu-io). */
static int sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

/* A point made of a backing chain replaces a stale volume; the old bytes
 * go, the chain's bytes come, the copy stays sparse; a missing source
 * leaves the volume as it was. */
static void test_import(void **state)
{
	struct fx *f = *state;
	char vol[256], src[256];

	assert_int_equal(create(f, "web1", 64 * MiB, STO_FMT_QCOW2), 0);
	file_of(f, "web1.qcow2", vol, sizeof(vol));
	assert_int_equal(sh("qemu-io -f qcow2 -c 'write -P 0x11 0 1M' %s >/dev/null", vol), 0);
	assert_int_equal(sh("qemu-img create -q -f qcow2 %s/base.qcow2 64M && "
			    "qemu-io -f qcow2 -c 'write -P 0x22 1M 1M' %s/base.qcow2 >/dev/null && "
			    "qemu-img create -q -f qcow2 -b %s/base.qcow2 -F qcow2 %s/top.qcow2 && "
			    "qemu-io -f qcow2 -c 'write -P 0x33 2M 1M' %s/top.qcow2 >/dev/null",
			    f->top, f->top, f->top, f->top, f->top), 0);
	snprintf(src, sizeof(src), "%s/top.qcow2", f->top);
	assert_int_equal(sto_vol_import(f->s, "web1", src, STO_FMT_QCOW2, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(sh("out=$(qemu-io -f qcow2 -c 'read -P 0 0 1M' -c 'read -P 0x22 1M 1M' "
			    "-c 'read -P 0x33 2M 1M' %s) && ! echo \"$out\" | grep -q failed && "
			    "[ $(echo \"$out\" | grep -c '^read 1048576/') = 3 ]", vol), 0);
	assert_int_equal(sh("qemu-img info %s | grep -q backing", vol) != 0, 1);
	expect_info(f, "web1", STO_FMT_QCOW2, 64 * MiB);
	assert_int_equal(entries(f), 1);
	/* nothing to copy from: the volume is left as it was */
	assert_int_equal(sto_vol_import(f->s, "web1", "/nonexistent.qcow2", STO_FMT_QCOW2, f->err,
					sizeof(f->err)), -EIO);
	assert_int_equal(sh("out=$(qemu-io -f qcow2 -c 'read -P 0x33 2M 1M' %s) && ! echo "
			    "\"$out\" | grep -q failed && echo \"$out\" | grep -q '^read 1048576/'",
			    vol), 0);
	assert_int_equal(entries(f), 1);
}

static void test_create_raw(void **state)
{
	struct fx *f = *state;
	char path[256];
	struct stat sb;

	assert_int_equal(create(f, "db1", 3 * MiB + 512, STO_FMT_RAW), 0);
	file_of(f, "db1.raw", path, sizeof(path));
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_size, 3 * MiB + 512);
	qemu_img_says(f, "db1.raw", "raw", 3 * MiB + 512);
	expect_info(f, "db1", STO_FMT_RAW, 3 * MiB + 512);
	assert_int_equal(entries(f), 1);
}

static void test_create_size_limits_accepted(void **state)
{
	struct fx *f = *state;

	assert_int_equal(create(f, "tiny", STO_VOL_SIZE_MIN, STO_FMT_QCOW2), 0);
	/* qcow2 allocates lazily, so the largest size costs nothing here. */
	assert_int_equal(create(f, "huge", STO_VOL_SIZE_MAX, STO_FMT_QCOW2), 0);
	expect_info(f, "huge", STO_FMT_QCOW2, STO_VOL_SIZE_MAX);
}

static void test_create_existing_eexist_untouched(void **state)
{
	struct fx *f = *state;
	struct stat before, after;
	char path[256];

	assert_int_equal(create(f, "web1", 64 * MiB, STO_FMT_QCOW2), 0);
	file_of(f, "web1.qcow2", path, sizeof(path));
	assert_int_equal(stat(path, &before), 0);
	assert_int_equal(create(f, "web1", 128 * MiB, STO_FMT_QCOW2), -EEXIST);
	expect_err_names(f, "web1");
	expect_err_names(f, "exists");
	/* The name is taken whatever the format. */
	assert_int_equal(create(f, "web1", 64 * MiB, STO_FMT_RAW), -EEXIST);
	assert_int_equal(stat(path, &after), 0);
	assert_int_equal(after.st_ino, before.st_ino);
	assert_int_equal(after.st_size, before.st_size);
	assert_int_equal(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
	qemu_img_says(f, "web1.qcow2", "qcow2", 64 * MiB);
	assert_int_equal(entries(f), 1);
}

static void test_create_bad_size_einval(void **state)
{
	struct fx *f = *state;
	const uint64_t bad[] = { 0, 512, STO_VOL_SIZE_MIN - 512,
				 STO_VOL_SIZE_MIN + 1, 64 * MiB + 100,
				 STO_VOL_SIZE_MAX + 512, UINT64_MAX };

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		assert_int_equal(create(f, "web1", bad[i], STO_FMT_QCOW2),
				 -EINVAL);
		expect_err_names(f, "volume web1: size");
	}
	assert_int_equal(create(f, "web1", 64 * MiB, (enum sto_fmt)7), -EINVAL);
	expect_err_names(f, "format");
	assert_int_equal(entries(f), 0);
}

static void test_create_bad_name_einval(void **state)
{
	struct fx *f = *state;
	const char *bad[] = { "", "Web1", "../evil", "a/b", ".hidden",
			      "a..b", "-rf" };

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		assert_int_equal(create(f, bad[i], 64 * MiB, STO_FMT_RAW),
				 -EINVAL);
		expect_err_names(f, "invalid");
	}
	assert_int_equal(create(f, NULL, 64 * MiB, STO_FMT_RAW), -EINVAL);
	assert_int_equal(entries(f), 0);
	assert_int_equal(access("/tmp/evil.raw", F_OK), -1);
}

static void test_remove_idempotent(void **state)
{
	struct fx *f = *state;
	struct sto_vol_info info;

	assert_int_equal(create(f, "web1", 64 * MiB, STO_FMT_QCOW2), 0);
	assert_int_equal(sto_vol_remove(f->s, "web1", f->err, sizeof(f->err)),
			 0);
	assert_int_equal(entries(f), 0);
	assert_int_equal(sto_vol_info(f->s, "web1", &info, f->err,
				      sizeof(f->err)), 0);
	assert_false(info.exists);
	assert_int_equal(sto_vol_remove(f->s, "web1", f->err, sizeof(f->err)),
			 0);
	assert_int_equal(sto_vol_remove(f->s, "never", f->err, sizeof(f->err)),
			 0);
	assert_int_equal(sto_vol_remove(f->s, "../x", f->err, sizeof(f->err)),
			 -EINVAL);
}

static void resize_grows(struct fx *f, enum sto_fmt fmt, const char *file)
{
	assert_int_equal(create(f, "web1", 64 * MiB, fmt), 0);
	assert_int_equal(sto_vol_resize(f->s, "web1", 128 * MiB, f->err,
					sizeof(f->err)), 0);
	expect_info(f, "web1", fmt, 128 * MiB);
	qemu_img_says(f, file, sto_fmt_name(fmt), 128 * MiB);
}

static void test_resize_grow_qcow2(void **state)
{
	resize_grows(*state, STO_FMT_QCOW2, "web1.qcow2");
}

static void test_resize_grow_raw(void **state)
{
	resize_grows(*state, STO_FMT_RAW, "web1.raw");
}

static void test_resize_shrink_refused(void **state)
{
	struct fx *f = *state;

	assert_int_equal(create(f, "web1", 128 * MiB, STO_FMT_QCOW2), 0);
	assert_int_equal(sto_vol_resize(f->s, "web1", 64 * MiB, f->err,
					sizeof(f->err)), -EINVAL);
	expect_err_names(f, "web1");
	expect_err_names(f, "shrink");
	expect_info(f, "web1", STO_FMT_QCOW2, 128 * MiB);
	/* Same size: nothing to do, not an error. */
	assert_int_equal(sto_vol_resize(f->s, "web1", 128 * MiB, f->err,
					sizeof(f->err)), 0);
}

static void test_resize_missing_enoent(void **state)
{
	struct fx *f = *state;

	assert_int_equal(sto_vol_resize(f->s, "ghost", 64 * MiB, f->err,
					sizeof(f->err)), -ENOENT);
	expect_err_names(f, "ghost");
	assert_int_equal(entries(f), 0);
}

static void test_path(void **state)
{
	struct fx *f = *state;
	char path[PATH_MAX], want[PATH_MAX], small[8];

	assert_int_equal(create(f, "web1", 64 * MiB, STO_FMT_QCOW2), 0);
	assert_int_equal(create(f, "db1", 64 * MiB, STO_FMT_RAW), 0);
	assert_int_equal(sto_vol_path(f->s, "web1", path, sizeof(path), f->err,
				      sizeof(f->err)), 0);
	file_of(f, "web1.qcow2", want, sizeof(want));
	assert_string_equal(path, want);
	assert_int_equal(sto_vol_path(f->s, "db1", path, sizeof(path), f->err,
				      sizeof(f->err)), 0);
	file_of(f, "db1.raw", want, sizeof(want));
	assert_string_equal(path, want);
	assert_int_equal(sto_vol_path(f->s, "ghost", path, sizeof(path),
				      f->err, sizeof(f->err)), -ENOENT);
	assert_int_equal(sto_vol_path(f->s, "web1", small, sizeof(small),
				      f->err, sizeof(f->err)), -ERANGE);
	assert_string_equal(small, "");
}

static void test_info_two_formats_euclean(void **state)
{
	struct fx *f = *state;
	struct sto_vol_info info;
	char path[256];
	FILE *fp;

	assert_int_equal(create(f, "web1", 64 * MiB, STO_FMT_QCOW2), 0);
	file_of(f, "web1.raw", path, sizeof(path));
	fp = fopen(path, "w"); /* someone made one by hand */
	assert_non_null(fp);
	fclose(fp);
	assert_int_equal(sto_vol_info(f->s, "web1", &info, f->err,
				      sizeof(f->err)), -EUCLEAN);
	expect_err_names(f, "web1");
	assert_false(info.exists);
}

/* The child's result, sent back whole through a pipe. */
struct child_result {
	int rc;
	char err[1024];
};

/*
 * A real qemu-img failure, even as root (who ignores directory modes): a
 * file size limit makes qemu-img's own write fail after it has created the
 * file. Done in a child so the limit cannot touch the test's output.
 */
static void create_under_fsize_limit(struct fx *f, int out)
{
	struct rlimit lim = { .rlim_cur = 4096, .rlim_max = RLIM_INFINITY };
	struct child_result r = { 0 };

	signal(SIGXFSZ, SIG_IGN); /* inherited: qemu-img sees EFBIG */
	setrlimit(RLIMIT_FSIZE, &lim);
	r.rc = sto_vol_create(f->s, "web1", 64 * MiB, STO_FMT_RAW, r.err,
			      sizeof(r.err));
	_exit(write(out, &r, sizeof(r)) == (ssize_t)sizeof(r) ? 0 : 1);
}

static void test_qemu_img_failure_leaves_no_file(void **state)
{
	struct fx *f = *state;
	struct child_result r;
	int p[2], status;
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		create_under_fsize_limit(f, p[1]);
	close(p[1]);
	assert_int_equal(read(p[0], &r, sizeof(r)), sizeof(r));
	close(p[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(r.rc, -EIO);
	snprintf(f->err, sizeof(f->err), "%s", r.err);
	/* qemu-img's own stderr line, after our prefix. */
	expect_err_names(f, "volume web1: qemu-img create failed: qemu-img: ");
	assert_null(strchr(f->err, '\n'));
	assert_int_equal(entries(f), 0);
}

/* A qemu-img that writes the whole image and then fails anyway. */
static void test_tool_failure_after_write_leaves_no_file(void **state)
{
	struct fx *f = *state;
	char script[128];
	struct sto_vols *s;
	FILE *fp;

	snprintf(script, sizeof(script), "%s/fake-qemu-img", f->top);
	fp = fopen(script, "w");
	assert_non_null(fp);
	fputs("#!/bin/sh\nqemu-img \"$@\" || exit\n"
	      "echo 'fake: disk on fire' >&2\necho 'second line' >&2\nexit 3\n",
	      fp);
	fclose(fp);
	assert_int_equal(chmod(script, 0755), 0);
	s = sto_vols_open_file(f->dir, script, f->err, sizeof(f->err));
	assert_non_null(s);
	assert_int_equal(sto_vol_create(s, "web1", 64 * MiB, STO_FMT_QCOW2,
					f->err, sizeof(f->err)), -EIO);
	sto_vols_close(s);
	expect_err_names(f, "fake: disk on fire");
	assert_null(strstr(f->err, "second line"));
	assert_int_equal(entries(f), 0);
}

static void test_missing_qemu_img(void **state)
{
	struct fx *f = *state;
	struct sto_vols *s;

	s = sto_vols_open_file(f->dir, "/nonexistent/qemu-img", f->err,
			       sizeof(f->err));
	assert_non_null(s);
	assert_int_equal(sto_vol_create(s, "web1", 64 * MiB, STO_FMT_QCOW2,
					f->err, sizeof(f->err)), -ENOENT);
	sto_vols_close(s);
	expect_err_names(f, "cannot run /nonexistent/qemu-img");
	assert_int_equal(entries(f), 0);
}

struct racer {
	struct sto_vols *s;
	enum sto_fmt fmt;
	int rc;
};

static void *create_thread(void *arg)
{
	struct racer *r = arg;

	r->rc = sto_vol_create(r->s, "web1", 64 * MiB, r->fmt, NULL, 0);
	return NULL;
}

/* Two workers creating one name in two formats: exactly one wins. */
static void test_threads_one_name_one_volume(void **state)
{
	struct fx *f = *state;
	struct racer r[2] = { { f->s, STO_FMT_QCOW2, 1 },
			      { f->s, STO_FMT_RAW, 1 } };
	pthread_t t[2];

	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, create_thread,
						&r[i]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_true((r[0].rc == 0 && r[1].rc == -EEXIST) ||
		    (r[0].rc == -EEXIST && r[1].rc == 0));
	assert_int_equal(entries(f), 1);
}

static void test_snapshot_unsupported(void **state)
{
	struct fx *f = *state;

	assert_int_equal(create(f, "web1", 64 * MiB, STO_FMT_QCOW2), 0);
	assert_int_equal(sto_vol_snapshot(f->s, "web1", "s1", f->err,
					  sizeof(f->err)), -EOPNOTSUPP);
	expect_err_names(f, "web1");
	expect_err_names(f, "no snapshots");
	assert_int_equal(sto_vol_snapshot(f->s, "web1", "Bad", f->err,
					  sizeof(f->err)), -EINVAL);
	assert_int_equal(entries(f), 1);
}

/* ---- rbd: a real Ceph cluster, named by the environment ---- */

static const char *env_or(const char *name, const char *dflt)
{
	const char *v = getenv(name);

	return v && *v ? v : dflt;
}

static const char *ceph_conf(void)
{
	return env_or("HCA_TEST_CEPH_CONF", NULL);
}

static const char *ceph_pool(void)
{
	return env_or("HCA_TEST_CEPH_POOL", "hca");
}

static const char *ceph_id(void)
{
	return env_or("HCA_TEST_CEPH_ID", "admin");
}

struct rfx {
	struct sto_vols *s;
	char prefix[32]; /* of this test's image names: "t<pid>x<n>-" */
	char names[4][STO_VOL_NAME_MAX + 1];
	rados_t cluster; /* the test's own, to look behind the backend */
	rados_ioctx_t io;
	char err[1024];
};

static int rfx_setup(void **state)
{
	static unsigned seq;
	struct rfx *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	snprintf(r->prefix, sizeof(r->prefix), "t%dx%u-", (int)getpid(), seq++);
	r->s = sto_vols_open_rbd(ceph_conf(), ceph_id(), ceph_pool(), 30,
				 r->err, sizeof(r->err));
	if (!r->s)
		fail_msg("cannot open rbd volumes: %s", r->err);
	assert_int_equal(rados_create(&r->cluster, ceph_id()), 0);
	assert_int_equal(rados_conf_read_file(r->cluster, ceph_conf()), 0);
	assert_int_equal(rados_connect(r->cluster), 0);
	assert_int_equal(rados_ioctx_create(r->cluster, ceph_pool(), &r->io), 0);
	*state = r;
	return 0;
}

/* Remove every image of this test, whatever the backend left. */
static int rfx_teardown(void **state)
{
	struct rfx *r = *state;
	rbd_image_spec_t *specs = NULL;
	size_t n = 16;
	int rc;

	do { /* -ERANGE: @n now says how many there are */
		free(specs);
		specs = calloc(n, sizeof(*specs));
		assert_non_null(specs);
	} while ((rc = rbd_list2(r->io, specs, &n)) == -ERANGE);
	assert_int_equal(rc, 0);
	for (size_t i = 0; i < n; i++) {
		if (!strncmp(specs[i].name, r->prefix, strlen(r->prefix)))
			sto_vol_remove(r->s, specs[i].name, NULL, 0);
	}
	rbd_image_spec_list_cleanup(specs, n);
	free(specs);
	sto_vols_close(r->s);
	rados_ioctx_destroy(r->io);
	rados_shutdown(r->cluster);
	free(r);
	return 0;
}

/* This test's name for volume @base; up to four at a time. */
static const char *vn(struct rfx *r, int slot, const char *base)
{
	snprintf(r->names[slot], sizeof(r->names[0]), "%s%s", r->prefix, base);
	return r->names[slot];
}

static void rexpect_err_names(struct rfx *r, const char *what)
{
	if (!strstr(r->err, what))
		fail_msg("err '%s' does not name '%s'", r->err, what);
}

static int rcreate(struct rfx *r, const char *vol, uint64_t size,
		   enum sto_fmt fmt)
{
	r->err[0] = '\0';
	return sto_vol_create(r->s, vol, size, fmt, r->err, sizeof(r->err));
}

static void rexpect_info(struct rfx *r, const char *vol, bool exists,
			 uint64_t size)
{
	struct sto_vol_info info;

	assert_int_equal(sto_vol_info(r->s, vol, &info, r->err,
				      sizeof(r->err)), 0);
	assert_int_equal(info.exists, exists);
	if (exists) {
		assert_int_equal(info.fmt, STO_FMT_RAW);
		assert_int_equal(info.size, size);
	}
}

/* What librbd says about @vol's features, read apart from the backend. */
static uint64_t image_features(struct rfx *r, const char *vol)
{
	rbd_image_t img;
	uint64_t features = 0;

	assert_int_equal(rbd_open_read_only(r->io, vol, &img, NULL), 0);
	assert_int_equal(rbd_get_features(img, &features), 0);
	rbd_close(img);
	return features;
}

/* QEMU's own rbd driver opens @path (from sto_vol_path) with the conf and
 * user, as hv will: format raw, the virtual size given. */
static void qemu_img_opens(const char *path, uint64_t size)
{
	char cmd[1024], out[8192];
	size_t n;
	FILE *p;
	json_t *j;

	snprintf(cmd, sizeof(cmd), "qemu-img info --output=json '%s:conf=%s:id=%s'",
		 path, ceph_conf(), ceph_id());
	p = popen(cmd, "r");
	assert_non_null(p);
	n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	assert_int_equal(pclose(p), 0);
	j = json_loads(out, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "format")),
			    "raw");
	assert_int_equal(json_integer_value(json_object_get(j, "virtual-size")),
			 size);
	json_decref(j);
}

static void test_rbd_create_info_path(void **state)
{
	struct rfx *r = *state;
	const char *vol = vn(r, 0, "web1");
	char path[256], want[256];

	assert_string_equal(sto_vols_backend(r->s), "rbd");
	rexpect_info(r, vol, false, 0);
	assert_int_equal(rcreate(r, vol, 64 * MiB, STO_FMT_RAW), 0);
	rexpect_info(r, vol, true, 64 * MiB);
	assert_int_equal(image_features(r, vol), RBD_FEATURE_LAYERING);
	assert_int_equal(sto_vol_path(r->s, vol, path, sizeof(path), r->err,
				      sizeof(r->err)), 0);
	snprintf(want, sizeof(want), "rbd:%s/%s", ceph_pool(), vol);
	assert_string_equal(path, want);
	qemu_img_opens(path, 64 * MiB);
}

static void test_rbd_qcow2_refused(void **state)
{
	struct rfx *r = *state;
	const char *vol = vn(r, 0, "web1");

	assert_int_equal(rcreate(r, vol, 64 * MiB, STO_FMT_QCOW2), -EINVAL);
	rexpect_err_names(r, vol);
	rexpect_err_names(r, "rbd volumes are raw");
	rexpect_info(r, vol, false, 0);
}

static void test_rbd_create_existing_eexist(void **state)
{
	struct rfx *r = *state;
	const char *vol = vn(r, 0, "web1");

	assert_int_equal(rcreate(r, vol, 64 * MiB, STO_FMT_RAW), 0);
	assert_int_equal(rcreate(r, vol, 128 * MiB, STO_FMT_RAW), -EEXIST);
	rexpect_err_names(r, vol);
	rexpect_err_names(r, "exists");
	rexpect_info(r, vol, true, 64 * MiB);
}

static void test_rbd_bad_args_einval(void **state)
{
	struct rfx *r = *state;
	const char *vol = vn(r, 0, "web1");
	const uint64_t bad[] = { 0, 512, STO_VOL_SIZE_MIN + 1,
				 STO_VOL_SIZE_MAX + 512 };

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		assert_int_equal(rcreate(r, vol, bad[i], STO_FMT_RAW), -EINVAL);
	assert_int_equal(rcreate(r, "Bad/Name", 64 * MiB, STO_FMT_RAW), -EINVAL);
	rexpect_info(r, vol, false, 0);
	assert_null(sto_vols_open_rbd(ceph_conf(), ceph_id(), "bad/pool", 30,
				      r->err, sizeof(r->err)));
	rexpect_err_names(r, "pool name");
	assert_null(sto_vols_open_rbd(ceph_conf(), ceph_id(), "no-such-pool",
				      30, r->err, sizeof(r->err)));
	rexpect_err_names(r, "no-such-pool");
}

static void test_rbd_remove_idempotent_with_snapshots(void **state)
{
	struct rfx *r = *state;
	const char *vol = vn(r, 0, "web1");

	assert_int_equal(rcreate(r, vol, 64 * MiB, STO_FMT_RAW), 0);
	assert_int_equal(sto_vol_snapshot(r->s, vol, "s1", r->err,
					  sizeof(r->err)), 0);
	assert_int_equal(sto_vol_snapshot(r->s, vol, "s2", r->err,
					  sizeof(r->err)), 0);
	assert_int_equal(sto_vol_remove(r->s, vol, r->err, sizeof(r->err)), 0);
	rexpect_info(r, vol, false, 0);
	assert_int_equal(sto_vol_remove(r->s, vol, r->err, sizeof(r->err)), 0);
	assert_int_equal(sto_vol_remove(r->s, vn(r, 1, "never"), r->err,
					sizeof(r->err)), 0);
}

static void test_rbd_resize(void **state)
{
	struct rfx *r = *state;
	const char *vol = vn(r, 0, "web1");
	char path[256];

	assert_int_equal(rcreate(r, vol, 64 * MiB, STO_FMT_RAW), 0);
	assert_int_equal(sto_vol_resize(r->s, vol, 128 * MiB, r->err,
					sizeof(r->err)), 0);
	rexpect_info(r, vol, true, 128 * MiB);
	assert_int_equal(sto_vol_resize(r->s, vol, 128 * MiB, r->err,
					sizeof(r->err)), 0);
	assert_int_equal(sto_vol_resize(r->s, vol, 64 * MiB, r->err,
					sizeof(r->err)), -EINVAL);
	rexpect_err_names(r, vol);
	rexpect_err_names(r, "shrink");
	rexpect_info(r, vol, true, 128 * MiB);
	assert_int_equal(sto_vol_path(r->s, vol, path, sizeof(path), r->err,
				      sizeof(r->err)), 0);
	qemu_img_opens(path, 128 * MiB);
	assert_int_equal(sto_vol_resize(r->s, vn(r, 1, "ghost"), 64 * MiB,
					r->err, sizeof(r->err)), -ENOENT);
	rexpect_err_names(r, "ghost");
}

static void test_rbd_snapshot(void **state)
{
	struct rfx *r = *state;
	const char *vol = vn(r, 0, "web1");
	rbd_image_t img;
	bool exists = false;

	assert_int_equal(rcreate(r, vol, 64 * MiB, STO_FMT_RAW), 0);
	assert_int_equal(sto_vol_snapshot(r->s, vol, "before-upgrade", r->err,
					  sizeof(r->err)), 0);
	assert_int_equal(rbd_open_read_only(r->io, vol, &img, NULL), 0);
	assert_int_equal(rbd_snap_exists(img, "before-upgrade", &exists), 0);
	rbd_close(img);
	assert_true(exists);
	assert_int_equal(sto_vol_snapshot(r->s, vol, "before-upgrade", r->err,
					  sizeof(r->err)), -EEXIST);
	rexpect_err_names(r, "before-upgrade");
	assert_int_equal(sto_vol_snapshot(r->s, vn(r, 1, "ghost"), "s1", r->err,
					  sizeof(r->err)), -ENOENT);
	rexpect_err_names(r, "ghost");
	assert_int_equal(sto_vol_snapshot(r->s, vol, "a@b", r->err,
					  sizeof(r->err)), -EINVAL);
}

static void test_rbd_path_missing_and_small(void **state)
{
	struct rfx *r = *state;
	const char *vol = vn(r, 0, "web1");
	char path[256], small[8];

	assert_int_equal(sto_vol_path(r->s, vol, path, sizeof(path), r->err,
				      sizeof(r->err)), -ENOENT);
	rexpect_err_names(r, vol);
	assert_int_equal(rcreate(r, vol, 64 * MiB, STO_FMT_RAW), 0);
	assert_int_equal(sto_vol_path(r->s, vol, small, sizeof(small), r->err,
				      sizeof(r->err)), -ERANGE);
	assert_string_equal(small, "");
}

struct rracer {
	struct sto_vols *s;
	const char *vol;
	int rc;
};

static void *rcreate_thread(void *arg)
{
	struct rracer *x = arg;

	x->rc = sto_vol_create(x->s, x->vol, 64 * MiB, STO_FMT_RAW, NULL, 0);
	return NULL;
}

/* Two workers creating one name: exactly one wins. */
static void test_rbd_threads_one_name_one_volume(void **state)
{
	struct rfx *r = *state;
	const char *vol = vn(r, 0, "race");
	struct rracer x[2] = { { r->s, vol, 1 }, { r->s, vol, 1 } };
	pthread_t t[2];

	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, rcreate_thread,
						&x[i]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_true((x[0].rc == 0 && x[1].rc == -EEXIST) ||
		    (x[0].rc == -EEXIST && x[1].rc == 0));
	rexpect_info(r, vol, true, 64 * MiB);
}

/* ---- running ---- */

#define T(name) cmocka_unit_test_setup_teardown(name, fx_setup, fx_teardown)
#define R(name) cmocka_unit_test_setup_teardown(name, rfx_setup, rfx_teardown)

static int run_file(void)
{
	const struct CMUnitTest tests[] = {
		T(test_open_makes_private_dir),
		T(test_name_valid),
		T(test_create_qcow2),
		T(test_create_raw),
		T(test_import),
		T(test_create_size_limits_accepted),
		T(test_create_existing_eexist_untouched),
		T(test_create_bad_size_einval),
		T(test_create_bad_name_einval),
		T(test_remove_idempotent),
		T(test_resize_grow_qcow2),
		T(test_resize_grow_raw),
		T(test_resize_shrink_refused),
		T(test_resize_missing_enoent),
		T(test_path),
		T(test_info_two_formats_euclean),
		T(test_qemu_img_failure_leaves_no_file),
		T(test_tool_failure_after_write_leaves_no_file),
		T(test_missing_qemu_img),
		T(test_threads_one_name_one_volume),
		T(test_snapshot_unsupported),
	};

	return cmocka_run_group_tests_name("sto_vol file backend", tests, NULL,
					   NULL);
}

static int run_rbd(void)
{
	const struct CMUnitTest tests[] = {
		R(test_rbd_create_info_path),
		R(test_rbd_qcow2_refused),
		R(test_rbd_create_existing_eexist),
		R(test_rbd_bad_args_einval),
		R(test_rbd_remove_idempotent_with_snapshots),
		R(test_rbd_resize),
		R(test_rbd_snapshot),
		R(test_rbd_path_missing_and_small),
		R(test_rbd_threads_one_name_one_volume),
	};

	return cmocka_run_group_tests_name("sto_vol rbd backend", tests, NULL,
					   NULL);
}

/* A backend was asked for that cannot run: a failure, never a skip. */
static const char *unavailable;

static void test_backend_unavailable(void **state)
{
	fail_msg("%s", unavailable);
}

static int run_unavailable(const char *why)
{
	const struct CMUnitTest t[] = { cmocka_unit_test(test_backend_unavailable) };

	unavailable = why;
	return cmocka_run_group_tests_name("sto_vol backend selection", t, NULL,
					   NULL);
}

static int run_backend(const char *name)
{
	static char why[256];

	if (!strcmp(name, "file"))
		return run_file();
	if (!strcmp(name, "rbd") && !ceph_conf())
		return run_unavailable("HCA_TEST_VOL_BACKENDS asks for rbd but HCA_TEST_CEPH_CONF is not set");
	if (!strcmp(name, "rbd"))
		return run_rbd();
	snprintf(why, sizeof(why), "HCA_TEST_VOL_BACKENDS names '%.100s': want file and/or rbd",
		 name);
	return run_unavailable(why);
}

int main(void)
{
	char *list = strdup(env_or("HCA_TEST_VOL_BACKENDS", "file"));
	char *save = NULL;
	int failed = 0, ran = 0;

	for (char *be = strtok_r(list, ", ", &save); be;
	     be = strtok_r(NULL, ", ", &save), ran++)
		failed += run_backend(be);
	if (!ran)
		failed += run_unavailable("HCA_TEST_VOL_BACKENDS names no backend");
	free(list);
	return failed ? 1 : 0;
}
