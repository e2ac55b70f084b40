/*
 * vmm_run: start, stop and shutdown as jobs, and the owner's claim.
 *
 * The owner protocol (ARCHITECTURE.md "Ownership"): a QEMU is launched only
 * after sto_owner_cas() has named this node owner with `active` set, at the
 * epoch read, and sto_owner_confirm() said so again right before the
 * launch. While `active` is set no other node takes the VM. The owner
 * clears it (vmm_release) once it has seen its QEMU end.
 */
#include "agent/net.h"
#include "agent/vmm_priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <qb/qblog.h>

#define RELEASE_RETRY_MS 2000u

bool vmm_check_owned(struct vmm *m, struct vm *v, vmm_reply_fn fn, void *ctx)
{
	if (vmm_owned(m, v))
		return true;
	vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
			"vm %s: owned by node %s, not this node (%s); run this there",
			v->name, v->rec->owner, m->conf->node_name);
	return false;
}

/* ---- release: clear the claim once QEMU has ended ---- */

struct release {
	struct exec_item item;
	struct vmm *m;
	struct vm *vm;
	Hca__VmRecord *rec; /* the record the CAS starts from */
	bool set;           /* the claim to write: set (a QEMU found running) or clear */
	uint64_t version;
	int rc;
	char err[256];
};

static void release_fn(struct exec_item *it)
{
	struct release *r = EXEC_CONTAINER_OF(it, struct release, item);
	struct sto_owner cur = { r->rec->owner, r->rec->owner_epoch, !r->set, r->rec->incarnation };
	struct sto_owner next = { r->rec->owner, 0, r->set, 0 };

	r->rc = sto_owner_cas(r->m->store, r->vm->name, &cur, &next, NULL, &r->version, r->err,
			      sizeof(r->err));
}

static void release_retry(void *data)
{
	struct vm *v = data;

	v->releasing = false;
	if (vmm_vm_put(v))
		return;
	if (v->rec && v->rec->active && !vmm_vm_running(v) && !v->job)
		vmm_release(v->m, v);
	else if (v->rec && !v->rec->active && vmm_vm_running(v) && !v->job)
		vmm_claim_running(v->m, v);
}

static void release_done(struct exec_item *it)
{
	struct release *r = EXEC_CONTAINER_OF(it, struct release, item);
	struct vm *v = r->vm;

	v->releasing = false;
	if (vmm_vm_put(v) || exec_item_cancelled(it)) {
		hca__vm_record__free_unpacked(r->rec, NULL);
		free(r);
		return;
	}
	if (r->rc == 0 && v->rec && v->rec->incarnation == r->rec->incarnation) {
		v->rec->active = r->set;
		if (r->version > v->version)
			v->version = r->version;
		qb_log(LOG_INFO, "vm %s: %s", v->name, r->set ? "claim set (its QEMU runs here)"
							       : "claim released (QEMU ended)");
	} else if (r->rc == -ECANCELED && !r->m->stopping) {
		/* the record moved under us (a state write of ours): again */
		qb_loop_timer_add(r->m->loop, QB_LOOP_LOW, 100 * QB_TIME_NS_IN_MSEC, v,
				  release_retry, NULL);
		v->releasing = true;
		v->refs++;
	} else if (r->rc < 0 && r->rc != -ESTALE && r->rc != -ENOENT && !r->m->stopping) {
		qb_log(LOG_WARNING, "vm %s: claim not %s: %s; retrying", v->name,
		       r->set ? "set" : "released", r->err);
		qb_loop_timer_add(r->m->loop, QB_LOOP_LOW, RELEASE_RETRY_MS * QB_TIME_NS_IN_MSEC,
				  v, release_retry, NULL);
		v->releasing = true;
		v->refs++;
	}
	hca__vm_record__free_unpacked(r->rec, NULL);
	free(r);
}

static void claim_write(struct vmm *m, struct vm *v, bool set)
{
	char key[STO_KEY_MAX + 1];
	struct release *r;

	if (v->releasing || !v->rec || v->rec->active == set || !vmm_owned(m, v) ||
	    m->conf->cluster == CONF_CLUSTER_LOCAL || m->stopping)
		return;
	if (!(r = calloc(1, sizeof(*r))) || !(r->rec = sto_vm_copy(v->rec))) {
		free(r);
		return;
	}
	r->m = m;
	r->vm = v;
	r->set = set;
	v->releasing = true;
	v->refs++;
	exec_item_init(&r->item, release_fn, release_done);
	snprintf(key, sizeof(key), "vm/%s", v->name);
	exec_push(m->q_store, &r->item, key);
}

int vmm_own_cas(struct vmm *m, const char *name, struct sto_owner *cur,
		const struct sto_owner *next, uint64_t *epoch, uint64_t *version, char *err,
		size_t errlen)
{
	int rc = sto_owner_cas(m->store, name, cur, next, epoch, version, err, errlen);
	Hca__VmRecord *now = NULL;
	uint64_t ver = 0;
	char e[256];

	if (rc != -ESTALE || strcmp(cur->owner, m->conf->node_name) ||
	    sto_vm_get(m->store, name, &now, &ver, e, sizeof(e)) < 0)
		return rc;
	if (!strcmp(now->owner, cur->owner) && now->owner_epoch == cur->epoch &&
	    now->incarnation == cur->incarnation && now->active != cur->active) {
		/* only this node's own claim flag moved (its release or claim
		 * landed meanwhile): from the record as it is now */
		cur->active = now->active;
		rc = sto_owner_cas(m->store, name, cur, next, epoch, version, err, errlen);
	}
	hca__vm_record__free_unpacked(now, NULL);
	return rc;
}

void vmm_release(struct vmm *m, struct vm *v)
{
	claim_write(m, v, false);
}

void vmm_claim_running(struct vmm *m, struct vm *v)
{
	claim_write(m, v, true);
}

/* ---- start ---- */

static int start_check_files(struct op *op)
{
	const Hca__VmRecord *r = op->rec;
	const Hca__BootSpec *b = r->spec->boot;
	struct stat st;

	char buf[PATH_MAX];

	for (size_t i = 0; i < r->spec->n_disks; i++) {
		const char *path = vmm_disk_local_path(op->m, r, i, buf, sizeof(buf));
		if (!strncmp(path, "rbd:", 4))
			continue; /* QEMU opens it through librbd and says if it cannot */
		if (stat(path, &st) < 0) {
			snprintf(op->err, sizeof(op->err), "vm %s: disk %s: %s: %s", r->spec->name,
				 r->spec->disks[i]->name, path, strerror(errno));
			return -ENOENT;
		}
	}
	if (b && b->kernel[0] && access(b->kernel, R_OK) < 0) {
		snprintf(op->err, sizeof(op->err), "vm %s: kernel %s: %s", r->spec->name,
			 b->kernel, strerror(errno));
		return -ENOENT;
	}
	if (b && b->initrd[0] && access(b->initrd, R_OK) < 0) {
		snprintf(op->err, sizeof(op->err), "vm %s: initrd %s: %s", r->spec->name,
			 b->initrd, strerror(errno));
		return -ENOENT;
	}
	return 0;
}

/*
 * The claim's write failed without saying whether it landed (a Ceph
 * timeout): read the record back. If it says this node, claimed, at the
 * epoch the write would have made, it landed: hold it as claimed (so the
 * failing start releases it) and say so. Never guess either way.
 */
static bool claim_landed(struct op *op, Hca__VmRecord *r, const char *me, int rc)
{
	Hca__VmRecord *now = NULL;
	uint64_t ver = 0, epoch = r->owner_epoch + (strcmp(r->owner, me) ? 1 : 0);
	char err[256];
	bool landed;

	if (rc == -ENOENT || rc == -EBADMSG || rc == -EPROTONOSUPPORT || rc == -EINVAL)
		return false;
	if (sto_vm_get(op->m->store, op->vm->name, &now, &ver, err, sizeof(err)) < 0)
		return false; /* the record is as unknown as before: nothing claimed here */
	landed = !strcmp(now->owner, me) && now->active && now->owner_epoch == epoch &&
		 now->incarnation == r->incarnation;
	if (landed) {
		hca__vm_record__free_unpacked(op->rec, NULL);
		op->rec = now;
		op->epoch = epoch;
		op->version = ver;
		op->claimed = true;
		snprintf(op->err, sizeof(op->err), "vm %s: storage did not answer in time while "
			 "claiming it; not started (the claim is released)", op->vm->name);
		return true;
	}
	hca__vm_record__free_unpacked(now, NULL);
	return false;
}

/* The claim: this node owner with active set, from what the loop read. */
static int start_claim(struct op *op)
{
	Hca__VmRecord *r = op->rec;
	const char *me = op->m->conf->node_name;
	struct sto_owner cur = { r->owner, r->owner_epoch, r->active, r->incarnation };
	struct sto_owner next = { me, 0, true, 0 };
	int rc;

	if (op->m->conf->cluster == CONF_CLUSTER_LOCAL) {
		op->epoch = r->owner_epoch;
		return 0; /* a standalone node owns everything in its own store */
	}
	rc = vmm_own_cas(op->m, op->vm->name, &cur, &next, &op->epoch, &op->version, op->err,
			 sizeof(op->err));
	if (rc == -ESTALE || rc == -ECANCELED) {
		char why[300];
		size_t pre = strlen(op->vm->name) + 5; /* "vm NAME: " */
		snprintf(why, sizeof(why), "%.299s", strlen(op->err) > pre ? op->err + pre : op->err);
		snprintf(op->err, sizeof(op->err), "vm %s: changed meanwhile (%.299s); look again "
			 "and retry", op->vm->name, why);
	}
	if (rc < 0 && claim_landed(op, r, me, rc))
		return -EIO; /* it did land: claimed, and released by the caller */
	if (rc < 0)
		return rc;
	op->claimed = true;
	if (strcmp(r->owner, me)) {
		char *o = strdup(me);
		if (o) {
			if (r->owner != protobuf_c_empty_string)
				free(r->owner);
			r->owner = o;
		}
	}
	r->owner_epoch = op->epoch;
	r->active = true;
	return 0;
}

static void start_prepare_fn(struct exec_item *it)
{
	struct op *op = EXEC_CONTAINER_OF(it, struct op, item);
	struct sto_owner want = { op->m->conf->node_name, 0, true, op->rec->incarnation };
	int rc;

	if ((rc = start_claim(op)) < 0) {
		op->code = rc == -ESTALE || rc == -ECANCELED ? HCA__ERROR_CODE__ERROR_BUSY
							     : HCA__ERROR_CODE__ERROR_STORAGE;
		return;
	}
	if (start_check_files(op) < 0) {
		op->code = HCA__ERROR_CODE__ERROR_INVALID;
		return;
	}
	if (mkdir(op->vm->paths.dir, 0700) < 0 && errno != EEXIST) {
		snprintf(op->err, sizeof(op->err), "vm %s: cannot create %s: %s", op->vm->name,
			 op->vm->paths.dir, strerror(errno));
		op->code = HCA__ERROR_CODE__ERROR_INTERNAL;
		return;
	}
	if (net_taps_setup(op->rec->spec, op->err, sizeof(op->err)) < 0) {
		op->code = HCA__ERROR_CODE__ERROR_INVALID;
		return;
	}
	op->taps = true;
	/* the last word before the launch: still ours, at our epoch */
	want.epoch = op->epoch;
	if (op->m->conf->cluster != CONF_CLUSTER_LOCAL &&
	    (rc = sto_owner_confirm(op->m->store, op->vm->name, &want, op->err,
				    sizeof(op->err))) < 0) {
		op->code = rc == -ESTALE ? HCA__ERROR_CODE__ERROR_BUSY : HCA__ERROR_CODE__ERROR_STORAGE;
		op->claimed = rc != -ESTALE && op->claimed;
	}
}

static void hv_nothing(struct hv_vm *hv, int err, const char *msg, void *opaque)
{
}

static void start_hv_done(struct hv_vm *hv, int err, const char *msg, void *opaque)
{
	struct op *op = opaque;
	struct vm *v = op->vm;

	if (!err) {
		vmm_op_end(op, 0, "vm %s: running", v->name);
		return;
	}
	if (err == -ECANCELED) {
		/* hcad is stopping (hv_vm_free): the QEMU, if any, runs on; the
		 * job is resolved at the next start, from the process itself */
		vmm_op_free(op);
		return;
	}
	vmm_job_done(v);
	if (hv_vm_pid(hv) > 0 || hv_state_running(hv_vm_state(hv))) {
		/* The start failed (a timeout, QMP unreachable) but a QEMU may
		 * live or still be coming up: keep the claim and its taps, power
		 * it off; the claim goes when its end is seen (on_state). */
		hv_vm_stop(hv, true, hv_nothing, NULL);
	} else {
		net_taps_teardown(v->rec->spec);
		vmm_release(op->m, v);
	}
	vmm_op_end(op, err == -ETIMEDOUT ? HCA__ERROR_CODE__ERROR_TIMEOUT
					 : HCA__ERROR_CODE__ERROR_HYPERVISOR, "%s", msg);
}

int vmm_launch(struct vmm *m, struct vm *v, const char *incoming, hv_done_fn done, void *opaque)
{
	struct hv_disk disks[HV_MAX_DISKS];
	struct hv_argv argv;
	struct hv_argv_ctx c = {
		.qemu = m->conf->qemu,
		.accel = m->accel,
		.paths = &v->paths,
		.disks = disks,
		.ceph_conf = m->conf->ceph_conf,
		.ceph_user = m->conf->ceph_client,
		.incoming = incoming,
	};
	int rc;

	/* hv_spec_check refused more than HV_MAX_DISKS when the record came in */
	if (v->rec->spec->n_disks > HV_MAX_DISKS)
		return -E2BIG;
	char paths[HV_MAX_DISKS][PATH_MAX];

	for (size_t i = 0; i < v->rec->spec->n_disks; i++) {
		const Hca__DiskSpec *d = v->rec->spec->disks[i];
		bool vol = !d->path[0];
		if (v->mig_rbd & (1u << i)) {
			/* an incoming migration into the pool: the image it made, raw,
			 * named as the record will name it at the commit */
			const char *vn = "";
			for (size_t k = 0; k < v->rec->n_volumes; k++)
				if (!strcmp(v->rec->volumes[k]->disk, d->name))
					vn = v->rec->volumes[k]->volume;
			snprintf(paths[i], sizeof(paths[i]), "rbd:%s/%s", m->conf->rados_pool, vn);
			disks[i] = (struct hv_disk){ paths[i], HCA__DISK_FORMAT__DISK_FORMAT_RAW,
						     d->readonly, false };
			continue;
		}
		disks[i] = (struct hv_disk){ vmm_disk_local_path(m, v->rec, i, paths[i],
								 sizeof(paths[i])),
					     d->format, d->readonly, vol };
	}
	if ((rc = hv_argv_build(v->rec->spec, &c, &argv)) < 0)
		return rc;
	rc = hv_vm_start(v->hv, &argv, done, opaque);
	hv_argv_free(&argv);
	return rc;
}

static int start_launch(struct op *op)
{
	return vmm_launch(op->m, op->vm, NULL, start_hv_done, op);
}

static void start_done(struct exec_item *it)
{
	struct op *op = vmm_op_of(it);
	struct vm *v;
	int rc;

	if (!op)
		return;
	v = op->vm;
	if (op->claimed) {
		/* the record now says this node, active, at op->epoch */
		hca__vm_record__free_unpacked(v->rec, NULL);
		v->rec = op->rec;
		op->rec = NULL;
		if (op->version > v->version)
			v->version = op->version;
		if (!v->hv)
			vmm_vm_supervise(op->m, v);
	}
	if (op->m->stopping) {
		/* never a launch during teardown: the claim stays, the job
		 * stays unfinished, the next start resolves both */
		if (op->taps)
			net_taps_teardown(v->rec->spec);
		vmm_op_free(op);
		return;
	}
	if (!op->code && job_cancel_requested(op->job)) {
		net_taps_teardown(v->rec->spec);
		vmm_job_done(v);
		vmm_release(op->m, v);
		job_cancelled(op->job, "vm %s: start cancelled before the launch", v->name);
		op->job = NULL;
		vmm_op_free(op);
		return;
	}
	if (op->code) {
		if (op->taps)
			net_taps_teardown(v->rec->spec);
		/* a store that failed may have taken a write after all: read
		 * the record again when the job ends (vmm_sync_apply settles it) */
		if (op->code == HCA__ERROR_CODE__ERROR_STORAGE)
			v->stale = true;
		vmm_job_done(v);
		if (op->claimed)
			vmm_release(op->m, v);
		vmm_op_end(op, op->code, "%s", op->err);
		return;
	}
	job_set_cancel(op->job, NULL, NULL);
	job_phase(op->job, HCA__JOB_PHASE__JOB_PHASE_LAUNCH);
	rc = v->hv ? start_launch(op) : -ENOMEM;
	if (rc < 0) {
		net_taps_teardown(v->rec->spec);
		vmm_job_done(v);
		vmm_release(op->m, v);
		vmm_op_end(op, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: cannot launch QEMU: %s",
			   v->name, strerror(-rc));
	}
}

static int start_cancel(struct job *j, void *opaque, char *err, size_t errlen)
{
	return 0; /* checked between the claim and the launch */
}

/* May this node take @v from its owner? The record's claim decides, never
 * the advisory state/ record. Replies and returns false if not. */
static bool may_take_over(struct vmm *m, struct vm *v, vmm_reply_fn fn, void *ctx)
{
	const struct memb_node *owner = memb_find(memb_view(m->memb), v->rec->owner);

	/* a record from before the claim existed (format 1) says nothing:
	 * then what its owner last published decides, as it did then */
	bool legacy = v->rec->format < 2 && v->run && hv_state_running(v->run->state);

	if (!v->rec->active && !legacy)
		return true;
	if (owner && owner->online)
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
				"vm %s: claimed by node %s (running or starting there); stop it "
				"there first", v->name, v->rec->owner);
	else
		/* it may still run there, writing to the same disks: only
		 * fencing (not built yet) makes a move safe; never two copies */
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
				"vm %s: owner %s is offline and its claim is still set (the VM "
				"may run there); it cannot move before %s is fenced, which hca "
				"does not do yet", v->name, v->rec->owner, v->rec->owner);
	return false;
}

void vmm_start(struct vmm *m, const Hca__VmRef *ref, const char *via, vmm_reply_fn fn, void *ctx)
{
	const char *name = ref->name, *me = m->conf->node_name;
	struct vm *v = vmm_vm_for_op(m, name, "start", fn, ctx);
	struct vm *other;
	struct op *op;

	if (!v)
		return;
	if (m->conf->cluster == CONF_CLUSTER_LOCAL && ref->on_node[0] && strcmp(ref->on_node, me)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID,
				"vm %s: --on %s: this node runs standalone (cluster = local)",
				name, ref->on_node);
		return;
	}
	if (m->conf->cluster != CONF_CLUSTER_LOCAL &&
	    strcmp(ref->on_node[0] ? ref->on_node : v->rec->owner, me)) {
		/* routing sends it to the right node; here only after a race */
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BUSY,
				"vm %s: owned by node %s (changed meanwhile); retry", name,
				v->rec->owner);
		return;
	}
	if (vmm_vm_running(v)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: already %s",
				name, hv_state_name(hv_vm_state(v->hv)));
		return;
	}
	if (!vmm_owned(m, v) && !may_take_over(m, v, fn, ctx))
		return;
	for (size_t i = 0; i < v->rec->spec->n_disks; i++) {
		if ((other = vmm_disk_user(m, v, vmm_disk_path(v->rec, i), true))) {
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BUSY,
					"vm %s: disk %s is in use by running vm %s", name,
					v->rec->spec->disks[i]->name, other->name);
			return;
		}
	}
	if (!(op = vmm_op_new(m, v, HCA__JOB_KIND__JOB_KIND_START, via, fn, ctx)))
		return;
	op->rec = sto_vm_copy(v->rec);
	job_set_cancel(op->job, start_cancel, op);
	job_phase(op->job, HCA__JOB_PHASE__JOB_PHASE_COMMIT);
	if (!op->rec)
		vmm_op_end(op, HCA__ERROR_CODE__ERROR_INTERNAL, "vm %s: out of memory", name);
	else
		vmm_op_push(op, start_prepare_fn, start_done);
}

/* ---- stop and shutdown ---- */

static void halt_done(struct hv_vm *hv, int err, const char *msg, void *opaque)
{
	struct op *op = opaque;
	struct vm *v = op->vm;

	if (!op->job) { /* cancelled: the job has ended already */
		vmm_op_free(op);
		return;
	}
	if (op->tick)
		qb_loop_timer_del(op->m->loop, op->tick);
	op->tick = 0;
	vmm_job_done(v);
	if (!err) {
		job_phase(op->job, HCA__JOB_PHASE__JOB_PHASE_CLEANUP);
		vmm_release(op->m, v);
	}
	vmm_op_end(op, !err ? 0 : err == -ETIMEDOUT ? HCA__ERROR_CODE__ERROR_TIMEOUT
				: HCA__ERROR_CODE__ERROR_HYPERVISOR,
		   "%s", err ? msg : "stopped");
}

/* Shutdown: progress is the time waited against the timeout. */
static void halt_tick(void *data)
{
	struct op *op = data;
	char d[96];

	op->tick = 0;
	if (!op->job)
		return;
	snprintf(d, sizeof(d), "waiting for the guest to power off (%u s)", op->waited_s);
	job_progress(op->job, op->waited_s, op->timeout_s, "s", d);
	op->waited_s++;
	qb_loop_timer_add(op->m->loop, QB_LOOP_LOW, 1000 * QB_TIME_NS_IN_MSEC, op, halt_tick,
			  &op->tick);
}

static int shutdown_cancel(struct job *j, void *opaque, char *err, size_t errlen)
{
	struct op *op = opaque;

	/* stop waiting; the VM keeps running, and may still power off */
	if (op->tick)
		qb_loop_timer_del(op->m->loop, op->tick);
	op->tick = 0;
	vmm_job_done(op->vm);
	job_cancelled(j, "vm %s: shutdown cancelled; the VM keeps running (the guest may "
		      "still power off on its own)", op->vm->name);
	op->job = NULL;
	/* halt_done frees the op, now (-ECANCELED) */
	if (op->vm->hv)
		hv_vm_shutdown_abandon(op->vm->hv);
	return 0;
}

static void halt(struct vmm *m, const char *name, bool shutdown, bool force, unsigned timeout_s,
		 const char *via, vmm_reply_fn fn, void *ctx)
{
	const char *what = shutdown ? "shut down" : "stop";
	struct vm *v = name && *name ? vmm_vm_find(m, name) : NULL;
	struct op *op;
	int rc;

	/* a stop may interrupt a shutdown under way */
	if (!shutdown && v && v->job && job_kind(v->job) == HCA__JOB_KIND__JOB_KIND_SHUTDOWN) {
		char e[160];
		job_request_cancel(v->job, e, sizeof(e));
	}
	if (!(v = vmm_vm_for_op(m, name, what, fn, ctx)) || !vmm_check_owned(m, v, fn, ctx))
		return;
	if (!vmm_vm_running(v)) {
		vmm_hv_error(v, -EINVAL, what, fn, ctx);
		return;
	}
	if (!(op = vmm_op_new(m, v, shutdown ? HCA__JOB_KIND__JOB_KIND_SHUTDOWN
					     : HCA__JOB_KIND__JOB_KIND_STOP, via, fn, ctx)))
		return;
	vmm_op_reply(op); /* a stop never waits for the store */
	op->timeout_s = timeout_s;
	job_phase(op->job, HCA__JOB_PHASE__JOB_PHASE_WAIT);
	rc = shutdown ? hv_vm_shutdown(v->hv, timeout_s, halt_done, op)
		      : hv_vm_stop(v->hv, force, halt_done, op);
	if (rc < 0) {
		vmm_job_done(v);
		vmm_op_end(op, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: cannot %s: %s", name, what,
			   rc == -EINVAL ? "it is not running" : strerror(-rc));
		return;
	}
	if (shutdown) {
		job_set_cancel(op->job, shutdown_cancel, op);
		halt_tick(op);
	}
}

void vmm_stop(struct vmm *m, const Hca__StopRequest *r, const char *via, vmm_reply_fn fn,
	      void *ctx)
{
	halt(m, r->name, false, r->force, 0, via, fn, ctx);
}

void vmm_shutdown_vm(struct vmm *m, const Hca__ShutdownRequest *r, const char *via,
		     vmm_reply_fn fn, void *ctx)
{
	unsigned t = r->timeout_s ? r->timeout_s : (unsigned)m->conf->shutdown_timeout_s;

	halt(m, r->name, true, false, t > 3600 ? 3600 : t, via, fn, ctx);
}
