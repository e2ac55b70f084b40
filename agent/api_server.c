/*
 * api_server: libqb IPC service of hcad. Root-only; every message is bounded
 * and decoded through the wire frame before it reaches the vmm. Replies may
 * come later (a start waits for QEMU): the connection is referenced until
 * then, and a client gone meanwhile only loses its reply.
 */
#include "agent/api_server.h"
#include "agent/api.h"
#include "proto/wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <qb/qbipcs.h>
#include <qb/qblog.h>

struct api_server {
	qb_loop_t *loop;
	qb_ipcs_service_t *svc;
	struct vmm *vmm;
};

/* Only one server per process: libqb's poll handlers carry no context. */
static qb_loop_t *server_loop;

static int32_t job_add(enum qb_loop_priority p, void *data, qb_loop_job_dispatch_fn fn)
{
	return qb_loop_job_add(server_loop, p, data, fn);
}

static int32_t dispatch_add(enum qb_loop_priority p, int32_t fd, int32_t events,
			    void *data, qb_ipcs_dispatch_fn_t fn)
{
	return qb_loop_poll_add(server_loop, p, fd, events, data, fn);
}

static int32_t dispatch_mod(enum qb_loop_priority p, int32_t fd, int32_t events,
			    void *data, qb_ipcs_dispatch_fn_t fn)
{
	return qb_loop_poll_mod(server_loop, p, fd, events, data, fn);
}

static int32_t dispatch_del(int32_t fd)
{
	return qb_loop_poll_del(server_loop, fd);
}

static int32_t on_accept(qb_ipcs_connection_t *c, uid_t uid, gid_t gid)
{
	if (uid != 0) {
		qb_log(LOG_WARNING, "api: refused a client with uid %u (root only)", (unsigned)uid);
		return -EACCES;
	}
	/* the shared-memory files libqb creates are root's alone too */
	qb_ipcs_connection_auth_set(c, 0, 0, 0600);
	return 0;
}

static void send_reply(const Hca__ApiReply *r, void *ctx)
{
	qb_ipcs_connection_t *c = ctx;
	struct qb_ipc_response_header h = { .id = API_MSG_REPLY, .error = 0 };
	size_t flen = 0;
	uint8_t *frame = wire_frame_pack(WIRE_T_API_REPLY, &r->base, &flen);
	struct iovec iov[2];
	ssize_t n;

	if (!frame || flen + sizeof(h) > API_MAX_MSG) {
		/* an answer the client can read, never silence until its timeout */
		Hca__ApiReply er = HCA__API_REPLY__INIT;
		Hca__Error e = HCA__ERROR__INIT;
		char msg[160];

		qb_log(LOG_ERR, "api: reply too large (%zu bytes, limit %u): answered an error",
		       flen, (unsigned)API_MAX_MSG);
		snprintf(msg, sizeof(msg), "the reply is too large for the local API (%zu bytes, "
			 "limit %u)", flen, (unsigned)API_MAX_MSG);
		e.code = HCA__ERROR_CODE__ERROR_INTERNAL;
		e.message = msg;
		er.error = &e;
		free(frame);
		frame = wire_frame_pack(WIRE_T_API_REPLY, &er.base, &flen);
		if (!frame)
			goto out;
	}
	h.size = (int32_t)(sizeof(h) + flen);
	iov[0] = (struct iovec){ &h, sizeof(h) };
	iov[1] = (struct iovec){ frame, flen };
	n = qb_ipcs_response_sendv(c, iov, 2);
	if (n < 0)
		qb_log(LOG_INFO, "api: client left before its reply: %s", strerror((int)-n));
out:
	free(frame);
	qb_ipcs_connection_unref(c);
}

static void reply_protocol_error(qb_ipcs_connection_t *c, const char *why)
{
	Hca__ApiReply r = HCA__API_REPLY__INIT;
	Hca__Error e = HCA__ERROR__INIT;
	char msg[128];

	snprintf(msg, sizeof(msg), "malformed request: %s", why);
	qb_log(LOG_WARNING, "api: %s", msg);
	e.code = HCA__ERROR_CODE__ERROR_PROTOCOL;
	e.message = msg;
	r.error = &e;
	qb_ipcs_connection_ref(c);
	send_reply(&r, c);
}

static int32_t on_msg(qb_ipcs_connection_t *c, void *data, size_t size)
{
	struct qb_ipc_request_header *h = data;
	struct api_server *s = qb_ipcs_connection_service_context_get(c);
	Hca__ApiRequest *req;
	int werr = 0;

	if (size < sizeof(*h) || h->id != API_MSG_REQUEST || (size_t)h->size != size) {
		reply_protocol_error(c, "bad IPC header");
		return 0;
	}
	req = (Hca__ApiRequest *)wire_frame_unpack((uint8_t *)data + sizeof(*h),
						   size - sizeof(*h), API_MAX_MSG,
						   WIRE_T_API_REQUEST,
						   &hca__api_request__descriptor, &werr);
	if (!req) {
		reply_protocol_error(c, wire_strerror(werr));
		return 0;
	}
	qb_ipcs_connection_ref(c); /* released by send_reply */
	/* only the node channel says a request was forwarded, never a local client */
	if (req->forwarded_by != protobuf_c_empty_string)
		free(req->forwarded_by);
	req->forwarded_by = (char *)protobuf_c_empty_string;
	vmm_request(s->vmm, req, send_reply, c);
	hca__api_request__free_unpacked(req, NULL);
	return 0;
}

static const struct qb_ipcs_service_handlers handlers = {
	.connection_accept = on_accept,
	.msg_process = on_msg,
};

static const struct qb_ipcs_poll_handlers poll_handlers = {
	.job_add = job_add,
	.dispatch_add = dispatch_add,
	.dispatch_mod = dispatch_mod,
	.dispatch_del = dispatch_del,
};

struct api_server *api_server_new(qb_loop_t *loop, const char *name, struct vmm *vmm,
				  char *err, size_t errlen)
{
	struct api_server *s = calloc(1, sizeof(*s));
	int rc;

	if (!s || server_loop) {
		snprintf(err, errlen, "api: %s", s ? "a server already runs" : "out of memory");
		free(s);
		return NULL;
	}
	s->loop = server_loop = loop;
	s->vmm = vmm;
	s->svc = qb_ipcs_create(name, 0, QB_IPC_SOCKET, (struct qb_ipcs_service_handlers *)&handlers);
	if (!s->svc) {
		snprintf(err, errlen, "api: cannot create service '%s': %s", name, strerror(errno));
		goto fail;
	}
	qb_ipcs_service_context_set(s->svc, s);
	qb_ipcs_enforce_buffer_size(s->svc, API_MAX_MSG);
	qb_ipcs_poll_handlers_set(s->svc, (struct qb_ipcs_poll_handlers *)&poll_handlers);
	rc = qb_ipcs_run(s->svc);
	if (rc < 0) {
		snprintf(err, errlen, "api: cannot serve '%s': %s (is another hcad running "
			 "in this network namespace?)", name, strerror(-rc));
		goto fail;
	}
	return s;
fail:
	api_server_free(s);
	return NULL;
}

void api_server_free(struct api_server *s)
{
	if (!s)
		return;
	if (s->svc) {
		qb_ipcs_destroy(s->svc);
	}
	server_loop = NULL;
	free(s);
}
