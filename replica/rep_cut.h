/*
 * rep_cut: the QMP arguments of one replication cycle on the source's
 * running QEMU, pure: no I/O, no clock, no state, so golden files pin every
 * argument and the engine (which sends them and waits for the events) holds
 * all the state. Every name a cycle gives QEMU is made here and nowhere
 * else. The recipe and its measurements are replica/DESIGN.md §1-3.
 *
 * Per disk D (the guest's format node is drive-D, hypervisor/hv_argv.c) in
 * cycle N, in this order:
 *
 *   rep_cut_tmp_add        blockdev-add rep-tmp-D (raw) over rep-tf-D (file)
 *   rep_cut_transaction    all disks at once: freeze hca-rep-(N-1), start
 *                          hca-rep-N, blockdev-backup sync=none job rep-cut-D
 *                          whose copy-before-write filter is rep-cbw-D
 *   rep_cut_view_add       blockdev-add rep-view-D (snapshot-access on rep-cbw-D)
 *   rep_cut_nbd_server     nbd-server-start on a unix socket (once per QEMU)
 *   rep_cut_export_add     block-export-add rep-view-D, with hca-rep-(N-1)
 *   ... rep_read.h reads the view ...
 *   rep_cut_export_del     then wait for BLOCK_EXPORT_DELETED
 *   rep_cut_view_del
 *   rep_cut_job_cancel     then wait for BLOCK_JOB_CANCELLED (the job is gone)
 *   rep_cut_tmp_del        rep-tf-D goes with it; the caller unlinks the file
 *   rep_cut_acked          the replica stored cycle N: drop hca-rep-(N-1)
 *   rep_cut_failed         or it did not: fold hca-rep-(N-1) into hca-rep-N
 *
 * QEMU 10.0 facts these rely on (checked with qemu-storage-daemon 10.0.2):
 * node names are at most 31 characters ("Node name too long"), which bounds
 * a disk's name to REP_CUT_DISK_MAX here; a file node named inside the
 * qcow2's blockdev-add is deleted with it; a sync=none backup job with
 * auto-dismiss disappears once cancelled (force or not: it is never
 * ready), after BLOCK_JOB_CANCELLED; a raw node refuses persistent bitmaps.
 *
 * Every builder returns a struct rep_qmp: the command's name (static) and
 * its arguments, a new reference the caller owns; args is NULL on a bad
 * argument or ENOMEM. Every function may run on any thread.
 */
#ifndef HCA_REP_CUT_H
#define HCA_REP_CUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define REP_CUT_NODE_MAX 31u	/* QEMU 10's longest node name (BlockDriverState.node_name[32]) */
/* The longest disk name whose every derived name fits: "rep-view-" + D. */
#define REP_CUT_DISK_MAX (REP_CUT_NODE_MAX - 9u)
#define REP_CUT_BITMAP_PREFIX "hca-rep-"
#define REP_CUT_BITMAP_LEN 32u	/* "hca-rep-" + a uint64_t + NUL */
#define REP_CUT_GRANULARITY 4096u /* DESIGN.md §7: 64 KiB ships 15x the bytes of random 4 KiB writes */
#define REP_CUT_SOCK_MAX 107u	/* sun_path less its NUL */
#define REP_CUT_BITMAPS_MAX 8u	/* hca-rep-* bitmaps of one node kept by the parser */

struct rep_qmp {
	const char *cmd;	/* static */
	json_t *args;		/* the caller's reference; NULL: bad argument or ENOMEM */
};

/* The names of disk D's nodes, job and export. */
struct rep_cut_names {
	char node[REP_CUT_NODE_MAX + 1]; /* drive-D: the guest's format node */
	char tmp[REP_CUT_NODE_MAX + 1];	 /* rep-tmp-D: the filter's copy target (raw) */
	char tf[REP_CUT_NODE_MAX + 1];	 /* rep-tf-D: its file node */
	char job[REP_CUT_NODE_MAX + 1];	 /* rep-cut-D: the blockdev-backup job */
	char cbw[REP_CUT_NODE_MAX + 1];	 /* rep-cbw-D: the job's copy-before-write filter */
	char view[REP_CUT_NODE_MAX + 1]; /* rep-view-D: snapshot-access node, export id and name */
};

/* 0; -EINVAL: @disk empty or not [A-Za-z0-9_.-]; -ENAMETOOLONG: longer
 * than REP_CUT_DISK_MAX. @n is filled only on success. */
int rep_cut_names(const char *disk, struct rep_cut_names *n);

/* "hca-rep-<cycle>" into @buf (REP_CUT_BITMAP_LEN bytes). */
void rep_cut_bitmap_name(uint64_t cycle, char *buf);

/* One disk of a cycle. */
struct rep_cut_disk {
	const char *name;	/* D; borrowed */
	bool qcow2;		/* persistent bitmaps; false (raw): in-memory ones, lost with QEMU */
	bool has_prev;		/* drive-D holds a usable hca-rep-(N-1); false: D ships in full */
};

/* blockdev-add of rep-tmp-D, raw on @path (a sparse file the caller made,
 * as big as the disk), its file node named rep-tf-D. */
struct rep_qmp rep_cut_tmp_add(const char *disk, const char *path);
/* blockdev-del rep-tmp-D; only after the job is gone. */
struct rep_qmp rep_cut_tmp_del(const char *disk);

/* The cut of cycle @cycle (>= 1) of @n disks (1..REP_DISKS_MAX, distinct
 * names; has_prev only from cycle 2): one transaction, so every disk's
 * point in time is the same. */
struct rep_qmp rep_cut_transaction(uint64_t cycle, const struct rep_cut_disk *d, size_t n);

/* blockdev-add of rep-view-D: the point in time, trimmable. */
struct rep_qmp rep_cut_view_add(const char *disk);
/* nbd-server-start on unix socket @path (at most REP_CUT_SOCK_MAX bytes). */
struct rep_qmp rep_cut_nbd_server(const char *path);
/* block-export-add of rep-view-D, writable (so NBD trim reaches the view;
 * writes fail), with bitmap hca-rep-(@cycle-1) of drive-D unless
 * !@d->has_prev. */
struct rep_qmp rep_cut_export_add(uint64_t cycle, const struct rep_cut_disk *d);
/* block-export-del rep-view-D, mode hard (a reader still connected is cut off). */
struct rep_qmp rep_cut_export_del(const char *disk);
/* blockdev-del rep-view-D; only after BLOCK_EXPORT_DELETED. */
struct rep_qmp rep_cut_view_del(const char *disk);
/* block-job-cancel rep-cut-D (force): removes the filter. */
struct rep_qmp rep_cut_job_cancel(const char *disk);

/* The replica acknowledged cycle @cycle: one transaction removing
 * hca-rep-(@cycle-1) from every disk that had it (an empty transaction if
 * none did). */
struct rep_qmp rep_cut_acked(uint64_t cycle, const struct rep_cut_disk *d, size_t n);
/* Cycle @cycle failed after its cut: one transaction that, on a disk with
 * the previous bitmap, merges hca-rep-(@cycle-1) into hca-rep-@cycle and
 * removes it (the next cycle ships both), and on a disk that shipped in
 * full removes hca-rep-@cycle (it ships in full again: has_prev stays
 * false). */
struct rep_qmp rep_cut_failed(uint64_t cycle, const struct rep_cut_disk *d, size_t n);

/* ---- what QEMU has: query-named-block-nodes ---- */

struct rep_bitmap {
	uint64_t cycle;		/* from its name hca-rep-<cycle> */
	bool inconsistent;	/* left "in-use" by a QEMU that died: unusable */
	bool recording;
	bool busy;		/* exported or held by a job right now */
	uint64_t count;		/* dirty bytes */
};

struct rep_bitmaps {
	bool found;		/* the node drive-D was listed */
	unsigned n;		/* bitmaps kept in b[], in QEMU's order */
	unsigned more;		/* hca-rep-* bitmaps beyond REP_CUT_BITMAPS_MAX, not kept */
	struct rep_bitmap b[REP_CUT_BITMAPS_MAX];
};

/* The hca-rep-* bitmaps of drive-@disk in @ret, the return of
 * query-named-block-nodes (flat or not: either lists every named node).
 * Other bitmaps, unnamed ones (the filters') and malformed entries are
 * skipped. 0, -EINVAL (@disk or @ret not what they should be). */
int rep_cut_bitmaps_parse(json_t *ret, const char *disk, struct rep_bitmaps *out);

/* True when hca-rep-@cycle is there, consistent and recording: tracking
 * resumes from cycle @cycle. False: lost or inconsistent, the disk needs a
 * resync (and its hca-rep-* remnants removed). */
bool rep_cut_bitmap_usable(const struct rep_bitmaps *b, uint64_t cycle);

#endif
