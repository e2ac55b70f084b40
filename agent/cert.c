/*
 * cert: the cluster PKI on OpenSSL 3 (see cert.h). Keys are EC P-256, the
 * curve every TLS stack we meet accepts (OpenSSL for the agents, GnuTLS
 * inside QEMU). Files go through a "stage": each is written and fsync'd
 * under a temporary name, then all are put in place together, so a failure
 * anywhere before that leaves the directories as they were.
 */
#include "agent/cert.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* A certificate or key is a few KiB; anything bigger is not one. */
#define PEM_FILE_MAX (64u * 1024u)
/* Nodes' clocks differ a little: a certificate must not start in their future. */
#define BACKDATE_S 3600
#define STAGE_FILES 16
#define STAGE_DIRS 8

/* ---- errors ---- */

__attribute__((format(printf, 4, 5)))
static int fail(int code, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return code;
}

/*
 * The one place OpenSSL's error queue is read. OpenSSL stacks reasons from
 * the root cause up, so the earliest is the one to show; the whole queue is
 * drained so that a stale entry never explains a later failure.
 */
__attribute__((format(printf, 4, 5)))
static int ossl_fail(int code, char *err, size_t errlen, const char *fmt, ...)
{
	unsigned long e, first = 0;
	const char *reason = NULL;
	char what[512];
	va_list ap;

	while ((e = ERR_get_error()))
		if (!first)
			first = e;
	if (first)
		reason = ERR_reason_error_string(first);
	if (first && ERR_GET_REASON(first) == ERR_R_MALLOC_FAILURE)
		code = -ENOMEM;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (reason)
		return fail(code, err, errlen, "%s: %s", what, reason);
	return fail(code, err, errlen, "%s", what);
}

/* ---- paths and checks ---- */

static int join(char *buf, const char *dir, const char *name, char *err, size_t errlen)
{
	int n = snprintf(buf, PATH_MAX, "%s/%s", dir, name);

	if (n < 0 || n >= PATH_MAX)
		return fail(-ENAMETOOLONG, err, errlen, "%s/%s: path too long", dir, name);
	return 0;
}

/* 1 if @path exists, 0 if not, -errno if we cannot tell. */
static int exists(const char *path)
{
	struct stat sb;

	if (!lstat(path, &sb))
		return 1;
	return errno == ENOENT ? 0 : -errno;
}

/*
 * Names come from whoever made the certificate or typed the command: keep
 * them printable, so that every message stays one line.
 */
static void copy_printable(char *dst, size_t len, const unsigned char *src, int n)
{
	size_t i = 0;

	for (; i + 1 < len && i < (size_t)(n > 0 ? n : 0); i++)
		dst[i] = src[i] < 0x20 || src[i] >= 0x7f ? '?' : (char)src[i];
	dst[i] = '\0';
}

bool cert_node_name_valid(const char *name)
{
	size_t n = name ? strlen(name) : 0;

	if (n < 1 || n > CERT_NODE_NAME_MAX || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
		      name[i] == '-'))
			return false;
	return true;
}

/* @s as it may appear in a message. */
static const char *shown(const char *s, char *buf, size_t len)
{
	copy_printable(buf, len, (const unsigned char *)(s ? s : ""), s ? (int)strlen(s) : 0);
	return buf;
}

static int check_node(const char *node, char *err, size_t errlen)
{
	char buf[CERT_NODE_NAME_MAX + 2];

	if (cert_node_name_valid(node))
		return 0;
	return fail(-EINVAL, err, errlen, "invalid node name '%s' (1-%d chars of a-z, 0-9 and -, "
		    "not starting with -)", shown(node, buf, sizeof(buf)), CERT_NODE_NAME_MAX);
}

/* The name goes into a certificate subject: keep it to a plain, short word. */
static int check_cluster_name(const char *name, char *err, size_t errlen)
{
	size_t n = name ? strlen(name) : 0;
	bool ok = n >= 1 && n <= CERT_CLUSTER_NAME_MAX;
	char buf[CERT_CLUSTER_NAME_MAX + 2];

	for (size_t i = 0; ok && i < n; i++)
		ok = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
		     (name[i] >= '0' && name[i] <= '9') || strchr("-_.", name[i]);
	if (ok)
		return 0;
	return fail(-EINVAL, err, errlen, "invalid cluster name '%s' (1-%d chars of letters, "
		    "digits, '-', '_' and '.')", shown(name, buf, sizeof(buf)), CERT_CLUSTER_NAME_MAX);
}

static int check_days(unsigned days, char *err, size_t errlen)
{
	if (days >= 1 && days <= CERT_DAYS_MAX)
		return 0;
	return fail(-EINVAL, err, errlen, "invalid validity of %u days (1 to %u)", days, CERT_DAYS_MAX);
}

/* @ip in canonical text form into @out (46 bytes), so a SAN holds nothing else. */
static int canon_ip(const char *ip, char *out, char *err, size_t errlen)
{
	unsigned char bin[16];
	char buf[INET6_ADDRSTRLEN + 2];

	if (inet_pton(AF_INET, ip, bin) == 1 && inet_ntop(AF_INET, bin, out, INET6_ADDRSTRLEN))
		return 0;
	if (inet_pton(AF_INET6, ip, bin) == 1 && inet_ntop(AF_INET6, bin, out, INET6_ADDRSTRLEN))
		return 0;
	return fail(-EINVAL, err, errlen, "invalid IP address '%s'", shown(ip, buf, sizeof(buf)));
}

/* ---- reading files ---- */

/* Read a small file whole; key files too, so the buffer is cleansed on free. */
static int read_file(const char *path, char **data, size_t *len, char *err, size_t errlen)
{
	char *buf = malloc(PEM_FILE_MAX + 1);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;
	ssize_t n = 0;
	int rc = 0;

	if (fd < 0 || !buf) {
		rc = fail(fd < 0 ? -errno : -ENOMEM, err, errlen, "%s: %s", path,
			  strerror(fd < 0 ? errno : ENOMEM));
		goto out;
	}
	/* One byte more than allowed tells a file that is too big. */
	while (got <= PEM_FILE_MAX) {
		n = read(fd, buf + got, PEM_FILE_MAX + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (n < 0)
		rc = fail(-errno, err, errlen, "%s: %s", path, strerror(errno));
	else if (got > PEM_FILE_MAX)
		rc = fail(-EINVAL, err, errlen, "%s: larger than %u KiB, not a certificate or key",
			  path, PEM_FILE_MAX / 1024);
out:
	if (fd >= 0)
		close(fd);
	if (rc) {
		OPENSSL_clear_free(buf, PEM_FILE_MAX + 1);
		return rc;
	}
	*data = buf;
	*len = got;
	return 0;
}

static void free_file(char *data)
{
	OPENSSL_clear_free(data, PEM_FILE_MAX + 1);
}

static int parse_cert(const char *data, size_t len, const char *path, X509 **out,
		      char *err, size_t errlen)
{
	BIO *b = BIO_new_mem_buf(data, (int)len);

	*out = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (!*out)
		return ossl_fail(-EINVAL, err, errlen, "%s: not a PEM certificate", path);
	return 0;
}

static int load_cert(const char *path, X509 **out, char *err, size_t errlen)
{
	char *data = NULL;
	size_t len = 0;
	int rc = read_file(path, &data, &len, err, errlen);

	if (!rc)
		rc = parse_cert(data, len, path, out, err, errlen);
	free_file(data);
	return rc;
}

/* Never prompt on the terminal for a passphrase: hcad has none. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

static int load_key(const char *path, EVP_PKEY **out, char *err, size_t errlen)
{
	char *data = NULL;
	size_t len = 0;
	BIO *b = NULL;
	int rc = read_file(path, &data, &len, err, errlen);

	if (rc)
		goto out;
	b = BIO_new_mem_buf(data, (int)len);
	*out = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
	if (!*out)
		rc = ossl_fail(-EINVAL, err, errlen, "%s: not an unencrypted PEM private key", path);
out:
	BIO_free(b);
	free_file(data);
	return rc;
}

/* ---- staging: files written aside, then put in place together ---- */

struct stage {
	struct staged {
		char path[PATH_MAX];
		char tmp[PATH_MAX];      /* "" once renamed or linked away */
		bool placed;
	} f[STAGE_FILES];
	size_t nf;
	char dirs[STAGE_DIRS][PATH_MAX]; /* made by this stage, parents first */
	size_t nd;
	bool replace;            /* rename over existing files; else refuse them */
	bool committed;
};

static struct stage *stage_new(bool replace, char *err, size_t errlen)
{
	struct stage *st = calloc(1, sizeof(*st));

	if (!st)
		fail(-ENOMEM, err, errlen, "out of memory");
	else
		st->replace = replace;
	return st;
}

/* Undo everything not committed: temporaries, files placed, directories made. */
static void stage_free(struct stage *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->nf && !st->committed; i++) {
		if (st->f[i].tmp[0])
			unlink(st->f[i].tmp);
		/* A replaced file cannot be brought back; a new one can go. */
		if (st->f[i].placed && !st->replace)
			unlink(st->f[i].path);
	}
	for (size_t i = st->nd; i-- > 0 && !st->committed;)
		rmdir(st->dirs[i]);
	free(st);
}

static int stage_one_dir(struct stage *st, const char *path, mode_t mode, char *err, size_t errlen)
{
	struct stat sb;

	if (!mkdir(path, mode)) {
		if (st->nd == STAGE_DIRS)
			return fail(-E2BIG, err, errlen, "%s: too many directories to create", path);
		snprintf(st->dirs[st->nd++], PATH_MAX, "%s", path);
		return 0;
	}
	if (errno != EEXIST)
		return fail(-errno, err, errlen, "cannot create %s: %s", path, strerror(errno));
	if (stat(path, &sb) || !S_ISDIR(sb.st_mode))
		return fail(-ENOTDIR, err, errlen, "%s exists and is not a directory", path);
	return 0;
}

/* mkdir -p: @path gets @mode, missing parents 0755. */
static int stage_mkdir(struct stage *st, const char *path, mode_t mode, char *err, size_t errlen)
{
	char buf[PATH_MAX];
	int rc = 0;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return fail(-ENAMETOOLONG, err, errlen, "%s: path too long", path);
	for (char *p = buf + 1; *p && !rc; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		rc = stage_one_dir(st, buf, 0755, err, errlen);
		*p = '/';
	}
	return rc ? rc : stage_one_dir(st, buf, mode, err, errlen);
}

static int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Write @data for @path under a temporary name in the same directory. */
static int stage_write(struct stage *st, const char *path, const void *data, size_t len,
		       mode_t mode, char *err, size_t errlen)
{
	struct staged *f = &st->f[st->nf];
	int fd = -1, rc = 0;

	if (st->nf == STAGE_FILES)
		return fail(-E2BIG, err, errlen, "%s: too many files at once", path);
	if (snprintf(f->path, PATH_MAX, "%s", path) >= PATH_MAX ||
	    snprintf(f->tmp, PATH_MAX, "%s.tmpXXXXXX", path) >= PATH_MAX)
		return fail(-ENAMETOOLONG, err, errlen, "%s: path too long", path);
	if ((fd = mkostemp(f->tmp, O_CLOEXEC)) < 0) {
		rc = fail(-errno, err, errlen, "cannot create a file next to %s: %s", path, strerror(errno));
		f->tmp[0] = '\0';
		return rc;
	}
	st->nf++;
	if (fchmod(fd, mode) || (rc = write_all(fd, data, len)) || fsync(fd))
		rc = fail(rc ? rc : -errno, err, errlen, "cannot write %s: %s", f->tmp,
			  strerror(rc ? -rc : errno));
	if (close(fd) && !rc)
		rc = fail(-errno, err, errlen, "cannot write %s: %s", f->tmp, strerror(errno));
	return rc;
}

static void fsync_dir_of(const char *path)
{
	char dir[PATH_MAX];
	char *slash = NULL;
	int fd;

	snprintf(dir, sizeof(dir), "%s", path);
	if (!(slash = strrchr(dir, '/')))
		snprintf(dir, sizeof(dir), ".");
	else
		*(slash == dir ? slash + 1 : slash) = '\0';
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		fsync(fd);
		close(fd);
	}
}

/*
 * Put every staged file in place, in the order staged. Without replace, a
 * link() that fails with EEXIST refuses a file someone made meanwhile.
 */
static int stage_commit(struct stage *st, char *err, size_t errlen)
{
	for (size_t i = 0; i < st->nf; i++) {
		struct staged *f = &st->f[i];
		int rc = st->replace ? rename(f->tmp, f->path) : link(f->tmp, f->path);

		if (rc && errno == EEXIST)
			return fail(-EEXIST, err, errlen, "%s already exists: refusing to overwrite it",
				    f->path);
		if (rc)
			return fail(-errno, err, errlen, "cannot put %s in place: %s", f->path,
				    strerror(errno));
		f->placed = true;
		if (!st->replace)
			unlink(f->tmp);
		f->tmp[0] = '\0';
	}
	for (size_t i = 0; i < st->nf; i++)
		fsync_dir_of(st->f[i].path);
	st->committed = true;
	return 0;
}

static int stage_bio(struct stage *st, const char *path, BIO *b, mode_t mode,
		     char *err, size_t errlen)
{
	char *data = NULL;
	long n = BIO_get_mem_data(b, &data);

	return stage_write(st, path, data, n > 0 ? (size_t)n : 0, mode, err, errlen);
}

static int stage_cert(struct stage *st, const char *path, X509 *x, char *err, size_t errlen)
{
	BIO *b = BIO_new(BIO_s_mem());
	int rc = 0;

	if (!b || !PEM_write_bio_X509(b, x))
		rc = ossl_fail(-ENOMEM, err, errlen, "cannot encode the certificate for %s", path);
	else
		rc = stage_bio(st, path, b, 0644, err, errlen);
	BIO_free(b);
	return rc;
}

/* Keys are encoded in secure memory so that no copy lingers in the freed heap. */
static int stage_key(struct stage *st, const char *path, EVP_PKEY *key, char *err, size_t errlen)
{
	BIO *b = BIO_new(BIO_s_secmem());
	int rc = 0;

	if (!b || !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL))
		rc = ossl_fail(-ENOMEM, err, errlen, "cannot encode the key for %s", path);
	else
		rc = stage_bio(st, path, b, 0600, err, errlen);
	BIO_free(b);
	return rc;
}

/* ---- building certificates ---- */

static EVP_PKEY *new_key(char *err, size_t errlen)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	if (!k)
		ossl_fail(-ENOMEM, err, errlen, "cannot generate a P-256 key");
	return k;
}

/* 128 random bits: unique without a serial file to keep in step across nodes. */
static int set_serial(X509 *x)
{
	unsigned char r[16];
	BIGNUM *bn = NULL;
	int ok = RAND_bytes(r, sizeof(r)) == 1 && (bn = BN_bin2bn(r, sizeof(r), NULL)) &&
		 BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));

	BN_free(bn);
	return ok;
}

/* An unsigned v3 certificate of @key for CN=@cn, valid @days from now. */
static X509 *new_cert(EVP_PKEY *key, const char *cn, unsigned days, char *err, size_t errlen)
{
	X509 *x = X509_new();
	bool ok = x && X509_set_version(x, X509_VERSION_3) && set_serial(x) &&
		  X509_gmtime_adj(X509_getm_notBefore(x), -BACKDATE_S) &&
		  X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL) &&
		  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
					     (const unsigned char *)cn, -1, -1, 0) &&
		  X509_set_pubkey(x, key);

	if (!ok) {
		ossl_fail(-ENOMEM, err, errlen, "cannot build a certificate for %s", cn);
		X509_free(x);
		return NULL;
	}
	return x;
}

/* One extension in OpenSSL's config syntax; @value is built from checked input only. */
static int add_ext(X509 *x, X509 *issuer, int nid, const char *value, char *err, size_t errlen)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext = NULL;
	int rc = 0;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext || !X509_add_ext(x, ext, -1))
		rc = ossl_fail(-EINVAL, err, errlen, "cannot add %s '%s'", OBJ_nid2sn(nid), value);
	X509_EXTENSION_free(ext);
	return rc;
}

static int sign(X509 *x, X509 *issuer, EVP_PKEY *issuer_key, char *err, size_t errlen)
{
	if (X509_set_issuer_name(x, X509_get_subject_name(issuer)) &&
	    X509_sign(x, issuer_key, EVP_sha256()) > 0)
		return 0;
	return ossl_fail(-EINVAL, err, errlen, "cannot sign the certificate");
}

static int ca_cert(const char *name, unsigned days, EVP_PKEY **key, X509 **crt,
		   char *err, size_t errlen)
{
	char cn[80];
	int rc = -ENOMEM;

	snprintf(cn, sizeof(cn), "hca cluster CA %s", name);
	if (!(*key = new_key(err, errlen)) || !(*crt = new_cert(*key, cn, days, err, errlen)))
		return rc;
	/* pathlen:0: this CA signs node certificates, never another CA. */
	if ((rc = add_ext(*crt, *crt, NID_basic_constraints, "critical,CA:TRUE,pathlen:0", err, errlen)) ||
	    (rc = add_ext(*crt, *crt, NID_key_usage, "critical,keyCertSign,cRLSign", err, errlen)) ||
	    (rc = add_ext(*crt, *crt, NID_subject_key_identifier, "hash", err, errlen)))
		return rc;
	return sign(*crt, *crt, *key, err, errlen);
}

/* ---- the CA ---- */

struct ca {
	X509 *crt;
	EVP_PKEY *key;
	char crt_path[PATH_MAX];
};

static void ca_clear(struct ca *ca)
{
	X509_free(ca->crt);
	EVP_PKEY_free(ca->key);
}

static int refuse_ca(const char *path, char *err, size_t errlen)
{
	int e = exists(path);

	if (e < 0)
		return fail(e, err, errlen, "%s: %s", path, strerror(-e));
	if (e)
		return fail(-EEXIST, err, errlen, "a cluster CA already exists (%s): refusing to "
			    "overwrite it", path);
	return 0;
}

static int write_ca(const struct cert_ca_req *req, const char *key_dir, EVP_PKEY *key,
		    X509 *crt, char *err, size_t errlen)
{
	char crt_path[PATH_MAX], key_path[PATH_MAX], copy[PATH_MAX];
	bool offline = key_dir != req->pki_dir;
	struct stage *st = stage_new(false, err, errlen);
	int rc = -ENOMEM;

	if (!st)
		goto out;
	if ((rc = join(crt_path, req->pki_dir, CERT_CA_CRT, err, errlen)) ||
	    (rc = join(key_path, key_dir, CERT_CA_KEY, err, errlen)) ||
	    (rc = join(copy, key_dir, CERT_CA_CRT, err, errlen)))
		goto out;
	if ((rc = stage_mkdir(st, req->pki_dir, 0700, err, errlen)) ||
	    (offline && (rc = stage_mkdir(st, key_dir, 0700, err, errlen))))
		goto out;
	/* The offline copy of ca.crt lets DIR alone sign with --ca-key later. */
	if ((rc = stage_key(st, key_path, key, err, errlen)) ||
	    (rc = stage_cert(st, crt_path, crt, err, errlen)) ||
	    (offline && (rc = stage_cert(st, copy, crt, err, errlen))))
		goto out;
	rc = stage_commit(st, err, errlen);
out:
	stage_free(st);
	return rc;
}

int cert_ca_create(const struct cert_ca_req *req, char *err, size_t errlen)
{
	const char *key_dir = req->key_dir && strcmp(req->key_dir, req->pki_dir) ?
			      req->key_dir : req->pki_dir;
	unsigned days = req->days ? req->days : CERT_CA_DAYS_DEFAULT;
	char path[PATH_MAX];
	EVP_PKEY *key = NULL;
	X509 *crt = NULL;
	int rc;

	if ((rc = check_cluster_name(req->name, err, errlen)) || (rc = check_days(days, err, errlen)))
		goto out;
	if ((rc = join(path, req->pki_dir, CERT_CA_CRT, err, errlen)) ||
	    (rc = refuse_ca(path, err, errlen)) ||
	    (rc = join(path, req->pki_dir, CERT_CA_KEY, err, errlen)) ||
	    (rc = refuse_ca(path, err, errlen)) ||
	    (rc = join(path, key_dir, CERT_CA_KEY, err, errlen)) ||
	    (rc = refuse_ca(path, err, errlen)))
		goto out;
	if ((rc = ca_cert(req->name, days, &key, &crt, err, errlen)))
		goto out;
	rc = write_ca(req, key_dir, key, crt, err, errlen);
out:
	X509_free(crt);
	EVP_PKEY_free(key);
	return rc;
}

/* Signed by @ca, whatever the dates: renew must accept an expired certificate. */
static int check_issued(const struct ca *ca, X509 *x, const char *path, char *err, size_t errlen)
{
	if (X509_check_issued(ca->crt, x) == X509_V_OK && X509_verify(x, X509_get0_pubkey(ca->crt)) == 1)
		return 0;
	return ossl_fail(-EKEYREJECTED, err, errlen, "%s was not issued by the cluster CA %s",
			 path, ca->crt_path);
}

static int load_ca_key(const struct cert_node_req *req, struct ca *ca, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int rc = 0;

	if (!req->ca_key) {
		if ((rc = join(path, req->pki_dir, CERT_CA_KEY, err, errlen)))
			return rc;
		if ((rc = exists(path)) == 0)
			return fail(-ENOENT, err, errlen, "the CA key is not here (kept offline?): "
				    "pass --ca-key PATH (no %s)", path);
	}
	if ((rc = load_key(req->ca_key ? req->ca_key : path, &ca->key, err, errlen)))
		return rc;
	if (X509_check_private_key(ca->crt, ca->key) != 1)
		return ossl_fail(-EKEYREJECTED, err, errlen, "%s is not the key of the cluster CA %s",
				 req->ca_key ? req->ca_key : path, ca->crt_path);
	return 0;
}

static int load_ca(const struct cert_node_req *req, struct ca *ca, char *err, size_t errlen)
{
	int rc = join(ca->crt_path, req->pki_dir, CERT_CA_CRT, err, errlen);

	if (rc)
		return rc;
	if (exists(ca->crt_path) == 0)
		return fail(-ENOENT, err, errlen, "no cluster CA in %s: run 'hcactl cluster init' "
			    "first (or pass --pki DIR)", req->pki_dir);
	if ((rc = load_cert(ca->crt_path, &ca->crt, err, errlen)))
		return rc;
	if (!(X509_get_extension_flags(ca->crt) & EXFLAG_CA))
		return fail(-EINVAL, err, errlen, "%s is not a CA certificate", ca->crt_path);
	return load_ca_key(req, ca, err, errlen);
}

static void time_text(const ASN1_TIME *t, char *buf, size_t len)
{
	struct tm tm;

	if (!ASN1_TIME_to_tm(t, &tm) || !strftime(buf, len, "%Y-%m-%d", &tm))
		snprintf(buf, len, "?");
}

/* A node certificate must not outlive the CA that vouches for it. */
static int check_ca_dates(const struct ca *ca, unsigned days, char *err, size_t errlen)
{
	const ASN1_TIME *end = X509_get0_notAfter(ca->crt);
	time_t now = time(NULL), until = now + (time_t)days * 86400;
	int left = 0, secs = 0;
	char when[32];

	time_text(end, when, sizeof(when));
	if (X509_cmp_time(end, &now) <= 0)
		return fail(-EKEYREJECTED, err, errlen, "the cluster CA %s expired on %s",
			    ca->crt_path, when);
	if (X509_cmp_time(end, &until) > 0)
		return 0;
	ASN1_TIME_diff(&left, &secs, NULL, end);
	return fail(-EINVAL, err, errlen, "a certificate for %u days would outlive the cluster CA "
		    "(it expires on %s): use --days %d or fewer", days, when, left > 0 ? left : 1);
}

/* ---- node certificates ---- */

struct node_paths {
	char dir[PATH_MAX];
	char crt[PATH_MAX];
	char key[PATH_MAX];
	char ca[PATH_MAX];
	char old[PATH_MAX];
	char qemu[PATH_MAX];
};

static int node_paths(const struct cert_node_req *req, struct node_paths *p, char *err, size_t errlen)
{
	int rc;

	if ((rc = join(p->dir, req->out_dir ? req->out_dir : req->pki_dir, req->node, err, errlen)) ||
	    (rc = join(p->crt, p->dir, CERT_NODE_CRT, err, errlen)) ||
	    (rc = join(p->key, p->dir, CERT_NODE_KEY, err, errlen)) ||
	    (rc = join(p->ca, p->dir, CERT_CA_CRT, err, errlen)) ||
	    (rc = join(p->old, p->dir, CERT_NODE_OLD, err, errlen)))
		return rc;
	return join(p->qemu, p->dir, CERT_QEMU_DIR, err, errlen);
}

/* "DNS:NODE,IP:A,IP:B": both parts checked, the addresses rewritten canonically. */
static int san_text(const struct cert_node_req *req, char *buf, size_t len, char *err, size_t errlen)
{
	char ip[INET6_ADDRSTRLEN];
	size_t used = 0;
	int rc;

	if (req->n_ips > CERT_NAMES_MAX)
		return fail(-EINVAL, err, errlen, "too many IP addresses (at most %d)", CERT_NAMES_MAX);
	used = (size_t)snprintf(buf, len, "DNS:%s", req->node);
	for (size_t i = 0; i < req->n_ips; i++) {
		if ((rc = canon_ip(req->ips[i], ip, err, errlen)))
			return rc;
		used += (size_t)snprintf(buf + used, len - used, ",IP:%s", ip);
	}
	return 0;
}

/* Node @key's certificate for @node signed by @ca, with @san copied in. */
static X509 *node_cert(const struct ca *ca, EVP_PKEY *key, const char *node, unsigned days,
		       X509_EXTENSION *san, char *err, size_t errlen)
{
	X509 *x = new_cert(key, node, days, err, errlen);
	int rc = x ? 0 : -ENOMEM;

	if (rc)
		goto out;
	/* keyEncipherment: QEMU's GnuTLS check wants it on server certificates. */
	if ((rc = add_ext(x, ca->crt, NID_basic_constraints, "critical,CA:FALSE", err, errlen)) ||
	    (rc = add_ext(x, ca->crt, NID_key_usage, "critical,digitalSignature,keyEncipherment",
			  err, errlen)) ||
	    (rc = add_ext(x, ca->crt, NID_ext_key_usage, "serverAuth,clientAuth", err, errlen)) ||
	    (rc = add_ext(x, ca->crt, NID_subject_key_identifier, "hash", err, errlen)) ||
	    (rc = add_ext(x, ca->crt, NID_authority_key_identifier, "keyid:always", err, errlen)))
		goto out;
	if (!X509_add_ext(x, san, -1)) {
		rc = ossl_fail(-ENOMEM, err, errlen, "cannot add the names to %s's certificate", node);
		goto out;
	}
	rc = sign(x, ca->crt, ca->key, err, errlen);
out:
	if (rc) {
		X509_free(x);
		x = NULL;
	}
	return x;
}

static const struct {
	const char *name;
	enum { Q_CA, Q_CERT, Q_KEY } what;
} qemu_files[] = {
	{ "ca-cert.pem", Q_CA },
	{ "server-cert.pem", Q_CERT }, { "server-key.pem", Q_KEY },
	{ "client-cert.pem", Q_CERT }, { "client-key.pem", Q_KEY },
};

static int stage_qemu(struct stage *st, const char *dir, X509 *ca, X509 *crt, EVP_PKEY *key,
		      char *err, size_t errlen)
{
	char path[PATH_MAX];
	int rc = stage_mkdir(st, dir, 0700, err, errlen);

	for (size_t i = 0; !rc && i < sizeof(qemu_files) / sizeof(qemu_files[0]); i++) {
		if ((rc = join(path, dir, qemu_files[i].name, err, errlen)))
			break;
		if (qemu_files[i].what == Q_KEY)
			rc = stage_key(st, path, key, err, errlen);
		else
			rc = stage_cert(st, path, qemu_files[i].what == Q_CA ? ca : crt, err, errlen);
	}
	return rc;
}

/*
 * The node's files, in an order that keeps hcad's view usable: the old
 * certificate saved first, then key and certificate back to back.
 */
static int write_node(const struct node_paths *p, const struct ca *ca, EVP_PKEY *key, X509 *x,
		      const char *old, size_t old_len, bool replace, char *err, size_t errlen)
{
	struct stage *st = stage_new(replace, err, errlen);
	int rc = -ENOMEM;

	if (!st)
		goto out;
	if ((rc = stage_mkdir(st, p->dir, 0700, err, errlen)) ||
	    (old && (rc = stage_write(st, p->old, old, old_len, 0644, err, errlen))) ||
	    (rc = stage_key(st, p->key, key, err, errlen)) ||
	    (rc = stage_cert(st, p->crt, x, err, errlen)) ||
	    (rc = stage_cert(st, p->ca, ca->crt, err, errlen)) ||
	    (rc = stage_qemu(st, p->qemu, ca->crt, x, key, err, errlen)))
		goto out;
	rc = stage_commit(st, err, errlen);
out:
	stage_free(st);
	return rc;
}

static int refuse_node(const struct cert_node_req *req, const struct node_paths *p,
		       char *err, size_t errlen)
{
	int c = exists(p->crt), k = exists(p->key);

	if (c < 0 || k < 0)
		return fail(c < 0 ? c : k, err, errlen, "%s: %s", p->dir, strerror(c < 0 ? -c : -k));
	if ((c || k) && !req->force)
		return fail(-EEXIST, err, errlen, "%s already has a certificate in %s "
			    "(--force replaces it, 'cert renew' renews it)", req->node, p->dir);
	return 0;
}

static X509_EXTENSION *san_ext(const struct cert_node_req *req, char *err, size_t errlen)
{
	char text[CERT_NAMES_MAX * 56 + 80];
	X509_EXTENSION *ext = NULL;
	X509V3_CTX ctx;

	if (san_text(req, text, sizeof(text), err, errlen))
		return NULL;
	X509V3_set_ctx(&ctx, NULL, NULL, NULL, NULL, 0);
	if (!(ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, text)))
		ossl_fail(-EINVAL, err, errlen, "cannot encode the names '%s'", text);
	return ext;
}

int cert_node_issue(const struct cert_node_req *req, char *err, size_t errlen)
{
	unsigned days = req->days ? req->days : CERT_NODE_DAYS_DEFAULT;
	X509_EXTENSION *san = NULL;
	struct ca ca = { NULL };
	struct node_paths p;
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	int rc;

	if ((rc = check_node(req->node, err, errlen)) || (rc = check_days(days, err, errlen)) ||
	    (rc = node_paths(req, &p, err, errlen)))
		goto out;
	if (!(san = san_ext(req, err, errlen))) {
		rc = -EINVAL;
		goto out;
	}
	if ((rc = refuse_node(req, &p, err, errlen)) || (rc = load_ca(req, &ca, err, errlen)) ||
	    (rc = check_ca_dates(&ca, days, err, errlen)))
		goto out;
	rc = -ENOMEM;
	if (!(key = new_key(err, errlen)) || !(x = node_cert(&ca, key, req->node, days, san, err, errlen)))
		goto out;
	rc = write_node(&p, &ca, key, x, NULL, 0, req->force, err, errlen);
out:
	X509_free(x);
	EVP_PKEY_free(key);
	X509_EXTENSION_free(san);
	ca_clear(&ca);
	return rc;
}

/* NODE's current certificate, as text (to keep as node.crt.old) and parsed. */
static int load_current(const struct cert_node_req *req, const struct node_paths *p,
			char **pem, size_t *len, X509 **x, char *err, size_t errlen)
{
	char cn[CERT_NODE_NAME_MAX + 2] = "";
	int rc = exists(p->crt);

	if (rc == 0)
		return fail(-ENOENT, err, errlen, "%s has no certificate in %s: issue one with "
			    "'hcactl cluster cert issue %s'", req->node, p->dir, req->node);
	if ((rc = read_file(p->crt, pem, len, err, errlen)) ||
	    (rc = parse_cert(*pem, *len, p->crt, x, err, errlen)))
		return rc;
	X509_NAME_get_text_by_NID(X509_get_subject_name(*x), NID_commonName, cn, sizeof(cn));
	if (strcmp(cn, req->node))
		return fail(-EINVAL, err, errlen, "%s is for '%s', not '%s'", p->crt, cn, req->node);
	return 0;
}

int cert_node_renew(const struct cert_node_req *req, char *err, size_t errlen)
{
	unsigned days = req->days ? req->days : CERT_NODE_DAYS_DEFAULT;
	struct ca ca = { NULL };
	struct node_paths p;
	char *pem = NULL;
	size_t len = 0;
	EVP_PKEY *key = NULL;
	X509 *old = NULL, *x = NULL;
	X509_EXTENSION *san = NULL;
	int rc;

	if (req->n_ips) {
		rc = fail(-EINVAL, err, errlen, "renew keeps the certificate's names: to change "
			  "them, issue a new one with 'cert issue %s --force'", req->node);
		goto out;
	}
	if ((rc = check_node(req->node, err, errlen)) || (rc = check_days(days, err, errlen)) ||
	    (rc = node_paths(req, &p, err, errlen)) ||
	    (rc = load_current(req, &p, &pem, &len, &old, err, errlen)) ||
	    (rc = load_ca(req, &ca, err, errlen)) ||
	    (rc = check_issued(&ca, old, p.crt, err, errlen)) ||
	    (rc = check_ca_dates(&ca, days, err, errlen)))
		goto out;
	san = X509_get_ext(old, X509_get_ext_by_NID(old, NID_subject_alt_name, -1));
	if (!san) {
		rc = fail(-EINVAL, err, errlen, "%s has no subject alternative names to keep", p.crt);
		goto out;
	}
	rc = -ENOMEM;
	if (!(key = new_key(err, errlen)) || !(x = node_cert(&ca, key, req->node, days, san, err, errlen)))
		goto out;
	rc = write_node(&p, &ca, key, x, pem, len, true, err, errlen);
out:
	X509_free(x);
	X509_free(old);
	EVP_PKEY_free(key);
	free_file(pem);
	ca_clear(&ca);
	return rc;
}

int cert_qemu_dir_write(const char *dir, const char *ca_path, const char *cert_path,
			const char *key_path, char *err, size_t errlen)
{
	struct ca ca = { NULL };
	struct stage *st = NULL;
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	int rc;

	snprintf(ca.crt_path, sizeof(ca.crt_path), "%s", ca_path);
	if ((rc = load_cert(ca_path, &ca.crt, err, errlen)) ||
	    (rc = load_cert(cert_path, &x, err, errlen)) ||
	    (rc = load_key(key_path, &key, err, errlen)))
		goto out;
	if (X509_check_private_key(x, key) != 1) {
		rc = ossl_fail(-EKEYREJECTED, err, errlen, "%s is not the key of %s", key_path, cert_path);
		goto out;
	}
	if ((rc = check_issued(&ca, x, cert_path, err, errlen)))
		goto out;
	rc = -ENOMEM;
	if (!(st = stage_new(true, err, errlen)) ||
	    (rc = stage_qemu(st, dir, ca.crt, x, key, err, errlen)))
		goto out;
	rc = stage_commit(st, err, errlen);
out:
	stage_free(st);
	X509_free(x);
	EVP_PKEY_free(key);
	ca_clear(&ca);
	return rc;
}

/* ---- reading certificates back ---- */

static void read_sans(X509 *x, struct cert_info *out)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);

	for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		const ASN1_STRING *s = g->type == GEN_DNS ? g->d.dNSName :
				       g->type == GEN_IPADD ? g->d.iPAddress : NULL;
		int n = s ? ASN1_STRING_length(s) : 0;

		if (g->type == GEN_DNS && out->n_dns < CERT_NAMES_MAX)
			copy_printable(out->dns[out->n_dns++], sizeof(out->dns[0]),
				       ASN1_STRING_get0_data(s), n);
		else if (g->type == GEN_IPADD && (n == 4 || n == 16) && out->n_ip < CERT_NAMES_MAX)
			inet_ntop(n == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(s),
				  out->ip[out->n_ip++], sizeof(out->ip[0]));
	}
	GENERAL_NAMES_free(gens);
}

static void name_text(const X509_NAME *name, char *buf, size_t len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data = NULL;
	long n = 0;

	buf[0] = '\0';
	if (b && X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0)
		n = BIO_get_mem_data(b, &data);
	if (n > 0)
		copy_printable(buf, len, (const unsigned char *)data, (int)n);
	BIO_free(b);
}

static time_t asn1_time(const ASN1_TIME *t)
{
	struct tm tm;

	return ASN1_TIME_to_tm(t, &tm) ? timegm(&tm) : 0;
}

static int fill_info(X509 *x, struct cert_info *out, const char *path, char *err, size_t errlen)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	time_t left;

	if (!hex) {
		BN_free(bn);
		return ossl_fail(-ENOMEM, err, errlen, "%s: cannot read the serial number", path);
	}
	snprintf(out->serial, sizeof(out->serial), "%s", hex);
	OPENSSL_free(hex);
	BN_free(bn);
	name_text(X509_get_subject_name(x), out->subject, sizeof(out->subject));
	name_text(X509_get_issuer_name(x), out->issuer, sizeof(out->issuer));
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out->cn, sizeof(out->cn));
	copy_printable(out->cn, sizeof(out->cn), (unsigned char *)out->cn, (int)strlen(out->cn));
	read_sans(x, out);
	out->not_before = asn1_time(X509_get0_notBefore(x));
	out->not_after = asn1_time(X509_get0_notAfter(x));
	left = out->not_after - time(NULL);
	/* Rounded down: "0 days left" must never be said of an expired one. */
	out->days_left = left >= 0 ? (long)(left / 86400) : -(long)((-left + 86399) / 86400);
	out->is_ca = (X509_get_extension_flags(x) & EXFLAG_CA) != 0;
	return 0;
}

int cert_info(const char *path, struct cert_info *out, char *err, size_t errlen)
{
	X509 *x = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!(rc = load_cert(path, &x, err, errlen)))
		rc = fill_info(x, out, path, err, errlen);
	X509_free(x);
	return rc;
}

static int verify(X509 *x, X509 *ca, const char *path, const char *ca_path, char *err, size_t errlen)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	int rc = 0;

	/* Strict: our certificates must satisfy RFC 5280 in full, as GnuTLS checks. */
	if (!store || !ctx || !X509_STORE_add_cert(store, ca) ||
	    !X509_STORE_set_flags(store, X509_V_FLAG_X509_STRICT) ||
	    !X509_STORE_CTX_init(ctx, store, x, NULL)) {
		rc = ossl_fail(-ENOMEM, err, errlen, "cannot set up the verification of %s", path);
		goto out;
	}
	if (X509_verify_cert(ctx) != 1)
		rc = ossl_fail(-EKEYREJECTED, err, errlen, "%s does not chain to the cluster CA %s: %s",
			       path, ca_path,
			       X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
out:
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return rc;
}

int cert_verify_chain(const char *cert_path, const char *ca_path, char *err, size_t errlen)
{
	X509 *x = NULL, *ca = NULL;
	int rc;

	if (!(rc = load_cert(cert_path, &x, err, errlen)) && !(rc = load_cert(ca_path, &ca, err, errlen)))
		rc = verify(x, ca, cert_path, ca_path, err, errlen);
	X509_free(x);
	X509_free(ca);
	return rc;
}
