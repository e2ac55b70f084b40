/*
 * memb_corosync: membership from corosync. The nodelist (ids, names,
 * addresses) comes from cmap, who is up from totem (CPG's totem confchg),
 * whose hcad runs from our CPG group, and quorum from votequorum. All fds
 * live on the loop; losing corosync gives a disconnected, inquorate view and
 * a reconnect every second until it is back.
 */
#include "agent/memb_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <corosync/cmap.h>
#include <corosync/corotypes.h>
#include <corosync/cpg.h>
#include <corosync/votequorum.h>
#include <qb/qblog.h>

#define GROUP_NAME "hca"
#define RETRY_MS 1000u

struct cs {
	struct memb *m;
	cpg_handle_t cpg;
	votequorum_handle_t vq;
	int cpg_fd, vq_fd;
	bool up;
	qb_loop_timer_handle retry;
	struct memb_view next; /* built up, then published */
};

static struct cs *cs_of(struct memb *m)
{
	return m->drv_data;
}

/* The one translation of corosync's errors. */
static int cs_errno(cs_error_t e)
{
	switch (e) {
	case CS_OK: return 0;
	case CS_ERR_TRY_AGAIN: return -EAGAIN;
	case CS_ERR_NO_MEMORY: return -ENOMEM;
	case CS_ERR_ACCESS: return -EACCES;
	case CS_ERR_NOT_EXIST: return -ENOENT;
	case CS_ERR_LIBRARY: return -ENOTCONN;
	case CS_ERR_BAD_HANDLE: return -EBADF;
	default: return -EIO;
	}
}

static void cs_log(const char *what, cs_error_t e)
{
	qb_log(LOG_WARNING, "corosync: %s: %s", what, cs_strerror(e));
}

static struct memb_node *node_by_id(struct memb_view *v, uint32_t id)
{
	for (uint32_t i = 0; i < v->n; i++)
		if (v->nodes[i].id == id)
			return &v->nodes[i];
	return NULL;
}

static int read_nodelist(struct memb_view *v)
{
	cmap_handle_t h;
	cs_error_t e = cmap_initialize(&h);
	char key[96], *s = NULL;
	uint32_t id;

	if (e != CS_OK)
		return cs_errno(e);
	v->n = 0;
	for (int i = 0; v->n < MEMB_MAX_NODES; i++) {
		struct memb_node *n = &v->nodes[v->n];
		snprintf(key, sizeof(key), "nodelist.node.%d.nodeid", i);
		if (cmap_get_uint32(h, key, &id) != CS_OK)
			break;
		memset(n, 0, sizeof(*n));
		n->id = id;
		snprintf(key, sizeof(key), "nodelist.node.%d.ring0_addr", i);
		if (cmap_get_string(h, key, &s) == CS_OK) {
			snprintf(n->addr, sizeof(n->addr), "%s", s);
			free(s);
		}
		snprintf(key, sizeof(key), "nodelist.node.%d.name", i);
		if (cmap_get_string(h, key, &s) == CS_OK) {
			snprintf(n->name, sizeof(n->name), "%s", s);
			free(s);
		} else {
			memcpy(n->name, n->addr, sizeof(n->name)); /* same size, NUL-terminated */
		}
		v->n++;
	}
	cmap_finalize(h);
	return v->n ? 0 : -ENOENT;
}

static void refresh_votes(struct cs *c)
{
	struct votequorum_info info;

	if (votequorum_getinfo(c->vq, c->next.local_id, &info) != CS_OK)
		return;
	c->next.votes = info.total_votes;
	c->next.expected = info.highest_expected ? info.highest_expected
						 : info.node_expected_votes;
	c->next.quorum = info.quorum;
	c->next.quorate = (info.flags & VOTEQUORUM_INFO_QUORATE) != 0;
}

static void publish(struct cs *c)
{
	refresh_votes(c);
	memb_publish(c->m, &c->next);
}

static void on_quorum(votequorum_handle_t h, uint64_t ctx, uint32_t quorate,
		      uint32_t n, votequorum_node_t list[])
{
	struct cs *c = (struct cs *)(uintptr_t)ctx;

	for (uint32_t i = 0; i < c->next.n; i++)
		c->next.nodes[i].online = false;
	for (uint32_t i = 0; i < n; i++) {
		struct memb_node *node = node_by_id(&c->next, list[i].nodeid);
		if (node)
			node->online = list[i].state == VOTEQUORUM_NODESTATE_MEMBER;
	}
	c->next.quorate = quorate != 0;
	publish(c);
}

static void on_totem(cpg_handle_t h, struct cpg_ring_id ring, uint32_t n,
		     const uint32_t *members)
{
	struct cs *c = NULL;

	cpg_context_get(h, (void **)&c);
	c->next.ring_seq = ring.seq;
	for (uint32_t i = 0; i < c->next.n; i++)
		c->next.nodes[i].online = false;
	for (uint32_t i = 0; i < n; i++) {
		struct memb_node *node = node_by_id(&c->next, members[i]);
		if (node)
			node->online = true;
	}
	publish(c);
}

static void on_confchg(cpg_handle_t h, const struct cpg_name *g,
		       const struct cpg_address *members, size_t n,
		       const struct cpg_address *left, size_t nl,
		       const struct cpg_address *joined, size_t nj)
{
	struct cs *c = NULL;

	cpg_context_get(h, (void **)&c);
	for (uint32_t i = 0; i < c->next.n; i++)
		c->next.nodes[i].agent = false;
	for (size_t i = 0; i < n; i++) {
		struct memb_node *node = node_by_id(&c->next, members[i].nodeid);
		if (node)
			node->agent = true;
	}
	publish(c);
}

static void on_deliver(cpg_handle_t h, const struct cpg_name *g, uint32_t nodeid,
		       uint32_t pid, void *msg, size_t len)
{
	/* The group carries no messages yet; the node channel will. */
}

static void disconnect(struct cs *c);
static void schedule_retry(struct cs *c);

static int on_fd(int fd, int revents, void *data)
{
	struct cs *c = data;
	cs_error_t e = fd == c->cpg_fd ? cpg_dispatch(c->cpg, CS_DISPATCH_ALL)
				       : votequorum_dispatch(c->vq, CS_DISPATCH_ALL);

	if (e != CS_OK && e != CS_ERR_TRY_AGAIN) {
		cs_log("connection lost", e);
		disconnect(c);
		schedule_retry(c);
	}
	return 0;
}

static int connect_all(struct cs *c)
{
	static cpg_model_v1_data_t model = {
		.model = CPG_MODEL_V1,
		.cpg_deliver_fn = on_deliver,
		.cpg_confchg_fn = on_confchg,
		.cpg_totem_confchg_fn = on_totem,
		.flags = CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
	};
	static votequorum_callbacks_t vq_cb = { .votequorum_quorum_notify_fn = on_quorum };
	struct cpg_name group = { .length = sizeof(GROUP_NAME) - 1, .value = GROUP_NAME };
	unsigned int local = 0;
	cs_error_t e;
	int rc;

	memset(&c->next, 0, sizeof(c->next));
	if ((rc = read_nodelist(&c->next)) < 0)
		return rc;
	if ((e = votequorum_initialize(&c->vq, &vq_cb)) != CS_OK)
		return cs_errno(e);
	if ((e = votequorum_trackstart(c->vq, (uint64_t)(uintptr_t)c,
				       CS_TRACK_CHANGES | CS_TRACK_CURRENT)) != CS_OK ||
	    (e = cpg_model_initialize(&c->cpg, CPG_MODEL_V1, (cpg_model_data_t *)&model, c)) != CS_OK ||
	    (e = cpg_local_get(c->cpg, &local)) != CS_OK ||
	    (e = cpg_join(c->cpg, &group)) != CS_OK ||
	    (e = cpg_fd_get(c->cpg, &c->cpg_fd)) != CS_OK ||
	    (e = votequorum_fd_get(c->vq, &c->vq_fd)) != CS_OK)
		return cs_errno(e);
	c->next.local_id = local;
	c->next.connected = true;
	qb_loop_poll_add(c->m->loop, QB_LOOP_HIGH, c->cpg_fd, POLLIN, c, on_fd);
	qb_loop_poll_add(c->m->loop, QB_LOOP_HIGH, c->vq_fd, POLLIN, c, on_fd);
	c->up = true;
	qb_log(LOG_NOTICE, "corosync: connected as node id %u, %u nodes in the nodelist",
	       local, c->next.n);
	publish(c);
	return 0;
}

static void disconnect(struct cs *c)
{
	if (c->up) {
		qb_loop_poll_del(c->m->loop, c->cpg_fd);
		qb_loop_poll_del(c->m->loop, c->vq_fd);
	}
	if (c->cpg) {
		cpg_finalize(c->cpg);
		c->cpg = 0;
	}
	if (c->vq) {
		votequorum_finalize(c->vq);
		c->vq = 0;
	}
	c->up = false;
	c->next.connected = false;
	c->next.quorate = false;
	for (uint32_t i = 0; i < c->next.n; i++)
		c->next.nodes[i].online = c->next.nodes[i].agent = false;
	memb_publish(c->m, &c->next);
}

static void retry(void *data)
{
	struct cs *c = data;
	int rc;

	c->retry = 0;
	rc = connect_all(c);
	if (rc < 0) {
		disconnect(c);
		schedule_retry(c);
	}
}

static void schedule_retry(struct cs *c)
{
	if (!c->retry)
		qb_loop_timer_add(c->m->loop, QB_LOOP_LOW, RETRY_MS * QB_TIME_NS_IN_MSEC, c,
				  retry, &c->retry);
}

static int cs_start(struct memb *m, char *err, size_t errlen)
{
	struct cs *c = calloc(1, sizeof(*c));
	int rc;

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	c->m = m;
	m->drv_data = c;
	rc = connect_all(c);
	if (rc < 0) {
		qb_log(LOG_WARNING, "corosync: not reachable (%s); retrying every %u ms",
		       strerror(-rc), RETRY_MS);
		disconnect(c);
		schedule_retry(c);
	}
	return 0;
}

static void cs_stop(struct memb *m)
{
	struct cs *c = cs_of(m);

	if (!c)
		return;
	if (c->retry)
		qb_loop_timer_del(m->loop, c->retry);
	m->ops = NULL; /* no callbacks into an owner going away */
	disconnect(c);
	free(c);
	m->drv_data = NULL;
}

const struct memb_driver memb_driver_corosync = {
	.name = "corosync",
	.start = cs_start,
	.stop = cs_stop,
};
