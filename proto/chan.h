/*
 * chan: the node-to-node channel. Mutual TLS 1.3 between agents, request /
 * reply calls and flow-controlled bulk streams, all on the caller's qb_loop
 * (non-blocking sockets and OpenSSL, no threads).
 *
 * Every message is one hca.ChanMsg (proto/hca.proto) in a wire frame of type
 * WIRE_T_CHAN (proto/wire.h); a frame longer than the configured limit, a
 * corrupt frame or an unknown message kind ends the connection, with the
 * reason and the peer's address and name in the log.
 *
 * Roles: a chan_server accepts connections and dispatches methods to
 * handlers; a chan_peer is the client side for one remote node and keeps one
 * connection to it, made on demand and remade with exponential backoff.
 * Only the client calls methods and opens streams; a node that wants both
 * directions runs a server and a peer per remote node.
 *
 * Identity: a node's name is the single DNS subjectAltName of its
 * certificate. A connection is accepted only if the other side's certificate
 * chains to the cluster CA, is within its validity period, and its name is
 * accepted by the authorize callback; a client also requires the server's
 * name to be the node it meant to reach. Session resumption is off, so every
 * connection is checked against the current membership.
 *
 * Callbacks run on the loop, never from inside the public call that caused
 * them (except the cancellations chan_peer_free() / chan_server_free() report).
 * A callback may call any function here, including the *_free() ones.
 *
 * Errors are 0 / -errno. Remote errors travel as an errno value and a
 * one-line message and come back as the same -errno.
 *
 * Everything belongs to the loop's thread: no locking, no threads. Writes
 * use MSG_NOSIGNAL, so a vanished peer never raises SIGPIPE.
 */
#ifndef HCA_CHAN_H
#define HCA_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <qb/qbloop.h>

/* Defaults of struct chan_cfg. */
#define CHAN_MAX_FRAME (4u << 20)	/* payload bytes of one frame */
#define CHAN_CHUNK_MAX (256u << 10)	/* stream bytes per data frame */
#define CHAN_NAME_MAX 253		/* a DNS name */

/*
 * CRC32C (Castagnoli) of @len bytes of @buf: the frame checksum, computed
 * with the SSE4.2 instruction where the CPU has it (GB/s, where
 * wire_crc32c()'s table runs at ~370 MB/s); the same value as
 * wire_crc32c(). Any thread. The replica stream's digest uses it too.
 */
uint32_t chan_crc32c(const void *buf, size_t len);

struct chan_tls;
struct chan_server;
struct chan_peer;
struct chan_reply;
struct chan_stream;

/* ---- TLS identity ---- */

/* PEM files; the strings are copied where needed, not kept. */
struct chan_tls_cfg {
	const char *ca_file;   /* the cluster CA: the only trust anchor */
	const char *cert_file; /* this node's certificate (chain), name in its SAN */
	const char *key_file;  /* its private key */
};

/*
 * Is @name (a peer's certificate name) a member of the cluster now? Called
 * during every handshake, on the loop; @name is borrowed for the call.
 */
typedef bool (*chan_authorize_fn)(const char *name, void *opaque);

/*
 * Load the CA, certificate and key of @cfg. @authorize must not be NULL;
 * it and @opaque are kept. The result is shared by servers and peers and
 * must outlive them. Returns NULL with errno set (EINVAL: @cfg incomplete;
 * EPROTO: a file OpenSSL refused, the reason logged; ENOMEM).
 */
struct chan_tls *chan_tls_new(const struct chan_tls_cfg *cfg, chan_authorize_fn authorize,
			      void *opaque);

/*
 * Load @cfg again (certificate rotation): connections made from now on use
 * the new files, established ones keep theirs. On failure the old identity
 * stays in force. Returns 0, -EINVAL, -EPROTO (logged) or -ENOMEM.
 */
int chan_tls_reload(struct chan_tls *tls, const struct chan_tls_cfg *cfg);

/* NULL is a no-op. Servers and peers using @tls must be freed first. */
void chan_tls_free(struct chan_tls *tls);

/* ---- tunables ---- */

/* Zero fields take the default given; the struct is copied. */
struct chan_cfg {
	unsigned ping_ms;	 /* 1000: send a PING after this long without input */
	unsigned dead_ms;	 /* 3000: cut after this long without any input byte */
	unsigned handshake_ms;	 /* 5000: TCP connect + TLS handshake deadline */
	unsigned backoff_min_ms; /* 100: first reconnect delay, doubled per failure */
	unsigned backoff_max_ms; /* 5000: ... up to this */
	unsigned stall_ms;	 /* 5000: cut a peer that leaves wbuf_max unread this long */
	size_t max_frame;	 /* CHAN_MAX_FRAME: largest payload sent or accepted */
	size_t wbuf_max;	 /* 16 MiB: outbound bytes beyond which a peer is "not
				  * reading"; calls fail with -ENOBUFS past twice it */
	unsigned max_conns;	 /* 256: server connections; more are closed at accept */
	unsigned max_inflight;	 /* 1024: requests a server handles at once per
				  * connection; more are answered -EBUSY */
	unsigned max_streams;	 /* 64: open streams per connection */
};

/* ---- server ---- */

/*
 * A server on @loop with the identity @tls (borrowed, must outlive it) and
 * @cfg (NULL: defaults). It listens once chan_server_listen() succeeds.
 * Returns NULL with errno set (ENOMEM).
 */
struct chan_server *chan_server_new(qb_loop_t *loop, struct chan_tls *tls,
				    const struct chan_cfg *cfg);

/*
 * Listen on numeric address @addr ("127.0.0.1", "::") and @port (0: an
 * ephemeral port, see chan_server_port()). Returns 0, -EINVAL (bad address),
 * -EALREADY (already listening) or the errno of socket/bind/listen (logged).
 */
int chan_server_listen(struct chan_server *srv, const char *addr, uint16_t port);

/* The port listened on, 0 before chan_server_listen() succeeded. */
uint16_t chan_server_port(const struct chan_server *srv);

/*
 * A request: answer it exactly once with chan_reply_ok() or
 * chan_reply_error(), at once or later (async). Each of those frees it, also
 * when the connection has gone meanwhile; until then it holds a little
 * memory but no socket.
 */
typedef void (*chan_handler_fn)(struct chan_reply *r, const void *body, size_t len,
				void *opaque);

/*
 * Dispatch @method (copied) to @fn with @opaque (kept). Returns 0, -EINVAL
 * (empty or longer than 255 bytes), -EEXIST (already handled, as a call or a
 * stream) or -ENOMEM. A method nobody handles is answered -ENOSYS.
 */
int chan_handle(struct chan_server *srv, const char *method, chan_handler_fn fn, void *opaque);

/*
 * Send @len bytes of @body (copied) as the successful answer to @r, then
 * free @r. Returns 0; -ENOTCONN if the connection has gone (nothing sent);
 * -EMSGSIZE if larger than max_frame (the caller gets -EMSGSIZE instead);
 * -ENOBUFS if the client does not read its replies (the reply is dropped,
 * and the client cut once it has left wbuf_max unread for stall_ms).
 */
int chan_reply_ok(struct chan_reply *r, const void *body, size_t len);

/*
 * Answer @r with error @err (negative errno) and a one-line message from
 * @fmt, then free @r. The caller's callback gets @err and the message.
 * Returns as chan_reply_ok().
 */
int chan_reply_error(struct chan_reply *r, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The authenticated name of the node that asked; borrowed from @r. */
const char *chan_reply_peer(const struct chan_reply *r);

/*
 * Close every connection (pending streams end with -ECANCELED through their
 * end callbacks; reply handles stay valid until answered) and the listening
 * socket, and free @srv. NULL is a no-op.
 */
void chan_server_free(struct chan_server *srv);

/* ---- peer (client side) ---- */

/*
 * The client side for remote node @name (its certificate name, copied) at
 * numeric address @addr and @port, on @loop with identity @tls (borrowed,
 * must outlive it) and @cfg (NULL: defaults). Nothing connects until the
 * first call or stream. Returns NULL with errno set (EINVAL: bad name or
 * address; ENOMEM).
 */
struct chan_peer *chan_peer_new(qb_loop_t *loop, struct chan_tls *tls, const char *name,
				const char *addr, uint16_t port, const struct chan_cfg *cfg);

/*
 * Is the connection up: handshake done and the server's welcome received
 * (in TLS 1.3 the server checks our certificate after our handshake ends,
 * so nothing is sent before it says yes)? For tests and status.
 */
bool chan_peer_connected(const struct chan_peer *p);

/*
 * The outcome of a call: @err 0 and the reply's @body (@len bytes, borrowed
 * for the callback), or a negative errno and @msg (one line, borrowed, never
 * NULL): -ETIMEDOUT (deadline passed, also when the node could not be
 * reached or refused us, @msg says why; a late reply is dropped), -ECONNRESET
 * (the connection broke after the request was sent: it may have run),
 * -ECANCELED (chan_peer_free()), -ENOSYS (no such method on the server),
 * -EMSGSIZE, or whatever error the handler answered.
 */
typedef void (*chan_reply_fn)(int err, const void *body, size_t len, const char *msg,
			      void *opaque);

/*
 * Call @method (copied) with @len bytes of @body (copied) on @p's node;
 * @cb gets the outcome exactly once, within @timeout_ms (> 0) also when the
 * node is unreachable: a call made while disconnected waits for the
 * connection until its deadline. Returns 0; -EINVAL (no @cb, no timeout, bad
 * method); -EMSGSIZE (larger than max_frame); -ENOBUFS (the node does not
 * read what we send); -ESHUTDOWN (@p being freed); -ENOMEM. On error @cb is
 * not called.
 */
int chan_call(struct chan_peer *p, const char *method, const void *body, size_t len,
	      unsigned timeout_ms, chan_reply_fn cb, void *opaque);

/*
 * Close the connection and free @p. Pending calls get -ECANCELED and open
 * streams end with -ECANCELED, from inside this function. NULL is a no-op.
 */
void chan_peer_free(struct chan_peer *p);

/* ---- streams ---- */

/*
 * A stream carries bytes one way, sender to receiver, with credit-based flow
 * control: the receiver grants a window of bytes; the sender never has more
 * than the granted credit in flight; the receiver grants more as its user
 * calls chan_stream_consume(). So a slow receiver slows the sender and
 * neither side buffers more than the window. Lifecycle:
 *
 *   sender:   writable -> chan_stream_write()... -> chan_stream_finish()
 *             -> end(0) once the receiver has seen the end of the data
 *             (or end(err) if a receiver with fin() refused it)
 *   receiver: data()... (+ chan_stream_consume()) -> end(0) at end of data,
 *             or with fin(): fin() -> chan_stream_abort(0 or err) to answer
 *   either:   chan_stream_abort(): the other side's end(err, msg)
 *
 * end() is called exactly once per stream unless this side aborted it; the
 * handle is freed when end() returns or chan_stream_abort() is called.
 * A broken connection ends every stream on it with -ECONNRESET.
 */
struct chan_stream_ops {
	/* Sender: credit is available (again) and the connection's outbound
	 * buffer is below its bound; write what you have. Not repeated while
	 * nothing changes: when your data becomes ready later, just write. */
	void (*writable)(struct chan_stream *st, void *opaque);
	/* Receiver: @len bytes (borrowed for the call). They count against the
	 * window until chan_stream_consume() returns them. */
	void (*data)(struct chan_stream *st, const void *buf, size_t len, void *opaque);
	/* Once: 0 at the end of the data, or a negative errno and a message. */
	void (*end)(struct chan_stream *st, int err, const char *msg, void *opaque);
	/* Receiver, optional: the sender finished and every byte was delivered.
	 * Without it the end is acknowledged at once (end(0) here, end(0) at
	 * the sender). With it the stream stays open until this side answers
	 * with chan_stream_abort(): 0 acknowledges the end, an error refuses
	 * it, and the sender's end() gets that answer; so a receiver that
	 * checks the data as a whole (a digest) or stores it first says so
	 * before the sender counts it as delivered. No end() follows fin()
	 * unless the connection fails meanwhile. */
	void (*fin)(struct chan_stream *st, void *opaque);
};

enum chan_stream_dir {
	CHAN_STREAM_PULL, /* the server sends, the opener receives */
	CHAN_STREAM_PUSH, /* the opener sends, the server receives */
};

/*
 * Open a stream of @method (copied) on @p's node with @len bytes of @hdr
 * (copied) for its handler. @ops and @opaque are kept; @ops must provide
 * end, and writable (PUSH) or data (PULL). @window: bytes the receiving side
 * grants (0: 1 MiB; ignored for PUSH, where the server's accept decides).
 * Waits up to @timeout_ms (> 0) for the connection; the server's refusal
 * arrives as end(err). Returns the handle (owned by the channel, see above)
 * or NULL with errno set (EINVAL, EMSGSIZE, ESHUTDOWN, ENOMEM).
 */
struct chan_stream *chan_stream_open(struct chan_peer *p, const char *method, const void *hdr,
				     size_t len, enum chan_stream_dir dir, size_t window,
				     unsigned timeout_ms, const struct chan_stream_ops *ops,
				     void *opaque);

/*
 * Server side: a client opened a stream of the method. Accept it with
 * chan_stream_accept() before returning 0, or return a negative errno to
 * refuse it (the opener's end gets it). @hdr is borrowed for the call.
 * chan_stream_dir() says which side sends.
 */
typedef int (*chan_stream_fn)(struct chan_stream *st, const void *hdr, size_t len,
			      void *opaque);

/* Dispatch streams of @method to @fn; returns as chan_handle(). */
int chan_handle_stream(struct chan_server *srv, const char *method, chan_stream_fn fn,
		       void *opaque);

/*
 * Inside a chan_stream_fn: take the stream with @ops and @opaque (kept, as
 * for chan_stream_open()) and, when the server receives, a @window (0: 1 MiB).
 */
void chan_stream_accept(struct chan_stream *st, size_t window,
			const struct chan_stream_ops *ops, void *opaque);

/* Which side of @st sends. */
enum chan_stream_dir chan_stream_dir(const struct chan_stream *st);

/*
 * Sender: queue up to @len bytes of @buf (copied) within the credit and the
 * connection's outbound bound. Returns the bytes taken (> 0), -EAGAIN when
 * none can be now (writable will say when), -EPIPE after finish or when the
 * stream is ending, -EINVAL on a receiver's handle or @len 0.
 */
ssize_t chan_stream_write(struct chan_stream *st, const void *buf, size_t len);

/*
 * Sender: no more data. end(0) follows once the receiver has seen it all.
 * Returns 0; -EAGAIN (not connected yet, or the outbound queue is full: try
 * again from writable or a timer); -EPIPE (already finished, ending, or not
 * a sender).
 */
int chan_stream_finish(struct chan_stream *st);

/*
 * Receiver: @n more bytes delivered by data() are done with; their credit
 * goes back to the sender (batched). More than is held is clamped.
 */
void chan_stream_consume(struct chan_stream *st, size_t n);

/*
 * Either side: end @st with @err (negative errno) and a one-line message;
 * the other side's end() gets them. Frees @st; no callback of it follows.
 * A receiver answering fin() passes 0 to acknowledge the end (the sender's
 * end(0)); 0 anywhere else is taken as -ECANCELED.
 */
void chan_stream_abort(struct chan_stream *st, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The authenticated name of the node at the other end (borrowed). */
const char *chan_stream_peer(const struct chan_stream *st);

#endif /* HCA_CHAN_H */
