/*
 * rep_digest: block digests for a resync. A source whose change bitmaps
 * are gone (its QEMU was killed: a persistent bitmap not stored cleanly is
 * inconsistent) reads its disks whole; instead of shipping everything it
 * asks the replica for the digests of its newest point ("rep.digests"),
 * and sends only the blocks whose digests differ. Pure: no I/O here.
 *
 * A digest is SHA-256 of the block, truncated to 16 bytes. A block the
 * replica does not list (a hole there) reads as zeros: a source block of
 * data is then sent, a zero range always is (it costs no payload).
 */
#ifndef HCA_REP_DIGEST_H
#define HCA_REP_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "replica/rep_read.h"

#define REP_DIGEST_LEN 16u
#define REP_DIGEST_GRAN_MIN (4u << 10)
#define REP_DIGEST_GRAN_MAX (16u << 20)
#define REP_DIGEST_BLOCKS_MAX (1u << 20)  /* digests kept per disk, at most */
#define REP_DIGEST_REPLY_MAX 65536u	  /* blocks in one rep.digests reply */

/* The granularity for a disk of @size bytes: 4 KiB (the change bitmaps')
 * unless the disk has more than REP_DIGEST_BLOCKS_MAX blocks of it; then
 * the smallest power of two that keeps it at that. */
uint32_t rep_digest_gran(uint64_t size);

/* @out = the digest of @len bytes at @buf. */
void rep_digest(const void *buf, size_t len, uint8_t out[REP_DIGEST_LEN]);

/* The digests of one disk of the replica's point, block by block. */
struct rep_dmap {
	uint32_t gran;
	size_t n, cap;
	uint64_t *blk;                       /* block numbers, ascending */
	uint8_t (*dg)[REP_DIGEST_LEN];
};

void rep_dmap_init(struct rep_dmap *m, uint32_t gran);
void rep_dmap_free(struct rep_dmap *m);

/* Adds a run of @len bytes of digests for the blocks from byte @off
 * (gran-aligned, after every block added so far, inside @disk_size).
 * 0, -EINVAL (misaligned, out of order, not whole digests, past the end),
 * -E2BIG (more than REP_DIGEST_BLOCKS_MAX blocks), -ENOMEM. */
int rep_dmap_add(struct rep_dmap *m, uint64_t off, const uint8_t *dg, size_t len,
		 uint64_t disk_size);

/* The digest of block @blk, or NULL (a hole on the replica). */
const uint8_t *rep_dmap_find(const struct rep_dmap *m, uint64_t blk);

struct rep_filter_stats {
	uint64_t same_bytes;	/* data the replica has already: not sent */
	uint64_t sent_bytes;	/* data to send */
};

/*
 * Drops from the chunks @in[0..n_in) (as rep_reader_next gives them) the
 * whole blocks of data whose digests equal the replica's: @out[0..*n_out)
 * gets what is left, the differing runs of data in new buffers where a
 * chunk is split (the chunk's own buffer otherwise), zero ranges as they
 * are. Every buffer of @in is the filter's (freed or moved to @out).
 * @out has room for @cap chunks; past that, a chunk's rest goes whole.
 * 0, or -ENOMEM (then @out is freed and @in too).
 */
int rep_digest_filter(const struct rep_dmap *m, struct rep_chunk *in, size_t n_in,
		      struct rep_chunk *out, size_t cap, size_t *n_out,
		      struct rep_filter_stats *st);

#endif
