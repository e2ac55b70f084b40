/*
 * hcactl's cluster PKI commands: `cluster init` and `cluster cert issue |
 * renew | show`. They work on local files through cert.h and never talk to
 * hcad, so they also run where the CA key is kept offline. hcactl.c checks
 * the words against its option tables and hands them over here; errors
 * follow hcactl's rules: one line "hcactl: ..." on stderr, exit 2 for what
 * the user typed wrong, 1 for everything else.
 */
#include "agent/cert.h"
#include "agent/hcactl_cluster.h"
#include "agent/hcactl_priv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define CLUSTER_NAME_DEFAULT "hca"


const char cluster_init_detail[] =
	"Creates the cluster CA in the PKI directory: an EC P-256 key (ca.key, 0600)\n"
	"and a self-signed certificate \"hca cluster CA NAME\" (ca.crt).\n"
	"  --name NAME     the cluster's name (default \"" CLUSTER_NAME_DEFAULT "\")\n"
	"  --pki DIR       the PKI directory (default " CERT_PKI_DEFAULT ")\n"
	"  --ca-out DIR    write the CA key (and a copy of ca.crt) to DIR instead, to\n"
	"                  keep it offline; sign later with 'cluster cert issue --ca-key'\n"
	"  --days N        validity (default 3650)\n"
	"An existing CA is never overwritten.\n";

const char cluster_cert_detail[] =
	"  issue NODE [--ip ADDR]... [--force]\n"
	"        a new key and certificate for NODE: CN and DNS name NODE, an IP name\n"
	"        per --ip, serverAuth and clientAuth; written to OUT/NODE/node.crt,\n"
	"        node.key and ca.crt, and for QEMU's tls-creds-x509 to OUT/NODE/qemu/.\n"
	"        --force replaces an existing one\n"
	"  renew NODE\n"
	"        a new key and certificate with the same names; the previous\n"
	"        certificate is kept as node.crt.old\n"
	"  show NODE | --file PATH\n"
	"        subject, names, issuer, serial, dates, and whether it chains to the\n"
	"        cluster CA\n"
	"\n"
	"  --pki DIR       the PKI directory (default " CERT_PKI_DEFAULT "), holding ca.crt\n"
	"  --ca-key PATH   the CA key, when it is not in the PKI directory\n"
	"  --out DIR       where node directories are (default: the PKI directory)\n"
	"  --days N        validity of a new certificate (default 365)\n"
	"NODE: 1-63 chars of a-z, 0-9 and -, not starting with -.\n";

struct copts {
	const char *pki;
	const char *out;         /* NULL: pki */
	const char *ca_key;
	const char *ca_out;
	const char *file;
	const char *name;
	const char *ips[CERT_NAMES_MAX];
	size_t n_ips;
	unsigned days;           /* 0: the library's default */
	bool force;
	bool json;
};

struct verb {
	const char *cmd;
	const char *verb;        /* cert's first word; NULL for init */
	const char *opts;        /* the options it takes, each between spaces */
	int (*run)(const struct copts *o, const char *node);
};

/* What the user typed, fit for a one-line message. */
static const char *shown(const char *s, char *buf, size_t len)
{
	size_t i = 0;

	for (; s[i] && i + 1 < len; i++)
		buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	buf[i] = '\0';
	return buf;
}

static void date_text(time_t t, bool iso, char *buf, size_t len)
{
	struct tm tm;

	if (!gmtime_r(&t, &tm) ||
	    !strftime(buf, len, iso ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(buf, len, "?");
}


/* When the certificate at @path expires, for the success line. */
static void expiry(const char *path, char *buf, size_t len)
{
	struct cert_info ci;
	char err[256];

	if (cert_info(path, &ci, err, sizeof(err)))
		snprintf(buf, len, "?");
	else
		date_text(ci.not_after, false, buf, len);
}

/* ---- the commands ---- */

static int run_init(const struct copts *o, const char *node)
{
	struct cert_ca_req req = { .pki_dir = o->pki, .key_dir = o->ca_out, .name = o->name,
				   .days = o->days };
	const char *key_dir = o->ca_out ? o->ca_out : o->pki;
	char crt[4096], key[4096], err[1024], when[64];

	if (cert_ca_create(&req, err, sizeof(err)))
		return hcactl_complain(EXIT_FAIL, "%s", err);
	snprintf(crt, sizeof(crt), "%s/" CERT_CA_CRT, o->pki);
	snprintf(key, sizeof(key), "%s/" CERT_CA_KEY, key_dir);
	expiry(crt, when, sizeof(when));
	if (o->json)
		return hcactl_print_json(json_pack("{s:s, s:s, s:s, s:s}", "cluster", o->name,
					    "ca_cert", crt, "ca_key", key, "not_after", when));
	printf("cluster CA '%s' created: %s, key %s, expires %s\n", o->name, crt, key, when);
	if (o->ca_out)
		printf("the CA key is only in %s: keep it offline, and pass --ca-key %s to "
		       "'cluster cert issue'\n", o->ca_out, key);
	return 0;
}

static int node_done(const struct copts *o, const char *node, bool renewed)
{
	char dir[4096], crt[4200], qemu[4200], when[64];

	snprintf(dir, sizeof(dir), "%s/%s", o->out ? o->out : o->pki, node);
	snprintf(crt, sizeof(crt), "%s/" CERT_NODE_CRT, dir);
	snprintf(qemu, sizeof(qemu), "%s/" CERT_QEMU_DIR, dir);
	expiry(crt, when, sizeof(when));
	if (o->json)
		return hcactl_print_json(json_pack("{s:s, s:s, s:s, s:s}", "node", node, "dir", dir,
					    "qemu_dir", qemu, "not_after", when));
	printf("%s: certificate %s in %s (QEMU credentials in %s), expires %s\n",
	       node, renewed ? "renewed" : "issued", dir, qemu, when);
	if (renewed)
		printf("%s: the previous certificate is kept as %s/" CERT_NODE_OLD "\n", node, dir);
	return 0;
}

static void node_req(const struct copts *o, const char *node, struct cert_node_req *req)
{
	*req = (struct cert_node_req){ .pki_dir = o->pki, .ca_key = o->ca_key, .out_dir = o->out,
				       .node = node, .ips = o->ips, .n_ips = o->n_ips,
				       .days = o->days, .force = o->force };
}

static int run_issue(const struct copts *o, const char *node)
{
	struct cert_node_req req;
	char err[1024];

	node_req(o, node, &req);
	if (cert_node_issue(&req, err, sizeof(err)))
		return hcactl_complain(EXIT_FAIL, "%s", err);
	return node_done(o, node, false);
}

static int run_renew(const struct copts *o, const char *node)
{
	struct cert_node_req req;
	char err[1024];

	node_req(o, node, &req);
	if (cert_node_renew(&req, err, sizeof(err)))
		return hcactl_complain(EXIT_FAIL, "%s", err);
	return node_done(o, node, true);
}

/* ---- show ---- */

struct chain {
	char ca[4096];
	int rc;                  /* cert_verify_chain()'s */
	char err[1024];
};

/* @n strings @stride bytes apart, from @first. */
static json_t *strings_json(const char *first, size_t n, size_t stride)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_string(first + i * stride));
	return a;
}

static json_t *info_json(const char *file, const struct cert_info *ci, const struct chain *ch)
{
	char nb[32], na[32];

	date_text(ci->not_before, true, nb, sizeof(nb));
	date_text(ci->not_after, true, na, sizeof(na));
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:s, s:s, s:I, s:b, s:s, s:b, s:s?}",
			 "file", file, "subject", ci->subject, "cn", ci->cn, "issuer", ci->issuer,
			 "serial", ci->serial,
			 "dns", strings_json(ci->dns[0], ci->n_dns, sizeof(ci->dns[0])),
			 "ip", strings_json(ci->ip[0], ci->n_ip, sizeof(ci->ip[0])),
			 "not_before", nb, "not_after", na, "days_left", (json_int_t)ci->days_left,
			 "is_ca", ci->is_ca, "ca_file", ch->ca, "chains_to_ca", ch->rc == 0,
			 "chain_error", ch->rc ? ch->err : NULL);
}


static void show_human(const char *file, const struct cert_info *ci, const struct chain *ch)
{
	char names[2048] = "", buf[64];
	size_t used = 0;

	for (size_t i = 0; i < ci->n_dns && used < sizeof(names); i++)
		used += (size_t)snprintf(names + used, sizeof(names) - used, "%sDNS:%s",
					 used ? ", " : "", ci->dns[i]);
	for (size_t i = 0; i < ci->n_ip && used < sizeof(names); i++)
		used += (size_t)snprintf(names + used, sizeof(names) - used, "%sIP:%s",
					 used ? ", " : "", ci->ip[i]);
	hcactl_kv("file", "%s", file);
	hcactl_kv("subject", "%s", ci->subject);
	hcactl_kv("names", "%s", names);
	hcactl_kv("issuer", "%s", ci->issuer);
	hcactl_kv("serial", "%s", ci->serial);
	date_text(ci->not_before, false, buf, sizeof(buf));
	hcactl_kv("not before", "%s", buf);
	date_text(ci->not_after, false, buf, sizeof(buf));
	hcactl_kv("not after", "%s", buf);
	hcactl_kv("days left", "%ld%s", ci->days_left, ci->days_left < 0 ? " (expired)" : "");
	hcactl_kv("ca", "%s", ci->is_ca ? "yes" : "no");
	if (!ch->rc)
		hcactl_kv("chains to CA", "yes (%s)", ch->ca);
	else
		hcactl_kv("chains to CA", "no: %s", ch->err);
}

static int run_show(const struct copts *o, const char *node)
{
	char file[4200];
	struct cert_info ci;
	struct chain ch;
	char err[1024];

	if (!node == !o->file)
		return hcactl_complain(EXIT_USAGE, "'cluster cert show' takes NODE or --file PATH (one of them)");
	if (node)
		snprintf(file, sizeof(file), "%s/%s/" CERT_NODE_CRT, o->out ? o->out : o->pki, node);
	else
		snprintf(file, sizeof(file), "%s", o->file);
	if (cert_info(file, &ci, err, sizeof(err)))
		return hcactl_complain(EXIT_FAIL, "%s", err);
	snprintf(ch.ca, sizeof(ch.ca), "%s/" CERT_CA_CRT, o->pki);
	ch.rc = cert_verify_chain(file, ch.ca, ch.err, sizeof(ch.err));
	if (o->json)
		return hcactl_print_json(info_json(file, &ci, &ch));
	show_human(file, &ci, &ch);
	return 0;
}

/* ---- from hcactl's words to a command ---- */

static const struct verb verbs[] = {
	{ "init", NULL, " name pki ca-out days ", run_init },
	{ "cert", "issue", " pki ca-key out days ip force ", run_issue },
	{ "cert", "renew", " pki ca-key out days ", run_renew },
	{ "cert", "show", " pki out file ", run_show },
};

static const struct verb *find_verb(const char *cmd, const char *word)
{
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (!strcmp(verbs[i].cmd, cmd) && (!verbs[i].verb || (word && !strcmp(verbs[i].verb, word))))
			return &verbs[i];
	return NULL;
}

static bool takes(const struct verb *v, const char *opt)
{
	char word[40];

	snprintf(word, sizeof(word), " %s ", opt);
	return strstr(v->opts, word) != NULL;
}

static int parse_days(const char *s, unsigned *days)
{
	char *end = NULL;
	unsigned long v = 0;

	char buf[64];

	errno = 0;
	if (s[0] >= '0' && s[0] <= '9')
		v = strtoul(s, &end, 10);
	if (!end || *end || errno || v < 1 || v > CERT_DAYS_MAX)
		return hcactl_complain(EXIT_USAGE, "invalid --days '%s' (1 to %u)", shown(s, buf, sizeof(buf)),
				CERT_DAYS_MAX);
	*days = (unsigned)v;
	return 0;
}

static int add_ip(struct copts *o, const char *ip)
{
	unsigned char bin[16];
	char buf[64];

	if (inet_pton(AF_INET, ip, bin) != 1 && inet_pton(AF_INET6, ip, bin) != 1)
		return hcactl_complain(EXIT_USAGE, "invalid --ip '%s' (an IPv4 or IPv6 address)",
				shown(ip, buf, sizeof(buf)));
	if (o->n_ips == CERT_NAMES_MAX)
		return hcactl_complain(EXIT_USAGE, "too many --ip (at most %d)", CERT_NAMES_MAX);
	o->ips[o->n_ips++] = ip;
	return 0;
}

static int set_opt(struct copts *o, const char *name, const char *val)
{
	if (!strcmp(name, "days"))
		return parse_days(val, &o->days);
	if (!strcmp(name, "ip"))
		return add_ip(o, val);
	if (!strcmp(name, "force"))
		o->force = true;
	else if (!val[0])
		return hcactl_complain(EXIT_USAGE, "option '--%s' needs a non-empty value", name);
	else if (!strcmp(name, "pki"))
		o->pki = val;
	else if (!strcmp(name, "out"))
		o->out = val;
	else if (!strcmp(name, "ca-key"))
		o->ca_key = val;
	else if (!strcmp(name, "ca-out"))
		o->ca_out = val;
	else if (!strcmp(name, "file"))
		o->file = val;
	else if (!strcmp(name, "name"))
		o->name = val;
	return 0;
}

static int parse_opts(const struct verb *v, const char *const *names, const char *const *vals,
		      size_t nopt, struct copts *o)
{
	int rc;

	for (size_t i = 0; i < nopt; i++) {
		if (!takes(v, names[i]))
			return hcactl_complain(EXIT_USAGE, "option '--%s' is not for 'cluster %s%s%s'", names[i],
					v->cmd, v->verb ? " " : "", v->verb ? v->verb : "");
		if ((rc = set_opt(o, names[i], vals[i] ? vals[i] : "")))
			return rc;
	}
	return 0;
}

int cluster_cmd(const char *cmd, const char *const *pos, size_t npos, const char *const *names,
		const char *const *vals, size_t nopt, bool json)
{
	const struct verb *v = find_verb(cmd, npos ? pos[0] : NULL);
	struct copts o = { .pki = CERT_PKI_DEFAULT, .name = CLUSTER_NAME_DEFAULT, .json = json };
	const char *node = v && v->verb && npos > 1 ? pos[1] : NULL;
	char buf[80];
	int rc;

	if (!v)
		return hcactl_complain(EXIT_USAGE, "unknown command 'cluster %s %s' (try 'hcactl cluster %s "
				"--help')", cmd, npos ? shown(pos[0], buf, sizeof(buf)) : "", cmd);
	if ((rc = parse_opts(v, names, vals, nopt, &o)))
		return rc;
	if (v->verb && v->run != run_show && !node)
		return hcactl_complain(EXIT_USAGE, "missing NODE (usage: hcactl cluster cert %s NODE)", v->verb);
	if (node && !cert_node_name_valid(node))
		return hcactl_complain(EXIT_USAGE, "invalid node name '%s' (1-%d chars of a-z, 0-9 and -, "
				"not starting with -)", shown(node, buf, sizeof(buf)), CERT_NODE_NAME_MAX);
	return v->run(&o, node);
}
