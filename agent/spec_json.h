/*
 * spec_json: VM specs between people and the wire. Parses spec files (JSON)
 * and hcactl's --disk/--nic flags into an Hca__VmSpec, and renders the
 * daemon's VmStatus and NodeInfo as JSON for `--json`.
 *
 * Pure: no I/O, no daemon. Only syntax and structure are checked here; hcad
 * validates the spec again (hv_spec_validate) and owns every range rule.
 *
 * Errors are one line without the file name, e.g. "disks[1]: unknown key
 * 'sise'"; the caller adds its own prefix.
 */
#ifndef HCA_SPEC_JSON_H
#define HCA_SPEC_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "proto/hca.pb-c.h"

/* What a VM gets when the spec file or the flags say nothing. */
#define SPEC_DEFAULT_VCPUS 1u
#define SPEC_DEFAULT_MEMORY_MIB 128u

/*
 * A new empty spec with the defaults above, or NULL. Every string and
 * sub-message is heap-allocated, so hca__vm_spec__free_unpacked() and
 * spec_free() both release it.
 */
Hca__VmSpec *spec_new(void);
/* NULL is a no-op. */
void spec_free(Hca__VmSpec *spec);

/*
 * Parse a spec file's text. Returns a new spec (free with spec_free()), or
 * NULL with one line in @err. Unknown keys, duplicate keys, wrong types and
 * bad sizes are errors naming the field. Defaults: vcpus 1, memory 128 MiB,
 * disk names disk0, disk1..., disk format qcow2 for a created volume (size)
 * and raw for an attached image (path), NIC mode user. A JSON null counts as
 * an absent key. Paths are kept as written (see spec_resolve_paths()).
 */
Hca__VmSpec *spec_from_json(const char *text, char *err, size_t errlen);

/* The spec in the spec file format (sizes in bytes); NULL on ENOMEM. */
json_t *spec_to_json(const Hca__VmSpec *spec);

/*
 * A size: decimal bytes, or a decimal number followed by K, M, G, T with an
 * optional "iB" ("512M", "64MiB", "2g"); all units are 1024-based. Returns 0
 * (zero included: callers decide), -EINVAL for bad syntax (signs, spaces,
 * fractions, other units) or -ERANGE above 2^64-1.
 */
int spec_parse_size(const char *s, uint64_t *bytes);

/*
 * Set the memory from a size in bytes. Returns 0, or -EINVAL with one line
 * in @err when @bytes is zero or not a whole number of MiB (the wire
 * carries MiB).
 */
int spec_set_memory(Hca__VmSpec *spec, uint64_t bytes, char *err, size_t errlen);

/* Replace the string *@field with a copy of @value. 0 or -ENOMEM. */
int spec_set_string(char **field, const char *value);

/* The spec's boot section, created empty when missing; NULL on ENOMEM. */
Hca__BootSpec *spec_boot(Hca__VmSpec *spec);

/* Append an empty disk named "disk<index>" / a user-mode NIC; NULL on ENOMEM. */
Hca__DiskSpec *spec_add_disk(Hca__VmSpec *spec);
Hca__NicSpec *spec_add_nic(Hca__VmSpec *spec);

/*
 * Append a disk from an hcactl --disk argument: "SIZE", or comma-separated
 * name=N, size=SIZE, path=P, format=qcow2|raw, readonly[=true|false].
 * Returns 0, or -EINVAL/-ENOMEM with one line in @err.
 */
int spec_add_disk_arg(Hca__VmSpec *spec, const char *arg, char *err, size_t errlen);

/* Append a NIC from "user[,mac=M]" or "bridge=BR[,mac=M]"; like above. */
int spec_add_nic_arg(Hca__VmSpec *spec, const char *arg, char *err, size_t errlen);

/*
 * Make the kernel, initrd and disk image paths absolute against the absolute
 * directory @base, because hcad does not share the caller's cwd. Returns 0
 * or -ENOMEM.
 */
int spec_resolve_paths(Hca__VmSpec *spec, const char *base);

/* Names used in JSON and by people; NULL for a value outside the enum. */
const char *spec_format_name(Hca__DiskFormat f);
const char *spec_nic_mode_name(Hca__NicMode m);

/*
 * Where disk @idx of @st lives: its own path, else the path of the volume
 * hcad created for it (VolumeRef.disk == DiskSpec.name), else "". Sets
 * *@created when it is such a volume. The string belongs to @st.
 */
const char *status_disk_path(const Hca__VmStatus *st, size_t idx, bool *created);

/* For --json; NULL on ENOMEM. The caller owns the reference. */
json_t *status_to_json(const Hca__VmStatus *st);
json_t *node_to_json(const Hca__NodeInfo *n);

#endif
