/*
 * rep_wire: the replica stream's codec, pure: no I/O, no threads of its own,
 * no state beyond what the caller holds, so the fuzz target and the unit
 * tests run exactly the code a receiving node runs.
 *
 * A cycle is one channel stream (rep_stream.h). Its open header is an
 * hca.RepCycleHeader (struct rep_cycle); its bytes are frames, each a
 * 4-byte big-endian length and an hca.RepFrame:
 *
 *   | len (4) | RepFrame: seq, extent|zero|end, [data = 15, last] | len | ...
 *
 * numbered 1, 2, 3... and closed by an end frame carrying the totals and
 * the digest of everything before it.
 *
 * Extents: 1 to REP_EXTENT_MAX raw bytes. The encoder sends an all-zero
 * extent as a zero range; otherwise it tries zstd level 1 and keeps the
 * result only when it saves at least an eighth of the bytes (REP_ZSTD_KEEP).
 * Measured here (EPYC, one core, 1 MiB extents): zstd's decompression costs
 * 0.9-1.6 ns per byte it saves at ratios up to 0.8 but 2-3.4 ns between 0.85
 * and 0.93, while a byte through TLS costs ~1.6 ns (both ends): past 7/8 the
 * receiver would spend more CPU than the wire saves. Whether to try at all
 * is decided first (rep_enc_plan): an extent of REP_PROBE_MIN bytes or more
 * is tried only if REP_PROBE_SLICES slices spread over it shrink by a
 * sixteenth (half the keeping margin, so the probe errs towards trying). On
 * random data zstd "fails" at ~4 GB/s, but by copying the input into its
 * output as raw blocks: the probe saves that pass and the buffer.
 *
 * Digest: CRC32C, per extent over its raw bytes (checked as each frame is
 * decoded, before anything is written) and chained over every frame in
 * order: D0 = crc32c(the header's bytes), Di = crc32c(Di-1, seq, kind, disk,
 * offset, length, crc) (rep_digest_next). The end frame carries Dn and the
 * counts; any lost, repeated, reordered, moved or altered frame changes it.
 * Chosen over SHA-256 by measurement: CRC32C runs at ~11 GB/s (SSE4.2,
 * chan_crc32c), SHA-256 at ~1.2 GB/s even with SHA-NI, which on both ends
 * would take more CPU than TLS itself. TLS 1.3 already authenticates every
 * byte between the nodes; the digest is there for what TLS cannot see:
 * frames lost, reordered or corrupted by our own pipeline (workers, buffers,
 * zstd) on either side, which a 32-bit CRC catches but for 2^-32.
 *
 * Bounds, all checked before anything is allocated or written: a frame's
 * payload at most REP_FRAME_MAX (-EMSGSIZE), its metadata REP_META_MAX
 * (-EMSGSIZE), an extent's raw length REP_EXTENT_MAX (-EMSGSIZE), the disk
 * index below the header's disk count and offset + length within the
 * disk's size (-ERANGE), the decompressed size equal to the stated raw
 * length (-EBADMSG). A frame out of sequence, a checksum or digest that
 * differs, or totals that differ are -EILSEQ; an undecodable or misplaced
 * frame -EPROTO; a header of a newer format -EPROTONOSUPPORT. Every error
 * comes with one line for people in a struct rep_err.
 *
 * Threads: every function may run on any thread; objects belong to one
 * thread at a time.
 */
#ifndef HCA_REP_WIRE_H
#define HCA_REP_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <zstd.h>

#define REP_FORMAT 1u			/* RepCycleHeader.format written */
#define REP_EXTENT_MAX (1u << 20)	/* raw bytes of one extent frame */
#define REP_META_MAX 1024u		/* a frame's bytes besides its data */
#define REP_FRAME_MAX (REP_EXTENT_MAX + 4096u) /* a frame's payload, prefix not counted */
#define REP_PREFIX_LEN 4u		/* the big-endian length before each frame */
#define REP_HDR_MAX 8192u		/* an encoded RepCycleHeader */
#define REP_DISKS_MAX 16u		/* = HV_MAX_DISKS */
#define REP_NAME_MAX 48u		/* VM and disk names, = HV_NAME_MAX */
#define REP_MSG_MAX 200u		/* an error line */
#define REP_ZSTD_LEVEL 1
/* The most bytes zstd may produce for @raw bytes and still be kept. */
#define REP_ZSTD_KEEP(raw) ((raw) - (raw) / 8)
#define REP_PROBE_MIN (64u << 10)	/* smaller extents are simply tried */
#define REP_PROBE_SLICES 8u
#define REP_PROBE_SLICE 512u
/* An encoded frame's bytes before its data: prefix, metadata, data key. */
#define REP_ENC_HDR_MAX 96u

/* The reason of a failure, for people: one line. */
struct rep_err {
	char msg[REP_MSG_MAX];
};

/* ---- the cycle (the stream's open header) ---- */

struct rep_disk {
	char name[REP_NAME_MAX + 1];
	uint64_t size; /* virtual size, bytes, > 0 */
};

struct rep_cycle {
	char vm[REP_NAME_MAX + 1];
	uint64_t relation;    /* the replication relation */
	uint64_t incarnation; /* the VM record's */
	uint64_t cycle;       /* from 1 */
	uint64_t base;        /* the recovery point the changes apply on; 0 if full */
	bool full;
	uint64_t cut_ms;      /* the cut's wall-clock time, ms since the epoch */
	bool app_consistent;  /* the guest's file systems were frozen for it */
	bool resync;          /* digest-compared with point base: applies on it only */
	unsigned ndisks;      /* 1 to REP_DISKS_MAX */
	struct rep_disk disks[REP_DISKS_MAX];
};

/* Is @c well formed (names, disks, cycle number)? 0 or -EINVAL. */
int rep_cycle_check(const struct rep_cycle *c, struct rep_err *e);

/*
 * @c as a RepCycleHeader into *@out (malloc'd, the caller's), *@len bytes.
 * 0; -EINVAL (rep_cycle_check); -ENOMEM.
 */
int rep_cycle_encode(const struct rep_cycle *c, uint8_t **out, size_t *len, struct rep_err *e);

/*
 * The RepCycleHeader in @buf (@len bytes, borrowed) into @c. 0; -EMSGSIZE
 * (over REP_HDR_MAX); -EPROTO (undecodable; more than REP_DISKS_MAX disks);
 * -EPROTONOSUPPORT (a newer format); -EINVAL (rep_cycle_check).
 */
int rep_cycle_decode(const uint8_t *buf, size_t len, struct rep_cycle *c, struct rep_err *e);

/* Does [@off, @off + @len) lie on disk @disk of @c? 0 or -ERANGE. */
int rep_cycle_range(const struct rep_cycle *c, uint32_t disk, uint64_t off, uint64_t len,
		    struct rep_err *e);

/* ---- frames ---- */

enum rep_kind {
	REP_KIND_EXTENT = 1,
	REP_KIND_ZERO,
	REP_KIND_END,
};

enum rep_codec {
	REP_CODEC_NONE = 0, /* = hca.RepCodec */
	REP_CODEC_ZSTD = 1,
};

/* The totals an end frame carries. */
struct rep_end {
	uint64_t extents, zeros;
	uint64_t raw_bytes, zero_bytes;
	uint32_t digest;
};

/* One frame, decoded or about to be encoded. */
struct rep_frame {
	uint64_t seq;
	enum rep_kind kind;
	uint32_t disk;
	uint64_t offset;
	uint64_t length;       /* extent: raw bytes; zero: the range's */
	enum rep_codec codec;  /* extent: how data is encoded */
	uint32_t crc;          /* extent: CRC32C of the raw bytes */
	const uint8_t *data;   /* extent: its bytes (borrowed), raw once inflated */
	size_t dlen;
	struct rep_end end;    /* end */
};

/* What both ends count: the next sequence number, the totals, the digest. */
struct rep_tally {
	uint64_t next_seq; /* 1 at the start */
	struct rep_end sum;
	bool ended;
};

/* A tally at the start of the cycle whose header is @hdr (@len bytes). */
void rep_tally_init(struct rep_tally *t, const uint8_t *hdr, size_t len);

/* The chain's next value after @f (rep_wire.h's top comment). */
uint32_t rep_digest_next(uint32_t d, const struct rep_frame *f);

/*
 * Count @f, in order. An end frame is checked against the tally: 0 when it
 * matches (the tally is then ended). -EILSEQ: out of sequence, or an end
 * whose totals or digest differ; -EPROTO: a frame after the end.
 */
int rep_tally_add(struct rep_tally *t, const struct rep_frame *f, struct rep_err *e);

/* ---- encoding (the sender) ---- */

/* An encoded frame: hdr[0..hlen) then data[0..dlen) go out in that order. */
struct rep_enc {
	uint8_t hdr[REP_ENC_HDR_MAX];
	size_t hlen;
	const uint8_t *data; /* @buf or the scratch passed to rep_enc_extent */
	size_t dlen;
	struct rep_frame f;  /* what was encoded: an extent may have become a zero range */
};

/* How an extent goes (rep_enc_plan). */
enum rep_plan {
	REP_PLAN_ZERO, /* all zeros: a zero range */
	REP_PLAN_RAW,  /* as it is */
	REP_PLAN_ZSTD, /* worth a zstd attempt */
};

/*
 * The plan for @len (1 to REP_EXTENT_MAX) bytes of @buf: zeros, raw (no
 * @cc, or the probe found too little to gain: top of file), or a zstd
 * attempt. Deterministic. Any thread.
 */
enum rep_plan rep_enc_plan(ZSTD_CCtx *cc, const void *buf, size_t len);

/*
 * Encode extent @seq, @len (1 to REP_EXTENT_MAX) bytes of @buf (borrowed,
 * and referenced by @en->data if they go raw) at @off of disk @disk, as
 * @plan says; for REP_PLAN_ZSTD, @cc writes into @scratch
 * (REP_ZSTD_KEEP(@len) bytes at least), which is used when that saves an
 * eighth. Deterministic. 0 or -EINVAL (a bad length, or no @cc or
 * @scratch for REP_PLAN_ZSTD). Any thread.
 */
int rep_enc_extent(struct rep_enc *en, enum rep_plan plan, ZSTD_CCtx *cc, uint8_t *scratch,
		   uint64_t seq, uint32_t disk, uint64_t off, const void *buf, size_t len);

/* Encode zero range @seq of @len bytes at @off of disk @disk. */
void rep_enc_zero(struct rep_enc *en, uint64_t seq, uint32_t disk, uint64_t off, uint64_t len);

/* Encode the end frame @seq with the totals of @t (everything before it). */
void rep_enc_end(struct rep_enc *en, const struct rep_tally *t);

/* ---- decoding (the receiver), step by step ---- */

/*
 * Splits the stream's bytes into frame payloads. @buf holds the frame being
 * received (capacity @cap). rep_framer_feed() grows it as needed, unless
 * @fixed: then it stops once a frame's length is known and @buf is too
 * small (rep_framer_wants()), and the caller installs one of at least
 * @need bytes (and takes back the old one) before feeding on.
 */
struct rep_framer {
	uint8_t pfx[REP_PREFIX_LEN];
	unsigned npfx;
	uint8_t *buf;
	size_t cap;
	size_t need, have; /* payload bytes: expected, received */
	bool whole;	   /* buf[0..need) is a complete payload */
	bool fixed;
};

/*
 * Take bytes of @p (@n) until one frame is whole (fr->whole: its payload
 * is fr->buf[0..fr->need)), or, @fixed, a bigger buffer is wanted; returns
 * the bytes used, or -EMSGSIZE (a length over REP_FRAME_MAX), -EPROTO (an
 * empty frame) or -ENOMEM. Call rep_framer_next() before feeding again
 * once a frame was whole.
 */
ssize_t rep_framer_feed(struct rep_framer *fr, const uint8_t *p, size_t n, struct rep_err *e);

/*
 * The bytes of the frame at the start of @p (@n bytes), prefix included,
 * when all of them are there and its length is within bounds: the frame's
 * payload can then be parsed in place, without the framer's copy. 0
 * otherwise (the framer says what is wrong with a length, if anything).
 */
size_t rep_frame_whole(const uint8_t *p, size_t n);

/* @fixed: the frame's length is known and @buf cannot hold it. */
bool rep_framer_wants(const struct rep_framer *fr);

/* Forget the whole frame; its buffer is kept for the next one. */
void rep_framer_next(struct rep_framer *fr);

/* Nothing of a next frame received yet. */
bool rep_framer_idle(const struct rep_framer *fr);

/* Free the framer's buffer. */
void rep_framer_free(struct rep_framer *fr);

/*
 * Decode the frame payload @p (@n bytes, borrowed: f->data points into it)
 * into @f, checking what the frame alone can tell: a kind, lengths within
 * their bounds, a known codec, data on extents only, raw data of the stated
 * length. 0; -EMSGSIZE; -EPROTO; -EBADMSG; -ERANGE (an empty range).
 */
int rep_frame_parse(const uint8_t *p, size_t n, struct rep_frame *f, struct rep_err *e);

/* Does @f lie within cycle @c's disks? 0 or -ERANGE. */
int rep_frame_check(const struct rep_cycle *c, const struct rep_frame *f, struct rep_err *e);

/*
 * An extent's raw bytes: zstd data decompressed with @dc into @out
 * (f->length bytes at least), then, either way, its CRC32C checked. @f then
 * says REP_CODEC_NONE and points at the raw bytes. 0; -EBADMSG (corrupt, or
 * not the stated length); -EILSEQ (checksum); -ENOMEM. Any thread.
 */
int rep_frame_inflate(struct rep_frame *f, ZSTD_DCtx *dc, uint8_t *out, struct rep_err *e);

/* ---- decoding, all at once ---- */

/* A frame of the cycle, checked and inflated (@f borrowed for the call);
 * 0 to go on, a negative errno to stop the decoder with it. */
typedef int (*rep_frame_fn)(const struct rep_frame *f, void *opaque);

struct rep_dec;

/*
 * A decoder of the cycle whose open header is @hdr (@len bytes, borrowed),
 * handing frames to @fn. NULL with the reason in @e and errno set (as
 * rep_cycle_decode(), or ENOMEM).
 */
struct rep_dec *rep_dec_new(const uint8_t *hdr, size_t len, rep_frame_fn fn, void *opaque,
			    struct rep_err *e);

/*
 * Take @len bytes of the stream, in any cut: every frame completed is
 * parsed, checked, counted, inflated and handed to the callback, in order.
 * 0; or the first error, which sticks (rep_dec_error() says why).
 */
int rep_dec_feed(struct rep_dec *d, const void *buf, size_t len);

/* The stream ended: 0 if the end frame came and nothing after it, else
 * -EPROTO (cut short), or the error that stuck. */
int rep_dec_finish(struct rep_dec *d);

const char *rep_dec_error(const struct rep_dec *d);
const struct rep_cycle *rep_dec_cycle(const struct rep_dec *d);
void rep_dec_free(struct rep_dec *d);

#endif /* HCA_REP_WIRE_H */
