/*
 * mig_priv.h: internals of the migration module shared by its files and
 * its unit tests; nothing above the module includes this.
 *
 * Files, by concern:
 *   mig_params.c  plan -> choices -> QMP arguments (pure)
 *   mig_policy.c  progress samples -> convergence decisions (pure)
 *   mig_src.c     the source's state machine (the job, the commit)
 *   mig_dst.c     the destination's side (channel methods mig.*)
 */
#ifndef HCA_MIG_PRIV_H
#define HCA_MIG_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migration/mig.h"

/* The rate assumed for a default deadline when none was measured (a 1 GbE
 * link, the slowest the cluster is built for). */
#define MIG_RATE_GUESS 100000000ull

/* The rate the migration can use: the link, or the user's cap if lower;
 * 0 if neither is known. */
uint64_t mig_plan_usable_rate(const struct mig_plan *p);

/* @n bytes for people, binary units with one decimal under 10:
 * "512 B", "1.5 KiB", "180 MiB", "1.2 GiB". Into @buf; returns @buf. */
char *mig_fmt_bytes(char *buf, size_t len, uint64_t n);

/* ---- the policy's state (mig_policy.c) ---- */

/* Phases only go forward: FIRST_PASS -> WATCH -> POSTCOPY | ABORTED. */
enum mig_pol_phase {
	MIG_POL_FIRST_PASS, /* QEMU sends all of RAM once: nothing to judge */
	MIG_POL_WATCH,      /* passes are compared, the ladder may be climbed */
	MIG_POL_POSTCOPY,   /* post-copy started: nothing left to decide */
	MIG_POL_ABORTED,    /* abort decided */
};

const char *mig_pol_phase_name(enum mig_pol_phase ph);

/* One window of samples: whole passes, at least MIG_POL_WINDOW samples. */
struct mig_pol_window {
	unsigned n;
	uint64_t peak;        /* largest remaining */
	uint64_t dirty_sum;   /* for the mean dirty rate */
	uint64_t rate_sum;    /* for the mean transfer rate */
};

struct mig_policy {
	enum mig_pol_phase phase;

	/* from the plan */
	uint32_t target_ms;       /* the downtime ceiling */
	uint32_t step_ms;         /* a downtime raise, at least */
	bool throttle_ok;         /* auto-converge is on */
	bool postcopy_ok;         /* postcopy-ram is on */
	bool never;               /* CONVERGE_NEVER: only the deadline */
	bool capped;              /* the user set max-bandwidth */
	uint64_t start_ms, deadline_ms;

	/* the knobs as QEMU has them now */
	uint32_t downtime_ms, downtime_first_ms;
	uint32_t throttle_pct;

	/* judging */
	struct mig_pol_window win, prev;
	bool have_prev;           /* prev holds a closed window */
	bool have_last;
	uint64_t last_t, last_iter;
	uint64_t settle_until;    /* no action before this t_ms */
	unsigned settle_windows;  /* ... nor before this many more windows closed */
	unsigned actions;

	char detail[MIG_REASON_MAX];
};

/* ---- the disks of a shared-nothing migration (mig_disk.c) ---- */

#define MIG_DISKS_MAX 16u /* HV_MAX_DISKS */
#define MIG_DISK_SIZE_MAX (64ull << 40) /* a volume of 64 TiB at most */

/* QEMU's names for one disk's pieces, from the disk's name. */
struct mig_disk_names {
	char node[80];  /* "drive-D": the guest's block node (hv_argv.c) */
	char nbd[80];   /* "mig-nbd-D": the source's NBD client node */
	char job[80];   /* "mig-D": the source's mirror job */
	char exp[80];   /* "mig-exp-D": the destination's export (named "D") */
};
void mig_disk_names(const char *disk, struct mig_disk_names *n);

/* QMP arguments, new references, NULL on a bad argument or ENOMEM:
 * source: blockdev-add of the NBD client (TLS with @tls, the peer's
 * certificate must name @tls_hostname), blockdev-mirror (sync full,
 * background), block-job-change to write-blocking; destination:
 * nbd-server-start (TLS), block-export-add (writable), block-export-del. */
json_t *mig_nbd_client_json(const char *disk, const char *host, unsigned port, const char *tls,
			    const char *tls_hostname);
json_t *mig_mirror_json(const char *disk);
json_t *mig_mirror_active_json(const char *disk);
json_t *mig_nbd_server_json(const char *host, unsigned port, const char *tls);
json_t *mig_export_json(const char *disk);
json_t *mig_export_del_json(const char *disk);

struct mig_mirror {
	char disk[64];
	uint64_t allocated;     /* what the volume held at the start */
	uint64_t len, offset;   /* the job's figures, from QEMU */
	bool ready, done, failed;
};

/* The source's mirrors of one migration. Zeroed, then mig_mirrors_add()
 * per disk; set finishing before the switchover's cancels. */
struct mig_mirrors {
	unsigned n, n_ready, n_done;
	bool finishing;         /* block-job-cancel sent to READY mirrors */
	struct mig_mirror d[MIG_DISKS_MAX];
};

/* 0; -EINVAL (bad name), -E2BIG, -EEXIST (twice the same disk). */
int mig_mirrors_add(struct mig_mirrors *mm, const char *disk, uint64_t allocated);

enum mig_mm_ev {
	MIG_MM_NONE,
	MIG_MM_READY,   /* every mirror is in sync */
	MIG_MM_DONE,    /* every mirror finished, as asked (finishing) */
	MIG_MM_FAILED,  /* one failed or ended unasked: the reason in @why */
};

/* A QMP event of the source's QEMU (BLOCK_JOB_READY, _ERROR, _COMPLETED,
 * _CANCELLED; others and other jobs: MIG_MM_NONE). Each of READY and DONE
 * is answered once, when the last mirror gets there. */
enum mig_mm_ev mig_mirrors_event(struct mig_mirrors *mm, const char *event, json_t *data,
				 char *why, size_t len);
/* Fold query-block-jobs' answer in; the bytes copied and to copy, summed. */
void mig_mirrors_jobs(struct mig_mirrors *mm, json_t *jobs, uint64_t *done, uint64_t *total);
/* Does query-block-jobs' answer still list one of the mirrors? */
bool mig_mirrors_have_job(const struct mig_mirrors *mm, json_t *jobs);

/* ---- the service (mig_src.c, mig_dst.c) ---- */

struct mig_out;
struct mig_in;

/* Link rates measured by earlier migrations, by destination. */
#define MIG_RATE_CACHE 16
struct mig_rate {
	char node[64];
	uint64_t rate;  /* bytes/s */
};

struct mig {
	const struct hca_env *env;
	struct mig_rate rates[MIG_RATE_CACHE];
	struct mig_host host;
	struct exec_queue *q;   /* the commit and the store reads */
	struct mig_out *outs;   /* this node's outgoing migrations */
	struct mig_in *ins;     /* incoming */
	unsigned n_out;         /* outgoing past the queue */
	bool stopping;
};

/* Channel method names. */
#define MIG_M_PREPARE "mig.prepare"
#define MIG_M_READY "mig.ready"
#define MIG_M_COMMIT "mig.commit"
#define MIG_M_ABORT "mig.abort"
#define MIG_TLS_ID "hca-mig-tls"
#define MIG_CALL_MS 30000u      /* prepare: a QEMU launch under TCG */
#define MIG_FAST_CALL_MS 5000u  /* ready, commit, abort */

/* mig_dst.c */
void mig_dst_register(struct mig *m);
void mig_dst_event(struct mig *m, const char *vm, const char *event, json_t *data);
bool mig_dst_busy(const struct mig *m, const char *vm);
void mig_dst_free_all(struct mig *m);

/* mig_src.c */
void mig_src_event(struct mig *m, const char *vm, const char *event, json_t *data);
bool mig_src_busy(const struct mig *m, const char *vm);
void mig_src_free_all(struct mig *m);

/* Wall clock, microseconds (the pause is measured across nodes). */
uint64_t mig_now_us(void);
/* Monotonic, milliseconds. */
uint64_t mig_mono_ms(void);

#endif
