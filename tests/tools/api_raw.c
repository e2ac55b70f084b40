/*
 * api_raw: send a deliberately malformed message to hcad's local API and
 * print the error it answers with. For the integration tests only.
 *   api_raw SERVICE garbage|badmagic|truncated|badcrc|wrongtype|badheader
 * Exit 0 if hcad answered with an error reply, 1 otherwise.
 */
#include "agent/api.h"
#include "proto/wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <qb/qbipcc.h>

static size_t make_payload(const char *kind, uint8_t *buf, size_t cap)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	size_t len = 0;
	uint8_t *f;

	req.op_case = HCA__API_REQUEST__OP_LIST;
	req.list = 1;
	f = wire_frame_pack(WIRE_T_API_REQUEST, &req.base, &len);
	if (!f || len > cap)
		exit(2);
	memcpy(buf, f, len);
	free(f);
	if (!strcmp(kind, "garbage")) {
		memset(buf, 0x5a, 64);
		return 64;
	}
	if (!strcmp(kind, "badmagic"))
		buf[0] ^= 0xff;
	else if (!strcmp(kind, "truncated"))
		len -= 1;
	else if (!strcmp(kind, "badcrc"))
		buf[15] ^= 0x01;
	else if (!strcmp(kind, "wrongtype"))
		buf[7] = WIRE_T_VM_RECORD;
	else if (!strcmp(kind, "hugelen"))
		buf[8] = 0x7f;
	return len;
}

int main(int argc, char **argv)
{
	struct qb_ipc_request_header h = { .id = API_MSG_REQUEST };
	static uint8_t payload[4096], reply[API_MAX_MSG];
	qb_ipcc_connection_t *c;
	Hca__ApiReply *r;
	struct iovec iov[2];
	size_t len;
	ssize_t n;
	int err = 0;

	if (argc != 3)
		return 2;
	len = make_payload(argv[2], payload, sizeof(payload));
	h.size = (int32_t)(sizeof(h) + len);
	if (!strcmp(argv[2], "badheader"))
		h.id = 77;
	c = qb_ipcc_connect(argv[1], API_MAX_MSG);
	if (!c)
		return 2;
	iov[0] = (struct iovec){ &h, sizeof(h) };
	iov[1] = (struct iovec){ payload, len };
	n = qb_ipcc_sendv_recv(c, iov, 2, reply, sizeof(reply), 5000);
	qb_ipcc_disconnect(c);
	if (n < (ssize_t)sizeof(struct qb_ipc_response_header))
		return 1;
	r = (Hca__ApiReply *)wire_frame_unpack(reply + sizeof(struct qb_ipc_response_header),
					       (size_t)n - sizeof(struct qb_ipc_response_header),
					       API_MAX_MSG, WIRE_T_API_REPLY,
					       &hca__api_reply__descriptor, &err);
	if (!r || !r->error)
		return 1;
	printf("%s\n", r->error->message);
	hca__api_reply__free_unpacked(r, NULL);
	return 0;
}
