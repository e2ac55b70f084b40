/*
 * job: every long operation of this node (define, undefine, start, stop,
 * shutdown; next: migrate, replica cycles, failovers, drain) as a record
 * job/ID in the state store, readable from any node.
 *
 * A job has an id ("node1-17"), a kind, a VM, the node that runs it, a phase
 * that never goes back (hca.JobPhase is ordered; the last three are
 * terminal), progress, and a result. Each change is written to the store in
 * order: one write per job in flight at a time, the latest state written
 * next, so a reader never sees a job go back. Progress is written at most
 * once a second. Terminal jobs stay readable; the oldest are pruned.
 *
 * Loop thread only; store writes run on the work queue.
 */
#ifndef HCA_JOB_H
#define HCA_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include <qb/qbloop.h>

#include "base/exec.h"
#include "proto/hca.pb-c.h"
#include "storage/sto.h"

#define JOB_ID_MAX 80
#define JOB_KEEP 64 /* terminal jobs of this node kept in the store */

struct jobs;
struct job;

/* @loop, @q borrowed (the store's queue: writes of one job are keyed by
 * it); @node copied. The store comes with jobs_set_store. */
struct jobs *jobs_new(qb_loop_t *loop, struct exec_queue *q, const char *node);
void jobs_set_store(struct jobs *js, struct sto_store *st);
/* Stop writing (shutdown): jobs stay in memory. */
void jobs_shutdown(struct jobs *js);
void jobs_free(struct jobs *js);

/* Ids go on from @seq + 1 (the highest this node used, read at load). */
void jobs_seq_at_least(struct jobs *js, uint64_t seq);

/* The sequence number in @id if it is one of @node's ids, else 0. */
uint64_t job_id_seq(const char *id, const char *node);

/* A phase may follow another: never backwards, never out of a terminal one. */
bool job_phase_allowed(Hca__JobPhase from, Hca__JobPhase to);
bool job_phase_terminal(Hca__JobPhase p);
/* "check", "launch", ...: the enum's name in lower case without prefix. */
const char *job_phase_name(Hca__JobPhase p);
const char *job_kind_name(Hca__JobKind k);

/* A cancel request for a running job: return 0 if it will end (cancelled
 * or not), or -errno with a reason in @err ("cannot be cancelled in ..."). */
typedef int (*job_cancel_fn)(struct job *j, void *opaque, char *err, size_t errlen);

/*
 * A new job in phase QUEUED, written to the store. @vm, @requested_on
 * (may be NULL: this node) copied. Never NULL except on ENOMEM.
 */
struct job *job_new(struct jobs *js, Hca__JobKind kind, const char *vm, const char *requested_on,
		    uint64_t incarnation);

/* An interrupted job of this node read back from the store, to resolve. */
struct job *job_adopt(struct jobs *js, const Hca__Job *rec, uint64_t version);

/* Move to @phase. Returns 0, or -EINVAL (backwards: logged, not applied). */
int job_phase(struct job *j, Hca__JobPhase phase);
Hca__JobPhase job_get_phase(const struct job *j);

/* Progress; rate and ETA are derived when @total and time allow. @unit and
 * @detail copied (NULL: unchanged). */
void job_progress(struct job *j, uint64_t done, uint64_t total, const char *unit,
		  const char *detail);

/* The end: SUCCEEDED when @code is 0, else FAILED with the message. The job
 * leaves the active table (it stays readable) and must not be used after. */
void job_finish(struct job *j, Hca__ErrorCode code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The end by a user's cancel: CANCELLED with @fmt as the reason. */
void job_cancelled(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A note for people, kept with the record ("rolled back on restart"). */
void job_note(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void job_set_cancel(struct job *j, job_cancel_fn fn, void *opaque);
bool job_cancel_requested(const struct job *j);
/* Forward a user's cancel: 0 or -errno with @err. */
int job_request_cancel(struct job *j, char *err, size_t errlen);

/* define: a volume ("backend:name") about to be made, recorded so a
 * rollback or a restart removes it; written at once. Make the volume only
 * once the record is durable (job_when_durable). */
void job_add_volume(struct job *j, const char *vol);
/* define: the last volume added was not made by this job (another define
 * of the name holds it): never remove it. */
void job_forget_volume(struct job *j);

/* @fn(@j, 0) once the record holding every change made so far is in the
 * store (at once if it already is), or @fn(@j, -ETIMEDOUT) after
 * @timeout_ms. One waiter at a time; ending the job drops it. Loop thread. */
typedef void (*job_durable_fn)(struct job *j, int rc, void *opaque);
void job_when_durable(struct job *j, job_durable_fn fn, void *opaque, unsigned timeout_ms);

void job_set_incarnation(struct job *j, uint64_t incarnation);
/* migrate: the figures (@r copied; NULL clears), written with the next
 * progress write. */
void job_set_migration(struct job *j, const Hca__MigReport *r);
const char *job_id(const struct job *j);
Hca__JobKind job_kind(const struct job *j);
const char *job_vm(const struct job *j);
uint64_t job_incarnation(const struct job *j);
size_t job_n_volumes(const struct job *j);
const char *job_volume(const struct job *j, size_t i);

/* A job of this node by id (active or recently ended), or NULL. */
struct job *jobs_find(struct jobs *js, const char *id);

/*
 * Fill @out with @j's record. Borrowing: @out points into @j and the
 * caller's @pg/@e, valid until @j changes.
 */
void job_fill(const struct job *j, Hca__Job *out, Hca__JobProgress *pg, Hca__Error *e);

/* Every job of this node in memory, newest first: @fn(job) per job. */
void jobs_each(struct jobs *js, void (*fn)(const struct job *j, void *opaque), void *opaque);

/* Decode a job record read from the store: NULL with @err if corrupt. */
Hca__Job *job_record_decode(const uint8_t *buf, size_t len, char *err, size_t errlen);

#endif
