/*
 * test_sto_rep: the replication relation records (rep/NAME) against the real
 * "dir" state store in a mkdtemp'd directory: round trip, CAS on the
 * version, a record naming another VM, a newer format, garbage, list and
 * delete.
 */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proto/wire.h"
#include "storage/sto_rep.h"

struct fx {
	char top[64];
	char dir[96];
	struct sto_store *st;
	char err[512];
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->top, sizeof(f->top), "/tmp/hca-storep-XXXXXX");
	assert_non_null(mkdtemp(f->top));
	snprintf(f->dir, sizeof(f->dir), "%s/store", f->top);
	f->st = sto_store_open_dir(f->dir, f->err, sizeof(f->err));
	assert_non_null(f->st);
	*state = f;
	return 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	sto_store_close(f->st);
	nftw(f->top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void rel_init(Hca__RepRelation *r, const char *vm)
{
	hca__rep_relation__init(r);
	r->vm = (char *)vm;
	r->relation = 0x1234abcd5678ef00ull;
	r->source = "node1";
	r->target = "node2";
	r->interval_s = 5;
	r->keep = 24;
	r->state = HCA__REP_STATE__REP_STATE_ENABLED;
	r->last_point = 7;
	r->bytes_raw = 1u << 20;
	r->last_error = "";
}

static void test_roundtrip_and_cas(void **state)
{
	struct fx *f = *state;
	Hca__RepRelation r, *got = NULL;
	uint64_t v1 = 0, v2 = 0, ver = 0;

	rel_init(&r, "web1");
	assert_int_equal(sto_rep_get(f->st, "web1", &got, &ver, f->err, sizeof(f->err)), -ENOENT);
	assert_int_equal(sto_rep_put(f->st, "web1", &r, 0, &v1, f->err, sizeof(f->err)), 0);
	/* a second create loses */
	assert_int_equal(sto_rep_put(f->st, "web1", &r, 0, NULL, f->err, sizeof(f->err)), -EEXIST);
	assert_int_equal(sto_rep_get(f->st, "web1", &got, &ver, f->err, sizeof(f->err)), 0);
	assert_int_equal(ver, v1);
	assert_string_equal(got->target, "node2");
	assert_int_equal(got->relation, r.relation);
	assert_int_equal(got->last_point, 7);
	assert_int_equal(got->format, STO_REP_FORMAT);
	hca__rep_relation__free_unpacked(got, NULL);
	/* the CAS: the right version wins once, a stale one loses */
	r.last_point = 8;
	assert_int_equal(sto_rep_put(f->st, "web1", &r, v1, &v2, f->err, sizeof(f->err)), 0);
	r.last_point = 9;
	assert_int_equal(sto_rep_put(f->st, "web1", &r, v1, NULL, f->err, sizeof(f->err)),
			 -ECANCELED);
	assert_int_equal(sto_rep_get(f->st, "web1", &got, &ver, f->err, sizeof(f->err)), 0);
	assert_int_equal(got->last_point, 8);
	hca__rep_relation__free_unpacked(got, NULL);
	/* delete at a stale version loses, at the right one wins */
	assert_int_equal(sto_rep_del(f->st, "web1", v1, f->err, sizeof(f->err)), -ECANCELED);
	assert_int_equal(sto_rep_del(f->st, "web1", v2, f->err, sizeof(f->err)), 0);
	assert_int_equal(sto_rep_get(f->st, "web1", &got, &ver, f->err, sizeof(f->err)), -ENOENT);
	assert_non_null(strstr(f->err, "not replicated"));
}

static void test_refused(void **state)
{
	struct fx *f = *state;
	Hca__RepRelation r, *got = NULL;
	uint8_t *frame;
	size_t len;
	uint64_t ver;
	int rc;

	/* a relation that names another VM is never written... */
	rel_init(&r, "web2");
	assert_int_equal(sto_rep_put(f->st, "web1", &r, 0, NULL, f->err, sizeof(f->err)), -EINVAL);
	/* ...and one found under the wrong key is corrupt */
	frame = sto_rep_encode(&r, &len);
	assert_non_null(frame);
	assert_int_equal(sto_put(f->st, "rep/web1", frame, len, 0, NULL, f->err, sizeof(f->err)), 0);
	free(frame);
	assert_int_equal(sto_rep_get(f->st, "web1", &got, &ver, f->err, sizeof(f->err)), -EBADMSG);
	assert_non_null(strstr(f->err, "names vm 'web2'"));
	/* a newer format is refused as newer */
	rel_init(&r, "web3");
	r.format = STO_REP_FORMAT_MAX + 1;
	frame = wire_frame_pack(WIRE_T_REP_RELATION, &r.base, &len);
	assert_non_null(frame);
	got = sto_rep_decode(frame, len, "web3", &rc, f->err, sizeof(f->err));
	free(frame);
	assert_null(got);
	assert_int_equal(rc, -EPROTONOSUPPORT);
	assert_non_null(strstr(f->err, "upgrade this node"));
	/* garbage, and a frame of another type */
	got = sto_rep_decode((const uint8_t *)"garbage!", 8, "web3", &rc, f->err, sizeof(f->err));
	assert_null(got);
	assert_int_equal(rc, -EBADMSG);
	/* a name no key can hold */
	assert_int_equal(sto_rep_get(f->st, "a/b", &got, &ver, f->err, sizeof(f->err)), -EINVAL);
}

static void test_list(void **state)
{
	struct fx *f = *state;
	const char *names[] = { "b2", "a1", "c3" };
	Hca__RepRelation r;
	char **got = NULL;
	size_t n = 0;

	for (size_t i = 0; i < 3; i++) {
		rel_init(&r, names[i]);
		assert_int_equal(sto_rep_put(f->st, names[i], &r, 0, NULL, f->err, sizeof(f->err)),
				 0);
	}
	/* a VM record is no relation */
	assert_int_equal(sto_put(f->st, "vm/a1", "x", 1, 0, NULL, f->err, sizeof(f->err)), 0);
	assert_int_equal(sto_rep_list(f->st, &got, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(n, 3);
	assert_string_equal(got[0], "a1");
	assert_string_equal(got[1], "b2");
	assert_string_equal(got[2], "c3");
	sto_keys_free(got, n);
}

#define T(t) cmocka_unit_test_setup_teardown(t, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_roundtrip_and_cas),
		T(test_refused),
		T(test_list),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
