/* memb: driver selection and the one place where a new view is installed. */
#include "agent/memb_priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

static const struct memb_driver *const drivers[] = {
	&memb_driver_local,
	&memb_driver_corosync,
};

static void log_change(const struct memb_view *o, const struct memb_view *n)
{
	char d[128];

	memb_describe(n, d, sizeof(d));
	if (o->connected != n->connected || o->quorate != n->quorate || o->n != n->n ||
	    o->ring_seq != n->ring_seq)
		qb_log(LOG_NOTICE, "membership: %s", d);
	for (uint32_t i = 0; i < n->n; i++) {
		const struct memb_node *was = memb_find(o, n->nodes[i].name);
		if (!was || was->online != n->nodes[i].online)
			qb_log(LOG_NOTICE, "membership: node %s (id %u) %s", n->nodes[i].name,
			       n->nodes[i].id, n->nodes[i].online ? "joined" : "left");
	}
}

void memb_publish(struct memb *m, const struct memb_view *next)
{
	struct memb_view old = m->view;

	if (!memcmp(&old, next, sizeof(old)))
		return;
	if (m->ops && m->ops->stop)
		m->ops->stop(&old, m->opaque);
	m->view = *next;
	log_change(&old, next);
	if (m->ops && m->ops->resync)
		m->ops->resync(&m->view, m->opaque);
	if (m->ops && m->ops->resume)
		m->ops->resume(&m->view, m->opaque);
}

struct memb *memb_new(qb_loop_t *loop, const char *driver, const char *local_name,
		      const struct memb_ops *ops, void *opaque, char *err, size_t errlen)
{
	struct memb *m = calloc(1, sizeof(*m));

	if (!m) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++)
		if (!strcmp(drivers[i]->name, driver))
			m->drv = drivers[i];
	if (!m->drv) {
		snprintf(err, errlen, "unknown cluster driver '%s' (local, corosync)", driver);
		free(m);
		return NULL;
	}
	m->loop = loop;
	m->ops = ops;
	m->opaque = opaque;
	snprintf(m->local_name, sizeof(m->local_name), "%s", local_name);
	if (m->drv->start(m, err, errlen) < 0) {
		free(m);
		return NULL;
	}
	return m;
}

void memb_free(struct memb *m)
{
	if (!m)
		return;
	m->drv->stop(m);
	free(m);
}

const struct memb_view *memb_view(const struct memb *m)
{
	return &m->view;
}

const struct memb_node *memb_find(const struct memb_view *v, const char *name)
{
	for (uint32_t i = 0; i < v->n; i++)
		if (!strcmp(v->nodes[i].name, name))
			return &v->nodes[i];
	return NULL;
}

const struct memb_node *memb_local(const struct memb_view *v)
{
	for (uint32_t i = 0; i < v->n; i++)
		if (v->nodes[i].id == v->local_id)
			return &v->nodes[i];
	return NULL;
}

void memb_describe(const struct memb_view *v, char *buf, size_t len)
{
	uint32_t online = 0;

	for (uint32_t i = 0; i < v->n; i++)
		online += v->nodes[i].online;
	if (!v->connected)
		snprintf(buf, len, "cluster membership unavailable (corosync not reachable)");
	else if (!v->quorate)
		snprintf(buf, len, "cluster not quorate: %u of %u votes (%u needed)", v->votes,
			 v->expected, v->quorum);
	else
		snprintf(buf, len, "quorate: %u of %u votes, %u of %u nodes online", v->votes,
			 v->expected, online, v->n);
}

/* ---- the local driver: a standalone node ---- */

static int local_start(struct memb *m, char *err, size_t errlen)
{
	struct memb_view v = { .connected = true, .quorate = true, .local_id = 1,
			       .votes = 1, .expected = 1, .quorum = 1, .n = 1 };

	v.nodes[0] = (struct memb_node){ .id = 1, .online = true, .agent = true };
	snprintf(v.nodes[0].name, sizeof(v.nodes[0].name), "%s", m->local_name);
	snprintf(v.nodes[0].addr, sizeof(v.nodes[0].addr), "local");
	memb_publish(m, &v);
	return 0;
}

static void local_stop(struct memb *m)
{
}

const struct memb_driver memb_driver_local = {
	.name = "local",
	.start = local_start,
	.stop = local_stop,
};
