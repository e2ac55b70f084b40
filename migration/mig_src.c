/*
 * mig_src: the source's side of a live migration, the one that decides.
 *
 * Phases (the job's, never backwards), with the one way back before the
 * commit:
 *   queued      waiting for one of this node's outgoing slots
 *   check       the dirty rate measured (calc-dirty-rate), the plan made
 *   prepare     the destination starts the VM paused, listening (mig.prepare);
 *               this QEMU gets credentials, capabilities, parameters
 *   (disks)     --with-storage: before the memory, each local volume is
 *               mirrored to the destination's NBD export (mig_disk.c) until
 *               all are in sync, then the mirrors turn write-blocking; at
 *               the switchover they are finished and detached first
 *   transfer    `migrate`; query-migrate every second feeds the progress and
 *               the convergence policy, whose actions are carried out
 *   switchover  QEMU stopped the guest before the switchover
 *               (pause-before-switchover): `migrate-continue`, the device
 *               state goes, the stream completes; the destination says it
 *               loaded everything (mig.ready)
 *   commit      the owner record moves to the destination by compare-and-swap
 *               (storage/sto_vm.h): THE commit point; then mig.commit
 *               resumes the guest there
 *   cleanup     this QEMU quits; the report is written
 * Before the commit any failure, and a cancel, takes the way back: the
 * destination's QEMU is killed (mig.abort), this one goes on running
 * (`migrate_cancel`, `cont` where QEMU left the guest paused). A commit
 * whose outcome Ceph did not give is read back before anything else: the
 * guest stays paused on both sides until the store says which (never two
 * copies).
 */
#include "migration/mig_priv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>
#include <unistd.h>

#include <qb/qblog.h>
#include <zstd.h>

#include "base/env.h"
#include "base/exec.h"
#include "hypervisor/hv.h"
#include "proto/hca.pb-c.h"
#include "storage/sto_vm.h"

#define TICK_MS 1000u
#define DIRTY_CALC_S 1
#define ROLLBACK_POLL_MS 200u
#define ROLLBACK_TRIES 50u
#define REREAD_MS 1000u

#define PH(x) HCA__JOB_PHASE__JOB_PHASE_##x

enum out_state {
	OUT_QUEUED,
	OUT_DIRTY,     /* calc-dirty-rate running */
	OUT_PREPARE,   /* mig.prepare asked */
	OUT_SETUP,     /* this QEMU's set-up */
	OUT_DISKS,     /* the mirrors copy, until every one is in sync */
	OUT_TRANSFER,
	OUT_SWITCHOVER,
	OUT_READY,     /* mig.ready asked */
	OUT_COMMIT,    /* the CAS */
	OUT_RESUME,    /* mig.commit asked */
	OUT_CLEANUP,
	OUT_ROLLBACK,
};

struct mig_out {
	struct mig_out *next;
	struct mig *m;
	struct job *j;
	struct hv_vm *hv;
	char vm[HV_NAME_MAX + 1];
	char target[64];
	char job_id[80];
	uint64_t epoch, incarnation, ram;
	enum out_state st;
	unsigned step;
	bool counted;       /* holds an outgoing slot */
	bool dst_up;        /* the destination has a QEMU for it */
	bool committed;
	bool cancel;
	bool tick_busy;
	struct mig_plan plan;
	char why[1400];
	uint32_t req_downtime;
	uint64_t req_bandwidth;
	uint32_t req_streams, req_deadline;
	enum mig_compress req_compress;
	enum mig_converge req_converge;
	struct mig_policy *pol;
	char host[64];
	unsigned port;
	qb_loop_timer_handle tick;
	uint64_t t0_ms, stop_us, resume_us;
	/* the end: why, and the job's code */
	int code;
	char fail[512];
	unsigned rb_tries;
	/* the report */
	Hca__MigReport rep;
	char mode[96], policy[256];
	/* the CAS on the service's queue */
	struct exec_item item;
	int cas_rc;
	uint64_t new_epoch, new_version;
	char cas_err[256];
	/* the link rate, measured on the first pass (QEMU's own figure) */
	uint64_t rate_sum;
	unsigned rate_n;
	bool rate_set;
	/* the check: the dirty rate, then a sample of the guest's pages */
	bool dirty_measured;
	uint64_t dirty_rate;
	unsigned sample_i;
	uint32_t zstd_pct;
	uint64_t zstd_rate;
	uint64_t cpu_busy0, cpu_all0; /* the node's CPU ticks when the check began */
	bool cpu_known;
	unsigned calls;     /* channel calls whose answer is still to come */
	bool dead;          /* ended while some were: the last one frees it */
	/* --with-storage: the volumes, their mirrors, the destination's NBD */
	Hca__MigDisk disks[MIG_DISKS_MAX];
	char disk_names[MIG_DISKS_MAX][64], vol_names[MIG_DISKS_MAX][128];
	char tgt_backend[MIG_DISKS_MAX][8], tgt_path[MIG_DISKS_MAX][160];
	size_t n_disks;
	struct mig_mirrors mm;
	unsigned nbd_port;
	uint64_t disk_t0, finish_t0;  /* ms */
	bool disks_cleaned;
	bool synced;        /* every mirror reached READY */
	char disk_mode[128];
};

static void out_tick_arm(struct mig_out *o);
static void rate_final(struct mig_out *o, uint64_t rate);
static void sample_step(struct mig_out *o);
static void rollback(struct mig_out *o, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static bool cancelled(struct mig_out *o, const char *when);
static void start_next(struct mig *m);

bool mig_src_busy(const struct mig *m, const char *vm)
{
	for (struct mig_out *o = m->outs; o; o = o->next)
		if (!strcmp(o->vm, vm))
			return true;
	return false;
}

static struct mig_out *out_find(const struct mig *m, const char *vm)
{
	for (struct mig_out *o = m->outs; o; o = o->next)
		if (!strcmp(o->vm, vm))
			return o;
	return NULL;
}

static void report(struct mig_out *o)
{
	const struct hca_env *e = o->m->env;

	o->rep.source = (char *)e->node;
	o->rep.target = o->target;
	o->rep.plan = o->why;
	o->rep.mode = o->mode;
	o->rep.policy = o->policy;
	o->rep.ram_bytes = o->ram;
	o->rep.link_rate = o->plan.link_rate;
	o->rep.elapsed_ms = mig_mono_ms() - o->t0_ms;
	o->rep.disks = (uint32_t)o->n_disks;
	o->rep.disk_data = 0;
	for (size_t i = 0; i < o->n_disks; i++)
		o->rep.disk_data += o->disks[i].allocated;
	o->rep.disk_mode = o->disk_mode;
	if (o->pol)
		mig_policy_summary(o->pol, o->policy, sizeof(o->policy));
	e->job_report(o->j, &o->rep);
}

static void phase(struct mig_out *o, enum out_state st, int job_phase)
{
	o->st = st;
	if (job_phase >= 0)
		o->m->env->job_phase(o->j, job_phase);
}

/* The end of @o, either way: the job ends, the slot goes to the next. */
static void out_end(struct mig_out *o)
{
	struct mig *m = o->m;
	const struct hca_env *e = m->env;
	struct job *j = o->j;

	if (o->tick)
		qb_loop_timer_del(e->loop, o->tick);
	o->tick = 0;
	for (struct mig_out **pp = &m->outs; *pp; pp = &(*pp)->next)
		if (*pp == o) {
			*pp = o->next;
			break;
		}
	if (o->counted)
		m->n_out--;
	report(o);
	e->job_on_cancel(j, NULL, NULL);
	m->host.ended(m->host.ctx, o->vm, j, o->committed);
	if (o->committed && !o->code)
		e->job_finish(j, 0, "");
	else if (o->cancel && !o->committed)
		e->job_cancelled(j, o->fail);
	else
		e->job_finish(j, o->code ? o->code : HCA__ERROR_CODE__ERROR_INTERNAL, o->fail);
	mig_policy_free(o->pol);
	o->pol = NULL;
	o->dead = true;
	if (!o->calls)
		free(o);
	start_next(m);
}

/* A channel call's answer for @o: false if @o ended meanwhile (freed by
 * the last answer). */
static bool answer_for(struct mig_out *o)
{
	o->calls--;
	if (!o->dead)
		return true;
	if (!o->calls)
		free(o);
	return false;
}

/* e->call for @o, counted. */
static int out_call(struct mig_out *o, const char *method, const void *body, size_t len,
		    unsigned timeout_ms, env_reply_fn cb)
{
	const struct hca_env *e = o->m->env;
	int rc;

	o->calls++;
	rc = e->call(e->ctx, o->target, method, body, len, timeout_ms, cb, o);
	if (rc < 0)
		o->calls--;
	return rc;
}

/* ---- the way back (before the commit) ---- */

static void rb_poll(void *data);

/* A migration QEMU has not finished with (a new one would be refused). */
static bool mig_status_busy(const char *st)
{
	return st && strcmp(st, "none") && strcmp(st, "completed") && strcmp(st, "failed") &&
	       strcmp(st, "cancelled");
}

/*
 * Stop every mirror of @o, whatever state it is in: first `yank` its NBD
 * connection (a destination cut off leaves requests in flight on a socket
 * TCP gives up on only after many minutes; in write-blocking mode the
 * guest's own writes wait on them), which fails what is in flight at once,
 * then a forced cancel. Errors (a node or job that never existed) are
 * nothing to undo.
 */
static void mirrors_stop(struct mig_out *o)
{
	struct mig_disk_names n;

	for (unsigned i = 0; i < o->mm.n; i++) {
		mig_disk_names(o->mm.d[i].disk, &n);
		hv_vm_qmp(o->hv, "yank", json_pack("{s:[{s:s, s:s}]}", "instances", "type",
						   "block-node", "node-name", n.nbd), 0, NULL, NULL);
		hv_vm_qmp(o->hv, "block-job-cancel", json_pack("{s:s, s:b}", "device", n.job,
							       "force", 1), 0, NULL, NULL);
	}
}

static void rb_again(struct mig_out *o, const char *what)
{
	if (++o->rb_tries >= ROLLBACK_TRIES) {
		snprintf(o->fail + strlen(o->fail), sizeof(o->fail) - strlen(o->fail),
			 "; the source QEMU %s after the rollback", what);
		out_end(o);
		return;
	}
	qb_loop_timer_add(o->m->env->loop, QB_LOOP_HIGH, ROLLBACK_POLL_MS * QB_TIME_NS_IN_MSEC, o,
			  rb_poll, &o->tick);
}

/* Running again, the stream let go of: the mirrors must be gone too, then
 * their NBD client nodes (a node a job still uses cannot be deleted). */
static void rb_jobs_done(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
			 const char *errdesc, void *opaque)
{
	struct mig_out *o = opaque;
	struct mig_disk_names n;

	(void)hv;
	(void)errclass;
	(void)errdesc;
	if (err == -ECANCELED)
		return;
	if (!err && mig_mirrors_have_job(&o->mm, ret)) {
		mirrors_stop(o);
		rb_again(o, "runs, but still has its disk mirrors");
		return;
	}
	for (unsigned i = 0; i < o->mm.n; i++) {
		mig_disk_names(o->mm.d[i].disk, &n);
		/* a node never added answers "not found": nothing to undo */
		hv_vm_qmp(o->hv, "blockdev-del", json_pack("{s:s}", "node-name", n.nbd), 0, NULL,
			  NULL);
	}
	o->disks_cleaned = true;
	qb_log(LOG_NOTICE, "vm %s: migration to %s rolled back: running here on its own disks",
	       o->vm, o->target);
	out_end(o);
}

/* Running again; the job ends once QEMU has let go of the stream too. */
static void rb_mig_done(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
			const char *errdesc, void *opaque)
{
	struct mig_out *o = opaque;
	const char *st = json_string_value(json_object_get(ret, "status"));

	(void)hv;
	(void)errclass;
	(void)errdesc;
	if (err == -ECANCELED)
		return;
	if (!err && mig_status_busy(st)) {
		char what[64];
		snprintf(what, sizeof(what), "runs, but still holds the stream (%s)", st);
		hv_vm_qmp(o->hv, "migrate_cancel", NULL, 0, NULL, NULL);
		rb_again(o, what);
		return;
	}
	if (o->mm.n && !o->disks_cleaned) {
		if (hv_vm_qmp(o->hv, "query-block-jobs", NULL, 0, rb_jobs_done, o) == 0)
			return;
	}
	qb_log(LOG_NOTICE, "vm %s: migration to %s rolled back: running here", o->vm, o->target);
	out_end(o);
}

static void rb_status_done(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
			   const char *errdesc, void *opaque)
{
	struct mig_out *o = opaque;
	const char *st = json_string_value(json_object_get(ret, "status"));

	(void)hv;
	(void)errclass;
	if (err == -ECANCELED) /* hcad stops: the restart resolves it */
		return;
	if (err || !st) {
		snprintf(o->fail + strlen(o->fail), sizeof(o->fail) - strlen(o->fail),
			 "; the source QEMU did not answer after the rollback (%s)",
			 errdesc ? errdesc : strerror(-err));
		out_end(o);
		return;
	}
	if (!strcmp(st, "running")) {
		if (hv_vm_qmp(o->hv, "query-migrate", NULL, 0, rb_mig_done, o) < 0)
			out_end(o);
		return;
	}
	if (!strcmp(st, "postmigrate") || !strcmp(st, "paused") ||
	    !strcmp(st, "finish-migrate") || !strcmp(st, "prelaunch")) {
		/* the migration left it stopped: it never ran anywhere else */
		hv_vm_qmp(o->hv, "cont", NULL, 0, NULL, NULL);
	}
	{
		char what[64];
		snprintf(what, sizeof(what), "stays %s", st);
		rb_again(o, what);
	}
}

static void rb_poll(void *data)
{
	struct mig_out *o = data;

	o->tick = 0;
	if (hv_vm_qmp(o->hv, "query-status", NULL, 0, rb_status_done, o) < 0) {
		snprintf(o->fail + strlen(o->fail), sizeof(o->fail) - strlen(o->fail),
			 "; the source QEMU is unreachable");
		out_end(o);
	}
}

static void abort_done(int err, const void *body, size_t len, const char *msg, void *opaque)
{
	(void)body;
	(void)len;
	(void)opaque;
	if (err)
		qb_log(LOG_WARNING, "migration: the destination did not confirm the abort: %s "
		       "(its watchdog drops the QEMU)", msg);
}

static void rollback(struct mig_out *o, int code, const char *fmt, ...)
{
	const struct hca_env *e = o->m->env;
	va_list ap;

	if (o->committed || o->st == OUT_ROLLBACK)
		return;
	va_start(ap, fmt);
	vsnprintf(o->fail, sizeof(o->fail), fmt, ap);
	va_end(ap);
	o->code = code;
	qb_log(LOG_WARNING, "vm %s: migration to %s rolls back: %s", o->vm, o->target, o->fail);
	if (o->tick)
		qb_loop_timer_del(e->loop, o->tick);
	o->tick = 0;
	if (o->st == OUT_QUEUED) {
		out_end(o);
		return;
	}
	phase(o, OUT_ROLLBACK, PH(CLEANUP));
	if (o->dst_up || o->st >= OUT_PREPARE) {
		Hca__MigEnd a = HCA__MIG_END__INIT;
		uint8_t buf[700];
		a.job = o->job_id;
		a.vm = o->vm;
		a.reason = o->fail;
		if (hca__mig_end__get_packed_size(&a) <= sizeof(buf))
			e->call(e->ctx, o->target, MIG_M_ABORT, buf, hca__mig_end__pack(&a, buf),
				MIG_FAST_CALL_MS, abort_done, NULL);
	}
	/* whatever QEMU is at: cancel what runs, then see it running */
	hv_vm_qmp(o->hv, "migrate_cancel", NULL, 0, NULL, NULL);
	mirrors_stop(o);
	rb_poll(o);
}

/* A user's cancel, seen at a step: the way back, true. */
static bool cancelled(struct mig_out *o, const char *when)
{
	if (!o->cancel)
		return false;
	rollback(o, 0, "cancelled by the user%s", when);
	return true;
}

/* ---- commit ---- */

static void cleanup_quit_done(struct hv_vm *hv, int err, const char *msg, void *opaque)
{
	struct mig_out *o = opaque;

	(void)hv;
	if (err && err != -ECANCELED)
		qb_log(LOG_WARNING, "vm %s: the migrated-away QEMU did not quit: %s", o->vm, msg);
	if (err == -ECANCELED)
		return;
	out_end(o);
}

static void final_done(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
		       const char *errdesc, void *opaque)
{
	struct mig_out *o = opaque;
	json_t *ram = json_object_get(ret, "ram");

	(void)errclass;
	(void)errdesc;
	if (err == -ECANCELED)
		return;
	if (!err) {
		o->rep.total_ms = json_integer_value(json_object_get(ret, "total-time"));
		o->rep.downtime_ms = json_integer_value(json_object_get(ret, "downtime"));
		o->rep.setup_ms = json_integer_value(json_object_get(ret, "setup-time"));
		o->rep.transferred = json_integer_value(json_object_get(ram, "transferred"));
		o->rep.passes = json_integer_value(json_object_get(ram, "dirty-sync-count"));
		o->rep.remaining = 0;
		rate_final(o, (uint64_t)(json_number_value(json_object_get(ram, "mbps")) *
					 125000.0));
		/* QEMU can say completed before its figures are in: ask again */
		if (!o->rep.total_ms && o->step++ < 5 &&
		    hv_vm_qmp(hv, "query-migrate", NULL, 0, final_done, o) == 0)
			return;
	}
	phase(o, OUT_CLEANUP, PH(CLEANUP));
	o->m->env->job_progress(o->j, o->ram, o->ram, "bytes", "the guest runs on the destination");
	report(o);
	if (hv_vm_stop(o->hv, false, cleanup_quit_done, o) < 0)
		out_end(o);
}

static void resumed(int err, const void *body, size_t len, const char *msg, void *opaque)
{
	struct mig_out *o = opaque;
	Hca__MigEnd *a;

	if (!answer_for(o))
		return;
	a = err ? NULL : hca__mig_end__unpack(NULL, len, body);
	if (!a) {
		/* committed: the destination runs it or will (its watchdog reads
		 * the record); never back here */
		qb_log(LOG_ERR, "vm %s: committed to %s, which did not confirm the resume: %s",
		       o->vm, o->target, err ? msg : "malformed answer");
	} else {
		o->resume_us = a->resumed_us;
		if (o->stop_us && a->resumed_us > o->stop_us)
			o->rep.pause_ms = (a->resumed_us - o->stop_us + 500) / 1000;
		hca__mig_end__free_unpacked(a, NULL);
	}
	o->step = 0;
	if (hv_vm_qmp(o->hv, "query-migrate", NULL, 0, final_done, o) < 0)
		final_done(o->hv, -EIO, NULL, NULL, NULL, o);
}

static void committed(struct mig_out *o)
{
	const struct hca_env *e = o->m->env;
	Hca__MigEnd a = HCA__MIG_END__INIT;
	uint8_t buf[256];

	o->committed = true;
	o->rep.owner_epoch = o->new_epoch;
	qb_log(LOG_NOTICE, "vm %s: committed to %s at owner epoch %llu", o->vm, o->target,
	       (unsigned long long)o->new_epoch);
	o->m->host.committed(o->m->host.ctx, o->vm, o->target, o->new_epoch, o->new_version);
	phase(o, OUT_RESUME, -1);
	a.job = o->job_id;
	a.vm = o->vm;
	a.owner_epoch = o->new_epoch;
	a.incarnation = o->incarnation;
	(void)e;
	if (out_call(o, MIG_M_COMMIT, buf, hca__mig_end__pack(&a, buf), MIG_FAST_CALL_MS,
		     resumed) < 0) {
		o->calls++; /* resumed() counts the answer it stands for */
		resumed(-ENOTCONN, NULL, 0, "the channel is down", o);
	}
}

/*
 * The commit. After a write whose outcome Ceph did not give, the same CAS
 * again, never a plain read: a timed-out write may still reach the OSD and
 * land after a read said it had not (it would then move the owner behind a
 * rollback's back). Repeating it is safe both ways: it lands now (0), or
 * the first one did (-ESTALE, and the record names the destination at the
 * next epoch), or the answer is unknown again.
 */
static void cas_fn(struct exec_item *it)
{
	struct mig_out *o = EXEC_CONTAINER_OF(it, struct mig_out, item);
	struct sto_store *st = o->m->env->store;
	struct sto_owner cur = { o->m->env->node, o->epoch, true, o->incarnation };
	struct sto_owner next = { o->target, 0, true, 0 };
	struct sto_owner want = { o->target, o->epoch + 1, true, o->incarnation };
	struct sto_vol_move mv[MIG_DISKS_MAX];
	size_t n = 0;

	/* volumes that go into the pool change place in the commit itself */
	for (size_t i = 0; i < o->n_disks; i++)
		if (!strcmp(o->tgt_backend[i], "rbd"))
			mv[n++] = (struct sto_vol_move){ o->disk_names[i], "rbd", o->vol_names[i],
							 o->tgt_path[i],
							 HCA__DISK_FORMAT__DISK_FORMAT_RAW };
	if (!st) {
		o->cas_rc = -ENOTCONN;
		snprintf(o->cas_err, sizeof(o->cas_err), "no connection to the store");
		return;
	}
	o->cas_rc = sto_owner_cas_moving(st, o->vm, &cur, &next, mv, n, &o->new_epoch,
					 &o->new_version, o->cas_err, sizeof(o->cas_err));
	if (o->cas_rc == -ECANCELED) /* moved between read and write: once more */
		o->cas_rc = sto_owner_cas_moving(st, o->vm, &cur, &next, mv, n, &o->new_epoch,
						 &o->new_version, o->cas_err,
						 sizeof(o->cas_err));
	if (o->cas_rc == -ESTALE && o->step > 0 &&
	    sto_owner_confirm(st, o->vm, &want, o->cas_err, sizeof(o->cas_err)) == 0) {
		o->cas_rc = 0; /* the earlier write landed */
		o->new_epoch = o->epoch + 1;
		o->new_version = 0;
	}
}

static void cas_push(struct mig_out *o);

static void cas_retry(void *data)
{
	struct mig_out *o = data;

	o->tick = 0;
	cas_push(o);
}

static void cas_done(struct exec_item *it)
{
	struct mig_out *o = EXEC_CONTAINER_OF(it, struct mig_out, item);

	if (exec_item_cancelled(it))
		return; /* hcad stops: the restart resolves it from the record */
	if (o->cas_rc == 0) {
		committed(o);
		return;
	}
	if (o->cas_rc == -ESTALE || o->cas_rc == -ENOENT || o->cas_rc == -EBADMSG ||
	    o->cas_rc == -EPROTONOSUPPORT || o->cas_rc == -EOVERFLOW || o->cas_rc == -EINVAL) {
		rollback(o, HCA__ERROR_CODE__ERROR_BUSY, "vm %s: the owner record changed during "
			 "the migration (%s): not committed, running here", o->vm, o->cas_err);
		return;
	}
	if (o->step == 0 && (o->cas_rc == -ENOTCONN || o->cas_rc == -ECANCELED)) {
		/* nothing was written: Ceph said so, or nothing was sent */
		rollback(o, HCA__ERROR_CODE__ERROR_STORAGE, "vm %s: storage unavailable at the "
			 "commit (%s): not committed, running here", o->vm, o->cas_err);
		return;
	}
	/* unknown: the guest stays paused on both sides until the store says */
	qb_log(LOG_WARNING, "vm %s: the commit's outcome is unknown (%s); trying it again in "
	       "%u ms (the guest stays paused: never two copies)", o->vm, o->cas_err, REREAD_MS);
	o->m->env->job_progress(o->j, 0, 0, NULL, "commit outcome unknown: trying it again");
	o->step++;
	if (!o->m->stopping)
		qb_loop_timer_add(o->m->env->loop, QB_LOOP_HIGH, REREAD_MS * QB_TIME_NS_IN_MSEC, o,
				  cas_retry, &o->tick);
}

static void cas_push(struct mig_out *o)
{
	exec_item_init(&o->item, cas_fn, cas_done);
	exec_push(o->m->q, &o->item, o->vm);
}

static void ready_done(int err, const void *body, size_t len, const char *msg, void *opaque)
{
	struct mig_out *o = opaque;

	(void)body;
	(void)len;
	if (!answer_for(o) || o->st != OUT_READY)
		return;
	if (err) {
		rollback(o, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: the destination did not load "
			 "the migration: %s", o->vm, msg);
		return;
	}
	if (cancelled(o, " before the commit"))
		return;
	/* a minority partition changes nothing, not even this */
	if (!o->m->env->quorate(o->m->env->ctx)) {
		rollback(o, HCA__ERROR_CODE__ERROR_NO_QUORUM, "vm %s: this node is not quorate at "
			 "the commit: not committed, running here", o->vm);
		return;
	}
	phase(o, OUT_COMMIT, PH(COMMIT));
	o->step = 0;
	cas_push(o);
}

/* The stream completed here: ask the destination whether it has it all. */
static void completed(struct mig_out *o)
{
	const struct hca_env *e = o->m->env;
	Hca__MigEnd a = HCA__MIG_END__INIT;
	uint8_t buf[256];

	if (o->tick)
		qb_loop_timer_del(e->loop, o->tick);
	o->tick = 0;
	phase(o, OUT_READY, -1);
	a.job = o->job_id;
	a.vm = o->vm;
	if (out_call(o, MIG_M_READY, buf, hca__mig_end__pack(&a, buf), MIG_FAST_CALL_MS,
		     ready_done) < 0)
		rollback(o, HCA__ERROR_CODE__ERROR_TIMEOUT, "vm %s: node %s is unreachable at "
			 "the switchover", o->vm, o->target);
}

/* ---- transfer ---- */

static struct mig_rate *rate_slot(struct mig *m, const char *node, bool make)
{
	struct mig_rate *free_slot = NULL;

	for (size_t i = 0; i < MIG_RATE_CACHE; i++) {
		if (!strcmp(m->rates[i].node, node))
			return &m->rates[i];
		if (!m->rates[i].node[0] && !free_slot)
			free_slot = &m->rates[i];
	}
	if (!make)
		return NULL;
	if (!free_slot)
		free_slot = &m->rates[0];
	snprintf(free_slot->node, sizeof(free_slot->node), "%s", node);
	return free_slot;
}

/*
 * The first pass measures the link: QEMU's transfer rate while it sends
 * all of RAM once, averaged. From the second pass on QEMU is told it
 * (avail-switchover-bandwidth), so its switchover decision uses what the
 * link carried rather than an estimate from the last, smaller pass; the
 * next migration to the same node plans with it.
 */
static void rate_learn(struct mig_out *o, const struct mig_sample *s)
{
	uint64_t rate;
	struct mig_rate *slot;

	if (s->iteration <= 1) {
		if (s->rate) {
			o->rate_sum += s->rate;
			o->rate_n++;
		}
		return;
	}
	if (o->rate_set || !o->rate_n)
		return;
	o->rate_set = true;
	rate = o->rate_sum / o->rate_n;
	if (o->plan.max_bandwidth && o->plan.max_bandwidth < rate)
		rate = o->plan.max_bandwidth;
	o->plan.link_rate = rate;
	if ((slot = rate_slot(o->m, o->target, true)) && !o->plan.max_bandwidth)
		slot->rate = rate;
	hv_vm_qmp(o->hv, "migrate-set-parameters",
		  json_pack("{s:I}", "avail-switchover-bandwidth", (json_int_t)rate), 0, NULL,
		  NULL);
}

/* A migration too short for a second sample: its mean rate, for the next. */
static void rate_final(struct mig_out *o, uint64_t rate)
{
	struct mig_rate *slot;

	if (o->rate_set || !rate || o->plan.max_bandwidth)
		return;
	o->plan.link_rate = rate;
	if ((slot = rate_slot(o->m, o->target, true)))
		slot->rate = rate;
}

static void sample(struct mig_out *o, json_t *ret)
{
	json_t *ram = json_object_get(ret, "ram");
	struct mig_sample s = { 0 };
	struct mig_decision d;
	const char *cmd;
	json_t *args = NULL;

	s.remaining = json_integer_value(json_object_get(ram, "remaining"));
	s.transferred = json_integer_value(json_object_get(ram, "transferred"));
	s.total = json_integer_value(json_object_get(ram, "total"));
	s.dirty_rate = (uint64_t)json_integer_value(json_object_get(ram, "dirty-pages-rate")) *
		       (uint64_t)json_integer_value(json_object_get(ram, "page-size"));
	s.rate = (uint64_t)(json_number_value(json_object_get(ram, "mbps")) * 125000.0);
	s.iteration = json_integer_value(json_object_get(ram, "dirty-sync-count"));
	s.expected_downtime_ms = (uint32_t)json_integer_value(
		json_object_get(ret, "expected-downtime"));
	s.t_ms = mig_mono_ms();
	o->rep.transferred = s.transferred;
	o->rep.remaining = s.remaining;
	o->rep.rate = s.rate;
	o->rep.dirty_rate = s.dirty_rate;
	o->rep.passes = s.iteration;
	rate_learn(o, &s);
	{
		uint64_t done = s.total > s.remaining ? s.total - s.remaining : 0;
		char line[MIG_REASON_MAX + 48];
		snprintf(line, sizeof(line), "%s%s", o->n_disks ? "memory phase (disks "
			 "write-blocking): " : "", mig_policy_detail(o->pol));
		o->m->env->job_progress(o->j, s.iteration > 1 ? s.transferred : done,
					s.iteration > 1 ? s.transferred + s.remaining : s.total,
					"bytes", line);
	}
	report(o);
	if (mig_policy_feed(o->pol, &s, &d) == MIG_ACT_NONE)
		return;
	qb_log(LOG_NOTICE, "vm %s: migration policy: %s: %s", o->vm, mig_action_name(d.action),
	       d.reason);
	if (d.action == MIG_ACT_ABORT) {
		rollback(o, HCA__ERROR_CODE__ERROR_TIMEOUT, "vm %s: migration aborted: %s", o->vm,
			 d.reason);
		return;
	}
	if ((cmd = mig_decision_qmp(&d, &args)))
		hv_vm_qmp(o->hv, cmd, args, 0, NULL, NULL);
}

static void tick_done(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
		      const char *errdesc, void *opaque)
{
	struct mig_out *o = opaque;
	const char *st;

	(void)hv;
	(void)errclass;
	o->tick_busy = false;
	if (err == -ECANCELED || o->st != OUT_TRANSFER)
		return;
	if (err) {
		rollback(o, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: the source QEMU does not "
			 "answer: %s", o->vm, errdesc ? errdesc : strerror(-err));
		return;
	}
	st = json_string_value(json_object_get(ret, "status"));
	if (st && (!strcmp(st, "failed") || !strcmp(st, "cancelled"))) {
		const char *why = json_string_value(json_object_get(ret, "error-desc"));
		rollback(o, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: the migration stream %s%s%s",
			 o->vm, st, why ? ": " : "", why ? why : "");
		return;
	}
	sample(o, ret);
	out_tick_arm(o);
}

/* The disk phase's sample: the mirrors' progress. */
static void disks_tick_done(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
			    const char *errdesc, void *opaque)
{
	struct mig_out *o = opaque;
	uint64_t done, total;
	char d[160], b1[32], b2[32];

	(void)hv;
	(void)errclass;
	o->tick_busy = false;
	if (err == -ECANCELED || o->st != OUT_DISKS)
		return;
	if (err) {
		rollback(o, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: the source QEMU does not "
			 "answer: %s", o->vm, errdesc ? errdesc : strerror(-err));
		return;
	}
	mig_mirrors_jobs(&o->mm, ret, &done, &total);
	o->rep.disk_done = done;
	o->rep.disk_total = total;
	snprintf(d, sizeof(d), "disk phase: %u of %zu volume%s in sync, %.20s of %.20s copied",
		 o->mm.n_ready, o->n_disks, o->n_disks == 1 ? "" : "s",
		 mig_fmt_bytes(b1, sizeof(b1), done), mig_fmt_bytes(b2, sizeof(b2), total));
	o->m->env->job_progress(o->j, done, total, "bytes", d);
	report(o);
	out_tick_arm(o);
}

static void tick(void *data)
{
	struct mig_out *o = data;

	o->tick = 0;
	if ((o->st != OUT_TRANSFER && o->st != OUT_DISKS) || o->tick_busy)
		return;
	if (cancelled(o, ""))
		return;
	if (!o->m->env->quorate(o->m->env->ctx)) {
		rollback(o, HCA__ERROR_CODE__ERROR_NO_QUORUM, "vm %s: this node lost quorum during "
			 "the migration", o->vm);
		return;
	}
	/* a stream to a node that left the membership may stall for minutes
	 * before TCP says so */
	if (!o->m->env->online(o->m->env->ctx, o->target)) {
		rollback(o, HCA__ERROR_CODE__ERROR_TIMEOUT, "vm %s: node %s left the cluster during "
			 "the migration", o->vm, o->target);
		return;
	}
	o->tick_busy = true;
	if (o->st == OUT_DISKS) {
		if (hv_vm_qmp(o->hv, "query-block-jobs", NULL, 0, disks_tick_done, o) < 0) {
			o->tick_busy = false;
			rollback(o, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: the source QEMU is "
				 "unreachable", o->vm);
		}
		return;
	}
	if (hv_vm_qmp(o->hv, "query-migrate", NULL, 0, tick_done, o) < 0) {
		o->tick_busy = false;
		rollback(o, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: the source QEMU is "
			 "unreachable", o->vm);
	}
}

static void out_tick_arm(struct mig_out *o)
{
	if (!o->tick && (o->st == OUT_TRANSFER || o->st == OUT_DISKS))
		qb_loop_timer_add(o->m->env->loop, QB_LOOP_LOW, TICK_MS * QB_TIME_NS_IN_MSEC, o,
				  tick, &o->tick);
}

static void failed_why(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
		       const char *errdesc, void *opaque)
{
	struct mig_out *o = opaque;
	const char *why = err ? NULL : json_string_value(json_object_get(ret, "error-desc"));
	const char *st = err ? NULL : json_string_value(json_object_get(ret, "status"));

	(void)hv;
	(void)errclass;
	(void)errdesc;
	if (err == -ECANCELED || o->st >= OUT_COMMIT)
		return;
	rollback(o, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: the migration stream to %s %s: %s",
		 o->vm, o->target, st ? st : "failed",
		 why ? why : "QEMU gave no reason (the destination's QEMU may have ended)");
}

/* ---- the disks at the switchover ---- */

static void sw_continue(struct mig_out *o)
{
	hv_vm_qmp(o->hv, "migrate-continue", json_pack("{s:s}", "state", "pre-switchover"), 0,
		  NULL, NULL);
}

/* The mirrors finished; their NBD client nodes go, one after the other,
 * then the device state (the destination drops its exports only once no
 * client is attached, and QEMU cannot inactivate a disk a node still
 * writes to). */
static void detach_done(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
			const char *errdesc, void *opaque)
{
	struct mig_out *o = opaque;
	struct mig_disk_names n;

	(void)hv;
	(void)ret;
	(void)errclass;
	if (err == -ECANCELED || o->st != OUT_SWITCHOVER)
		return;
	if (err) {
		rollback(o, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: cannot detach the NBD "
			 "target of disk %s: %s", o->vm, o->mm.d[o->step].disk,
			 errdesc ? errdesc : strerror(-err));
		return;
	}
	if (++o->step < o->mm.n) {
		mig_disk_names(o->mm.d[o->step].disk, &n);
		if (hv_vm_qmp(o->hv, "blockdev-del", json_pack("{s:s}", "node-name", n.nbd), 0,
			      detach_done, o) < 0)
			rollback(o, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: the source QEMU is "
				 "unreachable", o->vm);
		return;
	}
	o->rep.disk_finish_ms = mig_mono_ms() - o->finish_t0;
	sw_continue(o);
}

static void finish_sent(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
			const char *errdesc, void *opaque)
{
	struct mig_out *o = opaque;

	(void)hv;
	(void)ret;
	(void)errclass;
	if (err == -ECANCELED || err == 0 || o->st != OUT_SWITCHOVER)
		return;
	rollback(o, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: cannot finish the disk mirrors: "
		 "%s", o->vm, errdesc ? errdesc : strerror(-err));
}

/* pre-switchover with disks: finish every mirror (a cancel of a READY
 * mirror copies what is left and ends it without a pivot), then detach. */
static void disks_finish(struct mig_out *o)
{
	struct mig_disk_names n;

	o->finish_t0 = mig_mono_ms();
	o->mm.finishing = true;
	for (unsigned i = 0; i < o->mm.n; i++) {
		mig_disk_names(o->mm.d[i].disk, &n);
		if (hv_vm_qmp(o->hv, "block-job-cancel", json_pack("{s:s}", "device", n.job), 0,
			      finish_sent, o) < 0) {
			rollback(o, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: the source QEMU is "
				 "unreachable", o->vm);
			return;
		}
	}
}

static void setup_step(struct mig_out *o);

/* Every mirror is in sync: from now on each guest write waits for the
 * destination too (write-blocking), so nothing can fall behind. */
static void disks_synced(struct mig_out *o)
{
	uint64_t done, total;

	o->synced = true;
	o->rep.disk_ready_ms = mig_mono_ms() - o->disk_t0;
	mig_mirrors_jobs(&o->mm, NULL, &done, &total);
	o->rep.disk_done = done;
	o->rep.disk_total = total;
	bool pool = false;

	for (size_t i = 0; i < o->n_disks; i++)
		pool = pool || !strcmp(o->tgt_backend[i], "rbd");
	snprintf(o->disk_mode, sizeof(o->disk_mode), "NBD mirror over TLS%s: background copy, "
		 "write-blocking from %.1f s", pool ? " into the RBD pool" : "",
		 (double)o->rep.disk_ready_ms / 1000.0);
	qb_log(LOG_INFO, "vm %s: %zu disk mirror%s in sync after %llu ms: write-blocking from "
	       "now on", o->vm, o->n_disks, o->n_disks == 1 ? "" : "s",
	       (unsigned long long)o->rep.disk_ready_ms);
	report(o);
}

static void disk_event(struct mig_out *o, const char *event, json_t *data)
{
	struct mig_disk_names n;
	char why[300];

	switch (mig_mirrors_event(&o->mm, event, data, why, sizeof(why))) {
	case MIG_MM_FAILED:
		if (o->st < OUT_COMMIT)
			rollback(o, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: %s", o->vm, why);
		return;
	case MIG_MM_READY:
		if (o->st != OUT_DISKS)
			return; /* still starting them: setup_step sees it */
		if (o->tick)
			qb_loop_timer_del(o->m->env->loop, o->tick);
		o->tick = 0;
		o->st = OUT_SETUP;
		setup_step(o); /* at 2 + 2n: in sync, on to block-job-change */
		return;
	case MIG_MM_DONE:
		if (o->st != OUT_SWITCHOVER)
			return;
		o->step = 0;
		mig_disk_names(o->mm.d[0].disk, &n);
		if (hv_vm_qmp(o->hv, "blockdev-del", json_pack("{s:s}", "node-name", n.nbd), 0,
			      detach_done, o) < 0)
			rollback(o, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: the source QEMU is "
				 "unreachable", o->vm);
		return;
	case MIG_MM_NONE:
		return;
	}
}

void mig_src_event(struct mig *m, const char *vm, const char *event, json_t *data)
{
	struct mig_out *o = out_find(m, vm);
	const char *st;

	if (!o || o->st < OUT_SETUP)
		return;
	if (o->mm.n && !strncmp(event, "BLOCK_JOB_", 10)) {
		if (o->st != OUT_ROLLBACK)
			disk_event(o, event, data);
		return;
	}
	if (!strcmp(event, "STOP")) {
		o->stop_us = mig_now_us();
		return;
	}
	if (strcmp(event, "MIGRATION") || !(st = json_string_value(json_object_get(data, "status"))))
		return;
	if (!strcmp(st, "pre-switchover") && o->st == OUT_TRANSFER) {
		if (cancelled(o, ""))
			return;
		phase(o, OUT_SWITCHOVER, PH(SWITCHOVER));
		if (o->mm.n)
			disks_finish(o);
		else
			sw_continue(o);
	} else if (!strcmp(st, "completed") &&
		   (o->st == OUT_SWITCHOVER || o->st == OUT_TRANSFER)) {
		completed(o);
	} else if ((!strcmp(st, "failed") || !strcmp(st, "cancelled")) && o->st < OUT_COMMIT &&
		   !o->cancel) {
		/* why: QEMU says it in query-migrate's error-desc */
		if (hv_vm_qmp(o->hv, "query-migrate", NULL, 0, failed_why, o) < 0)
			failed_why(o->hv, -EIO, NULL, NULL, NULL, o);
	}
}

/* ---- set-up of this QEMU, then migrate ---- */

static void setup_done(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
		       const char *errdesc, void *opaque)
{
	struct mig_out *o = opaque;

	(void)hv;
	(void)ret;
	(void)errclass;
	if (err == -ECANCELED || o->st != OUT_SETUP)
		return;
	if (err && o->step != 0) { /* step 0 deletes what may not exist */
		bool busy = errdesc && strstr(errdesc, "in progress");
		rollback(o, busy ? HCA__ERROR_CODE__ERROR_BUSY : HCA__ERROR_CODE__ERROR_HYPERVISOR,
			 "vm %s: the source QEMU refused step %u of the set-up: %s%s", o->vm,
			 o->step, errdesc ? errdesc : strerror(-err),
			 busy ? " (QEMU is still letting go of an earlier migration's stream; "
				"try again in a minute)" : "");
		return;
	}
	o->step++;
	setup_step(o);
}

/*
 * The steps, with n disks: 0-1 the TLS credentials; 2..2+n-1 each disk's
 * NBD client; 2+n..2+2n-1 its mirror, then the disk phase (OUT_DISKS)
 * until all are in sync; 2+2n..2+3n-1 each mirror to write-blocking; then
 * capabilities, parameters, migrate. Without disks, the steps of a live
 * migration.
 */
static void setup_step(struct mig_out *o)
{
	const char *cmd = NULL;
	json_t *args = NULL;
	char uri[128];
	unsigned n = (unsigned)o->n_disks, step = o->step;
	int rc;

	if (cancelled(o, ""))
		return;
	if (n && step == 2 + 2 * n && !o->synced) {
		if (o->mm.n_ready < n) {
			/* every mirror started: wait until all are in sync */
			phase(o, OUT_DISKS, PH(TRANSFER));
			snprintf(o->disk_mode, sizeof(o->disk_mode),
				 "NBD mirror over TLS: background copy");
			out_tick_arm(o);
			return;
		}
		disks_synced(o);
	}
	if (n && step >= 2 && step < 2 + 3 * n) {
		unsigned k = (step - 2) % n;
		const char *disk = o->mm.d[k].disk;
		if (step < 2 + n) {
			cmd = "blockdev-add";
			args = mig_nbd_client_json(disk, o->host, o->nbd_port, o->plan.tls_creds,
						   o->target);
		} else if (step < 2 + 2 * n) {
			if (step == 2 + n)
				o->disk_t0 = mig_mono_ms();
			cmd = "blockdev-mirror";
			args = mig_mirror_json(disk);
		} else {
			cmd = "block-job-change";
			args = mig_mirror_active_json(disk);
		}
	}
	if (cmd)
		goto send;
	step = n ? (step >= 2 ? step - 3 * n : step) : step;
	switch (step) {
	case 0: /* a QEMU that came in by migration has server credentials */
		/* and one whose earlier migration was cut off may still hold
		 * its NBD nodes: gone now, or blockdev-add says why */
		for (unsigned i = 0; i < o->mm.n; i++) {
			struct mig_disk_names dn;
			mig_disk_names(o->mm.d[i].disk, &dn);
			hv_vm_qmp(o->hv, "blockdev-del", json_pack("{s:s}", "node-name", dn.nbd), 0,
				  NULL, NULL);
		}
		if (!o->plan.tls_creds) {
			o->step = 2;
			setup_step(o);
			return;
		}
		cmd = "object-del";
		args = json_pack("{s:s}", "id", MIG_TLS_ID);
		break;
	case 1:
		cmd = "object-add";
		args = mig_tls_creds_json(&o->plan, MIG_SRC, o->m->host.tls_dir);
		break;
	case 2:
		cmd = "migrate-set-capabilities";
		args = mig_caps_json(&o->plan, MIG_SRC);
		break;
	case 3:
		cmd = "migrate-set-parameters";
		args = mig_params_json(&o->plan, MIG_SRC);
		break;
	case 4:
		snprintf(uri, sizeof(uri), strchr(o->host, ':') ? "tcp:[%s]:%u" : "tcp:%s:%u",
			 o->host, o->port);
		cmd = "migrate";
		args = json_pack("{s:s}", "uri", uri);
		break;
	default:
		phase(o, OUT_TRANSFER, PH(TRANSFER));
		out_tick_arm(o);
		return;
	}
send:
	if (!args) {
		rollback(o, HCA__ERROR_CODE__ERROR_INTERNAL, "vm %s: cannot build the arguments of "
			 "%s", o->vm, cmd);
		return;
	}
	if ((rc = hv_vm_qmp(o->hv, cmd, args, 0, setup_done, o)) < 0)
		rollback(o, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: the source QEMU is "
			 "unreachable: %s", o->vm, strerror(-rc));
}

static void prepared(int err, const void *body, size_t len, const char *msg, void *opaque)
{
	struct mig_out *o = opaque;
	Hca__MigPrepared *p;

	if (!answer_for(o))
		return;
	p = err ? NULL : hca__mig_prepared__unpack(NULL, len, body);
	if (o->st != OUT_PREPARE) {
		if (p)
			hca__mig_prepared__free_unpacked(p, NULL);
		return;
	}
	o->dst_up = true; /* even a failure may have left a QEMU there */
	if (!p || !p->port || p->port > 65535 || !p->host[0] || strlen(p->host) >= sizeof(o->host)) {
		rollback(o, err == -EBUSY ? HCA__ERROR_CODE__ERROR_BUSY
					  : HCA__ERROR_CODE__ERROR_HYPERVISOR,
			 "vm %s: node %s cannot take it: %s", o->vm, o->target,
			 err ? msg : "malformed answer");
		if (p)
			hca__mig_prepared__free_unpacked(p, NULL);
		return;
	}
	if (o->n_disks && (!p->nbd_port || p->nbd_port > 65535)) {
		rollback(o, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: node %s did not say where "
			 "its NBD server listens for the disks", o->vm, o->target);
		hca__mig_prepared__free_unpacked(p, NULL);
		return;
	}
	snprintf(o->host, sizeof(o->host), "%s", p->host);
	o->port = p->port;
	o->nbd_port = p->nbd_port;
	hca__mig_prepared__free_unpacked(p, NULL);
	phase(o, OUT_SETUP, -1);
	o->step = 0;
	setup_step(o);
}

static void prepare(struct mig_out *o)
{
	const struct hca_env *e = o->m->env;
	Hca__MigPrepare q = HCA__MIG_PREPARE__INIT;
	Hca__VmRecord rec = HCA__VM_RECORD__INIT;
	Hca__VmSpec spec = HCA__VM_SPEC__INIT;
	Hca__MigDisk *disks[MIG_DISKS_MAX];
	uint8_t *buf;
	size_t len;
	int rc;

	if (cancelled(o, ""))
		return;
	phase(o, OUT_PREPARE, PH(PREPARE));
	spec.name = o->vm;
	rec.spec = &spec;
	rec.owner = (char *)e->node;
	rec.owner_epoch = o->epoch;
	rec.incarnation = o->incarnation;
	rec.active = true;
	q.job = o->job_id;
	q.record = &rec;
	q.source = (char *)e->node;
	q.multifd = o->plan.multifd;
	q.streams = o->plan.streams;
	q.compress = o->plan.compress == MIG_COMPRESS_ZSTD ? HCA__MIG_COMPRESS__MIG_COMPRESS_ZSTD
							    : HCA__MIG_COMPRESS__MIG_COMPRESS_NONE;
	q.postcopy = o->plan.postcopy;
	q.tls = o->plan.tls_creds != NULL;
	q.tls_no_aes = o->plan.tls_priority != NULL;
	for (size_t i = 0; i < o->n_disks; i++)
		disks[i] = &o->disks[i];
	q.disks = disks;
	q.n_disks = o->n_disks;
	len = hca__mig_prepare__get_packed_size(&q);
	if (!(buf = malloc(len + 1))) {
		rollback(o, HCA__ERROR_CODE__ERROR_INTERNAL, "vm %s: out of memory", o->vm);
		return;
	}
	hca__mig_prepare__pack(&q, buf);
	rc = out_call(o, MIG_M_PREPARE, buf, len, MIG_CALL_MS, prepared);
	free(buf);
	if (rc < 0)
		rollback(o, HCA__ERROR_CODE__ERROR_TIMEOUT, "vm %s: node %s is unreachable "
			 "(node channel)", o->vm, o->target);
}

/* ---- check: the dirty rate, then the plan ---- */

/* The plan as asked, with what was measured, in @conv mode; resolved into
 * o->plan, the reasons in @why. */
/* The cores in use on this node since the check began, in thousandths;
 * 0: unknown. */
static uint32_t busy_milli(const struct mig_out *o)
{
	uint64_t busy, all;
	unsigned cores = o->m->host.host_cores;

	if (!o->cpu_known || !cores || o->m->host.cpu_ticks(o->m->host.ctx, &busy, &all) < 0 ||
	    all <= o->cpu_all0 || busy < o->cpu_busy0)
		return 0;
	busy = (busy - o->cpu_busy0) * 1000u * cores / (all - o->cpu_all0);
	return busy > 1000u * cores ? 1000u * cores : busy ? (uint32_t)busy : 1;
}

static int plan_resolve(struct mig_out *o, enum mig_converge conv, uint64_t dirty_rate,
			char *why, size_t len)
{
	struct mig_rate *slot = rate_slot(o->m, o->target, false);

	o->plan = (struct mig_plan){
		.downtime_ms = o->req_downtime,
		.max_bandwidth = o->req_bandwidth,
		.streams = o->req_streams,
		.compress = o->req_compress,
		.converge = conv,
		.deadline_s = o->req_deadline,
		.host_cores = o->m->host.host_cores,
		.busy_milli = busy_milli(o),
		.dirty_rate = dirty_rate,
		.link_rate = slot ? slot->rate : 0,
		.ram_bytes = o->ram,
		.zstd_pct = o->zstd_pct,
		.zstd_rate = o->zstd_rate,
		.tls_creds = MIG_TLS_ID,
		.tls_hostname = o->target, /* the destination's certificate names it */
		.avoid_1937 = true,        /* QEMU 10.0 has it */
	};
	return mig_plan_resolve(&o->plan, why, len);
}

static void plan_make(struct mig_out *o, bool measured, uint64_t dirty_rate)
{
	char why[sizeof(o->why) - 64];
	char b[32];
	/* post-copy runs the guest on the destination before the stream ends,
	 * ahead of the commit: not offered until that path exists; such a
	 * plan is made again in throttle mode */
	bool again = false;

	if (plan_resolve(o, o->req_converge, dirty_rate, why, sizeof(why)) == 0 &&
	    o->plan.postcopy) {
		again = true;
		plan_resolve(o, MIG_CONVERGE_THROTTLE, dirty_rate, why, sizeof(why));
	}
	if (!o->plan.resolved) {
		rollback(o, HCA__ERROR_CODE__ERROR_INVALID, "vm %s: %s", o->vm, why);
		return;
	}
	if (again)
		strncat(why, "; post-copy would fit the dirty rate, but hca does not offer it "
			"yet: throttle instead", sizeof(why) - strlen(why) - 1);
	if (measured)
		snprintf(o->why, sizeof(o->why), "dirty rate %.20s/s measured; %s",
			 mig_fmt_bytes(b, sizeof(b), dirty_rate), why);
	else
		snprintf(o->why, sizeof(o->why), "dirty rate not measured; %s", why);
	if (o->plan.multifd)
		snprintf(o->mode, sizeof(o->mode), "multifd %u stream%s, %s, TLS%s",
			 o->plan.streams, o->plan.streams == 1 ? "" : "s",
			 o->plan.compress == MIG_COMPRESS_ZSTD ? "zstd" : "no compression",
			 o->plan.tls_priority ? " (ChaCha20)" : "");
	else
		snprintf(o->mode, sizeof(o->mode), "one stream, post-copy allowed, TLS%s",
			 o->plan.tls_priority ? " (ChaCha20)" : "");
	o->pol = mig_policy_new(&o->plan, mig_mono_ms());
	if (!o->pol) {
		rollback(o, HCA__ERROR_CODE__ERROR_INTERNAL, "vm %s: out of memory", o->vm);
		return;
	}
	qb_log(LOG_INFO, "vm %s: migration plan to %s: %s", o->vm, o->target, o->why);
	prepare(o);
}

/*
 * Does zstd pay on this guest's memory? SAMPLE_CHUNKS pieces of its RAM,
 * spread over it, saved by QEMU (pmemsave: a few ms of its main loop
 * each), then compressed on a worker as multifd would (level 1, batches of
 * pages, zero pages left out: QEMU sends those as a flag). The share they
 * shrink to and the rate one core did it at go into the plan.
 */
#define SAMPLE_CHUNKS 8u
#define SAMPLE_CHUNK (512u << 10)
#define SAMPLE_PAGE 4096u

static void sample_path(const struct mig_out *o, unsigned i, char *out, size_t len)
{
	snprintf(out, len, "%s/%s.sample%u", o->m->host.scratch_dir, o->vm, i);
}

static void sample_fn(struct exec_item *it)
{
	struct mig_out *o = EXEC_CONTAINER_OF(it, struct mig_out, item);
	uint8_t *in = malloc(SAMPLE_CHUNK), *nz = malloc(SAMPLE_CHUNK);
	size_t bound = ZSTD_compressBound(SAMPLE_CHUNK);
	uint8_t *out = malloc(bound);
	uint64_t total_in = 0, total_out = 0, ns = 0;
	static const uint8_t zero[SAMPLE_PAGE];
	char path[600];

	for (unsigned i = 0; in && nz && out && i < SAMPLE_CHUNKS; i++) {
		FILE *f;
		size_t n, k = 0;
		struct timespec a, b;

		sample_path(o, i, path, sizeof(path));
		if (!(f = fopen(path, "rb")))
			continue;
		n = fread(in, 1, SAMPLE_CHUNK, f);
		fclose(f);
		unlink(path);
		for (size_t p = 0; p + SAMPLE_PAGE <= n; p += SAMPLE_PAGE)
			if (memcmp(in + p, zero, SAMPLE_PAGE)) {
				memcpy(nz + k, in + p, SAMPLE_PAGE);
				k += SAMPLE_PAGE;
			}
		if (!k)
			continue;
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
		n = ZSTD_compress(out, bound, nz, k, 1);
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
		if (ZSTD_isError(n))
			continue;
		ns += (uint64_t)(b.tv_sec - a.tv_sec) * 1000000000u + (uint64_t)b.tv_nsec -
		      (uint64_t)a.tv_nsec;
		total_in += k;
		total_out += n;
	}
	o->zstd_pct = total_in ? (uint32_t)(total_out * 100 / total_in) : 0;
	if (total_in && !o->zstd_pct)
		o->zstd_pct = 1;
	o->zstd_rate = total_in && ns ? total_in * 1000000000u / ns : 0;
	free(in);
	free(nz);
	free(out);
}

static void sample_done(struct exec_item *it)
{
	struct mig_out *o = EXEC_CONTAINER_OF(it, struct mig_out, item);

	if (!answer_for(o) || exec_item_cancelled(it) || o->st != OUT_DIRTY)
		return;
	plan_make(o, o->dirty_measured, o->dirty_rate);
}

static void sample_saved(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
			 const char *errdesc, void *opaque)
{
	struct mig_out *o = opaque;

	(void)hv;
	(void)ret;
	(void)errclass;
	(void)errdesc;
	if (err == -ECANCELED || o->st != OUT_DIRTY)
		return;
	o->sample_i = err ? SAMPLE_CHUNKS : o->sample_i + 1; /* a failure: use what came */
	sample_step(o);
}

static void sample_step(struct mig_out *o)
{
	uint64_t span = o->ram < (2ull << 30) ? o->ram : (2ull << 30); /* below the PCI hole */
	char path[600];

	if (!o->m->host.scratch_dir || o->cancel) {
		plan_make(o, o->dirty_measured, o->dirty_rate);
		return;
	}
	if (o->sample_i < SAMPLE_CHUNKS && span >= 2 * SAMPLE_CHUNK * SAMPLE_CHUNKS) {
		uint64_t at = (1ull << 20) + o->sample_i * ((span - (1ull << 20)) / SAMPLE_CHUNKS);
		sample_path(o, o->sample_i, path, sizeof(path));
		if (hv_vm_qmp(o->hv, "pmemsave", json_pack("{s:I,s:I,s:s}", "val", (json_int_t)at,
							   "size", (json_int_t)SAMPLE_CHUNK,
							   "filename", path),
			      0, sample_saved, o) == 0)
			return;
	}
	o->calls++; /* out_end leaves it to sample_done to free */
	exec_item_init(&o->item, sample_fn, sample_done);
	exec_push(o->m->q, &o->item, NULL);
}

static void dirty_done(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
		       const char *errdesc, void *opaque)
{
	struct mig_out *o = opaque;
	const char *st = json_string_value(json_object_get(ret, "status"));

	(void)hv;
	(void)errclass;
	(void)errdesc;
	if (err == -ECANCELED || o->st != OUT_DIRTY)
		return;
	/* "dirty-rate" is MiB/s; without a figure the plan takes the safe side */
	if (!err && st && !strcmp(st, "measured")) {
		o->dirty_measured = true;
		o->dirty_rate = (uint64_t)json_integer_value(json_object_get(ret, "dirty-rate")) << 20;
	}
	sample_step(o);
}

static void dirty_query(void *data)
{
	struct mig_out *o = data;

	o->tick = 0;
	if (hv_vm_qmp(o->hv, "query-dirty-rate", NULL, 0, dirty_done, o) < 0)
		plan_make(o, false, 0);
}

static void dirty_started(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
			  const char *errdesc, void *opaque)
{
	struct mig_out *o = opaque;

	(void)hv;
	(void)ret;
	(void)errclass;
	if (err == -ECANCELED || o->st != OUT_DIRTY)
		return;
	if (err) {
		qb_log(LOG_INFO, "vm %s: no dirty rate measured (%s)", o->vm,
		       errdesc ? errdesc : strerror(-err));
		plan_make(o, false, 0);
		return;
	}
	qb_loop_timer_add(o->m->env->loop, QB_LOOP_LOW,
			  (DIRTY_CALC_S * 1000u + 200u) * QB_TIME_NS_IN_MSEC, o, dirty_query,
			  &o->tick);
}

static void begin(struct mig_out *o)
{
	o->m->n_out++;
	o->counted = true;
	phase(o, OUT_DIRTY, PH(CHECK));
	o->cpu_known = o->m->host.cpu_ticks &&
		       o->m->host.cpu_ticks(o->m->host.ctx, &o->cpu_busy0, &o->cpu_all0) >= 0;
	o->m->env->job_progress(o->j, 0, o->ram, "bytes", "measuring the guest's dirty rate");
	if (hv_vm_qmp(o->hv, "calc-dirty-rate", json_pack("{s:i}", "calc-time", DIRTY_CALC_S), 0,
		      dirty_started, o) < 0)
		plan_make(o, false, 0);
}

static void start_next(struct mig *m)
{
	unsigned max = m->host.max_out ? m->host.max_out : 2;

	for (struct mig_out *o = m->outs; o && m->n_out < max && !m->stopping; o = o->next)
		if (o->st == OUT_QUEUED && !o->cancel)
			begin(o);
}

static int out_cancel(struct job *j, void *opaque, char *err, size_t errlen)
{
	struct mig_out *o = opaque;

	(void)j;
	if (o->st >= OUT_COMMIT && o->st != OUT_ROLLBACK) {
		snprintf(err, errlen, "cannot be cancelled: the owner record is being moved");
		return -EBUSY;
	}
	o->cancel = true;
	if (o->st == OUT_QUEUED)
		rollback(o, 0, "cancelled by the user while queued");
	else if ((o->st == OUT_TRANSFER || o->st == OUT_DISKS) && !o->tick_busy) {
		if (o->tick)
			qb_loop_timer_del(o->m->env->loop, o->tick);
		o->tick = 0;
		rollback(o, 0, "cancelled by the user");
	}
	/* other phases see the flag at their next step */
	return 0;
}

int mig_start(struct mig *m, struct job *j, const char *job_id, struct hv_vm *hv, const char *vm,
	      uint64_t owner_epoch, uint64_t incarnation, uint64_t ram_bytes,
	      const Hca__MigDisk *const *disks, size_t n_disks, const Hca__MigrateRequest *req,
	      char *err, size_t errlen)
{
	const struct hca_env *e = m->env;
	struct mig_out *o;
	enum mig_compress comp;
	enum mig_converge conv;

	if (!req->target[0] || !strcmp(req->target, e->node)) {
		snprintf(err, errlen, "vm %s: already on node %s", vm, e->node);
		return -EINVAL;
	}
	if (!e->member(e->ctx, req->target)) {
		snprintf(err, errlen, "vm %s: node %s is not a member of the cluster", vm,
			 req->target);
		return -ENOENT;
	}
	if (!e->online(e->ctx, req->target)) {
		snprintf(err, errlen, "vm %s: node %s is offline", vm, req->target);
		return -EHOSTDOWN;
	}
	if (!m->host.tls_dir) {
		snprintf(err, errlen, "vm %s: this node has no TLS credentials for QEMU's "
			 "migration stream (the cluster certificates)", vm);
		return -ENOKEY;
	}
	if (mig_busy(m, vm)) {
		snprintf(err, errlen, "vm %s: already migrating", vm);
		return -EBUSY;
	}
	switch (req->compress) {
	case HCA__MIG_COMPRESS__MIG_COMPRESS_NONE: comp = MIG_COMPRESS_NONE; break;
	case HCA__MIG_COMPRESS__MIG_COMPRESS_ZSTD: comp = MIG_COMPRESS_ZSTD; break;
	case HCA__MIG_COMPRESS__MIG_COMPRESS_AUTO: comp = MIG_COMPRESS_AUTO; break;
	default:
		snprintf(err, errlen, "vm %s: unknown compression %d", vm, (int)req->compress);
		return -EINVAL;
	}
	switch (req->converge) {
	case HCA__MIG_CONVERGE__MIG_CONVERGE_AUTO: conv = MIG_CONVERGE_AUTO; break;
	case HCA__MIG_CONVERGE__MIG_CONVERGE_THROTTLE: conv = MIG_CONVERGE_THROTTLE; break;
	case HCA__MIG_CONVERGE__MIG_CONVERGE_POSTCOPY: conv = MIG_CONVERGE_POSTCOPY; break;
	case HCA__MIG_CONVERGE__MIG_CONVERGE_NEVER: conv = MIG_CONVERGE_NEVER; break;
	default:
		snprintf(err, errlen, "vm %s: unknown convergence mode %d", vm, (int)req->converge);
		return -EINVAL;
	}
	if (conv == MIG_CONVERGE_POSTCOPY) {
		/* post-copy runs the guest on the destination before the stream
		 * ends: the commit would have to come first, and a failure after
		 * it loses the guest. Not offered until that path is built. */
		snprintf(err, errlen, "vm %s: --converge postcopy is not supported yet (use auto, "
			 "throttle or never)", vm);
		return -ENOTSUP;
	}
	if (!(o = calloc(1, sizeof(*o)))) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	o->m = m;
	o->j = j;
	o->hv = hv;
	snprintf(o->vm, sizeof(o->vm), "%s", vm);
	snprintf(o->target, sizeof(o->target), "%s", req->target);
	snprintf(o->job_id, sizeof(o->job_id), "%s", job_id);
	o->epoch = owner_epoch;
	o->incarnation = incarnation;
	o->ram = ram_bytes;
	o->req_downtime = req->downtime_ms;
	o->req_bandwidth = req->max_bandwidth;
	o->req_streams = req->streams;
	o->req_deadline = req->deadline_s;
	o->req_compress = comp;
	o->req_converge = conv;
	o->t0_ms = mig_mono_ms();
	if (n_disks > MIG_DISKS_MAX) {
		snprintf(err, errlen, "vm %s: %zu disks to move, at most %u", vm, n_disks,
			 MIG_DISKS_MAX);
		free(o);
		return -E2BIG;
	}
	for (size_t i = 0; i < n_disks; i++) {
		const Hca__MigDisk *d = disks[i];
		if (strlen(d->disk) >= sizeof(o->disk_names[i]) ||
		    strlen(d->volume) >= sizeof(o->vol_names[i]) ||
		    strlen(d->target_backend) >= sizeof(o->tgt_backend[i]) ||
		    strlen(d->target_path) >= sizeof(o->tgt_path[i]) ||
		    (!strcmp(d->target_backend, "rbd") && strncmp(d->target_path, "rbd:", 4)) ||
		    mig_mirrors_add(&o->mm, d->disk, d->allocated) < 0) {
			snprintf(err, errlen, "vm %s: disk %s cannot be moved (name)", vm, d->disk);
			free(o);
			return -EINVAL;
		}
		hca__mig_disk__init(&o->disks[i]);
		snprintf(o->disk_names[i], sizeof(o->disk_names[i]), "%s", d->disk);
		snprintf(o->vol_names[i], sizeof(o->vol_names[i]), "%s", d->volume);
		snprintf(o->tgt_backend[i], sizeof(o->tgt_backend[i]), "%s", d->target_backend);
		snprintf(o->tgt_path[i], sizeof(o->tgt_path[i]), "%s", d->target_path);
		o->disks[i].disk = o->disk_names[i];
		o->disks[i].volume = o->vol_names[i];
		o->disks[i].target_backend = o->tgt_backend[i];
		o->disks[i].target_path = o->tgt_path[i];
		o->disks[i].size_bytes = d->size_bytes;
		o->disks[i].format = d->format;
		o->disks[i].allocated = d->allocated;
	}
	o->n_disks = n_disks;
	hca__mig_report__init(&o->rep);
	snprintf(o->policy, sizeof(o->policy), "no action");
	o->next = m->outs;
	m->outs = o;
	e->job_on_cancel(j, out_cancel, o);
	report(o);
	start_next(m);
	if (o->st == OUT_QUEUED)
		e->job_progress(j, 0, 0, NULL, "waiting for a free migration slot on this node");
	return 0;
}

void mig_src_free_all(struct mig *m)
{
	while (m->outs) {
		struct mig_out *o = m->outs;
		/* left to the restart's resolution, from the record */
		m->outs = o->next;
		if (o->tick)
			qb_loop_timer_del(m->env->loop, o->tick);
		mig_policy_free(o->pol);
		o->pol = NULL;
		o->dead = true;
		if (!o->calls)
			free(o); /* else the channel's last answer frees it */
	}
}
