/*
 * memb: who is in the cluster and whether we have quorum.
 *
 * Drivers sit behind an ops table (memb_priv.h): "corosync" (CPG group of
 * the hcads, totem membership, votequorum, the nodelist from cmap) and
 * "local" (a standalone node: one member, always quorate). On every change
 * the owner's three callbacks run in this order, from one place: stop (quit
 * acting on the old view), resync (rebuild what depends on membership),
 * resume (act again) — corosync's sync discipline in small.
 */
#ifndef HCA_MEMB_H
#define HCA_MEMB_H

#include <stdbool.h>
#include <stdint.h>

#include <qb/qbloop.h>

#define MEMB_MAX_NODES 64

struct memb_node {
	uint32_t id;
	char name[64];
	char addr[64];
	bool online;     /* in the corosync (totem) membership */
	bool agent;      /* its hcad is in our CPG group */
};

struct memb_view {
	bool connected;  /* the driver reaches its membership service */
	bool quorate;
	uint32_t local_id;
	uint32_t votes;  /* total votes present */
	uint32_t expected;
	uint32_t quorum; /* votes needed */
	uint64_t ring_seq;
	uint32_t n;
	struct memb_node nodes[MEMB_MAX_NODES];
};

struct memb_ops {
	void (*stop)(const struct memb_view *old, void *opaque);
	void (*resync)(const struct memb_view *now, void *opaque);
	void (*resume)(const struct memb_view *now, void *opaque);
};

struct memb;

/*
 * @driver: "corosync" or "local". @local_name: this node's name (the local
 * driver's only member; corosync names come from its nodelist). @ops
 * borrowed. Returns NULL with @err set. The corosync driver starts even when
 * corosync is not running yet: it reports disconnected and keeps retrying.
 */
struct memb *memb_new(qb_loop_t *loop, const char *driver, const char *local_name,
		      const struct memb_ops *ops, void *opaque, char *err, size_t errlen);
void memb_free(struct memb *m);

/* The current view, owned by @m, valid until the next change. */
const struct memb_view *memb_view(const struct memb *m);

/* The member named @name, or NULL. */
const struct memb_node *memb_find(const struct memb_view *v, const char *name);
const struct memb_node *memb_local(const struct memb_view *v);

/* "cluster not quorate: 1 of 3 votes" and the like, for refusals. */
void memb_describe(const struct memb_view *v, char *buf, size_t len);

#endif
