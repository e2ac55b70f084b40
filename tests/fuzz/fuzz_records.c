/*
 * libFuzzer target: a VM record as read back from the shared store (a
 * corrupt object, a newer or buggy writer): sto_vm_decode, then the spec
 * rules every node applies before it lists or starts the VM
 * (hv_spec_check without files). Nothing may crash, leak or read out of
 * bounds, whatever the record claims (17 disks, unknown enum values).
 *
 * The store calls sto_vm.c makes elsewhere are stubbed: only the decoders
 * run here.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "hypervisor/hv.h"
#include "storage/sto_priv.h"
#include "storage/sto_vm.h"

int sto_get(struct sto_store *st, const char *key, uint8_t **buf, size_t *len,
	    uint64_t *version, char *err, size_t errlen)
{
	return -ENOSYS;
}

int sto_put(struct sto_store *st, const char *key, const void *buf, size_t len,
	    uint64_t expect, uint64_t *new_version, char *err, size_t errlen)
{
	return -ENOSYS;
}

bool sto_key_valid(const char *key)
{
	return key && *key;
}

const char *sto_errstr(int errnum)
{
	return strerror(errnum);
}

int sto_fail_at(const char *func, const char *file, uint32_t line, uint8_t prio, char *err,
		size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (err && errlen)
		vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hv_limits l;
	char err[512];
	int rc = 0;
	Hca__VmRecord *r = sto_vm_decode(data, size, "web1", &rc, err, sizeof(err));

	if (!r)
		return 0;
	hv_limits_default(&l);
	(void)hv_spec_check(r->spec, &l, 0, err, sizeof(err));
	hca__vm_record__free_unpacked(r, NULL);
	return 0;
}
