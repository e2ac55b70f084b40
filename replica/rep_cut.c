/*
 * rep_cut: the QMP arguments of a replication cycle (see rep_cut.h), and
 * the parser of the bitmaps QEMU reports. Argument shapes follow QEMU
 * 10.0's qapi/block-core.json, qapi/transaction.json and
 * qapi/block-export.json; each was run against qemu-storage-daemon 10.0.2.
 */
#include "replica/rep_cut.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replica/rep_wire.h"

_Static_assert(REP_CUT_DISK_MAX <= REP_NAME_MAX, "a disk name rep_cut takes the wire cannot carry");

static bool disk_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-';
}

int rep_cut_names(const char *disk, struct rep_cut_names *n)
{
	size_t len = disk ? strnlen(disk, REP_CUT_DISK_MAX + 1) : 0;

	if (!len)
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		if (!disk_char(disk[i]))
			return -EINVAL;
	if (len > REP_CUT_DISK_MAX)
		return -ENAMETOOLONG;
	snprintf(n->node, sizeof(n->node), "drive-%s", disk);
	snprintf(n->tmp, sizeof(n->tmp), "rep-tmp-%s", disk);
	snprintf(n->tf, sizeof(n->tf), "rep-tf-%s", disk);
	snprintf(n->job, sizeof(n->job), "rep-cut-%s", disk);
	snprintf(n->cbw, sizeof(n->cbw), "rep-cbw-%s", disk);
	snprintf(n->view, sizeof(n->view), "rep-view-%s", disk);
	return 0;
}

void rep_cut_bitmap_name(uint64_t cycle, char *buf)
{
	snprintf(buf, REP_CUT_BITMAP_LEN, REP_CUT_BITMAP_PREFIX "%" PRIu64, cycle);
}

static struct rep_qmp qmp(const char *cmd, json_t *args)
{
	return (struct rep_qmp){ .cmd = cmd, .args = args };
}

struct rep_qmp rep_cut_tmp_add(const char *disk, const char *path)
{
	struct rep_cut_names n;

	if (rep_cut_names(disk, &n) || !path || !path[0])
		return qmp("blockdev-add", NULL);
	/* raw over a sparse file: the filter writes only the clusters it
	 * copied and reads them back only from there (its own bitmap says
	 * which), so no format is needed and making it costs one ftruncate */
	return qmp("blockdev-add",
		   json_pack("{s:s, s:s, s:{s:s, s:s, s:s}}", "driver", "raw", "node-name",
			     n.tmp, "file", "driver", "file", "node-name", n.tf, "filename", path));
}

/* blockdev-del of D's view or of its temporary target. */
static struct rep_qmp del_node(const char *disk, bool view)
{
	struct rep_cut_names n;

	if (rep_cut_names(disk, &n))
		return qmp("blockdev-del", NULL);
	return qmp("blockdev-del", json_pack("{s:s}", "node-name", view ? n.view : n.tmp));
}

struct rep_qmp rep_cut_tmp_del(const char *disk)
{
	return del_node(disk, false);
}

struct rep_qmp rep_cut_view_del(const char *disk)
{
	return del_node(disk, true);
}

/* The disk set of a transaction: 1..REP_DISKS_MAX valid, distinct names;
 * a previous bitmap only from cycle 2 on. */
static bool disks_valid(uint64_t cycle, const struct rep_cut_disk *d, size_t n)
{
	struct rep_cut_names names;

	if (!cycle || !d || !n || n > REP_DISKS_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (rep_cut_names(d[i].name, &names) || (d[i].has_prev && cycle < 2))
			return false;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(d[i].name, d[j].name))
				return false;
	}
	return true;
}

/* Appends {"type": @type, "data": @data} to @actions; steals @data. */
static int action(json_t *actions, const char *type, json_t *data)
{
	if (!data)
		return -ENOMEM;
	return json_array_append_new(actions, json_pack("{s:s, s:o}", "type", type, "data", data))
		       ? -ENOMEM : 0;
}

static int bitmap_action(json_t *actions, const char *type, const char *node, uint64_t cycle)
{
	char bm[REP_CUT_BITMAP_LEN];

	rep_cut_bitmap_name(cycle, bm);
	return action(actions, type, json_pack("{s:s, s:s}", "node", node, "name", bm));
}

/* {"actions": @actions} as a transaction, or NULL args; steals @actions. */
static struct rep_qmp transaction(json_t *actions, int rc)
{
	if (rc || !actions) {
		json_decref(actions);
		return qmp("transaction", NULL);
	}
	return qmp("transaction", json_pack("{s:o}", "actions", actions));
}

static int cut_disk(json_t *actions, uint64_t cycle, const struct rep_cut_disk *d)
{
	struct rep_cut_names n;
	char bm[REP_CUT_BITMAP_LEN];
	int rc;

	rep_cut_names(d->name, &n);
	rep_cut_bitmap_name(cycle, bm);
	/* frozen, not removed: the export reads it, and a failed cycle folds it back */
	if (d->has_prev && (rc = bitmap_action(actions, "block-dirty-bitmap-disable", n.node,
					       cycle - 1)))
		return rc;
	rc = action(actions, "block-dirty-bitmap-add",
		    json_pack("{s:s, s:s, s:b, s:i}", "node", n.node, "name", bm, "persistent",
			      d->qcow2, "granularity", REP_CUT_GRANULARITY));
	/* auto-dismiss: once cancelled the job goes away by itself, so the
	 * names are free for the next cycle without a job-dismiss */
	return rc ? rc : action(actions, "blockdev-backup",
				json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:b}", "device", n.node,
					  "target", n.tmp, "sync", "none", "job-id", n.job,
					  "filter-node-name", n.cbw, "auto-finalize", 1,
					  "auto-dismiss", 1));
}

struct rep_qmp rep_cut_transaction(uint64_t cycle, const struct rep_cut_disk *d, size_t n)
{
	json_t *actions = NULL;
	int rc = 0;

	if (!disks_valid(cycle, d, n))
		return qmp("transaction", NULL);
	actions = json_array();
	for (size_t i = 0; actions && !rc && i < n; i++)
		rc = cut_disk(actions, cycle, &d[i]);
	return transaction(actions, rc);
}

struct rep_qmp rep_cut_view_add(const char *disk)
{
	struct rep_cut_names n;

	if (rep_cut_names(disk, &n))
		return qmp("blockdev-add", NULL);
	/* discard=unmap: a trim of a shipped range on the view tells the
	 * filter it need not copy there any more (DESIGN.md §1) */
	return qmp("blockdev-add", json_pack("{s:s, s:s, s:s, s:s}", "driver", "snapshot-access",
					     "node-name", n.view, "file", n.cbw, "discard",
					     "unmap"));
}

struct rep_qmp rep_cut_nbd_server(const char *path)
{
	if (!path || !path[0] || strlen(path) > REP_CUT_SOCK_MAX)
		return qmp("nbd-server-start", NULL);
	/* nbd-server-start takes the legacy SocketAddress: type + data */
	return qmp("nbd-server-start",
		   json_pack("{s:{s:s, s:{s:s}}}", "addr", "type", "unix", "data", "path", path));
}

struct rep_qmp rep_cut_export_add(uint64_t cycle, const struct rep_cut_disk *d)
{
	struct rep_cut_names n;
	char bm[REP_CUT_BITMAP_LEN];
	json_t *a;

	if (!d || !disks_valid(cycle, d, 1))
		return qmp("block-export-add", NULL);
	rep_cut_names(d->name, &n);
	a = json_pack("{s:s, s:s, s:s, s:s, s:b}", "type", "nbd", "id", n.view, "node-name",
		      n.view, "name", n.view, "writable", 1);
	if (!a || !d->has_prev)
		return qmp("block-export-add", a);
	/* the bitmap lives on the guest's node, below the filter */
	rep_cut_bitmap_name(cycle - 1, bm);
	if (json_object_set_new(a, "bitmaps", json_pack("[{s:s, s:s}]", "node", n.node, "name",
							 bm)) < 0) {
		json_decref(a);
		a = NULL;
	}
	return qmp("block-export-add", a);
}

struct rep_qmp rep_cut_export_del(const char *disk)
{
	struct rep_cut_names n;

	if (rep_cut_names(disk, &n))
		return qmp("block-export-del", NULL);
	/* hard: a reader still connected has failed or is being abandoned */
	return qmp("block-export-del", json_pack("{s:s, s:s}", "id", n.view, "mode", "hard"));
}

struct rep_qmp rep_cut_job_cancel(const char *disk)
{
	struct rep_cut_names n;

	if (rep_cut_names(disk, &n))
		return qmp("block-job-cancel", NULL);
	return qmp("block-job-cancel", json_pack("{s:s, s:b}", "device", n.job, "force", 1));
}

struct rep_qmp rep_cut_acked(uint64_t cycle, const struct rep_cut_disk *d, size_t n)
{
	struct rep_cut_names names;
	json_t *actions = NULL;
	int rc = 0;

	if (!disks_valid(cycle, d, n))
		return qmp("transaction", NULL);
	actions = json_array();
	for (size_t i = 0; actions && !rc && i < n; i++) {
		rep_cut_names(d[i].name, &names);
		if (d[i].has_prev)
			rc = bitmap_action(actions, "block-dirty-bitmap-remove", names.node,
					   cycle - 1);
	}
	return transaction(actions, rc);
}

static int fold_disk(json_t *actions, uint64_t cycle, const struct rep_cut_disk *d)
{
	struct rep_cut_names n;
	char prev[REP_CUT_BITMAP_LEN], cur[REP_CUT_BITMAP_LEN];
	int rc;

	rep_cut_names(d->name, &n);
	rep_cut_bitmap_name(cycle, cur);
	/* a full copy that failed is a full copy again: its bitmap would
	 * only say what changed since a point the replica never got */
	if (!d->has_prev)
		return bitmap_action(actions, "block-dirty-bitmap-remove", n.node, cycle);
	rep_cut_bitmap_name(cycle - 1, prev);
	rc = action(actions, "block-dirty-bitmap-merge",
		    json_pack("{s:s, s:s, s:[s]}", "node", n.node, "target", cur, "bitmaps", prev));
	return rc ? rc : bitmap_action(actions, "block-dirty-bitmap-remove", n.node, cycle - 1);
}

struct rep_qmp rep_cut_failed(uint64_t cycle, const struct rep_cut_disk *d, size_t n)
{
	json_t *actions = NULL;
	int rc = 0;

	if (!disks_valid(cycle, d, n))
		return qmp("transaction", NULL);
	actions = json_array();
	for (size_t i = 0; actions && !rc && i < n; i++)
		rc = fold_disk(actions, cycle, &d[i]);
	return transaction(actions, rc);
}

/* ---- query-named-block-nodes ---- */

/* The cycle of a bitmap named "hca-rep-<decimal>", no sign, no leading
 * zero, no overflow; false for any other name. */
static bool cycle_of(const char *name, uint64_t *cycle)
{
	size_t plen = strlen(REP_CUT_BITMAP_PREFIX);
	const char *p;
	uint64_t v = 0;

	if (!name || strncmp(name, REP_CUT_BITMAP_PREFIX, plen))
		return false;
	p = name + plen;
	if (!*p || (*p == '0' && p[1]))
		return false;
	for (; *p; p++) {
		if (*p < '0' || *p > '9' || v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	*cycle = v;
	return true;
}

static void take_bitmap(struct rep_bitmaps *out, json_t *bm)
{
	struct rep_bitmap *b;
	json_t *count = json_object_get(bm, "count");
	uint64_t cycle;

	if (!json_is_object(bm) || !cycle_of(json_string_value(json_object_get(bm, "name")), &cycle))
		return;
	if (out->n >= REP_CUT_BITMAPS_MAX) {
		out->more++;
		return;
	}
	b = &out->b[out->n++];
	b->cycle = cycle;
	/* "inconsistent" is only present when true */
	b->inconsistent = json_is_true(json_object_get(bm, "inconsistent"));
	b->recording = json_is_true(json_object_get(bm, "recording"));
	b->busy = json_is_true(json_object_get(bm, "busy"));
	b->count = json_is_integer(count) && json_integer_value(count) > 0
			   ? (uint64_t)json_integer_value(count) : 0;
}

int rep_cut_bitmaps_parse(json_t *ret, const char *disk, struct rep_bitmaps *out)
{
	struct rep_cut_names n;
	json_t *node, *bms, *bm;
	size_t i, j;

	if (!out || rep_cut_names(disk, &n) || !json_is_array(ret))
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	json_array_foreach(ret, i, node) {
		const char *name = json_string_value(json_object_get(node, "node-name"));

		if (!name || strcmp(name, n.node))
			continue;
		/* a node name is unique: the first entry is the node */
		out->found = true;
		bms = json_object_get(node, "dirty-bitmaps");
		json_array_foreach(bms, j, bm)
			take_bitmap(out, bm);
		break;
	}
	return 0;
}

bool rep_cut_bitmap_usable(const struct rep_bitmaps *b, uint64_t cycle)
{
	for (unsigned i = 0; b && i < b->n; i++)
		if (b->b[i].cycle == cycle)
			return !b->b[i].inconsistent && b->b[i].recording;
	return false;
}
