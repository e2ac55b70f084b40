/*
 * env: what a module above storage/ and hypervisor/ (migration/, replica/)
 * is handed at construction, so it never includes agent/. hcad fills one
 * (agent/env.c) from its loop, store, executor, node channel, membership and
 * job table; a test fills one from fakes.
 *
 * Only forward declarations here: base/ sits below every module. The
 * function pointers have the shapes of proto/chan.h's callbacks and of
 * agent/job.h's calls; `ctx` is passed to each of them unchanged.
 *
 * Everything is called on the loop thread.
 */
#ifndef HCA_ENV_H
#define HCA_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <qb/qbloop.h>

struct chan_reply;
struct chan_stream;
struct chan_stream_ops;
struct sto_store;
struct exec;
struct job;

/* proto/chan.h's chan_handler_fn, chan_stream_fn and chan_reply_fn. */
typedef void (*env_handler_fn)(struct chan_reply *r, const void *body, size_t len, void *opaque);
typedef int (*env_stream_fn)(struct chan_stream *st, const void *hdr, size_t len, void *opaque);
typedef void (*env_reply_fn)(int err, const void *body, size_t len, const char *msg,
			     void *opaque);

struct hca_env {
	qb_loop_t *loop;
	struct sto_store *store;  /* the cluster's state store (owner records: sto_vm.h) */
	struct exec *exec;        /* the executor: blocking work on named queues */
	const char *node;         /* this node's name */
	void *ctx;

	/* ---- the node channel (agent/peers.h): register calls and streams
	 * under names of the module's own ("mig.prepare"), call other nodes ---- */
	int (*handle)(void *ctx, const char *method, env_handler_fn fn, void *opaque);
	int (*handle_stream)(void *ctx, const char *method, env_stream_fn fn, void *opaque);
	/* 0 or -errno (-ENOENT: not a member; -ENOTCONN: channel off) */
	int (*call)(void *ctx, const char *node, const char *method, const void *body,
		    size_t len, unsigned timeout_ms, env_reply_fn cb, void *opaque);
	/* NULL with errno set; dir is enum chan_stream_dir */
	struct chan_stream *(*stream_open)(void *ctx, const char *node, const char *method,
					   const void *hdr, size_t len, int dir, size_t window,
					   unsigned timeout_ms, const struct chan_stream_ops *ops,
					   void *opaque);

	/* ---- membership and quorum ---- */
	bool (*quorate)(void *ctx);
	/* a member of the nodelist, and in the membership now */
	bool (*member)(void *ctx, const char *node);
	bool (*online)(void *ctx, const char *node);
	/* the address @node is reached on (its nodelist entry): 0 or -ENOENT */
	int (*node_addr)(void *ctx, const char *node, char *out, size_t len);

	/* ---- the job an operation reports through (agent/job.h); phase is
	 * hca.JobPhase, code hca.ErrorCode ---- */
	int (*job_phase)(struct job *j, int phase);
	void (*job_progress)(struct job *j, uint64_t done, uint64_t total, const char *unit,
			     const char *detail);
	void (*job_finish)(struct job *j, int code, const char *msg);
	/* the end by a user's cancel (CANCELLED), with the reason */
	void (*job_cancelled)(struct job *j, const char *msg);
	/* a user's cancel request comes to @fn (agent/job.h's job_cancel_fn:
	 * 0, or -errno with a reason in @err); NULL @fn: not cancellable now */
	void (*job_on_cancel)(struct job *j,
			      int (*fn)(struct job *j, void *opaque, char *err, size_t errlen),
			      void *opaque);
	/* a migration's figures (an hca.MigReport, copied), written with the
	 * job's next write */
	void (*job_report)(struct job *j, const void *mig_report);
};

#endif
