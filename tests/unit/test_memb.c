/* Membership: the local driver, the order of the rebuild callbacks, and the
 * words a refused request carries. The corosync driver is exercised against
 * a real corosync in the devcluster integration tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "agent/memb_priv.h"

static char trace[64];

static void on_stop(const struct memb_view *v, void *o) { strcat(trace, "S"); }
static void on_resync(const struct memb_view *v, void *o) { strcat(trace, "R"); }
static void on_resume(const struct memb_view *v, void *o) { strcat(trace, "A"); }
static const struct memb_ops ops = { on_stop, on_resync, on_resume };

static void local_is_one_quorate_node(void **state)
{
	char err[128];
	struct memb *m;
	const struct memb_view *v;

	trace[0] = '\0';
	m = memb_new(NULL, "local", "n1", &ops, NULL, err, sizeof(err));
	assert_non_null(m);
	v = memb_view(m);
	assert_true(v->connected && v->quorate);
	assert_int_equal(v->n, 1);
	assert_string_equal(memb_local(v)->name, "n1");
	assert_non_null(memb_find(v, "n1"));
	assert_null(memb_find(v, "n2"));
	assert_string_equal(trace, "SRA");
	memb_free(m);
}

static void unknown_driver_refused(void **state)
{
	char err[128];

	assert_null(memb_new(NULL, "zookeeper", "n1", &ops, NULL, err, sizeof(err)));
	assert_string_equal(err, "unknown cluster driver 'zookeeper' (local, corosync)");
}

static void publish_orders_callbacks_and_skips_no_change(void **state)
{
	char err[128];
	struct memb *m = memb_new(NULL, "local", "n1", &ops, NULL, err, sizeof(err));
	struct memb_view next = *memb_view(m);

	trace[0] = '\0';
	memb_publish(m, &next);
	assert_string_equal(trace, ""); /* same view: nothing to rebuild */
	next.quorate = false;
	memb_publish(m, &next);
	assert_string_equal(trace, "SRA");
	assert_false(memb_view(m)->quorate);
	memb_free(m);
}

static void describe_says_votes(void **state)
{
	struct memb_view v = { .connected = true, .quorate = false, .votes = 1,
			       .expected = 3, .quorum = 2, .n = 3 };
	char buf[128];

	memb_describe(&v, buf, sizeof(buf));
	assert_string_equal(buf, "cluster not quorate: 1 of 3 votes (2 needed)");
	v.connected = false;
	memb_describe(&v, buf, sizeof(buf));
	assert_string_equal(buf, "cluster membership unavailable (corosync not reachable)");
	v.connected = v.quorate = true;
	v.votes = 3;
	v.nodes[0].online = v.nodes[1].online = v.nodes[2].online = true;
	memb_describe(&v, buf, sizeof(buf));
	assert_string_equal(buf, "quorate: 3 of 3 votes, 3 of 3 nodes online");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(local_is_one_quorate_node),
		cmocka_unit_test(unknown_driver_refused),
		cmocka_unit_test(publish_orders_callbacks_and_skips_no_change),
		cmocka_unit_test(describe_says_votes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
