/*
 * vmm_resolve: jobs of this node that an hcad crash (kill -9, power loss)
 * left unfinished are finished or rolled back at the next start, and the
 * job record says which. Runs once the records are loaded and every QEMU
 * re-attached, so "is it running" is read from the process, not guessed.
 */
#include "agent/vmm_priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

#define RESOLVE_RETRY_MS 5000u

static uint64_t seq_of(const Hca__Job *j)
{
	const char *dash = strrchr(j->id, '-');

	return dash ? strtoull(dash + 1, NULL, 10) : 0;
}

static int oldest_first(const void *a, const void *b)
{
	uint64_t x = seq_of(*(Hca__Job *const *)a), y = seq_of(*(Hca__Job *const *)b);

	return x < y ? -1 : x > y;
}

/* Ended jobs of earlier runs join the table, oldest first (newest at its
 * head), so `job show` finds them and pruning keeps the newest JOB_KEEP. */
static void adopt_ended(struct vmm *m)
{
	Hca__Job **order = calloc(m->n_ended ? m->n_ended : 1, sizeof(*order));

	if (order) {
		memcpy(order, m->ended, m->n_ended * sizeof(*order));
		qsort(order, m->n_ended, sizeof(*order), oldest_first);
	}
	for (size_t i = 0; order && i < m->n_ended; i++) {
		size_t k = 0;
		while (m->ended[k] != order[i])
			k++;
		job_adopt(m->jobs, order[i], m->ended_ver[k]);
	}
	for (size_t i = 0; i < m->n_ended; i++)
		hca__job__free_unpacked(m->ended[i], NULL);
	m->n_ended = 0;
	free(order);
}

int vmm_resolve_load(struct vmm *m, char *err, size_t errlen)
{
	char prefix[80], **keys = NULL;
	size_t n = 0;
	int rc;

	snprintf(prefix, sizeof(prefix), "job/%s-", m->conf->node_name);
	if (m->interrupted) /* read again by a load that is retried */
		return 0;
	if ((rc = sto_list(m->store, prefix, &keys, &n, err, errlen)) < 0)
		return rc;
	m->interrupted = calloc(n ? n : 1, sizeof(*m->interrupted));
	m->interrupted_ver = calloc(n ? n : 1, sizeof(*m->interrupted_ver));
	m->ended = calloc(n ? n : 1, sizeof(*m->ended));
	m->ended_ver = calloc(n ? n : 1, sizeof(*m->ended_ver));
	if (!m->interrupted || !m->interrupted_ver || !m->ended || !m->ended_ver) {
		sto_keys_free(keys, n);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		uint8_t *buf = NULL;
		size_t len = 0;
		uint64_t ver = 0;
		char e[256];
		Hca__Job *j = NULL;

		uint64_t seq = job_id_seq(keys[i] + 4, m->conf->node_name);

		/* "job/hv-" also lists node hv-2's jobs: never touch another's */
		if (!seq)
			continue;
		jobs_seq_at_least(m->jobs, seq);
		if (sto_get(m->store, keys[i], &buf, &len, &ver, e, sizeof(e)) == 0)
			j = job_record_decode(buf, len, e, sizeof(e));
		free(buf);
		if (!j) {
			qb_log(LOG_WARNING, "%s: %s", keys[i], e);
			continue;
		}
		if (strcmp(j->node, m->conf->node_name)) {
			hca__job__free_unpacked(j, NULL);
			continue;
		}
		if (job_phase_terminal(j->phase)) {
			/* kept for show and pruned with the new ones (see below) */
			m->ended_ver[m->n_ended] = ver;
			m->ended[m->n_ended++] = j;
			continue;
		}
		m->interrupted_ver[m->n_interrupted] = ver;
		m->interrupted[m->n_interrupted++] = j;
	}
	sto_keys_free(keys, n);
	adopt_ended(m);
	if (m->n_interrupted)
		qb_log(LOG_NOTICE, "%zu job(s) interrupted by the last stop of hcad: resolving them "
		       "once the VMs are re-attached", m->n_interrupted);
	return 0;
}

/* define: the record decides, read again on a worker. */
struct rdef {
	struct exec_item item;
	struct vmm *m;
	struct job *job;
	int rc;           /* 0: committed; -ENOENT: rolled back; else unknown */
	char err[256];
};

static void rdef_fn(struct exec_item *it)
{
	struct rdef *r = EXEC_CONTAINER_OF(it, struct rdef, item);
	Hca__VmRecord *rec = NULL;
	uint64_t ver = 0;

	r->rc = sto_vm_get(r->m->store, job_vm(r->job), &rec, &ver, r->err, sizeof(r->err));
	if (r->rc == 0 && rec->incarnation != job_incarnation(r->job))
		r->rc = -ENOENT; /* someone else's VM of that name */
	if (rec)
		hca__vm_record__free_unpacked(rec, NULL);
	if (r->rc == -ENOENT)
		vmm_job_volumes_remove(r->m, r->job);
}

static void rdef_push(struct rdef *r);

static void rdef_retry(void *data)
{
	rdef_push(data);
}

static void rdef_done(struct exec_item *it)
{
	struct rdef *r = EXEC_CONTAINER_OF(it, struct rdef, item);

	if (exec_item_cancelled(it)) {
		free(r); /* resolved at the next start */
		return;
	}
	if (r->rc == 0) {
		job_note(r->job, "interrupted by an hcad restart after the record was written: "
			 "finished");
		job_finish(r->job, 0, "vm %s: defined", job_vm(r->job));
	} else if (r->rc == -ENOENT) {
		job_note(r->job, "interrupted by an hcad restart before the record was written: "
			 "rolled back (%zu volume(s) removed)", job_n_volumes(r->job));
		job_finish(r->job, HCA__ERROR_CODE__ERROR_INTERNAL,
			   "vm %s: define interrupted by an hcad restart; rolled back",
			   job_vm(r->job));
	} else if (!r->m->stopping) {
		qb_log(LOG_WARNING, "job %s: cannot learn whether vm %s was defined (%s); asking "
		       "again in %u s", job_id(r->job), job_vm(r->job), r->err,
		       RESOLVE_RETRY_MS / 1000);
		qb_loop_timer_add(r->m->loop, QB_LOOP_LOW, RESOLVE_RETRY_MS * QB_TIME_NS_IN_MSEC, r,
				  rdef_retry, NULL);
		return;
	}
	free(r);
}

static void rdef_push(struct rdef *r)
{
	char key[STO_KEY_MAX + 1];

	snprintf(key, sizeof(key), "vm/%s", job_vm(r->job));
	exec_item_init(&r->item, rdef_fn, rdef_done);
	exec_push(r->m->q_store, &r->item, key);
}

static void resolve_define(struct vmm *m, struct job *j)
{
	struct rdef *r = calloc(1, sizeof(*r));

	if (!r)
		return;
	r->m = m;
	r->job = j;
	rdef_push(r);
}

static void resolve_one(struct vmm *m, struct job *j)
{
	struct vm *v = vmm_vm_find(m, job_vm(j));
	bool ours = v && v->rec && v->rec->incarnation == job_incarnation(j);
	bool running = ours && vmm_vm_running(v);
	const char *name = job_vm(j);

	switch (job_kind(j)) {
	case HCA__JOB_KIND__JOB_KIND_DEFINE:
		resolve_define(m, j);
		return;
	case HCA__JOB_KIND__JOB_KIND_START:
		if (running) {
			job_note(j, "interrupted by an hcad restart after QEMU was launched: finished");
			job_finish(j, 0, "vm %s: running", name);
			return;
		}
		if (ours)
			vmm_release(m, v);
		job_note(j, "interrupted by an hcad restart before QEMU ran: rolled back%s",
			 ours ? " (claim released)" : "");
		job_finish(j, HCA__ERROR_CODE__ERROR_INTERNAL,
			   "vm %s: start interrupted by an hcad restart; not started", name);
		return;
	case HCA__JOB_KIND__JOB_KIND_STOP:
	case HCA__JOB_KIND__JOB_KIND_SHUTDOWN:
		if (!running) {
			job_note(j, "interrupted by an hcad restart; QEMU has ended: finished");
			job_finish(j, 0, "vm %s: stopped", name);
			return;
		}
		job_note(j, "interrupted by an hcad restart; the VM still runs");
		job_finish(j, HCA__ERROR_CODE__ERROR_INTERNAL,
			   "vm %s: %s interrupted by an hcad restart; the VM still runs", name,
			   job_kind_name(job_kind(j)));
		return;
	case HCA__JOB_KIND__JOB_KIND_UNDEFINE:
		if (!ours) {
			job_note(j, "interrupted by an hcad restart after the record was deleted: "
				 "finished");
			job_finish(j, 0, "vm %s: undefined", name);
			return;
		}
		/* the claim is released by the re-attach; nothing was lost,
		 * some volumes may be: undefine again finishes it */
		job_note(j, "interrupted by an hcad restart; the VM is still defined");
		job_finish(j, HCA__ERROR_CODE__ERROR_INTERNAL,
			   "vm %s: undefine interrupted by an hcad restart; run it again to finish",
			   name);
		return;
	case HCA__JOB_KIND__JOB_KIND_MIGRATE:
		/* the owner record says whether the commit happened; the QEMUs
		 * were put right at the re-attach (vmm_mig_attached) */
		if (!ours) {
			job_note(j, "interrupted by an hcad restart; the VM is gone");
			job_finish(j, HCA__ERROR_CODE__ERROR_INTERNAL, "vm %s: migration interrupted "
				   "by an hcad restart", name);
		} else if (vmm_owned(m, v)) {
			job_note(j, "interrupted by an hcad restart before the commit: rolled back, "
				 "the VM runs here");
			job_finish(j, HCA__ERROR_CODE__ERROR_INTERNAL, "vm %s: migration interrupted "
				   "by an hcad restart before the commit; it runs on node %s", name,
				   v->rec->owner);
		} else {
			job_note(j, "interrupted by an hcad restart after the commit: finished");
			job_finish(j, 0, "vm %s: migrated to node %s", name, v->rec->owner);
		}
		return;
	default:
		job_note(j, "interrupted by an hcad restart");
		job_finish(j, HCA__ERROR_CODE__ERROR_INTERNAL, "vm %s: %s interrupted by an hcad "
			   "restart", name, job_kind_name(job_kind(j)));
	}
}

void vmm_resolve_run(struct vmm *m)
{
	if (m->resolved)
		return;
	m->resolved = true;
	for (size_t i = 0; i < m->n_interrupted; i++) {
		struct job *j = job_adopt(m->jobs, m->interrupted[i], m->interrupted_ver[i]);
		if (j)
			resolve_one(m, j);
		hca__job__free_unpacked(m->interrupted[i], NULL);
	}
	m->n_interrupted = 0;
}
