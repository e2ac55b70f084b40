/*
 * rep_ga: the guest agent's freeze and thaw (see rep_ga.h).
 */
#include "replica/rep_ga.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

struct ga {
	int fd;
	uint64_t deadline;     /* monotonic ms */
	char buf[REP_GA_LINE_MAX];
	size_t len;
	char *err;
	size_t errlen;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

__attribute__((format(printf, 3, 4)))
static int fail(struct ga *g, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(g->err, g->errlen, fmt, ap);
	va_end(ap);
	return rc;
}

static int ga_open(struct ga *g, const char *sock, unsigned timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	g->deadline = now_ms() + timeout_ms;
	if (strlen(sock) >= sizeof(sa.sun_path))
		return fail(g, -ENAMETOOLONG, "%s: path too long", sock);
	strcpy(sa.sun_path, sock);
	g->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (g->fd < 0)
		return fail(g, -errno, "socket: %s", strerror(errno));
	/* a unix connect does not block on a listening socket */
	if (connect(g->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return fail(g, -errno, "guest agent channel %s: %s", sock, strerror(errno));
	return 0;
}

static int ga_write(struct ga *g, const char *s, size_t n)
{
	while (n) {
		struct pollfd p = { .fd = g->fd, .events = POLLOUT };
		uint64_t t = now_ms();
		ssize_t w;
		if (t >= g->deadline)
			return fail(g, -ETIMEDOUT, "the guest agent's channel takes nothing");
		if (poll(&p, 1, (int)(g->deadline - t)) < 0 && errno != EINTR)
			return fail(g, -errno, "poll: %s", strerror(errno));
		w = write(g->fd, s, n);
		if (w < 0 && errno != EAGAIN && errno != EINTR)
			return fail(g, -errno, "guest agent channel: %s", strerror(errno));
		if (w > 0) {
			s += w;
			n -= (size_t)w;
		}
	}
	return 0;
}

/* Bytes until the deadline; 0 at EOF is an error (QEMU closed the chardev). */
static int ga_fill(struct ga *g)
{
	struct pollfd p = { .fd = g->fd, .events = POLLIN };
	uint64_t t = now_ms();
	ssize_t r;

	if (g->len >= sizeof(g->buf))
		return fail(g, -EMSGSIZE, "the guest agent sent a line over %u bytes",
			    REP_GA_LINE_MAX);
	if (t >= g->deadline)
		return fail(g, -ETIMEDOUT, "no answer from the guest agent (is one running "
			    "in the guest?)");
	if (poll(&p, 1, (int)(g->deadline - t)) < 0 && errno != EINTR)
		return fail(g, -errno, "poll: %s", strerror(errno));
	r = read(g->fd, g->buf + g->len, sizeof(g->buf) - g->len);
	if (r == 0)
		return fail(g, -ECONNRESET, "the guest agent's channel closed");
	if (r < 0 && errno != EAGAIN && errno != EINTR)
		return fail(g, -errno, "guest agent channel: %s", strerror(errno));
	if (r > 0)
		g->len += (size_t)r;
	return 0;
}

static void ga_drop(struct ga *g, size_t n)
{
	memmove(g->buf, g->buf + n, g->len - n);
	g->len -= n;
}

/* The next JSON line (0xFF bytes dropped), as an object. */
static int ga_line(struct ga *g, json_t **out)
{
	for (;;) {
		char *nl = memchr(g->buf, '\n', g->len);
		if (nl) {
			size_t n = (size_t)(nl - g->buf);
			char *p = g->buf;
			json_t *o;
			while (n && (unsigned char)*p == 0xFF) {
				p++;
				n--;
			}
			o = n ? json_loadb(p, n, 0, NULL) : NULL;
			ga_drop(g, (size_t)(nl - g->buf) + 1);
			if (o && json_is_object(o)) {
				*out = o;
				return 0;
			}
			json_decref(o); /* garbage, or the parser's complaint of our 0xFF */
			continue;
		}
		int rc = ga_fill(g);
		if (rc < 0)
			return rc;
	}
}

/* 0xFF + guest-sync-delimited: skip everything up to our id's return. */
static int ga_sync(struct ga *g)
{
	uint32_t id = 0;
	char cmd[128];
	int rc, n;

	while (!id && getrandom(&id, sizeof(id), 0) != sizeof(id))
		;
	id &= 0x7fffffff;
	n = snprintf(cmd, sizeof(cmd),
		     "\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":%" PRIu32
		     "}}\n", id);
	if ((rc = ga_write(g, cmd, (size_t)n)) < 0)
		return rc;
	for (;;) {
		json_t *o = NULL, *r;
		if ((rc = ga_line(g, &o)) < 0)
			return rc;
		r = json_object_get(o, "return");
		rc = json_is_integer(r) && json_integer_value(r) == (json_int_t)id;
		json_decref(o);
		if (rc)
			return 0;
	}
}

/* Run @cmd; its "return" into *@ret (new reference), or -EIO with its error. */
static int ga_cmd(struct ga *g, const char *cmd, json_t **ret)
{
	char line[128];
	int rc, n = snprintf(line, sizeof(line), "{\"execute\":\"%s\"}\n", cmd);

	if ((rc = ga_write(g, line, (size_t)n)) < 0)
		return rc;
	for (;;) {
		json_t *o = NULL, *e;
		if ((rc = ga_line(g, &o)) < 0)
			return rc;
		if ((e = json_object_get(o, "error"))) {
			const char *d = json_string_value(json_object_get(e, "desc"));
			rc = fail(g, -EIO, "%s: %s", cmd, d ? d : "refused");
			json_decref(o);
			return rc;
		}
		if (json_object_get(o, "return")) {
			*ret = json_incref(json_object_get(o, "return"));
			json_decref(o);
			return 0;
		}
		json_decref(o);
	}
}

int rep_ga_freeze(const char *sock, unsigned timeout_ms, char *err, size_t errlen)
{
	struct ga *g = calloc(1, sizeof(*g));
	json_t *r = NULL;
	int rc;

	if (!g)
		return -ENOMEM;
	g->fd = -1;
	g->err = err;
	g->errlen = errlen;
	rc = ga_open(g, sock, timeout_ms);
	if (rc == 0)
		rc = ga_sync(g);
	if (rc == 0)
		rc = ga_cmd(g, "guest-fsfreeze-freeze", &r);
	if (rc == 0)
		rc = json_is_integer(r) ? (int)json_integer_value(r)
					: fail(g, -EPROTO, "guest-fsfreeze-freeze: not a count");
	json_decref(r);
	if (g->fd >= 0)
		close(g->fd);
	free(g);
	return rc;
}

int rep_ga_thaw(const char *sock, unsigned timeout_ms, char *err, size_t errlen)
{
	struct ga *g = calloc(1, sizeof(*g));
	uint64_t until = now_ms() + timeout_ms;
	int rc = -ETIMEDOUT;

	if (!g)
		return -ENOMEM;
	g->err = err;
	g->errlen = errlen;
	/* each try on a fresh connection and sync: a stuck exchange is dropped */
	while (now_ms() < until) {
		json_t *r = NULL;
		bool thawed;
		g->fd = -1;
		g->len = 0;
		rc = ga_open(g, sock, (unsigned)(until - now_ms()));
		if (rc == 0)
			rc = ga_sync(g);
		if (rc == 0)
			rc = ga_cmd(g, "guest-fsfreeze-thaw", &r);
		json_decref(r);
		r = NULL;
		if (rc == 0)
			rc = ga_cmd(g, "guest-fsfreeze-status", &r);
		thawed = rc == 0 && json_is_string(r) && !strcmp(json_string_value(r), "thawed");
		json_decref(r);
		if (g->fd >= 0)
			close(g->fd);
		if (thawed) {
			rc = 0;
			break;
		}
		if (rc == 0)
			rc = fail(g, -EIO, "the guest agent does not say thawed");
		if (rc == -ENOENT || rc == -ECONNREFUSED)
			break; /* no channel: nothing was frozen through it */
		usleep(200000);
	}
	free(g);
	return rc;
}
