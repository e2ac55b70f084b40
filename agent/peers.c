/*
 * peers: hcad's end of the node-to-node channel. Who may connect is decided
 * by the membership at handshake time: a certificate from the cluster CA is
 * not enough, its name must be in the nodelist. Peers are made on first
 * use from the nodelist's addresses and kept (one connection per node).
 */
#include "agent/peers.h"
#include "proto/chan.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <qb/qblog.h>

#define PING_TIMEOUT_MS 5000u

struct peer {
	char name[64];
	struct chan_peer *chan;
};

struct peers {
	qb_loop_t *loop;
	const struct conf *conf;
	struct memb *memb;
	struct chan_tls *tls;
	struct chan_server *srv;
	struct peer peers[MEMB_MAX_NODES];
	size_t n;
	char ca[320], cert[320], key[320];
};

static bool authorize(const char *name, void *opaque)
{
	struct peers *p = opaque;
	bool ok = memb_find(memb_view(p->memb), name) != NULL;

	if (!ok)
		qb_log(LOG_WARNING, "channel: refused '%s': not a member of the cluster", name);
	return ok;
}

static void on_ping(struct chan_reply *r, const void *body, size_t len, void *opaque)
{
	struct peers *p = opaque;

	chan_reply_ok(r, p->conf->node_name, strlen(p->conf->node_name));
}

static struct chan_tls_cfg tls_cfg(struct peers *p)
{
	snprintf(p->ca, sizeof(p->ca), "%s/ca.crt", p->conf->pki_dir);
	snprintf(p->cert, sizeof(p->cert), "%s/%s/node.crt", p->conf->pki_dir, p->conf->node_name);
	snprintf(p->key, sizeof(p->key), "%s/%s/node.key", p->conf->pki_dir, p->conf->node_name);
	return (struct chan_tls_cfg){ p->ca, p->cert, p->key };
}

struct peers *peers_new(qb_loop_t *loop, const struct conf *conf, struct memb *memb,
			char *err, size_t errlen)
{
	struct peers *p = calloc(1, sizeof(*p));
	struct chan_tls_cfg cfg;
	int rc;

	if (!p) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	p->loop = loop;
	p->conf = conf;
	p->memb = memb;
	cfg = tls_cfg(p);
	p->tls = chan_tls_new(&cfg, authorize, p);
	if (!p->tls) {
		snprintf(err, errlen, "channel: cannot load this node's identity (%s, %s, %s): %s",
			 p->ca, p->cert, p->key, strerror(errno));
		goto fail;
	}
	p->srv = chan_server_new(loop, p->tls, NULL);
	if (!p->srv || chan_handle(p->srv, "ping", on_ping, p) < 0) {
		snprintf(err, errlen, "channel: out of memory");
		goto fail;
	}
	rc = chan_server_listen(p->srv, conf->chan_listen, (uint16_t)conf->chan_port);
	if (rc < 0) {
		snprintf(err, errlen, "channel: cannot listen on %s port %u: %s", conf->chan_listen,
			 (unsigned)conf->chan_port, strerror(-rc));
		goto fail;
	}
	qb_log(LOG_NOTICE, "channel: listening on %s port %u (mutual TLS, cluster CA %s)",
	       conf->chan_listen, (unsigned)conf->chan_port, p->ca);
	return p;
fail:
	peers_free(p);
	return NULL;
}

void peers_free(struct peers *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n; i++)
		chan_peer_free(p->peers[i].chan);
	chan_server_free(p->srv);
	chan_tls_free(p->tls);
	free(p);
}

int peers_reload(struct peers *p, char *err, size_t errlen)
{
	struct chan_tls_cfg cfg = tls_cfg(p);
	int rc = chan_tls_reload(p->tls, &cfg);

	if (rc < 0)
		snprintf(err, errlen, "channel: certificates not reloaded: %s", strerror(-rc));
	return rc;
}

/* The channel peer for @node, made on first use from the nodelist. */
static struct chan_peer *peer_get(struct peers *p, const char *node, char *err, size_t errlen)
{
	const struct memb_node *m = memb_find(memb_view(p->memb), node);

	for (size_t i = 0; i < p->n; i++)
		if (!strcmp(p->peers[i].name, node))
			return p->peers[i].chan;
	if (!m) {
		snprintf(err, errlen, "node %s is not a member of this cluster", node);
		return NULL;
	}
	if (p->n == MEMB_MAX_NODES) {
		snprintf(err, errlen, "too many peers");
		return NULL;
	}
	p->peers[p->n].chan = chan_peer_new(p->loop, p->tls, node, m->addr,
					    (uint16_t)p->conf->chan_port, NULL);
	if (!p->peers[p->n].chan) {
		snprintf(err, errlen, "node %s: cannot reach address '%s': %s", node, m->addr,
			 strerror(errno));
		return NULL;
	}
	snprintf(p->peers[p->n].name, sizeof(p->peers[0].name), "%s", node);
	return p->peers[p->n++].chan;
}

struct ping {
	peers_ping_fn done;
	void *opaque;
	struct timespec t0;
	char node[64];
};

static void on_pong(int err, const void *body, size_t len, const char *msg, void *opaque)
{
	struct ping *pg = opaque;
	struct timespec t1;
	char name[64] = "";
	uint64_t rtt;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	rtt = (uint64_t)(t1.tv_sec - pg->t0.tv_sec) * 1000000u +
	      (uint64_t)((t1.tv_nsec - pg->t0.tv_nsec) / 1000);
	if (!err)
		snprintf(name, sizeof(name), "%.*s", (int)(len < 63 ? len : 63), (const char *)body);
	pg->done(err, err ? msg : "", err ? pg->node : name, rtt, pg->opaque);
	free(pg);
}

int peers_ping(struct peers *p, const char *node, peers_ping_fn done, void *opaque)
{
	char err[256];
	struct chan_peer *cp = peer_get(p, node, err, sizeof(err));
	struct ping *pg;
	int rc;

	if (!cp) {
		done(-ENOENT, err, node, 0, opaque);
		return 0;
	}
	pg = calloc(1, sizeof(*pg));
	if (!pg)
		return -ENOMEM;
	pg->done = done;
	pg->opaque = opaque;
	snprintf(pg->node, sizeof(pg->node), "%s", node);
	clock_gettime(CLOCK_MONOTONIC, &pg->t0);
	rc = chan_call(cp, "ping", "", 0, PING_TIMEOUT_MS, on_pong, pg);
	if (rc < 0)
		free(pg);
	return rc;
}

/* ---- the registry ---- */

int peers_handle(struct peers *p, const char *method, chan_handler_fn fn, void *opaque)
{
	return chan_handle(p->srv, method, fn, opaque);
}

int peers_handle_stream(struct peers *p, const char *method, chan_stream_fn fn, void *opaque)
{
	return chan_handle_stream(p->srv, method, fn, opaque);
}

int peers_call(struct peers *p, const char *node, const char *method, const void *body,
	       size_t len, unsigned timeout_ms, chan_reply_fn cb, void *opaque, char *err,
	       size_t errlen)
{
	struct chan_peer *cp = peer_get(p, node, err, errlen);
	int rc;

	if (!cp)
		return -ENOENT;
	rc = chan_call(cp, method, body, len, timeout_ms, cb, opaque);
	if (rc < 0)
		snprintf(err, errlen, "node %s: cannot call %s: %s", node, method, strerror(-rc));
	return rc;
}

struct chan_stream *peers_stream_open(struct peers *p, const char *node, const char *method,
				      const void *hdr, size_t len, enum chan_stream_dir dir,
				      size_t window, unsigned timeout_ms,
				      const struct chan_stream_ops *ops, void *opaque, char *err,
				      size_t errlen)
{
	struct chan_peer *cp = peer_get(p, node, err, errlen);
	struct chan_stream *st;

	if (!cp) {
		errno = ENOENT;
		return NULL;
	}
	st = chan_stream_open(cp, method, hdr, len, dir, window, timeout_ms, ops, opaque);
	if (!st)
		snprintf(err, errlen, "node %s: cannot open stream %s: %s", node, method,
			 strerror(errno));
	return st;
}
