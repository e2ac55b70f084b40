/*
 * hcactl_mig: `vm migrate` as hcactl sees it. The options' values, checked
 * against migration/mig.h's own limits and words (those hcad plans with),
 * go into a MigrateRequest; the migration's figures (the MigReport in
 * Job.migration) come back as JSON, as `job show` lines, and as the report
 * printed when `vm migrate` succeeds. The live progress line and
 * `migration list` are in hcactl_job.c, with the rest of following and
 * listing jobs.
 */
#include "agent/hcactl_priv.h"
#include "migration/mig.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB 1048576.0

/* A word mig.h parses goes on the wire as it is: the two enums agree. */
_Static_assert((int)MIG_COMPRESS_AUTO == (int)HCA__MIG_COMPRESS__MIG_COMPRESS_AUTO &&
	       (int)MIG_COMPRESS_NONE == (int)HCA__MIG_COMPRESS__MIG_COMPRESS_NONE &&
	       (int)MIG_COMPRESS_ZSTD == (int)HCA__MIG_COMPRESS__MIG_COMPRESS_ZSTD,
	       "enum mig_compress and MigCompress differ");
_Static_assert((int)MIG_CONVERGE_AUTO == (int)HCA__MIG_CONVERGE__MIG_CONVERGE_AUTO &&
	       (int)MIG_CONVERGE_THROTTLE == (int)HCA__MIG_CONVERGE__MIG_CONVERGE_THROTTLE &&
	       (int)MIG_CONVERGE_POSTCOPY == (int)HCA__MIG_CONVERGE__MIG_CONVERGE_POSTCOPY &&
	       (int)MIG_CONVERGE_NEVER == (int)HCA__MIG_CONVERGE__MIG_CONVERGE_NEVER,
	       "enum mig_converge and MigConverge differ");

const char migrate_detail[] =
	"Moves VM NAME, running, to node NODE with QEMU's live migration: the guest\n"
	"pauses only for the switchover. hcad chooses what is not given, from the\n"
	"link between the nodes and how fast the guest changes its memory.\n"
	"  --downtime-ms N      the longest pause wanted: 1 to 2000000 ms (default 50)\n"
	"  --max-bandwidth R    at most R MiB/s, as 100 or 12.5 (default, or 0: no limit)\n"
	"  --streams N          parallel streams (multifd): 1 to 64 (default: chosen)\n"
	"  --compress WORD      zstd, none, or auto: zstd where it pays (default)\n"
	"  --converge WORD      when memory changes faster than it is sent: auto\n"
	"                       (default), throttle (slow the guest's vCPUs), postcopy\n"
	"                       (switch over, then fetch the rest), never (abort at the\n"
	"                       deadline)\n"
	"  --deadline TIME      abort after this long: 90 (seconds), 120s, 2m, 1h;\n"
	"                       1s to 24h (default: from the guest's RAM and the link)\n"
	"  --with-storage       local disks move too (shared-nothing migration): each\n"
	"                       volume is mirrored over TLS (only what it holds), the\n"
	"                       source's copy removed once the VM runs there\n"
	"  --target-storage W   with --with-storage: local (default: the node's own\n"
	"                       storage) or rbd (the cluster's pool, raw images)\n"
	"\n"
	"The progress line shows the phase, % done, what was sent and what is left,\n"
	"the send and dirty rates in MiB/s, the ETA and the pass over memory. At the\n"
	"end: the pause as QEMU counts it and as seen from outside, what was sent,\n"
	"what the convergence policy did, and the mode.\n"
	"\n" FOLLOW_HELP;

const char migration_list_detail[] =
	"One line per migrate job hcad knows of ('hcactl job list'), newest first:\n"
	"  SOURCE->TARGET  the nodes\n"
	"  ELAPSED         the whole job, or so far\n"
	"  DOWNTIME        the guest's pause seen from outside / as QEMU counts it\n"
	"  SENT, PASSES    bytes sent, passes over the guest's memory\n"
	"  RESULT          why it failed, or what the convergence policy did\n"
	"'hcactl job show ID' has every figure of one migration; with --json the\n"
	"jobs are printed as 'hcactl job show ID --json' prints one.\n";

/* ---- the request ---- */

static int bad(const char *opt, const char *val, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int bad(const char *opt, const char *val, const char *fmt, ...)
{
	char takes[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(takes, sizeof(takes), fmt, ap);
	va_end(ap);
	return hcactl_complain(EXIT_USAGE, "invalid --%s '%s' (%s)", opt, val, takes);
}

/* --NAME N, N in 1..@max. */
static int opt_count(const char *name, const char *val, unsigned long max, const char *what,
		     uint32_t *out)
{
	unsigned long v = 0;

	if (!val)
		return 0;
	if (hcactl_parse_uint(val, 1, max, &v))
		return bad(name, val, "%s from 1 to %lu", what, max);
	*out = (uint32_t)v;
	return 0;
}

/* MiB/s as digits with at most one '.' (no sign, exponent or "inf"). */
static int parse_mib_s(const char *s, uint64_t *bytes)
{
	size_t digits = strspn(s, "0123456789");
	const char *rest = s + digits;
	double v = 0;

	if (*rest == '.')
		rest += 1 + strspn(rest + 1, "0123456789");
	if (*rest || rest == s || (!digits && rest == s + 1))
		return -EINVAL;
	v = strtod(s, NULL) * MIB;
	if (v >= (double)MIG_BANDWIDTH_UNLIMITED)
		return -ERANGE;
	*bytes = (uint64_t)(v + 0.5);
	if (v > 0 && !*bytes)
		*bytes = 1; /* asked for a limit: never "unlimited" */
	return 0;
}

static int opt_bandwidth(const char *val, uint64_t *out)
{
	int rc = val ? parse_mib_s(val, out) : 0;

	if (rc == -ERANGE)
		return bad("max-bandwidth", val, "at most %.0f MiB/s",
			   (double)MIG_BANDWIDTH_UNLIMITED / MIB - 1);
	if (rc)
		return bad("max-bandwidth", val, "MiB/s as a number, as 100 or 12.5; 0 for no limit");
	return 0;
}

int hcactl_parse_secs(const char *s, unsigned long max, uint32_t *out)
{
	static const char units[] = "smh";
	static const unsigned long unit_s[] = { 1, 60, 3600 };
	size_t n = strlen(s);
	const char *u = n ? strchr(units, s[n - 1]) : NULL;
	unsigned long k = u ? unit_s[u - units] : 1, v = 0;
	char num[24];

	n -= u ? 1 : 0;
	if (!n || n >= sizeof(num))
		return -EINVAL;
	memcpy(num, s, n);
	num[n] = '\0';
	if (hcactl_parse_uint(num, 1, max / k, &v))
		return -EINVAL;
	*out = (uint32_t)(v * k);
	return 0;
}

int hcactl_migrate_request(const struct migrate_opts *o, Hca__MigrateRequest *req)
{
	enum mig_compress compress = MIG_COMPRESS_AUTO;
	enum mig_converge converge = MIG_CONVERGE_AUTO;
	int rc;

	if ((rc = opt_count("downtime-ms", o->downtime_ms, MIG_DOWNTIME_MAX_MS,
			    "milliseconds", &req->downtime_ms)) ||
	    (rc = opt_count("streams", o->streams, MIG_STREAMS_MAX, "a count", &req->streams)) ||
	    (rc = opt_bandwidth(o->max_bandwidth, &req->max_bandwidth)))
		return rc;
	if (o->deadline && hcactl_parse_secs(o->deadline, MIG_DEADLINE_MAX_S, &req->deadline_s))
		return bad("deadline", o->deadline, "1s to %uh: seconds, or a number with s, m or h, "
			   "as 90, 120s, 2m", MIG_DEADLINE_MAX_S / 3600);
	if (o->compress && mig_compress_parse(o->compress, &compress))
		return bad("compress", o->compress, "zstd, none or auto");
	if (o->converge && mig_converge_parse(o->converge, &converge))
		return bad("converge", o->converge, "auto, throttle, postcopy or never");
	req->compress = (Hca__MigCompress)compress;
	req->converge = (Hca__MigConverge)converge;
	req->with_storage = o->with_storage;
	if (o->target_storage && !o->with_storage)
		return hcactl_complain(EXIT_USAGE, "--target-storage goes with --with-storage");
	if (o->target_storage && strcmp(o->target_storage, "local") &&
	    strcmp(o->target_storage, "rbd"))
		return bad("target-storage", o->target_storage, "local or rbd");
	req->target_storage = (char *)(o->target_storage ? o->target_storage : "");
	return 0;
}

/* ---- the report as JSON: every field, from hca.proto's descriptor ---- */

static json_t *field_json(const ProtobufCFieldDescriptor *f, const void *at)
{
	uint64_t u = 0;

	if (f->label == PROTOBUF_C_LABEL_REPEATED)
		return json_null();
	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING:
		return json_string(*(char *const *)at ? *(char *const *)at : "");
	case PROTOBUF_C_TYPE_UINT64:
		u = *(const uint64_t *)at;
		return json_integer(u > INT64_MAX ? INT64_MAX : (json_int_t)u);
	case PROTOBUF_C_TYPE_UINT32:
		return json_integer(*(const uint32_t *)at);
	case PROTOBUF_C_TYPE_BOOL:
		return json_boolean(*(const protobuf_c_boolean *)at);
	default:
		return json_null(); /* none in MigReport yet: add its kind here */
	}
}

json_t *hcactl_mig_json(const Hca__MigReport *m)
{
	const ProtobufCMessageDescriptor *d = &hca__mig_report__descriptor;
	json_t *o = m ? json_object() : NULL;

	for (unsigned i = 0; o && i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];

		if (json_object_set_new(o, f->name, field_json(f, (const char *)m + f->offset))) {
			json_decref(o);
			o = NULL;
		}
	}
	return o;
}

/* ---- the report for people ---- */

static void kv_text(const char *key, char *s)
{
	if (s[0])
		hcactl_kv(key, "%s", hcactl_one_line(s));
}

static void kv_bytes(const char *key, uint64_t v, const char *after)
{
	char text[32];

	if (!v)
		return;
	hcactl_amount(v, "bytes", text, sizeof(text));
	hcactl_kv(key, "%s%s", text, after);
}

static void kv_ms(const char *key, uint64_t ms, const char *after)
{
	char text[32];

	if (!ms)
		return;
	if (ms < 1000)
		snprintf(text, sizeof(text), "%llu ms", (unsigned long long)ms);
	else
		hcactl_elapsed(ms, text, sizeof(text));
	hcactl_kv(key, "%s%s", text, after);
}

static void kv_count(const char *key, uint64_t v)
{
	if (v)
		hcactl_kv(key, "%llu", (unsigned long long)v);
}

void hcactl_mig_show(Hca__MigReport *m)
{
	kv_text("source", m->source);
	kv_text("target", m->target);
	kv_text("mode", m->mode);
	kv_text("plan", m->plan);
	kv_bytes("ram", m->ram_bytes, "");
	kv_bytes("sent", m->transferred, "");
	kv_bytes("remaining", m->remaining, " (dirty in this pass)");
	kv_count("passes", m->passes);
	kv_bytes("rate", m->rate, "/s");
	kv_bytes("dirty rate", m->dirty_rate, "/s");
	kv_bytes("link rate", m->link_rate, "/s (measured)");
	kv_ms("setup", m->setup_ms, "");
	kv_ms("qemu time", m->total_ms, "");
	kv_ms("downtime", m->downtime_ms, " (QEMU's figure)");
	kv_ms("pause seen", m->pause_ms, " (source stop to destination resume)");
	kv_text("policy", m->policy);
	if (m->disks) {
		kv_count("disks", m->disks);
		kv_text("disk mode", m->disk_mode);
		kv_bytes("disk data", m->disk_data, " (allocated in the volumes at the start)");
		kv_bytes("disk mirrored", m->disk_total, " (QEMU's job length: zero ranges count)");
		kv_ms("disks in sync", m->disk_ready_ms, " (from the first mirror)");
		kv_ms("mirror close", m->disk_finish_ms, " (inside the pause)");
	}
	kv_count("owner epoch", m->owner_epoch);
	kv_ms("job time", m->elapsed_ms, " (check to cleanup)");
}

/* "downtime 31 ms by QEMU, 38 ms seen; 512.0 MiB sent in 3 passes; policy: no action" */
static void summary(Hca__MigReport *m, char *buf, size_t len)
{
	struct line_buf l = { .buf = buf, .len = len };
	char sent[32];

	buf[0] = '\0';
	if (m->downtime_ms || m->pause_ms)
		hcactl_line_add(&l, "; ", "downtime");
	if (m->downtime_ms)
		hcactl_line_add(&l, " ", "%llu ms by QEMU", (unsigned long long)m->downtime_ms);
	if (m->pause_ms)
		hcactl_line_add(&l, m->downtime_ms ? ", " : " ", "%llu ms seen",
				(unsigned long long)m->pause_ms);
	if (m->transferred) {
		hcactl_amount(m->transferred, "bytes", sent, sizeof(sent));
		hcactl_line_add(&l, "; ", "%s sent", sent);
	}
	if (m->transferred && m->passes)
		hcactl_line_add(&l, " ", "in %llu pass%s", (unsigned long long)m->passes,
				m->passes == 1 ? "" : "es");
	if (m->policy[0])
		hcactl_line_add(&l, "; ", "policy: %s", hcactl_one_line(m->policy));
}

int hcactl_mig_done(bool json, Hca__Job *j, const struct long_op *op)
{
	Hca__MigReport *m = j->migration;
	uint64_t ms = m ? (m->elapsed_ms ? m->elapsed_ms : m->total_ms) : 0;
	char took[32], why[768];

	if (json)
		return hcactl_print_json(hcactl_job_json(j));
	if (!m || !m->target[0]) {
		printf("%s: %s\n", op->vm, op->done);
		return 0;
	}
	printf("%s: migrated to %s", op->vm, hcactl_one_line(m->target));
	if (ms) {
		hcactl_elapsed(ms, took, sizeof(took));
		printf(" in %s", took);
	}
	summary(m, why, sizeof(why));
	if (why[0])
		printf(" (%s)", why);
	putchar('\n');
	if (m->mode[0])
		printf("  mode: %s\n", hcactl_one_line(m->mode));
	if (m->disks) {
		char data[32], len[32], sync[32];
		hcactl_amount(m->disk_data, "bytes", data, sizeof(data));
		hcactl_amount(m->disk_total, "bytes", len, sizeof(len));
		hcactl_elapsed(m->disk_ready_ms, sync, sizeof(sync));
		printf("  disks: %u volume%s, %s of data (the mirrors went over %s), in sync "
		       "after %s; closing the mirrors took %llu ms of the pause; %s\n", m->disks,
		       m->disks == 1 ? "" : "s", data, len, sync,
		       (unsigned long long)m->disk_finish_ms, hcactl_one_line(m->disk_mode));
	}
	if (m->plan[0])
		printf("  plan: %s\n", hcactl_one_line(m->plan));
	return 0;
}
