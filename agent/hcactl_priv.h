/*
 * hcactl internals shared by its files (hcactl_cluster.h has the PKI part):
 *   hcactl.c      arguments, the command table, requests to hcad
 *   hcactl_out.c  output: errors, JSON, tables, key/value lines, VM status
 *   hcactl_job.c  jobs: `job list|show|cancel`, `migration list`, following a
 *                 long command
 *   hcactl_mig.c  `vm migrate`: its options, and the migration's report
 * Exit status everywhere: 0 ok, EXIT_HCAD for an error from hcad or from
 * talking to it, EXIT_USAGE for what the user typed, found before asking.
 */
#ifndef HCA_HCACTL_PRIV_H
#define HCA_HCACTL_PRIV_H

#include "agent/api.h"
#include "agent/hcactl_cluster.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXIT_HCAD 1
#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130     /* 128 + SIGINT, as a shell reports it */

#define CALL_TIMEOUT_MS 30000    /* one request that hcad answers at once */

struct cli {
	const char *api;           /* hcad's API service name */
	bool json;
	struct api_client *client; /* connected on the first request */
};

/* ---- hcactl.c: talking to hcad ---- */

/* A decimal in @min..@max, nothing else: 0, or -EINVAL. */
int hcactl_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *v);

/* "90", "120s", "2m", "1h": seconds, 1..@max. 0, or -EINVAL. */
int hcactl_parse_secs(const char *s, unsigned long max, uint32_t *out);

/*
 * Send @req and return hcad's successful reply (free it with
 * hca__api_reply__free_unpacked), or NULL after printing why not: the
 * transport's error or hcad's own one-line message.
 */
Hca__ApiReply *hcactl_call(struct cli *cli, const Hca__ApiRequest *req, int timeout_ms);

/*
 * The same without printing: NULL with @err filled on a transport failure
 * (the connection is then closed, the next call makes a new one); else the
 * reply, which may carry hcad's Error.
 */
Hca__ApiReply *hcactl_try(struct cli *cli, const Hca__ApiRequest *req, int timeout_ms,
			  char *err, size_t errlen);

/*
 * `vm show` for @name: a reply whose ->vm is valid (free it), or NULL after
 * printing why not; with @quiet, NULL without a word.
 */
Hca__ApiReply *hcactl_fetch_vm(struct cli *cli, const char *name, bool quiet);

/* ---- hcactl_out.c ---- */

/* "hcactl: ..." on stderr; returns @code. */
int hcactl_complain(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* @s made fit for one line (control characters become spaces); returns @s. */
const char *hcactl_one_line(char *s);

/* Print @o (owned, NULL meaning out of memory) indented; an exit status. */
int hcactl_print_json(json_t *o);

/* "64 MiB", or "64M" when @compact: the largest unit that divides exactly. */
void hcactl_size(uint64_t bytes, bool compact, char *buf, size_t len);

/* "42s", "5m12s", "3h05m", "2d04h". */
void hcactl_duration(uint64_t s, char *buf, size_t len);

/* "1.2 s" below a minute, then as hcactl_duration(). */
void hcactl_elapsed(uint64_t ms, char *buf, size_t len);

/* An amount of @unit for people: "1.2 GiB" for "bytes", else "3 volumes". */
void hcactl_amount(uint64_t v, const char *unit, char *buf, size_t len);

/* A line built piece by piece, cut at its size: buf[0] = '\0' to start. */
struct line_buf {
	char *buf;
	size_t len, used;
};

/* Append one piece, after @sep unless it is the first. */
void hcactl_line_add(struct line_buf *l, const char *sep, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * A table: @head names @ncols columns (at most 16), @cells holds @nrows rows
 * of @ncols strings. Columns are aligned; of the columns after the first
 * @fixed, those at the right that are empty in every row are left out, and
 * no line ends in blanks.
 */
void hcactl_table(const char *const *head, size_t ncols, size_t fixed, const char *const *cells,
		  size_t nrows);

/* After an operation on @name: "web1: running" (or "web1: @done"), or the JSON status. */
int hcactl_vm_outcome(bool json, const Hca__VmStatus *st, const char *name, const char *done);

/* `vm list` (sorts @vms by name) and `vm show`, as text or JSON. */
int hcactl_vm_list(bool json, Hca__VmStatus **vms, size_t n);
int hcactl_vm_show(bool json, Hca__VmStatus *st);
int hcactl_node_info(bool json, const Hca__NodeInfo *n);
int hcactl_cluster_status(bool json, const Hca__ClusterStatus *c);

/* ---- hcactl_job.c ---- */

/* The help of the options every long command takes (hcactl.c's run_long). */
#define FOLLOW_HELP \
	"hcad runs it as a job; hcactl follows the job to its end, with a progress\n" \
	"line on stderr when that is a terminal, and prints the result.\n" \
	"  --no-wait        print the job's id (with --json: the job) and return\n" \
	"  --progress       a line per phase on stdout (also: HCA_PROGRESS=lines)\n" \
	"Ctrl-C stops following (exit 130); the job goes on: 'hcactl job show ID'.\n"

struct long_op;

/* Print the result of the long operation @op from its job @j, which succeeded. */
typedef int (*long_op_report_fn)(bool json, Hca__Job *j, const struct long_op *op);

/* A long command (vm define, undefine, start, stop, shutdown, migrate), as built. */
struct long_op {
	const Hca__ApiRequest *req;
	int timeout_ms;            /* for hcad's answer (an hcad from before jobs
				    * answers once the operation is done) */
	const char *verb;          /* "start": first word of the progress line */
	const char *vm;            /* the VM's name */
	const char *done;          /* "defined": printed instead of the state reached */
	bool gone;                 /* no VM to show afterwards (undefine) */
	bool no_wait;              /* --no-wait: print the job and return */
	bool lines;                /* --progress: a line per phase on stdout */
	long_op_report_fn report;  /* NULL: print the VM's outcome (or @done) */
};

/*
 * Send @op->req. hcad accepts it as a job: with @op->no_wait print the job
 * (its id, or its JSON); otherwise follow it to its end, showing progress as
 * the terminal and @op allow, then print what the command printed before
 * there were jobs (the VM's outcome), or the job's error as one line. An
 * hcad from before jobs answers with the VM: that is printed as it always
 * was. Returns the exit status.
 */
int hcactl_long_op(struct cli *cli, const struct long_op *op);

/* `job list`, `job show ID`, `job cancel ID`; an exit status. */
int hcactl_job_list(struct cli *cli);
int hcactl_job_show(struct cli *cli, const char *id);
int hcactl_job_cancel(struct cli *cli, const char *id);

/* `migration list`: the migrate jobs of `job list`, newest first. */
int hcactl_migration_list(struct cli *cli);

/* ---- hcactl_rep.c: `replica ...` ---- */

struct replica_opts {
	const char *to, *interval, *keep, *app, *pool;
};
int hcactl_replica_enable(struct cli *cli, const char *vm, const struct replica_opts *o);
int hcactl_replica_status(struct cli *cli, const char *vm);
int hcactl_replica_points(struct cli *cli, const char *vm);
/* op: HCA__API_REQUEST__OP_REPLICA_PAUSE, _RESUME, _DISABLE or _REVERSE */
int hcactl_replica_simple(struct cli *cli, const char *vm, int op);

/* @j as `job show --json` prints it: a new reference, NULL on ENOMEM. */
json_t *hcactl_job_json(const Hca__Job *j);

/* Syntax only: what a job id may look like ("node1-17"). */
bool hcactl_job_id_valid(const char *id);

/* ---- hcactl_mig.c ---- */

/* `vm migrate`'s options as typed; NULL when not given (hcad chooses). */
struct migrate_opts {
	const char *downtime_ms, *max_bandwidth, *streams, *compress, *converge, *deadline;
	const char *target_storage;
	bool with_storage;
};

/*
 * Check every value of @o and fill @req's tuning fields from them (not the
 * VM's name nor the target). 0, or EXIT_USAGE after saying which option is
 * wrong and what it takes.
 */
int hcactl_migrate_request(const struct migrate_opts *o, Hca__MigrateRequest *req);

/* The long help of `vm migrate` and `migration list`. */
extern const char migrate_detail[], migration_list_detail[];

/* Every field of @m, named as in hca.proto; NULL for a NULL @m or on ENOMEM. */
json_t *hcactl_mig_json(const Hca__MigReport *m);

/* @m's figures as `job show` lines; those not known (0, "") are left out. */
void hcactl_mig_show(Hca__MigReport *m);

/* A long_op_report_fn: "web1: migrated to node3 in 4.2 s (...)" and the mode. */
int hcactl_mig_done(bool json, Hca__Job *j, const struct long_op *op);

#endif
