/*
 * libFuzzer target: the frame decoder and every message decoder behind it,
 * fed arbitrary bytes as a peer or a corrupted disk could. Nothing may crash,
 * leak or read out of bounds, whatever the lengths claim.
 */
#include <stddef.h>
#include <stdint.h>

#include "proto/hca.pb-c.h"
#include "proto/wire.h"

static const ProtobufCMessageDescriptor *desc_of(uint16_t type)
{
	switch (type) {
	case WIRE_T_API_REQUEST: return &hca__api_request__descriptor;
	case WIRE_T_API_REPLY: return &hca__api_reply__descriptor;
	case WIRE_T_VM_RECORD: return &hca__vm_record__descriptor;
	case WIRE_T_VM_STATE: return &hca__vm_run_state__descriptor;
	case WIRE_T_CHAN: return &hca__chan_msg__descriptor;
	case WIRE_T_JOB: return &hca__job__descriptor;
	case WIRE_T_REP_RELATION: return &hca__rep_relation__descriptor;
	default: return NULL;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_hdr h;
	const uint8_t *payload = NULL;
	long n = wire_frame_decode(data, size, 1 << 20, &h, &payload);
	int err = 0;

	/* a stream: decode frames back to back while they are whole */
	while (n > 0) {
		ProtobufCMessage *m = wire_frame_unpack(data, (size_t)n, 1 << 20, h.type,
							desc_of(h.type), &err);
		if (m)
			protobuf_c_message_free_unpacked(m, NULL);
		data += n;
		size -= (size_t)n;
		n = wire_frame_decode(data, size, 1 << 20, &h, &payload);
	}
	/* and the payload decoders directly, without the frame's CRC gate */
	for (uint16_t t = 1; t < WIRE_T_MAX; t++) {
		const ProtobufCMessageDescriptor *d = desc_of(t);
		ProtobufCMessage *m;

		if (!d)
			__builtin_trap(); /* a frame type without a decoder here: add it */
		m = protobuf_c_message_unpack(d, NULL, size, data);
		if (m)
			protobuf_c_message_free_unpacked(m, NULL);
	}
	return 0;
}
