/*
 * store_bench: latency of compare-and-swap updates on the state store.
 *   store_bench dir DIR N
 *   store_bench rados CEPH_CONF POOL N
 * Does N read-then-CAS updates of one record (as hcad does), prints
 * "p50_us=.. p99_us=.. max_us=.. n=.." on one line. For make bench only.
 */
#include "storage/sto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000L + t.tv_nsec / 1000;
}

static int cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;

	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	char err[512], key[64], payload[512];
	struct sto_store *st = NULL;
	uint64_t ver = 0;
	long *lat;
	int n;

	if (argc == 4 && !strcmp(argv[1], "dir"))
		st = sto_store_open_dir(argv[2], err, sizeof(err));
	else if (argc == 5 && !strcmp(argv[1], "rados"))
		st = sto_store_open_rados(argv[2], "admin", argv[3], 30, err, sizeof(err));
	else {
		fprintf(stderr, "usage: store_bench dir DIR N | rados CONF POOL N\n");
		return 2;
	}
	if (!st) {
		fprintf(stderr, "store_bench: %s\n", err);
		return 1;
	}
	n = atoi(argv[argc - 1]);
	lat = calloc((size_t)(n > 0 ? n : 1), sizeof(*lat));
	snprintf(key, sizeof(key), "bench/k%d", (int)getpid());
	memset(payload, 'x', sizeof(payload));
	if (sto_put(st, key, payload, sizeof(payload), 0, &ver, err, sizeof(err)) < 0) {
		fprintf(stderr, "store_bench: %s\n", err);
		return 1;
	}
	for (int i = 0; i < n; i++) {
		uint8_t *buf = NULL;
		size_t len = 0;
		long t0 = now_us();
		if (sto_get(st, key, &buf, &len, &ver, err, sizeof(err)) < 0 ||
		    sto_put(st, key, buf, len, ver, &ver, err, sizeof(err)) < 0) {
			fprintf(stderr, "store_bench: %s\n", err);
			return 1;
		}
		lat[i] = now_us() - t0;
		free(buf);
	}
	sto_del(st, key, ver, err, sizeof(err));
	qsort(lat, (size_t)n, sizeof(*lat), cmp_long);
	printf("p50_us=%ld p99_us=%ld max_us=%ld n=%d\n", lat[n / 2], lat[(n * 99) / 100],
	       lat[n - 1], n);
	free(lat);
	sto_store_close(st);
	return 0;
}
