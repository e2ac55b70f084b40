/*
 * rep_stream: one replication cycle carried to the replica node's agent
 * over the node channel, as a stream of rep_wire frames. The engine
 * (rep_src.c, rep_dst.c) reads and writes the disks; this moves the bytes.
 *
 * Sender (rep_tx), on the source node:
 *
 *   rep_tx_open(cycle) -> rep_tx_extent() / rep_tx_zero() ... -> rep_tx_finish()
 *   -> done(0) once the replica has checked the digest and stored the cycle
 *      (its sink answered), or done(-errno, msg) at the first failure.
 *
 *   Extents are pushed in the order they must arrive; each is encoded (zero
 *   detection, zstd, CRC32C) on the executor queue given to rep_ctx_new(),
 *   several at once, and written to the channel in push order as the
 *   channel's credit allows. zstd is skipped while the workers are behind
 *   the channel, so compression never slows a cycle down, and tried on only
 *   some small extents after a run of them it could not shrink. Memory is
 *   bounded: once max_inflight bytes were pushed and not yet written, a
 *   push returns -EAGAIN and more() says when to go on.
 *
 * Receiver (rep_recv), on the replica node: registered once under
 * REP_STREAM_METHOD; per cycle a struct rep_rx calls the sink:
 *
 *   open(cycle) -> frame()... (each answered by rep_rx_frame_done())
 *   -> end(totals) once every frame was done and the digest matched
 *   -> the sink makes the cycle durable, then rep_rx_ack(0 or -errno): that
 *      answer is what the sender's done() gets.
 *   fail(err) instead, at any point before rep_rx_ack(): a frame refused
 *   (bounds, sequence, checksum: rep_wire.h), the sink's own error, the
 *   sender's abort, a lost connection. The sender's done() gets the same
 *   error and message when it can still be told.
 *
 *   Frames are decoded on the loop and decompressed and checked on the
 *   executor's workers, then handed to the sink in order. Memory is bounded
 *   by the channel's credit: a frame's bytes are granted back to the sender
 *   only once the sink is done with it, so at most `window` stream bytes
 *   are held, plus decoded extents' buffers up to another `window` (and
 *   one frame) and at most `max_frames` frames.
 *
 * Errors are 0 / -errno with one line for people; rep_wire.h lists what a
 * refused frame gives. Everything here runs on the loop thread of the
 * struct hca_env, and every callback comes from the loop, never from inside
 * the call that caused it except where said.
 */
#ifndef HCA_REP_STREAM_H
#define HCA_REP_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/env.h"
#include "base/exec.h"
#include "replica/rep_wire.h"

#define REP_STREAM_METHOD "rep.cycle"
/*
 * Defaults, measured with tests/tools/rep_bench: in-flight bytes beyond a
 * few MiB only cost cache (at 8/16 MiB the stream ran ~10% slower than at
 * 4/8 over loopback), and 4 MiB still covers a 10 Gb/s link's 3 ms of
 * round trip; a long, fat link wants a bigger window (rep_recv_cfg).
 */
#define REP_TX_INFLIGHT (8u << 20)	/* default max_inflight */
#define REP_RX_WINDOW (4u << 20)	/* default window */
#define REP_RX_WINDOW_MIN (2u * (REP_FRAME_MAX + REP_PREFIX_LEN))
#define REP_RX_FRAMES 1024u		/* default max_frames */

/* ---- what the cycles of a node share ---- */

struct rep_ctx;

/*
 * Codec resources for every cycle of this node: buffers and zstd contexts
 * kept between cycles, and @q (borrowed: it outlives every cycle), the
 * executor queue the encoding and decoding run on (its threads are the
 * parallelism; 2 is plenty for one 10 Gb/s stream). NULL with errno set.
 */
struct rep_ctx *rep_ctx_new(struct exec_queue *q);

/* Drop the creator's hold; freed once no cycle uses it. NULL is a no-op. */
void rep_ctx_free(struct rep_ctx *x);

/* ---- sender ---- */

struct rep_tx;

/* What a cycle shipped. zero_bytes counts the zero ranges pushed and the
 * pushed extents that were all zeros (sent as ranges). */
struct rep_tx_stats {
	uint64_t extents, zeros, zstd; /* frames; zstd: extents sent compressed */
	uint64_t hurried;	       /* extents not tried with zstd: the workers were
					* behind the channel (rep_tx.c) */
	uint64_t raw_bytes;	       /* raw bytes of the extents sent */
	uint64_t zero_bytes;
	uint64_t wire_bytes;	       /* stream bytes written, prefixes included */
};

struct rep_tx_ops {
	/* Room again after a push returned -EAGAIN (NULL: the caller polls). */
	void (*more)(struct rep_tx *tx, void *opaque);
	/*
	 * Once: 0 when the replica answered the end with success; else the
	 * first failure: -EILSEQ / -EBADMSG / -ERANGE / ... (the replica
	 * refused a frame or the digest), the replica's sink's own error,
	 * -ETIMEDOUT (no connection in open_timeout_ms; no answer in
	 * answer_timeout_ms after the end), -ECONNRESET, -ECANCELED. @msg one
	 * line, @s the totals so far (both borrowed for the call). @tx is gone
	 * when this returns; no callback follows.
	 */
	void (*done)(struct rep_tx *tx, int err, const char *msg, const struct rep_tx_stats *s,
		     void *opaque);
	/* An extent buffer pushed is no longer needed; NULL: free(). */
	void (*release)(void *buf, void *opaque);
};

/* Zero fields take the default given; the struct is copied. */
struct rep_tx_cfg {
	size_t max_inflight;	    /* REP_TX_INFLIGHT: raw bytes pushed, not yet written */
	unsigned open_timeout_ms;   /* 10000: to reach the node */
	unsigned answer_timeout_ms; /* 120000: from the end frame to the replica's answer */
};

/*
 * Open the stream of cycle @c (copied) to @node on @env's channel, with
 * codec resources @x (borrowed). @cfg may be NULL. @ops must give done;
 * @ops and @opaque are kept. Returns the handle, or NULL with errno set:
 * EINVAL (a bad cycle: rep_cycle_check(), logged), ENOMEM, or the
 * channel's (ENOENT: not a member; ENOTCONN). Loop thread.
 */
struct rep_tx *rep_tx_open(const struct hca_env *env, struct rep_ctx *x, const char *node,
			   const struct rep_cycle *c, const struct rep_tx_cfg *cfg,
			   const struct rep_tx_ops *ops, void *opaque);

/*
 * Push @len (1 to REP_EXTENT_MAX) bytes of @buf, the contents of disk
 * @disk at @off. On 0 the stream owns @buf, never writes to it, and gives
 * it to release() once sent; otherwise it stays the caller's.
 * 0; -EAGAIN (max_inflight reached: more() follows); -EINVAL (length, NULL
 * @buf); -ERANGE (not on the cycle's disk); -EPIPE (finished or ended);
 * -ENOMEM.
 */
int rep_tx_extent(struct rep_tx *tx, uint32_t disk, uint64_t off, void *buf, size_t len);

/* Push a range of @len (> 0) bytes at @off of disk @disk that reads as
 * zeros. Returns as rep_tx_extent(). */
int rep_tx_zero(struct rep_tx *tx, uint32_t disk, uint64_t off, uint64_t len);

/* No more pushes: the end frame follows the last one. 0 or -EPIPE. */
int rep_tx_finish(struct rep_tx *tx);

/* The totals so far (borrowed, valid while @tx is). */
const struct rep_tx_stats *rep_tx_stats(const struct rep_tx *tx);

/*
 * End the cycle now with @err (negative) and a message for the replica,
 * whose sink gets fail(). No done() follows; the handle is gone (buffers
 * pushed are released once the workers let go of them).
 */
void rep_tx_abort(struct rep_tx *tx, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- receiver ---- */

struct rep_recv;
struct rep_rx;
struct rep_rx_frame;

struct rep_sink_ops {
	/*
	 * A node opened cycle @c (borrowed for the call; rep_rx_cycle() keeps
	 * it) from node rep_rx_peer(@rx). Return 0 to take it, with *@cycle
	 * the pointer the other callbacks get; or a negative errno and a line
	 * in @e to refuse it (the sender's done() gets them).
	 */
	int (*open)(struct rep_rx *rx, const struct rep_cycle *c, void *opaque, void **cycle,
		    struct rep_err *e);
	/*
	 * The next frame, in order: an extent (@f->data: @f->length raw bytes,
	 * checked against their CRC) or a zero range. @f and its bytes are
	 * borrowed until rep_rx_frame_done(@fr), which must be called exactly
	 * once, here or later (frames may be completed in any order; ranges of
	 * one cycle may overlap only if the source pushed them so, and then
	 * must be applied in order).
	 */
	void (*frame)(struct rep_rx *rx, struct rep_rx_frame *fr, const struct rep_frame *f,
		      void *cycle);
	/* Every frame was done and the totals and digest matched: make the
	 * cycle durable, then rep_rx_ack(), here or later. */
	void (*end)(struct rep_rx *rx, const struct rep_end *e, void *cycle);
	/*
	 * The cycle is lost (before rep_rx_ack()): @err and @msg (borrowed)
	 * say why. Frames still held must still be completed, and end(), if it
	 * came, still answered; no other callback follows.
	 */
	void (*fail)(struct rep_rx *rx, int err, const char *msg, void *cycle);
};

/* Zero fields take the default given; the struct is copied. */
struct rep_recv_cfg {
	size_t window;	     /* REP_RX_WINDOW, at least REP_RX_WINDOW_MIN: bytes the
			      * sender may have in flight, the receiver's bound */
	unsigned max_frames; /* REP_RX_FRAMES: decoded and not yet done by the sink */
};

/*
 * Take cycles: registers REP_STREAM_METHOD with @env->handle_stream, with
 * codec resources @x (borrowed). @cfg may be NULL; @ops (all four) and
 * @opaque are kept. NULL with errno set (EINVAL, ENOMEM, EEXIST: already
 * registered, the registry's errors).
 */
struct rep_recv *rep_recv_new(const struct hca_env *env, struct rep_ctx *x,
			      const struct rep_recv_cfg *cfg, const struct rep_sink_ops *ops,
			      void *opaque);

/*
 * Fail every cycle in progress with -ESHUTDOWN (their sinks' fail()) and
 * free @r once they are gone. The registry has no way to withdraw a
 * method: free the channel first, or make sure no stream can arrive.
 * NULL is a no-op.
 */
void rep_recv_free(struct rep_recv *r);

/*
 * The sink is done with frame @fr (written, or not needed): 0, or a
 * negative errno (a write failed, the replica's storage is full) which
 * fails the cycle. Its credit goes back to the sender.
 */
void rep_rx_frame_done(struct rep_rx_frame *fr, int err);

/* The same, failing the cycle with @err (< 0) and a line for the sender
 * that says why (the store could not even begin it, say). */
void rep_rx_frame_fail(struct rep_rx_frame *fr, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Answer end(): 0 (the cycle is stored: the sender's done(0); the line is
 * only logged) or a negative errno and a line for the sender. Exactly once
 * per end(), also after a fail().
 */
void rep_rx_ack(struct rep_rx *rx, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The cycle (borrowed from @rx) and the sending node's name. */
const struct rep_cycle *rep_rx_cycle(const struct rep_rx *rx);
const char *rep_rx_peer(const struct rep_rx *rx);

#endif /* HCA_REP_STREAM_H */
