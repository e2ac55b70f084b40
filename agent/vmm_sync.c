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

struct publish {
	struct vmm *m;
	char key[STO_KEY_MAX + 1];
	uint8_t *frame;
	size_t len;
};

static void publish_fn(void *arg)
{
	struct publish *p = arg;
	char err[256];
	uint8_t *old = NULL;
	size_t olen = 0;
	uint64_t ver = 0;
	int rc = -ECANCELED;

	/* Only the owner writes its VM's state record, so a conflict means
	 * only that a previous write of ours raced: re-read and go again. */
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

static void publish_done(void *arg)
{
	struct publish *p = arg;

	free(p->frame);
	free(p);
}

void vmm_state_publish(struct vmm *m, struct vm *v)
{
	Hca__VmRunState rs = HCA__VM_RUN_STATE__INIT;
	struct publish *p;

	if (m->conf->cluster == CONF_CLUSTER_LOCAL || !v->hv)
		return; /* nobody else to tell */
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
	p->m = m;
	snprintf(p->key, sizeof(p->key), "state/%s", v->name);
	p->frame = wire_frame_pack(WIRE_T_VM_STATE, &rs.base, &p->len);
	if (!p->frame || work_queue_push(m->work, publish_fn, publish_done, p) < 0)
		publish_done(p);
}

/* ---- applying what the store says (every node) ---- */

struct refresh {
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

static void refresh_fn(void *arg)
{
	struct refresh *r = arg;
	char err[256];

	if (r->key[0])
		r->rc = sto_get(r->m->store, r->key, &r->buf, &r->len, &r->version, err, sizeof(err));
	else
		r->rc = sto_list(r->m->store, r->ns, &r->keys, &r->nkeys, err, sizeof(err));
}

static bool vm_quiet(const struct vm *v)
{
	return !v->defining && !v->undefining && !v->preparing && !(v->hv && hv_vm_busy(v->hv));
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

static void apply_record(struct vmm *m, const char *name, struct refresh *r)
{
	struct vm *v = vmm_vm_find(m, name);
	Hca__VmRecord *rec = NULL;
	char err[256];

	if (v && !vm_quiet(v))
		return;
	if (r->rc == -ENOENT) {
		if (v && !vmm_vm_running(v)) {
			qb_log(LOG_INFO, "vm %s: undefined elsewhere in the cluster", name);
			vmm_vm_unlink(m, v);
			vmm_vm_free(v);
		}
		return;
	}
	if (r->rc == 0)
		rec = vmm_record_decode(r->buf, r->len, err, sizeof(err), name);
	if (!rec || (v && v->rec && r->version <= v->version)) {
		if (rec)
			hca__vm_record__free_unpacked(rec, NULL);
		return;
	}
	if (!v) {
		if (!(v = vmm_vm_new(m, name))) {
			hca__vm_record__free_unpacked(rec, NULL);
			return;
		}
		vmm_vm_link(m, v);
		qb_log(LOG_INFO, "vm %s: defined elsewhere in the cluster (owner %s)", name, rec->owner);
	}
	if (v->rec)
		hca__vm_record__free_unpacked(v->rec, NULL);
	v->rec = rec;
	v->version = r->version;
	v->broken[0] = '\0';
	follow_owner(m, v);
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
	if (v->run)
		hca__vm_run_state__free_unpacked(v->run, NULL);
	v->run = rs;
}

static int refresh_push(struct vmm *m, const char *key, const char *ns);

static void refresh_done(void *arg)
{
	struct refresh *r = arg;
	const char *slash = strchr(r->key, '/');

	if (!r->key[0]) {
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
	if (work_queue_push(m->work, refresh_fn, refresh_done, r) < 0) {
		free(r);
		return -ENOMEM;
	}
	return 0;
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
	if (m->conf->cluster == CONF_CLUSTER_LOCAL)
		return 0;
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
