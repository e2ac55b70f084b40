/*
 * env: hcad's struct hca_env (base/env.h), the one interface handed to
 * migration/ and replica/ at construction: adapters from its function
 * pointers to peers, membership and jobs.
 */
#include "agent/env.h"
#include "agent/job.h"
#include "proto/chan.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <qb/qblog.h>

static int env_handle(void *ctx, const char *method, env_handler_fn fn, void *opaque)
{
	struct env_src *s = ctx;

	return s->peers ? peers_handle(s->peers, method, fn, opaque) : -ENOTCONN;
}

static int env_handle_stream(void *ctx, const char *method, env_stream_fn fn, void *opaque)
{
	struct env_src *s = ctx;

	return s->peers ? peers_handle_stream(s->peers, method, fn, opaque) : -ENOTCONN;
}

static int env_call(void *ctx, const char *node, const char *method, const void *body,
		    size_t len, unsigned timeout_ms, env_reply_fn cb, void *opaque)
{
	struct env_src *s = ctx;
	char err[256];
	int rc;

	if (!s->peers)
		return -ENOTCONN;
	rc = peers_call(s->peers, node, method, body, len, timeout_ms, cb, opaque, err,
			sizeof(err));
	if (rc < 0)
		qb_log(LOG_WARNING, "%s", err);
	return rc;
}

static struct chan_stream *env_stream_open(void *ctx, const char *node, const char *method,
					   const void *hdr, size_t len, int dir, size_t window,
					   unsigned timeout_ms, const struct chan_stream_ops *ops,
					   void *opaque)
{
	struct env_src *s = ctx;
	char err[256];
	struct chan_stream *st;

	if (!s->peers) {
		errno = ENOTCONN;
		return NULL;
	}
	st = peers_stream_open(s->peers, node, method, hdr, len, (enum chan_stream_dir)dir, window,
			       timeout_ms, ops, opaque, err, sizeof(err));
	if (!st)
		qb_log(LOG_WARNING, "%s", err);
	return st;
}

static bool env_quorate(void *ctx)
{
	struct env_src *s = ctx;

	return memb_view(s->memb)->quorate;
}

static bool env_member(void *ctx, const char *node)
{
	struct env_src *s = ctx;

	return memb_find(memb_view(s->memb), node) != NULL;
}

static bool env_online(void *ctx, const char *node)
{
	struct env_src *s = ctx;
	const struct memb_node *n = memb_find(memb_view(s->memb), node);

	return n && n->online;
}

static int env_node_addr(void *ctx, const char *node, char *out, size_t len)
{
	struct env_src *s = ctx;
	const struct memb_node *n = memb_find(memb_view(s->memb), node);

	if (!n || !n->addr[0])
		return -ENOENT;
	snprintf(out, len, "%s", n->addr);
	return 0;
}

static void env_job_cancelled(struct job *j, const char *msg)
{
	job_cancelled(j, "%s", msg);
}

static void env_job_report(struct job *j, const void *r)
{
	job_set_migration(j, r);
}

static int env_job_phase(struct job *j, int phase)
{
	return job_phase(j, (Hca__JobPhase)phase);
}

static void env_job_finish(struct job *j, int code, const char *msg)
{
	job_finish(j, (Hca__ErrorCode)code, "%s", msg);
}

void env_fill(struct hca_env *env, struct env_src *src)
{
	*env = (struct hca_env){
		.loop = src->loop,
		.store = src->store,
		.exec = src->exec,
		.node = src->node,
		.ctx = src,
		.handle = env_handle,
		.handle_stream = env_handle_stream,
		.call = env_call,
		.stream_open = env_stream_open,
		.quorate = env_quorate,
		.member = env_member,
		.online = env_online,
		.node_addr = env_node_addr,
		.job_phase = env_job_phase,
		.job_progress = job_progress,
		.job_finish = env_job_finish,
		.job_cancelled = env_job_cancelled,
		.job_on_cancel = job_set_cancel,
		.job_report = env_job_report,
	};
}
