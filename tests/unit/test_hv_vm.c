/*
 * test_hv_vm: a supervised VM (hypervisor/hv_vm.c) against the fake monitor
 * (util_fake_qmp.c) replaying transcripts recorded from QEMU 10 by
 * tests/unit/qmp/record.py (vm_*.qmp: recorded talking the way hv_vm does, so
 * any command hv_vm sends that QEMU was not sent fails the test).
 *
 * The VM is re-attached (hv_vm_attach), not launched: a stand-in process,
 * this binary re-executed with "-uuid UUID" on its command line, is what the
 * pidfile names, and the QMP socket is the fake's. Killing the stand-in is
 * QEMU ending. Callbacks append to one trace string, so one comparison checks
 * what happened and in which order.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <qb/qblog.h>
#include <qb/qbloop.h>

#include "hypervisor/hv.h"
#include "hypervisor/hv_priv.h"
#include "tests/unit/util_fake_qmp.h"

#define UUID "7c9e6679-7425-40de-944b-e07fc1f90ae7"
#define STAND_IN "--stand-in-qemu"
#define SAFETY_MS 10000u
#define QMP_TIMEOUT_MS 5000u
#define MAX_CALLS 8

#define ST(x) HCA__VM_STATE__VM_STATE_##x

struct t;

/* One hv_vm_qmp() and what its completion saw; @then runs after. */
struct call {
	struct t *t;
	const char *tag;
	int err;
	json_t *ret;
	char cls[64];
	char desc[160];
	void (*then)(struct t *t);
};

struct t {
	qb_loop_t *loop;
	struct fake_qmp *fake;
	char dir[64];
	struct hv_paths paths;
	pid_t stand_in;
	struct hv_vm *vm;
	char trace[4096];
	const char *until;
	bool safety_fired;
	struct call calls[MAX_CALLS];
	int n_calls;
	Hca__VmState state_at_resume;
	void (*event_hook)(struct t *t, const char *name, json_t *data);
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

static void on_state(struct hv_vm *vm, Hca__VmState st, const char *reason, void *opaque)
{
	trace(opaque, "state:%s", hv_state_name(st));
}

static void on_event(struct hv_vm *vm, const char *name, json_t *data, void *opaque)
{
	struct t *t = opaque;
	const char *status = json_string_value(json_object_get(data, "status"));

	if (!strcmp(name, "RESUME"))
		t->state_at_resume = hv_vm_state(vm);
	/* How many passes a migration takes varies from one recording to the next. */
	if (strcmp(name, "MIGRATION_PASS"))
		trace(t, "event:%s%s%s", name, status ? ":" : "", status ? status : "");
	if (t->event_hook)
		t->event_hook(t, name, data);
}

static const struct hv_vm_ops ops = {
	.state_changed = on_state,
	.event = on_event,
};

static void on_done(struct hv_vm *vm, int err, const char *msg, void *opaque)
{
	struct t *t = opaque;

	/* Which operation is told by the test's "until"; the trace keeps the order. */
	trace(t, "done:%s", errname(err));
}

static void on_reply(struct hv_vm *vm, int err, json_t *ret, const char *cls,
		     const char *desc, void *opaque)
{
	struct call *c = opaque;

	c->err = err;
	c->ret = json_incref(ret);
	snprintf(c->cls, sizeof(c->cls), "%s", cls ? cls : "");
	snprintf(c->desc, sizeof(c->desc), "%s", desc ? desc : "");
	trace(c->t, "qmp:%s:%s", c->tag, errname(err));
	if (c->then)
		c->then(c->t);
}

/* hv_vm_qmp(@name, @args), traced as "qmp:@tag:ERR"; @then runs after. */
static struct call *qmp(struct t *t, const char *tag, const char *name, json_t *args,
			unsigned timeout_ms, void (*then)(struct t *t))
{
	struct call *c;

	assert_true(t->n_calls < MAX_CALLS);
	c = &t->calls[t->n_calls++];
	c->t = t;
	c->tag = tag;
	c->then = then;
	assert_int_equal(hv_vm_qmp(t->vm, name, args, timeout_ms, on_reply, c), 0);
	return c;
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

static void run_until(struct t *t, const char *until)
{
	t->until = until;
	if (!strstr(t->trace, until))
		run_loop(t, SAFETY_MS);
	t->until = NULL;
	if (t->safety_fired)
		fail_msg("waited %u ms for \"%s\"; trace: %s", SAFETY_MS, until, t->trace);
}

/* Let whatever is still in flight (a state refresh) land. */
static void run_idle(struct t *t, unsigned ms)
{
	run_loop(t, ms);
}

/* The stand-in's argv is in /proc: exec is done and the arguments are set up
 * (which the kernel does after close-on-exec fds close, so a pipe would not
 * tell). */
static void stand_in_wait(pid_t pid)
{
	char path[64], buf[256];
	ssize_t n = 0;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	for (int i = 0; i < 5000; i++) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0 && memmem(buf, (size_t)n, STAND_IN, sizeof(STAND_IN)))
			return;
		usleep(1000);
	}
	fail_msg("stand-in pid %d never showed its command line", (int)pid);
}

/* This binary again, "-uuid UUID" in its argv: what hv_proc_find() looks for. */
static pid_t stand_in_start(const char *pidfile)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	pid_t pid;
	int fd;

	assert_true(n > 0);
	exe[n] = '\0';
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl(exe, exe, STAND_IN, "-uuid", UUID, (char *)NULL);
		_exit(127);
	}
	stand_in_wait(pid);
	fd = open(pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_true(dprintf(fd, "%d\n", (int)pid) > 0);
	close(fd);
	return pid;
}

/* QEMU ended (as it does after quit). */
static void stand_in_exit(struct t *t)
{
	kill(t->stand_in, SIGKILL);
}

/* Attach to the stand-in with @transcript (+ @tail) behind its QMP socket. */
static void attach_with(struct t *t, const char *transcript, const char *tail)
{
	struct hv_vm_cfg cfg = {
		.loop = t->loop,
		.qemu = "/nonexistent/qemu",
		.qmp_timeout_ms = QMP_TIMEOUT_MS,
		.paths = &t->paths,
	};

	t->fake = fake_qmp_start_recorded(transcript, tail, t->paths.qmp, sizeof(t->paths.qmp));
	assert_non_null(t->fake);
	t->stand_in = stand_in_start(t->paths.pidfile);
	t->vm = hv_vm_new("web1", UUID, &cfg, &ops, t);
	assert_non_null(t->vm);
	assert_int_equal(hv_vm_attach(t->vm, on_done, t), 0);
	run_until(t, "done:");
}

static void assert_fake_ok(struct t *t)
{
	char err[1024];
	int rc = fake_qmp_finish(t->fake, err, sizeof(err));

	t->fake = NULL;
	if (rc != 0)
		fail_msg("fake QMP peer: %s", err);
}

static void assert_trace(struct t *t, const char *want)
{
	if (strcmp(t->trace, want))
		fail_msg("trace\n  want: %s\n  got:  %s", want, t->trace);
}

/*
 * @... (NULL-terminated) appear in the trace in this order. For migrations,
 * where a new recording may interleave QEMU's events and replies otherwise
 * while what matters stays the same.
 */
static void assert_in_order(struct t *t, ...)
{
	const char *p = t->trace, *item, *at;
	va_list ap;

	va_start(ap, t);
	while ((item = va_arg(ap, const char *))) {
		at = strstr(p, item);
		if (!at)
			fail_msg("\"%s\" missing or out of order in: %s", item, t->trace);
		p = at + strlen(item);
	}
	va_end(ap);
}

static int setup(void **state)
{
	struct t *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	t->loop = qb_loop_create();
	assert_non_null(t->loop);
	snprintf(t->dir, sizeof(t->dir), "/tmp/hca-test-vm-XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	assert_int_equal(hv_paths_init(&t->paths, t->dir), 0);
	t->stand_in = -1;
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;
	char err[1024];

	hv_vm_free(t->vm);
	if (t->stand_in > 0) {
		kill(t->stand_in, SIGKILL);
		waitpid(t->stand_in, NULL, 0);
	}
	if (t->fake)
		fake_qmp_finish(t->fake, err, sizeof(err));
	for (int i = 0; i < t->n_calls; i++)
		json_decref(t->calls[i].ret);
	unlink(t->paths.pidfile);
	unlink(t->paths.console);
	rmdir(t->dir);
	qb_loop_destroy(t->loop);
	free(t);
	return 0;
}

/* ---- states: pure rules ---- */

static void state_names_and_running(void **state)
{
	static const Hca__VmState with_qemu[] = {
		ST(STARTING), ST(RUNNING), ST(PAUSED), ST(SHUTTING_DOWN),
		ST(INMIGRATE), ST(POSTMIGRATE), ST(PAUSED_MIGRATE),
	};

	assert_string_equal(hv_state_name(ST(INMIGRATE)), "inmigrate");
	assert_string_equal(hv_state_name(ST(POSTMIGRATE)), "postmigrate");
	assert_string_equal(hv_state_name(ST(PAUSED_MIGRATE)), "paused (migration)");
	assert_string_equal(hv_state_name((Hca__VmState)42), "unknown");
	assert_false(hv_state_running(ST(STOPPED)));
	assert_false(hv_state_running(ST(CRASHED)));
	for (size_t i = 0; i < sizeof(with_qemu) / sizeof(with_qemu[0]); i++)
		assert_true(hv_state_running(with_qemu[i]));
}

/* Every run state of qapi/run-state.json (QEMU 10), and one from the future. */
static void runstates_mapped(void **state)
{
	static const struct {
		const char *status;
		bool running;
		Hca__VmState cur;
		const char *mig;
		Hca__VmState want;
	} cases[] = {
		{ "running", true, ST(STARTING), "", ST(RUNNING) },
		{ "inmigrate", false, ST(STARTING), "", ST(INMIGRATE) },
		{ "postmigrate", false, ST(PAUSED_MIGRATE), "completed", ST(POSTMIGRATE) },
		{ "finish-migrate", false, ST(RUNNING), "active", ST(PAUSED_MIGRATE) },
		{ "finish-migrate", false, ST(RUNNING), "pre-switchover", ST(PAUSED_MIGRATE) },
		/* "completed" came first: QEMU is about to enter postmigrate */
		{ "finish-migrate", false, ST(PAUSED_MIGRATE), "completed", ST(POSTMIGRATE) },
		{ "colo", false, ST(RUNNING), "colo", ST(PAUSED_MIGRATE) },
		/* an incoming QEMU with -S, after its migration */
		{ "paused", false, ST(INMIGRATE), "completed", ST(PAUSED_MIGRATE) },
		{ "prelaunch", false, ST(INMIGRATE), "", ST(PAUSED_MIGRATE) },
		{ "paused", false, ST(PAUSED_MIGRATE), "completed", ST(PAUSED_MIGRATE) },
		{ "paused", false, ST(RUNNING), "", ST(PAUSED) },
		{ "prelaunch", false, ST(STARTING), "", ST(PAUSED) },
		{ "shutdown", false, ST(RUNNING), "", ST(SHUTTING_DOWN) },
		{ "suspended", false, ST(RUNNING), "", ST(PAUSED) },
		{ "io-error", false, ST(RUNNING), "", ST(PAUSED) },
		{ "watchdog", false, ST(RUNNING), "", ST(PAUSED) },
		{ "guest-panicked", false, ST(RUNNING), "", ST(PAUSED) },
		{ "internal-error", false, ST(RUNNING), "", ST(PAUSED) },
		{ "debug", false, ST(RUNNING), "", ST(PAUSED) },
		{ "save-vm", false, ST(RUNNING), "", ST(PAUSED) },
		{ "restore-vm", false, ST(STARTING), "", ST(PAUSED) },
		{ "from-qemu-99", true, ST(PAUSED), "", ST(RUNNING) },
		{ NULL, false, ST(STARTING), "", ST(PAUSED) },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		Hca__VmState got = hv_runstate_map(cases[i].status, cases[i].running,
						   cases[i].cur, cases[i].mig);
		if (got != cases[i].want)
			fail_msg("%s from %s (migration %s): %s, want %s",
				 cases[i].status ? cases[i].status : "(null)",
				 hv_state_name(cases[i].cur), cases[i].mig, hv_state_name(got),
				 hv_state_name(cases[i].want));
	}
}

/* ---- hv_vm_qmp ---- */

static void qmp_needs_a_connection(void **state)
{
	struct t *t = *state;
	struct hv_vm_cfg cfg = { .loop = t->loop, .qemu = "/q", .paths = &t->paths };

	t->vm = hv_vm_new("web1", UUID, &cfg, &ops, t);
	assert_non_null(t->vm);
	/* @args is stolen on failure too: LeakSanitizer would tell. */
	assert_int_equal(hv_vm_qmp(t->vm, "query-status", json_object(), 0, on_reply, NULL),
			 -ENOTCONN);
	assert_int_equal(hv_vm_qmp(t->vm, "query-status", json_array(), 0, on_reply, NULL),
			 -EINVAL);
	assert_int_equal(hv_vm_qmp(t->vm, NULL, NULL, 0, on_reply, NULL), -EINVAL);
	assert_string_equal(t->trace, "");
}

static void send_refused(struct t *t)
{
	qmp(t, "incoming", "migrate-incoming", json_pack("{s:s}", "uri", "unix:mig.sock"), 0,
	    NULL);
}

static void qmp_reply_and_error(void **state)
{
	struct t *t = *state;
	json_t *qemu;

	attach_with(t, "vm_qmp.qmp", NULL);
	qmp(t, "version", "query-version", NULL, 0, send_refused);
	assert_false(hv_vm_busy(t->vm));
	run_until(t, "qmp:incoming:");
	assert_trace(t, "state:starting state:running done:0 qmp:version:0 qmp:incoming:EIO");
	qemu = json_object_get(t->calls[0].ret, "qemu");
	assert_int_equal(json_integer_value(json_object_get(qemu, "major")), 10);
	assert_null(t->calls[1].ret);
	assert_string_equal(t->calls[1].cls, "GenericError");
	assert_string_equal(t->calls[1].desc, "'-incoming' was not specified on the command line");
	assert_int_equal(hv_vm_state(t->vm), ST(RUNNING));
	assert_fake_ok(t);
}

static void qmp_beside_an_operation(void **state)
{
	struct t *t = *state;

	attach_with(t, "vm_pause_qmp.qmp", NULL);
	assert_int_equal(hv_vm_pause(t->vm, on_done, t), 0);
	assert_true(hv_vm_busy(t->vm));
	/* Not an operation: no -EBUSY, and both go out before any reply. */
	qmp(t, "version", "query-version", NULL, 0, NULL);
	run_until(t, "qmp:version:");
	run_idle(t, 100);
	assert_trace(t, "state:starting state:running done:0 "
			"event:STOP state:paused done:0 qmp:version:0");
	/* The refresh after STOP found it paused: the operator's reason stays. */
	assert_int_equal(hv_vm_state(t->vm), ST(PAUSED));
	assert_string_equal(hv_vm_reason(t->vm), "paused by operator");
	assert_false(hv_vm_busy(t->vm));
	assert_fake_ok(t);
}

static const char hang_after_version[] = "> {\"execute\": \"query-version\"}\n! hang\n";

static void qmp_timeout(void **state)
{
	struct t *t = *state;

	attach_with(t, "query_status.qmp", hang_after_version);
	qmp(t, "version", "query-version", NULL, 100, NULL);
	run_until(t, "qmp:version:");
	assert_trace(t, "state:starting state:running done:0 qmp:version:ETIMEDOUT");
	assert_int_equal(hv_vm_state(t->vm), ST(RUNNING)); /* a slow QEMU is not a dead one */
	assert_fake_ok(t);
}

static void qmp_cancelled_by_free(void **state)
{
	struct t *t = *state;

	attach_with(t, "query_status.qmp", hang_after_version);
	qmp(t, "version", "query-version", NULL, 0, NULL);
	run_idle(t, 100);
	hv_vm_free(t->vm);
	t->vm = NULL;
	assert_trace(t, "state:starting state:running done:0 qmp:version:ECANCELED");
	assert_fake_ok(t);
}

/* ---- migration states, from recorded migrations ---- */

static void send_migrate_incoming(struct t *t)
{
	qmp(t, "incoming", "migrate-incoming", json_pack("{s:s}", "uri", "unix:mig.sock"), 0,
	    NULL);
}

static void events_on(struct t *t, void (*then)(struct t *t))
{
	qmp(t, "caps", "migrate-set-capabilities",
	    json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability", "events", "state", 1), 0,
	    then);
}

static void incoming_autostart(void **state)
{
	struct t *t = *state;

	attach_with(t, "vm_incoming.qmp", NULL);
	assert_int_equal(hv_vm_state(t->vm), ST(INMIGRATE));
	assert_true(hv_state_running(hv_vm_state(t->vm)));
	events_on(t, send_migrate_incoming);
	run_until(t, "event:MIGRATION:completed");
	run_idle(t, 100);
	/* The hook comes after hv_vm's own handling: RESUME already ran it. */
	assert_trace(t, "state:starting state:inmigrate done:0 qmp:caps:0 "
			"event:MIGRATION:setup qmp:incoming:0 event:MIGRATION:active "
			"state:running event:RESUME event:MIGRATION:completed");
	assert_int_equal(t->state_at_resume, ST(RUNNING));
	assert_int_equal(hv_vm_state(t->vm), ST(RUNNING));
	assert_fake_ok(t); /* ...which also saw the query-status after "completed" */
}

static void incoming_paused(void **state)
{
	struct t *t = *state;

	/* -S: QEMU ends the migration paused, without an event of its own. */
	attach_with(t, "vm_incoming_paused.qmp", NULL);
	events_on(t, send_migrate_incoming);
	run_until(t, "state:paused (migration)");
	assert_trace(t, "state:starting state:inmigrate done:0 qmp:caps:0 "
			"event:MIGRATION:setup qmp:incoming:0 event:MIGRATION:active "
			"event:MIGRATION:completed state:paused (migration)");
	/* Not the user's pause: only whoever drives the migration lifts it. */
	assert_int_equal(hv_vm_resume(t->vm, on_done, t), -EINVAL);
	assert_fake_ok(t);
}

static void continue_at_switchover(struct t *t, const char *name, json_t *data)
{
	const char *status = json_string_value(json_object_get(data, "status"));

	if (!strcmp(name, "MIGRATION") && !strcmp(status, "pre-switchover"))
		qmp(t, "continue", "migrate-continue", json_pack("{s:s}", "state", "pre-switchover"),
		    0, NULL);
	if (!strcmp(name, "SHUTDOWN"))
		stand_in_exit(t);
}

static void send_migrate(struct t *t)
{
	qmp(t, "migrate", "migrate", json_pack("{s:s}", "uri", "unix:mig.sock"), 0, NULL);
}

static void migrate_source(void **state)
{
	struct t *t = *state;

	attach_with(t, "vm_migrate_src.qmp", NULL);
	t->event_hook = continue_at_switchover;
	qmp(t, "caps", "migrate-set-capabilities",
	    json_pack("{s:[{s:s, s:b}, {s:s, s:b}]}", "capabilities", "capability", "events",
		      "state", 1, "capability", "pause-before-switchover", "state", 1),
	    0, send_migrate);
	run_until(t, "state:postmigrate");
	assert_in_order(t, "state:running done:0", "qmp:caps:0", "qmp:migrate:0", "event:STOP",
			"state:paused (migration)", "event:MIGRATION:completed",
			"state:postmigrate", NULL);
	assert_in_order(t, "event:MIGRATION:pre-switchover", "qmp:continue:0", NULL);
	/* Never the user's pause on the way, which STOP alone would suggest. */
	for (const char *p = t->trace; (p = strstr(p, "state:paused")); p++)
		assert_memory_equal(p, "state:paused (migration)", 24);
	/* Still a QEMU: nothing but stop applies to it. */
	assert_int_equal(hv_vm_pause(t->vm, on_done, t), -EINVAL);
	assert_int_equal(hv_vm_resume(t->vm, on_done, t), -EINVAL);
	assert_int_equal(hv_vm_shutdown(t->vm, 1, on_done, t), -EINVAL);
	t->trace[0] = '\0';
	assert_int_equal(hv_vm_stop(t->vm, false, on_done, t), 0); /* quit */
	run_until(t, "done:");
	assert_trace(t, "state:shutting-down event:SHUTDOWN state:stopped done:0");
	assert_string_equal(hv_vm_reason(t->vm), "shut down (host-qmp-quit)");
	assert_fake_ok(t);
}

static void attach_after_migration(void **state)
{
	struct t *t = *state;

	attach_with(t, "vm_attach_postmigrate.qmp", NULL);
	assert_trace(t, "state:starting state:postmigrate done:0");
	assert_true(hv_state_running(hv_vm_state(t->vm)));
	t->trace[0] = '\0';
	assert_int_equal(hv_vm_stop(t->vm, true, on_done, t), 0); /* SIGKILL, no QMP */
	run_until(t, "done:");
	assert_trace(t, "state:stopped done:0");
	assert_string_equal(hv_vm_reason(t->vm), "powered off (QEMU killed)");
	assert_fake_ok(t);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
		cmocka_unit_test(state_names_and_running),
		cmocka_unit_test(runstates_mapped),
		T(qmp_needs_a_connection),
		T(qmp_reply_and_error),
		T(qmp_beside_an_operation),
		T(qmp_timeout),
		T(qmp_cancelled_by_free),
		T(incoming_autostart),
		T(incoming_paused),
		T(migrate_source),
		T(attach_after_migration),
#undef T
	};

	if (argc > 1 && !strcmp(argv[1], STAND_IN)) {
		for (;;)
			pause();
	}
	/* Quiet by default: HCA_TEST_DEBUG=1 shows what hv_vm and hv_qmp log. */
	qb_log_init("test_hv_vm", LOG_USER, LOG_EMERG);
	qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
	qb_log_filter_ctl(QB_LOG_STDERR, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*",
			  getenv("HCA_TEST_DEBUG") ? LOG_DEBUG : LOG_CRIT);
	qb_log_ctl(QB_LOG_STDERR, QB_LOG_CONF_ENABLED, QB_TRUE);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}
