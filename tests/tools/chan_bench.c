/*
 * chan_bench: the node channel's bulk throughput against plain TLS with the
 * same cipher, and its small-call latency, measured in one run.
 *
 *   chan_bench [MiB]      (default 256 per throughput run)
 *
 * Both ends run in this process on one thread over 127.0.0.1, so each byte
 * is encrypted and decrypted on the same core in both measurements: the
 * ratio shows what framing, protobuf, CRC32C and flow control cost on top of
 * TLS itself. Two baselines: OpenSSL's defaults, and the same with the
 * read-ahead chan turns on (128 KiB, many records per read(2)). Runs come
 * side by side in time, five of each kind: the table shows the best of each
 * by wall clock and by CPU time (steadier on a shared machine), chan's best
 * over the baseline's best (chan/x) and the median of the per-round ratios. A throwaway CA
 * and node certificate are generated into a temporary directory with the
 * OpenSSL API.
 *
 * For experiments: CHAN_BENCH_ONLY=chan|raw runs one kind alone (for a
 * profiler), CHAN_BENCH_WINDOW=KiB sets the receiver's window (4096) and
 * CHAN_BENCH_CHUNK=KiB the bytes per write on both kinds (256).
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
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <qb/qblog.h>
#include <qb/qbloop.h>

#include "proto/chan.h"

#define CIPHER "TLS_AES_256_GCM_SHA384"
#define CHUNK (256u << 10) /* the most per write; CHAN_BENCH_CHUNK lowers it */
#define WINDOW (4u << 20)
#define ROUNDS 5
#define PINGS 20000

static char dir[64];
static struct chan_tls_cfg files;
static char ca_path[96], crt_path[96], key_path[96];
static uint8_t chunk[CHUNK];
static size_t chunk_len = CHUNK;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "chan_bench: %s\n", what);
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

	snprintf(dir, sizeof(dir), "/tmp/chan-bench-XXXXXX");
	if (!mkdtemp(dir))
		die("mkdtemp");
	snprintf(ca_path, sizeof(ca_path), "%s/ca.pem", dir);
	snprintf(crt_path, sizeof(crt_path), "%s/bench.crt", dir);
	snprintf(key_path, sizeof(key_path), "%s/bench.key", dir);
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
	rmdir(dir);
}

/* ---- baseline: SSL_write / SSL_read over loopback TCP, one thread ---- */

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
		/* non-blocking, like the channel's */
		if (fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK) < 0)
			die("fcntl");
	}
}

static bool want_retry(SSL *ssl, int n)
{
	int e = SSL_get_error(ssl, n);

	if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
		die("baseline TLS I/O failed");
	return true;
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

/* Write until the socket is full, read until it is empty; again. MiB/s. */
static double raw_run(size_t total)
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
	while (got < total) {
		while (sent < total) {
			size_t k = total - sent < chunk_len ? total - sent : chunk_len;

			n = SSL_write(w, chunk, (int)k);
			if (n <= 0 && want_retry(w, n))
				break;
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
	return (double)total / (1 << 20) / t0;
}

/* ---- the channel ---- */

struct bench {
	qb_loop_t *loop;
	struct chan_tls *tls;
	struct chan_server *srv;
	struct chan_peer *peer;
	/* stream */
	uint64_t total, sent, got;
	bool finished;
	int ends;
	int err;
	/* calls */
	double *lat;
	int calls, done;
	double t_call;
};

static bool accept_all(const char *name, void *opaque)
{
	return strcmp(name, "bench") == 0;
}

static void snd_writable(struct chan_stream *st, void *opaque)
{
	struct bench *b = opaque;

	while (b->sent < b->total) {
		uint64_t left = b->total - b->sent;
		ssize_t n = chan_stream_write(st, chunk, left < chunk_len ? (size_t)left : chunk_len);

		if (n < 0)
			return;
		b->sent += (uint64_t)n;
	}
	if (!b->finished && chan_stream_finish(st) == 0)
		b->finished = true;
}

static void st_end(struct chan_stream *st, int err, const char *msg, void *opaque)
{
	struct bench *b = opaque;

	if (err)
		fprintf(stderr, "chan_bench: stream ended: %s\n", msg);
	b->err = b->err ? b->err : err;
	if (++b->ends == 2)
		qb_loop_stop(b->loop);
}

static void rcv_data(struct chan_stream *st, const void *buf, size_t len, void *opaque)
{
	struct bench *b = opaque;

	b->got += len;
	chan_stream_consume(st, len);
}

static const struct chan_stream_ops snd_ops = { .writable = snd_writable, .end = st_end };
static const struct chan_stream_ops rcv_ops = { .data = rcv_data, .end = st_end };

static int h_bulk(struct chan_stream *st, const void *hdr, size_t len, void *opaque)
{
	chan_stream_accept(st, 0, &snd_ops, opaque);
	return 0;
}

static void h_ping(struct chan_reply *r, const void *body, size_t len, void *opaque)
{
	chan_reply_ok(r, body, len);
}

static void bench_up(struct bench *b)
{
	memset(b, 0, sizeof(*b));
	b->loop = qb_loop_create();
	b->tls = chan_tls_new(&files, accept_all, NULL);
	if (!b->loop || !b->tls)
		die("cannot set up the channel");
	b->srv = chan_server_new(b->loop, b->tls, NULL);
	if (!b->srv || chan_server_listen(b->srv, "127.0.0.1", 0) < 0 ||
	    chan_handle_stream(b->srv, "bulk", h_bulk, b) < 0 ||
	    chan_handle(b->srv, "ping", h_ping, b) < 0)
		die("cannot start the server");
	b->peer = chan_peer_new(b->loop, b->tls, "bench", "127.0.0.1", chan_server_port(b->srv),
				NULL);
	if (!b->peer)
		die("cannot make the peer");
}

static void bench_down(struct bench *b)
{
	chan_peer_free(b->peer);
	chan_server_free(b->srv);
	chan_tls_free(b->tls);
	qb_loop_destroy(b->loop);
}

static void on_warm(int err, const void *body, size_t len, const char *msg, void *opaque)
{
	struct bench *b = opaque;

	if (err)
		die(msg);
	qb_loop_stop(b->loop);
}

/* Connect first, so the run measures the transfer only. */
static void warm_up(struct bench *b)
{
	if (chan_call(b->peer, "ping", "", 0, 5000, on_warm, b) < 0)
		die("cannot call");
	qb_loop_run(b->loop);
}

static double chan_run(size_t total)
{
	size_t window = getenv("CHAN_BENCH_WINDOW") ? strtoul(getenv("CHAN_BENCH_WINDOW"), NULL, 10) << 10 : WINDOW;
	struct bench b;
	double t0;

	bench_up(&b);
	warm_up(&b);
	b.total = total;
	t0 = now_s();
	if (!chan_stream_open(b.peer, "bulk", "", 0, CHAN_STREAM_PULL, window, 5000, &rcv_ops, &b))
		die("cannot open a stream");
	qb_loop_run(b.loop);
	t0 = now_s() - t0;
	if (b.err || b.got != total)
		die("the stream did not complete");
	bench_down(&b);
	return (double)total / (1 << 20) / t0;
}

/* ---- small-call latency ---- */

static void next_call(struct bench *b);

static void on_pong(int err, const void *body, size_t len, const char *msg, void *opaque)
{
	struct bench *b = opaque;

	if (err)
		die(msg);
	b->lat[b->done++] = now_s() - b->t_call;
	if (b->done == b->calls)
		qb_loop_stop(b->loop);
	else
		next_call(b);
}

static void next_call(struct bench *b)
{
	static const char body[64] = "ping";

	b->t_call = now_s();
	if (chan_call(b->peer, "ping", body, sizeof(body), 5000, on_pong, b) < 0)
		die("cannot call");
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void latency(double *p50, double *p99)
{
	struct bench b;

	bench_up(&b);
	warm_up(&b);
	b.calls = PINGS;
	b.lat = calloc(PINGS, sizeof(double));
	next_call(&b);
	qb_loop_run(b.loop);
	qsort(b.lat, PINGS, sizeof(double), cmp_double);
	*p50 = b.lat[PINGS / 2] * 1e6;
	*p99 = b.lat[PINGS * 99 / 100] * 1e6;
	free(b.lat);
	bench_down(&b);
}

/* One throughput run: wall and CPU seconds for @total bytes. */
struct run {
	double wall, cpu;
};

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct run measure(double (*fn)(size_t), size_t total)
{
	double c0 = cpu_s(), w = fn(total);

	return (struct run){ w, (double)total / (1 << 20) / (cpu_s() - c0) };
}

static int cmp_run_ratio(const void *a, const void *b)
{
	return cmp_double(a, b);
}

static double raw_ra_run(size_t total)
{
	double r;

	raw_read_ahead = true;
	r = raw_run(total);
	raw_read_ahead = false;
	return r;
}

static void best(struct run *b, struct run r)
{
	b->wall = r.wall > b->wall ? r.wall : b->wall;
	b->cpu = r.cpu > b->cpu ? r.cpu : b->cpu;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
	/* CHAN_BENCH_ONLY=chan|raw: one side alone, for a profiler */
	const char *only = getenv("CHAN_BENCH_ONLY") && *getenv("CHAN_BENCH_ONLY") ? getenv("CHAN_BENCH_ONLY") : NULL;
	struct run raw = { 0, 0 }, ra = { 0, 0 }, ch = { 0, 0 };
	double ratio[ROUNDS], ratio_ra[ROUNDS], p50 = 0, p99 = 0;

	if (!mib) {
		fprintf(stderr, "usage: chan_bench [MiB]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	qb_log_init("chan_bench", LOG_USER, LOG_EMERG);
	qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
	for (size_t i = 0; i < sizeof(chunk); i++)
		chunk[i] = (uint8_t)(i * 7);
	if (getenv("CHAN_BENCH_CHUNK"))
		chunk_len = strtoul(getenv("CHAN_BENCH_CHUNK"), NULL, 10) << 10;
	if (!chunk_len || chunk_len > CHUNK)
		chunk_len = CHUNK;
	pki_make();
	for (int i = 0; i < ROUNDS; i++) {
		/* side by side in time, in turn first: the machine is shared */
		struct run r = { 1, 1 }, a = { 1, 1 }, c = { 1, 1 };

		if (i % 2 && (!only || !strcmp(only, "chan")))
			c = measure(chan_run, mib << 20);
		if (!only || !strcmp(only, "raw")) {
			r = measure(raw_run, mib << 20);
			a = measure(raw_ra_run, mib << 20);
		}
		if (!(i % 2) && (!only || !strcmp(only, "chan")))
			c = measure(chan_run, mib << 20);
		ratio[i] = c.wall / r.wall;
		ratio_ra[i] = c.wall / a.wall;
		best(&raw, r);
		best(&ra, a);
		best(&ch, c);
	}
	qsort(ratio, ROUNDS, sizeof(ratio[0]), cmp_run_ratio);
	qsort(ratio_ra, ROUNDS, sizeof(ratio_ra[0]), cmp_run_ratio);
	if (!only)
		latency(&p50, &p99);
	pki_remove();
	printf("chan_bench: %zu MiB per run, %d runs each, %s, one thread, 127.0.0.1\n", mib,
	       ROUNDS, CIPHER);
	printf("%-34s %9s %10s %7s %7s\n", "throughput", "MiB/s", "MiB/cpu-s", "chan/x",
	       "median");
	printf("%-34s %9.1f %10.1f %7.2f %7.2f\n", "raw TLS, SSL_write/SSL_read loop", raw.wall,
	       raw.cpu, ch.wall / raw.wall, ratio[ROUNDS / 2]);
	printf("%-34s %9.1f %10.1f %7.2f %7.2f\n", "raw TLS, same + 128K read-ahead", ra.wall,
	       ra.cpu, ch.wall / ra.wall, ratio_ra[ROUNDS / 2]);
	printf("%-34s %9.1f %10.1f\n", "chan stream (4 MiB window)", ch.wall, ch.cpu);
	printf("%-34s %9s %10s\n", "latency", "p50 us", "p99 us");
	printf("%-34s %9.1f %10.1f\n", "chan call, 64 B echo", p50, p99);
	qb_log_fini();
	return 0;
}
