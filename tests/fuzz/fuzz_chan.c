/*
 * libFuzzer target: what the node channel (proto/chan_msg.c) does with the
 * bytes a peer sends once TLS has decrypted them: frames back to back
 * through chan_frame_parse() (the same call the connection makes, so the
 * bounds and the CRC are checked as in production), each payload through
 * chan_msg_decode() and its validation, and every message kind decoded
 * directly too, past the CRC gate. The in-place reader of stream data
 * (chan_msg_data_peek) is checked against protobuf-c on every input. Nothing may crash, leak or read out of
 * bounds, and a message that passes validation must be usable as the
 * connection uses it.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/chan_priv.h"

#define MAX_PAYLOAD (1u << 20)

/* Touch what the dispatcher would: strings must be terminated, sizes true. */
static size_t use(const Hca__ChanMsg *m)
{
	size_t n = 0;

	switch (m->kind_case) {
	case HCA__CHAN_MSG__KIND_REQUEST:
		n = strlen(m->request->method) + m->request->body.len;
		break;
	case HCA__CHAN_MSG__KIND_REPLY:
		n = m->reply->body.len + (size_t)-chan_msg_error_code(m->reply->error);
		if (m->reply->error)
			n += strlen(m->reply->error->message);
		break;
	case HCA__CHAN_MSG__KIND_STREAM_OPEN:
		n = strlen(m->stream_open->method) + m->stream_open->header.len;
		break;
	case HCA__CHAN_MSG__KIND_STREAM_DATA:
		if (m->stream_data->data.len)
			n = m->stream_data->data.data[m->stream_data->data.len - 1];
		break;
	case HCA__CHAN_MSG__KIND_STREAM_END:
		if (m->stream_end->error)
			n = strlen(m->stream_end->error->message);
		break;
	default:
		break;
	}
	return n;
}

/* The in-place reader of stream data must agree with protobuf-c. */
static void peek_agrees(const uint8_t *p, size_t len, const Hca__ChanMsg *m)
{
	const uint8_t *data;
	uint64_t id;
	size_t dlen;

	if (!chan_msg_data_peek(p, len, &id, &data, &dlen))
		return;
	if (!m || m->kind_case != HCA__CHAN_MSG__KIND_STREAM_DATA ||
	    m->stream_data->stream_id != id || m->stream_data->data.len != dlen ||
	    (dlen && memcmp(m->stream_data->data.data, data, dlen) != 0) ||
	    (dlen && (data < p || data + dlen > p + len)))
		__builtin_trap();
}

static void decode(const uint8_t *p, size_t len)
{
	const char *why = NULL;
	Hca__ChanMsg *m = chan_msg_decode(p, len, &why);
	char line[CHAN_MSG_MAX];

	peek_agrees(p, len, m);

	if (!m) {
		chan_line_copy(line, sizeof(line), why);
		return;
	}
	(void)use(m);
	if (m->kind_case == HCA__CHAN_MSG__KIND_REPLY && m->reply->error)
		chan_line_copy(line, sizeof(line), m->reply->error->message);
	chan_msg_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data;
	size_t left = size;
	struct chan_frame f;
	const char *why;

	/* a stream: frames back to back while they are whole and intact */
	while (chan_frame_parse(p, left, MAX_PAYLOAD, &f, &why) == 0) {
		decode(f.payload, f.h.len);
		p += f.total;
		left -= f.total;
	}
	/* and the decoder alone, without the CRC gate */
	decode(data, size);
	return 0;
}
