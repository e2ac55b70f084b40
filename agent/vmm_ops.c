/*
 * vmm_ops: define and undefine, as jobs. Each checks on the loop, answers
 * the job at once, does its blocking steps on workers and ends the job on
 * the loop. Nothing is left half-made:
 *  - define records each volume in its job once made, writes the record
 *    last, and when that write's outcome is unknown (a Ceph timeout may have
 *    committed it) re-reads before undoing anything, for as long as it takes;
 *  - undefine first claims the record (active, by CAS) so no node takes the
 *    VM while its volumes go, then deletes volumes, then the record.
 */
#include "agent/net.h"
#include "agent/vmm_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <qb/qblog.h>

#define RESOLVE_RETRY_MS 5000u

static enum sto_fmt fmt_of(Hca__DiskFormat f)
{
	return f == HCA__DISK_FORMAT__DISK_FORMAT_RAW ? STO_FMT_RAW : STO_FMT_QCOW2;
}

/* The path QEMU opens for disk @i: an attached image, or a created volume. */
const char *vmm_disk_path(const Hca__VmRecord *r, size_t i)
{
	const Hca__DiskSpec *d = r->spec->disks[i];

	if (d->path[0])
		return d->path;
	for (size_t k = 0; k < r->n_volumes; k++)
		if (!strcmp(r->volumes[k]->disk, d->name))
			return r->volumes[k]->path;
	return "";
}

const char *vmm_disk_local_path(struct vmm *m, const Hca__VmRecord *r, size_t i, char *buf,
				size_t len)
{
	const Hca__DiskSpec *d = r->spec->disks[i];
	char err[256];

	if (d->path[0])
		return d->path;
	for (size_t k = 0; k < r->n_volumes; k++) {
		const Hca__VolumeRef *vr = r->volumes[k];
		if (strcmp(vr->disk, d->name))
			continue;
		if (strcmp(vr->backend, "rbd") && m->vols &&
		    sto_vol_path(m->vols, vr->volume, buf, len, err, sizeof(err)) == 0)
			return buf;
		return vr->path;
	}
	return "";
}

struct vm *vmm_disk_user(struct vmm *m, const struct vm *self, const char *path, bool running_only)
{
	for (struct vm *v = m->vms; v; v = v->next) {
		if (v == self || !v->rec || (running_only && !vmm_vm_running(v)))
			continue;
		for (size_t i = 0; i < v->rec->spec->n_disks; i++)
			if (!strcmp(vmm_disk_path(v->rec, i), path))
				return v;
	}
	return NULL;
}

static struct vm *uuid_user(struct vmm *m, const char *uuid)
{
	for (struct vm *v = m->vms; v; v = v->next)
		if (v->rec && !strcasecmp(v->rec->spec->uuid, uuid))
			return v;
	return NULL;
}

static int new_uuid(char *out, size_t len)
{
	FILE *f = fopen("/proc/sys/kernel/random/uuid", "re");
	int ok = f && fgets(out, (int)len, f);

	if (f)
		fclose(f);
	out[strcspn(out, "\n")] = '\0';
	return ok ? 0 : -EIO;
}

static const Hca__DiskSpec *disk_named(const Hca__VmSpec *s, const char *name)
{
	for (size_t k = 0; k < s->n_disks; k++)
		if (!strcmp(s->disks[k]->name, name))
			return s->disks[k];
	return NULL;
}

static void set_str(char **field, const char *val)
{
	char *c = strdup(val);

	if (!c)
		return;
	if (*field != protobuf_c_empty_string)
		free(*field);
	*field = c;
}

/* ---- define ---- */

static void define_step(struct op *op);

void vmm_job_volumes_remove(struct vmm *m, struct job *j)
{
	char e[256];

	for (size_t i = 0; i < job_n_volumes(j); i++) {
		const char *bv = job_volume(j, i), *colon = strchr(bv, ':');
		struct sto_vols *vols;
		char backend[16];

		if (!colon)
			continue;
		snprintf(backend, sizeof(backend), "%.*s", (int)(colon - bv), bv);
		vols = vmm_vols(m, backend);
		if (!vols || sto_vol_remove(vols, colon + 1, e, sizeof(e)) < 0)
			qb_log(LOG_WARNING, "vm %s: volume %s left behind: %s", job_vm(j), bv,
			       vols ? e : "no such backend on this node");
	}
}

/* Worker: make the next volume (recorded in the job, durably, before), or
 * write the record when all are made. */
static void define_fn(struct exec_item *it)
{
	struct op *op = EXEC_CONTAINER_OF(it, struct op, item);
	Hca__VmRecord *r = op->rec, *back = NULL;
	size_t i = op->made;
	char path[512], err[256];
	uint64_t ver = 0;
	int rc;

	if (i < r->n_volumes) {
		Hca__VolumeRef *vr = r->volumes[i];
		struct sto_vols *vols = vmm_vols(op->m, vr->backend);
		op->claimed = false;
		rc = sto_vol_create(vols, vr->volume, disk_named(r->spec, vr->disk)->size_bytes,
				    fmt_of(vr->format), op->err, sizeof(op->err));
		if (rc == -EEXIST) {
			/* not this job's volume: never remove it */
			op->foreign = true;
			if (sto_vm_get(op->m->store, op->vm->name, &back, &ver, err,
				       sizeof(err)) != -ENOENT) {
				/* another define of this name won */
				snprintf(op->err, sizeof(op->err), "already defined (by another "
					 "node meanwhile)");
				op->code = HCA__ERROR_CODE__ERROR_EXISTS;
			} else {
				snprintf(op->err, sizeof(op->err), "volume %s:%s already exists and "
					 "no record names it (another define of %s under way, or "
					 "left by one): remove it or define another name",
					 vr->backend, vr->volume, op->vm->name);
				op->code = HCA__ERROR_CODE__ERROR_EXISTS;
			}
			if (back)
				hca__vm_record__free_unpacked(back, NULL);
			return;
		}
		if (rc < 0 || sto_vol_path(vols, vr->volume, path, sizeof(path), op->err,
					   sizeof(op->err)) < 0) {
			op->code = HCA__ERROR_CODE__ERROR_STORAGE;
			return;
		}
		set_str(&vr->path, path);
		op->claimed = true; /* made */
		return;
	}
	op->claimed = false;
	if (!op->reread) {
		/* expect 0: of two defines racing for one name, exactly one wins */
		rc = sto_vm_put(op->m->store, op->vm->name, r, 0, &op->version, op->err,
				sizeof(op->err));
		if (rc == 0)
			return;
		if (rc == -EEXIST) {
			snprintf(op->err, sizeof(op->err), "already defined (by another node meanwhile)");
			op->code = HCA__ERROR_CODE__ERROR_EXISTS;
			return;
		}
	}
	/* the write may have landed: only the store can say, never guess */
	rc = sto_vm_get(op->m->store, op->vm->name, &back, &ver, err, sizeof(err));
	if (rc == 0 && back->incarnation == r->incarnation) {
		op->version = ver;
	} else if (rc == 0 || rc == -EBADMSG || rc == -EPROTONOSUPPORT) {
		snprintf(op->err, sizeof(op->err), "already defined (by another node meanwhile)");
		op->code = HCA__ERROR_CODE__ERROR_EXISTS;
	} else if (rc == -ENOENT) {
		op->code = HCA__ERROR_CODE__ERROR_STORAGE;
	} else {
		op->unknown = true;
		op->code = HCA__ERROR_CODE__ERROR_STORAGE;
		if (op->reread)
			snprintf(op->err, sizeof(op->err), "%s", err);
	}
	if (back)
		hca__vm_record__free_unpacked(back, NULL);
}

static void define_retry(void *data)
{
	define_step(data);
}

/* Worker: remove what the job made; no record names it (the store said so). */
static void define_undo_fn(struct exec_item *it)
{
	struct op *op = EXEC_CONTAINER_OF(it, struct op, item);

	vmm_job_volumes_remove(op->m, op->job);
}

static void define_fail_done(struct exec_item *it)
{
	struct op *op = vmm_op_of(it);
	struct vm *v;
	struct vmm *m;
	Hca__ErrorCode code;

	if (!op)
		return;
	v = op->vm;
	m = op->m;
	code = op->code;
	vmm_vm_unlink(m, v);
	op->vm = NULL;
	v->job = NULL;
	/* the winner's record, if another node defined the name, was skipped
	 * while this define held it: read it now */
	vmm_sync_refresh(m, v->name);
	if (code == HCA__ERROR_CODE__ERROR_EXISTS)
		job_finish(op->job, code, "vm %s: %s", v->name, op->err);
	else
		job_finish(op->job, code, "vm %s: define failed: %s", v->name, op->err);
	op->job = NULL;
	vmm_vm_free(v);
	vmm_op_free(op);
}

static void define_done(struct exec_item *it)
{
	struct op *op = vmm_op_of(it);
	struct vm *v;
	size_t i;

	if (!op)
		return;
	v = op->vm;
	i = job_n_volumes(op->job);

	if (op->claimed) {
		op->made++;
		job_progress(op->job, op->made, op->rec->n_volumes, "volumes",
			     job_volume(op->job, i - 1));
		op->claimed = false;
		define_step(op);
		return;
	}
	if (op->foreign) {
		/* a window remains: killed between the volume's EEXIST and this
		 * record, a restart would remove the other define's volume */
		job_forget_volume(op->job);
		op->foreign = false;
	}
	if (op->unknown) {
		/* Ceph did not say whether the record landed: keep everything
		 * and ask again; the job stays in commit until it knows */
		qb_log(LOG_WARNING, "vm %s: define: the record write's outcome is unknown (%s); "
		       "asking again in %u s", v->name, op->err, RESOLVE_RETRY_MS / 1000);
		job_progress(op->job, 0, 0, NULL, "outcome unknown: re-reading the record");
		op->unknown = false;
		op->reread = true;
		op->code = 0;
		if (op->m->stopping)
			return; /* the job is resolved at the next start */
		qb_loop_timer_add(op->m->loop, QB_LOOP_LOW, RESOLVE_RETRY_MS * QB_TIME_NS_IN_MSEC,
				  op, define_retry, NULL);
		return;
	}
	if (op->code) {
		job_phase(op->job, HCA__JOB_PHASE__JOB_PHASE_CLEANUP);
		vmm_op_push(op, define_undo_fn, define_fail_done);
		return;
	}
	v->rec = op->rec;
	op->rec = NULL;
	v->version = op->version;
	if (vmm_vm_attach_hv(op->m, v) < 0) {
		vmm_op_end(op, HCA__ERROR_CODE__ERROR_INTERNAL, "vm %s: out of memory", v->name);
		return;
	}
	qb_log(LOG_INFO, "vm %s: defined (uuid %s, %zu volume(s))", v->name,
	       v->rec->spec->uuid, v->rec->n_volumes);
	vmm_op_end(op, 0, "vm %s: defined", v->name);
}

static void define_step(struct op *op)
{
	char bv[160];

	if (op->made >= op->rec->n_volumes) {
		job_phase(op->job, HCA__JOB_PHASE__JOB_PHASE_COMMIT);
		vmm_op_push(op, define_fn, define_done);
		return;
	}
	/* write-ahead: a restart finds in the job every volume it may have made */
	snprintf(bv, sizeof(bv), "%s:%s", op->rec->volumes[op->made]->backend,
		 op->rec->volumes[op->made]->volume);
	job_add_volume(op->job, bv);
	vmm_op_push_durable(op, define_fn, define_done);
}

/* A new record for @spec: uuid, owner, epoch, incarnation and volumes. */
static Hca__VmRecord *record_new(struct vmm *m, const Hca__VmSpec *spec)
{
	Hca__VmRecord *r = calloc(1, sizeof(*r));
	char name[STO_VOL_NAME_MAX + 8], uuid[40];

	if (!r)
		return NULL;
	hca__vm_record__init(r);
	r->spec = vmm_spec_copy(spec);
	r->owner = strdup(m->conf->node_name);
	r->defined_at = (uint64_t)time(NULL);
	r->owner_epoch = 1;
	r->volumes = calloc(spec->n_disks + 1, sizeof(*r->volumes));
	if (!r->spec || !r->owner || !r->volumes ||
	    getrandom(&r->incarnation, sizeof(r->incarnation), 0) != sizeof(r->incarnation))
		goto fail;
	r->incarnation |= 1; /* never 0, which means "do not check" */
	if (!r->spec->uuid[0]) {
		if (new_uuid(uuid, sizeof(uuid)) < 0)
			goto fail;
		set_str(&r->spec->uuid, uuid);
	}
	for (size_t i = 0; i < spec->n_disks; i++) {
		const Hca__DiskSpec *d = spec->disks[i];
		Hca__VolumeRef *vr;
		if (d->path[0])
			continue;
		snprintf(name, sizeof(name), "%s-%s", spec->name, d->name);
		vr = calloc(1, sizeof(*vr));
		if (!vr)
			goto fail;
		hca__volume_ref__init(vr);
		r->volumes[r->n_volumes++] = vr;
		vr->disk = strdup(d->name);
		vr->backend = strdup(sto_vols_backend(vmm_vols(m, d->backend)));
		vr->volume = strdup(name);
		vr->path = strdup("");
		vr->format = d->format;
		if (!vr->disk || !vr->backend || !vr->volume || !vr->path)
			goto fail;
	}
	return r;
fail:
	hca__vm_record__free_unpacked(r, NULL);
	return NULL;
}

/* Attached images by their real path, so "/img/./a.qcow2" or a symlink is
 * the same image as "/img/a.qcow2" for the in-use check. */
static int canonical_paths(Hca__VmSpec *s, char *err, size_t errlen)
{
	char real[PATH_MAX];

	for (size_t i = 0; i < s->n_disks; i++) {
		if (!s->disks[i]->path[0])
			continue;
		if (!realpath(s->disks[i]->path, real)) {
			snprintf(err, errlen, "vm %s: disk %s: %s: %s", s->name, s->disks[i]->name,
				 s->disks[i]->path, strerror(errno));
			return -errno;
		}
		set_str(&s->disks[i]->path, real);
	}
	return 0;
}

static int define_check(struct vmm *m, Hca__VmSpec *s, vmm_reply_fn fn, void *ctx)
{
	char err[512];
	struct vm *other;

	if (hv_spec_validate(s, &m->limits, err, sizeof(err)) < 0 ||
	    canonical_paths(s, err, sizeof(err)) < 0) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "%s", err);
		return -EINVAL;
	}
	if (vmm_vm_find(m, s->name)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_EXISTS,
				"vm %s: already defined", s->name);
		return -EEXIST;
	}
	if (s->uuid[0] && (other = uuid_user(m, s->uuid))) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_EXISTS,
				"vm %s: uuid %s is already vm %s's (a uuid names one VM: its tap "
				"names and MACs derive from it)", s->name, s->uuid, other->name);
		return -EEXIST;
	}
	for (size_t i = 0; i < s->n_disks; i++) {
		if (!s->disks[i]->path[0] && !vmm_vols(m, s->disks[i]->backend)) {
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID,
					"vm %s: disk %s: no %s volumes on this node (rbd needs "
					"store = rados)", s->name, s->disks[i]->name,
					s->disks[i]->backend);
			return -EINVAL;
		}
		if (!s->disks[i]->path[0])
			continue;
		if ((other = vmm_disk_user(m, NULL, s->disks[i]->path, false))) {
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BUSY,
					"vm %s: disk %s: %s is in use by vm %s", s->name,
					s->disks[i]->name, s->disks[i]->path, other->name);
			return -EBUSY;
		}
	}
	return 0;
}

void vmm_define(struct vmm *m, const Hca__DefineRequest *d, const char *via, vmm_reply_fn fn,
		void *ctx)
{
	Hca__VmSpec *spec = NULL;
	Hca__VmRecord *rec = NULL;
	struct op *op = NULL;
	struct vm *v = NULL;

	if (!d->spec) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "define: no VM spec given");
		return;
	}
	if (!(spec = vmm_spec_copy(d->spec))) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		return;
	}
	if (define_check(m, spec, fn, ctx) < 0)
		goto out;
	rec = record_new(m, spec);
	v = rec ? vmm_vm_new(m, spec->name) : NULL;
	if (!v) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		goto out;
	}
	vmm_vm_link(m, v); /* holds the name until the record is written */
	if (!(op = vmm_op_new(m, v, HCA__JOB_KIND__JOB_KIND_DEFINE, via, fn, ctx))) {
		vmm_vm_unlink(m, v);
		vmm_vm_free(v);
		goto out;
	}
	job_set_incarnation(op->job, rec->incarnation);
	op->rec = rec;
	rec = NULL;
	job_phase(op->job, HCA__JOB_PHASE__JOB_PHASE_PREPARE);
	define_step(op);
out:
	if (rec)
		hca__vm_record__free_unpacked(rec, NULL);
	hca__vm_spec__free_unpacked(spec, NULL);
}

/* ---- undefine ---- */

static void rm_runtime_dir(const struct hv_paths *paths)
{
	unlink(paths->serial_log);
	unlink(paths->qemu_log);
	unlink(paths->pidfile);
	unlink(paths->qmp);
	unlink(paths->console);
	rmdir(paths->dir);
}

/* Worker: claim, delete the volumes, delete the record; the claim keeps
 * every other node from taking the VM while its volumes go. */
static void undefine_fn(struct exec_item *it)
{
	struct op *op = EXEC_CONTAINER_OF(it, struct op, item);
	const Hca__VmRecord *r = op->rec;
	struct sto_owner cur = { r->owner, r->owner_epoch, r->active, r->incarnation };
	struct sto_owner next = { op->m->conf->node_name, 0, true, 0 };
	int rc;

	rc = vmm_own_cas(op->m, op->vm->name, &cur, &next, NULL, &op->version, op->err,
			 sizeof(op->err));
	if (rc < 0) {
		op->code = rc == -ESTALE || rc == -ECANCELED ? HCA__ERROR_CODE__ERROR_BUSY
							     : HCA__ERROR_CODE__ERROR_STORAGE;
		return;
	}
	op->claimed = true;
	for (size_t i = 0; i < r->n_volumes; i++) {
		struct sto_vols *vols = vmm_vols(op->m, r->volumes[i]->backend);
		if (!vols) {
			snprintf(op->err, sizeof(op->err), "volume %s: no %s backend on this node",
				 r->volumes[i]->volume, r->volumes[i]->backend);
			op->code = HCA__ERROR_CODE__ERROR_STORAGE;
			return;
		}
		if (sto_vol_remove(vols, r->volumes[i]->volume, op->err, sizeof(op->err)) < 0) {
			op->code = HCA__ERROR_CODE__ERROR_STORAGE;
			return;
		}
	}
	if (sto_del(op->m->store, op->key, op->version, op->err, sizeof(op->err)) < 0) {
		op->code = HCA__ERROR_CODE__ERROR_STORAGE;
		return;
	}
	rm_runtime_dir(&op->vm->paths);
}

static void undefine_done(struct exec_item *it)
{
	struct op *op = vmm_op_of(it);
	struct vm *v;

	if (!op)
		return;
	v = op->vm;

	if (op->code) {
		if (op->claimed) {
			/* what the store now says, so that the next try starts from it */
			v->rec->active = true;
			if (op->version > v->version)
				v->version = op->version;
			job_note(op->job, "the record stays claimed by this node; undefine again "
				 "to finish");
		}
		vmm_op_end(op, op->code, "vm %s: undefine failed: %s", v->name, op->err);
		return;
	}
	qb_log(LOG_INFO, "vm %s: undefined", v->name);
	vmm_vm_unlink(op->m, v);
	vmm_op_end(op, 0, "vm %s: undefined", v->name);
	vmm_vm_free(v);
}

void vmm_undefine(struct vmm *m, const char *name, const char *via, vmm_reply_fn fn, void *ctx)
{
	struct vm *v = vmm_vm_for_op(m, name, "undefine", fn, ctx);
	struct op *op;

	if (!v || !vmm_check_owned(m, v, fn, ctx))
		return;
	if (vmm_vm_running(v)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
				"vm %s: is %s; stop it first", name, hv_state_name(hv_vm_state(v->hv)));
		return;
	}
	if (!(op = vmm_op_new(m, v, HCA__JOB_KIND__JOB_KIND_UNDEFINE, via, fn, ctx)))
		return;
	op->rec = sto_vm_copy(v->rec);
	job_phase(op->job, HCA__JOB_PHASE__JOB_PHASE_COMMIT);
	if (!op->rec)
		vmm_op_end(op, HCA__ERROR_CODE__ERROR_INTERNAL, "vm %s: out of memory", name);
	else
		vmm_op_push(op, undefine_fn, undefine_done);
}
