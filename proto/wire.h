/*
 * wire: the frame every hca message travels in, on the local API, between
 * agents and in state records.
 *
 *   0      4        6      8        12       16
 *   | magic | version | type | length | crc32c | payload (protobuf-c) ...
 *
 * All integers big-endian. The length is checked against the caller's limit
 * before anything is allocated; the CRC covers the payload so a torn or
 * corrupt record on disk is detected rather than half-decoded.
 */
#ifndef HCA_WIRE_H
#define HCA_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#define WIRE_MAGIC 0x48434131u /* "HCA1" */
#define WIRE_VERSION 1u
#define WIRE_HDR_LEN 16u
/* Hard ceiling for any frame; callers pass a smaller limit that fits them. */
#define WIRE_MAX_PAYLOAD (16u << 20)

enum wire_type {
	WIRE_T_API_REQUEST = 1,
	WIRE_T_API_REPLY = 2,
	WIRE_T_VM_RECORD = 3,
	WIRE_T_VM_STATE = 4,
	WIRE_T_CHAN = 5, /* node-to-node channel: one hca.ChanMsg */
	WIRE_T_JOB = 6,  /* a job record: one hca.Job */
	WIRE_T_REP_RELATION = 7, /* a replication relation: one hca.RepRelation */
	WIRE_T_MAX
};

struct wire_hdr {
	uint16_t version;
	uint16_t type;
	uint32_t len;
	uint32_t crc;
};

/* Name of a frame type for logs; "unknown" for values outside the enum. */
const char *wire_type_name(uint16_t type);

uint32_t wire_crc32c(const void *buf, size_t len);

/*
 * Encode a header for @len bytes of @payload into @out.
 * Returns 0, or -EMSGSIZE if @len exceeds WIRE_MAX_PAYLOAD.
 */
int wire_hdr_encode(uint8_t out[WIRE_HDR_LEN], uint16_t type,
		    const void *payload, size_t len);

/*
 * Decode and validate a header from @buf (@avail bytes available).
 * Returns 0; -EAGAIN if fewer than WIRE_HDR_LEN bytes; -EBADMSG on a bad magic;
 * -EPROTONOSUPPORT on an unknown version; -EPROTO on an unknown type;
 * -EMSGSIZE if the payload length exceeds @max_payload (or WIRE_MAX_PAYLOAD).
 */
int wire_hdr_decode(const uint8_t *buf, size_t avail, size_t max_payload,
		    struct wire_hdr *h);

/*
 * Decode one whole frame at the start of @buf. On success returns the total
 * frame length (> 0) and points @payload into @buf. Returns the header's
 * errors, -EAGAIN if the frame is not complete yet, or -EILSEQ on a CRC
 * mismatch.
 */
long wire_frame_decode(const uint8_t *buf, size_t avail, size_t max_payload,
		       struct wire_hdr *h, const uint8_t **payload);

/*
 * Pack @msg into a newly allocated frame (owned by the caller, free()).
 * Returns NULL with errno set (EMSGSIZE, ENOMEM).
 */
uint8_t *wire_frame_pack(uint16_t type, const ProtobufCMessage *msg,
			 size_t *frame_len);

/*
 * Decode a whole frame of the @type expected and unpack its payload with
 * @desc. Returns the message (free with protobuf_c_message_free_unpacked),
 * or NULL with *err set to the negative errno of the first check that failed
 * (-EPROTO for a wrong type or an undecodable payload, -EMSGSIZE for a frame
 * longer than @len says).
 */
ProtobufCMessage *wire_frame_unpack(const uint8_t *buf, size_t len,
				    size_t max_payload, uint16_t type,
				    const ProtobufCMessageDescriptor *desc,
				    int *err);

/* A one-line description of a wire error code, for messages to people. */
const char *wire_strerror(int err);

#endif
