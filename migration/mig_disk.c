/*
 * mig_disk: the disks of a shared-nothing migration (--with-storage), pure:
 * the QMP arguments both QEMUs get and the bookkeeping of the mirrors, so
 * golden files pin every argument and unit tests drive the events. The
 * state machines that send them are mig_src.c and mig_dst.c.
 *
 * The data path, one per local volume (QEMU 10.0, qapi/block-core.json and
 * qapi/block-export.json of v10.0):
 *
 *   source QEMU                                  destination QEMU (-incoming defer)
 *   drive-D (the guest's disk)                   drive-D (a new sparse volume, discard=unmap)
 *     └─ mirror job mig-D ──► mig-nbd-D ══TLS══► NBD server, writable export "D"
 *                             (nbd client,        (block-export-add activates the node;
 *                              discard=unmap)      the migration stream comes after)
 *
 * The mirror copies what the volume holds (on QEMU 10.0 here, the job of an
 * 8 GiB qcow2 holding 256 MiB counted 256 MiB, and the target stayed
 * sparse; a zero range it does send travels as an NBD write-zeroes, which
 * the target turns into a hole only with discard=unmap on both ends:
 * FACTS.md), then stays in sync. Once every mirror is ready it is switched
 * to write-blocking (block-job-change copy-mode): each guest write then
 * completes only once the destination has it too, so a guest writing
 * faster than the link is slowed rather than left behind, and at the
 * switchover there is next to nothing left. At pre-switchover the mirrors
 * are cancelled (a READY mirror cancelled without force finishes its
 * copy and ends with BLOCK_JOB_COMPLETED; job-complete would instead pivot
 * the source onto the NBD target), the NBD client nodes are deleted (the
 * destination cannot drop its export while a client is attached, nor the
 * source inactivate its disks), and only then does the device state go.
 */
#include "migration/mig_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "hypervisor/hv.h"

_Static_assert(MIG_DISKS_MAX == HV_MAX_DISKS, "a VM's disks and a migration's differ");

void mig_disk_names(const char *disk, struct mig_disk_names *n)
{
	snprintf(n->node, sizeof(n->node), "drive-%s", disk);
	snprintf(n->nbd, sizeof(n->nbd), "mig-nbd-%s", disk);
	snprintf(n->job, sizeof(n->job), "mig-%s", disk);
	snprintf(n->exp, sizeof(n->exp), "mig-exp-%s", disk);
}

/* A host for QEMU's SocketAddress: "inet" with host and port (a string). */
static json_t *inet_json(const char *host, unsigned port)
{
	char p[8];

	snprintf(p, sizeof(p), "%u", port);
	return json_pack("{s:s, s:s, s:s}", "type", "inet", "host", host, "port", p);
}

json_t *mig_nbd_client_json(const char *disk, const char *host, unsigned port, const char *tls,
			    const char *tls_hostname)
{
	struct mig_disk_names n;
	json_t *a;

	if (!disk || !host || !port || port > 65535)
		return NULL;
	mig_disk_names(disk, &n);
	a = json_pack("{s:s, s:s, s:o, s:s, s:s}", "driver", "nbd", "node-name", n.nbd, "server",
		      inet_json(host, port), "export", disk, "discard", "unmap");
	if (a && tls && json_object_set_new(a, "tls-creds", json_string(tls)) < 0)
		goto fail;
	if (a && tls && tls_hostname &&
	    json_object_set_new(a, "tls-hostname", json_string(tls_hostname)) < 0)
		goto fail;
	return a;
fail:
	json_decref(a);
	return NULL;
}

json_t *mig_mirror_json(const char *disk)
{
	struct mig_disk_names n;

	if (!disk)
		return NULL;
	mig_disk_names(disk, &n);
	/* background copy first: write-blocking from the start would slow
	 * every guest write by a round trip for the whole bulk copy */
	return json_pack("{s:s, s:s, s:s, s:s, s:s}", "job-id", n.job, "device", n.node, "target",
			 n.nbd, "sync", "full", "copy-mode", "background");
}

json_t *mig_mirror_active_json(const char *disk)
{
	struct mig_disk_names n;

	if (!disk)
		return NULL;
	mig_disk_names(disk, &n);
	return json_pack("{s:s, s:s, s:s}", "id", n.job, "type", "mirror", "copy-mode",
			 "write-blocking");
}

json_t *mig_nbd_server_json(const char *host, unsigned port, const char *tls)
{
	char p[8];
	json_t *a;

	if (!host || !port || port > 65535)
		return NULL;
	snprintf(p, sizeof(p), "%u", port);
	/* nbd-server-start takes the legacy SocketAddress: type + data */
	a = json_pack("{s:{s:s, s:{s:s, s:s}}, s:i}", "addr", "type", "inet", "data", "host", host,
		      "port", p, "max-connections", 4 * MIG_DISKS_MAX);
	if (a && tls && json_object_set_new(a, "tls-creds", json_string(tls)) < 0) {
		json_decref(a);
		return NULL;
	}
	return a;
}

json_t *mig_export_json(const char *disk)
{
	struct mig_disk_names n;

	if (!disk)
		return NULL;
	mig_disk_names(disk, &n);
	return json_pack("{s:s, s:s, s:s, s:b, s:s}", "type", "nbd", "id", n.exp, "node-name",
			 n.node, "writable", 1, "name", disk);
}

json_t *mig_export_del_json(const char *disk)
{
	struct mig_disk_names n;

	if (!disk)
		return NULL;
	mig_disk_names(disk, &n);
	/* hard: the source detached before the switchover; a connection still
	 * open is one the kernel has not torn down yet, nothing is in flight */
	return json_pack("{s:s, s:s}", "id", n.exp, "mode", "hard");
}

/* ---- the mirror set ---- */

int mig_mirrors_add(struct mig_mirrors *mm, const char *disk, uint64_t allocated)
{
	struct mig_mirror *d;

	if (!disk || !disk[0] || strlen(disk) >= sizeof(d->disk))
		return -EINVAL;
	if (mm->n >= MIG_DISKS_MAX)
		return -E2BIG;
	for (unsigned i = 0; i < mm->n; i++)
		if (!strcmp(mm->d[i].disk, disk))
			return -EEXIST;
	d = &mm->d[mm->n++];
	memset(d, 0, sizeof(*d));
	snprintf(d->disk, sizeof(d->disk), "%s", disk);
	d->allocated = allocated;
	return 0;
}

static struct mig_mirror *by_job(struct mig_mirrors *mm, const char *job)
{
	struct mig_disk_names n;

	for (unsigned i = 0; job && i < mm->n; i++) {
		mig_disk_names(mm->d[i].disk, &n);
		if (!strcmp(n.job, job))
			return &mm->d[i];
	}
	return NULL;
}

static void take_figures(struct mig_mirror *d, json_t *data)
{
	json_t *len = json_object_get(data, "len"), *off = json_object_get(data, "offset");

	if (json_is_integer(len) && json_integer_value(len) >= 0)
		d->len = (uint64_t)json_integer_value(len);
	if (json_is_integer(off) && json_integer_value(off) >= 0)
		d->offset = (uint64_t)json_integer_value(off);
}

enum mig_mm_ev mig_mirrors_event(struct mig_mirrors *mm, const char *event, json_t *data,
				 char *why, size_t len)
{
	struct mig_mirror *d = by_job(mm, json_string_value(json_object_get(data, "device")));
	const char *err;

	if (!d)
		return MIG_MM_NONE;
	if (!strcmp(event, "BLOCK_JOB_READY")) {
		take_figures(d, data);
		if (d->ready)
			return MIG_MM_NONE;
		d->ready = true;
		return ++mm->n_ready == mm->n ? MIG_MM_READY : MIG_MM_NONE;
	}
	if (!strcmp(event, "BLOCK_JOB_ERROR")) {
		/* on-target-error defaults to "report": the job stops with the
		 * error, and BLOCK_JOB_COMPLETED follows; say why now */
		snprintf(why, len, "disk %s: the mirror to the destination failed on %s (%s)",
			 d->disk, json_string_value(json_object_get(data, "operation"))
					  ? json_string_value(json_object_get(data, "operation"))
					  : "I/O",
			 json_string_value(json_object_get(data, "action"))
				 ? json_string_value(json_object_get(data, "action")) : "?");
		d->failed = true;
		return MIG_MM_FAILED;
	}
	if (strcmp(event, "BLOCK_JOB_COMPLETED") && strcmp(event, "BLOCK_JOB_CANCELLED"))
		return MIG_MM_NONE;
	take_figures(d, data);
	if (d->done)
		return MIG_MM_NONE;
	d->done = true;
	err = json_string_value(json_object_get(data, "error"));
	/* only a READY mirror told to finish ends well: anything else (the
	 * target went away, a forced cancel) leaves the copy incomplete */
	if (err || !mm->finishing || !strcmp(event, "BLOCK_JOB_CANCELLED") || !d->ready) {
		d->failed = true;
		snprintf(why, len, "disk %s: the mirror to the destination %s%s", d->disk,
			 err ? "failed: " : "ended before it was finished", err ? err : "");
		return MIG_MM_FAILED;
	}
	return ++mm->n_done == mm->n ? MIG_MM_DONE : MIG_MM_NONE;
}

void mig_mirrors_jobs(struct mig_mirrors *mm, json_t *jobs, uint64_t *done, uint64_t *total)
{
	size_t i;
	json_t *j;

	json_array_foreach(jobs, i, j) {
		struct mig_mirror *d = by_job(mm, json_string_value(json_object_get(j, "device")));
		if (d)
			take_figures(d, j);
	}
	*done = *total = 0;
	for (unsigned k = 0; k < mm->n; k++) {
		/* a job's len grows while the guest writes: done never exceeds it */
		*total += mm->d[k].len;
		*done += mm->d[k].offset < mm->d[k].len ? mm->d[k].offset : mm->d[k].len;
	}
}

bool mig_mirrors_have_job(const struct mig_mirrors *mm, json_t *jobs)
{
	size_t i;
	json_t *j;

	json_array_foreach(jobs, i, j)
		if (by_job((struct mig_mirrors *)mm, json_string_value(json_object_get(j, "device"))))
			return true;
	return false;
}
