/* QEMU command lines generated from specs, pinned by golden files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hypervisor/hv.h"
#include "tests/unit/util_golden.h"

#define UUID "7c9e6679-7425-40de-944b-e07fc1f90ae7"

static struct hv_paths paths;

static char *argv_text(const struct hv_argv *a)
{
	size_t len = 1;
	char *s, *o;

	for (size_t i = 0; i < a->n; i++)
		len += strlen(a->v[i]) + 1;
	s = o = malloc(len);
	for (size_t i = 0; i < a->n; i++)
		o += sprintf(o, "%s\n", a->v[i]);
	*o = '\0';
	return s;
}

static void check_golden_ctx(const char *name, const Hca__VmSpec *s,
			     const struct hv_argv_ctx *c)
{
	struct hv_argv a;
	char *text;

	assert_int_equal(hv_argv_build(s, c, &a), 0);
	assert_null(a.v[a.n]);
	text = argv_text(&a);
	assert_int_equal(golden_check(name, text), 0);
	free(text);
	hv_argv_free(&a);
}

static void check_golden(const char *name, const Hca__VmSpec *s, Hca__Accel accel,
			 const struct hv_disk *disks)
{
	struct hv_argv_ctx c = {
		.qemu = "/usr/bin/qemu-system-x86_64", .accel = accel, .paths = &paths,
		.disks = disks,
	};

	check_golden_ctx(name, s, &c);
}

static void kernel_boot_tcg(void **state)
{
	Hca__DiskSpec d = HCA__DISK_SPEC__INIT;
	Hca__DiskSpec *dp[] = { &d };
	Hca__NicSpec n = HCA__NIC_SPEC__INIT;
	Hca__NicSpec *np[] = { &n };
	Hca__BootSpec b = HCA__BOOT_SPEC__INIT;
	Hca__VmSpec s = HCA__VM_SPEC__INIT;
	struct hv_disk disks[] = { { "/var/lib/hca/volumes/web1-root.qcow2", 0, false, true } };

	d.name = "root";
	d.size_bytes = 64 << 20;
	b.kernel = "/guest/vmlinux";
	b.initrd = "/guest/initramfs.cpio";
	b.cmdline = "console=ttyS0 quiet hca.disk=/dev/vda";
	s.name = "web1";
	s.uuid = UUID;
	s.vcpus = 1;
	s.memory_mib = 128;
	s.n_disks = 1;
	s.disks = dp;
	s.n_nics = 1;
	s.nics = np;
	s.boot = &b;
	check_golden("argv_kernel_boot_tcg.argv", &s, HCA__ACCEL__ACCEL_TCG, disks);
}

static void disk_boot_kvm_bridge(void **state)
{
	Hca__DiskSpec d0 = HCA__DISK_SPEC__INIT, d1 = HCA__DISK_SPEC__INIT;
	Hca__DiskSpec *dp[] = { &d0, &d1 };
	Hca__NicSpec n0 = HCA__NIC_SPEC__INIT, n1 = HCA__NIC_SPEC__INIT;
	Hca__NicSpec *np[] = { &n0, &n1 };
	Hca__VmSpec s = HCA__VM_SPEC__INIT;
	struct hv_disk disks[] = {
		{ "/var/lib/hca/volumes/db1-os.qcow2", HCA__DISK_FORMAT__DISK_FORMAT_QCOW2, false, true },
		{ "/srv/images/base,v2.raw", HCA__DISK_FORMAT__DISK_FORMAT_RAW, true, false },
	};

	d0.name = "os";
	d0.size_bytes = 1 << 30;
	d1.name = "base";
	d1.path = "/srv/images/base,v2.raw";
	d1.format = HCA__DISK_FORMAT__DISK_FORMAT_RAW;
	d1.readonly = true;
	n0.mode = HCA__NIC_MODE__NIC_MODE_BRIDGE;
	n0.bridge = "br0";
	n0.mac = "52:54:00:12:34:56";
	n1.mode = HCA__NIC_MODE__NIC_MODE_BRIDGE;
	n1.bridge = "br1";
	s.name = "db1";
	s.uuid = UUID;
	s.vcpus = 4;
	s.memory_mib = 4096;
	s.n_disks = 2;
	s.disks = dp;
	s.n_nics = 2;
	s.nics = np;
	check_golden("argv_disk_boot_kvm_bridge.argv", &s, HCA__ACCEL__ACCEL_KVM, disks);
}

static void rbd_disk(void **state)
{
	Hca__DiskSpec d = HCA__DISK_SPEC__INIT;
	Hca__DiskSpec *dp[] = { &d };
	Hca__BootSpec b = HCA__BOOT_SPEC__INIT;
	Hca__VmSpec s = HCA__VM_SPEC__INIT;
	struct hv_disk disks[] = { { "rbd:hca/web1-root", HCA__DISK_FORMAT__DISK_FORMAT_RAW, false, false } };
	struct hv_argv_ctx c = {
		.qemu = "/usr/bin/qemu-system-x86_64", .accel = HCA__ACCEL__ACCEL_TCG,
		.paths = &paths, .disks = disks, .ceph_conf = "/etc/ceph/ceph.conf",
		.ceph_user = "admin",
	};
	struct hv_argv a;
	char *text;

	d.name = "root";
	d.size_bytes = 64 << 20;
	d.format = HCA__DISK_FORMAT__DISK_FORMAT_RAW;
	d.backend = "rbd";
	b.kernel = "/k";
	s.name = "web1";
	s.uuid = UUID;
	s.vcpus = 1;
	s.memory_mib = 128;
	s.n_disks = 1;
	s.disks = dp;
	s.boot = &b;
	assert_int_equal(hv_argv_build(&s, &c, &a), 0);
	text = argv_text(&a);
	assert_int_equal(golden_check("argv_rbd_disk.argv", text), 0);
	free(text);
	hv_argv_free(&a);
}

/* The destination of a migration: the same VM, waiting for its state. */
static void incoming_defer(void **state)
{
	Hca__DiskSpec d = HCA__DISK_SPEC__INIT;
	Hca__DiskSpec *dp[] = { &d };
	Hca__NicSpec n = HCA__NIC_SPEC__INIT;
	Hca__NicSpec *np[] = { &n };
	Hca__VmSpec s = HCA__VM_SPEC__INIT;
	struct hv_disk disks[] = { { "rbd:hca/web1-root", HCA__DISK_FORMAT__DISK_FORMAT_RAW, false, false } };
	struct hv_argv_ctx c = {
		.qemu = "/usr/bin/qemu-system-x86_64", .accel = HCA__ACCEL__ACCEL_KVM,
		.paths = &paths, .disks = disks, .ceph_conf = "/etc/ceph/ceph.conf",
		.ceph_user = "admin", .incoming = "defer",
	};

	d.name = "root";
	d.size_bytes = 1 << 30;
	d.format = HCA__DISK_FORMAT__DISK_FORMAT_RAW;
	d.backend = "rbd";
	s.name = "web1";
	s.uuid = UUID;
	s.vcpus = 2;
	s.memory_mib = 1024;
	s.n_disks = 1;
	s.disks = dp;
	s.n_nics = 1;
	s.nics = np;
	check_golden_ctx("argv_incoming_defer.argv", &s, &c);
}

/*
 * Attached qcow2 images open without the backing chain their header names,
 * unless the spec asks for it; a created qcow2 volume and an attached raw
 * image are unchanged.
 */
static void attached_qcow2_backing(void **state)
{
	Hca__DiskSpec d[4] = { HCA__DISK_SPEC__INIT, HCA__DISK_SPEC__INIT,
			       HCA__DISK_SPEC__INIT, HCA__DISK_SPEC__INIT };
	Hca__DiskSpec *dp[] = { &d[0], &d[1], &d[2], &d[3] };
	Hca__BootSpec b = HCA__BOOT_SPEC__INIT;
	Hca__VmSpec s = HCA__VM_SPEC__INIT;
	struct hv_disk disks[] = {
		{ "/var/lib/hca/volumes/app1-root.qcow2", HCA__DISK_FORMAT__DISK_FORMAT_QCOW2, false, true },
		{ "/srv/images/alone.qcow2", HCA__DISK_FORMAT__DISK_FORMAT_QCOW2, false, false },
		{ "/srv/images/overlay.qcow2", HCA__DISK_FORMAT__DISK_FORMAT_QCOW2, true, false },
		{ "/srv/images/data.raw", HCA__DISK_FORMAT__DISK_FORMAT_RAW, false, false },
	};

	d[0].name = "root";
	d[0].size_bytes = 1 << 30;
	d[1].name = "alone";
	d[1].path = "/srv/images/alone.qcow2";
	d[2].name = "overlay";
	d[2].path = "/srv/images/overlay.qcow2";
	d[2].readonly = true;
	d[2].backing = true;
	d[3].name = "data";
	d[3].path = "/srv/images/data.raw";
	d[3].format = HCA__DISK_FORMAT__DISK_FORMAT_RAW;
	b.kernel = "/guest/vmlinux";
	s.name = "app1";
	s.uuid = UUID;
	s.vcpus = 1;
	s.memory_mib = 256;
	s.n_disks = 4;
	s.disks = dp;
	s.boot = &b;
	check_golden("argv_attached_qcow2.argv", &s, HCA__ACCEL__ACCEL_TCG, disks);
}

static void same_spec_same_argv(void **state)
{
	Hca__BootSpec b = HCA__BOOT_SPEC__INIT;
	Hca__VmSpec s = HCA__VM_SPEC__INIT;
	struct hv_argv_ctx c = { .qemu = "/q", .accel = HCA__ACCEL__ACCEL_TCG, .paths = &paths };
	struct hv_argv a1, a2;
	char *t1, *t2;

	b.kernel = "/k";
	s.name = "x";
	s.uuid = UUID;
	s.vcpus = 1;
	s.memory_mib = 64;
	s.boot = &b;
	assert_int_equal(hv_argv_build(&s, &c, &a1), 0);
	assert_int_equal(hv_argv_build(&s, &c, &a2), 0);
	t1 = argv_text(&a1);
	t2 = argv_text(&a2);
	assert_string_equal(t1, t2);
	free(t1);
	free(t2);
	hv_argv_free(&a1);
	hv_argv_free(&a2);
}

static void socket_paths_bounded(void **state)
{
	struct hv_paths p;
	char longdir[120];

	memset(longdir, 'a', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = '\0';
	assert_int_equal(hv_paths_init(&p, longdir), -ENAMETOOLONG);
	assert_int_equal(hv_paths_init(&p, "/var/lib/hca/vm/web1"), 0);
	assert_string_equal(p.qmp, "/var/lib/hca/vm/web1/qmp.sock");
	assert_string_equal(p.console, "/var/lib/hca/vm/web1/console.sock");
}

static void macs_and_taps_stable(void **state)
{
	Hca__VmSpec s = HCA__VM_SPEC__INIT;
	char m1[18], m2[18], t[16];

	s.name = "web1";
	s.uuid = UUID;
	hv_nic_mac(&s, 0, m1);
	hv_nic_mac(&s, 1, m2);
	assert_string_not_equal(m1, m2);
	assert_memory_equal(m1, "52:54:00:", 9);
	hv_nic_tap(&s, 0, t);
	assert_true(strlen(t) <= 15);
	assert_memory_equal(t, "hca", 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(kernel_boot_tcg),
		cmocka_unit_test(disk_boot_kvm_bridge),
		cmocka_unit_test(rbd_disk),
		cmocka_unit_test(incoming_defer),
		cmocka_unit_test(attached_qcow2_backing),
		cmocka_unit_test(same_spec_same_argv),
		cmocka_unit_test(socket_paths_bounded),
		cmocka_unit_test(macs_and_taps_stable),
	};

	hv_paths_init(&paths, "/var/lib/hca/vm/web1");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
