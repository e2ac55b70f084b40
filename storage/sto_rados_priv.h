/*
 * sto_rados_priv.h: what the rados store's files share, and only they may
 * use. The files, by concern:
 *
 *   sto_store_rados.c        records, compare-and-swap, listing, leases, the
 *                            probe, the handle, and the one error helper
 *   sto_store_rados_watch.c  watches (the watch thread, re-watching) and
 *                            the bounded notify after each put and del
 *
 * What the rados store shares with the rbd volumes is in sto_priv.h.
 */
#ifndef HCA_STO_RADOS_PRIV_H
#define HCA_STO_RADOS_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include <rados/librados.h>

#include "storage/sto_priv.h"

/* The longest namespace prefix of a store (sto_store_open_rados_prefixed). */
#define STO_RADOS_NS_PREFIX_MAX 32u

struct store_rados {
	struct sto_store base; /* first: the front end's handle */
	rados_t cluster;
	int64_t pool_id;
	char *pool;
	char *prefix; /* of every namespace; "" outside tests */
	unsigned op_timeout_s;
};

static inline struct store_rados *to_rados(struct sto_store *st)
{
	return (struct store_rados *)st;
}

/* ---- sto_store_rados.c ---- */

/*
 * The one place a librados result becomes a store error: the errno is the
 * contract's already (librados speaks -errno), the line for people names
 * @subject and what was being done (a timeout: after how long), and it is
 * logged once at @prio.
 */
int sto_rados_fail(unsigned op_timeout_s, uint8_t prio, const char *subject,
		   const char *what, int rc, char *err, size_t errlen);

/* A new io context of @r's pool in RADOS namespace @ns (the store's prefix
 * included), for one call: 0, or a failure named after @subject with *io
 * NULL. sto_rados_io_close(NULL) is a no-op. */
int sto_rados_io_open(struct store_rados *r, const char *subject,
		      const char *ns, rados_ioctx_t *io, char *err,
		      size_t errlen);
void sto_rados_io_close(rados_ioctx_t io);

/* ---- sto_store_rados_watch.c ---- */

/* Tell the watchers of @io's namespace that @key changed. The write has
 * succeeded already, so a failure here is logged (about @subject, a
 * timeout after @op_timeout_s), never returned; no watch object means
 * nobody ever watched. Waits at most the op timeout plus the notify's. */
void sto_rados_notify(rados_ioctx_t io, const char *key, const char *subject,
		      unsigned op_timeout_s);

/* The ops table's watch_new and watch_free (sto_priv.h). */
struct sto_watch *sto_rados_watch_new(struct sto_store *st, const char *ns,
				      sto_watch_fn fn, void *opaque,
				      char *err, size_t errlen);
void sto_rados_watch_free(struct sto_watch *w);

#endif
