/*
 * hcactl_job: jobs as hcactl shows them. hcad runs every long operation
 * (define, undefine, start, stop, shutdown, later migrate and failover) as
 * a job with an id ("node1-17"), a phase and a progress, readable from any
 * node. Here: `job list`, `job show ID`, `job cancel ID`, and the following
 * of a job a long command started, polling `job_show` until the job ends.
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

/* "1.2 s" below a minute, then "5m12s" and so on. */
static void elapsed_text(uint64_t ms, char *buf, size_t len)
{
	if (ms < 60000)
		snprintf(buf, len, "%.1f s", (double)ms / 1000.0);
	else
		hcactl_duration(ms / 1000, buf, len);
}

/* An amount of @unit for people: "1.2 GiB" for bytes, "3 volumes". */
static void amount_text(uint64_t v, const char *unit, char *buf, size_t len)
{
	static const char *const units[] = { "bytes", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double x = (double)v;
	size_t u = 0;

	if (strcmp(unit, "bytes")) {
		snprintf(buf, len, "%llu%s%s", (unsigned long long)v, unit[0] ? " " : "", unit);
		return;
	}
	while (x >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		x /= 1024;
		u++;
	}
	if (u)
		snprintf(buf, len, "%.1f %s", x, units[u]);
	else
		snprintf(buf, len, "%llu bytes", (unsigned long long)v);
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
	amount_text(p->done, p->unit, done, sizeof(done));
	if (p->total) {
		/* "1.2 GiB of 4.0 GiB", but "1 of 3 volumes" */
		amount_text(p->total, p->unit, total, sizeof(total));
		if (strcmp(p->unit, "bytes"))
			snprintf(done, sizeof(done), "%llu", (unsigned long long)p->done);
		used = (size_t)snprintf(buf, len, "%s of %s (%u%%)", done, total, percent(p));
	} else {
		used = (size_t)snprintf(buf, len, "%s", done);
	}
	if (p->rate && used < len) {
		amount_text(p->rate, p->unit, rate, sizeof(rate));
		used += (size_t)snprintf(buf + used, len - used, ", %s/s", rate);
	}
	if (p->eta_s && used < len) {
		hcactl_duration(p->eta_s, eta, sizeof(eta));
		snprintf(buf + used, len - used, ", eta %s", eta);
	}
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

static json_t *job_to_json(const Hca__Job *j)
{
	char kind[NAME_LEN], phase[NAME_LEN];
	json_t *vols = json_array();

	for (size_t i = 0; vols && i < j->n_volumes; i++)
		json_array_append_new(vols, json_string(j->volumes[i]));
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:o, s:o, s:s, s:I, s:I, s:I, s:o?}",
			 "id", j->id, "kind", kind_name(j->kind, kind), "vm", j->vm,
			 "node", j->node, "requested_on", j->requested_on,
			 "phase", phase_name(j->phase, phase), "cancel_requested", j->cancel_requested,
			 "progress", progress_json(j->progress), "error", error_json(j->error),
			 "note", j->note, "created_ms", (json_int_t)j->created_ms,
			 "updated_ms", (json_int_t)j->updated_ms, "ended_ms", (json_int_t)j->ended_ms,
			 "volumes", vols);
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
	elapsed_text(since(j->created_ms, ended && j->ended_ms ? (int64_t)j->ended_ms : now),
		     took, sizeof(took));
	hcactl_kv("elapsed", "%s", took);
	if (j->error && j->error->code)
		hcactl_kv("error", "%s [%s]", hcactl_one_line(j->error->message),
			  code_name(j->error->code, code));
	if (j->note[0])
		hcactl_kv("note", "%s", hcactl_one_line(j->note));
	show_volumes(j);
}

enum { COL_ID, COL_KIND, COL_VM, COL_NODE, COL_PHASE, COL_PROGRESS, COL_AGE, COL_ELAPSED,
       COL_RESULT, NCOLS };
#define CELL 96

static void fill_row(const Hca__Job *j, int64_t now, char (*col)[CELL])
{
	const Hca__JobProgress *p = j->progress;
	bool ended = phase_terminal(j->phase);
	const char *result = "";

	snprintf(col[COL_ID], CELL, "%s", j->id);
	kind_name(j->kind, col[COL_KIND]);
	snprintf(col[COL_VM], CELL, "%s", j->vm[0] ? j->vm : "-");
	snprintf(col[COL_NODE], CELL, "%s", j->node);
	phase_name(j->phase, col[COL_PHASE]);
	if (p && p->total)
		snprintf(col[COL_PROGRESS], CELL, "%u%%", percent(p));
	else if (p && p->done)
		amount_text(p->done, p->unit, col[COL_PROGRESS], CELL);
	else
		snprintf(col[COL_PROGRESS], CELL, "-");
	hcactl_duration(since(j->created_ms, now) / 1000, col[COL_AGE], CELL);
	hcactl_duration(since(j->created_ms, ended && j->ended_ms ? (int64_t)j->ended_ms : now) /
			1000, col[COL_ELAPSED], CELL);
	if (j->error && j->error->message[0])
		result = j->error->message;
	else if (j->cancel_requested && !ended)
		result = "cancel requested";
	else if (j->note[0])
		result = j->note;
	snprintf(col[COL_RESULT], CELL, "%.*s%s", RESULT_MAX, result,
		 strlen(result) > RESULT_MAX ? "..." : "");
	for (size_t c = 0; c < NCOLS; c++)
		hcactl_one_line(col[c]);
}

static int print_jobs(bool json, Hca__Job **jobs, size_t n)
{
	static const char *const head[NCOLS] = { "ID", "KIND", "VM", "NODE", "PHASE", "PROGRESS",
						 "AGE", "ELAPSED", "RESULT" };
	char (*text)[NCOLS][CELL] = n ? calloc(n, sizeof(*text)) : NULL;
	const char **cells = n ? calloc(n * NCOLS, sizeof(*cells)) : NULL;
	int64_t now = clock_ms(CLOCK_REALTIME);
	json_t *arr = json ? json_array() : NULL;
	int rc = 0;

	if (n && (!text || !cells)) {
		rc = hcactl_complain(EXIT_HCAD, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (json) {
			if (arr && json_array_append_new(arr, job_to_json(jobs[i]))) {
				json_decref(arr);
				arr = NULL;
			}
			continue;
		}
		fill_row(jobs[i], now, text[i]);
		for (size_t c = 0; c < NCOLS; c++)
			cells[i * NCOLS + c] = text[i][c];
	}
	if (json)
		rc = hcactl_print_json(arr);
	else
		hcactl_table(head, NCOLS, COL_RESULT, cells, n);
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
		return hcactl_print_json(job_to_json(j));
	show_job(j);
	return 0;
}

int hcactl_job_list(struct cli *cli)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__ApiReply *r = NULL;
	int rc = EXIT_HCAD;

	req.op_case = HCA__API_REQUEST__OP_JOB_LIST;
	req.job_list = 1;
	if (!(r = hcactl_call(cli, &req, CALL_TIMEOUT_MS)))
		return EXIT_HCAD;
	if (r->result_case != HCA__API_REPLY__RESULT_JOBS || !r->jobs)
		hcactl_complain(EXIT_HCAD, "malformed reply from hcad: no job list");
	else
		rc = print_jobs(cli->json, r->jobs->jobs, r->jobs->n_jobs);
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

	elapsed_text((uint64_t)(clock_ms(CLOCK_MONOTONIC) - f->t0), took, sizeof(took));
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

static int follow(struct follow *f, Hca__Job *first, bool *succeeded)
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
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

/* Print the job (--no-wait), or follow it; *@succeeded when it did. */
static int job_wait(struct cli *cli, Hca__Job *job, const struct long_op *op, bool *succeeded)
{
	struct follow f = { .cli = cli, .op = op, .last_phase = -1,
			    .t0 = clock_ms(CLOCK_MONOTONIC), .lines = cli->json ? stderr : stdout };
	/* SA_RESETHAND: a second Ctrl-C ends hcactl even inside a slow request */
	struct sigaction sa = { .sa_handler = on_sigint, .sa_flags = SA_RESETHAND }, old;
	int rc;

	*succeeded = false;
	if (op->no_wait) {
		if (cli->json)
			return hcactl_print_json(job_to_json(job));
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
	rc = follow(&f, job, succeeded);
	sigaction(SIGINT, &old, NULL);
	return rc;
}

/* ---- long commands ---- */

/* The job succeeded: print what the command printed before there were jobs. */
static int print_done(struct cli *cli, const struct long_op *op, const Hca__ApiReply *before)
{
	Hca__ApiReply *r = NULL;
	int rc;

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
	Hca__ApiReply *before = NULL, *r = NULL;
	bool ok = false;
	int rc = EXIT_HCAD;

	/* undefine --json prints the VM as it was: ask while it is there */
	if (op->gone && cli->json && !op->no_wait)
		before = hcactl_fetch_vm(cli, op->vm, true);
	if (!(r = hcactl_call(cli, op->req, op->timeout_ms)))
		goto out;
	if (r->result_case == HCA__API_REPLY__RESULT_JOB && r->job)
		rc = job_wait(cli, r->job, op, &ok);
	else if (r->result_case == HCA__API_REPLY__RESULT_VM && r->vm && r->vm->spec)
		rc = hcactl_vm_outcome(cli->json, r->vm, op->vm, op->done); /* hcad before jobs */
	else
		hcactl_complain(EXIT_HCAD, "malformed reply from hcad: neither a job nor a VM");
	if (!rc && ok)
		rc = print_done(cli, op, before);
out:
	hca__api_reply__free_unpacked(r, NULL);
	hca__api_reply__free_unpacked(before, NULL);
	return rc;
}
