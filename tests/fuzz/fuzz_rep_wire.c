/*
 * libFuzzer target: what a replica node does with the bytes of a cycle's
 * stream (replica/rep_wire.c), the same calls rep_rx.c makes:
 *
 *   - the whole input as a stream's open header (rep_cycle_decode);
 *   - the input after its first byte as the stream of a fixed cycle, cut in
 *     pieces of that byte's size, through the all-at-once decoder (framing,
 *     bounds, sequence, digest, zstd, checksums);
 *   - every frame the framer finds checked against protobuf-c: the in-place
 *     reader must accept only what protobuf-c reads the same way.
 *
 * Nothing may crash, leak, read out of bounds or hand over a frame outside
 * the cycle's disks or of a length other than it says.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/hca.pb-c.h"
#include "replica/rep_wire.h"

static uint8_t *hdr;
static size_t hdr_len;
static struct rep_cycle cyc;

/* The fixed cycle: two small disks, so ranges run out often. */
static void setup(void)
{
	struct rep_err e;

	memset(&cyc, 0, sizeof(cyc));
	strcpy(cyc.vm, "fuzz");
	cyc.relation = 1;
	cyc.incarnation = 2;
	cyc.cycle = 3;
	cyc.ndisks = 2;
	strcpy(cyc.disks[0].name, "a");
	cyc.disks[0].size = 1u << 20;
	strcpy(cyc.disks[1].name, "b");
	cyc.disks[1].size = 64u << 20;
	if (rep_cycle_encode(&cyc, &hdr, &hdr_len, &e) < 0)
		abort();
}

/* Whatever is handed over must be within the cycle and as long as it says. */
static int on_frame(const struct rep_frame *f, void *opaque)
{
	volatile uint8_t sink = 0;

	if (f->kind != REP_KIND_END &&
	    (f->disk >= cyc.ndisks || f->offset > cyc.disks[f->disk].size ||
	     f->length > cyc.disks[f->disk].size - f->offset))
		__builtin_trap();
	if (f->kind == REP_KIND_EXTENT) {
		if (f->dlen != f->length || f->codec != REP_CODEC_NONE)
			__builtin_trap();
		sink = f->data[0] ^ f->data[f->dlen - 1];
	}
	(void)sink;
	return 0;
}

/* The in-place reader must agree with protobuf-c on every frame it accepts. */
static void agrees(const uint8_t *p, size_t n)
{
	struct rep_frame f;
	struct rep_err e;
	Hca__RepFrame *m;

	if (rep_frame_parse(p, n, &f, &e) < 0)
		return;
	m = hca__rep_frame__unpack(NULL, n, p);
	if (!m || m->seq != f.seq)
		__builtin_trap();
	if (f.kind == REP_KIND_EXTENT &&
	    (m->kind_case != HCA__REP_FRAME__KIND_EXTENT || m->extent->offset != f.offset ||
	     m->extent->length != f.length || m->data.len != f.dlen ||
	     (f.dlen && memcmp(m->data.data, f.data, f.dlen) != 0) ||
	     (f.dlen && (f.data < p || f.data + f.dlen > p + n))))
		__builtin_trap();
	if (f.kind == REP_KIND_ZERO &&
	    (m->kind_case != HCA__REP_FRAME__KIND_ZERO || m->zero->length != f.length))
		__builtin_trap();
	if (f.kind == REP_KIND_END &&
	    (m->kind_case != HCA__REP_FRAME__KIND_END || m->end->digest != f.end.digest))
		__builtin_trap();
	hca__rep_frame__free_unpacked(m, NULL);
}

static void frames(const uint8_t *p, size_t n)
{
	struct rep_framer fr = { .npfx = 0 };
	struct rep_err e;

	while (n) {
		ssize_t k = rep_framer_feed(&fr, p, n, &e);

		if (k < 0)
			break;
		p += k;
		n -= (size_t)k;
		if (fr.whole) {
			agrees(fr.buf, fr.need);
			rep_framer_next(&fr);
		}
	}
	rep_framer_free(&fr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rep_cycle c;
	struct rep_err e;
	struct rep_dec *d;
	size_t cut;

	if (!hdr)
		setup();
	rep_cycle_decode(data, size, &c, &e);
	if (!size)
		return 0;
	cut = data[0] ? data[0] : 4096;
	d = rep_dec_new(hdr, hdr_len, on_frame, NULL, &e);
	if (!d)
		abort();
	for (size_t off = 1; off < size;) {
		size_t k = size - off < cut ? size - off : cut;

		if (rep_dec_feed(d, data + off, k) < 0)
			break;
		off += k;
	}
	rep_dec_finish(d);
	rep_dec_free(d);
	frames(data + 1, size - 1);
	return 0;
}
