/*
 * test_cert: the cluster PKI (agent/cert.h) in a temporary directory. What
 * is checked is read back with OpenSSL itself, not with cert.c's own
 * helpers: the CA's extensions, a node certificate's names, usages, chain
 * and dates, renewal, QEMU's directory, and every refusal leaving no file.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "agent/cert.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

struct fx {
	char top[64];          /* mkdtemp'd, removed at the end */
	char pki[128];         /* TOP/pki, with a CA "t1" made by setup */
	char err[1024];
};

/* ---- helpers ---- */

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void pathf(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pathf(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	assert_true((size_t)vsnprintf(buf, len, fmt, ap) < len);
	va_end(ap);
}

static mode_t mode_of(const char *path)
{
	struct stat sb;

	assert_int_equal(stat(path, &sb), 0);
	return sb.st_mode & 07777;
}

static bool is_there(const char *path)
{
	return access(path, F_OK) == 0;
}

static X509 *read_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x = NULL;

	assert_non_null(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

static EVP_PKEY *read_key(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *k = NULL;

	assert_non_null(f);
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(k);
	return k;
}

/* The whole file, NUL-terminated; free() it. */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = calloc(1, 65536);
	size_t n;

	assert_non_null(f);
	assert_non_null(buf);
	n = fread(buf, 1, 65535, f);
	fclose(f);
	assert_true(n > 0);
	return buf;
}

static void assert_same_file(const char *a, const char *b)
{
	char *x = slurp(a), *y = slurp(b);

	assert_string_equal(x, y);
	free(x);
	free(y);
}

/* Entries under @dir (recursively); 0 for a missing directory. */
static int count;
static int count_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	count += ftw->level > 0;
	/* A temporary left behind is a partial file. */
	assert_null(strstr(path, ".tmp"));
	return 0;
}

static int entries(const char *dir)
{
	count = 0;
	if (is_there(dir))
		nftw(dir, count_one, 16, FTW_PHYS);
	return count;
}

static int make_ca(const char *pki, const char *key_dir, const char *name, char *err)
{
	struct cert_ca_req req = { .pki_dir = pki, .key_dir = key_dir, .name = name };

	err[0] = '\0';
	return cert_ca_create(&req, err, 1024);
}

static int issue(struct fx *f, const char *pki, const char *node, const char *const *ips,
		 size_t n_ips, unsigned days, bool force)
{
	struct cert_node_req req = { .pki_dir = pki, .node = node, .ips = ips, .n_ips = n_ips,
				     .days = days, .force = force };

	f->err[0] = '\0';
	return cert_node_issue(&req, f->err, sizeof(f->err));
}

static int renew(struct fx *f, const char *pki, const char *node)
{
	struct cert_node_req req = { .pki_dir = pki, .node = node };

	f->err[0] = '\0';
	return cert_node_renew(&req, f->err, sizeof(f->err));
}

static void assert_err_has(const struct fx *f, const char *what)
{
	if (!strstr(f->err, what))
		fail_msg("error '%s' does not say '%s'", f->err, what);
	assert_null(strchr(f->err, '\n'));
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->top, sizeof(f->top), "/tmp/hca-cert-XXXXXX");
	assert_non_null(mkdtemp(f->top));
	pathf(f->pki, sizeof(f->pki), "%s/pki", f->top);
	assert_int_equal(make_ca(f->pki, NULL, "t1", f->err), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	nftw(f->top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* ---- the CA ---- */

static void ca_created(void **state)
{
	struct fx *f = *state;
	char crt[256], key[256], cn[80] = "";
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	struct cert_info ci;
	int idx;

	pathf(crt, sizeof(crt), "%s/ca.crt", f->pki);
	pathf(key, sizeof(key), "%s/ca.key", f->pki);
	assert_int_equal(mode_of(f->pki), 0700);
	assert_int_equal(mode_of(key), 0600);
	assert_int_equal(mode_of(crt), 0644);
	x = read_cert(crt);
	k = read_key(key);
	assert_int_equal(X509_check_private_key(x, k), 1);
	assert_int_equal(EVP_PKEY_get_base_id(k), EVP_PKEY_EC);
	assert_int_equal(EVP_PKEY_get_bits(k), 256);
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
	assert_string_equal(cn, "hca cluster CA t1");
	assert_int_equal(X509_self_signed(x, 1), 1);
	assert_true(X509_get_extension_flags(x) & EXFLAG_CA);
	idx = X509_get_ext_by_NID(x, NID_basic_constraints, -1);
	assert_true(idx >= 0);
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(x, idx)), 1);
	assert_int_equal(X509_get_key_usage(x), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	assert_int_equal(cert_info(crt, &ci, f->err, sizeof(f->err)), 0);
	assert_true(ci.is_ca);
	assert_true(ci.days_left >= 3649 && ci.days_left <= 3650);
	X509_free(x);
	EVP_PKEY_free(k);
}

static void ca_refuses_existing(void **state)
{
	struct fx *f = *state;
	char crt[256], *before = NULL, *after = NULL;

	pathf(crt, sizeof(crt), "%s/ca.crt", f->pki);
	before = slurp(crt);
	assert_int_equal(make_ca(f->pki, NULL, "t2", f->err), -EEXIST);
	assert_non_null(strstr(f->err, "a cluster CA already exists"));
	after = slurp(crt);
	assert_string_equal(before, after);
	assert_int_equal(entries(f->pki), 2);
	free(before);
	free(after);
}

static void ca_key_offline(void **state)
{
	struct fx *f = *state;
	char pki[128], off[128], path[256];

	pathf(pki, sizeof(pki), "%s/pki2", f->top);
	pathf(off, sizeof(off), "%s/usb/ca", f->top);
	assert_int_equal(make_ca(pki, off, "t2", f->err), 0);
	assert_int_equal(entries(pki), 1);
	pathf(path, sizeof(path), "%s/ca.crt", pki);
	assert_true(is_there(path));
	pathf(path, sizeof(path), "%s/ca.key", off);
	assert_int_equal(mode_of(path), 0600);
	assert_int_equal(mode_of(off), 0700);
	/* a second init is refused because of the offline key too */
	pathf(path, sizeof(path), "%s/ca.crt", pki);
	unlink(path);
	assert_int_equal(make_ca(pki, off, "t2", f->err), -EEXIST);
}

static void ca_bad_input(void **state)
{
	struct fx *f = *state;
	char pki[128];
	struct cert_ca_req req = { .name = "t3", .days = CERT_DAYS_MAX + 1 };

	pathf(pki, sizeof(pki), "%s/pki3", f->top);
	assert_int_equal(make_ca(pki, NULL, "bad name", f->err), -EINVAL);
	assert_int_equal(make_ca(pki, NULL, "", f->err), -EINVAL);
	req.pki_dir = pki;
	assert_int_equal(cert_ca_create(&req, f->err, sizeof(f->err)), -EINVAL);
	assert_false(is_there(pki));
}

/* ---- node certificates ---- */

static void node_issued(void **state)
{
	struct fx *f = *state;
	const char *ips[] = { "10.1.2.3", "fd00:0::7" };
	char crt[256], key[256], ca[256];
	X509 *x = NULL, *cax = NULL;
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	EVP_PKEY *k = NULL;
	BIGNUM *serial = NULL;
	struct cert_info ci;
	time_t now = time(NULL);

	assert_int_equal(issue(f, f->pki, "node-1", ips, 2, 30, false), 0);
	pathf(crt, sizeof(crt), "%s/node-1/node.crt", f->pki);
	pathf(key, sizeof(key), "%s/node-1/node.key", f->pki);
	pathf(ca, sizeof(ca), "%s/ca.crt", f->pki);
	assert_int_equal(mode_of(key), 0600);
	assert_int_equal(mode_of(crt), 0644);
	pathf(ca, sizeof(ca), "%s/node-1", f->pki);
	assert_int_equal(mode_of(ca), 0700);
	pathf(ca, sizeof(ca), "%s/node-1/ca.crt", f->pki);
	x = read_cert(crt);
	k = read_key(key);
	cax = read_cert(ca);
	assert_int_equal(X509_check_private_key(x, k), 1);
	assert_int_equal(EVP_PKEY_get_bits(k), 256);
	/* usages */
	assert_false(X509_get_extension_flags(x) & EXFLAG_CA);
	assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_SERVER | XKU_SSL_CLIENT);
	assert_int_equal(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
	/* names */
	assert_int_equal(X509_check_host(x, "node-1", 0, 0, NULL), 1);
	assert_int_equal(X509_check_ip_asc(x, "10.1.2.3", 0), 1);
	assert_int_equal(X509_check_ip_asc(x, "fd00::7", 0), 1);
	/* a 128-bit random serial */
	serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	assert_true(BN_num_bits(serial) > 96 && BN_num_bits(serial) <= 128);
	/* chains to the CA */
	assert_int_equal(X509_STORE_add_cert(store, cax), 1);
	assert_int_equal(X509_STORE_CTX_init(ctx, store, x, NULL), 1);
	assert_int_equal(X509_verify_cert(ctx), 1);
	assert_int_equal(cert_verify_chain(crt, ca, f->err, sizeof(f->err)), 0);
	/* validity as requested */
	assert_int_equal(cert_info(crt, &ci, f->err, sizeof(f->err)), 0);
	assert_true(ci.not_after >= now + 30 * 86400 - 5 && ci.not_after <= now + 30 * 86400 + 5);
	assert_true(ci.not_before <= now);
	assert_true(ci.days_left == 29 || ci.days_left == 30);
	assert_string_equal(ci.cn, "node-1");
	assert_string_equal(ci.subject, "CN=node-1");
	assert_string_equal(ci.issuer, "CN=hca cluster CA t1");
	assert_int_equal(ci.n_dns, 1);
	assert_string_equal(ci.dns[0], "node-1");
	assert_int_equal(ci.n_ip, 2);
	assert_string_equal(ci.ip[0], "10.1.2.3");
	assert_string_equal(ci.ip[1], "fd00::7");
	BN_free(serial);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	X509_free(x);
	X509_free(cax);
	EVP_PKEY_free(k);
}

static void qemu_dir(void **state)
{
	struct fx *f = *state;
	static const struct { const char *name, *same_as; mode_t mode; } files[] = {
		{ "ca-cert.pem", "ca.crt", 0644 },
		{ "server-cert.pem", "node.crt", 0644 }, { "server-key.pem", "node.key", 0600 },
		{ "client-cert.pem", "node.crt", 0644 }, { "client-key.pem", "node.key", 0600 },
	};
	char dir[256], a[256], b[256], ca[256];

	assert_int_equal(issue(f, f->pki, "n1", NULL, 0, 0, false), 0);
	pathf(dir, sizeof(dir), "%s/n1/qemu", f->pki);
	assert_int_equal(mode_of(dir), 0700);
	assert_int_equal(entries(dir), (int)ARRAY_SIZE(files));
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		pathf(a, sizeof(a), "%s/%s", dir, files[i].name);
		pathf(b, sizeof(b), "%s/n1/%s", f->pki, files[i].same_as);
		assert_int_equal(mode_of(a), files[i].mode);
		assert_same_file(a, b);
	}
	/* written again on its own, from the node's files */
	pathf(dir, sizeof(dir), "%s/vm1-tls", f->top);
	pathf(a, sizeof(a), "%s/n1/node.crt", f->pki);
	pathf(b, sizeof(b), "%s/n1/node.key", f->pki);
	pathf(ca, sizeof(ca), "%s/ca.crt", f->pki);
	assert_int_equal(cert_qemu_dir_write(dir, ca, a, b, f->err, sizeof(f->err)), 0);
	assert_int_equal(entries(dir), (int)ARRAY_SIZE(files));
}

static void qemu_dir_refusals(void **state)
{
	struct fx *f = *state;
	char pki2[128], dir[256], ca[256], crt[256], key[256], key2[256];

	assert_int_equal(issue(f, f->pki, "n1", NULL, 0, 0, false), 0);
	assert_int_equal(issue(f, f->pki, "n2", NULL, 0, 0, false), 0);
	pathf(dir, sizeof(dir), "%s/q", f->top);
	pathf(ca, sizeof(ca), "%s/ca.crt", f->pki);
	pathf(crt, sizeof(crt), "%s/n1/node.crt", f->pki);
	pathf(key, sizeof(key), "%s/n1/node.key", f->pki);
	pathf(key2, sizeof(key2), "%s/n2/node.key", f->pki);
	/* another node's key */
	assert_int_equal(cert_qemu_dir_write(dir, ca, crt, key2, f->err, sizeof(f->err)), -EKEYREJECTED);
	assert_err_has(f, "is not the key of");
	/* another cluster's CA */
	pathf(pki2, sizeof(pki2), "%s/pki2", f->top);
	assert_int_equal(make_ca(pki2, NULL, "other", f->err), 0);
	pathf(ca, sizeof(ca), "%s/ca.crt", pki2);
	assert_int_equal(cert_qemu_dir_write(dir, ca, crt, key, f->err, sizeof(f->err)), -EKEYREJECTED);
	assert_err_has(f, "was not issued by the cluster CA");
	assert_false(is_there(dir));
}

static void node_renewed(void **state)
{
	struct fx *f = *state;
	const char *ips[] = { "192.0.2.9" };
	char crt[256], key[256], old[256], qcrt[256], ca[256];
	X509 *x1 = NULL, *x2 = NULL;
	EVP_PKEY *k1 = NULL, *k2 = NULL;
	char *before = NULL;

	assert_int_equal(issue(f, f->pki, "n1", ips, 1, 10, false), 0);
	pathf(crt, sizeof(crt), "%s/n1/node.crt", f->pki);
	pathf(key, sizeof(key), "%s/n1/node.key", f->pki);
	pathf(old, sizeof(old), "%s/n1/node.crt.old", f->pki);
	pathf(qcrt, sizeof(qcrt), "%s/n1/qemu/server-cert.pem", f->pki);
	before = slurp(crt);
	x1 = read_cert(crt);
	k1 = read_key(key);
	assert_int_equal(renew(f, f->pki, "n1"), 0);
	x2 = read_cert(crt);
	k2 = read_key(key);
	assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(x1), X509_get0_serialNumber(x2)), 0);
	assert_int_not_equal(EVP_PKEY_eq(k1, k2), 1);
	assert_int_equal(X509_check_private_key(x2, k2), 1);
	assert_int_equal(X509_check_host(x2, "n1", 0, 0, NULL), 1);
	assert_int_equal(X509_check_ip_asc(x2, "192.0.2.9", 0), 1);
	assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x1), X509_get_subject_name(x2)), 0);
	/* the default validity, not the first one's */
	assert_true(ASN1_TIME_compare(X509_get0_notAfter(x2), X509_get0_notAfter(x1)) > 0);
	assert_int_equal(mode_of(key), 0600);
	assert_same_file(qcrt, crt);
	{
		char *kept = slurp(old);

		assert_string_equal(kept, before);
		free(kept);
	}
	pathf(ca, sizeof(ca), "%s/ca.crt", f->pki);
	assert_int_equal(cert_verify_chain(crt, ca, f->err, sizeof(f->err)), 0);
	free(before);
	X509_free(x1);
	X509_free(x2);
	EVP_PKEY_free(k1);
	EVP_PKEY_free(k2);
}

/* ---- refusals: one line each, and nothing left behind ---- */

static void bad_node_names(void **state)
{
	struct fx *f = *state;
	static const char *const bad[] = { "", "-a", "Node1", "a_b", "a.b", "n\n1", "é",
		"a234567890123456789012345678901234567890123456789012345678901234" };
	static const char *const good[] = { "a", "0", "node-1", "a-", "n0123",
		"a23456789012345678901234567890123456789012345678901234567890123" };

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		assert_false(cert_node_name_valid(bad[i]));
		assert_int_equal(issue(f, f->pki, bad[i], NULL, 0, 0, false), -EINVAL);
		assert_err_has(f, "invalid node name");
	}
	for (size_t i = 0; i < ARRAY_SIZE(good); i++)
		assert_true(cert_node_name_valid(good[i]));
	assert_false(cert_node_name_valid(NULL));
	assert_int_equal(entries(f->pki), 2);
}

static void node_refusals(void **state)
{
	struct fx *f = *state;
	const char *bad_ip[] = { "10.0.0.300" };
	struct cert_node_req req = { .pki_dir = f->pki, .node = "n1", .days = CERT_DAYS_MAX + 1 };

	assert_int_equal(issue(f, f->pki, "n1", bad_ip, 1, 0, false), -EINVAL);
	assert_err_has(f, "invalid IP address '10.0.0.300'");
	assert_int_equal(cert_node_issue(&req, f->err, sizeof(f->err)), -EINVAL);
	/* longer than the CA lives */
	assert_int_equal(issue(f, f->pki, "n1", NULL, 0, 4000, false), -EINVAL);
	assert_err_has(f, "would outlive the cluster CA");
	assert_int_equal(renew(f, f->pki, "n1"), -ENOENT);
	assert_err_has(f, "has no certificate");
	assert_int_equal(entries(f->pki), 2);
}

static void node_exists(void **state)
{
	struct fx *f = *state;
	char crt[256], *before = NULL, *after = NULL;

	assert_int_equal(issue(f, f->pki, "n1", NULL, 0, 0, false), 0);
	pathf(crt, sizeof(crt), "%s/n1/node.crt", f->pki);
	before = slurp(crt);
	assert_int_equal(issue(f, f->pki, "n1", NULL, 0, 0, false), -EEXIST);
	assert_err_has(f, "already has a certificate");
	after = slurp(crt);
	assert_string_equal(before, after);
	free(after);
	assert_int_equal(issue(f, f->pki, "n1", NULL, 0, 0, true), 0);
	after = slurp(crt);
	assert_string_not_equal(before, after);
	free(before);
	free(after);
}

static void no_ca(void **state)
{
	struct fx *f = *state;
	char pki[128], path[256];

	pathf(pki, sizeof(pki), "%s/empty", f->top);
	assert_int_equal(issue(f, pki, "n1", NULL, 0, 0, false), -ENOENT);
	assert_err_has(f, "no cluster CA in");
	assert_false(is_there(pki));
	/* the key kept offline */
	pathf(path, sizeof(path), "%s/ca.key", f->pki);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(issue(f, f->pki, "n1", NULL, 0, 0, false), -ENOENT);
	assert_err_has(f, "the CA key is not here (kept offline?): pass --ca-key PATH");
	assert_int_equal(entries(f->pki), 1);
}

static void offline_key_signs(void **state)
{
	struct fx *f = *state;
	char pki[128], off[128], key[256];
	struct cert_node_req req = { .node = "n1" };

	pathf(pki, sizeof(pki), "%s/pki2", f->top);
	pathf(off, sizeof(off), "%s/usb", f->top);
	pathf(key, sizeof(key), "%s/ca.key", off);
	assert_int_equal(make_ca(pki, off, "t2", f->err), 0);
	req.pki_dir = pki;
	req.ca_key = key;
	assert_int_equal(cert_node_issue(&req, f->err, sizeof(f->err)), 0);
	/* the wrong CA's key */
	pathf(key, sizeof(key), "%s/ca.key", f->pki);
	req.node = "n2";
	assert_int_equal(cert_node_issue(&req, f->err, sizeof(f->err)), -EKEYREJECTED);
	assert_err_has(f, "is not the key of the cluster CA");
	pathf(key, sizeof(key), "%s/n2", pki);
	assert_false(is_there(key));
}

static void corrupt_pem(void **state)
{
	struct fx *f = *state;
	char crt[256], key[256];
	FILE *o = NULL;
	char *pem = NULL;

	pathf(crt, sizeof(crt), "%s/ca.crt", f->pki);
	pem = slurp(crt);
	assert_non_null(o = fopen(crt, "w"));
	fwrite(pem, 1, strlen(pem) / 2, o);
	fclose(o);
	assert_int_equal(issue(f, f->pki, "n1", NULL, 0, 0, false), -EINVAL);
	assert_err_has(f, "not a PEM certificate");
	assert_int_equal(entries(f->pki), 2);
	/* a key file that is not one */
	assert_non_null(o = fopen(crt, "w"));
	fputs(pem, o);
	fclose(o);
	pathf(key, sizeof(key), "%s/ca.key", f->pki);
	assert_non_null(o = fopen(key, "w"));
	fputs("-----BEGIN PRIVATE KEY-----\nnot base64 at all!\n-----END PRIVATE KEY-----\n", o);
	fclose(o);
	assert_int_equal(issue(f, f->pki, "n1", NULL, 0, 0, false), -EINVAL);
	assert_err_has(f, "not an unencrypted PEM private key");
	assert_int_equal(entries(f->pki), 2);
	free(pem);
}

static void second_ca(void **state)
{
	struct fx *f = *state;
	char pki2[128], crt[256], ca[256];

	pathf(pki2, sizeof(pki2), "%s/pki2", f->top);
	assert_int_equal(make_ca(pki2, NULL, "other", f->err), 0);
	assert_int_equal(issue(f, pki2, "n1", NULL, 0, 0, false), 0);
	pathf(crt, sizeof(crt), "%s/n1/node.crt", pki2);
	pathf(ca, sizeof(ca), "%s/ca.crt", f->pki);
	assert_int_equal(cert_verify_chain(crt, ca, f->err, sizeof(f->err)), -EKEYREJECTED);
	assert_err_has(f, "does not chain to the cluster CA");
	assert_err_has(f, "unable to get local issuer certificate");
	/* nor can this CA renew it */
	assert_int_equal(issue(f, f->pki, "n9", NULL, 0, 0, false), 0);
	pathf(ca, sizeof(ca), "%s/n1", pki2);
	pathf(crt, sizeof(crt), "%s/n1", f->pki);
	assert_int_equal(rename(ca, crt), 0);
	assert_int_equal(renew(f, f->pki, "n1"), -EKEYREJECTED);
	assert_err_has(f, "was not issued by the cluster CA");
	pathf(crt, sizeof(crt), "%s/n1/node.crt.old", f->pki);
	assert_false(is_there(crt));
}

/* A failure after some files were staged, or even placed, takes them all back. */
static void rollback(void **state)
{
	struct fx *f = *state;
	char dir[256], path[256];
	FILE *o = NULL;

	/* qemu/ is a file: fails while staging */
	pathf(dir, sizeof(dir), "%s/n1", f->pki);
	assert_int_equal(mkdir(dir, 0700), 0);
	pathf(path, sizeof(path), "%s/qemu", dir);
	assert_non_null(o = fopen(path, "w"));
	fclose(o);
	assert_int_equal(issue(f, f->pki, "n1", NULL, 0, 0, false), -ENOTDIR);
	assert_err_has(f, "is not a directory");
	assert_int_equal(entries(dir), 1);
	/* a leftover qemu/ca-cert.pem: fails after node.crt and node.key were placed */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkdir(path, 0700), 0);
	pathf(path, sizeof(path), "%s/qemu/ca-cert.pem", dir);
	assert_non_null(o = fopen(path, "w"));
	fclose(o);
	assert_int_equal(issue(f, f->pki, "n1", NULL, 0, 0, false), -EEXIST);
	assert_err_has(f, "already exists");
	assert_int_equal(entries(dir), 2);
}

static void info_of_garbage(void **state)
{
	struct fx *f = *state;
	struct cert_info ci;
	char path[256];
	FILE *o = NULL;

	pathf(path, sizeof(path), "%s/junk.pem", f->top);
	assert_non_null(o = fopen(path, "w"));
	fputs("hello\n", o);
	fclose(o);
	assert_int_equal(cert_info(path, &ci, f->err, sizeof(f->err)), -EINVAL);
	assert_err_has(f, "junk.pem: not a PEM certificate");
	pathf(path, sizeof(path), "%s/none.pem", f->top);
	assert_int_equal(cert_info(path, &ci, f->err, sizeof(f->err)), -ENOENT);
	assert_err_has(f, "none.pem: No such file or directory");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(ca_created, setup, teardown),
		cmocka_unit_test_setup_teardown(ca_refuses_existing, setup, teardown),
		cmocka_unit_test_setup_teardown(ca_key_offline, setup, teardown),
		cmocka_unit_test_setup_teardown(ca_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(node_issued, setup, teardown),
		cmocka_unit_test_setup_teardown(qemu_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(qemu_dir_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(node_renewed, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_node_names, setup, teardown),
		cmocka_unit_test_setup_teardown(node_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(node_exists, setup, teardown),
		cmocka_unit_test_setup_teardown(no_ca, setup, teardown),
		cmocka_unit_test_setup_teardown(offline_key_signs, setup, teardown),
		cmocka_unit_test_setup_teardown(corrupt_pem, setup, teardown),
		cmocka_unit_test_setup_teardown(second_ca, setup, teardown),
		cmocka_unit_test_setup_teardown(rollback, setup, teardown),
		cmocka_unit_test_setup_teardown(info_of_garbage, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
