/* util_certs: see util_certs.h. Test code: failures print and return NULL. */
#include "tests/unit/util_certs.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
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

#define DAY (24L * 3600L)

struct pki {
	char dir[64];
	char ca[96];
	char crt[96];
	char key[96];
};

/* ---- certificates ---- */

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	int ok = e && X509_add_ext(x, e, -1);

	X509_EXTENSION_free(e);
	return ok ? 0 : -1;
}

struct cert_spec {
	const char *name; /* file name */
	const char *cn;
	const char *san; /* "DNS:a,DNS:b" or NULL */
	long from, to;	 /* seconds from now */
	bool ca;
};

static int cert_exts(X509 *x, X509 *issuer, const struct cert_spec *s)
{
	X509V3_CTX ctx;
	int rc = 0;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	rc |= add_ext(x, &ctx, NID_basic_constraints, s->ca ? "critical,CA:TRUE" : "CA:FALSE");
	rc |= add_ext(x, &ctx, NID_key_usage,
		      s->ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
	rc |= add_ext(x, &ctx, NID_subject_key_identifier, "hash");
	rc |= add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always");
	if (!s->ca)
		rc |= add_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth");
	if (s->san)
		rc |= add_ext(x, &ctx, NID_subject_alt_name, s->san);
	return rc;
}

static X509 *cert_make(const struct cert_spec *s, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ikey)
{
	static long serial = 1;
	X509 *x = X509_new();
	X509_NAME *n = x ? X509_get_subject_name(x) : NULL;

	if (!x || !X509_set_version(x, X509_VERSION_3) ||
	    !ASN1_INTEGER_set(X509_get_serialNumber(x), serial++) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), s->from) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), s->to) || !X509_set_pubkey(x, key) ||
	    !X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)s->cn, -1,
					-1, 0) ||
	    !X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n) ||
	    cert_exts(x, issuer, s) < 0 || !X509_sign(x, ikey ? ikey : key, EVP_sha256())) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static int write_pem(struct pki *k, const char *file, X509 *x, EVP_PKEY *key)
{
	char path[160];
	FILE *f;
	int ok;

	snprintf(path, sizeof(path), "%s/%s", k->dir, file);
	f = fopen(path, "w");
	if (!f)
		return -1;
	ok = x ? PEM_write_X509(f, x) : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	return fclose(f) == 0 && ok ? 0 : -1;
}

/* @s->name.crt/.key (or .pem for a CA) signed by @issuer (NULL: itself). */
static int issue(struct pki *k, const struct cert_spec *s, X509 *issuer, EVP_PKEY *ikey,
		 X509 **out, EVP_PKEY **out_key)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = key ? cert_make(s, key, issuer, ikey) : NULL;
	char crt[80], kf[80];
	int rc = -1;

	snprintf(crt, sizeof(crt), "%s.%s", s->name, s->ca ? "pem" : "crt");
	snprintf(kf, sizeof(kf), "%s.key", s->name);
	if (x && write_pem(k, crt, x, NULL) == 0 && write_pem(k, kf, NULL, key) == 0)
		rc = 0;
	if (rc == 0 && out) {
		*out = x;
		*out_key = key;
		return 0;
	}
	X509_free(x);
	EVP_PKEY_free(key);
	return rc;
}

static const struct cert_spec cas[] = {
	{ "ca", "hca cluster CA", NULL, -DAY, 30 * DAY, true },
	{ "ca2", "some other CA", NULL, -DAY, 30 * DAY, true },
};

static const struct cert_spec nodes[] = {
	{ "node1", "node1", "DNS:node1", -DAY, 30 * DAY, false },
	{ "node2", "node2", "DNS:node2", -DAY, 30 * DAY, false },
	{ "node3", "node3", "DNS:node3", -DAY, 30 * DAY, false },
	{ "intruder", "intruder", "DNS:intruder", -DAY, 30 * DAY, false },
	{ "expired", "node2", "DNS:node2", -2 * DAY, -DAY, false },
	{ "notyet", "node2", "DNS:node2", DAY, 2 * DAY, false },
	{ "foreign", "node2", "DNS:node2", -DAY, 30 * DAY, false },
	{ "twosan", "node2", "DNS:node2,DNS:node3", -DAY, 30 * DAY, false },
	{ "nosan", "node2", NULL, -DAY, 30 * DAY, false },
};

static int pki_fill(struct pki *k)
{
	X509 *ca[2] = { NULL, NULL };
	EVP_PKEY *cakey[2] = { NULL, NULL };
	int rc = 0;

	for (int i = 0; i < 2 && rc == 0; i++)
		rc = issue(k, &cas[i], NULL, NULL, &ca[i], &cakey[i]);
	for (size_t i = 0; rc == 0 && i < sizeof(nodes) / sizeof(nodes[0]); i++) {
		int which = strcmp(nodes[i].name, "foreign") == 0;

		rc = issue(k, &nodes[i], ca[which], cakey[which], NULL, NULL);
	}
	for (int i = 0; i < 2; i++) {
		X509_free(ca[i]);
		EVP_PKEY_free(cakey[i]);
	}
	return rc;
}

struct pki *pki_new(void)
{
	struct pki *k = calloc(1, sizeof(*k));

	if (!k)
		return NULL;
	snprintf(k->dir, sizeof(k->dir), "/tmp/hca-pki-XXXXXX");
	if (!mkdtemp(k->dir)) {
		perror("mkdtemp");
		free(k);
		return NULL;
	}
	if (pki_fill(k) < 0) {
		ERR_print_errors_fp(stderr);
		fprintf(stderr, "pki_new: cannot generate certificates in %s\n", k->dir);
		pki_free(k);
		return NULL;
	}
	return k;
}

void pki_free(struct pki *k)
{
	DIR *d;
	struct dirent *e;
	char path[400];

	if (!k)
		return;
	d = opendir(k->dir);
	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", k->dir, e->d_name);
		unlink(path);
	}
	if (d)
		closedir(d);
	rmdir(k->dir);
	free(k);
}

void pki_cfg(struct pki *k, const char *who, struct chan_tls_cfg *cfg)
{
	snprintf(k->ca, sizeof(k->ca), "%s/ca.pem", k->dir);
	snprintf(k->crt, sizeof(k->crt), "%s/%s.crt", k->dir, who);
	snprintf(k->key, sizeof(k->key), "%s/%s.key", k->dir, who);
	/* Copies per call would be nicer; chan_tls_new() reads them at once. */
	cfg->ca_file = k->ca;
	cfg->cert_file = k->crt;
	cfg->key_file = k->key;
}

bool pki_member(const char *name, void *opaque)
{
	return strcmp(name, "node1") == 0 || strcmp(name, "node2") == 0 ||
	       strcmp(name, "node3") == 0;
}

/* ---- the raw client ---- */

struct raw_client {
	pthread_t th;
	atomic_bool done;
	uint16_t port;
	struct raw_opts o;
	struct raw_result res;
	char ca[160], crt[160], key[160];
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static SSL *raw_tls(struct raw_client *rc, int fd, SSL_CTX **ctxp)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = NULL;

	*ctxp = ctx;
	if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_load_verify_file(ctx, rc->ca) ||
	    !SSL_CTX_use_certificate_chain_file(ctx, rc->crt) ||
	    !SSL_CTX_use_PrivateKey_file(ctx, rc->key, SSL_FILETYPE_PEM))
		return NULL;
	ssl = SSL_new(ctx);
	if (ssl)
		SSL_set_fd(ssl, fd);
	return ssl;
}

/* Did the server end it (rather than our receive timeout)? */
static bool server_ended(SSL *ssl, long n, int err)
{
	bool timeout = err == EAGAIN || err == EWOULDBLOCK;

	if (ssl)
		timeout = timeout && SSL_get_error(ssl, (int)n) == SSL_ERROR_SYSCALL;
	return !timeout;
}

static void raw_exchange(struct raw_client *rc, int fd, SSL *ssl)
{
	char buf[16384];
	long n;

	if (rc->o.send_len && ssl)
		SSL_write(ssl, rc->o.send, (int)rc->o.send_len);
	else if (rc->o.send_len)
		send(fd, rc->o.send, rc->o.send_len, MSG_NOSIGNAL);
	if (rc->o.no_read) {
		/* wait for the server to hang up, reading nothing */
		struct pollfd pfd = { .fd = fd, .events = POLLRDHUP };

		rc->res.closed = poll(&pfd, 1, (int)rc->o.timeout_ms) > 0;
		return;
	}
	for (;;) {
		errno = 0;
		n = ssl ? SSL_read(ssl, buf, sizeof(buf)) : recv(fd, buf, sizeof(buf), 0);
		if (n <= 0) {
			rc->res.closed = server_ended(ssl, n, errno);
			return;
		}
		rc->res.received += (size_t)n;
		if (rc->o.abort_after && rc->res.received >= rc->o.abort_after) {
			struct linger lg = { .l_onoff = 1, .l_linger = 0 };

			setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			return; /* closing now sends a reset */
		}
	}
}

static void *raw_main(void *data)
{
	struct raw_client *rc = data;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(rc->port) };
	struct timeval tv = { .tv_sec = rc->o.timeout_ms / 1000,
			      .tv_usec = (rc->o.timeout_ms % 1000) * 1000 };
	uint64_t t0 = now_ms();
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto out;
	if (rc->o.who) {
		ssl = raw_tls(rc, fd, &ctx);
		rc->res.handshake_ok = ssl && SSL_connect(ssl) == 1;
		if (!rc->res.handshake_ok) {
			rc->res.closed = true;
			goto out;
		}
	}
	errno = 0;
	raw_exchange(rc, fd, ssl);
out:
	rc->res.ms = (unsigned)(now_ms() - t0);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	if (fd >= 0)
		close(fd);
	atomic_store(&rc->done, true);
	return NULL;
}

struct raw_client *raw_client_start(struct pki *k, uint16_t port, const struct raw_opts *o)
{
	struct raw_client *rc = calloc(1, sizeof(*rc));

	if (!rc)
		return NULL;
	rc->port = port;
	rc->o = *o;
	if (!rc->o.timeout_ms)
		rc->o.timeout_ms = 2000;
	if (o->who) {
		snprintf(rc->ca, sizeof(rc->ca), "%s/ca.pem", k->dir);
		snprintf(rc->crt, sizeof(rc->crt), "%s/%s.crt", k->dir, o->who);
		snprintf(rc->key, sizeof(rc->key), "%s/%s.key", k->dir, o->who);
	}
	if (pthread_create(&rc->th, NULL, raw_main, rc) != 0) {
		free(rc);
		return NULL;
	}
	return rc;
}

bool raw_client_done(struct raw_client *rc)
{
	return atomic_load(&rc->done);
}

void raw_client_join(struct raw_client *rc, struct raw_result *res)
{
	pthread_join(rc->th, NULL);
	*res = rc->res;
	free(rc);
}

/* ---- loop helpers ---- */

struct until {
	qb_loop_t *loop;
	bool (*cond)(void *);
	void *arg;
	uint64_t deadline;
	bool met;
	qb_loop_timer_handle th;
};

static void until_cb(void *data)
{
	struct until *u = data;

	u->th = 0;
	u->met = u->cond && u->cond(u->arg);
	if (u->met || now_ms() >= u->deadline) {
		qb_loop_stop(u->loop);
		return;
	}
	qb_loop_timer_add(u->loop, QB_LOOP_LOW, 2 * QB_TIME_NS_IN_MSEC, u, until_cb, &u->th);
}

bool loop_run_until(qb_loop_t *loop, bool (*cond)(void *), void *arg, unsigned max_ms)
{
	struct until u = { loop, cond, arg, now_ms() + max_ms, false, 0 };

	if (cond && cond(arg))
		return true;
	qb_loop_timer_add(loop, QB_LOOP_LOW, 1 * QB_TIME_NS_IN_MSEC, &u, until_cb, &u.th);
	qb_loop_run(loop);
	if (u.th)
		qb_loop_timer_del(loop, u.th);
	return u.met || (cond && cond(arg));
}

void loop_run_for(qb_loop_t *loop, unsigned ms)
{
	loop_run_until(loop, NULL, NULL, ms);
}

/* ---- log capture ---- */

#define LOG_LINES 1024
static char log_ring[LOG_LINES][320];
static unsigned log_next;
static bool log_echo;

static void log_fn(int32_t t, struct qb_log_callsite *cs, struct timespec *ts, const char *msg)
{
	snprintf(log_ring[log_next++ % LOG_LINES], sizeof(log_ring[0]), "%s", msg);
	if (log_echo)
		fprintf(stderr, "  log: %s\n", msg);
}

void log_capture_start(void)
{
	int32_t t = qb_log_custom_open(log_fn, NULL, NULL, NULL);

	log_echo = getenv("HCA_TEST_VERBOSE") != NULL;
	qb_log_ctl(t, QB_LOG_CONF_ENABLED, QB_TRUE);
	qb_log_filter_ctl(t, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*", LOG_DEBUG);
}

void log_capture_clear(void)
{
	memset(log_ring, 0, sizeof(log_ring));
	log_next = 0;
}

static bool line_has_all(const char *line, const char *first, va_list ap)
{
	for (const char *s = first; s; s = va_arg(ap, const char *))
		if (!strstr(line, s))
			return false;
	return true;
}

bool log_has(const char *s, ...)
{
	for (unsigned i = 0; i < LOG_LINES; i++) {
		va_list ap;
		bool ok;

		if (!log_ring[i][0])
			continue;
		va_start(ap, s);
		ok = line_has_all(log_ring[i], s, ap);
		va_end(ap);
		if (ok)
			return true;
	}
	return false;
}

struct chan_tls *pki_tls(struct pki *k, const char *who)
{
	struct chan_tls_cfg c;
	struct chan_tls *t;

	pki_cfg(k, who, &c);
	t = chan_tls_new(&c, pki_member, NULL);
	if (!t) { /* the test cannot go on without its identity */
		fprintf(stderr, "pki_tls(%s): %s\n", who, strerror(errno));
		abort();
	}
	return t;
}
