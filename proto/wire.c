/* wire: frame codec (see wire.h). No allocation before the length is bounded. */
#include "proto/wire.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[WIRE_T_MAX] = {
	[WIRE_T_API_REQUEST] = "api-request",
	[WIRE_T_API_REPLY] = "api-reply",
	[WIRE_T_VM_RECORD] = "vm-record",
	[WIRE_T_VM_STATE] = "vm-state",
	[WIRE_T_CHAN] = "chan",
	[WIRE_T_JOB] = "job",
	[WIRE_T_REP_RELATION] = "rep-relation",
};

const char *wire_type_name(uint16_t type)
{
	if (type >= WIRE_T_MAX || !type_names[type])
		return "unknown";
	return type_names[type];
}

static uint32_t crc_table[256];

static void crc_table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t wire_crc32c(const void *buf, size_t len)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	const uint8_t *p = buf;
	uint32_t c = 0xFFFFFFFFu;

	pthread_once(&once, crc_table_init);
	while (len--)
		c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
	return c ^ 0xFFFFFFFFu;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

int wire_hdr_encode(uint8_t out[WIRE_HDR_LEN], uint16_t type,
		    const void *payload, size_t len)
{
	if (len > WIRE_MAX_PAYLOAD)
		return -EMSGSIZE;
	put32(out, WIRE_MAGIC);
	put16(out + 4, WIRE_VERSION);
	put16(out + 6, type);
	put32(out + 8, (uint32_t)len);
	put32(out + 12, wire_crc32c(payload, len));
	return 0;
}

int wire_hdr_decode(const uint8_t *buf, size_t avail, size_t max_payload,
		    struct wire_hdr *h)
{
	if (avail < WIRE_HDR_LEN)
		return -EAGAIN;
	if (get32(buf) != WIRE_MAGIC)
		return -EBADMSG;
	h->version = get16(buf + 4);
	h->type = get16(buf + 6);
	h->len = get32(buf + 8);
	h->crc = get32(buf + 12);
	if (h->version != WIRE_VERSION)
		return -EPROTONOSUPPORT;
	if (h->type == 0 || h->type >= WIRE_T_MAX)
		return -EPROTO;
	if (max_payload > WIRE_MAX_PAYLOAD)
		max_payload = WIRE_MAX_PAYLOAD;
	if (h->len > max_payload)
		return -EMSGSIZE;
	return 0;
}

long wire_frame_decode(const uint8_t *buf, size_t avail, size_t max_payload,
		       struct wire_hdr *h, const uint8_t **payload)
{
	int rc = wire_hdr_decode(buf, avail, max_payload, h);

	if (rc < 0)
		return rc;
	if (avail - WIRE_HDR_LEN < h->len)
		return -EAGAIN;
	if (wire_crc32c(buf + WIRE_HDR_LEN, h->len) != h->crc)
		return -EILSEQ;
	*payload = buf + WIRE_HDR_LEN;
	return (long)(WIRE_HDR_LEN + h->len);
}

uint8_t *wire_frame_pack(uint16_t type, const ProtobufCMessage *msg,
			 size_t *frame_len)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf;

	if (len > WIRE_MAX_PAYLOAD) {
		errno = EMSGSIZE;
		return NULL;
	}
	buf = malloc(WIRE_HDR_LEN + len);
	if (!buf)
		return NULL;
	protobuf_c_message_pack(msg, buf + WIRE_HDR_LEN);
	wire_hdr_encode(buf, type, buf + WIRE_HDR_LEN, len);
	*frame_len = WIRE_HDR_LEN + len;
	return buf;
}

ProtobufCMessage *wire_frame_unpack(const uint8_t *buf, size_t len,
				    size_t max_payload, uint16_t type,
				    const ProtobufCMessageDescriptor *desc,
				    int *err)
{
	struct wire_hdr h;
	const uint8_t *payload = NULL;
	ProtobufCMessage *msg;
	long n = wire_frame_decode(buf, len, max_payload, &h, &payload);

	if (n < 0) {
		*err = (int)n;
		return NULL;
	}
	if ((size_t)n != len) {
		*err = -EMSGSIZE; /* trailing bytes: the sender's length lies */
		return NULL;
	}
	if (h.type != type) {
		*err = -EPROTO;
		return NULL;
	}
	msg = protobuf_c_message_unpack(desc, NULL, h.len, payload);
	if (!msg)
		*err = -EPROTO;
	return msg;
}

const char *wire_strerror(int err)
{
	switch (err) {
	case -EAGAIN: return "truncated frame";
	case -EBADMSG: return "bad frame magic";
	case -EPROTONOSUPPORT: return "unsupported frame version";
	case -EPROTO: return "unexpected or undecodable message";
	case -EMSGSIZE: return "frame length out of bounds";
	case -EILSEQ: return "frame checksum mismatch";
	default: return "invalid frame";
	}
}
