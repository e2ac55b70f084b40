/*
 * sto_store: the state store front end. Keys, sizes and versions are
 * checked here once, so every backend sees only arguments the contract in
 * sto.h allows and the contract test exercises the same rules everywhere.
 */
#include "storage/sto_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

bool sto_key_valid(const char *key)
{
	const char *slash;
	size_t n;

	if (!key)
		return false;
	n = strnlen(key, STO_KEY_MAX + 1);
	slash = memchr(key, '/', n);
	return n <= STO_KEY_MAX && slash &&
	       sto_part_valid(key, (size_t)(slash - key)) &&
	       sto_part_valid(slash + 1, n - (size_t)(slash - key) - 1);
}

/* A prefix is a leading part of some valid key: the namespace must be
 * whole and valid once a '/' is given. */
static bool prefix_valid(const char *prefix)
{
	size_t n = strnlen(prefix, STO_KEY_MAX + 1);
	const char *slash = memchr(prefix, '/', n);

	if (n > STO_KEY_MAX ||
	    strspn(prefix, "abcdefghijklmnopqrstuvwxyz0123456789._-/") != n)
		return false;
	return !slash || (sto_part_valid(prefix, (size_t)(slash - prefix)) &&
			  !strchr(slash + 1, '/'));
}

static int check_key(const char *key, char *err, size_t errlen)
{
	if (sto_key_valid(key))
		return 0;
	return STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			"key '%.210s' is invalid: want ns/name, each part of [a-z0-9._-] starting with [a-z0-9], no '..', at most 200 characters",
			key ? key : "(null)");
}

void sto_store_close(struct sto_store *st)
{
	if (st)
		st->ops->close(st);
}

const char *sto_store_backend(const struct sto_store *st)
{
	return st->ops->name;
}

int sto_get(struct sto_store *st, const char *key, uint8_t **buf, size_t *len,
	    uint64_t *version, char *err, size_t errlen)
{
	int rc = check_key(key, err, errlen);

	*buf = NULL;
	*len = 0;
	*version = 0;
	return rc ? rc : st->ops->get(st, key, buf, len, version, err, errlen);
}

int sto_put(struct sto_store *st, const char *key, const void *buf, size_t len,
	    uint64_t expect, uint64_t *new_version, char *err, size_t errlen)
{
	uint64_t v = 0;
	int rc = check_key(key, err, errlen);

	if (rc < 0)
		goto out;
	if (len > STO_REC_MAX)
		rc = STO_FAIL(LOG_ERR, err, errlen, -EMSGSIZE,
			      "key %s: payload of %zu bytes is over the %u byte limit",
			      key, len, STO_REC_MAX);
	else if (len && !buf)
		rc = STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			      "key %s: no payload given for %zu bytes", key, len);
	else if (expect == UINT64_MAX)
		rc = STO_FAIL(LOG_ERR, err, errlen, -EOVERFLOW,
			      "key %s: version %" PRIu64 " cannot be incremented",
			      key, expect);
	else
		rc = st->ops->put(st, key, len ? buf : "", len, expect, &v, err,
				  errlen);
out:
	if (new_version)
		*new_version = rc == 0 ? v : 0;
	return rc;
}

int sto_del(struct sto_store *st, const char *key, uint64_t expect, char *err,
	    size_t errlen)
{
	int rc = check_key(key, err, errlen);

	if (rc == 0 && expect == 0)
		rc = STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			      "key %s: delete needs the version to expect, not 0",
			      key);
	return rc ? rc : st->ops->del(st, key, expect, err, errlen);
}

static int cmp_keys(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int sto_list(struct sto_store *st, const char *prefix, char ***keys, size_t *n,
	     char *err, size_t errlen)
{
	int rc = 0;

	*keys = NULL;
	*n = 0;
	if (!prefix || !prefix_valid(prefix))
		return STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
				"key prefix '%.210s' is invalid: no key could start with it",
				prefix ? prefix : "(null)");
	rc = st->ops->list(st, prefix, keys, n, err, errlen);
	if (rc == 0 && *n > 1)
		qsort(*keys, *n, sizeof(**keys), cmp_keys);
	return rc;
}

void sto_keys_free(char **keys, size_t n)
{
	if (!keys)
		return;
	for (size_t i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
}
