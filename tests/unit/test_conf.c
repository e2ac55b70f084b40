/* hcad.conf: defaults, every key, and one FILE:LINE error per mistake. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <syslog.h>

#include "agent/conf.h"

static int parse(struct conf *c, const char *text, char *err)
{
	conf_defaults(c);
	err[0] = '\0';
	return conf_parse(c, text, "t.conf", err, 256);
}

static void defaults(void **state)
{
	struct conf c;

	conf_defaults(&c);
	assert_string_equal(c.state_dir, "/var/lib/hca");
	assert_string_equal(c.api_name, "hcad");
	assert_int_equal(c.accel, CONF_ACCEL_AUTO);
	assert_int_equal(c.qmp_timeout_ms, 5000);
	assert_int_equal(c.ceph_op_timeout_s, 5);
	assert_true(c.node_name[0] != '\0');
}

static void all_keys(void **state)
{
	struct conf c;
	char err[256];
	const char *text =
		"# comment\n\n"
		"node_name = n1\n"
		"  state_dir=/srv/hca  \n"
		"storage_dir = /srv/vols\n"
		"api_name = hcad-x\n"
		"qemu = /opt/qemu\n"
		"qemu_img = /opt/qemu-img\n"
		"log_file = /var/log/hcad.log\n"
		"accel = tcg\n"
		"log_level = debug\n"
		"qmp_timeout_ms = 250\n"
		"shutdown_timeout_s = 30\n"
		"ceph_op_timeout_s = 120\n"
		"max_vcpus = 8\n"
		"max_memory_mib = 4096\n";

	assert_int_equal(parse(&c, text, err), 0);
	assert_string_equal(c.node_name, "n1");
	assert_string_equal(c.state_dir, "/srv/hca");
	assert_string_equal(c.storage_dir, "/srv/vols");
	assert_string_equal(c.api_name, "hcad-x");
	assert_string_equal(c.qemu, "/opt/qemu");
	assert_string_equal(c.qemu_img, "/opt/qemu-img");
	assert_string_equal(c.log_file, "/var/log/hcad.log");
	assert_int_equal(c.accel, CONF_ACCEL_TCG);
	assert_int_equal(c.log_level, LOG_DEBUG);
	assert_int_equal(c.qmp_timeout_ms, 250);
	assert_int_equal(c.shutdown_timeout_s, 30);
	assert_int_equal(c.ceph_op_timeout_s, 120);
	assert_int_equal(c.max_vcpus, 8);
	assert_int_equal(c.max_memory_mib, 4096);
}

static void errors(void **state)
{
	static const struct { const char *text, *msg; } cases[] = {
		{ "foo = 1\n", "t.conf:1: unknown key 'foo'" },
		{ "\n\njust words\n", "t.conf:3: expected 'key = value', got 'just words'" },
		{ "accel = kvm\naccel = tcg\n", "t.conf:2: duplicate key 'accel'" },
		{ "state_dir =\n", "t.conf:1: state_dir: empty value" },
		{ "state_dir = var/lib\n", "t.conf:1: state_dir: 'var/lib' must be an absolute path" },
		{ "accel = fast\n", "t.conf:1: accel: 'fast' is not one of auto, kvm, tcg" },
		{ "log_level = loud\n", "t.conf:1: log_level: 'loud' is not one of error, warning, info, debug" },
		{ "qmp_timeout_ms = 5\n", "t.conf:1: qmp_timeout_ms: 5 out of range (100 to 600000)" },
		{ "qmp_timeout_ms = 5s\n", "t.conf:1: qmp_timeout_ms: '5s' is not a number" },
		{ "qmp_timeout_ms = -1\n", "t.conf:1: qmp_timeout_ms: '-1' is not a number" },
		/* 0 would be librados's "wait for ever" */
		{ "ceph_op_timeout_s = 0\n", "t.conf:1: ceph_op_timeout_s: 0 out of range (1 to 120)" },
		{ "ceph_op_timeout_s = 121\n", "t.conf:1: ceph_op_timeout_s: 121 out of range (1 to 120)" },
		{ "max_vcpus = 99999999999999999999999\n", "t.conf:1: max_vcpus: '99999999999999999999999' is not a number" },
		{ "state_dir = /a/very/long/state/directory/path/that/is/too/long\n",
		  "t.conf:1: state_dir: value longer than 40 characters" },
	};
	struct conf c;
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(parse(&c, cases[i].text, err), -EINVAL);
		assert_string_equal(err, cases[i].msg);
	}
}

static void missing_file(void **state)
{
	struct conf c;
	char err[256];

	conf_defaults(&c);
	assert_int_equal(conf_load(&c, "/nonexistent/hcad.conf", 1, err, sizeof(err)), 0);
	assert_true(conf_load(&c, "/nonexistent/hcad.conf", 0, err, sizeof(err)) < 0);
	assert_string_equal(err, "/nonexistent/hcad.conf: No such file or directory");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(defaults),
		cmocka_unit_test(all_keys),
		cmocka_unit_test(errors),
		cmocka_unit_test(missing_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
