/* hv_spec: what a VM spec may say, checked before anything is created. */
#include "hypervisor/hv.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void hv_limits_default(struct hv_limits *l)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	l->max_vcpus = cpus > 0 && cpus < HV_MAX_VCPUS ? (uint32_t)cpus * 4 : HV_MAX_VCPUS;
	if (l->max_vcpus > HV_MAX_VCPUS)
		l->max_vcpus = HV_MAX_VCPUS;
	l->max_memory_mib = HV_MAX_MEMORY_MIB;
}

static bool ident_valid(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n > max || !(islower((unsigned char)s[0]) || isdigit((unsigned char)s[0])))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(islower(c) || isdigit(c) || c == '-' || c == '_'))
			return false;
	}
	return true;
}

bool hv_name_valid(const char *name)
{
	return name && ident_valid(name, HV_NAME_MAX);
}

static bool uuid_valid(const char *u)
{
	static const char pat[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

	if (strlen(u) != sizeof(pat) - 1)
		return false;
	for (size_t i = 0; pat[i]; i++) {
		if (pat[i] == '-' ? u[i] != '-' : !isxdigit((unsigned char)u[i]))
			return false;
	}
	return true;
}

static bool mac_valid(const char *m)
{
	unsigned b[6];
	char tail;

	if (sscanf(m, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3],
		   &b[4], &b[5], &tail) != 6 || strlen(m) != 17)
		return false;
	return (b[0] & 1) == 0; /* unicast */
}

/* One line, whatever bytes a record from the store holds. */
static void one_line(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

__attribute__((format(printf, 4, 5)))
static int fail(char *err, size_t len, const char *vm, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!len)
		return -EINVAL;
	n = snprintf(err, len, "vm %s: ", vm && *vm ? vm : "(unnamed)");
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < len)
		vsnprintf(err + n, len - (size_t)n, fmt, ap);
	va_end(ap);
	one_line(err);
	return -EINVAL;
}

/* An absolute path, and with HV_CHECK_FILES one this node can read. */
static int check_file(const char *vm, const char *what, const char *path, unsigned flags,
		      char *err, size_t len)
{
	if (path[0] != '/')
		return fail(err, len, vm, "%s path '%s' must be absolute", what, path);
	if ((flags & HV_CHECK_FILES) && access(path, R_OK) != 0)
		return fail(err, len, vm, "%s '%s': %s", what, path, strerror(errno));
	return 0;
}

/* Where the disk comes from: an attached image, or a volume hcad creates. */
static int check_disk_source(const Hca__VmSpec *s, const Hca__DiskSpec *d, unsigned flags,
			     char *err, size_t len)
{
	bool qcow2 = d->format == HCA__DISK_FORMAT__DISK_FORMAT_QCOW2;

	if (d->backend[0] && strcmp(d->backend, "file") && strcmp(d->backend, "rbd"))
		return fail(err, len, s->name, "disk %s: unknown backend '%s' (file or rbd)",
			    d->name, d->backend);
	if (!strcmp(d->backend, "rbd") && (d->path[0] || qcow2))
		return fail(err, len, s->name, "disk %s: rbd volumes are new and raw", d->name);
	if (d->backing && (!d->path[0] || !qcow2))
		return fail(err, len, s->name, "disk %s: backing applies to an attached qcow2 "
			    "image only (path set, format qcow2)", d->name);
	if (d->path[0])
		return check_file(s->name, "disk image", d->path, flags, err, len);
	if (d->size_bytes < (1u << 20) || d->size_bytes > (64ull << 40))
		return fail(err, len, s->name, "disk %s: size %llu bytes out of range (1 MiB to 64 TiB)",
			    d->name, (unsigned long long)d->size_bytes);
	if (d->size_bytes % 512)
		return fail(err, len, s->name, "disk %s: size must be a multiple of 512 bytes", d->name);
	return 0;
}

static int check_disk(const Hca__VmSpec *s, size_t i, unsigned flags, char *err, size_t len)
{
	const Hca__DiskSpec *d = s->disks[i];

	if (!ident_valid(d->name, HV_DISK_NAME_MAX))
		return fail(err, len, s->name, "disk %zu: invalid name '%s' (1 to %u of a-z, 0-9, "
			    "-, _)", i, d->name, HV_DISK_NAME_MAX);
	for (size_t j = 0; j < i; j++)
		if (!strcmp(s->disks[j]->name, d->name))
			return fail(err, len, s->name, "disk name '%s' used twice", d->name);
	if (d->format != HCA__DISK_FORMAT__DISK_FORMAT_QCOW2 &&
	    d->format != HCA__DISK_FORMAT__DISK_FORMAT_RAW)
		return fail(err, len, s->name, "disk %s: unknown format %d", d->name, (int)d->format);
	return check_disk_source(s, d, flags, err, len);
}

static int check_disks(const Hca__VmSpec *s, unsigned flags, char *err, size_t len)
{
	int rc;

	if (s->n_disks > HV_MAX_DISKS)
		return fail(err, len, s->name, "disks: %zu, at most %d", s->n_disks, HV_MAX_DISKS);
	for (size_t i = 0; i < s->n_disks; i++)
		if ((rc = check_disk(s, i, flags, err, len)))
			return rc;
	return 0;
}

static int check_nics(const Hca__VmSpec *s, char *err, size_t len)
{
	if (s->n_nics > HV_MAX_NICS)
		return fail(err, len, s->name, "nics: %zu, at most %d", s->n_nics, HV_MAX_NICS);
	for (size_t i = 0; i < s->n_nics; i++) {
		const Hca__NicSpec *n = s->nics[i];
		if (n->mac[0] && !mac_valid(n->mac))
			return fail(err, len, s->name, "nic %zu: invalid MAC '%s'", i, n->mac);
		if (n->mode == HCA__NIC_MODE__NIC_MODE_USER)
			continue;
		if (n->mode != HCA__NIC_MODE__NIC_MODE_BRIDGE)
			return fail(err, len, s->name, "nic %zu: unknown mode %d", i, (int)n->mode);
		if (!n->bridge[0] || strlen(n->bridge) > 15 || strchr(n->bridge, '/'))
			return fail(err, len, s->name, "nic %zu: invalid bridge name '%s'", i, n->bridge);
	}
	return 0;
}

static int check_boot(const Hca__VmSpec *s, unsigned flags, char *err, size_t len)
{
	const Hca__BootSpec *b = s->boot;
	int rc;

	if (!b || !b->kernel[0]) {
		if (b && (b->initrd[0] || b->cmdline[0]))
			return fail(err, len, s->name, "initrd/cmdline given without a kernel");
		if (s->n_disks == 0)
			return fail(err, len, s->name, "nothing to boot: no kernel and no disk");
		return 0;
	}
	if ((rc = check_file(s->name, "kernel", b->kernel, flags, err, len)))
		return rc;
	if (b->initrd[0] && (rc = check_file(s->name, "initrd", b->initrd, flags, err, len)))
		return rc;
	if (strlen(b->cmdline) > HV_CMDLINE_MAX)
		return fail(err, len, s->name, "kernel cmdline longer than %d bytes", HV_CMDLINE_MAX);
	return 0;
}

int hv_spec_check(const Hca__VmSpec *s, const struct hv_limits *l, unsigned flags,
		  char *err, size_t len)
{
	int rc;

	if (!hv_name_valid(s->name))
		return fail(err, len, s->name, "invalid name '%s' (1-%d chars: a-z, 0-9, -, _)",
			    s->name, HV_NAME_MAX);
	if (s->uuid[0] && !uuid_valid(s->uuid))
		return fail(err, len, s->name, "invalid uuid '%s'", s->uuid);
	if (s->vcpus == 0 || s->vcpus > l->max_vcpus)
		return fail(err, len, s->name, "vcpus %u out of range (1 to %u)", s->vcpus, l->max_vcpus);
	if (s->memory_mib < HV_MIN_MEMORY_MIB || s->memory_mib > l->max_memory_mib)
		return fail(err, len, s->name, "memory %llu MiB out of range (%d to %llu)",
			    (unsigned long long)s->memory_mib, HV_MIN_MEMORY_MIB,
			    (unsigned long long)l->max_memory_mib);
	if ((rc = check_disks(s, flags, err, len)) || (rc = check_nics(s, err, len)))
		return rc;
	return check_boot(s, flags, err, len);
}

int hv_spec_validate(const Hca__VmSpec *s, const struct hv_limits *l,
		     char *err, size_t len)
{
	return hv_spec_check(s, l, HV_CHECK_FILES, err, len);
}

/* FNV-1a over the uuid and index: stable across restarts and nodes. */
static uint32_t nic_hash(const Hca__VmSpec *s, size_t idx)
{
	uint32_t h = 2166136261u;

	for (const char *p = s->uuid[0] ? s->uuid : s->name; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	h = (h ^ (uint8_t)idx) * 16777619u;
	return h;
}

void hv_nic_mac(const Hca__VmSpec *s, size_t idx, char out[18])
{
	uint32_t h;

	if (idx < s->n_nics && s->nics[idx]->mac[0]) {
		snprintf(out, 18, "%s", s->nics[idx]->mac);
		return;
	}
	h = nic_hash(s, idx);
	snprintf(out, 18, "52:54:00:%02x:%02x:%02x", (h >> 16) & 0xff,
		 (h >> 8) & 0xff, h & 0xff);
}

void hv_nic_tap(const Hca__VmSpec *s, size_t idx, char out[16])
{
	snprintf(out, 16, "hca%08x", nic_hash(s, idx));
}
