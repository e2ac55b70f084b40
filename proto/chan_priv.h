/*
 * chan_priv.h: what the chan*.c files share and only they (and the fuzz
 * target, for the pure decoder) may use. The files, by concern:
 *
 *   chan_msg.c     frames and messages: encode, decode, validate (no I/O)
 *   chan_tls.c     OpenSSL: contexts, verification, the one error helper
 *   chan_conn.c    one connection: socket, handshake, output, keepalive, close
 *   chan_recv.c    its input: frames read, checked and dispatched
 *   chan_server.c  listener, method table, requests and replies
 *   chan_peer.c    client side: connect, backoff, calls
 *   chan_stream.c  streams and their flow control, both sides
 *
 * Ownership: a peer owns its one connection, a server its list of them; a
 * connection owns the calls it sent and the streams on it and ends them all
 * when it closes. Reply handles hold a reference to their connection, so a
 * handler may answer after the connection (or the server) is gone.
 */
#ifndef HCA_CHAN_PRIV_H
#define HCA_CHAN_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <qb/qbdefs.h>
#include <qb/qblog.h>
#include <qb/qbloop.h>

#include "proto/chan.h"
#include "proto/hca.pb-c.h"
#include "proto/wire.h"

#define CHAN_METHOD_MAX 255u
#define CHAN_WINDOW_DEFAULT (1u << 20)
#define CHAN_STREAM_QUEUE (512u << 10) /* stream bytes queued on a connection */
#define CHAN_MSG_MAX 240u /* error messages are cut here: one line for a log */

/* ---- a circular doubly linked list, intrusive ---- */

struct chan_list {
	struct chan_list *prev, *next;
};

#define chan_entry(p, type, member) ((type *)(void *)((char *)(p) - offsetof(type, member)))

static inline void chan_list_init(struct chan_list *h)
{
	h->prev = h->next = h;
}

static inline bool chan_list_empty(const struct chan_list *h)
{
	return h->next == h;
}

static inline void chan_list_add_tail(struct chan_list *h, struct chan_list *n)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

/* Unlinked nodes point at themselves, so deleting twice is harmless. */
static inline void chan_list_del(struct chan_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

/* Move every node of @from to the (empty) @to. */
static inline void chan_list_move(struct chan_list *from, struct chan_list *to)
{
	chan_list_init(to);
	if (chan_list_empty(from))
		return;
	to->next = from->next;
	to->prev = from->prev;
	to->next->prev = to;
	to->prev->next = to;
	chan_list_init(from);
}

uint64_t chan_now_ms(void);

/* @cfg with every zero field replaced by its default. */
void chan_cfg_resolve(struct chan_cfg *out, const struct chan_cfg *cfg);

/* ---- chan_msg.c: frames and messages, pure (chan_crc32c() is in chan.h) ---- */

/* Bytes of the frame carrying @m, whose payload is *@plen bytes. */
size_t chan_msg_frame_size(const Hca__ChanMsg *m, size_t *plen);

/* Write the frame of @m (payload @plen bytes) to @out, which has room. */
void chan_msg_frame_put(uint8_t *out, const Hca__ChanMsg *m, size_t plen);

struct chan_frame {
	struct wire_hdr h;
	size_t total;	       /* header + payload, once the header is known */
	const uint8_t *payload; /* complete frames only */
};

/*
 * The frame at @buf (@avail bytes): 0 when whole and intact; -EAGAIN when
 * more bytes are needed (f->total says how many in all, once the header is
 * in); else the wire error (-EBADMSG, -EPROTONOSUPPORT, -EPROTO, -EMSGSIZE,
 * -EILSEQ) with *@why a static description.
 */
int chan_frame_parse(const uint8_t *buf, size_t avail, size_t max_payload, struct chan_frame *f,
		     const char **why);

/*
 * Unpack and validate one payload. NULL with *@why set when undecodable, of
 * an unknown kind or with out-of-range fields. Free with chan_msg_free().
 */
Hca__ChanMsg *chan_msg_decode(const uint8_t *payload, size_t len, const char **why);

/*
 * Stream data read in place: true with the stream's @id and @data (into
 * @payload, @dlen bytes) if @payload is a ChanMsg of stream data laid out as
 * protobuf-c lays it out; false for anything else (use chan_msg_decode()).
 */
bool chan_msg_data_peek(const uint8_t *payload, size_t len, uint64_t *id,
			const uint8_t **data, size_t *dlen);
void chan_msg_free(Hca__ChanMsg *m);

/* @src as one line: cut to @n - 1 bytes, control characters blanked. */
void chan_line_copy(char *dst, size_t n, const char *src);

/* Printable ASCII, no spaces, 1..CHAN_METHOD_MAX bytes. */
bool chan_method_valid(const char *method);

/* -errno from a remote ChanError (never 0), or 0 for NULL. */
int chan_msg_error_code(const Hca__ChanError *e);

/* ---- chan_tls.c ---- */

/* Who is at the other end of a connection; filled in during the handshake. */
struct chan_ident {
	char label[CHAN_NAME_MAX + 72]; /* "name at addr:port", for logs */
	char addr[64];
	char name[CHAN_NAME_MAX + 1];	/* verified name, "" before */
	char expect[CHAN_NAME_MAX + 1]; /* client: the node meant; "" on a server */
	chan_authorize_fn authorize;
	void *opaque;
};

/* A new SSL for @fd in client or server mode, verifying into @id. */
SSL *chan_tls_ssl_new(struct chan_tls *tls, bool server, int fd, struct chan_ident *id);

/*
 * The one place OpenSSL errors reach the log: "@who: @what: reason" for
 * every entry of the thread's error queue, which it empties (just "@what"
 * when empty). Returns true if the queue's first error was an EOF without
 * close_notify (a peer that vanished, not a protocol error).
 */
bool chan_ssl_log(int pri, const char *who, const char *what);

/* Is @name acceptable as a node name (the one DNS SAN)? */
bool chan_name_valid(const char *name);

/* ---- chan_conn.c ---- */

enum chan_conn_state {
	CONN_CONNECTING, /* TCP connect in progress (client) */
	CONN_HANDSHAKE,
	CONN_OPEN,
	CONN_CLOSED,
};

struct chan_conn {
	unsigned refs;
	qb_loop_t *loop;
	struct chan_cfg cfg;	 /* resolved copy */
	struct chan_peer *peer;	 /* client side: the owner, NULL once closed */
	struct chan_server *srv; /* server side: the owner, NULL once closed */
	struct chan_list link;	 /* in srv->conns */
	enum chan_conn_state state;
	int fd;
	SSL *ssl;
	int32_t events;
	bool watched;
	bool in_dispatch;	/* io_dispatch flushes at its end */
	bool read_wants_write;	/* SSL_read asked for POLLOUT */
	bool write_wants_read;	/* SSL_write asked for POLLIN */
	struct chan_ident id;
	int err;		/* why it closed */
	char why[CHAN_MSG_MAX]; /* and in words, for callbacks */

	uint8_t *rbuf;	/* the frame being received: rlen bytes of rneed; freed
			 * with the struct, as stream data is handed out in place */
	size_t rcap, rlen, rneed; /* rneed 0: the header is not in yet */
	uint8_t *wbuf;	/* [woff, wlen) queued, not yet written */
	size_t wcap, woff, wlen;
	bool over;	/* queued > cfg.wbuf_max since t_over */
	bool full_warned; /* dropping replies was logged while over */
	bool streams_waiting; /* a stream found the queue full: call them back */

	uint64_t t_start, t_rx, t_ping, t_over;
	uint64_t ping_nonce;
	qb_loop_timer_handle tick;
	qb_loop_timer_handle resume; /* more TLS input buffered than one dispatch takes */
	uint64_t rx_frames;

	struct chan_list calls;	  /* client: sent, awaiting their reply */
	struct chan_list streams; /* open on this connection */
	unsigned nstreams;
	unsigned inflight; /* server: requests not answered yet */
};

#define conn_log(c, pri, fmt, ...) qb_log(pri, "chan %s: " fmt, (c)->id.label, ##__VA_ARGS__)

struct sockaddr;
struct sockaddr_storage;

/* Numeric @host and @port into @ss; -EINVAL if not a numeric address. */
int chan_addr_parse(const char *host, uint16_t port, struct sockaddr_storage *ss, unsigned *len);
/* "1.2.3.4:5" or "[::1]:5" into @out. */
void chan_addr_str(const struct sockaddr *sa, unsigned len, char *out, size_t n);

/* A client connection to @sa for @p; NULL with errno set (logged). */
struct chan_conn *chan_conn_connect(struct chan_peer *p, qb_loop_t *loop, struct chan_tls *tls,
				    const struct chan_cfg *cfg, const char *name,
				    const struct sockaddr *sa, unsigned salen, const char *addr);

/* A server connection on accepted @fd (taken, closed on failure). */
struct chan_conn *chan_conn_accept(struct chan_server *srv, qb_loop_t *loop, struct chan_tls *tls,
				   const struct chan_cfg *cfg, int fd, const char *addr);

void chan_conn_ref(struct chan_conn *c);
void chan_conn_unref(struct chan_conn *c);

/*
 * Queue @m. Returns 0; -ENOTCONN (closed or not open yet); -EMSGSIZE
 * (larger than max_frame); -ENOBUFS (more than twice wbuf_max queued);
 * -ENOMEM.
 */
int chan_conn_send(struct chan_conn *c, const Hca__ChanMsg *m);

/* Open, and for a client welcomed by the server: calls may go out. */
bool chan_conn_accepted(const struct chan_conn *c);

/*
 * May streams queue more? Open, and the queue shorter than
 * CHAN_STREAM_QUEUE (and not past wbuf_max). If not, the connection
 * remembers to call chan_streams_drained() once the queue has drained.
 */
bool chan_conn_writable(struct chan_conn *c);

/* Bytes queued and not yet written. */
size_t chan_conn_queued(const struct chan_conn *c);

/*
 * End @c (idempotent): log the reason, free the socket and TLS state, fail
 * its calls and streams (callbacks) and tell the owner. -ECANCELED is an
 * orderly close by this side; anything else a failure.
 */
void chan_conn_close(struct chan_conn *c, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Between chan_conn.c and chan_recv.c. */
void chan_conn_read(struct chan_conn *c);
void chan_conn_ssl_fail(struct chan_conn *c, int n, bool reading);
/* Read again from the loop soon: OpenSSL holds input poll cannot see. */
void chan_conn_resume(struct chan_conn *c);

/* ---- chan_peer.c, for the connection ---- */

void chan_peer_on_open(struct chan_peer *p, struct chan_conn *c);
void chan_peer_on_frame(struct chan_peer *p);
void chan_peer_on_close(struct chan_peer *p, struct chan_conn *c);
void chan_call_on_reply(struct chan_conn *c, const Hca__ChanReply *r);
void chan_calls_fail(struct chan_list *calls, int err, const char *msg);
const char *chan_peer_name(const struct chan_peer *p);
/* Streams: queue @st until the connection is up; take it off again. */
int chan_peer_stream_queue(struct chan_peer *p, struct chan_list *link);
uint64_t chan_peer_next_id(struct chan_peer *p);
qb_loop_t *chan_peer_loop(struct chan_peer *p);
size_t chan_peer_max_frame(const struct chan_peer *p);
struct chan_conn *chan_peer_conn(struct chan_peer *p);

/* ---- chan_server.c, for the connection ---- */

void chan_srv_on_close(struct chan_server *srv, struct chan_conn *c);
void chan_srv_on_request(struct chan_conn *c, const Hca__ChanRequest *r);
/* The stream handler of @method, or NULL. */
chan_stream_fn chan_srv_stream_handler(struct chan_server *srv, const char *method,
				       void **opaque);

/* ---- chan_stream.c, for the connection, peer and server ---- */

void chan_stream_on_open(struct chan_conn *c, const Hca__ChanStreamOpen *o);
void chan_stream_on_data(struct chan_conn *c, uint64_t id, const uint8_t *data, size_t len);
void chan_stream_on_credit(struct chan_conn *c, const Hca__ChanStreamCredit *cr);
void chan_stream_on_end(struct chan_conn *c, const Hca__ChanStreamEnd *e);
/* The connection of the opener came up: send its OPEN. */
void chan_stream_start(struct chan_conn *c, struct chan_list *link);
/* End every stream of @list with @err (callbacks). */
void chan_streams_fail(struct chan_list *list, int err, const char *msg);
/* The outbound buffer went below its bound: wake the senders. */
void chan_streams_drained(struct chan_conn *c);

#endif /* HCA_CHAN_PRIV_H */
