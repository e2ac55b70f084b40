/*
 * util_fake_qmp.c: the fake QEMU monitor (see util_fake_qmp.h).
 *
 * The transcript is parsed up front so a typo fails at start, not halfway.
 * The peer thread uses plain poll() on the client socket plus a stop pipe:
 * every wait is interruptible by fake_qmp_finish(), so a broken client makes
 * a test fail rather than hang, and the thread owns all its state until it
 * is joined (nothing is shared but the pipe).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "tests/unit/util_fake_qmp.h"

#define FAKE_MAX_TRANSCRIPT (4u << 20)
#define FAKE_MAX_LONGLINE (64u << 20)
#define FAKE_STOP 1 /* a wait was interrupted by fake_qmp_finish() */

enum item_kind {
	IT_SEND,
	IT_EXPECT,
	IT_SLEEP,
	IT_CLOSE,
	IT_HANG,
	IT_LONGLINE,
};

struct item {
	enum item_kind kind;
	int lineno;
	char *text;	   /* IT_SEND: as written */
	json_t *expect;	   /* IT_EXPECT: without "id" */
	unsigned long arg; /* IT_SLEEP: ms, IT_LONGLINE: bytes */
};

struct fake_qmp {
	char name[64];
	struct item *items;
	size_t n_items, pos; /* pos: next item to play */
	char dir[32];
	char path[108];
	int lfd, cfd;
	int stop_pipe[2];
	pthread_t thread;
	json_t *ids; /* ids of '>' commands not answered yet, oldest first */
	char rbuf[65536];
	size_t rlen;
	bool failed;
	char err[1024];
};

static void fail_at(struct fake_qmp *f, int lineno, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Only the first failure is kept: later ones are usually its echo. */
static void fail_at(struct fake_qmp *f, int lineno, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (f->failed)
		return;
	f->failed = true;
	n = snprintf(f->err, sizeof(f->err), "%s:%d: ", f->name, lineno);
	if (n < 0 || (size_t)n >= sizeof(f->err))
		return;
	va_start(ap, fmt);
	vsnprintf(f->err + n, sizeof(f->err) - (size_t)n, fmt, ap);
	va_end(ap);
}

/* ---- transcript parsing ---- */

static int parse_item(const char *line, struct item *it, char *why, size_t whylen)
{
	json_error_t jerr;
	char word[16];
	int n;

	if (line[0] == '<' && line[1] == ' ') {
		it->kind = IT_SEND;
		it->text = strdup(line + 2);
		return it->text ? 0 : -1;
	}
	if (line[0] == '>' && line[1] == ' ') {
		it->kind = IT_EXPECT;
		it->expect = json_loads(line + 2, 0, &jerr);
		if (!json_is_object(it->expect)) {
			snprintf(why, whylen, "not a JSON object: %.100s", jerr.text);
			return -1;
		}
		json_object_del(it->expect, "id");
		return 0;
	}
	n = sscanf(line, "! %15s %lu", word, &it->arg);
	if (n == 2 && strcmp(word, "sleep") == 0) {
		it->kind = IT_SLEEP;
		return 0;
	}
	if (n == 2 && strcmp(word, "longline") == 0 && it->arg >= 14 &&
	    it->arg <= FAKE_MAX_LONGLINE) {
		it->kind = IT_LONGLINE;
		return 0;
	}
	if (n == 1 && (strcmp(word, "close") == 0 || strcmp(word, "hang") == 0)) {
		it->kind = word[0] == 'c' ? IT_CLOSE : IT_HANG;
		return 0;
	}
	snprintf(why, whylen, "cannot parse \"%.60s\"", line);
	return -1;
}

static int parse_transcript(struct fake_qmp *f, const char *text)
{
	char *copy = strdup(text), *line, *next, *end;
	char why[160] = "out of memory";
	struct item *items;
	int lineno = 0, rc = -1;

	for (line = copy; line; line = next) {
		lineno++;
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		end = line + strlen(line);
		while (end > line && isspace((unsigned char)end[-1]))
			*--end = '\0';
		if (line[0] == '\0' || line[0] == '#')
			continue;
		items = realloc(f->items, (f->n_items + 1) * sizeof(*items));
		if (!items)
			goto out;
		f->items = items;
		memset(&items[f->n_items], 0, sizeof(*items));
		items[f->n_items].lineno = lineno;
		if (parse_item(line, &items[f->n_items++], why, sizeof(why)) < 0)
			goto out;
	}
	rc = copy ? 0 : -1;
out:
	if (rc < 0)
		fprintf(stderr, "fake_qmp: %s:%d: %s\n", f->name, lineno, why);
	free(copy);
	return rc;
}

/* ---- waiting and socket I/O, all interruptible by the stop pipe ---- */

enum { W_READY, W_STOP, W_TIMEOUT };

static int wait_fd(struct fake_qmp *f, int fd, short events, int timeout_ms)
{
	struct pollfd p[2] = {
		{ .fd = f->stop_pipe[0], .events = POLLIN },
		{ .fd = fd, .events = events },
	};
	int n;

	do {
		n = poll(p, fd >= 0 ? 2 : 1, timeout_ms);
	} while (n < 0 && errno == EINTR);
	/* The socket first: what the client did before the test ended (sent a
	 * command, hung up) must count, whatever poll() saw first. */
	if (n > 0 && fd >= 0 && p[1].revents)
		return W_READY;
	return n == 0 ? W_TIMEOUT : W_STOP;
}

static void drop_client(struct fake_qmp *f)
{
	if (f->cfd >= 0)
		close(f->cfd);
	f->cfd = -1;
	f->rlen = 0;
	json_array_clear(f->ids);
}

static int ensure_client(struct fake_qmp *f, const struct item *it)
{
	if (f->cfd >= 0)
		return 0;
	if (wait_fd(f, f->lfd, POLLIN, -1) != W_READY) {
		fail_at(f, it->lineno, "no client connected before the test ended");
		return -1;
	}
	f->cfd = accept4(f->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (f->cfd < 0) {
		fail_at(f, it->lineno, "accept: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* A client that went away misses the rest; a later '>' will notice. */
static int send_all(struct fake_qmp *f, const char *buf, size_t len)
{
	ssize_t n;

	while (len) {
		n = send(f->cfd, buf, len, MSG_NOSIGNAL);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
		} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (wait_fd(f, f->cfd, POLLOUT, -1) == W_STOP)
				return FAKE_STOP;
		} else {
			return 0;
		}
	}
	return 0;
}

/* 1 and *out: a whole command was buffered; 0: need more; -1: not JSON. */
static int take_command(struct fake_qmp *f, json_t **out, json_error_t *jerr)
{
	size_t skip = 0;

	while (skip < f->rlen && isspace((unsigned char)f->rbuf[skip]))
		skip++;
	memmove(f->rbuf, f->rbuf + skip, f->rlen - skip);
	f->rlen -= skip;
	*out = NULL;
	if (f->rlen == 0)
		return 0;
	*out = json_loadb(f->rbuf, f->rlen, JSON_DISABLE_EOF_CHECK, jerr);
	if (*out) {
		memmove(f->rbuf, f->rbuf + jerr->position, f->rlen - (size_t)jerr->position);
		f->rlen -= (size_t)jerr->position;
		return 1;
	}
	if (json_error_code(jerr) != json_error_premature_end_of_input)
		return -1;
	return f->rlen == sizeof(f->rbuf) ? -1 : 0;
}

/* 0: more bytes buffered; -1: the client closed; FAKE_STOP. */
static int read_more(struct fake_qmp *f)
{
	ssize_t n;

	for (;;) {
		if (wait_fd(f, f->cfd, POLLIN, -1) == W_STOP)
			return FAKE_STOP;
		n = read(f->cfd, f->rbuf + f->rlen, sizeof(f->rbuf) - f->rlen);
		if (n > 0) {
			f->rlen += (size_t)n;
			return 0;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			return -1;
	}
}

/* ---- playing items ---- */

static char *expect_text(const struct item *it)
{
	return json_dumps(it->expect, JSON_COMPACT);
}

static int play_expect(struct fake_qmp *f, const struct item *it)
{
	json_error_t jerr;
	json_t *got = NULL, *id;
	char *want = NULL, *seen = NULL;
	int rc = -1;

	if (ensure_client(f, it) < 0)
		goto out;
	while ((rc = take_command(f, &got, &jerr)) == 0) {
		if (read_more(f) != 0) {
			rc = -2; /* hung up, or the test ended waiting */
			break;
		}
	}
	want = expect_text(it);
	if (rc == -1)
		fail_at(f, it->lineno, "expected %s, got invalid JSON (%s)", want, jerr.text);
	if (rc == -2)
		fail_at(f, it->lineno, "expected %s, got nothing", want);
	if (rc < 0)
		goto out;
	id = json_object_get(got, "id");
	json_array_append(f->ids, id ? id : json_null());
	json_object_del(got, "id");
	seen = json_dumps(got, JSON_COMPACT);
	rc = json_equal(got, it->expect) ? 0 : -1;
	if (rc)
		fail_at(f, it->lineno, "expected %s, got %s", want, seen ? seen : "?");
	else
		f->pos++;
out:
	free(want);
	free(seen);
	json_decref(got);
	return rc < 0 ? -1 : 0;
}

/* A reply without an id gets the oldest unanswered command's id, as QEMU's would. */
static char *reply_text(struct fake_qmp *f, json_t *msg)
{
	json_t *id = json_array_get(f->ids, 0);

	if (json_is_object(msg) && !json_object_get(msg, "id") &&
	    (json_object_get(msg, "return") || json_object_get(msg, "error")) && id) {
		if (!json_is_null(id))
			json_object_set(msg, "id", id);
		json_array_remove(f->ids, 0);
	}
	return json_dumps(msg, 0); /* QEMU's ", " and ": " separators, one line */
}

static void append_send(struct fake_qmp *f, const struct item *it, FILE *out)
{
	json_t *msg = json_loads(it->text, 0, NULL);
	char *text = msg ? reply_text(f, msg) : NULL;

	/* Not JSON: sent as written, for the malformed-input tests. */
	fprintf(out, "%s\r\n", text ? text : it->text);
	free(text);
	json_decref(msg);
}

static int play_sends(struct fake_qmp *f)
{
	size_t end = f->pos, len = 0;
	char *buf = NULL;
	FILE *out;
	int rc = ensure_client(f, &f->items[f->pos]);

	if (rc)
		return rc;
	out = open_memstream(&buf, &len);
	if (!out) {
		fail_at(f, f->items[f->pos].lineno, "open_memstream failed");
		return -1;
	}
	for (; end < f->n_items && f->items[end].kind == IT_SEND; end++)
		append_send(f, &f->items[end], out);
	fclose(out);
	rc = send_all(f, buf, len);
	if (rc == 0)
		f->pos = end;
	free(buf);
	return rc;
}

static int play_longline(struct fake_qmp *f, const struct item *it)
{
	size_t nx = it->arg - 14; /* {"return": "..."} */
	char *xs = malloc(nx + 1);
	json_t *msg = NULL;
	char *text = NULL;
	int rc = ensure_client(f, it);

	if (rc)
		goto out;
	rc = -1;
	if (!xs) {
		fail_at(f, it->lineno, "out of memory");
		goto out;
	}
	memset(xs, 'x', nx);
	xs[nx] = '\0';
	msg = json_pack("{s:s}", "return", xs);
	text = msg ? reply_text(f, msg) : NULL;
	if (!text) {
		fail_at(f, it->lineno, "out of memory");
		rc = -1;
		goto out;
	}
	rc = send_all(f, text, strlen(text));
	if (rc == 0)
		rc = send_all(f, "\r\n", 2);
	if (rc == 0)
		f->pos++;
out:
	free(xs);
	free(text);
	json_decref(msg);
	return rc;
}

static int play_item(struct fake_qmp *f)
{
	const struct item *it = &f->items[f->pos];

	switch (it->kind) {
	case IT_SEND:
		return play_sends(f);
	case IT_EXPECT:
		return play_expect(f, it);
	case IT_LONGLINE:
		return play_longline(f, it);
	case IT_SLEEP:
		if (wait_fd(f, -1, 0, (int)it->arg) == W_STOP)
			return FAKE_STOP;
		break;
	case IT_CLOSE:
		if (ensure_client(f, it) < 0) /* a close first thing hangs up on accept */
			return -1;
		drop_client(f);
		break;
	case IT_HANG:
		f->pos++; /* reached is all a hang asks */
		wait_fd(f, -1, 0, -1);
		return FAKE_STOP;
	}
	f->pos++;
	return 0;
}

/* After the last item: the client may hang up, but must not send more. */
static void watch_for_extra(struct fake_qmp *f)
{
	int line = f->n_items ? f->items[f->n_items - 1].lineno : 0;
	json_error_t jerr;
	json_t *got = NULL;
	char *seen;
	int rc;

	while (f->cfd >= 0) {
		rc = take_command(f, &got, &jerr);
		if (rc == 0) {
			rc = read_more(f);
			if (rc == FAKE_STOP)
				return;
			if (rc < 0)
				drop_client(f); /* hung up: fine */
			continue;
		}
		seen = got ? json_dumps(got, JSON_COMPACT) : NULL;
		fail_at(f, line, "after the end of the transcript, got %s", seen ? seen : jerr.text);
		free(seen);
		json_decref(got);
		return;
	}
	wait_fd(f, -1, 0, -1);
}

static void *fake_main(void *arg)
{
	struct fake_qmp *f = arg;
	int rc = 0;

	while (rc == 0 && f->pos < f->n_items)
		rc = play_item(f);
	if (rc == 0)
		watch_for_extra(f);
	/* On a mismatch, hang up so the client notices now, not at a timeout. */
	drop_client(f);
	return NULL;
}

/* ---- setup and teardown ---- */

static int listen_socket(struct fake_qmp *f)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	snprintf(f->dir, sizeof(f->dir), "/tmp/fake-qmp-XXXXXX");
	if (!mkdtemp(f->dir)) {
		f->dir[0] = '\0';
		return -1;
	}
	snprintf(f->path, sizeof(f->path), "%s/qmp.sock", f->dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -1;
	return listen(f->lfd, 4);
}

static void fake_free(struct fake_qmp *f)
{
	size_t i;

	drop_client(f);
	if (f->lfd >= 0)
		close(f->lfd);
	for (i = 0; i < 2; i++)
		if (f->stop_pipe[i] >= 0)
			close(f->stop_pipe[i]);
	if (f->path[0])
		unlink(f->path);
	if (f->dir[0])
		rmdir(f->dir);
	for (i = 0; i < f->n_items; i++) {
		free(f->items[i].text);
		json_decref(f->items[i].expect);
	}
	free(f->items);
	json_decref(f->ids);
	free(f);
}

struct fake_qmp *fake_qmp_start_text(const char *name, const char *text, char *sock_path_out,
				     size_t len)
{
	struct fake_qmp *f = calloc(1, sizeof(*f));
	const char *why = "out of memory";
	bool sys = true; /* errno says more */

	if (!f)
		goto out;
	f->lfd = f->cfd = f->stop_pipe[0] = f->stop_pipe[1] = -1;
	snprintf(f->name, sizeof(f->name), "%s", name);
	f->ids = json_array();
	if (!f->ids)
		goto out;
	why = "bad transcript";
	sys = false;
	if (parse_transcript(f, text) < 0)
		goto out;
	why = "cannot listen on a socket";
	sys = true;
	if (listen_socket(f) < 0 || pipe2(f->stop_pipe, O_CLOEXEC) < 0)
		goto out;
	why = "socket path buffer too small";
	sys = false;
	if ((size_t)snprintf(sock_path_out, len, "%s", f->path) >= len)
		goto out;
	why = "cannot start the thread";
	if (pthread_create(&f->thread, NULL, fake_main, f) != 0)
		goto out;
	return f;
out:
	fprintf(stderr, "fake_qmp: %s: %s%s%s\n", name, why, sys ? ": " : "",
		sys ? strerror(errno) : "");
	if (f)
		fake_free(f);
	return NULL;
}

static char *read_file(const char *path)
{
	FILE *in = fopen(path, "r");
	char *buf = NULL;
	size_t n = 0;

	if (!in)
		goto out;
	buf = malloc(FAKE_MAX_TRANSCRIPT + 1);
	if (buf)
		n = fread(buf, 1, FAKE_MAX_TRANSCRIPT + 1, in);
	if (buf && (ferror(in) || n > FAKE_MAX_TRANSCRIPT)) {
		free(buf);
		buf = NULL;
	}
	if (buf)
		buf[n] = '\0';
out:
	if (in)
		fclose(in);
	return buf;
}

struct fake_qmp *fake_qmp_start(const char *transcript_path, char *sock_path_out, size_t len)
{
	const char *base = strrchr(transcript_path, '/');
	char *text = read_file(transcript_path);
	struct fake_qmp *f = NULL;

	if (!text)
		fprintf(stderr, "fake_qmp: cannot read %s: %s\n", transcript_path, strerror(errno));
	else
		f = fake_qmp_start_text(base ? base + 1 : transcript_path, text, sock_path_out, len);
	free(text);
	return f;
}

const char *fake_qmp_dir(void)
{
	static char dir[PATH_MAX + 32];
	char exe[PATH_MAX];
	char *slash;
	ssize_t n;

	if (getenv("HCA_QMP_DIR"))
		return getenv("HCA_QMP_DIR");
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	exe[n > 0 ? n : 0] = '\0';
	while ((slash = strrchr(exe, '/'))) {
		*slash = '\0';
		snprintf(dir, sizeof(dir), "%s/tests/unit/qmp/connect.qmp", exe);
		if (access(dir, R_OK) == 0) {
			snprintf(dir, sizeof(dir), "%s/tests/unit/qmp", exe);
			return dir;
		}
	}
	return "tests/unit/qmp";
}

struct fake_qmp *fake_qmp_start_recorded(const char *name, const char *tail,
					 char *sock_path_out, size_t len)
{
	char path[PATH_MAX + 64], label[64];
	char *head, *text = NULL;
	struct fake_qmp *f = NULL;

	snprintf(path, sizeof(path), "%s/%s", fake_qmp_dir(), name);
	head = read_file(path);
	if (!head) {
		fprintf(stderr, "fake_qmp: cannot read %s: %s\n", path, strerror(errno));
		return NULL;
	}
	if (asprintf(&text, "%s%s", head, tail ? tail : "") < 0)
		text = NULL;
	snprintf(label, sizeof(label), "%s+tail", name);
	if (text)
		f = fake_qmp_start_text(tail ? label : name, text, sock_path_out, len);
	free(head);
	free(text);
	return f;
}

int fake_qmp_finish(struct fake_qmp *f, char *err, size_t errlen)
{
	ssize_t n;
	int rc;

	if (!f) {
		snprintf(err, errlen, "no fake QMP peer");
		return -1;
	}
	n = write(f->stop_pipe[1], "x", 1);
	(void)n;
	pthread_join(f->thread, NULL);
	if (f->pos < f->n_items)
		fail_at(f, f->items[f->pos].lineno, "not reached before the test ended");
	rc = f->failed ? -1 : 0;
	snprintf(err, errlen, "%s", f->failed ? f->err : "");
	fake_free(f);
	return rc;
}
