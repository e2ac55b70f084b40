/*
 * vmm_ops: the operations that create or destroy things — define, undefine,
 * start. Each checks on the loop, does its blocking part on a worker, and
 * answers on the loop. A failure undoes exactly what that operation made.
 */
#include "agent/net.h"
#include "agent/vmm_priv.h"
#include "proto/wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <qb/qblog.h>

static enum sto_fmt fmt_of(Hca__DiskFormat f)
{
	return f == HCA__DISK_FORMAT__DISK_FORMAT_RAW ? STO_FMT_RAW : STO_FMT_QCOW2;
}

/* The path QEMU opens for disk @i: an attached image, or a created volume. */
static const char *disk_path(const Hca__VmRecord *r, size_t i)
{
	const Hca__DiskSpec *d = r->spec->disks[i];

	if (d->path[0])
		return d->path;
	for (size_t k = 0; k < r->n_volumes; k++)
		if (!strcmp(r->volumes[k]->disk, d->name))
			return r->volumes[k]->path;
	return "";
}

/* The VM other than @self that has @path as a disk, or NULL. */
static struct vm *disk_user(struct vmm *m, const struct vm *self, const char *path,
			    bool running_only)
{
	for (struct vm *v = m->vms; v; v = v->next) {
		if (v == self || !v->rec || (running_only && !vmm_vm_running(v)))
			continue;
		for (size_t i = 0; i < v->rec->spec->n_disks; i++)
			if (!strcmp(disk_path(v->rec, i), path))
				return v;
	}
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

/* ---- define ---- */

static void define_undo_volumes(struct pending *p, size_t made)
{
	char e[256];

	for (size_t i = 0; i < made; i++)
		sto_vol_remove(vmm_vols(p->m, p->rec->volumes[i]->backend),
			       p->rec->volumes[i]->volume, e, sizeof(e));
}

static const Hca__DiskSpec *disk_named(const Hca__VmSpec *s, const char *name)
{
	for (size_t k = 0; k < s->n_disks; k++)
		if (!strcmp(s->disks[k]->name, name))
			return s->disks[k];
	return NULL;
}

/* After a failed define: does the record exist now (someone else's)? */
static bool defined_meanwhile(struct pending *p)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	uint64_t ver = 0;
	char err[256];
	int rc = sto_get(p->m->store, p->key, &buf, &len, &ver, err, sizeof(err));

	free(buf);
	return rc == 0 || rc == -EBADMSG;
}

static void define_fn(void *arg)
{
	struct pending *p = arg;
	Hca__VmRecord *r = p->rec;
	uint8_t *frame = NULL;
	size_t made = 0, flen = 0;
	char path[512];

	for (; made < r->n_volumes; made++) {
		Hca__VolumeRef *vr = r->volumes[made];
		struct sto_vols *vols = vmm_vols(p->m, vr->backend);
		if (sto_vol_create(vols, vr->volume, disk_named(r->spec, vr->disk)->size_bytes,
				   fmt_of(vr->format), p->err, sizeof(p->err)) < 0)
			goto fail;
		if (sto_vol_path(vols, vr->volume, path, sizeof(path), p->err,
				 sizeof(p->err)) < 0) {
			made++;
			goto fail;
		}
		free(vr->path);
		vr->path = strdup(path);
	}
	frame = wire_frame_pack(WIRE_T_VM_RECORD, &r->base, &flen);
	if (!frame) {
		snprintf(p->err, sizeof(p->err), "cannot encode the record");
		goto fail;
	}
	/* expect 0: of two defines racing for one name, exactly one wins */
	if (sto_put(p->m->store, p->key, frame, flen, 0, &p->version, p->err,
		    sizeof(p->err)) == 0) {
		free(frame);
		return;
	}
	free(frame);
fail:
	define_undo_volumes(p, made);
	p->code = HCA__ERROR_CODE__ERROR_STORAGE;
	if (defined_meanwhile(p)) {
		/* another node defined this name first: say so, not the symptom */
		snprintf(p->err, sizeof(p->err), "already defined (by another node meanwhile)");
		p->code = HCA__ERROR_CODE__ERROR_EXISTS;
	}
}

static void define_done(void *arg)
{
	struct pending *p = arg;
	struct vm *v = p->vm;

	v->defining = false;
	if (p->code) {
		if (p->code == HCA__ERROR_CODE__ERROR_EXISTS)
			vmm_reply_error(p->fn, p->ctx, p->code, "vm %s: %s", v->name, p->err);
		else
			vmm_reply_error(p->fn, p->ctx, p->code, "vm %s: define failed: %s",
					v->name, p->err);
		vmm_vm_unlink(p->m, v);
		vmm_vm_free(v);
		goto out;
	}
	v->rec = p->rec;
	p->rec = NULL;
	v->version = p->version;
	if (vmm_vm_attach_hv(p->m, v) < 0) {
		vmm_reply_error(p->fn, p->ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		goto out;
	}
	qb_log(LOG_INFO, "vm %s: defined (uuid %s, %zu volume(s))", v->name,
	       v->rec->spec->uuid, v->rec->n_volumes);
	vmm_reply_vm(p->m, v, p->fn, p->ctx);
out:
	vmm_pending_free(p);
}

/* A new record for @spec: uuid, owner and the volumes define will create. */
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
	r->volumes = calloc(spec->n_disks + 1, sizeof(*r->volumes));
	if (!r->spec || !r->owner || !r->volumes)
		goto fail;
	if (!r->spec->uuid[0]) {
		if (new_uuid(uuid, sizeof(uuid)) < 0)
			goto fail;
		/* unpacked empty strings share protobuf-c's static "" */
		if (r->spec->uuid != protobuf_c_empty_string)
			free(r->spec->uuid);
		if (!(r->spec->uuid = strdup(uuid)))
			goto fail;
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

static int define_check(struct vmm *m, const Hca__VmSpec *s, vmm_reply_fn fn, void *ctx)
{
	char err[512];
	struct vm *other;

	if (hv_spec_validate(s, &m->limits, err, sizeof(err)) < 0) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "%s", err);
		return -EINVAL;
	}
	if (vmm_vm_find(m, s->name)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_EXISTS,
				"vm %s: already defined", s->name);
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
		if ((other = disk_user(m, NULL, s->disks[i]->path, false))) {
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BUSY,
					"vm %s: disk %s: %s is in use by vm %s", s->name,
					s->disks[i]->name, s->disks[i]->path, other->name);
			return -EBUSY;
		}
	}
	return 0;
}

void vmm_define(struct vmm *m, const Hca__DefineRequest *d, vmm_reply_fn fn, void *ctx)
{
	struct pending *p = NULL;
	struct vm *v = NULL;

	if (!d->spec) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "define: no VM spec given");
		return;
	}
	if (define_check(m, d->spec, fn, ctx) < 0)
		return;
	v = vmm_vm_new(m, d->spec->name);
	p = v ? vmm_pending_new(m, v, fn, ctx) : NULL;
	if (!p) {
		if (v)
			vmm_vm_free(v);
		else
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		return;
	}
	p->rec = record_new(m, d->spec);
	vmm_key(p->key, sizeof(p->key), v->name);
	if (!p->rec || work_queue_push(m->work, define_fn, define_done, p) < 0) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "vm %s: out of memory",
				v->name);
		vmm_vm_free(v);
		vmm_pending_free(p);
		return;
	}
	v->defining = true; /* holds the name until the record is written */
	vmm_vm_link(m, v);
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

static void undefine_fn(void *arg)
{
	struct pending *p = arg;
	const Hca__VmRecord *r = p->vm->rec;

	/* Volumes first: a crash in between leaves a record whose volumes are
	 * gone, and undefining it again finishes the job. */
	for (size_t i = 0; i < r->n_volumes; i++) {
		struct sto_vols *vols = vmm_vols(p->m, r->volumes[i]->backend);
		if (!vols) {
			snprintf(p->err, sizeof(p->err), "volume %s: no %s backend on this node",
				 r->volumes[i]->volume, r->volumes[i]->backend);
			p->code = HCA__ERROR_CODE__ERROR_STORAGE;
			return;
		}
		if (sto_vol_remove(vols, r->volumes[i]->volume, p->err, sizeof(p->err)) < 0) {
			p->code = HCA__ERROR_CODE__ERROR_STORAGE;
			return;
		}
	}
	if (sto_del(p->m->store, p->key, p->version, p->err, sizeof(p->err)) < 0) {
		p->code = HCA__ERROR_CODE__ERROR_STORAGE;
		return;
	}
	rm_runtime_dir(&p->vm->paths);
}

static void undefine_done(void *arg)
{
	struct pending *p = arg;
	struct vm *v = p->vm;

	v->undefining = false;
	if (p->code) {
		vmm_reply_error(p->fn, p->ctx, p->code, "vm %s: undefine failed: %s", v->name, p->err);
	} else {
		qb_log(LOG_INFO, "vm %s: undefined", v->name);
		vmm_reply_vm(p->m, v, p->fn, p->ctx);
		vmm_vm_unlink(p->m, v);
		vmm_vm_free(v);
	}
	vmm_pending_free(p);
}

void vmm_undefine(struct vmm *m, const char *name, vmm_reply_fn fn, void *ctx)
{
	struct vm *v = vmm_vm_for_op(m, name, "undefine", fn, ctx);
	struct pending *p;

	if (!v)
		return;
	if (vmm_vm_running(v)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
				"vm %s: is %s; stop it first", name, hv_state_name(hv_vm_state(v->hv)));
		return;
	}
	if (!(p = vmm_pending_new(m, v, fn, ctx)))
		return;
	vmm_key(p->key, sizeof(p->key), v->name);
	p->version = v->version;
	if (work_queue_push(m->work, undefine_fn, undefine_done, p) < 0) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		vmm_pending_free(p);
		return;
	}
	v->undefining = true;
}

/* ---- start ---- */

/* A copy of @r naming @owner (pack and unpack: a deep copy for free). */
static Hca__VmRecord *record_with_owner(const Hca__VmRecord *r, const char *owner)
{
	size_t len = hca__vm_record__get_packed_size(r);
	uint8_t *buf = malloc(len ? len : 1);
	Hca__VmRecord *c = NULL;

	if (buf) {
		hca__vm_record__pack(r, buf);
		c = hca__vm_record__unpack(NULL, len, buf);
		free(buf);
	}
	if (c) {
		if (c->owner != protobuf_c_empty_string)
			free(c->owner);
		c->owner = strdup(owner);
	}
	return c;
}

static int start_check_files(struct pending *p)
{
	const Hca__VmRecord *r = p->vm->rec;
	const Hca__BootSpec *b = r->spec->boot;
	struct stat st;

	for (size_t i = 0; i < r->spec->n_disks; i++) {
		const char *path = disk_path(r, i);
		if (!strncmp(path, "rbd:", 4))
			continue; /* QEMU opens it through librbd and says if it cannot */
		if (stat(path, &st) < 0) {
			snprintf(p->err, sizeof(p->err), "vm %s: disk %s: %s: %s", r->spec->name,
				 r->spec->disks[i]->name, path, strerror(errno));
			return -ENOENT;
		}
	}
	if (b && b->kernel[0] && access(b->kernel, R_OK) < 0) {
		snprintf(p->err, sizeof(p->err), "vm %s: kernel %s: %s", r->spec->name,
			 b->kernel, strerror(errno));
		return -ENOENT;
	}
	if (b && b->initrd[0] && access(b->initrd, R_OK) < 0) {
		snprintf(p->err, sizeof(p->err), "vm %s: initrd %s: %s", r->spec->name,
			 b->initrd, strerror(errno));
		return -ENOENT;
	}
	return 0;
}

/* CAS the record with this node as owner: of two nodes taking one VM, one wins. */
static int take_ownership(struct pending *p)
{
	size_t len = 0;
	uint8_t *frame = wire_frame_pack(WIRE_T_VM_RECORD, &p->rec->base, &len);
	int rc;

	if (!frame) {
		snprintf(p->err, sizeof(p->err), "vm %s: cannot encode the record", p->vm->name);
		return -ENOMEM;
	}
	rc = sto_put(p->m->store, p->key, frame, len, p->version, &p->version, p->err,
		     sizeof(p->err));
	free(frame);
	if (rc == -ECANCELED)
		snprintf(p->err, sizeof(p->err), "vm %s: changed by another node meanwhile; "
			 "look again and retry", p->vm->name);
	return rc;
}

static void start_prepare_fn(void *arg)
{
	struct pending *p = arg;

	if (p->rec) {
		if (take_ownership(p) < 0) {
			p->code = HCA__ERROR_CODE__ERROR_BUSY;
			return;
		}
		p->took_owner = true;
	}
	if (start_check_files(p) < 0) {
		p->code = HCA__ERROR_CODE__ERROR_INVALID;
		return;
	}
	if (mkdir(p->vm->paths.dir, 0700) < 0 && errno != EEXIST) {
		snprintf(p->err, sizeof(p->err), "vm %s: cannot create %s: %s", p->vm->name,
			 p->vm->paths.dir, strerror(errno));
		p->code = HCA__ERROR_CODE__ERROR_INTERNAL;
		return;
	}
	if (net_taps_setup(p->vm->rec->spec, p->err, sizeof(p->err)) < 0)
		p->code = HCA__ERROR_CODE__ERROR_INVALID;
}

static int start_launch(struct pending *p)
{
	struct vm *v = p->vm;
	struct hv_disk disks[HV_MAX_DISKS];
	struct hv_argv argv;
	struct hv_argv_ctx c = {
		.qemu = p->m->conf->qemu,
		.accel = p->m->accel,
		.paths = &v->paths,
		.disks = disks,
		.ceph_conf = p->m->conf->ceph_conf,
		.ceph_user = p->m->conf->ceph_client,
	};
	int rc;

	for (size_t i = 0; i < v->rec->spec->n_disks && i < HV_MAX_DISKS; i++) {
		const Hca__DiskSpec *d = v->rec->spec->disks[i];
		disks[i] = (struct hv_disk){ disk_path(v->rec, i), d->format, d->readonly };
	}
	if ((rc = hv_argv_build(v->rec->spec, &c, &argv)) < 0)
		return rc;
	rc = hv_vm_start(v->hv, &argv, vmm_hv_done, p);
	hv_argv_free(&argv);
	return rc;
}

static void start_done(void *arg)
{
	struct pending *p = arg;
	struct vm *v = p->vm;
	int rc;

	v->preparing = false;
	if (p->took_owner) {
		/* the ownership CAS went through: this node supervises it now */
		hca__vm_record__free_unpacked(v->rec, NULL);
		v->rec = p->rec;
		p->rec = NULL;
		v->version = p->version;
		if (!v->hv)
			vmm_vm_supervise(p->m, v);
	}
	if (p->code) {
		vmm_reply_error(p->fn, p->ctx, p->code, "%s", p->err);
		vmm_pending_free(p);
		return;
	}
	rc = start_launch(p);
	if (rc < 0) {
		net_taps_teardown(v->rec->spec);
		vmm_reply_error(p->fn, p->ctx, HCA__ERROR_CODE__ERROR_HYPERVISOR,
				"vm %s: cannot launch QEMU: %s", v->name, strerror(-rc));
		vmm_pending_free(p);
	}
}

/* May this node take @v over? Replies and returns false if not. */
static bool may_take_over(struct vmm *m, struct vm *v, vmm_reply_fn fn, void *ctx)
{
	const struct memb_node *owner = memb_find(memb_view(m->memb), v->rec->owner);
	bool running = v->run && v->run->state != HCA__VM_STATE__VM_STATE_STOPPED &&
		       v->run->state != HCA__VM_STATE__VM_STATE_CRASHED;

	if (running && owner && owner->online) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
				"vm %s: %s on node %s; stop it there first", v->name,
				hv_state_name(v->run->state), v->rec->owner);
		return false;
	}
	if (running) {
		/* Its owner is gone but last said it ran: it may still run there,
		 * writing to the same disks. Only fencing makes that safe. */
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
				"vm %s: owner %s is offline and last reported it %s; it cannot "
				"move before %s is fenced", v->name, v->rec->owner,
				hv_state_name(v->run->state), v->rec->owner);
		return false;
	}
	return true;
}

/* Where the start must happen; replies and returns NULL if it cannot. */
static const char *start_target(struct vmm *m, struct vm *v, const Hca__VmRef *ref,
				vmm_reply_fn fn, void *ctx)
{
	const char *me = m->conf->node_name;
	const char *target = ref->on_node[0] ? ref->on_node : v->rec->owner;

	if (m->conf->cluster == CONF_CLUSTER_LOCAL) {
		if (ref->on_node[0] && strcmp(ref->on_node, me)) {
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID,
					"vm %s: --on %s: this node runs standalone (cluster = local)",
					v->name, ref->on_node);
			return NULL;
		}
		return me;
	}
	if (!memb_find(memb_view(m->memb), target)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID,
				"vm %s: node %s is not a member of this cluster%s", v->name, target,
				ref->on_node[0] ? "" : " (stale owner record); use --on NODE");
		return NULL;
	}
	if (strcmp(target, me)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
				"vm %s: %s by node %s; start it there (hcactl on %s)", v->name,
				ref->on_node[0] ? "to be started" : "owned", target, target);
		return NULL;
	}
	return target;
}

void vmm_start(struct vmm *m, const Hca__VmRef *ref, vmm_reply_fn fn, void *ctx)
{
	const char *name = ref->name;
	struct vm *v = vmm_vm_for_op(m, name, "start", fn, ctx);
	struct pending *p;
	struct vm *other;
	bool take;

	if (!v || !start_target(m, v, ref, fn, ctx))
		return;
	take = !vmm_owned(m, v);
	if (take && !may_take_over(m, v, fn, ctx))
		return;
	if (vmm_vm_running(v)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: already %s",
				name, hv_state_name(hv_vm_state(v->hv)));
		return;
	}
	for (size_t i = 0; i < v->rec->spec->n_disks; i++) {
		if ((other = disk_user(m, v, disk_path(v->rec, i), true))) {
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BUSY,
					"vm %s: disk %s is in use by running vm %s", name,
					v->rec->spec->disks[i]->name, other->name);
			return;
		}
	}
	if (!(p = vmm_pending_new(m, v, fn, ctx)))
		return;
	if (take) {
		vmm_key(p->key, sizeof(p->key), v->name);
		p->version = v->version;
		p->rec = record_with_owner(v->rec, m->conf->node_name);
		if (!p->rec) {
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
			vmm_pending_free(p);
			return;
		}
	}
	if (work_queue_push(m->work, start_prepare_fn, start_done, p) < 0) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		vmm_pending_free(p);
		return;
	}
	v->preparing = true;
}
