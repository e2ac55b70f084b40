/*
 * mig: live migration of a VM between nodes over QEMU's own migration
 * stream (shared RBD disks, TLS, multifd streams), driven as a job.
 *
 * Two parts:
 *  - the service (struct mig, end of this file): the state machine that
 *    drives both QEMUs, the source side in mig_src.c, the destination side
 *    in mig_dst.c, handed a struct hca_env and a struct mig_host (what only
 *    the agent can do: launch a VM's QEMU, update its table) at
 *    construction;
 *  - the pure parts below, which it is built on:
 *
 *  - A plan (struct mig_plan): what the user asked for and what was
 *    measured, resolved once into the choices QEMU is given: multifd or
 *    post-copy, the stream count, compression, the first downtime limit,
 *    the TLS cipher priority. mig_plan_resolve() says why it chose each.
 *  - The QMP arguments for one side (mig_caps_json, mig_params_json,
 *    mig_tls_creds_json), for QEMU 10.0 (qapi/migration.json,
 *    qapi/crypto.json of v10.0).
 *  - The convergence policy (struct mig_policy): fed one query-migrate
 *    sample a second, it answers with what to do (nothing, raise the
 *    downtime limit, throttle the guest more, switch to post-copy, abort)
 *    and a reason for people.
 *
 * Everything here is pure and deterministic: no I/O, no clock, no logging
 * (the caller reports the reason strings where it acts on them). Any thread
 * may call it; a plan or policy is used by one thread at a time.
 *
 * Errors: 0 or -errno; pointers NULL on failure (ENOMEM, or EINVAL where
 * said). Strings passed in are borrowed for the call unless a comment says
 * the plan keeps them.
 */
#ifndef HCA_MIG_H
#define HCA_MIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "proto/hca.pb-c.h"

/* ---- limits and defaults ---- */

#define MIG_DOWNTIME_DEFAULT_MS 50u
/* QEMU's own ceiling for downtime-limit (MAX_MIGRATE_DOWNTIME, 2000 s). */
#define MIG_DOWNTIME_MAX_MS 2000000u
/*
 * max-bandwidth for "unlimited". QEMU has no "off" value for it (its default
 * is 128 MiB/s) and accepts any size up to SIZE_MAX; INT64_MAX is the largest
 * integer jansson can encode, and QEMU's rate limiter (max-bandwidth / 10 per
 * 100 ms slot) never reaches it. libvirt uses the same figure rounded down to
 * whole MiB (QEMU_DOMAIN_MIG_BANDWIDTH_MAX).
 */
#define MIG_BANDWIDTH_UNLIMITED ((uint64_t)INT64_MAX)
/* multifd channels a user may ask for (QEMU takes 1..255: each one is a
 * socket and a thread on both sides, and more than the cores do not help). */
#define MIG_STREAMS_MAX 64u
#define MIG_DEADLINE_DEFAULT_S 120u
#define MIG_DEADLINE_MAX_S 86400u

/*
 * Tunables, with the reason for each figure:
 * MIG_STREAM_RATE: what one multifd channel carries on one core with TLS
 *   (AES-GCM with AES-NI runs at several GB/s; QEMU's per-page work and the
 *   socket copy leave about a third). Conservative: one stream too many
 *   costs a thread, one too few caps the migration.
 * MIG_ZSTD_RATE: guest pages zstd level 1 compresses per core (typical
 *   guest memory, a mix of zeroes, code and data; about 300 MB/s in, well
 *   below zstd's benchmark figures on text).
 * MIG_POSTCOPY_DIRTY_PCT: dirtying above this share of the usable rate makes
 *   precopy hopeless without heavy throttling: post-copy instead.
 */
#define MIG_STREAM_RATE 1000000000ull /* bytes/s */
#define MIG_ZSTD_RATE 300000000ull    /* bytes/s of guest pages per stream */
#define MIG_POSTCOPY_DIRTY_PCT 80u
#define MIG_STREAMS_AUTO_MAX 4u       /* streams chosen at most */
#define MIG_DOWNTIME_START_MIN_MS 10u
/* The policy's window (samples), how much a window's peak must shrink (%),
 * and the quiet time after an action before the next one. */
#define MIG_POL_WINDOW 3u
#define MIG_POL_SHRINK_PCT 10u
#define MIG_POL_SETTLE_MS 5000u
/* The guest CPU throttle (auto-converge): QEMU may throttle on its own up to
 * MIG_THROTTLE_START % (next to nothing); each MIG_ACT_THROTTLE_MORE raises
 * the cap by MIG_THROTTLE_STEP up to MIG_THROTTLE_CAP, so the guest keeps at
 * least a quarter of its CPU time. */
#define MIG_THROTTLE_START 1u
#define MIG_THROTTLE_STEP 25u
#define MIG_THROTTLE_CAP 75u

/* Which QEMU an argument list is for. */
enum mig_side { MIG_SRC, MIG_DST };

/* 0 is "choose", so a zeroed plan asks for every default. */
enum mig_compress {
	MIG_COMPRESS_AUTO = 0, /* zstd where it pays (mig_plan_resolve) */
	MIG_COMPRESS_NONE,
	MIG_COMPRESS_ZSTD,     /* multifd-compression zstd, level 1 */
};

enum mig_converge {
	MIG_CONVERGE_AUTO = 0, /* throttle or postcopy, from dirty rate vs link */
	MIG_CONVERGE_THROTTLE, /* multifd; escalate downtime, then auto-converge */
	MIG_CONVERGE_POSTCOPY, /* one stream (QEMU 10.0 has no postcopy with
				* multifd); escalate downtime, then post-copy */
	MIG_CONVERGE_NEVER,    /* multifd; change nothing, abort at the deadline */
};

/* "auto", "none", "zstd"; "auto", "throttle", "postcopy", "never";
 * "?" for a value out of range. Static strings. */
const char *mig_compress_name(enum mig_compress c);
const char *mig_converge_name(enum mig_converge c);
/* The reverse, for option parsers: 0, or -EINVAL for an unknown @name. */
int mig_compress_parse(const char *name, enum mig_compress *out);
int mig_converge_parse(const char *name, enum mig_converge *out);

/*
 * A migration's plan. The caller fills the first two groups (a zeroed
 * struct plus ram_bytes is a valid request for all defaults), then
 * mig_plan_resolve() replaces every "choose" value with a decision and
 * fills the third group. Strings are borrowed and must outlive the plan's
 * use: the JSON builders copy them.
 */
struct mig_plan {
	/* ---- asked for: 0 / AUTO means "choose" ---- */
	uint32_t downtime_ms;   /* the longest guest pause wanted: the ceiling
				 * of downtime-limit, never exceeded; 0: 50 */
	uint64_t max_bandwidth; /* bytes/s cap; 0: unlimited */
	uint32_t streams;       /* multifd channels, 1..MIG_STREAMS_MAX; 0: choose */
	enum mig_compress compress;
	enum mig_converge converge;
	uint32_t deadline_s;    /* abort after this long; 0: choose */

	/* ---- known or measured; 0: unknown ---- */
	uint32_t host_cores;    /* the source's cores */
	uint32_t busy_milli;    /* of those, how many were in use (by anything:
				 * guests, Ceph, us) while the dirty rate was
				 * measured, in thousandths of a core; 0:
				 * unknown (or idle) */
	uint64_t link_rate;     /* bytes/s between the two nodes */
	uint64_t dirty_rate;    /* bytes/s the guest dirties (calc-dirty-rate) */
	uint64_t ram_bytes;     /* guest RAM; required */
	uint32_t zstd_pct;      /* zstd level 1 on a sample of the guest's
				 * non-zero pages: compressed size, % of the
				 * input (1..100); 0: not measured */
	uint64_t zstd_rate;     /* bytes/s one core compressed that sample at */
	const char *tls_creds;  /* id of a tls-creds-x509 object in each QEMU
				 * (client on the source, server on the
				 * destination); NULL: no TLS */
	const char *tls_hostname; /* the name the destination's certificate
				   * must carry; NULL: the URI's host */
	const char *tls_authz;  /* id of an authz object the destination checks
				 * the source's DN with; NULL: none, the
				 * cluster CA alone decides */
	bool avoid_1937;        /* this QEMU has QEMU issue 1937 (GnuTLS
				 * crashes after ~64 GB over a TLS 1.3 AES
				 * channel that also reads a return path; fixed
				 * after 10.0): see tls_priority */

	/* ---- decided by mig_plan_resolve() ---- */
	bool resolved;
	bool multifd;           /* multifd streams; false: post-copy mode */
	bool postcopy;          /* postcopy-ram (+ postcopy-preempt) */
	bool auto_converge;     /* auto-converge, under the policy's throttle cap */
	uint32_t downtime_start_ms; /* the first downtime-limit (<= downtime_ms) */
	/* GnuTLS priority for the tls-creds-x509 objects; NULL: QEMU's default.
	 * Static. Set to MIG_TLS_PRIORITY_NO_AES where issue 1937 can bite. */
	const char *tls_priority;
};

/*
 * TLS 1.3 without AES: ChaCha20-Poly1305, which has no 2^24-record key
 * update limit, so GnuTLS never rekeys the channel (the workaround QEMU's
 * maintainers give for issue 1937 on QEMUs without the fix).
 */
#define MIG_TLS_PRIORITY_NO_AES "NORMAL:-AES-256-GCM:-AES-128-GCM:-AES-128-CCM"

/*
 * Check @p and make every choice it leaves open, in place:
 *  - downtime_ms 0 -> MIG_DOWNTIME_DEFAULT_MS; downtime_start_ms = half of
 *    it (at least 10 ms, at most the target): QEMU's estimate covers RAM
 *    only, while the pause seen from outside also holds device state, the
 *    owner commit and the resume, so the limit starts low and the policy
 *    raises it towards the target only when the migration stops shrinking;
 *  - converge AUTO -> POSTCOPY when the guest dirties more than 80 % of the
 *    usable rate (the link, or the user's cap if lower), else THROTTLE;
 *    THROTTLE when either figure is unknown or when --streams > 1 or
 *    --compress zstd asked for multifd;
 *  - streams 0 -> enough streams to carry the usable rate at
 *    MIG_STREAM_RATE each, at most min(cores, 4) (all of those when the rate
 *    is unknown; unknown cores count as 1), at least 2 with TLS (encryption
 *    runs per stream); 1 in post-copy mode;
 *  - compress AUTO -> NONE unless the guest's pages were measured
 *    (zstd_pct) to shrink to half or less (zstd does not pay on random
 *    data); then ZSTD when the streams can compress at least twice the
 *    usable rate (MIG_ZSTD_RATE per stream; the stream count may grow to
 *    that within the same core bound), so even incompressible pages lose
 *    nothing; else NONE; NONE when the rate is unknown;
 *  - deadline_s 0 -> the longer of MIG_DEADLINE_DEFAULT_S and three passes
 *    over RAM at the usable rate (100 MB/s when unknown);
 *  - tls_priority: MIG_TLS_PRIORITY_NO_AES in post-copy mode with TLS and
 *    avoid_1937 (all RAM crosses the main channel, which the return path
 *    reads); otherwise QEMU's default: with multifd the bulk runs on
 *    channels that only one thread uses in one direction, and the main
 *    channel carries far less than 64 GB, so AES-GCM stays.
 * @why (@len bytes, may be NULL/0; always terminated) receives one line
 * per decision, "; "-separated, for the job record and `migration list`.
 * Returns 0; -EINVAL with the cause in @why for an impossible request
 * (ram_bytes 0, a value out of range, an enum out of range, tls_hostname or
 * tls_authz without tls_creds, post-copy with --streams > 1 or zstd).
 * Calling it again on a resolved plan gives the same plan.
 */
int mig_plan_resolve(struct mig_plan *p, char *why, size_t len);

/*
 * The arguments of `migrate-set-capabilities` for @side:
 * {"capabilities": [{"capability": NAME, "state": BOOL}, ...]}, every
 * capability this module ever sets listed with its state, so a QEMU that
 * saw an earlier attempt is put right. Both sides get, identically:
 *   events, return-path, validate-uuid, multifd, postcopy-ram,
 *   postcopy-preempt
 * (QEMU requires multifd, postcopy-ram and postcopy-preempt to match, or
 * the migration fails to start or to connect its channels; the others are
 * kept equal by choice). The
 * source adds pause-before-switchover (the agent commits the owner record
 * before the switchover), auto-converge (the policy's throttle) and
 * zero-copy-send off (needs locked guest RAM, excludes TLS and
 * compression); the destination adds late-block-activate (disks activate
 * at `cont`, after the commit, not when the stream ends).
 * Set on both QEMUs before `migrate-incoming` / `migrate`.
 * @p: resolved. Returns a new reference (hv_vm_qmp() steals it), or NULL
 * (unresolved plan, bad @side, ENOMEM).
 */
json_t *mig_caps_json(const struct mig_plan *p, int side);

/*
 * The arguments of `migrate-set-parameters` for @side. Source:
 * downtime-limit (downtime_start_ms), max-bandwidth (always set: the cap,
 * or MIG_BANDWIDTH_UNLIMITED), avail-switchover-bandwidth (link_rate; 0 lets
 * QEMU estimate), tls-creds ("" without TLS), tls-hostname ("": the URI's
 * host); with multifd multifd-channels, multifd-compression and, for zstd,
 * multifd-zstd-level 1; in post-copy mode max-postcopy-bandwidth (the cap,
 * or 0: unlimited); with auto-converge cpu-throttle-initial,
 * cpu-throttle-increment and max-cpu-throttle, which hold QEMU's own
 * throttle at MIG_THROTTLE_START % until the policy raises the cap.
 * Destination: tls-creds, tls-authz when set, and with multifd the channel
 * count and compression, which must match the source's.
 * @p: resolved. Returns a new reference, or NULL as mig_caps_json().
 */
json_t *mig_params_json(const struct mig_plan *p, int side);

/*
 * The arguments of `object-add` creating the tls-creds-x509 object
 * p->tls_creds in the QEMU of @side: endpoint client (source) or server
 * (destination), verify-peer on, the credentials in @dir (QEMU's fixed
 * names: ca-cert.pem, server-cert.pem/-key.pem, client-cert.pem/-key.pem),
 * and "priority" when p->tls_priority is set.
 * Returns a new reference, or NULL: no TLS in @p, @dir NULL, unresolved
 * plan, bad @side, ENOMEM.
 */
json_t *mig_tls_creds_json(const struct mig_plan *p, int side, const char *dir);

/* ---- convergence policy ---- */

/* One progress sample, from query-migrate's "ram" (and expected-downtime). */
struct mig_sample {
	uint64_t remaining;     /* bytes still dirty in this pass */
	uint64_t transferred;   /* bytes sent so far */
	uint64_t total;         /* guest RAM */
	uint64_t dirty_rate;    /* bytes/s (dirty-pages-rate x page-size) */
	uint64_t rate;          /* bytes/s sent (mbps x 125000) */
	uint64_t iteration;     /* passes so far (dirty-sync-count; 1 in the first) */
	uint32_t expected_downtime_ms; /* QEMU's estimate: reported, not judged */
	uint64_t t_ms;          /* a monotonic clock, ms */
};

enum mig_action {
	MIG_ACT_NONE,
	MIG_ACT_RAISE_DOWNTIME, /* migrate-set-parameters downtime-limit = value (ms) */
	MIG_ACT_THROTTLE_MORE,  /* migrate-set-parameters max-cpu-throttle = value (%) */
	MIG_ACT_POSTCOPY,       /* migrate-start-postcopy */
	MIG_ACT_ABORT,          /* migrate_cancel; the reason goes to the user */
};

/* "none", "raise-downtime", "throttle-more", "postcopy", "abort". Static. */
const char *mig_action_name(enum mig_action a);

#define MIG_REASON_MAX 320

struct mig_decision {
	enum mig_action action;
	uint64_t value;                /* see enum mig_action; 0 otherwise */
	char reason[MIG_REASON_MAX];   /* for people; "" with MIG_ACT_NONE */
};

struct mig_policy; /* opaque: one migration's convergence state */

/*
 * A policy for @p (resolved; read now, not kept) whose migration started at
 * @start_ms on the samples' clock. Its starting point is what
 * mig_params_json() gave QEMU. NULL with errno EINVAL (unresolved plan) or
 * ENOMEM. Free with mig_policy_free(); NULL is a no-op there.
 */
struct mig_policy *mig_policy_new(const struct mig_plan *p, uint64_t start_ms);
void mig_policy_free(struct mig_policy *pol);

/*
 * Feed one sample (@s borrowed) and get the decision in *@d. The rules:
 *  - the migration is judged in windows of at least MIG_POL_WINDOW samples
 *    that end at a pass boundary (the iteration changed), so a window holds
 *    whole passes; its peak (largest `remaining`) is the dirty set QEMU had
 *    to send. A window whose peak is not at least 10 % below the previous
 *    window's has stopped shrinking. Nothing is judged in the first pass.
 *  - on such a window, but never within MIG_POL_SETTLE_MS of the previous
 *    action nor before two more windows closed after it (the first one
 *    still holds the dirty set built before the action), the next step up
 *    the ladder: raise downtime-limit towards the
 *    target (only while the dirty set could be sent within the target at
 *    the rate seen), then raise the throttle cap by MIG_THROTTLE_STEP up to
 *    MIG_THROTTLE_CAP (throttle mode), then post-copy (post-copy mode),
 *    then abort with the figures. Knobs only ever go up: nothing flaps.
 *  - the deadline aborts, whatever the mode; CONVERGE_NEVER does nothing
 *    else.
 *  - after POSTCOPY or ABORT every later sample gets MIG_ACT_NONE: post-copy
 *    cannot be undone (the guest runs on the destination), an abort is
 *    given once and carried out by the caller.
 * Samples whose t_ms does not advance are ignored. Returns d->action.
 */
enum mig_action mig_policy_feed(struct mig_policy *pol, const struct mig_sample *s,
				struct mig_decision *d);

/* One line on where the policy stands, for the job's progress detail
 * ("first pass", "shrinking: 120 MiB left", the last action's reason...).
 * Owned by @pol, valid until the next feed. */
const char *mig_policy_detail(const struct mig_policy *pol);

/* What the policy did, for the migration's report: "no action", or e.g.
 * "downtime limit 25 -> 50 ms; throttle cap 75 %; post-copy". Into @buf
 * (@len bytes, always terminated); returns @buf. */
char *mig_policy_summary(const struct mig_policy *pol, char *buf, size_t len);

/*
 * The QMP command carrying out @d: "migrate-set-parameters",
 * "migrate-start-postcopy", "migrate_cancel", or NULL for MIG_ACT_NONE.
 * *@args gets its arguments (new reference; NULL when it takes none).
 * Returns NULL with *@args NULL on ENOMEM too.
 */
const char *mig_decision_qmp(const struct mig_decision *d, json_t **args);

/* ---- the service: both sides of this node's migrations ---- */

struct hca_env;
struct hv_vm;
struct job;
struct mig;

typedef void (*mig_hv_fn)(void *opaque, struct hv_vm *hv, int err, const char *msg);

/* What the agent does for the service. Loop thread; @ctx is host.ctx. */
struct mig_host {
	void *ctx;
	/* Destination: launch @vm's QEMU here for an incoming stream (`-S
	 * -incoming defer`), after checking that this node's copy of the owner
	 * record says @source owns it, active, at @epoch and @incarnation, and
	 * that every disk is shared. @done gets the VM's QEMU handle (the
	 * agent's: the service sends QMP to it, never frees it) once QMP
	 * answers, or the error. Returns 0 or -errno with @err. */
	/* With @n_disks local volumes (--with-storage; NULL/0 otherwise):
	 * first check there is room for them and make each, sparse, of the
	 * same name, size and format, instead of requiring shared disks. */
	int (*incoming_start)(void *ctx, const char *vm, const char *source, uint64_t epoch,
			      uint64_t incarnation, const Hca__MigDisk *const *disks,
			      size_t n_disks, mig_hv_fn done, void *opaque, char *err,
			      size_t errlen);
	/* Destination: kill the incoming QEMU of @vm and forget it (the
	 * migration did not commit; the guest never ran here), and remove the
	 * volumes incoming_start made for it. */
	void (*incoming_discard)(void *ctx, const char *vm);
	/* The VM's QEMU handle on this node now, or NULL (it may have been let
	 * go after its QEMU ended: never keep one across callbacks). */
	struct hv_vm *(*vm_hv)(void *ctx, const char *vm);
	/* Either side: the commit moved @vm's owner record to @owner at @epoch
	 * (store version @version, 0: unknown); update what the agent holds. */
	void (*committed)(void *ctx, const char *vm, const char *owner, uint64_t epoch,
			  uint64_t version);
	/* Source: @vm's migration job ends now (the agent frees the VM's one
	 * job slot); after a commit its QEMU has quit, and local volumes that
	 * moved (--with-storage) are the agent's to remove here. */
	void (*ended)(void *ctx, const char *vm, struct job *j, bool moved);
	/* QEMU's x509 directory for this node (fixed names: ca-cert.pem,
	 * server-cert.pem, server-key.pem, client-cert.pem, client-key.pem);
	 * NULL: migrations refuse to run without TLS. */
	const char *tls_dir;
	/* A root-only directory for QEMU to save samples of guest memory in
	 * (the compressibility test); NULL: not sampled, no compression. */
	const char *scratch_dir;
	unsigned max_out, max_in; /* migrations at once; 0: 2 */
	unsigned host_cores;
	/* The node's CPU time so far, busy and in all, in any one unit
	 * (/proc/stat's ticks): two reads give the share of host_cores in use
	 * meanwhile. NULL, or < 0: unknown (compression is then planned as if
	 * the cores were free). */
	int (*cpu_ticks)(void *ctx, uint64_t *busy, uint64_t *all);
};

/* The service: registers the channel methods "mig.*" (again whenever the
 * channel comes up: mig_channel_up). @env and @host borrowed, outlive it.
 * NULL with errno. */
struct mig *mig_new(const struct hca_env *env, const struct mig_host *host);
void mig_channel_up(struct mig *m);
/* Stop: migrations under way are left to the restart's resolution. */
void mig_free(struct mig *m);

/*
 * Source: migrate @vm, running here in @hv, as job @j (id @job_id; fresh,
 * QUEUED: the service reports through it and ends it). @owner_epoch, @incarnation:
 * the owner record this node holds (owner = this node, active). @ram_bytes:
 * the guest's memory. @disks (@n_disks, copied): the local volumes that
 * move with it (req->with_storage), mirrored over NBD before the memory
 * goes. @req borrowed. Returns 0 (the job goes on, or waits for a slot),
 * or -errno with @err and the job untouched.
 */
int mig_start(struct mig *m, struct job *j, const char *job_id, struct hv_vm *hv, const char *vm,
	      uint64_t owner_epoch, uint64_t incarnation, uint64_t ram_bytes,
	      const Hca__MigDisk *const *disks, size_t n_disks, const Hca__MigrateRequest *req,
	      char *err, size_t errlen);

/* Every QMP event of a VM's QEMU on this node, from the agent's hook. */
void mig_event(struct mig *m, const char *vm, const char *event, json_t *data);

/* True while @vm migrates into or out of this node. */
bool mig_busy(const struct mig *m, const char *vm);

#endif
