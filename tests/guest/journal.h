/*
 * On-disk layout of the test guest's journal, shared by the in-guest writer
 * (workload.c) and the host-side checker (verify.c) so the two cannot drift.
 *
 * The journal is a run of 4 KiB records written back to back from offset 0 of
 * a raw block device; the first all-zero block marks its end. One record per
 * block keeps every write aligned for O_DIRECT and means a torn write can
 * only damage the record being written, which the CRC then exposes.
 * Fields are little-endian (the guest and host are both x86-64).
 */
#ifndef HCA_GUEST_JOURNAL_H
#define HCA_GUEST_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HCA_JREC_MAGIC   UINT64_C(0x314c4e524a414348) /* "HCAJRNL1" */
#define HCA_JREC_VERSION 1u
#define HCA_JREC_SIZE    4096u

struct hca_jrec {
	uint64_t magic;
	uint32_t version;
	uint32_t size;      /* HCA_JREC_SIZE, so a reader can reject a foreign layout */
	uint64_t seq;       /* global, +1 per record, continues across boots */
	uint64_t boot_id;   /* random per boot */
	uint64_t boot_num;  /* 1 for the first boot on this disk */
	uint64_t counter;   /* the workload's console counter when written */
	uint64_t time_ns;   /* CLOCK_REALTIME in the guest */
	uint64_t mono_ns;   /* CLOCK_MONOTONIC in the guest (time since boot) */
	/* Filled with a seq-derived pattern so a record is never mostly zeros
	 * and a block that is half old, half new fails its CRC. */
	uint8_t fill[HCA_JREC_SIZE - 64 - 4];
	uint32_t crc;       /* CRC32C of every byte before it */
};

_Static_assert(sizeof(struct hca_jrec) == HCA_JREC_SIZE, "record must fill one block");

enum hca_jrec_state {
	HCA_JREC_ZERO,    /* all-zero block: end of journal */
	HCA_JREC_VALID,   /* our magic, layout and a matching CRC */
	HCA_JREC_CORRUPT, /* our magic, but wrong layout or CRC */
	HCA_JREC_FOREIGN, /* neither zero nor ours */
};

/* Castagnoli CRC (as iSCSI and ext4 use), reflected, table driven. The table
 * is built on first use; both users are single-threaded. */
static inline uint32_t hca_crc32c(uint32_t crc, const void *buf, size_t len)
{
	static uint32_t table[256];
	static bool ready;
	const uint8_t *p = buf;

	if (!ready) {
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;
			for (int k = 0; k < 8; k++)
				c = (c >> 1) ^ (0x82f63b78u & -(c & 1u));
			table[i] = c;
		}
		ready = true;
	}
	crc = ~crc;
	while (len--)
		crc = table[(crc ^ *p++) & 0xffu] ^ (crc >> 8);
	return ~crc;
}

static inline uint32_t hca_jrec_crc(const struct hca_jrec *r)
{
	return hca_crc32c(0, r, offsetof(struct hca_jrec, crc));
}

/* Fill the padding and the CRC once the caller has set the fields. */
static inline void hca_jrec_seal(struct hca_jrec *r)
{
	uint64_t x = r->seq * UINT64_C(0x9e3779b97f4a7c15) ^ r->boot_id;

	r->magic = HCA_JREC_MAGIC;
	r->version = HCA_JREC_VERSION;
	r->size = HCA_JREC_SIZE;
	for (size_t i = 0; i < sizeof(r->fill); i++) {
		/* xorshift64: cheap, and different for every record */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		r->fill[i] = (uint8_t)x;
	}
	r->crc = hca_jrec_crc(r);
}

static inline bool hca_block_is_zero(const void *blk, size_t len)
{
	const uint64_t *w = blk;

	for (size_t i = 0; i < len / sizeof(*w); i++)
		if (w[i])
			return false;
	return true;
}

/* blk must be HCA_JREC_SIZE bytes and 8-byte aligned. */
static inline enum hca_jrec_state hca_jrec_check(const void *blk)
{
	const struct hca_jrec *r = blk;

	if (r->magic != HCA_JREC_MAGIC)
		return hca_block_is_zero(blk, HCA_JREC_SIZE) ? HCA_JREC_ZERO : HCA_JREC_FOREIGN;
	if (r->version != HCA_JREC_VERSION || r->size != HCA_JREC_SIZE ||
	    r->crc != hca_jrec_crc(r))
		return HCA_JREC_CORRUPT;
	return HCA_JREC_VALID;
}

#endif /* HCA_GUEST_JOURNAL_H */
