/*
 * test_rep_cut: the QMP arguments of a replication cycle, pinned by a golden
 * file (HCA_GOLDEN_UPDATE=1 rewrites it) for two disks: a qcow2 that has the
 * previous cycle's bitmap and a raw one that ships in full; the names'
 * bounds; and the bitmap parser on replies recorded from
 * qemu-storage-daemon 10.0.2.
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

#include "replica/rep_cut.h"
#include "replica/rep_wire.h"
#include "tests/unit/util_golden.h"

/* qemu-storage-daemon 10.0.2, query-named-block-nodes {"flat": false} while
 * cycle 2 ran (drive-a qcow2, drive-b raw); the nodes drive-a, drive-b and
 * rep-cbw-a of its return, verbatim. */
static const char during_cycle[] =
	"[{\"iops_rd\":0,\"detect_zeroes\":\"off\",\"active\":true,\"image\":{\"backing-image\":{\"virtual-siz"
	"e\":67108864,\"filename\":\"/tmp/rc/a.qcow2\",\"cluster-size\":65536,\"format\":\"qcow2\",\"actual-s"
	"ize\":200704,\"format-specific\":{\"type\":\"qcow2\",\"data\":{\"compat\":\"1.1\",\"compression-type\":"
	"\"zlib\",\"lazy-refcounts\":false,\"refcount-bits\":16,\"corrupt\":false,\"extended-l2\":false}},\""
	"dirty-flag\":false},\"virtual-size\":67108864,\"filename\":\"/tmp/rc/a.qcow2\",\"cluster-size\":6"
	"5536,\"format\":\"copy-before-write\",\"actual-size\":200704,\"dirty-flag\":false},\"iops_wr\":0,\""
	"ro\":false,\"node-name\":\"rep-cbw-a\",\"backing_file_depth\":1,\"drv\":\"copy-before-write\",\"iops"
	"\":0,\"bps_wr\":0,\"write_threshold\":0,\"dirty-bitmaps\":[{\"recording\":false,\"persistent\":fals"
	"e,\"busy\":false,\"granularity\":65536,\"count\":67108864},{\"recording\":false,\"persistent\":fal"
	"se,\"busy\":false,\"granularity\":65536,\"count\":0},{\"recording\":false,\"persistent\":false,\"bu"
	"sy\":false,\"granularity\":65536,\"count\":67108864}],\"encrypted\":false,\"bps\":0,\"bps_rd\":0,\"c"
	"ache\":{\"no-flush\":false,\"direct\":false,\"writeback\":true},\"file\":\"/tmp/rc/a.qcow2\"},{\"iop"
	"s_rd\":0,\"detect_zeroes\":\"off\",\"active\":true,\"image\":{\"virtual-size\":67108864,\"filename\":"
	"\"/tmp/rc/b.raw\",\"format\":\"raw\",\"actual-size\":4096,\"dirty-flag\":false},\"iops_wr\":0,\"ro\":f"
	"alse,\"node-name\":\"drive-b\",\"backing_file_depth\":0,\"drv\":\"raw\",\"iops\":0,\"bps_wr\":0,\"write"
	"_threshold\":0,\"dirty-bitmaps\":[{\"name\":\"hca-rep-2\",\"recording\":true,\"persistent\":false,\""
	"busy\":false,\"granularity\":4096,\"count\":0}],\"encrypted\":false,\"bps\":0,\"bps_rd\":0,\"cache\":"
	"{\"no-flush\":false,\"direct\":false,\"writeback\":true},\"file\":\"/tmp/rc/b.raw\"},{\"iops_rd\":0,"
	"\"detect_zeroes\":\"off\",\"active\":true,\"image\":{\"virtual-size\":67108864,\"filename\":\"/tmp/rc"
	"/a.qcow2\",\"cluster-size\":65536,\"format\":\"qcow2\",\"actual-size\":200704,\"format-specific\":{"
	"\"type\":\"qcow2\",\"data\":{\"compat\":\"1.1\",\"compression-type\":\"zlib\",\"lazy-refcounts\":false,\""
	"refcount-bits\":16,\"corrupt\":false,\"extended-l2\":false}},\"dirty-flag\":false},\"iops_wr\":0,"
	"\"ro\":false,\"node-name\":\"drive-a\",\"backing_file_depth\":0,\"drv\":\"qcow2\",\"iops\":0,\"bps_wr\":"
	"0,\"write_threshold\":0,\"dirty-bitmaps\":[{\"name\":\"hca-rep-2\",\"recording\":true,\"persistent\""
	":true,\"busy\":false,\"granularity\":4096,\"count\":0},{\"name\":\"hca-rep-1\",\"recording\":false,\""
	"persistent\":true,\"busy\":true,\"granularity\":4096,\"count\":0}],\"encrypted\":false,\"bps\":0,\"b"
	"ps_rd\":0,\"cache\":{\"no-flush\":false,\"direct\":false,\"writeback\":true},\"file\":\"/tmp/rc/a.qc"
	"ow2\"}]"
;

/* The same, restarted after a kill -9 (hca-rep-3 loaded from the file,
 * hca-rep-4 added at runtime and never stored); the whole return. */
static const char after_kill[] =
	"[{\"iops_rd\":0,\"detect_zeroes\":\"off\",\"active\":true,\"image\":{\"virtual-size\":67108864,\"file"
	"name\":\"/tmp/rc/b.raw\",\"format\":\"raw\",\"actual-size\":4096,\"dirty-flag\":false},\"iops_wr\":0,"
	"\"ro\":false,\"node-name\":\"drive-b\",\"backing_file_depth\":0,\"drv\":\"raw\",\"iops\":0,\"bps_wr\":0,"
	"\"write_threshold\":0,\"encrypted\":false,\"bps\":0,\"bps_rd\":0,\"cache\":{\"no-flush\":false,\"dire"
	"ct\":false,\"writeback\":true},\"file\":\"/tmp/rc/b.raw\"},{\"iops_rd\":0,\"detect_zeroes\":\"off\",\""
	"active\":true,\"image\":{\"virtual-size\":67108864,\"filename\":\"/tmp/rc/b.raw\",\"format\":\"file\""
	",\"actual-size\":4096,\"format-specific\":{\"type\":\"file\",\"data\":{}},\"dirty-flag\":false},\"iop"
	"s_wr\":0,\"ro\":false,\"node-name\":\"#block123\",\"backing_file_depth\":0,\"drv\":\"file\",\"iops\":0,"
	"\"bps_wr\":0,\"write_threshold\":0,\"encrypted\":false,\"bps\":0,\"bps_rd\":0,\"cache\":{\"no-flush\":"
	"false,\"direct\":false,\"writeback\":true},\"file\":\"/tmp/rc/b.raw\"},{\"iops_rd\":0,\"detect_zero"
	"es\":\"off\",\"active\":true,\"image\":{\"virtual-size\":67108864,\"filename\":\"/tmp/rc/a.qcow2\",\"c"
	"luster-size\":65536,\"format\":\"qcow2\",\"actual-size\":208896,\"format-specific\":{\"type\":\"qcow"
	"2\",\"data\":{\"compat\":\"1.1\",\"compression-type\":\"zlib\",\"lazy-refcounts\":false,\"bitmaps\":[{\""
	"flags\":[\"in-use\",\"auto\"],\"name\":\"hca-rep-3\",\"granularity\":4096}],\"refcount-bits\":16,\"cor"
	"rupt\":false,\"extended-l2\":false}},\"dirty-flag\":false},\"iops_wr\":0,\"ro\":false,\"node-name\""
	":\"drive-a\",\"backing_file_depth\":0,\"drv\":\"qcow2\",\"iops\":0,\"bps_wr\":0,\"write_threshold\":0,"
	"\"dirty-bitmaps\":[{\"name\":\"hca-rep-3\",\"recording\":false,\"persistent\":true,\"busy\":false,\"g"
	"ranularity\":4096,\"count\":0,\"inconsistent\":true}],\"encrypted\":false,\"bps\":0,\"bps_rd\":0,\"c"
	"ache\":{\"no-flush\":false,\"direct\":false,\"writeback\":true},\"file\":\"/tmp/rc/a.qcow2\"},{\"iop"
	"s_rd\":0,\"detect_zeroes\":\"off\",\"active\":true,\"image\":{\"virtual-size\":328192,\"filename\":\"/"
	"tmp/rc/a.qcow2\",\"format\":\"file\",\"actual-size\":208896,\"format-specific\":{\"type\":\"file\",\"d"
	"ata\":{}},\"dirty-flag\":false},\"iops_wr\":0,\"ro\":false,\"node-name\":\"#block014\",\"backing_fil"
	"e_depth\":0,\"drv\":\"file\",\"iops\":0,\"bps_wr\":0,\"write_threshold\":0,\"encrypted\":false,\"bps\":"
	"0,\"bps_rd\":0,\"cache\":{\"no-flush\":false,\"direct\":false,\"writeback\":true},\"file\":\"/tmp/rc/"
	"a.qcow2\"}]"
;

static const struct rep_cut_disk two[] = {
	{ .name = "root", .qcow2 = true, .has_prev = true },
	{ .name = "scratch", .qcow2 = false, .has_prev = false },
};

/* {"execute": cmd, "arguments": args} into @doc under @step. */
static void put(json_t *doc, const char *step, struct rep_qmp q)
{
	assert_non_null(q.cmd);
	assert_non_null(q.args);
	assert_int_equal(json_object_set_new(doc, step, json_pack("{s:s, s:o}", "execute", q.cmd,
								   "arguments", q.args)), 0);
}

static void qmp_arguments_pinned(void **state)
{
	json_t *doc = json_object();
	char *text;
	size_t n;

	(void)state;
	put(doc, "tmp add root", rep_cut_tmp_add("root", "/var/lib/hca/rep/web1/root.cbw.qcow2"));
	put(doc, "tmp add scratch", rep_cut_tmp_add("scratch", "/var/lib/hca/rep/web1/scratch.cbw.qcow2"));
	put(doc, "cut 5", rep_cut_transaction(5, two, 2));
	put(doc, "view add root", rep_cut_view_add("root"));
	put(doc, "nbd server", rep_cut_nbd_server("/run/hca/vm/web1/nbd.sock"));
	put(doc, "export add root", rep_cut_export_add(5, &two[0]));
	put(doc, "export add scratch", rep_cut_export_add(5, &two[1]));
	put(doc, "export del root", rep_cut_export_del("root"));
	put(doc, "view del root", rep_cut_view_del("root"));
	put(doc, "job cancel root", rep_cut_job_cancel("root"));
	put(doc, "tmp del root", rep_cut_tmp_del("root"));
	put(doc, "acked 5", rep_cut_acked(5, two, 2));
	put(doc, "failed 5", rep_cut_failed(5, two, 2));
	text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	assert_non_null(text);
	n = strlen(text);
	text = realloc(text, n + 2);
	strcpy(text + n, "\n");
	assert_int_equal(golden_check("rep_cut_qmp.json", text), 0);
	free(text);
	json_decref(doc);
}

/* The first cycle has no previous bitmap: no disable, no export bitmap. */
static void first_cycle_freezes_nothing(void **state)
{
	struct rep_cut_disk d = { .name = "root", .qcow2 = true };
	struct rep_qmp q = rep_cut_transaction(1, &d, 1);
	json_t *acts = json_object_get(q.args, "actions");

	(void)state;
	assert_string_equal(q.cmd, "transaction");
	assert_int_equal(json_array_size(acts), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(acts, 0), "type")),
			    "block-dirty-bitmap-add");
	json_decref(q.args);
	q = rep_cut_export_add(1, &d);
	assert_null(json_object_get(q.args, "bitmaps"));
	json_decref(q.args);
	d.has_prev = true; /* cycle 1 cannot have a cycle 0 */
	assert_null(rep_cut_transaction(1, &d, 1).args);
	assert_null(rep_cut_export_add(1, &d).args);
	q = rep_cut_acked(1, (struct rep_cut_disk[]){ { .name = "r" } }, 1);
	assert_int_equal(json_array_size(json_object_get(q.args, "actions")), 0);
	json_decref(q.args);
}

static void names_fit_qemu(void **state)
{
	struct rep_cut_names n;
	char name[64], bm[REP_CUT_BITMAP_LEN];

	(void)state;
	memset(name, 'a', sizeof(name));
	name[REP_CUT_DISK_MAX] = '\0';
	assert_int_equal(rep_cut_names(name, &n), 0);
	assert_int_equal(strlen(n.view), REP_CUT_NODE_MAX);
	assert_int_equal(strlen(n.node), REP_CUT_DISK_MAX + 6);
	name[REP_CUT_DISK_MAX] = 'a';
	name[REP_CUT_DISK_MAX + 1] = '\0';
	assert_int_equal(rep_cut_names(name, &n), -ENAMETOOLONG);
	assert_null(rep_cut_view_add(name).args);
	assert_int_equal(rep_cut_names("", &n), -EINVAL);
	assert_int_equal(rep_cut_names(NULL, &n), -EINVAL);
	assert_int_equal(rep_cut_names("a b", &n), -EINVAL);
	assert_int_equal(rep_cut_names("a/b", &n), -EINVAL);
	assert_int_equal(rep_cut_names("Data_1.x-2", &n), 0);
	assert_string_equal(n.cbw, "rep-cbw-Data_1.x-2");
	rep_cut_bitmap_name(UINT64_MAX, bm);
	assert_string_equal(bm, "hca-rep-18446744073709551615");
}

static void bad_arguments_give_null(void **state)
{
	struct rep_cut_disk dup[] = { { .name = "a" }, { .name = "a" } };
	struct rep_cut_disk many[REP_DISKS_MAX + 1];
	char names[REP_DISKS_MAX + 1][8], path[REP_CUT_SOCK_MAX + 2];
	struct rep_qmp q;

	(void)state;
	for (size_t i = 0; i < REP_DISKS_MAX + 1; i++) {
		snprintf(names[i], sizeof(names[i]), "d%zu", i);
		many[i] = (struct rep_cut_disk){ .name = names[i] };
	}
	q = rep_cut_transaction(5, many, REP_DISKS_MAX);
	assert_int_equal(json_array_size(json_object_get(q.args, "actions")), 2 * REP_DISKS_MAX);
	json_decref(q.args);
	assert_null(rep_cut_transaction(0, two, 2).args);
	assert_null(rep_cut_transaction(5, two, 0).args);
	assert_null(rep_cut_transaction(5, NULL, 1).args);
	assert_null(rep_cut_transaction(5, dup, 2).args);
	assert_null(rep_cut_transaction(5, many, REP_DISKS_MAX + 1).args);
	assert_null(rep_cut_acked(5, dup, 2).args);
	assert_null(rep_cut_failed(5, dup, 2).args);
	assert_null(rep_cut_tmp_add("root", NULL).args);
	assert_null(rep_cut_tmp_add("root", "").args);
	assert_null(rep_cut_tmp_del("").args);
	assert_null(rep_cut_export_add(5, NULL).args);
	assert_null(rep_cut_export_del(NULL).args);
	assert_null(rep_cut_job_cancel("a:b").args);
	memset(path, 'p', sizeof(path));
	path[REP_CUT_SOCK_MAX + 1] = '\0';
	assert_null(rep_cut_nbd_server(path).args);
	path[REP_CUT_SOCK_MAX] = '\0';
	q = rep_cut_nbd_server(path); /* fits */
	assert_non_null(q.args);
	json_decref(q.args);
}

static json_t *load(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);

	if (!j)
		fail_msg("recorded reply: %s", e.text);
	return j;
}

/* While a cycle runs: the old bitmap frozen (and busy: exported), the new
 * one recording; the filter's own bitmaps have no name. */
static void bitmaps_during_a_cycle(void **state)
{
	json_t *ret = load(during_cycle);
	struct rep_bitmaps b;

	(void)state;
	assert_int_equal(rep_cut_bitmaps_parse(ret, "a", &b), 0);
	assert_true(b.found);
	assert_int_equal(b.n, 2);
	assert_int_equal(b.b[0].cycle, 2);
	assert_true(b.b[0].recording);
	assert_false(b.b[0].busy);
	assert_int_equal(b.b[1].cycle, 1);
	assert_false(b.b[1].recording);
	assert_true(b.b[1].busy);
	assert_true(rep_cut_bitmap_usable(&b, 2));
	assert_false(rep_cut_bitmap_usable(&b, 1)); /* frozen: tracks nothing more */
	assert_false(rep_cut_bitmap_usable(&b, 3));
	assert_int_equal(rep_cut_bitmaps_parse(ret, "b", &b), 0);
	assert_true(b.found);
	assert_int_equal(b.n, 1);
	assert_true(rep_cut_bitmap_usable(&b, 2));
	/* rep-cbw-a has three bitmaps, none named: not drive-*, and skipped anyway */
	assert_int_equal(rep_cut_bitmaps_parse(ret, "c", &b), 0);
	assert_false(b.found);
	assert_int_equal(b.n, 0);
	json_decref(ret);
}

/* After kill -9: the loaded bitmap inconsistent, the raw disk's gone. */
static void bitmaps_after_a_crash(void **state)
{
	json_t *ret = load(after_kill);
	struct rep_bitmaps b;

	(void)state;
	assert_int_equal(rep_cut_bitmaps_parse(ret, "a", &b), 0);
	assert_true(b.found);
	assert_int_equal(b.n, 1);
	assert_int_equal(b.b[0].cycle, 3);
	assert_true(b.b[0].inconsistent);
	assert_false(rep_cut_bitmap_usable(&b, 3));
	assert_false(rep_cut_bitmap_usable(&b, 4)); /* added at runtime, never stored */
	assert_int_equal(rep_cut_bitmaps_parse(ret, "b", &b), 0);
	assert_true(b.found);
	assert_int_equal(b.n, 0);
	assert_false(rep_cut_bitmap_usable(&b, 2));
	json_decref(ret);
}

/* Names that are not ours, malformed entries, and more bitmaps than kept. */
static void the_parser_is_bounded(void **state)
{
	json_t *bms = json_array(), *ret;
	struct rep_bitmaps b;
	char name[40];

	(void)state;
	json_array_append_new(bms, json_pack("{s:s}", "name", "hca-rep-"));
	json_array_append_new(bms, json_pack("{s:s}", "name", "hca-rep-07"));
	json_array_append_new(bms, json_pack("{s:s}", "name", "hca-rep--1"));
	json_array_append_new(bms, json_pack("{s:s}", "name", "hca-rep-18446744073709551616"));
	json_array_append_new(bms, json_pack("{s:s}", "name", "hca-rep-1x"));
	json_array_append_new(bms, json_pack("{s:s}", "name", "backup-1"));
	json_array_append_new(bms, json_pack("{s:i}", "name", 3));
	json_array_append_new(bms, json_string("hca-rep-1"));
	for (unsigned i = 0; i < REP_CUT_BITMAPS_MAX + 3; i++) {
		snprintf(name, sizeof(name), "hca-rep-%u", i);
		json_array_append_new(bms, json_pack("{s:s, s:b, s:I}", "name", name, "recording",
						     1, "count", (json_int_t)-5));
	}
	ret = json_pack("[i, {s:i}, {s:s, s:o}]", 1, "node-name", 2, "node-name", "drive-a",
			"dirty-bitmaps", bms);
	assert_int_equal(rep_cut_bitmaps_parse(ret, "a", &b), 0);
	assert_true(b.found);
	assert_int_equal(b.n, REP_CUT_BITMAPS_MAX);
	assert_int_equal(b.more, 3);
	assert_int_equal(b.b[0].cycle, 0);
	assert_int_equal(b.b[0].count, 0);
	assert_true(rep_cut_bitmap_usable(&b, REP_CUT_BITMAPS_MAX - 1));
	assert_false(rep_cut_bitmap_usable(&b, REP_CUT_BITMAPS_MAX)); /* not kept */
	assert_int_equal(rep_cut_bitmaps_parse(ret, "a/", &b), -EINVAL);
	assert_int_equal(rep_cut_bitmaps_parse(bms, "a", NULL), -EINVAL);
	json_decref(ret);
	ret = json_object();
	assert_int_equal(rep_cut_bitmaps_parse(ret, "a", &b), -EINVAL);
	json_decref(ret);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(qmp_arguments_pinned),
		cmocka_unit_test(first_cycle_freezes_nothing),
		cmocka_unit_test(names_fit_qemu),
		cmocka_unit_test(bad_arguments_give_null),
		cmocka_unit_test(bitmaps_during_a_cycle),
		cmocka_unit_test(bitmaps_after_a_crash),
		cmocka_unit_test(the_parser_is_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
