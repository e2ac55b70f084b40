/*
 * vmm_rep: the replica service's host. Keeps the node's copy of the
 * replication relations (rep/NAME), runs the cycles of the VMs this node
 * owns (replica/rep_src.h), takes the cycles of the VMs it is the replica
 * of (replica/rep_dst.h), and carries out the `replica` requests.
 *
 * The relation record is written only by the node that owns the VM, each
 * write a CAS on its version. Cycles are not jobs (one every few seconds
 * would bury the job list); their figures go into the record and the log.
 */
#include "agent/vmm_rep_priv.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include <qb/qblog.h>

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t vrep_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *state_name(Hca__RepState s)
{
	switch (s) {
	case HCA__REP_STATE__REP_STATE_ENABLED: return "enabled";
	case HCA__REP_STATE__REP_STATE_PAUSED: return "paused";
	case HCA__REP_STATE__REP_STATE_FAILED_OVER: return "failed-over";
	default: return "none";
	}
}

static uint64_t vrep_iv_ms(const Hca__RepRelation *rec)
{
	return (uint64_t)(rec && rec->interval_s ? rec->interval_s : INTERVAL_DEFAULT_S) * 1000u;
}

/*
 * The relation's health from the newest point's age: warn past twice the
 * interval, critical past six times (before the first point, the age of
 * the relation counts). Paused relations are "warn": nothing ships.
 */
static const char *health(const Hca__RepRelation *r, uint64_t now_ms, char *why, size_t len,
			  uint64_t *rpo_ms)
{
	uint64_t iv = vrep_iv_ms(r);
	uint64_t since = r->last_point_ms ? r->last_point_ms : r->created_ms;
	uint64_t age = now_ms > since ? now_ms - since : 0;

	*rpo_ms = r->last_point_ms ? age : 0;
	if (r->state == HCA__REP_STATE__REP_STATE_PAUSED) {
		snprintf(why, len, "paused: nothing ships (newest point %" PRIu64 " s old)",
			 age / 1000u);
		return "warn";
	}
	if (r->state == HCA__REP_STATE__REP_STATE_FAILED_OVER) {
		snprintf(why, len, "failed over: replication stopped until reversed");
		return "warn";
	}
	if (age > 6 * iv) {
		snprintf(why, len, "%s is %" PRIu64 " s old, over 6x the %" PRIu32 " s interval%s%s",
			 r->last_point_ms ? "the newest point" : "no point yet: the relation",
			 age / 1000u, r->interval_s, r->last_error[0] ? "; last error: " : "",
			 r->last_error);
		return "critical";
	}
	if (age > 2 * iv) {
		snprintf(why, len, "%s is %" PRIu64 " s old, over 2x the %" PRIu32 " s interval%s%s",
			 r->last_point_ms ? "the newest point" : "no point yet: the relation",
			 age / 1000u, r->interval_s, r->last_error[0] ? "; last error: " : "",
			 r->last_error);
		return "warn";
	}
	snprintf(why, len, "%s", r->last_point_ms ? "within 2x the interval" : "first copy");
	return "ok";
}

struct rrel *vrep_find(struct vmm_rep *x, const char *vm)
{
	for (struct rrel *r = x->rels; r; r = r->next)
		if (!strcmp(r->vm, vm))
			return r;
	return NULL;
}

static struct rrel *rel_get(struct vmm_rep *x, const char *vm)
{
	struct rrel *r = vrep_find(x, vm);

	if (r || !(r = calloc(1, sizeof(*r))))
		return r;
	snprintf(r->vm, sizeof(r->vm), "%s", vm);
	r->next = x->rels;
	x->rels = r;
	return r;
}

static void rel_drop(struct vmm_rep *x, struct rrel *r)
{
	for (struct rrel **p = &x->rels; *p; p = &(*p)->next)
		if (*p == r) {
			*p = r->next;
			break;
		}
	if (r->rec)
		hca__rep_relation__free_unpacked(r->rec, NULL);
	free(r);
}

/* Take @rec (owned) at @version into the cache, unless it is older. */
static void rel_apply(struct vmm_rep *x, const char *vm, Hca__RepRelation *rec,
		      uint64_t version)
{
	struct rrel *r = rel_get(x, vm);

	if (!r || (r->rec && r->version >= version && r->rec->relation == rec->relation)) {
		hca__rep_relation__free_unpacked(rec, NULL);
		if (r)
			r->seen = true;
		return;
	}
	if (r->rec)
		hca__rep_relation__free_unpacked(r->rec, NULL);
	r->rec = rec;
	r->version = version;
	r->seen = true;
}

static bool is_source(const struct vmm_rep *x, const struct rrel *r)
{
	return r->rec && !strcmp(r->rec->source, x->m->conf->node_name);
}

/* ---- the relations' listing (every LIST_EVERY_MS, and on demand) ---- */

struct list_op {
	struct exec_item item;
	struct vmm_rep *x;
	char **names;
	size_t n;
	Hca__RepRelation **recs;
	uint64_t *vers;
	int rc;
	char err[256];
	/* an API request waiting for the list: status */
	vmm_reply_fn fn;
	void *ctx;
	char only[HV_NAME_MAX + 1];
};

static void list_fn(struct exec_item *it)
{
	struct list_op *op = EXEC_CONTAINER_OF(it, struct list_op, item);
	char err[256];

	op->rc = sto_rep_list(op->x->m->store, &op->names, &op->n, op->err, sizeof(op->err));
	if (op->rc < 0 || !op->n)
		return;
	op->recs = calloc(op->n, sizeof(*op->recs));
	op->vers = calloc(op->n, sizeof(*op->vers));
	if (!op->recs || !op->vers) {
		op->rc = -ENOMEM;
		return;
	}
	for (size_t i = 0; i < op->n; i++)
		if (sto_rep_get(op->x->m->store, op->names[i], &op->recs[i], &op->vers[i], err,
				sizeof(err)) < 0)
			op->recs[i] = NULL; /* corrupt or gone: logged there */
}

static void reply_status(struct vmm_rep *x, vmm_reply_fn fn, void *ctx, const char *only);

static void gc_dropped(void *opaque, int err, const char *msg)
{
	char *vm = opaque;

	if (err)
		qb_log(LOG_WARNING, "replica: vm %s: the replica of a relation that is gone was "
		       "not removed: %s", vm, msg);
	else
		qb_log(LOG_NOTICE, "replica: vm %s: replica removed (its relation is gone)", vm);
	free(vm);
}

/*
 * Replicas kept here whose relation is gone from the store (disabled while
 * this node was away): removed. Only names the listing did not return at
 * all: a record that could not be read keeps its replica.
 */
static void gc_replicas(struct vmm_rep *x, char **names, size_t n)
{
	DIR *d = opendir(x->dst_dir);
	struct dirent *e;

	while (d && (e = readdir(d))) {
		bool known = false;
		char *vm;
		if (e->d_name[0] == '.' || !hv_name_valid(e->d_name))
			continue;
		for (size_t i = 0; i < n && !known; i++)
			known = !strcmp(names[i], e->d_name);
		if (known || !(vm = strdup(e->d_name)))
			continue;
		if (rep_dst_drop(x->rx, vm, gc_dropped, vm) < 0)
			free(vm);
	}
	if (d)
		closedir(d);
}

static void list_done(struct exec_item *it)
{
	struct list_op *op = EXEC_CONTAINER_OF(it, struct list_op, item);
	struct vmm_rep *x = op->x;
	struct rrel *r, *next;

	if (!op->fn)
		x->listing = false;
	if (op->rc == 0 && !exec_item_cancelled(it)) {
		for (r = x->rels; r; r = r->next)
			r->seen = false;
		for (size_t i = 0; i < op->n; i++)
			if (op->recs && op->recs[i]) {
				rel_apply(x, op->names[i], op->recs[i], op->vers[i]);
				op->recs[i] = NULL;
			} else if ((r = vrep_find(x, op->names[i]))) {
				r->seen = true; /* unreadable now: keep what we had */
			}
		for (r = x->rels; r; r = next) {
			next = r->next;
			if (r->seen)
				continue;
			if (r->cycling) {
				rep_src_cancel(x->tx, r->vm, "replication disabled");
				continue;
			}
			rel_drop(x, r);
		}
		x->listed_ms = mono_ms();
		gc_replicas(x, op->names, op->n);
	} else if (op->rc < 0 && !exec_item_cancelled(it)) {
		qb_log(LOG_WARNING, "replica: relations not read: %s", op->err);
	}
	if (op->fn) {
		if (op->rc < 0)
			vmm_reply_error(op->fn, op->ctx, HCA__ERROR_CODE__ERROR_STORAGE,
					"replication relations: %s", op->err);
		else
			reply_status(x, op->fn, op->ctx, op->only);
	}
	for (size_t i = 0; op->recs && i < op->n; i++)
		if (op->recs[i])
			hca__rep_relation__free_unpacked(op->recs[i], NULL);
	free(op->recs);
	free(op->vers);
	sto_keys_free(op->names, op->n);
	free(op);
}

static void list_push(struct vmm_rep *x, vmm_reply_fn fn, void *ctx, const char *only)
{
	struct list_op *op;

	if (!x->m->store || (!fn && x->listing) || !(op = calloc(1, sizeof(*op)))) {
		if (fn)
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		return;
	}
	op->x = x;
	op->fn = fn;
	op->ctx = ctx;
	snprintf(op->only, sizeof(op->only), "%s", only ? only : "");
	if (!fn)
		x->listing = true;
	exec_item_init(&op->item, list_fn, list_done);
	exec_push(x->m->q_store, &op->item, NULL);
}

/* ---- writing a relation (CAS on its version, re-read on a race) ---- */

struct upd_op {
	struct exec_item item;
	struct vmm_rep *x;
	enum upd_kind kind;
	char vm[HV_NAME_MAX + 1];
	Hca__RepRelation *want;      /* CREATE: the new record */
	uint64_t relation;           /* the relation it is about (0: any) */
	struct rep_src_result res;   /* CYCLE */
	Hca__RepState state;         /* STATE */
	char from[HV_NAME_MAX + 1];  /* ADOPT: the source it had */
	char note[300];              /* ADOPT: why it paused */
	Hca__RepRelation *out;       /* the record written */
	uint64_t version;
	Hca__ErrorCode code;
	char err[400];
	vmm_reply_fn fn;
	void *ctx;
};

static void upd_cycle(Hca__RepRelation *r, const struct rep_src_result *res)
{
	r->updated_ms = vrep_wall_ms();
	r->last_cycle_ms = res->dur_ms;
	r->bytes_raw += res->tx.raw_bytes;
	r->bytes_zero += res->tx.zero_bytes;
	r->bytes_wire += res->tx.wire_bytes;
	if (res->err) {
		r->failed_cycles++;
		r->last_error = (char *)res->msg; /* borrowed until the put */
		return;
	}
	r->cycles++;
	if (res->resync)
		r->resyncs++;
	else if (res->full)
		r->full_copies++;
	r->last_point = res->cycle;
	r->last_point_ms = res->cut_ms;
	r->last_error = (char *)"";
}

/*
 * The VM runs on this node now (a live migration moved it) and its relation
 * still names the node it came from: this node ships from now on. Its
 * QEMU has no change bitmap yet, so the first cycle reads the disks whole
 * onto the replica's newest point. A VM that moved onto its replica node
 * cannot replicate to itself: that is a failover (reverse or disable
 * next), and the relation says so.
 */
static void adopt(struct vmm_rep *x, Hca__RepRelation *r, char *msg, size_t len)
{
	const char *me = x->m->conf->node_name;

	r->updated_ms = vrep_wall_ms();
	if (!strcmp(r->target, me)) {
		snprintf(msg, len, "the VM moved to its replica node %s, as a failover would: "
			 "replication stopped; reverse it (hcactl replica reverse %s: to %s) "
			 "or disable it", me, r->vm, r->source);
		r->state = HCA__REP_STATE__REP_STATE_FAILED_OVER;
		r->last_error = msg;
		return;
	}
	r->source = (char *)me;     /* borrowed until the put */
	r->last_error = (char *)"";
}

static void upd_fn(struct exec_item *it)
{
	struct upd_op *op = EXEC_CONTAINER_OF(it, struct upd_op, item);
	struct sto_store *st = op->x->m->store;
	Hca__RepRelation *r = NULL;
	char *keep_err = NULL, *keep_src = NULL;
	uint64_t ver = 0;
	int rc = 0;

	for (int tries = 0; tries < 5; tries++) {
		if (r)
			hca__rep_relation__free_unpacked(r, NULL);
		r = NULL;
		rc = sto_rep_get(st, op->vm, &r, &ver, op->err, sizeof(op->err));
		if (op->kind == UPD_CREATE) {
			if (rc == 0) {
				snprintf(op->err, sizeof(op->err), "vm %s: already replicated to %s "
					 "(%s); disable it first: hcactl replica disable %s",
					 op->vm, r->target, state_name(r->state), op->vm);
				op->code = HCA__ERROR_CODE__ERROR_EXISTS;
				goto out;
			}
			if (rc != -ENOENT)
				goto fail;
			rc = sto_rep_put(st, op->vm, op->want, 0, &op->version, op->err,
					 sizeof(op->err));
			if (rc == -EEXIST)
				continue;
			if (rc < 0)
				goto fail;
			op->out = sto_rep_copy(op->want);
			goto out;
		}
		if (rc == -ENOENT && op->kind == UPD_DELETE)
			goto out;
		if (op->kind == UPD_REPLACE) {
			if (rc < 0 && rc != -ENOENT)
				goto fail;
			rc = sto_rep_put(st, op->vm, op->want, rc == -ENOENT ? 0 : ver,
					 &op->version, op->err, sizeof(op->err));
			if (rc == 0)
				op->out = sto_rep_copy(op->want);
			if (rc == -ECANCELED || rc == -EEXIST) {
				rc = -ECANCELED;
				continue;
			}
			if (rc < 0)
				goto fail;
			goto out;
		}
		if (rc < 0)
			goto fail;
		if (op->relation && r->relation != op->relation) {
			snprintf(op->err, sizeof(op->err), "vm %s: its replication was set up again "
				 "meanwhile", op->vm);
			op->code = HCA__ERROR_CODE__ERROR_BUSY;
			goto out;
		}
		if (op->kind == UPD_ADOPT && (r->state != HCA__REP_STATE__REP_STATE_ENABLED ||
					      strcmp(r->source, op->from)))
			goto out; /* changed meanwhile (a failover, a disable): not ours */
		if (op->kind == UPD_DELETE) {
			rc = sto_rep_del(st, op->vm, ver, op->err, sizeof(op->err));
		} else {
			if (op->kind == UPD_ADOPT) {
				keep_err = r->last_error;
				keep_src = r->source;
				adopt(op->x, r, op->note, sizeof(op->note));
			} else if (op->kind == UPD_CYCLE) {
				keep_err = r->last_error;
				upd_cycle(r, &op->res);
			} else {
				r->state = op->state;
				r->updated_ms = vrep_wall_ms();
			}
			rc = sto_rep_put(st, op->vm, r, ver, &op->version, op->err,
					 sizeof(op->err));
			if (keep_err) {
				r->last_error = keep_err; /* freed with the record */
				keep_err = NULL;
			}
			if (op->kind == UPD_ADOPT && keep_src) {
				r->source = keep_src;
				keep_src = NULL;
			}
			if (rc == 0) {
				hca__rep_relation__free_unpacked(r, NULL);
				r = NULL;
				rc = sto_rep_get(st, op->vm, &op->out, &op->version, op->err,
						 sizeof(op->err));
				if (rc < 0)
					op->out = NULL;
				rc = 0;
			}
		}
		if (rc != -ECANCELED)
			break;
	}
	if (rc == 0)
		goto out;
fail:
	op->code = rc == -ENOENT ? HCA__ERROR_CODE__ERROR_NOT_FOUND
				 : HCA__ERROR_CODE__ERROR_STORAGE;
	if (rc == -ECANCELED)
		snprintf(op->err, sizeof(op->err), "vm %s: its replication record keeps "
			 "changing; try again", op->vm);
out:
	if (r)
		hca__rep_relation__free_unpacked(r, NULL);
}

static void reply_one(struct vmm_rep *x, const Hca__RepRelation *rec, vmm_reply_fn fn, void *ctx);

static void upd_done(struct exec_item *it)
{
	struct upd_op *op = EXEC_CONTAINER_OF(it, struct upd_op, item);
	struct vmm_rep *x = op->x;
	struct rrel *r;

	if (exec_item_cancelled(it) && !op->code) {
		op->code = HCA__ERROR_CODE__ERROR_INTERNAL;
		snprintf(op->err, sizeof(op->err), "hcad is stopping");
	}
	if (op->code && op->kind == UPD_CYCLE)
		qb_log(LOG_WARNING, "replica: vm %s: cycle figures not recorded: %s", op->vm,
		       op->err);
	if (op->kind == UPD_DELETE && !op->code && (r = vrep_find(x, op->vm)) && !r->cycling)
		rel_drop(x, r);
	if (op->kind == UPD_ADOPT && (r = vrep_find(x, op->vm))) {
		r->adopting = false;
		if (op->code)
			qb_log(LOG_WARNING, "replica: vm %s: relation not taken over: %s", op->vm,
			       op->err);
		else if (op->out && op->note[0])
			qb_log(LOG_WARNING, "replica: vm %s: %s", op->vm, op->note);
		else if (op->out)
			qb_log(LOG_NOTICE, "replica: vm %s moved here from %s: it replicates to %s "
			       "from this node now (its disks are compared with the replica once)", op->vm,
			       op->from, op->out->target);
	}
	if (op->fn) {
		if (op->code)
			vmm_reply_error(op->fn, op->ctx, op->code, "%s", op->err);
		else if (op->out)
			reply_one(x, op->out, op->fn, op->ctx);
		else
			reply_one(x, NULL, op->fn, op->ctx);
	}
	if (op->out && op->kind != UPD_DELETE) {
		rel_apply(x, op->vm, op->out, op->version);
		op->out = NULL;
	}
	if (op->out)
		hca__rep_relation__free_unpacked(op->out, NULL);
	if (op->want)
		hca__rep_relation__free_unpacked(op->want, NULL);
	free(op);
}

static struct upd_op *upd_new(struct vmm_rep *x, enum upd_kind kind, const char *vm)
{
	struct upd_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->x = x;
	op->kind = kind;
	snprintf(op->vm, sizeof(op->vm), "%s", vm);
	exec_item_init(&op->item, upd_fn, upd_done);
	return op;
}

static void upd_push(struct upd_op *op)
{
	char key[STO_KEY_MAX + 1];

	sto_rep_key(key, sizeof(key), op->vm); /* ordered with the VM's other writes */
	exec_push(op->x->m->q_store, &op->item, key);
}

void vrep_update(struct vmm_rep *x, enum upd_kind kind, const char *vm, uint64_t relation,
		 const Hca__RepRelation *want, const struct rep_src_result *res,
		 Hca__RepState state, vmm_reply_fn fn, void *ctx)
{
	struct upd_op *op = upd_new(x, kind, vm);

	if (!op || (want && !(op->want = sto_rep_copy(want)))) {
		free(op);
		if (fn)
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		return;
	}
	op->relation = relation;
	if (res)
		op->res = *res;
	op->state = state;
	op->fn = fn;
	op->ctx = ctx;
	upd_push(op);
}

/* ---- cycles ---- */

/*
 * The interval is the RPO asked for: the newest point should never be older.
 * A point is there a cycle's duration after its cut, so the next cycle
 * starts that much early (recent cycles' decaying maximum, plus a margin
 * for the loop, the record's update and a cycle slower than the recent
 * ones), at most a quarter of the interval early. Cycles that take longer
 * than that miss it, and the health says so. Measured (make bench, 5 s, a
 * guest writing 2.4 MiB/s under TCG): a 100 ms margin and a maximum
 * decaying by 1/8 a cycle left the p99 age at 5.16 s.
 */
#define LEAD_MARGIN_MS 300u
#define LEAD_DECAY 16u /* the maximum loses 1/16 a cycle */

static uint64_t vrep_lead_ms(const struct rrel *r, uint64_t iv)
{
	uint64_t lead = r->dur_ms + LEAD_MARGIN_MS;

	return lead < iv / 4 ? lead : iv / 4;
}

struct cyc {
	struct vmm_rep *x;
	char vm[HV_NAME_MAX + 1];
	uint64_t relation;
	uint64_t start_ms; /* monotonic */
};

/* " N MiB the replica had)" for the log line of a resync. */
static const char *vrep_fmt_same(uint64_t same)
{
	static char buf[64];

	snprintf(buf, sizeof(buf), "%" PRIu64 " KiB compared equal, not sent)", same >> 10);
	return buf;
}

static void cycle_done(void *opaque, const struct rep_src_result *res)
{
	struct cyc *c = opaque;
	struct vmm_rep *x = c->x;
	struct rrel *r = vrep_find(x, c->vm);
	struct upd_op *op;
	uint64_t iv;

	if (res->err)
		qb_log(LOG_WARNING, "replica: vm %s: cycle %" PRIu64 " failed after %" PRIu64
		       " ms: %s", c->vm, res->cycle, res->dur_ms, res->msg);
	else
		qb_log(res->resync ? LOG_NOTICE : LOG_INFO, "replica: vm %s: point %" PRIu64
		       " made in %" PRIu64 " ms: %" PRIu64 " bytes in %" PRIu64 " extents, %"
		       PRIu64 " zeroed, %" PRIu64 " on the wire%s%s", c->vm, res->cycle,
		       res->dur_ms, res->tx.raw_bytes, res->tx.extents, res->tx.zero_bytes,
		       res->tx.wire_bytes,
		       res->full ? " (full copy)" : res->resync ? " (resync: " : res->whole_disks
		       ? " (a disk read whole)" : "",
		       res->resync ? vrep_fmt_same(res->same_bytes) : "");
	/*
	 * -EAGAIN: not yet, e.g. the replica has not listed a relation just
	 * enabled (it looks again on such a refusal) or an interrupted cycle's
	 * leftovers were being removed. Nothing was shipped and the cut's
	 * changes are folded back: try again in a tick, and record it as a
	 * failed cycle only when it goes on.
	 */
	if (r && res->err == -EAGAIN && r->not_yet < NOT_YET_MAX) {
		r->not_yet++;
		r->cycling = false;
		r->due_ms = mono_ms() + TICK_MS;
		if (!r->seen)
			r->due_ms = UINT64_MAX;
		free(c);
		return;
	}
	if (r) {
		r->not_yet = 0;
		r->cycling = false;
		if (res->err == -ESTALE)
			r->whole = true;
		else if (!res->err)
			r->whole = false;
		/* from the start, as cycles are: "every 2s" is every cycle of 2 s */
		if (!res->err && res->app_consistent)
			r->app_ms = c->start_ms;
		if (!res->err) {
			uint64_t d = mono_ms() - c->start_ms, decayed = r->dur_ms - r->dur_ms / LEAD_DECAY;
			r->dur_ms = d > decayed ? d : decayed;
		}
		iv = vrep_iv_ms(r->rec);
		if (res->err)
			r->due_ms = mono_ms() + (iv < RETRY_MAX_MS ? iv : RETRY_MAX_MS);
		if (r->rec && !res->err) {
			/* the cache follows at once: the next cycle's base */
			r->rec->last_point = res->cycle;
			r->rec->last_point_ms = res->cut_ms;
		}
		if (!r->seen && !r->cycling)
			r->due_ms = UINT64_MAX; /* disabled meanwhile: the listing drops it */
	}
	if (res->err != -ESHUTDOWN && (op = upd_new(x, UPD_CYCLE, c->vm))) {
		op->relation = c->relation;
		op->res = *res;
		upd_push(op);
	}
	free(c);
}

static void cycle_start(struct vmm_rep *x, struct rrel *r)
{
	struct vm *v = vmm_vm_find(x->m, r->vm);
	struct rep_src_req q;
	struct cyc *c;
	char err[256];
	uint64_t now = mono_ms(), iv = vrep_iv_ms(r->rec);
	int rc;

	/* not now: not running here, or another operation (a migration) has it */
	if (!v || !v->rec || !vmm_owned(x->m, v) || !vmm_vm_running(v) || v->job ||
	    vmm_mig_busy(x->m, v->name))
		return;
	if (vrep_cycle_req(x, r, v, &q, err, sizeof(err)) < 0) {
		qb_log(LOG_WARNING, "replica: vm %s: %s", r->vm, err);
		r->due_ms = now + iv;
		return;
	}
	if (!(c = calloc(1, sizeof(*c))))
		return;
	c->x = x;
	c->relation = r->rec->relation;
	c->start_ms = now;
	snprintf(c->vm, sizeof(c->vm), "%s", r->vm);
	r->due_ms = now + iv - vrep_lead_ms(r, iv);
	if ((rc = rep_src_cycle(x->tx, &q, cycle_done, c)) < 0) {
		qb_log(LOG_WARNING, "replica: vm %s: cycle not started: %s", r->vm, strerror(-rc));
		free(c);
		return;
	}
	r->cycling = true;
}

unsigned vrep_disks(const Hca__VmSpec *s, const Hca__DiskSpec **out, unsigned max)
{
	unsigned n = 0;

	for (size_t i = 0; i < s->n_disks && n < max; i++)
		if (!s->disks[i]->readonly)
			out[n++] = s->disks[i];
	return n;
}

int vrep_cycle_req(struct vmm_rep *x, struct rrel *r, struct vm *v, struct rep_src_req *q,
		   char *err, size_t len)
{
	const Hca__VmSpec *s = v->rec->spec;
	uint64_t iv = vrep_iv_ms(r->rec);

	memset(q, 0, sizeof(*q));
	snprintf(q->vm, sizeof(q->vm), "%s", r->vm);
	snprintf(q->target, sizeof(q->target), "%s", r->rec->target);
	q->relation = r->rec->relation;
	q->incarnation = v->rec->incarnation;
	q->base = r->rec->last_point;
	q->whole = r->whole;
	snprintf(q->qga, sizeof(q->qga), "%s", v->paths.qga);
	/* due every T, cycles starting early as they do (see vrep_lead_ms) */
	q->app_consistent = r->rec->app_every_s &&
			    mono_ms() - r->app_ms + vrep_lead_ms(r, iv) >=
			    (uint64_t)r->rec->app_every_s * 1000u;
	q->min_cycle = r->rec->cycles + r->rec->failed_cycles + 1;
	if (q->min_cycle <= r->rec->last_point)
		q->min_cycle = r->rec->last_point + 1;
	const Hca__DiskSpec *ds[REP_DISKS_MAX];

	if (s->n_disks > REP_DISKS_MAX) {
		snprintf(err, len, "%zu disks, more than a cycle carries (%u)", s->n_disks,
			 REP_DISKS_MAX);
		return -EINVAL;
	}
	q->ndisks = vrep_disks(s, ds, REP_DISKS_MAX);
	for (unsigned i = 0; i < q->ndisks; i++) {
		snprintf(q->disks[i].name, sizeof(q->disks[0].name), "%s", ds[i]->name);
		q->disks[i].size = ds[i]->size_bytes;
		q->disks[i].raw = ds[i]->format == HCA__DISK_FORMAT__DISK_FORMAT_RAW;
	}
	if (!q->ndisks) {
		snprintf(err, len, "no writable disk to replicate");
		return -EINVAL;
	}
	return 0;
}

/* Take over the relation of a VM that moved here (see adopt()). */
static void adopt_check(struct vmm_rep *x, struct rrel *r)
{
	struct vm *v;
	struct upd_op *op;

	if (!r->rec || r->adopting || r->failing ||
	    r->rec->state != HCA__REP_STATE__REP_STATE_ENABLED || !vmm_storage_ok(x->m))
		return;
	v = vmm_vm_find(x->m, r->vm);
	if (!v || !v->rec || !vmm_owned(x->m, v) || !vmm_vm_running(v) || v->job)
		return;
	if (!(op = upd_new(x, UPD_ADOPT, r->vm)))
		return;
	op->relation = r->rec->relation;
	snprintf(op->from, sizeof(op->from), "%s", r->rec->source);
	r->adopting = true;
	r->whole = true; /* no bitmap of the old node's QEMU here */
	upd_push(op);
}

static void tick(void *data)
{
	struct vmm_rep *x = data;
	uint64_t now = mono_ms(), wall = vrep_wall_ms(), rpo, wait = TICK_MS;
	char why[400];

	x->tick = 0;
	if (x->m->stopping)
		return;
	if (vmm_storage_ok(x->m) && now - x->listed_ms >= LIST_EVERY_MS)
		list_push(x, NULL, NULL, NULL);
	for (struct rrel *r = x->rels; r; r = r->next) {
		const char *h;
		if (!is_source(x, r)) {
			adopt_check(x, r);
			continue;
		}
		h = health(r->rec, wall, why, sizeof(why), &rpo);
		if (!r->health || strcmp(h, r->health)) {
			qb_log(!strcmp(h, "ok") ? LOG_NOTICE : !strcmp(h, "warn") ? LOG_WARNING
				: LOG_ERR, "replica: vm %s -> %s: health %s: %s", r->vm,
			       r->rec->target, h, why);
			r->health = h;
		}
		if (r->rec->state == HCA__REP_STATE__REP_STATE_ENABLED && !r->cycling && !r->failing &&
		    now >= r->due_ms && vmm_storage_ok(x->m))
			cycle_start(x, r);
	}
	/* next: in a tick, or when a cycle is due before that (on time, not
	 * up to a tick late) */
	now = mono_ms();
	for (struct rrel *r = x->rels; r; r = r->next)
		if (r->due_ms > now && r->due_ms - now < wait && is_source(x, r) && !r->cycling)
			wait = r->due_ms - now;
	qb_loop_timer_add(x->m->loop, QB_LOOP_MED, wait * QB_TIME_NS_IN_MSEC, x, tick, &x->tick);
}

/* ---- the replica side: which cycles this node takes ---- */

static int dst_check(void *ctx, const struct rep_cycle *c, const char *peer, char *err,
		     size_t len)
{
	struct vmm_rep *x = ctx;
	struct rrel *r = vrep_find(x, c->vm);

	if (!r || !r->rec || r->rec->relation != c->relation) {
		/* enabled since the last listing, perhaps: look again */
		list_push(x, NULL, NULL, NULL);
		snprintf(err, len, "vm %s: no replication relation %016" PRIx64 " to this node "
			 "(yet)", c->vm, c->relation);
		return -EAGAIN;
	}
	if (strcmp(r->rec->target, x->m->conf->node_name)) {
		snprintf(err, len, "vm %s: replicates to %s, not to this node", c->vm,
			 r->rec->target);
		return -EPERM;
	}
	if (strcmp(r->rec->source, peer)) {
		/* the VM may have moved to @peer, which took the relation over */
		list_push(x, NULL, NULL, NULL);
		snprintf(err, len, "vm %s: replicates from %s, not from %s (yet)", c->vm,
			 r->rec->source, peer);
		return -EAGAIN;
	}
	return 0;
}

static unsigned dst_keep(void *ctx, const char *vm)
{
	struct rrel *r = vrep_find(ctx, vm);

	return r && r->rec && r->rec->keep ? r->rec->keep : KEEP_DEFAULT;
}

static const char *dst_pool(void *ctx, const char *vm)
{
	struct rrel *r = vrep_find(ctx, vm);

	return r && r->rec ? r->rec->target_pool : NULL;
}

static struct hv_vm *src_vm_hv(void *ctx, const char *name)
{
	struct vm *v = vmm_vm_find(ctx, name);

	return v ? v->hv : NULL;
}

/* "rep.drop" from a relation's source: forget this node's replica of it. */
static void drop_answered(void *opaque, int err, const char *msg)
{
	struct chan_reply *cr = opaque;

	if (err)
		chan_reply_error(cr, err, "%s", msg ? msg : strerror(-err));
	else
		chan_reply_ok(cr, NULL, 0);
}

static void drop_told(int err, const void *body, size_t len, const char *msg, void *opaque)
{
	char *vm = opaque;

	(void)body;
	(void)len;
	if (err)
		qb_log(LOG_WARNING, "replica: vm %s: its replica node did not drop its copy: %s "
		       "(remove %s there by hand if it stays)", vm, msg, "STATE_DIR/replica/VM");
	free(vm);
}

static void on_drop(struct chan_reply *cr, const void *body, size_t len, void *opaque)
{
	struct vmm_rep *x = opaque;
	Hca__RepPointsRequest *q = hca__rep_points_request__unpack(NULL, len, body);

	if (!q || !hv_name_valid(q->vm))
		chan_reply_error(cr, -EPROTO, "rep.drop: malformed request");
	else if (rep_dst_drop(x->rx, q->vm, drop_answered, cr) < 0)
		chan_reply_error(cr, -EIO, "rep.drop: cannot drop the replica of %s", q->vm);
	if (q)
		hca__rep_points_request__free_unpacked(q, NULL);
}

/* ---- lifetime ---- */

void vmm_rep_setup(struct vmm *m)
{
	struct vmm_rep *x = m->reps;
	struct rep_src_host sh = { .ctx = m, .vm_hv = src_vm_hv };
	struct rep_dst_host dh = { .check = dst_check, .keep = dst_keep, .pool = dst_pool,
				   .keep_default = KEEP_DEFAULT,
				   .ceph_conf = m->conf->ceph_conf[0] ? m->conf->ceph_conf : NULL,
				   .ceph_client = m->conf->ceph_client[0] ? m->conf->ceph_client
									  : NULL };

	if (x) {
		x->src.peers = m->peers;
		x->src.store = m->store;
		x->env.store = m->store;
		rep_dst_channel_up(x->rx);
		x->env.handle(x->env.ctx, "rep.drop", on_drop, x);
		vrep_fo_setup(x);
		return;
	}
	if (!m->peers || !(x = calloc(1, sizeof(*x))))
		return;
	x->m = m;
	x->src = (struct env_src){ .loop = m->loop, .store = m->store, .exec = m->exec,
				   .node = m->conf->node_name, .peers = m->peers,
				   .memb = m->memb };
	env_fill(&x->env, &x->src);
	snprintf(x->work_dir, sizeof(x->work_dir), "%s/rep", m->conf->state_dir);
	snprintf(x->dst_dir, sizeof(x->dst_dir), "%s/replica", m->conf->state_dir);
	if ((mkdir(x->work_dir, 0700) < 0 && errno != EEXIST) ||
	    (mkdir(x->dst_dir, 0700) < 0 && errno != EEXIST) ||
	    !(x->q = exec_queue_new(m->exec, "rep", 2)) || !(x->ctx = rep_ctx_new(x->q))) {
		qb_log(LOG_ERR, "replica: cannot start the service: %s", strerror(errno));
		free(x);
		return;
	}
	sh.work_dir = x->work_dir;
	dh.ctx = x;
	dh.dir = x->dst_dir;
	x->tx = rep_src_new(&x->env, x->ctx, x->q, &sh);
	x->rx = rep_dst_new(&x->env, x->ctx, x->q, &dh);
	if (!x->tx || !x->rx) {
		qb_log(LOG_ERR, "replica: cannot start the service: %s", strerror(errno));
		rep_src_free(x->tx);
		rep_dst_free(x->rx);
		rep_ctx_free(x->ctx);
		free(x);
		return;
	}
	x->env.handle(x->env.ctx, "rep.drop", on_drop, x);
	vrep_fo_setup(x);
	m->reps = x;
	qb_loop_timer_add(m->loop, QB_LOOP_MED, TICK_MS * QB_TIME_NS_IN_MSEC, x, tick, &x->tick);
}

void vmm_rep_store(struct vmm *m)
{
	if (m->reps) {
		m->reps->src.store = m->store;
		m->reps->env.store = m->store;
	}
}

void vmm_rep_free(struct vmm *m)
{
	struct vmm_rep *x = m->reps;

	if (!x)
		return;
	if (x->tick)
		qb_loop_timer_del(m->loop, x->tick);
	rep_src_free(x->tx);
	rep_dst_free(x->rx);
	rep_ctx_free(x->ctx);
	while (x->rels)
		rel_drop(x, x->rels);
	free(x);
	m->reps = NULL;
}

void vmm_rep_event(struct vm *v, const char *event, json_t *data)
{
	if (v->m->reps)
		rep_src_event(v->m->reps->tx, v->name, event, data);
}

bool vmm_rep_busy(struct vmm *m, const char *name)
{
	return m->reps && rep_src_busy(m->reps->tx, name);
}

/* ---- the requests ---- */

static void status_of(const Hca__RepRelation *rec, Hca__RepStatus *st, char *why, size_t len)
{
	uint64_t rpo = 0;

	st->relation = (Hca__RepRelation *)rec;
	st->health = (char *)health(rec, vrep_wall_ms(), why, len, &rpo);
	st->health_reason = why;
	st->rpo_ms = rpo;
}

static void reply_one(struct vmm_rep *x, const Hca__RepRelation *rec, vmm_reply_fn fn, void *ctx)
{
	Hca__ApiReply r = HCA__API_REPLY__INIT;
	Hca__RepStatusList l = HCA__REP_STATUS_LIST__INIT;
	Hca__RepStatus st = HCA__REP_STATUS__INIT, *p = &st;
	char why[400];

	(void)x;
	if (rec) {
		status_of(rec, &st, why, sizeof(why));
		l.n_replicas = 1;
		l.replicas = &p;
	}
	r.result_case = HCA__API_REPLY__RESULT_REPLICAS;
	r.replicas = &l;
	fn(&r, ctx);
}

static void reply_status(struct vmm_rep *x, vmm_reply_fn fn, void *ctx, const char *only)
{
	Hca__ApiReply r = HCA__API_REPLY__INIT;
	Hca__RepStatusList l = HCA__REP_STATUS_LIST__INIT;
	size_t n = 0, i = 0;
	Hca__RepStatus *sts, **ptrs;
	char (*why)[400];

	for (struct rrel *e = x->rels; e; e = e->next)
		n += e->rec != NULL;
	sts = calloc(n ? n : 1, sizeof(*sts));
	ptrs = calloc(n ? n : 1, sizeof(*ptrs));
	why = calloc(n ? n : 1, sizeof(*why));
	if (!sts || !ptrs || !why) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		goto out;
	}
	for (struct rrel *e = x->rels; e; e = e->next) {
		if (!e->rec || (only[0] && strcmp(only, e->vm)))
			continue;
		hca__rep_status__init(&sts[i]);
		status_of(e->rec, &sts[i], why[i], sizeof(why[i]));
		ptrs[i] = &sts[i];
		i++;
	}
	if (only[0] && !i) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_NOT_FOUND,
				"vm %s: not replicated (hcactl replica enable %s --to NODE)", only,
				only);
		goto out;
	}
	l.n_replicas = i;
	l.replicas = ptrs;
	r.result_case = HCA__API_REPLY__RESULT_REPLICAS;
	r.replicas = &l;
	fn(&r, ctx);
out:
	free(sts);
	free(ptrs);
	free(why);
}

static bool service_up(struct vmm *m, vmm_reply_fn fn, void *ctx)
{
	if (m->reps)
		return true;
	vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "replication needs the node "
			"channel, which is off%s%s", m->peers_off[0] ? ": " : "", m->peers_off);
	return false;
}

/* Which of @v's disks cannot be replicated (yet), or NULL. RBD images are
 * replicated as raw disks (a bitmap in QEMU's memory: after a QEMU restart
 * the next cycle is a resync). */
static const char *disk_refused(const Hca__VmSpec *s, char *why, size_t len)
{
	for (size_t i = 0; i < s->n_disks; i++) {
		const Hca__DiskSpec *d = s->disks[i];
		if (d->readonly)
			continue;
		if (d->path[0]) {
			snprintf(why, len, "disk %s is an attached image (%s): only volumes hcad "
				 "created are replicated", d->name, d->path);
			return why;
		}
	}
	return NULL;
}

void vmm_replica_enable(struct vmm *m, const Hca__ReplicaEnable *q, vmm_reply_fn fn, void *ctx)
{
	const struct memb_node *t;
	struct upd_op *op;
	Hca__RepRelation *rec;
	struct vm *v;
	char why[300];
	uint64_t rel = 0;

	if (!service_up(m, fn, ctx) || !(v = vmm_vm_for_op(m, q->name, "replicate", fn, ctx)) ||
	    !vmm_check_owned(m, v, fn, ctx))
		return;
	if (!q->target[0] || !strcmp(q->target, m->conf->node_name)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "vm %s: %s", v->name,
				q->target[0] ? "it runs on this node: replicate to another one"
					     : "--to NODE is required");
		return;
	}
	if (!(t = memb_find(memb_view(m->memb), q->target))) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "vm %s: %s is not a node "
				"of this cluster", v->name, q->target);
		return;
	}
	if (q->interval_s > INTERVAL_MAX_S || q->keep > KEEP_MAX ||
	    (q->app_every_s && q->app_every_s < (q->interval_s ? q->interval_s
							       : INTERVAL_DEFAULT_S))) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "vm %s: interval 1 to %u "
				"s, keep 1 to %u points, app-consistent points no more often than "
				"the interval", v->name, INTERVAL_MAX_S, KEEP_MAX);
		return;
	}
	if (q->target_pool[0] && !rep_store_pool_valid(q->target_pool)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "vm %s: --target-pool "
				"%.80s is no pool name (1 to %u letters, digits and \"_.-\", not "
				"starting with \".\")", v->name, q->target_pool, REP_POOL_MAX);
		return;
	}
	if (disk_refused(v->rec->spec, why, sizeof(why))) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID, "vm %s: %s", v->name, why);
		return;
	}
	while (!rel && getrandom(&rel, sizeof(rel), 0) != sizeof(rel))
		;
	if (!(rec = calloc(1, sizeof(*rec))) || !(op = upd_new(m->reps, UPD_CREATE, v->name))) {
		free(rec);
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		return;
	}
	hca__rep_relation__init(rec);
	/* strings point into the request until the copy below */
	rec->vm = v->name;
	rec->relation = rel;
	rec->source = (char *)m->conf->node_name;
	rec->target = q->target;
	rec->target_pool = q->target_pool;
	rec->interval_s = q->interval_s ? q->interval_s : INTERVAL_DEFAULT_S;
	rec->keep = q->keep ? q->keep : KEEP_DEFAULT;
	rec->state = HCA__REP_STATE__REP_STATE_ENABLED;
	rec->app_every_s = q->app_every_s;
	rec->created_ms = vrep_wall_ms();
	rec->updated_ms = rec->created_ms;
	rec->incarnation = v->rec->incarnation;
	op->want = sto_rep_copy(rec);
	free(rec);
	if (!op->want) {
		free(op);
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		return;
	}
	op->fn = fn;
	op->ctx = ctx;
	qb_log(LOG_NOTICE, "replica: vm %s: replication to %s%s%s every %" PRIu32 " s, %"
	       PRIu32 " points kept", v->name, q->target, q->target_pool[0] ? ", pool " : "",
	       q->target_pool, op->want->interval_s, op->want->keep);
	upd_push(op);
}

void vmm_replica_status(struct vmm *m, const char *name, vmm_reply_fn fn, void *ctx)
{
	if (service_up(m, fn, ctx))
		list_push(m->reps, fn, ctx, name);
}

void vmm_replica_state(struct vmm *m, const char *name, Hca__RepState state, vmm_reply_fn fn,
		       void *ctx)
{
	struct rrel *r;
	struct upd_op *op;
	struct vm *v;

	if (!service_up(m, fn, ctx) || !(v = vmm_vm_for_op(m, name, "replica", fn, ctx)) ||
	    !vmm_check_owned(m, v, fn, ctx))
		return;
	r = vrep_find(m->reps, name);
	if (state && r && r->rec && r->rec->state == HCA__REP_STATE__REP_STATE_FAILED_OVER) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: failed over; "
				"reverse the replication first", name);
		return;
	}
	if (!(op = upd_new(m->reps, state ? UPD_STATE : UPD_DELETE, name))) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		return;
	}
	op->state = state;
	op->fn = fn;
	op->ctx = ctx;
	if (!state && r && r->rec) {
		/* disable: the cycle under way stops, the bitmaps and the replica go */
		struct rep_src_req q;
		char err[128];
		Hca__RepPointsRequest pr = HCA__REP_POINTS_REQUEST__INIT;
		uint8_t buf[256];
		size_t len;
		rep_src_cancel(m->reps->tx, name, "replication disabled");
		if (v->rec && vrep_cycle_req(m->reps, r, v, &q, err, sizeof(err)) == 0)
			rep_src_forget(m->reps->tx, name, q.disks, q.ndisks);
		pr.vm = (char *)name;
		pr.relation = r->rec->relation;
		if ((len = hca__rep_points_request__get_packed_size(&pr)) <= sizeof(buf)) {
			hca__rep_points_request__pack(&pr, buf);
			char *vm = strdup(name);
			if (vm && !strcmp(r->rec->target, m->conf->node_name)) {
				/* failed over here: the replica this node kept goes */
				if (rep_dst_drop(m->reps->rx, vm, gc_dropped, vm) < 0)
					free(vm);
			} else if (!vm || m->reps->env.call(m->reps->env.ctx, r->rec->target,
							    "rep.drop", buf, len, POINTS_TIMEOUT_MS,
							    drop_told, vm) < 0) {
				free(vm);
				qb_log(LOG_WARNING, "replica: vm %s: %s not told to drop its replica "
				       "(it goes when its hcad next lists the relations)", name,
				       r->rec->target);
			}
		}
	}
	upd_push(op);
}

/* ---- points: asked of the replica node ---- */

struct pts {
	vmm_reply_fn fn;
	void *ctx;
	char target[64];
};

static void points_answered(int err, const void *body, size_t len, const char *msg, void *opaque)
{
	struct pts *p = opaque;
	Hca__ApiReply r = HCA__API_REPLY__INIT;
	Hca__RepPointList *l = NULL;

	if (!err && !(l = hca__rep_point_list__unpack(NULL, len, body)))
		err = -EPROTO, msg = "malformed answer";
	if (err) {
		vmm_reply_error(p->fn, p->ctx, err == -ETIMEDOUT ? HCA__ERROR_CODE__ERROR_TIMEOUT
				: HCA__ERROR_CODE__ERROR_INTERNAL, "replica node %s: %s", p->target,
				msg ? msg : strerror(-err));
	} else {
		r.result_case = HCA__API_REPLY__RESULT_POINTS;
		r.points = l;
		p->fn(&r, p->ctx);
	}
	if (l)
		hca__rep_point_list__free_unpacked(l, NULL);
	free(p);
}

void vmm_replica_points(struct vmm *m, const char *name, vmm_reply_fn fn, void *ctx)
{
	Hca__RepPointsRequest pr = HCA__REP_POINTS_REQUEST__INIT;
	struct rrel *r;
	struct pts *p;
	uint8_t buf[256];
	size_t len;
	int rc;

	if (!service_up(m, fn, ctx))
		return;
	if (!(r = vrep_find(m->reps, name)) || !r->rec) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_NOT_FOUND, "vm %s: not replicated "
				"(or enabled in the last few seconds: try again)", name);
		return;
	}
	pr.vm = (char *)name;
	pr.relation = r->rec->relation;
	if ((len = hca__rep_points_request__get_packed_size(&pr)) > sizeof(buf) ||
	    !(p = calloc(1, sizeof(*p)))) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		return;
	}
	hca__rep_points_request__pack(&pr, buf);
	p->fn = fn;
	p->ctx = ctx;
	snprintf(p->target, sizeof(p->target), "%s", r->rec->target);
	rc = m->reps->env.call(m->reps->env.ctx, r->rec->target, "rep.points", buf, len,
			       POINTS_TIMEOUT_MS, points_answered, p);
	if (rc < 0) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "vm %s: its replica node "
				"%s is not reachable: %s", name, p->target, strerror(-rc));
		free(p);
	}
}
