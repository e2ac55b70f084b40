/*
 * hv_launch: fork/exec a daemonizing QEMU, learn how its launch went, and
 * find a QEMU again from its pidfile after the agent restarted.
 *
 * QEMU's -daemonize makes the process we fork exit once the VM is set up
 * (status 0) or failed (status 1, the reason on stderr, which we send to
 * qemu.log). A pidfd on that short-lived child tells the loop when it exited.
 */
#include "hypervisor/hv_launch.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <qb/qblog.h>

struct hv_launch {
	qb_loop_t *loop;
	pid_t child;
	int child_pidfd;
	off_t log_off;
	struct hv_paths paths;
	hv_launch_fn done;
	void *opaque;
};

static int read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return (int)n;
}

/* What QEMU printed since @off, folded into one line for the user. */
static void log_tail(const char *path, off_t off, char *out, size_t len)
{
	char buf[2048];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = -1;
	size_t o = 0;

	out[0] = '\0';
	if (fd >= 0) {
		n = pread(fd, buf, sizeof(buf) - 1, off);
		close(fd);
	}
	if (n <= 0) {
		snprintf(out, len, "no output from QEMU (see %s)", path);
		return;
	}
	buf[n] = '\0';
	for (char *line = strtok(buf, "\n"); line && o + 1 < len; line = strtok(NULL, "\n")) {
		/* -msg timestamp=on prefixes "2026-...Z "; keep the message. */
		char *sp = strchr(line, ' ');
		if (line[0] >= '0' && line[0] <= '9' && sp)
			line = sp + 1;
		int w = snprintf(out + o, len - o, "%s%s", o ? "; " : "", line);
		if (w < 0)
			break;
		o += (size_t)w;
	}
}

static int pidfd_of(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

static void child_exec(const struct hv_argv *argv, int logfd)
{
	int devnull = open("/dev/null", O_RDONLY);

	if (devnull >= 0)
		dup2(devnull, STDIN_FILENO);
	dup2(logfd, STDOUT_FILENO);
	dup2(logfd, STDERR_FILENO);
	/* Nothing of the agent's (API sockets, other VMs' fds) leaks into QEMU. */
	syscall(SYS_close_range, 3, ~0u, 0);
	signal(SIGPIPE, SIG_DFL);
	execv(argv->v[0], argv->v);
	dprintf(STDERR_FILENO, "cannot execute %s: %s\n", argv->v[0], strerror(errno));
	_exit(127);
}

static void launch_finish(struct hv_launch *l, int status)
{
	char msg[1024] = "", why[160];
	hv_launch_fn done = l->done;
	void *opaque = l->opaque;
	pid_t pid = 0;
	int pidfd = -1, err = 0;

	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		log_tail(l->paths.qemu_log, l->log_off, msg, sizeof(msg));
		err = -EIO;
	} else if (hv_proc_find(&l->paths, NULL, &pid, &pidfd, why, sizeof(why)) < 0) {
		snprintf(msg, sizeof(msg), "QEMU daemonized but %s", why);
		err = -ESRCH;
	}
	hv_launch_free(l);
	done(NULL, err, pid, pidfd, msg, opaque);
}

static int on_child_exit(int fd, int revents, void *data)
{
	struct hv_launch *l = data;
	int status = 0;

	if (waitpid(l->child, &status, WNOHANG) <= 0)
		return 0; /* spurious: wait for the next wake-up */
	l->child = 0;
	launch_finish(l, status);
	return 0;
}

struct hv_launch *hv_launch_start(qb_loop_t *loop, const struct hv_argv *argv,
				  const struct hv_paths *paths, hv_launch_fn done,
				  void *opaque)
{
	struct hv_launch *l = calloc(1, sizeof(*l));
	int logfd = -1, saved;

	if (!l)
		return NULL;
	l->loop = loop;
	l->paths = *paths;
	l->done = done;
	l->opaque = opaque;
	l->child_pidfd = -1;
	logfd = open(paths->qemu_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		goto fail;
	l->log_off = lseek(logfd, 0, SEEK_END);
	l->child = fork();
	if (l->child == 0)
		child_exec(argv, logfd);
	if (l->child < 0)
		goto fail;
	close(logfd);
	logfd = -1;
	l->child_pidfd = pidfd_of(l->child);
	if (l->child_pidfd < 0 ||
	    qb_loop_poll_add(loop, QB_LOOP_HIGH, l->child_pidfd, POLLIN, l, on_child_exit) < 0)
		goto fail;
	qb_log(LOG_DEBUG, "launched %s (launcher pid %d)", argv->v[0], (int)l->child);
	return l;
fail:
	saved = errno;
	if (logfd >= 0)
		close(logfd);
	hv_launch_free(l);
	errno = saved;
	return NULL;
}

void hv_launch_free(struct hv_launch *l)
{
	if (!l)
		return;
	if (l->child_pidfd >= 0) {
		qb_loop_poll_del(l->loop, l->child_pidfd);
		close(l->child_pidfd);
	}
	if (l->child > 0) /* the launcher exits promptly; do not leave a zombie */
		waitpid(l->child, NULL, 0);
	free(l);
}

static char proc_state(pid_t pid)
{
	char path[64], buf[512], *rp;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (read_small(path, buf, sizeof(buf)) <= 0)
		return 'X';
	rp = strrchr(buf, ')'); /* the comm field may hold spaces and parens */
	return rp && rp[1] == ' ' ? rp[2] : 'X';
}

/* True if @pid's argv has "-uuid" @uuid (or, with @uuid NULL, names our pidfile). */
static bool cmdline_matches(pid_t pid, const char *uuid, const char *pidfile)
{
	char path[64], buf[8192];
	int n;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	n = read_small(path, buf, sizeof(buf));
	for (int i = 0; n > 0 && i < n;) {
		const char *arg = buf + i, *next;
		i += (int)strlen(arg) + 1;
		if (i >= n)
			break;
		next = buf + i;
		if (uuid && !strcmp(arg, "-uuid") && !strcmp(next, uuid))
			return true;
		if (!uuid && !strcmp(arg, "-pidfile") && !strcmp(next, pidfile))
			return true;
	}
	return false;
}

int hv_proc_find(const struct hv_paths *paths, const char *uuid, pid_t *pid,
		 int *pidfd, char *why, size_t len)
{
	char buf[32];
	long v;
	int fd;

	if (read_small(paths->pidfile, buf, sizeof(buf)) <= 0) {
		snprintf(why, len, "not running (no pidfile)");
		return -ESRCH;
	}
	v = strtol(buf, NULL, 10);
	if (v <= 1 || v > 1 << 22) {
		snprintf(why, len, "not running (pidfile holds '%.16s')", buf);
		return -ESRCH;
	}
	fd = pidfd_of((pid_t)v);
	/* Checked after the pidfd pins the pid, so a reuse cannot slip between. */
	if (fd < 0 || strchr("ZX", proc_state((pid_t)v))) {
		snprintf(why, len, "QEMU pid %ld ended while unsupervised", v);
		goto gone;
	}
	if (!cmdline_matches((pid_t)v, uuid, paths->pidfile)) {
		snprintf(why, len, "pid %ld is no longer this VM's QEMU (stale pidfile)", v);
		goto gone;
	}
	*pid = (pid_t)v;
	*pidfd = fd;
	return 0;
gone:
	if (fd >= 0)
		close(fd);
	return -ESRCH;
}

uint64_t hv_proc_start_time(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ticks = 0, btime = 0;
	long hz = sysconf(_SC_CLK_TCK);
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (read_small(path, buf, sizeof(buf)) <= 0 || !(p = strrchr(buf, ')')))
		return 0;
	/* starttime is field 22; after ')' come fields 3.. */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d "
		   "%*d %*d %*d %*d %llu", &ticks) != 1 || hz <= 0)
		return 0;
	f = fopen("/proc/stat", "re");
	if (!f)
		return 0;
	while (fgets(buf, sizeof(buf), f))
		if (sscanf(buf, "btime %llu", &btime) == 1)
			break;
	fclose(f);
	return btime ? btime + ticks / (unsigned long long)hz : 0;
}

int hv_pidfd_kill(int pidfd)
{
	if (syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) < 0)
		return errno == ESRCH ? 0 : -errno;
	return 0;
}
