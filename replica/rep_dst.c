/*
 * rep_dst.c: the replica node's service (rep_dst.h). The loop thread owns
 * every structure here; the stores' blocking calls run on the executor
 * queue, control operations keyed "rep/VM" (in order, one at a time), a
 * cycle's frames keyed "rep/VM/dN" (in order per disk, disks in parallel).
 *
 * A VM's cycle, as its states go:
 *
 *   open()  -> BEGIN on the queue (open the store if needed, begin); frames
 *              that come meanwhile wait in order on the cycle
 *   BEGIN done -> the waiting frames go to the queue
 *   end()   -> COMMIT on the queue -> rep_rx_ack()
 *   fail()  -> once no frame of the cycle is on the queue: ABORT
 *
 * A cycle is forgotten once nothing of it is on the queue and it was
 * answered or failed; until then the VM takes no other cycle (-EBUSY), and
 * a drop or release waits for it.
 */
#include "replica/rep_dst.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

#include "hypervisor/hv.h"
#include "proto/chan.h"
#include "proto/hca.pb-c.h"
#include "replica/rep_digest.h"

#define MSG_MAX 256u

struct rep_dst;
struct vmrep;

enum op_kind {
	OP_BEGIN,
	OP_COMMIT,
	OP_ABORT,
	OP_DROP,    /* stop the daemon, remove the directory */
	OP_RELEASE, /* stop the daemon, keep the files */
	OP_HOLD,
	OP_DIGESTS, /* a resync's source asks for the newest point's digests */
	OP_SEED,    /* a new store from local images (a reversed relation) */
};

/* A control operation on a VM's store, keyed "rep/VM". */
struct op {
	struct exec_item item;
	struct vmrep *v;
	enum op_kind kind;
	struct cyc *c;		/* BEGIN, COMMIT, ABORT */
	struct rep_end end;	/* COMMIT */
	uint64_t point;		/* HOLD */
	uint64_t newest;	/* the store's newest point after the operation */
	unsigned keep;		/* BEGIN */
	char pool[REP_POOL_MAX + 1]; /* BEGIN: where the relation keeps it */
	bool on;
	void (*done)(void *opaque, int err, const char *msg); /* DROP, RELEASE */
	rep_dst_hold_fn hold_done;
	void *opaque;
	int rc;
	unsigned ndisks;
	char (*paths)[PATH_MAX]; /* HOLD: the point's files */
	struct chan_reply *reply; /* DIGESTS */
	Hca__RepDigestsRequest *dq;
	struct rep_store_digests dg;
	struct rep_seed_src *src;  /* SEED */
	struct rep_disk disks[REP_DISKS_MAX];
	unsigned nsrc;
	char msg[MSG_MAX];
};

/* A frame on its way to the store. */
struct fitem {
	struct exec_item item;
	struct fitem *next; /* waiting for BEGIN */
	struct cyc *c;
	struct rep_rx_frame *fr;
	const struct rep_frame *f;
	int rc;
};

/* The cycle in progress of a VM. */
struct cyc {
	struct vmrep *v;
	struct rep_rx *rx;	/* NULL once answered or failed and drained */
	struct rep_cycle c;
	bool ready;		/* BEGIN succeeded: frames go to the queue */
	bool begun;		/* BEGIN ran, with success or not */
	int begin_rc;
	char begin_msg[MSG_MAX + 128]; /* why it did not begin */
	bool failed, ended, aborting;
	struct rep_end end;	/* ended: its totals */
	unsigned ops;		/* control operations queued */
	unsigned inflight;	/* frames queued */
	struct fitem *wait, **wait_tail;
};

/* A VM this node keeps a replica of. */
struct vmrep {
	struct vmrep *next;
	struct rep_dst *d;
	char vm[REP_NAME_MAX + 1];
	char dir[PATH_MAX];
	struct rep_store *s;	/* used on the queue only */
	uint64_t newest;	/* the loop's copy, valid once known */
	bool newest_known;
	struct cyc *cur;
	struct op *pending;	/* a drop or release waiting for the cycle */
	unsigned ops;		/* any operation queued */
	bool gone;		/* dropped: forget once idle */
};

struct rep_dst {
	const struct hca_env *env;
	struct exec_queue *q;
	struct rep_dst_host h;
	char dir[PATH_MAX];
	char qsd[PATH_MAX], qemu_img[PATH_MAX];
	char ceph_conf[PATH_MAX], ceph_client[64];
	struct rep_recv *recv;
	struct vmrep *vms;
	bool stopping;
	bool freeing; /* inside rep_dst_free() */
};

/* ---- VMs ---- */

static struct vmrep *vm_find(struct rep_dst *d, const char *vm)
{
	for (struct vmrep *v = d->vms; v; v = v->next)
		if (!strcmp(v->vm, vm))
			return v;
	return NULL;
}

static struct vmrep *vm_get(struct rep_dst *d, const char *vm)
{
	struct vmrep *v = vm_find(d, vm);
	int n;

	if (v)
		return v;
	if (!hv_name_valid(vm) || strlen(vm) > REP_NAME_MAX || !(v = calloc(1, sizeof(*v))))
		return NULL;
	n = snprintf(v->dir, sizeof(v->dir), "%s/%s", d->dir, vm);
	if (n < 0 || (size_t)n >= sizeof(v->dir)) {
		free(v);
		return NULL;
	}
	snprintf(v->vm, sizeof(v->vm), "%s", vm);
	v->d = d;
	v->next = d->vms;
	d->vms = v;
	return v;
}

/* Forget @v if nothing of it is left: (dropped, or hcad stops) and idle. */
static void vm_maybe_free(struct vmrep *v)
{
	struct rep_dst *d = v->d;
	struct vmrep **pp;

	if (v->ops || v->cur || v->pending || !(v->gone || d->stopping))
		return;
	for (pp = &d->vms; *pp != v; pp = &(*pp)->next)
		;
	*pp = v->next;
	rep_store_close(v->s, false); /* the daemon lives on for the next hcad */
	free(v);
	if (d->stopping && !d->vms && !d->freeing)
		free(d);
}

/* ---- operations ---- */

static void op_fn(struct exec_item *it);
static void op_done(struct exec_item *it);

static void op_push(struct op *o)
{
	char key[EXEC_KEY_MAX];

	o->v->ops++;
	if (o->c)
		o->c->ops++;
	snprintf(key, sizeof(key), "rep/%s", o->v->vm);
	exec_item_init(&o->item, op_fn, op_done);
	exec_push(o->v->d->q, &o->item, key);
}

static struct op *op_new(struct vmrep *v, enum op_kind kind, struct cyc *c)
{
	struct op *o = calloc(1, sizeof(*o));

	if (o) {
		o->v = v;
		o->kind = kind;
		o->c = c;
	}
	return o;
}

/* Worker: open the store if it is not, with the cycle's disks (or, @c
 * NULL, those of its index). */
static int store_ready(struct op *o, const struct rep_cycle *c)
{
	struct vmrep *v = o->v;
	struct rep_dst *d = v->d;
	struct rep_store_cfg cfg = { .dir = v->dir, .vm = v->vm, .qsd = d->qsd,
				     .qemu_img = d->qemu_img, .pool = c ? o->pool : NULL,
				     .ceph_conf = d->ceph_conf[0] ? d->ceph_conf : NULL,
				     .ceph_client = d->ceph_client[0] ? d->ceph_client : NULL,
				     .node = d->env->node };
	struct rep_disk have[REP_DISKS_MAX];
	unsigned n;

	if (v->s && c) { /* the VM's disks or pool changed: open again, which says so */
		n = rep_store_disks(v->s, have, REP_DISKS_MAX);
		if (n != c->ndisks || memcmp(have, c->disks, sizeof(have[0]) * n) ||
		    strcmp(rep_store_pool(v->s), o->pool)) {
			rep_store_close(v->s, false);
			v->s = NULL;
		}
	}
	if (v->s)
		return 0;
	if (c) {
		cfg.ndisks = c->ndisks;
		memcpy(cfg.disks, c->disks, sizeof(c->disks[0]) * c->ndisks);
	}
	cfg.keep = d->h.keep_default ? d->h.keep_default : 1;
	return rep_store_open(&cfg, &v->s, o->msg, sizeof(o->msg));
}

static void op_fn(struct exec_item *it)
{
	struct op *o = EXEC_CONTAINER_OF(it, struct op, item);
	struct vmrep *v = o->v;
	struct cyc *c = o->c;

	switch (o->kind) {
	case OP_BEGIN:
		o->rc = store_ready(o, &c->c);
		if (!o->rc)
			rep_store_set_keep(v->s, o->keep);
		if (!o->rc)
			o->rc = rep_store_begin(v->s, c->c.cycle, c->c.base, c->c.full,
						c->c.resync, o->msg, sizeof(o->msg));
		break;
	case OP_COMMIT:
		o->rc = rep_store_commit(v->s, c->c.cycle, c->c.cut_ms, c->c.app_consistent,
					 o->end.raw_bytes, o->msg,
					 sizeof(o->msg));
		if (o->rc < 0)
			rep_store_abort(v->s, NULL, 0);
		break;
	case OP_ABORT:
		o->rc = v->s ? rep_store_abort(v->s, o->msg, sizeof(o->msg)) : 0;
		break;
	case OP_DROP:
		rep_store_close(v->s, true);
		v->s = NULL;
		o->rc = rep_store_destroy(v->dir, o->msg, sizeof(o->msg));
		break;
	case OP_RELEASE:
		rep_store_close(v->s, true);
		v->s = NULL;
		o->rc = 0;
		break;
	case OP_SEED: {
		struct rep_dst *d = v->d;
		struct rep_store_cfg cfg = { .dir = v->dir, .vm = v->vm, .qsd = d->qsd,
					     .qemu_img = d->qemu_img, .ndisks = o->nsrc,
					     .keep = d->h.keep_default ? d->h.keep_default : 1 };
		memcpy(cfg.disks, o->disks, sizeof(o->disks[0]) * o->nsrc);
		rep_store_close(v->s, true);
		v->s = NULL;
		o->rc = rep_store_seed(&cfg, o->point, o->src, &v->s, o->msg, sizeof(o->msg));
		break;
	}
	case OP_DIGESTS:
		o->rc = store_ready(o, NULL);
		if (o->rc == -ENOENT) { /* no store: no point to compare with */
			o->rc = 0;
			break;
		}
		if (!o->rc)
			o->rc = rep_store_digests(v->s, o->dq->disk, o->dq->offset,
						  o->dq->granularity, o->dq->max_blocks, &o->dg,
						  o->msg, sizeof(o->msg));
		break;
	case OP_HOLD:
		if (!(o->rc = store_ready(o, NULL)) &&
		    (o->rc = rep_store_hold(v->s, o->point, o->on)) == -ENOENT)
			snprintf(o->msg, sizeof(o->msg), "vm %s has no point %" PRIu64, v->vm,
				 o->point);
		if (!o->rc && o->on) {
			struct rep_disk disks[REP_DISKS_MAX];
			o->ndisks = rep_store_disks(v->s, disks, REP_DISKS_MAX);
			o->paths = calloc(o->ndisks, PATH_MAX);
			if (!o->paths)
				o->rc = -ENOMEM;
			else
				rep_store_point_files(v->s, o->point, o->paths, o->ndisks);
		}
		break;
	}
	if (v->s && o->kind != OP_DROP && o->kind != OP_RELEASE)
		o->newest = rep_store_newest(v->s); /* for the loop's copy */
}

static void cyc_maybe_end(struct cyc *c);
static void frames_go(struct cyc *c);
static void abort_maybe(struct cyc *c);
static void end_go(struct cyc *c);

static void begin_done(struct op *o)
{
	struct cyc *c = o->c;

	c->begun = true;
	c->begin_rc = o->rc;
	/* the sender names the VM and this node */
	snprintf(c->begin_msg, sizeof(c->begin_msg), "cycle %" PRIu64 " could not begin here: "
		 "%.*s", c->c.cycle, (int)MSG_MAX, o->msg[0] ? o->msg : strerror(-o->rc));
	if (o->rc < 0)
		qb_log(LOG_WARNING, "replica: vm %s: cycle %" PRIu64 " not begun: %s", c->c.vm,
		       c->c.cycle, o->msg);
	c->ready = !o->rc;
	if (c->failed)
		abort_maybe(c);
	else
		frames_go(c);
	if (c->ended && c->rx)
		end_go(c);
}

static void commit_done(struct op *o)
{
	struct cyc *c = o->c;
	struct rep_rx *rx = c->rx;

	c->rx = NULL; /* answered: the receiver forgets it */
	if (o->rc < 0)
		rep_rx_ack(rx, o->rc, "vm %s: cycle %" PRIu64 " not stored: %s", c->c.vm,
			   c->c.cycle, o->msg[0] ? o->msg : strerror(-o->rc));
	else
		rep_rx_ack(rx, 0, "vm %s: point %" PRIu64 " made", c->c.vm, c->c.cycle);
}

static void digests_done(struct op *o);

static void op_done(struct exec_item *it)
{
	struct op *o = EXEC_CONTAINER_OF(it, struct op, item);
	struct vmrep *v = o->v;

	if (exec_item_cancelled(it)) {
		o->rc = -ECANCELED;
		snprintf(o->msg, sizeof(o->msg), "hcad is stopping");
	} else if (o->kind != OP_DROP && o->kind != OP_RELEASE && v->s) {
		v->newest = o->newest;
		v->newest_known = true;
	} else {
		v->newest_known = false;
	}
	v->ops--;
	if (o->c)
		o->c->ops--;
	switch (o->kind) {
	case OP_BEGIN:
		begin_done(o);
		break;
	case OP_COMMIT:
		commit_done(o);
		break;
	case OP_ABORT:
		if (o->rc < 0)
			qb_log(LOG_ERR, "replica: vm %s: cycle %" PRIu64 " not dropped: %s",
			       v->vm, o->c->c.cycle, o->msg);
		break;
	case OP_DROP:
		v->gone = !o->rc;
		/* fall through */
	case OP_RELEASE:
	case OP_SEED:
		if (o->done)
			o->done(o->opaque, o->rc, o->rc ? o->msg : NULL);
		free(o->src);
		break;
	case OP_DIGESTS:
		digests_done(o);
		break;
	case OP_HOLD:
		if (o->hold_done)
			o->hold_done(o->opaque, o->rc, o->rc ? o->msg : NULL, o->ndisks, o->paths);
		free(o->paths);
		break;
	}
	if (o->c)
		cyc_maybe_end(o->c);
	free(o);
	vm_maybe_free(v);
}

/* ---- frames ---- */

static void frame_fn(struct exec_item *it)
{
	struct fitem *fi = EXEC_CONTAINER_OF(it, struct fitem, item);
	const struct rep_frame *f = fi->f;
	struct rep_store *s = fi->c->v->s;

	if (f->kind == REP_KIND_EXTENT)
		fi->rc = rep_store_write(s, f->disk, f->offset, f->data, f->length);
	else if (f->kind == REP_KIND_ZERO)
		fi->rc = rep_store_zero(s, f->disk, f->offset, f->length);
	else
		fi->rc = -EPROTO;
}

static void frame_done(struct exec_item *it)
{
	struct fitem *fi = EXEC_CONTAINER_OF(it, struct fitem, item);
	struct cyc *c = fi->c;
	struct vmrep *v = c->v;

	if (exec_item_cancelled(it))
		fi->rc = -ECANCELED;
	c->inflight--;
	c->v->ops--;
	c->ops++; /* keeps @c should fail() come from inside */
	rep_rx_frame_done(fi->fr, fi->rc);
	c->ops--;
	free(fi);
	abort_maybe(c);
	cyc_maybe_end(c);
	vm_maybe_free(v);
}

static void frame_push(struct fitem *fi)
{
	struct cyc *c = fi->c;
	char key[EXEC_KEY_MAX];

	snprintf(key, sizeof(key), "rep/%s/d%u", c->v->vm, (unsigned)fi->f->disk);
	c->inflight++;
	c->v->ops++;
	exec_item_init(&fi->item, frame_fn, frame_done);
	exec_push(c->v->d->q, &fi->item, key);
}

/* BEGIN is done, or the cycle failed: the waiting frames go to the store,
 * or are given back (the receiver must have each of them done). */
static void frames_go(struct cyc *c)
{
	struct fitem *fi;

	c->ops++; /* keeps @c should fail() come from inside */
	while ((fi = c->wait)) {
		c->wait = fi->next;
		if (!c->wait)
			c->wait_tail = &c->wait;
		if (c->ready && !c->failed) {
			frame_push(fi);
			continue;
		}
		if (c->failed)
			rep_rx_frame_done(fi->fr, 0);
		else
			rep_rx_frame_fail(fi->fr, c->begin_rc, "%s", c->begin_msg);
		free(fi);
	}
	c->ops--;
}

/* A failed cycle whose frames are all back: drop what it wrote. */
static void abort_maybe(struct cyc *c)
{
	struct op *o;

	if (!c->failed || c->aborting || c->inflight || c->ended || !c->begun)
		return;
	c->aborting = true;
	if (!c->ready)
		return; /* nothing begun, nothing to drop */
	if (!(o = op_new(c->v, OP_ABORT, c))) {
		qb_log(LOG_ERR, "replica: vm %s: out of memory to drop cycle %" PRIu64
		       " (the next open drops it)", c->c.vm, c->c.cycle);
		return;
	}
	op_push(o);
}

/* Forget the cycle once nothing of it is left; a drop that waited goes. */
static void cyc_maybe_end(struct cyc *c)
{
	struct vmrep *v = c->v;

	if (c->ops || c->inflight || c->wait || !c->begun || (!c->failed && !c->ended) ||
	    (c->failed && !c->ended && !c->aborting) || (c->ended && c->rx))
		return;
	v->cur = NULL;
	free(c);
	if (v->pending) {
		op_push(v->pending);
		v->pending = NULL;
	}
}

/* ---- the sink ---- */

/* The newest point of @v, from the loop's copy or the index file. */
static uint64_t newest_of(struct vmrep *v)
{
	struct rep_store_point *all;
	int n;

	if (v->newest_known)
		return v->newest;
	if (!(all = calloc(REP_STORE_POINTS_MAX, sizeof(*all))))
		return 0;
	n = rep_store_read_points(v->dir, all, REP_STORE_POINTS_MAX);
	v->newest = n > 0 ? all[n - 1].id : 0;
	v->newest_known = n >= 0;
	free(all);
	return v->newest;
}

static int sink_open(struct rep_rx *rx, const struct rep_cycle *cy, void *opaque, void **out,
		     struct rep_err *e)
{
	struct rep_dst *d = opaque;
	struct vmrep *v;
	struct cyc *c;
	struct op *o;
	uint64_t newest;
	const char *pool;
	int rc;

	if (d->stopping)
		return snprintf(e->msg, sizeof(e->msg), "hcad is stopping"), -ESHUTDOWN;
	if (d->h.check && (rc = d->h.check(d->h.ctx, cy, rep_rx_peer(rx), e->msg,
					   sizeof(e->msg))) < 0)
		return rc;
	if (!(v = vm_get(d, cy->vm)))
		return snprintf(e->msg, sizeof(e->msg), "vm %s: out of memory", cy->vm), -ENOMEM;
	if (v->cur || v->pending) {
		snprintf(e->msg, sizeof(e->msg), "vm %s: %s", cy->vm,
			 v->cur ? "the previous cycle is not over here" : "its replica is going away");
		return -EBUSY;
	}
	newest = newest_of(v);
	/* as rep_store_begin(): a later point of the same history will do,
	 * but a resync compared the disks with exactly its base */
	if (!cy->full && (!cy->base || cy->base > newest || (cy->resync && cy->base != newest))) {
		snprintf(e->msg, sizeof(e->msg),
			 "vm %s: cycle %" PRIu64 " applies on point %" PRIu64
			 " but the newest point here is %" PRIu64 ": %s",
			 cy->vm, cy->cycle, cy->base, newest,
			 cy->resync ? "the disks must be compared again" : "a full copy is needed");
		return -ESTALE;
	}
	if (!(c = calloc(1, sizeof(*c))) || !(o = op_new(v, OP_BEGIN, c))) {
		free(c);
		return snprintf(e->msg, sizeof(e->msg), "vm %s: out of memory", cy->vm), -ENOMEM;
	}
	c->v = v;
	c->rx = rx;
	c->c = *cy;
	c->wait_tail = &c->wait;
	v->cur = c;
	o->keep = d->h.keep ? d->h.keep(d->h.ctx, v->vm) : 0;
	o->keep = o->keep ? o->keep : d->h.keep_default;
	pool = d->h.pool ? d->h.pool(d->h.ctx, v->vm) : NULL;
	snprintf(o->pool, sizeof(o->pool), "%s", pool ? pool : "");
	op_push(o);
	*out = c;
	return 0;
}

static void sink_frame(struct rep_rx *rx, struct rep_rx_frame *fr, const struct rep_frame *f,
		       void *cycle)
{
	struct cyc *c = cycle;
	struct fitem *fi;

	(void)rx;
	if (c->failed) {
		rep_rx_frame_done(fr, 0);
		return;
	}
	if (c->v->pending) { /* dropped or released meanwhile */
		rep_rx_frame_done(fr, -ESHUTDOWN);
		return;
	}
	if (c->begun && !c->ready) {
		rep_rx_frame_fail(fr, c->begin_rc, "%s", c->begin_msg);
		return;
	}
	if (!(fi = calloc(1, sizeof(*fi)))) {
		rep_rx_frame_done(fr, -ENOMEM);
		return;
	}
	fi->c = c;
	fi->fr = fr;
	fi->f = f;
	if (c->ready) {
		frame_push(fi);
		return;
	}
	*c->wait_tail = fi; /* BEGIN still runs: wait, in order */
	c->wait_tail = &fi->next;
}

/* The cycle's end is in and BEGIN is done: commit, or say why not. */
static void end_go(struct cyc *c)
{
	struct rep_rx *rx = c->rx;
	struct op *o;

	if (c->ready && (o = op_new(c->v, OP_COMMIT, c))) {
		o->end = c->end;
		op_push(o);
		return;
	}
	c->rx = NULL;
	if (c->ready) {
		rep_rx_ack(rx, -ENOMEM, "vm %s: out of memory", c->c.vm);
		c->ended = false; /* drop what it wrote instead */
		c->failed = true;
		abort_maybe(c);
	} else {
		rep_rx_ack(rx, c->begin_rc, "%s", c->begin_msg);
	}
	cyc_maybe_end(c);
}

static void sink_end(struct rep_rx *rx, const struct rep_end *e, void *cycle)
{
	struct cyc *c = cycle;

	(void)rx;
	c->ended = true;
	c->end = *e;
	if (c->begun) /* else begin_done() goes on (a cycle without frames) */
		end_go(c);
}

static void sink_fail(struct rep_rx *rx, int err, const char *msg, void *cycle)
{
	struct cyc *c = cycle;

	(void)rx;
	(void)err;
	(void)msg; /* the receiver logged it */
	if (c->failed)
		return;
	c->failed = true;
	if (!c->ended)
		c->rx = NULL;
	frames_go(c);
	abort_maybe(c);
	cyc_maybe_end(c);
}

static const struct rep_sink_ops sink_ops = {
	.open = sink_open,
	.frame = sink_frame,
	.end = sink_end,
	.fail = sink_fail,
};

/* ---- rep.points ---- */

int rep_dst_points(struct rep_dst *d, const char *vm, struct rep_store_point *out,
		   unsigned max)
{
	char dir[PATH_MAX];
	int n;

	if (!hv_name_valid(vm))
		return -EINVAL;
	n = snprintf(dir, sizeof(dir), "%s/%s", d->dir, vm);
	if (n < 0 || (size_t)n >= sizeof(dir))
		return -ENAMETOOLONG;
	return rep_store_read_points(dir, out, max);
}

static void on_points(struct chan_reply *r, const void *body, size_t len, void *opaque)
{
	struct rep_dst *d = opaque;
	Hca__RepPointsRequest *q = hca__rep_points_request__unpack(NULL, len, body);
	struct rep_store_point *pts = calloc(REP_STORE_POINTS_MAX, sizeof(*pts));
	Hca__RepPoint *rp = calloc(REP_STORE_POINTS_MAX, sizeof(*rp));
	Hca__RepPoint **pp = calloc(REP_STORE_POINTS_MAX, sizeof(*pp));
	Hca__RepPointList l = HCA__REP_POINT_LIST__INIT;
	uint8_t *buf = NULL;
	int n;

	if (!q || !hv_name_valid(q->vm)) {
		chan_reply_error(r, -EPROTO, "%s: malformed request", REP_M_POINTS);
		goto out;
	}
	if (!pts || !rp || !pp) {
		chan_reply_error(r, -ENOMEM, "out of memory");
		goto out;
	}
	if ((n = rep_dst_points(d, q->vm, pts, REP_STORE_POINTS_MAX)) < 0) {
		chan_reply_error(r, n, "vm %s: cannot read its points: %s", q->vm, strerror(-n));
		goto out;
	}
	l.vm = q->vm;
	l.node = (char *)d->env->node;
	l.n_points = (size_t)(n < (int)REP_STORE_POINTS_MAX ? n : (int)REP_STORE_POINTS_MAX);
	for (size_t i = 0; i < l.n_points; i++) {
		hca__rep_point__init(&rp[i]);
		rp[i].id = pts[i].id;
		rp[i].time_ms = pts[i].time_ms;
		rp[i].app_consistent = pts[i].app_consistent;
		rp[i].bytes = pts[i].bytes;
		rp[i].held = pts[i].held;
		pp[i] = &rp[i];
	}
	l.points = pp;
	if (!(buf = malloc(hca__rep_point_list__get_packed_size(&l) + 1))) {
		chan_reply_error(r, -ENOMEM, "out of memory");
		goto out;
	}
	chan_reply_ok(r, buf, hca__rep_point_list__pack(&l, buf));
out:
	free(buf);
	free(pp);
	free(rp);
	free(pts);
	if (q)
		hca__rep_points_request__free_unpacked(q, NULL);
}

/* ---- rep.digests ---- */

static void on_digests(struct chan_reply *r, const void *body, size_t len, void *opaque)
{
	struct rep_dst *d = opaque;
	Hca__RepDigestsRequest *q = hca__rep_digests_request__unpack(NULL, len, body);
	struct rep_cycle cy = { 0 };
	struct vmrep *v;
	struct op *o;
	char msg[256];
	int rc;

	if (!q || !hv_name_valid(q->vm) || strlen(q->vm) > REP_NAME_MAX ||
	    q->granularity < REP_DIGEST_GRAN_MIN || q->granularity > REP_DIGEST_GRAN_MAX ||
	    (q->granularity & (q->granularity - 1)) || q->offset % q->granularity ||
	    !q->max_blocks || q->max_blocks > REP_DIGEST_REPLY_MAX || q->disk >= REP_DISKS_MAX) {
		chan_reply_error(r, -EPROTO, "%s: malformed request", REP_M_DIGESTS);
		goto fail;
	}
	snprintf(cy.vm, sizeof(cy.vm), "%s", q->vm);
	cy.relation = q->relation;
	if (d->stopping) {
		chan_reply_error(r, -ESHUTDOWN, "hcad is stopping");
		goto fail;
	}
	if (d->h.check && (rc = d->h.check(d->h.ctx, &cy, chan_reply_peer(r), msg,
					   sizeof(msg))) < 0) {
		chan_reply_error(r, rc, "%s", msg);
		goto fail;
	}
	if (!(v = vm_get(d, q->vm)) || !(o = op_new(v, OP_DIGESTS, NULL))) {
		chan_reply_error(r, -ENOMEM, "out of memory");
		goto fail;
	}
	if (v->cur || v->pending) {
		free(o);
		chan_reply_error(r, -EBUSY, "vm %s: %s", q->vm, v->cur ? "a cycle is under way here"
					    : "its replica is going away");
		goto fail;
	}
	o->reply = r;
	o->dq = q;
	op_push(o);
	return;
fail:
	if (q)
		hca__rep_digests_request__free_unpacked(q, NULL);
}

static void digests_done(struct op *o)
{
	Hca__RepDigests m = HCA__REP_DIGESTS__INIT;
	Hca__RepDigestRun *runs = NULL, **rp = NULL;
	uint8_t *buf = NULL;
	size_t n;

	if (o->rc < 0) {
		chan_reply_error(o->reply, o->rc, "vm %s: %s", o->v->vm,
				 o->msg[0] ? o->msg : strerror(-o->rc));
		goto out;
	}
	m.point = o->dg.point;
	m.next = o->dg.next;
	if (o->dg.nruns && (!(runs = calloc(o->dg.nruns, sizeof(*runs))) ||
			    !(rp = calloc(o->dg.nruns, sizeof(*rp))))) {
		chan_reply_error(o->reply, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < o->dg.nruns; i++) {
		hca__rep_digest_run__init(&runs[i]);
		runs[i].offset = o->dg.runs[i].off;
		runs[i].digests.data = o->dg.dg + o->dg.runs[i].first * REP_DIGEST_LEN;
		runs[i].digests.len = o->dg.runs[i].n * REP_DIGEST_LEN;
		rp[i] = &runs[i];
	}
	m.n_runs = o->dg.nruns;
	m.runs = rp;
	n = hca__rep_digests__get_packed_size(&m);
	if (!(buf = malloc(n + 1))) {
		chan_reply_error(o->reply, -ENOMEM, "out of memory");
		goto out;
	}
	chan_reply_ok(o->reply, buf, hca__rep_digests__pack(&m, buf));
out:
	free(buf);
	free(rp);
	free(runs);
	rep_store_digests_free(&o->dg);
	hca__rep_digests_request__free_unpacked(o->dq, NULL);
}

void rep_dst_channel_up(struct rep_dst *d)
{
	static const char *const names[] = { REP_M_POINTS, REP_M_DIGESTS };
	chan_handler_fn fns[] = { on_points, on_digests };

	if (!d)
		return;
	for (size_t i = 0; i < 2; i++) {
		int rc = d->env->handle(d->env->ctx, names[i], fns[i], d);
		if (rc < 0 && rc != -EEXIST && rc != -ENOTCONN)
			qb_log(LOG_ERR, "channel: cannot register %s: %s", names[i],
			       strerror(-rc));
	}
}

/* ---- life ---- */

struct rep_dst *rep_dst_new(const struct hca_env *env, struct rep_ctx *x, struct exec_queue *q,
			    const struct rep_dst_host *h)
{
	struct rep_dst *d;

	if (!env || !x || !q || !h || !h->dir || strlen(h->dir) >= PATH_MAX - REP_NAME_MAX - 2) {
		errno = EINVAL;
		return NULL;
	}
	if (!(d = calloc(1, sizeof(*d))))
		return NULL;
	d->env = env;
	d->q = q;
	d->h = *h;
	snprintf(d->dir, sizeof(d->dir), "%s", h->dir);
	snprintf(d->qsd, sizeof(d->qsd), "%s", h->qsd ? h->qsd : "qemu-storage-daemon");
	snprintf(d->qemu_img, sizeof(d->qemu_img), "%s", h->qemu_img ? h->qemu_img : "qemu-img");
	snprintf(d->ceph_conf, sizeof(d->ceph_conf), "%s", h->ceph_conf ? h->ceph_conf : "");
	snprintf(d->ceph_client, sizeof(d->ceph_client), "%s", h->ceph_client ? h->ceph_client : "");
	d->h.dir = d->dir;
	d->h.qsd = d->qsd;
	d->h.qemu_img = d->qemu_img;
	if (!(d->recv = rep_recv_new(env, x, NULL, &sink_ops, d))) {
		int e = errno;
		free(d);
		errno = e;
		return NULL;
	}
	rep_dst_channel_up(d);
	return d;
}

void rep_dst_free(struct rep_dst *d)
{
	struct vmrep *v, *next;

	if (!d)
		return;
	d->stopping = true;
	d->freeing = true;
	rep_recv_free(d->recv); /* fails the cycles: their sinks' fail() */
	d->recv = NULL;
	for (v = d->vms; v; v = next) {
		next = v->next;
		if (v->pending && !v->cur) { /* cannot happen: pushed when the cycle ended */
			free(v->pending);
			v->pending = NULL;
		}
		vm_maybe_free(v);
	}
	d->freeing = false;
	if (!d->vms)
		free(d); /* else the last operation's done frees it (exec_free runs them) */
}

/* A drop or release: now, or once the cycle in progress is over. */
static int after_cycle(struct rep_dst *d, const char *vm, enum op_kind kind,
		       void (*done)(void *opaque, int err, const char *msg), void *opaque)
{
	struct vmrep *v = vm_get(d, vm);
	struct op *o;

	if (!v)
		return hv_name_valid(vm) ? -ENOMEM : -EINVAL;
	if (v->pending)
		return -EBUSY;
	if (!(o = op_new(v, kind, NULL)))
		return -ENOMEM;
	o->done = done;
	o->opaque = opaque;
	if (v->cur) {
		v->pending = o; /* its frames fail from now on (sink_frame) */
		return 0;
	}
	op_push(o);
	return 0;
}

int rep_dst_drop(struct rep_dst *d, const char *vm,
		 void (*done)(void *opaque, int err, const char *msg), void *opaque)
{
	return after_cycle(d, vm, OP_DROP, done, opaque);
}

int rep_dst_release(struct rep_dst *d, const char *vm,
		    void (*done)(void *opaque, int err, const char *msg), void *opaque)
{
	return after_cycle(d, vm, OP_RELEASE, done, opaque);
}

int rep_dst_hold(struct rep_dst *d, const char *vm, uint64_t point, bool on,
		 rep_dst_hold_fn done, void *opaque)
{
	struct vmrep *v = vm_get(d, vm);
	struct op *o;

	if (!v)
		return hv_name_valid(vm) ? -ENOMEM : -EINVAL;
	if (v->pending)
		return -EBUSY;
	if (!(o = op_new(v, OP_HOLD, NULL)))
		return -ENOMEM;
	o->point = point;
	o->on = on;
	o->hold_done = done;
	o->opaque = opaque;
	op_push(o);
	return 0;
}

int rep_dst_seed(struct rep_dst *d, const char *vm, const struct rep_disk *disks, unsigned n,
		 const struct rep_seed_src *src, uint64_t point,
		 void (*done)(void *opaque, int err, const char *msg), void *opaque)
{
	struct vmrep *v;
	struct op *o;

	if (!n || n > REP_DISKS_MAX || !point)
		return -EINVAL;
	if (!(v = vm_get(d, vm)))
		return hv_name_valid(vm) ? -ENOMEM : -EINVAL;
	if (v->cur || v->pending)
		return -EBUSY;
	if (!(o = op_new(v, OP_SEED, NULL)) || !(o->src = calloc(n, sizeof(*src)))) {
		free(o);
		return -ENOMEM;
	}
	memcpy(o->src, src, n * sizeof(*src));
	memcpy(o->disks, disks, n * sizeof(*disks));
	o->nsrc = n;
	o->point = point;
	o->done = done;
	o->opaque = opaque;
	v->gone = false;
	op_push(o);
	return 0;
}
