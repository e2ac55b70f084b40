/*
 * vmm_mig: what the migration service (migration/mig.h) needs from the VM
 * table, and the migrate request.
 *
 * The service drives both QEMUs and makes the commit; this file lends it
 * what only the agent has: launching a VM's QEMU for an incoming stream,
 * killing it, updating the records it holds at the commit, and the job.
 * The QEMUs' x509 credentials are the node's own certificate, linked under
 * the fixed names QEMU wants in STATE_DIR/qemu-tls.
 */
#include "agent/env.h"
#include "agent/net.h"
#include "agent/vmm_priv.h"
#include "migration/mig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <qb/qblog.h>

#define ROOM_RESERVE_MIB 256u /* what QEMU itself takes beyond the guest's RAM */

struct vmm_mig {
	struct env_src src;
	struct hca_env env;
	struct mig *mig;
	char tls_dir[CONF_STATE_DIR_MAX + 16];
	char scratch_dir[CONF_STATE_DIR_MAX + 16];
};

/* ---- QEMU's credentials ---- */

static int tls_link(const char *dir, const char *name, const char *target, char *err,
		    size_t errlen)
{
	char path[CONF_STATE_DIR_MAX + 64];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (access(target, R_OK) < 0) {
		snprintf(err, errlen, "%s: %s", target, strerror(errno));
		return -errno;
	}
	unlink(path);
	if (symlink(target, path) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	return 0;
}

static int tls_dir_make(struct vmm *m, char *dir, size_t len, char *err, size_t errlen)
{
	const struct conf *c = m->conf;
	char ca[256], crt[300], key[300];

	snprintf(dir, len, "%s/qemu-tls", c->state_dir);
	snprintf(ca, sizeof(ca), "%s/ca.crt", c->pki_dir);
	snprintf(crt, sizeof(crt), "%s/%s/node.crt", c->pki_dir, c->node_name);
	snprintf(key, sizeof(key), "%s/%s/node.key", c->pki_dir, c->node_name);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -errno;
	}
	/* the node certificate serves both ends: it names the node (DNS) and
	 * its addresses, for serverAuth and clientAuth */
	if (tls_link(dir, "ca-cert.pem", ca, err, errlen) < 0 ||
	    tls_link(dir, "server-cert.pem", crt, err, errlen) < 0 ||
	    tls_link(dir, "server-key.pem", key, err, errlen) < 0 ||
	    tls_link(dir, "client-cert.pem", crt, err, errlen) < 0 ||
	    tls_link(dir, "client-key.pem", key, err, errlen) < 0)
		return -EIO;
	return 0;
}

/* ---- the host callbacks ---- */

/* The disk of @r that is not shared storage (RBD), or NULL. */
static const Hca__DiskSpec *local_disk(const Hca__VmRecord *r)
{
	for (size_t i = 0; i < r->spec->n_disks; i++) {
		const Hca__DiskSpec *d = r->spec->disks[i];
		if (d->path[0] || strcmp(d->backend, "rbd"))
			return d;
	}
	return NULL;
}

static uint64_t mem_available_mib(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[128];
	unsigned long long kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return kb / 1024;
}

struct incoming {
	struct vm *vm;
	mig_hv_fn done;
	void *opaque;
};

static void incoming_started(struct hv_vm *hv, int err, const char *msg, void *opaque)
{
	struct incoming *in = opaque;
	struct vm *v = in->vm;

	if (vmm_vm_put(v)) {
		in->done(in->opaque, NULL, -ECANCELED, "the VM went away");
	} else if (err) {
		in->done(in->opaque, NULL, err, msg);
	} else {
		qb_log(LOG_INFO, "vm %s: QEMU waits for the incoming migration (pid %d)", v->name,
		       hv_vm_pid(hv));
		in->done(in->opaque, hv, 0, NULL);
	}
	free(in);
}

static int incoming_start(void *ctx, const char *name, const char *source, uint64_t epoch,
			  uint64_t incarnation, mig_hv_fn done, void *opaque, char *err,
			  size_t errlen)
{
	struct vmm *m = ctx;
	struct vm *v = vmm_vm_find(m, name);
	const Hca__DiskSpec *d;
	const Hca__BootSpec *b;
	struct incoming *in;
	uint64_t avail;
	int rc;

	if (!v || !v->rec) {
		snprintf(err, errlen, "vm %s: not known on node %s", name, m->conf->node_name);
		return -ENOENT;
	}
	if (strcmp(v->rec->owner, source) || !v->rec->active || v->rec->owner_epoch != epoch ||
	    v->rec->incarnation != incarnation) {
		snprintf(err, errlen, "vm %s: node %s's record says owner %s at epoch %llu%s, not %s "
			 "at %llu; try again in a moment", name, m->conf->node_name,
			 v->rec->owner, (unsigned long long)v->rec->owner_epoch,
			 v->rec->active ? "" : " (not running)", source,
			 (unsigned long long)epoch);
		return -ESTALE;
	}
	if (v->job || (v->hv && hv_vm_pid(v->hv) > 0)) {
		snprintf(err, errlen, "vm %s: node %s has a QEMU or an operation of it already",
			 name, m->conf->node_name);
		return -EBUSY;
	}
	if ((d = local_disk(v->rec))) {
		snprintf(err, errlen, "vm %s: disk %s is not on shared storage (RBD); use "
			 "--with-storage", name, d->name);
		return -EXDEV;
	}
	b = v->rec->spec->boot;
	if (b && ((b->kernel[0] && access(b->kernel, R_OK) < 0) ||
		  (b->initrd[0] && access(b->initrd, R_OK) < 0))) {
		snprintf(err, errlen, "vm %s: node %s lacks its boot files (%s)", name,
			 m->conf->node_name, b->kernel);
		return -ENOENT;
	}
	avail = mem_available_mib();
	if (avail && avail < v->rec->spec->memory_mib + ROOM_RESERVE_MIB) {
		snprintf(err, errlen, "node %s has no room for vm %s: %llu MiB of memory "
			 "available, %llu MiB needed", m->conf->node_name, name,
			 (unsigned long long)avail,
			 (unsigned long long)(v->rec->spec->memory_mib + ROOM_RESERVE_MIB));
		return -ENOSPC;
	}
	if (mkdir(v->paths.dir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "vm %s: cannot create %s: %s", name, v->paths.dir,
			 strerror(errno));
		return -errno;
	}
	if (net_taps_setup(v->rec->spec, err, errlen) < 0)
		return -EINVAL;
	if (!v->hv && vmm_vm_attach_hv(m, v) < 0) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (!(in = calloc(1, sizeof(*in)))) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	in->vm = v;
	in->done = done;
	in->opaque = opaque;
	v->refs++;
	if ((rc = vmm_launch(m, v, "defer", incoming_started, in)) < 0) {
		vmm_vm_put(v);
		free(in);
		snprintf(err, errlen, "vm %s: cannot launch QEMU: %s", name, strerror(-rc));
		return rc;
	}
	return 0;
}

/* A QEMU this node no longer owns has ended: let go of its supervisor. */
static void let_go(void *data)
{
	struct vm *v = data;

	if (vmm_vm_put(v))
		return;
	if (v->hv && !vmm_owned(v->m, v) && !vmm_vm_running(v) && hv_vm_pid(v->hv) <= 0 &&
	    !hv_vm_busy(v->hv)) {
		hv_vm_free(v->hv);
		v->hv = NULL;
	}
}

static void discarded(struct hv_vm *hv, int err, const char *msg, void *opaque)
{
	struct vm *v = opaque;
	qb_loop_timer_handle t;

	(void)hv;
	if (err == -ECANCELED) {
		vmm_vm_put(v);
		return;
	}
	if (err)
		qb_log(LOG_WARNING, "vm %s: the incoming QEMU did not end: %s", v->name, msg);
	/* not from inside hv's own callback */
	qb_loop_timer_add(v->m->loop, QB_LOOP_LOW, 0, v, let_go, &t);
}

static void incoming_discard(void *ctx, const char *name)
{
	struct vmm *m = ctx;
	struct vm *v = vmm_vm_find(m, name);

	if (!v || !v->hv || vmm_owned(m, v))
		return; /* never the owner's QEMU */
	v->refs++;
	if (hv_vm_stop(v->hv, true, discarded, v) < 0) {
		qb_loop_timer_handle t;
		qb_loop_timer_add(m->loop, QB_LOOP_LOW, 0, v, let_go, &t);
	}
}

static struct hv_vm *vm_hv(void *ctx, const char *name)
{
	struct vm *v = vmm_vm_find(ctx, name);

	return v ? v->hv : NULL;
}

static void committed(void *ctx, const char *name, const char *owner, uint64_t epoch,
		      uint64_t version)
{
	struct vmm *m = ctx;
	struct vm *v = vmm_vm_find(m, name);
	char *o;

	if (!v || !v->rec || !(o = strdup(owner)))
		return;
	if (v->rec->owner != protobuf_c_empty_string)
		free(v->rec->owner);
	v->rec->owner = o;
	v->rec->owner_epoch = epoch;
	v->rec->active = true;
	if (version > v->version)
		v->version = version;
	if (vmm_owned(m, v))
		vmm_state_publish(m, v);
}

static void ended(void *ctx, const char *name, struct job *j, bool moved)
{
	struct vmm *m = ctx;
	struct vm *v = vmm_vm_find(m, name);

	if (!v)
		return;
	if (v->job == j)
		vmm_job_done(v);
	if (moved && v->hv) {
		qb_loop_timer_handle t;
		v->refs++;
		qb_loop_timer_add(m->loop, QB_LOOP_LOW, 0, v, let_go, &t);
	}
}

/* ---- after a restart of hcad ---- */

/*
 * Before a guest a migration left paused runs on here, a write to the
 * owner record (this node to this node: the version moves on). A commit
 * write of the interrupted hcad that Ceph never answered may still be on
 * its way to the OSD; after this one it can only fail. If the record moved
 * (that write landed first), the guest does not run here.
 */
struct fence {
	struct exec_item item;
	struct vm *vm;
	struct sto_owner cur;
	char owner[64];
	int rc;
	char err[256];
};

static void fence_fn(struct exec_item *it)
{
	struct fence *f = EXEC_CONTAINER_OF(it, struct fence, item);
	struct sto_owner next = { f->owner, 0, true, 0 };

	f->rc = sto_owner_cas(f->vm->m->store, f->vm->name, &f->cur, &next, NULL, NULL, f->err,
			      sizeof(f->err));
}

static void recover(struct vm *v);

static void fence_retry(void *data)
{
	struct vm *v = data;

	if (!vmm_vm_put(v))
		recover(v);
}

static void fence_done(struct exec_item *it)
{
	struct fence *f = EXEC_CONTAINER_OF(it, struct fence, item);
	struct vm *v = f->vm;
	int rc = f->rc;
	bool cancelled = exec_item_cancelled(it);

	free(f);
	if (cancelled || vmm_vm_put(v) || !v->hv)
		return;
	if (rc == 0) {
		qb_log(LOG_NOTICE, "vm %s: a migration was interrupted by a restart of hcad; the "
		       "record names this node: the guest runs on here", v->name);
		hv_vm_qmp(v->hv, "migrate_cancel", NULL, 0, NULL, NULL);
		hv_vm_qmp(v->hv, "cont", NULL, 0, NULL, NULL);
	} else if (rc == -ESTALE || rc == -ENOENT) {
		qb_log(LOG_WARNING, "vm %s: the owner record moved while hcad was down; the paused "
		       "QEMU here is not resumed", v->name);
		vmm_sync_refresh(v->m, v->name);
	} else {
		qb_loop_timer_handle t;
		v->refs++;
		qb_loop_timer_add(v->m->loop, QB_LOOP_LOW, 2000 * QB_TIME_NS_IN_MSEC, v,
				  fence_retry, &t);
	}
}

static void recover(struct vm *v)
{
	struct fence *f;

	if (!v->rec || !vmm_owned(v->m, v) || !v->m->store || !(f = calloc(1, sizeof(*f))))
		return;
	f->vm = v;
	snprintf(f->owner, sizeof(f->owner), "%s", v->rec->owner);
	f->cur = (struct sto_owner){ f->owner, v->rec->owner_epoch, v->rec->active,
				     v->rec->incarnation };
	v->refs++;
	exec_item_init(&f->item, fence_fn, fence_done);
	exec_push(v->m->q_store, &f->item, NULL);
}

static void recover_done(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
			 const char *errdesc, void *opaque)
{
	struct vm *v = opaque;
	const char *st = json_string_value(json_object_get(ret, "status"));

	(void)errclass;
	(void)errdesc;
	if (vmm_vm_put(v) || err || !st || !strcmp(st, "none") || v->hv != hv)
		return; /* no migration: a pause is the user's */
	recover(v);
}

void vmm_mig_attached(struct vmm *m, struct vm *v)
{
	Hca__VmState s;

	if (!v->hv || v->job || !v->rec)
		return;
	if (!vmm_owned(m, v) && !vmm_vm_running(v)) {
		qb_loop_timer_handle t;
		v->refs++; /* nothing of it here: let its supervisor go */
		qb_loop_timer_add(m->loop, QB_LOOP_LOW, 0, v, let_go, &t);
		return;
	}
	if (!vmm_vm_running(v))
		return;
	s = hv_vm_state(v->hv);
	if (!vmm_owned(m, v)) {
		if (s == HCA__VM_STATE__VM_STATE_RUNNING) {
			qb_log(LOG_ERR, "vm %s: owned by node %s, but a QEMU of it runs here; left "
			       "running (never killed on a guess)", v->name, v->rec->owner);
			return;
		}
		/* paused: an incoming migration that never committed here, or a
		 * source whose migration committed elsewhere */
		qb_log(LOG_NOTICE, "vm %s: a paused QEMU of it is left here from a migration; "
		       "node %s owns it: ending this one", v->name, v->rec->owner);
		v->refs++;
		if (hv_vm_stop(v->hv, true, discarded, v) < 0)
			vmm_vm_put(v);
		return;
	}
	if (s != HCA__VM_STATE__VM_STATE_PAUSED && s != HCA__VM_STATE__VM_STATE_PAUSED_MIGRATE &&
	    s != HCA__VM_STATE__VM_STATE_POSTMIGRATE)
		return;
	v->refs++;
	if (hv_vm_qmp(v->hv, "query-migrate", NULL, 0, recover_done, v) < 0)
		vmm_vm_put(v);
}

/* ---- lifetime ---- */

void vmm_mig_setup(struct vmm *m)
{
	struct vmm_mig *x = m->migs;
	char err[300];
	struct mig_host host = {
		.ctx = m,
		.incoming_start = incoming_start,
		.incoming_discard = incoming_discard,
		.vm_hv = vm_hv,
		.committed = committed,
		.ended = ended,
		.max_out = (unsigned)m->conf->mig_max_out,
		.max_in = (unsigned)m->conf->mig_max_in,
		.host_cores = (unsigned)sysconf(_SC_NPROCESSORS_ONLN),
	};

	if (x) {
		x->src.peers = m->peers;
		x->src.store = m->store;
		x->env.store = m->store;
		mig_channel_up(x->mig);
		return;
	}
	if (!m->peers || !(x = calloc(1, sizeof(*x))))
		return;
	x->src = (struct env_src){ .loop = m->loop, .store = m->store, .exec = m->exec,
				   .node = m->conf->node_name, .peers = m->peers,
				   .memb = m->memb };
	env_fill(&x->env, &x->src);
	if (tls_dir_make(m, x->tls_dir, sizeof(x->tls_dir), err, sizeof(err)) == 0)
		host.tls_dir = x->tls_dir;
	else
		qb_log(LOG_ERR, "migration: no TLS credentials for QEMU (%s): migrations refused",
		       err);
	snprintf(x->scratch_dir, sizeof(x->scratch_dir), "%s/mig", m->conf->state_dir);
	if (mkdir(x->scratch_dir, 0700) == 0 || errno == EEXIST)
		host.scratch_dir = x->scratch_dir;
	if (!(x->mig = mig_new(&x->env, &host))) {
		qb_log(LOG_ERR, "migration: cannot start the service: %s", strerror(errno));
		free(x);
		return;
	}
	m->migs = x;
}

void vmm_mig_store(struct vmm *m)
{
	if (m->migs) {
		m->migs->src.store = m->store;
		m->migs->env.store = m->store;
	}
}

void vmm_mig_free(struct vmm *m)
{
	if (!m->migs)
		return;
	mig_free(m->migs->mig);
	free(m->migs);
	m->migs = NULL;
}

void vmm_mig_event(struct vm *v, const char *event, json_t *data)
{
	if (v->m->migs)
		mig_event(v->m->migs->mig, v->name, event, data);
}

bool vmm_mig_busy(struct vmm *m, const char *name)
{
	return m->migs && mig_busy(m->migs->mig, name);
}

/* ---- the request ---- */

static void migrate_go(struct exec_item *it)
{
	(void)it; /* the job's record is in the store: nothing else to do here */
}

static void migrate_begin(struct exec_item *it)
{
	struct op *op = vmm_op_of(it);
	struct vmm *m;
	struct vm *v;
	char err[512];
	int rc;

	if (!op)
		return;
	m = op->m;
	v = op->vm;
	if (op->code) {
		vmm_op_end(op, op->code, "vm %s: %s", v->name, op->err);
		return;
	}
	if (!vmm_vm_running(v) || !vmm_owned(m, v)) {
		vmm_op_end(op, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: not running here any more",
			   v->name);
		return;
	}
	rc = mig_start(m->migs->mig, op->job, job_id(op->job), v->hv, v->name,
		       v->rec->owner_epoch, v->rec->incarnation,
		       v->rec->spec->memory_mib << 20, op->migrate, err, sizeof(err));
	if (rc < 0) {
		vmm_op_end(op, rc == -EBUSY ? HCA__ERROR_CODE__ERROR_BUSY
					    : HCA__ERROR_CODE__ERROR_INVALID, "%s", err);
		return;
	}
	/* the service has the job now; the VM's slot stays taken until it ends */
	hca__migrate_request__free_unpacked(op->migrate, NULL);
	op->migrate = NULL;
	vmm_op_free(op);
}

void vmm_migrate(struct vmm *m, const Hca__MigrateRequest *q, const char *via, vmm_reply_fn fn,
		 void *ctx)
{
	const struct memb_view *mv = memb_view(m->memb);
	const struct memb_node *t;
	const Hca__DiskSpec *d;
	struct vm *v;
	struct op *op;
	size_t len;
	uint8_t *buf;

	if (!(v = vmm_vm_for_op(m, q->name, "migrate", fn, ctx)) || !vmm_check_owned(m, v, fn, ctx))
		return;
	if (q->with_storage) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "vm %s: --with-storage "
				"(moving local disks) is not available yet", v->name);
		return;
	}
	if (!vmm_vm_running(v)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: is not running "
				"(%s); only a running VM migrates (start it there: hcactl vm start "
				"%s --on %s)",
				v->name, v->hv ? hv_state_name(hv_vm_state(v->hv)) : "stopped",
				v->name, q->target);
		return;
	}
	if (hv_vm_state(v->hv) != HCA__VM_STATE__VM_STATE_RUNNING) {
		/* a rollback resumes the guest, and so does the destination */
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: is %s; only a "
				"running guest migrates (resume it first)", v->name,
				hv_state_name(hv_vm_state(v->hv)));
		return;
	}
	if ((d = local_disk(v->rec))) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "vm %s: disk %s is a local "
				"%s, not shared storage (RBD): a live migration moves memory only; "
				"use --with-storage to move its disks too", v->name, d->name,
				d->path[0] ? "image" : "volume");
		return;
	}
	if (!strcmp(q->target, m->conf->node_name)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "vm %s: already runs on "
				"node %s", v->name, q->target);
		return;
	}
	if (!(t = memb_find(mv, q->target))) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_NOT_FOUND, "vm %s: node %s is not "
				"in the cluster", v->name, q->target);
		return;
	}
	if (!t->online) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: node %s is "
				"offline", v->name, q->target);
		return;
	}
	if (!m->migs) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: migration needs "
				"the node channel, which is off: %s", v->name, m->peers_off);
		return;
	}
	if (vmm_vm_busy(v, fn, ctx))
		return;
	if (!(op = vmm_op_new(m, v, HCA__JOB_KIND__JOB_KIND_MIGRATE, via, fn, ctx)))
		return;
	/* the request, kept until the job's record is in the store */
	len = hca__migrate_request__get_packed_size(q);
	if ((buf = malloc(len + 1))) {
		hca__migrate_request__pack(q, buf);
		op->migrate = hca__migrate_request__unpack(NULL, len, buf);
		free(buf);
	}
	if (!op->migrate) {
		vmm_op_end(op, HCA__ERROR_CODE__ERROR_INTERNAL, "vm %s: out of memory", v->name);
		return;
	}
	vmm_op_push(op, migrate_go, migrate_begin);
}
