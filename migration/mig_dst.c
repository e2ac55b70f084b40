/*
 * mig_dst: the destination's side of a live migration, as channel methods
 * the source calls.
 *
 *   mig.prepare  check the record agrees, launch the VM's QEMU paused for an
 *                incoming stream (`-S -incoming defer`), give it the TLS
 *                credentials, the capabilities and parameters the source
 *                will use, then `migrate-incoming` on this node's address,
 *                port chosen by the kernel: answered with host and port
 *   mig.ready    answered once the stream is in (MIGRATION completed) or
 *                failed: the source commits only after this. With disks
 *                (--with-storage) the NBD exports the source mirrored to
 *                are dropped first (the source detached before the
 *                switchover), and the NBD server stopped
 *   mig.commit   the owner record names this node now: `cont`, answered
 *                when the guest runs (RESUME), with the time
 *   mig.abort    kill the incoming QEMU (the guest never ran here)
 *
 * The guest never runs here before the commit: QEMU waits under -S with its
 * disks inactive (late-block-activate) until `cont`. If the source goes
 * away before it said commit or abort, a watchdog asks the store: the owner
 * record naming this node at the next epoch means the commit happened (go
 * on); anything else means it did not (discard).
 */
#include "migration/mig_priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <qb/qblog.h>

#include "base/env.h"
#include "base/exec.h"
#include "hypervisor/hv.h"
#include "proto/chan.h"
#include "proto/wire.h"
#include "storage/sto.h"
#include "storage/sto_vm.h"

#define WATCH_MS 3000u

enum in_state {
	IN_LAUNCH,   /* the agent starts QEMU */
	IN_SETUP,    /* QMP: credentials, capabilities, parameters, listen */
	IN_LISTEN,   /* the stream may come */
	IN_UNEXPORT, /* the stream is in; the disks' exports go */
	IN_LOADED,   /* the stream is in; paused under -S */
	IN_RESUMING, /* committed: cont sent */
	IN_FAILED,
};

struct mig_in {
	struct mig_in *next;
	struct mig *m;
	char vm[HV_NAME_MAX + 1];
	char job[80];
	char source[64];
	uint64_t epoch, incarnation;
	struct mig_plan plan;
	enum in_state st;
	unsigned step;
	char host[64];
	unsigned port;
	char why[256];
	uint64_t resumed_us;
	struct chan_reply *prep, *ready, *commit; /* answers owed */
	qb_loop_timer_handle watch;
	/* the watchdog's store read */
	struct exec_item item;
	bool reading;
	int read_rc;
	char read_owner[64];
	uint64_t read_epoch;
	bool job_ended;   /* the source's job record says it ended */
	/* --with-storage: the disks served over NBD to the source's mirrors */
	char disks[MIG_DISKS_MAX][64];
	unsigned n_disks, n_unexported;
	unsigned nbd_port;
	/* callbacks still to come (the launch, QMP replies, the store read):
	 * an ended migration is freed by the last of them */
	unsigned refs;
	bool dead;
};

/* The VM's QEMU, from the agent: it may have let go of one that ended. */
static struct hv_vm *in_hv(struct mig_in *in)
{
	return in->m->host.vm_hv(in->m->host.ctx, in->vm);
}

/* A callback for @in came: false if @in ended meanwhile (freed by the last). */
static bool in_back(struct mig_in *in)
{
	in->refs--;
	if (!in->dead)
		return true;
	if (!in->refs)
		free(in);
	return false;
}

static int in_qmp(struct mig_in *in, const char *cmd, json_t *args, hv_vm_qmp_fn done)
{
	struct hv_vm *hv = in_hv(in);
	int rc;

	if (!hv) {
		json_decref(args);
		return -ENOTCONN;
	}
	in->refs++;
	if ((rc = hv_vm_qmp(hv, cmd, args, 0, done, in)) < 0)
		in->refs--;
	return rc;
}

uint64_t mig_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t mig_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct mig_in *in_find(const struct mig *m, const char *vm)
{
	for (struct mig_in *in = m->ins; in; in = in->next)
		if (!strcmp(in->vm, vm))
			return in;
	return NULL;
}

bool mig_dst_busy(const struct mig *m, const char *vm)
{
	return in_find(m, vm) != NULL;
}

static void in_unlink(struct mig_in *in)
{
	for (struct mig_in **pp = &in->m->ins; *pp; pp = &(*pp)->next)
		if (*pp == in) {
			*pp = in->next;
			return;
		}
}

static void answer_error(struct chan_reply **r, int err, const char *msg)
{
	if (*r)
		chan_reply_error(*r, err, "%s", msg);
	*r = NULL;
}

/* Forget @in; with @discard, kill its QEMU (never committed). */
static void in_end(struct mig_in *in, bool discard, const char *why)
{
	struct mig *m = in->m;

	if (discard) {
		qb_log(LOG_NOTICE, "vm %s: incoming migration from %s dropped: %s", in->vm,
		       in->source, why);
		m->host.incoming_discard(m->host.ctx, in->vm);
	}
	answer_error(&in->prep, -EIO, why);
	answer_error(&in->ready, -EIO, why);
	answer_error(&in->commit, -EIO, why);
	if (in->watch)
		qb_loop_timer_del(m->env->loop, in->watch);
	in->watch = 0;
	in_unlink(in);
	in->dead = true;
	if (!in->refs)
		free(in);
}

static void in_fail(struct mig_in *in, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void in_fail(struct mig_in *in, const char *fmt, ...)
{
	va_list ap;
	char msg[256];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	in_end(in, true, msg);
}

/* ---- the watchdog: the source went away ---- */

static void watch_arm(struct mig_in *in);

static void watch_read_fn(struct exec_item *it)
{
	struct mig_in *in = EXEC_CONTAINER_OF(it, struct mig_in, item);
	Hca__VmRecord *r = NULL;
	uint64_t ver;
	char err[256];

	char key[STO_KEY_MAX + 1];
	uint8_t *buf = NULL;
	size_t len = 0;
	Hca__Job *j;
	int werr = 0;

	/* the job first: if it ended, the owner record read after it is final */
	snprintf(key, sizeof(key), "job/%s", in->job);
	in->job_ended = false;
	if (sto_get(in->m->env->store, key, &buf, &len, &ver, err, sizeof(err)) == 0 &&
	    (j = (Hca__Job *)wire_frame_unpack(buf, len, STO_REC_MAX, WIRE_T_JOB,
					       &hca__job__descriptor, &werr))) {
		in->job_ended = j->phase >= HCA__JOB_PHASE__JOB_PHASE_SUCCEEDED;
		hca__job__free_unpacked(j, NULL);
	}
	free(buf);
	in->read_rc = sto_vm_get(in->m->env->store, in->vm, &r, &ver, err, sizeof(err));
	if (in->read_rc == 0) {
		snprintf(in->read_owner, sizeof(in->read_owner), "%s", r->owner);
		in->read_epoch = r->incarnation == in->incarnation ? r->owner_epoch : 0;
		hca__vm_record__free_unpacked(r, NULL);
	}
}

static void resume(struct mig_in *in);

static void watch_read_done(struct exec_item *it)
{
	struct mig_in *in = EXEC_CONTAINER_OF(it, struct mig_in, item);
	const char *me = in->m->env->node;

	in->reading = false;
	if (!in_back(in) || exec_item_cancelled(it))
		return;
	if (in->read_rc == 0 && !strcmp(in->read_owner, me) && in->read_epoch == in->epoch + 1) {
		/* the source committed and went: this node runs the guest now */
		qb_log(LOG_NOTICE, "vm %s: the source %s is gone after the commit (epoch %llu): "
		       "resuming here", in->vm, in->source, (unsigned long long)in->read_epoch);
		in->m->host.committed(in->m->host.ctx, in->vm, me, in->read_epoch, 0);
		resume(in);
		return;
	}
	if ((in->read_rc == 0 || in->read_rc == -ENOENT) &&
	    (in->job_ended || !in->m->env->online(in->m->env->ctx, in->source))) {
		in_fail(in, "the source %s %s before the commit (the record says %s)", in->source,
			in->job_ended ? "ended its job" : "went away",
			in->read_rc ? "nothing" : in->read_owner);
		return;
	}
	watch_arm(in); /* the store does not answer: never guess */
}

static void watch_tick(void *data)
{
	struct mig_in *in = data;
	const struct hca_env *e = in->m->env;

	in->watch = 0;
	if (in->st == IN_RESUMING || in->m->stopping)
		return;
	/* while the stream flows the source is alive; once it is in (or the
	 * source is gone) the store says what became of it */
	if (e->online(e->ctx, in->source) && in->st != IN_LOADED && in->st != IN_LISTEN &&
	    in->st != IN_UNEXPORT) {
		watch_arm(in);
		return;
	}
	in->reading = true;
	in->refs++;
	exec_item_init(&in->item, watch_read_fn, watch_read_done);
	exec_push(in->m->q, &in->item, NULL);
}

static void watch_arm(struct mig_in *in)
{
	if (!in->watch && !in->m->stopping)
		qb_loop_timer_add(in->m->env->loop, QB_LOOP_LOW, WATCH_MS * QB_TIME_NS_IN_MSEC, in,
				  watch_tick, &in->watch);
}

/* ---- prepare ---- */

/* The set-up steps the disks add: the NBD server and one export each. */
static unsigned disk_steps(const struct mig_in *in)
{
	return in->n_disks ? in->n_disks + 1 : 0;
}

/*
 * A free TCP port on @host for the NBD server: bound and let go, for QEMU
 * to bind next (QMP cannot say which port an nbd-server-start on port 0
 * got). Another process taking it in between makes nbd-server-start fail,
 * and the migration with it, cleanly. 0 if none.
 */
static unsigned free_port(const char *host)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST };
	struct addrinfo *ai = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	unsigned port = 0;
	int fd = -1;

	if (getaddrinfo(host, "0", &hints, &ai) != 0 || !ai)
		return 0;
	if ((fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0 &&
	    bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
	    getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						      : ((struct sockaddr_in *)&ss)->sin_port);
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return port;
}

static void setup_step(struct mig_in *in);

static void setup_qmp_done(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
			   const char *errdesc, void *opaque)
{
	struct mig_in *in = opaque;
	json_t *sa;

	(void)hv;
	(void)errclass;
	if (!in_back(in) || err == -ECANCELED)
		return;
	if (err) {
		in_fail(in, "vm %s: destination QEMU refused step %u of the set-up: %s", in->vm,
			in->step, errdesc ? errdesc : strerror(-err));
		return;
	}
	if (in->step == 4 + disk_steps(in)) { /* query-migrate: where it listens */
		sa = json_array_get(json_object_get(ret, "socket-address"), 0);
		in->port = (unsigned)strtoul(json_string_value(json_object_get(sa, "port"))
					     ? json_string_value(json_object_get(sa, "port")) : "0",
					     NULL, 10);
		if (!in->port) {
			in_fail(in, "vm %s: destination QEMU did not say which port it listens on",
				in->vm);
			return;
		}
	}
	in->step++;
	setup_step(in);
}

/*
 * The steps: 0 the TLS credentials; with n disks, 1 the NBD server and
 * 2..n+1 one writable export per disk (block-export-add activates the
 * node, which -incoming left inactive); then capabilities, parameters,
 * migrate-incoming and query-migrate.
 */
static void setup_step(struct mig_in *in)
{
	const char *cmd = NULL;
	json_t *args = NULL;
	char uri[128];
	unsigned step = in->step, d = disk_steps(in);
	int rc;

	if (d && step == 1) {
		cmd = "nbd-server-start";
		args = mig_nbd_server_json(in->host, in->nbd_port, in->plan.tls_creds);
		goto send;
	}
	if (d && step >= 2 && step < 1 + d) {
		cmd = "block-export-add";
		args = mig_export_json(in->disks[step - 2]);
		goto send;
	}
	if (step >= 1)
		step -= d;
	switch (step) {
	case 0:
		if (!in->plan.tls_creds) {
			in->step++;
			setup_step(in);
			return;
		}
		cmd = "object-add";
		args = mig_tls_creds_json(&in->plan, MIG_DST, in->m->host.tls_dir);
		break;
	case 1:
		cmd = "migrate-set-capabilities";
		args = mig_caps_json(&in->plan, MIG_DST);
		break;
	case 2:
		cmd = "migrate-set-parameters";
		args = mig_params_json(&in->plan, MIG_DST);
		break;
	case 3:
		snprintf(uri, sizeof(uri), strchr(in->host, ':') ? "tcp:[%s]:0" : "tcp:%s:0",
			 in->host);
		cmd = "migrate-incoming";
		args = json_pack("{s:s}", "uri", uri);
		break;
	case 4:
		cmd = "query-migrate";
		break;
	default: {
		Hca__MigPrepared p = HCA__MIG_PREPARED__INIT;
		uint8_t buf[128];

		p.host = in->host;
		p.port = in->port;
		p.nbd_port = in->nbd_port;
		in->st = IN_LISTEN;
		qb_log(LOG_INFO, "vm %s: waiting for the migration stream from %s on %s:%u", in->vm,
		       in->source, in->host, in->port);
		if (hca__mig_prepared__get_packed_size(&p) <= sizeof(buf)) {
			chan_reply_ok(in->prep, buf, hca__mig_prepared__pack(&p, buf));
			in->prep = NULL;
		}
		watch_arm(in);
		return;
	}
	}
send:
	if (!args && strcmp(cmd, "query-migrate")) {
		in_fail(in, "vm %s: cannot build the arguments of %s", in->vm, cmd);
		return;
	}
	if ((rc = in_qmp(in, cmd, args, setup_qmp_done)) < 0)
		in_fail(in, "vm %s: destination QEMU unreachable for %s: %s", in->vm, cmd,
			strerror(-rc));
}

static void launched(void *opaque, struct hv_vm *hv, int err, const char *msg)
{
	struct mig_in *in = opaque;
	struct mig *m = in->m;
	char vm[HV_NAME_MAX + 1];

	(void)hv;
	snprintf(vm, sizeof(vm), "%s", in->vm);
	if (!in_back(in)) {
		/* aborted while QEMU came up: it goes now */
		if (!err)
			m->host.incoming_discard(m->host.ctx, vm);
		return;
	}
	if (err) {
		in_fail(in, "vm %s: cannot start the destination QEMU: %s", in->vm, msg);
		return;
	}
	in->st = IN_SETUP;
	setup_step(in);
}

static void on_prepare(struct chan_reply *r, const void *body, size_t len, void *opaque)
{
	struct mig *m = opaque;
	const struct hca_env *e = m->env;
	Hca__MigPrepare *q = hca__mig_prepare__unpack(NULL, len, body);
	const char *peer = chan_reply_peer(r);
	struct mig_in *in = NULL;
	unsigned n = 0, max = m->host.max_in ? m->host.max_in : 2;
	char err[300];
	int rc;

	if (!q || !q->record || !q->record->spec || !q->record->spec->name ||
	    !hv_name_valid(q->record->spec->name) || strlen(q->job) >= sizeof(in->job)) {
		chan_reply_error(r, -EPROTO, "mig.prepare: malformed request");
		goto out;
	}
	/* only the owner itself moves its VM */
	if (strcmp(q->source, peer) || strcmp(q->record->owner, peer)) {
		chan_reply_error(r, -EPERM, "mig.prepare: node %s cannot migrate vm %s for %s", peer,
				 q->record->spec->name, q->source);
		goto out;
	}
	if (m->stopping) {
		chan_reply_error(r, -ESHUTDOWN, "node %s: hcad is stopping", e->node);
		goto out;
	}
	if (in_find(m, q->record->spec->name)) {
		chan_reply_error(r, -EBUSY, "vm %s: already migrating into node %s",
				 q->record->spec->name, e->node);
		goto out;
	}
	for (struct mig_in *i = m->ins; i; i = i->next)
		n++;
	if (n >= max) {
		chan_reply_error(r, -EBUSY, "node %s: %u incoming migrations under way (the limit)",
				 e->node, n);
		goto out;
	}
	if (q->tls && !m->host.tls_dir) {
		chan_reply_error(r, -ENOKEY, "node %s: no TLS credentials for QEMU", e->node);
		goto out;
	}
	if (q->n_disks > MIG_DISKS_MAX) {
		chan_reply_error(r, -E2BIG, "mig.prepare: %zu disks, at most %u", q->n_disks,
				 MIG_DISKS_MAX);
		goto out;
	}
	for (size_t i = 0; i < q->n_disks; i++) {
		const Hca__MigDisk *d = q->disks[i];
		if (!d || !d->disk[0] || strlen(d->disk) >= sizeof(in->disks[0]) ||
		    strspn(d->disk, "abcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(d->disk) ||
		    !d->size_bytes || d->size_bytes > MIG_DISK_SIZE_MAX ||
		    d->allocated > d->size_bytes + (d->size_bytes >> 3) + (64ull << 20) ||
		    (d->format != HCA__DISK_FORMAT__DISK_FORMAT_QCOW2 &&
		     d->format != HCA__DISK_FORMAT__DISK_FORMAT_RAW) ||
		    (d->target_backend[0] && strcmp(d->target_backend, "file") &&
		     strcmp(d->target_backend, "rbd")) ||
		    strlen(d->target_path) > 200) {
			chan_reply_error(r, -EINVAL, "mig.prepare: disk %zu is malformed (name, size "
					 "or format)", i);
			goto out;
		}
	}
	if (q->n_disks && !q->tls) {
		chan_reply_error(r, -EINVAL, "mig.prepare: disks move only over TLS");
		goto out;
	}
	if (q->streams > MIG_STREAMS_MAX || (q->postcopy && q->multifd) ||
	    (q->compress != HCA__MIG_COMPRESS__MIG_COMPRESS_NONE &&
	     q->compress != HCA__MIG_COMPRESS__MIG_COMPRESS_ZSTD)) {
		chan_reply_error(r, -EINVAL, "mig.prepare: an impossible plan (%u streams, %s)",
				 q->streams, q->postcopy ? "post-copy" : "multifd");
		goto out;
	}
	if (!(in = calloc(1, sizeof(*in)))) {
		chan_reply_error(r, -ENOMEM, "out of memory");
		goto out;
	}
	in->m = m;
	snprintf(in->vm, sizeof(in->vm), "%s", q->record->spec->name);
	snprintf(in->job, sizeof(in->job), "%s", q->job);
	snprintf(in->source, sizeof(in->source), "%s", peer);
	in->epoch = q->record->owner_epoch;
	in->incarnation = q->record->incarnation;
	in->plan.resolved = true;
	in->plan.multifd = q->multifd;
	in->plan.postcopy = q->postcopy;
	in->plan.streams = q->multifd ? (q->streams ? q->streams : 1) : 1;
	in->plan.compress = q->compress == HCA__MIG_COMPRESS__MIG_COMPRESS_ZSTD
				    ? MIG_COMPRESS_ZSTD : MIG_COMPRESS_NONE;
	in->plan.tls_creds = q->tls ? MIG_TLS_ID : NULL;
	in->plan.tls_priority = q->tls && q->tls_no_aes ? MIG_TLS_PRIORITY_NO_AES : NULL;
	if (e->node_addr(e->ctx, e->node, in->host, sizeof(in->host)) < 0) {
		chan_reply_error(r, -EADDRNOTAVAIL, "node %s: its own address is not in the "
				 "nodelist", e->node);
		free(in);
		goto out;
	}
	for (size_t i = 0; i < q->n_disks; i++)
		snprintf(in->disks[i], sizeof(in->disks[i]), "%s", q->disks[i]->disk);
	in->n_disks = (unsigned)q->n_disks;
	if (in->n_disks && !(in->nbd_port = free_port(in->host))) {
		chan_reply_error(r, -EADDRINUSE, "node %s: no free port for the NBD server on %s",
				 e->node, in->host);
		free(in);
		goto out;
	}
	in->prep = r;
	in->next = m->ins;
	m->ins = in;
	in->refs++; /* the launch's callback */
	rc = m->host.incoming_start(m->host.ctx, in->vm, in->source, in->epoch, in->incarnation,
				    (const Hca__MigDisk *const *)q->disks, q->n_disks, launched, in,
				    err, sizeof(err));
	if (rc < 0) {
		in->refs--;
		in_end(in, false, err); /* answers prep with the reason */
		goto out;
	}
	qb_log(LOG_INFO, "vm %s: incoming migration from %s (job %s)", in->vm, in->source,
	       in->job);
out:
	if (q)
		hca__mig_prepare__free_unpacked(q, NULL);
}

/* ---- ready, commit, abort ---- */

static Hca__MigEnd *end_decode(struct chan_reply *r, const void *body, size_t len,
			       struct mig_in **in, struct mig *m)
{
	Hca__MigEnd *q = hca__mig_end__unpack(NULL, len, body);

	*in = NULL;
	if (!q || !hv_name_valid(q->vm)) {
		chan_reply_error(r, -EPROTO, "malformed request");
		if (q)
			hca__mig_end__free_unpacked(q, NULL);
		return NULL;
	}
	*in = in_find(m, q->vm);
	if (*in && (strcmp((*in)->source, chan_reply_peer(r)) || strcmp((*in)->job, q->job))) {
		chan_reply_error(r, -EPERM, "vm %s: migrating in from %s as job %s, not this one",
				 q->vm, (*in)->source, (*in)->job);
		hca__mig_end__free_unpacked(q, NULL);
		return NULL;
	}
	return q;
}

static void on_ready(struct chan_reply *r, const void *body, size_t len, void *opaque)
{
	struct mig_in *in;
	Hca__MigEnd *q = end_decode(r, body, len, &in, opaque);

	if (!q)
		return;
	if (!in)
		chan_reply_error(r, -ENOENT, "vm %s: no incoming migration here", q->vm);
	else if (in->st == IN_LOADED)
		chan_reply_ok(r, NULL, 0);
	else if ((in->st == IN_LISTEN || in->st == IN_UNEXPORT) && !in->ready)
		in->ready = r; /* answered by the MIGRATION event */
	else
		chan_reply_error(r, -EINVAL, "vm %s: the incoming migration is not loading", q->vm);
	hca__mig_end__free_unpacked(q, NULL);
}

static void answer_commit(struct mig_in *in)
{
	Hca__MigEnd a = HCA__MIG_END__INIT;
	uint8_t buf[256];

	a.vm = in->vm;
	a.job = in->job;
	a.owner_epoch = in->epoch + 1;
	a.resumed_us = in->resumed_us;
	if (in->commit && hca__mig_end__get_packed_size(&a) <= sizeof(buf))
		chan_reply_ok(in->commit, buf, hca__mig_end__pack(&a, buf));
	in->commit = NULL;
}

static void cont_done(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
		      const char *errdesc, void *opaque)
{
	struct mig_in *in = opaque;

	(void)hv;
	(void)ret;
	(void)errclass;
	if (!in_back(in) || err == -ECANCELED)
		return;
	if (err) {
		/* the record names this node: the guest must run here; say it loudly */
		qb_log(LOG_ERR, "vm %s: committed here but `cont` failed: %s", in->vm,
		       errdesc ? errdesc : strerror(-err));
		answer_error(&in->commit, -EIO, errdesc ? errdesc : strerror(-err));
		in_end(in, false, "cont failed");
		return;
	}
	if (!in->resumed_us)
		in->resumed_us = mig_now_us(); /* RESUME comes before the answer, normally */
	qb_log(LOG_NOTICE, "vm %s: migrated in from %s: running here (epoch %llu)", in->vm,
	       in->source, (unsigned long long)(in->epoch + 1));
	answer_commit(in);
	in_end(in, false, "done");
}

static void resume(struct mig_in *in)
{
	int rc;

	in->st = IN_RESUMING;
	if ((rc = in_qmp(in, "cont", NULL, cont_done)) < 0) {
		qb_log(LOG_ERR, "vm %s: committed here but QEMU is unreachable for `cont`: %s",
		       in->vm, strerror(-rc));
		answer_error(&in->commit, -EIO, "QEMU unreachable");
		in_end(in, false, "cont failed");
	}
}

static void on_commit(struct chan_reply *r, const void *body, size_t len, void *opaque)
{
	struct mig *m = opaque;
	struct mig_in *in;
	Hca__MigEnd *q = end_decode(r, body, len, &in, m);

	if (!q)
		return;
	if (!in) {
		chan_reply_error(r, -ENOENT, "vm %s: no incoming migration here", q->vm);
	} else if (in->st != IN_LOADED || q->owner_epoch != in->epoch + 1 ||
		   q->incarnation != in->incarnation) {
		chan_reply_error(r, -EINVAL, "vm %s: commit at epoch %llu does not match (state %d, "
				 "epoch %llu)", q->vm, (unsigned long long)q->owner_epoch, in->st,
				 (unsigned long long)in->epoch);
	} else {
		in->commit = r;
		m->host.committed(m->host.ctx, in->vm, m->env->node, q->owner_epoch, 0);
		resume(in);
	}
	hca__mig_end__free_unpacked(q, NULL);
}

static void on_abort(struct chan_reply *r, const void *body, size_t len, void *opaque)
{
	struct mig_in *in;
	Hca__MigEnd *q = end_decode(r, body, len, &in, opaque);

	if (!q)
		return;
	if (in && in->st == IN_RESUMING)
		chan_reply_error(r, -EBUSY, "vm %s: committed here already", q->vm);
	else {
		if (in)
			in_end(in, true, q->reason[0] ? q->reason : "aborted by the source");
		chan_reply_ok(r, NULL, 0);
	}
	hca__mig_end__free_unpacked(q, NULL);
}

/* ---- events ---- */

/* Everything is in: the source may commit. */
static void loaded(struct mig_in *in)
{
	in->st = IN_LOADED;
	if (in->ready)
		chan_reply_ok(in->ready, NULL, 0);
	in->ready = NULL;
}

static void nbd_stopped(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
			const char *errdesc, void *opaque)
{
	struct mig_in *in = opaque;

	(void)hv;
	(void)ret;
	(void)errclass;
	if (!in_back(in) || err == -ECANCELED || in->st != IN_UNEXPORT)
		return;
	if (err) {
		in_fail(in, "vm %s: cannot stop the NBD server: %s", in->vm,
			errdesc ? errdesc : strerror(-err));
		return;
	}
	loaded(in);
}

static void unexport_sent(struct hv_vm *hv, int err, json_t *ret, const char *errclass,
			  const char *errdesc, void *opaque)
{
	struct mig_in *in = opaque;

	(void)hv;
	(void)ret;
	(void)errclass;
	if (!in_back(in) || err == -ECANCELED || !err || in->st != IN_UNEXPORT)
		return;
	in_fail(in, "vm %s: cannot drop an NBD export of its disks: %s", in->vm,
		errdesc ? errdesc : strerror(-err));
}

/* The stream is in and the source detached from the exports before it
 * sent the device state: drop them (BLOCK_EXPORT_DELETED each), then the
 * server. The guest must not run with its disks served to anyone. */
static void unexport(struct mig_in *in)
{
	int rc;

	in->st = IN_UNEXPORT;
	in->n_unexported = 0;
	for (unsigned i = 0; i < in->n_disks; i++)
		if ((rc = in_qmp(in, "block-export-del", mig_export_del_json(in->disks[i]),
				 unexport_sent)) < 0) {
			in_fail(in, "vm %s: destination QEMU unreachable: %s", in->vm,
				strerror(-rc));
			return;
		}
}

void mig_dst_event(struct mig *m, const char *vm, const char *event, json_t *data)
{
	struct mig_in *in = in_find(m, vm);
	const char *st;

	if (!in)
		return;
	if (!strcmp(event, "BLOCK_EXPORT_DELETED")) {
		const char *id = json_string_value(json_object_get(data, "id"));
		struct mig_disk_names n;
		int rc;
		for (unsigned i = 0; id && in->st == IN_UNEXPORT && i < in->n_disks; i++) {
			mig_disk_names(in->disks[i], &n);
			if (strcmp(n.exp, id) || ++in->n_unexported < in->n_disks)
				continue;
			if ((rc = in_qmp(in, "nbd-server-stop", NULL, nbd_stopped)) < 0)
				in_fail(in, "vm %s: destination QEMU unreachable: %s", in->vm,
					strerror(-rc));
			return;
		}
		return;
	}
	if (!strcmp(event, "RESUME")) {
		in->resumed_us = mig_now_us();
		return;
	}
	if (strcmp(event, "MIGRATION") || !(st = json_string_value(json_object_get(data, "status"))))
		return;
	if (!strcmp(st, "completed") && in->st == IN_LISTEN) {
		if (in->n_disks) {
			unexport(in);
			return;
		}
		loaded(in);
	} else if ((!strcmp(st, "failed") || !strcmp(st, "cancelled")) && in->st != IN_RESUMING) {
		in_fail(in, "vm %s: the incoming stream %s", vm, st);
	}
}

void mig_dst_register(struct mig *m)
{
	const struct hca_env *e = m->env;
	static const struct {
		const char *name;
		env_handler_fn fn;
	} methods[] = {
		{ MIG_M_PREPARE, on_prepare },
		{ MIG_M_READY, on_ready },
		{ MIG_M_COMMIT, on_commit },
		{ MIG_M_ABORT, on_abort },
	};

	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		int rc = e->handle(e->ctx, methods[i].name, methods[i].fn, m);
		if (rc < 0 && rc != -EEXIST && rc != -ENOTCONN)
			qb_log(LOG_ERR, "channel: cannot register %s: %s", methods[i].name,
			       strerror(-rc));
	}
}

void mig_dst_free_all(struct mig *m)
{
	while (m->ins) {
		struct mig_in *in = m->ins;
		/* left to the restart: the QEMU stays, paused, until resolved */
		answer_error(&in->prep, -ESHUTDOWN, "hcad is stopping");
		answer_error(&in->ready, -ESHUTDOWN, "hcad is stopping");
		answer_error(&in->commit, -ESHUTDOWN, "hcad is stopping");
		in_end(in, false, "hcad is stopping");
	}
}
