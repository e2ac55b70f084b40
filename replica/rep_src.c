/*
 * rep_src: one replication cycle on the source node (see rep_src.h for the
 * phases). Every QMP argument comes from rep_cut.h; the reads from
 * rep_read.h on the executor; the bytes go out through rep_stream.h.
 *
 * The state of a cycle is its phase and the disk it is at; every QMP reply
 * and event moves it one step. Any failure after the cut still runs the
 * whole teardown and folds the frozen bitmaps into the new ones, so a
 * failed cycle loses nothing: the next one ships its changes too.
 */
#include "replica/rep_src.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <qb/qblog.h>

#include "hypervisor/hv.h"
#include "replica/rep_cut.h"
#include "replica/rep_digest.h"
#include "replica/rep_dst.h"
#include "replica/rep_ga.h"
#include "replica/rep_read.h"

#define QMP_TIMEOUT_MS 10000u
#define WAIT_EVENT_MS 10000u      /* an export's or a job's end, at most */
/* bytes a read item gathers: above ~2 MiB of buffers freed per batch,
 * glibc hands the heap back and faults it in again every batch (measured:
 * 230 MB/s at 4 MiB against 1.6 GB/s at 2 MiB) */
#define READ_BATCH (2u << 20)
#define READ_CHUNKS 256u

enum phase {
	PH_PLAN,      /* reading the bitmaps, removing stale ones */
	PH_PREPARE,   /* the temporary targets */
	PH_FREEZE,    /* app-consistent: the guest agent freezes */
	PH_CUT,
	PH_VIEW,      /* views and exports */
	PH_DIGESTS,   /* resync: the replica's digests of the disks read whole */
	PH_SHIP,
	PH_TEARDOWN,
	PH_SETTLE,
};

static const char *const phase_names[] = {
	[PH_PLAN] = "plan", [PH_PREPARE] = "prepare", [PH_FREEZE] = "freeze", [PH_CUT] = "cut",
	[PH_VIEW] = "view", [PH_DIGESTS] = "digests",
	[PH_SHIP] = "ship", [PH_TEARDOWN] = "teardown", [PH_SETTLE] = "settle",
};

struct cyc;

/* A read of the next batch of one disk, on the executor. */
struct rd {
	struct exec_item item;
	struct cyc *c;
	struct rep_reader *r;      /* opened by the first item of the disk */
	unsigned disk;
	char sock[256], name[REP_CUT_NODE_MAX + 1], bitmap[REP_CUT_BITMAP_LEN];
	const struct rep_dmap *dmap; /* resync: the replica's digests of this disk */
	struct rep_chunk in[READ_CHUNKS];
	size_t n_in;               /* chunks read: 0 at the disk's end */
	struct rep_chunk ch[READ_CHUNKS * 4]; /* what goes (in[], filtered) */
	uint64_t same;             /* bytes the filter dropped */
	size_t n;                  /* chunks to push */
	size_t next;               /* chunks pushed so far */
	int rc;
	char err[256];
};

struct cyc {
	struct rep_src *s;
	struct rep_src_req q;
	rep_src_done_fn done;
	void *opaque;
	struct rep_src_result res;
	enum phase ph;
	unsigned i;                /* the disk the phase is at */
	unsigned sub;              /* teardown: the step within the disk */
	bool cut;                  /* the transaction succeeded */
	bool cancelled;
	bool tx_done;              /* the stream's done() came */
	uint64_t start_ms;
	struct rep_cut_disk cd[REP_DISKS_MAX];
	bool tmp_added[REP_DISKS_MAX], view_added[REP_DISKS_MAX], exported[REP_DISKS_MAX];
	bool job[REP_DISKS_MAX];   /* its cut job (and filter) is in QEMU */
	char tmp_path[REP_DISKS_MAX][320];
	char sock[256];
	/* removals and folds of stale bitmaps, before the cut */
	json_t *fix;               /* array of [cmd, args] */
	size_t fix_i;
	/* teardown waits for an event */
	const char *wait_event;
	char wait_id[REP_CUT_NODE_MAX + 1];
	bool wait_reply;           /* a teardown command's reply is due */
	qb_loop_timer_handle wait_timer;
	struct rep_tx *tx;
	struct rd *rd;             /* the read under way or being pushed */
	/* the guest agent: freeze before the cut, thaw after it, on a worker */
	struct exec_item ga;
	bool ga_busy;              /* a freeze or thaw runs */
	bool done_pending;         /* finish() waits for the thaw */
	bool frozen;               /* a freeze was asked: a thaw must follow */
	int ga_rc;
	char ga_err[200];
	bool reading;
	/* resync: the replica's digests of its newest point, per disk read whole */
	struct rep_dmap dmap[REP_DISKS_MAX];
	uint64_t dpoint;           /* the point they are of */
	bool dpoint_known;
	uint64_t doff;             /* the next request's offset in disk i */
	bool calling;              /* a rep.digests call is under way */
	bool orphan;               /* rep_src_free ran meanwhile: the reply frees it */
	bool resync;
	struct cyc *next;
};

struct rep_src {
	const struct hca_env *env;
	struct rep_ctx *x;
	struct exec_queue *q;
	struct rep_src_host h;
	struct cyc *cycles;
};

static uint64_t now_ms(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct cyc *cyc_find(const struct rep_src *s, const char *vm)
{
	for (struct cyc *c = s->cycles; c; c = c->next)
		if (!strcmp(c->q.vm, vm))
			return c;
	return NULL;
}

static void cyc_unlink(struct cyc *c)
{
	for (struct cyc **p = &c->s->cycles; *p; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			return;
		}
}

static void teardown(struct cyc *c);
static void step(struct cyc *c);

/* The first error of the cycle is the one reported; later ones are logged. */
__attribute__((format(printf, 3, 4)))
static void fail(struct cyc *c, int err, const char *fmt, ...)
{
	char msg[sizeof(c->res.msg)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (c->res.err) {
		qb_log(LOG_WARNING, "replica: vm %s: cycle %" PRIu64 ": also: %s", c->q.vm,
		       c->res.cycle, msg);
		return;
	}
	c->res.err = err ? err : -EIO;
	snprintf(c->res.msg, sizeof(c->res.msg), "%s", msg);
}

/* ---- QMP ---- */

typedef void (*reply_fn)(struct cyc *c, int err, json_t *ret, const char *desc);

struct call {
	struct cyc *c;
	reply_fn fn;
	char cmd[40];
};

static void on_reply(struct hv_vm *vm, int err, json_t *ret, const char *errclass,
		     const char *errdesc, void *opaque)
{
	struct call *k = opaque;
	char desc[300];

	(void)vm;
	(void)errclass;
	snprintf(desc, sizeof(desc), "%s: %s", k->cmd,
		 errdesc ? errdesc : err ? strerror(-err) : "ok");
	if (k->c)
		k->fn(k->c, err, ret, desc);
	free(k);
}

/* Send @q (its args stolen); the reply goes to @fn. */
static void qmp(struct cyc *c, struct rep_qmp q, reply_fn fn)
{
	struct hv_vm *hv = c->s->h.vm_hv(c->s->h.ctx, c->q.vm);
	struct call *k = NULL;
	int rc = -ENOMEM;

	if (!q.args)
		goto out;
	if (!hv) {
		rc = -ENOENT;
		goto out;
	}
	if (!(k = calloc(1, sizeof(*k))))
		goto out;
	k->c = c;
	k->fn = fn;
	snprintf(k->cmd, sizeof(k->cmd), "%s", q.cmd);
	rc = hv_vm_qmp(hv, q.cmd, q.args, QMP_TIMEOUT_MS, on_reply, k);
	q.args = NULL;
	if (rc == 0)
		return;
	free(k);
out:
	json_decref(q.args);
	fn(c, rc, NULL, rc == -ENOENT ? "the VM's QEMU is gone" : "cannot send a QMP command");
}

/* ---- plan: which bitmaps can be used ---- */

static void fix_add(struct cyc *c, struct rep_qmp q)
{
	if (q.args)
		json_array_append_new(c->fix, json_pack("[s, o]", q.cmd, q.args));
}

static void fix_remove(struct cyc *c, const char *disk, uint64_t cycle)
{
	char bm[REP_CUT_BITMAP_LEN], node[REP_CUT_NODE_MAX + 1];

	rep_cut_bitmap_name(cycle, bm);
	snprintf(node, sizeof(node), "drive-%s", disk);
	fix_add(c, (struct rep_qmp){ "block-dirty-bitmap-remove",
				     json_pack("{s:s, s:s}", "node", node, "name", bm) });
}

static void fixed(struct cyc *c, int err, json_t *ret, const char *desc);

static void fix_next(struct cyc *c)
{
	json_t *e;

	if (c->fix_i >= json_array_size(c->fix)) {
		c->ph = PH_PREPARE;
		c->i = 0;
		step(c);
		return;
	}
	e = json_array_get(c->fix, c->fix_i++);
	qmp(c, (struct rep_qmp){ json_string_value(json_array_get(e, 0)),
				 json_incref(json_array_get(e, 1)) }, fixed);
}

static void fixed(struct cyc *c, int err, json_t *ret, const char *desc)
{
	(void)ret;
	if (err) {
		fail(c, err, "vm %s: a stale change bitmap: %s", c->q.vm, desc);
		teardown(c);
		return;
	}
	fix_next(c);
}

static bool has_node(json_t *ret, const char *name)
{
	size_t i;
	json_t *e;

	json_array_foreach(ret, i, e) {
		const char *n = json_string_value(json_object_get(e, "node-name"));
		if (n && !strcmp(n, name))
			return true;
	}
	return false;
}

/*
 * What a cycle cut short by an hcad restart left in QEMU (the names are
 * ours alone): marked for the teardown, which removes it. True if any.
 */
static bool leftovers(struct cyc *c, json_t *ret)
{
	bool any = false;

	for (unsigned i = 0; i < c->q.ndisks; i++) {
		struct rep_cut_names n;
		if (rep_cut_names(c->q.disks[i].name, &n) < 0)
			continue;
		c->view_added[i] = c->exported[i] = has_node(ret, n.view);
		c->job[i] = has_node(ret, n.cbw);
		c->tmp_added[i] = has_node(ret, n.tmp);
		any = any || c->view_added[i] || c->job[i] || c->tmp_added[i];
	}
	return any;
}

/*
 * Per disk: the newest consistent hca-rep-M is what it ships, when every
 * disk that has one agrees on M (the cycle is then M + 1); an M - 1 beside
 * it (a cycle cut before hcad stopped, never settled) is folded into it;
 * anything else is removed, and a disk without a usable bitmap is read
 * whole this cycle.
 */
static void planned(struct cyc *c, int err, json_t *ret, const char *desc)
{
	struct rep_bitmaps b[REP_DISKS_MAX];
	uint64_t newest[REP_DISKS_MAX] = { 0 }, m = 0;

	if (err) {
		fail(c, err, "vm %s: %s", c->q.vm, desc);
		teardown(c);
		return;
	}
	if (leftovers(c, ret)) {
		fail(c, -EAGAIN, "vm %s: removing what an interrupted cycle left in its QEMU; "
		     "the next cycle goes on", c->q.vm);
		teardown(c);
		return;
	}
	for (unsigned i = 0; i < c->q.ndisks; i++) {
		if (rep_cut_bitmaps_parse(ret, c->q.disks[i].name, &b[i]) < 0 || !b[i].found) {
			fail(c, -ENOENT, "vm %s: disk %s is not in its QEMU", c->q.vm,
			     c->q.disks[i].name);
			teardown(c);
			return;
		}
		for (unsigned k = 0; k < b[i].n; k++)
			if (!b[i].b[k].inconsistent && b[i].b[k].cycle > newest[i])
				newest[i] = b[i].b[k].cycle;
		if (newest[i] > m)
			m = newest[i];
	}
	/*
	 * What the bitmap holds is what changed since the replica's newest
	 * point only while the replica has one: without (no point yet, or
	 * the replica refused the last cycle's base), every disk is read whole.
	 */
	if (!c->q.base || c->q.whole)
		m = 0;
	c->res.cycle = m ? m + 1 : c->q.min_cycle;
	for (unsigned i = 0; !m && i < c->q.ndisks; i++)
		for (unsigned k = 0; k < b[i].n; k++)
			if (b[i].b[k].cycle >= c->res.cycle)
				c->res.cycle = b[i].b[k].cycle + 1; /* names stay unique */
	if (c->res.cycle <= c->q.base)
		c->res.cycle = c->q.base + 1;
	c->res.whole_disks = 0;
	for (unsigned i = 0; i < c->q.ndisks; i++) {
		struct rep_cut_disk *d = &c->cd[i];
		bool fold = false;
		d->name = c->q.disks[i].name;
		d->qcow2 = !c->q.disks[i].raw;
		d->has_prev = m && newest[i] == m && rep_cut_bitmap_usable(&b[i], m);
		for (unsigned k = 0; k < b[i].n; k++) {
			const struct rep_bitmap *e = &b[i].b[k];
			if (d->has_prev && e->cycle == m)
				continue;
			if (d->has_prev && e->cycle + 1 == m && !e->inconsistent)
				fold = true;
			else
				fix_remove(c, d->name, e->cycle);
		}
		if (fold) {
			struct rep_cut_disk one = *d;
			fix_add(c, rep_cut_failed(m, &one, 1));
		}
		if (!d->has_prev)
			c->res.whole_disks++;
	}
	c->res.full = c->res.whole_disks == c->q.ndisks;
	qb_log(LOG_DEBUG, "replica: vm %s: cycle %" PRIu64 " on point %" PRIu64 ", %u of %u "
	       "disks read whole, %zu bitmap fixes", c->q.vm, c->res.cycle, c->q.base,
	       c->res.whole_disks, c->q.ndisks, json_array_size(c->fix));
	fix_next(c);
}

/* ---- prepare, cut, view ---- */

static void prepared(struct cyc *c, int err, json_t *ret, const char *desc);
static void cut_done(struct cyc *c, int err, json_t *ret, const char *desc);
static void viewed(struct cyc *c, int err, json_t *ret, const char *desc);
static void ship(struct cyc *c);

/* A sparse file as big as the disk: the filter copies old data into it. */
static int tmp_make(struct cyc *c, unsigned i)
{
	char path[sizeof(c->tmp_path[0])];
	int fd;

	snprintf(path, sizeof(path), "%s/%s.%s.cbw", c->s->h.work_dir, c->q.vm,
		 c->q.disks[i].name);
	memcpy(c->tmp_path[i], path, sizeof(path));
	unlink(c->tmp_path[i]);
	fd = open(c->tmp_path[i], O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)c->q.disks[i].size) < 0) {
		int e = -errno;
		if (fd >= 0)
			close(fd);
		return e;
	}
	close(fd);
	return 0;
}

static void prepare_next(struct cyc *c)
{
	int rc;

	if (c->i >= c->q.ndisks) {
		c->ph = c->q.app_consistent && c->q.qga[0] ? PH_FREEZE : PH_CUT;
		step(c);
		return;
	}
	if ((rc = tmp_make(c, c->i)) < 0) {
		fail(c, rc, "vm %s: %s: %s", c->q.vm, c->tmp_path[c->i], strerror(-rc));
		teardown(c);
		return;
	}
	qmp(c, rep_cut_tmp_add(c->q.disks[c->i].name, c->tmp_path[c->i]), prepared);
}

static void prepared(struct cyc *c, int err, json_t *ret, const char *desc)
{
	(void)ret;
	if (err) {
		fail(c, err, "vm %s: disk %s: %s", c->q.vm, c->q.disks[c->i].name, desc);
		teardown(c);
		return;
	}
	c->tmp_added[c->i++] = true;
	if (c->cancelled) {
		teardown(c);
		return;
	}
	prepare_next(c);
}

static void freeze_fn(struct exec_item *it)
{
	struct cyc *c = EXEC_CONTAINER_OF(it, struct cyc, ga);

	c->ga_rc = rep_ga_freeze(c->q.qga, REP_GA_FREEZE_MS, c->ga_err, sizeof(c->ga_err));
}

static void freeze_done(struct exec_item *it)
{
	struct cyc *c = EXEC_CONTAINER_OF(it, struct cyc, ga);

	c->ga_busy = false;
	if (c->ga_rc >= 0) {
		c->res.app_consistent = true;
	} else {
		/* a crash-consistent point all the same */
		qb_log(LOG_WARNING, "replica: vm %s: cycle %" PRIu64 ": the guest's file systems "
		       "were not frozen (%s): the point is crash-consistent", c->q.vm,
		       c->res.cycle, c->ga_err);
	}
	c->ph = PH_CUT;
	step(c);
}

static void thaw_fn(struct exec_item *it)
{
	struct cyc *c = EXEC_CONTAINER_OF(it, struct cyc, ga);

	c->ga_rc = rep_ga_thaw(c->q.qga, 3 * REP_GA_FREEZE_MS, c->ga_err, sizeof(c->ga_err));
}

static void finish(struct cyc *c);

static void thaw_done(struct exec_item *it)
{
	struct cyc *c = EXEC_CONTAINER_OF(it, struct cyc, ga);

	c->ga_busy = false;
	c->frozen = false;
	if (c->ga_rc < 0 && c->ga_rc != -ENOENT && c->ga_rc != -ECONNREFUSED)
		qb_log(LOG_ERR, "replica: vm %s: the guest's file systems may still be FROZEN: "
		       "%s (thaw it: the guest agent's guest-fsfreeze-thaw)", c->q.vm, c->ga_err);
	if (c->ph == PH_SETTLE && c->done_pending)
		finish(c);
}

/* Thaw after the cut, whatever happened: never leave a guest frozen. */
static void thaw(struct cyc *c)
{
	if (!c->frozen || c->ga_busy)
		return;
	c->ga_busy = true;
	exec_item_init(&c->ga, thaw_fn, thaw_done);
	exec_push(c->s->q, &c->ga, NULL);
}

static void cut_done(struct cyc *c, int err, json_t *ret, const char *desc)
{
	(void)ret;
	thaw(c);
	if (err) {
		fail(c, err, "vm %s: the cut: %s", c->q.vm, desc);
		teardown(c);
		return;
	}
	c->cut = true;
	for (unsigned i = 0; i < c->q.ndisks; i++)
		c->job[i] = true;
	c->res.cut_ms = now_ms(CLOCK_REALTIME);
	c->ph = PH_VIEW;
	c->i = 0;
	c->sub = 0;
	step(c);
}

/* ---- digests: what the replica's newest point holds (a resync) ---- */

#define DIGEST_CALL_MS 60000u
#define DIGEST_CALL_BYTES (256u << 20) /* of disk a call covers, at most */

static void digests_next(struct cyc *c);

static void dmaps_free(struct cyc *c)
{
	for (unsigned i = 0; i < REP_DISKS_MAX; i++)
		rep_dmap_free(&c->dmap[i]);
}

/* One reply's runs into disk i's map, every bound checked. */
static int digests_take(struct cyc *c, const Hca__RepDigests *m, char *why, size_t len)
{
	struct rep_dmap *dm = &c->dmap[c->i];
	uint64_t size = c->q.disks[c->i].size;
	int rc;

	if (c->dpoint_known && m->point != c->dpoint)
		return snprintf(why, len, "its newest point changed from %" PRIu64 " to %" PRIu64
				" meanwhile", c->dpoint, m->point), -ESTALE;
	if (m->next <= c->doff || m->next > size)
		return snprintf(why, len, "a reply that goes on at %" PRIu64 " after %" PRIu64,
				m->next, c->doff), -EPROTO;
	for (size_t k = 0; k < m->n_runs; k++) {
		const Hca__RepDigestRun *r = m->runs[k];
		uint64_t blocks = r->digests.len / REP_DIGEST_LEN;

		if (r->offset < c->doff || r->offset > m->next ||
		    blocks > (m->next - r->offset + dm->gran - 1) / dm->gran)
			return snprintf(why, len, "a run of digests outside what it covers"),
			       -EPROTO;
		rc = rep_dmap_add(dm, r->offset, r->digests.data, r->digests.len, size);
		if (rc == -E2BIG)
			return snprintf(why, len, "more digests than kept"), rc;
		if (rc < 0)
			return snprintf(why, len, "a malformed run of digests"), rc;
	}
	c->dpoint = m->point;
	c->dpoint_known = true;
	c->doff = m->next;
	return 0;
}

static void on_digests(int err, const void *body, size_t len, const char *msg, void *opaque)
{
	struct cyc *c = opaque;
	Hca__RepDigests *m = NULL;
	char why[200] = "";
	int rc = err;

	c->calling = false;
	if (c->orphan) {
		dmaps_free(c);
		json_decref(c->fix);
		free(c);
		return;
	}
	if (c->cancelled) {
		teardown(c);
		return;
	}
	if (!rc && !(m = hca__rep_digests__unpack(NULL, len, body))) {
		rc = -EPROTO;
		snprintf(why, sizeof(why), "a malformed reply");
	}
	if (!rc)
		rc = digests_take(c, m, why, sizeof(why));
	if (m)
		hca__rep_digests__free_unpacked(m, NULL);
	if (rc < 0) {
		fail(c, rc, "vm %s: replica %s: the digests of disk %s: %s", c->q.vm, c->q.target,
		     c->cd[c->i].name, err ? (msg ? msg : strerror(-err)) : why);
		teardown(c);
		return;
	}
	if (!c->dpoint) { /* the replica has no point: nothing to compare with */
		if (!c->res.full) {
			fail(c, -ESTALE, "vm %s: replica %s has no point any more: the disks "
			     "are read whole next", c->q.vm, c->q.target);
			teardown(c);
			return;
		}
		dmaps_free(c);
		ship(c); /* a full copy */
		return;
	}
	if (c->doff >= c->q.disks[c->i].size) {
		c->i++;
		c->doff = 0;
	}
	digests_next(c);
}

static void digests_next(struct cyc *c)
{
	Hca__RepDigestsRequest q = HCA__REP_DIGESTS_REQUEST__INIT;
	uint8_t *buf;
	size_t len;
	uint32_t gran;
	int rc;

	if (c->cancelled) {
		teardown(c);
		return;
	}
	while (c->i < c->q.ndisks && c->cd[c->i].has_prev)
		c->i++;
	if (c->i >= c->q.ndisks) {
		/* the bitmaps' changes since q.base apply on a later point only */
		if (c->dpoint < c->q.base && c->res.whole_disks < c->q.ndisks) {
			fail(c, -ESTALE, "vm %s: replica %s has point %" PRIu64 ", older than %"
			     PRIu64 ": the disks are read whole next", c->q.vm, c->q.target,
			     c->dpoint, c->q.base);
			teardown(c);
			return;
		}
		c->resync = true;
		ship(c);
		return;
	}
	gran = rep_digest_gran(c->q.disks[c->i].size);
	if (!c->dmap[c->i].gran)
		rep_dmap_init(&c->dmap[c->i], gran);
	q.vm = c->q.vm;
	q.relation = c->q.relation;
	q.disk = c->i;
	q.offset = c->doff;
	q.granularity = gran;
	q.max_blocks = DIGEST_CALL_BYTES / gran;
	if (q.max_blocks > REP_DIGEST_REPLY_MAX)
		q.max_blocks = REP_DIGEST_REPLY_MAX;
	if (!q.max_blocks)
		q.max_blocks = 1;
	len = hca__rep_digests_request__get_packed_size(&q);
	if (!(buf = malloc(len + 1))) {
		fail(c, -ENOMEM, "vm %s: out of memory", c->q.vm);
		teardown(c);
		return;
	}
	hca__rep_digests_request__pack(&q, buf);
	c->calling = true;
	rc = c->s->env->call(c->s->env->ctx, c->q.target, REP_M_DIGESTS, buf, len,
			     DIGEST_CALL_MS, on_digests, c);
	free(buf);
	if (rc < 0) {
		c->calling = false;
		fail(c, rc, "vm %s: cannot ask %s for digests: %s", c->q.vm, c->q.target,
		     strerror(-rc));
		teardown(c);
	}
}

static void view_next(struct cyc *c)
{
	if (c->cancelled) {
		teardown(c);
		return;
	}
	if (c->i >= c->q.ndisks) {
		/* disks read whole while the replica has a point: compare */
		if (c->q.base && c->res.whole_disks) {
			c->ph = PH_DIGESTS;
			c->i = 0;
			c->doff = 0;
			digests_next(c);
		} else {
			ship(c);
		}
		return;
	}
	switch (c->sub) {
	case 0:
		qmp(c, rep_cut_view_add(c->cd[c->i].name), viewed);
		break;
	case 1:
		qmp(c, rep_cut_nbd_server(c->sock), viewed);
		break;
	default:
		qmp(c, rep_cut_export_add(c->res.cycle, &c->cd[c->i]), viewed);
		break;
	}
}

static void viewed(struct cyc *c, int err, json_t *ret, const char *desc)
{
	(void)ret;
	/* one NBD server per QEMU, kept from an earlier cycle: fine */
	if (err && c->sub == 1 && strstr(desc, "already running"))
		err = 0;
	if (err) {
		fail(c, err, "vm %s: disk %s: %s", c->q.vm, c->cd[c->i].name, desc);
		teardown(c);
		return;
	}
	if (c->sub == 0)
		c->view_added[c->i] = true;
	if (c->sub == 2)
		c->exported[c->i] = true;
	/* view, server (with the first disk only), export; then the next disk */
	if (c->sub == 0)
		c->sub = c->i == 0 ? 1 : 2;
	else if (c->sub == 1)
		c->sub = 2;
	else {
		c->sub = 0;
		c->i++;
	}
	view_next(c);
}

/* ---- ship ---- */

static void rd_push(struct cyc *c);
static void read_next(struct cyc *c);

static void rd_free_chunks(struct rd *r)
{
	for (size_t i = r->next; i < r->n; i++)
		free(r->ch[i].buf);
	r->n = r->next = 0;
}

static void rd_fn(struct exec_item *it)
{
	struct rd *r = EXEC_CONTAINER_OF(it, struct rd, item);

	r->rc = 0;
	if (!r->r && !(r->r = rep_reader_open(r->sock, r->name, r->bitmap[0] ? r->bitmap : NULL,
					       true, r->err, sizeof(r->err)))) {
		r->rc = errno ? -errno : -EIO;
		return;
	}
	r->rc = rep_reader_next(r->r, READ_BATCH, r->in, READ_CHUNKS, &r->n_in, r->err,
				sizeof(r->err));
	r->n = 0;
	if (r->rc < 0 || !r->n_in)
		return;
	if (r->dmap) {
		struct rep_filter_stats st = { 0 };
		r->rc = rep_digest_filter(r->dmap, r->in, r->n_in, r->ch, READ_CHUNKS * 4, &r->n,
					  &st);
		r->same += st.same_bytes;
		if (r->rc < 0)
			snprintf(r->err, sizeof(r->err), "comparing with the replica: %s",
				 strerror(-r->rc));
		return;
	}
	memcpy(r->ch, r->in, r->n_in * sizeof(r->in[0]));
	r->n = r->n_in;
}

static void rd_done(struct exec_item *it)
{
	struct rd *r = EXEC_CONTAINER_OF(it, struct rd, item);
	struct cyc *c = r->c;

	c->reading = false;
	c->res.same_bytes += r->same;
	r->same = 0;
	if (!c->tx || c->cancelled || exec_item_cancelled(it)) {
		rd_free_chunks(r);
		teardown(c);
		return;
	}
	if (r->rc < 0) {
		fail(c, r->rc, "vm %s: reading disk %s: %s", c->q.vm, c->cd[r->disk].name,
		     r->err);
		rep_tx_abort(c->tx, r->rc, "the source could not read its disk");
		c->tx = NULL;
		rd_free_chunks(r);
		teardown(c);
		return;
	}
	if (r->n_in == 0) {
		/* this disk is done: the next one, or the end */
		rep_reader_close(r->r);
		r->r = NULL;
		c->i++;
		read_next(c);
		return;
	}
	r->next = 0;
	rd_push(c);
}

/* Push what was read; when the stream is full, more() comes back here. */
static void rd_push(struct cyc *c)
{
	struct rd *r = c->rd;
	int rc = 0;

	while (r->next < r->n) {
		struct rep_chunk *ch = &r->ch[r->next];
		rc = ch->buf ? rep_tx_extent(c->tx, r->disk, ch->off, ch->buf, (size_t)ch->len)
			     : rep_tx_zero(c->tx, r->disk, ch->off, ch->len);
		if (rc == -EAGAIN)
			return;
		if (rc < 0)
			break;
		ch->buf = NULL; /* the stream's now (a zero range had none) */
		r->next++;
	}
	if (rc < 0) {
		fail(c, rc, "vm %s: disk %s: the stream refused an extent: %s", c->q.vm,
		     c->cd[r->disk].name, strerror(-rc));
		rep_tx_abort(c->tx, rc, "the source failed");
		c->tx = NULL;
		rd_free_chunks(r);
		teardown(c);
		return;
	}
	r->n = r->next = 0;
	c->reading = true;
	exec_push(c->s->q, &r->item, c->q.vm);
}

static void read_next(struct cyc *c)
{
	struct rd *r = c->rd;

	if (c->i >= c->q.ndisks) {
		if (rep_tx_finish(c->tx) < 0) {
			fail(c, -EPIPE, "vm %s: the stream ended early", c->q.vm);
			rep_tx_abort(c->tx, -EPIPE, "the source failed");
			c->tx = NULL;
			teardown(c);
		}
		return; /* done() follows */
	}
	r->disk = c->i;
	snprintf(r->sock, sizeof(r->sock), "%s", c->sock);
	{
		struct rep_cut_names n;
		rep_cut_names(c->cd[c->i].name, &n);
		snprintf(r->name, sizeof(r->name), "%s", n.view);
	}
	r->bitmap[0] = '\0';
	if (c->cd[c->i].has_prev)
		rep_cut_bitmap_name(c->res.cycle - 1, r->bitmap);
	r->dmap = c->resync && !c->cd[c->i].has_prev ? &c->dmap[c->i] : NULL;
	c->reading = true;
	exec_push(c->s->q, &r->item, c->q.vm);
}

static void tx_more(struct rep_tx *tx, void *opaque)
{
	struct cyc *c = opaque;

	(void)tx;
	if (c->rd && !c->reading && c->rd->next < c->rd->n)
		rd_push(c);
}

static void tx_done(struct rep_tx *tx, int err, const char *msg, const struct rep_tx_stats *s,
		    void *opaque)
{
	struct cyc *c = opaque;

	(void)tx;
	c->tx = NULL;
	c->tx_done = true;
	c->res.tx = *s;
	if (err)
		fail(c, err, "vm %s: replica %s: %s", c->q.vm, c->q.target, msg);
	if (!c->reading)
		teardown(c);
	/* else the read under way ends and tears down */
}

static const struct rep_tx_ops tx_ops = { .more = tx_more, .done = tx_done };

static void ship(struct cyc *c)
{
	struct rep_cycle rc = { 0 };

	c->ph = PH_SHIP;
	snprintf(rc.vm, sizeof(rc.vm), "%s", c->q.vm);
	rc.relation = c->q.relation;
	rc.incarnation = c->q.incarnation;
	rc.cycle = c->res.cycle;
	rc.full = c->res.full;
	rc.base = rc.full ? 0 : c->q.base;
	if (c->resync) { /* on exactly the point the digests are of */
		rc.full = c->res.full = false;
		rc.base = c->dpoint;
		rc.resync = c->res.resync = true;
	}
	rc.cut_ms = c->res.cut_ms;
	rc.app_consistent = c->res.app_consistent;
	rc.ndisks = c->q.ndisks;
	for (unsigned i = 0; i < c->q.ndisks; i++) {
		snprintf(rc.disks[i].name, sizeof(rc.disks[i].name), "%s", c->q.disks[i].name);
		rc.disks[i].size = c->q.disks[i].size;
	}
	if (!(c->rd = calloc(1, sizeof(*c->rd)))) {
		fail(c, -ENOMEM, "vm %s: out of memory", c->q.vm);
		teardown(c);
		return;
	}
	c->rd->c = c;
	exec_item_init(&c->rd->item, rd_fn, rd_done);
	c->tx = rep_tx_open(c->s->env, c->s->x, c->q.target, &rc, NULL, &tx_ops, c);
	if (!c->tx) {
		fail(c, -errno, "vm %s: no stream to %s: %s", c->q.vm, c->q.target,
		     strerror(errno));
		teardown(c);
		return;
	}
	c->i = 0;
	read_next(c);
}

/* ---- teardown: everything the cycle put into QEMU goes, in order ---- */

static void torn(struct cyc *c, int err, json_t *ret, const char *desc);
static void settle(struct cyc *c);

static void wait_over(void *data)
{
	struct cyc *c = data;

	c->wait_timer = 0;
	qb_log(LOG_WARNING, "replica: vm %s: no %s for %s in %u ms; going on", c->q.vm,
	       c->wait_event, c->wait_id, WAIT_EVENT_MS);
	c->wait_event = NULL;
	teardown(c);
}

static void wait_for(struct cyc *c, const char *event, const char *id)
{
	c->wait_event = event;
	snprintf(c->wait_id, sizeof(c->wait_id), "%s", id);
	qb_loop_timer_add(c->s->env->loop, QB_LOOP_MED, WAIT_EVENT_MS * QB_TIME_NS_IN_MSEC, c,
			  wait_over, &c->wait_timer);
}

/*
 * One step of the teardown of disk c->i (sub: 0 export, 1 view, 2 job,
 * 3 target), skipping what was never made; then the next disk; then settle.
 */
static void teardown(struct cyc *c)
{
	struct rep_cut_names n;

	if (c->ph != PH_TEARDOWN) {
		c->ph = PH_TEARDOWN;
		c->i = 0;
		c->sub = 0;
		if (c->tx) {
			rep_tx_abort(c->tx, c->res.err ? c->res.err : -ECANCELED, "%s",
				     c->res.err ? c->res.msg : "cycle cancelled");
			c->tx = NULL;
		}
		if (c->reading)
			return; /* the read's done comes back here */
	}
	/* a step goes on once both its reply and its event came */
	if (c->wait_event || c->wait_reply || c->reading)
		return;
	for (; c->i < c->q.ndisks; c->i++, c->sub = 0) {
		if (rep_cut_names(c->q.disks[c->i].name, &n) < 0)
			continue;
		switch (c->sub) {
		case 0:
			c->sub = 1;
			if (c->exported[c->i]) {
				c->exported[c->i] = false;
				wait_for(c, "BLOCK_EXPORT_DELETED", n.view);
				c->wait_reply = true;
				qmp(c, rep_cut_export_del(c->q.disks[c->i].name), torn);
				return;
			}
			/* fall through */
		case 1:
			c->sub = 2;
			if (c->view_added[c->i]) {
				c->view_added[c->i] = false;
				c->wait_reply = true;
				qmp(c, rep_cut_view_del(c->q.disks[c->i].name), torn);
				return;
			}
			/* fall through */
		case 2:
			c->sub = 3;
			if (c->job[c->i]) {
				c->job[c->i] = false;
				wait_for(c, "BLOCK_JOB_CANCELLED", n.job);
				c->wait_reply = true;
				qmp(c, rep_cut_job_cancel(c->q.disks[c->i].name), torn);
				return;
			}
			/* fall through */
		case 3:
			c->sub = 4;
			if (c->tmp_added[c->i]) {
				c->tmp_added[c->i] = false;
				c->wait_reply = true;
				qmp(c, rep_cut_tmp_del(c->q.disks[c->i].name), torn);
				return;
			}
			/* fall through */
		default:
			if (c->tmp_path[c->i][0])
				unlink(c->tmp_path[c->i]);
		}
	}
	settle(c);
}

static void torn(struct cyc *c, int err, json_t *ret, const char *desc)
{
	(void)ret;
	c->wait_reply = false;
	if (err) {
		qb_log(LOG_WARNING, "replica: vm %s: teardown of disk %s: %s", c->q.vm,
		       c->q.disks[c->i].name, desc);
		/* no event will come for a command that failed */
		if (c->wait_event) {
			qb_loop_timer_del(c->s->env->loop, c->wait_timer);
			c->wait_timer = 0;
			c->wait_event = NULL;
		}
	}
	teardown(c);
}


static void settled(struct cyc *c, int err, json_t *ret, const char *desc)
{
	(void)ret;
	if (err)
		qb_log(LOG_WARNING, "replica: vm %s: cycle %" PRIu64 "'s bitmaps: %s (the next "
		       "cycle sorts them out)", c->q.vm, c->res.cycle, desc);
	finish(c);
}

static void settle(struct cyc *c)
{
	c->ph = PH_SETTLE;
	if (!c->cut) {
		finish(c);
		return;
	}
	if (!c->tx_done && !c->res.err)
		fail(c, -ECANCELED, "vm %s: cycle cancelled", c->q.vm);
	qmp(c, c->res.err ? rep_cut_failed(c->res.cycle, c->cd, c->q.ndisks)
			  : rep_cut_acked(c->res.cycle, c->cd, c->q.ndisks), settled);
}

static void finish(struct cyc *c)
{
	struct rep_src_result res;

	/* a freeze or thaw under way holds the cycle; a freeze asked is thawed */
	thaw(c);
	if (c->ga_busy) {
		c->done_pending = true;
		return;
	}
	res = c->res;

	res.dur_ms = now_ms(CLOCK_MONOTONIC) - c->start_ms;
	if (c->rd) {
		if (c->rd->r)
			rep_reader_close(c->rd->r);
		rd_free_chunks(c->rd);
		free(c->rd);
	}
	json_decref(c->fix);
	dmaps_free(c);
	cyc_unlink(c);
	c->done(c->opaque, &res);
	free(c);
}

/* ---- the phases ---- */

static void step(struct cyc *c)
{
	qb_log(LOG_TRACE, "replica: vm %s: %s", c->q.vm, phase_names[c->ph]);
	if (c->cancelled && c->ph < PH_TEARDOWN) {
		teardown(c);
		return;
	}
	switch (c->ph) {
	case PH_PLAN:
		qmp(c, (struct rep_qmp){ "query-named-block-nodes", json_pack("{s:b}", "flat", 1) },
		    planned);
		break;
	case PH_PREPARE:
		prepare_next(c);
		break;
	case PH_FREEZE:
		c->frozen = c->ga_busy = true;
		exec_item_init(&c->ga, freeze_fn, freeze_done);
		exec_push(c->s->q, &c->ga, NULL);
		break;
	case PH_CUT:
		qmp(c, rep_cut_transaction(c->res.cycle, c->cd, c->q.ndisks), cut_done);
		break;
	case PH_VIEW:
		view_next(c);
		break;
	default:
		break;
	}
}

/* ---- the API ---- */

struct rep_src *rep_src_new(const struct hca_env *env, struct rep_ctx *x, struct exec_queue *q,
			    const struct rep_src_host *h)
{
	struct rep_src *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->env = env;
	s->x = x;
	s->q = q;
	s->h = *h;
	return s;
}

void rep_src_free(struct rep_src *s)
{
	if (!s)
		return;
	while (s->cycles) {
		struct cyc *c = s->cycles;
		s->cycles = c->next;
		if (c->wait_timer)
			qb_loop_timer_del(s->env->loop, c->wait_timer);
		if (c->tx)
			rep_tx_abort(c->tx, -ESHUTDOWN, "hcad is stopping");
		/* a read or a guest agent call under way still holds c: let it
		 * go with the process */
		if (c->calling && !c->reading && !c->ga_busy) {
			c->orphan = true; /* the call's reply frees it */
			if (c->rd && c->rd->r)
				rep_reader_close(c->rd->r);
			free(c->rd);
			c->rd = NULL;
		} else if (!c->reading && !c->ga_busy) {
			if (c->rd && c->rd->r)
				rep_reader_close(c->rd->r);
			free(c->rd);
			json_decref(c->fix);
			dmaps_free(c);
			free(c);
		}
	}
	free(s);
}

int rep_src_cycle(struct rep_src *s, const struct rep_src_req *r, rep_src_done_fn done,
		  void *opaque)
{
	struct cyc *c;

	if (!r->ndisks || r->ndisks > REP_DISKS_MAX || !done)
		return -EINVAL;
	for (unsigned i = 0; i < r->ndisks; i++)
		if (rep_cut_names(r->disks[i].name, &(struct rep_cut_names){ 0 }) < 0)
			return -EINVAL;
	if (cyc_find(s, r->vm))
		return -EBUSY;
	if (!s->h.vm_hv(s->h.ctx, r->vm))
		return -ENOENT;
	if (!(c = calloc(1, sizeof(*c))) || !(c->fix = json_array())) {
		free(c);
		return -ENOMEM;
	}
	c->s = s;
	c->q = *r;
	c->done = done;
	c->opaque = opaque;
	c->start_ms = now_ms(CLOCK_MONOTONIC);
	snprintf(c->sock, sizeof(c->sock), "%s/%s.nbd", s->h.work_dir, r->vm);
	c->next = s->cycles;
	s->cycles = c;
	step(c);
	return 0;
}

bool rep_src_busy(const struct rep_src *s, const char *vm)
{
	return s && cyc_find(s, vm);
}

void rep_src_cancel(struct rep_src *s, const char *vm, const char *why)
{
	struct cyc *c = s ? cyc_find(s, vm) : NULL;

	if (!c || c->cancelled)
		return;
	c->cancelled = true;
	fail(c, -ECANCELED, "vm %s: %s", vm, why);
	if (c->ph == PH_SHIP && !c->reading)
		teardown(c);
	/* other phases notice at their next step */
}

void rep_src_event(struct rep_src *s, const char *vm, const char *event, json_t *data)
{
	struct cyc *c = s ? cyc_find(s, vm) : NULL;
	const char *id;

	if (!c || !c->wait_event || strcmp(event, c->wait_event))
		return;
	id = json_string_value(json_object_get(data, "id"));
	if (!id)
		id = json_string_value(json_object_get(data, "device"));
	if (!id || strcmp(id, c->wait_id))
		return;
	qb_loop_timer_del(s->env->loop, c->wait_timer);
	c->wait_timer = 0;
	c->wait_event = NULL;
	teardown(c);
}

struct forget {
	struct rep_src_disk d[REP_DISKS_MAX];
	unsigned n;
	char vm[REP_NAME_MAX + 1];
};

static void forgot(struct hv_vm *vm, int err, json_t *ret, const char *errclass,
		   const char *errdesc, void *opaque)
{
	struct forget *f = opaque;
	struct rep_bitmaps b;

	(void)errclass;
	for (unsigned i = 0; !err && i < f->n; i++) {
		char node[REP_CUT_NODE_MAX + 8], bm[REP_CUT_BITMAP_LEN];
		if (rep_cut_bitmaps_parse(ret, f->d[i].name, &b) < 0)
			continue;
		snprintf(node, sizeof(node), "drive-%s", f->d[i].name);
		for (unsigned k = 0; k < b.n; k++) {
			rep_cut_bitmap_name(b.b[k].cycle, bm);
			hv_vm_qmp(vm, "block-dirty-bitmap-remove",
				  json_pack("{s:s, s:s}", "node", node, "name", bm), 0, NULL, NULL);
		}
	}
	if (err)
		qb_log(LOG_WARNING, "replica: vm %s: change bitmaps not removed: %s", f->vm,
		       errdesc ? errdesc : strerror(-err));
	free(f);
}

void rep_src_forget(struct rep_src *s, const char *vm, const struct rep_src_disk *d, unsigned n)
{
	struct hv_vm *hv = s ? s->h.vm_hv(s->h.ctx, vm) : NULL;
	struct forget *f;

	if (!hv || n > REP_DISKS_MAX || !(f = calloc(1, sizeof(*f))))
		return;
	memcpy(f->d, d, n * sizeof(*d));
	f->n = n;
	snprintf(f->vm, sizeof(f->vm), "%s", vm);
	if (hv_vm_qmp(hv, "query-named-block-nodes", json_pack("{s:b}", "flat", 1), 0, forgot,
		      f) < 0)
		free(f);
}
