/*
 * sto_vm: the VM record (key vm/NAME) and the owner protocol on top of the
 * state store. Below agent/, so migration/ and replica/ move owners through
 * the very same helper as `vm start`.
 *
 * The owner record is three fields of hca.VmRecord: owner (the node on which
 * the VM may run), owner_epoch (+1 on every change of owner) and active (a
 * QEMU may run on the owner). The rules, also in ARCHITECTURE.md:
 *  - a node launches a QEMU only after a CAS that names it owner with active
 *    set, at the epoch it read, and after sto_owner_confirm() right before
 *    the launch;
 *  - another node takes a VM (CAS to itself, epoch + 1) only while active
 *    is clear (it passes active false in @expect, so a claim made since it
 *    read makes the CAS fail); an offline owner with active set needs
 *    fencing first;
 *  - the owner clears active (CAS) once it has seen its QEMU end;
 *  - every change is a CAS on the record's store version, so of two racing
 *    moves exactly one wins and the other re-reads and decides again.
 *
 * Like sto.h: calls block (run them on a worker), return 0 / -errno, and
 * write one line for people to @err.
 */
#ifndef HCA_STO_VM_H
#define HCA_STO_VM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/hca.pb-c.h"
#include "storage/sto.h"

/* Format written by this version; records of format 0 are read as 1. */
#define STO_VM_FORMAT 2u
/* Newest format this version understands; a newer record is refused. */
#define STO_VM_FORMAT_MAX 2u

/* "vm/NAME" into @key (STO_KEY_MAX + 1 bytes). If it does not fit (or @name
 * is NULL) @key is "", which no store call accepts, never a cut-off name. */
void sto_vm_key(char *key, size_t len, const char *name);

/*
 * Decode a stored VM record (a wire frame of WIRE_T_VM_RECORD) read from
 * key vm/@name. Checks the frame, that the spec names @name, and the format
 * (newer than STO_VM_FORMAT_MAX: -EPROTONOSUPPORT, "written by a newer hca
 * (record format 3, this node reads up to 2); upgrade this node"). The
 * format is checked before the spec, so a newer record is refused as newer,
 * never as corrupt. A record of format 0 comes back with format 1.
 * Spec rules are the hypervisor's (hv_spec_check), run by the caller.
 * @buf/@len: borrowed; @name: non-NULL. The cause is logged (LOG_ERR).
 * Returns the record (caller frees with hca__vm_record__free_unpacked) or
 * NULL with *rc (may be NULL) set to -EBADMSG / -EPROTONOSUPPORT and @err
 * naming the VM.
 */
Hca__VmRecord *sto_vm_decode(const uint8_t *buf, size_t len, const char *name, int *rc,
			     char *err, size_t errlen);

/*
 * Encode @r (borrowed, not modified) as a frame with format STO_VM_FORMAT,
 * whatever @r->format says: malloc'd, caller frees. NULL with errno ENOMEM,
 * or EMSGSIZE past WIRE_MAX_PAYLOAD (the store's limit is lower: sto_put).
 */
uint8_t *sto_vm_encode(const Hca__VmRecord *r, size_t *len);

/* A deep copy of @r (borrowed), freed with hca__vm_record__free_unpacked;
 * NULL on ENOMEM. */
Hca__VmRecord *sto_vm_copy(const Hca__VmRecord *r);

/*
 * Read and decode vm/@name: *out (caller frees) and *version.
 * Returns 0; -ENOENT; -EBADMSG / -EPROTONOSUPPORT (see sto_vm_decode);
 * other -errno from the store (a timeout: storage unavailable).
 */
int sto_vm_get(struct sto_store *st, const char *name, Hca__VmRecord **out,
	       uint64_t *version, char *err, size_t errlen);

/*
 * Write @r (borrowed, not modified) as vm/@name iff its version is @expect
 * (0: create). The stored format is STO_VM_FORMAT (see sto_vm_encode).
 * *new_version (may be NULL) as sto_put().
 * Returns as sto_put(), and -EINVAL if @r's spec does not name @name (the
 * reader would call it corrupt); an -errno other than -ECANCELED/-EEXIST/
 * -ENOENT/-EMSGSIZE/-EINVAL means the outcome is unknown: re-read before
 * undoing.
 */
int sto_vm_put(struct sto_store *st, const char *name, const Hca__VmRecord *r,
	       uint64_t expect, uint64_t *new_version, char *err, size_t errlen);

/* What a caller believes the owner record is, and what it wants it to be. */
struct sto_owner {
	const char *owner;    /* node name, borrowed; "": no owner (a value
			       * like any other), never NULL */
	uint64_t epoch;
	bool active;
	uint64_t incarnation; /* 0: do not check */
};

/*
 * The one compare-and-swap that changes a VM's owner record. Re-reads
 * vm/@name; if its owner, epoch, active flag and (when non-zero) incarnation
 * are still those of @expect, writes @next's owner and active, with the
 * epoch + 1 if the owner changes (the same epoch otherwise), at the version
 * read. No other field changes (fields this version does not know are
 * written back as read); the record is rewritten in STO_VM_FORMAT.
 * @next->epoch and @next->incarnation are ignored. An @expect->owner of ""
 * matches only a record without owner; a @next->owner of "" leaves the VM
 * without one (active must then be false).
 * Active is compared because a claim keeps the epoch: without it, a node
 * that read active clear could take a VM its owner has claimed since.
 * On success *out_epoch (may be NULL) is the epoch written and *out_version
 * (may be NULL) the record's new version; both are 0 on failure.
 * Returns 0 (this call wrote it); -ENOENT (undefined meanwhile); -ESTALE (the
 * owner record is not @expect any more: someone else moved, claimed or
 * released it, or the VM was defined again; @err says what it is now);
 * -ECANCELED (the record changed between the read and the write; re-read and
 * decide again); -EBADMSG / -EPROTONOSUPPORT; -EINVAL (a NULL owner, or
 * active without owner); -EOVERFLOW (the epoch is at its maximum); any
 * other -errno: outcome unknown. A repeated call with the same @expect and
 * @next then answers -ESTALE if the first write landed and changed the
 * owner record (or someone else changed it); sto_owner_confirm() with what
 * was asked for (@next's owner and active, @expect's epoch + 1 if the owner
 * changes) tells which. Success is never reported for a write this call
 * did not make, so of two calls from the same @expect at most one returns
 * 0, even with the same @next.
 */
int sto_owner_cas(struct sto_store *st, const char *name, const struct sto_owner *expect,
		  const struct sto_owner *next, uint64_t *out_epoch, uint64_t *out_version,
		  char *err, size_t errlen);

/*
 * A volume that changes place with the owner (a shared-nothing migration
 * into the cluster's pool): disk @disk's volume becomes @volume in
 * @backend, opened as @path in @format; its DiskSpec's backend follows.
 */
#define STO_VOL_MOVES_MAX 16u

struct sto_vol_move {
	const char *disk;
	const char *backend;
	const char *volume;
	const char *path;
	Hca__DiskFormat format;
};

/*
 * sto_owner_cas() that also rewrites the volumes @moves (@n) in the same
 * write, so the owner and where its disks are change together or not at
 * all. -ENOENT (with nothing written) if a disk has no volume in the
 * record. With @n 0 it is sto_owner_cas().
 */
int sto_owner_cas_moving(struct sto_store *st, const char *name, const struct sto_owner *expect,
			 const struct sto_owner *next, const struct sto_vol_move *moves, size_t n,
			 uint64_t *out_epoch, uint64_t *out_version, char *err, size_t errlen);

/*
 * Right before a launch: is vm/@name still owned by @want->owner at
 * @want->epoch (and @want->incarnation when non-zero), with active set if
 * @want->active (with @want->active false, active is not looked at)?
 * Returns 0; -ESTALE (no: @err says what it is now); -ENOENT; -EINVAL (a
 * NULL owner); other -errno from the store, -EBADMSG / -EPROTONOSUPPORT
 * included (do not launch).
 */
int sto_owner_confirm(struct sto_store *st, const char *name, const struct sto_owner *want,
		      char *err, size_t errlen);

#endif
