/*
 * peers: this hcad on the node-to-node channel (proto/chan.h). A mutual-TLS
 * server whose clients must be members of the cluster, and one lazily
 * connected peer per other node, addressed from the membership's nodelist.
 */
#ifndef HCA_PEERS_H
#define HCA_PEERS_H

#include <stddef.h>
#include <stdint.h>

#include <qb/qbloop.h>

#include "agent/conf.h"
#include "agent/memb.h"

struct peers;

/*
 * Load this node's identity from conf->pki_dir (ca.crt, NODE/node.crt,
 * NODE/node.key) and listen on conf->chan_listen:conf->chan_port. @memb
 * (borrowed) decides who may connect. Returns NULL with @err set.
 */
struct peers *peers_new(qb_loop_t *loop, const struct conf *conf, struct memb *memb,
			char *err, size_t errlen);
void peers_free(struct peers *p);

/* Load the certificate files again (rotation); new connections use them. */
int peers_reload(struct peers *p, char *err, size_t errlen);

/*
 * Round trip to @node's hcad. @done gets 0 with the round-trip time and the
 * name the peer's certificate proved, or -errno with one line.
 */
typedef void (*peers_ping_fn)(int err, const char *msg, const char *node, uint64_t rtt_us,
			      void *opaque);
int peers_ping(struct peers *p, const char *node, peers_ping_fn done, void *opaque);

#endif
