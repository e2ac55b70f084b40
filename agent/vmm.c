/*
 * vmm: the node's VMs and the operations of the local API.
 *
 * Invariants:
 * - a VM exists when its record is in the store; the record is written only
 *   after every volume it names was created, and removed only after they
 *   were deleted, so a crash leaves nothing half-defined that hcad cannot
 *   finish or undo;
 * - run state is never stored: it is read from the QEMU process itself, so
 *   after a restart hcad's view is reality (hv_vm_attach);
 * - one operation per VM at a time (define/undefine included).
 */
#include "agent/vmm.h"
#include "agent/net.h"
#include "agent/vmm_priv.h"
#include "hypervisor/hv.h"
#include "proto/wire.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <qb/qblog.h>

#define HCAD_VERSION "0.1.0"

struct vm *vmm_vm_find(struct vmm *m, const char *name)
{
	for (struct vm *v = m->vms; v; v = v->next)
		if (!strcmp(v->name, name))
			return v;
	return NULL;
}

/* Insert sorted by name, so list output is stable. */
void vmm_vm_link(struct vmm *m, struct vm *v)
{
	struct vm **pp = &m->vms;

	while (*pp && strcmp((*pp)->name, v->name) < 0)
		pp = &(*pp)->next;
	v->next = *pp;
	*pp = v;
}

void vmm_vm_unlink(struct vmm *m, struct vm *v)
{
	for (struct vm **pp = &m->vms; *pp; pp = &(*pp)->next) {
		if (*pp == v) {
			*pp = v->next;
			return;
		}
	}
}

static void vm_free_now(struct vm *v)
{
	if (v->rec)
		hca__vm_record__free_unpacked(v->rec, NULL);
	if (v->run)
		hca__vm_run_state__free_unpacked(v->run, NULL);
	free(v);
}

bool vmm_vm_put(struct vm *v)
{
	if (--v->refs || !v->freed)
		return false;
	vm_free_now(v);
	return true;
}

void vmm_vm_free(struct vm *v)
{
	if (!v)
		return;
	hv_vm_free(v->hv);
	v->hv = NULL;
	if (v->refs) { /* a worker step still holds it */
		v->freed = true;
		return;
	}
	vm_free_now(v);
}

/* ---- replies ---- */

__attribute__((format(printf, 4, 5)))
void vmm_reply_error(vmm_reply_fn fn, void *ctx, Hca__ErrorCode code,
			const char *fmt, ...)
{
	Hca__ApiReply r = HCA__API_REPLY__INIT;
	Hca__Error e = HCA__ERROR__INIT;
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	e.code = code;
	e.message = msg;
	r.error = &e;
	fn(&r, ctx);
}

/* Borrowing fill: pointers into @v stay valid while the reply is packed. */
static void status_fill(struct vmm *m, struct vm *v, Hca__VmStatus *st)
{
	hca__vm_status__init(st);
	if (!v->rec) { /* being defined, or a corrupt record */
		static Hca__VmSpec empty = HCA__VM_SPEC__INIT;
		empty.name = v->name;
		st->spec = &empty;
		st->reason = v->job ? "being defined" : v->broken;
		st->job = v->job ? (char *)job_id(v->job) : "";
		return;
	}
	st->spec = v->rec->spec;
	st->owner = v->rec->owner;
	st->owner_epoch = v->rec->owner_epoch;
	st->active = v->rec->active;
	st->job = v->job ? (char *)job_id(v->job) : "";
	st->version = v->version;
	st->n_volumes = v->rec->n_volumes;
	st->volumes = v->rec->volumes;
	st->console_path = v->paths.console;
	st->serial_log = v->paths.serial_log;
	st->qemu_log = v->paths.qemu_log;
	if (!v->hv || !vmm_owned(m, v)) {
		/* another node's VM (here at most a migration's QEMU), as its
		 * owner last said */
		if (v->run) {
			st->state = v->run->state;
			st->reason = v->run->reason;
			st->pid = v->run->pid;
			st->accel = v->run->accel;
			st->started_at = v->run->started_at;
			st->node = v->run->node;
		}
		return;
	}
	st->node = (char *)m->conf->node_name;
	st->state = hv_vm_state(v->hv);
	st->reason = (char *)hv_vm_reason(v->hv);
	st->pid = hv_vm_pid(v->hv);
	st->started_at = hv_vm_started_at(v->hv);
	st->accel = st->pid > 0 ? m->accel : HCA__ACCEL__ACCEL_NONE;
}

void vmm_reply_vm(struct vmm *m, struct vm *v, vmm_reply_fn fn, void *ctx)
{
	Hca__ApiReply r = HCA__API_REPLY__INIT;
	Hca__VmStatus st;

	status_fill(m, v, &st);
	r.result_case = HCA__API_REPLY__RESULT_VM;
	r.vm = &st;
	fn(&r, ctx);
}

void vmm_reply_job(struct job *j, vmm_reply_fn fn, void *ctx)
{
	Hca__ApiReply r = HCA__API_REPLY__INIT;
	Hca__Job rec;
	Hca__JobProgress pg;
	Hca__Error e;

	job_fill(j, &rec, &pg, &e);
	r.result_case = HCA__API_REPLY__RESULT_JOB;
	r.job = &rec;
	fn(&r, ctx);
}

/* A job for an operation on @v, answered to the caller at once: the caller
 * follows it by id. From here on the job reports the outcome. */
struct op *vmm_op_new(struct vmm *m, struct vm *v, Hca__JobKind kind, const char *requested_on,
		      vmm_reply_fn fn, void *ctx)
{
	struct op *op = calloc(1, sizeof(*op));
	uint64_t inc = v->rec ? v->rec->incarnation : 0;

	if (op)
		op->job = job_new(m->jobs, kind, v->name, requested_on, inc);
	if (!op || !op->job) {
		free(op);
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		return NULL;
	}
	op->m = m;
	op->vm = v;
	v->job = op->job;
	vmm_key(op->key, sizeof(op->key), v->name);
	op->reply_fn = fn;
	op->reply_ctx = ctx;
	return op;
}

void vmm_op_reply(struct op *op)
{
	vmm_reply_fn fn = op->reply_fn;

	op->reply_fn = NULL;
	if (fn && op->job)
		vmm_reply_job(op->job, fn, op->reply_ctx);
}

static void op_durable(struct job *j, int rc, void *opaque)
{
	struct op *op = opaque;

	(void)j;
	vmm_op_reply(op);
	if (rc == 0) {
		exec_push(op->m->q_store, &op->item, op->key);
		return;
	}
	op->code = HCA__ERROR_CODE__ERROR_STORAGE;
	snprintf(op->err, sizeof(op->err), "storage unavailable: the job's record was not "
		 "written within %u s; nothing was changed", VMM_JOB_DURABLE_MS / 1000);
	op->item.done(&op->item);
}

void vmm_op_push_durable(struct op *op, exec_fn fn, exec_fn done)
{
	exec_item_init(&op->item, fn, done);
	op->begun = true;
	job_when_durable(op->job, op_durable, op, VMM_JOB_DURABLE_MS);
}

void vmm_op_push(struct op *op, exec_fn fn, exec_fn done)
{
	if (!op->begun) {
		vmm_op_push_durable(op, fn, done);
		return;
	}
	exec_item_init(&op->item, fn, done);
	exec_push(op->m->q_store, &op->item, op->key);
}

struct op *vmm_op_of(struct exec_item *it)
{
	/* cancelled by a shutdown: the job is resolved at the next start */
	return exec_item_cancelled(it) ? NULL : EXEC_CONTAINER_OF(it, struct op, item);
}

void vmm_op_free(struct op *op)
{
	if (!op)
		return;
	if (op->rec)
		hca__vm_record__free_unpacked(op->rec, NULL);
	if (op->migrate)
		hca__migrate_request__free_unpacked(op->migrate, NULL);
	free(op);
}

void vmm_op_end(struct op *op, Hca__ErrorCode code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	vmm_op_reply(op); /* ended before its first step: the job says how */
	if (op->vm && op->vm->job == op->job)
		vmm_job_done(op->vm);
	if (op->job)
		job_finish(op->job, code, "%s", msg);
	vmm_op_free(op);
}

/* ---- records ---- */

void vmm_key(char *key, size_t len, const char *name)
{
	snprintf(key, len, "vm/%s", name);
}

Hca__VmRecord *vmm_record_check(struct vmm *m, const uint8_t *buf, size_t len, const char *name,
				char *err, size_t errlen)
{
	Hca__VmRecord *r = sto_vm_decode(buf, len, name, NULL, err, errlen);
	char why[400];

	if (!r)
		return NULL;
	if (hv_spec_check(r->spec, &m->limits, 0, why, sizeof(why)) < 0) {
		size_t pre = strlen(name) + 5; /* hv's "vm NAME: " */
		bool named = !strncmp(why, "vm ", 3) && !strncmp(why + 3, name, pre - 5) &&
			     !strncmp(why + pre - 2, ": ", 2);
		snprintf(err, errlen, "vm %s: record refused: %s", name, named ? why + pre : why);
		hca__vm_record__free_unpacked(r, NULL);
		return NULL;
	}
	return r;
}

static const struct hv_vm_ops hv_ops;

int vmm_vm_attach_hv(struct vmm *m, struct vm *v)
{
	struct hv_vm_cfg cfg = {
		.loop = m->loop,
		.qemu = m->conf->qemu,
		.qmp_timeout_ms = (unsigned)m->conf->qmp_timeout_ms,
		.paths = &v->paths,
	};

	v->hv = hv_vm_new(v->name, v->rec->spec->uuid, &cfg, &hv_ops, v);
	return v->hv ? 0 : -ENOMEM;
}

struct vm *vmm_vm_new(struct vmm *m, const char *name)
{
	struct vm *v = calloc(1, sizeof(*v));
	char dir[128];

	if (!v)
		return NULL;
	v->m = m;
	snprintf(v->name, sizeof(v->name), "%s", name);
	snprintf(dir, sizeof(dir), "%s/vm/%s", m->conf->state_dir, name);
	if (hv_paths_init(&v->paths, dir) < 0) {
		free(v);
		return NULL;
	}
	return v;
}

static void on_attached(struct hv_vm *hv, int err, const char *msg, void *opaque)
{
	struct vm *v = opaque;
	struct vmm *m = v->m;

	if (err)
		qb_log(LOG_ERR, "%s", msg);
	else
		qb_log(LOG_INFO, "vm %s: %s", v->name, hv_vm_reason(hv));
	vmm_mig_attached(m, v);
	/* a claim left by a QEMU that ended while hcad was away; or a QEMU
	 * running without one (a record from before claims existed) */
	if (!v->job && v->rec && v->rec->active && !vmm_vm_running(v))
		vmm_release(m, v);
	else if (!v->job && v->rec && !v->rec->active && vmm_vm_running(v))
		vmm_claim_running(m, v);
	if (m->attaching && --m->attaching == 0)
		vmm_resolve_run(m);
}

static void load_one(struct vmm *m, const char *key)
{
	const char *name = key + 3;
	uint8_t *buf = NULL;
	size_t len = 0;
	struct vm *v;
	int rc;

	if (vmm_vm_find(m, name))
		return; /* loaded by an earlier attempt */
	if (!(v = vmm_vm_new(m, name)))
		return;
	rc = sto_get(m->store, key, &buf, &len, &v->version, v->broken, sizeof(v->broken));
	if (rc == 0)
		v->rec = vmm_record_check(m, buf, len, name, v->broken, sizeof(v->broken));
	free(buf);
	vmm_vm_link(m, v);
	if (!v->rec) {
		/* never started, never deleted: a person decides */
		qb_log(LOG_ERR, "%s; VM left alone until repaired", v->broken);
		return;
	}
	if (vmm_owned(m, v))
		vmm_vm_supervise(m, v);
	else if (access(v->paths.pidfile, F_OK) == 0)
		vmm_vm_supervise(m, v); /* a QEMU a migration may have left */
}

void vmm_vm_supervise(struct vmm *m, struct vm *v)
{
	if (vmm_vm_attach_hv(m, v) == 0) {
		m->attaching++;
		if (hv_vm_attach(v->hv, on_attached, v) < 0)
			m->attaching--;
	}
}

int vmm_load(struct vmm *m, char *err, size_t errlen)
{
	char **keys = NULL;
	size_t n = 0;
	int rc = sto_list(m->store, "vm/", &keys, &n, err, errlen);

	if (rc < 0)
		return rc;
	jobs_set_store(m->jobs, m->store);
	/* read before the attaches so their completions find the list */
	if ((rc = vmm_resolve_load(m, err, errlen)) < 0) {
		sto_keys_free(keys, n);
		return rc;
	}
	m->attaching++; /* held until every record is loaded */
	for (size_t i = 0; i < n; i++)
		load_one(m, keys[i]);
	qb_log(LOG_INFO, "loaded %zu VM record(s)", n);
	sto_keys_free(keys, n);
	if (--m->attaching == 0)
		vmm_resolve_run(m);
	if ((rc = vmm_sync_start(m, err, errlen)) == 0)
		m->loaded = true;
	return rc;
}

/* ---- state changes ---- */

struct taps {
	struct exec_item item;
	Hca__VmSpec *spec;
};

static void taps_teardown_fn(struct exec_item *it)
{
	net_taps_teardown(EXEC_CONTAINER_OF(it, struct taps, item)->spec);
}

static void taps_done(struct exec_item *it)
{
	struct taps *t = EXEC_CONTAINER_OF(it, struct taps, item);

	hca__vm_spec__free_unpacked(t->spec, NULL);
	free(t);
}

Hca__VmSpec *vmm_spec_copy(const Hca__VmSpec *s)
{
	size_t len = hca__vm_spec__get_packed_size(s);
	uint8_t *buf = malloc(len ? len : 1);
	Hca__VmSpec *c;

	if (!buf)
		return NULL;
	hca__vm_spec__pack(s, buf);
	c = hca__vm_spec__unpack(NULL, len, buf);
	free(buf);
	return c;
}

static bool has_taps(const Hca__VmSpec *s)
{
	for (size_t i = 0; i < s->n_nics; i++)
		if (s->nics[i]->mode == HCA__NIC_MODE__NIC_MODE_BRIDGE)
			return true;
	return false;
}

static void on_state(struct hv_vm *hv, Hca__VmState st, const char *reason, void *opaque)
{
	struct vm *v = opaque;
	struct taps *t;

	vmm_state_publish(v->m, v);
	if (hv_state_running(st))
		return;
	if (v->rec && v->rec->active && !v->job)
		vmm_release(v->m, v);
	if (!v->rec || !has_taps(v->rec->spec) || !(t = calloc(1, sizeof(*t))))
		return;
	if (!(t->spec = vmm_spec_copy(v->rec->spec))) {
		free(t);
		return;
	}
	exec_item_init(&t->item, taps_teardown_fn, taps_done);
	exec_push(v->m->q_sys, &t->item, NULL);
}

static void on_event(struct hv_vm *hv, const char *name, json_t *data, void *opaque)
{
	(void)hv;
	vmm_mig_event(opaque, name, data);
	vmm_rep_event(opaque, name, data);
}

static const struct hv_vm_ops hv_ops = { .state_changed = on_state, .event = on_event };

/* ---- operations ---- */

bool vmm_vm_running(const struct vm *v)
{
	return v->hv && hv_state_running(hv_vm_state(v->hv));
}

bool vmm_vm_busy(struct vm *v, vmm_reply_fn fn, void *ctx)
{
	if (v->job) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BUSY,
				"vm %s: job %s (%s) is under way", v->name, job_id(v->job),
				job_kind_name(job_kind(v->job)));
		return true;
	}
	if (v->hv && hv_vm_busy(v->hv)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BUSY,
				"vm %s: another operation is under way", v->name);
		return true;
	}
	return false;
}

/* Look up @name for an operation; replies and returns NULL if it cannot run. */
struct vm *vmm_vm_for_op(struct vmm *m, const char *name, const char *op,
			    vmm_reply_fn fn, void *ctx)
{
	struct vm *v = name && *name ? vmm_vm_find(m, name) : NULL;

	if (!name || !*name) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "%s: no VM name given", op);
		return NULL;
	}
	if (!v) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_NOT_FOUND, "vm %s: no such VM", name);
		return NULL;
	}
	if (vmm_vm_busy(v, fn, ctx))
		return NULL;
	if (!v->rec) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_STORAGE, "%s", v->broken);
		return NULL;
	}
	return v;
}

struct sto_vols *vmm_vols(struct vmm *m, const char *backend)
{
	if (!backend[0] || !strcmp(backend, "file"))
		return m->vols;
	return !strcmp(backend, "rbd") ? m->rbd : NULL;
}

void vmm_hv_error(struct vm *v, int rc, const char *op, vmm_reply_fn fn, void *ctx)
{
	const char *st = v->hv ? hv_state_name(hv_vm_state(v->hv)) : "stopped";

	switch (rc) {
	case -EALREADY:
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: already %s", v->name, st);
		break;
	case -EINVAL:
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: cannot %s, it is %s",
			    v->name, op, st);
		break;
	case -EBUSY:
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BUSY,
			    "vm %s: another operation is under way", v->name);
		break;
	case -ENOTCONN:
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_HYPERVISOR,
			    "vm %s: QMP not connected (QEMU unreachable); try stop --force", v->name);
		break;
	default:
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_HYPERVISOR, "vm %s: %s failed: %s",
			    v->name, op, strerror(-rc));
	}
}

/* pause and resume: instant, no job */
struct hvq {
	struct vmm *m;
	struct vm *vm;
	vmm_reply_fn fn;
	void *ctx;
};

static void hvq_done(struct hv_vm *hv, int err, const char *msg, void *opaque)
{
	struct hvq *q = opaque;

	if (err == -ETIMEDOUT)
		vmm_reply_error(q->fn, q->ctx, HCA__ERROR_CODE__ERROR_TIMEOUT, "%s", msg);
	else if (err)
		vmm_reply_error(q->fn, q->ctx, HCA__ERROR_CODE__ERROR_HYPERVISOR, "%s", msg);
	else
		vmm_reply_vm(q->m, q->vm, q->fn, q->ctx);
	free(q);
}

static void run_pause(struct vmm *m, const char *name, bool pause, vmm_reply_fn fn, void *ctx)
{
	const char *op = pause ? "pause" : "resume";
	struct vm *v = vmm_vm_for_op(m, name, op, fn, ctx);
	struct hvq *q;
	int rc;

	if (!v || !vmm_check_owned(m, v, fn, ctx))
		return;
	if (!(q = calloc(1, sizeof(*q)))) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		return;
	}
	*q = (struct hvq){ m, v, fn, ctx };
	rc = pause ? hv_vm_pause(v->hv, hvq_done, q) : hv_vm_resume(v->hv, hvq_done, q);
	if (rc < 0) {
		vmm_hv_error(v, rc, op, fn, ctx);
		free(q);
	}
}

static void do_list(struct vmm *m, vmm_reply_fn fn, void *ctx)
{
	Hca__ApiReply r = HCA__API_REPLY__INIT;
	Hca__VmList list = HCA__VM_LIST__INIT;
	size_t n = 0, i = 0;
	Hca__VmStatus *st, **ptrs;

	for (struct vm *v = m->vms; v; v = v->next)
		n++;
	st = calloc(n ? n : 1, sizeof(*st));
	ptrs = calloc(n ? n : 1, sizeof(*ptrs));
	if (!st || !ptrs) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		goto out;
	}
	for (struct vm *v = m->vms; v; v = v->next, i++) {
		status_fill(m, v, &st[i]);
		ptrs[i] = &st[i];
	}
	list.n_vms = n;
	list.vms = ptrs;
	r.result_case = HCA__API_REPLY__RESULT_LIST;
	r.list = &list;
	fn(&r, ctx);
out:
	free(st);
	free(ptrs);
}

static void do_node_info(struct vmm *m, vmm_reply_fn fn, void *ctx)
{
	Hca__ApiReply r = HCA__API_REPLY__INIT;
	Hca__NodeInfo ni = HCA__NODE_INFO__INIT;

	ni.node_name = (char *)m->conf->node_name;
	ni.version = HCAD_VERSION;
	ni.qemu_version = m->qemu_version;
	ni.accel = m->accel;
	ni.accel_reason = m->accel_reason;
	ni.state_dir = (char *)m->conf->state_dir;
	for (struct vm *v = m->vms; v; v = v->next) {
		ni.vms++;
		ni.running += vmm_vm_running(v);
	}
	r.result_case = HCA__API_REPLY__RESULT_NODE;
	r.node = &ni;
	fn(&r, ctx);
}

static void do_show(struct vmm *m, const char *name, vmm_reply_fn fn, void *ctx)
{
	struct vm *v = name ? vmm_vm_find(m, name) : NULL;

	if (!v)
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_NOT_FOUND, "vm %s: no such VM",
			    name ? name : "");
	else if (!v->rec)
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_STORAGE, "%s", v->broken);
	else
		vmm_reply_vm(m, v, fn, ctx);
}

static void do_cluster_status(struct vmm *m, vmm_reply_fn fn, void *ctx)
{
	const struct memb_view *v = memb_view(m->memb);
	const struct memb_node *self = memb_local(v);
	Hca__ApiReply r = HCA__API_REPLY__INIT;
	Hca__ClusterStatus cs = HCA__CLUSTER_STATUS__INIT;
	Hca__ClusterNode nodes[MEMB_MAX_NODES], *ptrs[MEMB_MAX_NODES];

	cs.driver = m->conf->cluster == CONF_CLUSTER_COROSYNC ? "corosync" : "local";
	cs.connected = v->connected;
	cs.quorate = v->quorate;
	cs.votes = v->votes;
	cs.expected_votes = v->expected;
	cs.quorum = v->quorum;
	cs.ring_seq = v->ring_seq;
	cs.local_node = self ? (char *)self->name : (char *)m->conf->node_name;
	cs.store_backend = m->store ? (char *)sto_store_backend(m->store)
				    : m->conf->store == CONF_STORE_RADOS ? "rados" : "dir";
	cs.storage_health = m->storage_health;
	for (uint32_t i = 0; i < v->n; i++) {
		hca__cluster_node__init(&nodes[i]);
		nodes[i].id = v->nodes[i].id;
		nodes[i].name = (char *)v->nodes[i].name;
		nodes[i].address = (char *)v->nodes[i].addr;
		nodes[i].online = v->nodes[i].online;
		nodes[i].agent = v->nodes[i].agent;
		ptrs[i] = &nodes[i];
	}
	cs.n_nodes = v->n;
	cs.nodes = ptrs;
	r.result_case = HCA__API_REPLY__RESULT_CLUSTER;
	r.cluster = &cs;
	fn(&r, ctx);
}

void vmm_set_peers(struct vmm *m, struct peers *peers, const char *why)
{
	m->peers = peers;
	snprintf(m->peers_off, sizeof(m->peers_off), "%s", why ? why : "");
	if (peers) {
		vmm_fwd_register(m);
		vmm_mig_setup(m);
		vmm_rep_setup(m);
	}
}

struct ping_ctx {
	vmm_reply_fn fn;
	void *ctx;
};

static void on_ping_done(int err, const char *msg, const char *node, uint64_t rtt_us,
			 void *opaque)
{
	struct ping_ctx *pc = opaque;
	Hca__ApiReply r = HCA__API_REPLY__INIT;
	Hca__PingReply pr = HCA__PING_REPLY__INIT;

	if (err) {
		vmm_reply_error(pc->fn, pc->ctx, err == -ETIMEDOUT ? HCA__ERROR_CODE__ERROR_TIMEOUT
				: HCA__ERROR_CODE__ERROR_HYPERVISOR, "ping %s: %s", node, msg);
	} else {
		pr.node = (char *)node;
		pr.rtt_us = rtt_us;
		r.result_case = HCA__API_REPLY__RESULT_PING;
		r.ping = &pr;
		pc->fn(&r, pc->ctx);
	}
	free(pc);
}

static void do_ping(struct vmm *m, const Hca__PingRequest *q, vmm_reply_fn fn, void *ctx)
{
	struct ping_ctx *pc;

	if (!m->peers) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
				"node channel off: %s", m->peers_off);
		return;
	}
	if (!q->node[0]) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "ping: no node given");
		return;
	}
	pc = calloc(1, sizeof(*pc));
	if (!pc) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		return;
	}
	pc->fn = fn;
	pc->ctx = ctx;
	if (peers_ping(m->peers, q->node, on_ping_done, pc) < 0) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "ping %s: cannot send",
				q->node);
		free(pc);
	}
}

static bool changes_something(Hca__ApiRequest__OpCase op)
{
	switch (op) {
	case HCA__API_REQUEST__OP_PING:
	case HCA__API_REQUEST__OP_SHOW:
	case HCA__API_REQUEST__OP_LIST:
	case HCA__API_REQUEST__OP_NODE_INFO:
	case HCA__API_REQUEST__OP_CLUSTER_STATUS:
	case HCA__API_REQUEST__OP_JOB_LIST:
	case HCA__API_REQUEST__OP_JOB_SHOW:
	case HCA__API_REQUEST__OP_REPLICA_STATUS:
	case HCA__API_REQUEST__OP_REPLICA_POINTS:
		return false;
	default:
		return true;
	}
}

#define LOAD_RETRY_MS 5000u

static void load_retry(void *data)
{
	struct vmm *m = data;
	char err[512];

	m->load_retry = 0;
	if (m->stopping || m->loaded)
		return;
	if (vmm_load(m, err, sizeof(err)) < 0) {
		qb_log(LOG_WARNING, "storage: records not loaded (%s); retrying in %u s", err,
		       LOAD_RETRY_MS / 1000);
		snprintf(m->load_err, sizeof(m->load_err), "%s", err);
		qb_loop_timer_add(m->loop, QB_LOOP_LOW, LOAD_RETRY_MS * QB_TIME_NS_IN_MSEC, m,
				  load_retry, &m->load_retry);
	} else {
		qb_log(LOG_NOTICE, "storage: records loaded");
	}
}

int vmm_set_storage(struct vmm *m, struct sto_store *store, struct sto_vols *rbd,
		    char *err, size_t errlen)
{
	int rc;

	m->store = store;
	m->rbd = rbd;
	vmm_mig_store(m);
	vmm_rep_store(m);
	snprintf(m->storage_health, sizeof(m->storage_health), "ok");
	rc = vmm_load(m, err, errlen);
	if (rc < 0) {
		/* nothing is served from a table that was not read: ask again */
		snprintf(m->load_err, sizeof(m->load_err), "%s", err);
		qb_loop_timer_add(m->loop, QB_LOOP_LOW, LOAD_RETRY_MS * QB_TIME_NS_IN_MSEC, m,
				  load_retry, &m->load_retry);
	}
	return rc;
}

void vmm_set_storage_health(struct vmm *m, const char *health)
{
	snprintf(m->storage_health, sizeof(m->storage_health), "%s", health);
}

/* Requests that need the store answer "storage unavailable: WHY" at once
 * while it is away, rather than queue behind calls that will time out. */
static bool needs_store(Hca__ApiRequest__OpCase op)
{
	switch (op) {
	case HCA__API_REQUEST__OP_NODE_INFO:
	case HCA__API_REQUEST__OP_CLUSTER_STATUS:
	case HCA__API_REQUEST__OP_PING:
	/* answered from memory, or by QEMU: follow or cancel a job, look at
	 * a VM, pause one, while Ceph does not answer */
	case HCA__API_REQUEST__OP_SHOW:
	case HCA__API_REQUEST__OP_PAUSE:
	case HCA__API_REQUEST__OP_RESUME:
	case HCA__API_REQUEST__OP_JOB_SHOW:
	case HCA__API_REQUEST__OP_JOB_CANCEL:
		return false;
	default:
		return true;
	}
}

bool vmm_storage_ok(const struct vmm *m)
{
	return m->store && m->loaded && !strcmp(m->storage_health, "ok");
}

/* Why vmm_storage_ok() is false, for people. */
static const char *storage_why(const struct vmm *m)
{
	static char why[600];

	if (m->store && !m->loaded && !strcmp(m->storage_health, "ok")) {
		snprintf(why, sizeof(why), "the records are not loaded yet%s%s",
			 m->load_err[0] ? ": " : "", m->load_err);
		return why;
	}
	return m->storage_health;
}

void vmm_request(struct vmm *m, const Hca__ApiRequest *q, vmm_reply_fn fn, void *ctx)
{
	const char *via = q->forwarded_by;
	const char *target;
	char why[128];

	if (needs_store(q->op_case) && !vmm_storage_ok(m)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_STORAGE,
				"storage unavailable: %s", storage_why(m));
		return;
	}
	/* A VM owned elsewhere is driven by its owner: carry the request there
	 * and answer as if it ran here. */
	if ((target = vmm_route(m, q))) {
		vmm_forward(m, target, q, fn, ctx);
		return;
	}

	/* Without quorum this node may be the minority of a partition: it
	 * changes nothing and starts nothing; what runs keeps running. */
	if (changes_something(q->op_case) && !memb_view(m->memb)->quorate) {
		memb_describe(memb_view(m->memb), why, sizeof(why));
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_NO_QUORUM, "%s", why);
		return;
	}
	switch (q->op_case) {
	case HCA__API_REQUEST__OP_DEFINE:
		vmm_define(m, q->define, via, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_UNDEFINE:
		vmm_undefine(m, q->undefine->name, via, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_START:
		vmm_start(m, q->start, via, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_STOP:
		vmm_stop(m, q->stop, via, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_SHUTDOWN:
		vmm_shutdown_vm(m, q->shutdown, via, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_PAUSE:
		run_pause(m, q->pause->name, true, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_RESUME:
		run_pause(m, q->resume->name, false, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_SHOW:
		do_show(m, q->show->name, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_LIST:
		do_list(m, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_NODE_INFO:
		do_node_info(m, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_CLUSTER_STATUS:
		do_cluster_status(m, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_PING:
		do_ping(m, q->ping, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_JOB_LIST:
		vmm_job_list(m, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_JOB_SHOW:
		vmm_job_show(m, q->job_show->id, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_JOB_CANCEL:
		vmm_job_cancel(m, q->job_cancel->id, via, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_MIGRATE:
		vmm_migrate(m, q->migrate, via, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_REPLICA_ENABLE:
		vmm_replica_enable(m, q->replica_enable, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_REPLICA_STATUS:
		vmm_replica_status(m, q->replica_status->name, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_REPLICA_POINTS:
		vmm_replica_points(m, q->replica_points->name, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_REPLICA_PAUSE:
		vmm_replica_state(m, q->replica_pause->name, HCA__REP_STATE__REP_STATE_PAUSED, fn,
				  ctx);
		break;
	case HCA__API_REQUEST__OP_REPLICA_RESUME:
		vmm_replica_state(m, q->replica_resume->name, HCA__REP_STATE__REP_STATE_ENABLED, fn,
				  ctx);
		break;
	case HCA__API_REQUEST__OP_REPLICA_DISABLE:
		vmm_replica_state(m, q->replica_disable->name, HCA__REP_STATE__REP_STATE_NONE, fn,
				  ctx);
		break;
	case HCA__API_REQUEST__OP_REPLICA_FAILOVER:
		vmm_replica_failover(m, q->replica_failover, via, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_REPLICA_REVERSE:
		vmm_replica_reverse(m, q->replica_reverse->name, fn, ctx);
		break;
	default:
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_PROTOCOL,
			    "unknown request (operation %d)", (int)q->op_case);
	}
}

/* ---- lifetime ---- */

struct vmm *vmm_new(const struct vmm_cfg *cfg)
{
	struct vmm *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->loop = cfg->loop;
	m->conf = cfg->conf;
	m->store = cfg->store;
	m->vols = cfg->vols;
	m->rbd = cfg->rbd;
	m->q_store = cfg->q_store;
	m->exec = cfg->exec;
	m->q_sys = cfg->q_sys;
	m->memb = cfg->memb;
	m->accel = cfg->accel;
	m->jobs = jobs_new(cfg->loop, cfg->q_store, cfg->conf->node_name);
	if (!m->jobs) {
		free(m);
		return NULL;
	}
	snprintf(m->accel_reason, sizeof(m->accel_reason), "%s", cfg->accel_reason);
	snprintf(m->qemu_version, sizeof(m->qemu_version), "%s", cfg->qemu_version);
	snprintf(m->storage_health, sizeof(m->storage_health), "%s",
		 m->store ? "ok" : "connecting to Ceph");
	snprintf(m->peers_off, sizeof(m->peers_off), "a standalone node (cluster = local)");
	hv_limits_default(&m->limits);
	m->limits.max_vcpus = (uint32_t)cfg->conf->max_vcpus;
	m->limits.max_memory_mib = cfg->conf->max_memory_mib;
	return m;
}

void vmm_shutdown(struct vmm *m)
{
	if (!m)
		return;
	m->stopping = true;
	if (m->load_retry)
		qb_loop_timer_del(m->loop, m->load_retry);
	m->load_retry = 0;
	vmm_sync_stop(m);
	jobs_shutdown(m->jobs);
}

void vmm_free(struct vmm *m)
{
	struct vm *v, *next;

	if (!m)
		return;
	vmm_shutdown(m);
	/* the VMs first: their QEMU handles cancel what migrations still wait
	 * for (-ECANCELED), while those migrations exist */
	for (v = m->vms; v; v = next) {
		next = v->next;
		vmm_vm_free(v);
	}
	vmm_mig_free(m);
	vmm_rep_free(m);
	for (size_t i = 0; i < m->n_interrupted; i++)
		hca__job__free_unpacked(m->interrupted[i], NULL);
	free(m->interrupted);
	free(m->interrupted_ver);
	free(m->ended);
	free(m->ended_ver);
	jobs_free(m->jobs);
	free(m);
}
