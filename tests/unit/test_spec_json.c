/*
 * test_spec_json: spec files and hcactl flags -> VmSpec, and VmStatus /
 * NodeInfo -> JSON (agent/spec_json.c). Every error case is its own test so
 * one wrong message does not hide the next.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/spec_json.h"
#include "hypervisor/hv.h"

#define MIB (1ull << 20)

/* The spec file of the README, with every field set. */
static char *read_fixture(const char *name)
{
	const char *top = getenv("HCA_TOP");
	char path[512];
	char *text = NULL;
	long len = 0;
	FILE *f = NULL;

	snprintf(path, sizeof(path), "%s/tests/unit/golden/%s", top ? top : ".", name);
	f = fopen(path, "r");
	if (!f)
		fail_msg("cannot open %s (run from the source tree or set HCA_TOP)", path);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	text = calloc(1, (size_t)len + 1);
	assert_non_null(text);
	assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	return text;
}

static Hca__VmSpec *parse_ok(const char *text)
{
	char err[256] = "";
	Hca__VmSpec *s = spec_from_json(text, err, sizeof(err));

	if (!s)
		fail_msg("unexpected error: %s", err);
	return s;
}

static void check_full(const Hca__VmSpec *s)
{
	assert_string_equal(s->name, "web1");
	assert_string_equal(s->uuid, "6f1c2b8e-3d4a-4e5f-8a9b-0c1d2e3f4a5b");
	assert_int_equal(s->vcpus, 2);
	assert_int_equal(s->memory_mib, 1024);
	assert_int_equal(s->n_disks, 2);
	assert_string_equal(s->disks[0]->name, "root");
	assert_int_equal(s->disks[0]->size_bytes, 64 * MIB);
	assert_int_equal(s->disks[0]->format, HCA__DISK_FORMAT__DISK_FORMAT_QCOW2);
	assert_string_equal(s->disks[0]->path, "");
	assert_false(s->disks[0]->readonly);
	assert_string_equal(s->disks[1]->name, "data");
	assert_int_equal(s->disks[1]->size_bytes, 0);
	assert_string_equal(s->disks[1]->path, "/abs/image.raw");
	assert_int_equal(s->disks[1]->format, HCA__DISK_FORMAT__DISK_FORMAT_RAW);
	assert_true(s->disks[1]->readonly);
	assert_int_equal(s->n_nics, 2);
	assert_int_equal(s->nics[0]->mode, HCA__NIC_MODE__NIC_MODE_USER);
	assert_string_equal(s->nics[0]->bridge, "");
	assert_string_equal(s->nics[0]->mac, "");
	assert_int_equal(s->nics[1]->mode, HCA__NIC_MODE__NIC_MODE_BRIDGE);
	assert_string_equal(s->nics[1]->bridge, "br0");
	assert_string_equal(s->nics[1]->mac, "52:54:00:12:34:56");
	assert_non_null(s->boot);
	assert_string_equal(s->boot->kernel, "/abs/vmlinux");
	assert_string_equal(s->boot->initrd, "/abs/initramfs");
	assert_string_equal(s->boot->cmdline, "console=ttyS0");
}

/* File -> spec -> JSON -> spec -> wire -> spec keeps every field. */
static void test_full_spec_round_trip(void **state)
{
	char *text = read_fixture("spec_full.json");
	Hca__VmSpec *a = parse_ok(text);
	json_t *j = NULL;
	char *dumped = NULL;
	Hca__VmSpec *b = NULL;
	Hca__VmSpec *c = NULL;
	uint8_t buf[4096];
	size_t len;

	check_full(a);
	j = spec_to_json(a);
	assert_non_null(j);
	dumped = json_dumps(j, JSON_COMPACT);
	b = parse_ok(dumped);
	check_full(b);
	/* The parsed spec must also be a well-formed message for the wire. */
	len = hca__vm_spec__get_packed_size(b);
	assert_true(len <= sizeof(buf));
	hca__vm_spec__pack(b, buf);
	c = hca__vm_spec__unpack(NULL, len, buf);
	assert_non_null(c);
	check_full(c);
	hca__vm_spec__free_unpacked(c, NULL);
	spec_free(b);
	free(dumped);
	json_decref(j);
	spec_free(a);
	free(text);
}

static void test_defaults(void **state)
{
	Hca__VmSpec *s = parse_ok("{\"name\": \"min\", \"uuid\": null,"
				  " \"disks\": [{\"size\": 1048576}, {\"path\": \"/i.img\"}],"
				  " \"nics\": [{}]}");

	assert_string_equal(s->uuid, "");
	assert_int_equal(s->vcpus, SPEC_DEFAULT_VCPUS);
	assert_int_equal(s->memory_mib, SPEC_DEFAULT_MEMORY_MIB);
	assert_string_equal(s->disks[0]->name, "disk0");
	assert_int_equal(s->disks[0]->size_bytes, MIB);
	assert_int_equal(s->disks[0]->format, HCA__DISK_FORMAT__DISK_FORMAT_QCOW2);
	assert_string_equal(s->disks[1]->name, "disk1");
	assert_int_equal(s->disks[1]->format, HCA__DISK_FORMAT__DISK_FORMAT_RAW);
	assert_int_equal(s->nics[0]->mode, HCA__NIC_MODE__NIC_MODE_USER);
	assert_null(s->boot);
	spec_free(s);
}

static void test_memory_forms(void **state)
{
	static const struct { const char *json; uint64_t mib; } cases[] = {
		{ "{\"name\": \"a\", \"memory_mib\": 256}", 256 },
		{ "{\"name\": \"a\", \"memory\": 134217728}", 128 },
		{ "{\"name\": \"a\", \"memory\": \"2GiB\"}", 2048 },
		{ "{\"name\": \"a\", \"memory\": \"1536M\"}", 1536 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		Hca__VmSpec *s = parse_ok(cases[i].json);
		assert_int_equal(s->memory_mib, cases[i].mib);
		spec_free(s);
	}
}

static void test_size_units(void **state)
{
	static const struct { const char *s; uint64_t bytes; } ok[] = {
		{ "4096", 4096 },
		{ "0", 0 },
		{ "1K", 1024 },
		{ "3KiB", 3072 },
		{ "512M", 512 * MIB },
		{ "64MiB", 64 * MIB },
		{ "1G", 1024 * MIB },
		{ "2GiB", 2048 * MIB },
		{ "2g", 2048 * MIB },
		{ "1T", 1024 * 1024 * MIB },
		{ "16777215T", 16777215ull << 40 },
		{ "18446744073709551615", UINT64_MAX },
	};
	static const char *const bad[] = { "", "12X", "-1G", "+1G", " 1G", "1G ", "1.5G",
					   "1MB", "0x10", "G", "1Gi", "1GiBs", "1 G" };
	static const char *const huge[] = { "16777216T", "18446744073709551616",
					    "99999999999999999999999G" };
	uint64_t v;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		v = 1;
		assert_int_equal(spec_parse_size(ok[i].s, &v), 0);
		assert_int_equal(v, ok[i].bytes);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (spec_parse_size(bad[i], &v) != -EINVAL)
			fail_msg("'%s' should be -EINVAL", bad[i]);
	}
	for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
		if (spec_parse_size(huge[i], &v) != -ERANGE)
			fail_msg("'%s' should be -ERANGE", huge[i]);
	}
}

/* ---- one test per parse error ---- */

struct err_case {
	const char *json;
	const char *msg;  /* the whole message */
	bool contains;    /* jansson's own text: only part of it is ours to pin */
};

static void test_error(void **state)
{
	const struct err_case *c = *state;
	char err[256] = "";
	Hca__VmSpec *s = spec_from_json(c->json, err, sizeof(err));

	if (s) {
		spec_free(s);
		fail_msg("parsed without error: %s", c->json);
	}
	assert_null(strchr(err, '\n'));
	if (c->contains)
		assert_non_null(strstr(err, c->msg));
	else
		assert_string_equal(err, c->msg);
}

#define VM "{\"name\": \"web1\", "
#define DISK(x) VM "\"disks\": [" x "]}"
#define NIC(x) VM "\"nics\": [" x "]}"
#define ERR(id, json, msg) \
	{ "error_" #id, test_error, NULL, NULL, &(struct err_case){ json, msg, false } }
#define ERR_LIKE(id, json, msg) \
	{ "error_" #id, test_error, NULL, NULL, &(struct err_case){ json, msg, true } }
#define SIZE_HELP "(bytes, or a number with K, M, G or T)"

/* ---- flags ---- */

static void test_disk_args(void **state)
{
	Hca__VmSpec *s = spec_new();
	char err[256] = "";

	assert_int_equal(spec_add_disk_arg(s, "64M", err, sizeof(err)), 0);
	assert_int_equal(spec_add_disk_arg(s, "name=data,size=2G,format=raw", err, sizeof(err)), 0);
	assert_int_equal(spec_add_disk_arg(s, "name=iso,path=img/x.iso,readonly", err, sizeof(err)), 0);
	assert_int_equal(spec_add_disk_arg(s, "path=/abs.qcow2,format=qcow2,readonly=false", err,
					   sizeof(err)), 0);
	assert_int_equal(s->n_disks, 4);
	assert_string_equal(s->disks[0]->name, "disk0");
	assert_int_equal(s->disks[0]->size_bytes, 64 * MIB);
	assert_int_equal(s->disks[0]->format, HCA__DISK_FORMAT__DISK_FORMAT_QCOW2);
	assert_string_equal(s->disks[1]->name, "data");
	assert_int_equal(s->disks[1]->size_bytes, 2048 * MIB);
	assert_int_equal(s->disks[1]->format, HCA__DISK_FORMAT__DISK_FORMAT_RAW);
	assert_string_equal(s->disks[2]->path, "img/x.iso");
	assert_int_equal(s->disks[2]->format, HCA__DISK_FORMAT__DISK_FORMAT_RAW);
	assert_true(s->disks[2]->readonly);
	assert_string_equal(s->disks[3]->name, "disk3");
	assert_int_equal(s->disks[3]->format, HCA__DISK_FORMAT__DISK_FORMAT_QCOW2);
	assert_false(s->disks[3]->readonly);
	spec_free(s);
}

static void test_rbd_disk_arg(void **state)
{
	Hca__VmSpec *s = spec_new();
	char err[256] = "";

	assert_int_equal(spec_add_disk_arg(s, "rbd:64M", err, sizeof(err)), 0);
	assert_int_equal(spec_add_disk_arg(s, "name=data,size=1G,backend=rbd", err, sizeof(err)), 0);
	assert_string_equal(s->disks[0]->backend, "rbd");
	assert_int_equal(s->disks[0]->size_bytes, 64 * MIB);
	assert_int_equal(s->disks[0]->format, HCA__DISK_FORMAT__DISK_FORMAT_RAW);
	assert_string_equal(s->disks[1]->backend, "rbd");
	assert_int_equal(s->disks[1]->format, HCA__DISK_FORMAT__DISK_FORMAT_RAW);
	spec_free(s);
}

static void test_disk_arg_errors(void **state)
{
	static const struct { const char *arg, *msg; } cases[] = {
		{ "12X", "invalid size '12X' " SIZE_HELP },
		{ "0", "size must be positive" },
		{ "name=data", "needs 'size' (a new volume) or 'path' (an existing image)" },
		{ "size=1G,path=/x", "give either 'size' (a new volume) or 'path' (an existing image), not both" },
		{ "sise=1G", "unknown key 'sise' (name, size, path, format, readonly, backend)" },
		{ "rbd:1G,format=qcow2", "rbd volumes are raw" },
		{ "1G,backend=ceph", "unknown backend (file or rbd)" },
		{ "path=/x,backend=rbd", "'backend' is for new volumes, not an existing image's 'path'" },
		{ "1G,size=2G", "'size' given twice" },
		{ "1G,format=vmdk", "unknown format 'vmdk' (qcow2 or raw)" },
		{ "1G,name=", "'name' needs a value (name=...)" },
		{ "1G,readonly=maybe", "invalid value 'maybe' for 'readonly' (true or false)" },
		{ "", "needs 'size' (a new volume) or 'path' (an existing image)" },
	};
	Hca__VmSpec *s = spec_new();
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		if (spec_add_disk_arg(s, cases[i].arg, err, sizeof(err)) == 0)
			fail_msg("--disk '%s' accepted", cases[i].arg);
		assert_string_equal(err, cases[i].msg);
		/* A rejected flag leaves nothing behind. */
		assert_int_equal(s->n_disks, 0);
	}
	spec_free(s);
}

static void test_nic_args(void **state)
{
	static const struct { const char *arg, *msg; } bad[] = {
		{ "tap", "expected 'user' or 'bridge=BRIDGE' first, got 'tap'" },
		{ "bridge", "expected 'user' or 'bridge=BRIDGE' first, got 'bridge'" },
		{ "mac=52:54:00:00:00:01", "expected 'user' or 'bridge=BRIDGE' first, got 'mac'" },
		{ "bridge=br0,model=virtio", "unknown key 'model' (only mac=)" },
		{ "user,mac=", "'mac' needs a value (mac=...)" },
		{ "user,mac=52:54:00:00:00:01,mac=52:54:00:00:00:02", "'mac' given twice" },
		{ "", "empty NIC (user or bridge=BRIDGE)" },
	};
	Hca__VmSpec *s = spec_new();
	char err[256] = "";

	assert_int_equal(spec_add_nic_arg(s, "user", err, sizeof(err)), 0);
	assert_int_equal(spec_add_nic_arg(s, "bridge=br0,mac=52:54:00:12:34:56", err, sizeof(err)), 0);
	assert_int_equal(s->n_nics, 2);
	assert_int_equal(s->nics[0]->mode, HCA__NIC_MODE__NIC_MODE_USER);
	assert_int_equal(s->nics[1]->mode, HCA__NIC_MODE__NIC_MODE_BRIDGE);
	assert_string_equal(s->nics[1]->bridge, "br0");
	assert_string_equal(s->nics[1]->mac, "52:54:00:12:34:56");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (spec_add_nic_arg(s, bad[i].arg, err, sizeof(err)) == 0)
			fail_msg("--nic '%s' accepted", bad[i].arg);
		assert_string_equal(err, bad[i].msg);
		assert_int_equal(s->n_nics, 2);
	}
	spec_free(s);
}

static void test_resolve_paths(void **state)
{
	Hca__VmSpec *s = parse_ok(VM "\"disks\": [{\"path\": \"img/a.raw\"}, {\"path\": \"/b.raw\"},"
				  " {\"size\": \"1G\"}],"
				  " \"boot\": {\"kernel\": \"./vmlinux\", \"initrd\": \"../initrd\"}}");

	assert_int_equal(spec_resolve_paths(s, "/home/op"), 0);
	assert_string_equal(s->disks[0]->path, "/home/op/img/a.raw");
	assert_string_equal(s->disks[1]->path, "/b.raw");
	assert_string_equal(s->disks[2]->path, "");
	assert_string_equal(s->boot->kernel, "/home/op/vmlinux");
	assert_string_equal(s->boot->initrd, "/home/op/../initrd");
	assert_string_equal(s->boot->cmdline, "");
	assert_int_equal(spec_resolve_paths(s, "/"), 0);
	assert_string_equal(s->boot->kernel, "/home/op/vmlinux");
	spec_free(s);
}

static void test_set_memory(void **state)
{
	Hca__VmSpec *s = spec_new();
	char err[128] = "";

	assert_int_equal(spec_set_memory(s, 3 * MIB, err, sizeof(err)), 0);
	assert_int_equal(s->memory_mib, 3);
	assert_int_equal(spec_set_memory(s, 0, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "memory must be positive");
	assert_int_equal(spec_set_memory(s, MIB + 512, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "1049088 bytes is not a whole number of MiB");
	assert_int_equal(s->memory_mib, 3);
	spec_free(s);
}

/* ---- status and node ---- */

static void assert_keys(json_t *o, const char *const *keys)
{
	size_t n = 0;

	for (; keys[n]; n++) {
		if (!json_object_get(o, keys[n]))
			fail_msg("key '%s' missing", keys[n]);
	}
	assert_int_equal(json_object_size(o), n);
}

static const char *str_at(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_string(v))
		fail_msg("'%s' is not a string", key);
	return json_string_value(v);
}

static long long int_at(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_integer(v))
		fail_msg("'%s' is not an integer", key);
	return json_integer_value(v);
}

static Hca__VmStatus *make_status(void)
{
	char *text = read_fixture("spec_full.json");
	Hca__VmStatus *st = calloc(1, sizeof(*st));
	Hca__VolumeRef *vol = calloc(1, sizeof(*vol));

	hca__vm_status__init(st);
	hca__volume_ref__init(vol);
	st->spec = parse_ok(text);
	free(text);
	assert_int_equal(spec_set_string(&st->spec->nics[1]->mac, ""), 0); /* derive it */
	st->state = HCA__VM_STATE__VM_STATE_RUNNING;
	st->reason = strdup("started by operator");
	st->pid = 4242;
	st->accel = HCA__ACCEL__ACCEL_TCG;
	st->started_at = 1700000000;
	st->console_path = strdup("/run/hca/web1/console.sock");
	st->serial_log = strdup("/var/lib/hca/web1/serial.log");
	st->qemu_log = strdup("/var/lib/hca/web1/qemu.log");
	st->owner = strdup("node1");
	st->version = 7;
	vol->disk = strdup("root");
	vol->backend = strdup("file");
	vol->path = strdup("/var/lib/hca/volumes/web1-root.qcow2");
	st->volumes = calloc(1, sizeof(*st->volumes));
	st->volumes[0] = vol;
	st->n_volumes = 1;
	return st;
}

static void test_status_to_json(void **state)
{
	static const char *const keys[] = { "name", "uuid", "state", "reason", "pid", "accel",
		"started_at", "vcpus", "memory_mib", "owner", "owner_epoch", "active", "job",
		"node", "version", "console", "serial_log", "qemu_log", "disks", "nics", "boot",
		NULL };
	static const char *const disk_keys[] = { "name", "size_bytes", "format", "path",
						 "readonly", "created", NULL };
	static const char *const nic_keys[] = { "mode", "bridge", "mac", NULL };
	Hca__VmStatus *st = make_status();
	json_t *o = status_to_json(st);
	json_t *d0, *d1, *n0, *n1, *boot;
	char mac[18];

	assert_non_null(o);
	assert_keys(o, keys);
	assert_string_equal(str_at(o, "name"), "web1");
	assert_string_equal(str_at(o, "uuid"), "6f1c2b8e-3d4a-4e5f-8a9b-0c1d2e3f4a5b");
	assert_string_equal(str_at(o, "state"), "running");
	assert_string_equal(str_at(o, "reason"), "started by operator");
	assert_int_equal(int_at(o, "pid"), 4242);
	assert_string_equal(str_at(o, "accel"), "tcg");
	assert_int_equal(int_at(o, "started_at"), 1700000000);
	assert_int_equal(int_at(o, "vcpus"), 2);
	assert_int_equal(int_at(o, "memory_mib"), 1024);
	assert_string_equal(str_at(o, "owner"), "node1");
	assert_int_equal(int_at(o, "version"), 7);
	assert_string_equal(str_at(o, "console"), "/run/hca/web1/console.sock");
	assert_string_equal(str_at(o, "serial_log"), "/var/lib/hca/web1/serial.log");
	assert_string_equal(str_at(o, "qemu_log"), "/var/lib/hca/web1/qemu.log");

	assert_int_equal(json_array_size(json_object_get(o, "disks")), 2);
	d0 = json_array_get(json_object_get(o, "disks"), 0);
	d1 = json_array_get(json_object_get(o, "disks"), 1);
	assert_keys(d0, disk_keys);
	assert_string_equal(str_at(d0, "name"), "root");
	assert_int_equal(int_at(d0, "size_bytes"), 64 * MIB);
	assert_string_equal(str_at(d0, "format"), "qcow2");
	assert_string_equal(str_at(d0, "path"), "/var/lib/hca/volumes/web1-root.qcow2");
	assert_true(json_is_true(json_object_get(d0, "created")));
	assert_true(json_is_false(json_object_get(d0, "readonly")));
	assert_string_equal(str_at(d1, "path"), "/abs/image.raw");
	assert_string_equal(str_at(d1, "format"), "raw");
	assert_true(json_is_false(json_object_get(d1, "created")));
	assert_true(json_is_true(json_object_get(d1, "readonly")));

	n0 = json_array_get(json_object_get(o, "nics"), 0);
	n1 = json_array_get(json_object_get(o, "nics"), 1);
	assert_keys(n0, nic_keys);
	assert_string_equal(str_at(n0, "mode"), "user");
	assert_string_equal(str_at(n0, "bridge"), "");
	hv_nic_mac(st->spec, 0, mac);
	assert_string_equal(str_at(n0, "mac"), mac);
	assert_string_equal(str_at(n1, "mode"), "bridge");
	assert_string_equal(str_at(n1, "bridge"), "br0");
	hv_nic_mac(st->spec, 1, mac);
	assert_string_equal(str_at(n1, "mac"), mac);
	assert_int_equal(strncmp(mac, "52:54:00:", 9), 0);

	boot = json_object_get(o, "boot");
	assert_string_equal(str_at(boot, "kernel"), "/abs/vmlinux");
	assert_string_equal(str_at(boot, "initrd"), "/abs/initramfs");
	assert_string_equal(str_at(boot, "cmdline"), "console=ttyS0");
	json_decref(o);
	hca__vm_status__free_unpacked(st, NULL);
}

/* A stopped VM without boot section or disks still has every key. */
static void test_status_to_json_sparse(void **state)
{
	Hca__VmStatus st = HCA__VM_STATUS__INIT;
	Hca__VmSpec *spec = parse_ok("{\"name\": \"idle\"}");
	json_t *o = NULL;

	st.spec = spec;
	o = status_to_json(&st);
	assert_non_null(o);
	assert_string_equal(str_at(o, "state"), "stopped");
	assert_string_equal(str_at(o, "accel"), "none");
	assert_int_equal(int_at(o, "pid"), 0);
	assert_int_equal(json_array_size(json_object_get(o, "disks")), 0);
	assert_string_equal(str_at(json_object_get(o, "boot"), "kernel"), "");
	json_decref(o);
	spec_free(spec);
}

static void test_node_to_json(void **state)
{
	static const char *const keys[] = { "node_name", "version", "qemu_version", "accel",
		"accel_reason", "state_dir", "vms", "running", NULL };
	Hca__NodeInfo n = HCA__NODE_INFO__INIT;
	json_t *o = NULL;

	n.node_name = "node1";
	n.version = "0.1.0";
	n.qemu_version = "QEMU emulator version 10.0.2";
	n.accel = HCA__ACCEL__ACCEL_KVM;
	n.accel_reason = "kvm: kvm_intel loaded";
	n.state_dir = "/var/lib/hca";
	n.vms = 3;
	n.running = 1;
	o = node_to_json(&n);
	assert_non_null(o);
	assert_keys(o, keys);
	assert_string_equal(str_at(o, "node_name"), "node1");
	assert_string_equal(str_at(o, "accel"), "kvm");
	assert_string_equal(str_at(o, "qemu_version"), "QEMU emulator version 10.0.2");
	assert_int_equal(int_at(o, "vms"), 3);
	assert_int_equal(int_at(o, "running"), 1);
	json_decref(o);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(test_full_spec_round_trip),
	cmocka_unit_test(test_defaults),
	cmocka_unit_test(test_memory_forms),
	cmocka_unit_test(test_size_units),
	ERR(unknown_key_top, VM "\"colour\": \"red\"}", "unknown key 'colour'"),
	ERR(unknown_key_disk, DISK("{\"size\": \"64M\"}, {\"name\": \"data\", \"sise\": \"1G\"}"),
	    "disks[1]: unknown key 'sise'"),
	ERR(unknown_key_nic, NIC("{\"mode\": \"user\", \"model\": \"e1000\"}"),
	    "nics[0]: unknown key 'model'"),
	ERR(unknown_key_boot, VM "\"boot\": {\"kernel\": \"/k\", \"append\": \"x\"}}",
	    "boot: unknown key 'append'"),
	ERR(missing_name, "{\"vcpus\": 1}", "missing key 'name'"),
	ERR(bad_name, "{\"name\": \"Web 1\"}",
	    "name: invalid VM name 'Web 1' (1-48 chars of a-z, 0-9, -, _, starting with a letter or digit)"),
	ERR(type_name, "{\"name\": 7}", "name: expected a string, got an integer"),
	ERR(type_vcpus, VM "\"vcpus\": \"2\"}", "vcpus: expected an integer, got a string"),
	ERR(type_vcpus_real, VM "\"vcpus\": 1.5}", "vcpus: expected an integer, got a fractional number"),
	ERR(type_disks, VM "\"disks\": {\"size\": \"1G\"}}", "disks: expected an array, got an object"),
	ERR(type_disk_item, DISK("\"64M\""), "disks[0]: expected an object, got a string"),
	ERR(type_size, DISK("{\"size\": [1]}"),
	    "disks[0].size: expected a size (bytes, or a string like \"64M\"), got an array"),
	ERR(type_readonly, DISK("{\"size\": \"1G\", \"readonly\": \"yes\"}"),
	    "disks[0].readonly: expected true or false, got a string"),
	ERR(type_boot, VM "\"boot\": \"/vmlinux\"}", "boot: expected an object, got a string"),
	ERR(type_cmdline, VM "\"boot\": {\"cmdline\": false}}",
	    "boot.cmdline: expected a string, got a boolean"),
	ERR(negative_size, DISK("{\"size\": -1}"), "disks[0].size: size must be positive, got -1"),
	ERR(negative_size_str, DISK("{\"size\": \"-1G\"}"),
	    "disks[0].size: invalid size '-1G' " SIZE_HELP),
	ERR(zero_size, DISK("{\"size\": 0}"), "disks[0].size: size must be positive, got 0"),
	ERR(zero_size_str, DISK("{\"size\": \"0M\"}"), "disks[0].size: size must be positive, got '0M'"),
	ERR(huge_size, DISK("{\"size\": \"16777216T\"}"), "disks[0].size: size '16777216T' is too large"),
	ERR_LIKE(huge_integer, DISK("{\"size\": 99999999999999999999}"), "too big integer"),
	ERR(bad_size_unit, DISK("{\"size\": \"12X\"}"), "disks[0].size: invalid size '12X' " SIZE_HELP),
	ERR(zero_memory, VM "\"memory\": 0}", "memory: size must be positive, got 0"),
	ERR(zero_memory_mib, VM "\"memory_mib\": 0}", "memory_mib: must be positive"),
	ERR(huge_memory, VM "\"memory\": \"99999999999T\"}", "memory: size '99999999999T' is too large"),
	ERR(memory_not_mib, VM "\"memory\": 512}",
	    "memory: 512 bytes is not a whole number of MiB (did you mean 512M?)"),
	ERR(memory_twice, VM "\"memory\": \"1G\", \"memory_mib\": 1024}",
	    "give either 'memory' or 'memory_mib', not both"),
	ERR(negative_vcpus, VM "\"vcpus\": -1}", "vcpus: -1 out of range (0 to 4294967295)"),
	ERR(huge_vcpus, VM "\"vcpus\": 4294967296}", "vcpus: 4294967296 out of range (0 to 4294967295)"),
	ERR(bad_format, DISK("{\"size\": \"1G\", \"format\": \"vmdk\"}"),
	    "disks[0].format: unknown format 'vmdk' (qcow2 or raw)"),
	ERR(disk_no_source, DISK("{\"name\": \"data\"}"),
	    "disks[0]: needs 'size' (a new volume) or 'path' (an existing image)"),
	ERR(disk_two_sources, DISK("{\"size\": \"1G\", \"path\": \"/i.raw\"}"),
	    "disks[0]: give either 'size' (a new volume) or 'path' (an existing image), not both"),
	ERR(bad_nic_mode, NIC("{\"mode\": \"user\"}, {\"mode\": \"tap\"}"),
	    "nics[1].mode: unknown mode 'tap' (user or bridge)"),
	ERR(nic_bridge_missing, NIC("{\"mode\": \"bridge\"}"),
	    "nics[0]: mode bridge needs 'bridge' (the host bridge)"),
	ERR(nic_bridge_on_user, NIC("{\"bridge\": \"br0\"}"), "nics[0]: 'bridge' needs mode bridge"),
	ERR_LIKE(duplicate_key, "{\"name\": \"web1\", \"vcpus\": 1, \"vcpus\": 2}",
		 "duplicate object key"),
	ERR_LIKE(duplicate_key_disk, DISK("{\"size\": \"1G\", \"size\": \"2G\"}"),
		 "duplicate object key"),
	ERR(not_object, "[{\"name\": \"web1\"}]", "expected a JSON object, got an array"),
	ERR_LIKE(not_json_object, "\"web1\"", "line 1, column"),
	ERR_LIKE(trailing_garbage, "{\"name\": \"web1\"} x", "end of file expected"),
	ERR_LIKE(trailing_object, "{\"name\": \"web1\"}{}", "end of file expected"),
	ERR_LIKE(empty, "", "line 1, column"),
	ERR_LIKE(truncated, "{\"name\": \"web1\",", "line 1, column"),
	cmocka_unit_test(test_disk_args),
	cmocka_unit_test(test_disk_arg_errors),
	cmocka_unit_test(test_rbd_disk_arg),
	cmocka_unit_test(test_nic_args),
	cmocka_unit_test(test_resolve_paths),
	cmocka_unit_test(test_set_memory),
	cmocka_unit_test(test_status_to_json),
	cmocka_unit_test(test_status_to_json_sparse),
	cmocka_unit_test(test_node_to_json),
};

int main(void)
{
	return cmocka_run_group_tests_name("spec_json", tests, NULL, NULL);
}
