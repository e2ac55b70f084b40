/*
 * conf: hcad's configuration file. One `key = value` per line, `#` comments,
 * blank lines ignored. Every problem is reported as FILE:LINE: what is wrong.
 */
#ifndef HCA_CONF_H
#define HCA_CONF_H

#include <stddef.h>
#include <stdint.h>

#define CONF_DEFAULT_PATH "/etc/hca/hcad.conf"
/* sockets under state_dir/vm/NAME/ must fit in sun_path (108 bytes) */
#define CONF_STATE_DIR_MAX 40

enum conf_accel { CONF_ACCEL_AUTO, CONF_ACCEL_KVM, CONF_ACCEL_TCG };
enum conf_cluster { CONF_CLUSTER_LOCAL, CONF_CLUSTER_COROSYNC };
enum conf_store { CONF_STORE_DIR, CONF_STORE_RADOS };

struct conf {
	char node_name[64];
	char state_dir[CONF_STATE_DIR_MAX + 1];
	char storage_dir[256];
	char api_name[64];
	char qemu[256];
	char qemu_img[256];
	char log_file[256];      /* empty: stderr */
	int accel;               /* enum conf_accel */
	int cluster;             /* enum conf_cluster: membership driver */
	int store;               /* enum conf_store: where records live */
	char ceph_conf[256];
	char ceph_client[64];    /* cephx id, e.g. "admin" */
	char rados_pool[64];     /* records and RBD volumes */
	uint64_t ceph_op_timeout_s; /* longest one Ceph call waits (sto.h); needs a restart */
	char pki_dir[200];       /* ca.crt and NODE/node.{crt,key} */
	char chan_listen[64];    /* node channel: address to listen on */
	uint64_t chan_port;
	int log_level;           /* syslog priority */
	uint64_t qmp_timeout_ms;
	uint64_t shutdown_timeout_s;
	uint64_t max_vcpus;
	uint64_t max_memory_mib;
	uint64_t mig_max_out;    /* live migrations out of this node at once */
	uint64_t mig_max_in;     /* ... and into it */
};

void conf_defaults(struct conf *c);

/* Apply @text (named @fname in messages) over @c. Returns 0 or -EINVAL. */
int conf_parse(struct conf *c, const char *text, const char *fname,
	       char *err, size_t errlen);

/* Read and parse @path. A missing file is an error unless @optional. */
int conf_load(struct conf *c, const char *path, int optional, char *err,
	      size_t errlen);

#endif
