/*
 * test_rep_ga: the guest agent client against a fake agent on a real unix
 * socket (a thread speaking qemu-ga's protocol as measured in
 * replica/DESIGN.md section 6): the sync that skips a stale reply, freeze
 * and thaw, an agent that refuses, one that never answers, no channel.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>

#include "replica/rep_ga.h"

enum mode { AGENT_OK, AGENT_REFUSES, AGENT_SILENT, AGENT_THAW_LATE };

struct agent {
	char path[108];
	int lfd;
	enum mode mode;
	pthread_t t;
	bool frozen;
	int thaws;            /* thaw commands seen */
	int conns;
};

static void say(int fd, const char *s)
{
	ssize_t n = write(fd, s, strlen(s));
	(void)n;
}

/* One connection: lines in, replies out, until EOF. */
static void serve(struct agent *a, int fd)
{
	char buf[4096];
	size_t len = 0;
	ssize_t r;

	/* a stale reply of an exchange that timed out earlier */
	if (a->mode == AGENT_OK && a->conns == 1)
		say(fd, "{\"return\": {}}\n");
	while ((r = read(fd, buf + len, sizeof(buf) - len - 1)) > 0) {
		char *nl;
		len += (size_t)r;
		buf[len] = '\0';
		while ((nl = strchr(buf, '\n'))) {
			char *p = buf;
			json_t *o;
			const char *cmd;
			*nl = '\0';
			while ((unsigned char)*p == 0xFF) {
				/* qemu-ga complains of the 0xFF itself */
				say(fd, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON "
					"parse error, stray\"}}\n");
				p++;
			}
			o = json_loads(p, 0, NULL);
			cmd = json_string_value(json_object_get(o, "execute"));
			if (a->mode == AGENT_SILENT || !cmd) {
				/* nothing */
			} else if (!strcmp(cmd, "guest-sync-delimited")) {
				char out[64];
				snprintf(out, sizeof(out), "\xff{\"return\": %lld}\n",
					 (long long)json_integer_value(json_object_get(
						 json_object_get(o, "arguments"), "id")));
				say(fd, out);
			} else if (!strcmp(cmd, "guest-fsfreeze-freeze")) {
				if (a->mode == AGENT_REFUSES) {
					say(fd, "{\"error\": {\"class\": \"GenericError\", \"desc\": "
						"\"fsfreeze is disabled\"}}\n");
				} else {
					a->frozen = true;
					say(fd, "{\"return\": 2}\n");
				}
			} else if (!strcmp(cmd, "guest-fsfreeze-thaw")) {
				a->thaws++;
				/* the late agent thaws only on the second try */
				if (a->mode != AGENT_THAW_LATE || a->thaws > 1)
					a->frozen = false;
				say(fd, "{\"return\": 2}\n");
			} else if (!strcmp(cmd, "guest-fsfreeze-status")) {
				say(fd, a->frozen ? "{\"return\": \"frozen\"}\n"
						  : "{\"return\": \"thawed\"}\n");
			}
			json_decref(o);
			memmove(buf, nl + 1, len - (size_t)(nl + 1 - buf));
			len -= (size_t)(nl + 1 - buf);
			buf[len] = '\0';
		}
	}
}

static void *agent_run(void *arg)
{
	struct agent *a = arg;
	int fd;

	while ((fd = accept(a->lfd, NULL, NULL)) >= 0) {
		a->conns++;
		serve(a, fd);
		close(fd);
	}
	return NULL;
}

static struct agent *agent_start(enum mode m)
{
	struct agent *a = calloc(1, sizeof(*a));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	assert_non_null(a);
	a->mode = m;
	snprintf(a->path, sizeof(a->path), "/tmp/hca-ga-%d-%d.sock", getpid(), (int)m);
	unlink(a->path);
	strcpy(sa.sun_path, a->path);
	a->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(a->lfd >= 0);
	assert_int_equal(bind(a->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(a->lfd, 4), 0);
	assert_int_equal(pthread_create(&a->t, NULL, agent_run, a), 0);
	return a;
}

static void agent_stop(struct agent *a)
{
	shutdown(a->lfd, SHUT_RDWR);
	close(a->lfd);
	pthread_join(a->t, NULL);
	unlink(a->path);
	free(a);
}

static void test_freeze_thaw(void **state)
{
	struct agent *a = agent_start(AGENT_OK);
	char err[256] = "";

	(void)state;
	/* the stale reply before the sync is skipped */
	assert_int_equal(rep_ga_freeze(a->path, 2000, err, sizeof(err)), 2);
	assert_true(a->frozen);
	assert_int_equal(rep_ga_thaw(a->path, 2000, err, sizeof(err)), 0);
	assert_false(a->frozen);
	agent_stop(a);
}

static void test_thaw_retries_until_thawed(void **state)
{
	struct agent *a = agent_start(AGENT_THAW_LATE);
	char err[256] = "";

	(void)state;
	assert_int_equal(rep_ga_freeze(a->path, 2000, err, sizeof(err)), 2);
	assert_int_equal(rep_ga_thaw(a->path, 5000, err, sizeof(err)), 0);
	assert_false(a->frozen);
	assert_int_equal(a->thaws, 2);
	agent_stop(a);
}

static void test_refused(void **state)
{
	struct agent *a = agent_start(AGENT_REFUSES);
	char err[256] = "";

	(void)state;
	assert_int_equal(rep_ga_freeze(a->path, 2000, err, sizeof(err)), -EIO);
	assert_non_null(strstr(err, "fsfreeze is disabled"));
	agent_stop(a);
}

static void test_silent_times_out(void **state)
{
	struct agent *a = agent_start(AGENT_SILENT);
	char err[256] = "";

	(void)state;
	assert_int_equal(rep_ga_freeze(a->path, 300, err, sizeof(err)), -ETIMEDOUT);
	assert_non_null(strstr(err, "no answer"));
	assert_int_equal(rep_ga_thaw(a->path, 500, err, sizeof(err)), -ETIMEDOUT);
	agent_stop(a);
}

static void test_no_channel(void **state)
{
	char err[256] = "";

	(void)state;
	assert_int_equal(rep_ga_freeze("/tmp/hca-ga-none.sock", 300, err, sizeof(err)), -ENOENT);
	assert_int_equal(rep_ga_thaw("/tmp/hca-ga-none.sock", 300, err, sizeof(err)), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_freeze_thaw),
		cmocka_unit_test(test_thaw_retries_until_thawed),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_silent_times_out),
		cmocka_unit_test(test_no_channel),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
