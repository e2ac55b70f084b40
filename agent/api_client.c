/* api_client: the client half of the local API (see api.h). */
#include "agent/api.h"
#include "proto/wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <qb/qbipcc.h>

struct api_client {
	qb_ipcc_connection_t *conn;
	char name[64];
	size_t recv_len;         /* the reply buffer's size: see recv_size() */
};

/*
 * The API name is an abstract unix socket, which any user may bind while
 * hcad is not running: refuse a server that is not root's before sending it
 * anything. libqb (2.0) keeps the credentials the kernel attached to the
 * server's answer to the connection request (SO_PASSCRED, SCM_CREDENTIALS;
 * a process cannot claim another uid there). SO_PEERCRED is no help: the fd
 * qb_ipcc_fd_get() gives is a datagram socket, for which it reads all zeros.
 * The pid is not checked: it is 0 for a server in a pid namespace we cannot
 * see.
 */
static int check_server(struct api_client *c, char *err, size_t errlen)
{
	pid_t pid = 0;
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;
	int32_t rc = qb_ipcc_auth_get(c->conn, &pid, &uid, &gid);

	if (rc < 0) {
		snprintf(err, errlen, "cannot tell who serves the hcad API '%s': %s", c->name,
			 strerror(-rc));
		return -EPERM;
	}
	if (uid != 0) {
		snprintf(err, errlen, "hcad API '%s' is served by uid %u (pid %d), not root: "
			 "refusing to talk to it", c->name, (unsigned)uid, (int)pid);
		return -EPERM;
	}
	return 0;
}

/*
 * libqb (2.0, socket transport) receives a reply datagram whole whatever
 * buffer length it is given: qb_ipc_us_recv_at_most() reads as many bytes
 * as the reply's own header claims. The kernel bounds a datagram by the
 * server's send buffer, which libqb sets to the connection's size and the
 * kernel doubles. A buffer twice that size therefore holds any reply, and
 * one over API_MAX_MSG is reported as too large instead of overrunning.
 */
static size_t recv_size(qb_ipcc_connection_t *conn)
{
	int32_t conn_max = qb_ipcc_get_buffer_size(conn);
	size_t n = conn_max > 0 && (size_t)conn_max > API_MAX_MSG ? (size_t)conn_max : API_MAX_MSG;

	return 2 * n;
}

struct api_client *api_client_connect(const char *name, char *err, size_t errlen)
{
	struct api_client *c = calloc(1, sizeof(*c));

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->conn = qb_ipcc_connect(name, API_MAX_MSG);
	if (!c->conn) {
		int e = errno;
		if (e == EACCES || e == EPERM)
			snprintf(err, errlen, "permission denied: the hcad API is root-only");
		else
			snprintf(err, errlen, "hcad is not running (cannot reach API service "
				 "'%s' in this network namespace: %s)", name, strerror(e));
		free(c);
		return NULL;
	}
	if (check_server(c, err, errlen)) {
		api_client_close(c);
		return NULL;
	}
	c->recv_len = recv_size(c->conn);
	return c;
}

void api_client_close(struct api_client *c)
{
	if (!c)
		return;
	qb_ipcc_disconnect(c->conn);
	free(c);
}

/* The reply in @buf (@n bytes received), or NULL with @err filled. */
static Hca__ApiReply *reply_decode(const uint8_t *buf, ssize_t n, char *err, size_t errlen)
{
	const struct qb_ipc_response_header *rh = (const void *)buf;
	Hca__ApiReply *reply = NULL;
	int werr = 0;

	if ((size_t)n > API_MAX_MSG || ((size_t)n >= sizeof(*rh) && rh->size > 0 &&
					(size_t)rh->size > API_MAX_MSG)) {
		snprintf(err, errlen, "reply from hcad too large (%zd bytes, limit %u)",
			 (size_t)n >= sizeof(*rh) && rh->size > n ? (ssize_t)rh->size : n,
			 API_MAX_MSG);
		return NULL;
	}
	if ((size_t)n < sizeof(*rh) || rh->id != API_MSG_REPLY || rh->size != n) {
		snprintf(err, errlen, "malformed reply from hcad");
		return NULL;
	}
	reply = (Hca__ApiReply *)wire_frame_unpack(buf + sizeof(*rh), (size_t)n - sizeof(*rh),
						   API_MAX_MSG, WIRE_T_API_REPLY,
						   &hca__api_reply__descriptor, &werr);
	if (!reply)
		snprintf(err, errlen, "malformed reply from hcad: %s", wire_strerror(werr));
	return reply;
}

Hca__ApiReply *api_client_call(struct api_client *c, const Hca__ApiRequest *req,
			       int timeout_ms, char *err, size_t errlen)
{
	struct qb_ipc_request_header hdr = { .id = API_MSG_REQUEST };
	Hca__ApiReply *reply = NULL;
	size_t flen = 0;
	uint8_t *frame = wire_frame_pack(WIRE_T_API_REQUEST, &req->base, &flen);
	uint8_t *buf = malloc(c->recv_len);
	struct iovec iov[2];
	ssize_t n;

	if (!frame || !buf) {
		snprintf(err, errlen, "cannot encode the request: out of memory");
		goto out;
	}
	if (flen + sizeof(hdr) > API_MAX_MSG) {
		snprintf(err, errlen, "request too large for hcad (%zu bytes, limit %u)",
			 flen + sizeof(hdr), API_MAX_MSG);
		goto out;
	}
	hdr.size = (int32_t)(sizeof(hdr) + flen);
	iov[0] = (struct iovec){ &hdr, sizeof(hdr) };
	iov[1] = (struct iovec){ frame, flen };
	n = qb_ipcc_sendv_recv(c->conn, iov, 2, buf, c->recv_len, timeout_ms);
	if (n < 0) {
		if (n == -ETIMEDOUT || n == -EAGAIN)
			snprintf(err, errlen, "no reply from hcad within %d s", timeout_ms / 1000);
		else if (n == -EMSGSIZE)
			snprintf(err, errlen, "reply from hcad too large (limit %u bytes)",
				 API_MAX_MSG);
		else
			snprintf(err, errlen, "lost the connection to hcad: %s", strerror((int)-n));
		goto out;
	}
	reply = reply_decode(buf, n, err, errlen);
out:
	free(frame);
	free(buf);
	return reply;
}
