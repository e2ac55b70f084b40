/*
 * hcactl internals shared by its files (hcactl_cluster.h has the PKI part):
 *   hcactl.c      arguments, the command table, requests to hcad
 *   hcactl_out.c  output: errors, JSON, tables, key/value lines, VM status
 *   hcactl_job.c  jobs: `job list|show|cancel`, following a long command
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

/* A long command (vm define, undefine, start, stop, shutdown), as built. */
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

/* Syntax only: what a job id may look like ("node1-17"). */
bool hcactl_job_id_valid(const char *id);

#endif
