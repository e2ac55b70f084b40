/*
 * sto_vm: the VM record (key vm/NAME) on top of the state store, and the one
 * compare-and-swap that moves its owner (see sto_vm.h). The codec touches no
 * store and keeps no state, so a fuzz target runs exactly what a read runs.
 */
#include "storage/sto_vm.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"
#include "storage/sto_priv.h"

#define VM_NS "vm/"

/* ---- the record codec ---- */

void sto_vm_key(char *key, size_t len, const char *name)
{
	int n = name ? snprintf(key, len, VM_NS "%s", name) : -1;

	/* A cut key could name another VM: leave none the store accepts. */
	if (n < 0 || (size_t)n >= len || (size_t)n > STO_KEY_MAX)
		key[0] = '\0';
}

/* vm/@name into @key (STO_KEY_MAX + 1 bytes), or -EINVAL if it is no key. */
static int vm_key(char *key, const char *name, char *err, size_t errlen)
{
	sto_vm_key(key, STO_KEY_MAX + 1, name);
	if (sto_key_valid(key))
		return 0;
	return STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			"vm '%.100s': not a name a record can be stored under",
			name ? name : "(null)");
}

static int set_rc(int *rc, int v)
{
	if (rc)
		*rc = v;
	return v;
}

Hca__VmRecord *sto_vm_decode(const uint8_t *buf, size_t len, const char *name, int *rc,
			     char *err, size_t errlen)
{
	int werr = -EBADMSG;
	Hca__VmRecord *r = (Hca__VmRecord *)wire_frame_unpack(buf, len, STO_REC_MAX,
							       WIRE_T_VM_RECORD,
							       &hca__vm_record__descriptor, &werr);

	set_rc(rc, 0);
	if (!r) {
		set_rc(rc, STO_FAIL(LOG_ERR, err, errlen, -EBADMSG,
				    "vm %s: state record corrupt (%s)", name,
				    wire_strerror(werr)));
		return NULL;
	}
	/* Before the spec: a newer format may keep it elsewhere. */
	if (r->format > STO_VM_FORMAT_MAX) {
		set_rc(rc, STO_FAIL(LOG_ERR, err, errlen, -EPROTONOSUPPORT,
				    "vm %s: record written by a newer hca (record format %" PRIu32
				    ", this node reads up to %u); upgrade this node",
				    name, r->format, STO_VM_FORMAT_MAX));
		goto fail;
	}
	if (!r->spec || strcmp(r->spec->name, name) != 0) {
		set_rc(rc, STO_FAIL(LOG_ERR, err, errlen, -EBADMSG,
				    "vm %s: state record corrupt (%s%.100s%s)", name,
				    r->spec ? "names vm '" : "no spec",
				    r->spec ? r->spec->name : "", r->spec ? "'" : ""));
		goto fail;
	}
	if (r->format == 0)
		r->format = 1;
	return r;
fail:
	hca__vm_record__free_unpacked(r, NULL);
	return NULL;
}

uint8_t *sto_vm_encode(const Hca__VmRecord *r, size_t *len)
{
	/* Shallow: the caller's record keeps its format, the frame gets ours. */
	Hca__VmRecord w = *r;

	w.format = STO_VM_FORMAT;
	return wire_frame_pack(WIRE_T_VM_RECORD, &w.base, len);
}

Hca__VmRecord *sto_vm_copy(const Hca__VmRecord *r)
{
	size_t len = hca__vm_record__get_packed_size(r);
	uint8_t *buf = malloc(len ? len : 1);
	Hca__VmRecord *c = NULL;

	if (!buf)
		return NULL;
	hca__vm_record__pack(r, buf);
	c = hca__vm_record__unpack(NULL, len, buf);
	free(buf);
	if (!c)
		errno = ENOMEM;
	return c;
}

/* ---- reading and writing ---- */

int sto_vm_get(struct sto_store *st, const char *name, Hca__VmRecord **out,
	       uint64_t *version, char *err, size_t errlen)
{
	char key[STO_KEY_MAX + 1];
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc = vm_key(key, name, err, errlen);

	*out = NULL;
	*version = 0;
	if (rc < 0)
		return rc;
	rc = sto_get(st, key, &buf, &len, version, err, errlen);
	if (rc == -ENOENT)
		rc = STO_FAIL(LOG_DEBUG, err, errlen, -ENOENT, "vm %s: not defined", name);
	if (rc == 0)
		*out = sto_vm_decode(buf, len, name, &rc, err, errlen);
	if (rc < 0)
		*version = 0;
	free(buf);
	return rc;
}

int sto_vm_put(struct sto_store *st, const char *name, const Hca__VmRecord *r,
	       uint64_t expect, uint64_t *new_version, char *err, size_t errlen)
{
	char key[STO_KEY_MAX + 1];
	uint8_t *frame = NULL;
	size_t len = 0;
	int rc = vm_key(key, name, err, errlen);

	if (new_version)
		*new_version = 0;
	if (rc < 0)
		return rc;
	/* Never write what sto_vm_decode would refuse as corrupt. */
	if (!r || !r->spec || !r->spec->name || strcmp(r->spec->name, name) != 0)
		return STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
				"vm %s: refusing to store a record whose spec names vm '%.100s'",
				name, r && r->spec && r->spec->name ? r->spec->name : "");
	frame = sto_vm_encode(r, &len);
	if (!frame)
		return STO_FAIL(LOG_ERR, err, errlen, -errno, "vm %s: cannot encode record: %s",
				name, sto_errstr(errno));
	rc = sto_put(st, key, frame, len, expect, new_version, err, errlen);
	free(frame);
	return rc;
}

/* ---- the owner record ---- */

/* "node1 (epoch 3, active)", for messages. */
static void owner_str(char *buf, size_t len, const char *owner, uint64_t epoch, bool active)
{
	snprintf(buf, len, "%.64s (epoch %" PRIu64 "%s)", owner[0] ? owner : "no node", epoch,
		 active ? ", active" : "");
}

/*
 * 0 if @r is still the owner record @want describes; else -ESTALE with what
 * it is now in @err. @check_active: compare active too (the CAS always does;
 * confirm only when @want asks for it set).
 */
static int owner_match(const char *name, const Hca__VmRecord *r, const struct sto_owner *want,
		       bool check_active, char *err, size_t errlen)
{
	char now[128], was[128];

	if (want->incarnation && r->incarnation != want->incarnation)
		return STO_FAIL(LOG_DEBUG, err, errlen, -ESTALE,
				"vm %s: defined again meanwhile (incarnation %" PRIu64
				", not %" PRIu64 ")",
				name, r->incarnation, want->incarnation);
	if (!strcmp(r->owner, want->owner) && r->owner_epoch == want->epoch &&
	    (!check_active || r->active == want->active))
		return 0;
	owner_str(now, sizeof(now), r->owner, r->owner_epoch, r->active);
	owner_str(was, sizeof(was), want->owner, want->epoch, check_active && want->active);
	return STO_FAIL(LOG_DEBUG, err, errlen, -ESTALE, "vm %s: owner is now %s, not %s", name,
			now, was);
}

static int owner_args(const char *name, const struct sto_owner *a, const struct sto_owner *b,
		      char *err, size_t errlen)
{
	if (a && a->owner && (!b || b->owner))
		return 0;
	return STO_FAIL(LOG_ERR, err, errlen, -EINVAL, "vm %s: owner record without a node given",
			name ? name : "(null)");
}

int sto_owner_cas(struct sto_store *st, const char *name, const struct sto_owner *expect,
		  const struct sto_owner *next, uint64_t *out_epoch, uint64_t *out_version,
		  char *err, size_t errlen)
{
	return sto_owner_cas_moving(st, name, expect, next, NULL, 0, out_epoch, out_version, err,
				    errlen);
}

/* What sto_owner_cas_moving() swapped into a record it read, to put back
 * before the record is freed (its strings are the caller's). */
struct vol_saved {
	Hca__VolumeRef *vr;
	Hca__DiskSpec *d;
	char *backend, *volume, *path, *d_backend;
	Hca__DiskFormat format, d_format;
};

static int vols_move(const char *name, Hca__VmRecord *r, const struct sto_vol_move *mv,
		     size_t n, struct vol_saved *sv, char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		Hca__VolumeRef *vr = NULL;
		Hca__DiskSpec *d = NULL;

		for (size_t k = 0; k < r->n_volumes; k++)
			if (!strcmp(r->volumes[k]->disk, mv[i].disk))
				vr = r->volumes[k];
		for (size_t k = 0; r->spec && k < r->spec->n_disks; k++)
			if (!strcmp(r->spec->disks[k]->name, mv[i].disk))
				d = r->spec->disks[k];
		if (!vr || !d)
			return STO_FAIL(LOG_ERR, err, errlen, -ENOENT,
					"vm %s: disk %s has no volume to move", name, mv[i].disk);
		sv[i] = (struct vol_saved){ vr, d, vr->backend, vr->volume, vr->path, d->backend,
					    vr->format, d->format };
	}
	for (size_t i = 0; i < n; i++) {
		sv[i].vr->backend = (char *)mv[i].backend;
		sv[i].vr->volume = (char *)mv[i].volume;
		sv[i].vr->path = (char *)mv[i].path;
		sv[i].vr->format = mv[i].format;
		sv[i].d->backend = (char *)mv[i].backend;
		sv[i].d->format = mv[i].format;
	}
	return 0;
}

static void vols_restore(struct vol_saved *sv, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		sv[i].vr->backend = sv[i].backend;
		sv[i].vr->volume = sv[i].volume;
		sv[i].vr->path = sv[i].path;
		sv[i].vr->format = sv[i].format;
		sv[i].d->backend = sv[i].d_backend;
		sv[i].d->format = sv[i].d_format;
	}
}

int sto_owner_cas_moving(struct sto_store *st, const char *name, const struct sto_owner *expect,
			 const struct sto_owner *next, const struct sto_vol_move *mv, size_t n,
			 uint64_t *out_epoch, uint64_t *out_version, char *err, size_t errlen)
{
	Hca__VmRecord *cur = NULL, w;
	uint64_t version = 0, epoch = 0, nv = 0;
	bool moves = false;
	struct vol_saved sv[STO_VOL_MOVES_MAX];
	size_t swapped = 0;
	int rc = owner_args(name, expect, next, err, errlen);

	if (rc == 0 && n > STO_VOL_MOVES_MAX)
		rc = STO_FAIL(LOG_ERR, err, errlen, -E2BIG, "vm %s: %zu volumes to move", name, n);

	if (rc == 0 && next->active && !next->owner[0])
		rc = STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			      "vm %s: cannot set active without an owner", name);
	if (rc == 0)
		rc = sto_vm_get(st, name, &cur, &version, err, errlen);
	if (rc == 0)
		rc = owner_match(name, cur, expect, true, err, errlen);
	if (rc < 0)
		goto out;
	moves = strcmp(cur->owner, next->owner) != 0;
	if (moves && cur->owner_epoch == UINT64_MAX) {
		rc = STO_FAIL(LOG_ERR, err, errlen, -EOVERFLOW,
			      "vm %s: owner epoch cannot be incremented", name);
		goto out;
	}
	epoch = cur->owner_epoch + moves;
	if (n && (rc = vols_move(name, cur, mv, n, sv, err, errlen)) < 0)
		goto out;
	swapped = n;
	/* Shallow copy: only the owner record (and the volumes asked for)
	 * change, all else (unknown fields of a newer hca included) is written
	 * back as it was read. */
	w = *cur;
	w.owner = (char *)next->owner;
	w.owner_epoch = epoch;
	w.active = next->active;
	rc = sto_vm_put(st, name, &w, version, &nv, err, errlen);
	if (rc == -ECANCELED)
		rc = STO_FAIL(LOG_DEBUG, err, errlen, -ECANCELED,
			      "vm %s: record changed while its owner was being set; read it again",
			      name);
out:
	if (out_epoch)
		*out_epoch = rc == 0 ? epoch : 0;
	if (out_version)
		*out_version = rc == 0 ? nv : 0;
	vols_restore(sv, swapped);
	if (cur)
		hca__vm_record__free_unpacked(cur, NULL);
	return rc;
}

int sto_owner_confirm(struct sto_store *st, const char *name, const struct sto_owner *want,
		      char *err, size_t errlen)
{
	Hca__VmRecord *cur = NULL;
	uint64_t version = 0;
	int rc = owner_args(name, want, NULL, err, errlen);

	if (rc == 0)
		rc = sto_vm_get(st, name, &cur, &version, err, errlen);
	if (rc == 0)
		rc = owner_match(name, cur, want, want->active, err, errlen);
	if (cur)
		hca__vm_record__free_unpacked(cur, NULL);
	return rc;
}
