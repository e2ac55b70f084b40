/*
 * rec_forge: make a VM record bad in the cluster's store, the way a buggy
 * or newer writer would, for the integration tests that check hcad refuses
 * such records by name, crashes on none and deletes nothing. It writes
 * through the store (a compare-and-swap put that notifies the watchers), so
 * every node reads the forged record at once.
 *
 *   rec_forge CEPH_CONF POOL NAME save FILE        keep the record's payload
 *   rec_forge CEPH_CONF POOL NAME put FILE         write a kept payload back
 *   rec_forge CEPH_CONF POOL NAME format N         as a newer writer's
 *   rec_forge CEPH_CONF POOL NAME disks N          N disks (copies of the first)
 *   rec_forge CEPH_CONF POOL NAME disk-format N    the first disk's format = N
 */
#include "proto/hca.pb-c.h"
#include "proto/wire.h"
#include "storage/sto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, const char *err)
{
	fprintf(stderr, "rec_forge: %s: %s\n", what, err);
	exit(1);
}

static void more_disks(Hca__VmRecord *r, unsigned n)
{
	Hca__DiskSpec **d = calloc(n, sizeof(*d));

	if (!d || !r->spec->n_disks)
		die("disks", "no disk to copy");
	for (unsigned i = 0; i < n; i++) {
		char name[16];
		d[i] = malloc(sizeof(**d));
		*d[i] = *r->spec->disks[0];
		snprintf(name, sizeof(name), "d%u", i);
		d[i]->name = strdup(name);
	}
	r->spec->disks = d; /* the old array leaks: a one-shot tool */
	r->spec->n_disks = n;
}

static uint8_t *forge(const uint8_t *buf, size_t len, const char *mode, const char *arg,
		      size_t *olen)
{
	int err = 0;
	Hca__VmRecord *r = (Hca__VmRecord *)wire_frame_unpack(buf, len, STO_REC_MAX,
							       WIRE_T_VM_RECORD,
							       &hca__vm_record__descriptor, &err);

	if (!r || !r->spec)
		die("record", wire_strerror(err));
	if (!strcmp(mode, "format"))
		r->format = (uint32_t)atoi(arg);
	else if (!strcmp(mode, "disks"))
		more_disks(r, (unsigned)atoi(arg));
	else if (!strcmp(mode, "disk-format") && r->spec->n_disks)
		r->spec->disks[0]->format = (Hca__DiskFormat)atoi(arg);
	else
		die(mode, "unknown mode");
	return wire_frame_pack(WIRE_T_VM_RECORD, &r->base, olen);
}

int main(int argc, char **argv)
{
	char err[512], key[STO_KEY_MAX + 1];
	uint8_t *buf = NULL, *out = NULL;
	size_t len = 0, olen = 0;
	uint64_t ver = 0;
	struct sto_store *st;
	FILE *f;

	if (argc != 6) {
		fprintf(stderr, "usage: rec_forge CEPH_CONF POOL NAME "
				"save|put|format|disks|disk-format ARG\n");
		return 2;
	}
	snprintf(key, sizeof(key), "vm/%s", argv[3]);
	if (!(st = sto_store_open_rados(argv[1], "admin", argv[2], 10, err, sizeof(err))))
		die("store", err);
	if (sto_get(st, key, &buf, &len, &ver, err, sizeof(err)) < 0)
		die(key, err);
	if (!strcmp(argv[4], "save")) {
		if (!(f = fopen(argv[5], "wb")) || fwrite(buf, 1, len, f) != len || fclose(f))
			die(argv[5], "cannot write");
		return 0;
	}
	if (!strcmp(argv[4], "put")) {
		out = malloc(STO_REC_MAX);
		if (!out || !(f = fopen(argv[5], "rb")))
			die(argv[5], "cannot read");
		olen = fread(out, 1, STO_REC_MAX, f);
		fclose(f);
	} else if (!(out = forge(buf, len, argv[4], argv[5], &olen))) {
		die("pack", "out of memory");
	}
	if (sto_put(st, key, out, olen, ver, NULL, err, sizeof(err)) < 0)
		die(key, err);
	sto_store_close(st);
	return 0;
}
