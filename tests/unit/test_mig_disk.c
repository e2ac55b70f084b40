/*
 * test_mig_disk: the disks of a shared-nothing migration. Every QMP
 * argument both QEMUs get is pinned by a golden file; the mirrors'
 * bookkeeping is driven with the events QEMU 10.0 sends (block-core.json:
 * BLOCK_JOB_READY, BLOCK_JOB_ERROR, BLOCK_JOB_COMPLETED, BLOCK_JOB_CANCELLED).
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

#include "migration/mig.h"
#include "migration/mig_priv.h"
#include "tests/unit/util_golden.h"

static json_t *ev(const char *job, uint64_t len, uint64_t off, const char *error)
{
	json_t *d = json_pack("{s:s, s:I, s:I, s:i, s:s}", "device", job, "len", (json_int_t)len,
			      "offset", (json_int_t)off, "speed", 0, "type", "mirror");

	if (error)
		json_object_set_new(d, "error", json_string(error));
	return d;
}

static enum mig_mm_ev feed(struct mig_mirrors *mm, const char *event, json_t *data, char *why)
{
	enum mig_mm_ev e = mig_mirrors_event(mm, event, data, why, 300);

	json_decref(data);
	return e;
}

static void qmp_arguments_pinned(void **state)
{
	json_t *doc;
	char *text;
	size_t n;

	(void)state;
	doc = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
			"source blockdev-add", mig_nbd_client_json("root", "10.0.0.3", 40123,
								   "hca-mig-tls", "node3"),
			"source blockdev-add (IPv6)", mig_nbd_client_json("data_1", "fd00::3", 40124,
									  "hca-mig-tls", "node3"),
			"source blockdev-mirror", mig_mirror_json("root"),
			"source block-job-change", mig_mirror_active_json("root"),
			"destination nbd-server-start", mig_nbd_server_json("10.0.0.3", 40123,
									   "hca-mig-tls"),
			"destination block-export-add", mig_export_json("root"),
			"destination block-export-del", mig_export_del_json("root"));
	assert_non_null(doc);
	text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	n = strlen(text);
	text = realloc(text, n + 2);
	strcpy(text + n, "\n");
	assert_int_equal(golden_check("mig_disk_qmp.json", text), 0);
	free(text);
	json_decref(doc);
}

static void bad_arguments_give_null(void **state)
{
	(void)state;
	assert_null(mig_nbd_client_json("root", "10.0.0.3", 0, NULL, NULL));
	assert_null(mig_nbd_client_json("root", "10.0.0.3", 70000, NULL, NULL));
	assert_null(mig_nbd_client_json(NULL, "10.0.0.3", 1, NULL, NULL));
	assert_null(mig_nbd_server_json("10.0.0.3", 0, NULL));
	assert_null(mig_mirror_json(NULL));
	assert_null(mig_export_json(NULL));
}

static void the_set_refuses_what_it_cannot_name(void **state)
{
	struct mig_mirrors mm = { 0 };
	char name[80];

	(void)state;
	assert_int_equal(mig_mirrors_add(&mm, "", 0), -EINVAL);
	memset(name, 'a', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	assert_int_equal(mig_mirrors_add(&mm, name, 0), -EINVAL);
	assert_int_equal(mig_mirrors_add(&mm, "root", 1), 0);
	assert_int_equal(mig_mirrors_add(&mm, "root", 1), -EEXIST);
	for (unsigned i = 1; i < MIG_DISKS_MAX; i++) {
		snprintf(name, sizeof(name), "d%u", i);
		assert_int_equal(mig_mirrors_add(&mm, name, 1), 0);
	}
	assert_int_equal(mig_mirrors_add(&mm, "one-too-many", 1), -E2BIG);
}

/* Two disks: READY once both are, DONE once both finished as asked. */
static void ready_then_done(void **state)
{
	struct mig_mirrors mm = { 0 };
	char why[300] = "";
	uint64_t done, total;
	json_t *jobs;

	(void)state;
	assert_int_equal(mig_mirrors_add(&mm, "root", 1 << 20), 0);
	assert_int_equal(mig_mirrors_add(&mm, "data", 1 << 20), 0);
	/* another job of the VM (a backup, say): not ours */
	assert_int_equal(feed(&mm, "BLOCK_JOB_READY", ev("backup0", 1, 1, NULL), why), MIG_MM_NONE);
	assert_int_equal(feed(&mm, "BLOCK_JOB_READY", ev("mig-root", 100, 100, NULL), why),
			 MIG_MM_NONE);
	assert_int_equal(feed(&mm, "BLOCK_JOB_READY", ev("mig-root", 100, 100, NULL), why),
			 MIG_MM_NONE); /* twice: counted once */
	jobs = json_pack("[{s:s, s:I, s:I}, {s:s, s:I, s:I}]", "device", "mig-data", "len",
			 (json_int_t)300, "offset", (json_int_t)120, "device", "mig-root", "len",
			 (json_int_t)100, "offset", (json_int_t)100);
	mig_mirrors_jobs(&mm, jobs, &done, &total);
	assert_int_equal(total, 400);
	assert_int_equal(done, 220);
	assert_true(mig_mirrors_have_job(&mm, jobs));
	json_decref(jobs);
	jobs = json_pack("[{s:s}]", "device", "other");
	assert_false(mig_mirrors_have_job(&mm, jobs));
	json_decref(jobs);
	assert_int_equal(feed(&mm, "BLOCK_JOB_READY", ev("mig-data", 300, 300, NULL), why),
			 MIG_MM_READY);

	mm.finishing = true;
	assert_int_equal(feed(&mm, "BLOCK_JOB_COMPLETED", ev("mig-data", 310, 310, NULL), why),
			 MIG_MM_NONE);
	assert_int_equal(feed(&mm, "BLOCK_JOB_COMPLETED", ev("mig-root", 100, 100, NULL), why),
			 MIG_MM_DONE);
	mig_mirrors_jobs(&mm, NULL, &done, &total);
	assert_int_equal(total, 410);
	assert_int_equal(done, 410);
}

static void every_way_a_mirror_fails(void **state)
{
	struct mig_mirrors mm = { 0 };
	char why[300];
	json_t *e;

	(void)state;
	/* the target went away while copying */
	assert_int_equal(mig_mirrors_add(&mm, "root", 1), 0);
	assert_int_equal(feed(&mm, "BLOCK_JOB_COMPLETED",
			      ev("mig-root", 100, 40, "Input/output error"), why), MIG_MM_FAILED);
	assert_non_null(strstr(why, "root"));
	assert_non_null(strstr(why, "Input/output error"));

	/* an error reported, in sync or not */
	memset(&mm, 0, sizeof(mm));
	assert_int_equal(mig_mirrors_add(&mm, "root", 1), 0);
	e = json_pack("{s:s, s:s, s:s}", "device", "mig-root", "operation", "write", "action",
		      "report");
	assert_int_equal(feed(&mm, "BLOCK_JOB_ERROR", e, why), MIG_MM_FAILED);
	assert_non_null(strstr(why, "write"));

	/* ended without an error, but nobody asked it to (not finishing) */
	memset(&mm, 0, sizeof(mm));
	assert_int_equal(mig_mirrors_add(&mm, "root", 1), 0);
	assert_int_equal(feed(&mm, "BLOCK_JOB_READY", ev("mig-root", 1, 1, NULL), why),
			 MIG_MM_READY);
	assert_int_equal(feed(&mm, "BLOCK_JOB_COMPLETED", ev("mig-root", 1, 1, NULL), why),
			 MIG_MM_FAILED);

	/* finishing, but it was cancelled rather than completed */
	memset(&mm, 0, sizeof(mm));
	assert_int_equal(mig_mirrors_add(&mm, "root", 1), 0);
	assert_int_equal(feed(&mm, "BLOCK_JOB_READY", ev("mig-root", 1, 1, NULL), why),
			 MIG_MM_READY);
	mm.finishing = true;
	assert_int_equal(feed(&mm, "BLOCK_JOB_CANCELLED", ev("mig-root", 1, 1, NULL), why),
			 MIG_MM_FAILED);

	/* finishing one that never got in sync: incomplete */
	memset(&mm, 0, sizeof(mm));
	assert_int_equal(mig_mirrors_add(&mm, "root", 1), 0);
	mm.finishing = true;
	assert_int_equal(feed(&mm, "BLOCK_JOB_COMPLETED", ev("mig-root", 9, 3, NULL), why),
			 MIG_MM_FAILED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(qmp_arguments_pinned),
		cmocka_unit_test(bad_arguments_give_null),
		cmocka_unit_test(the_set_refuses_what_it_cannot_name),
		cmocka_unit_test(ready_then_done),
		cmocka_unit_test(every_way_a_mirror_fails),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
