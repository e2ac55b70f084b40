/*
 * hcactl_job: jobs as hcactl shows them. hcad runs every long operation
 * (define, undefine, start, stop, shutdown, migrate; later failover) as
 * a job with an id ("node1-17"), a phase and a progress, readable from any
 * node. Here: `job list`, `job show ID`, `job cancel ID`, `migration list`
 * (the migrate jobs, with their figures), and the following of a job a long
 * command started, polling `job_show` until the job ends.
 *
 * While following, the progress goes to stderr as one line rewritten in
 * place, and only when stderr is a terminal: what a script reads from
 * stdout and stderr stays what it was before there were jobs. On request
 * (--progress, HCA_PROGRESS=lines) a line per phase goes to stdout instead.
 * The names of kinds, phases and error codes come from hca.proto's own enum
 * descriptors, so there is no second list of them to keep in step.
 */
#include "agent/hcactl_priv.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define POLL_MS 200
#define RETRY_MS 1000            /* between polls hcad did not answer */
#define SILENT_MS 120000         /* hcad not answering this long: stop following */
#define JOB_ID_MAX 128
#define NAME_LEN 32
#define LINE_MAX_LEN 512
#define RESULT_MAX 60

/* ---- names and values ---- */

/* "JOB_PHASE_LAUNCH" -> "launch": the proto's value name, less @prefix. */
static const char *enum_name(const ProtobufCEnumDescriptor *d, int value, const char *prefix,
			     char buf[NAME_LEN])
{
	const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(d, value);
	const char *name = v ? v->name : NULL;
	size_t n = strlen(prefix), i = 0;

	if (!name) {
		snprintf(buf, NAME_LEN, "%d", value);
		return buf;
	}
	if (!strncmp(name, prefix, n))
		name += n;
	for (; name[i] && i + 1 < NAME_LEN; i++)
		buf[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i]);
	buf[i] = '\0';
	return buf;
}

static const char *kind_name(Hca__JobKind k, char buf[NAME_LEN])
{
	return enum_name(&hca__job_kind__descriptor, k, "JOB_KIND_", buf);
}

static const char *phase_name(Hca__JobPhase p, char buf[NAME_LEN])
{
	return enum_name(&hca__job_phase__descriptor, p, "JOB_PHASE_", buf);
}

static const char *code_name(Hca__ErrorCode c, char buf[NAME_LEN])
{
	return enum_name(&hca__error_code__descriptor, c, "ERROR_", buf);
}

static bool phase_terminal(Hca__JobPhase p)
{
	return p == HCA__JOB_PHASE__JOB_PHASE_SUCCEEDED || p == HCA__JOB_PHASE__JOB_PHASE_FAILED ||
	       p == HCA__JOB_PHASE__JOB_PHASE_CANCELLED;
}

bool hcactl_job_id_valid(const char *id)
{
	size_t n = strlen(id);

	if (!n || n > JOB_ID_MAX || id[0] == '-' || id[0] == '.')
		return false;
	return strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* @ms (a stamp of the node that ran the job) to @now, never negative. */
static uint64_t since(uint64_t ms, int64_t now)
{
	return ms && now > (int64_t)ms ? (uint64_t)now - ms : 0;
}

/* From creation to the end, or to @now while it runs. */
static uint64_t job_elapsed_ms(const Hca__Job *j, int64_t now)
{
	bool ended = phase_terminal(j->phase) && j->ended_ms;

	return since(j->created_ms, ended ? (int64_t)j->ended_ms : now);
}

static unsigned percent(const Hca__JobProgress *p)
{
	return p->done >= p->total ? 100 : (unsigned)((double)p->done * 100 / (double)p->total);
}

/* "1.2 GiB of 4.0 GiB (30%), 120.0 MiB/s, eta 25s", or "" with nothing to say. */
static void progress_text(const Hca__JobProgress *p, char *buf, size_t len)
{
	char done[32], total[32], rate[32], eta[32];
	size_t used = 0;

	buf[0] = '\0';
	if (!p || (!p->done && !p->total))
		return;
	hcactl_amount(p->done, p->unit, done, sizeof(done));
	if (p->total) {
		/* "1.2 GiB of 4.0 GiB", but "1 of 3 volumes" */
		hcactl_amount(p->total, p->unit, total, sizeof(total));
		if (strcmp(p->unit, "bytes"))
			snprintf(done, sizeof(done), "%llu", (unsigned long long)p->done);
		used = (size_t)snprintf(buf, len, "%s of %s (%u%%)", done, total, percent(p));
	} else {
		used = (size_t)snprintf(buf, len, "%s", done);
	}
	if (p->rate && used < len) {
		hcactl_amount(p->rate, p->unit, rate, sizeof(rate));
		used += (size_t)snprintf(buf + used, len - used, ", %s/s", rate);
	}
	if (p->eta_s && used < len) {
		hcactl_duration(p->eta_s, eta, sizeof(eta));
		snprintf(buf + used, len - used, ", eta %s", eta);
	}
}

static double mib(uint64_t bytes)
{
	return (double)bytes / (1024.0 * 1024.0);
}

/* A migrate job: "45%, 230.0 MiB sent, 280.0 MiB left, 112.3 MiB/s, dirty
 * 8.0 MiB/s, eta 4s, pass 2", what is known of it. */
static void mig_progress_text(const Hca__Job *j, char *buf, size_t len)
{
	const Hca__MigReport *m = j->migration;
	const Hca__JobProgress *p = j->progress;
	struct line_buf l = { .buf = buf, .len = len };
	char sent[32], left[32], eta[32];

	buf[0] = '\0';
	if (p && p->total)
		hcactl_line_add(&l, ", ", "%u%%", percent(p));
	if (m->disks && m->disk_total && !m->transferred && !m->remaining) {
		/* the disk phase: the mirrors copy */
		hcactl_amount(m->disk_done, "bytes", sent, sizeof(sent));
		hcactl_amount(m->disk_total, "bytes", left, sizeof(left));
		hcactl_line_add(&l, ", ", "disks: %s of %s copied", sent, left);
	}
	if (m->transferred || m->remaining) {
		hcactl_amount(m->transferred, "bytes", sent, sizeof(sent));
		hcactl_amount(m->remaining, "bytes", left, sizeof(left));
		hcactl_line_add(&l, ", ", "%s sent, %s left", sent, left);
	}
	if (m->rate)
		hcactl_line_add(&l, ", ", "%.1f MiB/s", mib(m->rate));
	if (m->dirty_rate)
		hcactl_line_add(&l, ", ", "dirty %.1f MiB/s", mib(m->dirty_rate));
	if (p && p->eta_s) {
		hcactl_duration(p->eta_s, eta, sizeof(eta));
		hcactl_line_add(&l, ", ", "eta %s", eta);
	}
	if (m->passes)
		hcactl_line_add(&l, ", ", "pass %llu", (unsigned long long)m->passes);
}

/* ---- JSON ---- */

static json_t *progress_json(const Hca__JobProgress *p)
{
	if (!p)
		return json_null();
	return json_pack("{s:I, s:I, s:s, s:I, s:I, s:s}", "done", (json_int_t)p->done,
			 "total", (json_int_t)p->total, "unit", p->unit, "rate", (json_int_t)p->rate,
			 "eta_s", (json_int_t)p->eta_s, "detail", p->detail);
}

static json_t *error_json(const Hca__Error *e)
{
	char code[NAME_LEN];

	if (!e || e->code == HCA__ERROR_CODE__ERROR_NONE)
		return json_null();
	return json_pack("{s:s, s:s}", "code", code_name(e->code, code), "message", e->message);
}

json_t *hcactl_job_json(const Hca__Job *j)
{
	char kind[NAME_LEN], phase[NAME_LEN];
	json_t *vols = json_array();

	for (size_t i = 0; vols && i < j->n_volumes; i++)
		json_array_append_new(vols, json_string(j->volumes[i]));
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:o, s:o, s:s, s:I, s:I, s:I, s:o?, "
			 "s:o*}",
			 "id", j->id, "kind", kind_name(j->kind, kind), "vm", j->vm,
			 "node", j->node, "requested_on", j->requested_on,
			 "phase", phase_name(j->phase, phase), "cancel_requested", j->cancel_requested,
			 "progress", progress_json(j->progress), "error", error_json(j->error),
			 "note", j->note, "created_ms", (json_int_t)j->created_ms,
			 "updated_ms", (json_int_t)j->updated_ms, "ended_ms", (json_int_t)j->ended_ms,
			 "volumes", vols, "migration", hcactl_mig_json(j->migration));
}

/* ---- show and list ---- */

static void kv_time(const char *key, uint64_t ms, int64_t now)
{
	time_t t = (time_t)(ms / 1000);
	char when[64], ago[32];

	if (!ms)
		return;
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %Z", localtime(&t));
	hcactl_duration(since(ms, now) / 1000, ago, sizeof(ago));
	hcactl_kv(key, "%s (%s ago)", when, ago);
}

static void show_progress(const Hca__Job *j)
{
	char text[256];

	progress_text(j->progress, text, sizeof(text));
	if (text[0])
		hcactl_kv("progress", "%s", text);
	if (j->progress && j->progress->detail[0])
		hcactl_kv("detail", "%s", hcactl_one_line(j->progress->detail));
}

/* define: the volumes made so far, "backend:name", on one line. */
static void show_volumes(const Hca__Job *j)
{
	char list[1024] = "";
	size_t used = 0;

	for (size_t i = 0; i < j->n_volumes && used < sizeof(list); i++)
		used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "",
					 j->volumes[i]);
	if (j->n_volumes)
		hcactl_kv("volumes", "%s", list);
}

static void show_job(Hca__Job *j)
{
	char kind[NAME_LEN], phase[NAME_LEN], code[NAME_LEN], took[32];
	int64_t now = clock_ms(CLOCK_REALTIME);
	bool ended = phase_terminal(j->phase);

	hcactl_kv("id", "%s", j->id);
	hcactl_kv("kind", "%s", kind_name(j->kind, kind));
	hcactl_kv("vm", "%s", j->vm);
	hcactl_kv("node", "%s", j->node);
	if (j->requested_on[0] && strcmp(j->requested_on, j->node))
		hcactl_kv("requested on", "%s", j->requested_on);
	hcactl_kv("phase", "%s%s", phase_name(j->phase, phase),
		  j->cancel_requested && !ended ? " (cancel requested)" : "");
	show_progress(j);
	kv_time("created", j->created_ms, now);
	if (ended)
		kv_time("ended", j->ended_ms, now);
	else
		kv_time("updated", j->updated_ms, now);
	hcactl_elapsed(job_elapsed_ms(j, now), took, sizeof(took));
	hcactl_kv("elapsed", "%s", took);
	if (j->error && j->error->code)
		hcactl_kv("error", "%s [%s]", hcactl_one_line(j->error->message),
			  code_name(j->error->code, code));
	if (j->note[0])
		hcactl_kv("note", "%s", hcactl_one_line(j->note));
	show_volumes(j);
	if (j->migration)
		hcactl_mig_show(j->migration);
}

#define CELL 96

/* A table of jobs: its columns, and how one job fills a row of them. */
struct job_table {
	const char *const *head;
	size_t ncols;
	size_t fixed;              /* as hcactl_table()'s */
	void (*fill)(const Hca__Job *j, int64_t now, char (*col)[CELL]);
};

/* What went wrong, or what there is to know, for the RESULT column. */
static const char *result_text(const Hca__Job *j)
{
	if (j->error && j->error->message[0])
		return j->error->message;
	if (j->cancel_requested && !phase_terminal(j->phase))
		return "cancel requested";
	return j->note;
}

static void result_cell(const char *result, char *cell)
{
	snprintf(cell, CELL, "%.*s%s", RESULT_MAX, result, strlen(result) > RESULT_MAX ? "..." : "");
}

enum { COL_ID, COL_KIND, COL_VM, COL_NODE, COL_PHASE, COL_PROGRESS, COL_AGE, COL_ELAPSED,
       COL_RESULT, NCOLS };

static void fill_row(const Hca__Job *j, int64_t now, char (*col)[CELL])
{
	const Hca__JobProgress *p = j->progress;

	snprintf(col[COL_ID], CELL, "%s", j->id);
	kind_name(j->kind, col[COL_KIND]);
	snprintf(col[COL_VM], CELL, "%s", j->vm[0] ? j->vm : "-");
	snprintf(col[COL_NODE], CELL, "%s", j->node);
	phase_name(j->phase, col[COL_PHASE]);
	if (p && p->total)
		snprintf(col[COL_PROGRESS], CELL, "%u%%", percent(p));
	else if (p && p->done)
		hcactl_amount(p->done, p->unit, col[COL_PROGRESS], CELL);
	else
		snprintf(col[COL_PROGRESS], CELL, "-");
	hcactl_duration(since(j->created_ms, now) / 1000, col[COL_AGE], CELL);
	hcactl_duration(job_elapsed_ms(j, now) / 1000, col[COL_ELAPSED], CELL);
	result_cell(result_text(j), col[COL_RESULT]);
}

static const char *const job_head[NCOLS] = { "ID", "KIND", "VM", "NODE", "PHASE", "PROGRESS",
					     "AGE", "ELAPSED", "RESULT" };
static const struct job_table job_cols = { job_head, NCOLS, COL_RESULT, fill_row };

enum { MCOL_ID, MCOL_VM, MCOL_NODES, MCOL_PHASE, MCOL_ELAPSED, MCOL_DOWNTIME, MCOL_SENT,
       MCOL_PASSES, MCOL_RESULT, MNCOLS };

/* "38/31 ms": the pause seen from outside, then QEMU's figure; "-" unknown. */
static void downtime_cell(const Hca__MigReport *m, char *cell)
{
	char seen[24] = "-", qemu[24] = "-";

	if (!m || (!m->pause_ms && !m->downtime_ms)) {
		snprintf(cell, CELL, "-");
		return;
	}
	if (m->pause_ms)
		snprintf(seen, sizeof(seen), "%llu", (unsigned long long)m->pause_ms);
	if (m->downtime_ms)
		snprintf(qemu, sizeof(qemu), "%llu", (unsigned long long)m->downtime_ms);
	snprintf(cell, CELL, "%s/%s ms", seen, qemu);
}

static void mig_fill_row(const Hca__Job *j, int64_t now, char (*col)[CELL])
{
	const Hca__MigReport *m = j->migration;
	bool ended = phase_terminal(j->phase);
	const char *result = result_text(j);

	snprintf(col[MCOL_ID], CELL, "%s", j->id);
	snprintf(col[MCOL_VM], CELL, "%s", j->vm[0] ? j->vm : "-");
	/* the job runs on the source; the target is only in the report */
	snprintf(col[MCOL_NODES], CELL, "%s->%s", m && m->source[0] ? m->source : j->node,
		 m && m->target[0] ? m->target : "?");
	phase_name(j->phase, col[MCOL_PHASE]);
	hcactl_elapsed(m && ended && m->elapsed_ms ? m->elapsed_ms : job_elapsed_ms(j, now),
		       col[MCOL_ELAPSED], CELL);
	downtime_cell(m, col[MCOL_DOWNTIME]);
	if (m && m->transferred)
		hcactl_amount(m->transferred, "bytes", col[MCOL_SENT], CELL);
	else
		snprintf(col[MCOL_SENT], CELL, "-");
	if (m && m->passes)
		snprintf(col[MCOL_PASSES], CELL, "%llu", (unsigned long long)m->passes);
	else
		snprintf(col[MCOL_PASSES], CELL, "-");
	/* nothing went wrong: what the convergence policy had to do */
	result_cell(!result[0] && m && ended ? m->policy : result, col[MCOL_RESULT]);
}

static const char *const mig_head[MNCOLS] = { "ID", "VM", "SOURCE->TARGET", "PHASE", "ELAPSED",
					      "DOWNTIME", "SENT", "PASSES", "RESULT" };
static const struct job_table mig_cols = { mig_head, MNCOLS, MCOL_RESULT, mig_fill_row };

static json_t *jobs_json(Hca__Job **jobs, size_t n)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < n; i++) {
		if (json_array_append_new(arr, hcactl_job_json(jobs[i]))) {
			json_decref(arr);
			arr = NULL;
		}
	}
	return arr;
}

static int print_jobs(bool json, Hca__Job **jobs, size_t n, const struct job_table *t)
{
	char (*text)[CELL] = NULL;
	const char **cells = NULL;
	int64_t now = clock_ms(CLOCK_REALTIME);
	int rc = 0;

	if (json)
		return hcactl_print_json(jobs_json(jobs, n));
	if (n && (!(text = calloc(n * t->ncols, sizeof(*text))) ||
		  !(cells = calloc(n * t->ncols, sizeof(*cells))))) {
		rc = hcactl_complain(EXIT_HCAD, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		t->fill(jobs[i], now, text + i * t->ncols);
		for (size_t c = 0; c < t->ncols; c++)
			cells[i * t->ncols + c] = hcactl_one_line(text[i * t->ncols + c]);
	}
	hcactl_table(t->head, t->ncols, t->fixed, cells, n);
out:
	free(cells);
	free(text);
	return rc;
}

/* ---- the commands ---- */

/* The job in a reply to job_show or job_cancel, or NULL after saying so. */
static Hca__Job *reply_job(Hca__ApiReply *r)
{
	if (r->result_case == HCA__API_REPLY__RESULT_JOB && r->job && r->job->id[0])
		return r->job;
	hcactl_complain(EXIT_HCAD, "malformed reply from hcad: no job");
	return NULL;
}

static int print_job(bool json, Hca__Job *j)
{
	if (json)
		return hcactl_print_json(hcactl_job_json(j));
	show_job(j);
	return 0;
}

/* hcad's reply to job_list, whose ->jobs is valid (free it), or NULL after saying why not. */
static Hca__ApiReply *fetch_jobs(struct cli *cli)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__ApiReply *r = NULL;

	req.op_case = HCA__API_REQUEST__OP_JOB_LIST;
	req.job_list = 1;
	if (!(r = hcactl_call(cli, &req, CALL_TIMEOUT_MS)))
		return NULL;
	if (r->result_case == HCA__API_REPLY__RESULT_JOBS && r->jobs)
		return r;
	hcactl_complain(EXIT_HCAD, "malformed reply from hcad: no job list");
	hca__api_reply__free_unpacked(r, NULL);
	return NULL;
}

int hcactl_job_list(struct cli *cli)
{
	Hca__ApiReply *r = fetch_jobs(cli);
	int rc;

	if (!r)
		return EXIT_HCAD;
	rc = print_jobs(cli->json, r->jobs->jobs, r->jobs->n_jobs, &job_cols);
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

static int newest_first(const void *x, const void *y)
{
	const Hca__Job *a = *(Hca__Job *const *)x, *b = *(Hca__Job *const *)y;

	return a->created_ms < b->created_ms ? 1 : a->created_ms > b->created_ms ? -1 :
	       strcmp(b->id, a->id);
}

int hcactl_migration_list(struct cli *cli)
{
	Hca__ApiReply *r = fetch_jobs(cli);
	Hca__Job **migs = NULL;
	size_t n = 0;
	int rc = EXIT_HCAD;

	if (!r)
		return EXIT_HCAD;
	if (r->jobs->n_jobs && !(migs = calloc(r->jobs->n_jobs, sizeof(*migs)))) {
		hcactl_complain(EXIT_HCAD, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < r->jobs->n_jobs; i++)
		if (r->jobs->jobs[i]->kind == HCA__JOB_KIND__JOB_KIND_MIGRATE)
			migs[n++] = r->jobs->jobs[i];
	if (n)
		qsort(migs, n, sizeof(*migs), newest_first);
	if (!n && !cli->json) {
		printf("no migrations\n");
		rc = 0;
	} else {
		rc = print_jobs(cli->json, migs, n, &mig_cols);
	}
out:
	free(migs);
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

static int job_ref_op(struct cli *cli, const char *id, Hca__ApiRequest__OpCase op)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__JobRef ref = HCA__JOB_REF__INIT;
	Hca__ApiReply *r = NULL;
	Hca__Job *j = NULL;
	int rc = EXIT_HCAD;

	ref.id = (char *)id;
	req.op_case = op;
	if (op == HCA__API_REQUEST__OP_JOB_CANCEL)
		req.job_cancel = &ref;
	else
		req.job_show = &ref;
	if (!(r = hcactl_call(cli, &req, CALL_TIMEOUT_MS)))
		return EXIT_HCAD;
	if ((j = reply_job(r)))
		rc = print_job(cli->json, j);
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

int hcactl_job_show(struct cli *cli, const char *id)
{
	return job_ref_op(cli, id, HCA__API_REQUEST__OP_JOB_SHOW);
}

int hcactl_job_cancel(struct cli *cli, const char *id)
{
	return job_ref_op(cli, id, HCA__API_REQUEST__OP_JOB_CANCEL);
}

/* ---- following a job ---- */

enum display { SHOW_NONE, SHOW_TTY, SHOW_LINES };

struct follow {
	struct cli *cli;
	const struct long_op *op;
	char id[JOB_ID_MAX + 1];
	enum display display;
	FILE *lines;               /* SHOW_LINES: stdout, stderr under --json */
	int64_t t0;                /* CLOCK_MONOTONIC ms: following began */
	int last_phase;            /* last phase shown, -1 before the first */
	size_t drawn;              /* columns of the terminal line now shown */
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

static enum display display_for(const struct long_op *op)
{
	const char *env = getenv("HCA_PROGRESS");

	if (op->lines || (env && !strcmp(env, "lines")))
		return SHOW_LINES;
	if (env && !strcmp(env, "none"))
		return SHOW_NONE;
	/* not a terminal: print nothing, so what scripts parse stays as it was */
	return isatty(STDERR_FILENO) ? SHOW_TTY : SHOW_NONE;
}

/* "start web1 [node1-17]: launch  1.2 s  40 MiB of 64 MiB (62%)  detail" */
static void status_line(const struct follow *f, const Hca__Job *j, const char *trouble,
			char *buf, size_t len)
{
	char phase[NAME_LEN], took[32], prog[256];
	size_t used;

	hcactl_elapsed((uint64_t)(clock_ms(CLOCK_MONOTONIC) - f->t0), took, sizeof(took));
	if (j->migration)
		mig_progress_text(j, prog, sizeof(prog));
	else
		progress_text(j->progress, prog, sizeof(prog));
	used = (size_t)snprintf(buf, len, "%s %s [%s]: %s  %s", f->op->verb, f->op->vm, f->id,
				phase_name(j->phase, phase), took);
	if (prog[0] && used < len)
		used += (size_t)snprintf(buf + used, len - used, "  %s", prog);
	if (j->progress && j->progress->detail[0] && used < len)
		used += (size_t)snprintf(buf + used, len - used, "  %s", j->progress->detail);
	if (j->cancel_requested && used < len)
		used += (size_t)snprintf(buf + used, len - used, "  (cancel requested)");
	if (trouble[0] && used < len)
		snprintf(buf + used, len - used, "  (no answer from hcad: %s)", trouble);
	hcactl_one_line(buf);
}

static size_t term_width(void)
{
	struct winsize ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) || ws.ws_col < 2)
		return 80;
	return ws.ws_col;
}

/* Rewrite the line in place; shorter than the terminal, or it would wrap. */
static void draw(struct follow *f, char *line)
{
	size_t n = strlen(line), max = term_width() - 1;

	if (n > max) {
		n = max;
		while (n && ((unsigned char)line[n] & 0xc0) == 0x80)
			n--; /* not in the middle of a UTF-8 character */
		line[n] = '\0';
	}
	fprintf(stderr, "\r%s%*s", line, f->drawn > n ? (int)(f->drawn - n) : 0, "");
	if (f->drawn > n)
		fprintf(stderr, "\r%s", line);
	f->drawn = n;
	fflush(stderr);
}

static void clear_line(struct follow *f)
{
	if (!f->drawn)
		return;
	fprintf(stderr, "\r%*s\r", (int)f->drawn, "");
	fflush(stderr);
	f->drawn = 0;
}

static void show_state(struct follow *f, const Hca__Job *j, const char *trouble)
{
	char line[LINE_MAX_LEN];

	if (f->display == SHOW_NONE || (f->display == SHOW_LINES && (int)j->phase == f->last_phase) ||
	    (f->display == SHOW_TTY && phase_terminal(j->phase)))
		return; /* on a terminal the line goes once the job has ended */
	status_line(f, j, f->display == SHOW_TTY ? trouble : "", line, sizeof(line));
	if (f->display == SHOW_TTY) {
		draw(f, line);
	} else {
		fprintf(f->lines, "%s\n", line);
		fflush(f->lines);
	}
	f->last_phase = (int)j->phase;
}

/* The job ended: report a failure as one line, as hcad did before jobs. */
static int finish(struct follow *f, Hca__Job *j, bool *succeeded)
{
	char phase[NAME_LEN];
	const char *why = j->error && j->error->message[0] ? hcactl_one_line(j->error->message) : "";

	clear_line(f);
	if (j->phase == HCA__JOB_PHASE__JOB_PHASE_SUCCEEDED) {
		*succeeded = true;
		return 0;
	}
	if (!why[0])
		return hcactl_complain(EXIT_HCAD, "job %s %s%s%s", f->id, phase_name(j->phase, phase),
				       j->note[0] ? ": " : "", hcactl_one_line(j->note));
	return hcactl_complain(EXIT_HCAD, "%s%s%s%s", why, j->note[0] ? " (" : "",
			       hcactl_one_line(j->note), j->note[0] ? ")" : "");
}

/*
 * One poll. Returns the reply holding a job, or NULL with @err set; *@fatal
 * when asking again cannot help (no such job, a malformed reply).
 */
static Hca__ApiReply *poll_job(struct follow *f, char *err, size_t errlen, bool *fatal)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__JobRef ref = HCA__JOB_REF__INIT;
	Hca__ApiReply *r = NULL;
	Hca__ErrorCode code;

	ref.id = f->id;
	req.op_case = HCA__API_REQUEST__OP_JOB_SHOW;
	req.job_show = &ref;
	*fatal = false;
	if (!(r = hcactl_try(f->cli, &req, CALL_TIMEOUT_MS, err, errlen)))
		return NULL;
	code = r->error ? r->error->code : HCA__ERROR_CODE__ERROR_NONE;
	if (code != HCA__ERROR_CODE__ERROR_NONE) {
		snprintf(err, errlen, "%s", r->error->message[0] ? r->error->message :
			 "hcad reported an error without a message");
		/* storage or quorum trouble passes; a job that is not there does not */
		*fatal = code == HCA__ERROR_CODE__ERROR_NOT_FOUND ||
			 code == HCA__ERROR_CODE__ERROR_INVALID || code == HCA__ERROR_CODE__ERROR_PROTOCOL;
	} else if (r->result_case != HCA__API_REPLY__RESULT_JOB || !r->job) {
		snprintf(err, errlen, "malformed reply from hcad: no job");
		*fatal = true;
	} else {
		return r;
	}
	hca__api_reply__free_unpacked(r, NULL);
	return NULL;
}

/* Sleep @ms; false when Ctrl-C came. */
static bool nap(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	return nanosleep(&ts, NULL) == 0 || !interrupted;
}

/* Follow until the job ends. *@last gets the reply holding the job as last
 * seen (the caller frees it), NULL when that is still @first. */
static int follow(struct follow *f, Hca__Job *first, bool *succeeded, Hca__ApiReply **last)
{
	Hca__ApiReply *r = NULL, *next = NULL;
	Hca__Job *j = first;
	int64_t heard = clock_ms(CLOCK_MONOTONIC);
	char err[512] = "";
	bool fatal = false;
	int rc = -1;

	while (rc < 0 && !interrupted) {
		show_state(f, j, err);
		if (phase_terminal(j->phase)) {
			rc = finish(f, j, succeeded);
		} else if (nap(err[0] ? RETRY_MS : POLL_MS) &&
			   (next = poll_job(f, err, sizeof(err), &fatal))) {
			hca__api_reply__free_unpacked(r, NULL);
			r = next;
			j = r->job;
			err[0] = '\0';
			heard = clock_ms(CLOCK_MONOTONIC);
		} else if (!interrupted && (fatal || clock_ms(CLOCK_MONOTONIC) - heard > SILENT_MS)) {
			clear_line(f);
			rc = hcactl_complain(EXIT_HCAD, "lost track of job %s: %s (hcactl job show %s)",
					     f->id, hcactl_one_line(err), f->id);
		}
	}
	if (rc < 0) {
		clear_line(f);
		rc = hcactl_complain(EXIT_INTERRUPTED, "still running as job %s (hcactl job show %s)",
				     f->id, f->id);
	}
	*last = r;
	return rc;
}

/* Print the job (--no-wait), or follow it; *@succeeded when it did, and
 * *@last as follow() leaves it. */
static int job_wait(struct cli *cli, Hca__Job *job, const struct long_op *op, bool *succeeded,
		    Hca__ApiReply **last)
{
	struct follow f = { .cli = cli, .op = op, .last_phase = -1,
			    .t0 = clock_ms(CLOCK_MONOTONIC), .lines = cli->json ? stderr : stdout };
	/* SA_RESETHAND: a second Ctrl-C ends hcactl even inside a slow request */
	struct sigaction sa = { .sa_handler = on_sigint, .sa_flags = SA_RESETHAND }, old;
	int rc;

	*succeeded = false;
	*last = NULL;
	if (op->no_wait) {
		if (cli->json)
			return hcactl_print_json(hcactl_job_json(job));
		printf("%s\n", job->id);
		return 0;
	}
	if (!hcactl_job_id_valid(job->id))
		return hcactl_complain(EXIT_HCAD, "malformed reply from hcad: job id '%.40s'",
				       job->id);
	snprintf(f.id, sizeof(f.id), "%s", job->id);
	f.display = display_for(op);
	sigemptyset(&sa.sa_mask);
	interrupted = 0;
	sigaction(SIGINT, &sa, &old);
	rc = follow(&f, job, succeeded, last);
	sigaction(SIGINT, &old, NULL);
	return rc;
}

/* ---- long commands ---- */

/* Job @j succeeded: print what the command printed before there were jobs,
 * or the command's own report of it. */
static int print_done(struct cli *cli, const struct long_op *op, const Hca__ApiReply *before,
		      Hca__Job *j)
{
	Hca__ApiReply *r = NULL;
	int rc;

	if (op->report)
		return op->report(cli->json, j, op);
	if (op->done && !cli->json) {
		printf("%s: %s\n", op->vm, op->done);
		return 0;
	}
	if (op->gone && before)
		return hcactl_vm_outcome(cli->json, before->vm, op->vm, op->done);
	if (op->gone)
		return hcactl_print_json(json_pack("{s:s}", "name", op->vm));
	if (!(r = hcactl_fetch_vm(cli, op->vm, false)))
		return EXIT_HCAD;
	rc = hcactl_vm_outcome(cli->json, r->vm, op->vm, op->done);
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

int hcactl_long_op(struct cli *cli, const struct long_op *op)
{
	Hca__ApiReply *before = NULL, *r = NULL, *last = NULL;
	bool ok = false;
	int rc = EXIT_HCAD;

	/* undefine --json prints the VM as it was: ask while it is there */
	if (op->gone && cli->json && !op->no_wait)
		before = hcactl_fetch_vm(cli, op->vm, true);
	if (!(r = hcactl_call(cli, op->req, op->timeout_ms)))
		goto out;
	if (r->result_case == HCA__API_REPLY__RESULT_JOB && r->job)
		rc = job_wait(cli, r->job, op, &ok, &last);
	else if (r->result_case == HCA__API_REPLY__RESULT_VM && r->vm && r->vm->spec)
		rc = hcactl_vm_outcome(cli->json, r->vm, op->vm, op->done); /* hcad before jobs */
	else
		hcactl_complain(EXIT_HCAD, "malformed reply from hcad: neither a job nor a VM");
	if (!rc && ok)
		rc = print_done(cli, op, before, last ? last->job : r->job);
out:
	hca__api_reply__free_unpacked(last, NULL);
	hca__api_reply__free_unpacked(r, NULL);
	hca__api_reply__free_unpacked(before, NULL);
	return rc;
}
