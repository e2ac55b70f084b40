/*
 * sto_store: the state store front end. Keys, sizes, versions, cookies and
 * namespaces are checked here once, so every backend sees only arguments
 * the contract in sto.h allows and the contract test exercises the same
 * rules everywhere. Also the record format both backends store.
 */
#include "storage/sto_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"

#define REC_MAGIC 0x48434152u /* "HCAR" */
#define REC_FORMAT 1u

/* ---- the record format (see sto_priv.h) ---- */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v);
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, v >> 32);
	put32(p + 4, v);
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)get16(p) << 16 | get16(p + 2);
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

void sto_rec_hdr_encode(uint8_t *h, uint64_t version, const void *buf,
			uint32_t len)
{
	memset(h, 0, STO_REC_HDR_LEN);
	put32(h, REC_MAGIC);
	put16(h + 4, REC_FORMAT);
	put16(h + 6, STO_REC_HDR_LEN);
	put64(h + 8, version);
	put32(h + 16, len);
	put32(h + 20, wire_crc32c(buf, len));
	put32(h + 28, wire_crc32c(h, 28));
}

int sto_rec_hdr_decode(const uint8_t *h, struct sto_rec_hdr *out, char *why,
		       size_t whylen)
{
	why[0] = '\0';
	if (get32(h) != REC_MAGIC)
		snprintf(why, whylen, "bad magic 0x%08x", get32(h));
	else if (get32(h + 28) != wire_crc32c(h, 28))
		snprintf(why, whylen, "header checksum mismatch");
	else if (get16(h + 4) != REC_FORMAT || get16(h + 6) != STO_REC_HDR_LEN)
		snprintf(why, whylen, "unsupported format %u (header %u bytes)",
			 get16(h + 4), get16(h + 6));
	else if (get64(h + 8) == 0)
		snprintf(why, whylen, "version 0");
	else if (get32(h + 16) > STO_REC_MAX)
		snprintf(why, whylen, "payload length %u over the limit",
			 get32(h + 16));
	if (why[0])
		return -EBADMSG;
	out->version = get64(h + 8);
	out->len = get32(h + 16);
	out->crc = get32(h + 20);
	return 0;
}

int sto_rec_check(const uint8_t *rec, size_t n, struct sto_rec_hdr *out,
		  char *why, size_t whylen)
{
	uint32_t crc;

	if (n < STO_REC_HDR_LEN) {
		snprintf(why, whylen, "truncated header (%zu of %u bytes)", n,
			 STO_REC_HDR_LEN);
		return -EBADMSG;
	}
	if (sto_rec_hdr_decode(rec, out, why, whylen) < 0)
		return -EBADMSG;
	if (n != STO_REC_HDR_LEN + (size_t)out->len) {
		snprintf(why, whylen, "%s: %zu bytes, header says %u + %u",
			 n < STO_REC_HDR_LEN + (size_t)out->len ? "truncated" :
								  "trailing bytes",
			 n, STO_REC_HDR_LEN, out->len);
		return -EBADMSG;
	}
	crc = wire_crc32c(rec + STO_REC_HDR_LEN, out->len);
	if (crc != out->crc) {
		snprintf(why, whylen, "payload crc32c 0x%08x, header says 0x%08x",
			 crc, out->crc);
		return -EBADMSG;
	}
	return 0;
}

/* ---- argument checks ---- */

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

int sto_store_probe(struct sto_store *st, char *err, size_t errlen)
{
	return st->ops->probe(st, err, errlen);
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

/* ---- leases ---- */

bool sto_cookie_valid(const char *cookie)
{
	size_t n;

	if (!cookie)
		return false;
	n = strnlen(cookie, STO_COOKIE_MAX + 1);
	return n >= 1 && n <= STO_COOKIE_MAX &&
	       strspn(cookie, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@-") == n;
}

static int check_cookie(const char *key, const char *cookie, char *err,
			size_t errlen)
{
	if (sto_cookie_valid(cookie))
		return 0;
	return STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			"key %s: lease cookie '%.70s' is invalid: want 1-64 of [A-Za-z0-9._:@-]",
			key, cookie ? cookie : "(null)");
}

int sto_lock(struct sto_store *st, const char *key, const char *cookie,
	     unsigned duration_s, char *err, size_t errlen)
{
	int rc = check_key(key, err, errlen);

	if (rc == 0)
		rc = check_cookie(key, cookie, err, errlen);
	if (rc == 0 && duration_s == 0)
		rc = STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			      "key %s: a lease needs a duration of 1 s or more",
			      key);
	return rc ? rc : st->ops->lock(st, key, cookie, duration_s, err, errlen);
}

int sto_unlock(struct sto_store *st, const char *key, const char *cookie,
	       char *err, size_t errlen)
{
	int rc = check_key(key, err, errlen);

	if (rc == 0)
		rc = check_cookie(key, cookie, err, errlen);
	return rc ? rc : st->ops->unlock(st, key, cookie, err, errlen);
}

int sto_lock_owner(struct sto_store *st, const char *key, char *cookie_out,
		   size_t len, char *err, size_t errlen)
{
	char holder[STO_COOKIE_MAX + 1] = "";
	int rc = check_key(key, err, errlen);

	if (len)
		cookie_out[0] = '\0';
	if (rc == 0)
		rc = st->ops->lock_owner(st, key, holder, sizeof(holder), err,
					 errlen);
	if (rc == 0 && strlen(holder) >= len)
		rc = STO_FAIL(LOG_ERR, err, errlen, -ERANGE,
			      "key %s: lease holder '%s' does not fit in %zu bytes",
			      key, holder, len);
	if (rc == 0)
		memcpy(cookie_out, holder, strlen(holder) + 1);
	return rc;
}

/* ---- watches ---- */

struct sto_watch *sto_watch_new(struct sto_store *st, const char *ns,
				sto_watch_fn fn, void *opaque, char *err,
				size_t errlen)
{
	size_t n = ns ? strnlen(ns, STO_KEY_MAX) : 0;

	if (!ns || n >= STO_KEY_MAX - 1 || !sto_part_valid(ns, n)) {
		STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			 "namespace '%.210s' is invalid: want [a-z0-9._-] starting with [a-z0-9], no '..'",
			 ns ? ns : "(null)");
		return NULL;
	}
	if (!fn) {
		STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			 "namespace %s: a watch needs a callback", ns);
		return NULL;
	}
	return st->ops->watch_new(st, ns, fn, opaque, err, errlen);
}

void sto_watch_free(struct sto_watch *w)
{
	if (w)
		w->st->ops->watch_free(w);
}
