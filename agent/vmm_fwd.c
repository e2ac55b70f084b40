/*
 * vmm_fwd: any node drives any VM. A request for a VM owned by another node
 * is carried over the node channel (method "api") to the owner's hcad and
 * its answer relayed as if it ran here. The receiver answers a forwarded
 * request itself and never forwards it again; the node it came from is the
 * name the channel's certificate check proved, not what the message says.
 *
 * Also the job requests: show and list read this node's jobs from memory
 * and other nodes' from the store (or the node itself, fresher); cancel is
 * carried to the node that runs the job.
 */
#include "agent/vmm_priv.h"
#include "proto/wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

#define FWD_TIMEOUT_MS 10000u
#define JOB_LIST_MAX 200u

/* ---- routing ---- */

static const char *vm_owner_elsewhere(struct vmm *m, const char *name)
{
	struct vm *v = name && *name ? vmm_vm_find(m, name) : NULL;

	if (!v || !v->rec || !strcmp(v->rec->owner, m->conf->node_name))
		return NULL;
	return v->rec->owner;
}

/* The member whose jobs' ids start "NAME-": the node that runs job @id. */
static const char *job_node(struct vmm *m, const char *id)
{
	const struct memb_view *mv = memb_view(m->memb);

	for (uint32_t i = 0; i < mv->n; i++)
		if (job_id_seq(id, mv->nodes[i].name))
			return mv->nodes[i].name;
	return NULL;
}

static bool online(struct vmm *m, const char *node)
{
	const struct memb_node *n = memb_find(memb_view(m->memb), node);

	return n && n->online;
}

const char *vmm_route(struct vmm *m, const Hca__ApiRequest *q)
{
	const char *me = m->conf->node_name, *t = NULL;

	if (m->conf->cluster == CONF_CLUSTER_LOCAL || q->forwarded_by[0])
		return NULL;
	switch (q->op_case) {
	case HCA__API_REQUEST__OP_START:
		t = q->start->on_node[0] ? q->start->on_node : vm_owner_elsewhere(m, q->start->name);
		break;
	case HCA__API_REQUEST__OP_STOP:
		t = vm_owner_elsewhere(m, q->stop->name);
		break;
	case HCA__API_REQUEST__OP_SHUTDOWN:
		t = vm_owner_elsewhere(m, q->shutdown->name);
		break;
	case HCA__API_REQUEST__OP_PAUSE:
		t = vm_owner_elsewhere(m, q->pause->name);
		break;
	case HCA__API_REQUEST__OP_RESUME:
		t = vm_owner_elsewhere(m, q->resume->name);
		break;
	case HCA__API_REQUEST__OP_MIGRATE:
		t = vm_owner_elsewhere(m, q->migrate->name);
		break;
	case HCA__API_REQUEST__OP_UNDEFINE:
		t = vm_owner_elsewhere(m, q->undefine->name);
		break;
	/* a relation is written by the node that owns the VM */
	case HCA__API_REQUEST__OP_REPLICA_ENABLE:
		t = vm_owner_elsewhere(m, q->replica_enable->name);
		break;
	case HCA__API_REQUEST__OP_REPLICA_PAUSE:
		t = vm_owner_elsewhere(m, q->replica_pause->name);
		break;
	case HCA__API_REQUEST__OP_REPLICA_RESUME:
		t = vm_owner_elsewhere(m, q->replica_resume->name);
		break;
	case HCA__API_REQUEST__OP_REPLICA_DISABLE:
		t = vm_owner_elsewhere(m, q->replica_disable->name);
		break;
	case HCA__API_REQUEST__OP_REPLICA_REVERSE:
		t = vm_owner_elsewhere(m, q->replica_reverse->name);
		break;
	case HCA__API_REQUEST__OP_SHOW:
		/* the owner sees its QEMU; this node only what it published */
		t = vm_owner_elsewhere(m, q->show->name);
		if (t && (!m->peers || !online(m, t)))
			t = NULL;
		break;
	case HCA__API_REQUEST__OP_JOB_CANCEL:
		t = job_node(m, q->job_cancel->id);
		break;
	case HCA__API_REQUEST__OP_JOB_SHOW:
		if (jobs_find(m->jobs, q->job_show->id))
			return NULL;
		t = job_node(m, q->job_show->id);
		if (t && (!m->peers || !online(m, t)))
			t = NULL; /* the store's copy will do */
		break;
	default:
		return NULL;
	}
	return t && strcmp(t, me) ? t : NULL;
}

/* ---- forwarding ---- */

struct fwd {
	vmm_reply_fn fn;
	void *ctx;
	char node[64];
};

static void fwd_reply(int err, const void *body, size_t len, const char *msg, void *opaque)
{
	struct fwd *f = opaque;
	Hca__ApiReply *r = NULL;

	if (!err && !(r = hca__api_reply__unpack(NULL, len, body)))
		err = -EPROTO, msg = "malformed reply";
	if (r)
		f->fn(r, f->ctx);
	else if (err == -ETIMEDOUT)
		vmm_reply_error(f->fn, f->ctx, HCA__ERROR_CODE__ERROR_TIMEOUT,
				"node %s did not answer: %s (it may have run there: look again)",
				f->node, msg);
	else
		vmm_reply_error(f->fn, f->ctx, HCA__ERROR_CODE__ERROR_INTERNAL,
				"node %s: %s%s", f->node, msg,
				err == -ECONNRESET ? " (it may have run there: look again)" : "");
	if (r)
		hca__api_reply__free_unpacked(r, NULL);
	free(f);
}

/* The VM a request is about, "" if none. */
static const char *req_vm(const Hca__ApiRequest *q)
{
	switch (q->op_case) {
	case HCA__API_REQUEST__OP_START: return q->start->name;
	case HCA__API_REQUEST__OP_STOP: return q->stop->name;
	case HCA__API_REQUEST__OP_SHUTDOWN: return q->shutdown->name;
	case HCA__API_REQUEST__OP_PAUSE: return q->pause->name;
	case HCA__API_REQUEST__OP_RESUME: return q->resume->name;
	case HCA__API_REQUEST__OP_UNDEFINE: return q->undefine->name;
	case HCA__API_REQUEST__OP_SHOW: return q->show->name;
	case HCA__API_REQUEST__OP_MIGRATE: return q->migrate->name;
	case HCA__API_REQUEST__OP_REPLICA_ENABLE: return q->replica_enable->name;
	case HCA__API_REQUEST__OP_REPLICA_PAUSE: return q->replica_pause->name;
	case HCA__API_REQUEST__OP_REPLICA_RESUME: return q->replica_resume->name;
	case HCA__API_REQUEST__OP_REPLICA_DISABLE: return q->replica_disable->name;
	case HCA__API_REQUEST__OP_REPLICA_REVERSE: return q->replica_reverse->name;
	case HCA__API_REQUEST__OP_REPLICA_FAILOVER: return q->replica_failover->name;
	default: return "";
	}
}

void vmm_forward(struct vmm *m, const char *node, const Hca__ApiRequest *q, vmm_reply_fn fn,
		 void *ctx)
{
	Hca__ApiRequest copy = *q;
	struct fwd *f = NULL;
	uint8_t *buf = NULL;
	size_t len;
	char err[256];
	const char *vm = req_vm(q);

	if (!online(m, node)) {
		if (q->op_case == HCA__API_REQUEST__OP_START && q->start->on_node[0])
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
					"vm %s: --on %s: node %s is offline", vm, node, node);
		else if (q->op_case == HCA__API_REQUEST__OP_START)
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
					"vm %s: owned by node %s, which is offline; start it "
					"elsewhere with --on NODE", vm, node);
		else if (vm[0])
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
					"vm %s: owned by node %s, which is offline", vm, node);
		else
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
					"node %s is offline", node);
		return;
	}
	if (!m->peers) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
				"this is for node %s, and the node channel is off here (%s): run "
				"it there", node, m->peers_off);
		return;
	}
	copy.forwarded_by = (char *)m->conf->node_name;
	len = hca__api_request__get_packed_size(&copy);
	f = calloc(1, sizeof(*f));
	buf = malloc(len ? len : 1);
	if (!f || !buf) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		goto fail;
	}
	hca__api_request__pack(&copy, buf);
	f->fn = fn;
	f->ctx = ctx;
	snprintf(f->node, sizeof(f->node), "%s", node);
	if (peers_call(m->peers, node, "api", buf, len, FWD_TIMEOUT_MS, fwd_reply, f, err,
		       sizeof(err)) < 0) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "%s", err);
		goto fail;
	}
	free(buf);
	return;
fail:
	free(f);
	free(buf);
}

/* ---- the owner's side ---- */

static void api_answer(const Hca__ApiReply *reply, void *ctx)
{
	struct chan_reply *r = ctx;
	size_t len = hca__api_reply__get_packed_size(reply);
	uint8_t *buf = malloc(len ? len : 1);

	if (!buf) {
		chan_reply_error(r, -ENOMEM, "out of memory");
		return;
	}
	hca__api_reply__pack(reply, buf);
	if (chan_reply_ok(r, buf, len) == -EMSGSIZE)
		qb_log(LOG_ERR, "forwarded reply of %zu bytes is over the channel's frame limit",
		       len);
	free(buf);
}

static void on_api(struct chan_reply *r, const void *body, size_t len, void *opaque)
{
	struct vmm *m = opaque;
	Hca__ApiRequest *q = hca__api_request__unpack(NULL, len, body);
	const char *peer = chan_reply_peer(r);

	if (!q) {
		chan_reply_error(r, -EPROTO, "malformed api request");
		return;
	}
	/* who forwarded it is what TLS proved, whatever the message says */
	if (q->forwarded_by != protobuf_c_empty_string)
		free(q->forwarded_by);
	q->forwarded_by = strdup(peer && *peer ? peer : "?");
	if (!q->forwarded_by) {
		hca__api_request__free_unpacked(q, NULL);
		chan_reply_error(r, -ENOMEM, "out of memory");
		return;
	}
	vmm_request(m, q, api_answer, r);
	hca__api_request__free_unpacked(q, NULL);
}

void vmm_fwd_register(struct vmm *m)
{
	int rc = peers_handle(m->peers, "api", on_api, m);

	if (rc < 0 && rc != -EEXIST)
		qb_log(LOG_ERR, "channel: cannot register the api method: %s", strerror(-rc));
}

/* ---- jobs ---- */

struct jread {
	struct exec_item item;
	struct vmm *m;
	char id[JOB_ID_MAX];
	vmm_reply_fn fn;
	void *ctx;
	int rc;
	char err[256];
	Hca__Job **jobs;
	size_t n;
};

static void jread_free(struct jread *r)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->jobs[i])
			hca__job__free_unpacked(r->jobs[i], NULL);
	free(r->jobs);
	free(r);
}

static Hca__Job *read_job(struct sto_store *st, const char *key, int *rc, char *err, size_t len)
{
	uint8_t *buf = NULL;
	size_t blen = 0;
	uint64_t ver = 0;
	Hca__Job *j = NULL;

	*rc = sto_get(st, key, &buf, &blen, &ver, err, len);
	if (*rc == 0 && !(j = job_record_decode(buf, blen, err, len)))
		*rc = -EBADMSG;
	free(buf);
	return j;
}

static void show_fn(struct exec_item *it)
{
	struct jread *r = EXEC_CONTAINER_OF(it, struct jread, item);
	char key[STO_KEY_MAX + 1];

	r->jobs = calloc(1, sizeof(*r->jobs));
	if (!r->jobs) {
		r->rc = -ENOMEM;
		return;
	}
	snprintf(key, sizeof(key), "job/%s", r->id);
	r->jobs[0] = read_job(r->m->store, key, &r->rc, r->err, sizeof(r->err));
	r->n = 1;
}

static void show_done(struct exec_item *it)
{
	struct jread *r = EXEC_CONTAINER_OF(it, struct jread, item);
	Hca__ApiReply rep = HCA__API_REPLY__INIT;

	if (exec_item_cancelled(it))
		vmm_reply_error(r->fn, r->ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "hcad is stopping");
	else if (r->rc == -ENOENT)
		vmm_reply_error(r->fn, r->ctx, HCA__ERROR_CODE__ERROR_NOT_FOUND, "job %s: no such job",
				r->id);
	else if (r->rc < 0)
		vmm_reply_error(r->fn, r->ctx, HCA__ERROR_CODE__ERROR_STORAGE, "job %s: %s", r->id,
				r->err);
	else {
		rep.result_case = HCA__API_REPLY__RESULT_JOB;
		rep.job = r->jobs[0];
		r->fn(&rep, r->ctx);
	}
	jread_free(r);
}

static bool job_id_valid(const char *id)
{
	char key[STO_KEY_MAX + 1];

	snprintf(key, sizeof(key), "job/%s", id);
	return id[0] && strlen(id) < JOB_ID_MAX && sto_key_valid(key);
}

static struct jread *jread_new(struct vmm *m, const char *id, vmm_reply_fn fn, void *ctx)
{
	struct jread *r = calloc(1, sizeof(*r));

	if (!r) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		return NULL;
	}
	r->m = m;
	snprintf(r->id, sizeof(r->id), "%s", id ? id : "");
	r->fn = fn;
	r->ctx = ctx;
	return r;
}

void vmm_job_show(struct vmm *m, const char *id, vmm_reply_fn fn, void *ctx)
{
	struct job *j = id ? jobs_find(m->jobs, id) : NULL;
	struct jread *r;

	if (j) {
		vmm_reply_job(j, fn, ctx);
		return;
	}
	if (!id || !job_id_valid(id)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID,
				"job '%s': not a job id (NODE-NUMBER)", id ? id : "");
		return;
	}
	if (!vmm_storage_ok(m)) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_STORAGE,
				"job %s: not on this node, and storage unavailable: %s", id,
				m->storage_health);
		return;
	}
	if (!(r = jread_new(m, id, fn, ctx)))
		return;
	exec_item_init(&r->item, show_fn, show_done);
	exec_push(m->q_store, &r->item, NULL);
}

static void list_fn(struct exec_item *it)
{
	struct jread *r = EXEC_CONTAINER_OF(it, struct jread, item);
	char **keys = NULL;
	size_t n = 0;
	int rc;

	r->rc = sto_list(r->m->store, "job/", &keys, &n, r->err, sizeof(r->err));
	if (r->rc < 0)
		return;
	r->jobs = calloc(n ? n : 1, sizeof(*r->jobs));
	if (!r->jobs) {
		r->rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		char e[128];
		Hca__Job *j = read_job(r->m->store, keys[i], &rc, e, sizeof(e));
		if (j)
			r->jobs[r->n++] = j;
	}
out:
	sto_keys_free(keys, n);
}

static int newest_first(const void *a, const void *b)
{
	const Hca__Job *x = *(Hca__Job *const *)a, *y = *(Hca__Job *const *)b;

	return x->created_ms < y->created_ms ? 1 : x->created_ms > y->created_ms ? -1 : 0;
}

struct fillctx {
	Hca__Job *recs;
	Hca__JobProgress *pg;
	Hca__Error *e;
	Hca__Job **out;
	size_t n, cap;
};

static void fill_one(const struct job *j, void *opaque)
{
	struct fillctx *c = opaque;

	if (c->n == c->cap)
		return;
	job_fill(j, &c->recs[c->n], &c->pg[c->n], &c->e[c->n]);
	c->out[c->n] = &c->recs[c->n];
	c->n++;
}

static void list_done(struct exec_item *it)
{
	struct jread *r = EXEC_CONTAINER_OF(it, struct jread, item);
	Hca__ApiReply rep = HCA__API_REPLY__INIT;
	Hca__JobList jl = HCA__JOB_LIST__INIT;
	struct fillctx c = { 0 };
	size_t cap = JOB_LIST_MAX + JOB_KEEP + 16;

	if (exec_item_cancelled(it) || r->rc < 0) {
		vmm_reply_error(r->fn, r->ctx, HCA__ERROR_CODE__ERROR_STORAGE, "job list: %s",
				exec_item_cancelled(it) ? "hcad is stopping" : r->err);
		goto out;
	}
	c.recs = calloc(cap, sizeof(*c.recs));
	c.pg = calloc(cap, sizeof(*c.pg));
	c.e = calloc(cap, sizeof(*c.e));
	c.out = calloc(cap + r->n, sizeof(*c.out));
	c.cap = cap;
	if (!c.recs || !c.pg || !c.e || !c.out) {
		vmm_reply_error(r->fn, r->ctx, HCA__ERROR_CODE__ERROR_INTERNAL, "out of memory");
		goto done;
	}
	/* this node's jobs as they are now; the others' as stored */
	jobs_each(r->m->jobs, fill_one, &c);
	for (size_t i = 0; i < r->n; i++)
		if (!jobs_find(r->m->jobs, r->jobs[i]->id))
			c.out[c.n++] = r->jobs[i];
	qsort(c.out, c.n, sizeof(*c.out), newest_first);
	jl.n_jobs = c.n < JOB_LIST_MAX ? c.n : JOB_LIST_MAX;
	jl.jobs = c.out;
	rep.result_case = HCA__API_REPLY__RESULT_JOBS;
	rep.jobs = &jl;
	r->fn(&rep, r->ctx);
done:
	free(c.recs);
	free(c.pg);
	free(c.e);
	free(c.out);
out:
	jread_free(r);
}

void vmm_job_list(struct vmm *m, vmm_reply_fn fn, void *ctx)
{
	struct jread *r = jread_new(m, NULL, fn, ctx);

	if (!r)
		return;
	exec_item_init(&r->item, list_fn, list_done);
	exec_push(m->q_store, &r->item, NULL);
}

void vmm_job_cancel(struct vmm *m, const char *id, const char *via, vmm_reply_fn fn, void *ctx)
{
	struct job *j = id ? jobs_find(m->jobs, id) : NULL;
	char err[256];

	if (!j) {
		const char *node = id ? job_node(m, id) : NULL;
		if (!id || !job_id_valid(id))
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_INVALID,
					"job '%s': not a job id (NODE-NUMBER)", id ? id : "");
		else if (node && strcmp(node, m->conf->node_name))
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE,
					"job %s: runs on node %s, which cannot be reached", id, node);
		else
			vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_NOT_FOUND,
					"job %s: no such job on this node", id);
		return;
	}
	if (job_request_cancel(j, err, sizeof(err)) < 0) {
		vmm_reply_error(fn, ctx, HCA__ERROR_CODE__ERROR_BAD_STATE, "%s", err);
		return;
	}
	qb_log(LOG_NOTICE, "job %s: cancel requested%s%s", id, via && *via ? " from " : "",
	       via ? via : "");
	vmm_reply_job(j, fn, ctx);
}
