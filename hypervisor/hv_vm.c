/*
 * hv_vm: supervise one QEMU process through QMP, on the caller's loop.
 *
 * QEMU is launched with -daemonize, so it runs in its own session, is
 * re-parented away from the agent and outlives it. That QEMU ended is learnt
 * from a pidfd (which also works for a process that is not our child and
 * fires even while it lingers as a zombie), never from kill(pid, 0). Every
 * operation is asynchronous; one runs at a time per VM, except that a stop
 * may interrupt a shutdown. Commands from callers above (hv_vm_qmp) are not
 * operations and go out beside them.
 *
 * The state follows QEMU's run state: query-status when QMP connects and
 * after the events that change it in ways an event alone does not tell
 * (STOP: paused by whom?; MIGRATION ending), mapped by hv_runstate_map().
 */
#include "hypervisor/hv.h"
#include "hypervisor/hv_launch.h"
#include "hypervisor/hv_priv.h"
#include "hypervisor/hv_qmp.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <qb/qblog.h>

enum op {
	OP_NONE,
	OP_START,
	OP_ATTACH,
	OP_PAUSE,
	OP_RESUME,
	OP_SHUTDOWN,
	OP_STOP,
};

static const char *const op_names[] = {
	[OP_NONE] = "none", [OP_START] = "start", [OP_ATTACH] = "attach",
	[OP_PAUSE] = "pause", [OP_RESUME] = "resume",
	[OP_SHUTDOWN] = "shutdown", [OP_STOP] = "stop",
};

#define START_TIMEOUT_MS 60000u
#define STOP_GRACE_MS 10000u
#define RECONNECT_MS 250u

struct hv_vm {
	char name[HV_NAME_MAX + 1];
	char uuid[40];
	qb_loop_t *loop;
	char qemu[256];
	unsigned qmp_timeout_ms;
	struct hv_paths paths;
	const struct hv_vm_ops *ops;
	void *opaque;

	Hca__VmState state;
	char reason[256];
	pid_t pid;              /* the QEMU daemon, 0 when none */
	int pidfd;              /* readable once QEMU has ended */
	uint64_t started_at;
	struct hv_qmp *qmp;
	char shutdown_reason[64]; /* from the SHUTDOWN event, "" if none seen */
	char mig_status[32];    /* of the last MIGRATION event, "" if none seen */
	bool killed;            /* we sent SIGKILL */

	struct hv_launch *launch;
	const char *cmd;        /* QMP command of the operation under way */

	enum op op;
	hv_done_fn done;
	void *done_opaque;
	qb_loop_timer_handle op_timer;
	qb_loop_timer_handle reconnect_timer;
};

static void set_state(struct hv_vm *vm, Hca__VmState st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_state(struct hv_vm *vm, Hca__VmState st, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(vm->reason, sizeof(vm->reason), fmt, ap);
	va_end(ap);
	if (vm->state != st)
		qb_log(LOG_INFO, "vm %s: %s -> %s (%s)", vm->name,
		       hv_state_name(vm->state), hv_state_name(st), vm->reason);
	vm->state = st;
	if (vm->ops && vm->ops->state_changed)
		vm->ops->state_changed(vm, st, vm->reason, vm->opaque);
}

static void timer_del(struct hv_vm *vm, qb_loop_timer_handle *t)
{
	if (*t) {
		qb_loop_timer_del(vm->loop, *t);
		*t = 0;
	}
}

/* End the operation under way; the callback may start the next one. */
static void op_finish(struct hv_vm *vm, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void op_finish(struct hv_vm *vm, int err, const char *fmt, ...)
{
	hv_done_fn done = vm->done;
	void *opaque = vm->done_opaque;
	char msg[512] = "";
	va_list ap;

	if (vm->op == OP_NONE)
		return;
	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
	}
	if (err)
		qb_log(LOG_ERR, "%s", msg);
	timer_del(vm, &vm->op_timer);
	vm->op = OP_NONE;
	vm->done = NULL;
	vm->done_opaque = NULL;
	if (done)
		done(vm, err, msg, opaque);
}

static int op_begin(struct hv_vm *vm, enum op op, hv_done_fn done, void *opaque)
{
	if (vm->op != OP_NONE) {
		qb_log(LOG_WARNING, "vm %s: %s refused, %s under way", vm->name,
		       op_names[op], op_names[vm->op]);
		return -EBUSY;
	}
	vm->op = op;
	vm->done = done;
	vm->done_opaque = opaque;
	return 0;
}

static void op_timeout(void *data);

static void op_arm(struct hv_vm *vm, unsigned ms)
{
	qb_loop_timer_add(vm->loop, QB_LOOP_HIGH, (uint64_t)ms * QB_TIME_NS_IN_MSEC,
			  vm, op_timeout, &vm->op_timer);
}

/* ---- QEMU ended ---- */

static void runtime_files_remove(struct hv_vm *vm)
{
	unlink(vm->paths.pidfile);
	unlink(vm->paths.qmp);
	unlink(vm->paths.console);
}

static void detach_process(struct hv_vm *vm)
{
	struct hv_qmp *q = vm->qmp;

	timer_del(vm, &vm->reconnect_timer);
	/* Cleared first: pending commands complete from inside hv_qmp_free(),
	 * and their callbacks must find no connection to send on. */
	vm->qmp = NULL;
	hv_qmp_free(q);
	if (vm->pidfd >= 0) {
		qb_loop_poll_del(vm->loop, vm->pidfd);
		close(vm->pidfd);
		vm->pidfd = -1;
	}
	vm->pid = 0;
	vm->started_at = 0;
}

static void process_ended(struct hv_vm *vm)
{
	enum op op = vm->op;

	qb_log(LOG_INFO, "vm %s: QEMU pid %d ended", vm->name, (int)vm->pid);
	detach_process(vm);
	runtime_files_remove(vm);
	if (vm->killed)
		set_state(vm, HCA__VM_STATE__VM_STATE_STOPPED, "powered off (QEMU killed)");
	else if (vm->shutdown_reason[0])
		set_state(vm, HCA__VM_STATE__VM_STATE_STOPPED, "shut down (%s)", vm->shutdown_reason);
	else
		set_state(vm, HCA__VM_STATE__VM_STATE_CRASHED,
			  "QEMU exited unexpectedly, see %s", vm->paths.qemu_log);
	if (op == OP_SHUTDOWN || op == OP_STOP)
		op_finish(vm, 0, NULL);
	else
		op_finish(vm, -ESRCH, "vm %s: QEMU ended during %s (%s)", vm->name,
			  op_names[op], vm->reason);
}

static int on_pidfd(int fd, int revents, void *data)
{
	process_ended(data);
	return 0;
}

/* ---- QMP ---- */

/* QEMU's run state from a query-status reply; nothing reported if unchanged. */
static void status_apply(struct hv_vm *vm, json_t *ret)
{
	const char *st = json_string_value(json_object_get(ret, "status"));
	bool running = json_is_true(json_object_get(ret, "running"));
	Hca__VmState s = hv_runstate_map(st, running, vm->state, vm->mig_status);

	/* An ACPI shutdown under way is ours to report: QEMU runs on until the
	 * guest obeys or the operation times out. */
	if (vm->op == OP_SHUTDOWN && s == HCA__VM_STATE__VM_STATE_RUNNING)
		return;
	if (s != vm->state)
		set_state(vm, s, "%s (QEMU status %s)", hv_runstate_reason(s), st ? st : "?");
}

static void on_ready_status(struct hv_qmp *q, int err, json_t *ret, const char *cls,
			    const char *desc, void *data)
{
	struct hv_vm *vm = data;
	bool starting = vm->op == OP_START || vm->op == OP_ATTACH;

	if (err) {
		if (starting)
			op_finish(vm, err, "vm %s: query-status failed: %s", vm->name,
				  err == -EIO ? desc : strerror(-err));
		else
			qb_log(LOG_WARNING, "vm %s: query-status after reconnecting failed: %s",
			       vm->name, err == -EIO ? desc : strerror(-err));
		return;
	}
	status_apply(vm, ret);
	if (starting)
		op_finish(vm, 0, NULL);
}

static void on_qmp_ready(struct hv_qmp *q, void *data)
{
	struct hv_vm *vm = data;
	int rc = hv_qmp_command(q, "query-status", NULL, on_ready_status, vm);

	if (rc < 0 && (vm->op == OP_START || vm->op == OP_ATTACH))
		op_finish(vm, rc, "vm %s: query-status: %s", vm->name, strerror(-rc));
}

static void on_refresh_status(struct hv_qmp *q, int err, json_t *ret, const char *cls,
			      const char *desc, void *data)
{
	struct hv_vm *vm = data;

	/* The connection ending says more than this, and says it elsewhere. */
	if (err)
		qb_log(err == -EIO || err == -ETIMEDOUT ? LOG_WARNING : LOG_DEBUG,
		       "vm %s: query-status failed: %s", vm->name,
		       err == -EIO ? desc : strerror(-err));
	else
		status_apply(vm, ret);
}

/* Ask QEMU for its run state again. One per triggering event, never merged:
 * the commands a VM sends must not depend on how replies were batched, or
 * the recorded QMP transcripts could not replay. */
static void status_refresh(struct hv_vm *vm)
{
	int rc;

	if (!hv_qmp_is_ready(vm->qmp))
		return; /* an event while negotiating: the query on ready covers it */
	rc = hv_qmp_command(vm->qmp, "query-status", NULL, on_refresh_status, vm);
	if (rc < 0)
		qb_log(LOG_WARNING, "vm %s: cannot refresh the run state: %s", vm->name,
		       strerror(-rc));
}

/* RESUME leaves any pause, the user's or a migration's; it may also end
 * an incoming migration (autostart) or revive a migrated source. */
static bool resumable(Hca__VmState s)
{
	return s == HCA__VM_STATE__VM_STATE_PAUSED ||
	       s == HCA__VM_STATE__VM_STATE_PAUSED_MIGRATE ||
	       s == HCA__VM_STATE__VM_STATE_INMIGRATE ||
	       s == HCA__VM_STATE__VM_STATE_POSTMIGRATE;
}

static void on_migration_event(struct hv_vm *vm, json_t *data)
{
	const char *st = json_string_value(json_object_get(data, "status"));

	snprintf(vm->mig_status, sizeof(vm->mig_status), "%s", st ? st : "");
	/* Its end moves QEMU to postmigrate, running or paused without an
	 * event of its own (an incoming QEMU with -S, a paused source). */
	if (st && (!strcmp(st, "completed") || !strcmp(st, "failed") ||
		   !strcmp(st, "cancelled")))
		status_refresh(vm);
}

static void event_apply(struct hv_vm *vm, const char *name, json_t *data)
{
	const char *why;

	if (!strcmp(name, "SHUTDOWN")) {
		why = json_string_value(json_object_get(data, "reason"));
		snprintf(vm->shutdown_reason, sizeof(vm->shutdown_reason), "%s",
			 why ? why : "unknown");
		set_state(vm, HCA__VM_STATE__VM_STATE_SHUTTING_DOWN, "QEMU shutting down (%s)",
			  vm->shutdown_reason);
	} else if (!strcmp(name, "STOP")) {
		/* The user's stop, a migration's finish-migrate, an I/O error:
		 * only the run state tells them apart. */
		status_refresh(vm);
	} else if (!strcmp(name, "RESUME") && resumable(vm->state)) {
		set_state(vm, HCA__VM_STATE__VM_STATE_RUNNING, "running");
	} else if (!strcmp(name, "MIGRATION")) {
		on_migration_event(vm, data);
	} else if (!strcmp(name, "GUEST_PANICKED")) {
		qb_log(LOG_ERR, "vm %s: guest panicked", vm->name);
	}
}

static void on_qmp_event(struct hv_qmp *q, const char *name, json_t *data,
			 void *opaque)
{
	struct hv_vm *vm = opaque;

	qb_log(LOG_DEBUG, "vm %s: event %s", vm->name, name);
	event_apply(vm, name, data);
	if (vm->ops && vm->ops->event)
		vm->ops->event(vm, name, data, vm->opaque);
}

static void reconnect(void *data)
{
	struct hv_vm *vm = data;

	vm->reconnect_timer = 0;
	if (vm->qmp && vm->pid > 0)
		hv_qmp_connect(vm->qmp);
}

static void on_qmp_closed(struct hv_qmp *q, int err, void *data)
{
	struct hv_vm *vm = data;

	/* QEMU closes its monitor as it exits: the pidfd will tell. If it does
	 * not, the monitor was lost while QEMU lives on: keep trying. */
	qb_log(err ? LOG_WARNING : LOG_DEBUG, "vm %s: QMP closed (%s)", vm->name,
	       err ? strerror(-err) : "EOF");
	if (err && (vm->op == OP_START || vm->op == OP_ATTACH))
		op_finish(vm, err, "vm %s: cannot reach QMP at %s: %s", vm->name,
			  vm->paths.qmp, strerror(-err));
	if (vm->pid > 0 && !vm->reconnect_timer)
		qb_loop_timer_add(vm->loop, QB_LOOP_LOW, RECONNECT_MS * QB_TIME_NS_IN_MSEC,
				  vm, reconnect, &vm->reconnect_timer);
}

static const struct hv_qmp_ops qmp_ops = {
	.ready = on_qmp_ready,
	.event = on_qmp_event,
	.closed = on_qmp_closed,
};

/* Watch @pid (already verified as this VM's QEMU) and connect its QMP. */
static int supervise(struct hv_vm *vm, pid_t pid, int pidfd)
{
	int rc;

	vm->pid = pid;
	vm->pidfd = pidfd;
	vm->shutdown_reason[0] = '\0';
	vm->mig_status[0] = '\0';
	vm->killed = false;
	vm->started_at = hv_proc_start_time(pid);
	rc = qb_loop_poll_add(vm->loop, QB_LOOP_HIGH, pidfd, POLLIN, vm, on_pidfd);
	if (rc < 0)
		return rc;
	vm->qmp = hv_qmp_new(vm->loop, vm->paths.qmp, &qmp_ops, vm, vm->qmp_timeout_ms);
	if (!vm->qmp)
		return -ENOMEM;
	return hv_qmp_connect(vm->qmp);
}

/* ---- operations ---- */

static void op_timeout(void *data)
{
	struct hv_vm *vm = data;

	vm->op_timer = 0;
	switch (vm->op) {
	case OP_SHUTDOWN:
		set_state(vm, vm->state == HCA__VM_STATE__VM_STATE_SHUTTING_DOWN ?
			  HCA__VM_STATE__VM_STATE_RUNNING : vm->state,
			  "guest ignored the shutdown request");
		op_finish(vm, -ETIMEDOUT, "vm %s: guest did not shut down in time; "
			  "still running (use stop to power it off)", vm->name);
		break;
	case OP_STOP:
		/* quit was not honoured in time: power off for real. */
		qb_log(LOG_WARNING, "vm %s: QEMU did not quit, killing it", vm->name);
		vm->killed = true;
		hv_pidfd_kill(vm->pidfd);
		break;
	default:
		op_finish(vm, -ETIMEDOUT, "vm %s: %s timed out", vm->name, op_names[vm->op]);
	}
}

static void on_launched(struct hv_launch *l, int err, pid_t pid, int pidfd,
			const char *msg, void *data)
{
	struct hv_vm *vm = data;
	int rc;

	vm->launch = NULL;
	if (err) {
		runtime_files_remove(vm);
		set_state(vm, HCA__VM_STATE__VM_STATE_STOPPED, "failed to start");
		op_finish(vm, err, "vm %s: QEMU failed to start: %s", vm->name, msg);
		return;
	}
	rc = supervise(vm, pid, pidfd);
	if (rc < 0 && rc != -EALREADY)
		op_finish(vm, rc, "vm %s: cannot supervise QEMU pid %d: %s", vm->name,
			  (int)pid, strerror(-rc));
}

int hv_vm_start(struct hv_vm *vm, const struct hv_argv *argv, hv_done_fn done,
		void *opaque)
{
	int rc;

	if (hv_state_running(vm->state))
		return -EALREADY;
	if ((rc = op_begin(vm, OP_START, done, opaque)))
		return rc;
	runtime_files_remove(vm);
	vm->launch = hv_launch_start(vm->loop, argv, &vm->paths, on_launched, vm);
	if (!vm->launch) {
		rc = -errno;
		vm->op = OP_NONE;
		return rc;
	}
	op_arm(vm, START_TIMEOUT_MS);
	set_state(vm, HCA__VM_STATE__VM_STATE_STARTING, "launching QEMU");
	return 0;
}

int hv_vm_attach(struct hv_vm *vm, hv_done_fn done, void *opaque)
{
	pid_t pid = 0;
	int pidfd = -1, rc;
	char why[160];

	if ((rc = op_begin(vm, OP_ATTACH, done, opaque)))
		return rc;
	rc = hv_proc_find(&vm->paths, vm->uuid, &pid, &pidfd, why, sizeof(why));
	if (rc == -ESRCH) {
		runtime_files_remove(vm);
		set_state(vm, HCA__VM_STATE__VM_STATE_STOPPED, "%s", why);
		op_finish(vm, 0, NULL);
		return 0;
	}
	if (rc < 0) {
		vm->op = OP_NONE;
		return rc;
	}
	qb_log(LOG_INFO, "vm %s: re-attaching to QEMU pid %d", vm->name, (int)pid);
	set_state(vm, HCA__VM_STATE__VM_STATE_STARTING, "re-attaching to QEMU pid %d", (int)pid);
	op_arm(vm, START_TIMEOUT_MS);
	rc = supervise(vm, pid, pidfd);
	if (rc < 0 && rc != -EALREADY)
		op_finish(vm, rc, "vm %s: cannot supervise QEMU pid %d: %s", vm->name,
			  (int)pid, strerror(-rc));
	return 0;
}

static void on_simple_reply(struct hv_qmp *q, int err, json_t *ret,
			    const char *cls, const char *desc, void *data)
{
	struct hv_vm *vm = data;
	const char *what = op_names[vm->op];

	if (err == -ETIMEDOUT)
		op_finish(vm, err, "vm %s: QEMU did not answer '%s' within %u ms (QMP timeout)",
			  vm->name, vm->cmd, vm->qmp_timeout_ms);
	else if (err == -EIO)
		op_finish(vm, err, "vm %s: QEMU refused %s: %s", vm->name, what, desc);
	else if (err)
		op_finish(vm, err, "vm %s: %s failed: %s", vm->name, what, strerror(-err));
	else if (vm->op == OP_PAUSE)
		set_state(vm, HCA__VM_STATE__VM_STATE_PAUSED, "paused by operator"),
		op_finish(vm, 0, NULL);
	else if (vm->op == OP_RESUME)
		set_state(vm, HCA__VM_STATE__VM_STATE_RUNNING, "running"),
		op_finish(vm, 0, NULL);
	/* shutdown and stop complete when the process ends */
}

static int qmp_op(struct hv_vm *vm, enum op op, const char *cmd, hv_done_fn done,
		  void *opaque)
{
	int rc;

	if (!vm->qmp || !hv_qmp_is_ready(vm->qmp))
		return -ENOTCONN;
	if ((rc = op_begin(vm, op, done, opaque)))
		return rc;
	vm->cmd = cmd;
	rc = hv_qmp_command(vm->qmp, cmd, NULL, on_simple_reply, vm);
	if (rc < 0)
		vm->op = OP_NONE;
	return rc;
}

int hv_vm_pause(struct hv_vm *vm, hv_done_fn done, void *opaque)
{
	if (vm->state == HCA__VM_STATE__VM_STATE_PAUSED)
		return -EALREADY;
	if (vm->state != HCA__VM_STATE__VM_STATE_RUNNING)
		return -EINVAL;
	return qmp_op(vm, OP_PAUSE, "stop", done, opaque);
}

int hv_vm_resume(struct hv_vm *vm, hv_done_fn done, void *opaque)
{
	if (vm->state == HCA__VM_STATE__VM_STATE_RUNNING)
		return -EALREADY;
	if (vm->state != HCA__VM_STATE__VM_STATE_PAUSED)
		return -EINVAL;
	return qmp_op(vm, OP_RESUME, "cont", done, opaque);
}

int hv_vm_shutdown(struct hv_vm *vm, unsigned timeout_s, hv_done_fn done,
		   void *opaque)
{
	int rc;

	if (vm->state != HCA__VM_STATE__VM_STATE_RUNNING)
		return -EINVAL; /* a paused guest cannot see the power button */
	if ((rc = qmp_op(vm, OP_SHUTDOWN, "system_powerdown", done, opaque)))
		return rc;
	op_arm(vm, timeout_s * 1000u);
	set_state(vm, HCA__VM_STATE__VM_STATE_SHUTTING_DOWN,
		  "ACPI shutdown requested, waiting up to %u s", timeout_s);
	return 0;
}

int hv_vm_shutdown_abandon(struct hv_vm *vm)
{
	if (vm->op != OP_SHUTDOWN)
		return -EINVAL;
	set_state(vm, vm->state == HCA__VM_STATE__VM_STATE_SHUTTING_DOWN ?
		  HCA__VM_STATE__VM_STATE_RUNNING : vm->state,
		  "shutdown no longer awaited (cancelled)");
	op_finish(vm, -ECANCELED, "vm %s: shutdown cancelled", vm->name);
	return 0;
}

int hv_vm_stop(struct hv_vm *vm, bool force, hv_done_fn done, void *opaque)
{
	int rc;

	if (vm->pid <= 0)
		return -EINVAL;
	if (vm->op == OP_STOP)
		return -EBUSY;
	/* A stop overrides whatever else is under way; before QMP is ready,
	 * killing is the only way. */
	if (vm->op == OP_START || vm->op == OP_ATTACH)
		force = true;
	if (vm->op != OP_NONE)
		op_finish(vm, -ECANCELED, "vm %s: %s interrupted by stop", vm->name,
			  op_names[vm->op]);
	op_begin(vm, OP_STOP, done, opaque);
	if (!force && vm->qmp && hv_qmp_is_ready(vm->qmp) &&
	    hv_qmp_command(vm->qmp, "quit", NULL, NULL, NULL) == 0) {
		op_arm(vm, STOP_GRACE_MS);
		return 0;
	}
	vm->killed = true;
	rc = hv_pidfd_kill(vm->pidfd);
	if (rc < 0)
		op_finish(vm, rc, "vm %s: cannot kill QEMU pid %d: %s", vm->name,
			  (int)vm->pid, strerror(-rc));
	return 0;
}

/* ---- commands from callers above: not operations ---- */

struct qmp_call {
	struct hv_vm *vm;
	hv_vm_qmp_fn done;
	void *opaque;
};

static void on_call_reply(struct hv_qmp *q, int err, json_t *ret, const char *cls,
			  const char *desc, void *data)
{
	struct qmp_call *c = data;

	c->done(c->vm, err, ret, cls, desc, c->opaque);
	free(c);
}

int hv_vm_qmp(struct hv_vm *vm, const char *cmd, json_t *args, unsigned timeout_ms,
	      hv_vm_qmp_fn done, void *opaque)
{
	struct qmp_call *c = NULL;
	int rc = -EINVAL;

	if (!cmd || (args && !json_is_object(args)))
		goto out;
	rc = -ENOTCONN;
	if (!hv_qmp_is_ready(vm->qmp))
		goto out;
	rc = -ENOMEM;
	if (done && !(c = malloc(sizeof(*c))))
		goto out;
	if (c)
		*c = (struct qmp_call){ .vm = vm, .done = done, .opaque = opaque };
	if (!timeout_ms)
		timeout_ms = vm->qmp_timeout_ms;
	/* Without @done, hv_qmp logs a failure itself. */
	rc = hv_qmp_command_timeout(vm->qmp, cmd, args, timeout_ms, c ? on_call_reply : NULL, c);
	args = NULL; /* stolen, whatever happened */
	if (rc == 0)
		c = NULL;
out:
	if (rc)
		qb_log(LOG_DEBUG, "vm %s: %s not sent: %s", vm->name, cmd ? cmd : "(null)",
		       strerror(-rc));
	free(c);
	json_decref(args);
	return rc;
}

/* ---- handle ---- */

struct hv_vm *hv_vm_new(const char *name, const char *uuid,
			const struct hv_vm_cfg *cfg,
			const struct hv_vm_ops *ops, void *opaque)
{
	struct hv_vm *vm = calloc(1, sizeof(*vm));

	if (!vm)
		return NULL;
	snprintf(vm->name, sizeof(vm->name), "%s", name);
	snprintf(vm->uuid, sizeof(vm->uuid), "%s", uuid);
	snprintf(vm->qemu, sizeof(vm->qemu), "%s", cfg->qemu);
	vm->loop = cfg->loop;
	vm->qmp_timeout_ms = cfg->qmp_timeout_ms;
	vm->paths = *cfg->paths;
	vm->ops = ops;
	vm->opaque = opaque;
	vm->pidfd = -1;
	vm->state = HCA__VM_STATE__VM_STATE_STOPPED;
	snprintf(vm->reason, sizeof(vm->reason), "defined");
	return vm;
}

void hv_vm_free(struct hv_vm *vm)
{
	if (!vm)
		return;
	vm->ops = NULL; /* no state callbacks into an owner that is going away */
	op_finish(vm, -ECANCELED, "vm %s: agent detached", vm->name);
	hv_launch_free(vm->launch);
	detach_process(vm);
	free(vm);
}

Hca__VmState hv_vm_state(const struct hv_vm *vm) { return vm->state; }
const char *hv_vm_reason(const struct hv_vm *vm) { return vm->reason; }
int hv_vm_pid(const struct hv_vm *vm) { return (int)vm->pid; }
uint64_t hv_vm_started_at(const struct hv_vm *vm) { return vm->started_at; }
bool hv_vm_busy(const struct hv_vm *vm) { return vm->op != OP_NONE; }
