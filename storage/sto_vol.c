/*
 * sto_vol: the volume front end (argument checks, then the backend's ops)
 * and the helpers every storage backend shares: failure reporting,
 * directories, the per-directory lock, temp file cleanup, threads.
 */
#include "storage/sto_priv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- shared helpers ---- */

int sto_fail_at(const char *func, const char *file, uint32_t line,
		uint8_t prio, char *err, size_t errlen, int rc,
		const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	qb_log_from_external_source(func, file, "%s", prio, line, 0, msg);
	if (err && errlen)
		snprintf(err, errlen, "%s", msg);
	return rc;
}

const char *sto_errstr(int errnum)
{
	const char *s = strerrordesc_np(errnum);

	return s ? s : "Unknown error";
}

int sto_mkdir_p(const char *dir)
{
	char *copy = strdup(dir);
	int rc = 0;

	if (!copy)
		return -ENOMEM;
	/* Skip the leading '/' so the first component is not the empty one. */
	for (char *p = copy + 1; ; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char saved = *p;
		*p = '\0';
		if (mkdir(copy, 0700) < 0 && errno != EEXIST) {
			rc = -errno;
			goto out;
		}
		*p = saved;
		if (saved == '\0')
			break;
	}
out:
	free(copy);
	return rc;
}

int sto_dir_open(const char *dir)
{
	int rc = sto_mkdir_p(dir);
	int fd;

	if (rc < 0)
		return rc;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int sto_fsync_dir(int dirfd)
{
	return fsync(dirfd) < 0 ? -errno : 0;
}

int sto_lock_dir(int dirfd)
{
	int fd = openat(dirfd, STO_LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC,
			0600);
	int rc;

	if (fd < 0)
		return -errno;
	while (flock(fd, LOCK_EX) < 0) {
		if (errno == EINTR)
			continue;
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

int sto_remove_tmp(int dirfd, const char *where)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	struct dirent *de;
	int removed = 0;

	if (!d) {
		int rc = -errno;
		if (fd >= 0)
			close(fd);
		return rc;
	}
	while ((de = readdir(d))) {
		if (!strchr(de->d_name, STO_TMP_MARK))
			continue;
		if (unlinkat(dirfd, de->d_name, 0) < 0) {
			qb_log(LOG_WARNING, "cannot remove leftover temp file %s/%s: %s",
			       where, de->d_name, sto_errstr(errno));
			continue;
		}
		qb_log(LOG_NOTICE, "removed leftover temp file %s/%s", where,
		       de->d_name);
		removed++;
	}
	closedir(d);
	return removed;
}

int sto_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(thread, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -rc;
}

static bool name_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
	       c == '_' || c == '-';
}

/* The shared rule for volume names and key parts: also keeps them clear of
 * '/', STO_TMP_MARK and hidden files, which the backends rely on. */
bool sto_part_valid(const char *s, size_t n)
{
	if (n == 0 || !name_char_ok(s[0]) || s[0] == '.' || s[0] == '_' ||
	    s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!name_char_ok(s[i]))
			return false;
		if (s[i] == '.' && i + 1 < n && s[i + 1] == '.')
			return false;
	}
	return true;
}

/* ---- the volume front end ---- */

static const char *const fmt_names[] = {
	[STO_FMT_QCOW2] = "qcow2",
	[STO_FMT_RAW] = "raw",
};

const char *sto_fmt_name(enum sto_fmt fmt)
{
	if ((unsigned)fmt >= sizeof(fmt_names) / sizeof(fmt_names[0]))
		return "unknown";
	return fmt_names[fmt];
}

bool sto_vol_name_valid(const char *vol)
{
	if (!vol)
		return false;
	size_t n = strnlen(vol, STO_VOL_NAME_MAX + 1);
	return n <= STO_VOL_NAME_MAX && sto_part_valid(vol, n);
}

static int check_name(const char *vol, char *err, size_t errlen)
{
	if (sto_vol_name_valid(vol))
		return 0;
	return STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			"volume name '%.100s' is invalid: want 1-95 of [a-z0-9._-], starting with [a-z0-9], without '..'",
			vol ? vol : "(null)");
}

static int check_size(const char *vol, uint64_t size, char *err,
		      size_t errlen)
{
	if (size < STO_VOL_SIZE_MIN || size > STO_VOL_SIZE_MAX)
		return STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
				"volume %s: size %" PRIu64 " bytes is outside 1 MiB..64 TiB",
				vol, size);
	if (size % STO_VOL_SIZE_ALIGN)
		return STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
				"volume %s: size %" PRIu64 " bytes is not a multiple of 512",
				vol, size);
	return 0;
}

void sto_vols_close(struct sto_vols *s)
{
	if (s)
		s->ops->close(s);
}

const char *sto_vols_backend(const struct sto_vols *s)
{
	return s->ops->name;
}

int sto_vol_import(struct sto_vols *s, const char *vol, const char *src, enum sto_fmt fmt,
		   char *err, size_t errlen)
{
	int rc = check_name(vol, err, errlen);

	if (rc == 0 && fmt != STO_FMT_QCOW2 && fmt != STO_FMT_RAW)
		rc = STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			      "volume %s: unknown format %d", vol, (int)fmt);
	if (rc == 0 && !s->ops->import)
		rc = STO_FAIL(LOG_ERR, err, errlen, -EOPNOTSUPP,
			      "volume %s: the %s backend cannot import an image", vol,
			      s->ops->name);
	return rc ? rc : s->ops->import(s, vol, src, fmt, err, errlen);
}

int sto_vol_create(struct sto_vols *s, const char *vol, uint64_t size,
		   enum sto_fmt fmt, char *err, size_t errlen)
{
	int rc = check_name(vol, err, errlen);

	if (rc == 0)
		rc = check_size(vol, size, err, errlen);
	if (rc == 0 && fmt != STO_FMT_QCOW2 && fmt != STO_FMT_RAW)
		rc = STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			      "volume %s: unknown format %d", vol, (int)fmt);
	if (rc == 0)
		rc = s->ops->create(s, vol, size, fmt, err, errlen);
	return rc;
}

int sto_vol_remove(struct sto_vols *s, const char *vol, char *err,
		   size_t errlen)
{
	int rc = check_name(vol, err, errlen);

	return rc ? rc : s->ops->remove(s, vol, err, errlen);
}

int sto_vol_resize(struct sto_vols *s, const char *vol, uint64_t size,
		   char *err, size_t errlen)
{
	int rc = check_name(vol, err, errlen);

	if (rc == 0)
		rc = check_size(vol, size, err, errlen);
	return rc ? rc : s->ops->resize(s, vol, size, err, errlen);
}

int sto_vol_info(struct sto_vols *s, const char *vol, struct sto_vol_info *out,
		 char *err, size_t errlen)
{
	int rc = check_name(vol, err, errlen);

	memset(out, 0, sizeof(*out));
	return rc ? rc : s->ops->info(s, vol, out, err, errlen);
}

int sto_vols_room(struct sto_vols *s, uint64_t *avail, char *err, size_t errlen)
{
	*avail = 0;
	if (!s->ops->room) {
		if (errlen)
			snprintf(err, errlen, "the %s backend does not say how much room it has",
				 s->ops->name);
		return -EOPNOTSUPP;
	}
	return s->ops->room(s, avail, err, errlen);
}

int sto_vol_path(struct sto_vols *s, const char *vol, char *buf, size_t len,
		 char *err, size_t errlen)
{
	int rc = check_name(vol, err, errlen);

	if (len)
		buf[0] = '\0';
	return rc ? rc : s->ops->path(s, vol, buf, len, err, errlen);
}

int sto_vol_snapshot(struct sto_vols *s, const char *vol, const char *snap,
		     char *err, size_t errlen)
{
	int rc = check_name(vol, err, errlen);

	if (rc == 0 && !sto_vol_name_valid(snap))
		rc = STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			      "volume %s: snapshot name '%.100s' is invalid: want 1-95 of [a-z0-9._-], starting with [a-z0-9], without '..'",
			      vol, snap ? snap : "(null)");
	if (rc == 0 && !s->ops->snapshot)
		rc = STO_FAIL(LOG_ERR, err, errlen, -EOPNOTSUPP,
			      "volume %s: the %s backend has no snapshots (rbd volumes do)",
			      vol, s->ops->name);
	return rc ? rc : s->ops->snapshot(s, vol, snap, err, errlen);
}
