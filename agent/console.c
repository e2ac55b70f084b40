/*
 * console: attach the terminal to a VM's serial console socket (QEMU's
 * socket chardev). Raw mode on a tty, Ctrl-] detaches; without a tty, copy
 * both ways and linger briefly for output after the input ends.
 */
#include "agent/console.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define CONSOLE_ESCAPE 0x1d /* Ctrl-] */
#define CONSOLE_LINGER_MS 1000


static volatile sig_atomic_t console_signal;

static void on_signal(int sig)
{
	console_signal = sig;
}

static int write_all(int fd, const char *buf, size_t n)
{
	while (n) {
		ssize_t w = write(fd, buf, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -errno;
		buf += w;
		n -= (size_t)w;
	}
	return 0;
}

static int console_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = -1;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

/* The shuttle's state: which side is still open and when to give up. */
struct shuttle {
	int sock;
	bool tty;              /* stdin is a terminal: raw mode, Ctrl-] detaches */
	bool stdin_done;
	struct timespec until; /* after EOF on stdin: stop waiting for output */
};

static int remaining_ms(const struct timespec *until)
{
	struct timespec now;
	long ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (until->tv_sec - now.tv_sec) * 1000 + (until->tv_nsec - now.tv_nsec) / 1000000;
	return ms > 0 ? (int)ms : 0;
}

/* Terminal -> socket. Returns 1 to detach, 0 to go on, -errno on failure. */
static int from_stdin(struct shuttle *s)
{
	char buf[4096];
	ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
	char *esc = NULL;
	int rc;

	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -errno;
	if (n == 0) {
		/* No half-close: QEMU's socket chardev takes EOF as a hang-up and
		 * would cut the output short. Just linger for what comes. */
		s->stdin_done = true;
		clock_gettime(CLOCK_MONOTONIC, &s->until);
		s->until.tv_sec += CONSOLE_LINGER_MS / 1000;
		return 0;
	}
	if (s->tty && (esc = memchr(buf, CONSOLE_ESCAPE, (size_t)n)))
		n = esc - buf;
	rc = n ? write_all(s->sock, buf, (size_t)n) : 0;
	if (rc == -EPIPE || rc == -ECONNRESET)
		return 1; /* the console went away under us: as good as closed */
	return rc ? rc : esc ? 1 : 0;
}

/* Socket -> terminal. Returns 1 when the console closed, 0 to go on, -errno. */
static int from_sock(struct shuttle *s)
{
	char buf[4096];
	ssize_t n = read(s->sock, buf, sizeof(buf));
	int rc;

	if (n < 0 && errno == ECONNRESET)
		return 1;
	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -errno;
	if (n == 0)
		return 1;
	rc = write_all(STDOUT_FILENO, buf, (size_t)n);
	return rc == -EPIPE ? 1 : rc;
}

static int shuttle_run(struct shuttle *s)
{
	int rc = 0;

	while (!rc && !console_signal) {
		struct pollfd p[2] = { { .fd = s->sock, .events = POLLIN },
				       { .fd = s->stdin_done ? -1 : STDIN_FILENO, .events = POLLIN } };
		int timeout = s->stdin_done ? remaining_ms(&s->until) : -1;
		int n;

		if (s->stdin_done && timeout == 0)
			break;
		n = poll(p, 2, timeout);
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n <= 0)
			continue;
		if (p[0].revents)
			rc = from_sock(s);
		if (!rc && p[1].revents)
			rc = from_stdin(s);
	}
	return rc < 0 ? rc : 0;
}

static void console_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	/* No SA_RESTART: poll() must return so the terminal gets restored. */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

int console_attach(const char *name, const char *path, char *err, size_t errlen)
{
	struct shuttle s = { .sock = -1, .tty = isatty(STDIN_FILENO) };
	struct termios saved, raw;
	int rc = 0;

	s.sock = console_connect(path);
	if (s.sock < 0) {
		snprintf(err, errlen, "cannot connect to the console of %s (%s): %s",
			 name, path, strerror(-s.sock));
		return s.sock;
	}
	console_signals();
	fprintf(stderr, "Connected to %s console (Ctrl-] to detach)\n", name);
	if (s.tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
		raw = saved;
		cfmakeraw(&raw);
		tcsetattr(STDIN_FILENO, TCSANOW, &raw);
	} else {
		s.tty = false;
	}
	rc = shuttle_run(&s);
	if (s.tty) {
		tcsetattr(STDIN_FILENO, TCSADRAIN, &saved);
		fputc('\n', stderr);
	}
	close(s.sock);
	if (rc)
		snprintf(err, errlen, "console of %s: %s", name, strerror(-rc));
	return rc;
}

