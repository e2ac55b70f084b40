/*
 * vmm_repfo: failover to a VM's replica, and replication the other way.
 * Each failover is a job on the node that carries it out:
 *
 *   test      (the replica node) a copy of a point is booted as VM
 *             "NAME-test", without network, on the replica node, while
 *             replication goes on; --stop removes it;
 *   planned   (the VM's node) the guest is paused, a last cycle ships what
 *             it wrote, its QEMU stops, the replica node makes its volumes
 *             from that point, and the VM starts there through the same
 *             owner compare-and-swap as any start: nothing written is lost;
 *   unplanned (the replica node) the VM's node is gone: the volumes are made
 *             from a point, the owner record moves by CAS from the node
 *             that is not a member any more, and the VM starts here.
 *
 * A planned failover that fails before the start on the replica node puts
 * the VM back where it was (resumed, or started again there). The
 * relation then says failed-over; `replica reverse` replicates back.
 *
 * The steps are driven by a 200 ms poll of what the agent already tracks
 * (the VM's state, its record, the job slots), so each waits for the real
 * outcome instead of trusting a reply.
 */
#include "agent/vmm_rep_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <qb/qblog.h>

#define POLL_MS 200u
#define RBD_RM_TIMEOUT_MS 60000u  /* the old images: Ceph's watch timeout is 30 s */
#define RBD_RM_RETRY_MS 3000u
#define STEP_TIMEOUT_MS 120000u
#define PROMOTE_TIMEOUT_MS 600000u /* the replica node copies the point's data */
#define M_PROMOTE "rep.promote"
#define M_SEED "rep.seed"
#define SEED_POINT 1u             /* a reversed relation's first point: the old copy */
#define SEED_TIMEOUT_MS 120000u   /* the old node copies its volumes locally */

enum fo_mode { FO_TEST, FO_TEST_STOP, FO_PLANNED, FO_UNPLANNED };

struct fo {
	struct exec_item item;     /* worker steps */
	struct vmm *m;
	struct op *op;
	enum fo_mode mode;
	char vm[HV_NAME_MAX + 1];
	char clone[HV_NAME_MAX + 8]; /* test: NAME-test */
	uint64_t point;            /* asked for (0: newest), then the one used */
	bool force;
	Hca__RepRelation *rel;     /* a copy */
	int step;
	bool busy;                 /* an action is under way: poll waits */
	uint64_t step_ms;          /* when the step began (monotonic) */
	qb_loop_timer_handle t;
	Hca__ErrorCode code;
	char err[480];
	/* what a worker step reads or writes */
	unsigned ndisks;
	char (*paths)[PATH_MAX];
	Hca__VmRecord *rec;        /* a copy of the VM's record */
	int rc;
	char owner[64];
	bool running_there;
	struct rep_src_result res;
	bool paused_it;            /* planned: this failover paused the guest */
	bool stopped_it;           /* planned: ... and stopped its QEMU */
	unsigned tries;
	uint64_t loop_ms, loop_ms2; /* when a step that repeats began */
	/* RBD disks: their point becomes a local volume of the replica node,
	 * and the record's disks follow in the owner CAS itself */
	bool moved;                /* planned: that CAS was written */
	unsigned n_rbd;
	char rbd_vols[REP_DISKS_MAX][STO_VOL_NAME_MAX + 1]; /* the old images */
};

static uint64_t mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void fo_poll(void *data);

static void fo_free(struct fo *f)
{
	struct rrel *r = f->m->reps ? vrep_find(f->m->reps, f->vm) : NULL;

	if (r && f->mode == FO_PLANNED)
		r->failing = false;
	if (f->t)
		qb_loop_timer_del(f->m->loop, f->t);
	if (f->rel)
		hca__rep_relation__free_unpacked(f->rel, NULL);
	if (f->rec)
		hca__vm_record__free_unpacked(f->rec, NULL);
	free(f->paths);
	free(f);
}

__attribute__((format(printf, 3, 4)))
static void fo_end(struct fo *f, Hca__ErrorCode code, const char *fmt, ...)
{
	char msg[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	qb_log(code ? LOG_WARNING : LOG_NOTICE, "replica: vm %s: failover: %s", f->vm, msg);
	if (!code)
		job_note(f->op->job, "%s", msg); /* what the user reads at the end */
	vmm_op_end(f->op, code, "%s", msg);
	fo_free(f);
}

static void fo_next(struct fo *f)
{
	f->step++;
	f->busy = false;
	f->step_ms = mono();
}

/* The next step waits for what is started now: its callback clears busy. */
static void fo_wait(struct fo *f)
{
	fo_next(f);
	f->busy = true;
}

static void fo_arm(struct fo *f)
{
	qb_loop_timer_add(f->m->loop, QB_LOOP_MED, POLL_MS * QB_TIME_NS_IN_MSEC, f, fo_poll,
			  &f->t);
}

static bool timed_out(struct fo *f, uint64_t ms)
{
	return mono() - f->step_ms > ms;
}

/* ---- worker steps ---- */

static void fo_push(struct fo *f, exec_fn fn)
{
	char key[STO_KEY_MAX + 1];

	f->busy = true;
	exec_item_init(&f->item, fn, NULL);
	vmm_key(key, sizeof(key), f->vm);
	exec_push(f->m->q_store, &f->item, key);
}

/* where the VM's record says it is: owner and whether it runs there */
static void read_owner_fn(struct exec_item *it)
{
	struct fo *f = EXEC_CONTAINER_OF(it, struct fo, item);
	Hca__VmRecord *r = NULL;
	uint64_t ver;
	char err[256];

	f->rc = sto_vm_get(f->m->store, f->vm, &r, &ver, err, sizeof(err));
	if (f->rc == 0) {
		snprintf(f->owner, sizeof(f->owner), "%s", r->owner);
		f->running_there = r->active;
		hca__vm_record__free_unpacked(r, NULL);
	}
	f->busy = false;
}

/* the volumes of this node made from the point's files */
static void import_fn(struct exec_item *it)
{
	struct fo *f = EXEC_CONTAINER_OF(it, struct fo, item);
	const Hca__DiskSpec *ds[REP_DISKS_MAX];
	unsigned n = vrep_disks(f->rec->spec, ds, REP_DISKS_MAX);

	f->rc = 0;
	if (n != f->ndisks) {
		snprintf(f->err, sizeof(f->err), "vm %s: the point holds %u disks, the VM has %u",
			 f->vm, f->ndisks, n);
		f->rc = -EINVAL;
	}
	for (unsigned i = 0; f->rc == 0 && i < n; i++) {
		const Hca__VolumeRef *vr = NULL;
		for (size_t k = 0; k < f->rec->n_volumes; k++)
			if (!strcmp(f->rec->volumes[k]->disk, ds[i]->name))
				vr = f->rec->volumes[k];
		if (!vr || !f->m->vols) {
			snprintf(f->err, sizeof(f->err), "vm %s: disk %s has no local volume to "
				 "make", f->vm, ds[i]->name);
			f->rc = -EINVAL;
			break;
		}
		/* an RBD image's point becomes a local qcow2 volume of its name */
		f->rc = sto_vol_import(f->m->vols, vr->volume, f->paths[i],
				       vr->format == HCA__DISK_FORMAT__DISK_FORMAT_RAW &&
				       strcmp(vr->backend, "rbd") ? STO_FMT_RAW : STO_FMT_QCOW2,
				       f->err, sizeof(f->err));
	}
	f->busy = false;
}

/* test: copies of the point's files in a directory of their own */
static void clone_dir(struct fo *f, char *buf, size_t len)
{
	snprintf(buf, len, "%s/replica-test/%s", f->m->conf->state_dir, f->vm);
}

static void copy_fn(struct exec_item *it)
{
	struct fo *f = EXEC_CONTAINER_OF(it, struct fo, item);
	char dir[PATH_MAX], top[PATH_MAX];
	struct sto_vols *vols = NULL;

	clone_dir(f, dir, sizeof(dir));
	snprintf(top, sizeof(top), "%s/replica-test", f->m->conf->state_dir);
	mkdir(top, 0700);
	f->rc = 0;
	if (!(vols = sto_vols_open_file(dir, NULL, f->err, sizeof(f->err))))
		f->rc = -EIO;
	for (unsigned i = 0; f->rc == 0 && i < f->ndisks; i++) {
		char vol[32];
		snprintf(vol, sizeof(vol), "d%u", i);
		f->rc = sto_vol_import(vols, vol, f->paths[i], STO_FMT_QCOW2, f->err,
				       sizeof(f->err));
	}
	sto_vols_close(vols);
	f->busy = false;
}

static int rm_tree(const char *dir)
{
	char cmd[PATH_MAX + 32];

	if (!strstr(dir, "/replica-test/"))
		return -EINVAL; /* never anything else */
	snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", dir);
	return system(cmd) == 0 ? 0 : -EIO;
}

static void unclone_fn(struct exec_item *it)
{
	struct fo *f = EXEC_CONTAINER_OF(it, struct fo, item);
	char dir[PATH_MAX];

	clone_dir(f, dir, sizeof(dir));
	f->rc = rm_tree(dir);
	f->busy = false;
}

/*
 * The record's RBD disks as they are after a failover: local qcow2 volumes
 * of the same names on the replica node (import_fn made them). The old
 * images' names are kept in @f to be removed once the VM runs there.
 */
static size_t rbd_moves(struct fo *f, const Hca__VmRecord *r, struct sto_vol_move *mv)
{
	const Hca__DiskSpec *ds[REP_DISKS_MAX];
	unsigned n = r->spec ? vrep_disks(r->spec, ds, REP_DISKS_MAX) : 0;
	size_t k = 0;

	f->n_rbd = 0;
	for (unsigned i = 0; i < n; i++) {
		for (size_t j = 0; j < r->n_volumes; j++) {
			const Hca__VolumeRef *vr = r->volumes[j];
			if (strcmp(vr->disk, ds[i]->name) || strcmp(vr->backend, "rbd"))
				continue;
			mv[k++] = (struct sto_vol_move){ vr->disk, "file", vr->volume, "",
							 HCA__DISK_FORMAT__DISK_FORMAT_QCOW2 };
			snprintf(f->rbd_vols[f->n_rbd++], sizeof(f->rbd_vols[0]), "%s",
				 vr->volume);
		}
	}
	return k;
}

/* unplanned: the owner record moves here from the node that is gone (and
 * RBD disks become this node's volumes in the same write) */
static void take_fn(struct exec_item *it)
{
	struct fo *f = EXEC_CONTAINER_OF(it, struct fo, item);
	struct sto_owner cur = { .owner = f->rec->owner, .epoch = f->rec->owner_epoch,
				 .active = f->rec->active, .incarnation = f->rec->incarnation };
	struct sto_owner next = { .owner = f->m->conf->node_name, .active = false };
	struct sto_vol_move mv[REP_DISKS_MAX];
	size_t n = rbd_moves(f, f->rec, mv);

	f->rc = sto_owner_cas_moving(f->m->store, f->vm, &cur, &next, mv, n, NULL, NULL, f->err,
				     sizeof(f->err));
	f->busy = false;
}

/* unplanned, a VM with RBD disks: are its images there to start from? */
static void rbd_check_fn(struct exec_item *it)
{
	struct fo *f = EXEC_CONTAINER_OF(it, struct fo, item);
	struct sto_vol_move mv[REP_DISKS_MAX];
	char e[256];

	f->rc = 0;
	rbd_moves(f, f->rec, mv);
	for (unsigned i = 0; f->m->rbd && i < f->n_rbd && f->rc == 0; i++) {
		struct sto_vol_info vi = { 0 };
		if (sto_vol_info(f->m->rbd, f->rbd_vols[i], &vi, e, sizeof(e)) == 0 && vi.exists) {
			snprintf(f->err, sizeof(f->err), "its RBD image %s is in the pool, with "
				 "everything the VM wrote up to its end: start the VM from it on "
				 "a node (hcactl vm start %s --on NODE) instead of losing what it "
				 "wrote after point %" PRIu64 "; --force fails over onto the "
				 "replica anyway", f->rbd_vols[i], f->vm, f->point);
			f->rc = -EEXIST;
		}
	}
	f->busy = false;
}

/* planned, a VM with RBD disks, once the replica node has made the
 * volumes: the commit. The owner moves to the replica node (stopped), its
 * RBD disks becoming those volumes in the same write; the start there
 * follows. No RBD disk: nothing here, the start's own claim moves it. */
static void move_fn(struct exec_item *it)
{
	struct fo *f = EXEC_CONTAINER_OF(it, struct fo, item);
	const char *me = f->m->conf->node_name;
	struct sto_vol_move mv[REP_DISKS_MAX];
	Hca__VmRecord *r = NULL;
	uint64_t ver;
	size_t n;

	f->rc = sto_vm_get(f->m->store, f->vm, &r, &ver, f->err, sizeof(f->err));
	for (unsigned again = 0; f->rc == 0 && (n = rbd_moves(f, r, mv)); again++) {
		struct sto_owner cur = { .owner = me, .epoch = r->owner_epoch, .active = false,
					 .incarnation = r->incarnation };
		struct sto_owner next = { .owner = f->rel->target, .active = false };
		if (strcmp(r->owner, me) || r->active) {
			snprintf(f->err, sizeof(f->err), "its record changed meanwhile (owner %s%s)",
				 r->owner, r->active ? ", running" : "");
			f->rc = -ESTALE;
		} else {
			f->rc = sto_owner_cas_moving(f->m->store, f->vm, &cur, &next, mv, n, NULL,
						     NULL, f->err, sizeof(f->err));
			f->moved = f->rc == 0;
		}
		if (f->rc != -ECANCELED || again)
			break;
		/* changed between the read and the write: read it once more */
		hca__vm_record__free_unpacked(r, NULL);
		r = NULL;
		f->rc = sto_vm_get(f->m->store, f->vm, &r, &ver, f->err, sizeof(f->err));
	}
	if (r)
		hca__vm_record__free_unpacked(r, NULL);
	f->busy = false;
}

/* planned: the old RBD images, once the VM runs from its new volumes */
static void rbd_rm_fn(struct exec_item *it)
{
	struct fo *f = EXEC_CONTAINER_OF(it, struct fo, item);
	char e[256];

	unsigned left = 0;

	/* what is not removed yet stays in the list, tried again: Ceph keeps
	 * the stopped QEMU's watch on an image for up to 30 s */
	for (unsigned i = 0; f->m->rbd && i < f->n_rbd; i++) {
		if (sto_vol_remove(f->m->rbd, f->rbd_vols[i], e, sizeof(e)) < 0) {
			snprintf(f->err, sizeof(f->err), "%s: %s", f->rbd_vols[i], e);
			memmove(f->rbd_vols[left++], f->rbd_vols[i], sizeof(f->rbd_vols[0]));
		} else {
			qb_log(LOG_NOTICE, "replica: vm %s: its old RBD image %s removed", f->vm,
			       f->rbd_vols[i]);
		}
	}
	f->n_rbd = f->m->rbd ? left : 0;
	f->busy = false;
}

/* ---- internal requests: the same paths as a user's ---- */

static void req_answered(const Hca__ApiReply *r, void *ctx)
{
	struct fo *f = ctx;

	f->busy = false;
	if (r->error && r->error->code) {
		f->code = r->error->code;
		snprintf(f->err, sizeof(f->err), "%s", r->error->message);
	}
}

static void ask(struct fo *f, Hca__ApiRequest *q)
{
	f->busy = true;
	vmm_request(f->m, q, req_answered, f);
}

static void ask_start(struct fo *f, const char *name, const char *on)
{
	Hca__ApiRequest q = HCA__API_REQUEST__INIT;
	Hca__VmRef ref = HCA__VM_REF__INIT;

	ref.name = (char *)name;
	ref.on_node = (char *)on;
	q.op_case = HCA__API_REQUEST__OP_START;
	q.start = &ref;
	ask(f, &q);
}

static void ask_stop(struct fo *f, const char *name)
{
	Hca__ApiRequest q = HCA__API_REQUEST__INIT;
	Hca__StopRequest s = HCA__STOP_REQUEST__INIT;

	s.name = (char *)name;
	s.force = true;
	q.op_case = HCA__API_REQUEST__OP_STOP;
	q.stop = &s;
	ask(f, &q);
}

static void ask_undefine(struct fo *f, const char *name)
{
	Hca__ApiRequest q = HCA__API_REQUEST__INIT;
	Hca__VmRef ref = HCA__VM_REF__INIT;

	ref.name = (char *)name;
	q.op_case = HCA__API_REQUEST__OP_UNDEFINE;
	q.undefine = &ref;
	ask(f, &q);
}

/* Replace a string of an unpacked message (never free protobuf-c's shared
 * empty string). */
static void set_str(char **p, const char *v)
{
	if (*p && *p != protobuf_c_empty_string)
		free(*p);
	*p = strdup(v);
}

/* test: the clone's spec: the VM's, its own name and uuid, no network,
 * its disks the copies */
static void ask_define_clone(struct fo *f)
{
	Hca__ApiRequest q = HCA__API_REQUEST__INIT;
	Hca__DefineRequest d = HCA__DEFINE_REQUEST__INIT;
	Hca__VmSpec *s = vmm_spec_copy(f->rec->spec);
	const Hca__DiskSpec *ds[REP_DISKS_MAX];
	unsigned n, k = 0;
	char dir[PATH_MAX - 32], path[PATH_MAX];

	if (!s) {
		f->code = HCA__ERROR_CODE__ERROR_INTERNAL;
		snprintf(f->err, sizeof(f->err), "out of memory");
		return;
	}
	clone_dir(f, dir, sizeof(dir));
	n = vrep_disks(f->rec->spec, ds, REP_DISKS_MAX);
	for (size_t i = 0; i < s->n_disks; i++) {
		Hca__DiskSpec *dk = s->disks[i];
		if (dk->readonly || k >= n)
			continue;
		snprintf(path, sizeof(path), "%s/d%u.qcow2", dir, k);
		set_str(&dk->path, path);
		dk->format = HCA__DISK_FORMAT__DISK_FORMAT_QCOW2;
		set_str(&dk->backend, "");
		k++;
	}
	for (size_t i = 0; i < s->n_nics; i++)
		hca__nic_spec__free_unpacked(s->nics[i], NULL);
	s->n_nics = 0;
	set_str(&s->name, f->clone);
	set_str(&s->uuid, "");
	d.spec = s;
	q.op_case = HCA__API_REQUEST__OP_DEFINE;
	q.define = &d;
	ask(f, &q);
	hca__vm_spec__free_unpacked(s, NULL);
}

/* ---- the replica node's part of a planned failover ---- */

struct promote {
	struct exec_item item;
	struct vmm *m;
	struct chan_reply *cr;
	char vm[HV_NAME_MAX + 1];
	uint64_t point;
	struct fo f;               /* import_fn's fields */
};

static void promote_imported(struct exec_item *it)
{
	struct fo *f = EXEC_CONTAINER_OF(it, struct fo, item);
	struct promote *p = (struct promote *)(void *)((char *)f - offsetof(struct promote, f));

	if (f->rc < 0)
		chan_reply_error(p->cr, f->rc, "%s", f->err);
	else
		chan_reply_ok(p->cr, NULL, 0);
	if (f->rec)
		hca__vm_record__free_unpacked(f->rec, NULL);
	free(f->paths);
	free(p);
}

static void promote_released(void *opaque, int err, const char *msg)
{
	struct promote *p = opaque;

	if (err)
		qb_log(LOG_WARNING, "replica: vm %s: its store did not close cleanly: %s", p->vm,
		       msg ? msg : strerror(-err));
	exec_item_init(&p->f.item, import_fn, promote_imported);
	exec_push(p->m->q_store, &p->f.item, NULL);
}

static void promote_held(void *opaque, int err, const char *msg, unsigned ndisks,
			 char (*paths)[PATH_MAX])
{
	struct promote *p = opaque;

	if (err || !(p->f.paths = calloc(ndisks ? ndisks : 1, PATH_MAX))) {
		chan_reply_error(p->cr, err ? err : -ENOMEM, "vm %s: point %" PRIu64 ": %s",
				 p->vm, p->point, msg ? msg : "out of memory");
		if (p->f.rec)
			hca__vm_record__free_unpacked(p->f.rec, NULL);
		free(p);
		return;
	}
	memcpy(p->f.paths, paths, (size_t)ndisks * PATH_MAX);
	p->f.ndisks = ndisks;
	/* the daemon stops: nothing writes the chain while it is copied */
	if (rep_dst_release(p->m->reps->rx, p->vm, promote_released, p) < 0)
		promote_released(p, -EIO, "cannot release the store");
}

static void on_promote(struct chan_reply *cr, const void *body, size_t len, void *opaque)
{
	struct vmm_rep *x = opaque;
	Hca__RepPointsRequest *q = hca__rep_points_request__unpack(NULL, len, body);
	struct promote *p = NULL;
	struct rrel *r;
	struct vm *v;

	if (!q || !hv_name_valid(q->vm)) {
		chan_reply_error(cr, -EPROTO, "%s: malformed request", M_PROMOTE);
		goto out;
	}
	r = vrep_find(x, q->vm);
	v = vmm_vm_find(x->m, q->vm);
	if (!r || !r->rec || r->rec->relation != q->relation ||
	    strcmp(r->rec->target, x->m->conf->node_name) || !v || !v->rec) {
		chan_reply_error(cr, -ESTALE, "vm %s: this node is not its replica", q->vm);
		goto out;
	}
	if (!(p = calloc(1, sizeof(*p))) || !(p->f.rec = sto_vm_copy(v->rec))) {
		chan_reply_error(cr, -ENOMEM, "out of memory");
		free(p);
		goto out;
	}
	p->m = x->m;
	p->cr = cr;
	p->f.m = x->m;
	snprintf(p->vm, sizeof(p->vm), "%s", q->vm);
	snprintf(p->f.vm, sizeof(p->f.vm), "%s", q->vm);
	p->point = q->point;
	if (rep_dst_hold(x->rx, q->vm, q->point, true, promote_held, p) < 0) {
		chan_reply_error(cr, -EIO, "vm %s: no replica here", q->vm);
		hca__vm_record__free_unpacked(p->f.rec, NULL);
		free(p);
	}
out:
	if (q)
		hca__rep_points_request__free_unpacked(q, NULL);
}

/* ---- rep.seed: the old node's copy becomes the reversed relation's replica ---- */

static void seeded(void *opaque, int err, const char *msg)
{
	struct chan_reply *cr = opaque;

	if (err)
		chan_reply_error(cr, err, "%s", msg ? msg : strerror(-err));
	else
		chan_reply_ok(cr, "", 0);
}

/*
 * On the node a VM failed over from, asked by the node it runs on now
 * (its owner) when it reverses the relation: this node's volumes, stale
 * copies of the VM, become the replica's first point, so that the first
 * cycle back compares digests and ships only what differs (what either
 * side wrote since the last common point). Refused unless the asking
 * node owns the VM and no QEMU of it runs here.
 */
static void on_seed(struct chan_reply *cr, const void *body, size_t len, void *opaque)
{
	struct vmm_rep *x = opaque;
	Hca__RepPointsRequest *q = hca__rep_points_request__unpack(NULL, len, body);
	const char *peer = chan_reply_peer(cr), *me = x->m->conf->node_name;
	const Hca__DiskSpec *ds[REP_DISKS_MAX];
	struct rep_seed_src src[REP_DISKS_MAX];
	struct rep_disk disks[REP_DISKS_MAX];
	char err[256];
	struct vm *v;
	unsigned n;
	int rc;

	if (!q || !hv_name_valid(q->vm) || !q->point) {
		chan_reply_error(cr, -EPROTO, "%s: malformed request", M_SEED);
		goto out;
	}
	v = vmm_vm_find(x->m, q->vm);
	if (!v || !v->rec || !v->rec->spec) {
		chan_reply_error(cr, -ENOENT, "vm %s: not known on %s", q->vm, me);
		goto out;
	}
	if (!peer || strcmp(v->rec->owner, peer) || !strcmp(v->rec->owner, me)) {
		chan_reply_error(cr, -EPERM, "vm %s: owned by %s, not by %s: %s keeps its "
				 "volumes", q->vm, v->rec->owner, peer ? peer : "?", me);
		goto out;
	}
	if (v->hv || v->job) {
		chan_reply_error(cr, -EBUSY, "vm %s: %s on %s", q->vm,
				 v->hv ? "a QEMU of it runs" : "an operation is under way", me);
		goto out;
	}
	n = vrep_disks(v->rec->spec, ds, REP_DISKS_MAX);
	for (unsigned i = 0; i < n; i++) {
		const Hca__VolumeRef *vr = NULL;
		for (size_t k = 0; k < v->rec->n_volumes; k++)
			if (!strcmp(v->rec->volumes[k]->disk, ds[i]->name))
				vr = v->rec->volumes[k];
		if (!vr || !strcmp(vr->backend, "rbd") || !x->m->vols) {
			chan_reply_error(cr, -EOPNOTSUPP, "vm %s: disk %s has no local volume on %s",
					 q->vm, ds[i]->name, me);
			goto out;
		}
		if ((rc = sto_vol_path(x->m->vols, vr->volume, src[i].path, sizeof(src[i].path),
				       err, sizeof(err))) < 0) {
			chan_reply_error(cr, rc, "vm %s: disk %s on %s: %s", q->vm, ds[i]->name, me,
					 err);
			goto out;
		}
		src[i].raw = vr->format == HCA__DISK_FORMAT__DISK_FORMAT_RAW;
		memset(&disks[i], 0, sizeof(disks[i]));
		snprintf(disks[i].name, sizeof(disks[i].name), "%s", ds[i]->name);
		disks[i].size = ds[i]->size_bytes;
	}
	qb_log(LOG_NOTICE, "replica: vm %s: its volumes here become the replica %s ships back "
	       "to (point %" PRIu64 ")", q->vm, peer, q->point);
	if ((rc = rep_dst_seed(x->rx, q->vm, disks, n, src, q->point, seeded, cr)) < 0)
		chan_reply_error(cr, rc, "vm %s: its replica cannot be made here: %s", q->vm,
				 strerror(-rc));
out:
	if (q)
		hca__rep_points_request__free_unpacked(q, NULL);
}

void vrep_fo_setup(struct vmm_rep *x)
{
	x->env.handle(x->env.ctx, M_PROMOTE, on_promote, x);
	x->env.handle(x->env.ctx, M_SEED, on_seed, x);
}

/* ---- held points (test, unplanned) ---- */

static void held(void *opaque, int err, const char *msg, unsigned ndisks,
		 char (*paths)[PATH_MAX])
{
	struct fo *f = opaque;

	f->busy = false;
	if (err) {
		f->code = HCA__ERROR_CODE__ERROR_NOT_FOUND;
		snprintf(f->err, sizeof(f->err), "vm %s: point %" PRIu64 " on this node: %s",
			 f->vm, f->point, msg ? msg : strerror(-err));
		return;
	}
	free(f->paths);
	if (!(f->paths = calloc(ndisks ? ndisks : 1, PATH_MAX))) {
		f->code = HCA__ERROR_CODE__ERROR_INTERNAL;
		snprintf(f->err, sizeof(f->err), "out of memory");
		return;
	}
	memcpy(f->paths, paths, (size_t)ndisks * PATH_MAX);
	f->ndisks = ndisks;
}

static void hold(struct fo *f, bool on)
{
	f->busy = on;
	if (rep_dst_hold(f->m->reps->rx, f->vm, f->point, on, on ? held : NULL, f) < 0 && on) {
		f->busy = false;
		f->code = HCA__ERROR_CODE__ERROR_NOT_FOUND;
		snprintf(f->err, sizeof(f->err), "vm %s: no replica on this node", f->vm);
	}
}

static void released(void *opaque, int err, const char *msg)
{
	struct fo *f = opaque;

	f->busy = false;
	if (err)
		qb_log(LOG_WARNING, "replica: vm %s: its store did not close cleanly: %s", f->vm,
		       msg ? msg : strerror(-err));
}

/* ---- the planned failover's own steps on the VM's node ---- */

static void final_cycle_done(void *opaque, const struct rep_src_result *res)
{
	struct fo *f = opaque;

	f->res = *res;
	f->busy = false;
}

static void hv_done(struct hv_vm *hv, int err, const char *msg, void *opaque)
{
	struct fo *f = opaque;

	(void)hv;
	f->busy = false;
	if (err && err != -EALREADY) {
		f->code = HCA__ERROR_CODE__ERROR_HYPERVISOR;
		snprintf(f->err, sizeof(f->err), "%s", msg ? msg : strerror(-err));
	}
}

static void promoted(int err, const void *body, size_t len, const char *msg, void *opaque)
{
	struct fo *f = opaque;

	(void)body;
	(void)len;
	f->busy = false;
	if (err) {
		f->code = HCA__ERROR_CODE__ERROR_STORAGE;
		snprintf(f->err, sizeof(f->err), "replica node %s: %s", f->rel->target,
			 msg ? msg : strerror(-err));
	}
}

/* Before the VM starts on the replica node: put it back as it was. */
static void planned_rollback(struct fo *f, const char *why)
{
	struct vm *v = vmm_vm_find(f->m, f->vm);

	qb_log(LOG_WARNING, "replica: vm %s: planned failover rolls back: %s", f->vm, why);
	if (v && v->hv && f->paused_it && !f->stopped_it)
		hv_vm_resume(v->hv, NULL, NULL);
	/* a stopped VM starts again here once the job has let go of it */
}

static void planned_poll(struct fo *f)
{
	struct vm *v = vmm_vm_find(f->m, f->vm);
	struct vmm_rep *x = f->m->reps;
	struct rep_src_req q;
	Hca__RepPointsRequest pr = HCA__REP_POINTS_REQUEST__INIT;
	uint8_t buf[256];
	size_t len;
	char e[256];

	if (f->code && f->step < 8 && !f->moved) {
		char why[sizeof(f->err)];
		snprintf(why, sizeof(why), "%s", f->err);
		planned_rollback(f, why);
		fo_end(f, f->code, "vm %s: planned failover to %s failed, the VM stays on %s%s: %s",
		       f->vm, f->rel->target, f->m->conf->node_name,
		       f->stopped_it ? " (stopped: start it again with hcactl vm start)" : "", why);
		return;
	}
	switch (f->step) {
	case 0: /* no cycle under way any more */
		rep_src_cancel(x->tx, f->vm, "a planned failover takes over");
		if (!rep_src_busy(x->tx, f->vm))
			fo_next(f);
		break;
	case 1: /* the guest pauses: what it wrote so far is all it wrote */
		job_phase(f->op->job, HCA__JOB_PHASE__JOB_PHASE_PREPARE);
		if (!v || !v->hv || !vmm_vm_running(v)) {
			f->code = HCA__ERROR_CODE__ERROR_BAD_STATE;
			snprintf(f->err, sizeof(f->err), "vm %s: not running here", f->vm);
			break;
		}
		f->paused_it = true;
		fo_wait(f);
		if (hv_vm_pause(v->hv, hv_done, f) < 0)
			hv_done(NULL, -EALREADY, NULL, f);
		break;
	case 2: /* the last cycle, of the paused guest */
		job_phase(f->op->job, HCA__JOB_PHASE__JOB_PHASE_TRANSFER);
		job_progress(f->op->job, 0, 0, "", "the last changes go to the replica");
		{
			struct rrel *r = vrep_find(x, f->vm);
			e[0] = '\0';
			if (!r || !v || vrep_cycle_req(x, r, v, &q, e, sizeof(e)) < 0) {
				f->code = HCA__ERROR_CODE__ERROR_BAD_STATE;
				snprintf(f->err, sizeof(f->err), "the last cycle cannot run: %s", e);
				break;
			}
			fo_wait(f);
			if (rep_src_cycle(x->tx, &q, final_cycle_done, f) < 0) {
				f->busy = false;
				f->code = HCA__ERROR_CODE__ERROR_BAD_STATE;
				snprintf(f->err, sizeof(f->err), "the last cycle did not start");
			}
		}
		break;
	case 3:
		if (f->res.err) {
			f->code = HCA__ERROR_CODE__ERROR_STORAGE;
			snprintf(f->err, sizeof(f->err), "the last cycle: %s", f->res.msg);
			break;
		}
		f->point = f->res.cycle;
		vrep_update(x, UPD_CYCLE, f->vm, f->rel->relation, NULL, &f->res, 0, NULL, NULL);
		/* the QEMU stops; its owner clears the claim once it is gone. A
		 * QMP quit (SIGKILL only if that fails) closes RBD images
		 * cleanly: a killed QEMU's watch holds them for 30 s, and the
		 * old images' removal (step 10) would wait for it */
		job_phase(f->op->job, HCA__JOB_PHASE__JOB_PHASE_SWITCHOVER);
		f->stopped_it = true;
		fo_wait(f);
		if (!v || !v->hv || hv_vm_stop(v->hv, false, hv_done, f) < 0)
			hv_done(NULL, -EIO, "cannot stop its QEMU", f);
		break;
	case 4: /* the record says nothing runs: the claim is cleared (the job
		 * holds the VM, so clearing it is the job's to do) */
		if (!f->loop_ms)
			f->loop_ms = mono();
		if (v && v->rec && v->rec->active && !vmm_vm_running(v))
			vmm_release(f->m, v);
		fo_wait(f);
		fo_push(f, read_owner_fn);
		break;
	case 5:
		if (f->rc == 0 && !f->running_there && !strcmp(f->owner, f->m->conf->node_name)) {
			/* the replica node makes the volumes from the last point */
			pr.vm = f->vm;
			pr.relation = f->rel->relation;
			pr.point = f->point;
			len = hca__rep_points_request__get_packed_size(&pr);
			hca__rep_points_request__pack(&pr, buf);
			job_progress(f->op->job, 0, 0, "", "the replica node makes the volumes");
			fo_wait(f);
			if (x->env.call(x->env.ctx, f->rel->target, M_PROMOTE, buf, len,
					PROMOTE_TIMEOUT_MS, promoted, f) < 0)
				promoted(-ENOTCONN, NULL, 0, "not reachable", f);
			break;
		}
		if (mono() - f->loop_ms > 30000) {
			f->code = HCA__ERROR_CODE__ERROR_TIMEOUT;
			snprintf(f->err, sizeof(f->err), "its claim was not cleared in 30 s");
			break;
		}
		f->step = 4;
		break;
	case 6: /* the commit: RBD disks become the replica node's volumes */
		job_phase(f->op->job, HCA__JOB_PHASE__JOB_PHASE_COMMIT);
		fo_wait(f);
		fo_push(f, move_fn);
		break;
	case 7: /* the VM starts there: the owner moves by the start's CAS (or
		 * has moved by move_fn's) */
		if (f->rc < 0) {
			f->code = HCA__ERROR_CODE__ERROR_STORAGE;
			break;
		}
		fo_wait(f);
		ask_start(f, f->vm, f->rel->target);
		break;
	case 8: /* running there? */
		if (!f->loop_ms2)
			f->loop_ms2 = mono();
		if (f->code && f->tries++ < 25 &&
		    ((f->code == HCA__ERROR_CODE__ERROR_BAD_STATE && strstr(f->err, "claimed by")) ||
		     (f->moved && (strstr(f->err, "owned by") ||
				   strstr(f->err, "changed meanwhile"))))) {
			/* its copy of the record has not seen the claim go (or
			 * the owner and disks come) yet: the start's own claim
			 * is a CAS on that copy, so nothing starts from it */
			f->code = 0;
			f->step = 7;
			break;
		}
		if (f->code && f->moved) {
			fo_end(f, f->code, "vm %s: did not start on %s (%s); it is %s's now, its disks "
			       "on %s's volumes: start it there (hcactl vm start %s)", f->vm,
			       f->rel->target, f->err, f->rel->target, f->rel->target, f->vm);
			return;
		}
		if (f->code) {
			/* not started there: the record may still be ours */
			planned_rollback(f, f->err);
			fo_end(f, f->code, "vm %s: did not start on %s (%s); it is stopped on %s "
			       "and its replica's volumes are on %s: start it where you want it",
			       f->vm, f->rel->target, f->err, f->m->conf->node_name,
			       f->rel->target);
			return;
		}
		fo_wait(f);
		fo_push(f, read_owner_fn);
		break;
	case 9:
		if (f->rc == 0 && !strcmp(f->owner, f->rel->target) && f->running_there) {
			vrep_update(x, UPD_STATE, f->vm, f->rel->relation, NULL, NULL,
				    HCA__REP_STATE__REP_STATE_FAILED_OVER, NULL, NULL);
			job_phase(f->op->job, HCA__JOB_PHASE__JOB_PHASE_CLEANUP);
			fo_wait(f);
			fo_push(f, rbd_rm_fn); /* nothing without RBD disks */
			break;
		}
		if (mono() - f->loop_ms2 > STEP_TIMEOUT_MS) {
			fo_end(f, HCA__ERROR_CODE__ERROR_TIMEOUT, "vm %s: not running on %s after "
			       "%u s; look at hcactl vm show %s", f->vm, f->rel->target,
			       STEP_TIMEOUT_MS / 1000, f->vm);
			return;
		}
		f->step = 8;
		break;
	case 10:
		if (f->n_rbd && !timed_out(f, RBD_RM_TIMEOUT_MS)) {
			if (!f->loop_ms)
				f->loop_ms = mono();
			if (mono() - f->loop_ms < RBD_RM_RETRY_MS)
				break;
			f->loop_ms = mono();
			job_progress(f->op->job, 0, 0, "", "removing the old RBD images (if the "
				     "QEMU had to be killed, Ceph lets go of them once its watch "
				     "expires)");
			f->busy = true;
			exec_item_init(&f->item, rbd_rm_fn, NULL);
			exec_push(f->m->q_store, &f->item, NULL);
			break;
		}
		if (f->n_rbd)
			qb_log(LOG_WARNING, "replica: vm %s: its old RBD image was not removed "
			       "(remove it with rbd rm): %s", f->vm, f->err);
		fo_end(f, 0, "vm %s: runs on %s from point %" PRIu64 " (the guest was paused for "
		       "the last cycle: nothing it wrote is lost)%s; replicate back with hcactl "
		       "replica reverse %s", f->vm, f->rel->target, f->point,
		       !f->moved ? "" : f->n_rbd ? ", its disks now local volumes there (the old "
		       "RBD images were not removed: see the log; move the disks back into the "
		       "pool with vm migrate --with-storage --target-storage rbd)"
		       : ", its disks now local volumes there (the old RBD images are removed; "
		       "move them back into the pool with vm migrate --with-storage "
		       "--target-storage rbd)", f->vm);
		return;
	}
	(void)len;
	fo_arm(f);
}

/* ---- test failover, on the replica node ---- */

static void test_poll(struct fo *f)
{
	struct vm *c = vmm_vm_find(f->m, f->clone);

	if (f->code) {
		if (f->step <= 3)
			hold(f, false);
		fo_end(f, f->code, "vm %s: test failover: %s", f->vm, f->err);
		return;
	}
	switch (f->step) {
	case 0:
		if (c) {
			fo_end(f, HCA__ERROR_CODE__ERROR_EXISTS, "vm %s: a test copy %s exists; "
			       "remove it first: hcactl replica failover %s --test --stop", f->vm,
			       f->clone, f->vm);
			return;
		}
		job_phase(f->op->job, HCA__JOB_PHASE__JOB_PHASE_PREPARE);
		fo_wait(f);
		hold(f, true);
		break;
	case 1:
		job_progress(f->op->job, 0, 0, "", "copying the point");
		fo_wait(f);
		fo_push(f, copy_fn);
		break;
	case 2:
		if (f->rc < 0) {
			f->code = HCA__ERROR_CODE__ERROR_STORAGE;
			break;
		}
		hold(f, false);
		job_phase(f->op->job, HCA__JOB_PHASE__JOB_PHASE_LAUNCH);
		fo_wait(f);
		ask_define_clone(f);
		break;
	case 3: /* defined: its record is here and its job over */
		if (!c || !c->rec || c->job) {
			if (timed_out(f, STEP_TIMEOUT_MS)) {
				f->code = HCA__ERROR_CODE__ERROR_TIMEOUT;
				snprintf(f->err, sizeof(f->err), "%s not defined in time", f->clone);
			}
			break;
		}
		fo_wait(f);
		ask_start(f, f->clone, f->m->conf->node_name);
		break;
	case 4:
		if (c && vmm_vm_running(c) && !c->job) {
			fo_end(f, 0, "vm %s: test copy %s runs on %s from point %" PRIu64 ", without "
			       "network; replication goes on; remove it with hcactl replica "
			       "failover %s --test --stop", f->vm, f->clone, f->m->conf->node_name,
			       f->point, f->vm);
			return;
		}
		if (timed_out(f, STEP_TIMEOUT_MS)) {
			f->code = HCA__ERROR_CODE__ERROR_TIMEOUT;
			snprintf(f->err, sizeof(f->err), "%s did not start in time", f->clone);
		}
		break;
	}
	fo_arm(f);
}

static void test_stop_poll(struct fo *f)
{
	struct vm *c = vmm_vm_find(f->m, f->clone);

	if (f->code) {
		fo_end(f, f->code, "vm %s: removing the test copy %s: %s", f->vm, f->clone, f->err);
		return;
	}
	switch (f->step) {
	case 0:
		if (c && vmm_vm_running(c) && !c->job) {
			f->busy = true;
			ask_stop(f, f->clone);
			break;
		}
		if (c && c->job)
			break;
		fo_next(f);
		break;
	case 1:
		if (c && !c->job && !vmm_vm_running(c)) {
			fo_wait(f);
			ask_undefine(f, f->clone);
		} else if (!c) {
			fo_next(f);
		}
		break;
	case 2:
		if (c) {
			if (timed_out(f, STEP_TIMEOUT_MS)) {
				f->code = HCA__ERROR_CODE__ERROR_TIMEOUT;
				snprintf(f->err, sizeof(f->err), "%s not undefined in time", f->clone);
			}
			break;
		}
		fo_wait(f);
		fo_push(f, unclone_fn);
		break;
	case 3:
		fo_end(f, f->rc ? HCA__ERROR_CODE__ERROR_STORAGE : 0, "vm %s: test copy %s %s",
		       f->vm, f->clone, f->rc ? "undefined, but its files were not removed"
					      : "removed");
		return;
	}
	fo_arm(f);
}

/* ---- unplanned failover, on the replica node ---- */

static void unplanned_poll(struct fo *f)
{
	struct vm *v = vmm_vm_find(f->m, f->vm);

	if (f->code) {
		fo_end(f, f->code, "vm %s: unplanned failover%s: %s", f->vm,
		       f->step > 5 ? " (it is owned by this node now)" : "", f->err);
		return;
	}
	switch (f->step) {
	case 0: /* RBD disks: refused while their images are there to start from */
		job_phase(f->op->job, HCA__JOB_PHASE__JOB_PHASE_CHECK);
		if (f->force) {
			fo_next(f);
			break;
		}
		fo_wait(f);
		fo_push(f, rbd_check_fn);
		break;
	case 1:
		if (f->rc < 0) {
			f->code = HCA__ERROR_CODE__ERROR_BAD_STATE;
			break;
		}
		job_phase(f->op->job, HCA__JOB_PHASE__JOB_PHASE_PREPARE);
		fo_wait(f);
		hold(f, true);
		break;
	case 2: /* the daemon stops: the chain is read as it is */
		fo_wait(f);
		if (rep_dst_release(f->m->reps->rx, f->vm, released, f) < 0)
			released(f, -EIO, "cannot release");
		break;
	case 3:
		job_progress(f->op->job, 0, 0, "", "making the volumes from the point");
		fo_wait(f);
		fo_push(f, import_fn);
		break;
	case 4:
		if (f->rc < 0) {
			f->code = HCA__ERROR_CODE__ERROR_STORAGE;
			break;
		}
		job_phase(f->op->job, HCA__JOB_PHASE__JOB_PHASE_COMMIT);
		fo_wait(f);
		fo_push(f, take_fn);
		break;
	case 5:
		if (f->rc < 0) {
			f->code = HCA__ERROR_CODE__ERROR_BUSY;
			break;
		}
		qb_log(LOG_WARNING, "replica: vm %s: the owner record moved here from %s "
		       "(unplanned failover from point %" PRIu64 ")", f->vm, f->rec->owner,
		       f->point);
		vrep_update(f->m->reps, UPD_STATE, f->vm, f->rel->relation, NULL, NULL,
				    HCA__REP_STATE__REP_STATE_FAILED_OVER, NULL, NULL);
		/* the VM's slot goes to the start; its record is read again */
		if (v && v->job == f->op->job)
			vmm_job_done(v);
		vmm_sync_refresh(f->m, f->vm);
		fo_next(f);
		break;
	case 6:
		if (v && v->rec && !strcmp(v->rec->owner, f->m->conf->node_name) && !v->job) {
			job_phase(f->op->job, HCA__JOB_PHASE__JOB_PHASE_LAUNCH);
			fo_wait(f);
			ask_start(f, f->vm, f->m->conf->node_name);
			break;
		}
		if (timed_out(f, 30000)) {
			f->code = HCA__ERROR_CODE__ERROR_TIMEOUT;
			snprintf(f->err, sizeof(f->err), "the owner record did not arrive here");
		}
		break;
	case 7:
		if (v && vmm_vm_running(v) && !v->job) {
			char old[300] = "";
			if (f->n_rbd)
				snprintf(old, sizeof(old), "; its disks are local volumes here now, "
					 "and its old RBD image%s (%s%s) stay%s in the pool: remove "
					 "with rbd rm once not needed", f->n_rbd > 1 ? "s" : "",
					 f->rbd_vols[0], f->n_rbd > 1 ? ", ..." : "",
					 f->n_rbd > 1 ? "" : "s");
			fo_end(f, 0, "vm %s: runs on %s from point %" PRIu64 " (what the primary "
			       "wrote after it is lost)%s; replicate back with hcactl replica reverse "
			       "%s once %s is back", f->vm, f->m->conf->node_name, f->point, old,
			       f->vm, f->rel->source);
			return;
		}
		if (timed_out(f, STEP_TIMEOUT_MS)) {
			f->code = HCA__ERROR_CODE__ERROR_TIMEOUT;
			snprintf(f->err, sizeof(f->err), "it did not start in %u s",
				 STEP_TIMEOUT_MS / 1000);
		}
		break;
	}
	fo_arm(f);
}

static void fo_poll(void *data)
{
	struct fo *f = data;

	f->t = 0;
	if (f->m->stopping) {
		fo_end(f, HCA__ERROR_CODE__ERROR_INTERNAL, "vm %s: hcad stopped during the "
		       "failover", f->vm);
		return;
	}
	if (f->busy) {
		fo_arm(f);
		return;
	}
	switch (f->mode) {
	case FO_TEST: test_poll(f); break;
	case FO_TEST_STOP: test_stop_poll(f); break;
	case FO_PLANNED: planned_poll(f); break;
	case FO_UNPLANNED: unplanned_poll(f); break;
	}
}

/* ---- the request ---- */

static void fo_noop(struct exec_item *it)
{
	(void)it;
}

static void fo_begin(struct exec_item *it)
{
	struct op *op = vmm_op_of(it);
	struct fo *f = op ? op->ext : NULL;

	if (!op)
		return;
	if (op->code) {
		vmm_op_end(op, op->code, "%s", op->err);
		fo_free(f);
		return;
	}
	f->step_ms = mono();
	job_phase(op->job, HCA__JOB_PHASE__JOB_PHASE_CHECK);
	fo_poll(f);
}

static int mode_parse(const char *s, enum fo_mode *m)
{
	static const char *const names[] = { [FO_TEST] = "test", [FO_TEST_STOP] = "test-stop",
					     [FO_PLANNED] = "planned",
					     [FO_UNPLANNED] = "unplanned" };

	for (int i = 0; i <= FO_UNPLANNED; i++)
		if (!strcmp(s, names[i])) {
			*m = (enum fo_mode)i;
			return 0;
		}
	return -EINVAL;
}

void vmm_replica_failover(struct vmm *m, const Hca__ReplicaFailover *q, const char *via,
			  vmm_reply_fn fn, void *ctx)
{
	struct vmm_rep *x = m->reps;
	const char *me = m->conf->node_name, *runs_on;
	const struct memb_node *src;
	enum fo_mode mode;
	struct rrel *r;
	struct vm *v;
	struct fo *f;
	struct op *op;

	if (!x) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "replication needs the "
				"node channel, which is off");
		return;
	}
	if (mode_parse(q->mode, &mode) < 0) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "failover: mode '%s' is "
				"not test, test-stop, planned or unplanned", q->mode);
		return;
	}
	if (!(r = vrep_find(x, q->name)) || !r->rec) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_NOT_FOUND, "vm %s: not replicated "
				"(or enabled in the last few seconds: try again)", q->name);
		return;
	}
	/* where it runs: the VM's node for planned, the replica node else */
	runs_on = mode == FO_PLANNED ? r->rec->source : r->rec->target;
	if (strcmp(runs_on, me)) {
		Hca__ApiRequest fw = HCA__API_REQUEST__INIT;
		if (via[0]) {
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BUSY, "vm %s: its relation "
					"changed meanwhile; retry", q->name);
			return;
		}
		fw.op_case = HCA__API_REQUEST__OP_REPLICA_FAILOVER;
		fw.replica_failover = (Hca__ReplicaFailover *)q;
		vmm_forward(m, runs_on, &fw, fn, ctx);
		return;
	}
	if (mode == FO_PLANNED && r->rec->state == HCA__REP_STATE__REP_STATE_FAILED_OVER) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: already failed "
				"over; replicate back first (hcactl replica reverse %s)", q->name,
				q->name);
		return;
	}
	src = memb_find(memb_view(m->memb), r->rec->source);
	if (mode == FO_UNPLANNED && src && src->online) {
		if (!q->force) {
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: its node "
					"%s is a live member of the cluster: the VM may run there, "
					"and two copies must never run; use --planned, or --force if "
					"you know %s is dead", q->name, r->rec->source,
					r->rec->source);
			return;
		}
		qb_log(LOG_CRIT, "replica: vm %s: UNPLANNED FAILOVER FORCED while %s is a live "
		       "member: if the VM still runs there, two copies now write", q->name,
		       r->rec->source);
	}
	if (!(v = vmm_vm_for_op(m, q->name, "fail over", fn, ctx)))
		return;
	if (!(f = calloc(1, sizeof(*f))) || !(f->rel = sto_rep_copy(r->rec))) {
		free(f);
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		return;
	}
	f->m = m;
	f->mode = mode;
	f->point = q->point;
	f->force = q->force;
	snprintf(f->vm, sizeof(f->vm), "%s", q->name);
	snprintf(f->clone, sizeof(f->clone), "%s-test", q->name);
	if (mode <= FO_TEST_STOP && strlen(f->clone) > HV_NAME_MAX) {
		fo_free(f);
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "vm %s: its name is too "
				"long for a test copy named NAME-test", q->name);
		return;
	}
	if (mode == FO_TEST || mode == FO_UNPLANNED) {
		/* the point, from this node's own list: the newest unless asked */
		struct rep_store_point pts[REP_STORE_POINTS_MAX];
		int n = rep_dst_points(x->rx, q->name, pts, REP_STORE_POINTS_MAX);
		bool found = false;
		for (int i = 0; i < n && !found; i++)
			found = pts[i].id == q->point;
		if (n <= 0 || (q->point && !found)) {
			fo_free(f);
			if (n <= 0)
				vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_NOT_FOUND, "vm %s: no "
						"recovery point on %s yet", q->name, me);
			else
				vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_NOT_FOUND, "vm %s: no "
						"point %" PRIu64 " on %s (it keeps %" PRIu64 " to %"
						PRIu64 ": hcactl replica points %s)", q->name,
						q->point, me, pts[0].id, pts[n - 1].id, q->name);
			return;
		}
		f->point = q->point ? q->point : pts[n - 1].id;
	}
	if ((mode == FO_UNPLANNED || mode == FO_TEST) && !(f->rec = sto_vm_copy(v->rec))) {
		fo_free(f);
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		return;
	}
	/* test copies are other VMs: the VM's own slot stays free for its
	 * cycles; the others hold it */
	if (!(op = vmm_op_new(m, v, HCA__JOB_KIND__JOB_KIND_FAILOVER, via, fn, ctx))) {
		fo_free(f);
		return;
	}
	f->op = op;
	op->ext = f;
	if (mode == FO_PLANNED)
		r->failing = true;
	vmm_op_push(op, fo_noop, fo_begin);
}

/* ---- reverse: the VM's node now replicates back to the old one ---- */

static void dropped_old(void *opaque, int err, const char *msg)
{
	char *vm = opaque;

	if (err)
		qb_log(LOG_WARNING, "replica: vm %s: the replica this node kept was not removed: "
		       "%s", vm, msg ? msg : strerror(-err));
	free(vm);
}

/* The reversed relation, written once the old node has seeded its replica
 * (or failed to: then its first cycle copies the disks). */
struct rev {
	struct vmm_rep *x;
	char vm[HV_NAME_MAX + 1];
	Hca__RepRelation *want;
	vmm_reply_fn fn;
	void *ctx;
};

static void rev_seeded(int err, const void *body, size_t len, const char *msg, void *opaque)
{
	struct rev *rv = opaque;

	(void)body;
	(void)len;
	if (err) {
		qb_log(LOG_WARNING, "replica: vm %s: %s cannot start from its old copy (%s): the "
		       "first cycle back copies the disks", rv->vm, rv->want->target,
		       msg ? msg : strerror(-err));
	} else {
		rv->want->last_point = SEED_POINT;
		rv->want->last_point_ms = vrep_wall_ms();
	}
	vrep_update(rv->x, UPD_REPLACE, rv->vm, 0, rv->want, NULL, 0, rv->fn, rv->ctx);
	hca__rep_relation__free_unpacked(rv->want, NULL);
	free(rv);
}

static void rev_seed(struct vmm_rep *x, const char *vm, const Hca__RepRelation *want,
		     vmm_reply_fn fn, void *ctx)
{
	Hca__RepPointsRequest q = HCA__REP_POINTS_REQUEST__INIT;
	struct rev *rv = calloc(1, sizeof(*rv));
	uint8_t buf[512];
	size_t n;

	if (!rv || !(rv->want = sto_rep_copy(want))) {
		free(rv);
		vrep_update(x, UPD_REPLACE, vm, 0, want, NULL, 0, fn, ctx);
		return;
	}
	rv->x = x;
	snprintf(rv->vm, sizeof(rv->vm), "%s", vm);
	rv->fn = fn;
	rv->ctx = ctx;
	q.vm = (char *)vm;
	q.relation = want->relation;
	q.point = SEED_POINT;
	n = hca__rep_points_request__get_packed_size(&q);
	if (n > sizeof(buf) ||
	    x->env.call(x->env.ctx, want->target, M_SEED, buf,
			hca__rep_points_request__pack(&q, buf), SEED_TIMEOUT_MS, rev_seeded,
			rv) < 0)
		rev_seeded(-EIO, NULL, 0, "the call could not be sent", rv);
}

void vmm_replica_reverse(struct vmm *m, const char *name, vmm_reply_fn fn, void *ctx)
{
	struct vmm_rep *x = m->reps;
	const struct memb_node *old;
	Hca__RepRelation want;
	struct rrel *r;
	struct vm *v;
	uint64_t rel = 0;
	char *vm;

	if (!x) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "replication needs the "
				"node channel, which is off");
		return;
	}
	if (!(v = vmm_vm_for_op(m, name, "reverse", fn, ctx)) || !vmm_check_owned(m, v, fn, ctx))
		return;
	if (!(r = vrep_find(x, name)) || !r->rec) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_NOT_FOUND, "vm %s: not replicated",
				name);
		return;
	}
	if (r->rec->state != HCA__REP_STATE__REP_STATE_FAILED_OVER ||
	    strcmp(r->rec->target, m->conf->node_name)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: replicates %s -> "
				"%s (%s): only a relation that failed over to this node reverses",
				name, r->rec->source, r->rec->target,
				r->rec->state == HCA__REP_STATE__REP_STATE_FAILED_OVER ? "failed over"
											: "not failed over");
		return;
	}
	old = memb_find(memb_view(m->memb), r->rec->source);
	if (!old || !old->online) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: its old node %s "
				"is not a member now; reverse once it is back", name,
				r->rec->source);
		return;
	}
	while (!rel && getrandom(&rel, sizeof(rel), 0) != sizeof(rel))
		;
	want = *r->rec; /* shallow: strings borrowed for the copy vrep_update takes */
	want.relation = rel;
	want.source = (char *)m->conf->node_name;
	want.target = r->rec->source;
	/* back into the old primary's own storage, where its disks are: the
	 * seed compares with them (a pool store is never seeded) */
	want.target_pool = "";
	want.state = HCA__REP_STATE__REP_STATE_ENABLED;
	want.created_ms = vrep_wall_ms();
	want.updated_ms = want.created_ms;
	want.incarnation = v->rec->incarnation;
	want.last_point = want.last_point_ms = 0;
	want.cycles = want.failed_cycles = want.full_copies = 0;
	want.bytes_raw = want.bytes_zero = want.bytes_wire = want.last_cycle_ms = 0;
	want.last_error = "";
	/* this node's copy of the old replica is history now */
	if ((vm = strdup(name)) && rep_dst_drop(x->rx, vm, dropped_old, vm) < 0)
		free(vm);
	qb_log(LOG_NOTICE, "replica: vm %s: reversed: %s -> %s", name, m->conf->node_name,
	       want.target);
	rev_seed(x, name, &want, fn, ctx);
}
