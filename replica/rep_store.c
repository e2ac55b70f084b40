/*
 * rep_store.c: the replica store of rep_store.h: its index file, the
 * qemu-storage-daemon it drives over QMP (rep_qmpc), the NBD handles the
 * cycles write through, and the overlay chain's moves (DESIGN.md section 5).
 *
 * Node names: qI_S is the qcow2 node of file dI.S.qcow2 (qI_0 the base),
 * eI the writable export of disk I, named "I". Every node is added with
 * blockdev-add (or --blockdev semantics over QMP), so each is removed with
 * blockdev-del once out of the chain.
 *
 * Recovery: a daemon found running on open is asked to quit and a new one
 * starts from the files, which the index describes exactly (base, the
 * points' overlays, a fresh active); so is it when a swap of the active
 * layer fails.
 */
#include "replica/rep_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <libnbd.h>
#include <qb/qblog.h>

#include "replica/rep_digest.h"
#include "replica/rep_qmpc.h"
#include "replica/rep_store_rbd.h"

#define INDEX "points"
#define INDEX_MAGIC "hca-replica-store 1"
#define INDEX_MAX (64u << 10)	  /* bytes of an index file */
#define LINE_MAX_ 256u
#define MSG_MAX 256u
#define OVERLAY_OPTS "cluster_size=128k,extended_l2=on"
#define QMP_CONNECT_MS 3000u
#define QUIT_MS 5000u
#define EXPORT_DEL_MS 5000u
#define PRUNE_MS (600u * 1000u)	  /* one block-commit (DESIGN.md: up to 13 s per 64 MiB) */
#define WRITE_CHUNK (32u << 20)	  /* QEMU's NBD request bound */
#define ZERO_CHUNK (1u << 30)

struct rep_store {
	char dir[PATH_MAX - 64]; /* room for the file names */
	char vm[REP_NAME_MAX + 1];
	char qsd[PATH_MAX], qemu_img[PATH_MAX];
	unsigned ndisks, keep;
	struct rep_disk disks[REP_DISKS_MAX];
	struct rep_qmpc *q;
	struct nbd_handle *nbd[REP_DISKS_MAX];
	pid_t pid;
	uint64_t next_seq, active; /* active: the seq of the active overlays */
	struct rep_store_point pts[REP_STORE_POINTS_MAX];
	unsigned npts;
	unsigned pruned; /* disks whose oldest point is in the base already */
	bool cycle_open;
	uint64_t cycle;
	unsigned jobs; /* job-id counter */
	/* a store in an RBD pool (pool[0]): its disks are images, no daemon */
	char pool[RSR_POOL_MAX + 1], conf[RSR_CONF_MAX + 1], client[RSR_CLIENT_MAX + 1];
	char node[RSR_NODE_MAX + 1];
	struct rsr *rbd;
	bool fresh; /* load() found no index: a new store */
	bool opened_with_disks; /* by a cycle, which says where the store is */
};

/* What an index file says. */
struct index {
	char vm[REP_NAME_MAX + 1];
	unsigned ndisks;
	struct rep_disk disks[REP_DISKS_MAX];
	uint64_t next_seq, active;
	struct rep_store_point pts[REP_STORE_POINTS_MAX];
	unsigned npts;
	char pool[RSR_POOL_MAX + 1], conf[RSR_CONF_MAX + 1], client[RSR_CLIENT_MAX + 1];
	char node[RSR_NODE_MAX + 1];
};

static int fail(const char *vm, char *err, size_t len, int rc, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* Log the cause once, where found, and give it to the caller. */
static int fail(const char *vm, char *err, size_t len, int rc, const char *fmt, ...)
{
	char msg[MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	qb_log(LOG_ERR, "replica store of %s: %s", vm, msg);
	if (err && len)
		snprintf(err, len, "%s", msg);
	return rc;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int path_in(const char *dir, const char *name, char *out)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);

	return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

static void file_of(const struct rep_store *s, unsigned disk, uint64_t seq, char *out)
{
	snprintf(out, PATH_MAX, "%s/d%u.%" PRIu64 ".qcow2", s->dir, disk, seq);
}

static void node_of(unsigned disk, uint64_t seq, char out[32])
{
	snprintf(out, 32, "q%u_%" PRIu64, disk, seq);
}

/* The seq of the top layer under the active one: the newest point's, or the base. */
static uint64_t top_seq(const struct rep_store *s)
{
	return s->npts ? s->pts[s->npts - 1].seq : 0;
}

/* ---- running tools ---- */

/*
 * Run @argv with stdout to /dev/null and stderr to @logpath (truncated),
 * wait for it, and on failure give the log's first line. The launcher of
 * a --daemonize daemon exits once the daemon is ready, so this fits both.
 */
static int run(const char *vm, char *const argv[], const char *logpath, char *err, size_t len)
{
	posix_spawn_file_actions_t fa;
	char msg[MSG_MAX] = "";
	int status = 0, rc, fd;
	pid_t pid;

	if ((rc = posix_spawn_file_actions_init(&fa)))
		return fail(vm, err, len, -rc, "%s: %s", argv[0], strerror(rc));
	rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	if (!rc)
		rc = posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	if (!rc)
		rc = posix_spawn_file_actions_addopen(&fa, 2, logpath,
						      O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (!rc)
		rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc)
		return fail(vm, err, len, -rc, "cannot run %s: %s", argv[0], strerror(rc));
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return fail(vm, err, len, -errno, "%s: waitpid: %s", argv[0],
				    strerror(errno));
	if (WIFEXITED(status) && !WEXITSTATUS(status))
		return 0;
	if ((fd = open(logpath, O_RDONLY | O_CLOEXEC)) >= 0) {
		ssize_t n = read(fd, msg, sizeof(msg) - 1);
		msg[n > 0 ? n : 0] = '\0';
		msg[strcspn(msg, "\n")] = '\0';
		close(fd);
	}
	return fail(vm, err, len, -EIO, "%s %s failed: %s", argv[0], argv[1],
		    msg[0] ? msg : "exited with an error and no message");
}

/* qemu-img create disk @disk's file @seq: the base (@seq 0, the disk's
 * size) or an overlay backed by @back's file. */
static int img_create(struct rep_store *s, unsigned disk, uint64_t seq, uint64_t back,
		      char *err, size_t len)
{
	char path[PATH_MAX], bpath[PATH_MAX], size[24], log[PATH_MAX];
	char *base_argv[] = { s->qemu_img, "create", "-q", "-f", "qcow2", "-o", OVERLAY_OPTS,
			      path, size, NULL };
	/* -u: the backing file is held by the daemon; the size is given */
	char *ovl_argv[] = { s->qemu_img, "create", "-q", "-f", "qcow2", "-o", OVERLAY_OPTS,
			     "-u", "-b", bpath, "-F", "qcow2", path, size, NULL };

	file_of(s, disk, seq, path);
	file_of(s, disk, back, bpath);
	path_in(s->dir, "qemu-img.log", log);
	snprintf(size, sizeof(size), "%" PRIu64, s->disks[disk].size);
	return run(s->vm, seq ? ovl_argv : base_argv, log, err, len);
}

/* ---- the index ---- */

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

static int index_write(struct rep_store *s, char *err, size_t len)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	FILE *f;
	int rc = 0;

	path_in(s->dir, INDEX, path);
	path_in(s->dir, INDEX ".tmp", tmp);
	if (!(f = fopen(tmp, "we")))
		return fail(s->vm, err, len, -errno, "cannot write %s: %s", tmp, strerror(errno));
	fprintf(f, "%s\nvm %s\n", INDEX_MAGIC, s->vm);
	for (unsigned i = 0; i < s->ndisks; i++)
		fprintf(f, "disk %u %s %" PRIu64 "\n", i, s->disks[i].name, s->disks[i].size);
	fprintf(f, "next %" PRIu64 "\nactive %" PRIu64 "\n", s->next_seq, s->active);
	if (s->pool[0])
		fprintf(f, "rbd %s %s %s %s\n", s->pool, s->node, s->client[0] ? s->client : "-",
			s->conf[0] ? s->conf : "-");
	/* the top file of every disk of a point is dI.<seq>.qcow2 */
	for (unsigned i = 0; i < s->npts; i++) {
		const struct rep_store_point *p = &s->pts[i];
		fprintf(f, "point %" PRIu64 " %" PRIu64 " %d %" PRIu64 " %d %" PRIu64 "\n", p->id,
			p->time_ms, p->app_consistent, p->bytes, p->held, p->seq);
	}
	if (fflush(f) || fsync(fileno(f)) < 0)
		rc = -errno;
	if (fclose(f) && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path) < 0)
		rc = -errno;
	if (!rc)
		rc = fsync_dir(s->dir);
	if (rc < 0) {
		unlink(tmp);
		return fail(s->vm, err, len, rc, "cannot write %s: %s", path, strerror(-rc));
	}
	return 0;
}

static int index_line(struct index *x, const char *l)
{
	struct rep_store_point p = { 0 };
	unsigned i, app, held;
	char name[REP_NAME_MAX + 2];
	uint64_t size;
	int n = 0;

	if (sscanf(l, "vm %49s%n", name, &n) == 1 && strlen(name) <= REP_NAME_MAX) {
		strcpy(x->vm, name);
	} else if (sscanf(l, "disk %u %49s %" SCNu64 "%n", &i, name, &size, &n) == 3) {
		if (i != x->ndisks || i >= REP_DISKS_MAX || strlen(name) > REP_NAME_MAX || !size)
			return -EINVAL;
		strcpy(x->disks[i].name, name);
		x->disks[x->ndisks++].size = size;
	} else if (sscanf(l, "rbd %63s %63s %63s %255s%n", x->pool, x->node, x->client, x->conf,
			  &n) == 4) {
		if (!rsr_pool_valid(x->pool))
			return -EINVAL;
		if (!strcmp(x->client, "-"))
			x->client[0] = '\0';
		if (!strcmp(x->conf, "-"))
			x->conf[0] = '\0';
	} else if (sscanf(l, "next %" SCNu64 "%n", &x->next_seq, &n) == 1 ||
		   sscanf(l, "active %" SCNu64 "%n", &x->active, &n) == 1) {
	} else if (sscanf(l, "point %" SCNu64 " %" SCNu64 " %u %" SCNu64 " %u %" SCNu64 "%n",
			  &p.id, &p.time_ms, &app, &p.bytes, &held, &p.seq, &n) == 6) {
		if (x->npts == REP_STORE_POINTS_MAX || !p.seq || app > 1 || held > 1 ||
		    (x->npts && (p.id <= x->pts[x->npts - 1].id ||
				 p.seq <= x->pts[x->npts - 1].seq)))
			return -EINVAL;
		p.app_consistent = app;
		p.held = held;
		x->pts[x->npts++] = p;
	} else {
		return -EINVAL;
	}
	return l[n] == '\0' || l[n] == '\n' ? 0 : -EINVAL;
}

/* Read @dir's index: 0, -ENOENT (none), -EINVAL (malformed), -errno. */
static int index_read(const char *dir, struct index *x)
{
	char path[PATH_MAX], l[LINE_MAX_];
	unsigned lines = 0;
	FILE *f;
	int rc = 0;

	memset(x, 0, sizeof(*x));
	if ((rc = path_in(dir, INDEX, path)) < 0)
		return rc;
	if (!(f = fopen(path, "re")))
		return -errno;
	if (!fgets(l, sizeof(l), f) || strncmp(l, INDEX_MAGIC "\n", sizeof(INDEX_MAGIC)))
		rc = -EINVAL;
	while (!rc && fgets(l, sizeof(l), f)) {
		/* a line too long for the buffer, or too many lines, is not ours */
		if (!strchr(l, '\n') || ++lines > INDEX_MAX / 8)
			rc = -EINVAL;
		else
			rc = index_line(x, l);
	}
	if (!rc && (!x->ndisks || !x->next_seq || x->active >= x->next_seq ||
		    (x->npts && x->pts[x->npts - 1].seq >= x->next_seq)))
		rc = -EINVAL;
	fclose(f);
	return rc;
}

int rep_store_read_points(const char *dir, struct rep_store_point *out, unsigned max)
{
	struct index *x = malloc(sizeof(*x));
	int rc;

	if (!x)
		return -ENOMEM;
	rc = index_read(dir, x);
	if (rc == -ENOENT)
		rc = 0;
	else if (!rc) {
		memcpy(out, x->pts, sizeof(*out) * (x->npts < max ? x->npts : max));
		rc = (int)x->npts;
	}
	free(x);
	return rc;
}

/* ---- the daemon ---- */

static int read_pid(const char *dir)
{
	char path[PATH_MAX], buf[24] = "";
	int fd, pid;
	ssize_t n;

	path_in(dir, "qsd.pid", path);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	pid = atoi(buf);
	return pid > 1 ? pid : -1;
}

/* Is @pid a live daemon of @dir (its command line names our QMP socket)?
 * Guards against a pid reused by another process. */
static bool daemon_alive(const char *dir, pid_t pid)
{
	char path[64], cmd[4096], sock[PATH_MAX], st = 0;
	size_t n;
	FILE *f;

	if (pid <= 1)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (!(f = fopen(path, "re")))
		return false;
	if (fscanf(f, "%*d (%*[^)]) %c", &st) != 1)
		st = 'Z';
	fclose(f);
	if (st == 'Z' || st == 'X')
		return false;
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	if (!(f = fopen(path, "re")))
		return false;
	n = fread(cmd, 1, sizeof(cmd) - 1, f);
	fclose(f);
	for (size_t i = 0; i < n; i++)
		if (!cmd[i])
			cmd[i] = ' ';
	cmd[n] = '\0';
	path_in(dir, "qmp.sock", sock);
	return strstr(cmd, sock) != NULL;
}

/* SIGKILL @pid (a daemon of @dir) and wait until it is gone. */
static void daemon_kill(const char *dir, pid_t pid)
{
	if (!daemon_alive(dir, pid))
		return;
	kill(pid, SIGKILL);
	for (int i = 0; i < 500 && daemon_alive(dir, pid); i++)
		sleep_ms(10);
}

/* Ask the daemon to quit, SIGKILL it after QUIT_MS. */
static void daemon_stop(const char *dir, struct rep_qmpc *q, pid_t pid)
{
	struct rep_qmpc *own = NULL;
	char sock[PATH_MAX];
	int64_t until = now_ms() + QUIT_MS;

	if (!daemon_alive(dir, pid))
		return;
	path_in(dir, "qmp.sock", sock);
	if (!q && rep_qmpc_connect(sock, QMP_CONNECT_MS, &own, NULL, 0) == 0)
		q = own;
	if (q)
		rep_qmpc_cmd(q, "quit", NULL, NULL, NULL, 0);
	rep_qmpc_close(own);
	while (daemon_alive(dir, pid) && now_ms() < until)
		sleep_ms(10);
	daemon_kill(dir, pid);
}

static int qmp(struct rep_store *s, const char *cmd, json_t *args, char *err, size_t len)
{
	char msg[MSG_MAX];
	int rc = rep_qmpc_cmd(s->q, cmd, args, NULL, msg, sizeof(msg));

	return rc < 0 ? fail(s->vm, err, len, rc, "%s", msg) : 0;
}

/* blockdev-add disk @disk's node @seq on the node of @back (-1: none, as
 * blockdev-snapshot wants; the base has none either). */
static int node_add(struct rep_store *s, unsigned disk, uint64_t seq, int64_t back, char *err,
		    size_t len)
{
	char node[32], bnode[32], path[PATH_MAX];
	json_t *a;

	node_of(disk, seq, node);
	file_of(s, disk, seq, path);
	/*
	 * detect-zeroes: block-commit (the prune) copies what the overlay
	 * holds as data, zero clusters included: without it, a full copy's
	 * zero ranges became gigabytes of real zeros in the base (seen: an
	 * 8 GiB base grew past 6 GiB from 28 MiB of data). With it QEMU turns
	 * an all-zero write into a zero cluster, unmapped.
	 */
	a = json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:s}}", "driver", "qcow2", "node-name",
		      node, "discard", "unmap", "detect-zeroes", "unmap", "file", "driver", "file",
		      "filename", path, "discard", "unmap");
	if (a && seq && back < 0)
		json_object_set_new(a, "backing", json_null());
	else if (a && seq) {
		node_of(disk, (uint64_t)back, bnode);
		json_object_set_new(a, "backing", json_string(bnode));
	}
	return qmp(s, "blockdev-add", a, err, len);
}

static int node_del(struct rep_store *s, unsigned disk, uint64_t seq, char *err, size_t len)
{
	char node[32];

	node_of(disk, seq, node);
	return qmp(s, "blockdev-del", json_pack("{s:s}", "node-name", node), err, len);
}

static int export_add(struct rep_store *s, unsigned disk, char *err, size_t len)
{
	char node[32], id[16], name[16];

	node_of(disk, s->active, node);
	snprintf(id, sizeof(id), "e%u", disk);
	snprintf(name, sizeof(name), "%u", disk);
	return qmp(s, "block-export-add",
		   json_pack("{s:s, s:s, s:s, s:s, s:b}", "type", "nbd", "id", id, "node-name",
			     node, "name", name, "writable", 1),
		   err, len);
}

static int export_del(struct rep_store *s, unsigned disk, char *err, size_t len)
{
	char id[16], msg[MSG_MAX];
	int rc;

	snprintf(id, sizeof(id), "e%u", disk);
	if ((rc = qmp(s, "block-export-del", json_pack("{s:s, s:s}", "id", id, "mode", "hard"),
		      err, len)) < 0)
		return rc;
	rc = rep_qmpc_wait_event(s->q, "BLOCK_EXPORT_DELETED", id, EXPORT_DEL_MS, NULL, msg,
				 sizeof(msg));
	return rc < 0 ? fail(s->vm, err, len, rc, "%s", msg) : 0;
}

static int nbd_rc(void)
{
	int e = nbd_get_errno();

	return -(e ? e : EIO);
}

static void nbd_close_all(struct rep_store *s)
{
	for (unsigned i = 0; i < s->ndisks; i++) {
		nbd_close(s->nbd[i]);
		s->nbd[i] = NULL;
	}
}

static int nbd_open_all(struct rep_store *s, char *err, size_t len)
{
	char sock[PATH_MAX], name[16];

	path_in(s->dir, "nbd.sock", sock);
	for (unsigned i = 0; i < s->ndisks; i++) {
		struct nbd_handle *h = nbd_create();

		snprintf(name, sizeof(name), "%u", i);
		if (!h || nbd_set_export_name(h, name) < 0 ||
		    nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
		    nbd_connect_unix(h, sock) < 0) {
			int rc = fail(s->vm, err, len, -(nbd_get_errno() ? nbd_get_errno() : EIO),
				      "NBD export of disk %u: %s", i, nbd_get_error());
			nbd_close(h);
			nbd_close_all(s);
			return rc;
		}
		if ((uint64_t)nbd_get_size(h) != s->disks[i].size) {
			nbd_close(h);
			nbd_close_all(s);
			return fail(s->vm, err, len, -EIO, "NBD export of disk %u: wrong size", i);
		}
		s->nbd[i] = h;
	}
	return 0;
}

/* Remove the overlay files no point and no active layer uses: a half-made
 * commit's, or an old active layer's. */
static void remove_strays(struct rep_store *s)
{
	DIR *d = opendir(s->dir);
	struct dirent *e;

	while (d && (e = readdir(d))) {
		unsigned disk;
		uint64_t seq;
		bool used;
		int n = 0;

		if (sscanf(e->d_name, "d%u.%" SCNu64 ".qcow2%n", &disk, &seq, &n) != 2 ||
		    e->d_name[n] || !seq)
			continue;
		used = disk < s->ndisks && seq == s->active;
		for (unsigned i = 0; i < s->npts && !used; i++)
			used = disk < s->ndisks && s->pts[i].seq == seq;
		if (!used && unlinkat(dirfd(d), e->d_name, 0) == 0)
			qb_log(LOG_INFO, "replica store of %s: removed %s", s->vm, e->d_name);
	}
	if (d)
		closedir(d);
}

/* A fresh active overlay on the newest point, in the index (written first,
 * so a seq is never given twice) and on disk. */
static int active_new(struct rep_store *s, char *err, size_t len)
{
	int rc;

	s->active = s->next_seq++;
	if ((rc = index_write(s, err, len)) < 0)
		return rc;
	for (unsigned i = 0; i < s->ndisks; i++)
		if ((rc = img_create(s, i, s->active, top_seq(s), err, len)) < 0)
			return rc;
	return 0;
}

/* Put the active layers in the daemon and export them. */
static int active_attach(struct rep_store *s, char *err, size_t len)
{
	int rc = 0;

	for (unsigned i = 0; i < s->ndisks && !rc; i++)
		rc = node_add(s, i, s->active, (int64_t)top_seq(s), err, len);
	for (unsigned i = 0; i < s->ndisks && !rc; i++)
		rc = export_add(s, i, err, len);
	return rc ? rc : nbd_open_all(s, err, len);
}

/* Start a daemon on the files: the base, the points' overlays, a fresh
 * active layer. Any daemon of this directory is killed first. */
static int daemon_start(struct rep_store *s, char *err, size_t len)
{
	char qsock[PATH_MAX], nsock[PATH_MAX], pidf[PATH_MAX], log[PATH_MAX];
	char chardev[PATH_MAX + 64], nbd[PATH_MAX + 64];
	char *argv[] = { s->qsd, "--daemonize", "--pidfile", pidf, "--chardev", chardev,
			 "--monitor", "chardev=qmp", "--nbd-server", nbd, NULL };
	char msg[MSG_MAX];
	int rc;

	nbd_close_all(s);
	rep_qmpc_close(s->q);
	s->q = NULL;
	daemon_kill(s->dir, read_pid(s->dir));
	s->pruned = 0; /* the chain is rebuilt from the index: prune again */
	path_in(s->dir, "qmp.sock", qsock);
	path_in(s->dir, "nbd.sock", nsock);
	path_in(s->dir, "qsd.pid", pidf);
	path_in(s->dir, "qsd.log", log);
	unlink(qsock);
	unlink(nsock);
	snprintf(chardev, sizeof(chardev), "socket,id=qmp,path=%s,server=on,wait=off", qsock);
	snprintf(nbd, sizeof(nbd), "addr.type=unix,addr.path=%s", nsock);
	if ((rc = active_new(s, err, len)) < 0)
		return rc;
	remove_strays(s);
	if ((rc = run(s->vm, argv, log, err, len)) < 0)
		return rc;
	s->pid = read_pid(s->dir);
	if ((rc = rep_qmpc_connect(qsock, QMP_CONNECT_MS, &s->q, msg, sizeof(msg))) < 0)
		return fail(s->vm, err, len, rc, "the new daemon: %s", msg);
	for (unsigned i = 0; i < s->ndisks; i++) {
		int64_t back = -1;
		if ((rc = node_add(s, i, 0, -1, err, len)) < 0)
			return rc;
		for (unsigned p = 0; p < s->npts; p++) {
			if ((rc = node_add(s, i, s->pts[p].seq, back < 0 ? 0 : back, err, len)) < 0)
				return rc;
			back = (int64_t)s->pts[p].seq;
		}
	}
	qb_log(LOG_INFO, "replica store of %s: daemon %d started (%u points)", s->vm,
	       (int)s->pid, s->npts);
	return active_attach(s, err, len);
}

/* Replace the active layers in the running daemon by fresh ones: what the
 * last cycle wrote is gone. */
static int active_swap(struct rep_store *s, char *err, size_t len)
{
	uint64_t old = s->active;
	char path[PATH_MAX];
	int rc = 0;

	nbd_close_all(s);
	for (unsigned i = 0; i < s->ndisks && !rc; i++)
		rc = export_del(s, i, err, len);
	for (unsigned i = 0; i < s->ndisks && !rc; i++)
		rc = node_del(s, i, old, err, len);
	if (rc < 0)
		return rc;
	for (unsigned i = 0; i < s->ndisks; i++) {
		file_of(s, i, old, path);
		unlink(path);
	}
	if ((rc = active_new(s, err, len)) < 0)
		return rc;
	return active_attach(s, err, len);
}

/* Discard the active layers: swapped in the running daemon, or, if that
 * fails, a fresh daemon on the files. */
static int active_reset(struct rep_store *s, char *err, size_t len)
{
	char msg[MSG_MAX];

	s->cycle_open = false;
	if (s->q && daemon_alive(s->dir, s->pid) && active_swap(s, msg, sizeof(msg)) == 0)
		return 0;
	if (s->q)
		qb_log(LOG_WARNING, "replica store of %s: restarting its daemon", s->vm);
	return daemon_start(s, err, len);
}

/* ---- a store in an RBD pool ---- */

static struct rsr_cfg rbd_cfg(const struct rep_store *s)
{
	return (struct rsr_cfg){ .conf = s->conf[0] ? s->conf : NULL,
				 .client = s->client[0] ? s->client : NULL, .pool = s->pool,
				 .vm = s->vm, .node = s->node, .ndisks = s->ndisks,
				 .disks = s->disks };
}

/* The ids of the points the index names. */
static unsigned point_ids(const struct rep_store *s, uint64_t *ids)
{
	for (unsigned i = 0; i < s->npts; i++)
		ids[i] = s->pts[i].id;
	return s->npts;
}

/*
 * Open the images (made, for a new store, then the index written); put
 * every head back to the newest point and remove the snapshots the index
 * does not name: what a cycle or a commit left half-done before a crash.
 */
static int rbd_attach(struct rep_store *s, char *err, size_t len)
{
	struct rsr_cfg c = rbd_cfg(s);
	uint64_t ids[REP_STORE_POINTS_MAX];
	unsigned n = point_ids(s, ids);
	int rc;

	rsr_close(s->rbd);
	s->rbd = NULL;
	if ((rc = rsr_open(&c, s->fresh, &s->rbd, err, len)) < 0)
		return rc;
	if (s->fresh) {
		if ((rc = index_write(s, err, len)) == 0)
			s->fresh = false;
		return rc;
	}
	return rsr_revert(s->rbd, rep_store_newest(s), ids, n, err, len);
}

/* The images of the store in @dir, if it is in a pool, removed. */
static int rbd_destroy(const char *dir, char *err, size_t len)
{
	struct index *x = malloc(sizeof(*x));
	int rc;

	if (!x)
		return -ENOMEM;
	rc = index_read(dir, x);
	if (rc == 0 && x->pool[0]) {
		struct rsr_cfg c = { .conf = x->conf[0] ? x->conf : NULL,
				     .client = x->client[0] ? x->client : NULL, .pool = x->pool,
				     .vm = x->vm, .node = x->node, .ndisks = x->ndisks,
				     .disks = x->disks };
		rc = rsr_destroy(&c, err, len);
	} else {
		rc = 0; /* files only, or no index: nothing outside @dir */
	}
	free(x);
	return rc;
}

bool rep_store_pool_valid(const char *pool)
{
	return rsr_pool_valid(pool);
}

const char *rep_store_pool(const struct rep_store *s)
{
	return s->pool;
}

/* ---- open, close ---- */

static int check_cfg(const struct rep_store_cfg *cfg, char *err, size_t len)
{
	const char *vm = cfg->vm ? cfg->vm : "?";

	if (!cfg->dir || cfg->dir[0] != '/' || strchr(cfg->dir, ',') ||
	    strlen(cfg->dir) >= PATH_MAX - 64 || !cfg->vm || strlen(cfg->vm) > REP_NAME_MAX)
		return fail(vm, err, len, -EINVAL, "bad directory or VM name");
	if (cfg->ndisks > REP_DISKS_MAX)
		return fail(vm, err, len, -EINVAL, "%u disks", cfg->ndisks);
	if (cfg->pool && cfg->pool[0] && !rsr_pool_valid(cfg->pool))
		return fail(vm, err, len, -EINVAL, "bad pool name (letters, digits, \"_.-\")");
	if (cfg->pool && cfg->pool[0] &&
	    (!cfg->node || !cfg->node[0] || strlen(cfg->node) > RSR_NODE_MAX ||
	     strspn(cfg->node, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
		     strlen(cfg->node)))
		return fail(vm, err, len, -EINVAL, "a store in a pool needs this node's name");
	if ((cfg->ceph_conf && (!cfg->ceph_conf[0] || strlen(cfg->ceph_conf) > RSR_CONF_MAX ||
				strpbrk(cfg->ceph_conf, " \t\n\"\\"))) ||
	    (cfg->ceph_client && (!cfg->ceph_client[0] ||
				  strlen(cfg->ceph_client) > RSR_CLIENT_MAX ||
				  strpbrk(cfg->ceph_client, " \t\n\"\\"))))
		return fail(vm, err, len, -EINVAL, "bad ceph.conf path or client name");
	for (unsigned i = 0; i < cfg->ndisks; i++)
		if (!cfg->disks[i].size || !cfg->disks[i].name[0] ||
		    strspn(cfg->disks[i].name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
						"0123456789_.-") != strlen(cfg->disks[i].name))
			return fail(vm, err, len, -EINVAL, "bad disk %u", i);
	return 0;
}

static int mkdirs(const char *dir)
{
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s", dir);
	for (char *c = p + 1; *c; c++) {
		if (*c != '/')
			continue;
		*c = '\0';
		if (mkdir(p, 0700) < 0 && errno != EEXIST)
			return -errno;
		*c = '/';
	}
	return mkdir(p, 0700) < 0 && errno != EEXIST ? -errno : 0;
}

/* The index agrees with @s's disks, or a new store is made. */
static int load(struct rep_store *s, char *err, size_t len)
{
	struct index *x = malloc(sizeof(*x));
	int rc;

	if (!x)
		return fail(s->vm, err, len, -ENOMEM, "out of memory");
	rc = index_read(s->dir, x);
	if (rc == -ENOENT && !s->ndisks) {
		rc = fail(s->vm, err, len, rc, "no replica store in %s", s->dir);
		goto out;
	}
	if (!rc && !s->ndisks) { /* the disks the store has */
		s->ndisks = x->ndisks;
		memcpy(s->disks, x->disks, sizeof(x->disks[0]) * x->ndisks);
	}
	if (rc == -ENOENT) {
		s->next_seq = 1;
		s->fresh = true;
		rc = 0;
		if (s->pool[0]) /* rbd_attach() makes the images, then the index */
			goto out;
		for (unsigned i = 0; i < s->ndisks && !rc; i++)
			rc = img_create(s, i, 0, 0, err, len);
		if (!rc)
			rc = index_write(s, err, len);
		goto out;
	}
	if (rc < 0) {
		rc = fail(s->vm, err, len, rc, "the index in %s is unreadable: %s", s->dir,
			  strerror(-rc));
		goto out;
	}
	rc = x->ndisks != s->ndisks ? -EINVAL : 0;
	for (unsigned i = 0; i < s->ndisks && !rc; i++)
		if (strcmp(x->disks[i].name, s->disks[i].name) || x->disks[i].size != s->disks[i].size)
			rc = -EINVAL;
	if (rc < 0) {
		rc = fail(s->vm, err, len, rc,
			  "the store in %s holds other disks than the VM's (%u disks, the first "
			  "%s of %" PRIu64 " bytes): the VM's disks changed",
			  s->dir, x->ndisks, x->disks[0].name, x->disks[0].size);
		goto out;
	}
	if (s->pool[0] && strcmp(s->pool, x->pool)) {
		rc = fail(s->vm, err, len, -EINVAL, "the store in %s is %s%s, not in pool %s",
			  s->dir, x->pool[0] ? "in pool " : "in files", x->pool, s->pool);
		goto out;
	}
	if (!s->pool[0] && x->pool[0] && s->opened_with_disks) {
		rc = fail(s->vm, err, len, -EINVAL, "the store in %s is in pool %s, not in files",
			  s->dir, x->pool);
		goto out;
	}
	if (!s->pool[0]) /* opened from the index */
		snprintf(s->pool, sizeof(s->pool), "%s", x->pool);
	if (!s->conf[0])
		snprintf(s->conf, sizeof(s->conf), "%s", x->conf);
	if (!s->client[0])
		snprintf(s->client, sizeof(s->client), "%s", x->client);
	if (x->pool[0]) /* the images are named after the node that made them */
		snprintf(s->node, sizeof(s->node), "%s", x->node);
	s->next_seq = x->next_seq;
	s->active = x->active;
	s->npts = x->npts;
	memcpy(s->pts, x->pts, sizeof(x->pts[0]) * x->npts);
out:
	free(x);
	return rc;
}

/* A store's structure for @cfg (checked), nothing opened yet. */
static struct rep_store *store_new(const struct rep_store_cfg *cfg)
{
	struct rep_store *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	snprintf(s->dir, sizeof(s->dir), "%s", cfg->dir);
	snprintf(s->vm, sizeof(s->vm), "%s", cfg->vm);
	snprintf(s->qsd, sizeof(s->qsd), "%s", cfg->qsd ? cfg->qsd : "qemu-storage-daemon");
	snprintf(s->qemu_img, sizeof(s->qemu_img), "%s", cfg->qemu_img ? cfg->qemu_img : "qemu-img");
	s->ndisks = cfg->ndisks;
	memcpy(s->disks, cfg->disks, sizeof(s->disks[0]) * cfg->ndisks);
	s->keep = cfg->keep ? cfg->keep : 1;
	s->pid = -1;
	s->opened_with_disks = cfg->ndisks > 0;
	snprintf(s->pool, sizeof(s->pool), "%s", cfg->pool ? cfg->pool : "");
	snprintf(s->conf, sizeof(s->conf), "%s", cfg->ceph_conf ? cfg->ceph_conf : "");
	snprintf(s->client, sizeof(s->client), "%s", cfg->ceph_client ? cfg->ceph_client : "");
	snprintf(s->node, sizeof(s->node), "%s", cfg->node ? cfg->node : "");
	return s;
}

int rep_store_open(const struct rep_store_cfg *cfg, struct rep_store **out, char *err,
		   size_t len)
{
	struct rep_store *s = NULL;
	int rc;

	*out = NULL;
	if ((rc = check_cfg(cfg, err, len)) < 0)
		return rc;
	if (!(s = store_new(cfg)))
		return fail(cfg->vm, err, len, -ENOMEM, "out of memory");
	if (s->ndisks && (rc = mkdirs(s->dir)) < 0) { /* 0 disks: it must exist */
		rc = fail(s->vm, err, len, rc, "cannot create %s: %s", s->dir, strerror(-rc));
		goto out;
	}
	if ((rc = load(s, err, len)) < 0)
		goto out;
	if (s->pool[0]) {
		rc = rbd_attach(s, err, len);
		goto out;
	}
	/*
	 * A daemon an earlier hcad left running is asked to quit (it flushes
	 * every image) and a new one starts from the files, as the index says.
	 * Re-attaching would trust what it did after the index was last
	 * written: a point made but not indexed, or a prune it finished alone
	 * while the base's new metadata sat in its cache, which a reader of the
	 * files (a failover's copy) would see torn.
	 */
	daemon_stop(s->dir, NULL, read_pid(s->dir));
	rc = daemon_start(s, err, len);
out:
	if (rc < 0)
		rep_store_close(s, false);
	else
		*out = s;
	return rc;
}

int rep_store_seed(const struct rep_store_cfg *cfg, uint64_t point_id,
		   const struct rep_seed_src *src, struct rep_store **out, char *err, size_t len)
{
	struct rep_store *s = NULL;
	char path[PATH_MAX], tmp[PATH_MAX + 8], log[PATH_MAX];
	struct timespec ts;
	int rc;

	*out = NULL;
	if ((rc = check_cfg(cfg, err, len)) < 0)
		return rc;
	if (!cfg->ndisks || !point_id)
		return fail(cfg->vm, err, len, -EINVAL, "a seed needs disks and a point");
	if (cfg->pool && cfg->pool[0])
		return fail(cfg->vm, err, len, -EOPNOTSUPP, "a store in an RBD pool is not seeded "
			    "from local images");
	if ((rc = rep_store_destroy(cfg->dir, err, len)) < 0)
		return rc;
	if (!(s = store_new(cfg)))
		return fail(cfg->vm, err, len, -ENOMEM, "out of memory");
	if ((rc = mkdirs(s->dir)) < 0) {
		rc = fail(s->vm, err, len, rc, "cannot create %s: %s", s->dir, strerror(-rc));
		goto out;
	}
	path_in(s->dir, "qemu-img.log", log);
	for (unsigned i = 0; i < s->ndisks && !rc; i++) {
		char *argv[] = { s->qemu_img, "convert", "-q", "-f", src[i].raw ? "raw" : "qcow2",
				 "-O", "qcow2", "-o", OVERLAY_OPTS, (char *)src[i].path, tmp, NULL };
		file_of(s, i, 0, path);
		snprintf(tmp, sizeof(tmp), "%s.seed", path);
		if ((rc = run(s->vm, argv, log, err, len)) < 0)
			break;
		if (rename(tmp, path) < 0)
			rc = fail(s->vm, err, len, -errno, "cannot rename %s: %s", tmp,
				  strerror(errno));
		if (!rc)
			rc = img_create(s, i, 1, 0, err, len);
	}
	if (rc < 0)
		goto out;
	clock_gettime(CLOCK_REALTIME, &ts);
	s->pts[0] = (struct rep_store_point){
		.id = point_id, .seq = 1,
		.time_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u };
	s->npts = 1;
	s->next_seq = 2;
	if ((rc = index_write(s, err, len)) < 0)
		goto out;
	rc = daemon_start(s, err, len);
	if (!rc)
		qb_log(LOG_NOTICE, "replica store of %s: seeded from %u local image(s) as point %"
		       PRIu64, s->vm, s->ndisks, point_id);
out:
	if (rc < 0) {
		rep_store_close(s, true);
		rep_store_destroy(cfg->dir, NULL, 0);
	} else {
		*out = s;
	}
	return rc;
}

void rep_store_close(struct rep_store *s, bool stop_daemon)
{
	if (!s)
		return;
	nbd_close_all(s);
	rsr_close(s->rbd);
	if (stop_daemon)
		daemon_stop(s->dir, s->q, s->pid);
	rep_qmpc_close(s->q);
	free(s);
}

int rep_store_destroy(const char *dir, char *err, size_t len)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int rc = 0;

	if (!d)
		return errno == ENOENT ? 0 : fail(dir, err, len, -errno, "cannot open %s: %s", dir,
						  strerror(errno));
	if ((rc = rbd_destroy(dir, err, len)) < 0) {
		closedir(d);
		return rc;
	}
	daemon_stop(dir, NULL, read_pid(dir));
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
		    unlinkat(dirfd(d), e->d_name, 0) < 0 && !rc)
			rc = -errno;
	closedir(d);
	if (!rc && rmdir(dir) < 0)
		rc = -errno;
	return rc < 0 ? fail(dir, err, len, rc, "cannot remove %s: %s", dir, strerror(-rc)) : 0;
}

/* ---- cycles ---- */

uint64_t rep_store_newest(const struct rep_store *s)
{
	return s->npts ? s->pts[s->npts - 1].id : 0;
}

void rep_store_set_keep(struct rep_store *s, unsigned keep)
{
	s->keep = keep ? keep : 1;
}

int rep_store_begin(struct rep_store *s, uint64_t cycle, uint64_t base, bool full, bool exact,
		    char *err, size_t len)
{
	uint64_t newest = rep_store_newest(s);
	int rc;

	if (s->cycle_open)
		return fail(s->vm, err, len, -EBUSY, "cycle %" PRIu64 " is still open", s->cycle);
	/*
	 * The changes since point @base rewrite every range that changed
	 * since then, so they apply on any later point of the same history
	 * too (the source may not have learnt that its last cycle landed);
	 * never on an older one, which lacks what changed in between.
	 */
	if (!full && (!base || base > newest || (exact && base != newest)))
		return fail(s->vm, err, len, -ESTALE,
			    "cycle %" PRIu64 " applies on point %" PRIu64
			    " but the newest point here is %" PRIu64 ": the disks must be "
			    "compared again", cycle, base, newest);
	if (cycle <= newest)
		return fail(s->vm, err, len, -EINVAL,
			    "cycle %" PRIu64 " is not newer than point %" PRIu64, cycle, newest);
	/* the daemon may have died since the last cycle: start it again */
	if (s->pool[0]) {
		if (!s->rbd && (rc = rbd_attach(s, err, len)) < 0)
			return rc;
	} else if (!s->q || rep_qmpc_cmd(s->q, "query-version", NULL, NULL, NULL, 0) < 0 ||
	    !s->nbd[0]) {
		qb_log(LOG_WARNING, "replica store of %s: its daemon is gone", s->vm);
		if ((rc = daemon_start(s, err, len)) < 0)
			return rc;
	}
	s->cycle = cycle;
	s->cycle_open = true;
	return 0;
}

static int io_check(struct rep_store *s, unsigned disk, uint64_t off, uint64_t len)
{
	if (!s->cycle_open)
		return -EPIPE;
	if (disk >= s->ndisks || off > s->disks[disk].size || len > s->disks[disk].size - off)
		return -ERANGE;
	return 0;
}

int rep_store_write(struct rep_store *s, unsigned disk, uint64_t off, const void *buf,
		    size_t len)
{
	int rc = io_check(s, disk, off, len);

	if (!rc && s->rbd)
		return rsr_write(s->rbd, disk, off, buf, len);

	while (!rc && len) {
		size_t n = len < WRITE_CHUNK ? len : WRITE_CHUNK;
		if (nbd_pwrite(s->nbd[disk], buf, n, off, 0) < 0)
			rc = nbd_rc();
		buf = (const char *)buf + n;
		off += n;
		len -= n;
	}
	if (rc < 0 && rc != -EPIPE && rc != -ERANGE)
		qb_log(LOG_ERR, "replica store of %s: write to disk %u: %s", s->vm, disk,
		       nbd_get_error() ? nbd_get_error() : strerror(-rc));
	return rc;
}

int rep_store_zero(struct rep_store *s, unsigned disk, uint64_t off, uint64_t len)
{
	int rc = io_check(s, disk, off, len);

	if (!rc && s->rbd)
		return rsr_zero(s->rbd, disk, off, len);

	while (!rc && len) {
		uint64_t n = len < ZERO_CHUNK ? len : ZERO_CHUNK;
		/* no LIBNBD_CMD_FLAG_NO_HOLE: the replica may trim, and stays sparse */
		if (nbd_zero(s->nbd[disk], n, off, 0) < 0)
			rc = nbd_rc();
		off += n;
		len -= n;
	}
	if (rc < 0 && rc != -EPIPE && rc != -ERANGE)
		qb_log(LOG_ERR, "replica store of %s: zero on disk %u: %s", s->vm, disk,
		       nbd_get_error() ? nbd_get_error() : strerror(-rc));
	return rc;
}

/* The snapshot of every disk in one transaction: the active layers become
 * the point, the new ones (@seq, added with no backing) the active. */
static int snapshot_all(struct rep_store *s, uint64_t seq, char *err, size_t len)
{
	json_t *acts = json_array();
	char node[32], ovl[32];

	for (unsigned i = 0; i < s->ndisks; i++) {
		node_of(i, s->active, node);
		node_of(i, seq, ovl);
		json_array_append_new(acts, json_pack("{s:s, s:{s:s, s:s}}", "type",
						      "blockdev-snapshot", "data", "node", node,
						      "overlay", ovl));
	}
	return qmp(s, "transaction", json_pack("{s:o}", "actions", acts), err, len);
}

static void prune(struct rep_store *s);

int rep_store_commit(struct rep_store *s, uint64_t point_id, uint64_t time_ms,
		     bool app_consistent, uint64_t bytes, char *err, size_t len)
{
	struct rep_store_point p = { .id = point_id, .time_ms = time_ms,
				     .app_consistent = app_consistent, .bytes = bytes,
				     .seq = s->active };
	uint64_t seq = s->next_seq;
	unsigned added = 0;
	char path[PATH_MAX];
	int64_t t0 = now_ms();
	int rc = 0;

	if (!s->cycle_open)
		return fail(s->vm, err, len, -EPIPE, "no cycle to commit");
	if (s->npts == REP_STORE_POINTS_MAX)
		return fail(s->vm, err, len, -ENOSPC, "%u points kept already", s->npts);
	if (s->pool[0]) {
		/* the snapshots, then the index: a point it does not name yet is
		 * removed by the next open */
		if ((rc = rsr_point(s->rbd, point_id, err, len)) < 0)
			return rc;
		p.seq = s->next_seq++;
		goto made;
	}
	for (unsigned i = 0; i < s->ndisks && !rc; i++)
		if (nbd_flush(s->nbd[i], 0) < 0)
			rc = fail(s->vm, err, len, nbd_rc(), "flush of disk %u: %s", i,
				  nbd_get_error());
	for (unsigned i = 0; i < s->ndisks && !rc; i++)
		rc = img_create(s, i, seq, s->active, err, len);
	for (; added < s->ndisks && !rc; added++)
		rc = node_add(s, added, seq, -1, err, len);
	if (!rc)
		rc = snapshot_all(s, seq, err, len);
	if (rc < 0) {
		/* nothing moved: the cycle stays open on the old active layers */
		for (unsigned i = 0; i < added; i++)
			node_del(s, i, seq, NULL, 0);
		for (unsigned i = 0; i < s->ndisks; i++) {
			file_of(s, i, seq, path);
			unlink(path);
		}
		return rc;
	}
	s->next_seq++;
	s->active = seq;
made:
	s->pts[s->npts++] = p;
	s->cycle_open = false;
	if ((rc = index_write(s, err, len)) < 0)
		return rc; /* the daemon is ahead of the index: the next open restarts it */
	qb_log(LOG_INFO, "replica store of %s: point %" PRIu64 " made in %lld ms", s->vm, point_id,
	       (long long)(now_ms() - t0));
	prune(s);
	return 0;
}

int rep_store_abort(struct rep_store *s, char *err, size_t len)
{
	if (!s->cycle_open)
		return 0;
	qb_log(LOG_NOTICE, "replica store of %s: cycle %" PRIu64 " dropped", s->vm, s->cycle);
	if (s->pool[0]) {
		uint64_t ids[REP_STORE_POINTS_MAX];
		unsigned n = point_ids(s, ids);
		int rc = s->rbd ? rsr_revert(s->rbd, rep_store_newest(s), ids, n, err, len)
				: -ENOTCONN;
		if (rc < 0) { /* the next open puts it back */
			rsr_close(s->rbd);
			s->rbd = NULL;
		}
		s->cycle_open = false;
		return rc;
	}
	return active_reset(s, err, len);
}

/* ---- pruning ---- */

/* block-commit the oldest point's overlay of @disk into the base. */
static int commit_down(struct rep_store *s, unsigned disk, uint64_t seq, char *err, size_t len)
{
	char top[32], base[32], dev[32], job[32], msg[MSG_MAX];
	json_t *data = NULL;
	const char *jerr;
	int rc;

	node_of(disk, seq, top);
	node_of(disk, 0, base);
	node_of(disk, s->active, dev);
	snprintf(job, sizeof(job), "prune%u", ++s->jobs);
	if ((rc = qmp(s, "block-commit",
		      json_pack("{s:s, s:s, s:s, s:s}", "job-id", job, "device", dev, "top-node",
				top, "base-node", base),
		      err, len)) < 0)
		return rc;
	rc = rep_qmpc_wait_event(s->q, "BLOCK_JOB_COMPLETED", job, PRUNE_MS, &data, msg,
				 sizeof(msg));
	if (rc < 0)
		rc = fail(s->vm, err, len, rc, "prune of disk %u: %s", disk, msg);
	else if ((jerr = json_string_value(json_object_get(data, "error"))))
		rc = fail(s->vm, err, len, -EIO, "prune of disk %u: %s", disk, jerr);
	json_decref(data);
	return rc;
}

/* Is node @seq of @disk in the daemon? A prune that was interrupted
 * after its commit and blockdev-del (e.g. by an hcad restart) need not
 * be done again. */
static bool node_exists(struct rep_store *s, unsigned disk, uint64_t seq)
{
	json_t *ret = NULL, *n;
	char node[32];
	bool found = false;
	size_t i;

	node_of(disk, seq, node);
	if (rep_qmpc_cmd(s->q, "query-named-block-nodes", json_pack("{s:b}", "flat", 1), &ret,
			 NULL, 0) < 0)
		return true; /* let block-commit say what is wrong */
	json_array_foreach(ret, i, n) {
		const char *name = json_string_value(json_object_get(n, "node-name"));
		if (name && !strcmp(name, node))
			found = true;
	}
	json_decref(ret);
	return found;
}

/*
 * Flush the base of @disk: a block-commit leaves the base's qcow2 metadata
 * in the daemon's cache, and a reader of the files (qemu-img -U) would see
 * a torn image. QMP has no flush command; a read-only NBD export of the
 * base, flushed and deleted, is one.
 */
static int base_flush(struct rep_store *s, unsigned disk, char *err, size_t len)
{
	char node[32], id[16], sock[PATH_MAX], msg[MSG_MAX];
	struct nbd_handle *h = NULL;
	int rc;

	node_of(disk, 0, node);
	snprintf(id, sizeof(id), "f%u", disk);
	path_in(s->dir, "nbd.sock", sock);
	if ((rc = qmp(s, "block-export-add",
		      json_pack("{s:s, s:s, s:s, s:s}", "type", "nbd", "id", id, "node-name", node,
				"name", id),
		      err, len)) < 0)
		return rc;
	if (!(h = nbd_create()) || nbd_set_export_name(h, id) < 0 ||
	    nbd_connect_unix(h, sock) < 0 || nbd_flush(h, 0) < 0)
		rc = fail(s->vm, err, len, nbd_rc(), "flush of disk %u's base: %s", disk,
			  nbd_get_error());
	nbd_close(h);
	if (qmp(s, "block-export-del", json_pack("{s:s, s:s}", "id", id, "mode", "hard"), NULL,
		0) == 0)
		rep_qmpc_wait_event(s->q, "BLOCK_EXPORT_DELETED", id, EXPORT_DEL_MS, NULL, msg,
				    sizeof(msg));
	return rc;
}

/* Prune the oldest point: its overlays committed into the bases, which
 * then read as it did; the next point's overlays back on the bases. */
static int prune_one(struct rep_store *s)
{
	uint64_t seq = s->pts[0].seq;
	char path[PATH_MAX], err[MSG_MAX];
	int64_t t0 = now_ms();
	int rc;

	if (s->pool[0]) { /* the index first: a snapshot left is a stray */
		uint64_t id = s->pts[0].id;
		memmove(s->pts, s->pts + 1, sizeof(s->pts[0]) * --s->npts);
		if ((rc = index_write(s, err, sizeof(err))) < 0)
			return rc;
		if (!s->rbd || rsr_unpoint(s->rbd, id, err, sizeof(err)) < 0)
			qb_log(LOG_WARNING, "replica store of %s: point %" PRIu64 "'s snapshots "
			       "stay until the next open", s->vm, id);
		return 0;
	}
	for (unsigned i = 0; i < s->ndisks; i++) {
		if ((s->pruned & (1u << i)) || !node_exists(s, i, seq))
			continue;
		if ((rc = commit_down(s, i, seq, err, sizeof(err))) < 0 ||
		    (rc = base_flush(s, i, err, sizeof(err))) < 0)
			return rc;
		s->pruned |= 1u << i;
		node_del(s, i, seq, NULL, 0);
	}
	memmove(s->pts, s->pts + 1, sizeof(s->pts[0]) * --s->npts);
	s->pruned = 0;
	if ((rc = index_write(s, err, sizeof(err))) < 0)
		return rc;
	for (unsigned i = 0; i < s->ndisks; i++) {
		file_of(s, i, seq, path);
		unlink(path);
	}
	qb_log(LOG_INFO, "replica store of %s: oldest point pruned in %lld ms", s->vm,
	       (long long)(now_ms() - t0));
	return 0;
}

/*
 * A prune writes into the bases, which every point's chain reads: while a
 * point is held (copied out with qemu-img -U for a failover), nothing is
 * pruned, or the copy could read a base whose metadata is half-written.
 */
static void prune(struct rep_store *s)
{
	for (unsigned i = 0; i < s->npts; i++)
		if (s->pts[i].held) {
			if (s->npts > s->keep)
				qb_log(LOG_INFO, "replica store of %s: point %" PRIu64
				       " is held: %u points kept, pruned once it is released",
				       s->vm, s->pts[i].id, s->npts);
			return;
		}
	while (s->npts > s->keep)
		if (prune_one(s) < 0) {
			qb_log(LOG_WARNING, "replica store of %s: prune left for the next commit",
			       s->vm);
			return;
		}
}

/* ---- points ---- */

unsigned rep_store_points(const struct rep_store *s, struct rep_store_point *out, unsigned max)
{
	memcpy(out, s->pts, sizeof(*out) * (s->npts < max ? s->npts : max));
	return s->npts;
}

static struct rep_store_point *point_find(const struct rep_store *s, uint64_t id)
{
	for (unsigned i = 0; i < s->npts; i++)
		if (s->pts[i].id == id)
			return (struct rep_store_point *)&s->pts[i];
	return NULL;
}

int rep_store_hold(struct rep_store *s, uint64_t point_id, bool on)
{
	struct rep_store_point *p = point_find(s, point_id);
	char err[MSG_MAX];
	int rc;

	if (!p)
		return -ENOENT;
	/* the copy reads the files: the bases' metadata must be on disk */
	for (unsigned i = 0; on && !s->pool[0] && i < s->ndisks; i++)
		if ((rc = base_flush(s, i, err, sizeof(err))) < 0)
			return rc;
	p->held = on;
	return index_write(s, NULL, 0);
}

int rep_store_point_files(const struct rep_store *s, uint64_t point_id, char paths[][PATH_MAX],
			  unsigned max)
{
	const struct rep_store_point *p = point_find(s, point_id);

	if (!p)
		return -ENOENT;
	for (unsigned i = 0; i < s->ndisks && i < max; i++) {
		struct rsr_cfg c = rbd_cfg(s);
		if (!s->pool[0])
			file_of(s, i, p->seq, paths[i]);
		else if (rsr_point_spec(&c, i, p->id, paths[i], PATH_MAX) < 0)
			return -ENAMETOOLONG;
	}
	return (int)s->ndisks;
}

int rep_store_daemon_pid(const struct rep_store *s)
{
	return s->pid;
}

unsigned rep_store_disks(const struct rep_store *s, struct rep_disk *out, unsigned max)
{
	memcpy(out, s->disks, sizeof(*out) * (s->ndisks < max ? s->ndisks : max));
	return s->ndisks;
}

/* ---- digests (a resync) ---- */

#define DIGEST_READ (2u << 20) /* bytes read at a time */

struct ext_walk {
	uint64_t off, end;	/* the extents block status gave, [off, end) */
	uint64_t ext_off[64], ext_len[64];
	bool ext_data[64];
	size_t n;
};

static int ext_cb(void *opaque, const char *ctx, uint64_t off, uint32_t *e, size_t n, int *error)
{
	struct ext_walk *w = opaque;

	(void)error;
	if (strcmp(ctx, LIBNBD_CONTEXT_BASE_ALLOCATION))
		return 0;
	w->n = 0;
	for (size_t i = 0; i + 1 < n && w->n < 64; i += 2) {
		w->ext_off[w->n] = off;
		w->ext_len[w->n] = e[i];
		/* a hole or a zero range reads as zeros: not listed */
		w->ext_data[w->n] = !(e[i + 1] & (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO));
		off += e[i];
		w->n++;
	}
	return 0;
}

static int drun_add(struct rep_store_digests *d, size_t *cap_runs, size_t *cap_dg,
		    uint64_t off, const uint8_t dg[REP_DIGEST_LEN], uint32_t gran)
{
	size_t ndg = d->nruns ? d->runs[d->nruns - 1].first + d->runs[d->nruns - 1].n : 0;
	struct rep_store_drun *last = d->nruns ? &d->runs[d->nruns - 1] : NULL;

	if (ndg == *cap_dg) {
		size_t c = *cap_dg ? *cap_dg * 2 : 256;
		uint8_t *p = realloc(d->dg, c * REP_DIGEST_LEN);
		if (!p)
			return -ENOMEM;
		d->dg = p;
		*cap_dg = c;
	}
	if (!last || last->off + (uint64_t)last->n * gran != off) {
		if (d->nruns == *cap_runs) {
			size_t c = *cap_runs ? *cap_runs * 2 : 16;
			struct rep_store_drun *p = realloc(d->runs, c * sizeof(*p));
			if (!p)
				return -ENOMEM;
			d->runs = p;
			*cap_runs = c;
		}
		d->runs[d->nruns++] = (struct rep_store_drun){ .off = off, .first = ndg };
		last = &d->runs[d->nruns - 1];
	}
	memcpy(d->dg + ndg * REP_DIGEST_LEN, dg, REP_DIGEST_LEN);
	last->n++;
	return 0;
}

/* an RBD head's allocated extents as block status gives them: in order,
 * holes between, at most 64 entries from w->off */
static int rbd_ext_cb(uint64_t off, uint64_t len, void *arg)
{
	struct ext_walk *w = arg;

	if (w->n + 2 > 64)
		return 1; /* full: the caller goes on from where the list ends */
	if (off > w->end) {
		w->ext_off[w->n] = w->end;
		w->ext_len[w->n] = off - w->end;
		w->ext_data[w->n++] = false;
	}
	w->ext_off[w->n] = off;
	w->ext_len[w->n] = len;
	w->ext_data[w->n++] = true;
	w->end = off + len;
	return 0;
}

/* The extents of disk @disk from @pos (up to @count bytes) into @w. */
static int extents_at(struct rep_store *s, unsigned disk, uint64_t pos, uint64_t count,
		      struct ext_walk *w)
{
	int rc;

	if (!s->rbd) {
		if (nbd_block_status(s->nbd[disk], count, pos,
				     (nbd_extent_callback){ .callback = ext_cb, .user_data = w },
				     0) < 0 || !w->n)
			return nbd_rc();
		return 0;
	}
	w->off = w->end = pos;
	rc = rsr_extents(s->rbd, disk, pos, count, rbd_ext_cb, w);
	if (rc < 0)
		return rc;
	if (rc == 0 && w->end < pos + count && w->n < 64) { /* the rest reads as zeros */
		w->ext_off[w->n] = w->end;
		w->ext_len[w->n] = pos + count - w->end;
		w->ext_data[w->n++] = false;
	}
	return 0;
}

void rep_store_digests_free(struct rep_store_digests *d)
{
	free(d->runs);
	free(d->dg);
	memset(d, 0, sizeof(*d));
}

int rep_store_digests(struct rep_store *s, unsigned disk, uint64_t off, uint32_t gran,
		      uint32_t max_blocks, struct rep_store_digests *out, char *err, size_t len)
{
	uint64_t size, pos;
	size_t cap_runs = 0, cap_dg = 0, blocks = 0, bufsz;
	char *buf = NULL;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (s->cycle_open)
		return fail(s->vm, err, len, -EBUSY, "a cycle is open");
	if (disk >= s->ndisks)
		return fail(s->vm, err, len, -ERANGE, "no disk %u", disk);
	size = s->disks[disk].size;
	if (gran < REP_DIGEST_GRAN_MIN || gran > REP_DIGEST_GRAN_MAX || (gran & (gran - 1)) ||
	    off % gran || off > size || !max_blocks || max_blocks > REP_DIGEST_REPLY_MAX)
		return fail(s->vm, err, len, -EINVAL, "bad digest request (offset %" PRIu64
			    ", granularity %u, %u blocks)", off, gran, max_blocks);
	out->point = rep_store_newest(s);
	out->next = size;
	if (!out->point) /* nothing to compare with */
		return 0;
	if (s->pool[0] ? !s->rbd && (rc = rbd_attach(s, err, len)) < 0
		       : !s->nbd[disk] && (rc = daemon_start(s, err, len)) < 0)
		return rc;
	bufsz = gran > DIGEST_READ ? gran : DIGEST_READ; /* a multiple of gran */
	if (!(buf = malloc(bufsz)))
		return fail(s->vm, err, len, -ENOMEM, "out of memory");
	pos = off;
	while (pos < size && blocks < max_blocks && !rc) {
		struct ext_walk w = { 0 };
		uint64_t count = size - pos < (1u << 30) ? size - pos : (1u << 30);

		if ((rc = extents_at(s, disk, pos, count, &w)) < 0) {
			rc = fail(s->vm, err, len, rc, "block status of disk %u: %s", disk,
				  s->rbd ? strerror(-rc)
					 : nbd_get_error() ? nbd_get_error() : "no extents");
			break;
		}
		for (size_t i = 0; i < w.n && blocks < max_blocks && !rc; i++) {
			uint64_t a = w.ext_off[i], b = a + w.ext_len[i];

			if (b <= pos)
				continue;
			if (a < pos)
				a = pos;
			if (!w.ext_data[i]) {
				pos = b;
				continue;
			}
			/* every block with an allocated byte, read whole */
			a = a / gran * gran;
			if (a < pos)
				a = pos;
			while (a < b && blocks < max_blocks && !rc) {
				uint64_t blk_end = (b + gran - 1) / gran * gran, n;

				if (blk_end > size)
					blk_end = size;
				n = blk_end - a;
				if (n > bufsz)
					n = bufsz;
				if (n > (uint64_t)(max_blocks - blocks) * gran)
					n = (uint64_t)(max_blocks - blocks) * gran;
				if (s->rbd ? (rc = rsr_read(s->rbd, disk, a, buf, (size_t)n)) < 0
					   : nbd_pread(s->nbd[disk], buf, (size_t)n, a, 0) < 0) {
					rc = fail(s->vm, err, len, s->rbd ? rc : nbd_rc(),
						  "read of disk %u: %s", disk,
						  s->rbd ? strerror(-rc) : nbd_get_error());
					break;
				}
				for (uint64_t k = 0; k < n && !rc; k += gran) {
					uint8_t dg[REP_DIGEST_LEN];
					size_t bl = n - k < gran ? (size_t)(n - k) : gran;
					rep_digest(buf + k, bl, dg);
					rc = drun_add(out, &cap_runs, &cap_dg, a + k, dg, gran);
					blocks++;
				}
				a += n;
			}
			pos = a > b ? a : b;
			if (a < b)
				pos = a; /* stopped at max_blocks */
		}
	}
	free(buf);
	if (rc < 0) {
		rep_store_digests_free(out);
		return rc == -ENOMEM ? fail(s->vm, err, len, rc, "out of memory") : rc;
	}
	out->next = pos < size ? pos : size;
	return 0;
}
