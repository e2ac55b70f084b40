/*
 * test_chan_tls: who the node channel (proto/chan.h) lets in, and what it
 * does with bytes that are not its protocol. Each refusal must be logged
 * with its reason and the peer's address, must not hurt the server (a good
 * peer is served right after), and must leave nothing behind (LSan).
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <qb/qblog.h>
#include <qb/qbloop.h>

#include "proto/chan.h"
#include "proto/hca.pb-c.h"
#include "proto/wire.h"
#include "tests/unit/util_certs.h"

#define SAFETY_MS 5000u

static struct pki *pki;

struct result {
	int calls;
	int err;
	char msg[256];
};

struct h {
	qb_loop_t *loop;
	struct chan_tls *stls, *ctls;
	struct chan_server *srv;
	struct chan_peer *good;
	uint16_t port;
};

static void h_ping(struct chan_reply *r, const void *body, size_t len, void *opaque)
{
	chan_reply_ok(r, body, len);
}

static struct h *h_new(void)
{
	struct h *h = calloc(1, sizeof(*h));

	assert_non_null(h);
	h->loop = qb_loop_create();
	h->stls = pki_tls(pki, "node1");
	h->ctls = pki_tls(pki, "node2");
	h->srv = chan_server_new(h->loop, h->stls, NULL);
	assert_non_null(h->srv);
	assert_int_equal(chan_server_listen(h->srv, "127.0.0.1", 0), 0);
	h->port = chan_server_port(h->srv);
	assert_int_equal(chan_handle(h->srv, "ping", h_ping, h), 0);
	h->good = chan_peer_new(h->loop, h->ctls, "node1", "127.0.0.1", h->port, NULL);
	assert_non_null(h->good);
	log_capture_clear();
	return h;
}

static void h_free(struct h *h)
{
	chan_peer_free(h->good);
	chan_server_free(h->srv);
	chan_tls_free(h->stls);
	chan_tls_free(h->ctls);
	qb_loop_destroy(h->loop);
	free(h);
}

static void on_reply(int err, const void *body, size_t len, const char *msg, void *opaque)
{
	struct result *r = opaque;

	r->calls++;
	r->err = err;
	snprintf(r->msg, sizeof(r->msg), "%s", msg);
}

static bool answered(void *arg)
{
	return ((struct result *)arg)->calls > 0;
}

static char last_msg[256];

static int ping(struct h *h, struct chan_peer *p, unsigned ms)
{
	struct result r = { 0 };

	assert_int_equal(chan_call(p, "ping", "x", 1, ms, on_reply, &r), 0);
	assert_true(loop_run_until(h->loop, answered, &r, SAFETY_MS));
	snprintf(last_msg, sizeof(last_msg), "%s", r.msg);
	return r.err;
}

/* The server still serves a member with a good certificate. */
static void still_serving(struct h *h)
{
	assert_int_equal(ping(h, h->good, 2000), 0);
}

/*
 * A peer with identity @who calling the server "node1" gets nowhere: its
 * call never goes out, and times out saying why (@alert, the server's).
 */
static void peer_refused(struct h *h, const char *who, const char *expect, const char *alert)
{
	struct chan_tls *t = pki_tls(pki, who);
	struct chan_peer *p = chan_peer_new(h->loop, t, expect, "127.0.0.1", h->port, NULL);

	assert_non_null(p);
	assert_int_equal(ping(h, p, 500), -ETIMEDOUT);
	assert_non_null(strstr(last_msg, "unreachable"));
	assert_non_null(strstr(last_msg, alert));
	assert_false(chan_peer_connected(p));
	chan_peer_free(p);
	chan_tls_free(t);
	still_serving(h);
}

/* ---- certificates ---- */

static void other_ca_refused(void **state)
{
	struct h *h = h_new();

	peer_refused(h, "foreign", "node1", "unknown ca");
	assert_true(log_has("chan 127.0.0.1:", "refusing certificate", "unable to get local issuer",
			    NULL));
	h_free(h);
}

static void expired_refused(void **state)
{
	struct h *h = h_new();

	peer_refused(h, "expired", "node1", "certificate expired");
	assert_true(log_has("chan 127.0.0.1:", "certificate has expired", NULL));
	h_free(h);
}

static void not_yet_valid_refused(void **state)
{
	struct h *h = h_new();

	peer_refused(h, "notyet", "node1", "bad certificate");
	assert_true(log_has("chan 127.0.0.1:", "certificate is not yet valid", NULL));
	h_free(h);
}

static void non_member_refused(void **state)
{
	struct h *h = h_new();

	peer_refused(h, "intruder", "node1", "handshake failure");
	assert_true(log_has("chan 127.0.0.1:", "'intruder'", "not a member of the cluster", NULL));
	h_free(h);
}

static void ambiguous_names_refused(void **state)
{
	struct h *h = h_new();

	peer_refused(h, "twosan", "node1", "handshake failure");
	assert_true(log_has("more than one DNS subjectAltName", NULL));
	peer_refused(h, "nosan", "node1", "handshake failure");
	assert_true(log_has("no DNS subjectAltName", NULL));
	h_free(h);
}

/* The client checks it reached the node it meant: node1 is not node3. */
static void wrong_server_refused(void **state)
{
	struct h *h = h_new();
	struct chan_peer *p = chan_peer_new(h->loop, h->ctls, "node3", "127.0.0.1", h->port, NULL);

	assert_non_null(p);
	assert_int_equal(ping(h, p, 400), -ETIMEDOUT);
	assert_true(log_has("node3 at 127.0.0.1", "refusing certificate", NULL));
	chan_peer_free(p);
	still_serving(h);
	h_free(h);
}

static void reload_applies_to_new_connections(void **state)
{
	struct h *h = h_new();
	struct chan_tls_cfg c;

	still_serving(h);
	/* a bad file: refused, the old identity stays */
	pki_cfg(pki, "node2", &c);
	c.key_file = "/nonexistent/key.pem";
	assert_int_equal(chan_tls_reload(h->ctls, &c), -EPROTO);
	/* a certificate the server does not trust: the live connection goes on */
	pki_cfg(pki, "foreign", &c);
	assert_int_equal(chan_tls_reload(h->ctls, &c), 0);
	still_serving(h);
	/* new connections use it, and are refused */
	chan_peer_free(h->good);
	h->good = chan_peer_new(h->loop, h->ctls, "node1", "127.0.0.1", h->port, NULL);
	assert_int_equal(ping(h, h->good, 400), -ETIMEDOUT);
	assert_false(chan_peer_connected(h->good));
	pki_cfg(pki, "node2", &c);
	assert_int_equal(chan_tls_reload(h->ctls, &c), 0);
	assert_int_equal(ping(h, h->good, 3000), 0);
	h_free(h);
}

/* ---- bytes that are not our protocol ---- */

static bool raw_done(void *arg)
{
	return raw_client_done(arg);
}

/* Play @who (NULL: no TLS) sending @len bytes; the server must cut it. */
static void raw_cut(struct h *h, const char *who, const void *bytes, size_t len)
{
	struct raw_opts o = { .who = who, .send = bytes, .send_len = len, .timeout_ms = 3000 };
	struct raw_client *rc = raw_client_start(pki, h->port, &o);
	struct raw_result res;

	assert_non_null(rc);
	assert_true(loop_run_until(h->loop, raw_done, rc, SAFETY_MS));
	raw_client_join(rc, &res);
	assert_true(res.closed);
	assert_true(res.ms < 2000); /* cut, not timed out */
	if (who)
		assert_true(res.handshake_ok);
	still_serving(h);
}

static void plaintext_http_refused(void **state)
{
	struct h *h = h_new();
	const char *get = "GET / HTTP/1.0\r\n\r\n";

	raw_cut(h, NULL, get, strlen(get));
	assert_true(log_has("chan 127.0.0.1:", "TLS handshake failed", NULL));
	h_free(h);
}

static uint8_t *ping_frame(size_t *len)
{
	Hca__ChanMsg m = HCA__CHAN_MSG__INIT;
	Hca__ChanPing p = HCA__CHAN_PING__INIT;

	m.kind_case = HCA__CHAN_MSG__KIND_PING;
	m.ping = &p;
	return wire_frame_pack(WIRE_T_CHAN, &m.base, len);
}

static void plaintext_frames_refused(void **state)
{
	struct h *h = h_new();
	size_t len;
	uint8_t *f = ping_frame(&len);

	raw_cut(h, NULL, f, len);
	assert_true(log_has("chan 127.0.0.1:", "TLS handshake failed", NULL));
	free(f);
	h_free(h);
}

static void oversized_frame_refused(void **state)
{
	struct h *h = h_new();
	uint8_t hdr[WIRE_HDR_LEN];

	wire_hdr_encode(hdr, WIRE_T_CHAN, "", 0);
	hdr[8] = 0x7f; /* 2 GiB: nothing may be allocated for it */
	raw_cut(h, "node2", hdr, sizeof(hdr));
	assert_true(log_has("node2 at 127.0.0.1", "refusing a frame of 2130706432 bytes", NULL));
	h_free(h);
}

static void garbage_refused(void **state)
{
	struct h *h = h_new();
	size_t len;
	uint8_t *f = ping_frame(&len);

	raw_cut(h, "node2", "\x00\x01garbage-garbage-garbage", 24);
	assert_true(log_has("node2 at 127.0.0.1", "bad frame magic", NULL));
	f[len - 1] ^= 1;
	raw_cut(h, "node2", f, len);
	assert_true(log_has("node2 at 127.0.0.1", "checksum mismatch", NULL));
	free(f);
	h_free(h);
}

static void unknown_kind_refused(void **state)
{
	struct h *h = h_new();
	Hca__ChanMsg empty = HCA__CHAN_MSG__INIT;
	Hca__ApiRequest api = HCA__API_REQUEST__INIT;
	uint8_t hdr[WIRE_HDR_LEN];
	size_t len;
	uint8_t *f;

	/* a ChanMsg of no kind we know (a newer peer's, say) */
	f = wire_frame_pack(WIRE_T_CHAN, &empty.base, &len);
	raw_cut(h, "node2", f, len);
	assert_true(log_has("node2 at 127.0.0.1", "unknown message kind", NULL));
	free(f);
	/* a frame of the local API on the node channel */
	api.op_case = HCA__API_REQUEST__OP_LIST;
	api.list = 1;
	f = wire_frame_pack(WIRE_T_API_REQUEST, &api.base, &len);
	raw_cut(h, "node2", f, len);
	assert_true(log_has("node2 at 127.0.0.1", "a frame of another protocol", NULL));
	free(f);
	/* a frame type nobody knows */
	wire_hdr_encode(hdr, WIRE_T_CHAN, "", 0);
	hdr[7] = 0xee;
	raw_cut(h, "node2", hdr, sizeof(hdr));
	assert_true(log_has("node2 at 127.0.0.1", "unknown type 238", NULL));
	h_free(h);
}

/* A client may not send what only a server sends. */
static void reply_from_client_refused(void **state)
{
	struct h *h = h_new();
	Hca__ChanMsg m = HCA__CHAN_MSG__INIT;
	Hca__ChanReply rep = HCA__CHAN_REPLY__INIT;
	size_t len;
	uint8_t *f;

	m.kind_case = HCA__CHAN_MSG__KIND_REPLY;
	m.reply = &rep;
	f = wire_frame_pack(WIRE_T_CHAN, &m.base, &len);
	raw_cut(h, "node2", f, len);
	assert_true(log_has("node2 at 127.0.0.1", "refusing a reply from a client", NULL));
	free(f);
	h_free(h);
}

static void handshake_deadline(void **state)
{
	struct chan_cfg cfg = { .handshake_ms = 200 };
	struct h *h = h_new();
	struct chan_server *srv = chan_server_new(h->loop, h->stls, &cfg);
	struct raw_opts o = { .who = NULL, .timeout_ms = 3000 };
	struct raw_client *rc;
	struct raw_result res;

	assert_int_equal(chan_server_listen(srv, "127.0.0.1", 0), 0);
	/* connects and says nothing at all */
	rc = raw_client_start(pki, chan_server_port(srv), &o);
	assert_true(loop_run_until(h->loop, raw_done, rc, SAFETY_MS));
	raw_client_join(rc, &res);
	assert_true(res.closed);
	assert_in_range(res.ms, 150, 1500);
	assert_true(log_has("chan 127.0.0.1:", "no TLS handshake within 200 ms", NULL));
	chan_server_free(srv);
	h_free(h);
}

static void tls_new_checks(void **state)
{
	struct chan_tls_cfg c;

	pki_cfg(pki, "node1", &c);
	assert_null(chan_tls_new(&c, NULL, NULL));
	assert_int_equal(errno, EINVAL);
	c.cert_file = "/nonexistent.crt";
	assert_null(chan_tls_new(&c, pki_member, NULL));
	assert_int_equal(errno, EPROTO);
	assert_true(log_has("/nonexistent.crt", "cannot load the certificate", NULL));
	chan_tls_free(NULL);
	chan_server_free(NULL);
	chan_peer_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(tls_new_checks),
		cmocka_unit_test(other_ca_refused),
		cmocka_unit_test(expired_refused),
		cmocka_unit_test(not_yet_valid_refused),
		cmocka_unit_test(non_member_refused),
		cmocka_unit_test(ambiguous_names_refused),
		cmocka_unit_test(wrong_server_refused),
		cmocka_unit_test(reload_applies_to_new_connections),
		cmocka_unit_test(plaintext_http_refused),
		cmocka_unit_test(plaintext_frames_refused),
		cmocka_unit_test(oversized_frame_refused),
		cmocka_unit_test(garbage_refused),
		cmocka_unit_test(unknown_kind_refused),
		cmocka_unit_test(reply_from_client_refused),
		cmocka_unit_test(handshake_deadline),
	};
	int rc;

	signal(SIGPIPE, SIG_IGN);
	qb_log_init("test_chan_tls", LOG_USER, LOG_EMERG);
	qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
	log_capture_start();
	pki = pki_new();
	if (!pki)
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	pki_free(pki);
	qb_log_fini();
	return rc;
}
