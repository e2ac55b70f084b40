/*
 * hcactl: the command-line client of hcad. Each command becomes one
 * ApiRequest over the local API (api.h); the reply is printed for people or,
 * with --json, as JSON. Spec building lives in spec_json.c where it is unit
 * tested; this file is argument handling (one parser, one command table)
 * and the requests. How things are printed is in hcactl_out.c, jobs and
 * the following of a long command in hcactl_job.c (hcactl_priv.h).
 *
 * Every error is one line on stderr starting "hcactl: ". Exit status: 0 ok,
 * 1 an error from hcad or from talking to it, 2 anything wrong with what the
 * user gave us (arguments, sizes, spec files), found before asking hcad,
 * 130 when Ctrl-C stopped the following of a job (which goes on).
 * Arguments are checked for syntax only: hcad validates specs again and owns
 * every range and policy rule, so they are not repeated here. The one
 * exception, `vm migrate`'s tuning ranges, are migration/mig.h's own
 * constants, read from there (hcactl_mig.c).
 */
#include "agent/api.h"
#include "agent/cert.h"
#include "agent/console.h"
#include "agent/hcactl_priv.h"
#include "agent/spec_json.h"
#include "hypervisor/hv.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef HCA_VERSION
#define HCA_VERSION "0.1.0"
#endif

#define START_TIMEOUT_MS 90000
#define SHUTDOWN_DEFAULT_S 120u
#define SHUTDOWN_MAX_S 86400u
#define SPEC_FILE_MAX (1u << 20)
#define MAX_OPTS 128

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

/* What a command's first positional argument is, for its syntax check;
 * POS_WORD: checked by the command itself, or by hcad. */
enum pos_kind { POS_VM, POS_JOB, POS_WORD };

struct cmd {
	const char *group;         /* "vm", "node", or NULL at top level */
	const char *name;
	int (*run)(struct cli *cli, const struct args *a);
	const struct opt_def *opts;
	size_t min_pos, max_pos;
	const char *usage;         /* after "hcactl " */
	const char *summary;
	const char *detail;        /* for `--help` of the command, or NULL */
	enum pos_kind pos;         /* what a first positional argument is */
};

/* ---- talking to hcad ---- */

Hca__ApiReply *hcactl_try(struct cli *cli, const Hca__ApiRequest *req, int timeout_ms,
			  char *err, size_t errlen)
{
	Hca__ApiReply *r = NULL;

	if (!cli->client)
		cli->client = api_client_connect(cli->api, err, errlen);
	if (cli->client && !(r = api_client_call(cli->client, req, timeout_ms, err, errlen))) {
		/* a late reply must not pass for the answer to the next request */
		api_client_close(cli->client);
		cli->client = NULL;
	}
	return r;
}

Hca__ApiReply *hcactl_call(struct cli *cli, const Hca__ApiRequest *req, int timeout_ms)
{
	char err[512] = "";
	Hca__ApiReply *r = hcactl_try(cli, req, timeout_ms, err, sizeof(err));

	if (!r) {
		hcactl_complain(EXIT_HCAD, "%s", hcactl_one_line(err));
		return NULL;
	}
	if (r->error && r->error->code != HCA__ERROR_CODE__ERROR_NONE) {
		hcactl_complain(EXIT_HCAD, "%s", r->error->message[0] ?
				hcactl_one_line(r->error->message) :
				"hcad reported an error without a message");
		hca__api_reply__free_unpacked(r, NULL);
		return NULL;
	}
	return r;
}

static bool has_vm(const Hca__ApiReply *r)
{
	return r->result_case == HCA__API_REPLY__RESULT_VM && r->vm && r->vm->spec;
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
		return hcactl_complain(EXIT_USAGE, "unknown option '--%.*s' for '%s' "
				       "(try 'hcactl %s --help')", (int)n, arg, title, title);
	if (!o->has_arg && eq)
		return hcactl_complain(EXIT_USAGE, "option '--%s' takes no value", o->name);
	if (o->has_arg && !eq && *i + 1 >= argc)
		return hcactl_complain(EXIT_USAGE, "option '--%s' needs a value", o->name);
	if (!o->repeat && opt_get(a, o->name))
		return hcactl_complain(EXIT_USAGE, "option '--%s' given twice", o->name);
	if (a->nopt == MAX_OPTS)
		return hcactl_complain(EXIT_USAGE, "too many options");
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
	return hcactl_complain(EXIT_USAGE, "invalid VM name '%s' (1-%d chars of a-z, 0-9, -, "
			       "_, starting with a letter or digit)", name, HV_NAME_MAX);
}

/* Node names are DNS labels everywhere (cert.h): one rule, cert_node_name_valid(). */
static int check_node(const char *node)
{
	if (cert_node_name_valid(node))
		return 0;
	return hcactl_complain(EXIT_USAGE, "invalid node name '%s' (1-%d chars of a-z, 0-9 and -, "
			       "not starting with -)", node, CERT_NODE_NAME_MAX);
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
			return hcactl_complain(EXIT_USAGE, "unknown option '%s' for '%s' "
					       "(try 'hcactl %s --help')", argv[i], title, title);
		} else if (a->npos == c->max_pos) {
			return hcactl_complain(EXIT_USAGE, "unexpected argument '%s' for '%s'", argv[i], title);
		} else {
			a->pos[a->npos++] = argv[i];
		}
	}
	if (a->npos < c->min_pos)
		return hcactl_complain(EXIT_USAGE, "missing argument (usage: hcactl %s)", c->usage);
	if (!a->npos || c->pos == POS_WORD)
		return 0;
	if (c->pos == POS_JOB)
		return hcactl_job_id_valid(a->pos[0]) ? 0 :
			hcactl_complain(EXIT_USAGE, "invalid job id '%s' (NODE-NUMBER, as "
					"'hcactl job list' shows them)", a->pos[0]);
	return check_name(a->pos[0]);
}

int hcactl_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *v)
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

/* Pause and resume: hcad answers with the VM once done. */
static int short_op(struct cli *cli, const struct args *a, Hca__ApiRequest__OpCase op)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__VmRef ref = HCA__VM_REF__INIT;
	Hca__ApiReply *r = NULL;
	int rc = EXIT_HCAD;

	ref_request(&req, &ref, op, a->pos[0]);
	if (!(r = hcactl_call(cli, &req, CALL_TIMEOUT_MS)))
		return EXIT_HCAD;
	if (has_vm(r))
		rc = hcactl_vm_outcome(cli->json, r->vm, ref.name, NULL);
	else
		hcactl_complain(EXIT_HCAD, "malformed reply from hcad: no VM status");
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

Hca__ApiReply *hcactl_fetch_vm(struct cli *cli, const char *name, bool quiet)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__VmRef ref = HCA__VM_REF__INIT;
	Hca__ApiReply *r = NULL;
	char err[512];

	ref_request(&req, &ref, HCA__API_REQUEST__OP_SHOW, name);
	if (!quiet) {
		r = hcactl_call(cli, &req, CALL_TIMEOUT_MS);
	} else if ((r = hcactl_try(cli, &req, CALL_TIMEOUT_MS, err, sizeof(err))) &&
		   r->error && r->error->code) {
		hca__api_reply__free_unpacked(r, NULL);
		r = NULL;
	}
	if (r && !has_vm(r)) {
		if (!quiet)
			hcactl_complain(EXIT_HCAD, "malformed reply from hcad: no VM status");
		hca__api_reply__free_unpacked(r, NULL);
		r = NULL;
	}
	return r;
}

/* The long commands' common end: --no-wait and --progress, then hcactl_job.c. */
static int run_long(struct cli *cli, const struct args *a, struct long_op *op)
{
	op->no_wait = opt_get(a, "no-wait") != NULL;
	op->lines = opt_get(a, "progress") != NULL;
	if (op->no_wait && op->lines)
		return hcactl_complain(EXIT_USAGE, "--no-wait and --progress exclude each other");
	return hcactl_long_op(cli, op);
}

static int cmd_start(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__VmRef ref = HCA__VM_REF__INIT;
	struct long_op op = { .req = &req, .timeout_ms = START_TIMEOUT_MS, .verb = "start",
			      .vm = a->pos[0] };
	const char *on = opt_get(a, "on");

	ref_request(&req, &ref, HCA__API_REQUEST__OP_START, a->pos[0]);
	if (on)
		ref.on_node = (char *)on;
	return run_long(cli, a, &op);
}

static int cmd_pause(struct cli *cli, const struct args *a)
{
	return short_op(cli, a, HCA__API_REQUEST__OP_PAUSE);
}

static int cmd_resume(struct cli *cli, const struct args *a)
{
	return short_op(cli, a, HCA__API_REQUEST__OP_RESUME);
}

static int cmd_undefine(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__VmRef ref = HCA__VM_REF__INIT;
	struct long_op op = { .req = &req, .timeout_ms = CALL_TIMEOUT_MS, .verb = "undefine",
			      .vm = a->pos[0], .done = "undefined", .gone = true };

	ref_request(&req, &ref, HCA__API_REQUEST__OP_UNDEFINE, a->pos[0]);
	return run_long(cli, a, &op);
}

static int cmd_stop(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__StopRequest stop = HCA__STOP_REQUEST__INIT;
	struct long_op op = { .req = &req, .timeout_ms = CALL_TIMEOUT_MS, .verb = "stop",
			      .vm = a->pos[0] };

	stop.name = (char *)a->pos[0];
	stop.force = opt_get(a, "force") != NULL;
	req.op_case = HCA__API_REQUEST__OP_STOP;
	req.stop = &stop;
	return run_long(cli, a, &op);
}

static int cmd_shutdown(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__ShutdownRequest sd = HCA__SHUTDOWN_REQUEST__INIT;
	struct long_op op = { .req = &req, .verb = "shutdown", .vm = a->pos[0] };
	const char *t = opt_get(a, "timeout");
	unsigned long secs = SHUTDOWN_DEFAULT_S;

	if (t && hcactl_parse_uint(t, 1, SHUTDOWN_MAX_S, &secs))
		return hcactl_complain(EXIT_USAGE, "invalid --timeout '%s' (1 to %u seconds)", t,
				       SHUTDOWN_MAX_S);
	sd.name = (char *)a->pos[0];
	sd.timeout_s = (uint32_t)secs;
	req.op_case = HCA__API_REQUEST__OP_SHUTDOWN;
	req.shutdown = &sd;
	/* An hcad from before jobs answers once the guest is off or its own
	 * timeout expired; a job is followed for as long as it takes. */
	op.timeout_ms = (int)secs * 1000 + API_REPLY_MARGIN_MS;
	return run_long(cli, a, &op);
}

static int cmd_migrate(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__MigrateRequest mig = HCA__MIGRATE_REQUEST__INIT;
	const struct migrate_opts o = {
		.downtime_ms = opt_get(a, "downtime-ms"), .max_bandwidth = opt_get(a, "max-bandwidth"),
		.streams = opt_get(a, "streams"), .compress = opt_get(a, "compress"),
		.converge = opt_get(a, "converge"), .deadline = opt_get(a, "deadline"),
		.with_storage = opt_get(a, "with-storage") != NULL,
		.target_storage = opt_get(a, "target-storage"),
	};
	char done[128];
	struct long_op op = { .req = &req, .timeout_ms = CALL_TIMEOUT_MS, .verb = "migrate",
			      .vm = a->pos[0], .done = done, .report = hcactl_mig_done };

	if (check_node(a->pos[1]) || hcactl_migrate_request(&o, &mig))
		return EXIT_USAGE;
	mig.name = (char *)a->pos[0];
	mig.target = (char *)a->pos[1];
	req.op_case = HCA__API_REQUEST__OP_MIGRATE;
	req.migrate = &mig;
	snprintf(done, sizeof(done), "migrated to %s", mig.target);
	return run_long(cli, a, &op);
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
		hcactl_complain(EXIT_USAGE, "cannot read %s: %s", path, strerror(errno));
	else if (n > SPEC_FILE_MAX)
		hcactl_complain(EXIT_USAGE, "%s: larger than %u bytes, not a spec file", path, SPEC_FILE_MAX);
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
		hcactl_complain(EXIT_USAGE, "%s: %s", path, err);
		return NULL;
	}
	/* hcad runs elsewhere: paths in a file mean "next to the file". */
	if ((rc = base_dir(path, base, sizeof(base))) || (rc = spec_resolve_paths(spec, base))) {
		hcactl_complain(EXIT_USAGE, "%s: cannot make paths absolute: %s", path, strerror(-rc));
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
		return hcactl_complain(EXIT_USAGE, "invalid size '%s' for --memory: too large", s);
	if (rc)
		return hcactl_complain(EXIT_USAGE, "invalid size '%s' for --memory", s);
	if (spec_set_memory(spec, bytes, err, sizeof(err)))
		return hcactl_complain(EXIT_USAGE, "invalid size '%s' for --memory: %s", s, err);
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
		return hcactl_complain(EXIT_HCAD, "out of memory");
	return 0;
}

/* --disk and --nic, in the order given. */
static int flag_devices(Hca__VmSpec *spec, const struct args *a)
{
	char err[256];

	for (size_t i = 0; i < a->nopt; i++) {
		const char *k = a->opt[i].name, *v = a->opt[i].val;

		if (!strcmp(k, "disk") && spec_add_disk_arg(spec, v, err, sizeof(err)))
			return hcactl_complain(EXIT_USAGE, "invalid --disk '%s': %s", v, err);
		if (!strcmp(k, "nic") && spec_add_nic_arg(spec, v, err, sizeof(err)))
			return hcactl_complain(EXIT_USAGE, "invalid --nic '%s': %s", v, err);
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
		return hcactl_complain(EXIT_USAGE, "'vm define' needs --name NAME or --file FILE");
	if (check_name(name))
		return EXIT_USAGE;
	if (spec_set_string(&spec->name, name) || (uuid && spec_set_string(&spec->uuid, uuid)))
		return hcactl_complain(EXIT_HCAD, "out of memory");
	if ((v = opt_get(a, "vcpus")) && hcactl_parse_uint(v, 0, UINT32_MAX, &vcpus))
		return hcactl_complain(EXIT_USAGE, "invalid number '%s' for --vcpus", v);
	if (v)
		spec->vcpus = (uint32_t)vcpus;
	if ((v = opt_get(a, "memory")) && flag_memory(spec, v))
		return EXIT_USAGE;
	if (flag_devices(spec, a) || flag_boot(spec, a))
		return EXIT_USAGE;
	/* hcad runs elsewhere: relative paths mean "from here". */
	rc = getcwd(cwd, sizeof(cwd)) ? spec_resolve_paths(spec, cwd) : -errno;
	if (rc)
		return hcactl_complain(EXIT_USAGE, "cannot make paths absolute: %s", strerror(-rc));
	return 0;
}

static bool is_follow_opt(const char *name)
{
	return !strcmp(name, "no-wait") || !strcmp(name, "progress");
}

/* The first spec option other than --file, which excludes all of them. */
static const char *other_than_file(const struct args *a)
{
	for (size_t i = 0; i < a->nopt; i++)
		if (strcmp(a->opt[i].name, "file") && !is_follow_opt(a->opt[i].name))
			return a->opt[i].name;
	return NULL;
}

static int cmd_define(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__DefineRequest def = HCA__DEFINE_REQUEST__INIT;
	struct long_op op = { .req = &req, .timeout_ms = CALL_TIMEOUT_MS, .verb = "define",
			      .done = "defined" };
	const char *file = opt_get(a, "file");
	Hca__VmSpec *spec = NULL;
	int rc = EXIT_USAGE;

	if (file && other_than_file(a)) {
		hcactl_complain(EXIT_USAGE, "--file cannot be combined with --%s", other_than_file(a));
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
	op.vm = spec->name;
	rc = run_long(cli, a, &op);
out:
	spec_free(spec);
	return rc;
}

/* ---- list, show, console ---- */

static int cmd_list(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__ApiReply *r = NULL;
	int rc = EXIT_HCAD;

	req.op_case = HCA__API_REQUEST__OP_LIST;
	req.list = 1;
	if (!(r = hcactl_call(cli, &req, CALL_TIMEOUT_MS)))
		return EXIT_HCAD;
	if (r->result_case != HCA__API_REPLY__RESULT_LIST || !r->list) {
		hcactl_complain(EXIT_HCAD, "malformed reply from hcad: no VM list");
		goto out;
	}
	for (size_t i = 0; i < r->list->n_vms; i++) {
		if (!r->list->vms[i]->spec) {
			hcactl_complain(EXIT_HCAD, "malformed reply from hcad: a VM without a spec");
			goto out;
		}
	}
	rc = hcactl_vm_list(cli->json, r->list->vms, r->list->n_vms);
out:
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

static int cmd_show(struct cli *cli, const struct args *a)
{
	Hca__ApiReply *r = hcactl_fetch_vm(cli, a->pos[0], false);
	int rc;

	if (!r)
		return EXIT_HCAD;
	rc = hcactl_vm_show(cli->json, r->vm);
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

/* This node's name, "" if hcad does not say. */
static void local_node(struct cli *cli, char *out, size_t len)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__ApiReply *r;

	req.op_case = HCA__API_REQUEST__OP_NODE_INFO;
	req.node_info = true;
	out[0] = '\0';
	if ((r = hcactl_call(cli, &req, 5000)) && r->node)
		snprintf(out, len, "%s", r->node->node_name);
	if (r)
		hca__api_reply__free_unpacked(r, NULL);
}

static int cmd_console(struct cli *cli, const struct args *a)
{
	Hca__ApiReply *r = hcactl_fetch_vm(cli, a->pos[0], false);
	int rc = EXIT_HCAD;
	char err[512], me[256];

	if (!r)
		return EXIT_HCAD;
	local_node(cli, me, sizeof(me));
	/* the console is a unix socket beside the QEMU, on its owner */
	if (r->vm->owner[0] && me[0] && strcmp(r->vm->owner, me))
		rc = hcactl_complain(EXIT_HCAD, "vm %s runs on node %s, and its console is "
				     "there: run 'hcactl vm console %s' on %s", a->pos[0],
				     r->vm->owner, a->pos[0], r->vm->owner);
	else if (!r->vm->console_path[0])
		rc = hcactl_complain(EXIT_HCAD, "%s has no console (%s)", a->pos[0],
				     hv_state_name(r->vm->state));
	else
		rc = console_attach(a->pos[0], r->vm->console_path, err, sizeof(err)) ?
			hcactl_complain(EXIT_HCAD, "%s", err) : 0;
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

/* ---- node, cluster, jobs, version ---- */

static int cmd_node_info(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__ApiReply *r = NULL;
	int rc = EXIT_HCAD;

	req.op_case = HCA__API_REQUEST__OP_NODE_INFO;
	req.node_info = 1;
	if (!(r = hcactl_call(cli, &req, CALL_TIMEOUT_MS)))
		return EXIT_HCAD;
	if (r->result_case != HCA__API_REPLY__RESULT_NODE || !r->node)
		hcactl_complain(EXIT_HCAD, "malformed reply from hcad: no node info");
	else
		rc = hcactl_node_info(cli->json, r->node);
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

static int cmd_job_list(struct cli *cli, const struct args *a)
{
	return hcactl_job_list(cli);
}

static int cmd_job_show(struct cli *cli, const struct args *a)
{
	return hcactl_job_show(cli, a->pos[0]);
}

static int cmd_job_cancel(struct cli *cli, const struct args *a)
{
	return hcactl_job_cancel(cli, a->pos[0]);
}

static int cmd_migration_list(struct cli *cli, const struct args *a)
{
	return hcactl_migration_list(cli);
}

static int cmd_replica_enable(struct cli *cli, const struct args *a)
{
	const struct replica_opts o = {
		.to = opt_get(a, "to"), .interval = opt_get(a, "interval"),
		.keep = opt_get(a, "keep"), .app = opt_get(a, "app-consistent"),
		.pool = opt_get(a, "target-pool"),
	};

	return hcactl_replica_enable(cli, a->pos[0], &o);
}

static int cmd_replica_status(struct cli *cli, const struct args *a)
{
	return hcactl_replica_status(cli, a->npos ? a->pos[0] : NULL);
}

static int cmd_replica_points(struct cli *cli, const struct args *a)
{
	return hcactl_replica_points(cli, a->pos[0]);
}

static int cmd_replica_pause(struct cli *cli, const struct args *a)
{
	return hcactl_replica_simple(cli, a->pos[0], HCA__API_REQUEST__OP_REPLICA_PAUSE);
}

static int cmd_replica_resume(struct cli *cli, const struct args *a)
{
	return hcactl_replica_simple(cli, a->pos[0], HCA__API_REQUEST__OP_REPLICA_RESUME);
}

static int cmd_replica_disable(struct cli *cli, const struct args *a)
{
	return hcactl_replica_simple(cli, a->pos[0], HCA__API_REQUEST__OP_REPLICA_DISABLE);
}

/* A failover's end: the job's note says where the VM runs and from which point. */
static int failover_done(bool json, Hca__Job *j, const struct long_op *op)
{
	(void)op;
	if (json)
		return hcactl_print_json(hcactl_job_json(j));
	printf("%s\n", j->note[0] ? j->note : "failover done");
	return 0;
}

static int cmd_replica_failover(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__ReplicaFailover fo = HCA__REPLICA_FAILOVER__INIT;
	bool test = opt_get(a, "test"), stop = opt_get(a, "stop");
	bool planned = opt_get(a, "planned"), unplanned = opt_get(a, "unplanned");
	const char *point = opt_get(a, "point");
	struct long_op op = { .req = &req, .timeout_ms = CALL_TIMEOUT_MS, .verb = "failover",
			      .vm = a->pos[0], .report = failover_done };
	unsigned long pt = 0;

	if (test + planned + unplanned != 1)
		return hcactl_complain(EXIT_USAGE, "replica failover: one of --test, --planned, "
				       "--unplanned");
	if (stop && !test)
		return hcactl_complain(EXIT_USAGE, "replica failover: --stop goes with --test");
	if (point && (planned || stop || hcactl_parse_uint(point, 1, UINT64_MAX >> 1, &pt)))
		return hcactl_complain(EXIT_USAGE, "replica failover: --point ID (a point of "
				       "'hcactl replica points') goes with --test or --unplanned");
	if (opt_get(a, "force") && !unplanned)
		return hcactl_complain(EXIT_USAGE, "replica failover: --force goes with --unplanned");
	fo.name = (char *)a->pos[0];
	fo.mode = test ? (stop ? "test-stop" : "test") : planned ? "planned" : "unplanned";
	fo.point = pt;
	fo.force = opt_get(a, "force") != NULL;
	req.op_case = HCA__API_REQUEST__OP_REPLICA_FAILOVER;
	req.replica_failover = &fo;
	return run_long(cli, a, &op);
}

static int cmd_replica_reverse(struct cli *cli, const struct args *a)
{
	return hcactl_replica_simple(cli, a->pos[0], HCA__API_REQUEST__OP_REPLICA_REVERSE);
}

static int cmd_version(struct cli *cli, const struct args *a)
{
	if (cli->json)
		return hcactl_print_json(json_pack("{s:s}", "hcactl", HCA_VERSION));
	printf("hcactl %s\n", HCA_VERSION);
	return 0;
}

/* ---- the command table ---- */

/* Every long command takes these (run_long; their help: FOLLOW_HELP). */
#define FOLLOW_OPTS { "no-wait", false, false }, { "progress", false, false }

static const struct opt_def define_opts[] = {
	{ "file", true, false }, { "name", true, false }, { "uuid", true, false },
	{ "vcpus", true, false }, { "memory", true, false }, { "disk", true, true },
	{ "nic", true, true }, { "kernel", true, false }, { "initrd", true, false },
	{ "cmdline", true, false }, FOLLOW_OPTS, { NULL, false, false },
};
static const struct opt_def start_opts[] = {
	{ "on", true, false }, FOLLOW_OPTS, { NULL, false, false },
};
static const struct opt_def stop_opts[] = {
	{ "force", false, false }, FOLLOW_OPTS, { NULL, false, false },
};
static const struct opt_def shutdown_opts[] = {
	{ "timeout", true, false }, FOLLOW_OPTS, { NULL, false, false },
};
static const struct opt_def undefine_opts[] = { FOLLOW_OPTS, { NULL, false, false } };
static const struct opt_def migrate_opts[] = {
	{ "downtime-ms", true, false }, { "max-bandwidth", true, false },
	{ "streams", true, false }, { "compress", true, false }, { "converge", true, false },
	{ "deadline", true, false }, { "with-storage", false, false },
	{ "target-storage", true, false }, FOLLOW_OPTS,
	{ NULL, false, false },
};
static const struct opt_def replica_enable_opts[] = {
	{ "to", true, false }, { "interval", true, false }, { "keep", true, false },
	{ "app-consistent", true, false }, { "target-pool", true, false },
	{ NULL, false, false },
};
static const struct opt_def replica_failover_opts[] = {
	{ "test", false, false }, { "stop", false, false }, { "planned", false, false },
	{ "unplanned", false, false }, { "point", true, false }, { "force", false, false },
	FOLLOW_OPTS, { NULL, false, false },
};
static const char follow_detail[] = FOLLOW_HELP;
static const char replica_failover_detail[] =
	"  --test [--point ID]   boot a copy of a point (the newest) as NAME-test on the\n"
	"                        replica node, without network; replication goes on\n"
	"  --test --stop         remove that copy\n"
	"  --planned             pause the guest, ship its last changes, start it on the\n"
	"                        replica node: nothing it wrote is lost\n"
	"  --unplanned [--point ID] [--force]\n"
	"                        its node is gone: start it on the replica node from a\n"
	"                        point; refused while that node is a cluster member,\n"
	"                        or while its RBD images are in the pool (start it from\n"
	"                        them instead: nothing lost) (--force: you know it is\n"
	"                        dead, and mean it; two copies must never run)\n"
	"A VM with RBD disks fails over onto local volumes of the replica node.\n"
	FOLLOW_HELP;
static const char replica_detail[] =
	"Ship the VM's changed blocks to NODE every interval (--interval, 5s by\n"
	"default: 90, 30s, 2m, 1h), compressed, over the node channel: the newest\n"
	"point is kept no older than the interval (cycles start early by the time\n"
	"they take, at most a quarter of the interval). NODE keeps the\n"
	"newest --keep recovery points (24). The first cycle copies what the disks\n"
	"hold (holes are not sent). Every point is crash-consistent across the VM's\n"
	"disks. Volumes hcad created are replicated, local files or RBD images.\n"
	"  --target-pool POOL   keep the replica as images in this RBD pool (for\n"
	"      example one on another site's OSDs), the points their snapshots;\n"
	"      NODE still receives and writes it. Default: NODE's own storage.\n"
	"  --app-consistent every:TIME   this often, the guest agent\n"
	"      (org.qemu.guest_agent.0, e.g. qemu-ga) freezes the guest's file systems\n"
	"      for the cut and thaws them right after it; a guest without an agent\n"
	"      gets a crash-consistent point and a warning in the log\n";

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
	"are made absolute against it, and those in FILE against FILE's directory.\n"
	"\n" FOLLOW_HELP;

static int cmd_cluster_status(struct cli *cli, const struct args *a)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__ApiReply *r = NULL;
	int rc = EXIT_HCAD;

	req.op_case = HCA__API_REQUEST__OP_CLUSTER_STATUS;
	req.cluster_status = 1;
	if (!(r = hcactl_call(cli, &req, CALL_TIMEOUT_MS)))
		return EXIT_HCAD;
	if (r->result_case != HCA__API_REPLY__RESULT_CLUSTER || !r->cluster)
		hcactl_complain(EXIT_HCAD, "malformed reply from hcad: no cluster status");
	else
		rc = hcactl_cluster_status(cli->json, r->cluster);
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
	if (!(r = hcactl_call(cli, &req, CALL_TIMEOUT_MS)))
		return EXIT_HCAD;
	if (r->result_case != HCA__API_REPLY__RESULT_PING || !r->ping) {
		hcactl_complain(EXIT_HCAD, "malformed reply from hcad: no ping result");
		goto out;
	}
	rc = 0;
	if (cli->json)
		rc = hcactl_print_json(json_pack("{s:s, s:I}", "node", r->ping->node,
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
	  "Define a VM from a spec file or from flags.", define_detail, POS_VM },
	{ "vm", "start", cmd_start, start_opts, 1, 1, "vm start NAME [--on NODE] [--no-wait]",
	  "Start a VM on its owner node (--on: make NODE the owner first).", follow_detail, POS_VM },
	{ "vm", "stop", cmd_stop, stop_opts, 1, 1, "vm stop NAME [--force] [--no-wait]",
	  "Power a VM off now (--force: kill QEMU).", follow_detail, POS_VM },
	{ "vm", "shutdown", cmd_shutdown, shutdown_opts, 1, 1,
	  "vm shutdown NAME [--timeout S] [--no-wait]",
	  "ACPI power-off; wait up to S seconds (120).", follow_detail, POS_VM },
	{ "vm", "pause", cmd_pause, NULL, 1, 1, "vm pause NAME", "Pause a VM's vCPUs.", NULL, POS_VM },
	{ "vm", "resume", cmd_resume, NULL, 1, 1, "vm resume NAME", "Resume a paused VM.", NULL, POS_VM },
	{ "vm", "undefine", cmd_undefine, undefine_opts, 1, 1, "vm undefine NAME [--no-wait]",
	  "Forget a VM and delete the volumes hcad created for it.", follow_detail, POS_VM },
	{ "vm", "migrate", cmd_migrate, migrate_opts, 2, 2, "vm migrate NAME NODE [OPTIONS]",
	  "Move a running VM to NODE while it runs (live migration).", migrate_detail, POS_VM },
	{ "vm", "list", cmd_list, NULL, 0, 0, "vm list", "List this node's VMs.", NULL, POS_VM },
	{ "vm", "show", cmd_show, NULL, 1, 1, "vm show NAME", "Show everything about one VM.", NULL,
	  POS_VM },
	{ "vm", "console", cmd_console, NULL, 1, 1, "vm console NAME",
	  "Attach to a VM's serial console; Ctrl-] detaches.", NULL, POS_VM },
	{ "node", "info", cmd_node_info, NULL, 0, 0, "node info",
	  "This node: versions, accelerator, VM counts.", NULL, POS_WORD },
	{ "cluster", "status", cmd_cluster_status, NULL, 0, 0, "cluster status",
	  "Nodes, membership, quorum and storage health.", NULL, POS_WORD },
	{ "cluster", "ping", cmd_cluster_ping, NULL, 1, 1, "cluster ping NODE",
	  "Round trip to NODE's hcad over the node channel.", NULL, POS_VM },
	{ "cluster", "init", cmd_cluster_init, cluster_init_opts, 0, 0,
	  "cluster init [--name NAME] [OPTIONS]", "Create the cluster CA (local files).",
	  cluster_init_detail, POS_WORD },
	{ "cluster", "cert", cmd_cluster_cert, cluster_cert_opts, 1, 2,
	  "cluster cert issue|renew|show NODE [OPTIONS]",
	  "Issue, renew or show a node certificate (local files).", cluster_cert_detail, POS_WORD },
	{ "job", "list", cmd_job_list, NULL, 0, 0, "job list",
	  "Jobs (long operations) of the cluster, newest first.", NULL, POS_WORD },
	{ "job", "show", cmd_job_show, NULL, 1, 1, "job show ID",
	  "One job: kind, VM, node, phase, progress, result.", NULL, POS_JOB },
	{ "job", "cancel", cmd_job_cancel, NULL, 1, 1, "job cancel ID",
	  "Ask a job to stop and roll back, where its phase allows.", NULL, POS_JOB },
	{ "migration", "list", cmd_migration_list, NULL, 0, 0, "migration list",
	  "Live migrations (migrate jobs), newest first, with their figures.",
	  migration_list_detail, POS_WORD },
	{ "replica", "enable", cmd_replica_enable, replica_enable_opts, 1, 1,
	  "replica enable NAME --to NODE [--interval T] [--keep N] [--target-pool POOL]",
	  "Replicate a VM's disks to NODE every few seconds.", replica_detail, POS_VM },
	{ "replica", "status", cmd_replica_status, NULL, 0, 1, "replica status [NAME]",
	  "Replication relations: health, the newest point's age (RPO), bytes.", NULL, POS_VM },
	{ "replica", "points", cmd_replica_points, NULL, 1, 1, "replica points NAME",
	  "The recovery points the replica node keeps.", NULL, POS_VM },
	{ "replica", "pause", cmd_replica_pause, NULL, 1, 1, "replica pause NAME",
	  "Stop shipping (changes are still tracked).", NULL, POS_VM },
	{ "replica", "resume", cmd_replica_resume, NULL, 1, 1, "replica resume NAME",
	  "Ship again after a pause.", NULL, POS_VM },
	{ "replica", "disable", cmd_replica_disable, NULL, 1, 1, "replica disable NAME",
	  "Stop replicating; the replica and its points are removed.", NULL, POS_VM },
	{ "replica", "failover", cmd_replica_failover, replica_failover_opts, 1, 1,
	  "replica failover NAME --test|--planned|--unplanned",
	  "Run a VM from its replica (a test copy, or for real).", replica_failover_detail,
	  POS_VM },
	{ "replica", "reverse", cmd_replica_reverse, NULL, 1, 1, "replica reverse NAME",
	  "After a failover: replicate back to the old primary.", NULL, POS_VM },
	{ NULL, "version", cmd_version, NULL, 0, 0, "version", "Print hcactl's version.", NULL, POS_WORD },
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
	       "\nThe long commands (vm define, undefine, start, stop, shutdown, migrate) run\n"
	       "as jobs that hcactl follows to their end; --no-wait returns at once with the\n"
	       "job's id.\n"
	       "\nExit status: 0 success, 1 error from hcad or talking to it (or a job that\n"
	       "failed), 2 usage error, 130 Ctrl-C while following a job (the job goes on).\n",
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
		return hcactl_complain(EXIT_USAGE, "'%s' needs a command (try 'hcactl %s --help')", group, group);
	if (group && is_help(argv[1])) {
		print_help(group);
		return 0;
	}
	c = find_cmd(group, argv[group ? 1 : 0]);
	if (!c && group)
		return hcactl_complain(EXIT_USAGE, "unknown command '%s %s' (try 'hcactl %s --help')",
				       group, argv[1], group);
	if (!c)
		return hcactl_complain(EXIT_USAGE, "unknown command '%s' (try 'hcactl --help')", argv[0]);
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
			return hcactl_complain(EXIT_USAGE, "option '--api' needs a value");
		} else {
			return hcactl_complain(EXIT_USAGE, "unknown option '%s' (try 'hcactl --help')", argv[i]);
		}
	}
	if (!cli->api[0])
		return hcactl_complain(EXIT_USAGE, "empty API service name");
	if (i == argc)
		return hcactl_complain(EXIT_USAGE, "missing command (try 'hcactl --help')");
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
		rc = hcactl_complain(EXIT_HCAD, "cannot write output: %s", strerror(errno));
	return rc;
}
