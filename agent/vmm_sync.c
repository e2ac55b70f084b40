/*
 * vmm_sync: keep this node's table of VMs in step with the shared store.
 *
 * Every node holds every VM's record; only the owner supervises its QEMU.
 * The owner publishes what it observes as state/NAME so the others can show
 * it. Watches on the "vm" and "state" namespaces say "look again"; the
 * record read back on a worker says what is true, and is applied on the
 * loop. A VM with an operation under way is left to that operation.
 */
#include "agent/vmm_priv.h"
#include "proto/wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <qb/qblog.h>

bool vmm_owned(const struct vmm *m, const struct vm *v)
{
	if (m->conf->cluster == CONF_CLUSTER_LOCAL)
		return true; /* a standalone node owns everything in its store */
	return v->rec && !strcmp(v->rec->owner, m->conf->node_name);
}

/* ---- publishing the run state (owner side) ---- */

/* One write of a VM's state/ record in flight at a time, the latest state
 * next: two publications never land out of order. Each carries a sequence
 * number from the publisher's clock, which readers compare too. */
struct publish {
	struct exec_item item;
	struct vmm *m;
	struct vm *vm;
	char key[STO_KEY_MAX + 1];
	uint8_t *frame;
	size_t len;
};

static void publish_fn(struct exec_item *it)
{
	struct publish *p = EXEC_CONTAINER_OF(it, struct publish, item);
	char err[256];
	uint8_t *old = NULL;
	size_t olen = 0;
	uint64_t ver = 0;
	int rc = -ECANCELED;

	/* Only the owner writes its VM's state record; a conflict means a
	 * previous owner's last word: re-read and go again. Advisory only:
	 * the owner record (vm/NAME) is the authority. */
	for (int tries = 0; tries < 3 && rc == -ECANCELED; tries++) {
		ver = 0;
		rc = sto_get(p->m->store, p->key, &old, &olen, &ver, err, sizeof(err));
		free(old);
		old = NULL;
		if (rc < 0 && rc != -ENOENT && rc != -EBADMSG)
			break;
		if (rc == -EBADMSG) /* replace a corrupt one rather than stay stale */
			sto_del(p->m->store, p->key, ver, err, sizeof(err));
		rc = sto_put(p->m->store, p->key, p->frame, p->len, rc == 0 ? ver : 0, NULL,
			     err, sizeof(err));
	}
	if (rc < 0)
		qb_log(LOG_WARNING, "cannot publish %s: %s", p->key, err);
}

static void publish_done(struct exec_item *it)
{
	struct publish *p = EXEC_CONTAINER_OF(it, struct publish, item);
	struct vm *v = p->vm;
	bool cancelled = exec_item_cancelled(it);

	free(p->frame);
	free(p);
	v->publishing = false;
	if (vmm_vm_put(v) || cancelled)
		return;
	if (v->publish_again) {
		v->publish_again = false;
		vmm_state_publish(v->m, v);
	}
}

static uint64_t seq_now(struct vm *v)
{
	struct timespec ts;
	uint64_t ms;

	clock_gettime(CLOCK_REALTIME, &ts);
	ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
	v->publish_seq = ms > v->publish_seq ? ms : v->publish_seq + 1;
	return v->publish_seq;
}

void vmm_state_publish(struct vmm *m, struct vm *v)
{
	Hca__VmRunState rs = HCA__VM_RUN_STATE__INIT;
	struct publish *p;

	if (m->conf->cluster == CONF_CLUSTER_LOCAL || !v->hv || m->stopping || !m->store)
		return; /* nobody else to tell */
	if (!vmm_owned(m, v))
		return; /* an incoming migration's QEMU: the owner speaks for the VM */
	if (v->publishing) {
		v->publish_again = true;
		return;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return;
	rs.node = (char *)m->conf->node_name;
	rs.state = hv_vm_state(v->hv);
	rs.reason = (char *)hv_vm_reason(v->hv);
	rs.pid = hv_vm_pid(v->hv);
	rs.accel = rs.pid > 0 ? m->accel : HCA__ACCEL__ACCEL_NONE;
	rs.started_at = hv_vm_started_at(v->hv);
	rs.updated_at = (uint64_t)time(NULL);
	rs.seq = seq_now(v);
	rs.owner_epoch = v->rec ? v->rec->owner_epoch : 0;
	p->m = m;
	p->vm = v;
	snprintf(p->key, sizeof(p->key), "state/%s", v->name);
	p->frame = wire_frame_pack(WIRE_T_VM_STATE, &rs.base, &p->len);
	if (!p->frame) {
		free(p);
		return;
	}
	exec_item_init(&p->item, publish_fn, publish_done);
	exec_push(m->q_store, &p->item, p->key);
	v->publishing = true;
	v->refs++;
}

/* ---- applying what the store says (every node) ---- */

struct refresh {
	struct exec_item item;
	struct vmm *m;
	char key[STO_KEY_MAX + 1]; /* "" with ns set: re-read the namespace */
	char ns[16];
	int rc;
	uint8_t *buf;
	size_t len;
	uint64_t version;
	char **keys;
	size_t nkeys;
};

static void refresh_fn(struct exec_item *it)
{
	struct refresh *r = EXEC_CONTAINER_OF(it, struct refresh, item);
	char err[256];

	if (r->key[0])
		r->rc = sto_get(r->m->store, r->key, &r->buf, &r->len, &r->version, err, sizeof(err));
	else
		r->rc = sto_list(r->m->store, r->ns, &r->keys, &r->nkeys, err, sizeof(err));
}

static bool vm_quiet(const struct vm *v)
{
	return !v->job && !(v->hv && hv_vm_busy(v->hv));
}

/* Supervise or let go of the QEMU as ownership says. */
static void follow_owner(struct vmm *m, struct vm *v)
{
	bool owned = vmm_owned(m, v);

	if (owned && !v->hv) {
		vmm_vm_supervise(m, v);
	} else if (!owned && v->hv && !vmm_vm_running(v)) {
		hv_vm_free(v->hv);
		v->hv = NULL;
	}
}

static void drop_vm(struct vmm *m, struct vm *v, const char *why)
{
	if (vmm_vm_running(v)) {
		/* cannot happen through hca (undefine needs it stopped, and a
		 * claim keeps others off); never kill a guest on a guess */
		qb_log(LOG_ERR, "vm %s: %s, but its QEMU runs here; left running", v->name, why);
		return;
	}
	qb_log(LOG_INFO, "vm %s: %s", v->name, why);
	vmm_vm_unlink(m, v);
	vmm_vm_free(v);
}

void vmm_sync_apply(struct vmm *m, struct vm *v, Hca__VmRecord *rec, uint64_t version)
{
	if (v->rec)
		hca__vm_record__free_unpacked(v->rec, NULL);
	v->rec = rec;
	v->version = version;
	v->broken[0] = '\0';
	follow_owner(m, v);
	/* the claim as this owner's QEMU says, once nothing is under way (an
	 * attach is an operation of hv: busy until it knows) */
	if (vmm_owned(m, v) && !v->job && v->hv && !hv_vm_busy(v->hv)) {
		if (v->rec->active && !vmm_vm_running(v))
			vmm_release(m, v);
		else if (!v->rec->active && vmm_vm_running(v))
			vmm_claim_running(m, v);
	}
}

/*
 * A record read back. Versions order the updates of one VM; the
 * incarnation tells a VM defined again under the same name (whose versions
 * start over at 1) from the one this node knew, so a node that missed
 * `undefine X; define X` while cut off takes the new record, never keeps
 * the old one.
 */
static void apply_record(struct vmm *m, const char *name, struct refresh *r)
{
	struct vm *v = vmm_vm_find(m, name);
	Hca__VmRecord *rec = NULL;
	char err[256] = "";

	if (v && !vm_quiet(v)) {
		v->stale = true; /* read again when the job ends (vmm_job_done) */
		return;
	}
	if (r->rc == -ENOENT) {
		if (v && v->rec)
			drop_vm(m, v, "undefined elsewhere in the cluster");
		return;
	}
	if (r->rc == 0)
		rec = vmm_record_check(m, r->buf, r->len, name, err, sizeof(err));
	if (!rec) {
		if (r->rc == 0 && v && !vmm_vm_running(v)) {
			/* refused (corrupt, newer format, bad spec): listed as
			 * such, never started from here, never deleted */
			qb_log(LOG_ERR, "%s; VM left alone until repaired", err);
			if (v->rec)
				hca__vm_record__free_unpacked(v->rec, NULL);
			v->rec = NULL;
			snprintf(v->broken, sizeof(v->broken), "%s", err);
		}
		return;
	}
	if (v && v->rec && v->rec->incarnation == rec->incarnation && r->version <= v->version) {
		hca__vm_record__free_unpacked(rec, NULL);
		return;
	}
	if (v && v->rec && v->rec->incarnation != rec->incarnation) {
		if (vmm_vm_running(v)) {
			qb_log(LOG_ERR, "vm %s: defined again elsewhere while its QEMU runs here; "
			       "left running", name);
			hca__vm_record__free_unpacked(rec, NULL);
			return;
		}
		qb_log(LOG_INFO, "vm %s: undefined and defined again elsewhere; taking the new "
		       "record", name);
		drop_vm(m, v, "replaced by its new definition");
		v = NULL;
	}
	if (!v) {
		if (!(v = vmm_vm_new(m, name))) {
			hca__vm_record__free_unpacked(rec, NULL);
			return;
		}
		vmm_vm_link(m, v);
		qb_log(LOG_INFO, "vm %s: defined elsewhere in the cluster (owner %s)", name, rec->owner);
	}
	vmm_sync_apply(m, v, rec, r->version);
}

static void apply_state(struct vmm *m, const char *name, struct refresh *r)
{
	struct vm *v = vmm_vm_find(m, name);
	int werr = 0;
	Hca__VmRunState *rs;

	if (!v || vmm_owned(m, v) || r->rc != 0)
		return;
	rs = (Hca__VmRunState *)wire_frame_unpack(r->buf, r->len, STO_REC_MAX, WIRE_T_VM_STATE,
						  &hca__vm_run_state__descriptor, &werr);
	if (!rs)
		return;
	/* never a newer observation replaced by an older one of the same node */
	if (v->run && !strcmp(v->run->node, rs->node) && rs->seq && rs->seq < v->run->seq) {
		hca__vm_run_state__free_unpacked(rs, NULL);
		return;
	}
	if (v->run)
		hca__vm_run_state__free_unpacked(v->run, NULL);
	v->run = rs;
}

/* A full re-read of vm/: what is no longer listed may have been deleted
 * meanwhile, or defined after the listing: its own read decides. */
static void drop_unlisted(struct vmm *m, char **keys, size_t n)
{
	struct vm *v, *next;

	for (v = m->vms; v; v = next) {
		bool listed = false;
		next = v->next;
		if (v->job || !v->rec)
			continue;
		for (size_t i = 0; i < n && !listed; i++)
			listed = !strcmp(keys[i] + 3, v->name);
		if (!listed)
			vmm_sync_refresh(m, v->name);
	}
}

static int refresh_push(struct vmm *m, const char *key, const char *ns);

static void refresh_done(struct exec_item *it)
{
	struct refresh *r = EXEC_CONTAINER_OF(it, struct refresh, item);
	const char *slash = strchr(r->key, '/');

	if (exec_item_cancelled(it)) {
		sto_keys_free(r->keys, r->nkeys);
	} else if (!r->key[0]) {
		if (r->rc == 0 && !strcmp(r->ns, "vm/"))
			drop_unlisted(r->m, r->keys, r->nkeys);
		for (size_t i = 0; r->rc == 0 && i < r->nkeys; i++)
			refresh_push(r->m, r->keys[i], NULL);
		sto_keys_free(r->keys, r->nkeys);
	} else if (!strncmp(r->key, "vm/", 3)) {
		apply_record(r->m, slash + 1, r);
	} else if (!strncmp(r->key, "state/", 6)) {
		apply_state(r->m, slash + 1, r);
	}
	free(r->buf);
	free(r);
}

static int refresh_push(struct vmm *m, const char *key, const char *ns)
{
	struct refresh *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->m = m;
	snprintf(r->key, sizeof(r->key), "%s", key ? key : "");
	snprintf(r->ns, sizeof(r->ns), "%s/", ns ? ns : "");
	exec_item_init(&r->item, refresh_fn, refresh_done);
	/* a record's reads in the order of its changes; listings apart */
	exec_push(m->q_store, &r->item, r->key[0] ? r->key : NULL);
	return 0;
}

void vmm_sync_refresh(struct vmm *m, const char *name)
{
	char key[STO_KEY_MAX + 1];

	if (m->conf->cluster == CONF_CLUSTER_LOCAL || m->stopping || !m->store)
		return;
	snprintf(key, sizeof(key), "vm/%s", name);
	refresh_push(m, key, NULL);
}

void vmm_job_done(struct vm *v)
{
	v->job = NULL;
	if (v->stale && !(v->hv && hv_vm_busy(v->hv))) {
		v->stale = false;
		vmm_sync_refresh(v->m, v->name);
	}
}

/* Backend thread: only hand the key over to a worker, then the loop. */
static void on_vm_change(const char *key, void *opaque)
{
	refresh_push(opaque, key, "vm");
}

static void on_state_change(const char *key, void *opaque)
{
	refresh_push(opaque, key, "state");
}

void vmm_resync(struct vmm *m)
{
	if (!m->store || m->conf->cluster == CONF_CLUSTER_LOCAL)
		return;
	refresh_push(m, NULL, "vm");
	refresh_push(m, NULL, "state");
}

int vmm_sync_start(struct vmm *m, char *err, size_t errlen)
{
	if (m->conf->cluster == CONF_CLUSTER_LOCAL || m->watch_state)
		return 0;
	if (!m->watch_vm)
		m->watch_vm = sto_watch_new(m->store, "vm", on_vm_change, m, err, errlen);
	m->watch_state = m->watch_vm ? sto_watch_new(m->store, "state", on_state_change, m,
						     err, errlen) : NULL;
	if (!m->watch_state)
		return -EIO;
	/* what other nodes run right now */
	return refresh_push(m, NULL, "state");
}

void vmm_sync_stop(struct vmm *m)
{
	sto_watch_free(m->watch_vm);
	sto_watch_free(m->watch_state);
	m->watch_vm = m->watch_state = NULL;
}
