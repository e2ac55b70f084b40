/*
 * test_sto_store: the state store contract, written once and run against
 * every backend in `backends[]`, then what only one backend can show: the
 * dir backend's files on disk and processes racing on one directory, the
 * rados backend's objects.
 *
 * Which backends run: HCA_TEST_STORE_BACKENDS, a comma-separated list of
 * "dir" (the default) and "rados". rados needs HCA_TEST_CEPH_CONF (and takes
 * HCA_TEST_CEPH_POOL, default "hca", and HCA_TEST_CEPH_ID, default
 * "admin"); a backend asked for but not runnable fails, it is never
 * skipped. Each rados test works in namespaces of its own ("t<pid>x<n>."
 * prefixed) and removes every object in them at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <rados/librados.h>

#include "storage/sto.h"
#include "storage/sto_priv.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- backends under test ---- */

struct backend {
	const char *name;
	/* Make a fresh, empty environment for one test; 0 or -errno. */
	int (*setup)(void **ctx);
	/* Open a handle on it; may be called again to test reopening. */
	struct sto_store *(*open)(void *ctx, char *err, size_t errlen);
	/* Remove the environment and everything in it. */
	void (*teardown)(void *ctx);
};

struct dir_ctx {
	char top[64];	/* mkdtemp'd, removed at the end */
	char store[96]; /* below it, so open must create it */
};

static int dir_setup(void **ctx)
{
	struct dir_ctx *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	snprintf(c->top, sizeof(c->top), "/tmp/hca-sto-XXXXXX");
	if (!mkdtemp(c->top)) {
		free(c);
		return -errno;
	}
	snprintf(c->store, sizeof(c->store), "%s/store", c->top);
	*ctx = c;
	return 0;
}

static struct sto_store *dir_open(void *ctx, char *err, size_t errlen)
{
	return sto_store_open_dir(((struct dir_ctx *)ctx)->store, err, errlen);
}

static int rm_one(const char *path, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	return remove(path);
}

static void dir_teardown(void *ctx)
{
	struct dir_ctx *c = ctx;

	nftw(c->top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(c);
}

/* ---- rados: a real Ceph cluster, named by the environment ---- */

struct rados_ctx {
	char prefix[32]; /* of this test's namespaces: "t<pid>x<n>." */
};

static const char *env_or(const char *name, const char *dflt)
{
	const char *v = getenv(name);

	return v && *v ? v : dflt;
}

static const char *ceph_conf(void)
{
	return env_or("HCA_TEST_CEPH_CONF", NULL);
}

static const char *ceph_pool(void)
{
	return env_or("HCA_TEST_CEPH_POOL", "hca");
}

static const char *ceph_id(void)
{
	return env_or("HCA_TEST_CEPH_ID", "admin");
}

/* The test's own connection, for looking behind the store's back. */
static rados_t test_cluster;

static rados_ioctx_t test_io(const char *ns)
{
	rados_ioctx_t io = NULL;

	if (!test_cluster) {
		assert_int_equal(rados_create(&test_cluster, ceph_id()), 0);
		assert_int_equal(rados_conf_read_file(test_cluster, ceph_conf()),
				 0);
		assert_int_equal(rados_connect(test_cluster), 0);
	}
	assert_int_equal(rados_ioctx_create(test_cluster, ceph_pool(), &io), 0);
	rados_ioctx_set_namespace(io, ns);
	return io;
}

static int rados_setup(void **ctx)
{
	static unsigned seq;
	struct rados_ctx *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	snprintf(c->prefix, sizeof(c->prefix), "t%dx%u.", (int)getpid(), seq++);
	*ctx = c;
	return 0;
}

static struct sto_store *rados_open(void *ctx, char *err, size_t errlen)
{
	return sto_store_open_rados_prefixed(ceph_conf(), ceph_id(), ceph_pool(),
					     ((struct rados_ctx *)ctx)->prefix,
					     30, err, errlen);
}

/* Remove every object, helpers included, in this test's namespaces. */
static void rados_teardown(void *ctx)
{
	struct rados_ctx *c = ctx;
	rados_ioctx_t all = test_io(LIBRADOS_ALL_NSPACES), one = test_io("");
	const char *name, *key, *ns;
	rados_list_ctx_t lc = NULL;

	assert_int_equal(rados_nobjects_list_open(all, &lc), 0);
	while (rados_nobjects_list_next(lc, &name, &key, &ns) == 0) {
		if (!ns || strncmp(ns, c->prefix, strlen(c->prefix)))
			continue;
		rados_ioctx_set_namespace(one, ns);
		rados_remove(one, name);
	}
	rados_nobjects_list_close(lc);
	rados_ioctx_destroy(one);
	rados_ioctx_destroy(all);
	free(c);
}

static const struct backend backends[] = {
	{ "dir", dir_setup, dir_open, dir_teardown },
	{ "rados", rados_setup, rados_open, rados_teardown },
};

/* ---- fixture and helpers ---- */

struct fx {
	const struct backend *be;
	void *ctx;
	struct sto_store *st;
	char err[512];
};

/* cmocka hands us the backend as the pre-state. */
static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->be = *state;
	assert_int_equal(f->be->setup(&f->ctx), 0);
	f->st = f->be->open(f->ctx, f->err, sizeof(f->err));
	assert_non_null(f->st);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	sto_store_close(f->st);
	f->be->teardown(f->ctx);
	free(f);
	return 0;
}

static int put_str(struct fx *f, const char *key, const char *s,
		   uint64_t expect, uint64_t *v)
{
	f->err[0] = '\0';
	return sto_put(f->st, key, s, strlen(s), expect, v, f->err,
		       sizeof(f->err));
}

/* Assert @key holds exactly @s at version @version. */
static void expect_rec(struct fx *f, const char *key, const char *s,
		       uint64_t version)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	uint64_t v = 0;

	assert_int_equal(sto_get(f->st, key, &buf, &len, &v, f->err,
				 sizeof(f->err)), 0);
	assert_int_equal(v, version);
	assert_int_equal(len, strlen(s));
	assert_memory_equal(buf, s, len);
	free(buf);
}

static void expect_err_names(struct fx *f, const char *what)
{
	if (!strstr(f->err, what))
		fail_msg("err '%s' does not name '%s'", f->err, what);
}

/* ---- the contract ---- */

static void test_put_get_roundtrip(void **state)
{
	struct fx *f = *state;
	uint64_t v = 0;

	assert_int_equal(put_str(f, "vm/web1", "hello", 0, &v), 0);
	assert_int_equal(v, 1);
	expect_rec(f, "vm/web1", "hello", 1);
}

static void test_binary_and_empty_payloads(void **state)
{
	struct fx *f = *state;
	const uint8_t bin[] = { 0, 1, 0xff, 0, 'x', 0 };
	uint8_t *buf = NULL;
	size_t len = 99;
	uint64_t v = 0;

	assert_int_equal(sto_put(f->st, "vm/bin", bin, sizeof(bin), 0, &v,
				 f->err, sizeof(f->err)), 0);
	assert_int_equal(sto_get(f->st, "vm/bin", &buf, &len, &v, f->err,
				 sizeof(f->err)), 0);
	assert_int_equal(len, sizeof(bin));
	assert_memory_equal(buf, bin, sizeof(bin));
	free(buf);
	assert_int_equal(sto_put(f->st, "vm/empty", NULL, 0, 0, &v, f->err,
				 sizeof(f->err)), 0);
	assert_int_equal(sto_get(f->st, "vm/empty", &buf, &len, &v, f->err,
				 sizeof(f->err)), 0);
	assert_non_null(buf);
	assert_int_equal(len, 0);
	free(buf);
}

static void test_versions_increment(void **state)
{
	struct fx *f = *state;
	uint64_t v = 0;

	assert_int_equal(put_str(f, "vm/web1", "a", 0, &v), 0);
	assert_int_equal(put_str(f, "vm/web1", "b", v, &v), 0);
	assert_int_equal(put_str(f, "vm/web1", "c", v, &v), 0);
	assert_int_equal(v, 3);
	expect_rec(f, "vm/web1", "c", 3);
}

static void test_stale_version_cancelled(void **state)
{
	struct fx *f = *state;
	uint64_t v = 0;

	assert_int_equal(put_str(f, "vm/web1", "a", 0, &v), 0);
	assert_int_equal(put_str(f, "vm/web1", "b", 1, &v), 0);
	v = 42;
	assert_int_equal(put_str(f, "vm/web1", "stale", 1, &v), -ECANCELED);
	assert_int_equal(v, 0);
	expect_err_names(f, "vm/web1");
	expect_rec(f, "vm/web1", "b", 2);
	/* A version from the future is as wrong as an old one. */
	assert_int_equal(put_str(f, "vm/web1", "future", 7, &v), -ECANCELED);
}

static void test_create_existing_eexist(void **state)
{
	struct fx *f = *state;
	uint64_t v = 0;

	assert_int_equal(put_str(f, "vm/web1", "first", 0, &v), 0);
	assert_int_equal(put_str(f, "vm/web1", "second", 0, &v), -EEXIST);
	expect_err_names(f, "vm/web1");
	expect_rec(f, "vm/web1", "first", 1);
}

static void test_update_missing_enoent(void **state)
{
	struct fx *f = *state;

	assert_int_equal(put_str(f, "vm/ghost", "x", 3, NULL), -ENOENT);
	expect_err_names(f, "vm/ghost");
}

static void test_get_missing_enoent(void **state)
{
	struct fx *f = *state;
	uint8_t *buf = (uint8_t *)f; /* must be reset */
	size_t len = 1;
	uint64_t v = 1;

	assert_int_equal(sto_get(f->st, "vm/ghost", &buf, &len, &v, f->err,
				 sizeof(f->err)), -ENOENT);
	assert_null(buf);
	assert_int_equal(v, 0);
	expect_err_names(f, "vm/ghost");
}

static void test_del_wrong_version_refused(void **state)
{
	struct fx *f = *state;
	uint64_t v = 0;

	assert_int_equal(put_str(f, "vm/web1", "a", 0, &v), 0);
	assert_int_equal(put_str(f, "vm/web1", "b", v, &v), 0);
	assert_int_equal(sto_del(f->st, "vm/web1", 1, f->err, sizeof(f->err)),
			 -ECANCELED);
	expect_err_names(f, "vm/web1");
	expect_rec(f, "vm/web1", "b", 2);
	assert_int_equal(sto_del(f->st, "vm/web1", 0, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_int_equal(sto_del(f->st, "vm/web1", 2, f->err, sizeof(f->err)),
			 0);
}

static void test_del_then_gone(void **state)
{
	struct fx *f = *state;
	uint8_t *buf = NULL;
	size_t len;
	uint64_t v = 0;

	assert_int_equal(put_str(f, "vm/web1", "a", 0, &v), 0);
	assert_int_equal(sto_del(f->st, "vm/web1", 1, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(sto_get(f->st, "vm/web1", &buf, &len, &v, f->err,
				 sizeof(f->err)), -ENOENT);
	assert_int_equal(sto_del(f->st, "vm/web1", 1, f->err, sizeof(f->err)),
			 -ENOENT);
	assert_int_equal(sto_del(f->st, "none/x", 1, f->err, sizeof(f->err)),
			 -ENOENT);
	/* Created again, it starts over (see sto_put on what this implies). */
	assert_int_equal(put_str(f, "vm/web1", "again", 0, &v), 0);
	assert_int_equal(v, 1);
}

static void expect_list(struct fx *f, const char *prefix,
			const char *const *want, size_t n_want)
{
	char **keys = NULL;
	size_t n = 99;

	assert_int_equal(sto_list(f->st, prefix, &keys, &n, f->err,
				  sizeof(f->err)), 0);
	assert_int_equal(n, n_want);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(keys[i], want[i]);
	if (n == 0)
		assert_null(keys);
	sto_keys_free(keys, n);
}

static void test_list_prefix_sorted(void **state)
{
	struct fx *f = *state;
	const char *puts[] = { "vm/web2", "node/n1", "vm/db1", "vm/web10",
			       "job/x", "vmx/a" };
	const char *vm[] = { "vm/db1", "vm/web10", "vm/web2" };
	const char *all[] = { "job/x", "node/n1", "vm/db1", "vm/web10",
			      "vm/web2", "vmx/a" };

	for (size_t i = 0; i < ARRAY_SIZE(puts); i++)
		assert_int_equal(put_str(f, puts[i], puts[i], 0, NULL), 0);
	expect_list(f, "vm/", vm, 3);
	expect_list(f, "vm/web", vm + 1, 2);
	expect_list(f, "", all, ARRAY_SIZE(all));
	expect_list(f, "vm", all + 2, 4);
	expect_list(f, "nothing/", NULL, 0);
	assert_int_equal(sto_del(f->st, "vm/web10", 1, f->err, sizeof(f->err)),
			 0);
	const char *after[] = { "vm/db1", "vm/web2" };
	expect_list(f, "vm/", after, 2);
}

static void test_list_bad_prefix_refused(void **state)
{
	struct fx *f = *state;
	const char *bad[] = { "VM/", "vm/a/b", "/", "v m", "vm/#" };
	char **keys = NULL;
	size_t n = 0;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		assert_int_equal(sto_list(f->st, bad[i], &keys, &n, f->err,
					  sizeof(f->err)), -EINVAL);
		assert_null(keys);
	}
}

static const char *const bad_keys[] = {
	"", "web1", "/web1", "vm/", "vm/a/b", "VM/web1", "vm/Web1", "vm/..",
	"vm/a..b", "../etc", "vm/.hidden", "vm/-x", "vm/a b", "vm/a#b",
	"vm/\xc3\xa9",
};

static void test_invalid_keys_refused(void **state)
{
	struct fx *f = *state;
	uint8_t *buf = NULL;
	size_t len;
	uint64_t v;

	for (size_t i = 0; i < ARRAY_SIZE(bad_keys); i++) {
		const char *k = bad_keys[i];
		assert_false(sto_key_valid(k));
		f->err[0] = '\0';
		assert_int_equal(put_str(f, k, "x", 0, NULL), -EINVAL);
		expect_err_names(f, "invalid");
		assert_int_equal(sto_get(f->st, k, &buf, &len, &v, f->err,
					 sizeof(f->err)), -EINVAL);
		assert_int_equal(sto_del(f->st, k, 1, f->err, sizeof(f->err)),
				 -EINVAL);
	}
	assert_false(sto_key_valid(NULL));
}

static void test_key_length_limit(void **state)
{
	struct fx *f = *state;
	char key[STO_KEY_MAX + 2];

	memset(key, 'a', sizeof(key));
	key[2] = '/';
	key[STO_KEY_MAX] = '\0'; /* exactly 200 characters */
	assert_true(sto_key_valid(key));
	assert_int_equal(put_str(f, key, "x", 0, NULL), 0);
	key[STO_KEY_MAX] = 'a';
	key[STO_KEY_MAX + 1] = '\0';
	assert_false(sto_key_valid(key));
	assert_int_equal(put_str(f, key, "x", 0, NULL), -EINVAL);
	assert_true(sto_key_valid("job/x.y_z-1"));
}

static void test_large_payload_refused(void **state)
{
	struct fx *f = *state;
	uint8_t *big = malloc(STO_REC_MAX + 1), *buf = NULL;
	size_t len = 0;
	uint64_t v = 0;

	assert_non_null(big);
	memset(big, 0xab, STO_REC_MAX + 1);
	assert_int_equal(sto_put(f->st, "vm/big", big, STO_REC_MAX + 1, 0, &v,
				 f->err, sizeof(f->err)), -EMSGSIZE);
	expect_err_names(f, "vm/big");
	assert_int_equal(sto_get(f->st, "vm/big", &buf, &len, &v, f->err,
				 sizeof(f->err)), -ENOENT);
	/* The limit itself is allowed. */
	assert_int_equal(sto_put(f->st, "vm/big", big, STO_REC_MAX, 0, &v,
				 f->err, sizeof(f->err)), 0);
	assert_int_equal(sto_get(f->st, "vm/big", &buf, &len, &v, f->err,
				 sizeof(f->err)), 0);
	assert_int_equal(len, STO_REC_MAX);
	assert_memory_equal(buf, big, STO_REC_MAX);
	free(buf);
	free(big);
}

static void test_survives_reopen(void **state)
{
	struct fx *f = *state;

	assert_int_equal(put_str(f, "vm/web1", "a", 0, NULL), 0);
	assert_int_equal(put_str(f, "vm/web1", "b", 1, NULL), 0);
	sto_store_close(f->st);
	f->st = f->be->open(f->ctx, f->err, sizeof(f->err));
	assert_non_null(f->st);
	expect_rec(f, "vm/web1", "b", 2);
}

/* One CAS increment of the decimal counter in @key; retried on conflict.
 * Returns 0 or the first unexpected error. Shared by threads and processes,
 * so it reports instead of asserting. */
static int cas_increment(struct sto_store *st, const char *key)
{
	for (;;) {
		uint8_t *buf = NULL;
		size_t len = 0;
		uint64_t v = 0;
		char next[32];
		int rc = sto_get(st, key, &buf, &len, &v, NULL, 0);

		if (rc < 0)
			return rc;
		unsigned long long n = strtoull((char *)buf, NULL, 10);
		free(buf);
		snprintf(next, sizeof(next), "%llu", n + 1);
		/* The NUL goes along, so strtoull above stays in bounds. */
		rc = sto_put(st, key, next, strlen(next) + 1, v, NULL, NULL, 0);
		if (rc != -ECANCELED)
			return rc;
	}
}

static void expect_counter(struct sto_store *st, const char *key,
			   unsigned long long count)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	uint64_t v = 0;

	assert_int_equal(sto_get(st, key, &buf, &len, &v, NULL, 0), 0);
	assert_int_equal(v, count + 1);
	assert_int_equal(strtoull((char *)buf, NULL, 10), count);
	free(buf);
}

#define THREADS 4
#define PER_THREAD 25

static void *increment_thread(void *arg)
{
	intptr_t bad = 0;

	for (int i = 0; i < PER_THREAD && !bad; i++)
		bad = cas_increment(arg, "cnt/c");
	return (void *)bad;
}

static void test_threads_cas_no_lost_update(void **state)
{
	struct fx *f = *state;
	pthread_t t[THREADS];
	void *rc;

	assert_int_equal(sto_put(f->st, "cnt/c", "0", 2, 0, NULL, f->err,
				 sizeof(f->err)), 0);
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, increment_thread,
						f->st), 0);
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(t[i], &rc), 0);
		assert_int_equal((intptr_t)rc, 0);
	}
	expect_counter(f->st, "cnt/c", THREADS * PER_THREAD);
}

/* ---- leases ---- */

static int lock_as(struct fx *f, struct sto_store *st, const char *key,
		   const char *cookie, unsigned duration_s)
{
	f->err[0] = '\0';
	return sto_lock(st, key, cookie, duration_s, f->err, sizeof(f->err));
}

/* Assert who holds @key's lease: @cookie, or nobody when NULL. */
static void expect_owner(struct fx *f, struct sto_store *st, const char *key,
			 const char *cookie)
{
	char who[STO_COOKIE_MAX + 1] = "junk";
	int rc = sto_lock_owner(st, key, who, sizeof(who), f->err,
				sizeof(f->err));

	if (!cookie) {
		assert_int_equal(rc, -ENOENT);
		assert_string_equal(who, "");
		return;
	}
	assert_int_equal(rc, 0);
	assert_string_equal(who, cookie);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void test_lease_take_renew_busy(void **state)
{
	struct fx *f = *state;

	expect_owner(f, f->st, "vm/web1", NULL);
	assert_int_equal(lock_as(f, f->st, "vm/web1", "node-a", 30), 0);
	expect_owner(f, f->st, "vm/web1", "node-a");
	assert_int_equal(lock_as(f, f->st, "vm/web1", "node-a", 30), 0);
	assert_int_equal(lock_as(f, f->st, "vm/web1", "node-b", 30), -EBUSY);
	expect_err_names(f, "vm/web1");
	expect_err_names(f, "node-a");
	expect_owner(f, f->st, "vm/web1", "node-a");
	/* Leases are per key, and live beside records, not in them. */
	assert_int_equal(lock_as(f, f->st, "vm/web2", "node-b", 30), 0);
	expect_list(f, "vm/", NULL, 0);
	assert_int_equal(put_str(f, "vm/web1", "rec", 0, NULL), 0);
	expect_rec(f, "vm/web1", "rec", 1);
	const char *one[] = { "vm/web1" };
	expect_list(f, "", one, 1);
	expect_owner(f, f->st, "vm/web1", "node-a");
}

static void test_lease_expires_and_renew_extends(void **state)
{
	struct fx *f = *state;

	assert_int_equal(lock_as(f, f->st, "vm/web1", "node-a", 2), 0);
	sleep_ms(1200);
	assert_int_equal(lock_as(f, f->st, "vm/web1", "node-a", 2), 0);
	sleep_ms(1200); /* past the first expiry, not the renewed one */
	assert_int_equal(lock_as(f, f->st, "vm/web1", "node-b", 2), -EBUSY);
	expect_owner(f, f->st, "vm/web1", "node-a");
	sleep_ms(1400);
	expect_owner(f, f->st, "vm/web1", NULL);
	assert_int_equal(lock_as(f, f->st, "vm/web1", "node-b", 30), 0);
	expect_owner(f, f->st, "vm/web1", "node-b");
	/* An expired holder releases nothing: the lease is no longer its. */
	assert_int_equal(sto_unlock(f->st, "vm/web1", "node-a", f->err,
				    sizeof(f->err)), -ENOENT);
}

static void test_lease_unlock(void **state)
{
	struct fx *f = *state;

	assert_int_equal(sto_unlock(f->st, "vm/web1", "node-a", f->err,
				    sizeof(f->err)), -ENOENT);
	expect_err_names(f, "vm/web1");
	assert_int_equal(lock_as(f, f->st, "vm/web1", "node-a", 30), 0);
	assert_int_equal(sto_unlock(f->st, "vm/web1", "node-b", f->err,
				    sizeof(f->err)), -ENOENT);
	expect_owner(f, f->st, "vm/web1", "node-a");
	assert_int_equal(sto_unlock(f->st, "vm/web1", "node-a", f->err,
				    sizeof(f->err)), 0);
	expect_owner(f, f->st, "vm/web1", NULL);
	assert_int_equal(sto_unlock(f->st, "vm/web1", "node-a", f->err,
				    sizeof(f->err)), -ENOENT);
	assert_int_equal(lock_as(f, f->st, "vm/web1", "node-b", 30), 0);
	expect_owner(f, f->st, "vm/web1", "node-b");
}

/* The cookie is the holder, whichever handle (a restarted agent, another
 * process) speaks for it. */
static void test_lease_same_cookie_other_handle(void **state)
{
	struct fx *f = *state;
	struct sto_store *st2 = f->be->open(f->ctx, f->err, sizeof(f->err));

	assert_non_null(st2);
	assert_int_equal(lock_as(f, f->st, "vm/web1", "node-a", 30), 0);
	expect_owner(f, st2, "vm/web1", "node-a");
	assert_int_equal(lock_as(f, st2, "vm/web1", "node-b", 30), -EBUSY);
	assert_int_equal(lock_as(f, st2, "vm/web1", "node-a", 30), 0);
	expect_owner(f, f->st, "vm/web1", "node-a");
	assert_int_equal(lock_as(f, f->st, "vm/web1", "node-a", 30), 0);
	assert_int_equal(sto_unlock(st2, "vm/web1", "node-a", f->err,
				    sizeof(f->err)), 0);
	expect_owner(f, f->st, "vm/web1", NULL);
	sto_store_close(st2);
}

static void test_lease_bad_args_refused(void **state)
{
	struct fx *f = *state;
	const char *bad[] = { "", "a b", "a/b", "x\n", "caf\xc3\xa9",
			      "0123456789012345678901234567890123456789012345678901234567890123x" };
	char small[4];

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		assert_false(sto_cookie_valid(bad[i]));
		assert_int_equal(lock_as(f, f->st, "vm/web1", bad[i], 30),
				 -EINVAL);
		expect_err_names(f, "cookie");
	}
	assert_false(sto_cookie_valid(NULL));
	assert_true(sto_cookie_valid("node:Web-3@dc1_x.y"));
	assert_int_equal(lock_as(f, f->st, "vm/web1", "node-a", 0), -EINVAL);
	assert_int_equal(lock_as(f, f->st, "vm/../x", "node-a", 30), -EINVAL);
	assert_int_equal(lock_as(f, f->st, "vm/web1", "node-a", 30), 0);
	assert_int_equal(sto_lock_owner(f->st, "vm/web1", small, sizeof(small),
					f->err, sizeof(f->err)), -ERANGE);
	assert_string_equal(small, "");
}

/* ---- watches ---- */

#define SEEN_MAX 64

/* What a watch callback saw, filled on the backend's thread. */
struct seen {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	char keys[SEEN_MAX][STO_KEY_MAX + 1];
	int n;
	int rescans; /* calls with NULL */
};

static void seen_init(struct seen *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
}

static void on_change(const char *key, void *opaque)
{
	struct seen *s = opaque;

	pthread_mutex_lock(&s->mu);
	if (!key)
		s->rescans++;
	else if (s->n < SEEN_MAX)
		snprintf(s->keys[s->n++], sizeof(s->keys[0]), "%s", key);
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static int count_locked(struct seen *s, const char *key)
{
	int c = 0;

	for (int i = 0; i < s->n; i++)
		c += !strcmp(s->keys[i], key);
	return c;
}

static int seen_count(struct seen *s, const char *key)
{
	pthread_mutex_lock(&s->mu);
	int c = count_locked(s, key);
	pthread_mutex_unlock(&s->mu);
	return c;
}

/* Whether @key was reported at least @times times within @ms. */
static bool wait_seen(struct seen *s, const char *key, int times, unsigned ms)
{
	struct timespec until;
	bool ok;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&s->mu);
	while (count_locked(s, key) < times &&
	       pthread_cond_timedwait(&s->cv, &s->mu, &until) == 0)
		;
	ok = count_locked(s, key) >= times;
	pthread_mutex_unlock(&s->mu);
	return ok;
}

static void seen_destroy(struct seen *s)
{
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
}

static void test_watch_sees_other_handle(void **state)
{
	struct fx *f = *state;
	struct sto_store *st2 = f->be->open(f->ctx, f->err, sizeof(f->err));
	struct sto_watch *w;
	struct seen s;
	uint64_t v = 0;

	seen_init(&s);
	assert_non_null(st2);
	w = sto_watch_new(f->st, "vm", on_change, &s, f->err, sizeof(f->err));
	assert_non_null(w);
	assert_int_equal(sto_put(st2, "vm/web1", "a", 1, 0, &v, f->err,
				 sizeof(f->err)), 0);
	assert_true(wait_seen(&s, "vm/web1", 1, 2000));
	assert_int_equal(sto_put(st2, "vm/web1", "b", 1, v, &v, f->err,
				 sizeof(f->err)), 0);
	assert_true(wait_seen(&s, "vm/web1", 2, 2000));
	assert_int_equal(sto_del(st2, "vm/web1", v, f->err, sizeof(f->err)), 0);
	assert_true(wait_seen(&s, "vm/web1", 3, 2000));
	/* Leases are not records: taking one reports nothing. */
	assert_int_equal(lock_as(f, st2, "vm/web9", "node-a", 30), 0);
	/* Its own writes are reported too. */
	assert_int_equal(put_str(f, "vm/own", "x", 0, NULL), 0);
	assert_true(wait_seen(&s, "vm/own", 1, 2000));
	assert_int_equal(seen_count(&s, "vm/web9"), 0);
	sto_watch_free(w);
	sto_store_close(st2);
	seen_destroy(&s);
}

static void test_watch_own_namespace_only(void **state)
{
	struct fx *f = *state;
	struct sto_store *st2 = f->be->open(f->ctx, f->err, sizeof(f->err));
	struct sto_watch *w;
	struct seen s;

	seen_init(&s);
	assert_non_null(st2);
	w = sto_watch_new(f->st, "vm", on_change, &s, f->err, sizeof(f->err));
	assert_non_null(w);
	assert_int_equal(sto_put(st2, "node/n1", "x", 1, 0, NULL, f->err,
				 sizeof(f->err)), 0);
	assert_int_equal(sto_put(st2, "vmx/a", "x", 1, 0, NULL, f->err,
				 sizeof(f->err)), 0);
	assert_int_equal(sto_put(st2, "vm/marker", "x", 1, 0, NULL, f->err,
				 sizeof(f->err)), 0);
	assert_true(wait_seen(&s, "vm/marker", 1, 2000));
	sleep_ms(300); /* anything else in flight would arrive by now */
	pthread_mutex_lock(&s.mu);
	assert_int_equal(s.n, 1);
	pthread_mutex_unlock(&s.mu);
	sto_watch_free(w);
	/* Freed: nothing more is reported. */
	assert_int_equal(sto_put(st2, "vm/after", "x", 1, 0, NULL, f->err,
				 sizeof(f->err)), 0);
	sleep_ms(300);
	assert_int_equal(seen_count(&s, "vm/after"), 0);
	sto_store_close(st2);
	seen_destroy(&s);
}

static void test_watch_two_watches_bad_ns(void **state)
{
	struct fx *f = *state;
	struct sto_watch *w1, *w2;
	struct seen s1, s2;

	seen_init(&s1);
	seen_init(&s2);
	w1 = sto_watch_new(f->st, "vm", on_change, &s1, f->err, sizeof(f->err));
	w2 = sto_watch_new(f->st, "vm", on_change, &s2, f->err, sizeof(f->err));
	assert_non_null(w1);
	assert_non_null(w2);
	assert_int_equal(put_str(f, "vm/web1", "x", 0, NULL), 0);
	assert_true(wait_seen(&s1, "vm/web1", 1, 2000));
	assert_true(wait_seen(&s2, "vm/web1", 1, 2000));
	sto_watch_free(w1);
	sto_watch_free(w2);
	sto_watch_free(NULL);
	assert_null(sto_watch_new(f->st, "vm/x", on_change, &s1, f->err,
				  sizeof(f->err)));
	expect_err_names(f, "invalid");
	assert_null(sto_watch_new(f->st, ".hidden", on_change, &s1, f->err,
				  sizeof(f->err)));
	assert_null(sto_watch_new(f->st, "vm", NULL, &s1, f->err,
				  sizeof(f->err)));
	seen_destroy(&s1);
	seen_destroy(&s2);
}

/* ---- dir backend only ---- */

static const struct backend *dir_be = &backends[0];

static const char *dir_of(struct fx *f)
{
	return ((struct dir_ctx *)f->ctx)->store;
}

static void rec_path(struct fx *f, const char *key, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s.rec", dir_of(f), key);
}

static void test_dir_layout(void **state)
{
	struct fx *f = *state;
	char path[256];
	struct stat sb;

	assert_int_equal(stat(dir_of(f), &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	assert_int_equal(put_str(f, "vm/web1", "hello", 0, NULL), 0);
	rec_path(f, "vm/web1", path, sizeof(path));
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_size, 32 + 5);
	assert_int_equal(sb.st_mode & 0777, 0600);
}

static void flip_byte(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	uint8_t b;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, off), 1);
	b ^= 0x40;
	assert_int_equal(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

static void expect_corrupt(struct fx *f, const char *key, const char *why)
{
	uint8_t *buf = NULL;
	size_t len;
	uint64_t v;

	f->err[0] = '\0';
	assert_int_equal(sto_get(f->st, key, &buf, &len, &v, f->err,
				 sizeof(f->err)), -EBADMSG);
	assert_null(buf);
	expect_err_names(f, key);
	expect_err_names(f, why);
}

static void test_dir_corrupt_payload_ebadmsg(void **state)
{
	struct fx *f = *state;
	char path[256];

	assert_int_equal(put_str(f, "vm/web1", "hello", 0, NULL), 0);
	rec_path(f, "vm/web1", path, sizeof(path));
	flip_byte(path, 32 + 2);
	expect_corrupt(f, "vm/web1", "crc32c");
	/* The header is intact, so the record can still be replaced by CAS. */
	assert_int_equal(put_str(f, "vm/web1", "fixed", 1, NULL), 0);
	expect_rec(f, "vm/web1", "fixed", 2);
}

static void test_dir_corrupt_header_ebadmsg(void **state)
{
	struct fx *f = *state;
	char path[256];

	assert_int_equal(put_str(f, "vm/web1", "hello", 0, NULL), 0);
	rec_path(f, "vm/web1", path, sizeof(path));
	flip_byte(path, 15); /* low byte of the record version */
	expect_corrupt(f, "vm/web1", "header checksum");
	assert_int_equal(put_str(f, "vm/web1", "x", 1, NULL), -EBADMSG);
	flip_byte(path, 15);
	flip_byte(path, 0);
	expect_corrupt(f, "vm/web1", "bad magic");
}

static void test_dir_truncated_ebadmsg(void **state)
{
	struct fx *f = *state;
	char path[256];

	assert_int_equal(put_str(f, "vm/web1", "hello world", 0, NULL), 0);
	rec_path(f, "vm/web1", path, sizeof(path));
	assert_int_equal(truncate(path, 32 + 4), 0);
	expect_corrupt(f, "vm/web1", "truncated");
	assert_int_equal(truncate(path, 10), 0);
	expect_corrupt(f, "vm/web1", "truncated header");
	assert_int_equal(truncate(path, 0), 0);
	expect_corrupt(f, "vm/web1", "truncated header");
}

static void touch(struct fx *f, const char *name)
{
	char path[256];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir_of(f), name);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs("half-written", fp);
	fclose(fp);
}

static bool exists(struct fx *f, const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", dir_of(f), name);
	return access(path, F_OK) == 0;
}

static void test_dir_temp_files_ignored_and_cleaned(void **state)
{
	struct fx *f = *state;
	const char *vm[] = { "vm/web1" };

	assert_int_equal(put_str(f, "vm/web1", "good", 0, NULL), 0);
	touch(f, "vm/web1.rec#new"); /* a crash while updating web1 */
	touch(f, "vm/web2.rec#new"); /* a crash while creating web2 */
	touch(f, "vm/notes.txt");    /* not ours: ignored, kept */
	expect_list(f, "vm/", vm, 1);
	expect_rec(f, "vm/web1", "good", 1);
	sto_store_close(f->st);
	f->st = f->be->open(f->ctx, f->err, sizeof(f->err));
	assert_non_null(f->st);
	assert_false(exists(f, "vm/web1.rec#new"));
	assert_false(exists(f, "vm/web2.rec#new"));
	assert_true(exists(f, "vm/notes.txt"));
	expect_rec(f, "vm/web1", "good", 1);
}

#define RACERS 2
#define RACE_TOTAL 200

/* A second hcad: its own handle on the directory, from its own process. */
static void racer(const char *dir, int start_fd)
{
	struct sto_store *st = sto_store_open_dir(dir, NULL, 0);
	char go;
	int rc = st ? 0 : 1;

	if (read(start_fd, &go, 1) != 1)
		rc = 1;
	for (int i = 0; i < RACE_TOTAL / RACERS && rc == 0; i++)
		rc = cas_increment(st, "cnt/race");
	sto_store_close(st);
	_exit(rc ? 1 : 0);
}

static void test_dir_fork_race_no_lost_update(void **state)
{
	struct fx *f = *state;
	pid_t pid[RACERS];
	int go[2], status;

	assert_int_equal(sto_put(f->st, "cnt/race", "0", 2, 0, NULL, f->err,
				 sizeof(f->err)), 0);
	assert_int_equal(pipe(go), 0);
	for (int i = 0; i < RACERS; i++) {
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0)
			racer(dir_of(f), go[0]);
	}
	/* Release both at once so their increments really interleave. */
	assert_int_equal(write(go[1], "gg", RACERS), RACERS);
	close(go[0]);
	close(go[1]);
	for (int i = 0; i < RACERS; i++) {
		assert_int_equal(waitpid(pid[i], &status, 0), pid[i]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	expect_counter(f->st, "cnt/race", RACE_TOTAL);
}

/* A writer in another process (a second hcad) is seen by inotify too. */
static void test_dir_watch_sees_forked_writer(void **state)
{
	struct fx *f = *state;
	struct sto_watch *w;
	struct seen s;
	int status;
	pid_t pid;

	seen_init(&s);
	w = sto_watch_new(f->st, "vm", on_change, &s, f->err, sizeof(f->err));
	assert_non_null(w);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sto_store *st = sto_store_open_dir(dir_of(f), NULL, 0);
		int rc = st ? sto_put(st, "vm/child", "c", 1, 0, NULL, NULL, 0) :
			      -1;
		if (rc == 0)
			rc = sto_del(st, "vm/child", 1, NULL, 0);
		sto_store_close(st);
		_exit(rc ? 1 : 0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_true(wait_seen(&s, "vm/child", 2, 2000)); /* put, then del */
	sto_watch_free(w);
	seen_destroy(&s);
}

static void test_dir_lease_file(void **state)
{
	struct fx *f = *state;
	char path[256], text[128] = "";
	FILE *fp;

	assert_int_equal(lock_as(f, f->st, "vm/web1", "node-a", 30), 0);
	snprintf(path, sizeof(path), "%s/vm/web1.lease", dir_of(f));
	fp = fopen(path, "r");
	assert_non_null(fp);
	assert_non_null(fgets(text, sizeof(text), fp));
	fclose(fp);
	assert_int_equal(strncmp(text, "node-a ", 7), 0);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs("garbage", fp);
	fclose(fp);
	assert_int_equal(sto_lock_owner(f->st, "vm/web1", text, sizeof(text),
					f->err, sizeof(f->err)), -EBADMSG);
	expect_err_names(f, "vm/web1");
}

/* ---- rados backend only ---- */

static const struct backend *rados_be = &backends[1];

static void rados_ns(struct fx *f, const char *ns, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s", ((struct rados_ctx *)f->ctx)->prefix, ns);
}

static void test_rados_layout(void **state)
{
	struct fx *f = *state;
	char ns[64], ver[16] = "";
	rados_ioctx_t io;
	uint64_t size = 0;
	time_t mtime;

	assert_int_equal(put_str(f, "vm/web1", "hello", 0, NULL), 0);
	assert_int_equal(put_str(f, "vm/web1", "hello", 1, NULL), 0);
	rados_ns(f, "vm", ns, sizeof(ns));
	io = test_io(ns);
	assert_int_equal(rados_stat(io, "web1", &size, &mtime), 0);
	assert_int_equal(size, 32 + 5);
	assert_int_equal(rados_getxattr(io, "web1", "hca.version", ver,
					sizeof(ver) - 1), 1);
	assert_string_equal(ver, "2");
	/* The lease and watch helpers exist beside it, never as keys. */
	assert_int_equal(lock_as(f, f->st, "vm/web1", "node-a", 30), 0);
	assert_int_equal(rados_stat(io, ".lease.web1", &size, &mtime), 0);
	const char *one[] = { "vm/web1" };
	expect_list(f, "vm/", one, 1);
	rados_ioctx_destroy(io);
}

static void rados_flip(struct fx *f, const char *ns, const char *obj,
		       uint64_t off)
{
	char rns[64];
	rados_ioctx_t io;
	char b;

	rados_ns(f, ns, rns, sizeof(rns));
	io = test_io(rns);
	assert_int_equal(rados_read(io, obj, &b, 1, off), 1);
	b ^= 0x40;
	assert_int_equal(rados_write(io, obj, &b, 1, off), 0);
	rados_ioctx_destroy(io);
}

static void test_rados_corrupt_ebadmsg(void **state)
{
	struct fx *f = *state;

	assert_int_equal(put_str(f, "vm/web1", "hello", 0, NULL), 0);
	rados_flip(f, "vm", "web1", 32 + 2);
	expect_corrupt(f, "vm/web1", "crc32c");
	/* The version lives in the xattr too: the record can be replaced. */
	assert_int_equal(put_str(f, "vm/web1", "fixed", 1, NULL), 0);
	expect_rec(f, "vm/web1", "fixed", 2);
	rados_flip(f, "vm", "web1", 15);
	expect_corrupt(f, "vm/web1", "header checksum");
	rados_flip(f, "vm", "web1", 15);
	rados_flip(f, "vm", "web1", 0);
	expect_corrupt(f, "vm/web1", "bad magic");
}

/* ---- running ---- */

#define CONTRACT(t, be) \
	cmocka_unit_test_prestate_setup_teardown(t, fx_setup, fx_teardown, \
						 (void *)(be))

/* A backend was asked for that cannot run: a failure, never a skip. */
static const char *unavailable;

static void test_backend_unavailable(void **state)
{
	fail_msg("%s", unavailable);
}

static int run_unavailable(const char *why)
{
	const struct CMUnitTest t[] = { cmocka_unit_test(test_backend_unavailable) };

	unavailable = why;
	return cmocka_run_group_tests_name("sto_store backend selection", t,
					   NULL, NULL);
}

static int run_contract(const struct backend *be)
{
	const struct CMUnitTest contract[] = {
		CONTRACT(test_put_get_roundtrip, be),
		CONTRACT(test_binary_and_empty_payloads, be),
		CONTRACT(test_versions_increment, be),
		CONTRACT(test_stale_version_cancelled, be),
		CONTRACT(test_create_existing_eexist, be),
		CONTRACT(test_update_missing_enoent, be),
		CONTRACT(test_get_missing_enoent, be),
		CONTRACT(test_del_wrong_version_refused, be),
		CONTRACT(test_del_then_gone, be),
		CONTRACT(test_list_prefix_sorted, be),
		CONTRACT(test_list_bad_prefix_refused, be),
		CONTRACT(test_invalid_keys_refused, be),
		CONTRACT(test_key_length_limit, be),
		CONTRACT(test_large_payload_refused, be),
		CONTRACT(test_survives_reopen, be),
		CONTRACT(test_threads_cas_no_lost_update, be),
		CONTRACT(test_lease_take_renew_busy, be),
		CONTRACT(test_lease_expires_and_renew_extends, be),
		CONTRACT(test_lease_unlock, be),
		CONTRACT(test_lease_same_cookie_other_handle, be),
		CONTRACT(test_lease_bad_args_refused, be),
		CONTRACT(test_watch_sees_other_handle, be),
		CONTRACT(test_watch_own_namespace_only, be),
		CONTRACT(test_watch_two_watches_bad_ns, be),
	};
	char name[64];

	snprintf(name, sizeof(name), "sto_store contract: %s", be->name);
	return _cmocka_run_group_tests(name, contract, ARRAY_SIZE(contract),
				       NULL, NULL);
}

static int run_dir_only(void)
{
	const struct CMUnitTest dir_only[] = {
		CONTRACT(test_dir_layout, dir_be),
		CONTRACT(test_dir_corrupt_payload_ebadmsg, dir_be),
		CONTRACT(test_dir_corrupt_header_ebadmsg, dir_be),
		CONTRACT(test_dir_truncated_ebadmsg, dir_be),
		CONTRACT(test_dir_temp_files_ignored_and_cleaned, dir_be),
		CONTRACT(test_dir_fork_race_no_lost_update, dir_be),
		CONTRACT(test_dir_watch_sees_forked_writer, dir_be),
		CONTRACT(test_dir_lease_file, dir_be),
	};

	return cmocka_run_group_tests_name("sto_store dir backend", dir_only,
					   NULL, NULL);
}

static int run_rados_only(void)
{
	const struct CMUnitTest rados_only[] = {
		CONTRACT(test_rados_layout, rados_be),
		CONTRACT(test_rados_corrupt_ebadmsg, rados_be),
	};

	return cmocka_run_group_tests_name("sto_store rados backend",
					   rados_only, NULL, NULL);
}

/* One backend named in HCA_TEST_STORE_BACKENDS: its contract and its own
 * tests, or a failure saying why it cannot run. */
static int run_backend(const char *name)
{
	static char why[256];

	if (!strcmp(name, "dir"))
		return run_contract(dir_be) + run_dir_only();
	if (!strcmp(name, "rados") && !ceph_conf())
		return run_unavailable("HCA_TEST_STORE_BACKENDS asks for rados but HCA_TEST_CEPH_CONF is not set");
	if (!strcmp(name, "rados"))
		return run_contract(rados_be) + run_rados_only();
	snprintf(why, sizeof(why), "HCA_TEST_STORE_BACKENDS names '%.100s': want dir and/or rados",
		 name);
	return run_unavailable(why);
}

int main(void)
{
	char *list = strdup(env_or("HCA_TEST_STORE_BACKENDS", "dir"));
	char *save = NULL;
	int failed = 0, ran = 0;

	for (char *be = strtok_r(list, ", ", &save); be;
	     be = strtok_r(NULL, ", ", &save), ran++)
		failed += run_backend(be);
	if (!ran)
		failed += run_unavailable("HCA_TEST_STORE_BACKENDS names no backend");
	free(list);
	if (test_cluster)
		rados_shutdown(test_cluster);
	return failed ? 1 : 0;
}
