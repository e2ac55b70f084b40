/* api_client: the client half of the local API (see api.h). */
#include "agent/api.h"
#include "proto/wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <qb/qbipcc.h>

struct api_client {
	qb_ipcc_connection_t *conn;
	char name[64];
};

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
	return c;
}

void api_client_close(struct api_client *c)
{
	if (!c)
		return;
	qb_ipcc_disconnect(c->conn);
	free(c);
}

Hca__ApiReply *api_client_call(struct api_client *c, const Hca__ApiRequest *req,
			       int timeout_ms, char *err, size_t errlen)
{
	struct qb_ipc_request_header hdr = { .id = API_MSG_REQUEST };
	struct qb_ipc_response_header *rh;
	Hca__ApiReply *reply = NULL;
	size_t flen = 0;
	uint8_t *frame = wire_frame_pack(WIRE_T_API_REQUEST, &req->base, &flen);
	uint8_t *buf = malloc(API_MAX_MSG);
	struct iovec iov[2];
	ssize_t n;
	int werr = 0;

	if (!frame || !buf || flen + sizeof(hdr) > API_MAX_MSG) {
		snprintf(err, errlen, "cannot encode the request");
		goto out;
	}
	hdr.size = (int32_t)(sizeof(hdr) + flen);
	iov[0] = (struct iovec){ &hdr, sizeof(hdr) };
	iov[1] = (struct iovec){ frame, flen };
	n = qb_ipcc_sendv_recv(c->conn, iov, 2, buf, API_MAX_MSG, timeout_ms);
	if (n < 0) {
		if (n == -ETIMEDOUT || n == -EAGAIN)
			snprintf(err, errlen, "no reply from hcad within %d s", timeout_ms / 1000);
		else
			snprintf(err, errlen, "lost the connection to hcad: %s", strerror((int)-n));
		goto out;
	}
	rh = (struct qb_ipc_response_header *)buf;
	if ((size_t)n < sizeof(*rh) || rh->id != API_MSG_REPLY || rh->size != n) {
		snprintf(err, errlen, "malformed reply from hcad");
		goto out;
	}
	reply = (Hca__ApiReply *)wire_frame_unpack(buf + sizeof(*rh), (size_t)n - sizeof(*rh),
						   API_MAX_MSG, WIRE_T_API_REPLY,
						   &hca__api_reply__descriptor, &werr);
	if (!reply)
		snprintf(err, errlen, "malformed reply from hcad: %s", wire_strerror(werr));
out:
	free(frame);
	free(buf);
	return reply;
}
