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

void vmm_vm_free(struct vm *v)
{
	if (!v)
		return;
	hv_vm_free(v->hv);
	if (v->rec)
		hca__vm_record__free_unpacked(v->rec, NULL);
	if (v->run)
		hca__vm_run_state__free_unpacked(v->run, NULL);
	free(v);
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
		st->reason = v->defining ? "being defined" : v->broken;
		return;
	}
	st->spec = v->rec->spec;
	st->owner = v->rec->owner;
	st->version = v->version;
	st->n_volumes = v->rec->n_volumes;
	st->volumes = v->rec->volumes;
	st->console_path = v->paths.console;
	st->serial_log = v->paths.serial_log;
	st->qemu_log = v->paths.qemu_log;
	if (!v->hv) {
		if (v->run) { /* another node's VM, as its owner last said */
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

struct pending *vmm_pending_new(struct vmm *m, struct vm *v, vmm_reply_fn fn,
				   void *ctx)
{
	struct pending *p = calloc(1, sizeof(*p));

	if (!p) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		return NULL;
	}
	p->m = m;
	p->vm = v;
	p->fn = fn;
	p->ctx = ctx;
	return p;
}

void vmm_pending_free(struct pending *p)
{
	if (!p)
		return;
	if (p->rec)
		hca__vm_record__free_unpacked(p->rec, NULL);
	free(p);
}

/* Answer a finished hv operation. */
void vmm_hv_done(struct hv_vm *hv, int err, const char *msg, void *opaque)
{
	struct pending *p = opaque;

	if (err == -ETIMEDOUT)
		vmm_reply_error(p->fn, p->ctx, HCA__ERROR_CODE__ERROR_TIMEOUT, "%s", msg);
	else if (err)
		vmm_reply_error(p->fn, p->ctx, HCA__ERROR_CODE__ERROR_HYPERVISOR, "%s", msg);
	else
		vmm_reply_vm(p->m, p->vm, p->fn, p->ctx);
	vmm_pending_free(p);
}

/* ---- records ---- */

void vmm_key(char *key, size_t len, const char *name)
{
	snprintf(key, len, "vm/%s", name);
}

Hca__VmRecord *vmm_record_decode(const uint8_t *buf, size_t len, char *err,
				 size_t errlen, const char *name)
{
	int werr = 0;
	Hca__VmRecord *r = (Hca__VmRecord *)wire_frame_unpack(buf, len, STO_REC_MAX,
							       WIRE_T_VM_RECORD,
							       &hca__vm_record__descriptor, &werr);

	if (!r) {
		snprintf(err, errlen, "vm %s: state record corrupt (%s)", name, wire_strerror(werr));
		return NULL;
	}
	if (!r->spec || strcmp(r->spec->name, name) != 0) {
		snprintf(err, errlen, "vm %s: state record corrupt (names vm '%s')", name,
			 r->spec ? r->spec->name : "");
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

	if (err)
		qb_log(LOG_ERR, "%s", msg);
	else
		qb_log(LOG_INFO, "vm %s: %s", v->name, hv_vm_reason(hv));
}

static void load_one(struct vmm *m, const char *key)
{
	const char *name = key + 3;
	uint8_t *buf = NULL;
	size_t len = 0;
	struct vm *v = vmm_vm_new(m, name);
	int rc;

	if (!v)
		return;
	rc = sto_get(m->store, key, &buf, &len, &v->version, v->broken, sizeof(v->broken));
	if (rc == 0)
		v->rec = vmm_record_decode(buf, len, v->broken, sizeof(v->broken), name);
	free(buf);
	vmm_vm_link(m, v);
	if (!v->rec) {
		qb_log(LOG_ERR, "%s; VM left alone until repaired", v->broken);
		return;
	}
	if (vmm_owned(m, v))
		vmm_vm_supervise(m, v);
}

void vmm_vm_supervise(struct vmm *m, struct vm *v)
{
	if (vmm_vm_attach_hv(m, v) == 0)
		hv_vm_attach(v->hv, on_attached, v);
}

int vmm_load(struct vmm *m, char *err, size_t errlen)
{
	char **keys = NULL;
	size_t n = 0;
	int rc = sto_list(m->store, "vm/", &keys, &n, err, errlen);

	if (rc < 0)
		return rc;
	for (size_t i = 0; i < n; i++)
		load_one(m, keys[i]);
	qb_log(LOG_INFO, "loaded %zu VM record(s)", n);
	sto_keys_free(keys, n);
	return vmm_sync_start(m, err, errlen);
}

/* ---- state changes ---- */

static void taps_teardown_fn(void *arg)
{
	Hca__VmSpec *spec = arg;

	net_taps_teardown(spec);
	hca__vm_spec__free_unpacked(spec, NULL);
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
	Hca__VmSpec *copy;

	vmm_state_publish(v->m, v);
	if (st != HCA__VM_STATE__VM_STATE_STOPPED && st != HCA__VM_STATE__VM_STATE_CRASHED)
		return;
	if (!v->rec || !has_taps(v->rec->spec) || !(copy = vmm_spec_copy(v->rec->spec)))
		return;
	if (work_queue_push(v->m->work, taps_teardown_fn, NULL, copy) < 0)
		hca__vm_spec__free_unpacked(copy, NULL);
}

static const struct hv_vm_ops hv_ops = { .state_changed = on_state };

/* ---- operations ---- */

bool vmm_vm_running(const struct vm *v)
{
	Hca__VmState s;

	if (!v->hv)
		return false;
	s = hv_vm_state(v->hv);
	return s != HCA__VM_STATE__VM_STATE_STOPPED && s != HCA__VM_STATE__VM_STATE_CRASHED;
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
	if (v->defining || v->undefining || v->preparing || (v->hv && hv_vm_busy(v->hv))) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BUSY,
			    "vm %s: another operation is under way", name);
		return NULL;
	}
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

bool vmm_check_owned(struct vmm *m, struct vm *v, vmm_reply_fn fn, void *ctx)
{
	if (vmm_owned(m, v))
		return true;
	vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
			"vm %s: owned by node %s, not this node (%s); run this there",
			v->name, v->rec->owner, m->conf->node_name);
	return false;
}

static void hv_error(struct vm *v, int rc, const char *op, vmm_reply_fn fn, void *ctx)
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

typedef int (*hv_op_fn)(struct vm *v, const void *arg, hv_done_fn done, void *p);

static void run_hv_op(struct vmm *m, const char *name, const char *op, hv_op_fn f,
		      const void *arg, vmm_reply_fn fn, void *ctx)
{
	struct vm *v = vmm_vm_for_op(m, name, op, fn, ctx);
	struct pending *p;
	int rc;

	if (!v || !vmm_check_owned(m, v, fn, ctx) || !(p = vmm_pending_new(m, v, fn, ctx)))
		return;
	rc = f(v, arg, vmm_hv_done, p);
	if (rc < 0) {
		hv_error(v, rc, op, fn, ctx);
		vmm_pending_free(p);
	}
}

static int op_pause(struct vm *v, const void *a, hv_done_fn d, void *p)
{
	return hv_vm_pause(v->hv, d, p);
}

static int op_resume(struct vm *v, const void *a, hv_done_fn d, void *p)
{
	return hv_vm_resume(v->hv, d, p);
}

static int op_stop(struct vm *v, const void *a, hv_done_fn d, void *p)
{
	const Hca__StopRequest *r = a;

	if (!vmm_vm_running(v))
		return -EINVAL;
	return hv_vm_stop(v->hv, r->force, d, p);
}

static int op_shutdown(struct vm *v, const void *a, hv_done_fn d, void *p)
{
	const Hca__ShutdownRequest *r = a;
	unsigned t = r->timeout_s ? r->timeout_s : (unsigned)v->m->conf->shutdown_timeout_s;

	if (t > 3600)
		t = 3600;
	return hv_vm_shutdown(v->hv, t, d, p);
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
		return false;
	default:
		return true;
	}
}

int vmm_set_storage(struct vmm *m, struct sto_store *store, struct sto_vols *rbd,
		    char *err, size_t errlen)
{
	m->store = store;
	m->rbd = rbd;
	snprintf(m->storage_health, sizeof(m->storage_health), "ok");
	return vmm_load(m, err, errlen);
}

void vmm_set_storage_health(struct vmm *m, const char *health)
{
	snprintf(m->storage_health, sizeof(m->storage_health), "%s", health);
}

void vmm_request(struct vmm *m, const Hca__ApiRequest *q, vmm_reply_fn fn, void *ctx)
{
	char why[128];

	if (!m->store && q->op_case != HCA__API_REQUEST__OP_NODE_INFO &&
	    q->op_case != HCA__API_REQUEST__OP_CLUSTER_STATUS &&
	    q->op_case != HCA__API_REQUEST__OP_PING) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_STORAGE,
				"storage unavailable: %s", m->storage_health);
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
		vmm_define(m, q->define, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_UNDEFINE:
		vmm_undefine(m, q->undefine->name, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_START:
		vmm_start(m, q->start, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_STOP:
		run_hv_op(m, q->stop->name, "stop", op_stop, q->stop, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_SHUTDOWN:
		run_hv_op(m, q->shutdown->name, "shut down", op_shutdown, q->shutdown, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_PAUSE:
		run_hv_op(m, q->pause->name, "pause", op_pause, NULL, fn, ctx);
		break;
	case HCA__API_REQUEST__OP_RESUME:
		run_hv_op(m, q->resume->name, "resume", op_resume, NULL, fn, ctx);
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
	m->work = cfg->work;
	m->memb = cfg->memb;
	m->accel = cfg->accel;
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

void vmm_free(struct vmm *m)
{
	struct vm *v, *next;

	if (!m)
		return;
	vmm_sync_stop(m);
	for (v = m->vms; v; v = next) {
		next = v->next;
		vmm_vm_free(v);
	}
	free(m);
}

