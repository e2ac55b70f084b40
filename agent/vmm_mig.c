/*
 * vmm_mig: what the migration service (migration/mig.h) needs from the VM
 * table, and the migrate request.
 *
 * The service drives both QEMUs and makes the commit; this file lends it
 * what only the agent has: launching a VM's QEMU for an incoming stream,
 * killing it, updating the records it holds at the commit, and the job.
 * The QEMUs' x509 credentials are the node's own certificate, linked under
 * the fixed names QEMU wants in STATE_DIR/qemu-tls.
 *
 * Local volumes that move (--with-storage) are made on the destination
 * before its QEMU starts and removed on the side that did not win: the
 * destination's after a rollback, the source's after the commit. Each side
 * notes what it made or must remove in STATE_DIR/mig/NAME.in or NAME.out
 * first, so an hcad that died in between finishes the job at its next
 * start from the owner record; a volume is removed only when that file
 * names it and the record says this node does not own the VM.
 */
#include "agent/env.h"
#include "agent/net.h"
#include "agent/vmm_priv.h"
#include "migration/mig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
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

/* ---- volumes that move: the notes and the clean-up ---- */

#define NOTE_VOLS HV_MAX_DISKS
#define RM_RETRY_S 5u

struct note {
	char peer[64];
	uint64_t epoch;
	char vols[NOTE_VOLS][STO_VOL_NAME_MAX + 1];
	size_t n;
};

static void note_path(const struct vmm *m, const char *vm, const char *kind, char *buf,
		      size_t len)
{
	snprintf(buf, len, "%s/mig/%s.%s", m->conf->state_dir, vm, kind);
}

/* Write @n durably (a new file renamed over the old one). Worker. */
static int note_write(const char *path, const struct note *n)
{
	char tmp[CONF_STATE_DIR_MAX + 128];
	FILE *f;
	int rc = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (!(f = fopen(tmp, "w")))
		return -errno;
	fprintf(f, "%s %llu\n", n->peer, (unsigned long long)n->epoch);
	for (size_t i = 0; i < n->n; i++)
		fprintf(f, "%s\n", n->vols[i]);
	if (fflush(f) != 0 || fsync(fileno(f)) < 0)
		rc = -errno;
	if (fclose(f) != 0 && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path) < 0)
		rc = -errno;
	if (rc)
		unlink(tmp);
	return rc;
}

/* 0, -ENOENT (no note), -EBADMSG (not one of ours: left alone). */
static int note_read(const char *path, struct note *n)
{
	FILE *f = fopen(path, "r");
	char line[STO_VOL_NAME_MAX + 8];
	unsigned long long e;
	int rc = 0;

	memset(n, 0, sizeof(*n));
	if (!f)
		return -errno;
	if (!fgets(line, sizeof(line), f) ||
	    sscanf(line, "%63s %llu", n->peer, &e) != 2) {
		fclose(f);
		return -EBADMSG;
	}
	n->epoch = e;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (n->n >= NOTE_VOLS ||
		    !sto_vol_name_valid(strncmp(line, "rbd:", 4) ? line : line + 4)) {
			rc = -EBADMSG;
			break;
		}
		memcpy(n->vols[n->n++], line, strlen(line) + 1); /* valid: it fits */
	}
	fclose(f);
	return rc;
}

/* A note's entry is VOLUME (this node's file storage) or rbd:VOLUME (the
 * pool): its backend, and *@name moved past the prefix. */
static struct sto_vols *note_vols(struct vmm *m, const char **name)
{
	if (strncmp(*name, "rbd:", 4))
		return m->vols;
	*name += 4;
	return m->rbd;
}

struct vols_rm {
	struct exec_item item;
	struct vm *vm;
	unsigned bit;   /* in vm->mig_notes */
	char note[CONF_STATE_DIR_MAX + 96];
	struct note n;
	bool keep;      /* the note only: the volumes are the VM's */
	int rc;
	char err[256];
};

static void rm_fn(struct exec_item *it)
{
	struct vols_rm *r = EXEC_CONTAINER_OF(it, struct vols_rm, item);

	for (size_t i = 0; !r->keep && i < r->n.n; i++) {
		const char *name = r->n.vols[i];
		struct sto_vols *vols = note_vols(r->vm->m, &name);
		if (!vols) {
			r->rc = -ENODEV;
			snprintf(r->err, sizeof(r->err), "no %s backend here", r->n.vols[i]);
			return;
		}
		if ((r->rc = sto_vol_remove(vols, name, r->err, sizeof(r->err))) < 0)
			return; /* the note stays: the next start tries again */
	}
	if (unlink(r->note) < 0 && errno != ENOENT)
		r->rc = -errno;
}

static void leftovers(struct vmm *m, struct vm *v);

static void rm_retry(void *data)
{
	struct vm *v = data;

	if (!vmm_vm_put(v))
		leftovers(v->m, v);
}

static void rm_done(struct exec_item *it)
{
	struct vols_rm *r = EXEC_CONTAINER_OF(it, struct vols_rm, item);
	qb_loop_timer_handle t;

	if (r->rc < 0 && !exec_item_cancelled(it)) {
		/* an RBD image a killed QEMU had open stays "in use" until Ceph
		 * drops that client's watch (about 30 s): try again, quietly */
		qb_log(r->vm->mig_rm_tries++ ? LOG_DEBUG : LOG_WARNING, "vm %s: volume left behind "
		       "after a migration (%s): %s; trying again in %u s", r->vm->name, r->note,
		       r->err[0] ? r->err : strerror(-r->rc), RM_RETRY_S);
		r->vm->refs++;
		qb_loop_timer_add(r->vm->m->loop, QB_LOOP_LOW, RM_RETRY_S * QB_TIME_NS_IN_SEC,
				  r->vm, rm_retry, &t);
	} else if (r->rc == 0) {
		r->vm->mig_rm_tries = 0;
		if (!r->keep && r->n.n)
			qb_log(LOG_NOTICE, "vm %s: %zu volume%s removed here: the migration %s",
			       r->vm->name, r->n.n, r->n.n == 1 ? "" : "s",
			       strstr(r->note, ".out") ? "committed on the destination"
						       : "did not commit here");
	}
	r->vm->mig_notes &= ~r->bit;
	vmm_vm_put(r->vm);
	free(r);
}

static void rm_push(struct vm *v, const char *note, const struct note *n, bool keep)
{
	unsigned bit = strstr(note, ".out") ? 2u : 1u;
	struct vols_rm *r;

	if ((v->mig_notes & bit) || !(r = calloc(1, sizeof(*r))))
		return; /* already on its way */
	v->mig_notes |= bit;
	r->bit = bit;
	r->vm = v;
	snprintf(r->note, sizeof(r->note), "%s", note);
	r->n = *n;
	r->keep = keep;
	v->refs++;
	exec_item_init(&r->item, rm_fn, rm_done);
	exec_push(v->m->q_store, &r->item, v->name);
}

/*
 * What a migration of @v's local volumes left to do here, from the notes
 * and the owner record as this node holds it:
 *  - NAME.in (this node was the destination): owned here -> the volumes
 *    are the VM's, forget the note; else, once no QEMU of it runs here ->
 *    remove what the note names (never committed here);
 *  - NAME.out (this node was the source): the record names the note's
 *    destination at a later epoch -> remove them (moved); owned here ->
 *    forget the note (rolled back).
 * Anything else (the store not read yet, a migration under way) waits.
 */
static void leftovers(struct vmm *m, struct vm *v)
{
	char path[CONF_STATE_DIR_MAX + 96];
	struct note n;

	bool busy = vmm_mig_busy(m, v->name);

	if (!v->rec)
		return;
	note_path(m, v->name, "in", path, sizeof(path));
	if (note_read(path, &n) == 0) {
		if (vmm_owned(m, v))
			rm_push(v, path, &n, true);
		else if (!busy && !vmm_vm_running(v) && (!v->hv || hv_vm_pid(v->hv) <= 0))
			rm_push(v, path, &n, false);
	}
	note_path(m, v->name, "out", path, sizeof(path));
	if (!busy && note_read(path, &n) == 0) {
		if (!strcmp(v->rec->owner, n.peer) && v->rec->owner_epoch > n.epoch)
			rm_push(v, path, &n, false);
		else if (vmm_owned(m, v))
			rm_push(v, path, &n, true);
	}
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
	struct exec_item item;
	struct vm *vm;
	mig_hv_fn done;
	void *opaque;
	/* the volumes to make first, and what became of them */
	struct note n;
	uint64_t size[NOTE_VOLS];
	enum sto_fmt fmt[NOTE_VOLS];
	size_t made;
	uint32_t rbd;   /* spec disks that come into the pool */
	int rc;
	char err[300];
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

/* Worker: each volume made exclusively, then noted (a crash in between
 * leaves one the note does not name: never removed on a guess). */
static void make_fn(struct exec_item *it)
{
	struct incoming *in = EXEC_CONTAINER_OF(it, struct incoming, item);
	struct vmm *m = in->vm->m;
	struct note done = in->n;
	char path[CONF_STATE_DIR_MAX + 96];

	note_path(m, in->vm->name, "in", path, sizeof(path));
	done.n = 0;
	for (in->made = 0; in->made < in->n.n; in->made++) {
		const char *name = in->n.vols[in->made];
		struct sto_vols *vols = note_vols(m, &name);
		in->rc = vols ? sto_vol_create(vols, name, in->size[in->made], in->fmt[in->made],
					       in->err, sizeof(in->err))
			      : -ENODEV;
		if (in->rc == -EEXIST)
			snprintf(in->err, sizeof(in->err), "volume %s already exists on node %s "
				 "(left by an earlier attempt?): remove it, or find out whose it is",
				 in->n.vols[in->made], m->conf->node_name);
		if (in->rc < 0)
			return;
		done.n++;
		if ((in->rc = note_write(path, &done)) < 0) {
			snprintf(in->err, sizeof(in->err), "%s: %s", path, strerror(-in->rc));
			in->made++;
			return;
		}
	}
}

static void make_done(struct exec_item *it)
{
	struct incoming *in = EXEC_CONTAINER_OF(it, struct incoming, item);
	struct vm *v = in->vm;
	int rc = in->rc;

	if (exec_item_cancelled(it) || vmm_vm_put(v)) {
		in->done(in->opaque, NULL, -ECANCELED, "the VM went away");
		free(in);
		return;
	}
	if (!rc) {
		qb_log(LOG_INFO, "vm %s: %zu volume%s made for the incoming migration", v->name,
		       in->made, in->made == 1 ? "" : "s");
		v->mig_rbd = in->rbd; /* opened from the pool until the commit says so */
		v->refs++;
		rc = vmm_launch(v->m, v, "defer", incoming_started, in);
		if (rc == 0)
			return;
		vmm_vm_put(v);
		snprintf(in->err, sizeof(in->err), "vm %s: cannot launch QEMU: %s", v->name,
			 strerror(-rc));
	}
	in->done(in->opaque, NULL, rc, in->err);
	free(in);
	leftovers(v->m, v); /* what was made goes */
}

/* The disks a shared-nothing migration brings, checked against this
 * node's copy of the record and room: into @in. */
static int incoming_disks(struct vmm *m, struct vm *v, const Hca__MigDisk *const *disks,
			  size_t n_disks, struct incoming *in, char *err, size_t errlen)
{
	const Hca__VmSpec *sp = v->rec->spec;
	uint64_t need = 0, avail;
	char e[256];

	for (size_t i = 0; i < sp->n_disks; i++) {
		const Hca__DiskSpec *d = sp->disks[i];
		const Hca__VolumeRef *vr = NULL;
		const Hca__MigDisk *md = NULL;

		if (!d->path[0] && !strcmp(d->backend, "rbd"))
			continue; /* shared: stays where it is */
		for (size_t k = 0; k < n_disks; k++)
			if (!strcmp(disks[k]->disk, d->name))
				md = disks[k];
		for (size_t k = 0; k < v->rec->n_volumes; k++)
			if (!strcmp(v->rec->volumes[k]->disk, d->name))
				vr = v->rec->volumes[k];
		if (!md || !vr || d->path[0] || strcmp(md->volume, vr->volume) ||
		    md->format != vr->format) {
			snprintf(err, errlen, "vm %s: disk %s is local and does not move with it, or "
				 "not as node %s's record says", v->name, d->name,
				 m->conf->node_name);
			return -EXDEV;
		}
		if (in->n.n >= NOTE_VOLS)
			return -E2BIG;
		if (!strcmp(md->target_backend, "rbd")) {
			char want[STO_VOL_NAME_MAX + 80];
			snprintf(want, sizeof(want), "rbd:%s/%s", m->conf->rados_pool, vr->volume);
			if (!m->rbd || strcmp(md->target_path, want)) {
				snprintf(err, errlen, "vm %s: disk %s cannot go to the pool here (node "
					 "%s's pool is %s)", v->name, d->name, m->conf->node_name,
					 m->rbd ? m->conf->rados_pool : "not configured");
				return -EINVAL;
			}
			/* the pool keeps raw images; Ceph says if it is full */
			in->rbd |= 1u << i;
			snprintf(in->n.vols[in->n.n], sizeof(in->n.vols[0]), "rbd:%.90s", vr->volume);
			in->size[in->n.n] = md->size_bytes;
			in->fmt[in->n.n] = STO_FMT_RAW;
			in->n.n++;
			continue;
		}
		snprintf(in->n.vols[in->n.n], sizeof(in->n.vols[0]), "%s", vr->volume);
		in->size[in->n.n] = md->size_bytes;
		in->fmt[in->n.n] = md->format == HCA__DISK_FORMAT__DISK_FORMAT_RAW ? STO_FMT_RAW
										    : STO_FMT_QCOW2;
		in->n.n++;
		/* sparse: what the source holds, and a tenth more for growth meanwhile */
		need += md->allocated + md->allocated / 10;
	}
	if (in->n.n != n_disks) {
		snprintf(err, errlen, "vm %s: the disks to move do not match its local disks",
			 v->name);
		return -EXDEV;
	}
	if (!in->n.n || !need)
		return 0;
	if (!m->vols) {
		snprintf(err, errlen, "node %s has no local volume storage", m->conf->node_name);
		return -ENODEV;
	}
	need += 64ull << 20;
	if (sto_vols_room(m->vols, &avail, e, sizeof(e)) == 0 && avail < need) {
		snprintf(err, errlen, "node %s has no room for vm %s's disks: %llu MiB free in %s, "
			 "%llu MiB needed (what the volumes hold, plus a tenth)",
			 m->conf->node_name, v->name, (unsigned long long)(avail >> 20),
			 m->conf->storage_dir, (unsigned long long)(need >> 20));
		return -ENOSPC;
	}
	return 0;
}

static int incoming_start(void *ctx, const char *name, const char *source, uint64_t epoch,
			  uint64_t incarnation, const Hca__MigDisk *const *disks, size_t n_disks,
			  mig_hv_fn done, void *opaque, char *err, size_t errlen)
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
	if (!n_disks && (d = local_disk(v->rec))) {
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
	if ((rc = incoming_disks(m, v, disks, n_disks, in, err, errlen)) < 0) {
		free(in);
		return rc;
	}
	if (in->n.n) {
		snprintf(in->n.peer, sizeof(in->n.peer), "%s", source);
		in->n.epoch = epoch;
		v->refs++;
		exec_item_init(&in->item, make_fn, make_done);
		exec_push(m->q_store, &in->item, v->name);
		return 0;
	}
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
	if (!vmm_owned(v->m, v) && !vmm_mig_busy(v->m, v->name))
		v->mig_rbd = 0; /* the incoming QEMU that opened them is gone */
	leftovers(v->m, v);
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
	/* quit, not SIGKILL (which comes anyway if it does not end soon): a
	 * killed QEMU's RBD images stay "in use" until Ceph drops its watch,
	 * and one made for this migration could not be removed until then */
	if (hv_vm_stop(v->hv, false, discarded, v) < 0) {
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
	if (vmm_owned(m, v)) {
		vmm_state_publish(m, v);
		leftovers(m, v); /* the volumes made for it are its own now */
	}
	if (v->mig_rbd) {
		/* the commit wrote where its disks are now: read it */
		v->mig_rbd = 0;
		vmm_sync_refresh(m, v->name);
	}
}

/* The node's CPU time from /proc/stat's first line: busy is everything but
 * idle and iowait. */
static int cpu_ticks(void *ctx, uint64_t *busy, uint64_t *all)
{
	unsigned long long v[8] = { 0 };
	FILE *f = fopen("/proc/stat", "re");
	int n;

	(void)ctx;
	if (!f)
		return -errno;
	n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
		   &v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	if (n < 5)
		return -EIO;
	*all = 0;
	for (int i = 0; i < 8; i++)
		*all += v[i];
	*busy = *all - v[3] - v[4];
	return 0;
}

static void ended(void *ctx, const char *name, struct job *j, bool moved)
{
	struct vmm *m = ctx;
	struct vm *v = vmm_vm_find(m, name);

	if (!v)
		return;
	if (v->job == j)
		vmm_job_done(v);
	/* moved: the volumes that went are removed here; rolled back: the note
	 * goes, the volumes stay */
	leftovers(m, v);
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
		.cpu_ticks = cpu_ticks,
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

/* Worker, once the job's record is in the store: with disks, what each
 * volume holds, and the note that lets a restart remove them after the
 * commit (written before anything moves). */
static void migrate_go(struct exec_item *it)
{
	struct op *op = EXEC_CONTAINER_OF(it, struct op, item);
	char path[CONF_STATE_DIR_MAX + 96], err[256];
	struct note n = { 0 };
	int rc;

	if (!op->n_mdisks)
		return;
	for (size_t i = 0; i < op->n_mdisks; i++) {
		struct sto_vol_info vi = { 0 };
		if (sto_vol_info(op->m->vols, op->mvol_name[i], &vi, err, sizeof(err)) < 0 ||
		    !vi.exists) {
			snprintf(op->err, sizeof(op->err), "volume %s of disk %s: %s",
				 op->mvol_name[i], op->mdisk_name[i],
				 vi.exists ? err : "not on this node");
			op->code = HCA__ERROR_CODE__ERROR_STORAGE;
			return;
		}
		op->mdisks[i].size_bytes = vi.size;
		op->mdisks[i].allocated = vi.allocated;
		op->mdisks[i].format = vi.fmt == STO_FMT_RAW ? HCA__DISK_FORMAT__DISK_FORMAT_RAW
							     : HCA__DISK_FORMAT__DISK_FORMAT_QCOW2;
		snprintf(n.vols[n.n++], sizeof(n.vols[0]), "%s", op->mvol_name[i]);
	}
	snprintf(n.peer, sizeof(n.peer), "%s", op->migrate->target);
	n.epoch = op->mig_epoch;
	note_path(op->m, op->vm->name, "out", path, sizeof(path));
	if ((rc = note_write(path, &n)) < 0) {
		snprintf(op->err, sizeof(op->err), "%s: %s", path, strerror(-rc));
		op->code = HCA__ERROR_CODE__ERROR_STORAGE;
	}
}

/*
 * A replication cycle under way reads the disks through QEMU (a cut, a
 * backup job): the migration waits for it to end. No new cycle starts
 * meanwhile (the VM has a job). Bounded: a first copy may take minutes.
 */
#define REP_WAIT_TICK_MS 250u
#define REP_WAIT_MAX_S 60u

static void migrate_run(struct op *op);

static int migrate_wait_cancel(struct job *j, void *opaque, char *err, size_t errlen)
{
	struct op *op = opaque;
	struct vm *v = op->vm;

	(void)err;
	(void)errlen;
	if (op->tick)
		qb_loop_timer_del(op->m->loop, op->tick);
	op->tick = 0;
	job_set_cancel(j, NULL, NULL);
	vmm_job_done(v);
	job_cancelled(j, "vm %s: migration cancelled while it waited for a replication cycle; "
		      "the VM keeps running here", v->name);
	op->job = NULL;
	leftovers(op->m, v); /* the note, if one was written */
	vmm_op_free(op);
	return 0;
}

static void migrate_wait_tick(void *data)
{
	struct op *op = data;

	op->tick = 0;
	op->waited_s++; /* ticks, here */
	migrate_run(op);
}

static void migrate_begin(struct exec_item *it)
{
	struct op *op = vmm_op_of(it);

	if (!op)
		return;
	if (op->code) {
		vmm_op_end(op, op->code, "vm %s: %s", op->vm->name, op->err);
		return;
	}
	migrate_run(op);
}

static void migrate_run(struct op *op)
{
	struct vmm *m = op->m;
	struct vm *v = op->vm;
	char err[512];
	int rc;

	if (vmm_vm_running(v) && vmm_owned(m, v) && vmm_rep_busy(m, v->name)) {
		unsigned waited = op->waited_s * REP_WAIT_TICK_MS / 1000u;
		if (waited >= REP_WAIT_MAX_S) {
			job_set_cancel(op->job, NULL, NULL);
			leftovers(m, v);
			vmm_op_end(op, HCA__ERROR_CODE__ERROR_BUSY, "vm %s: its replication cycle "
				   "did not end within %u s (a first copy or a resync?); pause its "
				   "replication (hcactl replica pause %s), migrate, then resume it",
				   v->name, REP_WAIT_MAX_S, v->name);
			return;
		}
		if (!op->waited_s) {
			qb_log(LOG_INFO, "vm %s: migration waits for the replication cycle under "
			       "way", v->name);
			job_set_cancel(op->job, migrate_wait_cancel, op);
		}
		job_progress(op->job, waited, REP_WAIT_MAX_S, "s",
			     "waiting for the replication cycle under way to end");
		qb_loop_timer_add(m->loop, QB_LOOP_MED, REP_WAIT_TICK_MS * QB_TIME_NS_IN_MSEC, op,
				  migrate_wait_tick, &op->tick);
		return;
	}
	job_set_cancel(op->job, NULL, NULL);
	if (!vmm_vm_running(v) || !vmm_owned(m, v)) {
		vmm_op_end(op, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: not running here any more",
			   v->name);
		return;
	}
	{
		const Hca__MigDisk *disks[HV_MAX_DISKS];
		for (size_t i = 0; i < op->n_mdisks; i++)
			disks[i] = &op->mdisks[i];
		if (v->rec->owner_epoch != op->mig_epoch) {
			vmm_op_end(op, HCA__ERROR_CODE__ERROR_BUSY, "vm %s: its owner record moved "
				   "meanwhile", v->name);
			return;
		}
		rc = mig_start(m->migs->mig, op->job, job_id(op->job), v->hv, v->name,
			       v->rec->owner_epoch, v->rec->incarnation,
			       v->rec->spec->memory_mib << 20, disks, op->n_mdisks, op->migrate,
			       err, sizeof(err));
	}
	if (rc < 0) {
		leftovers(m, v); /* the note, if one was written */
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
	if ((d = local_disk(v->rec)) && !q->with_storage) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "vm %s: disk %s is a local "
				"%s, not shared storage (RBD): a live migration moves memory only; "
				"use --with-storage to move its disks too", v->name, d->name,
				d->path[0] ? "image" : "volume");
		return;
	}
	for (size_t i = 0; q->with_storage && i < v->rec->spec->n_disks; i++) {
		d = v->rec->spec->disks[i];
		if (d->path[0]) {
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "vm %s: disk %s is an "
					"attached image (%s), not a volume hcad made: --with-storage "
					"moves only volumes (copy the image to node %s yourself and "
					"attach it there)", v->name, d->name, d->path, q->target);
			return;
		}
	}
	if (q->target_storage[0] && strcmp(q->target_storage, "local") &&
	    strcmp(q->target_storage, "rbd")) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "vm %s: --target-storage "
				"%s: local (node %s's own storage) or rbd (the cluster's pool)",
				v->name, q->target_storage, q->target);
		return;
	}
	if (!strcmp(q->target_storage, "rbd") && !m->rbd) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: --target-storage "
				"rbd: node %s has no RBD pool configured (store = rados)", v->name,
				m->conf->node_name);
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
	op->mig_epoch = v->rec->owner_epoch;
	for (size_t i = 0; q->with_storage && i < v->rec->spec->n_disks; i++) {
		const Hca__DiskSpec *dk = v->rec->spec->disks[i];
		if (!strcmp(dk->backend, "rbd"))
			continue; /* shared: stays */
		for (size_t k = 0; k < v->rec->n_volumes; k++) {
			const Hca__VolumeRef *vr = v->rec->volumes[k];
			Hca__MigDisk *md = &op->mdisks[op->n_mdisks];
			if (strcmp(vr->disk, dk->name) || op->n_mdisks >= HV_MAX_DISKS)
				continue;
			hca__mig_disk__init(md);
			snprintf(op->mdisk_name[op->n_mdisks], sizeof(op->mdisk_name[0]), "%s",
				 dk->name);
			snprintf(op->mvol_name[op->n_mdisks], sizeof(op->mvol_name[0]), "%s",
				 vr->volume);
			md->disk = op->mdisk_name[op->n_mdisks];
			md->volume = op->mvol_name[op->n_mdisks];
			md->format = vr->format;
			if (!strcmp(q->target_storage, "rbd")) {
				/* same name in the pool (the path hv_argv opens) */
				snprintf(op->mpath[op->n_mdisks], sizeof(op->mpath[0]), "rbd:%s/%s",
					 m->conf->rados_pool, vr->volume);
				md->target_backend = "rbd";
				md->target_path = op->mpath[op->n_mdisks];
			}
			op->n_mdisks++;
		}
	}
	vmm_op_push(op, migrate_go, migrate_begin);
}
