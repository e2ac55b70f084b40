/*
 * rep_read: the reader of one disk's point-in-time view (rep_cut.h's
 * rep-view-D) over NBD, on a unix socket. Blocking: it runs on a worker
 * thread, one reader per disk, and a reader belongs to one thread at a time.
 *
 * What is read comes from NBD block status (DESIGN.md §2): in bitmap mode
 * the dirty ranges of "qemu:dirty-bitmap:NAME", else the whole disk; inside
 * those, "base:allocation" says which parts read as zeros, which are then
 * given as zero chunks and never read. Every wait on the server (connect,
 * block status, reads) gives up after REP_READ_TIMEOUT_MS without progress,
 * with -ETIMEDOUT.
 *
 * With @trim, each range is NBD-trimmed on the view once it was read, so
 * the copy-before-write filter stops copying there (the view then fails
 * reads of that range, which is never read again). Trim is best effort: the
 * first failure is logged and trimming stops.
 *
 * Errors are -errno with one line for people in @err (naming the export).
 */
#ifndef HCA_REP_READ_H
#define HCA_REP_READ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REP_READ_TIMEOUT_MS 30000	/* the longest wait without any progress */
#define REP_READ_WINDOW (1ull << 30)	/* bytes asked about per block status request */
#define REP_READ_EXTENTS_MAX 4096u	/* extents kept per context per request */

struct rep_reader;

/* Connect to export @name on unix socket @sock. @bitmap: the dirty bitmap's
 * name ("hca-rep-5"): only dirty ranges are read; NULL: the whole disk (a
 * full copy). @trim: see above. NULL with errno and a line in @err: EINVAL
 * (bad argument), ENOTSUP (the server lacks a context, e.g. the bitmap is
 * not exported), ETIMEDOUT, or libnbd's errno. */
struct rep_reader *rep_reader_open(const char *sock, const char *name, const char *bitmap,
				   bool trim, char *err, size_t errlen);

/* The disk's size in bytes. */
uint64_t rep_reader_size(const struct rep_reader *r);

struct rep_chunk {
	uint64_t off, len;
	void *buf;	/* malloc'd, len bytes, the caller's; NULL: the range reads as zeros */
};

/* The next chunks from the cursor, in disk order, up to about @max_bytes of
 * data (at least one data chunk if any remains and out[] has room past the
 * zero ranges before it): fills out[0..*n). Data
 * chunks are at most REP_EXTENT_MAX (rep_wire.h) bytes; adjacent ranges are
 * coalesced up to that (zero chunks without a bound). *n == 0 only at the
 * end. In
 * full mode every byte of [0,size) is covered by exactly one chunk; in
 * bitmap mode exactly the dirty ranges are. 0, or -errno with a line in
 * @err (the chunks of a failed call are freed, *n is 0, and the reader is
 * only good for rep_reader_close()). */
int rep_reader_next(struct rep_reader *r, size_t max_bytes, struct rep_chunk *out, size_t nout,
		    size_t *n, char *err, size_t errlen);

/* Where the next chunk starts: everything before it was given out. */
uint64_t rep_reader_pos(const struct rep_reader *r);

/* Waits (bounded) for trims still in flight, disconnects, frees. NULL: no-op. */
void rep_reader_close(struct rep_reader *r);

/* Frees the buffers of c[0..n) and sets them NULL. */
void rep_chunks_free(struct rep_chunk *c, size_t n);

#endif
