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
#include "proto/chan.h"

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

/*
 * The registry: a module that owns a call or a stream registers it here,
 * at start, under a name of its own ("api", later "mig.prepare",
 * "rep.cycle"); peers.c never learns what they mean. Returns as
 * chan_handle(): 0, -EEXIST, -EINVAL, -ENOMEM.
 */
int peers_handle(struct peers *p, const char *method, chan_handler_fn fn, void *opaque);
int peers_handle_stream(struct peers *p, const char *method, chan_stream_fn fn, void *opaque);

/*
 * Call @method on @node's hcad (see chan_call: @cb exactly once, within
 * @timeout_ms). Returns 0; -ENOENT if @node is not a member (@err says so;
 * @cb not called); chan_call's errors otherwise.
 */
int peers_call(struct peers *p, const char *node, const char *method, const void *body,
	       size_t len, unsigned timeout_ms, chan_reply_fn cb, void *opaque, char *err,
	       size_t errlen);

/* Open a stream of @method to @node (see chan_stream_open); NULL with errno
 * set (ENOENT: not a member) and @err. */
struct chan_stream *peers_stream_open(struct peers *p, const char *node, const char *method,
				      const void *hdr, size_t len, enum chan_stream_dir dir,
				      size_t window, unsigned timeout_ms,
				      const struct chan_stream_ops *ops, void *opaque, char *err,
				      size_t errlen);

#endif
