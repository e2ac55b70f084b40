/* hcactl internals shared by its files: the cluster PKI commands
 * (hcactl_cluster.c: local files, not hcad) and common output. */
#ifndef HCA_HCACTL_CLUSTER_H
#define HCA_HCACTL_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Run `cluster init` or `cluster cert ...` (@cmd "init" or "cert") with the
 * positional words @pos and the options @names/@vals (@nopt of them, as
 * hcactl parsed them). Returns hcactl's exit status.
 */
int cluster_cmd(const char *cmd, const char *const *pos, size_t npos, const char *const *names,
		const char *const *vals, size_t nopt, bool json);

/* One "key: value" line, values aligned as in every `show`. */
void hcactl_kv(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The long help of each command. */
extern const char cluster_init_detail[], cluster_cert_detail[];

#endif
