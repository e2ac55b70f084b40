/*
 * hcactl: the command-line client of hcad. Each command becomes one
 * ApiRequest over the local API (api.h); the reply is printed for people or,
 * with --json, as JSON. Spec building lives in spec_json.c where it is unit
 * tested; this file is argument handling, output and the serial console.
 *
 * Every error is one line on stderr starting "hcactl: ". Exit status: 0 ok,
 * 1 an error from hcad or from talking to it, 2 anything wrong with what the
 * user gave us (arguments, sizes, spec files), found before asking hcad.
 * Arguments are checked for syntax only: hcad validates specs again and owns
 * every range and policy rule, so they are not repeated here.
 */
#include "agent/api.h"
#include "agent/console.h"
#include "agent/hcactl_cluster.h"
#include "agent/spec_json.h"
#include "hypervisor/hv.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#ifndef HCA_VERSION
#define HCA_VERSION "0.1.0"
#endif

#define EXIT_HCAD 1
#define EXIT_USAGE 2

#define CALL_TIMEOUT_MS 30000
#define START_TIMEOUT_MS 90000
#define SHUTDOWN_DEFAULT_S 120u
#define SHUTDOWN_MAX_S 86400u
#define SPEC_FILE_MAX (1u << 20)
#define MAX_OPTS 128

struct cli {
	const char *api;           /* hcad's API service name */
	bool json;
	struct api_client *client; /* connected on the first request */
};

/* A command's arguments once split into positionals and --options. */
struct args {
	const char *pos[4];
	size_t npos;
	struct {
		const char *name;
		const char *val;   /* NULL for a flag */
	} opt[MAX_OPTS];
	size_t nopt;
};

struct opt_def {
	const char *name;
	bool has_arg;
	bool repeat;
};

struct cmd {
	const char *group;         /* "vm", "node", or NULL at top level */
	const char *name;
	int (*run)(struct cli *cli, const struct args *a);
	const struct opt_def *opts;
	size_t min_pos, max_pos;
	const char *usage;         /* after "hcactl " */
	const char *summary;
	const char *detail;        /* for `--help` of the command, or NULL */
};

/* ---- errors ---- */

__attribute__((format(printf, 2, 3)))
static int complain(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("hcactl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* A message from elsewhere on one line, as promised: no control characters. */
static const char *one_line(char *s)
{
	for (char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	return s;
}

/* ---- talking to hcad ---- */

/*
 * Send @req and return hcad's successful reply, or NULL after printing why
 * not: the transport's error or hcad's own one-line message.
 */
static Hca__ApiReply *call(struct cli *cli, const Hca__ApiRequest *req, int timeout_ms)
{
	Hca__ApiReply *r = NULL;
	char err[512] = "";

	if (!cli->client)
		cli->client = api_client_connect(cli->api, err, sizeof(err));
	if (cli->client)
		r = api_client_call(cli->client, req, timeout_ms, err, sizeof(err));
	if (!r) {
		complain(EXIT_HCAD, "%s", one_line(err));
		return NULL;
	}
	if (r->error && r->error->code != HCA__ERROR_CODE__ERROR_NONE) {
		complain(EXIT_HCAD, "%s", r->error->message[0] ? one_line(r->error->message)
							   : "hcad reported an error without a message");
		hca__api_reply__free_unpacked(r, NULL);
		return NULL;
	}
	return r;
}

static const Hca__VmStatus *reply_vm(const Hca__ApiReply *r)
{
	if (r->result_case != HCA__API_REPLY__RESULT_VM || !r->vm || !r->vm->spec) {
		complain(EXIT_HCAD, "malformed reply from hcad: no VM status");
		return NULL;
	}
	return r->vm;
}

/* ---- output helpers ---- */

static int print_json(json_t *o)
{
	int rc = 0;

	if (!o)
		return complain(EXIT_HCAD, "out of memory");
	rc = json_dumpf(o, stdout, JSON_INDENT(2));
	json_decref(o);
	putchar('\n');
	return rc ? complain(EXIT_HCAD, "cannot write JSON output") : 0;
}

/* "64 MiB", or "64M" when @compact: the largest unit that divides exactly. */
static void size_text(uint64_t bytes, bool compact, char *buf, size_t len)
{
	static const char *const units[] = { "", "K", "M", "G", "T" };
	size_t u = 0;

	while (u + 1 < sizeof(units) / sizeof(units[0]) && bytes && !(bytes % 1024)) {
		bytes /= 1024;
		u++;
	}
	if (compact)
		snprintf(buf, len, "%llu%s", (unsigned long long)bytes, units[u]);
	else
		snprintf(buf, len, "%llu %s%s", (unsigned long long)bytes, units[u],
			 u ? "iB" : "bytes");
}

/* "42s", "5m12s", "3h05m", "2d04h". */
static void duration_text(uint64_t s, char *buf, size_t len)
{
	if (s < 60)
		snprintf(buf, len, "%llus", (unsigned long long)s);
	else if (s < 3600)
		snprintf(buf, len, "%llum%02llus", (unsigned long long)(s / 60),
			 (unsigned long long)(s % 60));
	else if (s < 86400)
		snprintf(buf, len, "%lluh%02llum", (unsigned long long)(s / 3600),
			 (unsigned long long)(s % 3600 / 60));
	else
		snprintf(buf, len, "%llud%02lluh", (unsigned long long)(s / 86400),
			 (unsigned long long)(s % 86400 / 3600));
}

static void pid_text(int pid, char *buf, size_t len)
{
	if (pid > 0)
		snprintf(buf, len, "%d", pid);
	else
		snprintf(buf, len, "-");
}

static bool has_qemu(Hca__VmState s)
{
	return s != HCA__VM_STATE__VM_STATE_STOPPED && s != HCA__VM_STATE__VM_STATE_CRASHED;
}

static void uptime_text(const Hca__VmStatus *st, char *buf, size_t len)
{
	time_t now = time(NULL);

	if (!has_qemu(st->state) || !st->started_at)
		snprintf(buf, len, "-");
	else
		duration_text(now > (time_t)st->started_at ? (uint64_t)now - st->started_at : 0,
			      buf, len);
}

/* ---- argument parsing ---- */

static const struct opt_def *opt_find(const struct cmd *c, const char *name, size_t n)
{
	for (const struct opt_def *o = c->opts; o && o->name; o++)
		if (strlen(o->name) == n && !strncmp(o->name, name, n))
			return o;
	return NULL;
}

static const char *opt_get(const struct args *a, const char *name)
{
	for (size_t i = 0; i < a->nopt; i++)
		if (!strcmp(a->opt[i].name, name))
			return a->opt[i].val ? a->opt[i].val : "";
	return NULL;
}

static int cmd_title(const struct cmd *c, char *buf, size_t len)
{
	return snprintf(buf, len, "%s%s%s", c->group ? c->group : "", c->group ? " " : "", c->name);
}

/* One "--name[=value]" at argv[*i]; takes the next word as value if needed. */
static int parse_opt(const struct cmd *c, int argc, char **argv, int *i, struct args *a)
{
	const char *arg = argv[*i] + 2;
	const char *eq = strchr(arg, '=');
	size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
	const struct opt_def *o = opt_find(c, arg, n);
	char title[32];

	cmd_title(c, title, sizeof(title));
	if (!o)
		return complain(EXIT_USAGE, "unknown option '--%.*s' for '%s' (try 'hcactl %s --help')",
				(int)n, arg, title, title);
	if (!o->has_arg && eq)
		return complain(EXIT_USAGE, "option '--%s' takes no value", o->name);
	if (o->has_arg && !eq && *i + 1 >= argc)
		return complain(EXIT_USAGE, "option '--%s' needs a value", o->name);
	if (!o->repeat && opt_get(a, o->name))
		return complain(EXIT_USAGE, "option '--%s' given twice", o->name);
	if (a->nopt == MAX_OPTS)
		return complain(EXIT_USAGE, "too many options");
	a->opt[a->nopt].name = o->name;
	a->opt[a->nopt++].val = !o->has_arg ? NULL : eq ? eq + 1 : argv[++*i];
	return 0;
}

static void print_cmd_help(const struct cmd *c)
{
	printf("Usage: hcactl %s\n\n%s\n", c->usage, c->summary);
	if (c->detail)
		printf("\n%s", c->detail);
}

static int check_name(const char *name)
{
	if (hv_name_valid(name))
		return 0;
	return complain(EXIT_USAGE, "invalid VM name '%s' (1-%d chars of a-z, 0-9, -, _, "
			"starting with a letter or digit)", name, HV_NAME_MAX);
}

static int parse_args(const struct cmd *c, int argc, char **argv, struct args *a)
{
	bool options = true;
	char title[32];
	int rc;

	cmd_title(c, title, sizeof(title));
	for (int i = 0; i < argc; i++) {
		if (options && (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))) {
			print_cmd_help(c);
			exit(0);
		}
		if (options && !strcmp(argv[i], "--")) {
			options = false;
		} else if (options && !strncmp(argv[i], "--", 2)) {
			if ((rc = parse_opt(c, argc, argv, &i, a)))
				return rc;
		} else if (options && argv[i][0] == '-' && argv[i][1]) {
			return complain(EXIT_USAGE, "unknown option '%s' for '%s' (try 'hcactl %s --help')",
					argv[i], title, title);
		} else if (a->npos == c->max_pos) {
			return complain(EXIT_USAGE, "unexpected argument '%s' for '%s'", argv[i], title);
		} else {
			a->pos[a->npos++] = argv[i];
		}
	}
	if (a->npos < c->min_pos)
		return complain(EXIT_USAGE, "missing argument (usage: hcactl %s)", c->usage);
	/* Every positional argument is a VM name. */
	return a->npos ? check_name(a->pos[0]) : 0;
}

/* A decimal in @min..@max, nothing else. */
static int parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *v)
{
	char *end = NULL;

	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	*v = strtoul(s, &end, 10);
	if (*end || errno || *v < min || *v > max)
		return -EINVAL;
	return 0;
}

/* ---- VM operations ---- */

/* Print the outcome of an operation on @name: "web1: running" or the JSON status. */
static int print_op(struct cli *cli, const Hca__ApiReply *r, const char *name,
		    const char *done)
{
	const Hca__VmStatus *st = reply_vm(r);

	if (!st)
		return EXIT_HCAD;
	if (cli->json)
		return print_json(status_to_json(st));
	printf("%s: %s\n", name, done ? done : hv_state_name(st->state));
	return 0;
}

static int send_op(struct cli *cli, const Hca__ApiRequest *req, int timeout_ms,
		   const char *name, const char *done)
{
	Hca__ApiReply *r = call(cli, req, timeout_ms);
	int rc;

	if (!r)
		return EXIT_HCAD;
	rc = print_op(cli, r, name, done);
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

/* The operations that only name a VM share one request shape. */
static void ref_request(Hca__ApiRequest *req, Hca__VmRef *ref, Hca__ApiRequest__OpCase op,
			const char *name)
{
	ref->name = (char *)name;
	req->op_case = op;
	switch (op) {
	case HCA__API_REQUEST__OP_START: req->start = ref; break;
	case HCA__API_REQUEST__OP_PAUSE: req->pause = ref; break;
	case HCA__API_REQUEST__OP_RESUME: req->resume = ref; break;
	case HCA__API_REQUEST__OP_UNDEFINE: req->undefine = ref; break;
	default: req->show = ref; break;
	}
}

static int ref_op(struct cli *cli, const struct args *a, Hca__ApiRequest__OpCase op,
		  int timeout_ms, const char *done)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__VmRef ref = HCA__VM_REF__INIT;

	ref_request(&req, &ref, op, a->pos[0]);
	return send_op(cli, &req, timeout_ms, ref.name, done);
}

/* `vm show` for @name: a reply whose ->vm is valid, or NULL after an error. */
static Hca__ApiReply *fetch_vm(struct cli *cli, const char *name)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__VmRef ref = HCA__VM_REF__INIT;
	Hca__ApiReply *r = NULL;

	ref_request(&req, &ref, HCA__API_REQUEST__OP_SHOW, name);
	r = call(cli, &req, CALL_TIMEOUT_MS);
	if (r && !reply_vm(r)) {
		hca__api_reply__free_unpacked(r, NULL);
		r = NULL;
	}
	return r;
}

static int cmd_start(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__VmRef ref = HCA__VM_REF__INIT;
	const char *on = opt_get(a, "on");

	ref_request(&req, &ref, HCA__API_REQUEST__OP_START, a->pos[0]);
	if (on)
		ref.on_node = (char *)on;
	return send_op(cli, &req, START_TIMEOUT_MS, ref.name, NULL);
}

static int cmd_pause(struct cli *cli, const struct args *a)
{
	return ref_op(cli, a, HCA__API_REQUEST__OP_PAUSE, CALL_TIMEOUT_MS, NULL);
}

static int cmd_resume(struct cli *cli, const struct args *a)
{
	return ref_op(cli, a, HCA__API_REQUEST__OP_RESUME, CALL_TIMEOUT_MS, NULL);
}

static int cmd_undefine(struct cli *cli, const struct args *a)
{
	return ref_op(cli, a, HCA__API_REQUEST__OP_UNDEFINE, CALL_TIMEOUT_MS, "undefined");
}

static int cmd_stop(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__StopRequest stop = HCA__STOP_REQUEST__INIT;

	stop.name = (char *)a->pos[0];
	stop.force = opt_get(a, "force") != NULL;
	req.op_case = HCA__API_REQUEST__OP_STOP;
	req.stop = &stop;
	return send_op(cli, &req, CALL_TIMEOUT_MS, stop.name, NULL);
}

static int cmd_shutdown(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__ShutdownRequest sd = HCA__SHUTDOWN_REQUEST__INIT;
	const char *t = opt_get(a, "timeout");
	unsigned long secs = SHUTDOWN_DEFAULT_S;

	if (t && parse_uint(t, 1, SHUTDOWN_MAX_S, &secs))
		return complain(EXIT_USAGE, "invalid --timeout '%s' (1 to %u seconds)", t,
				SHUTDOWN_MAX_S);
	sd.name = (char *)a->pos[0];
	sd.timeout_s = (uint32_t)secs;
	req.op_case = HCA__API_REQUEST__OP_SHUTDOWN;
	req.shutdown = &sd;
	/* hcad answers when the guest is off or its own timeout expires. */
	return send_op(cli, &req, (int)secs * 1000 + API_REPLY_MARGIN_MS, sd.name, NULL);
}

/* ---- define ---- */

/* Read a whole spec file ("-": stdin) into a string. */
static char *read_spec_file(const char *path)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
	char *text = malloc(SPEC_FILE_MAX + 1);
	bool ok = false;
	size_t n = 0;

	if (!f || !text || (n = fread(text, 1, SPEC_FILE_MAX + 1, f), ferror(f)))
		complain(EXIT_USAGE, "cannot read %s: %s", path, strerror(errno));
	else if (n > SPEC_FILE_MAX)
		complain(EXIT_USAGE, "%s: larger than %u bytes, not a spec file", path, SPEC_FILE_MAX);
	else
		ok = true;
	if (f && f != stdin)
		fclose(f);
	if (!ok) {
		free(text);
		return NULL;
	}
	text[n] = '\0';
	return text;
}

/* The directory relative paths in @path are meant against, made absolute. */
static int base_dir(const char *path, char *buf, size_t len)
{
	const char *slash = strcmp(path, "-") ? strrchr(path, '/') : NULL;
	char cwd[PATH_MAX];
	int n;

	if (!getcwd(cwd, sizeof(cwd)))
		return -errno;
	if (!slash)
		n = snprintf(buf, len, "%s", cwd);
	else if (path[0] == '/')
		n = snprintf(buf, len, "%.*s", (int)(slash - path) + 1, path);
	else
		n = snprintf(buf, len, "%s/%.*s", cwd, (int)(slash - path), path);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static Hca__VmSpec *spec_from_file(const char *path)
{
	char *text = read_spec_file(path);
	Hca__VmSpec *spec = NULL;
	char base[PATH_MAX];
	char err[512];
	int rc;

	if (!text)
		return NULL;
	spec = spec_from_json(text, err, sizeof(err));
	free(text);
	if (!spec) {
		complain(EXIT_USAGE, "%s: %s", path, err);
		return NULL;
	}
	/* hcad runs elsewhere: paths in a file mean "next to the file". */
	if ((rc = base_dir(path, base, sizeof(base))) || (rc = spec_resolve_paths(spec, base))) {
		complain(EXIT_USAGE, "%s: cannot make paths absolute: %s", path, strerror(-rc));
		spec_free(spec);
		return NULL;
	}
	return spec;
}

static int flag_memory(Hca__VmSpec *spec, const char *s)
{
	uint64_t bytes = 0;
	char err[160];
	int rc = spec_parse_size(s, &bytes);

	if (rc == -ERANGE)
		return complain(EXIT_USAGE, "invalid size '%s' for --memory: too large", s);
	if (rc)
		return complain(EXIT_USAGE, "invalid size '%s' for --memory", s);
	if (spec_set_memory(spec, bytes, err, sizeof(err)))
		return complain(EXIT_USAGE, "invalid size '%s' for --memory: %s", s, err);
	return 0;
}

static int flag_boot(Hca__VmSpec *spec, const struct args *a)
{
	const char *kernel = opt_get(a, "kernel");
	const char *initrd = opt_get(a, "initrd");
	const char *cmdline = opt_get(a, "cmdline");
	Hca__BootSpec *b = NULL;

	if (!kernel && !initrd && !cmdline)
		return 0;
	if (!(b = spec_boot(spec)) ||
	    (kernel && spec_set_string(&b->kernel, kernel)) ||
	    (initrd && spec_set_string(&b->initrd, initrd)) ||
	    (cmdline && spec_set_string(&b->cmdline, cmdline)))
		return complain(EXIT_HCAD, "out of memory");
	return 0;
}

/* --disk and --nic, in the order given. */
static int flag_devices(Hca__VmSpec *spec, const struct args *a)
{
	char err[256];

	for (size_t i = 0; i < a->nopt; i++) {
		const char *k = a->opt[i].name, *v = a->opt[i].val;

		if (!strcmp(k, "disk") && spec_add_disk_arg(spec, v, err, sizeof(err)))
			return complain(EXIT_USAGE, "invalid --disk '%s': %s", v, err);
		if (!strcmp(k, "nic") && spec_add_nic_arg(spec, v, err, sizeof(err)))
			return complain(EXIT_USAGE, "invalid --nic '%s': %s", v, err);
	}
	return 0;
}

static int flags_to_spec(const struct args *a, Hca__VmSpec *spec)
{
	const char *name = opt_get(a, "name");
	const char *uuid = opt_get(a, "uuid");
	const char *v = NULL;
	unsigned long vcpus = 0;
	char cwd[PATH_MAX];
	int rc;

	if (!name)
		return complain(EXIT_USAGE, "'vm define' needs --name NAME or --file FILE");
	if (check_name(name))
		return EXIT_USAGE;
	if (spec_set_string(&spec->name, name) || (uuid && spec_set_string(&spec->uuid, uuid)))
		return complain(EXIT_HCAD, "out of memory");
	if ((v = opt_get(a, "vcpus")) && parse_uint(v, 0, UINT32_MAX, &vcpus))
		return complain(EXIT_USAGE, "invalid number '%s' for --vcpus", v);
	if (v)
		spec->vcpus = (uint32_t)vcpus;
	if ((v = opt_get(a, "memory")) && flag_memory(spec, v))
		return EXIT_USAGE;
	if (flag_devices(spec, a) || flag_boot(spec, a))
		return EXIT_USAGE;
	/* hcad runs elsewhere: relative paths mean "from here". */
	rc = getcwd(cwd, sizeof(cwd)) ? spec_resolve_paths(spec, cwd) : -errno;
	if (rc)
		return complain(EXIT_USAGE, "cannot make paths absolute: %s", strerror(-rc));
	return 0;
}

/* The first option other than --file, which excludes all of them. */
static const char *other_than_file(const struct args *a)
{
	for (size_t i = 0; i < a->nopt; i++)
		if (strcmp(a->opt[i].name, "file"))
			return a->opt[i].name;
	return NULL;
}

static int cmd_define(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__DefineRequest def = HCA__DEFINE_REQUEST__INIT;
	const char *file = opt_get(a, "file");
	Hca__VmSpec *spec = NULL;
	int rc = EXIT_USAGE;

	if (file && other_than_file(a)) {
		complain(EXIT_USAGE, "--file cannot be combined with --%s", other_than_file(a));
		goto out;
	}
	if (file)
		spec = spec_from_file(file);
	else if ((spec = spec_new()) && flags_to_spec(a, spec)) {
		spec_free(spec);
		spec = NULL;
	}
	if (!spec)
		goto out;
	def.spec = spec;
	req.op_case = HCA__API_REQUEST__OP_DEFINE;
	req.define = &def;
	rc = send_op(cli, &req, CALL_TIMEOUT_MS, spec->name, "defined");
out:
	spec_free(spec);
	return rc;
}

/* ---- list and show ---- */

static int by_name(const void *x, const void *y)
{
	const Hca__VmStatus *a = *(Hca__VmStatus *const *)x, *b = *(Hca__VmStatus *const *)y;

	return strcmp(a->spec ? a->spec->name : "", b->spec ? b->spec->name : "");
}

enum { COL_NAME, COL_STATE, COL_ACCEL, COL_VCPUS, COL_MEMORY, COL_PID, COL_UPTIME,
       COL_OWNER, COL_REASON, NCOLS };
#define REASON_MAX 60

struct row {
	char col[NCOLS][96];
};

static void fill_row(const Hca__VmStatus *st, struct row *r)
{
	bool ended = !has_qemu(st->state);

	snprintf(r->col[COL_NAME], sizeof(r->col[0]), "%s", st->spec->name);
	snprintf(r->col[COL_STATE], sizeof(r->col[0]), "%s", hv_state_name(st->state));
	snprintf(r->col[COL_ACCEL], sizeof(r->col[0]), "%s",
		 ended ? "-" : hv_accel_name(st->accel));
	snprintf(r->col[COL_VCPUS], sizeof(r->col[0]), "%u", st->spec->vcpus);
	size_text(st->spec->memory_mib << 20, true, r->col[COL_MEMORY], sizeof(r->col[0]));
	pid_text(st->pid, r->col[COL_PID], sizeof(r->col[0]));
	uptime_text(st, r->col[COL_UPTIME], sizeof(r->col[0]));
	snprintf(r->col[COL_OWNER], sizeof(r->col[0]), "%s", st->owner[0] ? st->owner : "-");
	/* Why a VM is down is what people look for; running ones need no reason. */
	snprintf(r->col[COL_REASON], sizeof(r->col[0]), "%.*s%s", REASON_MAX,
		 ended ? st->reason : "", ended && strlen(st->reason) > REASON_MAX ? "..." : "");
	one_line(r->col[COL_REASON]);
}

static void print_table(const struct row *rows, size_t n)
{
	static const struct row head = { { "NAME", "STATE", "ACCEL", "VCPUS", "MEMORY", "PID",
					   "UPTIME", "OWNER", "REASON" } };
	size_t width[NCOLS] = { 0 };
	size_t ncols = COL_REASON;

	for (size_t i = 0; i < n; i++)
		if (rows[i].col[COL_REASON][0])
			ncols = NCOLS;
	for (size_t c = 0; c < ncols; c++) {
		width[c] = strlen(head.col[c]);
		for (size_t i = 0; i < n; i++)
			if (strlen(rows[i].col[c]) > width[c])
				width[c] = strlen(rows[i].col[c]);
	}
	for (size_t i = 0; i <= n; i++) {
		const struct row *r = i ? &rows[i - 1] : &head;
		size_t last = ncols - 1;

		while (last && !r->col[last][0])
			last--; /* no trailing blanks */
		for (size_t c = 0; c < last; c++)
			printf("%-*s  ", (int)width[c], r->col[c]);
		printf("%s\n", r->col[last]);
	}
}

static int print_list(struct cli *cli, Hca__VmStatus **vms, size_t n)
{
	struct row *rows = NULL;
	json_t *arr = NULL;

	qsort(vms, n, sizeof(*vms), by_name);
	if (cli->json) {
		arr = json_array();
		for (size_t i = 0; arr && i < n; i++) {
			if (json_array_append_new(arr, status_to_json(vms[i]))) {
				json_decref(arr);
				arr = NULL;
			}
		}
		return print_json(arr);
	}
	if (n && !(rows = calloc(n, sizeof(*rows))))
		return complain(EXIT_HCAD, "out of memory");
	for (size_t i = 0; i < n; i++)
		fill_row(vms[i], &rows[i]);
	print_table(rows, n);
	free(rows);
	return 0;
}

static int cmd_list(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__ApiReply *r = NULL;
	int rc = EXIT_HCAD;

	req.op_case = HCA__API_REQUEST__OP_LIST;
	req.list = 1;
	if (!(r = call(cli, &req, CALL_TIMEOUT_MS)))
		return EXIT_HCAD;
	if (r->result_case != HCA__API_REPLY__RESULT_LIST || !r->list) {
		complain(EXIT_HCAD, "malformed reply from hcad: no VM list");
		goto out;
	}
	for (size_t i = 0; i < r->list->n_vms; i++) {
		if (!r->list->vms[i]->spec) {
			complain(EXIT_HCAD, "malformed reply from hcad: a VM without a spec");
			goto out;
		}
	}
	rc = print_list(cli, r->list->vms, r->list->n_vms);
out:
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

/* One "key: value" line of `vm show`, `node info` and the like, aligned. */
void hcactl_kv(const char *key, const char *fmt, ...)
{
	char k[64], v[4096];
	va_list ap;

	snprintf(k, sizeof(k), "%s:", key);
	va_start(ap, fmt);
	vsnprintf(v, sizeof(v), fmt, ap);
	va_end(ap);
	printf("%-14s%s\n", k, v[0] ? v : "-");
}

static void show_devices(const Hca__VmStatus *st)
{
	const Hca__VmSpec *s = st->spec;
	char key[64], size[32], mac[18];

	for (size_t i = 0; i < s->n_disks; i++) {
		const Hca__DiskSpec *d = s->disks[i];
		bool created = false;
		const char *path = status_disk_path(st, i, &created);
		const char *fmt = spec_format_name(d->format);

		snprintf(key, sizeof(key), "disk %s", d->name);
		/* An attached image has no size in the spec; a volume has. */
		if (d->path[0])
			snprintf(size, sizeof(size), "image");
		else
			size_text(d->size_bytes, false, size, sizeof(size));
		hcactl_kv(key, "%s %s %s%s", size, fmt ? fmt : "?", path[0] ? path : "(no volume yet)",
		   d->readonly ? " readonly" : "");
	}
	for (size_t i = 0; i < s->n_nics; i++) {
		const Hca__NicSpec *n = s->nics[i];

		hv_nic_mac(s, i, mac);
		snprintf(key, sizeof(key), "nic %zu", i);
		hcactl_kv(key, "%s%s%s mac %s", n->mode == HCA__NIC_MODE__NIC_MODE_BRIDGE ? "bridge" : "user",
		   n->bridge[0] ? " " : "", n->bridge, mac);
	}
}

static void show_boot(const Hca__BootSpec *b)
{
	if (!b || !b->kernel[0]) {
		hcactl_kv("boot", "first disk");
		return;
	}
	hcactl_kv("kernel", "%s", b->kernel);
	if (b->initrd[0])
		hcactl_kv("initrd", "%s", b->initrd);
	if (b->cmdline[0])
		hcactl_kv("cmdline", "%s", b->cmdline);
}

static void show_human(const Hca__VmStatus *st)
{
	const Hca__VmSpec *s = st->spec;
	char buf[64], up[32];
	time_t t = (time_t)st->started_at;

	hcactl_kv("name", "%s", s->name);
	hcactl_kv("uuid", "%s", s->uuid);
	hcactl_kv("state", "%s", hv_state_name(st->state));
	if (st->reason[0])
		hcactl_kv("reason", "%s", st->reason);
	pid_text(st->pid, buf, sizeof(buf));
	hcactl_kv("pid", "%s", buf);
	hcactl_kv("accel", "%s", has_qemu(st->state) ? hv_accel_name(st->accel) : "-");
	if (st->started_at && has_qemu(st->state)) {
		strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S %Z", localtime(&t));
		uptime_text(st, up, sizeof(up));
		hcactl_kv("started", "%s (up %s)", buf, up);
	}
	hcactl_kv("vcpus", "%u", s->vcpus);
	size_text(s->memory_mib << 20, false, buf, sizeof(buf));
	hcactl_kv("memory", "%s", buf);
	show_devices(st);
	show_boot(s->boot);
	hcactl_kv("console", "%s", st->console_path);
	hcactl_kv("serial log", "%s", st->serial_log);
	hcactl_kv("qemu log", "%s", st->qemu_log);
	hcactl_kv("owner", "%s", st->owner);
	hcactl_kv("version", "%llu", (unsigned long long)st->version);
}

static int cmd_show(struct cli *cli, const struct args *a)
{
	Hca__ApiReply *r = fetch_vm(cli, a->pos[0]);
	int rc = 0;

	if (!r)
		return EXIT_HCAD;
	if (cli->json) {
		rc = print_json(status_to_json(r->vm));
	} else {
		one_line(r->vm->reason);
		show_human(r->vm);
	}
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

static int cmd_console(struct cli *cli, const struct args *a)
{
	Hca__ApiReply *r = fetch_vm(cli, a->pos[0]);
	int rc = EXIT_HCAD;
	char err[512];

	if (!r)
		return EXIT_HCAD;
	if (!r->vm->console_path[0])
		rc = complain(EXIT_HCAD, "%s has no console (%s)", a->pos[0],
			      hv_state_name(r->vm->state));
	else
		rc = console_attach(a->pos[0], r->vm->console_path, err, sizeof(err)) ?
			complain(EXIT_HCAD, "%s", err) : 0;
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

/* ---- node, version ---- */

static int cmd_node_info(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__ApiReply *r = NULL;
	const Hca__NodeInfo *n = NULL;
	int rc = EXIT_HCAD;

	req.op_case = HCA__API_REQUEST__OP_NODE_INFO;
	req.node_info = 1;
	if (!(r = call(cli, &req, CALL_TIMEOUT_MS)))
		return EXIT_HCAD;
	if (r->result_case != HCA__API_REPLY__RESULT_NODE || !(n = r->node)) {
		complain(EXIT_HCAD, "malformed reply from hcad: no node info");
		goto out;
	}
	rc = 0;
	if (cli->json) {
		rc = print_json(node_to_json(n));
		goto out;
	}
	hcactl_kv("node", "%s", n->node_name);
	hcactl_kv("hcad version", "%s", n->version);
	hcactl_kv("qemu version", "%s", n->qemu_version);
	hcactl_kv("accel", "%s", hv_accel_name(n->accel));
	hcactl_kv("accel reason", "%s", one_line(n->accel_reason));
	hcactl_kv("state dir", "%s", n->state_dir);
	hcactl_kv("vms", "%u defined, %u running", n->vms, n->running);
out:
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

static int cmd_version(struct cli *cli, const struct args *a)
{
	if (cli->json)
		return print_json(json_pack("{s:s}", "hcactl", HCA_VERSION));
	printf("hcactl %s\n", HCA_VERSION);
	return 0;
}

/* ---- the command table ---- */

static const struct opt_def define_opts[] = {
	{ "file", true, false }, { "name", true, false }, { "uuid", true, false },
	{ "vcpus", true, false }, { "memory", true, false }, { "disk", true, true },
	{ "nic", true, true }, { "kernel", true, false }, { "initrd", true, false },
	{ "cmdline", true, false }, { NULL, false, false },
};
static const struct opt_def stop_opts[] = { { "force", false, false }, { NULL, false, false } };
static const struct opt_def shutdown_opts[] = { { "timeout", true, false }, { NULL, false, false } };

static const char define_detail[] =
	"From a file (FILE '-' reads stdin):\n"
	"  { \"name\": \"web1\", \"uuid\": \"(optional)\", \"vcpus\": 1, \"memory\": \"128M\",\n"
	"    \"disks\": [ {\"name\": \"root\", \"size\": \"64M\", \"format\": \"qcow2\"},\n"
	"               {\"name\": \"data\", \"path\": \"/abs/image.raw\", \"format\": \"raw\", \"readonly\": false} ],\n"
	"    \"nics\": [ {\"mode\": \"user\"}, {\"mode\": \"bridge\", \"bridge\": \"br0\", \"mac\": \"52:54:00:12:34:56\"} ],\n"
	"    \"boot\": { \"kernel\": \"/abs/vmlinux\", \"initrd\": \"/abs/initramfs\", \"cmdline\": \"console=ttyS0\" } }\n"
	"  (\"memory_mib\": 128 may replace \"memory\".)\n"
	"\n"
	"Or from flags:\n"
	"  --name NAME      1-48 chars of a-z, 0-9, -, _\n"
	"  --uuid UUID      default: hcad assigns one\n"
	"  --vcpus N        default 1\n"
	"  --memory SIZE    default 128M\n"
	"  --disk SPEC      repeatable; disks are named disk0, disk1... unless named:\n"
	"                     SIZE                                  a new qcow2 volume\n"
	"                     name=N,size=SIZE[,format=qcow2|raw]   a new volume\n"
	"                     name=N,path=IMAGE[,format=raw|qcow2][,readonly]\n"
	"                                                           an existing image\n"
	"  --nic SPEC       repeatable: user | bridge=BRIDGE, either with [,mac=MAC]\n"
	"  --kernel PATH    boot this kernel (default: the first disk)\n"
	"  --initrd PATH\n"
	"  --cmdline STR    the kernel command line\n"
	"\n"
	"SIZE is bytes, or a number with K, M, G or T (1024-based: 512M, 64MiB, 2G).\n"
	"hcad does not share your working directory: relative paths given as flags\n"
	"are made absolute against it, and those in FILE against FILE's directory.\n";

static const struct opt_def start_opts[] = { { "on", true, false }, { NULL, false, false } };

static json_t *cluster_to_json(const Hca__ClusterStatus *c)
{
	json_t *nodes = json_array(), *o;

	for (size_t i = 0; i < c->n_nodes; i++)
		json_array_append_new(nodes, json_pack("{s:i, s:s, s:s, s:b, s:b}",
			"id", (int)c->nodes[i]->id, "name", c->nodes[i]->name,
			"address", c->nodes[i]->address, "online", c->nodes[i]->online,
			"agent", c->nodes[i]->agent));
	o = json_pack("{s:s, s:b, s:b, s:i, s:i, s:i, s:s, s:o, s:s, s:s}",
		      "driver", c->driver, "connected", c->connected, "quorate", c->quorate,
		      "votes", (int)c->votes, "expected_votes", (int)c->expected_votes,
		      "quorum", (int)c->quorum, "local_node", c->local_node, "nodes", nodes,
		      "store", c->store_backend, "storage_health", c->storage_health);
	return o;
}

static int cmd_cluster_status(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__ApiReply *r = NULL;
	const Hca__ClusterStatus *c;
	int rc = EXIT_HCAD;

	req.op_case = HCA__API_REQUEST__OP_CLUSTER_STATUS;
	req.cluster_status = 1;
	if (!(r = call(cli, &req, CALL_TIMEOUT_MS)))
		return EXIT_HCAD;
	if (r->result_case != HCA__API_REPLY__RESULT_CLUSTER || !(c = r->cluster)) {
		complain(EXIT_HCAD, "malformed reply from hcad: no cluster status");
		goto out;
	}
	rc = 0;
	if (cli->json) {
		rc = print_json(cluster_to_json(c));
		goto out;
	}
	hcactl_kv("membership", "%s (%s)", c->driver, !c->connected ? "not connected" :
	   c->quorate ? "quorate" : "NOT QUORATE");
	hcactl_kv("votes", "%u of %u expected, %u needed", c->votes, c->expected_votes, c->quorum);
	hcactl_kv("this node", "%s", c->local_node);
	hcactl_kv("storage", "%s: %s", c->store_backend, c->storage_health);
	printf("\n%-4s %-16s %-18s %-8s %s\n", "ID", "NODE", "ADDRESS", "STATE", "HCAD");
	for (size_t i = 0; i < c->n_nodes; i++)
		printf("%-4u %-16s %-18s %-8s %s\n", c->nodes[i]->id, c->nodes[i]->name,
		       c->nodes[i]->address, c->nodes[i]->online ? "online" : "offline",
		       c->nodes[i]->agent ? "up" : "-");
out:
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

/* The cluster PKI commands work on local files, not through hcad
 * (hcactl_cluster.c); they get the words checked against these tables. */
static int cluster_pki(struct cli *cli, const struct args *a, const char *cmd)
{
	const char *names[MAX_OPTS], *vals[MAX_OPTS];

	for (size_t i = 0; i < a->nopt; i++) {
		names[i] = a->opt[i].name;
		vals[i] = a->opt[i].val;
	}
	return cluster_cmd(cmd, a->pos, a->npos, names, vals, a->nopt, cli->json);
}

static int cmd_cluster_init(struct cli *cli, const struct args *a)
{
	return cluster_pki(cli, a, "init");
}

static int cmd_cluster_cert(struct cli *cli, const struct args *a)
{
	return cluster_pki(cli, a, "cert");
}

static const struct opt_def cluster_init_opts[] = {
	{ "name", true, false }, { "pki", true, false }, { "ca-out", true, false },
	{ "days", true, false }, { NULL, false, false },
};
static const struct opt_def cluster_cert_opts[] = {
	{ "pki", true, false }, { "ca-key", true, false }, { "out", true, false },
	{ "days", true, false }, { "ip", true, true }, { "force", false, false },
	{ "file", true, false }, { NULL, false, false },
};

static int cmd_cluster_ping(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__PingRequest pr = HCA__PING_REQUEST__INIT;
	Hca__ApiReply *r;
	int rc = EXIT_HCAD;

	pr.node = (char *)a->pos[0];
	req.op_case = HCA__API_REQUEST__OP_PING;
	req.ping = &pr;
	if (!(r = call(cli, &req, CALL_TIMEOUT_MS)))
		return EXIT_HCAD;
	if (r->result_case != HCA__API_REPLY__RESULT_PING || !r->ping) {
		complain(EXIT_HCAD, "malformed reply from hcad: no ping result");
		goto out;
	}
	rc = 0;
	if (cli->json)
		rc = print_json(json_pack("{s:s, s:I}", "node", r->ping->node,
					  "rtt_us", (json_int_t)r->ping->rtt_us));
	else
		printf("%s: %.2f ms over mutual TLS (peer certificate: %s)\n", a->pos[0],
		       (double)r->ping->rtt_us / 1000.0, r->ping->node);
out:
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

static const struct cmd cmds[] = {
	{ "vm", "define", cmd_define, define_opts, 0, 0, "vm define --file FILE | --name NAME [OPTIONS]",
	  "Define a VM from a spec file or from flags.", define_detail },
	{ "vm", "start", cmd_start, start_opts, 1, 1, "vm start NAME [--on NODE]",
	  "Start a VM on its owner node (--on: make NODE the owner first).", NULL },
	{ "vm", "stop", cmd_stop, stop_opts, 1, 1, "vm stop NAME [--force]",
	  "Power a VM off now (--force: kill QEMU).", NULL },
	{ "vm", "shutdown", cmd_shutdown, shutdown_opts, 1, 1, "vm shutdown NAME [--timeout S]",
	  "ACPI power-off; wait up to S seconds (120).", NULL },
	{ "vm", "pause", cmd_pause, NULL, 1, 1, "vm pause NAME", "Pause a VM's vCPUs.", NULL },
	{ "vm", "resume", cmd_resume, NULL, 1, 1, "vm resume NAME", "Resume a paused VM.", NULL },
	{ "vm", "undefine", cmd_undefine, NULL, 1, 1, "vm undefine NAME",
	  "Forget a VM and delete the volumes hcad created for it.", NULL },
	{ "vm", "list", cmd_list, NULL, 0, 0, "vm list", "List this node's VMs.", NULL },
	{ "vm", "show", cmd_show, NULL, 1, 1, "vm show NAME", "Show everything about one VM.", NULL },
	{ "vm", "console", cmd_console, NULL, 1, 1, "vm console NAME",
	  "Attach to a VM's serial console; Ctrl-] detaches.", NULL },
	{ "node", "info", cmd_node_info, NULL, 0, 0, "node info",
	  "This node: versions, accelerator, VM counts.", NULL },
	{ "cluster", "status", cmd_cluster_status, NULL, 0, 0, "cluster status",
	  "Nodes, membership, quorum and storage health.", NULL },
	{ "cluster", "ping", cmd_cluster_ping, NULL, 1, 1, "cluster ping NODE",
	  "Round trip to NODE's hcad over the node channel.", NULL },
	{ "cluster", "init", cmd_cluster_init, cluster_init_opts, 0, 0,
	  "cluster init [--name NAME] [OPTIONS]", "Create the cluster CA (local files).",
	  cluster_init_detail },
	{ "cluster", "cert", cmd_cluster_cert, cluster_cert_opts, 1, 2,
	  "cluster cert issue|renew|show NODE [OPTIONS]",
	  "Issue, renew or show a node certificate (local files).", cluster_cert_detail },
	{ NULL, "version", cmd_version, NULL, 0, 0, "version", "Print hcactl's version.", NULL },
};
#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

static void print_help(const char *group)
{
	printf("Usage: hcactl [--api NAME] [--json] %s%s [ARGS]\n\n", group ? group : "",
	       group ? " COMMAND" : "COMMAND");
	printf("Drive hcad, the hca node agent, over its local API.\n\nCommands:\n");
	for (size_t i = 0; i < NCMDS; i++) {
		if (group && (!cmds[i].group || strcmp(cmds[i].group, group)))
			continue;
		printf("  %-46s %s\n", cmds[i].usage, cmds[i].summary);
	}
	printf("\nOptions:\n"
	       "  --api NAME   hcad's API service (default: $HCA_API, else \"%s\")\n"
	       "  --json       print JSON instead of text; allowed anywhere on the line\n"
	       "  -h, --help   this text; 'hcactl vm define --help' and the like say more\n"
	       "\nExit status: 0 success, 1 error from hcad or talking to it, 2 usage error.\n",
	       API_DEFAULT_NAME);
}

static bool is_group(const char *word)
{
	for (size_t i = 0; i < NCMDS; i++)
		if (cmds[i].group && !strcmp(cmds[i].group, word))
			return true;
	return false;
}

static const struct cmd *find_cmd(const char *group, const char *name)
{
	for (size_t i = 0; i < NCMDS; i++) {
		bool same_group = group ? cmds[i].group && !strcmp(cmds[i].group, group)
					: !cmds[i].group;
		if (same_group && !strcmp(cmds[i].name, name))
			return &cmds[i];
	}
	return NULL;
}

static bool is_help(const char *s)
{
	return !strcmp(s, "--help") || !strcmp(s, "-h");
}

/* argv[0] is the first command word. */
static int dispatch(struct cli *cli, int argc, char **argv)
{
	const char *group = is_group(argv[0]) ? argv[0] : NULL;
	const struct cmd *c = NULL;
	struct args a = { .npos = 0 };
	int rc;

	if (!strcmp(argv[0], "help")) {
		print_help(argc > 1 && is_group(argv[1]) ? argv[1] : NULL);
		return 0;
	}
	if (group && argc < 2)
		return complain(EXIT_USAGE, "'%s' needs a command (try 'hcactl %s --help')", group, group);
	if (group && is_help(argv[1])) {
		print_help(group);
		return 0;
	}
	c = find_cmd(group, argv[group ? 1 : 0]);
	if (!c && group)
		return complain(EXIT_USAGE, "unknown command '%s %s' (try 'hcactl %s --help')",
				group, argv[1], group);
	if (!c)
		return complain(EXIT_USAGE, "unknown command '%s' (try 'hcactl --help')", argv[0]);
	if ((rc = parse_args(c, argc - (group ? 2 : 1), argv + (group ? 2 : 1), &a)))
		return rc;
	return c->run(cli, &a);
}

/* --json may come anywhere; take it out so the rest parses positionally. */
static int strip_json(int argc, char **argv, bool *json)
{
	int n = 0;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			while (i < argc)
				argv[n++] = argv[i++];
		else if (!strcmp(argv[i], "--json"))
			*json = true;
		else
			argv[n++] = argv[i];
	}
	argv[n] = NULL;
	return n;
}

/* Options before the command words. Returns the index of the first word. */
static int parse_globals(struct cli *cli, int argc, char **argv, int *first)
{
	int i = 1;

	for (; i < argc && argv[i][0] == '-'; i++) {
		if (is_help(argv[i])) {
			print_help(NULL);
			exit(0);
		} else if (!strcmp(argv[i], "--api") && i + 1 < argc) {
			cli->api = argv[++i];
		} else if (!strncmp(argv[i], "--api=", 6)) {
			cli->api = argv[i] + 6;
		} else if (!strcmp(argv[i], "--api")) {
			return complain(EXIT_USAGE, "option '--api' needs a value");
		} else {
			return complain(EXIT_USAGE, "unknown option '%s' (try 'hcactl --help')", argv[i]);
		}
	}
	if (!cli->api[0])
		return complain(EXIT_USAGE, "empty API service name");
	if (i == argc)
		return complain(EXIT_USAGE, "missing command (try 'hcactl --help')");
	*first = i;
	return 0;
}

int main(int argc, char **argv)
{
	const char *env = getenv("HCA_API");
	struct cli cli = { .api = env && env[0] ? env : API_DEFAULT_NAME };
	int first = 0;
	int rc;

	argc = strip_json(argc, argv, &cli.json);
	rc = parse_globals(&cli, argc, argv, &first);
	if (!rc)
		rc = dispatch(&cli, argc - first, argv + first);
	api_client_close(cli.client);
	if (fflush(stdout) && !rc)
		rc = complain(EXIT_HCAD, "cannot write output: %s", strerror(errno));
	return rc;
}
