/*
 * sto_store_dir: the state store as a directory of record files, the
 * embedded store of a standalone node. Key "vm/web1" is DIR/vm/web1.rec, in
 * the record format of sto_priv.h; its lease, if any, DIR/vm/web1.lease.
 *
 * Writers take the directory lock (sto_lock_dir: one open file per call, so
 * it excludes threads and processes alike), compare the version, write a
 * temp file, fsync it, rename it over the record and fsync the directory.
 * Readers take no lock: rename shows them the old file or the new, never a
 * mix. Temp names contain STO_TMP_MARK, which no key can.
 *
 * A lease file holds "COOKIE EXPIRY_MS\n", the expiry in CLOCK_REALTIME
 * milliseconds (the monotonic clock is not shared between processes), and
 * is replaced the same way under the same lock. A watch is an inotify
 * watch on the namespace directory, read by a thread of its own: a record
 * appears by rename (IN_MOVED_TO) and goes by unlink (IN_DELETE).
 */
#include "storage/sto_priv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "proto/wire.h"

#define REC_HDR_LEN STO_REC_HDR_LEN
#define REC_SUFFIX ".rec"
#define REC_TMP_SUFFIX ".rec#new"
#define LEASE_SUFFIX ".lease"
#define LEASE_TMP_SUFFIX ".lease#new"

struct store_dir {
	struct sto_store base; /* first: the front end's handle */
	int dirfd;
	char *dir;
};

/* Where a key lives: DIR/ns/file, written through DIR/ns/tmp. */
struct loc {
	const char *key;
	char ns[STO_KEY_MAX + 1];
	char file[NAME_MAX + 1];
	char tmp[NAME_MAX + 1];
};

static struct store_dir *to_dir(struct sto_store *st)
{
	return (struct store_dir *)st;
}

/* @key is valid (checked by the front end), so every part fits. */
static void loc_init_as(struct loc *l, const char *key, const char *suffix,
			const char *tmp_suffix)
{
	const char *slash = strchr(key, '/');

	l->key = key;
	snprintf(l->ns, sizeof(l->ns), "%.*s", (int)(slash - key), key);
	snprintf(l->file, sizeof(l->file), "%s%s", slash + 1, suffix);
	snprintf(l->tmp, sizeof(l->tmp), "%s%s", slash + 1, tmp_suffix);
}

static void loc_init(struct loc *l, const char *key)
{
	loc_init_as(l, key, REC_SUFFIX, REC_TMP_SUFFIX);
}

static ssize_t read_full(int fd, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = read(fd, (uint8_t *)buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static int write_full(int fd, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(fd, (const uint8_t *)buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		done += (size_t)n;
	}
	return 0;
}

static int corrupt(struct store_dir *d, const struct loc *l, const char *why,
		   char *err, size_t errlen)
{
	return STO_FAIL(LOG_ERR, err, errlen, -EBADMSG,
			"key %s: record %s/%s/%s is corrupt: %s", l->key, d->dir,
			l->ns, l->file, why);
}

static int io_fail(struct store_dir *d, const struct loc *l, const char *what,
		   int rc, char *err, size_t errlen)
{
	return STO_FAIL(LOG_ERR, err, errlen, rc,
			"key %s: cannot %s %s/%s/%s: %s", l->key, what, d->dir,
			l->ns, l->file, sto_errstr(-rc));
}

/* Open DIR/ns (made first if @create). -ENOENT quietly if it is absent. */
static int ns_open(struct store_dir *d, const struct loc *l, bool create,
		   int *nsfd, char *err, size_t errlen)
{
	int rc = 0;

	if (create && mkdirat(d->dirfd, l->ns, 0700) == 0)
		rc = sto_fsync_dir(d->dirfd); /* the new namespace must last */
	else if (create && errno != EEXIST)
		rc = -errno;
	*nsfd = rc < 0 ? -1 : openat(d->dirfd, l->ns,
				     O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rc == 0 && *nsfd < 0)
		rc = -errno;
	if (rc < 0 && rc != -ENOENT)
		STO_FAIL(LOG_ERR, err, errlen, rc,
			 "key %s: cannot open namespace %s/%s: %s", l->key,
			 d->dir, l->ns, sto_errstr(-rc));
	return rc;
}

/* Open the record and check its header; *fdp is left after the header.
 * -ENOENT quietly if there is no record. */
static int rec_open(struct store_dir *d, int nsfd, const struct loc *l,
		    struct sto_rec_hdr *h, int *fdp, char *err, size_t errlen)
{
	uint8_t raw[REC_HDR_LEN];
	char why[96];
	int fd = openat(nsfd, l->file, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	int rc = 0;

	if (fd < 0)
		return errno == ENOENT ? -ENOENT :
					 io_fail(d, l, "open", -errno, err, errlen);
	n = read_full(fd, raw, sizeof(raw));
	if (n < 0) {
		rc = io_fail(d, l, "read", (int)n, err, errlen);
	} else if (n < (ssize_t)sizeof(raw)) {
		snprintf(why, sizeof(why), "truncated header (%zd of %u bytes)",
			 n, REC_HDR_LEN);
		rc = corrupt(d, l, why, err, errlen);
	} else if (sto_rec_hdr_decode(raw, h, why, sizeof(why)) < 0) {
		rc = corrupt(d, l, why, err, errlen);
	}
	if (rc < 0)
		close(fd);
	else
		*fdp = fd;
	return rc;
}

/* Read and check the payload that follows a good header. */
static int rec_payload(struct store_dir *d, const struct loc *l, int fd,
		       const struct sto_rec_hdr *h, uint8_t **buf, char *err,
		       size_t errlen)
{
	uint8_t *p = NULL;
	struct stat sb;
	char why[128];
	int rc = 0;

	if (fstat(fd, &sb) < 0) {
		rc = io_fail(d, l, "stat", -errno, err, errlen);
		goto out;
	}
	if ((uint64_t)sb.st_size != REC_HDR_LEN + (uint64_t)h->len) {
		snprintf(why, sizeof(why), "%s: file is %jd bytes, header says %u + %u",
			 (uint64_t)sb.st_size < REC_HDR_LEN + (uint64_t)h->len ?
				 "truncated" : "trailing bytes",
			 (intmax_t)sb.st_size, REC_HDR_LEN, h->len);
		rc = corrupt(d, l, why, err, errlen);
		goto out;
	}
	p = malloc(h->len ? h->len : 1);
	if (!p) {
		rc = io_fail(d, l, "allocate for", -ENOMEM, err, errlen);
		goto out;
	}
	ssize_t n = read_full(fd, p, h->len);
	if (n < 0) {
		rc = io_fail(d, l, "read", (int)n, err, errlen);
	} else if ((size_t)n != h->len) {
		snprintf(why, sizeof(why), "truncated payload (%zd of %u bytes)",
			 n, h->len);
		rc = corrupt(d, l, why, err, errlen);
	} else if (wire_crc32c(p, h->len) != h->crc) {
		snprintf(why, sizeof(why), "payload crc32c 0x%08x, header says 0x%08x",
			 wire_crc32c(p, h->len), h->crc);
		rc = corrupt(d, l, why, err, errlen);
	}
out:
	if (rc < 0)
		free(p);
	else
		*buf = p;
	return rc;
}

static int dir_get(struct sto_store *st, const char *key, uint8_t **buf,
		   size_t *len, uint64_t *version, char *err, size_t errlen)
{
	struct store_dir *d = to_dir(st);
	struct sto_rec_hdr h;
	struct loc l;
	int nsfd = -1, fd = -1, rc;

	loc_init(&l, key);
	rc = ns_open(d, &l, false, &nsfd, err, errlen);
	if (rc == 0)
		rc = rec_open(d, nsfd, &l, &h, &fd, err, errlen);
	if (rc == -ENOENT)
		rc = STO_FAIL(LOG_DEBUG, err, errlen, -ENOENT,
			      "key %s does not exist", key);
	if (rc < 0)
		goto out;
	rc = rec_payload(d, &l, fd, &h, buf, err, errlen);
	if (rc == 0) {
		*len = h.len;
		*version = h.version;
	}
out:
	if (fd >= 0)
		close(fd);
	if (nsfd >= 0)
		close(nsfd);
	return rc;
}

/* The version now stored, 0 if none; called under the lock. */
static int cur_version(struct store_dir *d, int nsfd, const struct loc *l,
		       uint64_t *cur, char *err, size_t errlen)
{
	struct sto_rec_hdr h;
	int fd = -1;
	int rc = nsfd < 0 ? -ENOENT : rec_open(d, nsfd, l, &h, &fd, err, errlen);

	*cur = rc == 0 ? h.version : 0;
	if (fd >= 0)
		close(fd);
	return rc == -ENOENT ? 0 : rc;
}

/* The compare of compare-and-swap. Conflicts are normal outcomes the
 * caller handles, so they are logged at debug level only. */
static int check_expect(const struct loc *l, uint64_t cur, uint64_t expect,
			char *err, size_t errlen)
{
	if (cur == expect)
		return 0;
	if (cur == 0)
		return STO_FAIL(LOG_DEBUG, err, errlen, -ENOENT,
				"key %s does not exist (expected version %" PRIu64 ")",
				l->key, expect);
	if (expect == 0)
		return STO_FAIL(LOG_DEBUG, err, errlen, -EEXIST,
				"key %s already exists (version %" PRIu64 ")",
				l->key, cur);
	return STO_FAIL(LOG_DEBUG, err, errlen, -ECANCELED,
			"key %s: version is %" PRIu64 ", expected %" PRIu64 " (changed by someone else)",
			l->key, cur, expect);
}

/* Replace @l's file by @head then @body, through its temp file: readers
 * see the old file or the new one, and the new one is on disk first. */
static int file_replace(struct store_dir *d, int nsfd, const struct loc *l,
			const void *head, size_t head_len, const void *body,
			size_t body_len, char *err, size_t errlen)
{
	const char *step = "write a temp file for";
	int fd = openat(nsfd, l->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			0600);
	int rc = fd < 0 ? -errno : 0;

	if (rc == 0)
		rc = write_full(fd, head, head_len);
	if (rc == 0)
		rc = write_full(fd, body, body_len);
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (fd >= 0)
		close(fd);
	if (rc == 0) {
		step = "rename into place";
		rc = renameat(nsfd, l->tmp, nsfd, l->file) < 0 ? -errno : 0;
	}
	if (rc == 0) {
		step = "sync the directory of";
		rc = sto_fsync_dir(nsfd);
	}
	if (rc < 0) {
		unlinkat(nsfd, l->tmp, 0);
		io_fail(d, l, step, rc, err, errlen);
	}
	return rc;
}

static int rec_write(struct store_dir *d, int nsfd, const struct loc *l,
		     uint64_t version, const void *buf, size_t len, char *err,
		     size_t errlen)
{
	uint8_t hdr[REC_HDR_LEN];

	sto_rec_hdr_encode(hdr, version, buf, (uint32_t)len);
	return file_replace(d, nsfd, l, hdr, sizeof(hdr), buf, len, err,
			    errlen);
}

static int lock(struct store_dir *d, const struct loc *l, int *lk, char *err,
		size_t errlen)
{
	*lk = sto_lock_dir(d->dirfd);
	if (*lk < 0)
		return STO_FAIL(LOG_ERR, err, errlen, *lk,
				"key %s: cannot lock %s/%s: %s", l->key, d->dir,
				STO_LOCK_NAME, sto_errstr(-*lk));
	return 0;
}

/*
 * The common start of put and del: lock @l's key, open its namespace
 * directory (creating it when @create) and check the current version is
 * @expect. On success the caller holds *lk and *nsfd (-1 if the namespace
 * does not exist yet) and must close them.
 */
static int cas_begin(struct store_dir *d, struct loc *l, bool create,
		     uint64_t expect, int *lk, int *nsfd, char *err, size_t errlen)
{
	uint64_t cur = 0;
	int rc = lock(d, l, lk, err, errlen);

	if (rc == 0)
		rc = ns_open(d, l, create, nsfd, err, errlen);
	if (rc == -ENOENT) /* no namespace, so no record: version 0 */
		rc = 0;
	if (rc == 0)
		rc = cur_version(d, *nsfd, l, &cur, err, errlen);
	if (rc == 0)
		rc = check_expect(l, cur, expect, err, errlen);
	return rc;
}

static void cas_end(int lk, int nsfd)
{
	if (nsfd >= 0)
		close(nsfd);
	if (lk >= 0)
		close(lk);
}

static int dir_put(struct sto_store *st, const char *key, const void *buf,
		   size_t len, uint64_t expect, uint64_t *new_version,
		   char *err, size_t errlen)
{
	struct store_dir *d = to_dir(st);
	struct loc l;
	int lk = -1, nsfd = -1, rc;

	loc_init(&l, key);
	rc = cas_begin(d, &l, expect == 0, expect, &lk, &nsfd, err, errlen);
	if (rc == 0)
		rc = rec_write(d, nsfd, &l, expect + 1, buf, len, err, errlen);
	if (rc == 0)
		*new_version = expect + 1;
	cas_end(lk, nsfd);
	return rc;
}

static int dir_del(struct sto_store *st, const char *key, uint64_t expect,
		   char *err, size_t errlen)
{
	struct store_dir *d = to_dir(st);
	struct loc l;
	int lk = -1, nsfd = -1, rc;

	loc_init(&l, key);
	rc = cas_begin(d, &l, false, expect, &lk, &nsfd, err, errlen);
	if (rc == 0 && unlinkat(nsfd, l.file, 0) < 0)
		rc = io_fail(d, &l, "remove", -errno, err, errlen);
	if (rc == 0 && (rc = sto_fsync_dir(nsfd)) < 0)
		io_fail(d, &l, "sync the directory of", rc, err, errlen);
	cas_end(lk, nsfd);
	return rc;
}

/* ---- listing ---- */

struct keyvec {
	char **v;
	size_t n, cap;
};

static int kv_add(struct keyvec *kv, const char *ns, const char *stem,
		  size_t stem_len)
{
	char *key = NULL;

	if (kv->n == kv->cap) {
		size_t cap = kv->cap ? kv->cap * 2 : 16;
		char **v = realloc(kv->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		kv->v = v;
		kv->cap = cap;
	}
	if (asprintf(&key, "%s/%.*s", ns, (int)stem_len, stem) < 0)
		return -ENOMEM;
	kv->v[kv->n++] = key;
	return 0;
}

/* A directory entry that is a record of a valid key, not a temp file or
 * something an operator left there. Returns the stem length or 0. */
static size_t rec_stem(const char *ns, const char *name)
{
	size_t n = strlen(name), sfx = strlen(REC_SUFFIX);

	if (n <= sfx || strcmp(name + n - sfx, REC_SUFFIX) ||
	    strlen(ns) + 1 + n - sfx > STO_KEY_MAX ||
	    !sto_part_valid(name, n - sfx))
		return 0;
	return n - sfx;
}

static DIR *dir_at(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dp = fd < 0 ? NULL : fdopendir(fd);

	if (fd >= 0 && !dp)
		close(fd);
	return dp;
}

/* Add the keys of namespace @ns whose name starts with @start. */
static int list_ns(struct store_dir *d, const char *ns, const char *start,
		   struct keyvec *kv, char *err, size_t errlen)
{
	DIR *dp = dir_at(d->dirfd, ns);
	size_t start_len = strlen(start);
	struct dirent *de;
	int rc = 0;

	if (!dp)
		return errno == ENOENT || errno == ENOTDIR ? 0 :
			STO_FAIL(LOG_ERR, err, errlen, -errno,
				 "keys %s/%s: cannot read %s/%s: %s", ns, start,
				 d->dir, ns, sto_errstr(errno));
	while (rc == 0 && (de = readdir(dp))) {
		size_t stem = rec_stem(ns, de->d_name);
		if (stem && !strncmp(de->d_name, start, start_len))
			rc = kv_add(kv, ns, de->d_name, stem);
	}
	closedir(dp);
	if (rc < 0)
		STO_FAIL(LOG_ERR, err, errlen, rc, "keys %s/%s: out of memory",
			 ns, start);
	return rc;
}

typedef int (*ns_fn)(struct store_dir *d, const char *ns, void *arg,
		     char *err, size_t errlen);

/* Call @fn for every namespace directory whose name starts with @start. */
static int each_ns(struct store_dir *d, const char *start, ns_fn fn,
		   void *arg, char *err, size_t errlen)
{
	DIR *dp = dir_at(d->dirfd, ".");
	struct dirent *de;
	struct stat sb;
	int rc = 0;

	if (!dp)
		return STO_FAIL(LOG_ERR, err, errlen, -errno,
				"store %s: cannot read it: %s", d->dir,
				sto_errstr(errno));
	while (rc == 0 && (de = readdir(dp))) {
		const char *ns = de->d_name;
		if (!sto_part_valid(ns, strlen(ns)) ||
		    strncmp(ns, start, strlen(start)) ||
		    fstatat(d->dirfd, ns, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(sb.st_mode))
			continue;
		rc = fn(d, ns, arg, err, errlen);
	}
	closedir(dp);
	return rc;
}

static int list_ns_all(struct store_dir *d, const char *ns, void *arg,
		       char *err, size_t errlen)
{
	return list_ns(d, ns, "", arg, err, errlen);
}

static int dir_list(struct sto_store *st, const char *prefix, char ***keys,
		    size_t *n, char *err, size_t errlen)
{
	struct store_dir *d = to_dir(st);
	const char *slash = strchr(prefix, '/');
	struct keyvec kv = { 0 };
	char ns[STO_KEY_MAX + 1];
	int rc;

	if (slash) {
		snprintf(ns, sizeof(ns), "%.*s", (int)(slash - prefix), prefix);
		rc = list_ns(d, ns, slash + 1, &kv, err, errlen);
	} else {
		rc = each_ns(d, prefix, list_ns_all, &kv, err, errlen);
	}
	if (rc < 0) {
		sto_keys_free(kv.v, kv.n);
		return rc;
	}
	*keys = kv.v;
	*n = kv.n;
	return 0;
}

/* ---- leases ---- */

struct lease {
	char cookie[STO_COOKIE_MAX + 1];
	int64_t expiry_ms; /* CLOCK_REALTIME */
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The lease in @l's file if it has not expired; -ENOENT quietly if there
 * is none or it has. */
static int lease_read(struct store_dir *d, int nsfd, const struct loc *l,
		      struct lease *out, char *err, size_t errlen)
{
	char buf[128];
	int fd = nsfd < 0 ? -1 : openat(nsfd, l->file, O_RDONLY | O_CLOEXEC);
	int used = 0;
	ssize_t n;

	if (fd < 0)
		return nsfd < 0 || errno == ENOENT ?
			       -ENOENT : io_fail(d, l, "open", -errno, err, errlen);
	n = read_full(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return io_fail(d, l, "read", (int)n, err, errlen);
	buf[n] = '\0';
	if (sscanf(buf, "%64[A-Za-z0-9._:@-] %" SCNd64 "%n", out->cookie,
		   &out->expiry_ms, &used) != 2 || strcmp(buf + used, "\n"))
		return STO_FAIL(LOG_ERR, err, errlen, -EBADMSG,
				"key %s: lease file %s/%s/%s is corrupt: want 'COOKIE EXPIRY_MS'",
				l->key, d->dir, l->ns, l->file);
	return out->expiry_ms > now_ms() ? 0 : -ENOENT;
}

static int dir_lock_key(struct sto_store *st, const char *key,
			const char *cookie, unsigned duration_s, char *err,
			size_t errlen)
{
	struct store_dir *d = to_dir(st);
	char text[STO_COOKIE_MAX + 32];
	struct lease cur;
	struct loc l;
	int lk = -1, nsfd = -1, rc;

	loc_init_as(&l, key, LEASE_SUFFIX, LEASE_TMP_SUFFIX);
	rc = lock(d, &l, &lk, err, errlen);
	if (rc == 0)
		rc = ns_open(d, &l, true, &nsfd, err, errlen);
	if (rc == 0)
		rc = lease_read(d, nsfd, &l, &cur, err, errlen);
	if (rc == 0 && strcmp(cur.cookie, cookie)) {
		rc = STO_FAIL(LOG_DEBUG, err, errlen, -EBUSY,
			      "key %s: leased by %s for %" PRId64 " ms more",
			      key, cur.cookie, cur.expiry_ms - now_ms());
	} else if (rc == 0 || rc == -ENOENT) {
		snprintf(text, sizeof(text), "%s %" PRId64 "\n", cookie,
			 now_ms() + (int64_t)duration_s * 1000);
		rc = file_replace(d, nsfd, &l, text, strlen(text), "", 0, err,
				  errlen);
	}
	cas_end(lk, nsfd);
	return rc;
}

static int dir_unlock(struct sto_store *st, const char *key,
		      const char *cookie, char *err, size_t errlen)
{
	struct store_dir *d = to_dir(st);
	struct lease cur;
	struct loc l;
	int lk = -1, nsfd = -1, rc;

	loc_init_as(&l, key, LEASE_SUFFIX, LEASE_TMP_SUFFIX);
	rc = lock(d, &l, &lk, err, errlen);
	if (rc == 0)
		rc = ns_open(d, &l, false, &nsfd, err, errlen);
	if (rc == 0)
		rc = lease_read(d, nsfd, &l, &cur, err, errlen);
	if (rc == -ENOENT || (rc == 0 && strcmp(cur.cookie, cookie)))
		rc = STO_FAIL(LOG_DEBUG, err, errlen, -ENOENT,
			      "key %s: %s holds no lease on it", key, cookie);
	else if (rc == 0 && unlinkat(nsfd, l.file, 0) < 0)
		rc = io_fail(d, &l, "remove", -errno, err, errlen);
	if (rc == 0 && (rc = sto_fsync_dir(nsfd)) < 0)
		io_fail(d, &l, "sync the directory of", rc, err, errlen);
	cas_end(lk, nsfd);
	return rc;
}

/* No lock needed: the lease file is only ever replaced by rename. */
static int dir_lock_owner(struct sto_store *st, const char *key, char *out,
			  size_t len, char *err, size_t errlen)
{
	struct store_dir *d = to_dir(st);
	struct lease cur;
	struct loc l;
	int nsfd = -1, rc;

	loc_init_as(&l, key, LEASE_SUFFIX, LEASE_TMP_SUFFIX);
	rc = ns_open(d, &l, false, &nsfd, err, errlen);
	if (rc == 0)
		rc = lease_read(d, nsfd, &l, &cur, err, errlen);
	if (rc == -ENOENT)
		rc = STO_FAIL(LOG_DEBUG, err, errlen, -ENOENT,
			      "key %s: nobody holds a lease on it", key);
	if (rc == 0)
		snprintf(out, len, "%s", cur.cookie);
	cas_end(-1, nsfd);
	return rc;
}

/* ---- watches ---- */

struct watch_dir {
	struct sto_watch base; /* first: the front end's handle */
	char ns[STO_KEY_MAX + 1];
	sto_watch_fn fn;
	void *opaque;
	int ifd;    /* inotify, on DIR/ns */
	int stopfd; /* eventfd: readable when the thread must end */
	pthread_t thread;
	bool started;
};

static void watch_event(struct watch_dir *w, const struct inotify_event *ev)
{
	char key[STO_KEY_MAX + 1];
	size_t stem;

	if (ev->mask & (IN_Q_OVERFLOW | IN_IGNORED)) {
		qb_log(LOG_WARNING, "watch of namespace %s: events %s; reporting a full rescan",
		       w->ns, ev->mask & IN_IGNORED ? "stopped (directory gone)" :
						      "were lost (queue overflow)");
		w->fn(NULL, w->opaque);
		return;
	}
	if (!ev->len || (ev->mask & IN_ISDIR))
		return;
	stem = rec_stem(w->ns, ev->name); /* not temp or lease files */
	if (stem && snprintf(key, sizeof(key), "%s/%.*s", w->ns, (int)stem,
			     ev->name) < (int)sizeof(key))
		w->fn(key, w->opaque);
}

/* Read one batch of events: false when the watch cannot go on. */
static bool watch_read(struct watch_dir *w)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n = read(w->ifd, buf, sizeof(buf));

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	if (n <= 0) {
		qb_log(LOG_ERR, "watch of namespace %s: cannot read inotify events: %s",
		       w->ns, n < 0 ? sto_errstr(errno) : "end of file");
		return false;
	}
	for (char *p = buf; p < buf + n;) {
		const struct inotify_event *ev = (const void *)p;
		watch_event(w, ev);
		p += sizeof(*ev) + ev->len;
	}
	return true;
}

static void *watch_thread(void *arg)
{
	struct watch_dir *w = arg;
	struct pollfd pfd[2] = { { .fd = w->ifd, .events = POLLIN },
				 { .fd = w->stopfd, .events = POLLIN } };

	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			qb_log(LOG_ERR, "watch of namespace %s: poll: %s", w->ns,
			       sto_errstr(errno));
			break;
		}
		if (pfd[1].revents || ((pfd[0].revents & POLLIN) && !watch_read(w)))
			break;
	}
	return NULL;
}

static void dir_watch_free(struct sto_watch *base)
{
	struct watch_dir *w = (struct watch_dir *)base;
	uint64_t one = 1;

	if (w->started && write(w->stopfd, &one, sizeof(one)) == sizeof(one))
		pthread_join(w->thread, NULL);
	if (w->ifd >= 0)
		close(w->ifd);
	if (w->stopfd >= 0)
		close(w->stopfd);
	free(w);
}

/* inotify, its watch on DIR/ns (made if absent, so the watch can start
 * before the namespace's first record) and the thread. */
static int watch_start(struct store_dir *d, struct watch_dir *w)
{
	char path[64 + STO_KEY_MAX];
	int rc = 0;

	if (mkdirat(d->dirfd, w->ns, 0700) == 0)
		rc = sto_fsync_dir(d->dirfd);
	else if (errno != EEXIST)
		rc = -errno;
	w->ifd = rc < 0 ? -1 : inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (rc == 0 && w->ifd < 0)
		rc = -errno;
	w->stopfd = rc < 0 ? -1 : eventfd(0, EFD_CLOEXEC);
	if (rc == 0 && w->stopfd < 0)
		rc = -errno;
	/* Through the store's fd, so a changed cwd cannot misdirect it. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", d->dirfd, w->ns);
	if (rc == 0 && inotify_add_watch(w->ifd, path, IN_MOVED_TO | IN_DELETE |
						       IN_ONLYDIR) < 0)
		rc = -errno;
	if (rc == 0)
		rc = sto_thread_start(&w->thread, watch_thread, w);
	w->started = rc == 0;
	return rc;
}

static struct sto_watch *dir_watch_new(struct sto_store *st, const char *ns,
				       sto_watch_fn fn, void *opaque,
				       char *err, size_t errlen)
{
	struct store_dir *d = to_dir(st);
	struct watch_dir *w = calloc(1, sizeof(*w));
	int rc = w ? 0 : -ENOMEM;

	if (w) {
		w->base.st = st;
		w->ifd = w->stopfd = -1;
		snprintf(w->ns, sizeof(w->ns), "%s", ns);
		w->fn = fn;
		w->opaque = opaque;
		rc = watch_start(d, w);
	}
	if (rc < 0) {
		STO_FAIL(LOG_ERR, err, errlen, rc,
			 "namespace %s: cannot watch %s/%s: %s", ns, d->dir, ns,
			 sto_errstr(-rc));
		if (w)
			dir_watch_free(&w->base);
		return NULL;
	}
	return &w->base;
}

/* ---- open and close ---- */

static int clean_ns(struct store_dir *d, const char *ns, void *arg,
		    char *err, size_t errlen)
{
	char where[PATH_MAX];
	int fd = openat(d->dirfd, ns, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = fd < 0 ? -errno : 0;

	snprintf(where, sizeof(where), "%s/%s", d->dir, ns);
	if (rc == 0)
		rc = sto_remove_tmp(fd, where);
	if (fd >= 0)
		close(fd);
	if (rc < 0)
		return STO_FAIL(LOG_ERR, err, errlen, rc,
				"store %s: cannot clean temp files: %s", where,
				sto_errstr(-rc));
	return 0;
}

/* Under the lock no writer is between its temp file and its rename, so
 * every temp file found is a crashed writer's. */
static int clean(struct store_dir *d, char *err, size_t errlen)
{
	int lk = sto_lock_dir(d->dirfd);
	int rc = lk < 0 ? lk : sto_remove_tmp(d->dirfd, d->dir);

	if (rc < 0)
		rc = STO_FAIL(LOG_ERR, err, errlen, rc,
			      "store %s: cannot lock and clean it: %s", d->dir,
			      sto_errstr(-rc));
	else
		rc = each_ns(d, "", clean_ns, NULL, err, errlen);
	if (lk >= 0)
		close(lk);
	return rc;
}

/* The directory is still there and still a directory (not unmounted or
 * removed under us): the one round trip a local store has. */
static int dir_probe(struct sto_store *st, char *err, size_t errlen)
{
	struct store_dir *d = to_dir(st);
	struct stat sb;
	int rc = stat(d->dir, &sb) < 0 ? -errno : 0;

	if (rc == 0 && !S_ISDIR(sb.st_mode))
		rc = -ENOTDIR;
	return rc ? STO_FAIL(LOG_DEBUG, err, errlen, rc, "store %s: %s", d->dir,
			     sto_errstr(-rc)) : 0;
}

static void dir_close(struct sto_store *st)
{
	struct store_dir *d = to_dir(st);

	if (d->dirfd >= 0)
		close(d->dirfd);
	free(d->dir);
	free(d);
}

static const struct sto_store_ops dir_ops = {
	.name = "dir",
	.get = dir_get,
	.put = dir_put,
	.del = dir_del,
	.list = dir_list,
	.lock = dir_lock_key,
	.unlock = dir_unlock,
	.lock_owner = dir_lock_owner,
	.watch_new = dir_watch_new,
	.watch_free = dir_watch_free,
	.probe = dir_probe,
	.close = dir_close,
};

struct sto_store *sto_store_open_dir(const char *dir, char *err,
				     size_t errlen)
{
	struct store_dir *d = calloc(1, sizeof(*d));
	int rc;

	if (!d) {
		STO_FAIL(LOG_ERR, err, errlen, -ENOMEM, "store %s: out of memory",
			 dir);
		return NULL;
	}
	d->base.ops = &dir_ops;
	d->dirfd = sto_dir_open(dir);
	rc = d->dirfd < 0 ? d->dirfd : 0;
	if (rc == 0 && !(d->dir = strdup(dir)))
		rc = -ENOMEM;
	if (rc < 0) {
		STO_FAIL(LOG_ERR, err, errlen, rc, "store %s: cannot open: %s",
			 dir, sto_errstr(-rc));
		goto out;
	}
	rc = clean(d, err, errlen);
out:
	if (rc < 0) {
		dir_close(&d->base);
		return NULL;
	}
	return &d->base;
}
