/* hv_accel: which accelerator can really run guests here, and QEMU's version. */
#include "hypervisor/hv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *hv_accel_name(Hca__Accel a)
{
	switch (a) {
	case HCA__ACCEL__ACCEL_KVM: return "kvm";
	case HCA__ACCEL__ACCEL_TCG: return "tcg";
	default: return "none";
	}
}

static bool module_loaded(const char *m)
{
	char path[64];
	struct stat st;

	snprintf(path, sizeof(path), "/sys/module/%s", m);
	return stat(path, &st) == 0;
}

Hca__Accel hv_accel_detect(char *reason, size_t len)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		snprintf(reason, len, "tcg: /dev/kvm unusable (%s)", strerror(errno));
		return HCA__ACCEL__ACCEL_TCG;
	}
	close(fd);
	if (module_loaded("kvm_intel") || module_loaded("kvm_amd")) {
		snprintf(reason, len, "kvm: /dev/kvm backed by %s",
			 module_loaded("kvm_intel") ? "kvm_intel" : "kvm_amd");
		return HCA__ACCEL__ACCEL_KVM;
	}
	/* e.g. kvm_pvm: /dev/kvm answers but cannot run a stock kernel. */
	snprintf(reason, len, "tcg: /dev/kvm present but neither kvm_intel nor "
		 "kvm_amd is loaded%s", module_loaded("kvm_pvm") ? " (nested kvm_pvm)" : "");
	return HCA__ACCEL__ACCEL_TCG;
}

static int read_child(int fd, char *buf, size_t len)
{
	size_t off = 0;
	ssize_t n;

	while (off + 1 < len && (n = read(fd, buf + off, len - 1 - off)) > 0)
		off += (size_t)n;
	buf[off] = '\0';
	return (int)off;
}

int hv_qemu_version(const char *qemu, int *major, int *minor, char *text,
		    size_t len)
{
	int p[2], status = 0;
	char out[512];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid == 0) {
		dup2(p[1], STDOUT_FILENO);
		dup2(p[1], STDERR_FILENO);
		execl(qemu, qemu, "--version", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		return -errno;
	}
	read_child(p[0], out, sizeof(out));
	close(p[0]);
	waitpid(pid, &status, 0);
	out[strcspn(out, "\n")] = '\0';
	snprintf(text, len, "%s", out);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(text, len, "cannot run '%s --version'%s%s", qemu,
			 out[0] ? ": " : "", out);
		return -ENOEXEC;
	}
	if (sscanf(out, "QEMU emulator version %d.%d", major, minor) != 2) {
		snprintf(text, len, "unrecognised QEMU version line '%s'", out);
		return -EPROTO;
	}
	return 0;
}
