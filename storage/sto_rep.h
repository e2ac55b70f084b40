/*
 * sto_rep: the replication relation of a VM (key rep/NAME), on top of the
 * state store. One relation per VM: which node ships its disks to which,
 * how often, how many recovery points are kept, and the figures of the
 * cycles so far. Only the node that owns the VM writes it (its cycles run
 * there), every write a CAS on the record's version; any node reads it.
 *
 * Like sto.h: calls block (run them on a worker), return 0 / -errno, and
 * write one line for people to @err.
 */
#ifndef HCA_STO_REP_H
#define HCA_STO_REP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/hca.pb-c.h"
#include "storage/sto.h"

#define STO_REP_FORMAT 1u
#define STO_REP_FORMAT_MAX 1u
#define STO_REP_PREFIX "rep/"

/* "rep/NAME" into @key (STO_KEY_MAX + 1 bytes), "" if it does not fit. */
void sto_rep_key(char *key, size_t len, const char *name);

/*
 * Decode a stored relation read from rep/@name (borrowed @buf): checks the
 * frame, the format (a newer one: -EPROTONOSUPPORT) and that it names
 * @name (-EBADMSG otherwise). NULL with *rc and @err set.
 */
Hca__RepRelation *sto_rep_decode(const uint8_t *buf, size_t len, const char *name, int *rc,
				 char *err, size_t errlen);

/* Encode @r (borrowed) as a frame with format STO_REP_FORMAT: malloc'd. */
uint8_t *sto_rep_encode(const Hca__RepRelation *r, size_t *len);

/* A deep copy (free with hca__rep_relation__free_unpacked); NULL: ENOMEM. */
Hca__RepRelation *sto_rep_copy(const Hca__RepRelation *r);

/* Read rep/@name: *out (caller frees) and *version. 0; -ENOENT (no
 * relation); -EBADMSG / -EPROTONOSUPPORT; other -errno from the store. */
int sto_rep_get(struct sto_store *st, const char *name, Hca__RepRelation **out,
		uint64_t *version, char *err, size_t errlen);

/* Write @r as rep/@name iff its version is @expect (0: create). As sto_put(). */
int sto_rep_put(struct sto_store *st, const char *name, const Hca__RepRelation *r,
		uint64_t expect, uint64_t *new_version, char *err, size_t errlen);

/* Remove rep/@name at version @expect. As sto_del(). */
int sto_rep_del(struct sto_store *st, const char *name, uint64_t expect, char *err,
		size_t errlen);

/* The names of every VM with a relation, sorted (caller frees with
 * sto_keys_free). As sto_list(). */
int sto_rep_list(struct sto_store *st, char ***names, size_t *n, char *err, size_t errlen);

#endif /* HCA_STO_REP_H */
