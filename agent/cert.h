/*
 * cert: the cluster PKI. One CA per cluster signs a certificate per node;
 * agents authenticate each other with mutual TLS from it, and QEMU's
 * migration and NBD streams use the same certificates as tls-creds-x509.
 * Used by hcactl (cluster init, cluster cert ...) and by hcad.
 *
 * Layout of a PKI directory (default CERT_PKI_DEFAULT):
 *   ca.crt                     the cluster CA certificate
 *   ca.key                     its key, 0600 (absent when kept offline)
 *   NODE/node.crt, node.key    a node's certificate and key (key 0600)
 *   NODE/ca.crt                a copy of the CA certificate
 *   NODE/node.crt.old          the certificate a renewal replaced
 *   NODE/qemu/                 the same, under the names QEMU expects
 *
 * Every function returns 0 or -errno and, on failure, one line for people
 * in @err (what, where, and the way out when there is one). Nothing
 * half-written is ever left behind: files are written to temporary names
 * and only then put in place, and a failure removes what this call made.
 *   -EINVAL        bad argument or a file that is not what it should be
 *   -ENOENT        a needed file is missing (CA, CA key, node certificate)
 *   -EEXIST        refusing to overwrite
 *   -EKEYREJECTED  a key or certificate that does not belong to the CA
 *   -ENOMEM, other -errno from the file system
 * Blocking (file I/O, key generation): hcad calls these on a worker.
 */
#ifndef HCA_CERT_H
#define HCA_CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define CERT_PKI_DEFAULT "/etc/hca/pki"
#define CERT_CA_CRT "ca.crt"
#define CERT_CA_KEY "ca.key"
#define CERT_NODE_CRT "node.crt"
#define CERT_NODE_KEY "node.key"
#define CERT_NODE_OLD "node.crt.old"
#define CERT_QEMU_DIR "qemu"

#define CERT_CA_DAYS_DEFAULT 3650u
#define CERT_NODE_DAYS_DEFAULT 365u
#define CERT_DAYS_MAX 36500u
#define CERT_NODE_NAME_MAX 63
#define CERT_CLUSTER_NAME_MAX 48
#define CERT_NAMES_MAX 16          /* DNS and IP subject alternative names, each */

/* [a-z0-9][a-z0-9-]{0,62}: a DNS label, so it can be the node's DNS SAN. */
bool cert_node_name_valid(const char *name);

struct cert_ca_req {
	const char *pki_dir;   /* borrowed; gets ca.crt, and ca.key unless key_dir */
	const char *key_dir;   /* borrowed; NULL, or where ca.key (and a copy of
				* ca.crt) go instead, to be kept offline */
	const char *name;      /* borrowed; the cluster's name, in the CA subject */
	unsigned days;         /* 0: CERT_CA_DAYS_DEFAULT */
};

/*
 * Create the cluster CA: an EC P-256 key and a self-signed certificate
 * "CN=hca cluster CA NAME" (CA:TRUE, keyCertSign+cRLSign). Directories it
 * creates are 0700, the key 0600. -EEXIST if a CA is already there.
 */
int cert_ca_create(const struct cert_ca_req *req, char *err, size_t errlen);

struct cert_node_req {
	const char *pki_dir;   /* borrowed; holds ca.crt, and ca.key unless ca_key */
	const char *ca_key;    /* borrowed; NULL: PKI_DIR/ca.key */
	const char *out_dir;   /* borrowed; NULL: pki_dir. Files go to OUT_DIR/NODE/ */
	const char *node;      /* borrowed; checked with cert_node_name_valid() */
	const char *const *ips; /* borrowed; n_ips IPv4/IPv6 addresses for IP SANs */
	size_t n_ips;
	unsigned days;         /* 0: CERT_NODE_DAYS_DEFAULT */
	bool force;            /* issue: replace an existing certificate */
};

/*
 * Issue NODE a new key (P-256) and certificate: CN=NODE, SANs DNS:NODE and
 * IP:each of ips, serverAuth+clientAuth, random 128-bit serial. Writes
 * OUT/NODE/{node.crt,node.key,ca.crt} and cert_qemu_dir_write()'s files in
 * OUT/NODE/qemu. -EEXIST if NODE has a certificate and !force.
 */
int cert_node_issue(const struct cert_node_req *req, char *err, size_t errlen);

/*
 * Re-issue NODE's certificate with a new key and serial and the same
 * subject alternative names (ips must be empty), replacing each file
 * atomically; the previous certificate is kept as node.crt.old.
 * -ENOENT if NODE has no certificate; -EKEYREJECTED if it has one from
 * another CA (issue --force replaces that).
 */
int cert_node_renew(const struct cert_node_req *req, char *err, size_t errlen);

struct cert_info {
	char subject[256];     /* RFC 2253: "CN=node1" */
	char cn[65];
	char issuer[256];
	char serial[48];       /* upper-case hex */
	char dns[CERT_NAMES_MAX][254];
	size_t n_dns;
	char ip[CERT_NAMES_MAX][46];
	size_t n_ip;
	time_t not_before;
	time_t not_after;
	long days_left;        /* whole days until not_after, negative once expired */
	bool is_ca;
};

/* Read the PEM certificate at @path into @out. */
int cert_info(const char *path, struct cert_info *out, char *err, size_t errlen);

/*
 * Does @cert_path chain to the CA certificate at @ca_path, today?
 * 0 if so; -EKEYREJECTED with the verifier's reason (another CA, expired,
 * not yet valid...) if not; other errors for unreadable files.
 */
int cert_verify_chain(const char *cert_path, const char *ca_path, char *err, size_t errlen);

/*
 * Write QEMU's tls-creds-x509 directory @dir (created 0700): ca-cert.pem,
 * server-cert.pem, server-key.pem, client-cert.pem, client-key.pem, from
 * the given CA certificate, node certificate and key (the node certificate
 * has both EKUs, so it serves both ends). Existing files are replaced, one
 * atomic rename each. -EKEYREJECTED if the key does not match the
 * certificate or the certificate was not signed by the CA.
 */
int cert_qemu_dir_write(const char *dir, const char *ca_path, const char *cert_path,
			const char *key_path, char *err, size_t errlen);

#endif
