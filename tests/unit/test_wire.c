/* The frame codec's bounds and errors, and golden encodings of the schemas. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"
#include "proto/hca.pb-c.h"
#include "tests/unit/util_golden.h"

static uint8_t *list_frame(size_t *len)
{
	Hca__ApiRequest r = HCA__API_REQUEST__INIT;

	r.op_case = HCA__API_REQUEST__OP_LIST;
	r.list = 1;
	return wire_frame_pack(WIRE_T_API_REQUEST, &r.base, len);
}

static void roundtrip(void **state)
{
	size_t len;
	uint8_t *f = list_frame(&len);
	int err = 0;
	Hca__ApiRequest *r = (Hca__ApiRequest *)wire_frame_unpack(
		f, len, 1024, WIRE_T_API_REQUEST, &hca__api_request__descriptor, &err);

	assert_non_null(r);
	assert_int_equal(r->op_case, HCA__API_REQUEST__OP_LIST);
	hca__api_request__free_unpacked(r, NULL);
	free(f);
}

static void length_bounded_before_payload(void **state)
{
	uint8_t hdr[WIRE_HDR_LEN];
	struct wire_hdr h;

	/* a header claiming 1 GiB: refused from the header alone */
	assert_int_equal(wire_hdr_encode(hdr, WIRE_T_API_REQUEST, "", 0), 0);
	hdr[8] = 0x40;
	assert_int_equal(wire_hdr_decode(hdr, sizeof(hdr), 1 << 20, &h), -EMSGSIZE);
	/* the caller's limit applies, not only the global one */
	hdr[8] = 0;
	hdr[9] = 0x10; /* 1 MiB */
	assert_int_equal(wire_hdr_decode(hdr, sizeof(hdr), 4096, &h), -EMSGSIZE);
	assert_int_equal(wire_hdr_decode(hdr, sizeof(hdr), 2 << 20, &h), 0);
	/* and the hard ceiling holds whatever the caller asks */
	hdr[8] = 0x02;
	hdr[9] = 0;
	assert_int_equal(wire_hdr_decode(hdr, sizeof(hdr), SIZE_MAX, &h), -EMSGSIZE);
}

static void truncated_is_eagain(void **state)
{
	size_t len;
	uint8_t *f = list_frame(&len);
	struct wire_hdr h;
	const uint8_t *p;

	for (size_t n = 0; n < len; n++)
		assert_int_equal(wire_frame_decode(f, n, 1024, &h, &p), -EAGAIN);
	assert_int_equal(wire_frame_decode(f, len, 1024, &h, &p), (long)len);
	free(f);
}

static void header_errors(void **state)
{
	size_t len;
	uint8_t *f = list_frame(&len);
	struct wire_hdr h;
	const uint8_t *p;

	f[0] ^= 1;
	assert_int_equal(wire_frame_decode(f, len, 1024, &h, &p), -EBADMSG);
	f[0] ^= 1;
	f[5] = 9;
	assert_int_equal(wire_frame_decode(f, len, 1024, &h, &p), -EPROTONOSUPPORT);
	f[5] = WIRE_VERSION;
	f[7] = 0;
	assert_int_equal(wire_frame_decode(f, len, 1024, &h, &p), -EPROTO);
	f[7] = WIRE_T_MAX;
	assert_int_equal(wire_frame_decode(f, len, 1024, &h, &p), -EPROTO);
	free(f);
}

static void crc_mismatch(void **state)
{
	size_t len;
	uint8_t *f = list_frame(&len);
	struct wire_hdr h;
	const uint8_t *p;

	f[len - 1] ^= 0x80;
	assert_int_equal(wire_frame_decode(f, len, 1024, &h, &p), -EILSEQ);
	free(f);
}

static void unpack_checks_type_and_trailing(void **state)
{
	size_t len;
	uint8_t *f = list_frame(&len), *g = malloc(len + 1);
	int err = 0;

	assert_null(wire_frame_unpack(f, len, 1024, WIRE_T_API_REPLY,
				      &hca__api_reply__descriptor, &err));
	assert_int_equal(err, -EPROTO);
	memcpy(g, f, len);
	g[len] = 0;
	assert_null(wire_frame_unpack(g, len + 1, 1024, WIRE_T_API_REQUEST,
				      &hca__api_request__descriptor, &err));
	assert_int_equal(err, -EMSGSIZE);
	free(f);
	free(g);
}

static void undecodable_payload(void **state)
{
	uint8_t buf[WIRE_HDR_LEN + 4] = { 0 };
	const uint8_t junk[4] = { 0xff, 0xff, 0xff, 0xff };
	int err = 0;

	memcpy(buf + WIRE_HDR_LEN, junk, 4);
	wire_hdr_encode(buf, WIRE_T_API_REQUEST, junk, 4);
	assert_null(wire_frame_unpack(buf, sizeof(buf), 1024, WIRE_T_API_REQUEST,
				      &hca__api_request__descriptor, &err));
	assert_int_equal(err, -EPROTO);
}

static void crc32c_known_answer(void **state)
{
	/* RFC 3720 test vector */
	assert_int_equal(wire_crc32c("123456789", 9), 0xE3069283);
}

static char *hex(const uint8_t *b, size_t n)
{
	char *s = malloc(n * 2 + 2), *o = s;

	for (size_t i = 0; i < n; i++)
		o += sprintf(o, "%02x", b[i]);
	strcpy(o, "\n");
	return s;
}

/* Pack @msg as a frame of @type and compare its hex with golden @name. */
static void check_golden_frame(const char *name, uint16_t type, const ProtobufCMessage *msg)
{
	size_t len;
	uint8_t *f = wire_frame_pack(type, msg, &len);
	char *h = hex(f, len);

	assert_int_equal(golden_check(name, h), 0);
	free(h);
	free(f);
}

/* A change here means peers or stored records of older versions break. */
static void golden_vm_record(void **state)
{
	Hca__DiskSpec d = HCA__DISK_SPEC__INIT;
	Hca__DiskSpec *dp[] = { &d };
	Hca__BootSpec b = HCA__BOOT_SPEC__INIT;
	Hca__VmSpec s = HCA__VM_SPEC__INIT;
	Hca__VolumeRef v = HCA__VOLUME_REF__INIT;
	Hca__VolumeRef *vp[] = { &v };
	Hca__VmRecord r = HCA__VM_RECORD__INIT;

	d.name = "root";
	d.size_bytes = 64 << 20;
	b.kernel = "/k";
	s.name = "web1";
	s.uuid = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
	s.vcpus = 2;
	s.memory_mib = 256;
	s.n_disks = 1;
	s.disks = dp;
	s.boot = &b;
	v.disk = "root";
	v.backend = "file";
	v.volume = "web1-root";
	v.path = "/v/web1-root.qcow2";
	r.version = 3;
	r.spec = &s;
	r.owner = "node1";
	r.n_volumes = 1;
	r.volumes = vp;
	r.defined_at = 1700000000;
	check_golden_frame("wire_vm_record.hex", WIRE_T_VM_RECORD, &r.base);
}

static void golden_api_shutdown(void **state)
{
	Hca__ApiRequest r = HCA__API_REQUEST__INIT;
	Hca__ShutdownRequest s = HCA__SHUTDOWN_REQUEST__INIT;

	s.name = "web1";
	s.timeout_s = 60;
	r.op_case = HCA__API_REQUEST__OP_SHUTDOWN;
	r.shutdown = &s;
	check_golden_frame("wire_api_shutdown.hex", WIRE_T_API_REQUEST, &r.base);
}

static void golden_api_error_reply(void **state)
{
	Hca__ApiReply r = HCA__API_REPLY__INIT;
	Hca__Error e = HCA__ERROR__INIT;

	e.code = HCA__ERROR_CODE__ERROR_BAD_STATE;
	e.message = "vm web1: already running";
	r.error = &e;
	check_golden_frame("wire_api_error_reply.hex", WIRE_T_API_REPLY, &r.base);
}

static void golden_job(void **state)
{
	Hca__Job j = HCA__JOB__INIT;
	Hca__JobProgress pg = HCA__JOB_PROGRESS__INIT;
	Hca__Error e = HCA__ERROR__INIT;
	char *vols[] = { "rbd:web1-root" };

	j.format = 1;
	j.id = "node1-17";
	j.kind = HCA__JOB_KIND__JOB_KIND_DEFINE;
	j.vm = "web1";
	j.node = "node1";
	j.phase = HCA__JOB_PHASE__JOB_PHASE_FAILED;
	pg.done = 1;
	pg.total = 2;
	pg.unit = "volumes";
	pg.detail = "rbd:web1-root";
	j.progress = &pg;
	e.code = HCA__ERROR_CODE__ERROR_STORAGE;
	e.message = "vm web1: define failed: storage unavailable";
	j.error = &e;
	j.note = "interrupted by an hcad restart: rolled back";
	j.created_ms = 1764650000000ull;
	j.updated_ms = 1764650001000ull;
	j.ended_ms = 1764650002000ull;
	j.requested_on = "node3";
	j.incarnation = 0x1234567890abcdefull;
	j.n_volumes = 1;
	j.volumes = vols;
	check_golden_frame("wire_job.hex", WIRE_T_JOB, &j.base);
}

/* A request forwarded to the owner, and the job it is answered with. */
static void golden_api_forwarded_start(void **state)
{
	Hca__ApiRequest r = HCA__API_REQUEST__INIT;
	Hca__VmRef ref = HCA__VM_REF__INIT;

	ref.name = "web1";
	ref.on_node = "node2";
	r.op_case = HCA__API_REQUEST__OP_START;
	r.start = &ref;
	r.forwarded_by = "node3";
	check_golden_frame("wire_api_forwarded_start.hex", WIRE_T_API_REQUEST, &r.base);
}

static void golden_api_job_reply(void **state)
{
	Hca__ApiReply r = HCA__API_REPLY__INIT;
	Hca__Job j = HCA__JOB__INIT;

	j.format = 1;
	j.id = "node2-4";
	j.kind = HCA__JOB_KIND__JOB_KIND_START;
	j.vm = "web1";
	j.node = "node2";
	j.phase = HCA__JOB_PHASE__JOB_PHASE_COMMIT;
	j.requested_on = "node3";
	r.result_case = HCA__API_REPLY__RESULT_JOB;
	r.job = &j;
	check_golden_frame("wire_api_job_reply.hex", WIRE_T_API_REPLY, &r.base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(roundtrip),
		cmocka_unit_test(length_bounded_before_payload),
		cmocka_unit_test(truncated_is_eagain),
		cmocka_unit_test(header_errors),
		cmocka_unit_test(crc_mismatch),
		cmocka_unit_test(unpack_checks_type_and_trailing),
		cmocka_unit_test(undecodable_payload),
		cmocka_unit_test(crc32c_known_answer),
		cmocka_unit_test(golden_vm_record),
		cmocka_unit_test(golden_api_shutdown),
		cmocka_unit_test(golden_api_error_reply),
		cmocka_unit_test(golden_job),
		cmocka_unit_test(golden_api_forwarded_start),
		cmocka_unit_test(golden_api_job_reply),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
