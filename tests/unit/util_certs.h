/*
 * util_certs: what the channel tests (test_chan*.c) need besides cmocka.
 *
 *   - a throwaway PKI made with the OpenSSL API in a mkdtemp directory: the
 *     cluster CA, an unrelated second CA, and node certificates good and bad;
 *   - a raw client on its own thread (blocking sockets, optional TLS) that
 *     sends what a test scripts and reports how the server treated it, so
 *     misbehaving peers can be played while the loop runs on the main thread;
 *   - loop helpers: run a qb_loop until a condition holds or a deadline, and
 *     capture qb_log lines so a test can check a refusal was logged with its
 *     reason and the peer's address.
 */
#ifndef HCA_TESTS_UTIL_CERTS_H
#define HCA_TESTS_UTIL_CERTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <qb/qbloop.h>

#include "proto/chan.h"

/*
 * Identities, each NAME.crt + NAME.key, all but "foreign" signed by the
 * cluster CA (ca.pem):
 *   node1, node2, node3  valid, DNS SAN = their name
 *   intruder             valid, DNS SAN "intruder" (not a member)
 *   expired              DNS SAN node2, expired yesterday
 *   notyet               DNS SAN node2, valid from tomorrow
 *   foreign              DNS SAN node2, signed by the unrelated ca2.pem
 *   twosan               DNS SANs node2 and node3
 *   nosan                no SAN, CN node2
 */
struct pki;

/* Generate everything; NULL (reason on stderr) on failure. */
struct pki *pki_new(void);

/* Remove the files and the directory; NULL is a no-op. */
void pki_free(struct pki *k);

/* @who's files, trusting the cluster CA; the strings belong to @k. */
void pki_cfg(struct pki *k, const char *who, struct chan_tls_cfg *cfg);

/* The authorize callback of the tests: node1, node2 and node3 are members. */
bool pki_member(const char *name, void *opaque);

/* A channel identity for @who from @k, admitting members only; fails the
 * test if OpenSSL refuses it. Free with chan_tls_free(). */
struct chan_tls *pki_tls(struct pki *k, const char *who);

/* ---- a raw client on a thread ---- */

struct raw_opts {
	const char *who;	  /* TLS with this identity; NULL: plain TCP */
	const void *send;	  /* written once connected (after the handshake) */
	size_t send_len;
	size_t abort_after;	  /* reset the connection after reading this much */
	bool no_read;		  /* after sending, read nothing until the timeout */
	unsigned timeout_ms;	  /* stop waiting for the server to close (2000) */
};

struct raw_result {
	bool handshake_ok; /* TLS: SSL_connect succeeded */
	bool closed;	   /* the server closed or reset it (not our timeout/abort) */
	size_t received;   /* bytes read (decrypted for TLS) */
	unsigned ms;	   /* from connect to the end */
};

struct raw_client;

struct raw_client *raw_client_start(struct pki *k, uint16_t port, const struct raw_opts *o);
bool raw_client_done(struct raw_client *rc);
/* Wait for the thread, give its result and free it. */
void raw_client_join(struct raw_client *rc, struct raw_result *res);

/* ---- loop and log helpers ---- */

/* Run @loop until @cond(@arg) or @max_ms passed; returns @cond's last value. */
bool loop_run_until(qb_loop_t *loop, bool (*cond)(void *), void *arg, unsigned max_ms);

/* Run @loop for @ms. */
void loop_run_for(qb_loop_t *loop, unsigned ms);

/* Capture qb_log (and echo it to stderr if HCA_TEST_VERBOSE is set). */
void log_capture_start(void);
void log_capture_clear(void);
/* Was a line containing every one of the (NULL-terminated) strings logged? */
bool log_has(const char *s, ...) __attribute__((sentinel));

#endif /* HCA_TESTS_UTIL_CERTS_H */
