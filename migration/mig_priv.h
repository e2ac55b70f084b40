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
