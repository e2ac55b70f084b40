/* The destination side of a live migration (migration/mig_dst.c) as a peer
 * sees it: every request from the wire is checked before anything is
 * started (malformed, from a node that does not own the VM, an impossible
 * plan, over the node's limit, without credentials), the agent's refusal
 * reaches the source with its reason, and ready/commit/abort for a
 * migration that does not exist, or with the wrong epoch, are refused.
 * The channel is replaced by a recorder of answers; no QEMU is started. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qbloop.h>

#include "base/env.h"
#include "base/exec.h"
#include "migration/mig.h"
#include "migration/mig_priv.h"
#include "proto/chan.h"

/* ---- the channel, as a recorder ---- */

struct chan_reply {
	char peer[64];
	int answered;
	int err;
	char msg[512];
	size_t len;
};

int chan_reply_ok(struct chan_reply *r, const void *body, size_t len)
{
	(void)body;
	r->answered++;
	r->err = 0;
	r->len = len;
	return 0;
}

int chan_reply_error(struct chan_reply *r, int err, const char *fmt, ...)
{
	va_list ap;

	r->answered++;
	r->err = err;
	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
	return 0;
}

const char *chan_reply_peer(const struct chan_reply *r)
{
	return r->peer;
}

/* ---- the environment and the agent, as fakes ---- */

#define N_METHODS 8

struct fx {
	qb_loop_t *loop;
	struct exec *exec;
	struct hca_env env;
	struct mig_host host;
	struct mig *mig;
	const char *names[N_METHODS];
	env_handler_fn fns[N_METHODS];
	void *opaques[N_METHODS];
	size_t n;
	/* incoming_start */
	int starts;
	int start_rc;
	char start_vm[64], start_src[64];
	uint64_t start_epoch, start_inc;
	size_t start_disks;
	char start_disk0[64];
	int discards;
	mig_hv_fn done; /* the launch's callback, owed */
	void *done_opaque;
};

static int fx_handle(void *ctx, const char *method, env_handler_fn fn, void *opaque)
{
	struct fx *f = ctx;

	assert_true(f->n < N_METHODS);
	f->names[f->n] = method;
	f->fns[f->n] = fn;
	f->opaques[f->n++] = opaque;
	return 0;
}

static bool fx_true(void *ctx, const char *node)
{
	(void)ctx;
	(void)node;
	return true;
}

static bool fx_quorate(void *ctx)
{
	(void)ctx;
	return true;
}

static int fx_addr(void *ctx, const char *node, char *out, size_t len)
{
	(void)ctx;
	(void)node;
	snprintf(out, len, "127.0.0.1"); /* the NBD port is bound here */
	return 0;
}

static int fx_incoming_start(void *ctx, const char *vm, const char *source, uint64_t epoch,
			     uint64_t incarnation, const Hca__MigDisk *const *disks,
			     size_t n_disks, mig_hv_fn done, void *opaque, char *err,
			     size_t errlen)
{
	struct fx *f = ctx;

	f->start_disks = n_disks;
	if (n_disks)
		snprintf(f->start_disk0, sizeof(f->start_disk0), "%s", disks[0]->disk);
	f->done = done;
	f->done_opaque = opaque;
	f->starts++;
	snprintf(f->start_vm, sizeof(f->start_vm), "%s", vm);
	snprintf(f->start_src, sizeof(f->start_src), "%s", source);
	f->start_epoch = epoch;
	f->start_inc = incarnation;
	if (f->start_rc)
		snprintf(err, errlen, "node node2 has no room for vm %s", vm);
	return f->start_rc; /* 0: QEMU "comes up" later: never, here */
}

static void fx_discard(void *ctx, const char *vm)
{
	(void)vm;
	((struct fx *)ctx)->discards++;
}

static struct hv_vm *fx_hv(void *ctx, const char *vm)
{
	(void)ctx;
	(void)vm;
	return NULL;
}

static void fx_committed(void *ctx, const char *vm, const char *owner, uint64_t epoch,
			 uint64_t version)
{
	(void)ctx;
	(void)vm;
	(void)owner;
	(void)epoch;
	(void)version;
}

static void fx_ended(void *ctx, const char *vm, struct job *j, bool moved)
{
	(void)ctx;
	(void)vm;
	(void)j;
	(void)moved;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	f->loop = qb_loop_create();
	f->exec = exec_new(f->loop);
	f->env = (struct hca_env){ .loop = f->loop, .exec = f->exec, .node = "node2", .ctx = f,
				   .handle = fx_handle, .quorate = fx_quorate,
				   .member = fx_true, .online = fx_true, .node_addr = fx_addr };
	f->host = (struct mig_host){ .ctx = f, .incoming_start = fx_incoming_start,
				     .incoming_discard = fx_discard, .vm_hv = fx_hv,
				     .committed = fx_committed, .ended = fx_ended,
				     .tls_dir = "/nonexistent/qemu-tls", .max_in = 1 };
	f->mig = mig_new(&f->env, &f->host);
	assert_non_null(f->mig);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	mig_free(f->mig);
	exec_free(f->exec, 2000);
	qb_loop_destroy(f->loop);
	free(f);
	return 0;
}

static env_handler_fn method(struct fx *f, const char *name, void **opaque)
{
	for (size_t i = 0; i < f->n; i++)
		if (!strcmp(f->names[i], name)) {
			*opaque = f->opaques[i];
			return f->fns[i];
		}
	fail_msg("method %s not registered", name);
	return NULL;
}

/* Call @name as @peer with @body; the answer in *@r (exactly one). */
static void call(struct fx *f, const char *name, const char *peer, const void *body, size_t len,
		 struct chan_reply *r)
{
	void *opaque = NULL;
	env_handler_fn fn = method(f, name, &opaque);

	memset(r, 0, sizeof(*r));
	snprintf(r->peer, sizeof(r->peer), "%s", peer);
	fn(r, body, len, opaque);
}

struct prep {
	Hca__MigPrepare q;
	Hca__VmRecord rec;
	Hca__VmSpec spec;
	uint8_t buf[1024];
	size_t len;
};

/* A well-formed request from node1 for web1 at epoch 4. */
static void prep_init(struct prep *p)
{
	hca__mig_prepare__init(&p->q);
	hca__vm_record__init(&p->rec);
	hca__vm_spec__init(&p->spec);
	p->spec.name = "web1";
	p->rec.spec = &p->spec;
	p->rec.owner = "node1";
	p->rec.owner_epoch = 4;
	p->rec.incarnation = 77;
	p->rec.active = true;
	p->q.job = "node1-9";
	p->q.record = &p->rec;
	p->q.source = "node1";
	p->q.multifd = true;
	p->q.streams = 2;
	p->q.compress = HCA__MIG_COMPRESS__MIG_COMPRESS_NONE;
	p->q.tls = true;
}

static void prep_pack(struct prep *p)
{
	p->len = hca__mig_prepare__get_packed_size(&p->q);
	assert_true(p->len <= sizeof(p->buf));
	hca__mig_prepare__pack(&p->q, p->buf);
}

static void prepare_checks_before_starting_anything(void **state)
{
	struct fx *f = *state;
	struct chan_reply r;
	struct prep p;
	static const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0x0f, 0x12 };

	call(f, "mig.prepare", "node1", junk, sizeof(junk), &r);
	assert_int_equal(r.answered, 1);
	assert_int_equal(r.err, -EPROTO);

	prep_init(&p);
	p.q.source = "node3"; /* says another node sends it */
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(r.err, -EPERM);

	prep_init(&p);
	prep_pack(&p); /* node1's request, but node3 on the wire */
	call(f, "mig.prepare", "node3", p.buf, p.len, &r);
	assert_int_equal(r.err, -EPERM);
	assert_non_null(strstr(r.msg, "node3"));

	prep_init(&p);
	p.rec.owner = "node3"; /* not the owner's own VM */
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(r.err, -EPERM);

	prep_init(&p);
	p.spec.name = "../../etc"; /* not a VM name */
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(r.err, -EPROTO);

	prep_init(&p);
	p.q.streams = 100000; /* a count from the wire, bounded */
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(r.err, -EINVAL);

	prep_init(&p);
	p.q.postcopy = true; /* QEMU 10.0: not with multifd */
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(r.err, -EINVAL);

	prep_init(&p);
	p.q.compress = (Hca__MigCompress)9; /* a newer peer's value */
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(r.err, -EINVAL);

	assert_int_equal(f->starts, 0); /* none of that reached the agent */
}

static void prepare_without_credentials_is_refused(void **state)
{
	struct fx *f = *state;
	struct chan_reply r;
	struct prep p;

	mig_free(f->mig);
	f->n = 0;
	f->host.tls_dir = NULL;
	f->mig = mig_new(&f->env, &f->host);
	prep_init(&p);
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(r.err, -ENOKEY);
	assert_int_equal(f->starts, 0);
}

static void the_agents_refusal_reaches_the_source(void **state)
{
	struct fx *f = *state;
	struct chan_reply r;
	struct prep p;

	f->start_rc = -ENOSPC;
	prep_init(&p);
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(f->starts, 1);
	assert_string_equal(f->start_vm, "web1");
	assert_string_equal(f->start_src, "node1");
	assert_int_equal(f->start_epoch, 4);
	assert_int_equal(f->start_inc, 77);
	assert_int_equal(r.answered, 1);
	assert_true(r.err < 0);
	assert_non_null(strstr(r.msg, "no room"));
	assert_int_equal(f->discards, 0); /* nothing was started */
}

static void limits_and_unknown_migrations(void **state)
{
	struct fx *f = *state;
	struct chan_reply r, held;
	struct prep p;
	Hca__MigEnd e = HCA__MIG_END__INIT;
	uint8_t buf[256];
	size_t len;

	/* one accepted (its QEMU never comes up here): the answer is owed */
	prep_init(&p);
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &held);
	assert_int_equal(held.answered, 0);
	/* the same VM again, and another one over max_in = 1 */
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(r.err, -EBUSY);
	p.spec.name = "web2";
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(r.err, -EBUSY);
	assert_non_null(strstr(r.msg, "limit"));

	/* commit at the wrong epoch, from the wrong job, for an unknown VM */
	e.vm = "web1";
	e.job = "node1-9";
	e.owner_epoch = 4; /* not 5 */
	e.incarnation = 77;
	len = hca__mig_end__pack(&e, buf);
	call(f, "mig.commit", "node1", buf, len, &r);
	assert_int_equal(r.err, -EINVAL);
	e.job = "node1-10";
	len = hca__mig_end__pack(&e, buf);
	call(f, "mig.commit", "node1", buf, len, &r);
	assert_int_equal(r.err, -EPERM);
	e.vm = "web9";
	len = hca__mig_end__pack(&e, buf);
	call(f, "mig.ready", "node1", buf, len, &r);
	assert_int_equal(r.err, -ENOENT);
	call(f, "mig.commit", "node1", buf, len, &r);
	assert_int_equal(r.err, -ENOENT);
	call(f, "mig.abort", "node1", buf, len, &r); /* nothing to abort: fine */
	assert_int_equal(r.answered, 1);
	assert_int_equal(r.err, 0);

	/* the abort of the held one: its QEMU goes, the owed answer comes */
	e.vm = "web1";
	e.job = "node1-9";
	e.reason = "cancelled";
	len = hca__mig_end__pack(&e, buf);
	call(f, "mig.abort", "node3", buf, len, &r); /* not the source */
	assert_int_equal(r.err, -EPERM);
	call(f, "mig.abort", "node1", buf, len, &r);
	assert_int_equal(r.err, 0);
	assert_int_equal(f->discards, 1);
	assert_int_equal(held.answered, 1);
	assert_true(held.err < 0);
	f->done(f->done_opaque, NULL, -ECANCELED, "never came up"); /* frees it */
	/* and the slot is free again */
	prep_init(&p);
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &held);
	assert_int_equal(held.answered, 0);
	call(f, "mig.abort", "node1", buf, len, &r);
	assert_int_equal(held.answered, 1);
	f->done(f->done_opaque, NULL, -ECANCELED, "never came up");
}

/* --with-storage: every disk the peer names is checked before the agent
 * makes a volume for it. */
static void disks_are_checked_before_the_agent(void **state)
{
	struct fx *f = *state;
	struct chan_reply r;
	struct prep p;
	Hca__MigDisk d = HCA__MIG_DISK__INIT, *many[MIG_DISKS_MAX + 1];
	Hca__MigDisk *one[1] = { &d };

	d.disk = "root";
	d.volume = "web1-root";
	d.size_bytes = 8ull << 30;
	d.allocated = 1ull << 30;
	d.format = HCA__DISK_FORMAT__DISK_FORMAT_QCOW2;

	for (size_t i = 0; i <= MIG_DISKS_MAX; i++)
		many[i] = &d;
	prep_init(&p);
	p.q.disks = many;
	p.q.n_disks = MIG_DISKS_MAX + 1; /* a count from the wire */
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(r.err, -E2BIG);

	prep_init(&p);
	p.q.disks = one;
	p.q.n_disks = 1;
	d.disk = "../etc";
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(r.err, -EINVAL);
	d.disk = "root";

	d.size_bytes = 0;
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(r.err, -EINVAL);
	d.size_bytes = 8ull << 30;

	d.allocated = 16ull << 30; /* holds twice its size: a lie */
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(r.err, -EINVAL);
	d.allocated = 1ull << 30;

	d.format = (Hca__DiskFormat)7;
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(r.err, -EINVAL);
	d.format = HCA__DISK_FORMAT__DISK_FORMAT_QCOW2;

	p.q.tls = false; /* disks never move in clear */
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(r.err, -EINVAL);
	assert_int_equal(f->starts, 0);

	/* a good one reaches the agent, which refuses for want of room */
	f->start_rc = -ENOSPC;
	p.q.tls = true;
	prep_pack(&p);
	call(f, "mig.prepare", "node1", p.buf, p.len, &r);
	assert_int_equal(f->starts, 1);
	assert_int_equal(f->start_disks, 1);
	assert_string_equal(f->start_disk0, "root");
	assert_int_equal(r.answered, 1);
	assert_non_null(strstr(r.msg, "no room"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(prepare_checks_before_starting_anything, setup,
						teardown),
		cmocka_unit_test_setup_teardown(prepare_without_credentials_is_refused, setup,
						teardown),
		cmocka_unit_test_setup_teardown(the_agents_refusal_reaches_the_source, setup,
						teardown),
		cmocka_unit_test_setup_teardown(limits_and_unknown_migrations, setup, teardown),
		cmocka_unit_test_setup_teardown(disks_are_checked_before_the_agent, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
