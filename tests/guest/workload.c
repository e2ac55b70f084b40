/*
 * hca-workload: the test guest's main process (exec'd by /init as PID 1).
 *
 * It gives the host three kinds of evidence that a VM kept running and lost
 * nothing across whatever the test does to it (migration, failover, crash):
 *  - a counter line on the serial console every 100 ms, to see it run;
 *  - memory it keeps dirtying and re-checking, so migration has real work and
 *    a corrupted page is reported on the console;
 *  - a journal of CRC-checked, sequence-numbered 4 KiB records on a raw disk
 *    (layout in journal.h), each made durable before it counts as written,
 *    which hca-journal-verify checks from the host afterwards.
 *
 * Parameters, from /proc/cmdline (or argv[1] when run by hand on a host):
 *   hca.dirty_mib=N  memory kept dirty, MiB                    (default 16)
 *   hca.dirty_rate=N MiB/s written into it, 0 = none            (default 4)
 *   hca.disk=PATH    journal device; absent or "none" = no journal (default none)
 *   hca.rec_ms=N     journal record interval, ms                (default 100)
 *   hca.wr_mib=N     MiB/s of random 4 KiB synchronous writes to the disk,
 *                    0 = none                                    (default 0)
 *   hca.wr_kib=N     the same in KiB/s, for rates below 1 MiB/s
 *   hca.wr_area_mib=N size of the area they go to, from 1 GiB  (default 256)
 *
 * Console lines (stable, parsed by tests):
 *   hca-workload start boot=<id> dirty_mib=<n> rate=<n> disk=<path|none> resume_seq=<n> boot_num=<n> rec_ms=<n>
 *   hca-workload boot=<id> count=<n> seq=<last durable journal seq>
 *   hca-workload poweroff seq=<n>
 *   hca-workload wr: n=<n> p50_us=<n> p99_us=<n> max_us=<n> mib_s=<x>  (each second, with hca.wr_mib)
 * plus one-off "hca-workload journal ..." and "hca-workload mem-corrupt ..." lines.
 *
 * An ACPI power button press (KEY_POWER on any /dev/input/event*), SIGTERM,
 * SIGINT or SIGUSR1 makes it finish the record in hand, sync and power off.
 *
 * It is the guest agent too, on the virtio-serial port named
 * org.qemu.guest_agent.0 (the same protocol as qemu-ga, the commands a
 * replication cut needs): guest-sync(-delimited), guest-ping and
 * guest-fsfreeze-freeze/-thaw/-status. Frozen, neither the journal nor the
 * writer writes (each of their writes is durable before the next, so the
 * disk is quiet and whole); a freeze nobody thaws ends after 10 s. Lines:
 *   hca-workload frozen seq=<n>
 *   hca-workload thawed seq=<n> frozen_ms=<n>     ("thaw-timeout" when it ended itself)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/input.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/reboot.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"

#define NS_PER_MS      UINT64_C(1000000)
#define NS_PER_S       UINT64_C(1000000000)
#define PRINT_NS       (100 * NS_PER_MS)
#define DIRTY_SLICE_NS (10 * NS_PER_MS)
#define SCAN_BYTES     (1u << 20)
#define PAGE           4096u
#define MAX_BUTTONS    8
#define MAX_MEM_REPORTS 10
/* The writer's area starts far beyond where the journal (from block 0, 4 KiB
 * a record) gets in any test, and the journal is stopped short of it. */
#define WR_AREA_OFF    (UINT64_C(1) << 30)
#define WR_SLICE_NS    (10 * NS_PER_MS)
#define GA_PORT_NAME   "org.qemu.guest_agent.0"
#define GA_LINE_MAX    4096u
#define GA_THAW_NS     (10 * NS_PER_S) /* a freeze nobody thaws ends itself */
#define GA_HUP_NS      (200 * NS_PER_MS) /* no host on the port: look again then */

struct config {
	unsigned dirty_mib;
	unsigned dirty_rate;
	unsigned rec_ms;
	unsigned wr_kib;    /* hca.wr_mib or hca.wr_kib */
	unsigned wr_area_mib;
	char disk[256];
};

struct journal {
	int fd;             /* -1 when there is no journal */
	uint64_t size;      /* usable bytes, a multiple of HCA_JREC_SIZE */
	uint64_t off;       /* where the next record goes */
	uint64_t seq;       /* last durable seq */
	uint64_t boot_num;
	bool full;
	struct hca_jrec *rec; /* O_DIRECT-aligned scratch record */
};

struct dirtier {
	uint64_t *mem;
	size_t pages;
	size_t cursor;      /* next page to rewrite */
	uint32_t gen;       /* pass number; pages before cursor hold gen, the rest gen - 1 */
	uint64_t pages_per_s;
	uint64_t start_ns;
	uint64_t done;      /* pages rewritten since start_ns */
	uint64_t errors;
};

/* A second thread doing paced synchronous writes, so their latency is
 * measured apart from the journal's own timing. */
struct writer {
	int fd;             /* -1 when off */
	bool direct;
	bool running;       /* the thread was started */
	uint64_t blocks;    /* 4 KiB blocks in the area */
	uint64_t per_s;     /* writes a second */
	uint64_t rng;
	uint64_t *buf;      /* O_DIRECT-aligned block */
	uint32_t *lat_us;   /* this second's latencies */
	size_t n, cap;
	pthread_t thread;
};

struct buttons {
	int fd[MAX_BUTTONS];
	int n;
	uint64_t next_scan_ns;
};

/* The guest agent: one virtio-serial port, served from the main loop. */
struct agent {
	int fd;             /* -1 until the port is found */
	char line[GA_LINE_MAX];
	size_t len;
	bool skip;          /* the line in hand is too long: dropped up to its end */
	uint64_t frozen_ns; /* since when frozen; 0: thawed */
	uint64_t wait_until; /* no host, or no port yet: poll again then */
};

static volatile sig_atomic_t stop_requested;
static uint64_t boot_id;
/* A freeze stops the writer thread between two writes: it writes under
 * this lock and only while not frozen. */
static pthread_mutex_t wr_lock = PTHREAD_MUTEX_INITIALIZER;
static bool frozen;

static uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static uint64_t mono_ns(void)
{
	return now_ns(CLOCK_MONOTONIC);
}

static void say(const char *fmt, ...)
{
	va_list ap;

	/* the writer thread prints too: keep each line whole */
	flockfile(stdout);
	fputs("hca-workload ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
	funlockfile(stdout);
}

/* Flush everything and power off. Only PID 1 may do that: run by hand on a
 * host, the same code must never take the host down, so it just exits. */
static _Noreturn void power_off(int status)
{
	sync();
	fflush(stdout);
	/* The UART drains from an interrupt; without this the last line can be
	 * lost when the machine goes away. */
	tcdrain(STDOUT_FILENO);
	if (getpid() == 1) {
		reboot(RB_POWER_OFF);
		say("reboot failed: %s", strerror(errno));
		for (;;)
			pause();
	}
	exit(status);
}

static _Noreturn void fatal(const char *what)
{
	say("fatal %s: %s", what, strerror(errno));
	power_off(1);
}

/* ---- parameters ---- */

/* Returns 0 when *out was set. */
static int set_uint(const char *key, const char *val, unsigned *out, unsigned min, unsigned max)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(val, &end, 10);
	if (errno || end == val || *end || v < min || v > max) {
		say("ignoring bad %s=%s (want %u..%u)", key, val, min, max);
		return -EINVAL;
	}
	*out = (unsigned)v;
	return 0;
}

static void parse_param(struct config *cfg, char *tok)
{
	char *val = strchr(tok, '=');

	if (strncmp(tok, "hca.", 4) || !val)
		return;
	*val++ = '\0';
	if (!strcmp(tok, "hca.dirty_mib"))
		set_uint(tok, val, &cfg->dirty_mib, 0, 1u << 16);
	else if (!strcmp(tok, "hca.dirty_rate"))
		set_uint(tok, val, &cfg->dirty_rate, 0, 1u << 20);
	else if (!strcmp(tok, "hca.rec_ms"))
		set_uint(tok, val, &cfg->rec_ms, 1, 3600u * 1000u);
	else if (!strcmp(tok, "hca.wr_mib") && !set_uint(tok, val, &cfg->wr_kib, 0, 1024))
		cfg->wr_kib *= 1024;
	else if (!strcmp(tok, "hca.wr_kib"))
		set_uint(tok, val, &cfg->wr_kib, 0, 1u << 20);
	else if (!strcmp(tok, "hca.wr_area_mib"))
		set_uint(tok, val, &cfg->wr_area_mib, 1, 1u << 20);
	else if (!strcmp(tok, "hca.disk"))
		snprintf(cfg->disk, sizeof(cfg->disk), "%s", val);
}

static void parse_cmdline(struct config *cfg, const char *override)
{
	char line[4096] = "";
	FILE *f;

	*cfg = (struct config){ .dirty_mib = 16, .dirty_rate = 4, .rec_ms = 100, .wr_area_mib = 256 };
	if (override) {
		snprintf(line, sizeof(line), "%s", override);
	} else if ((f = fopen("/proc/cmdline", "r"))) {
		if (!fgets(line, sizeof(line), f))
			line[0] = '\0';
		fclose(f);
	}
	for (char *save, *tok = strtok_r(line, " \t\n", &save); tok;
	     tok = strtok_r(NULL, " \t\n", &save))
		parse_param(cfg, tok);
	if (!strcmp(cfg->disk, "none"))
		cfg->disk[0] = '\0';
}

static uint64_t make_boot_id(void)
{
	uint64_t id = 0;

	/* GRND_INSECURE: an id need not be secret, and a fresh VM without a
	 * virtio-rng must not block here waiting for entropy. */
	if (getrandom(&id, sizeof(id), GRND_INSECURE) != (ssize_t)sizeof(id)) {
		int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

		if (fd >= 0) {
			if (read(fd, &id, sizeof(id)) != (ssize_t)sizeof(id))
				id = 0;
			close(fd);
		}
	}
	id ^= now_ns(CLOCK_REALTIME) * UINT64_C(0x9e3779b97f4a7c15);
	return id ? id : 1;
}

/* ---- journal ---- */

/* virtio_blk probes synchronously, but give a slow TCG guest a moment. */
static int open_disk(const char *path)
{
	for (int i = 0; i < 40; i++) {
		int fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);

		if (fd < 0 && errno == EINVAL) /* a host file system without O_DIRECT */
			fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd >= 0 || errno != ENOENT)
			return fd;
		usleep(50 * 1000);
	}
	return -1;
}

/* Does blk continue the journal whose last good record is prev? */
static bool continues(const struct hca_jrec *prev, const void *blk)
{
	const struct hca_jrec *r = blk;

	if (hca_jrec_check(blk) != HCA_JREC_VALID)
		return false;
	if (!prev->seq)
		return true;
	if (r->seq != prev->seq + 1)
		return false;
	return r->boot_id == prev->boot_id ? r->boot_num == prev->boot_num
					    : r->boot_num == prev->boot_num + 1;
}

static bool read_block(int fd, void *buf, uint64_t off, uint64_t size)
{
	return off + HCA_JREC_SIZE <= size &&
	       pread(fd, buf, HCA_JREC_SIZE, (off_t)off) == (ssize_t)HCA_JREC_SIZE;
}

/* Walk the journal from offset 0 to its last record that continues the chain.
 * Returns the offset of the first block that does not; *last gets the last
 * good record (seq 0 if none). */
static int64_t scan_chain(struct journal *j, struct hca_jrec *last)
{
	uint8_t *buf;
	uint64_t off = 0;

	memset(last, 0, sizeof(*last));
	if (posix_memalign((void **)&buf, PAGE, SCAN_BYTES))
		return -1;
	while (off < j->size) {
		uint64_t len = j->size - off < SCAN_BYTES ? j->size - off : SCAN_BYTES;

		if (pread(j->fd, buf, len, (off_t)off) != (ssize_t)len) {
			free(buf);
			return -1;
		}
		for (uint64_t i = 0; i < len; i += HCA_JREC_SIZE, off += HCA_JREC_SIZE) {
			if (!continues(last, buf + i))
				goto out;
			memcpy(last, buf + i, sizeof(*last));
		}
	}
out:
	free(buf);
	return (int64_t)off;
}

/* Decide where this boot appends. A bad block with nothing after it can only
 * be a write that never completed (so was never acknowledged) and is
 * replaced; anything after a break in the chain is evidence for the
 * verifier, so the journal is left alone. */
static bool journal_resume(struct journal *j)
{
	struct hca_jrec last;
	int64_t stop = scan_chain(j, &last);

	if (stop < 0) {
		say("journal disabled: read failed: %s", strerror(errno));
		return false;
	}
	j->off = (uint64_t)stop;
	j->seq = last.seq;
	j->boot_num = last.boot_num + 1;
	if (j->off >= j->size)
		return true;
	if (!read_block(j->fd, j->rec, j->off, j->size)) {
		say("journal disabled: read failed at offset %" PRIu64 ": %s", j->off, strerror(errno));
		return false;
	}
	if (hca_jrec_check(j->rec) == HCA_JREC_ZERO)
		return true;
	if (!read_block(j->fd, j->rec, j->off + HCA_JREC_SIZE, j->size) ||
	    hca_jrec_check(j->rec) == HCA_JREC_ZERO) {
		say("journal replacing unfinished record at offset %" PRIu64, j->off);
		return true;
	}
	say("journal disabled: disk has data after seq %" PRIu64 " that does not continue the journal (offset %" PRIu64 ")",
	    j->seq, j->off);
	return false;
}

/* limit: bytes the journal may use (the writer's area lies beyond). */
static void journal_open(struct journal *j, const char *path, uint64_t limit)
{
	off_t end;

	*j = (struct journal){ .fd = -1, .boot_num = 1 };
	if (!path[0]) {
		say("journal disabled: no hca.disk given");
		return;
	}
	if (posix_memalign((void **)&j->rec, PAGE, sizeof(*j->rec)))
		fatal("journal buffer");
	j->fd = open_disk(path);
	if (j->fd < 0) {
		say("journal disabled: %s: %s", path, strerror(errno));
		return;
	}
	end = lseek(j->fd, 0, SEEK_END);
	j->size = end > 0 ? (uint64_t)end / HCA_JREC_SIZE * HCA_JREC_SIZE : 0;
	if (j->size > limit)
		j->size = limit;
	if (!journal_resume(j)) {
		close(j->fd);
		j->fd = -1;
	}
}

static void journal_append(struct journal *j, uint64_t counter)
{
	struct hca_jrec *r = j->rec;

	if (j->fd < 0 || j->full)
		return;
	if (j->off + HCA_JREC_SIZE > j->size) {
		say("journal full seq=%" PRIu64, j->seq);
		j->full = true;
		return;
	}
	*r = (struct hca_jrec){
		.seq = j->seq + 1,
		.boot_id = boot_id,
		.boot_num = j->boot_num,
		.counter = counter,
		.time_ns = now_ns(CLOCK_REALTIME),
		.mono_ns = mono_ns(),
	};
	hca_jrec_seal(r);
	/* Only a record that survived fdatasync (a virtio flush, which also
	 * commits qcow2 metadata on the host) counts as written. */
	if (pwrite(j->fd, r, sizeof(*r), (off_t)j->off) != (ssize_t)sizeof(*r) ||
	    fdatasync(j->fd)) {
		say("journal error seq=%" PRIu64 ": %s; journal stopped", j->seq + 1, strerror(errno));
		close(j->fd);
		j->fd = -1;
		return;
	}
	j->seq++;
	j->off += HCA_JREC_SIZE;
}

static void journal_close(struct journal *j)
{
	if (j->fd >= 0) {
		fdatasync(j->fd);
		close(j->fd);
		j->fd = -1;
	}
}

/* ---- memory dirtier ---- */

/* Generation 0 is the zero page the kernel handed out, so start-up costs
 * nothing (filling 16 MiB up front takes about a second under TCG). */
static uint64_t page_word(size_t page, uint32_t gen, size_t k)
{
	if (!gen)
		return 0;
	return ((uint64_t)page << 32 | gen) ^ (k * UINT64_C(0x9e3779b97f4a7c15));
}

static void page_fill(struct dirtier *d, size_t page, uint32_t gen)
{
	uint64_t *w = d->mem + page * (PAGE / 8);

	for (size_t k = 0; k < PAGE / 8; k++)
		w[k] = page_word(page, gen, k);
}

/* A page that no longer holds what we last wrote means the VM's memory was
 * not carried over intact (a migration bug, typically). */
static void page_check(struct dirtier *d, size_t page, uint32_t gen)
{
	const uint64_t *w = d->mem + page * (PAGE / 8);

	for (size_t k = 0; k < PAGE / 8; k++) {
		if (w[k] == page_word(page, gen, k))
			continue;
		if (d->errors++ < MAX_MEM_REPORTS)
			say("mem-corrupt page=%zu word=%zu gen=%" PRIu32 " want=%016" PRIx64 " got=%016" PRIx64,
			    page, k, gen, page_word(page, gen, k), w[k]);
		return;
	}
}

static void dirtier_init(struct dirtier *d, const struct config *cfg)
{
	*d = (struct dirtier){ .gen = 1 };
	d->pages = (size_t)cfg->dirty_mib * (1u << 20) / PAGE;
	if (!d->pages)
		return;
	d->mem = mmap(NULL, d->pages * PAGE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (d->mem == MAP_FAILED)
		fatal("mmap dirty area");
	d->pages_per_s = (uint64_t)cfg->dirty_rate * ((1u << 20) / PAGE);
	d->start_ns = mono_ns();
}

/* Rewrite as many pages as the rate allows by now. After a long stall (the
 * VM was paused) it does not try to catch up more than a slice. */
static void dirtier_run(struct dirtier *d, uint64_t now)
{
	uint64_t due, slice = d->pages_per_s * DIRTY_SLICE_NS / NS_PER_S + 1;

	if (!d->pages || !d->pages_per_s)
		return;
	due = (now - d->start_ns) / NS_PER_MS * d->pages_per_s / 1000;
	if (due > d->done + slice)
		d->done = due - slice;
	for (; d->done < due; d->done++) {
		page_check(d, d->cursor, d->gen - 1);
		page_fill(d, d->cursor, d->gen);
		if (++d->cursor == d->pages) {
			d->cursor = 0;
			d->gen++;
		}
	}
}

/* ---- disk writer ---- */

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static void writer_report(struct writer *w, uint64_t elapsed_ns)
{
	uint32_t p50 = 0, p99 = 0, max = 0;

	if (w->n) {
		qsort(w->lat_us, w->n, sizeof(w->lat_us[0]), cmp_u32);
		p50 = w->lat_us[(w->n - 1) * 50 / 100];
		p99 = w->lat_us[(w->n - 1) * 99 / 100];
		max = w->lat_us[w->n - 1];
	}
	printf("hca-workload wr: n=%zu p50_us=%" PRIu32 " p99_us=%" PRIu32 " max_us=%" PRIu32 " mib_s=%.2f\n",
	       w->n, p50, p99, max, (double)w->n * PAGE / (1u << 20) * NS_PER_S / (double)elapsed_ns);
	fflush(stdout);
	w->n = 0;
}

/* One block of fresh pseudo-random data (incompressible: the worst case for
 * a replication stream) at a random block of the area, made durable. */
static bool writer_write(struct writer *w)
{
	uint64_t off = WR_AREA_OFF + xorshift(&w->rng) % w->blocks * PAGE, t0;

	for (size_t k = 0; k < PAGE / 8; k++)
		w->buf[k] = xorshift(&w->rng);
	t0 = mono_ns();
	if (pwrite(w->fd, w->buf, PAGE, (off_t)off) != (ssize_t)PAGE || fdatasync(w->fd)) {
		say("wr error at offset %" PRIu64 ": %s; writer stopped", off, strerror(errno));
		return false;
	}
	if (w->n < w->cap)
		w->lat_us[w->n++] = (uint32_t)((mono_ns() - t0) / 1000);
	return true;
}

/* Paced like the dirtier: after a stall it does not catch up more than a
 * slice, so a rate the disk cannot reach shows as fewer writes a second. */
static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint64_t start = mono_ns(), win = start, done = 0;
	uint64_t slice = w->per_s * WR_SLICE_NS / NS_PER_S + 1;

	while (!stop_requested) {
		uint64_t now = mono_ns(), due = (now - start) / 1000 * w->per_s / 1000000;

		if (now - win >= NS_PER_S) {
			writer_report(w, now - win);
			win = now;
		}
		if (due > done + slice)
			done = due - slice;
		if (done < due) {
			bool ok = true, idle;

			pthread_mutex_lock(&wr_lock);
			idle = frozen;
			if (!idle)
				ok = writer_write(w);
			pthread_mutex_unlock(&wr_lock);
			if (!ok)
				break;
			if (!idle) {
				done++;
				continue;
			}
		}
		uint64_t next = start + (done + 1) * NS_PER_S / w->per_s;
		struct timespec ts;

		if (next > win + NS_PER_S)
			next = win + NS_PER_S;
		if (next > now + PRINT_NS) /* see a stop request soon */
			next = now + PRINT_NS;
		ts = (struct timespec){ .tv_sec = (time_t)(next / NS_PER_S), .tv_nsec = (long)(next % NS_PER_S) };
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
	}
	return NULL;
}

static void writer_start(struct writer *w, const struct config *cfg)
{
	uint64_t area = (uint64_t)cfg->wr_area_mib << 20;
	sigset_t all, old;
	off_t end;

	*w = (struct writer){ .fd = -1 };
	if (!cfg->wr_kib)
		return;
	if (!cfg->disk[0] || (w->fd = open_disk(cfg->disk)) < 0) {
		say("wr disabled: %s", cfg->disk[0] ? strerror(errno) : "no hca.disk given");
		return;
	}
	end = lseek(w->fd, 0, SEEK_END);
	if (end < 0 || (uint64_t)end < WR_AREA_OFF + area) {
		say("wr disabled: %s is smaller than %" PRIu64 " MiB", cfg->disk, (WR_AREA_OFF + area) >> 20);
		goto fail;
	}
	w->direct = fcntl(w->fd, F_GETFL) & O_DIRECT;
	w->blocks = area / PAGE;
	w->per_s = ((uint64_t)cfg->wr_kib * 1024 + PAGE - 1) / PAGE;
	w->cap = w->per_s * 2 + 64;
	w->rng = boot_id | 1;
	w->lat_us = calloc(w->cap, sizeof(w->lat_us[0]));
	if (!w->lat_us || posix_memalign((void **)&w->buf, PAGE, PAGE))
		fatal("writer buffers");
	say("wr start kib_s=%u area_off_mib=%" PRIu64 " area_mib=%u direct=%d", cfg->wr_kib,
	    WR_AREA_OFF >> 20, cfg->wr_area_mib, w->direct);
	/* signals go to the main loop, which polls for them */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	w->running = !pthread_create(&w->thread, NULL, writer_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (w->running)
		return;
	say("wr disabled: cannot start its thread");
fail:
	close(w->fd);
	w->fd = -1;
}

static void writer_stop(struct writer *w)
{
	if (w->running)
		pthread_join(w->thread, NULL);
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
}

/* ---- power button ---- */

static bool has_power_key(int fd)
{
	uint8_t keys[KEY_MAX / 8 + 1] = { 0 };

	if (ioctl(fd, EVIOCGBIT(EV_KEY, sizeof(keys)), keys) < 0)
		return false;
	return keys[KEY_POWER / 8] & (1u << (KEY_POWER % 8));
}

/* The ACPI button driver registers its input device while /init loads it,
 * so one scan normally finds it; keep looking each second if not. */
static void buttons_scan(struct buttons *b, uint64_t now)
{
	DIR *dir;
	struct dirent *de;

	b->next_scan_ns = now + NS_PER_S;
	if (b->n || !(dir = opendir("/dev/input")))
		return;
	while ((de = readdir(dir)) && b->n < MAX_BUTTONS) {
		int fd;

		if (strncmp(de->d_name, "event", 5))
			continue;
		fd = openat(dirfd(dir), de->d_name, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (has_power_key(fd))
			b->fd[b->n++] = fd;
		else
			close(fd);
	}
	closedir(dir);
}

static bool power_pressed(int fd)
{
	struct input_event ev[16];
	ssize_t n;

	while ((n = read(fd, ev, sizeof(ev))) > 0)
		for (size_t i = 0; i < (size_t)n / sizeof(ev[0]); i++)
			if (ev[i].type == EV_KEY && ev[i].code == KEY_POWER && ev[i].value == 1)
				return true;
	return false;
}

/* ---- guest agent ---- */

/* The device of the port named GA_PORT_NAME (/dev/vportNpM), opened. */
static int agent_open(void)
{
	DIR *dir = opendir("/sys/class/virtio-ports");
	struct dirent *de;
	int fd = -1;

	while (dir && fd < 0 && (de = readdir(dir))) {
		char path[512], name[64] = "";
		FILE *f;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", de->d_name);
		if (!(f = fopen(path, "r")))
			continue;
		if (!fgets(name, sizeof(name), f))
			name[0] = '\0';
		fclose(f);
		name[strcspn(name, "\n")] = '\0';
		if (strcmp(name, GA_PORT_NAME))
			continue;
		snprintf(path, sizeof(path), "/dev/%s", de->d_name);
		fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0)
			say("agent: cannot open %s: %s", path, strerror(errno));
		else
			say("agent on %s", path);
	}
	if (dir)
		closedir(dir);
	return fd;
}

static void agent_init(struct agent *a)
{
	*a = (struct agent){ .fd = agent_open() };
	if (a->fd < 0)
		a->wait_until = mono_ns() + NS_PER_S;
}

/* One whole reply line; the host reads it at once, so a full port is
 * waited for briefly and a reply that cannot go is dropped. */
__attribute__((format(printf, 2, 3)))
static void agent_reply(struct agent *a, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;
	size_t off = 0;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf))
		return;
	while (off < (size_t)n) {
		ssize_t w = write(a->fd, buf + off, (size_t)n - off);
		struct pollfd p = { .fd = a->fd, .events = POLLOUT };

		if (w > 0) {
			off += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN && poll(&p, 1, 1000) > 0)
			continue;
		return;
	}
}

/* The string value of "key" in a JSON object line, into out; false when
 * there is none. Enough for the requests of the protocol, bounded. */
static bool json_str(const char *line, const char *key, char *out, size_t len)
{
	char pat[40];
	const char *p;
	size_t n = 0;

	snprintf(pat, sizeof(pat), "\"%s\"", key);
	if (!(p = strstr(line, pat)))
		return false;
	p += strlen(pat);
	p += strspn(p, " \t");
	if (*p++ != ':')
		return false;
	p += strspn(p, " \t");
	if (*p++ != '"')
		return false;
	while (*p && *p != '"' && n + 1 < len)
		out[n++] = *p++;
	out[n] = '\0';
	return *p == '"';
}

static bool json_int(const char *line, const char *key, long long *out)
{
	char pat[40], *end;
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\"", key);
	if (!(p = strstr(line, pat)))
		return false;
	p += strlen(pat);
	p += strspn(p, " \t");
	if (*p++ != ':')
		return false;
	errno = 0;
	*out = strtoll(p, &end, 10);
	return !errno && end != p;
}

static void agent_thaw(struct agent *a, const struct journal *j, const char *how)
{
	uint64_t ms = (mono_ns() - a->frozen_ns) / NS_PER_MS;

	pthread_mutex_lock(&wr_lock);
	frozen = false;
	pthread_mutex_unlock(&wr_lock);
	a->frozen_ns = 0;
	say("%s seq=%" PRIu64 " frozen_ms=%" PRIu64, how, j->seq, ms);
}

static void agent_command(struct agent *a, const struct journal *j, const char *line)
{
	char cmd[64];
	long long id;

	if (!json_str(line, "execute", cmd, sizeof(cmd))) {
		agent_reply(a, "{\"error\": {\"class\": \"GenericError\", \"desc\": "
			    "\"not a command\"}}\n");
		return;
	}
	if (!strcmp(cmd, "guest-sync-delimited") || !strcmp(cmd, "guest-sync")) {
		if (!json_int(line, "id", &id))
			agent_reply(a, "{\"error\": {\"class\": \"GenericError\", \"desc\": "
				    "\"an integer id is needed\"}}\n");
		else
			agent_reply(a, "%s{\"return\": %lld}\n",
				    !strcmp(cmd, "guest-sync") ? "" : "\xff", id);
	} else if (!strcmp(cmd, "guest-ping")) {
		agent_reply(a, "{\"return\": {}}\n");
	} else if (!strcmp(cmd, "guest-fsfreeze-status")) {
		agent_reply(a, "{\"return\": \"%s\"}\n", a->frozen_ns ? "frozen" : "thawed");
	} else if (!strcmp(cmd, "guest-fsfreeze-freeze")) {
		if (a->frozen_ns) {
			agent_reply(a, "{\"error\": {\"class\": \"GenericError\", \"desc\": "
				    "\"already frozen\"}}\n");
			return;
		}
		/* the journal's last record is durable (main loop, written
		 * synchronously); the writer finishes the write in hand */
		pthread_mutex_lock(&wr_lock);
		frozen = true;
		pthread_mutex_unlock(&wr_lock);
		a->frozen_ns = mono_ns();
		say("frozen seq=%" PRIu64, j->seq);
		agent_reply(a, "{\"return\": 1}\n");
	} else if (!strcmp(cmd, "guest-fsfreeze-thaw")) {
		bool was = a->frozen_ns;

		if (was)
			agent_thaw(a, j, "thawed");
		agent_reply(a, "{\"return\": %d}\n", was ? 1 : 0);
	} else {
		agent_reply(a, "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": "
			    "\"The command %s has not been found\"}}\n", cmd);
	}
}

/* Read what the host sent; each whole line is a command. A 0xFF byte
 * (the host's resync) drops the line in hand. */
static void agent_read(struct agent *a, const struct journal *j, uint64_t now)
{
	char buf[1024];
	ssize_t n;

	while ((n = read(a->fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			char ch = buf[i];

			if ((unsigned char)ch == 0xFF) {
				a->len = 0;
				a->skip = false;
			} else if (ch == '\n') {
				a->line[a->len] = '\0';
				if (!a->skip && a->len)
					agent_command(a, j, a->line);
				a->len = 0;
				a->skip = false;
			} else if (a->len + 1 < GA_LINE_MAX) {
				a->line[a->len++] = ch;
			} else {
				a->skip = true;
			}
		}
	}
	if (n == 0) /* no host on the port: reads end at once until one comes */
		a->wait_until = now + GA_HUP_NS;
}

/* The port to poll now, or -1 (none, or no host on it for a while). */
static int agent_poll_fd(struct agent *a, uint64_t now)
{
	if (a->fd < 0 && now >= a->wait_until) {
		a->fd = agent_open();
		a->wait_until = now + NS_PER_S;
	}
	return a->fd >= 0 && now >= a->wait_until ? a->fd : -1;
}

static void agent_event(struct agent *a, const struct journal *j, short revents, uint64_t now)
{
	if (revents & POLLIN)
		agent_read(a, j, now);
	else if (revents & (POLLHUP | POLLERR))
		a->wait_until = now + GA_HUP_NS;
}

static void agent_tick(struct agent *a, const struct journal *j, uint64_t now)
{
	if (a->frozen_ns && now - a->frozen_ns >= GA_THAW_NS)
		agent_thaw(a, j, "thaw-timeout");
}

/* ---- main loop ---- */

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void install_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal, .sa_flags = SA_RESTART };
	const int sigs[] = { SIGTERM, SIGINT, SIGUSR1, SIGPWR };

	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
}

/* Move a periodic deadline on; after a stall, restart from now instead of
 * firing a burst of stale ticks. */
static void advance(uint64_t *deadline, uint64_t period, uint64_t now)
{
	*deadline += period;
	if (*deadline + NS_PER_S < now)
		*deadline = now + period;
}

static int poll_timeout_ms(uint64_t now, uint64_t next)
{
	return next <= now ? 0 : (int)((next - now + NS_PER_MS - 1) / NS_PER_MS);
}

static void run(const struct config *cfg, struct journal *j, struct dirtier *d)
{
	struct buttons b = { .n = 0 };
	struct agent a;
	uint64_t count = 0, now = mono_ns();
	uint64_t next_print = now, next_rec = now, rec_ns = cfg->rec_ms * NS_PER_MS;

	buttons_scan(&b, now);
	agent_init(&a);
	while (!stop_requested) {
		struct pollfd pfd[MAX_BUTTONS + 1];
		uint64_t next;
		int nfd, gfd;

		now = mono_ns();
		agent_tick(&a, j, now);
		if (now >= next_rec) {
			if (!a.frozen_ns)
				journal_append(j, count);
			advance(&next_rec, rec_ns, now);
		}
		if (now >= next_print) {
			printf("hca-workload boot=%016" PRIx64 " count=%" PRIu64 " seq=%" PRIu64 "\n",
			       boot_id, ++count, j->seq);
			fflush(stdout);
			advance(&next_print, PRINT_NS, now);
		}
		dirtier_run(d, now);
		if (!b.n && now >= b.next_scan_ns)
			buttons_scan(&b, now);

		next = next_print < next_rec ? next_print : next_rec;
		if (d->pages_per_s && now + DIRTY_SLICE_NS < next)
			next = now + DIRTY_SLICE_NS;
		for (int i = 0; i < b.n; i++)
			pfd[i] = (struct pollfd){ .fd = b.fd[i], .events = POLLIN };
		nfd = b.n;
		if ((gfd = agent_poll_fd(&a, now)) >= 0)
			pfd[nfd++] = (struct pollfd){ .fd = gfd, .events = POLLIN };
		if (poll(pfd, (nfds_t)nfd, poll_timeout_ms(now, next)) <= 0)
			continue;
		for (int i = 0; i < b.n; i++)
			if ((pfd[i].revents & POLLIN) && power_pressed(b.fd[i]))
				stop_requested = 1;
		if (gfd >= 0)
			agent_event(&a, j, pfd[b.n].revents, mono_ns());
	}
	if (a.frozen_ns)
		agent_thaw(&a, j, "thawed");
}

int main(int argc, char **argv)
{
	struct config cfg;
	struct journal j;
	struct dirtier d;
	struct writer w;

	setvbuf(stdout, NULL, _IOLBF, 0);
	install_signals();
	parse_cmdline(&cfg, argc > 1 ? argv[1] : NULL);
	boot_id = make_boot_id();
	journal_open(&j, cfg.disk, cfg.wr_kib ? WR_AREA_OFF : UINT64_MAX);
	dirtier_init(&d, &cfg);
	say("start boot=%016" PRIx64 " dirty_mib=%u rate=%u disk=%s resume_seq=%" PRIu64 " boot_num=%" PRIu64 " rec_ms=%u",
	    boot_id, cfg.dirty_mib, cfg.dirty_rate, j.fd >= 0 ? cfg.disk : "none", j.seq, j.boot_num,
	    cfg.rec_ms);
	writer_start(&w, &cfg);
	run(&cfg, &j, &d);
	writer_stop(&w);
	journal_close(&j);
	sync();
	say("poweroff seq=%" PRIu64, j.seq);
	power_off(0);
}
