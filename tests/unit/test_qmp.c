/*
 * test_qmp: the QMP client (hypervisor/hv_qmp.c) against the fake monitor
 * (util_fake_qmp.c). Transcripts recorded from QEMU 10 (tests/unit/qmp/, *.qmp)
 * cover what a healthy QEMU does; short ones written here, after the
 * recorded greeting, cover what it should never do (hang, garbage, huge
 * lines). Each test drives a real qb_loop until the callback trace contains
 * what it waits for, with a safety timer so a broken client fails the test
 * instead of hanging it. The trace records every callback in order, so one
 * string comparison checks both what happened and in which order.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <qb/qblog.h>
#include <qb/qbloop.h>

#include "hypervisor/hv_qmp.h"
#include "tests/unit/util_fake_qmp.h"

#define SAFETY_MS 10000u
#define DEFAULT_TIMEOUT_MS 5000u
#define MAX_SLOTS 8

struct t;

/* One command sent by a test and what its reply callback saw. */
struct slot {
	struct t *t;
	const char *tag;
	int calls;
	int err;
	json_t *ret;
	char cls[64];
	char desc[160];
	void (*hook)(struct slot *s);
};

struct t {
	qb_loop_t *loop;
	struct hv_qmp *q;
	struct fake_qmp *fake;
	char sock[108];
	unsigned timeout_ms;
	char trace[1024];
	const char *until;
	bool safety_fired;
	struct slot slots[MAX_SLOTS];
	int n_slots;
	int n_ready;
	json_t *event_data; /* of the last event */
	void (*ready_hook)(struct t *t);
	void (*event_hook)(struct t *t, const char *name);
	void (*closed_hook)(struct t *t, int err);
};

/* ---- harness ---- */

static const char *errname(int err)
{
	static char buf[16];

	switch (err) {
	case 0: return "0";
	case -EIO: return "EIO";
	case -ETIMEDOUT: return "ETIMEDOUT";
	case -ECONNRESET: return "ECONNRESET";
	case -ECANCELED: return "ECANCELED";
	case -ENOENT: return "ENOENT";
	case -ECONNREFUSED: return "ECONNREFUSED";
	case -EPROTO: return "EPROTO";
	}
	snprintf(buf, sizeof(buf), "%d", err);
	return buf;
}

static void trace(struct t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void trace(struct t *t, const char *fmt, ...)
{
	size_t n = strlen(t->trace);
	va_list ap;

	if (n && n < sizeof(t->trace) - 1)
		t->trace[n++] = ' ';
	va_start(ap, fmt);
	vsnprintf(t->trace + n, sizeof(t->trace) - n, fmt, ap);
	va_end(ap);
	if (t->until && strstr(t->trace, t->until))
		qb_loop_stop(t->loop);
}

static void on_ready(struct hv_qmp *q, void *opaque)
{
	struct t *t = opaque;

	t->n_ready++;
	trace(t, "ready");
	if (t->ready_hook)
		t->ready_hook(t);
}

static void on_event(struct hv_qmp *q, const char *name, json_t *data, void *opaque)
{
	struct t *t = opaque;

	json_decref(t->event_data);
	t->event_data = json_incref(data);
	trace(t, "event:%s", name);
	if (t->event_hook)
		t->event_hook(t, name);
}

static void on_closed(struct hv_qmp *q, int err, void *opaque)
{
	struct t *t = opaque;

	trace(t, "closed:%s", errname(err));
	if (t->closed_hook)
		t->closed_hook(t, err);
}

static const struct hv_qmp_ops ops = {
	.ready = on_ready,
	.event = on_event,
	.closed = on_closed,
};

static void on_reply(struct hv_qmp *q, int err, json_t *ret, const char *cls, const char *desc,
		     void *opaque)
{
	struct slot *s = opaque;

	s->calls++;
	s->err = err;
	json_decref(s->ret);
	s->ret = json_incref(ret);
	snprintf(s->cls, sizeof(s->cls), "%s", cls ? cls : "");
	snprintf(s->desc, sizeof(s->desc), "%s", desc ? desc : "");
	trace(s->t, "reply:%s:%s", s->tag, errname(err));
	if (s->hook)
		s->hook(s);
}

static struct slot *new_slot(struct t *t, const char *tag, void (*hook)(struct slot *s))
{
	struct slot *s;

	assert_true(t->n_slots < MAX_SLOTS);
	s = &t->slots[t->n_slots++];
	s->t = t;
	s->tag = tag;
	s->hook = hook;
	return s;
}

/* Send @name, its reply traced as "reply:@tag:ERR"; @hook runs after. */
static struct slot *cmd(struct t *t, const char *tag, const char *name, json_t *args,
			void (*hook)(struct slot *s))
{
	struct slot *s = new_slot(t, tag, hook);

	assert_int_equal(hv_qmp_command(t->q, name, args, on_reply, s), 0);
	return s;
}

static void safety_cb(void *data)
{
	struct t *t = data;

	t->safety_fired = true;
	qb_loop_stop(t->loop);
}

static void run_loop(struct t *t, unsigned ms)
{
	qb_loop_timer_handle th = 0;

	t->safety_fired = false;
	assert_int_equal(qb_loop_timer_add(t->loop, QB_LOOP_LOW, (uint64_t)ms * QB_TIME_NS_IN_MSEC,
					   t, safety_cb, &th), 0);
	qb_loop_run(t->loop);
	if (!t->safety_fired)
		qb_loop_timer_del(t->loop, th);
}

/* Run until @until shows up in the trace; fail on the safety timer. */
static void run_until(struct t *t, const char *until)
{
	t->until = until;
	if (!strstr(t->trace, until))
		run_loop(t, SAFETY_MS);
	t->until = NULL;
	if (t->safety_fired)
		fail_msg("waited %u ms for \"%s\"; trace: %s", SAFETY_MS, until, t->trace);
}

/* Let the loop idle so anything wrongly still scheduled would fire. */
static void run_idle(struct t *t, unsigned ms)
{
	run_loop(t, ms);
}

static char *slurp(const char *name)
{
	char path[PATH_MAX + 64];
	char *buf = calloc(1, 1 << 16);
	FILE *in;

	snprintf(path, sizeof(path), "%s/%s", fake_qmp_dir(), name);
	in = fopen(path, "r");
	if (!in)
		fail_msg("cannot open %s", path);
	assert_non_null(buf);
	assert_true(fread(buf, 1, (1 << 16) - 1, in) > 0);
	fclose(in);
	return buf;
}

static void connect_client(struct t *t)
{
	t->q = hv_qmp_new(t->loop, t->sock, &ops, t, t->timeout_ms);
	assert_non_null(t->q);
	assert_int_equal(hv_qmp_connect(t->q), 0);
}

/* Replay a transcript recorded from QEMU. */
static void start_recorded(struct t *t, const char *name)
{
	char path[PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/%s", fake_qmp_dir(), name);
	t->fake = fake_qmp_start(path, t->sock, sizeof(t->sock));
	assert_non_null(t->fake);
	connect_client(t);
}

/* The recorded greeting and negotiation, then @tail. */
static void start_negotiated(struct t *t, const char *tail)
{
	t->fake = fake_qmp_start_recorded("connect.qmp", tail, t->sock, sizeof(t->sock));
	assert_non_null(t->fake);
	connect_client(t);
}

static void start_raw(struct t *t, const char *text)
{
	t->fake = fake_qmp_start_text("raw", text, t->sock, sizeof(t->sock));
	assert_non_null(t->fake);
	connect_client(t);
}

/* The fake's verdict: whole transcript consumed, nothing unexpected. */
static void assert_fake_ok(struct t *t)
{
	char err[1024];
	int rc = fake_qmp_finish(t->fake, err, sizeof(err));

	t->fake = NULL;
	if (rc != 0)
		fail_msg("fake QMP peer: %s", err);
}

static int setup(void **state)
{
	struct t *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	t->loop = qb_loop_create();
	assert_non_null(t->loop);
	t->timeout_ms = DEFAULT_TIMEOUT_MS;
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;
	char err[1024];
	int i;

	hv_qmp_free(t->q);
	if (t->fake)
		fake_qmp_finish(t->fake, err, sizeof(err));
	for (i = 0; i < t->n_slots; i++)
		json_decref(t->slots[i].ret);
	json_decref(t->event_data);
	qb_loop_destroy(t->loop);
	free(t);
	return 0;
}

/* ---- hooks shared by tests ---- */

static void send_query_status(struct t *t)
{
	cmd(t, "status", "query-status", NULL, NULL);
}

static void free_client(struct t *t)
{
	hv_qmp_free(t->q);
	t->q = NULL;
}

static void free_in_reply(struct slot *s)
{
	free_client(s->t);
}

static void free_in_event(struct t *t, const char *name)
{
	free_client(t);
}

static void free_in_closed(struct t *t, int err)
{
	free_client(t);
}

/* ---- connection and negotiation ---- */

static void test_connect_negotiates_then_ready(void **state)
{
	struct t *t = *state;

	start_recorded(t, "connect.qmp");
	assert_false(hv_qmp_is_ready(t->q));
	run_until(t, "ready");
	assert_string_equal(t->trace, "ready");
	assert_true(hv_qmp_is_ready(t->q));
	assert_fake_ok(t);
}

static void test_command_before_ready_enotconn(void **state)
{
	struct t *t = *state;

	hv_qmp_free(NULL);
	start_recorded(t, "connect.qmp");
	assert_int_equal(hv_qmp_command(t->q, "query-status", json_object(), NULL, NULL),
			 -ENOTCONN);
	assert_int_equal(hv_qmp_connect(t->q), -EALREADY);
	run_until(t, "ready");
	assert_int_equal(hv_qmp_command(t->q, "query-status", json_array(), NULL, NULL), -EINVAL);
	assert_int_equal(hv_qmp_connect(t->q), -EALREADY);
	assert_fake_ok(t);
}

static void test_connect_missing_socket_enoent(void **state)
{
	struct t *t = *state;

	snprintf(t->sock, sizeof(t->sock), "/nonexistent-hca-test/qmp.sock");
	connect_client(t);
	assert_string_equal(t->trace, ""); /* reported from the loop, not the call */
	run_until(t, "closed:");
	assert_string_equal(t->trace, "closed:ENOENT");
}

static void test_connect_no_listener_econnrefused(void **state)
{
	struct t *t = *state;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[] = "/tmp/hca-test-qmp-XXXXXX";
	int fd;

	assert_non_null(mkdtemp(dir));
	snprintf(t->sock, sizeof(t->sock), "%s/qmp.sock", dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", t->sock);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0); /* never listens */
	connect_client(t);
	run_until(t, "closed:");
	close(fd);
	unlink(t->sock);
	rmdir(dir);
	assert_string_equal(t->trace, "closed:ECONNREFUSED");
}

static void test_hangup_before_greeting(void **state)
{
	struct t *t = *state;

	start_raw(t, "! close\n");
	run_until(t, "closed:");
	assert_string_equal(t->trace, "closed:ECONNRESET"); /* not a clean EOF */
	assert_fake_ok(t);
}

static void test_greeting_timeout(void **state)
{
	struct t *t = *state;

	t->timeout_ms = 200;
	start_raw(t, "! hang\n");
	run_until(t, "closed:");
	assert_string_equal(t->trace, "closed:ETIMEDOUT");
	assert_fake_ok(t);
}

static void test_negotiation_timeout(void **state)
{
	struct t *t = *state;
	char *head = slurp("connect.qmp");

	/* The greeting, then silence instead of the capabilities reply. */
	t->timeout_ms = 200;
	*strstr(head, "< {\"return\"") = '\0';
	strcat(head, "! hang\n");
	start_raw(t, head);
	free(head);
	run_until(t, "closed:");
	assert_string_equal(t->trace, "closed:ETIMEDOUT");
	assert_fake_ok(t);
}

static void reconnect_once(struct t *t, int err)
{
	if (t->n_ready == 1)
		assert_int_equal(hv_qmp_connect(t->q), 0);
}

static void query_on_second_ready(struct t *t)
{
	if (t->n_ready == 2)
		send_query_status(t);
}

static void test_reconnect_after_close(void **state)
{
	struct t *t = *state;
	char *again = slurp("connect.qmp");
	char tail[4096];

	snprintf(tail, sizeof(tail),
		 "! close\n%s> {\"execute\": \"query-status\"}\n"
		 "< {\"return\": {\"status\": \"running\", \"running\": true}}\n",
		 again);
	free(again);
	t->closed_hook = reconnect_once; /* from inside ops->closed */
	t->ready_hook = query_on_second_ready;
	start_negotiated(t, tail);
	run_until(t, "reply:status:");
	assert_string_equal(t->trace, "ready closed:0 ready reply:status:0");
	assert_fake_ok(t);
}

/* ---- replies ---- */

static void test_query_status_reply(void **state)
{
	struct t *t = *state;

	t->ready_hook = send_query_status;
	start_recorded(t, "query_status.qmp");
	run_until(t, "reply:status:");
	assert_string_equal(t->trace, "ready reply:status:0");
	assert_string_equal(json_string_value(json_object_get(t->slots[0].ret, "status")),
			    "running");
	assert_true(json_is_true(json_object_get(t->slots[0].ret, "running")));
	assert_fake_ok(t);
}

static void test_reply_matched_by_id(void **state)
{
	struct t *t = *state;

	t->ready_hook = send_query_status;
	start_negotiated(t, "> {\"execute\": \"query-status\"}\n"
			    "< {\"return\": {\"status\": \"paused\"}, \"id\": \"not-ours\"}\n"
			    "< {\"return\": {\"status\": \"running\", \"running\": true}}\n");
	run_until(t, "reply:status:");
	run_idle(t, 100);
	assert_string_equal(t->trace, "ready reply:status:0");
	assert_int_equal(t->slots[0].calls, 1);
	assert_string_equal(json_string_value(json_object_get(t->slots[0].ret, "status")),
			    "running");
	assert_fake_ok(t);
}

static void send_three(struct t *t)
{
	cmd(t, "name", "query-name", NULL, NULL);
	cmd(t, "status", "query-status", NULL, NULL);
	cmd(t, "kvm", "query-kvm", NULL, NULL);
}

static void test_pipelined_replies_in_order(void **state)
{
	struct t *t = *state;

	/* All three must arrive before any reply: a client that waits for
	 * each reply before sending the next would stall here. */
	t->ready_hook = send_three;
	start_negotiated(t, "> {\"execute\": \"query-name\"}\n"
			    "> {\"execute\": \"query-status\"}\n"
			    "> {\"execute\": \"query-kvm\"}\n"
			    "< {\"return\": {\"name\": \"vm1\"}}\n"
			    "< {\"return\": {\"status\": \"running\", \"running\": true}}\n"
			    "< {\"return\": {\"enabled\": false, \"present\": false}}\n");
	run_until(t, "reply:kvm:");
	assert_string_equal(t->trace, "ready reply:name:0 reply:status:0 reply:kvm:0");
	assert_string_equal(json_string_value(json_object_get(t->slots[0].ret, "name")), "vm1");
	assert_string_equal(json_string_value(json_object_get(t->slots[1].ret, "status")),
			    "running");
	assert_true(json_is_false(json_object_get(t->slots[2].ret, "enabled")));
	assert_fake_ok(t);
}

static void send_errors(struct t *t)
{
	cmd(t, "unknown", "no-such-command", NULL, NULL);
	cmd(t, "badarg", "query-status", json_pack("{s:i}", "bogus", 1), NULL);
}

static void test_error_reply_eio_with_class(void **state)
{
	struct t *t = *state;
	struct slot *s = t->slots;

	t->ready_hook = send_errors;
	start_recorded(t, "errors.qmp");
	run_until(t, "reply:badarg:");
	assert_string_equal(t->trace, "ready reply:unknown:EIO reply:badarg:EIO");
	assert_string_equal(s[0].cls, "CommandNotFound");
	assert_string_equal(s[0].desc, "The command no-such-command has not been found");
	assert_null(s[0].ret);
	assert_string_equal(s[1].cls, "GenericError");
	assert_string_equal(s[1].desc, "Parameter 'bogus' is unexpected");
	assert_fake_ok(t);
}

static void send_query_version(struct t *t)
{
	cmd(t, "version", "query-version", NULL, NULL);
}

static void test_query_version_reply(void **state)
{
	struct t *t = *state;
	json_t *qemu;

	t->ready_hook = send_query_version;
	start_recorded(t, "query_version.qmp");
	run_until(t, "reply:version:");
	assert_string_equal(t->trace, "ready reply:version:0");
	qemu = json_object_get(t->slots[0].ret, "qemu");
	assert_int_equal(json_integer_value(json_object_get(qemu, "major")), 10);
	assert_non_null(json_string_value(json_object_get(t->slots[0].ret, "package")));
	assert_fake_ok(t);
}

/* ---- events ---- */

static void send_cont(struct slot *s)
{
	cmd(s->t, "cont", "cont", NULL, NULL);
}

static void send_status_then_cont(struct slot *s)
{
	cmd(s->t, "status", "query-status", NULL, send_cont);
}

static void send_stop(struct t *t)
{
	cmd(t, "stop", "stop", NULL, send_status_then_cont);
}

static void test_lifecycle_events_delivered(void **state)
{
	struct t *t = *state;

	/* Each command is sent from the previous one's reply callback. */
	t->ready_hook = send_stop;
	start_recorded(t, "lifecycle.qmp");
	run_until(t, "reply:cont:");
	assert_string_equal(t->trace, "ready event:STOP reply:stop:0 reply:status:0 "
				      "event:RESUME reply:cont:0");
	assert_string_equal(json_string_value(json_object_get(t->slots[1].ret, "status")),
			    "paused");
	assert_fake_ok(t);
}

static void send_status_and_name(struct t *t)
{
	cmd(t, "status", "query-status", NULL, NULL);
	cmd(t, "name", "query-name", NULL, NULL);
}

static void test_events_interleaved_with_replies(void **state)
{
	struct t *t = *state;

	t->ready_hook = send_status_and_name;
	start_negotiated(t, "> {\"execute\": \"query-status\"}\n"
			    "> {\"execute\": \"query-name\"}\n"
			    "< {\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\n"
			    "< {\"return\": {\"status\": \"paused\", \"running\": false}}\n"
			    "< {\"timestamp\": {\"seconds\": 1, \"microseconds\": 3}, \"event\": \"RESUME\"}\n"
			    "< {\"return\": {}}\n"
			    "< {\"timestamp\": {\"seconds\": 1, \"microseconds\": 4}, \"event\": \"RTC_CHANGE\", \"data\": {\"offset\": 7}}\n");
	run_until(t, "event:RTC_CHANGE");
	assert_string_equal(t->trace, "ready event:STOP reply:status:0 event:RESUME reply:name:0 "
				      "event:RTC_CHANGE");
	assert_int_equal(json_integer_value(json_object_get(t->event_data, "offset")), 7);
	assert_fake_ok(t);
}

static void send_quit(struct slot *s)
{
	cmd(s->t, "quit", "quit", NULL, NULL);
}

static void send_powerdown(struct t *t)
{
	cmd(t, "powerdown", "system_powerdown", NULL, send_quit);
}

static void test_powerdown_quit_then_clean_close(void **state)
{
	struct t *t = *state;

	t->ready_hook = send_powerdown;
	start_recorded(t, "powerdown.qmp");
	run_until(t, "closed:");
	assert_string_equal(t->trace, "ready event:POWERDOWN reply:powerdown:0 "
				      "event:SHUTDOWN reply:quit:0 closed:0");
	assert_string_equal(json_string_value(json_object_get(t->event_data, "reason")),
			    "host-qmp-quit");
	assert_false(hv_qmp_is_ready(t->q));
	assert_fake_ok(t);
}

/* ---- timeouts and failures ---- */

static void test_command_timeout_on_hang(void **state)
{
	struct t *t = *state;

	t->timeout_ms = 200;
	t->ready_hook = send_query_status;
	start_negotiated(t, "> {\"execute\": \"query-status\"}\n! hang\n");
	run_until(t, "reply:status:");
	assert_string_equal(t->trace, "ready reply:status:ETIMEDOUT");
	assert_true(hv_qmp_is_ready(t->q)); /* a slow command does not end the connection */
	assert_fake_ok(t);
}

static void send_name_after_timeout(struct slot *s)
{
	struct slot *name = new_slot(s->t, "name", NULL);

	/* Longer than the fake's sleep, or it would time out too. */
	assert_int_equal(hv_qmp_command_timeout(s->t->q, "query-name", NULL, 5000, on_reply, name),
			 0);
}

static void send_status_timing_out(struct t *t)
{
	cmd(t, "status", "query-status", NULL, send_name_after_timeout);
}

static void test_late_reply_discarded(void **state)
{
	struct t *t = *state;

	/* The status reply comes 600 ms late, carrying query-status' id: it
	 * must be dropped, not handed to query-name sent meanwhile. */
	t->timeout_ms = 200;
	t->ready_hook = send_status_timing_out;
	start_negotiated(t, "> {\"execute\": \"query-status\"}\n"
			    "! sleep 600\n"
			    "< {\"return\": {\"status\": \"running\", \"running\": true}}\n"
			    "> {\"execute\": \"query-name\"}\n"
			    "< {\"return\": {\"name\": \"vm1\"}}\n");
	run_until(t, "reply:name:");
	assert_string_equal(t->trace, "ready reply:status:ETIMEDOUT reply:name:0");
	assert_int_equal(t->slots[0].calls, 1);
	assert_string_equal(json_string_value(json_object_get(t->slots[1].ret, "name")), "vm1");
	assert_fake_ok(t);
}

static void test_server_close_resets_pending(void **state)
{
	struct t *t = *state;

	t->ready_hook = send_query_status;
	start_negotiated(t, "> {\"execute\": \"query-status\"}\n! close\n");
	run_until(t, "closed:");
	assert_string_equal(t->trace, "ready reply:status:ECONNRESET closed:0");
	assert_false(hv_qmp_is_ready(t->q));
	assert_fake_ok(t);
}

/* ! longline's size that makes the reply to hca-2, id included, @len bytes. */
static unsigned longline_for(unsigned len)
{
	return len - (unsigned)strlen(", \"id\": \"hca-2\"");
}

static void test_overlong_line_eproto(void **state)
{
	struct t *t = *state;
	char tail[128];

	/* One byte over the limit, arriving over many reads. */
	snprintf(tail, sizeof(tail), "> {\"execute\": \"query-status\"}\n! longline %u\n",
		 longline_for(HV_QMP_MAX_LINE + 1));
	t->ready_hook = send_query_status;
	start_negotiated(t, tail);
	run_until(t, "closed:");
	assert_string_equal(t->trace, "ready reply:status:ECONNRESET closed:EPROTO");
	assert_fake_ok(t);
}

static void test_line_at_limit_accepted(void **state)
{
	struct t *t = *state;
	char tail[128];

	/* Exactly HV_QMP_MAX_LINE bytes, arriving over many reads. */
	snprintf(tail, sizeof(tail), "> {\"execute\": \"query-status\"}\n! longline %u\n",
		 longline_for(HV_QMP_MAX_LINE));
	t->ready_hook = send_query_status;
	start_negotiated(t, tail);
	run_until(t, "reply:status:");
	assert_string_equal(t->trace, "ready reply:status:0");
	/* less {"return": ""} */
	assert_int_equal(json_string_length(t->slots[0].ret), longline_for(HV_QMP_MAX_LINE) - 14);
	assert_fake_ok(t);
}

static void test_malformed_json_eproto(void **state)
{
	struct t *t = *state;

	start_negotiated(t, "< {\"event\": \"STOP\", \"timestamp\": \n");
	run_until(t, "closed:");
	assert_string_equal(t->trace, "ready closed:EPROTO");
	assert_fake_ok(t);
}

/* ---- reentrancy: freeing and disconnecting from callbacks ---- */

static void send_status_freeing(struct t *t)
{
	cmd(t, "status", "query-status", NULL, free_in_reply);
	cmd(t, "name", "query-name", NULL, NULL);
}

static void test_free_inside_reply_callback(void **state)
{
	struct t *t = *state;

	/* Reply, event and reply arrive in one write; after the free nothing
	 * more may be delivered (ASan watches for use after free). */
	t->ready_hook = send_status_freeing;
	start_negotiated(t, "> {\"execute\": \"query-status\"}\n"
			    "> {\"execute\": \"query-name\"}\n"
			    "< {\"return\": {\"status\": \"running\", \"running\": true}}\n"
			    "< {\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\n"
			    "< {\"return\": {}}\n");
	run_until(t, "reply:name:");
	run_idle(t, 100);
	assert_string_equal(t->trace, "ready reply:status:0 reply:name:ECANCELED");
	assert_null(t->q);
	assert_fake_ok(t);
}

static void test_free_inside_event_callback(void **state)
{
	struct t *t = *state;

	t->ready_hook = send_query_status;
	t->event_hook = free_in_event;
	start_negotiated(t, "> {\"execute\": \"query-status\"}\n"
			    "< {\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\n"
			    "< {\"return\": {\"status\": \"paused\", \"running\": false}}\n");
	run_until(t, "reply:status:");
	run_idle(t, 100);
	assert_string_equal(t->trace, "ready event:STOP reply:status:ECANCELED");
	assert_fake_ok(t);
}

static void test_free_inside_closed_callback(void **state)
{
	struct t *t = *state;

	t->closed_hook = free_in_closed;
	start_negotiated(t, "! close\n");
	run_until(t, "closed:");
	run_idle(t, 100);
	assert_string_equal(t->trace, "ready closed:0");
	assert_fake_ok(t);
}

static void send_then_disconnect(struct t *t)
{
	send_query_status(t);
	hv_qmp_disconnect(t->q);
	assert_false(hv_qmp_is_ready(t->q));
	assert_int_equal(hv_qmp_command(t->q, "query-status", NULL, NULL, NULL), -ENOTCONN);
}

static void test_disconnect_cancels_pending(void **state)
{
	struct t *t = *state;

	/* The command never reaches the wire: cancelled before the loop writes. */
	t->ready_hook = send_then_disconnect;
	start_negotiated(t, "! hang\n");
	run_until(t, "reply:status:");
	run_idle(t, 100);
	assert_string_equal(t->trace, "ready reply:status:ECANCELED"); /* no closed */
	assert_fake_ok(t);
}

/* ---- the fake itself must catch a wrong client ---- */

static void send_cont_instead(struct t *t)
{
	cmd(t, "cont", "cont", NULL, NULL);
}

static void test_fake_rejects_unexpected_command(void **state)
{
	struct t *t = *state;
	char err[1024];

	t->ready_hook = send_cont_instead;
	start_negotiated(t, "> {\"execute\": \"stop\"}\n< {\"return\": {}}\n");
	run_until(t, "closed:"); /* the fake hangs up on a mismatch */
	assert_int_equal(fake_qmp_finish(t->fake, err, sizeof(err)), -1);
	t->fake = NULL;
	assert_non_null(strstr(err, "expected {\"execute\":\"stop\"}"));
	assert_non_null(strstr(err, "got {\"execute\":\"cont\"}"));
	assert_non_null(strstr(err, ":8:")); /* the line of the '>' in the text */
}

static void test_fake_rejects_extra_command(void **state)
{
	struct t *t = *state;
	char err[1024];

	t->ready_hook = send_query_status;
	start_recorded(t, "connect.qmp");
	run_until(t, "closed:");
	assert_int_equal(fake_qmp_finish(t->fake, err, sizeof(err)), -1);
	t->fake = NULL;
	assert_non_null(strstr(err, "after the end of the transcript"));
	assert_non_null(strstr(err, "query-status"));
}

static void test_fake_rejects_bad_transcript(void **state)
{
	struct t *t = *state;

	assert_null(fake_qmp_start_text("bad", "< {}\n? what\n", t->sock, sizeof(t->sock)));
	assert_null(fake_qmp_start_text("bad", "> not json\n", t->sock, sizeof(t->sock)));
	assert_null(fake_qmp_start_text("bad", "! sleep\n", t->sock, sizeof(t->sock)));
}

static void test_fake_rejects_missing_command(void **state)
{
	struct t *t = *state;
	char err[1024];

	start_recorded(t, "query_status.qmp"); /* the client never sends query-status */
	run_until(t, "ready");
	run_idle(t, 100);
	assert_int_equal(fake_qmp_finish(t->fake, err, sizeof(err)), -1);
	t->fake = NULL;
	assert_non_null(strstr(err, "query_status.qmp:"));
	assert_non_null(strstr(err, "got nothing"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
		T(test_connect_negotiates_then_ready),
		T(test_command_before_ready_enotconn),
		T(test_connect_missing_socket_enoent),
		T(test_connect_no_listener_econnrefused),
		T(test_hangup_before_greeting),
		T(test_greeting_timeout),
		T(test_negotiation_timeout),
		T(test_reconnect_after_close),
		T(test_query_status_reply),
		T(test_reply_matched_by_id),
		T(test_pipelined_replies_in_order),
		T(test_error_reply_eio_with_class),
		T(test_query_version_reply),
		T(test_lifecycle_events_delivered),
		T(test_events_interleaved_with_replies),
		T(test_powerdown_quit_then_clean_close),
		T(test_command_timeout_on_hang),
		T(test_late_reply_discarded),
		T(test_server_close_resets_pending),
		T(test_overlong_line_eproto),
		T(test_line_at_limit_accepted),
		T(test_malformed_json_eproto),
		T(test_free_inside_reply_callback),
		T(test_free_inside_event_callback),
		T(test_free_inside_closed_callback),
		T(test_disconnect_cancels_pending),
		T(test_fake_rejects_unexpected_command),
		T(test_fake_rejects_extra_command),
		T(test_fake_rejects_missing_command),
		T(test_fake_rejects_bad_transcript),
#undef T
	};

	/* Quiet by default: many tests provoke errors on purpose.
	 * HCA_TEST_DEBUG=1 shows everything the client logs. */
	qb_log_init("test_qmp", LOG_USER, LOG_EMERG);
	qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
	qb_log_filter_ctl(QB_LOG_STDERR, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*",
			  getenv("HCA_TEST_DEBUG") ? LOG_DEBUG : LOG_CRIT);
	qb_log_ctl(QB_LOG_STDERR, QB_LOG_CONF_ENABLED, QB_TRUE);
	return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}
