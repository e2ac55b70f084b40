/*
 * hca-journal-verify: host-side checker for the test guest's journal
 * (layout in journal.h, written by workload.c).
 *
 *   hca-journal-verify IMAGE [--json]
 *
 * IMAGE is a raw disk image or block device, or a qcow2 image, which is
 * first converted to a temporary raw file with qemu-img. The journal must be
 * a gapless chain: seq 1, 2, 3... from block 0, every CRC good, boot numbers
 * starting at 1 and growing by one exactly where the boot id changes. The
 * first all-zero block ends it; a record of ours after that end counts as
 * corrupt (a write landed where it should not have).
 *
 * Prints one summary line (or a JSON object with --json) on stdout and each
 * problem found on stderr. Exit status: 0 journal ok, 1 gaps or corruption,
 * 2 usage or I/O error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "journal.h"

#define CHUNK        (1u << 20)
#define MAX_PROBLEMS 20

extern char **environ;

struct scan {
	struct hca_jrec prev;   /* last valid record, if records > 0 */
	bool ended;
	uint64_t end_block;
	uint64_t records;
	uint64_t boots;
	uint64_t first_seq;
	uint64_t gaps;
	uint64_t corrupt;
	uint64_t problems;
};

static const char *prog = "hca-journal-verify";

static _Noreturn void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static void problem(struct scan *s, const char *fmt, ...)
{
	va_list ap;

	if (s->problems++ >= MAX_PROBLEMS)
		return;
	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- image access ---- */

static bool is_qcow2(int fd, const char *path)
{
	unsigned char magic[4];
	ssize_t n = pread(fd, magic, sizeof(magic), 0);

	if (n < 0)
		fail("%s: read failed: %s", path, strerror(errno));
	return n == 4 && !memcmp(magic, "QFI\xfb", 4);
}

static void run_qemu_img(const char *src, const char *dst)
{
	char *argv[] = { "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw",
			 (char *)src, (char *)dst, NULL };
	pid_t pid;
	int status, err;

	err = posix_spawnp(&pid, "qemu-img", NULL, NULL, argv, environ);
	if (err)
		fail("cannot run qemu-img to read qcow2 image %s: %s", src, strerror(err));
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			fail("waitpid qemu-img: %s", strerror(errno));
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		fail("qemu-img convert of %s failed (is a VM still using it?)", src);
}

/* Convert to a raw temp file and return it open, already unlinked so that
 * nothing is left behind however this process ends afterwards. */
static int open_qcow2_as_raw(const char *path)
{
	const char *tmpdir = getenv("TMPDIR");
	char tmp[4096];
	int fd;

	snprintf(tmp, sizeof(tmp), "%s/hca-journal-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
	fd = mkstemp(tmp);
	if (fd < 0)
		fail("cannot create temp file %s: %s", tmp, strerror(errno));
	close(fd);
	run_qemu_img(path, tmp);
	fd = open(tmp, O_RDONLY | O_CLOEXEC);
	unlink(tmp);
	if (fd < 0)
		fail("%s: %s", tmp, strerror(errno));
	return fd;
}

static int open_image(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		fail("%s: %s", path, strerror(errno));
	if (is_qcow2(fd, path)) {
		close(fd);
		fd = open_qcow2_as_raw(path);
	}
	return fd;
}

/* ---- checks ---- */

static void check_chain(struct scan *s, const struct hca_jrec *r, uint64_t blk)
{
	const struct hca_jrec *p = &s->prev;

	if (!s->records) {
		s->first_seq = r->seq;
		s->boots = 1;
		if (r->seq != 1 || r->boot_num != 1) {
			s->gaps++;
			problem(s, "block %" PRIu64 ": journal starts at seq %" PRIu64 " boot %" PRIu64 ", not seq 1 boot 1",
				blk, r->seq, r->boot_num);
		}
		return;
	}
	if (r->seq != p->seq + 1) {
		s->gaps++;
		problem(s, "block %" PRIu64 ": seq %" PRIu64 " follows seq %" PRIu64, blk, r->seq, p->seq);
	}
	if (r->boot_id != p->boot_id) {
		s->boots++;
		if (r->boot_num != p->boot_num + 1) {
			s->gaps++;
			problem(s, "block %" PRIu64 ": new boot numbered %" PRIu64 " after boot %" PRIu64,
				blk, r->boot_num, p->boot_num);
		}
	} else if (r->boot_num != p->boot_num) {
		s->gaps++;
		problem(s, "block %" PRIu64 ": boot number changes %" PRIu64 " -> %" PRIu64 " within one boot id",
			blk, p->boot_num, r->boot_num);
	}
}

static const char *state_name(enum hca_jrec_state st)
{
	return st == HCA_JREC_CORRUPT ? "record with bad CRC or layout" : "block that is not a journal record";
}

static void scan_block(struct scan *s, const void *data, uint64_t blk)
{
	enum hca_jrec_state st = hca_jrec_check(data);
	const struct hca_jrec *r = data;

	if (s->ended) {
		if (st == HCA_JREC_VALID || st == HCA_JREC_CORRUPT) {
			s->corrupt++;
			problem(s, "block %" PRIu64 ": record (seq %" PRIu64 ") after the end of the journal at block %" PRIu64,
				blk, r->seq, s->end_block);
		}
		return;
	}
	switch (st) {
	case HCA_JREC_ZERO:
		s->ended = true;
		s->end_block = blk;
		return;
	case HCA_JREC_CORRUPT:
	case HCA_JREC_FOREIGN:
		s->corrupt++;
		problem(s, "block %" PRIu64 ": %s", blk, state_name(st));
		return;
	case HCA_JREC_VALID:
		check_chain(s, r, blk);
		s->records++;
		s->prev = *r;
		return;
	}
}

static void scan_image(struct scan *s, int fd, const char *path)
{
	uint64_t *buf = malloc(CHUNK); /* malloc: aligned enough for the 8-byte reads */
	uint64_t blk = 0;
	ssize_t n;
	off_t off = 0;

	if (!buf)
		fail("out of memory");
	while ((n = pread(fd, buf, CHUNK, off)) > 0) {
		for (ssize_t i = 0; i + (ssize_t)HCA_JREC_SIZE <= n; i += HCA_JREC_SIZE)
			scan_block(s, (const uint8_t *)buf + i, blk++);
		off += n;
	}
	if (n < 0)
		fail("%s: read failed at offset %jd: %s", path, (intmax_t)off, strerror(errno));
	free(buf);
}

static void report(const struct scan *s, bool json)
{
	bool ok = !s->gaps && !s->corrupt;
	uint64_t last = s->records ? s->prev.seq : 0;

	if (s->problems > MAX_PROBLEMS)
		fprintf(stderr, "%s: ... and %" PRIu64 " more problems\n", prog, s->problems - MAX_PROBLEMS);
	if (json)
		printf("{\"records\":%" PRIu64 ",\"boots\":%" PRIu64 ",\"first_seq\":%" PRIu64
		       ",\"last_seq\":%" PRIu64 ",\"gaps\":%" PRIu64 ",\"corrupt\":%" PRIu64 ",\"ok\":%s}\n",
		       s->records, s->boots, s->first_seq, last, s->gaps, s->corrupt, ok ? "true" : "false");
	else
		printf("records=%" PRIu64 " boots=%" PRIu64 " first_seq=%" PRIu64 " last_seq=%" PRIu64
		       " gaps=%" PRIu64 " corrupt=%" PRIu64 "\n",
		       s->records, s->boots, s->first_seq, last, s->gaps, s->corrupt);
}

static _Noreturn void usage(void)
{
	fprintf(stderr, "usage: %s IMAGE [--json]\n", prog);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	bool json = false;
	struct scan s = { .ended = false };
	int fd;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (argv[i][0] == '-' || path)
			usage();
		else
			path = argv[i];
	}
	if (!path)
		usage();
	fd = open_image(path);
	scan_image(&s, fd, path);
	close(fd);
	report(&s, json);
	return s.gaps || s.corrupt ? 1 : 0;
}
