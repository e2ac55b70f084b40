/* Jobs: the phase machine (never backwards, never out of a terminal phase),
 * ids, and the records written to a real store (the dir backend) in order,
 * read back as the other nodes would, and pruned. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <qb/qbdefs.h>
#include <qb/qbloop.h>

#include "agent/job.h"
#include "proto/wire.h"

#define P(x) HCA__JOB_PHASE__JOB_PHASE_##x

static void phases_never_go_back(void **state)
{
	assert_true(job_phase_allowed(P(QUEUED), P(CHECK)));
	assert_true(job_phase_allowed(P(CHECK), P(COMMIT)));   /* skipping is fine */
	assert_true(job_phase_allowed(P(COMMIT), P(COMMIT)));  /* staying is fine */
	assert_false(job_phase_allowed(P(LAUNCH), P(COMMIT))); /* backwards is not */
	assert_false(job_phase_allowed(P(CLEANUP), P(PREPARE)));
	assert_true(job_phase_allowed(P(WAIT), P(FAILED)));
	assert_true(job_phase_allowed(P(CHECK), P(SUCCEEDED)));
	/* out of a terminal phase: never, not even to another terminal one */
	assert_false(job_phase_allowed(P(SUCCEEDED), P(FAILED)));
	assert_false(job_phase_allowed(P(FAILED), P(CANCELLED)));
	assert_false(job_phase_allowed(P(CANCELLED), P(CANCELLED)));
	/* values from a newer writer */
	assert_false(job_phase_allowed(P(CHECK), (Hca__JobPhase)99));
	assert_true(job_phase_terminal(P(CANCELLED)));
	assert_false(job_phase_terminal(P(CLEANUP)));
}

static void names_are_short_and_lower_case(void **state)
{
	assert_string_equal(job_phase_name(P(LAUNCH)), "launch");
	assert_string_equal(job_phase_name(P(SUCCEEDED)), "succeeded");
	assert_string_equal(job_kind_name(HCA__JOB_KIND__JOB_KIND_SHUTDOWN), "shutdown");
	assert_string_equal(job_kind_name(HCA__JOB_KIND__JOB_KIND_REPLICA_CYCLE), "replica_cycle");
	assert_string_equal(job_phase_name((Hca__JobPhase)77), "unknown");
}

static void ids_name_their_node(void **state)
{
	assert_int_equal(job_id_seq("node1-17", "node1"), 17);
	assert_int_equal(job_id_seq("node1-17", "node"), 0);   /* "node" is not "node1" */
	assert_int_equal(job_id_seq("node10-3", "node1"), 0);
	assert_int_equal(job_id_seq("node1-", "node1"), 0);
	assert_int_equal(job_id_seq("node1-3x", "node1"), 0);
	assert_int_equal(job_id_seq("node1", "node1"), 0);
}

/* ---- records in a real store ---- */

struct fixture {
	char dir[64];
	qb_loop_t *loop;
	struct exec *exec;
	struct exec_queue *q;
	struct sto_store *st;
	struct jobs *js;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256];

	snprintf(f->dir, sizeof(f->dir), "/tmp/hca-job-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->loop = qb_loop_create();
	f->exec = exec_new(f->loop);
	f->q = exec_queue_new(f->exec, "store", 2);
	f->st = sto_store_open_dir(f->dir, err, sizeof(err));
	assert_non_null(f->st);
	f->js = jobs_new(f->loop, f->q, "node1");
	jobs_set_store(f->js, f->st);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	exec_free(f->exec, 5000);
	jobs_free(f->js);
	sto_store_close(f->st);
	qb_loop_destroy(f->loop);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void stop_loop(void *data)
{
	qb_loop_stop(data);
}

/* Let the loop run the queued writes for @ms. */
static void spin(struct fixture *f, unsigned ms)
{
	qb_loop_timer_handle t;

	qb_loop_timer_add(f->loop, QB_LOOP_LOW, (uint64_t)ms * QB_TIME_NS_IN_MSEC, f->loop,
			  stop_loop, &t);
	qb_loop_run(f->loop);
}

static Hca__Job *stored(struct fixture *f, const char *id)
{
	char key[128], err[256];
	uint8_t *buf = NULL;
	size_t len = 0;
	uint64_t ver = 0;
	Hca__Job *j;

	snprintf(key, sizeof(key), "job/%s", id);
	if (sto_get(f->st, key, &buf, &len, &ver, err, sizeof(err)) < 0)
		return NULL;
	j = job_record_decode(buf, len, err, sizeof(err));
	free(buf);
	return j;
}

static void a_job_is_written_and_read_back(void **state)
{
	struct fixture *f = *state;
	struct job *j = job_new(f->js, HCA__JOB_KIND__JOB_KIND_DEFINE, "web1", "node2", 42);
	Hca__Job *r;
	char id[JOB_ID_MAX];

	assert_non_null(j);
	snprintf(id, sizeof(id), "%s", job_id(j));
	assert_string_equal(id, "node1-1");
	assert_int_equal(job_phase(j, P(PREPARE)), 0);
	job_add_volume(j, "file:web1-root");
	job_progress(j, 1, 2, "volumes", "file:web1-root");
	assert_int_equal(job_phase(j, P(CHECK)), -EINVAL); /* refused, logged */
	assert_int_equal(job_get_phase(j), P(PREPARE));
	spin(f, 200);
	r = stored(f, id);
	assert_non_null(r);
	assert_int_equal(r->phase, P(PREPARE));
	assert_string_equal(r->node, "node1");
	assert_string_equal(r->requested_on, "node2");
	assert_int_equal(r->incarnation, 42);
	assert_int_equal(r->n_volumes, 1);
	assert_string_equal(r->volumes[0], "file:web1-root");
	hca__job__free_unpacked(r, NULL);

	job_finish(j, HCA__ERROR_CODE__ERROR_STORAGE, "vm web1: define failed: %s", "disk full");
	spin(f, 200);
	r = stored(f, id);
	assert_non_null(r);
	assert_int_equal(r->phase, P(FAILED));
	assert_non_null(r->error);
	assert_int_equal(r->error->code, HCA__ERROR_CODE__ERROR_STORAGE);
	assert_string_equal(r->error->message, "vm web1: define failed: disk full");
	assert_true(r->ended_ms >= r->created_ms);
	hca__job__free_unpacked(r, NULL);
	/* still answered from memory after it ended */
	assert_non_null(jobs_find(f->js, id));
}

static void ids_go_on_after_a_restart(void **state)
{
	struct fixture *f = *state;
	struct job *j;

	jobs_seq_at_least(f->js, 41);
	jobs_seq_at_least(f->js, 7); /* never backwards */
	j = job_new(f->js, HCA__JOB_KIND__JOB_KIND_START, "web1", NULL, 0);
	assert_string_equal(job_id(j), "node1-42");
	job_finish(j, 0, "ok");
	spin(f, 100);
}

static void cancel_needs_a_hook(void **state)
{
	struct fixture *f = *state;
	struct job *j = job_new(f->js, HCA__JOB_KIND__JOB_KIND_START, "web1", NULL, 0);
	char err[256];

	job_phase(j, P(LAUNCH));
	assert_int_equal(job_request_cancel(j, err, sizeof(err)), -EOPNOTSUPP);
	assert_non_null(strstr(err, "cannot be cancelled in phase launch"));
	job_finish(j, 0, "ok");
	assert_int_equal(job_request_cancel(j, err, sizeof(err)), -EALREADY);
	spin(f, 100);
}

static void old_jobs_are_pruned(void **state)
{
	struct fixture *f = *state;
	char **keys = NULL, err[256], first[JOB_ID_MAX];
	size_t n = 0;

	for (int i = 0; i < JOB_KEEP + 6; i++) {
		struct job *j = job_new(f->js, HCA__JOB_KIND__JOB_KIND_STOP, "web1", NULL, 0);
		if (i == 0)
			snprintf(first, sizeof(first), "%s", job_id(j));
		job_finish(j, 0, "stopped");
		spin(f, 5);
	}
	/* the writes (fsync'd) take their time: wait for them, bounded */
	for (int tries = 0; tries < 200; tries++) {
		spin(f, 50);
		sto_keys_free(keys, n);
		keys = NULL;
		assert_int_equal(sto_list(f->st, "job/", &keys, &n, err, sizeof(err)), 0);
		if (n == JOB_KEEP && !jobs_find(f->js, first))
			break;
	}
	print_message("# %zu job records stored\n", n);
	assert_int_equal(n, JOB_KEEP);
	assert_null(jobs_find(f->js, first));
	sto_keys_free(keys, n);
}

static void an_ended_job_read_back_keeps_its_result(void **state)
{
	struct fixture *f = *state;
	Hca__Job rec = HCA__JOB__INIT;
	Hca__Error e = HCA__ERROR__INIT;
	Hca__Job out;
	Hca__JobProgress pg;
	Hca__Error oe;
	struct job *j;
	char err[128];

	rec.id = "node1-9";
	rec.kind = HCA__JOB_KIND__JOB_KIND_START;
	rec.vm = "web1";
	rec.node = "node1";
	rec.phase = P(FAILED);
	e.code = HCA__ERROR_CODE__ERROR_HYPERVISOR;
	e.message = "vm web1: QEMU failed to start";
	rec.error = &e;
	rec.note = "from an earlier run";
	j = job_adopt(f->js, &rec, 3);
	assert_non_null(j);
	assert_ptr_equal(jobs_find(f->js, "node1-9"), j);
	job_fill(j, &out, &pg, &oe);
	assert_int_equal(out.phase, P(FAILED));
	assert_non_null(out.error);
	assert_string_equal(out.error->message, "vm web1: QEMU failed to start");
	assert_string_equal(out.note, "from an earlier run");
	/* ended: no cancel, no phase change */
	assert_int_equal(job_request_cancel(j, err, sizeof(err)), -EALREADY);
	assert_int_equal(job_phase(j, P(CLEANUP)), -EINVAL);
}

/* ---- job_when_durable: a caller acts only on what a restart can find ---- */

struct durable_seen {
	int calls, rc;
	bool stored; /* the record was in the store when the callback ran */
	struct fixture *f;
	char id[JOB_ID_MAX];
};

static void on_durable(struct job *j, int rc, void *opaque)
{
	struct durable_seen *d = opaque;
	Hca__Job *rec = stored(d->f, job_id(j));

	d->calls++;
	d->rc = rc;
	d->stored = rec && rec->n_volumes == job_n_volumes(j);
	if (rec)
		hca__job__free_unpacked(rec, NULL);
	qb_loop_stop(d->f->loop);
}

static void durable_waits_for_the_record(void **state)
{
	struct fixture *f = *state;
	struct durable_seen d = { .f = f, .rc = 1 };
	struct job *j = job_new(f->js, HCA__JOB_KIND__JOB_KIND_DEFINE, "web1", NULL, 1);

	job_add_volume(j, "file:web1-disk0");
	job_when_durable(j, on_durable, &d, 5000);
	assert_int_equal(d.calls, 0); /* not before the write landed */
	spin(f, 5000);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.rc, 0);
	assert_true(d.stored);
	/* nothing changed since: at once */
	job_when_durable(j, on_durable, &d, 5000);
	assert_int_equal(d.calls, 2);
	job_finish(j, 0, "done");
	spin(f, 50);
}

static void durable_times_out_without_a_store(void **state)
{
	struct fixture *f = *state;
	struct durable_seen d = { .f = f, .rc = 1 };
	struct jobs *js = jobs_new(f->loop, f->q, "node9"); /* no store set */
	struct job *j = job_new(js, HCA__JOB_KIND__JOB_KIND_START, "web1", NULL, 1);

	job_when_durable(j, on_durable, &d, 100);
	spin(f, 2000);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.rc, -ETIMEDOUT);
	/* ending the job drops a waiter: it never fires afterwards */
	d.calls = 0;
	job_when_durable(j, on_durable, &d, 100);
	job_finish(j, HCA__ERROR_CODE__ERROR_STORAGE, "no store");
	spin(f, 300);
	assert_int_equal(d.calls, 0);
	jobs_free(js);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(phases_never_go_back),
		cmocka_unit_test(names_are_short_and_lower_case),
		cmocka_unit_test(ids_name_their_node),
		cmocka_unit_test_setup_teardown(a_job_is_written_and_read_back, setup, teardown),
		cmocka_unit_test_setup_teardown(durable_waits_for_the_record, setup, teardown),
		cmocka_unit_test_setup_teardown(durable_times_out_without_a_store, setup, teardown),
		cmocka_unit_test_setup_teardown(ids_go_on_after_a_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(cancel_needs_a_hook, setup, teardown),
		cmocka_unit_test_setup_teardown(old_jobs_are_pruned, setup, teardown),
		cmocka_unit_test_setup_teardown(an_ended_job_read_back_keeps_its_result, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
