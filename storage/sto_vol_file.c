/*
 * sto_vol_file: volumes as local image files, DIR/NAME.qcow2 or DIR/NAME.raw.
 *
 * qemu-img does the image work, run as a child without a shell. A create
 * builds the image under a temp name and links it into place only once it
 * is complete and on disk, so a failure or a crash never leaves something
 * that looks like a volume. Changes happen under the directory lock, which
 * keeps "one name, one format" true across threads and processes.
 */
#include "storage/sto_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */
#define QCOW2_SIZE_OFF 24
#define TOOL_MSG_MAX 512

struct vols_file {
	struct sto_vols base; /* first: the front end's handle */
	int dirfd;
	char *dir;	/* absolute, so paths given to QEMU work from any cwd */
	char *qemu_img;
};

static struct vols_file *to_file(struct sto_vols *s)
{
	return (struct vols_file *)s;
}

static int file_name(char *buf, size_t len, const char *vol, enum sto_fmt fmt,
		     bool tmp)
{
	int n = snprintf(buf, len, "%s.%s%s", vol, sto_fmt_name(fmt),
			 tmp ? "#new" : "");

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int exists_at(int dirfd, const char *vol, enum sto_fmt fmt)
{
	char name[NAME_MAX + 1];
	struct stat sb;
	int rc = file_name(name, sizeof(name), vol, fmt, false);

	if (rc == 0 && fstatat(dirfd, name, &sb, 0) < 0)
		rc = -errno;
	return rc == 0 ? 1 : rc == -ENOENT ? 0 : rc;
}

/* Which format @vol is stored in: 0, -ENOENT, -EUCLEAN if in both. */
static int lookup(struct vols_file *f, const char *vol, enum sto_fmt *fmt,
		  char *err, size_t errlen)
{
	int q = exists_at(f->dirfd, vol, STO_FMT_QCOW2);
	int r = exists_at(f->dirfd, vol, STO_FMT_RAW);

	if (q < 0 || r < 0)
		return STO_FAIL(LOG_ERR, err, errlen, q < 0 ? q : r,
				"volume %s: cannot stat its file in %s: %s",
				vol, f->dir, sto_errstr(-(q < 0 ? q : r)));
	if (q && r)
		return STO_FAIL(LOG_ERR, err, errlen, -EUCLEAN,
				"volume %s: both %s.qcow2 and %s.raw exist in %s; remove one",
				vol, vol, vol, f->dir);
	if (!q && !r)
		return -ENOENT;
	*fmt = q ? STO_FMT_QCOW2 : STO_FMT_RAW;
	return 0;
}

static int lock(struct vols_file *f, const char *vol, char *err, size_t errlen)
{
	int fd = sto_lock_dir(f->dirfd);

	if (fd < 0)
		return STO_FAIL(LOG_ERR, err, errlen, fd,
				"volume %s: cannot lock %s/%s: %s", vol, f->dir,
				STO_LOCK_NAME, sto_errstr(-fd));
	return fd;
}

/* Keep the first line of what the tool said, for the caller's message. */
static void first_line(char *msg)
{
	msg[strcspn(msg, "\n")] = '\0';
}

/* Read the child's stderr to EOF, keeping the first TOOL_MSG_MAX-1 bytes:
 * draining all of it keeps a chatty tool from blocking on a full pipe. */
static void drain(int fd, char *msg)
{
	size_t used = 0;
	char junk[256];

	for (;;) {
		char *dst = used < TOOL_MSG_MAX - 1 ? msg + used : junk;
		size_t room = used < TOOL_MSG_MAX - 1 ? TOOL_MSG_MAX - 1 - used :
							 sizeof(junk);
		ssize_t n = read(fd, dst, room);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (dst == msg + used)
			used += (size_t)n;
	}
	msg[used] = '\0';
	first_line(msg);
}

static int wait_child(pid_t pid, int *status)
{
	while (waitpid(pid, status, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

static int spawn(struct vols_file *f, char *const argv[], int errfd,
		 pid_t *pid)
{
	posix_spawn_file_actions_t fa;
	int rc = posix_spawn_file_actions_init(&fa);

	if (rc)
		return -rc;
	rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	if (!rc)
		rc = posix_spawn_file_actions_addopen(&fa, 1, "/dev/null",
						      O_WRONLY, 0);
	if (!rc)
		rc = posix_spawn_file_actions_adddup2(&fa, errfd, 2);
	if (!rc)
		rc = posix_spawnp(pid, f->qemu_img, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	return -rc;
}

/*
 * Run qemu-img with @argv (argv[0] is replaced by the configured binary)
 * and wait for it. posix_spawn rather than fork: it is safe in a threaded
 * process and reports a failed exec. The caller must not reap children with
 * waitpid(-1) behind our back. Returns 0, or -EIO with the tool's first
 * stderr line in @err.
 */
static int run_tool(struct vols_file *f, const char *vol, char *argv[],
		    char *err, size_t errlen)
{
	char msg[TOOL_MSG_MAX] = "";
	int fds[2] = { -1, -1 };
	int rc, status = 0;
	pid_t pid = -1;

	argv[0] = f->qemu_img;
	if (pipe2(fds, O_CLOEXEC) < 0) {
		rc = STO_FAIL(LOG_ERR, err, errlen, -errno,
			      "volume %s: qemu-img %s: pipe: %s", vol, argv[1],
			      sto_errstr(errno));
		goto out;
	}
	rc = spawn(f, argv, fds[1], &pid);
	close(fds[1]);
	fds[1] = -1;
	if (rc < 0) {
		rc = STO_FAIL(LOG_ERR, err, errlen, rc,
			      "volume %s: cannot run %s: %s", vol, f->qemu_img,
			      sto_errstr(-rc));
		goto out;
	}
	drain(fds[0], msg);
	rc = wait_child(pid, &status);
	if (rc < 0)
		rc = STO_FAIL(LOG_ERR, err, errlen, rc,
			      "volume %s: qemu-img %s: waitpid: %s", vol,
			      argv[1], sto_errstr(-rc));
	else if (WIFSIGNALED(status))
		rc = STO_FAIL(LOG_ERR, err, errlen, -EIO,
			      "volume %s: qemu-img %s killed by signal %d%s%s",
			      vol, argv[1], WTERMSIG(status), msg[0] ? ": " : "",
			      msg);
	else if (WEXITSTATUS(status))
		rc = STO_FAIL(LOG_ERR, err, errlen, -EIO,
			      "volume %s: qemu-img %s failed: %s", vol, argv[1],
			      msg[0] ? msg : "exited with an error and no message");
out:
	if (fds[0] >= 0)
		close(fds[0]);
	return rc;
}

static int path_of(struct vols_file *f, const char *name, char *buf,
		   size_t len)
{
	int n = snprintf(buf, len, "%s/%s", f->dir, name);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int run_on(struct vols_file *f, const char *vol, const char *verb,
		  enum sto_fmt fmt, const char *name, uint64_t size, char *err,
		  size_t errlen)
{
	char path[PATH_MAX], sz[24];
	char *argv[] = { NULL, (char *)verb, "-q", "-f",
			 (char *)sto_fmt_name(fmt), path, sz, NULL, NULL, NULL };
	int rc = path_of(f, name, path, sizeof(path));

	/*
	 * qcow2 volumes hcad makes: 1 MiB clusters with 32 KiB subclusters
	 * (extended_l2). Measured here with QEMU 10.0: a 1 GiB NBD mirror into
	 * a default (64 KiB) image ran at 160-180 MiB/s, into this layout at
	 * 330-350 MiB/s, the image as sparse; the subclusters keep a small
	 * write from taking a whole cluster's worth of zeroes.
	 */
	if (!strcmp(verb, "create") && fmt == STO_FMT_QCOW2) {
		argv[5] = "-o";
		argv[6] = "cluster_size=1M,extended_l2=on";
		argv[7] = path;
		argv[8] = sz;
	}

	if (rc < 0)
		return STO_FAIL(LOG_ERR, err, errlen, rc,
				"volume %s: path %s/%s is too long", vol,
				f->dir, name);
	snprintf(sz, sizeof(sz), "%" PRIu64, size);
	return run_tool(f, vol, argv, err, errlen);
}

/* Make the image private and on disk before anyone can see it. */
static int settle(struct vols_file *f, const char *vol, const char *name,
		  char *err, size_t errlen)
{
	int fd = openat(f->dirfd, name, O_RDONLY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0 || fchmod(fd, 0600) < 0 || fsync(fd) < 0)
		rc = STO_FAIL(LOG_ERR, err, errlen, -errno,
			      "volume %s: cannot sync %s/%s: %s", vol, f->dir,
			      name, sto_errstr(errno));
	if (fd >= 0)
		close(fd);
	return rc;
}

/* link() rather than rename(): it never replaces a file that appeared
 * under the final name by some way that bypassed our lock. */
static int publish(struct vols_file *f, const char *vol, const char *tmp,
		   const char *name, char *err, size_t errlen)
{
	int rc;

	if (linkat(f->dirfd, tmp, f->dirfd, name, 0) < 0)
		return STO_FAIL(LOG_ERR, err, errlen, -errno,
				"volume %s: cannot link %s/%s into place: %s",
				vol, f->dir, name, sto_errstr(errno));
	rc = sto_fsync_dir(f->dirfd);
	if (rc < 0) {
		unlinkat(f->dirfd, name, 0); /* a failed create leaves nothing */
		return STO_FAIL(LOG_ERR, err, errlen, rc,
				"volume %s: cannot sync %s: %s", vol, f->dir,
				sto_errstr(-rc));
	}
	return 0;
}

static int file_create(struct sto_vols *s, const char *vol, uint64_t size,
		       enum sto_fmt fmt, char *err, size_t errlen)
{
	struct vols_file *f = to_file(s);
	char tmp[NAME_MAX + 1], name[NAME_MAX + 1];
	enum sto_fmt cur;
	int lk = lock(f, vol, err, errlen);
	int rc = lk < 0 ? lk : 0;

	if (rc < 0)
		goto out;
	rc = lookup(f, vol, &cur, err, errlen);
	if (rc == 0)
		rc = STO_FAIL(LOG_ERR, err, errlen, -EEXIST,
			      "volume %s already exists (as %s/%s.%s)", vol,
			      f->dir, vol, sto_fmt_name(cur));
	if (rc != -ENOENT)
		goto out;
	file_name(tmp, sizeof(tmp), vol, fmt, true);
	file_name(name, sizeof(name), vol, fmt, false);
	unlinkat(f->dirfd, tmp, 0); /* a crashed create's, under our lock */
	rc = run_on(f, vol, "create", fmt, tmp, size, err, errlen);
	if (rc == 0)
		rc = settle(f, vol, tmp, err, errlen);
	if (rc == 0)
		rc = publish(f, vol, tmp, name, err, errlen);
	unlinkat(f->dirfd, tmp, 0);
out:
	if (lk >= 0)
		close(lk);
	return rc;
}

static int file_import(struct sto_vols *s, const char *vol, const char *src, enum sto_fmt fmt,
		       char *err, size_t errlen)
{
	struct vols_file *f = to_file(s);
	char tmp[NAME_MAX + 1], name[NAME_MAX + 1], other[NAME_MAX + 1], path[PATH_MAX];
	char *argv[] = { NULL, "convert", "-q", "-U", "-O", (char *)sto_fmt_name(fmt), "-o",
			 "cluster_size=1M,extended_l2=on", (char *)src, path, NULL };
	int lk = lock(f, vol, err, errlen);
	int rc = lk < 0 ? lk : 0;

	if (rc < 0)
		goto out;
	if (fmt == STO_FMT_RAW) { /* the same layout as a created volume */
		argv[6] = (char *)src;
		argv[7] = path;
		argv[8] = NULL;
	}
	file_name(tmp, sizeof(tmp), vol, fmt, true);
	file_name(name, sizeof(name), vol, fmt, false);
	file_name(other, sizeof(other), vol, fmt == STO_FMT_RAW ? STO_FMT_QCOW2 : STO_FMT_RAW,
		  false);
	if ((rc = path_of(f, tmp, path, sizeof(path))) < 0) {
		rc = STO_FAIL(LOG_ERR, err, errlen, rc, "volume %s: path too long", vol);
		goto out;
	}
	unlinkat(f->dirfd, tmp, 0);
	rc = run_tool(f, vol, argv, err, errlen);
	if (rc == 0)
		rc = settle(f, vol, tmp, err, errlen);
	if (rc == 0 && renameat(f->dirfd, tmp, f->dirfd, name) < 0)
		rc = STO_FAIL(LOG_ERR, err, errlen, -errno, "volume %s: cannot put %s/%s in "
			      "place: %s", vol, f->dir, name, sto_errstr(errno));
	if (rc == 0) {
		unlinkat(f->dirfd, other, 0); /* a stale copy in the other format */
		rc = sto_fsync_dir(f->dirfd);
		if (rc < 0)
			rc = STO_FAIL(LOG_ERR, err, errlen, rc, "volume %s: cannot sync %s: %s",
				      vol, f->dir, sto_errstr(-rc));
	}
	unlinkat(f->dirfd, tmp, 0);
out:
	if (lk >= 0)
		close(lk);
	return rc;
}

static int file_remove(struct sto_vols *s, const char *vol, char *err,
		       size_t errlen)
{
	struct vols_file *f = to_file(s);
	char name[NAME_MAX + 1];
	int lk = lock(f, vol, err, errlen);
	int rc = lk < 0 ? lk : 0;

	for (int fmt = STO_FMT_QCOW2; rc == 0 && fmt <= STO_FMT_RAW; fmt++) {
		file_name(name, sizeof(name), vol, fmt, false);
		if (unlinkat(f->dirfd, name, 0) < 0 && errno != ENOENT)
			rc = STO_FAIL(LOG_ERR, err, errlen, -errno,
				      "volume %s: cannot remove %s/%s: %s", vol,
				      f->dir, name, sto_errstr(errno));
	}
	if (rc == 0 && (rc = sto_fsync_dir(f->dirfd)) < 0)
		rc = STO_FAIL(LOG_ERR, err, errlen, rc,
			      "volume %s: cannot sync %s: %s", vol, f->dir,
			      sto_errstr(-rc));
	if (lk >= 0)
		close(lk);
	return rc;
}

static uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* Virtual size from the file itself: the qcow2 header, or a raw file's
 * length. Cheaper than a qemu-img child, and safe while QEMU runs. */
static int read_size(struct vols_file *f, const char *vol, enum sto_fmt fmt,
		     uint64_t *size, char *err, size_t errlen)
{
	char name[NAME_MAX + 1];
	uint8_t hdr[QCOW2_SIZE_OFF + 8];
	struct stat sb;
	int fd, rc = 0;

	file_name(name, sizeof(name), vol, fmt, false);
	fd = openat(f->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) < 0) {
		rc = STO_FAIL(LOG_ERR, err, errlen, -errno,
			      "volume %s: cannot open %s/%s: %s", vol, f->dir,
			      name, sto_errstr(errno));
		goto out;
	}
	if (fmt == STO_FMT_RAW) {
		*size = (uint64_t)sb.st_size;
		goto out;
	}
	if (pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
	    (uint32_t)(be64(hdr) >> 32) != QCOW2_MAGIC) {
		rc = STO_FAIL(LOG_ERR, err, errlen, -EBADMSG,
			      "volume %s: %s/%s is not a qcow2 image (no qcow2 header)",
			      vol, f->dir, name);
		goto out;
	}
	*size = be64(hdr + QCOW2_SIZE_OFF);
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

static int file_info(struct sto_vols *s, const char *vol,
		     struct sto_vol_info *out, char *err, size_t errlen)
{
	struct vols_file *f = to_file(s);
	int rc = lookup(f, vol, &out->fmt, err, errlen);

	if (rc == -ENOENT)
		return 0;
	if (rc == 0)
		rc = read_size(f, vol, out->fmt, &out->size, err, errlen);
	out->exists = rc == 0;
	if (rc == 0) {
		char name[NAME_MAX + 1];
		struct stat sb;
		file_name(name, sizeof(name), vol, out->fmt, false);
		if (fstatat(f->dirfd, name, &sb, 0) == 0)
			out->allocated = (uint64_t)sb.st_blocks * 512u;
	}
	return rc;
}

static int file_room(struct sto_vols *s, uint64_t *avail, char *err, size_t errlen)
{
	struct vols_file *f = to_file(s);
	struct statvfs sv;

	if (fstatvfs(f->dirfd, &sv) < 0)
		return STO_FAIL(LOG_ERR, err, errlen, -errno, "volumes in %s: %s", f->dir,
				strerror(errno));
	*avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	return 0;
}

static int file_resize(struct sto_vols *s, const char *vol, uint64_t size,
		       char *err, size_t errlen)
{
	struct vols_file *f = to_file(s);
	struct sto_vol_info cur = { 0 };
	char name[NAME_MAX + 1];
	int lk = lock(f, vol, err, errlen);
	int rc = lk < 0 ? lk : file_info(s, vol, &cur, err, errlen);

	if (rc < 0 || (size == cur.size && cur.exists))
		goto out;
	if (!cur.exists)
		rc = STO_FAIL(LOG_ERR, err, errlen, -ENOENT,
			      "volume %s does not exist", vol);
	else if (size < cur.size)
		rc = STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			      "volume %s: shrinking from %" PRIu64 " to %" PRIu64 " bytes is refused (it would cut off guest data)",
			      vol, cur.size, size);
	if (rc < 0)
		goto out;
	file_name(name, sizeof(name), vol, cur.fmt, false);
	rc = run_on(f, vol, "resize", cur.fmt, name, size, err, errlen);
	if (rc == 0)
		rc = settle(f, vol, name, err, errlen);
out:
	if (lk >= 0)
		close(lk);
	return rc;
}

static int file_path(struct sto_vols *s, const char *vol, char *buf,
		     size_t len, char *err, size_t errlen)
{
	struct vols_file *f = to_file(s);
	enum sto_fmt fmt;
	char name[NAME_MAX + 1];
	int rc = lookup(f, vol, &fmt, err, errlen);

	if (rc == -ENOENT)
		return STO_FAIL(LOG_ERR, err, errlen, -ENOENT,
				"volume %s does not exist", vol);
	if (rc < 0)
		return rc;
	file_name(name, sizeof(name), vol, fmt, false);
	if (path_of(f, name, buf, len) < 0) {
		if (len)
			buf[0] = '\0';
		return STO_FAIL(LOG_ERR, err, errlen, -ERANGE,
				"volume %s: path buffer of %zu bytes is too small",
				vol, len);
	}
	return 0;
}

static void file_close(struct sto_vols *s)
{
	struct vols_file *f = to_file(s);

	if (f->dirfd >= 0)
		close(f->dirfd);
	free(f->dir);
	free(f->qemu_img);
	free(f);
}

static const struct sto_vol_ops file_ops = {
	.name = "file",
	.create = file_create,
	.import = file_import,
	.remove = file_remove,
	.resize = file_resize,
	.info = file_info,
	.path = file_path,
	.room = file_room,
	.close = file_close,
};

static int clean_tmp(struct vols_file *f, char *err, size_t errlen)
{
	int lk = sto_lock_dir(f->dirfd);
	int rc = lk < 0 ? lk : sto_remove_tmp(f->dirfd, f->dir);

	if (lk >= 0)
		close(lk);
	if (rc < 0)
		return STO_FAIL(LOG_ERR, err, errlen, rc,
				"volume directory %s: cannot clean temp files: %s",
				f->dir, sto_errstr(-rc));
	return 0;
}

struct sto_vols *sto_vols_open_file(const char *dir, const char *qemu_img,
				    char *err, size_t errlen)
{
	struct vols_file *f = calloc(1, sizeof(*f));
	int rc;

	if (!f) {
		STO_FAIL(LOG_ERR, err, errlen, -ENOMEM,
			 "volume directory %s: out of memory", dir);
		return NULL;
	}
	f->base.ops = &file_ops;
	f->dirfd = sto_dir_open(dir);
	rc = f->dirfd < 0 ? f->dirfd : 0;
	if (rc == 0 && !(f->dir = realpath(dir, NULL)))
		rc = -errno;
	if (rc == 0 && !(f->qemu_img = strdup(qemu_img ? qemu_img : "qemu-img")))
		rc = -ENOMEM;
	if (rc < 0) {
		STO_FAIL(LOG_ERR, err, errlen, rc,
			 "volume directory %s: cannot open: %s", dir,
			 sto_errstr(-rc));
		goto out;
	}
	rc = clean_tmp(f, err, errlen);
out:
	if (rc < 0) {
		file_close(&f->base);
		return NULL;
	}
	return &f->base;
}
