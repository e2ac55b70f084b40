/*
 * sto_rep: the replication relation records (rep/NAME). See sto_rep.h.
 */
#include "storage/sto_rep.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"
#include "storage/sto_priv.h"

void sto_rep_key(char *key, size_t len, const char *name)
{
	int n = name ? snprintf(key, len, STO_REP_PREFIX "%s", name) : -1;

	if (n < 0 || (size_t)n >= len)
		key[0] = '\0';
}

static int rep_key(char *key, const char *name, char *err, size_t errlen)
{
	sto_rep_key(key, STO_KEY_MAX + 1, name);
	if (sto_key_valid(key))
		return 0;
	return STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			"vm '%.100s': not a name a relation can be stored under",
			name ? name : "(null)");
}

Hca__RepRelation *sto_rep_decode(const uint8_t *buf, size_t len, const char *name, int *rc,
				 char *err, size_t errlen)
{
	int werr = -EBADMSG, r = 0;
	Hca__RepRelation *rel = (Hca__RepRelation *)wire_frame_unpack(
		buf, len, STO_REC_MAX, WIRE_T_REP_RELATION, &hca__rep_relation__descriptor, &werr);

	if (!rel)
		r = STO_FAIL(LOG_ERR, err, errlen, -EBADMSG,
			     "vm %s: replication record corrupt (%s)", name, wire_strerror(werr));
	else if (rel->format > STO_REP_FORMAT_MAX)
		r = STO_FAIL(LOG_ERR, err, errlen, -EPROTONOSUPPORT,
			     "vm %s: replication record written by a newer hca (format %" PRIu32
			     ", this node reads up to %u); upgrade this node",
			     name, rel->format, STO_REP_FORMAT_MAX);
	else if (strcmp(rel->vm, name) != 0)
		r = STO_FAIL(LOG_ERR, err, errlen, -EBADMSG,
			     "vm %s: replication record corrupt (names vm '%.100s')", name, rel->vm);
	if (rc)
		*rc = r;
	if (r < 0 && rel) {
		hca__rep_relation__free_unpacked(rel, NULL);
		rel = NULL;
	}
	return rel;
}

uint8_t *sto_rep_encode(const Hca__RepRelation *r, size_t *len)
{
	Hca__RepRelation w = *r; /* shallow: the frame gets our format */

	w.format = STO_REP_FORMAT;
	return wire_frame_pack(WIRE_T_REP_RELATION, &w.base, len);
}

Hca__RepRelation *sto_rep_copy(const Hca__RepRelation *r)
{
	size_t len = hca__rep_relation__get_packed_size(r);
	uint8_t *buf = malloc(len ? len : 1);
	Hca__RepRelation *c = NULL;

	if (!buf)
		return NULL;
	hca__rep_relation__pack(r, buf);
	c = hca__rep_relation__unpack(NULL, len, buf);
	free(buf);
	if (!c)
		errno = ENOMEM;
	return c;
}

int sto_rep_get(struct sto_store *st, const char *name, Hca__RepRelation **out,
		uint64_t *version, char *err, size_t errlen)
{
	char key[STO_KEY_MAX + 1];
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc = rep_key(key, name, err, errlen);

	*out = NULL;
	*version = 0;
	if (rc < 0)
		return rc;
	rc = sto_get(st, key, &buf, &len, version, err, errlen);
	if (rc == -ENOENT)
		rc = STO_FAIL(LOG_DEBUG, err, errlen, -ENOENT, "vm %s: not replicated", name);
	if (rc == 0)
		*out = sto_rep_decode(buf, len, name, &rc, err, errlen);
	if (rc < 0)
		*version = 0;
	free(buf);
	return rc;
}

int sto_rep_put(struct sto_store *st, const char *name, const Hca__RepRelation *r,
		uint64_t expect, uint64_t *new_version, char *err, size_t errlen)
{
	char key[STO_KEY_MAX + 1];
	uint8_t *frame = NULL;
	size_t len = 0;
	int rc = rep_key(key, name, err, errlen);

	if (new_version)
		*new_version = 0;
	if (rc < 0)
		return rc;
	if (!r || !r->vm || strcmp(r->vm, name) != 0)
		return STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
				"vm %s: refusing to store a relation that names vm '%.100s'", name,
				r && r->vm ? r->vm : "");
	if (!(frame = sto_rep_encode(r, &len)))
		return STO_FAIL(LOG_ERR, err, errlen, -errno,
				"vm %s: cannot encode its replication record: %s", name,
				sto_errstr(errno));
	rc = sto_put(st, key, frame, len, expect, new_version, err, errlen);
	free(frame);
	return rc;
}

int sto_rep_del(struct sto_store *st, const char *name, uint64_t expect, char *err,
		size_t errlen)
{
	char key[STO_KEY_MAX + 1];
	int rc = rep_key(key, name, err, errlen);

	return rc < 0 ? rc : sto_del(st, key, expect, err, errlen);
}

int sto_rep_list(struct sto_store *st, char ***names, size_t *n, char *err, size_t errlen)
{
	size_t plen = strlen(STO_REP_PREFIX);
	int rc = sto_list(st, STO_REP_PREFIX, names, n, err, errlen);

	/* the names without the prefix, in place */
	for (size_t i = 0; rc == 0 && i < *n; i++)
		memmove((*names)[i], (*names)[i] + plen, strlen((*names)[i]) - plen + 1);
	return rc;
}
