/*
 * test_sto_vm: the VM record codec (formats, corrupt and foreign records, a
 * golden encoding) and the owner compare-and-swap, against the real "dir"
 * state store in a mkdtemp'd directory. The rados backend runs the same
 * sto_put underneath but needs a cluster; test_sto_store covers that.
 *
 * Threads here never call cmocka's asserts (they longjmp): they record what
 * they saw and the main thread asserts it.
 */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proto/wire.h"
#include "storage/sto_vm.h"
#include "tests/unit/util_golden.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- fixture: a fresh dir store per test ---- */

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
	snprintf(f->top, sizeof(f->top), "/tmp/hca-stovm-XXXXXX");
	assert_non_null(mkdtemp(f->top));
	snprintf(f->dir, sizeof(f->dir), "%s/store", f->top);
	f->st = sto_store_open_dir(f->dir, f->err, sizeof(f->err));
	assert_non_null(f->st);
	*state = f;
	return 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
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

/* ---- records ---- */

/* A record and everything it points at, on the caller's stack. */
struct rec {
	Hca__VmRecord r;
	Hca__VmSpec s;
	Hca__BootSpec b;
	Hca__DiskSpec d;
	Hca__DiskSpec *dp[1];
	Hca__VolumeRef v;
	Hca__VolumeRef *vp[1];
};

static void rec_init(struct rec *x, const char *name, const char *owner, uint64_t epoch,
		     bool active, uint64_t incarnation)
{
	*x = (struct rec){ .r = HCA__VM_RECORD__INIT, .s = HCA__VM_SPEC__INIT,
			   .b = HCA__BOOT_SPEC__INIT, .d = HCA__DISK_SPEC__INIT,
			   .v = HCA__VOLUME_REF__INIT };
	x->d.name = "root";
	x->d.size_bytes = 64 << 20;
	x->dp[0] = &x->d;
	x->b.kernel = "/k";
	x->s.name = (char *)name;
	x->s.uuid = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
	x->s.vcpus = 2;
	x->s.memory_mib = 256;
	x->s.n_disks = 1;
	x->s.disks = x->dp;
	x->s.boot = &x->b;
	x->v.disk = "root";
	x->v.backend = "file";
	x->v.volume = "web1-root";
	x->v.path = "/v/web1-root.qcow2";
	x->vp[0] = &x->v;
	x->r.spec = &x->s;
	x->r.owner = (char *)owner;
	x->r.n_volumes = 1;
	x->r.volumes = x->vp;
	x->r.defined_at = 1700000000;
	x->r.owner_epoch = epoch;
	x->r.active = active;
	x->r.incarnation = incarnation;
}

/* Define vm/@name with the given owner record; returns its version. */
static uint64_t define(struct fx *f, const char *name, const char *owner, uint64_t epoch,
		       bool active, uint64_t incarnation)
{
	struct rec x;
	uint64_t v = 0;

	rec_init(&x, name, owner, epoch, active, incarnation);
	assert_int_equal(sto_vm_put(f->st, name, &x.r, 0, &v, f->err, sizeof(f->err)), 0);
	assert_int_equal(v, 1);
	return v;
}

/* Store @r's frame as-is (no format set), as an older or newer hca would. */
static void put_raw(struct fx *f, const char *name, const Hca__VmRecord *r)
{
	char key[STO_KEY_MAX + 1];
	size_t len = 0;
	uint8_t *frame = wire_frame_pack(WIRE_T_VM_RECORD, &r->base, &len);

	assert_non_null(frame);
	sto_vm_key(key, sizeof(key), name);
	assert_int_equal(sto_put(f->st, key, frame, len, 0, NULL, f->err, sizeof(f->err)), 0);
	free(frame);
}

/* The stored record of vm/@name, which must decode, and its version. */
static Hca__VmRecord *get_ok(struct fx *f, const char *name, uint64_t *version)
{
	Hca__VmRecord *r = NULL;
	uint64_t v = 0;

	if (sto_vm_get(f->st, name, &r, &v, f->err, sizeof(f->err)) != 0)
		fail_msg("sto_vm_get %s: %s", name, f->err);
	if (version)
		*version = v;
	return r;
}

static void expect_owner(struct fx *f, const char *name, const char *owner, uint64_t epoch,
			 bool active, uint64_t version)
{
	uint64_t v = 0;
	Hca__VmRecord *r = get_ok(f, name, &v);

	assert_string_equal(r->owner, owner);
	assert_int_equal(r->owner_epoch, epoch);
	assert_int_equal(r->active, active);
	assert_int_equal(v, version);
	hca__vm_record__free_unpacked(r, NULL);
}

static void expect_err(struct fx *f, const char *want)
{
	if (strcmp(f->err, want) != 0)
		fail_msg("err '%s', want '%s'", f->err, want);
}

static void expect_err_has(const char *err, const char *what)
{
	if (!strstr(err, what))
		fail_msg("err '%s' does not say '%s'", err, what);
}

static int cas(struct fx *f, const char *name, struct sto_owner expect, struct sto_owner next,
	       uint64_t *epoch, uint64_t *version)
{
	f->err[0] = '\0';
	return sto_owner_cas(f->st, name, &expect, &next, epoch, version, f->err,
			     sizeof(f->err));
}

static int confirm(struct fx *f, const char *name, struct sto_owner want)
{
	f->err[0] = '\0';
	return sto_owner_confirm(f->st, name, &want, f->err, sizeof(f->err));
}

#define OWNER(o, e, a) ((struct sto_owner){ .owner = (o), .epoch = (e), .active = (a) })
#define OWNER_INC(o, e, a, i) \
	((struct sto_owner){ .owner = (o), .epoch = (e), .active = (a), .incarnation = (i) })

static char *hex(const uint8_t *b, size_t n)
{
	char *s = malloc(n * 2 + 2), *o = s;

	assert_non_null(s);
	for (size_t i = 0; i < n; i++)
		o += sprintf(o, "%02x", b[i]);
	strcpy(o, "\n");
	return s;
}

/* The bytes of golden hex file @name (under $HCA_TOP or "."). */
static uint8_t *golden_bytes(const char *name, size_t *len)
{
	const char *top = getenv("HCA_TOP");
	char path[512], *line = NULL;
	size_t cap = 0, n;
	uint8_t *b;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/tests/unit/golden/%s", top && *top ? top : ".", name);
	fp = fopen(path, "re");
	if (!fp)
		fail_msg("cannot open %s (run from the top of the tree or set HCA_TOP)", path);
	assert_true(getline(&line, &cap, fp) > 0);
	fclose(fp);
	n = strspn(line, "0123456789abcdef") / 2;
	b = malloc(n ? n : 1);
	assert_non_null(b);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(sscanf(line + 2 * i, "%2hhx", &b[i]), 1);
	free(line);
	*len = n;
	return b;
}

/* ---- the codec ---- */

static void test_key(void **state)
{
	char key[STO_KEY_MAX + 1], name[STO_KEY_MAX + 1];
	Hca__VmRecord *r = NULL;
	uint64_t v = 9;
	struct fx *f = *state;

	sto_vm_key(key, sizeof(key), "web1");
	assert_string_equal(key, "vm/web1");
	/* One character too long: no key at all, never a cut-off one. */
	memset(name, 'a', STO_KEY_MAX - 2);
	name[STO_KEY_MAX - 2] = '\0';
	sto_vm_key(key, sizeof(key), name);
	assert_string_equal(key, "");
	assert_int_equal(sto_vm_get(f->st, name, &r, &v, f->err, sizeof(f->err)), -EINVAL);
	assert_null(r);
	assert_int_equal(v, 0);
	name[STO_KEY_MAX - 3] = '\0';
	sto_vm_key(key, sizeof(key), name);
	assert_int_equal(strlen(key), STO_KEY_MAX);
	sto_vm_key(key, sizeof(key), NULL);
	assert_string_equal(key, "");
}

static void test_roundtrip(void **state)
{
	struct rec x;
	size_t len = 0;
	uint8_t *frame;
	Hca__VmRecord *r;
	int rc = 1;
	char err[256] = "";

	rec_init(&x, "web1", "node1", 7, true, 0x1234567890abcdefull);
	frame = sto_vm_encode(&x.r, &len);
	assert_non_null(frame);
	assert_int_equal(x.r.format, 0); /* the caller's record is left alone */
	r = sto_vm_decode(frame, len, "web1", &rc, err, sizeof(err));
	free(frame);
	assert_non_null(r);
	assert_int_equal(rc, 0);
	assert_int_equal(r->format, STO_VM_FORMAT);
	assert_string_equal(r->spec->name, "web1");
	assert_string_equal(r->spec->uuid, x.s.uuid);
	assert_int_equal(r->spec->n_disks, 1);
	assert_string_equal(r->spec->disks[0]->name, "root");
	assert_string_equal(r->owner, "node1");
	assert_int_equal(r->owner_epoch, 7);
	assert_true(r->active);
	assert_int_equal(r->incarnation, 0x1234567890abcdefull);
	assert_int_equal(r->defined_at, 1700000000);
	assert_int_equal(r->n_volumes, 1);
	assert_string_equal(r->volumes[0]->path, "/v/web1-root.qcow2");
	hca__vm_record__free_unpacked(r, NULL);
}

static void test_copy_is_deep(void **state)
{
	struct rec x;
	size_t len = 0;
	uint8_t *frame;
	Hca__VmRecord *r, *c;

	rec_init(&x, "web1", "node1", 3, true, 42);
	frame = sto_vm_encode(&x.r, &len);
	r = sto_vm_decode(frame, len, "web1", NULL, NULL, 0);
	free(frame);
	assert_non_null(r);
	c = sto_vm_copy(r);
	assert_non_null(c);
	assert_ptr_not_equal(c->spec, r->spec);
	hca__vm_record__free_unpacked(r, NULL); /* ASan: c must not share it */
	assert_string_equal(c->spec->name, "web1");
	assert_string_equal(c->owner, "node1");
	assert_int_equal(c->owner_epoch, 3);
	assert_true(c->active);
	assert_int_equal(c->incarnation, 42);
	assert_string_equal(c->volumes[0]->volume, "web1-root");
	hca__vm_record__free_unpacked(c, NULL);
}

/* A change here means records written by this version no longer read the
 * same: a format bump, not an edit (HCA_GOLDEN_UPDATE=1 to rewrite). */
static void test_golden_v2(void **state)
{
	struct rec x;
	size_t len = 0, glen = 0;
	uint8_t *frame, *g;
	char *h;
	Hca__VmRecord *r;

	rec_init(&x, "web1", "node1", 4, true, 0x1122334455667788ull);
	frame = sto_vm_encode(&x.r, &len);
	assert_non_null(frame);
	h = hex(frame, len);
	assert_int_equal(golden_check("wire_vm_record_v2.hex", h), 0);
	free(h);
	free(frame);
	/* And the golden bytes read back as what they were made from. */
	g = golden_bytes("wire_vm_record_v2.hex", &glen);
	r = sto_vm_decode(g, glen, "web1", NULL, NULL, 0);
	free(g);
	assert_non_null(r);
	assert_int_equal(r->format, 2);
	assert_string_equal(r->owner, "node1");
	assert_int_equal(r->owner_epoch, 4);
	assert_true(r->active);
	assert_int_equal(r->incarnation, 0x1122334455667788ull);
	hca__vm_record__free_unpacked(r, NULL);
}

/* The record test_wire pins, written before formats existed, reads as 1. */
static void test_golden_v1_reads_as_format_1(void **state)
{
	size_t len = 0;
	uint8_t *g = golden_bytes("wire_vm_record.hex", &len);
	int rc = 1;
	Hca__VmRecord *r = sto_vm_decode(g, len, "web1", &rc, NULL, 0);

	free(g);
	assert_non_null(r);
	assert_int_equal(rc, 0);
	assert_int_equal(r->format, 1);
	assert_string_equal(r->owner, "node1");
	assert_int_equal(r->owner_epoch, 0);
	assert_false(r->active);
	assert_int_equal(r->incarnation, 0);
	hca__vm_record__free_unpacked(r, NULL);
}

static void test_format0_stored_reads_as_1(void **state)
{
	struct fx *f = *state;
	struct rec x;
	Hca__VmRecord *r;
	uint64_t v = 0, e = 0;

	rec_init(&x, "web1", "node1", 0, false, 0);
	put_raw(f, "web1", &x.r);
	r = get_ok(f, "web1", &v);
	assert_int_equal(r->format, 1);
	assert_int_equal(v, 1);
	hca__vm_record__free_unpacked(r, NULL);
	/* The first owner CAS rewrites it in today's format. */
	assert_int_equal(cas(f, "web1", OWNER("node1", 0, false), OWNER("node1", 0, true), &e, &v),
			 0);
	r = get_ok(f, "web1", NULL);
	assert_int_equal(r->format, STO_VM_FORMAT);
	assert_true(r->active);
	hca__vm_record__free_unpacked(r, NULL);
}

static void test_newer_format_refused(void **state)
{
	struct fx *f = *state;
	struct rec x;
	size_t len = 0;
	uint8_t *frame;
	Hca__VmRecord *r;
	uint64_t v = 5, e = 5;
	int rc = 0;
	const char *want = "vm web1: record written by a newer hca (record format 3, this node "
			   "reads up to 2); upgrade this node";

	rec_init(&x, "web1", "node1", 1, false, 0);
	x.r.format = STO_VM_FORMAT_MAX + 1;
	frame = wire_frame_pack(WIRE_T_VM_RECORD, &x.r.base, &len);
	assert_null(sto_vm_decode(frame, len, "web1", &rc, f->err, sizeof(f->err)));
	assert_int_equal(rc, -EPROTONOSUPPORT);
	expect_err(f, want);
	free(frame);
	/* Refused as newer even if that format keeps no spec where we look. */
	x.r.spec = NULL;
	frame = wire_frame_pack(WIRE_T_VM_RECORD, &x.r.base, &len);
	assert_null(sto_vm_decode(frame, len, "web1", &rc, f->err, sizeof(f->err)));
	assert_int_equal(rc, -EPROTONOSUPPORT);
	free(frame);
	/* Through the store: read refused, and the owner CAS writes nothing. */
	x.r.spec = &x.s;
	put_raw(f, "web1", &x.r);
	r = (Hca__VmRecord *)1;
	assert_int_equal(sto_vm_get(f->st, "web1", &r, &v, f->err, sizeof(f->err)),
			 -EPROTONOSUPPORT);
	assert_null(r);
	assert_int_equal(v, 0);
	expect_err(f, want);
	assert_int_equal(cas(f, "web1", OWNER("node1", 1, false), OWNER("node2", 0, false), &e,
			     &v),
			 -EPROTONOSUPPORT);
	assert_int_equal(e, 0);
	assert_int_equal(v, 0);
	assert_int_equal(confirm(f, "web1", OWNER("node1", 1, false)), -EPROTONOSUPPORT);
	{
		uint8_t *buf = NULL;
		size_t n = 0;

		assert_int_equal(sto_get(f->st, "vm/web1", &buf, &n, &v, f->err, sizeof(f->err)),
				 0);
		assert_int_equal(v, 1);
		free(buf);
	}
}

/* Decode @buf/@len as web1: must fail -EBADMSG saying @why. */
static void expect_corrupt(const uint8_t *buf, size_t len, const char *why)
{
	char err[256] = "";
	int rc = 0;

	assert_null(sto_vm_decode(buf, len, "web1", &rc, err, sizeof(err)));
	assert_int_equal(rc, -EBADMSG);
	expect_err_has(err, "vm web1: state record corrupt (");
	expect_err_has(err, why);
}

static void test_corrupt_frame_ebadmsg(void **state)
{
	struct fx *f = *state;
	struct rec x;
	size_t len = 0;
	uint8_t *frame, *other;
	Hca__VmRecord *r = NULL;
	uint64_t v = 0;

	rec_init(&x, "web1", "node1", 1, false, 0);
	frame = sto_vm_encode(&x.r, &len);
	expect_corrupt(NULL, 0, "truncated frame");
	expect_corrupt(frame, len - 1, "truncated frame");
	expect_corrupt(frame, WIRE_HDR_LEN - 1, "truncated frame");
	frame[len - 3] ^= 0x40;
	expect_corrupt(frame, len, "checksum");
	frame[len - 3] ^= 0x40;
	frame[0] ^= 1;
	expect_corrupt(frame, len, "magic");
	frame[0] ^= 1;
	/* A frame of another type is not a VM record. */
	other = wire_frame_pack(WIRE_T_VM_STATE, &x.r.base, &len);
	expect_corrupt(other, len, "unexpected");
	free(other);
	/* Through the store. */
	frame[len - 3] ^= 0x40;
	assert_int_equal(sto_put(f->st, "vm/web1", frame, len, 0, NULL, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(sto_vm_get(f->st, "web1", &r, &v, f->err, sizeof(f->err)), -EBADMSG);
	assert_null(r);
	expect_err_has(f->err, "vm web1: state record corrupt (");
	assert_int_equal(cas(f, "web1", OWNER("node1", 1, false), OWNER("node1", 1, true), NULL,
			     NULL),
			 -EBADMSG);
	free(frame);
}

static void test_wrong_name_ebadmsg(void **state)
{
	struct fx *f = *state;
	struct rec x;
	size_t len = 0;
	uint8_t *frame;
	Hca__VmRecord *r = NULL;
	uint64_t v = 0;

	rec_init(&x, "web2", "node1", 1, false, 0);
	frame = sto_vm_encode(&x.r, &len);
	expect_corrupt(frame, len, "names vm 'web2'");
	free(frame);
	x.r.spec = NULL;
	frame = sto_vm_encode(&x.r, &len);
	expect_corrupt(frame, len, "no spec");
	free(frame);
	/* A record under vm/web1 that names web2 (copied by hand, say). */
	x.r.spec = &x.s;
	put_raw(f, "web1", &x.r);
	assert_int_equal(sto_vm_get(f->st, "web1", &r, &v, f->err, sizeof(f->err)), -EBADMSG);
	expect_err(f, "vm web1: state record corrupt (names vm 'web2')");
}

static void test_put_refuses_foreign_spec(void **state)
{
	struct fx *f = *state;
	struct rec x;
	Hca__VmRecord *r = NULL;
	uint64_t v = 3;

	rec_init(&x, "web2", "node1", 1, false, 0);
	assert_int_equal(sto_vm_put(f->st, "web1", &x.r, 0, &v, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_int_equal(v, 0);
	x.r.spec = NULL;
	assert_int_equal(sto_vm_put(f->st, "web1", &x.r, 0, &v, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_int_equal(sto_vm_get(f->st, "web1", &r, &v, f->err, sizeof(f->err)), -ENOENT);
	expect_err(f, "vm web1: not defined");
}

static void test_put_is_cas(void **state)
{
	struct fx *f = *state;
	struct rec x;
	uint64_t v = 0;

	define(f, "web1", "node1", 0, false, 1);
	rec_init(&x, "web1", "node2", 0, false, 1);
	assert_int_equal(sto_vm_put(f->st, "web1", &x.r, 0, &v, f->err, sizeof(f->err)),
			 -EEXIST);
	assert_int_equal(sto_vm_put(f->st, "web1", &x.r, 2, &v, f->err, sizeof(f->err)),
			 -ECANCELED);
	assert_int_equal(sto_vm_put(f->st, "web1", &x.r, 1, &v, f->err, sizeof(f->err)), 0);
	assert_int_equal(v, 2);
	expect_owner(f, "web1", "node2", 0, false, 2);
}

/* ---- the owner compare-and-swap ---- */

static void test_cas_claim_keeps_epoch(void **state)
{
	struct fx *f = *state;
	uint64_t e = 0, v = 0;
	Hca__VmRecord *r;

	define(f, "web1", "node1", 3, false, 77);
	assert_int_equal(cas(f, "web1", OWNER_INC("node1", 3, false, 77), OWNER("node1", 99, true),
			     &e, &v),
			 0);
	assert_int_equal(e, 3);
	assert_int_equal(v, 2);
	expect_owner(f, "web1", "node1", 3, true, 2);
	/* Release: the same epoch again. */
	assert_int_equal(cas(f, "web1", OWNER("node1", 3, true), OWNER("node1", 0, false), &e, &v),
			 0);
	assert_int_equal(e, 3);
	assert_int_equal(v, 3);
	/* Nothing but the owner record changed. */
	r = get_ok(f, "web1", NULL);
	assert_int_equal(r->incarnation, 77);
	assert_int_equal(r->defined_at, 1700000000);
	assert_string_equal(r->spec->uuid, "7c9e6679-7425-40de-944b-e07fc1f90ae7");
	assert_int_equal(r->spec->memory_mib, 256);
	assert_int_equal(r->n_volumes, 1);
	assert_string_equal(r->volumes[0]->path, "/v/web1-root.qcow2");
	hca__vm_record__free_unpacked(r, NULL);
}

static void test_cas_move_bumps_epoch(void **state)
{
	struct fx *f = *state;
	uint64_t e = 0, v = 0;

	define(f, "web1", "node1", 3, false, 0);
	assert_int_equal(cas(f, "web1", OWNER("node1", 3, false), OWNER("node2", 3, false), &e,
			     &v),
			 0);
	assert_int_equal(e, 4);
	expect_owner(f, "web1", "node2", 4, false, 2);
	/* A move straight into a claim: the new owner, active, epoch + 1. */
	assert_int_equal(cas(f, "web1", OWNER("node2", 4, false), OWNER("node1", 0, true), &e,
			     &v),
			 0);
	assert_int_equal(e, 5);
	assert_int_equal(v, 3);
	expect_owner(f, "web1", "node1", 5, true, 3);
	/* The owner hands over a running VM (migration): expect says active. */
	assert_int_equal(cas(f, "web1", OWNER("node1", 5, true), OWNER("node2", 0, true), &e, &v),
			 0);
	expect_owner(f, "web1", "node2", 6, true, 4);
}

/* A shared-nothing migration into the pool: the owner and where the disk
 * lives change in one write, or nothing changes. */
static void test_cas_moving_volumes(void **state)
{
	struct fx *f = *state;
	struct sto_owner expect = { "node1", 3, true, 0 }, next = { "node2", 0, true, 0 };
	struct sto_vol_move mv = { "root", "rbd", "web1-root", "rbd:hca/web1-root",
				   HCA__DISK_FORMAT__DISK_FORMAT_RAW };
	struct sto_vol_move bad = { "nope", "rbd", "x", "rbd:hca/x",
				    HCA__DISK_FORMAT__DISK_FORMAT_RAW };
	uint64_t e = 0, v = 0;
	Hca__VmRecord *r;

	define(f, "web1", "node1", 3, true, 0);
	assert_int_equal(sto_owner_cas_moving(f->st, "web1", &expect, &next, &bad, 1, &e, &v,
					      f->err, sizeof(f->err)), -ENOENT);
	expect_err_has(f->err, "nope");
	expect_owner(f, "web1", "node1", 3, true, 1); /* nothing written */
	assert_int_equal(sto_owner_cas_moving(f->st, "web1", &expect, &next, &mv, 1, &e, &v,
					      f->err, sizeof(f->err)), 0);
	assert_int_equal(e, 4);
	r = get_ok(f, "web1", NULL);
	assert_string_equal(r->owner, "node2");
	assert_string_equal(r->volumes[0]->backend, "rbd");
	assert_string_equal(r->volumes[0]->path, "rbd:hca/web1-root");
	assert_int_equal(r->volumes[0]->format, HCA__DISK_FORMAT__DISK_FORMAT_RAW);
	assert_string_equal(r->spec->disks[0]->backend, "rbd");
	assert_int_equal(r->spec->disks[0]->format, HCA__DISK_FORMAT__DISK_FORMAT_RAW);
	assert_int_equal(r->spec->disks[0]->size_bytes, 64 << 20); /* the rest kept */
	hca__vm_record__free_unpacked(r, NULL);
}

static void test_cas_stale_owner(void **state)
{
	struct fx *f = *state;
	uint64_t e = 9, v = 9;

	define(f, "web1", "node2", 4, false, 0);
	assert_int_equal(cas(f, "web1", OWNER("node1", 3, false), OWNER("node3", 0, false), &e,
			     &v),
			 -ESTALE);
	expect_err(f, "vm web1: owner is now node2 (epoch 4), not node1 (epoch 3)");
	assert_int_equal(e, 0);
	assert_int_equal(v, 0);
	/* The right owner at an old epoch is as stale. */
	assert_int_equal(cas(f, "web1", OWNER("node2", 3, false), OWNER("node3", 0, false), &e,
			     &v),
			 -ESTALE);
	expect_err_has(f->err, "owner is now node2 (epoch 4), not node2 (epoch 3)");
	expect_owner(f, "web1", "node2", 4, false, 1);
}

/* Read active clear, but the owner claimed since: taking it must fail. */
static void test_cas_stale_active(void **state)
{
	struct fx *f = *state;

	define(f, "web1", "node1", 3, false, 0);
	assert_int_equal(cas(f, "web1", OWNER("node1", 3, false), OWNER("node1", 0, true), NULL,
			     NULL),
			 0);
	assert_int_equal(cas(f, "web1", OWNER("node1", 3, false), OWNER("node2", 0, false), NULL,
			     NULL),
			 -ESTALE);
	expect_err(f, "vm web1: owner is now node1 (epoch 3, active), not node1 (epoch 3)");
	expect_owner(f, "web1", "node1", 3, true, 2);
}

static void test_cas_incarnation_mismatch(void **state)
{
	struct fx *f = *state;

	define(f, "web1", "node1", 3, false, 77);
	assert_int_equal(cas(f, "web1", OWNER_INC("node1", 3, false, 78),
			     OWNER("node1", 0, true), NULL, NULL),
			 -ESTALE);
	expect_err(f, "vm web1: defined again meanwhile (incarnation 77, not 78)");
	expect_owner(f, "web1", "node1", 3, false, 1);
	assert_int_equal(confirm(f, "web1", OWNER_INC("node1", 3, false, 78)), -ESTALE);
	/* 0: not checked. */
	assert_int_equal(cas(f, "web1", OWNER("node1", 3, false), OWNER("node1", 0, true), NULL,
			     NULL),
			 0);
}

/* "" is the owner of a record without one, compared like any other. */
static void test_cas_empty_owner(void **state)
{
	struct fx *f = *state;
	uint64_t e = 0;

	define(f, "web1", "", 0, false, 0);
	assert_int_equal(cas(f, "web1", OWNER("node1", 0, false), OWNER("node1", 0, true), NULL,
			     NULL),
			 -ESTALE);
	expect_err(f, "vm web1: owner is now no node (epoch 0), not node1 (epoch 0)");
	assert_int_equal(cas(f, "web1", OWNER("", 0, false), OWNER("", 0, true), NULL, NULL),
			 -EINVAL);
	assert_int_equal(cas(f, "web1", OWNER("", 0, false), OWNER("node1", 0, true), &e, NULL),
			 0);
	assert_int_equal(e, 1);
	assert_int_equal(cas(f, "web1", OWNER("node1", 1, true), OWNER("node1", 0, false), NULL,
			     NULL),
			 0);
	/* Giving the VM up is a change of owner too. */
	assert_int_equal(cas(f, "web1", OWNER("node1", 1, false), OWNER("", 0, false), &e, NULL),
			 0);
	assert_int_equal(e, 2);
	expect_owner(f, "web1", "", 2, false, 4);
	/* NULL is not "". */
	assert_int_equal(cas(f, "web1", OWNER(NULL, 2, false), OWNER("node1", 0, false), NULL,
			     NULL),
			 -EINVAL);
	assert_int_equal(cas(f, "web1", OWNER("", 2, false), OWNER(NULL, 0, false), NULL, NULL),
			 -EINVAL);
	expect_owner(f, "web1", "", 2, false, 4);
}

static void test_cas_same_expect_twice(void **state)
{
	struct fx *f = *state;
	uint64_t e = 0;

	define(f, "web1", "node1", 3, false, 0);
	assert_int_equal(cas(f, "web1", OWNER("node1", 3, false), OWNER("node2", 0, false), &e,
			     NULL),
			 0);
	assert_int_equal(cas(f, "web1", OWNER("node1", 3, false), OWNER("node3", 0, false), &e,
			     NULL),
			 -ESTALE);
	expect_err_has(f->err, "owner is now node2 (epoch 4)");
	/* Even the very same change is reported done only once. */
	assert_int_equal(cas(f, "web1", OWNER("node1", 3, false), OWNER("node2", 0, false), &e,
			     NULL),
			 -ESTALE);
	expect_owner(f, "web1", "node2", 4, false, 2);
	/* And a same-owner claim: the second finds active set. */
	assert_int_equal(cas(f, "web1", OWNER("node2", 4, false), OWNER("node2", 0, true), NULL,
			     NULL),
			 0);
	assert_int_equal(cas(f, "web1", OWNER("node2", 4, false), OWNER("node2", 0, true), NULL,
			     NULL),
			 -ESTALE);
}

/* Two threads, one expect, one barrier; per round exactly one may win. */
struct duel {
	struct fx *f;
	pthread_barrier_t *go;
	struct sto_owner expect;
	const char *to;
	unsigned delay_us; /* so some rounds are lost to -ESTALE, not -ECANCELED */
	int rc;
	char err[256];
};

static void *duel_fn(void *arg)
{
	struct duel *d = arg;
	struct sto_owner next = OWNER(d->to, 0, false);

	pthread_barrier_wait(d->go);
	if (d->delay_us)
		usleep(d->delay_us);
	d->rc = sto_owner_cas(d->f->st, "web1", &d->expect, &next, NULL, NULL, d->err,
			      sizeof(d->err));
	return NULL;
}

static void test_cas_threads_same_expect(void **state)
{
	struct fx *f = *state;
	const char *nodes[] = { "node1", "node2", "node3" };
	pthread_barrier_t go;
	unsigned cancelled = 0, stale = 0;

	define(f, "web1", "node1", 0, false, 0);
	assert_int_equal(pthread_barrier_init(&go, NULL, 2), 0);
	for (unsigned round = 0; round < 30; round++) {
		struct duel d[2];
		pthread_t t[2];
		Hca__VmRecord *r = get_ok(f, "web1", NULL);
		struct sto_owner cur = OWNER(r->owner, r->owner_epoch, false);
		const char *winner;
		int i = 0;

		assert_int_equal(r->owner_epoch, round);
		/* The two other nodes both move it away from its owner. */
		for (size_t k = 0; k < ARRAY_SIZE(nodes); k++)
			if (strcmp(nodes[k], r->owner) != 0)
				d[i++] = (struct duel){ .f = f, .go = &go, .expect = cur,
							.to = nodes[k] };
		assert_int_equal(i, 2);
		d[round % 2].delay_us = (round % 3) * 2000;
		for (i = 0; i < 2; i++)
			assert_int_equal(pthread_create(&t[i], NULL, duel_fn, &d[i]), 0);
		for (i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		if ((d[0].rc == 0) == (d[1].rc == 0))
			fail_msg("round %u: rc %d (%s) and %d (%s)", round, d[0].rc, d[0].err,
				 d[1].rc, d[1].err);
		for (i = 0; i < 2; i++)
			if (d[i].rc != 0 && d[i].rc != -ESTALE && d[i].rc != -ECANCELED)
				fail_msg("round %u: loser rc %d (%s)", round, d[i].rc, d[i].err);
		cancelled += d[0].rc == -ECANCELED || d[1].rc == -ECANCELED;
		stale += d[0].rc == -ESTALE || d[1].rc == -ESTALE;
		winner = d[0].rc == 0 ? d[0].to : d[1].to;
		hca__vm_record__free_unpacked(r, NULL);
		expect_owner(f, "web1", winner, round + 1, false, round + 2);
	}
	pthread_barrier_destroy(&go);
	print_message("# losers: %u -ECANCELED (between read and write), %u -ESTALE\n", cancelled,
		      stale);
}

static void test_cas_enoent_after_delete(void **state)
{
	struct fx *f = *state;
	uint64_t e = 9, v = 9;

	assert_int_equal(cas(f, "web1", OWNER("node1", 0, false), OWNER("node1", 0, true), &e,
			     &v),
			 -ENOENT);
	expect_err(f, "vm web1: not defined");
	define(f, "web1", "node1", 0, false, 0);
	assert_int_equal(sto_del(f->st, "vm/web1", 1, f->err, sizeof(f->err)), 0);
	assert_int_equal(cas(f, "web1", OWNER("node1", 0, false), OWNER("node1", 0, true), &e,
			     &v),
			 -ENOENT);
	assert_int_equal(e, 0);
	assert_int_equal(v, 0);
	assert_int_equal(confirm(f, "web1", OWNER("node1", 0, false)), -ENOENT);
}

static void test_confirm(void **state)
{
	struct fx *f = *state;

	define(f, "web1", "node1", 3, false, 77);
	assert_int_equal(confirm(f, "web1", OWNER_INC("node1", 3, false, 77)), 0);
	/* Asked for active, not set. */
	assert_int_equal(confirm(f, "web1", OWNER("node1", 3, true)), -ESTALE);
	expect_err(f, "vm web1: owner is now node1 (epoch 3), not node1 (epoch 3, active)");
	assert_int_equal(cas(f, "web1", OWNER("node1", 3, false), OWNER("node1", 0, true), NULL,
			     NULL),
			 0);
	assert_int_equal(confirm(f, "web1", OWNER_INC("node1", 3, true, 77)), 0);
	/* Not asked for active: not looked at. */
	assert_int_equal(confirm(f, "web1", OWNER("node1", 3, false)), 0);
	assert_int_equal(confirm(f, "web1", OWNER("node1", 2, true)), -ESTALE);
	assert_int_equal(confirm(f, "web1", OWNER("node2", 3, true)), -ESTALE);
	expect_err_has(f->err, "owner is now node1 (epoch 3, active)");
	/* Released and moved: the launch it guarded must not happen. */
	assert_int_equal(cas(f, "web1", OWNER("node1", 3, true), OWNER("node1", 0, false), NULL,
			     NULL),
			 0);
	assert_int_equal(cas(f, "web1", OWNER("node1", 3, false), OWNER("node2", 0, false), NULL,
			     NULL),
			 0);
	assert_int_equal(confirm(f, "web1", OWNER("node1", 3, true)), -ESTALE);
	expect_err(f, "vm web1: owner is now node2 (epoch 4), not node1 (epoch 3, active)");
	assert_int_equal(confirm(f, "web1", OWNER("node2", 4, false)), 0);
	assert_int_equal(confirm(f, "web1", OWNER(NULL, 4, false)), -EINVAL);
}

/* Field 99, varint 42: what a newer hca of the same format might add. */
static const uint8_t unknown_field[] = { 0x98, 0x06, 0x2a };

static void test_cas_keeps_unknown_fields(void **state)
{
	struct fx *f = *state;
	struct rec x;
	size_t plen, len = WIRE_HDR_LEN;
	uint8_t *frame, *buf = NULL;
	uint64_t v = 0;

	rec_init(&x, "web1", "node1", 3, false, 77);
	x.r.format = STO_VM_FORMAT;
	plen = hca__vm_record__get_packed_size(&x.r);
	frame = malloc(WIRE_HDR_LEN + plen + sizeof(unknown_field));
	assert_non_null(frame);
	hca__vm_record__pack(&x.r, frame + WIRE_HDR_LEN);
	memcpy(frame + WIRE_HDR_LEN + plen, unknown_field, sizeof(unknown_field));
	plen += sizeof(unknown_field);
	assert_int_equal(wire_hdr_encode(frame, WIRE_T_VM_RECORD, frame + WIRE_HDR_LEN, plen), 0);
	len += plen;
	assert_int_equal(sto_put(f->st, "vm/web1", frame, len, 0, NULL, f->err, sizeof(f->err)),
			 0);
	free(frame);
	assert_int_equal(cas(f, "web1", OWNER("node1", 3, false), OWNER("node2", 0, true), NULL,
			     NULL),
			 0);
	assert_int_equal(sto_get(f->st, "vm/web1", &buf, &len, &v, f->err, sizeof(f->err)), 0);
	assert_non_null(memmem(buf + WIRE_HDR_LEN, len - WIRE_HDR_LEN, unknown_field,
			       sizeof(unknown_field)));
	free(buf);
	expect_owner(f, "web1", "node2", 4, true, 2);
}

/*
 * Two nodes take the VM in turns as the protocol says: read; if the other
 * holds it active, look again; else CAS from what was read to itself with
 * active set, run, clear active. At no time may both hold it.
 */
#define RACE_ROUNDS 20
#define RACE_MAX_TRIES 200000

struct racer {
	struct fx *f;
	const char *node;
	atomic_int *holders;
	atomic_int *max_holders;
	unsigned won, moves, tries;
	unsigned seed;
	unsigned put_us; /* one store write, measured: the delays scale with it */
	int fail_rc;
	char fail[256];
};

static int race_claim(struct racer *r, uint64_t *epoch)
{
	struct sto_owner expect, next = OWNER(r->node, 0, true);
	Hca__VmRecord *rec = NULL;
	uint64_t v = 0;
	int rc = sto_vm_get(r->f->st, "web1", &rec, &v, r->fail, sizeof(r->fail));

	if (rc < 0)
		return rc;
	expect = OWNER_INC(rec->owner, rec->owner_epoch, rec->active, rec->incarnation);
	if (rec->active) {
		rc = -EBUSY; /* the other node holds it: look again */
	} else {
		/* Deciding takes time; the other node may claim meanwhile. */
		usleep((unsigned)rand_r(&r->seed) % (2 * r->put_us));
		rc = sto_owner_cas(r->f->st, "web1", &expect, &next, epoch, NULL, r->fail,
				   sizeof(r->fail));
		r->moves += rc == 0 && strcmp(rec->owner, r->node) != 0;
	}
	hca__vm_record__free_unpacked(rec, NULL);
	return rc;
}

/* The slowest of a few writes (at least 100 us), so the race's windows are
 * wide enough to matter on a slow disk and short on a fast one. */
static unsigned put_latency_us(struct fx *f)
{
	uint64_t v = 0, worst = 100;

	for (int i = 0; i < 3; i++) {
		struct timespec a, b;
		uint64_t us;

		clock_gettime(CLOCK_MONOTONIC, &a);
		assert_int_equal(sto_put(f->st, "probe/x", "x", 1, v, &v, f->err, sizeof(f->err)), 0);
		clock_gettime(CLOCK_MONOTONIC, &b);
		us = (uint64_t)(b.tv_sec - a.tv_sec) * 1000000 + (uint64_t)(b.tv_nsec - a.tv_nsec) / 1000;
		worst = us > worst ? us : worst;
	}
	return worst > 100000 ? 100000 : (unsigned)worst;
}

static void *racer_fn(void *arg)
{
	struct racer *r = arg;

	while (r->won < RACE_ROUNDS && r->tries++ < RACE_MAX_TRIES) {
		uint64_t epoch = 0;
		int rc = race_claim(r, &epoch), n;

		if (rc == -EBUSY || rc == -ESTALE || rc == -ECANCELED) {
			sched_yield();
			continue;
		}
		if (rc < 0) {
			r->fail_rc = rc;
			return NULL;
		}
		n = atomic_fetch_add(r->holders, 1) + 1;
		for (int m = atomic_load(r->max_holders);
		     n > m && !atomic_compare_exchange_weak(r->max_holders, &m, n);)
			;
		usleep(3 * r->put_us / 2); /* "run": time for the other node to try */
		atomic_fetch_sub(r->holders, 1);
		{
			struct sto_owner held = OWNER(r->node, epoch, true);
			struct sto_owner off = OWNER(r->node, 0, false);

			rc = sto_owner_cas(r->f->st, "web1", &held, &off, NULL, NULL, r->fail,
					   sizeof(r->fail));
		}
		if (rc < 0) {
			/* Nobody may take an active VM: release must win. */
			r->fail_rc = rc;
			return NULL;
		}
		r->won++;
		sched_yield();
	}
	return NULL;
}

static void test_race_never_two_active(void **state)
{
	struct fx *f = *state;
	atomic_int holders = 0, max_holders = 0;
	struct racer r[2] = {
		{ .f = f, .node = "node1", .holders = &holders, .max_holders = &max_holders,
		  .seed = 1 },
		{ .f = f, .node = "node2", .holders = &holders, .max_holders = &max_holders,
		  .seed = 2 },
	};
	pthread_t t[2];
	Hca__VmRecord *rec;
	unsigned put_us = put_latency_us(f);

	define(f, "web1", "node1", 0, false, 5);
	r[0].put_us = r[1].put_us = put_us;
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, racer_fn, &r[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	if (atomic_load(&max_holders) != 1)
		fail_msg("%d nodes held vm web1 active at once", atomic_load(&max_holders));
	for (int i = 0; i < 2; i++) {
		if (r[i].fail_rc)
			fail_msg("%s: rc %d: %s", r[i].node, r[i].fail_rc, r[i].fail);
		assert_int_equal(r[i].won, RACE_ROUNDS);
	}
	/* Every move bumped the epoch once, none was lost or doubled. */
	rec = get_ok(f, "web1", NULL);
	assert_int_equal(rec->owner_epoch, r[0].moves + r[1].moves);
	assert_false(rec->active);
	assert_int_equal(rec->incarnation, 5);
	hca__vm_record__free_unpacked(rec, NULL);
	print_message("# %u moves in %u + %u tries, one write %u us\n", r[0].moves + r[1].moves,
		      r[0].tries, r[1].tries, put_us);
}

#define T(t) cmocka_unit_test_setup_teardown(t, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_key),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_copy_is_deep),
		cmocka_unit_test(test_golden_v2),
		cmocka_unit_test(test_golden_v1_reads_as_format_1),
		T(test_format0_stored_reads_as_1),
		T(test_newer_format_refused),
		T(test_corrupt_frame_ebadmsg),
		T(test_wrong_name_ebadmsg),
		T(test_put_refuses_foreign_spec),
		T(test_put_is_cas),
		T(test_cas_claim_keeps_epoch),
		T(test_cas_move_bumps_epoch),
		T(test_cas_moving_volumes),
		T(test_cas_stale_owner),
		T(test_cas_stale_active),
		T(test_cas_incarnation_mismatch),
		T(test_cas_empty_owner),
		T(test_cas_same_expect_twice),
		T(test_cas_threads_same_expect),
		T(test_cas_enoent_after_delete),
		T(test_confirm),
		T(test_cas_keeps_unknown_fields),
		T(test_race_never_two_active),
	};

	return cmocka_run_group_tests_name("sto_vm", tests, NULL, NULL);
}
