/*
 * test_hv_spec: what hv_spec_check() refuses, with and without looking at
 * files. Specs from the shared store come from protobuf-c, which keeps what
 * this build does not know (an enum value from a newer peer, 17 disks from a
 * broken one) as is; each refusal must be one line naming the VM and the field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hypervisor/hv.h"

#define UUID "7c9e6679-7425-40de-944b-e07fc1f90ae7"
#define NDISKS (HV_MAX_DISKS + 1)
#define NNICS (HV_MAX_NICS + 1)

/* A spec the tests bend one field at a time; valid as it starts. */
struct fx {
	Hca__VmSpec s;
	Hca__BootSpec boot;
	Hca__DiskSpec d[NDISKS];
	Hca__DiskSpec *dp[NDISKS];
	Hca__NicSpec n[NNICS];
	Hca__NicSpec *np[NNICS];
	char names[NDISKS][8];
	char image[64];   /* a readable qcow2 "image" (any file will do) */
	struct hv_limits l;
	char err[256];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	int fd;

	assert_non_null(f);
	hca__vm_spec__init(&f->s);
	hca__boot_spec__init(&f->boot);
	for (size_t i = 0; i < NDISKS; i++) {
		hca__disk_spec__init(&f->d[i]);
		snprintf(f->names[i], sizeof(f->names[i]), "d%zu", i);
		f->d[i].name = f->names[i];
		f->d[i].size_bytes = 64 << 20;
		f->dp[i] = &f->d[i];
	}
	for (size_t i = 0; i < NNICS; i++) {
		hca__nic_spec__init(&f->n[i]);
		f->np[i] = &f->n[i];
	}
	snprintf(f->image, sizeof(f->image), "/tmp/hca-test-spec-XXXXXX");
	fd = mkstemp(f->image);
	assert_true(fd >= 0);
	close(fd);
	f->s.name = "web1";
	f->s.uuid = UUID;
	f->s.vcpus = 2;
	f->s.memory_mib = 512;
	f->s.disks = f->dp;
	f->s.n_disks = 2;
	f->s.nics = f->np;
	f->s.n_nics = 1;
	f->s.boot = &f->boot;
	f->d[1].path = f->image; /* d0 created, d1 attached */
	f->l.max_vcpus = 8;
	f->l.max_memory_mib = 4096;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	unlink(f->image);
	free(f);
	return 0;
}

static void assert_ok(struct fx *f, unsigned flags)
{
	int rc = hv_spec_check(&f->s, &f->l, flags, f->err, sizeof(f->err));

	if (rc != 0)
		fail_msg("refused: %s", f->err);
}

/* Refused with one line that names the VM and contains @field. */
static void assert_refused(struct fx *f, unsigned flags, const char *field)
{
	assert_int_equal(hv_spec_check(&f->s, &f->l, flags, f->err, sizeof(f->err)), -EINVAL);
	if (strncmp(f->err, "vm web1: ", 9) || !strstr(f->err, field))
		fail_msg("message does not name the VM and '%s': %s", field, f->err);
	assert_null(strchr(f->err, '\n'));
}

static void valid_spec_passes(void **state)
{
	struct fx *f = *state;

	assert_ok(f, 0);
	assert_ok(f, HV_CHECK_FILES);
	assert_int_equal(hv_spec_validate(&f->s, &f->l, f->err, sizeof(f->err)), 0);
}

static void files_checked_only_when_asked(void **state)
{
	struct fx *f = *state;

	/* A store record names files on the node that runs the VM. */
	f->d[1].path = "/nonexistent/hca/img.qcow2";
	assert_ok(f, 0);
	assert_refused(f, HV_CHECK_FILES, "/nonexistent/hca/img.qcow2");
	assert_int_equal(hv_spec_validate(&f->s, &f->l, f->err, sizeof(f->err)), -EINVAL);
	f->d[1].path = f->image;
	f->boot.kernel = "/nonexistent/hca/vmlinux";
	assert_ok(f, 0);
	assert_refused(f, HV_CHECK_FILES, "kernel");
	/* Shape rules hold without files too. */
	f->boot.kernel = "relative/vmlinux";
	assert_refused(f, 0, "kernel path");
}

static void too_many_disks(void **state)
{
	struct fx *f = *state;

	f->s.n_disks = HV_MAX_DISKS;
	f->d[1].path = "";
	assert_ok(f, 0);
	f->s.n_disks = HV_MAX_DISKS + 1;
	assert_refused(f, 0, "disks: 17, at most 16");
}

static void too_many_nics(void **state)
{
	struct fx *f = *state;

	f->s.n_nics = HV_MAX_NICS;
	assert_ok(f, 0);
	f->s.n_nics = HV_MAX_NICS + 1;
	assert_refused(f, 0, "nics: 9, at most 8");
}

static void unknown_disk_format(void **state)
{
	struct fx *f = *state;

	f->d[0].format = (Hca__DiskFormat)7;
	assert_refused(f, 0, "disk d0: unknown format 7");
}

static void unknown_nic_mode(void **state)
{
	struct fx *f = *state;

	f->n[0].mode = (Hca__NicMode)5;
	assert_refused(f, 0, "nic 0: unknown mode 5");
}

/* What protobuf-c does with a value this build does not know: keeps it. */
static void unknown_enum_survives_decoding(void **state)
{
	struct fx *f = *state;
	Hca__VmSpec *back;
	uint8_t *buf;
	size_t len;

	f->d[0].format = (Hca__DiskFormat)9;
	len = hca__vm_spec__get_packed_size(&f->s);
	buf = malloc(len);
	assert_non_null(buf);
	hca__vm_spec__pack(&f->s, buf);
	back = hca__vm_spec__unpack(NULL, len, buf);
	free(buf);
	assert_non_null(back);
	assert_int_equal(back->disks[0]->format, 9);
	assert_int_equal(hv_spec_check(back, &f->l, 0, f->err, sizeof(f->err)), -EINVAL);
	assert_non_null(strstr(f->err, "vm web1: disk d0: unknown format 9"));
	hca__vm_spec__free_unpacked(back, NULL);
}

static void backing_only_on_attached_qcow2(void **state)
{
	struct fx *f = *state;

	f->d[1].backing = true; /* attached qcow2: fine */
	assert_ok(f, HV_CHECK_FILES);
	f->d[1].format = HCA__DISK_FORMAT__DISK_FORMAT_RAW;
	assert_refused(f, 0, "disk d1: backing");
	f->d[1].format = HCA__DISK_FORMAT__DISK_FORMAT_QCOW2;
	f->d[1].backing = false;
	f->d[0].backing = true; /* a created volume has no chain to open */
	assert_refused(f, 0, "disk d0: backing");
}

static void uuid_shape(void **state)
{
	struct fx *f = *state;
	static const char *const bad[] = {
		"7c9e6679-7425-40de-944b-e07fc1f90ae",	 /* short */
		"7c9e6679-7425-40de-944b-e07fc1f90ae77", /* long */
		"7c9e6679x7425-40de-944b-e07fc1f90ae7",	 /* dash */
		"7c9e6679-7425-40de-944b-e07fc1f90aeg",	 /* hex */
		" ",
	};

	f->s.uuid = ""; /* assigned at define */
	assert_ok(f, 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f->s.uuid = (char *)bad[i];
		assert_refused(f, 0, "uuid");
	}
}

static void duplicate_disk_names(void **state)
{
	struct fx *f = *state;

	f->d[1].name = "d0";
	assert_refused(f, 0, "disk name 'd0' used twice");
}

static void one_line_whatever_the_record_holds(void **state)
{
	struct fx *f = *state;
	char small[16];

	f->d[0].name = "bad\nname";
	assert_refused(f, 0, "disk 0: invalid name 'bad?name'");
	/* A short buffer is cut, and terminated. */
	assert_int_equal(hv_spec_check(&f->s, &f->l, 0, small, sizeof(small)), -EINVAL);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	f->s.name = "";
	assert_int_equal(hv_spec_check(&f->s, &f->l, 0, f->err, sizeof(f->err)), -EINVAL);
	assert_non_null(strstr(f->err, "vm (unnamed): invalid name"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
		T(valid_spec_passes),
		T(files_checked_only_when_asked),
		T(too_many_disks),
		T(too_many_nics),
		T(unknown_disk_format),
		T(unknown_nic_mode),
		T(unknown_enum_survives_decoding),
		T(backing_only_on_attached_qcow2),
		T(uuid_shape),
		T(duplicate_disk_names),
		T(one_line_whatever_the_record_holds),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
