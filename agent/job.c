/*
 * job: the jobs of this node, in memory and as records job/ID in the store.
 *
 * One writer per job record (this node), one write in flight per job: a
 * change made while a write runs marks the job dirty and is written when
 * that write ends, so the store sees phases in order and never goes back.
 * A write that fails (Ceph away) is retried by a timer; the job itself goes
 * on, and `job show` on this node answers from memory.
 */
#include "agent/job.h"
#include "proto/wire.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <qb/qbdefs.h>
#include <qb/qblog.h>

#define JOB_FORMAT 1u
#define PROGRESS_WRITE_MS 1000u
#define RETRY_MS 2000u

struct job {
	struct job *next;
	struct jobs *js;
	char id[JOB_ID_MAX];
	Hca__JobKind kind;
	char vm[64];
	char requested_on[64];
	Hca__JobPhase phase;
	uint64_t incarnation;
	/* progress */
	uint64_t done, total, rate;
	uint32_t eta_s;
	char unit[16];
	char detail[160];
	uint64_t rate_t0_ms, rate_done0;
	/* result */
	Hca__ErrorCode code;
	char error[512];
	char note[256];
	uint64_t created_ms, updated_ms, ended_ms, written_ms;
	bool cancel_requested;
	job_cancel_fn cancel;
	void *cancel_opaque;
	char **volumes;
	size_t n_volumes;
	Hca__MigReport *mig; /* migrate: the figures */
	/* persistence: gen counts changes, durable_gen the newest one that
	 * is in the store */
	uint64_t version;
	uint64_t gen, durable_gen;
	bool writing, dirty, ended;
	/* job_when_durable: one waiter at a time */
	job_durable_fn wait_fn;
	void *wait_opaque;
	uint64_t wait_gen;
	qb_loop_timer_handle wait_timer;
};

struct jobs {
	qb_loop_t *loop;
	struct exec_queue *q;
	struct sto_store *store;
	char node[64];
	uint64_t seq;
	struct job *list; /* newest first */
	qb_loop_timer_handle retry;
	bool stopping;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- names and rules ---- */

bool job_phase_terminal(Hca__JobPhase p)
{
	return p == HCA__JOB_PHASE__JOB_PHASE_SUCCEEDED || p == HCA__JOB_PHASE__JOB_PHASE_FAILED ||
	       p == HCA__JOB_PHASE__JOB_PHASE_CANCELLED;
}

bool job_phase_allowed(Hca__JobPhase from, Hca__JobPhase to)
{
	if (job_phase_terminal(from))
		return false;
	if ((int)to < 0 || to > HCA__JOB_PHASE__JOB_PHASE_CANCELLED)
		return false;
	return to >= from;
}

/* protobuf-c's value names, "JOB_PHASE_LAUNCH" -> "launch". */
static const char *enum_short(const ProtobufCEnumDescriptor *d, int value, size_t prefix)
{
	static char buf[4][32];
	static unsigned slot;
	const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(d, value);
	char *out = buf[slot++ % 4];
	size_t i;

	if (!v || strlen(v->name) <= prefix)
		return "unknown";
	for (i = 0; v->name[prefix + i] && i < sizeof(buf[0]) - 1; i++) {
		char c = v->name[prefix + i];
		out[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
	}
	out[i] = '\0';
	return out;
}

const char *job_phase_name(Hca__JobPhase p)
{
	return enum_short(&hca__job_phase__descriptor, (int)p, strlen("JOB_PHASE_"));
}

const char *job_kind_name(Hca__JobKind k)
{
	return enum_short(&hca__job_kind__descriptor, (int)k, strlen("JOB_KIND_"));
}

uint64_t job_id_seq(const char *id, const char *node)
{
	size_t n = strlen(node);
	char *end = NULL;
	unsigned long long v;

	if (strncmp(id, node, n) || id[n] != '-' || !id[n + 1])
		return 0;
	v = strtoull(id + n + 1, &end, 10);
	return end && !*end ? v : 0;
}

/* ---- the record ---- */

void job_fill(const struct job *j, Hca__Job *out, Hca__JobProgress *pg, Hca__Error *e)
{
	hca__job__init(out);
	hca__job_progress__init(pg);
	hca__error__init(e);
	out->format = JOB_FORMAT;
	out->id = (char *)j->id;
	out->kind = j->kind;
	out->vm = (char *)j->vm;
	out->node = j->js->node;
	out->phase = j->phase;
	pg->done = j->done;
	pg->total = j->total;
	pg->unit = (char *)j->unit;
	pg->rate = j->rate;
	pg->eta_s = j->eta_s;
	pg->detail = (char *)j->detail;
	out->progress = pg;
	if (j->code || j->phase == HCA__JOB_PHASE__JOB_PHASE_CANCELLED) {
		e->code = j->code;
		e->message = (char *)j->error;
		out->error = e;
	}
	out->note = (char *)j->note;
	out->created_ms = j->created_ms;
	out->updated_ms = j->updated_ms;
	out->ended_ms = j->ended_ms;
	out->requested_on = (char *)j->requested_on;
	out->cancel_requested = j->cancel_requested;
	out->incarnation = j->incarnation;
	out->n_volumes = j->n_volumes;
	out->volumes = j->volumes;
	out->migration = j->mig;
}

Hca__Job *job_record_decode(const uint8_t *buf, size_t len, char *err, size_t errlen)
{
	int werr = 0;
	Hca__Job *r = (Hca__Job *)wire_frame_unpack(buf, len, STO_REC_MAX, WIRE_T_JOB,
						     &hca__job__descriptor, &werr);

	if (!r) {
		snprintf(err, errlen, "job record corrupt (%s)", wire_strerror(werr));
		return NULL;
	}
	if (r->format > JOB_FORMAT) {
		snprintf(err, errlen, "job %s: written by a newer hca (job format %u, this node "
			 "reads up to %u)", r->id, r->format, JOB_FORMAT);
		hca__job__free_unpacked(r, NULL);
		return NULL;
	}
	return r;
}

/* ---- persistence ---- */

struct jwrite {
	struct exec_item item;
	struct job *j;
	struct sto_store *st; /* a worker never reads the job itself */
	char key[STO_KEY_MAX + 1];
	uint8_t *frame;
	size_t len;
	uint64_t expect, version;
	uint64_t gen; /* the job's change counter when packed */
	int rc;
	char err[256];
	/* pruning: a terminal job dropped from memory, deleted from the store */
	bool del;
};

static void write_start(struct job *j);
static void job_release(struct job *j);

static void wait_clear(struct job *j)
{
	if (j->wait_timer)
		qb_loop_timer_del(j->js->loop, j->wait_timer);
	j->wait_timer = 0;
	j->wait_fn = NULL;
	j->wait_opaque = NULL;
}

static void wait_fire(struct job *j, int rc)
{
	job_durable_fn fn = j->wait_fn;
	void *opaque = j->wait_opaque;

	wait_clear(j);
	if (fn)
		fn(j, rc, opaque);
}

static void wait_timeout(void *data)
{
	struct job *j = data;

	j->wait_timer = 0;
	wait_fire(j, -ETIMEDOUT);
}

static void write_fn(struct exec_item *it)
{
	struct jwrite *w = EXEC_CONTAINER_OF(it, struct jwrite, item);
	uint8_t *old = NULL;
	size_t olen = 0;

	if (w->del) {
		w->rc = sto_del(w->st, w->key, w->expect, w->err, sizeof(w->err));
		return;
	}
	w->rc = sto_put(w->st, w->key, w->frame, w->len, w->expect, &w->version, w->err,
			sizeof(w->err));
	if (w->rc == -ECANCELED || w->rc == -EEXIST || w->rc == -ENOENT) {
		/* a write of ours whose answer was lost landed after all: this
		 * node is the only writer, so take the version and write again */
		if (sto_get(w->st, w->key, &old, &olen, &w->expect, w->err, sizeof(w->err)) == 0)
			w->rc = sto_put(w->st, w->key, w->frame, w->len, w->expect, &w->version,
					w->err, sizeof(w->err));
		else if (w->rc == -ENOENT)
			w->rc = sto_put(w->st, w->key, w->frame, w->len, 0, &w->version, w->err,
					sizeof(w->err));
		free(old);
	}
}

static void retry_timer(void *data)
{
	struct jobs *js = data;

	js->retry = 0;
	for (struct job *j = js->list; j; j = j->next)
		if (j->dirty && !j->writing)
			write_start(j);
}

static void retry_later(struct jobs *js)
{
	if (!js->retry && !js->stopping)
		qb_loop_timer_add(js->loop, QB_LOOP_LOW, RETRY_MS * QB_TIME_NS_IN_MSEC, js,
				  retry_timer, &js->retry);
}

static void write_done(struct exec_item *it)
{
	struct jwrite *w = EXEC_CONTAINER_OF(it, struct jwrite, item);
	struct job *j = w->j;
	bool ok;

	j->writing = false;
	if (exec_item_cancelled(it)) { /* shutdown: the job stays as it was */
		free(w->frame);
		free(w);
		return;
	}
	if (w->del) {
		if (w->rc < 0 && w->rc != -ENOENT)
			qb_log(LOG_DEBUG, "job %s: not pruned: %s", j->id, w->err);
		free(j->volumes);
		if (j->mig)
			hca__mig_report__free_unpacked(j->mig, NULL);
		free(j);
		free(w);
		return;
	}
	ok = w->rc == 0;
	if (ok) {
		j->version = w->version;
		if (w->gen > j->durable_gen)
			j->durable_gen = w->gen;
	} else {
		qb_log(LOG_WARNING, "job %s: record not written (%s); retrying", j->id, w->err);
		j->dirty = true;
		retry_later(j->js);
	}
	free(w->frame);
	free(w);
	if (j->wait_fn && j->durable_gen >= j->wait_gen)
		wait_fire(j, 0); /* may end the job: it is still in the table */
	if (j->dirty && ok)
		write_start(j);
	else if (j->ended && !j->dirty)
		job_release(j);
}

static void write_start(struct job *j)
{
	Hca__Job rec;
	Hca__JobProgress pg;
	Hca__Error e;
	struct jwrite *w;

	if (!j->js->store || j->js->stopping) {
		j->dirty = true;
		return;
	}
	if (j->writing) {
		j->dirty = true;
		return;
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		j->dirty = true;
		retry_later(j->js);
		return;
	}
	job_fill(j, &rec, &pg, &e);
	w->j = j;
	w->st = j->js->store;
	snprintf(w->key, sizeof(w->key), "job/%s", j->id);
	w->expect = j->version;
	w->frame = wire_frame_pack(WIRE_T_JOB, &rec.base, &w->len);
	if (!w->frame) {
		free(w);
		j->dirty = true;
		retry_later(j->js);
		return;
	}
	j->dirty = false;
	j->writing = true;
	j->written_ms = now_ms();
	w->gen = j->gen;
	exec_item_init(&w->item, write_fn, write_done);
	exec_push(j->js->q, &w->item, w->key);
}

static void touch(struct job *j, bool now)
{
	j->gen++;
	j->updated_ms = now_ms();
	if (now || j->updated_ms - j->written_ms >= PROGRESS_WRITE_MS)
		write_start(j);
	else
		j->dirty = true, retry_later(j->js);
}

/* ---- the table ---- */

struct jobs *jobs_new(qb_loop_t *loop, struct exec_queue *q, const char *node)
{
	struct jobs *js = calloc(1, sizeof(*js));

	if (!js)
		return NULL;
	js->loop = loop;
	js->q = q;
	snprintf(js->node, sizeof(js->node), "%s", node);
	return js;
}

void jobs_set_store(struct jobs *js, struct sto_store *st)
{
	js->store = st;
	retry_timer(js);
}

void jobs_shutdown(struct jobs *js)
{
	if (!js)
		return;
	js->stopping = true;
	if (js->retry)
		qb_loop_timer_del(js->loop, js->retry);
	js->retry = 0;
}

static void job_free_now(struct job *j)
{
	if (j->mig)
		hca__mig_report__free_unpacked(j->mig, NULL);
	for (size_t i = 0; i < j->n_volumes; i++)
		free(j->volumes[i]);
	free(j->volumes);
	free(j);
}

void jobs_free(struct jobs *js)
{
	struct job *j, *next;

	if (!js)
		return;
	jobs_shutdown(js);
	for (j = js->list; j; j = next) {
		next = j->next;
		wait_clear(j);
		/* a write still queued would touch it: the work queue is freed
		 * (and its completions run) before this */
		job_free_now(j);
	}
	free(js);
}

void jobs_seq_at_least(struct jobs *js, uint64_t seq)
{
	if (seq > js->seq)
		js->seq = seq;
}

struct job *jobs_find(struct jobs *js, const char *id)
{
	for (struct job *j = js->list; j; j = j->next)
		if (!strcmp(j->id, id))
			return j;
	return NULL;
}

void jobs_each(struct jobs *js, void (*fn)(const struct job *j, void *opaque), void *opaque)
{
	for (struct job *j = js->list; j; j = j->next)
		fn(j, opaque);
}

static void link_job(struct jobs *js, struct job *j)
{
	j->js = js;
	j->next = js->list;
	js->list = j;
}

struct job *job_new(struct jobs *js, Hca__JobKind kind, const char *vm, const char *requested_on,
		    uint64_t incarnation)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	snprintf(j->id, sizeof(j->id), "%s-%" PRIu64, js->node, ++js->seq);
	j->kind = kind;
	snprintf(j->vm, sizeof(j->vm), "%s", vm);
	snprintf(j->requested_on, sizeof(j->requested_on), "%s",
		 requested_on && *requested_on ? requested_on : js->node);
	j->incarnation = incarnation;
	j->created_ms = j->updated_ms = now_ms();
	link_job(js, j);
	qb_log(LOG_INFO, "job %s: %s %s%s%s", j->id, job_kind_name(kind), vm,
	       requested_on && *requested_on ? ", asked on " : "",
	       requested_on && *requested_on ? requested_on : "");
	j->gen = 1;
	write_start(j);
	return j;
}

struct job *job_adopt(struct jobs *js, const Hca__Job *rec, uint64_t version)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	snprintf(j->id, sizeof(j->id), "%s", rec->id);
	j->kind = rec->kind;
	snprintf(j->vm, sizeof(j->vm), "%s", rec->vm);
	snprintf(j->requested_on, sizeof(j->requested_on), "%s", rec->requested_on);
	j->phase = rec->phase;
	j->incarnation = rec->incarnation;
	j->created_ms = rec->created_ms;
	j->updated_ms = rec->updated_ms;
	j->written_ms = rec->updated_ms;
	j->version = version;
	for (size_t i = 0; i < rec->n_volumes; i++)
		job_add_volume(j, rec->volumes[i]);
	if (rec->migration)
		job_set_migration(j, rec->migration);
	if (rec->progress) {
		j->done = rec->progress->done;
		j->total = rec->progress->total;
		snprintf(j->unit, sizeof(j->unit), "%s", rec->progress->unit);
		snprintf(j->detail, sizeof(j->detail), "%s", rec->progress->detail);
	}
	if (rec->error) {
		j->code = rec->error->code;
		snprintf(j->error, sizeof(j->error), "%s", rec->error->message);
	}
	snprintf(j->note, sizeof(j->note), "%s", rec->note);
	/* an ended one is only kept for showing, and pruned with the rest */
	j->ended = job_phase_terminal(rec->phase);
	j->ended_ms = rec->ended_ms;
	link_job(js, j);
	return j;
}

/* ---- changes ---- */

int job_phase(struct job *j, Hca__JobPhase phase)
{
	if (!job_phase_allowed(j->phase, phase)) {
		qb_log(LOG_ERR, "job %s: refused phase %s after %s (phases never go back)", j->id,
		       job_phase_name(phase), job_phase_name(j->phase));
		return -EINVAL;
	}
	if (phase == j->phase)
		return 0;
	qb_log(LOG_DEBUG, "job %s: %s -> %s", j->id, job_phase_name(j->phase), job_phase_name(phase));
	j->phase = phase;
	j->detail[0] = '\0';
	touch(j, true);
	return 0;
}

Hca__JobPhase job_get_phase(const struct job *j)
{
	return j->phase;
}

void job_progress(struct job *j, uint64_t done, uint64_t total, const char *unit,
		  const char *detail)
{
	uint64_t t = now_ms();

	if (!j->rate_t0_ms || done < j->rate_done0) {
		j->rate_t0_ms = t;
		j->rate_done0 = done;
	} else if (t - j->rate_t0_ms >= 500) {
		j->rate = (done - j->rate_done0) * 1000u / (t - j->rate_t0_ms);
	}
	j->done = done;
	j->total = total;
	j->eta_s = j->rate && total > done ? (uint32_t)((total - done) / j->rate) : 0;
	if (unit)
		snprintf(j->unit, sizeof(j->unit), "%s", unit);
	if (detail)
		snprintf(j->detail, sizeof(j->detail), "%s", detail);
	touch(j, false);
}

/* Drop the oldest terminal jobs beyond JOB_KEEP, from memory and store. */
static void prune(struct jobs *js)
{
	size_t kept = 0;
	struct job **pp = &js->list;

	while (*pp) {
		struct job *j = *pp;
		if (!j->ended || j->writing || j->dirty || ++kept <= JOB_KEEP) {
			pp = &j->next;
			continue;
		}
		*pp = j->next;
		struct jwrite *w = js->store ? calloc(1, sizeof(*w)) : NULL;
		if (!w || !j->version) {
			free(w);
			job_free_now(j);
			continue;
		}
		w->j = j;
		w->st = js->store;
		w->del = true;
		w->expect = j->version;
		snprintf(w->key, sizeof(w->key), "job/%s", j->id);
		for (size_t i = 0; i < j->n_volumes; i++)
			free(j->volumes[i]);
		j->n_volumes = 0;
		j->writing = true;
		exec_item_init(&w->item, write_fn, write_done);
		exec_push(js->q, &w->item, w->key);
	}
}

static void job_release(struct job *j)
{
	prune(j->js);
}

static void end(struct job *j, Hca__JobPhase phase, Hca__ErrorCode code, const char *fmt,
		va_list ap)
{
	if (j->ended)
		return;
	vsnprintf(j->error, sizeof(j->error), fmt, ap);
	j->code = code;
	j->phase = phase;
	j->ended = true;
	j->ended_ms = now_ms();
	j->cancel = NULL;
	wait_clear(j); /* whoever waited is who ends it */
	if (phase == HCA__JOB_PHASE__JOB_PHASE_SUCCEEDED)
		j->error[0] = '\0';
	qb_log(phase == HCA__JOB_PHASE__JOB_PHASE_FAILED ? LOG_WARNING : LOG_INFO,
	       "job %s: %s %s: %s%s%s", j->id, job_kind_name(j->kind), j->vm,
	       job_phase_name(phase), j->error[0] ? ": " : "", j->error);
	touch(j, true);
	if (!j->writing)
		job_release(j);
}

void job_finish(struct job *j, Hca__ErrorCode code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	end(j, code ? HCA__JOB_PHASE__JOB_PHASE_FAILED : HCA__JOB_PHASE__JOB_PHASE_SUCCEEDED, code,
	    fmt, ap);
	va_end(ap);
}

void job_cancelled(struct job *j, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	end(j, HCA__JOB_PHASE__JOB_PHASE_CANCELLED, HCA__ERROR_CODE__ERROR_NONE, fmt, ap);
	va_end(ap);
}

void job_note(struct job *j, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(j->note, sizeof(j->note), fmt, ap);
	va_end(ap);
	touch(j, true);
}

void job_set_cancel(struct job *j, job_cancel_fn fn, void *opaque)
{
	j->cancel = fn;
	j->cancel_opaque = opaque;
}

bool job_cancel_requested(const struct job *j)
{
	return j->cancel_requested;
}

int job_request_cancel(struct job *j, char *err, size_t errlen)
{
	int rc;

	if (j->ended) {
		snprintf(err, errlen, "job %s: already %s", j->id, job_phase_name(j->phase));
		return -EALREADY;
	}
	if (!j->cancel) {
		snprintf(err, errlen, "job %s: %s cannot be cancelled in phase %s", j->id,
			 job_kind_name(j->kind), job_phase_name(j->phase));
		return -EOPNOTSUPP;
	}
	rc = j->cancel(j, j->cancel_opaque, err, errlen);
	if (rc == 0 && !j->ended) {
		j->cancel_requested = true;
		touch(j, true);
	}
	return rc;
}

void job_add_volume(struct job *j, const char *vol)
{
	char **v = realloc(j->volumes, (j->n_volumes + 1) * sizeof(*v));

	if (!v)
		return;
	j->volumes = v;
	if ((v[j->n_volumes] = strdup(vol)))
		j->n_volumes++;
	if (j->js)
		touch(j, true);
}

void job_when_durable(struct job *j, job_durable_fn fn, void *opaque, unsigned timeout_ms)
{
	wait_clear(j);
	if (j->durable_gen >= j->gen) {
		fn(j, 0, opaque);
		return;
	}
	j->wait_fn = fn;
	j->wait_opaque = opaque;
	j->wait_gen = j->gen;
	if (j->dirty && !j->writing)
		write_start(j); /* a progress write held back: now */
	qb_loop_timer_add(j->js->loop, QB_LOOP_HIGH, (uint64_t)timeout_ms * QB_TIME_NS_IN_MSEC, j,
			  wait_timeout, &j->wait_timer);
}

void job_forget_volume(struct job *j)
{
	if (!j->n_volumes)
		return;
	free(j->volumes[--j->n_volumes]);
	touch(j, true);
}

void job_set_migration(struct job *j, const Hca__MigReport *r)
{
	Hca__MigReport *c = NULL;
	size_t len;
	uint8_t *buf;

	if (r && (buf = malloc((len = hca__mig_report__get_packed_size(r)) + 1))) {
		hca__mig_report__pack(r, buf);
		c = hca__mig_report__unpack(NULL, len, buf);
		free(buf);
	}
	if (j->mig)
		hca__mig_report__free_unpacked(j->mig, NULL);
	j->mig = c;
	if (j->js) /* not while job_adopt builds it */
		touch(j, false);
}

void job_set_incarnation(struct job *j, uint64_t incarnation)
{
	j->incarnation = incarnation;
	touch(j, true);
}

const char *job_id(const struct job *j) { return j->id; }
Hca__JobKind job_kind(const struct job *j) { return j->kind; }
const char *job_vm(const struct job *j) { return j->vm; }
uint64_t job_incarnation(const struct job *j) { return j->incarnation; }
size_t job_n_volumes(const struct job *j) { return j->n_volumes; }
const char *job_volume(const struct job *j, size_t i) { return i < j->n_volumes ? j->volumes[i] : ""; }
