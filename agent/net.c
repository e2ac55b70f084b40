/* net: tap devices for bridge-mode NICs, made with iproute2's `ip`. */
#include "agent/net.h"
#include "hypervisor/hv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <qb/qblog.h>

static int run_ip(char *const argv[])
{
	int status = 0;
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
		}
		execvp("ip", argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

static bool is_bridge(const char *br)
{
	char path[96];
	struct stat st;

	snprintf(path, sizeof(path), "/sys/class/net/%s/bridge", br);
	return stat(path, &st) == 0;
}

int net_taps_setup(const Hca__VmSpec *s, char *err, size_t len)
{
	char tap[16];

	for (size_t i = 0; i < s->n_nics; i++) {
		const char *br = s->nics[i]->bridge;
		if (s->nics[i]->mode != HCA__NIC_MODE__NIC_MODE_BRIDGE)
			continue;
		if (!is_bridge(br)) {
			snprintf(err, len, "vm %s: nic %zu: bridge '%s' does not exist on this node",
				 s->name, i, br);
			goto fail;
		}
		hv_nic_tap(s, i, tap);
		run_ip((char *[]){ "ip", "link", "del", tap, NULL }); /* a leftover */
		if (run_ip((char *[]){ "ip", "tuntap", "add", "dev", tap, "mode", "tap", NULL }) ||
		    run_ip((char *[]){ "ip", "link", "set", "dev", tap, "master", (char *)br, "up", NULL })) {
			snprintf(err, len, "vm %s: nic %zu: cannot create tap %s on bridge %s",
				 s->name, i, tap, br);
			goto fail;
		}
	}
	return 0;
fail:
	qb_log(LOG_ERR, "%s", err);
	net_taps_teardown(s);
	return -EIO;
}

void net_taps_teardown(const Hca__VmSpec *s)
{
	char tap[16], path[64];
	struct stat st;

	for (size_t i = 0; i < s->n_nics; i++) {
		if (s->nics[i]->mode != HCA__NIC_MODE__NIC_MODE_BRIDGE)
			continue;
		hv_nic_tap(s, i, tap);
		snprintf(path, sizeof(path), "/sys/class/net/%s", tap);
		if (stat(path, &st) == 0)
			run_ip((char *[]){ "ip", "link", "del", tap, NULL });
	}
}
