/*
 * chan_tls.c: the channel's OpenSSL side. Contexts (TLS 1.3 only, mutual
 * authentication, no session resumption so every connection meets the
 * current membership), the verification of the other side's name, and the
 * one helper through which every OpenSSL error reaches the log.
 */
#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "proto/chan_priv.h"

#define CHAN_CIPHERS "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

struct chan_tls {
	SSL_CTX *srv; /* replaced whole by chan_tls_reload(); SSLs keep a reference */
	SSL_CTX *cli;
	chan_authorize_fn authorize;
	void *opaque;
};

bool chan_ssl_log(int pri, const char *who, const char *what)
{
	unsigned long e = ERR_peek_error();
	bool eof = ERR_GET_LIB(e) == ERR_LIB_SSL &&
		   ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
	char buf[256];

	if (!e)
		qb_log(pri, "chan %s: %s", who, what);
	while ((e = ERR_get_error())) {
		ERR_error_string_n(e, buf, sizeof(buf));
		qb_log(pri, "chan %s: %s: %s", who, what, buf);
	}
	return eof;
}

bool chan_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > CHAN_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = name[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_'))
			return false;
	}
	return true;
}

/* ---- verification ---- */

/*
 * The node name: the certificate's one DNS subjectAltName. One, because the
 * name is an identity checked against membership, and a certificate naming
 * two nodes would let one stand in for the other. NULL, or why not.
 */
static const char *cert_name(X509 *cert, char *out, size_t outlen)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	const char *why = "no DNS subjectAltName";
	int found = 0;

	for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		const ASN1_IA5STRING *s = g->d.dNSName;
		int len;

		if (g->type != GEN_DNS)
			continue;
		if (found++) {
			why = "more than one DNS subjectAltName";
			goto out;
		}
		len = ASN1_STRING_length(s);
		why = "invalid DNS subjectAltName";
		if (len <= 0 || (size_t)len >= outlen)
			goto out;
		memcpy(out, ASN1_STRING_get0_data(s), (size_t)len);
		out[len] = '\0';
		if (strlen(out) != (size_t)len || !chan_name_valid(out))
			goto out;
		why = NULL;
	}
out:
	GENERAL_NAMES_free(gens);
	return why;
}

static int refuse(struct chan_ident *id, X509_STORE_CTX *x, const char *why, const char *name)
{
	qb_log(LOG_WARNING, "chan %s: refusing certificate of '%s': %s", id->label, name, why);
	X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
	return 0;
}

/* The chain is good: is it the node we want, and one of the cluster? */
static int check_leaf(struct chan_ident *id, X509_STORE_CTX *x, X509 *cert)
{
	char name[CHAN_NAME_MAX + 1] = "";
	const char *why = cert_name(cert, name, sizeof(name));

	if (why)
		return refuse(id, x, why, name);
	if (id->expect[0] && strcasecmp(name, id->expect) != 0)
		return refuse(id, x, "not the node we connected to", name);
	if (!id->authorize(name, id->opaque))
		return refuse(id, x, "not a member of the cluster", name);
	snprintf(id->name, sizeof(id->name), "%s", name);
	snprintf(id->label, sizeof(id->label), "%s at %s", name, id->addr);
	return 1;
}

static int verify_cb(int ok, X509_STORE_CTX *x)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct chan_ident *id = ssl ? SSL_get_app_data(ssl) : NULL;
	X509 *cert = X509_STORE_CTX_get_current_cert(x);
	int depth = X509_STORE_CTX_get_error_depth(x);
	char subject[256] = "?";

	if (!id || !cert)
		return 0;
	if (ok)
		return depth > 0 ? 1 : check_leaf(id, x, cert);
	X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
	qb_log(LOG_WARNING, "chan %s: refusing certificate '%s' (depth %d): %s", id->label,
	       subject, depth, X509_verify_cert_error_string(X509_STORE_CTX_get_error(x)));
	return 0;
}

/* ---- a socket BIO that cannot raise SIGPIPE ---- */

/*
 * OpenSSL's socket BIO writes with write(2): a peer that has gone would
 * kill a process that does not ignore SIGPIPE. A library should not demand
 * that of its host, so writes go through send(MSG_NOSIGNAL); the rest is
 * the stock socket BIO.
 */
static BIO_METHOD *nosig_meth;

static int nosig_write(BIO *b, const char *buf, int len)
{
	int fd = -1;
	ssize_t n;

	BIO_get_fd(b, &fd);
	errno = 0;
	n = send(fd, buf, (size_t)len, MSG_NOSIGNAL);
	BIO_clear_retry_flags(b);
	if (n <= 0 && BIO_sock_should_retry((int)n))
		BIO_set_retry_write(b);
	return (int)n;
}

static void nosig_init(void)
{
	const BIO_METHOD *s = BIO_s_socket();
	BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOCKET, "chan socket");

	if (!m || !BIO_meth_set_write(m, nosig_write) ||
	    !BIO_meth_set_read(m, BIO_meth_get_read(s)) ||
	    !BIO_meth_set_puts(m, BIO_meth_get_puts(s)) ||
	    !BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(s)) ||
	    !BIO_meth_set_create(m, BIO_meth_get_create(s)) ||
	    !BIO_meth_set_destroy(m, BIO_meth_get_destroy(s))) {
		BIO_meth_free(m);
		return;
	}
	nosig_meth = m;
}

/* @fd in a BIO for @ssl; the fd stays ours to close. */
static int ssl_set_socket(SSL *ssl, int fd)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	BIO *bio;

	pthread_once(&once, nosig_init);
	if (!nosig_meth)
		return SSL_set_fd(ssl, fd) ? 0 : -1;
	bio = BIO_new(nosig_meth);
	if (!bio)
		return -1;
	BIO_set_fd(bio, fd, BIO_NOCLOSE);
	SSL_set_bio(ssl, bio, bio);
	return 0;
}

/* ---- contexts ---- */

static int ctx_policy(SSL_CTX *ctx, bool server)
{
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(ctx, CHAN_CIPHERS))
		return -EPROTO;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
	/* Partial writes: our buffer is consumed record by record, and moves. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* Many records per read(2) instead of two reads per record. */
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_default_read_buffer_len(ctx, 128u << 10);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	if (server && !SSL_CTX_set_num_tickets(ctx, 0))
		return -EPROTO;
	return 0;
}

static SSL_CTX *ctx_new(const struct chan_tls_cfg *cfg, bool server)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	const char *file = "(context)";
	const char *what = "cannot create a TLS context";

	if (!ctx)
		goto out;
	what = "cannot set the TLS 1.3 policy";
	if (ctx_policy(ctx, server) < 0)
		goto out;
	file = cfg->ca_file;
	what = "cannot load the CA";
	if (!SSL_CTX_load_verify_file(ctx, cfg->ca_file))
		goto out;
	file = cfg->cert_file;
	what = "cannot load the certificate";
	if (!SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file))
		goto out;
	file = cfg->key_file;
	what = "cannot load the key, or it does not match the certificate";
	if (!SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) ||
	    !SSL_CTX_check_private_key(ctx))
		goto out;
	return ctx;
out:
	chan_ssl_log(LOG_ERR, file, what);
	SSL_CTX_free(ctx);
	return NULL;
}

/* Both contexts of @cfg, or -errno with nothing changed. */
static int ctx_pair(const struct chan_tls_cfg *cfg, SSL_CTX **srv, SSL_CTX **cli)
{
	if (!cfg || !cfg->ca_file || !cfg->cert_file || !cfg->key_file)
		return -EINVAL;
	*srv = ctx_new(cfg, true);
	*cli = *srv ? ctx_new(cfg, false) : NULL;
	if (*cli)
		return 0;
	SSL_CTX_free(*srv);
	*srv = NULL;
	return -EPROTO;
}

struct chan_tls *chan_tls_new(const struct chan_tls_cfg *cfg, chan_authorize_fn authorize,
			      void *opaque)
{
	struct chan_tls *tls = NULL;
	int rc = -EINVAL;

	if (!authorize)
		goto out;
	rc = -ENOMEM;
	tls = calloc(1, sizeof(*tls));
	if (!tls)
		goto out;
	tls->authorize = authorize;
	tls->opaque = opaque;
	rc = ctx_pair(cfg, &tls->srv, &tls->cli);
out:
	if (rc < 0) {
		free(tls);
		errno = -rc;
		return NULL;
	}
	return tls;
}

int chan_tls_reload(struct chan_tls *tls, const struct chan_tls_cfg *cfg)
{
	SSL_CTX *srv = NULL, *cli = NULL;
	int rc = ctx_pair(cfg, &srv, &cli);

	if (rc < 0) {
		qb_log(LOG_ERR, "chan: certificate reload failed, keeping the current ones");
		return rc;
	}
	SSL_CTX_free(tls->srv);
	SSL_CTX_free(tls->cli);
	tls->srv = srv;
	tls->cli = cli;
	qb_log(LOG_INFO, "chan: certificates reloaded from %s", cfg->cert_file);
	return 0;
}

void chan_tls_free(struct chan_tls *tls)
{
	if (!tls)
		return;
	SSL_CTX_free(tls->srv);
	SSL_CTX_free(tls->cli);
	free(tls);
}

SSL *chan_tls_ssl_new(struct chan_tls *tls, bool server, int fd, struct chan_ident *id)
{
	SSL *ssl = SSL_new(server ? tls->srv : tls->cli);
	X509_VERIFY_PARAM *param;

	if (!ssl)
		goto fail;
	id->authorize = tls->authorize;
	id->opaque = tls->opaque;
	SSL_set_app_data(ssl, id);
	if (ssl_set_socket(ssl, fd) < 0)
		goto fail;
	if (server) {
		SSL_set_accept_state(ssl);
		return ssl;
	}
	SSL_set_connect_state(ssl);
	/* OpenSSL's own host check too, beside ours in check_leaf(). */
	param = SSL_get0_param(ssl);
	X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_WILDCARDS);
	if (!X509_VERIFY_PARAM_set1_host(param, id->expect, 0))
		goto fail;
	return ssl;
fail:
	chan_ssl_log(LOG_ERR, id->label, "cannot set up TLS");
	SSL_free(ssl);
	return NULL;
}
