/*
 * rep_bench: the replica stream (replica/rep_stream.h) against plain TLS with
 * the same cipher, on the same bytes, in one run.
 *
 *   rep_bench [MiB]      (default 256 per run)
 *
 * A source of MiB bytes is cut into extents of 64 KiB to 1 MiB (runs of
 * 64 KiB blocks, as a dirty bitmap's runs come). Two contents: "random",
 * every block random (nothing to compress or skip: the stream's own cost),
 * and "mix", each block 40% zeros, 30% text-like (log lines), 30% random.
 * The stream takes them through the whole sender (zero detection, zstd
 * probe and attempt, CRC32C on a worker), the node channel (TLS 1.3,
 * framing, credit) and the whole receiver (framing, bounds, sequence,
 * digest, decompression and checksums on a worker) to a sink that takes
 * each frame at once. Baselines on the same bytes: SSL_write/SSL_read over
 * loopback TCP, plain and with the 128 KiB read-ahead chan uses, and the
 * channel's stream alone (what the replica stream adds to it). Everything
 * runs in this process: one loop thread, plus one worker per side for the
 * stream (as on two nodes); loop, executor and codec buffers are kept from
 * run to run as an agent keeps them. Five rounds side by side (or
 * REP_BENCH_ROUNDS), the stream
 * first in turn; the table shows the best of each kind by wall clock and
 * by CPU time (all threads), the stream's best over the baselines' and the
 * median of the per-round ratios. Compression changes what the ratio
 * means: raw TLS carries every byte, the stream fewer ("wire": stream
 * bytes per source byte); "random" is the stream's pure overhead.
 *
 * Last, the digest's cost: CRC32C (the chain the stream uses) and SHA-256
 * (OpenSSL EVP, SHA-NI where the CPU has it) over the source, against the
 * stream's CPU time per byte.
 *
 * For experiments: REP_BENCH_ONLY=rep|raw|chan, REP_BENCH_KIND=mix|random,
 * REP_BENCH_EXTENT=KiB (fixed extent size), REP_BENCH_WORKERS=n (per side),
 * REP_BENCH_INFLIGHT=KiB, REP_BENCH_WINDOW=KiB, REP_BENCH_ROUNDS=n (5; on a
 * busy machine the median of more rounds says more than the best of five),
 * and REP_BENCH_SPLIT=1: each run's CPU time, loop thread and workers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <qb/qblog.h>
#include <qb/qbloop.h>

#include "base/env.h"
#include "base/exec.h"
#include "proto/chan.h"
#include "replica/rep_stream.h"

#define CIPHER "TLS_AES_256_GCM_SHA384"
#define CHUNK (256u << 10)
#define BLOCK (64u << 10)
#define ROUNDS 5
#define ROUNDS_MAX 51
#define DISK_SIZE (1ull << 40)

static char pki_dir[64];
static struct chan_tls_cfg files;
static char ca_path[96], crt_path[96], key_path[96];

static int rounds = ROUNDS; /* REP_BENCH_ROUNDS: more when the machine is noisy */
static uint8_t *src;	  /* the source bytes */
static size_t src_len;
static size_t *ext_len;	  /* extent lengths, in order */
static size_t n_ext;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double thread_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "rep_bench: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

/* ---- a CA and one certificate ("bench") both ends present ---- */

static void ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *e;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!e || !X509_add_ext(x, e, -1))
		die("cannot add an extension");
	X509_EXTENSION_free(e);
}

static X509 *cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *ikey)
{
	X509 *x = X509_new();

	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), issuer ? 2 : 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
	ext(x, issuer ? issuer : x, NID_basic_constraints, issuer ? "CA:FALSE" : "critical,CA:TRUE");
	if (issuer)
		ext(x, issuer, NID_subject_alt_name, "DNS:bench");
	if (!X509_sign(x, ikey ? ikey : key, EVP_sha256()))
		die("cannot sign");
	return x;
}

static void pem(const char *path, X509 *x, EVP_PKEY *key)
{
	FILE *f = fopen(path, "w");

	if (!f || !(x ? PEM_write_X509(f, x) : PEM_write_PrivateKey(f, key, 0, 0, 0, 0, 0)))
		die("cannot write a PEM file");
	fclose(f);
}

static void pki_make(void)
{
	EVP_PKEY *cakey = EVP_EC_gen("P-256"), *key = EVP_EC_gen("P-256");
	X509 *ca = cert(cakey, "bench CA", NULL, NULL), *x = cert(key, "bench", ca, cakey);

	snprintf(pki_dir, sizeof(pki_dir), "/tmp/rep-bench-XXXXXX");
	if (!mkdtemp(pki_dir))
		die("mkdtemp");
	snprintf(ca_path, sizeof(ca_path), "%s/ca.pem", pki_dir);
	snprintf(crt_path, sizeof(crt_path), "%s/bench.crt", pki_dir);
	snprintf(key_path, sizeof(key_path), "%s/bench.key", pki_dir);
	pem(ca_path, ca, NULL);
	pem(crt_path, x, NULL);
	pem(key_path, NULL, key);
	files = (struct chan_tls_cfg){ ca_path, crt_path, key_path };
	X509_free(ca);
	X509_free(x);
	EVP_PKEY_free(cakey);
	EVP_PKEY_free(key);
}

static void pki_remove(void)
{
	unlink(ca_path);
	unlink(crt_path);
	unlink(key_path);
	rmdir(pki_dir);
}

/* ---- the source ---- */

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Log lines: words, numbers, timestamps; zstd -1 takes them to ~1/4. */
static void fill_text(uint8_t *p, size_t n)
{
	static const char *w[] = { "INFO", "WARN", "replica", "cycle", "journal", "block", "write",
				   "request", "GET /api/v1/items", "200", "latency_ms=", "bytes=",
				   "node3", "session", "ok", "retry", "2026-12-02T10:11:12Z" };
	size_t i = 0;

	while (i < n) {
		uint64_t r = rnd();
		const char *s = w[r % 17];
		int k = (r >> 8) % 5 == 0 ? snprintf((char *)p + i, n - i, "%u ",
							(unsigned)(r >> 20) % 100000) : 0;

		i += k > 0 && (size_t)k < n - i ? (size_t)k : 0;
		for (size_t j = 0; s[j] && i < n; j++)
			p[i++] = (uint8_t)s[j];
		if (i < n)
			p[i++] = (r >> 40) % 9 == 0 ? '\n' : ' ';
	}
}

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 8 <= n; i += 8) {
		uint64_t r = rnd();

		memcpy(p + i, &r, 8);
	}
}

static void source_make(size_t mib, bool mix, size_t fixed)
{
	src_len = mib << 20;
	if (!src)
		src = malloc(src_len);
	if (!src)
		die("no memory for the source");
	for (size_t o = 0; o < src_len; o += BLOCK) {
		unsigned k = mix ? (unsigned)(rnd() % 10) : 9;

		if (k < 4)
			memset(src + o, 0, BLOCK);
		else if (k < 7)
			fill_text(src + o, BLOCK);
		else
			fill_random(src + o, BLOCK);
	}
	free(ext_len);
	ext_len = calloc(src_len / (fixed ? fixed : BLOCK) + 1, sizeof(*ext_len));
	n_ext = 0;
	for (size_t o = 0; o < src_len;) {
		size_t n = fixed ? fixed : BLOCK * (1 + rnd() % 16);

		n = n < src_len - o ? n : src_len - o;
		ext_len[n_ext++] = n;
		o += n;
	}
}

/* ---- baseline: SSL_write / SSL_read of the same bytes, one thread ---- */

static bool raw_read_ahead; /* the second baseline: OpenSSL's read-ahead, as chan uses */

static SSL_CTX *raw_ctx(bool server)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

	if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(ctx, CIPHER) || !SSL_CTX_load_verify_file(ctx, ca_path) ||
	    !SSL_CTX_use_certificate_chain_file(ctx, crt_path) ||
	    !SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM))
		die("cannot set up the baseline's TLS");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
	if (raw_read_ahead) {
		SSL_CTX_set_read_ahead(ctx, 1);
		SSL_CTX_set_default_read_buffer_len(ctx, 128u << 10);
	}
	return ctx;
}

static void tcp_pair(int fds[2])
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&sa, &len) < 0)
		die("cannot listen");
	fds[0] = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(fds[0], (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("cannot connect");
	fds[1] = accept(l, NULL, NULL);
	close(l);
	for (int i = 0; i < 2; i++) {
		setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK) < 0)
			die("fcntl");
	}
}

static void want_retry(SSL *ssl, int n)
{
	int e = SSL_get_error(ssl, n);

	if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
		die("baseline TLS I/O failed");
}

static void raw_handshake(SSL *c, SSL *s)
{
	int dc = 0, ds = 0, n;

	while (!dc || !ds) {
		if (!dc && (n = SSL_do_handshake(c)) == 1)
			dc = 1;
		else if (!dc)
			want_retry(c, n);
		if (!ds && (n = SSL_do_handshake(s)) == 1)
			ds = 1;
		else if (!ds)
			want_retry(s, n);
	}
}

/* Seconds to carry the source. */
static double raw_run(void)
{
	SSL_CTX *cctx = raw_ctx(false), *sctx = raw_ctx(true);
	SSL *w = SSL_new(sctx), *r = SSL_new(cctx);
	static uint8_t rbuf[CHUNK];
	size_t sent = 0, got = 0;
	int fds[2], n;
	double t0;

	tcp_pair(fds);
	SSL_set_fd(r, fds[0]);
	SSL_set_fd(w, fds[1]);
	SSL_set_connect_state(r);
	SSL_set_accept_state(w);
	raw_handshake(r, w);
	if (strcmp(SSL_get_cipher_name(w), CIPHER) != 0)
		die("baseline cipher differs");
	t0 = now_s();
	while (got < src_len) {
		while (sent < src_len) {
			size_t k = src_len - sent < CHUNK ? src_len - sent : CHUNK;

			n = SSL_write(w, src + sent, (int)k);
			if (n <= 0) {
				want_retry(w, n);
				break;
			}
			sent += (size_t)n;
		}
		while ((n = SSL_read(r, rbuf, sizeof(rbuf))) > 0)
			got += (size_t)n;
		if (n <= 0)
			want_retry(r, n);
	}
	t0 = now_s() - t0;
	SSL_free(w);
	SSL_free(r);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
	close(fds[0]);
	close(fds[1]);
	return t0;
}

/* ---- the stream ---- */

struct bench {
	qb_loop_t *loop;
	struct exec *exec;
	struct chan_tls *tls;
	struct chan_server *srv;
	struct chan_peer *peer;
	struct hca_env env;
	struct rep_ctx *x;
	struct rep_recv *recv;
	struct rep_tx *tx;
	size_t next, off;	   /* the next extent to push, its offset */
	bool finished;
	int done, err;
	struct rep_tx_stats s;
	uint64_t got;		   /* bytes the sink received, zero ranges included */
};

static bool accept_all(const char *name, void *opaque)
{
	return strcmp(name, "bench") == 0;
}

static int env_handle_stream(void *ctx, const char *method, env_stream_fn fn, void *opaque)
{
	struct bench *b = ctx;

	return chan_handle_stream(b->srv, method, fn, opaque);
}

static struct chan_stream *env_stream_open(void *ctx, const char *node, const char *method,
					   const void *hdr, size_t len, int dir, size_t window,
					   unsigned timeout_ms,
					   const struct chan_stream_ops *ops, void *opaque)
{
	struct bench *b = ctx;

	return chan_stream_open(b->peer, method, hdr, len, (enum chan_stream_dir)dir, window,
				timeout_ms, ops, opaque);
}

static int sk_open(struct rep_rx *rx, const struct rep_cycle *c, void *opaque, void **cycle,
		   struct rep_err *e)
{
	*cycle = opaque;
	return 0;
}

static void sk_frame(struct rep_rx *rx, struct rep_rx_frame *fr, const struct rep_frame *f,
		     void *cycle)
{
	struct bench *b = cycle;

	b->got += f->length;
	rep_rx_frame_done(fr, 0);
}

static void sk_end(struct rep_rx *rx, const struct rep_end *e, void *cycle)
{
	rep_rx_ack(rx, 0, "taken");
}

static void sk_fail(struct rep_rx *rx, int err, const char *msg, void *cycle)
{
	fprintf(stderr, "rep_bench: the replica failed the cycle: %s\n", msg);
}

static const struct rep_sink_ops sink_ops = {
	.open = sk_open, .frame = sk_frame, .end = sk_end, .fail = sk_fail,
};

static void push(struct bench *b)
{
	while (b->next < n_ext) {
		size_t n = ext_len[b->next];
		int rc = rep_tx_extent(b->tx, 0, b->off, src + b->off, n);

		if (rc == -EAGAIN)
			return;
		if (rc < 0)
			die("cannot push an extent");
		b->off += n;
		b->next++;
	}
	if (!b->finished && rep_tx_finish(b->tx) == 0)
		b->finished = true;
}

static void tx_more(struct rep_tx *tx, void *opaque)
{
	push(opaque);
}

static void tx_done(struct rep_tx *tx, int err, const char *msg, const struct rep_tx_stats *s,
		    void *opaque)
{
	struct bench *b = opaque;

	if (err)
		fprintf(stderr, "rep_bench: the cycle failed: %s\n", msg);
	b->err = err;
	b->s = *s;
	b->done = 1;
	qb_loop_stop(b->loop);
}

static void no_release(void *buf, void *opaque)
{
}

static const struct rep_tx_ops tx_ops = { .more = tx_more, .done = tx_done,
					  .release = no_release };

static void h_ping(struct chan_reply *r, const void *body, size_t len, void *opaque)
{
	chan_reply_ok(r, body, len);
}

static void on_warm(int err, const void *body, size_t len, const char *msg, void *opaque)
{
	if (err)
		die(msg);
	qb_loop_stop(((struct bench *)opaque)->loop);
}

/*
 * What an agent keeps from one cycle to the next: the loop, the executor
 * and each side's codec resources (on two nodes, each its own workers).
 */
static struct {
	qb_loop_t *loop;
	struct exec *exec;
	struct rep_ctx *x, *rx;
} W;

static void world_up(void)
{
	unsigned workers = getenv("REP_BENCH_WORKERS") ? (unsigned)atoi(getenv("REP_BENCH_WORKERS"))
						       : 1;
	struct exec_queue *q, *rq;

	W.loop = qb_loop_create();
	W.exec = W.loop ? exec_new(W.loop) : NULL;
	q = W.exec ? exec_queue_new(W.exec, "rep-src", workers) : NULL;
	rq = W.exec ? exec_queue_new(W.exec, "rep-dst", workers) : NULL;
	W.x = q ? rep_ctx_new(q) : NULL;
	W.rx = rq ? rep_ctx_new(rq) : NULL;
	if (!W.x || !W.rx)
		die("cannot set up the loop and the workers");
}

static void world_down(void)
{
	exec_free(W.exec, 5000);
	rep_ctx_free(W.x);
	rep_ctx_free(W.rx);
	qb_loop_destroy(W.loop);
}

static void bench_up(struct bench *b)
{
	const char *win = getenv("REP_BENCH_WINDOW");
	struct rep_recv_cfg rcfg = { .window = win ? strtoul(win, NULL, 10) << 10 : 0 };

	memset(b, 0, sizeof(*b));
	b->loop = W.loop;
	b->exec = W.exec;
	b->x = W.x;
	b->tls = chan_tls_new(&files, accept_all, NULL);
	if (!b->tls)
		die("cannot set up the channel");
	b->srv = chan_server_new(b->loop, b->tls, NULL);
	if (!b->srv || chan_server_listen(b->srv, "127.0.0.1", 0) < 0 ||
	    chan_handle(b->srv, "ping", h_ping, b) < 0)
		die("cannot start the server");
	b->peer = chan_peer_new(b->loop, b->tls, "bench", "127.0.0.1", chan_server_port(b->srv),
				NULL);
	b->env = (struct hca_env){ .loop = b->loop, .exec = b->exec, .node = "bench", .ctx = b,
				   .handle_stream = env_handle_stream,
				   .stream_open = env_stream_open };
	b->recv = rep_recv_new(&b->env, W.rx, &rcfg, &sink_ops, b);
	if (!b->peer || !b->recv)
		die("cannot set up the stream");
	/* connect first, so the run measures the transfer only */
	if (chan_call(b->peer, "ping", "", 0, 5000, on_warm, b) < 0)
		die("cannot call");
	qb_loop_run(b->loop);
}

static void bench_down(struct bench *b)
{
	chan_peer_free(b->peer);
	chan_server_free(b->srv);
	rep_recv_free(b->recv);
	chan_tls_free(b->tls);
}

static uint64_t last_wire;		/* the last run's stream bytes */
static uint64_t last_extents, last_hurried; /* and extents, those sent without zstd */

static double rep_run(void)
{
	struct rep_cycle c = { .relation = 1, .incarnation = 1, .cycle = 1, .full = true,
			       .ndisks = 1 };
	const char *inflight = getenv("REP_BENCH_INFLIGHT");
	struct rep_tx_cfg tcfg = { .max_inflight = inflight ? strtoul(inflight, NULL, 10) << 10 : 0 };
	struct bench b;
	double t0, c0, l0;

	strcpy(c.vm, "bench");
	strcpy(c.disks[0].name, "disk");
	c.disks[0].size = DISK_SIZE;
	bench_up(&b);
	c0 = cpu_s();
	l0 = thread_s();
	t0 = now_s();
	b.tx = rep_tx_open(&b.env, b.x, "bench", &c, &tcfg, &tx_ops, &b);
	if (!b.tx)
		die("cannot open the stream");
	push(&b);
	qb_loop_run(b.loop);
	t0 = now_s() - t0;
	l0 = thread_s() - l0;
	c0 = cpu_s() - c0;
	if (b.err || !b.done || b.got != src_len)
		die("the cycle did not complete");
	last_wire = b.s.wire_bytes;
	last_extents = b.s.extents;
	last_hurried = b.s.hurried;
	if (getenv("REP_BENCH_SPLIT"))
		fprintf(stderr, "rep_bench: stream run: %.3f s wall, loop thread %.3f s CPU, "
			"workers %.3f s CPU\n", t0, l0, c0 - l0);
	bench_down(&b);
	return t0;
}

/* ---- the channel alone, same bytes: what the stream adds to it ---- */

static void bulk_writable(struct chan_stream *st, void *opaque)
{
	struct bench *b = opaque;

	while (b->off < src_len) {
		size_t n = src_len - b->off < CHUNK ? src_len - b->off : CHUNK;
		ssize_t w = chan_stream_write(st, src + b->off, n);

		if (w < 0)
			return;
		b->off += (size_t)w;
	}
	if (!b->finished && chan_stream_finish(st) == 0)
		b->finished = true;
}

static void bulk_data(struct chan_stream *st, const void *buf, size_t len, void *opaque)
{
	struct bench *b = opaque;

	b->got += len;
	chan_stream_consume(st, len);
}

static void bulk_end(struct chan_stream *st, int err, const char *msg, void *opaque)
{
	struct bench *b = opaque;

	if (err)
		die(msg);
	if (++b->done == 2)
		qb_loop_stop(b->loop);
}

static const struct chan_stream_ops bulk_snd = { .writable = bulk_writable, .end = bulk_end };
static const struct chan_stream_ops bulk_rcv = { .data = bulk_data, .end = bulk_end };

static int h_bulk(struct chan_stream *st, const void *hdr, size_t len, void *opaque)
{
	chan_stream_accept(st, REP_RX_WINDOW, &bulk_rcv, opaque);
	return 0;
}

static double chan_run(void)
{
	struct bench b;
	double t0;

	double l0;

	bench_up(&b);
	if (chan_handle_stream(b.srv, "bulk", h_bulk, &b) < 0)
		die("cannot serve the bulk stream");
	l0 = thread_s();
	t0 = now_s();
	if (!chan_stream_open(b.peer, "bulk", "", 0, CHAN_STREAM_PUSH, 0, 5000, &bulk_snd, &b))
		die("cannot open a stream");
	qb_loop_run(b.loop);
	t0 = now_s() - t0;
	if (getenv("REP_BENCH_SPLIT"))
		fprintf(stderr, "rep_bench: chan run: %.3f s wall, loop thread %.3f s CPU\n", t0,
			thread_s() - l0);
	if (b.got != src_len)
		die("the bulk stream did not complete");
	bench_down(&b);
	return t0;
}

/* ---- measuring ---- */

struct run {
	double wall, cpu; /* MiB/s by each clock */
};

static struct run measure(double (*fn)(void))
{
	double c0 = cpu_s(), w = fn();
	double mib = (double)src_len / (1 << 20);

	return (struct run){ mib / w, mib / (cpu_s() - c0) };
}

static void best(struct run *b, struct run r)
{
	b->wall = r.wall > b->wall ? r.wall : b->wall;
	b->cpu = r.cpu > b->cpu ? r.cpu : b->cpu;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double raw_ra_run(void)
{
	double t;

	raw_read_ahead = true;
	t = raw_run();
	raw_read_ahead = false;
	return t;
}

struct result {
	const char *kind;
	struct run raw, ra, chan, rep;
	double median, median_ra, wire, hurried;
};

static void compare(struct result *res, const char *only)
{
	double ratio[ROUNDS_MAX], ratio_ra[ROUNDS_MAX];

	res->raw = res->ra = res->chan = res->rep = (struct run){ 0, 0 };
	for (int i = 0; i < rounds; i++) {
		/* side by side in time, the stream first in turn: the machine is shared */
		struct run r = { 1, 1 }, a = { 1, 1 }, c = { 1, 1 }, s = { 1, 1 };

		if (i % 2 && (!only || !strcmp(only, "rep")))
			s = measure(rep_run);
		if (!only || !strcmp(only, "raw")) {
			r = measure(raw_run);
			a = measure(raw_ra_run);
		}
		if (!only || !strcmp(only, "chan"))
			c = measure(chan_run);
		if (!(i % 2) && (!only || !strcmp(only, "rep")))
			s = measure(rep_run);
		ratio[i] = s.wall / r.wall;
		ratio_ra[i] = s.wall / a.wall;
		best(&res->raw, r);
		best(&res->ra, a);
		best(&res->chan, c);
		best(&res->rep, s);
	}
	qsort(ratio, (size_t)rounds, sizeof(ratio[0]), cmp_double);
	qsort(ratio_ra, (size_t)rounds, sizeof(ratio_ra[0]), cmp_double);
	res->median = ratio[rounds / 2];
	res->median_ra = ratio_ra[rounds / 2];
	res->wire = (double)last_wire / (double)src_len;
	res->hurried = last_extents ? (double)last_hurried / (double)last_extents : 0;
}

/* GB/s of @fn over the source, by CPU time. */
static double digest_speed(bool sha)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen;
	volatile uint32_t sink = 0;
	double c0 = cpu_s();

	for (size_t o = 0; o < src_len; o += REP_EXTENT_MAX) {
		size_t n = src_len - o < REP_EXTENT_MAX ? src_len - o : REP_EXTENT_MAX;

		if (sha)
			EVP_Digest(src + o, n, md, &mdlen, EVP_sha256(), NULL);
		else
			sink += chan_crc32c(src + o, n);
	}
	(void)sink;
	return (double)src_len / 1e9 / (cpu_s() - c0);
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
	const char *only = getenv("REP_BENCH_ONLY") && *getenv("REP_BENCH_ONLY") ?
			   getenv("REP_BENCH_ONLY") : NULL;
	const char *kind = getenv("REP_BENCH_KIND");
	size_t fixed = getenv("REP_BENCH_EXTENT") ?
		       strtoul(getenv("REP_BENCH_EXTENT"), NULL, 10) << 10 : 0;
	struct result res[2] = { { .kind = "random" }, { .kind = "mix" } };
	double crc, sha, per_byte;

	if (getenv("REP_BENCH_ROUNDS"))
		rounds = atoi(getenv("REP_BENCH_ROUNDS"));
	if (!mib || fixed > REP_EXTENT_MAX || rounds < 1 || rounds > ROUNDS_MAX) {
		fprintf(stderr, "usage: rep_bench [MiB]; REP_BENCH_EXTENT <= 1024 KiB, "
			"REP_BENCH_ROUNDS 1 to %d\n", ROUNDS_MAX);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	qb_log_init("rep_bench", LOG_USER, LOG_EMERG);
	qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
	pki_make();
	world_up();
	for (int k = 0; k < 2; k++) {
		if (kind && strcmp(kind, res[k].kind) != 0)
			continue;
		source_make(mib, k == 1, fixed);
		compare(&res[k], only);
	}
	source_make(mib, false, fixed);
	crc = digest_speed(false);
	sha = digest_speed(true);
	world_down();
	pki_remove();
	printf("rep_bench: %zu MiB per run, %d runs each, %s, extents %s, 127.0.0.1,\n"
	       "  one loop thread (+ a worker per side for the stream); best of the runs and the\n"
	       "  median of the per-round ratios; x/raw > 1: carried the source faster than raw TLS\n",
	       mib, rounds, CIPHER, fixed ? "fixed" : "64 KiB-1 MiB");
	printf("%-31s %8s %10s %6s %6s %8s %6s %5s\n", "throughput (source bytes)", "MiB/s",
	       "MiB/cpu-s", "x/raw", "median", "x/raw+ra", "median", "wire");
	for (int k = 0; k < 2; k++) {
		const struct result *r = &res[k];

		if (kind && strcmp(kind, r->kind) != 0)
			continue;
		printf("%-7s %-23s %8.1f %10.1f\n", r->kind, "raw TLS", r->raw.wall, r->raw.cpu);
		printf("%-7s %-23s %8.1f %10.1f\n", "", "raw TLS, read-ahead", r->ra.wall,
		       r->ra.cpu);
		printf("%-7s %-23s %8.1f %10.1f %6.2f\n", "", "chan stream alone", r->chan.wall,
		       r->chan.cpu, r->chan.wall / r->raw.wall);
		printf("%-7s %-23s %8.1f %10.1f %6.2f %6.2f %8.2f %6.2f %5.2f\n", "",
		       "replica stream", r->rep.wall, r->rep.cpu, r->rep.wall / r->raw.wall,
		       r->median, r->rep.wall / r->ra.wall, r->median_ra, r->wire);
		if (r->hurried > 0)
			printf("%-7s (%.0f%% of the last run's extents skipped zstd: the worker was "
			       "behind)\n", "", 100 * r->hurried);
	}
	per_byte = res[0].rep.cpu > 0 ? 1e3 / (res[0].rep.cpu * 1.048576) : 0; /* ns per byte */
	printf("%-31s %8s %10s\n", "digest, one thread", "GB/s", "% stream");
	printf("%-31s %8.2f %10.1f\n", "CRC32C per frame, chained (used)", crc,
	       per_byte > 0 ? 100.0 * 2 / crc / per_byte : 0);
	printf("%-31s %8.2f %10.1f\n", "SHA-256 (EVP) instead", sha,
	       per_byte > 0 ? 100.0 * 2 / sha / per_byte : 0);
	printf("(%% stream: both ends' digest work over the stream's CPU time per byte, random)\n"
	       "zstd level %d, tried when a %u x %u B sample shrinks by 1/16, kept when it saves 1/8\n",
	       REP_ZSTD_LEVEL, REP_PROBE_SLICES, REP_PROBE_SLICE);
	free(src);
	free(ext_len);
	qb_log_fini();
	return 0;
}
