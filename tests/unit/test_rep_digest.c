/*
 * rep_digest: the granularity, the replica's digest map and its bounds, and
 * the resync filter: only the blocks whose digests differ go, split where
 * a chunk mixes them, zero ranges untouched, bounded output.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "replica/rep_digest.h"

#define G 4096u

/* A map holding, for blocks [first, first + n), the digest of a block
 * filled with fill(blk). */
static void map_of(struct rep_dmap *m, uint64_t first, unsigned n, uint8_t (*fill)(uint64_t))
{
	uint8_t *d = malloc((size_t)n * REP_DIGEST_LEN);
	uint8_t blk[G];

	assert_non_null(d);
	for (unsigned i = 0; i < n; i++) {
		memset(blk, fill(first + i), G);
		rep_digest(blk, G, d + (size_t)i * REP_DIGEST_LEN);
	}
	assert_int_equal(rep_dmap_add(m, first * G, d, (size_t)n * REP_DIGEST_LEN, 1ull << 30), 0);
	free(d);
}

static uint8_t fill_a(uint64_t blk)
{
	return (uint8_t)(0xA0 + blk % 16);
}

static void granularity(void **state)
{
	(void)state;
	assert_int_equal(rep_digest_gran(8ull << 30), 8192);   /* 1M blocks of 8 KiB */
	assert_int_equal(rep_digest_gran(4ull << 30), 4096);
	assert_int_equal(rep_digest_gran(64ull << 20), 4096);
	assert_int_equal(rep_digest_gran(1ull << 40), 1u << 20);
	assert_int_equal(rep_digest_gran(1ull << 60), REP_DIGEST_GRAN_MAX);
}

static void map_bounds(void **state)
{
	struct rep_dmap m;
	uint8_t d[3 * REP_DIGEST_LEN] = { 1 };

	(void)state;
	rep_dmap_init(&m, G);
	assert_int_equal(rep_dmap_add(&m, 1, d, REP_DIGEST_LEN, 1 << 20), -EINVAL);  /* misaligned */
	assert_int_equal(rep_dmap_add(&m, 0, d, REP_DIGEST_LEN - 1, 1 << 20), -EINVAL); /* torn */
	assert_int_equal(rep_dmap_add(&m, (1 << 20) - G, d, 2 * REP_DIGEST_LEN, 1 << 20), -EINVAL);
	assert_int_equal(rep_dmap_add(&m, 8 * G, d, 3 * REP_DIGEST_LEN, 1 << 20), 0);
	assert_int_equal(rep_dmap_add(&m, 9 * G, d, REP_DIGEST_LEN, 1 << 20), -EINVAL); /* order */
	assert_int_equal(rep_dmap_add(&m, 12 * G, d, REP_DIGEST_LEN, 1 << 20), 0);
	assert_non_null(rep_dmap_find(&m, 8));
	assert_non_null(rep_dmap_find(&m, 10));
	assert_null(rep_dmap_find(&m, 11));
	assert_non_null(rep_dmap_find(&m, 12));
	assert_null(rep_dmap_find(&m, 0));
	assert_null(rep_dmap_find(&m, 13));
	rep_dmap_free(&m);
	/* more blocks than kept: refused, not grown without end */
	rep_dmap_init(&m, G);
	size_t big = (size_t)(REP_DIGEST_BLOCKS_MAX + 1) * REP_DIGEST_LEN;
	uint8_t *many = calloc(1, big);
	assert_non_null(many);
	assert_int_equal(rep_dmap_add(&m, 0, many, big, 1ull << 40), -E2BIG);
	free(many);
	rep_dmap_free(&m);
}

/* 16 blocks at 0: the replica has 0..15 as fill_a; the source changed
 * blocks 3 and 4 and 10; one chunk in: three runs out. */
static void filter_splits(void **state)
{
	struct rep_dmap m;
	struct rep_chunk in[2], out[8];
	struct rep_filter_stats st = { 0 };
	size_t n = 0;
	uint8_t *b = malloc(16 * G);

	(void)state;
	rep_dmap_init(&m, G);
	map_of(&m, 0, 16, fill_a);
	for (unsigned i = 0; i < 16; i++)
		memset(b + i * G, fill_a(i), G);
	memset(b + 3 * G, 0x11, 2 * G);
	b[10 * G + 7] ^= 1;
	in[0] = (struct rep_chunk){ .off = 0, .len = 16 * G, .buf = b };
	in[1] = (struct rep_chunk){ .off = 16 * G, .len = 64 * G, .buf = NULL };
	assert_int_equal(rep_digest_filter(&m, in, 2, out, 8, &n, &st), 0);
	assert_int_equal(n, 3);
	assert_int_equal(out[0].off, 3 * G);
	assert_int_equal(out[0].len, 2 * G);
	assert_int_equal(((uint8_t *)out[0].buf)[0], 0x11);
	assert_int_equal(out[1].off, 10 * G);
	assert_int_equal(out[1].len, G);
	assert_null(out[2].buf); /* the zero range, untouched */
	assert_int_equal(out[2].off, 16 * G);
	assert_int_equal(out[2].len, 64 * G);
	assert_int_equal(st.sent_bytes, 3 * G);
	assert_int_equal(st.same_bytes, 13 * G);
	rep_chunks_free(out, n);
	rep_dmap_free(&m);
}

/* Blocks the replica lacks (holes there) go; partial blocks at a chunk's
 * edges go (they cannot be compared); a chunk wholly different moves its
 * own buffer. */
static void filter_edges_and_holes(void **state)
{
	struct rep_dmap m;
	struct rep_chunk in[1], out[4];
	struct rep_filter_stats st = { 0 };
	size_t n = 0;
	uint8_t *b = malloc(4 * G);

	(void)state;
	rep_dmap_init(&m, G);
	map_of(&m, 0, 2, fill_a); /* blocks 2.. are holes on the replica */
	memset(b, fill_a(0), G / 2);
	memset(b + G / 2, fill_a(1), G);
	memset(b + G / 2 + G, 0x33, 3 * G - G / 2);
	in[0] = (struct rep_chunk){ .off = G / 2, .len = 4 * G, .buf = b };
	/* block 0 partial (sent), block 1 the same (dropped), 2..4 not on the replica */
	assert_int_equal(rep_digest_filter(&m, in, 1, out, 4, &n, &st), 0);
	assert_int_equal(n, 2);
	assert_int_equal(out[0].off, G / 2);
	assert_int_equal(out[0].len, G / 2);
	assert_int_equal(out[1].off, 2 * G);
	assert_int_equal(out[1].len, 2 * G + G / 2);
	assert_int_equal(st.same_bytes, G);
	rep_chunks_free(out, n);

	/* wholly different: the buffer moves, no copy */
	b = malloc(2 * G);
	memset(b, 0x77, 2 * G);
	in[0] = (struct rep_chunk){ .off = 0, .len = 2 * G, .buf = b };
	assert_int_equal(rep_digest_filter(&m, in, 1, out, 4, &n, &st), 0);
	assert_int_equal(n, 1);
	assert_ptr_equal(out[0].buf, b);
	rep_chunks_free(out, n);
	rep_dmap_free(&m);
}

/* Every other block differs: 8 runs wanted, room for 3 besides the zero
 * range after: the last run takes the rest of the chunk whole. */
static void filter_bounded(void **state)
{
	struct rep_dmap m;
	struct rep_chunk in[2], out[4];
	struct rep_filter_stats st = { 0 };
	size_t n = 0;
	uint8_t *b = malloc(16 * G);

	(void)state;
	rep_dmap_init(&m, G);
	map_of(&m, 0, 16, fill_a);
	for (unsigned i = 0; i < 16; i++)
		memset(b + i * G, i % 2 ? 0x55 : fill_a(i), G);
	in[0] = (struct rep_chunk){ .off = 0, .len = 16 * G, .buf = b };
	in[1] = (struct rep_chunk){ .off = 16 * G, .len = G, .buf = NULL };
	assert_int_equal(rep_digest_filter(&m, in, 2, out, 4, &n, &st), 0);
	assert_int_equal(n, 4);
	assert_int_equal(out[0].off, 1 * G);
	assert_int_equal(out[0].len, G);
	assert_int_equal(out[1].off, 3 * G);
	assert_int_equal(out[2].off, 5 * G);
	assert_int_equal(out[2].off + out[2].len, 16 * G); /* the rest, whole */
	assert_null(out[3].buf);
	assert_int_equal(out[3].off, 16 * G);
	assert_int_equal(st.sent_bytes + st.same_bytes, 16 * G);
	rep_chunks_free(out, n);
	/* fewer slots than chunks: refused, everything freed */
	b = malloc(G);
	in[0] = (struct rep_chunk){ .off = 0, .len = G, .buf = b };
	assert_int_equal(rep_digest_filter(&m, in, 2, out, 1, &n, &st), -EINVAL);
	rep_dmap_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(granularity),
		cmocka_unit_test(map_bounds),
		cmocka_unit_test(filter_splits),
		cmocka_unit_test(filter_edges_and_holes),
		cmocka_unit_test(filter_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
