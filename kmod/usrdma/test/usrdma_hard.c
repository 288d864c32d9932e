// SPDX-License-Identifier: GPL-2.0
/*
 * usrdma-hard: the module's hard cases, each as a race that the module must
 * win, driven with raw ioctls.
 *
 *   usrdma-hard remove-wait ADDR  a SYNC (and then an UNMAP_USER) copying a
 *                                 bounce buffer is held inside its copy by
 *                                 a userfaultfd; unbinding the device must
 *                                 not return before that ioctl has: the
 *                                 copy and the freeing of the bounce
 *                                 buffer use the device's DMA API
 *   usrdma-hard reset-bars ADDR   a thread reads a BAR register of an NVMe
 *                                 controller without pause while another
 *                                 resets the function (RESET): no read
 *                                 may see the device mid-reset, and reads
 *                                 work after it
 *   usrdma-hard intx-masked ADDR  INTx is unmasked and used, the file
 *                                 closed: the line is left masked
 *   usrdma-hard dead-page ADDR    a buffer mapped twice and BAR 0, then the
 *                                 device unbound: a write through one
 *                                 mapping shows in no other (each reads
 *                                 all-ones), and nothing faults
 *
 * ADDR is the device's full PCI address, bound to usrdma (edu, except
 * reset-bars: an NVMe controller, which has a function-level reset). The
 * device is bound to usrdma again at the end of remove-wait and dead-page. Prints one
 * line per check; exits 0 when all passed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "usrdma_uapi.h"

#define PAGE		4096ul
/* A mask of 24 bits: nearly every page lies above it, and is bounced. */
#define LOW_BITS	24
#define LOW_REACH	(1ull << LOW_BITS)
#define INTX_DISABLE	0x400

static int failures;

#define CHECK(cond, ...) do {						\
	if (cond) {							\
		printf("ok:   ");					\
	} else {							\
		printf("FAIL: ");					\
		failures++;						\
	}								\
	printf(__VA_ARGS__);						\
	printf("\n");							\
	fflush(stdout);							\
} while (0)

static int done(void)
{
	printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
	return failures ? 1 : 0;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int open_node(const char *addr)
{
	char path[64];

	snprintf(path, sizeof(path), "/dev/usrdma/%s", addr);
	return open(path, O_RDWR | O_CLOEXEC);
}

/* Writes text to a sysfs file; 0 or -1 with errno. */
static int sysfs_write(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	int ret;

	if (fd < 0)
		return -1;
	ret = write(fd, text, strlen(text)) == (ssize_t)strlen(text) ? 0 : -1;
	close(fd);
	return ret;
}

/* Reads (or writes) 16 bits of the device's config space at off. */
static int config16(const char *addr, unsigned int off, uint16_t *v, int wr)
{
	char path[128];
	int fd, ret;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/config", addr);
	fd = open(path, wr ? O_WRONLY : O_RDONLY);
	if (fd < 0)
		return -1;
	ret = (wr ? pwrite(fd, v, 2, off) : pread(fd, v, 2, off)) == 2 ? 0 : -1;
	close(fd);
	return ret;
}

/* The physical address of the page at p (root reads pagemap), or 0. */
static uint64_t phys_of(const void *p)
{
	uint64_t entry = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY);

	if (fd < 0)
		return 0;
	if (pread(fd, &entry, 8, ((uintptr_t)p / PAGE) * 8) != 8)
		entry = 0;
	close(fd);
	if (!(entry & (1ull << 63)))
		return 0;
	return (entry & ((1ull << 55) - 1)) * PAGE;
}

/* ---- remove-wait --------------------------------------------------------- */

struct racer {
	int fd;
	unsigned long req;
	void *arg;
	const char *addr;
	int ret, err;
	atomic_int finished;
	double at;		/* when it returned, ms */
};

static void *run_ioctl(void *p)
{
	struct racer *r = p;

	r->ret = ioctl(r->fd, r->req, r->arg);
	r->err = errno;
	r->at = now_ms();
	atomic_store(&r->finished, 1);
	return NULL;
}

static void *run_unbind(void *p)
{
	struct racer *r = p;
	char path[128];

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver/unbind",
		 r->addr);
	r->ret = sysfs_write(path, r->addr);
	r->err = errno;
	r->at = now_ms();
	atomic_store(&r->finished, 1);
	return NULL;
}

/* Binds the device to usrdma again (its driver_override still says so). */
static int rebind(const char *addr)
{
	char path[128];

	if (sysfs_write("/sys/bus/pci/drivers_probe", addr))
		return -1;
	snprintf(path, sizeof(path), "/dev/usrdma/%s", addr);
	for (int i = 0; i < 100; i++) {
		if (!access(path, F_OK))
			return 0;
		usleep(10000);
	}
	return -1;
}

/*
 * One round: a bounced mapping of one page, the page then taken away and
 * registered with a userfaultfd, so that the ioctl's copy (SYNC for the
 * device reads it, UNMAP_USER of a FROM_DEVICE mapping writes it) faults
 * and waits for this thread to resolve it.
 */
static void remove_round(const char *addr, int unmap)
{
	const char *what = unmap ? "UNMAP_USER" : "SYNC";
	struct usrdma_dma_mask mask = { .argsz = sizeof(mask), .bits = LOW_BITS };
	struct usrdma_sg_entry e[2];
	struct usrdma_map_user m;
	struct usrdma_sync s = { .argsz = sizeof(s) };
	struct usrdma_unmap_user u = { .argsz = sizeof(u) };
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg;
	struct uffdio_zeropage zero;
	struct uffd_msg msg;
	struct racer io = { 0 }, unbind = { 0 };
	pthread_t io_thread, unbind_thread;
	struct pollfd pfd;
	size_t len = 64ul << 20, i;
	uint8_t *mem, *page = NULL;
	int fd, uffd, ret, bounced = 0;
	double resolved;

	fd = open_node(addr);
	CHECK(fd >= 0, "%s: open: %s", what, fd >= 0 ? "ok" : strerror(errno));
	if (fd < 0)
		return;
	CHECK(ioctl(fd, USRDMA_SET_DMA_MASK, &mask) == 0, "%s: SET_DMA_MASK %d", what, LOW_BITS);
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (mem == MAP_FAILED) {
		CHECK(0, "%s: mmap 64 MiB: %s", what, strerror(errno));
		return;
	}
	memset(mem, 0x5a, len);
	for (i = 0; i < len && !bounced; i += PAGE) {
		if (phys_of(mem + i) < LOW_REACH)
			continue;
		page = mem + i;
		memset(&m, 0, sizeof(m));
		m.argsz = sizeof(m);
		m.flags = USRDMA_DIR_TO_DEVICE | USRDMA_DIR_FROM_DEVICE;
		m.addr = (uintptr_t)page;
		m.length = PAGE;
		m.entries = (uintptr_t)e;
		m.capacity = 2;
		ret = ioctl(fd, USRDMA_MAP_USER, &m);
		if (ret)
			break;
		bounced = m.out_flags & USRDMA_MAP_BOUNCED;
	}
	CHECK(bounced, "%s: a page above 2^%d is bounced (handle %u)", what, LOW_BITS,
	      bounced ? m.handle : 0);
	if (!bounced)
		goto out;

	/* The page goes; the next access to it waits for this thread. */
	uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	ret = uffd < 0 ? -1 : ioctl(uffd, UFFDIO_API, &api);
	reg.range.start = (uintptr_t)page;
	reg.range.len = PAGE;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	ret = ret ? ret : ioctl(uffd, UFFDIO_REGISTER, &reg);
	ret = ret ? ret : madvise(page, PAGE, MADV_DONTNEED);
	CHECK(ret == 0, "%s: userfaultfd over the mapped page: %s", what,
	      ret ? strerror(errno) : "ok");
	if (ret)
		goto out;

	io.fd = fd;
	if (unmap) {
		io.req = USRDMA_UNMAP_USER;
		u.handle = m.handle;
		io.arg = &u;
	} else {
		io.req = USRDMA_SYNC;
		s.flags = USRDMA_SYNC_FOR_DEVICE;
		s.handle = m.handle;
		s.length = PAGE;
		io.arg = &s;
	}
	pthread_create(&io_thread, NULL, run_ioctl, &io);
	pfd.fd = uffd;
	pfd.events = POLLIN;
	ret = poll(&pfd, 1, 5000);
	ret = ret == 1 ? (int)read(uffd, &msg, sizeof(msg)) : -1;
	CHECK(ret == sizeof(msg) && msg.event == UFFD_EVENT_PAGEFAULT &&
	      !atomic_load(&io.finished),
	      "%s: the ioctl is inside its copy of the bounce buffer (fault at %#llx)",
	      what, (unsigned long long)msg.arg.pagefault.address);

	unbind.addr = addr;
	pthread_create(&unbind_thread, NULL, run_unbind, &unbind);
	/* Ample: the grace unbind waits out is 0 here (test_remove_wait). */
	usleep(500 * 1000);
	CHECK(!atomic_load(&unbind.finished),
	      "%s: unbind waits while the ioctl copies (it %s)", what,
	      atomic_load(&unbind.finished) ? "returned" : "is still waiting");

	resolved = now_ms();
	zero.range.start = (uintptr_t)page;
	zero.range.len = PAGE;
	zero.mode = 0;
	ret = ioctl(uffd, UFFDIO_ZEROPAGE, &zero);
	CHECK(ret == 0, "%s: fault resolved: %s", what, ret ? strerror(errno) : "ok");
	pthread_join(io_thread, NULL);
	pthread_join(unbind_thread, NULL);
	CHECK(unbind.ret == 0, "%s: unbind: %s", what,
	      unbind.ret ? strerror(unbind.err) : "ok");
	/*
	 * Unbind returns only once the copy could go on and the ioctl left the
	 * module. (Which of the two threads reads the clock first after its
	 * system call returns is up to the scheduler, so the times are shown,
	 * not compared.)
	 */
	CHECK(unbind.at >= resolved,
	      "%s: unbind returned %.1f ms after the fault was resolved, the ioctl (%s) %.1f ms after",
	      what, unbind.at - resolved, io.ret ? strerror(io.err) : "ok",
	      io.at - resolved);
	close(uffd);
out:
	munmap(mem, len);
	close(fd);
	CHECK(rebind(addr) == 0, "%s: bound to usrdma again", what);
}

#define QUARANTINE_MS "/sys/module/usrdma/parameters/quarantine_ms"

static int test_remove_wait(const char *addr)
{
	char old[32] = "1000";
	int fd = open(QUARANTINE_MS, O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, old, sizeof(old) - 1);

	if (fd >= 0)
		close(fd);
	if (n > 0)
		old[n] = 0;
	/*
	 * No grace: unbind then returns at once unless it waits for the ioctl,
	 * so half a second tells the two apart.
	 */
	CHECK(sysfs_write(QUARANTINE_MS, "0") == 0, "quarantine_ms 0 for the test");
	remove_round(addr, 0);
	remove_round(addr, 1);
	CHECK(sysfs_write(QUARANTINE_MS, old) == 0, "quarantine_ms back to %s", old);
	return done();
}

/* ---- reset-bars ---------------------------------------------------------- */

#define NVME_VS		0x08

struct reader {
	volatile uint32_t *reg;
	uint32_t expect;
	atomic_int stop;
	long reads, wrong;
	uint32_t first_wrong;
};

static void *read_loop(void *p)
{
	struct reader *r = p;

	while (!atomic_load(&r->stop)) {
		uint32_t v = *r->reg;

		r->reads++;
		if (v != r->expect && !r->wrong++)
			r->first_wrong = v;
	}
	return NULL;
}

static int test_reset_bars(const char *addr)
{
	struct usrdma_reset reset = { .argsz = sizeof(reset) };
	struct reader r = { 0 };
	pthread_t thread;
	long before;
	void *bar;
	int fd, ret = 0, i;

	fd = open_node(addr);
	CHECK(fd >= 0, "open: %s", fd >= 0 ? "ok" : strerror(errno));
	if (fd < 0)
		return done();
	bar = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		   USRDMA_BAR_OFFSET(0));
	CHECK(bar != MAP_FAILED, "BAR 0 mapped");
	if (bar == MAP_FAILED)
		return done();
	r.reg = (volatile uint32_t *)((uint8_t *)bar + NVME_VS);
	r.expect = *r.reg;
	CHECK(r.expect && r.expect != 0xffffffff, "NVMe VS register: %#x", r.expect);

	pthread_create(&thread, NULL, read_loop, &r);
	usleep(20000);
	for (i = 0; i < 3 && !ret; i++) {
		before = r.reads;
		ret = ioctl(fd, USRDMA_RESET, &reset);
		CHECK(ret == 0, "RESET %d while a thread reads BAR 0: %s", i + 1,
		      ret ? strerror(errno) : "ok");
		usleep(20000);
		CHECK(r.reads > before, "reads go on after RESET %d (%ld so far)",
		      i + 1, r.reads);
	}
	atomic_store(&r.stop, 1);
	pthread_join(thread, NULL);
	CHECK(r.wrong == 0,
	      "no read reached the device mid-reset: %ld of %ld reads gave something else than VS (first %#x)",
	      r.wrong, r.reads, r.first_wrong);
	CHECK(*r.reg == r.expect, "VS reads %#x after the resets", *r.reg);
	munmap(bar, PAGE);
	close(fd);
	return done();
}

/* ---- intx-masked --------------------------------------------------------- */

static int test_intx_masked(const char *addr)
{
	struct usrdma_irq irq = { .argsz = sizeof(irq), .type = USRDMA_IRQ_INTX,
				  .count = 1 };
	uint16_t cmd = 0;
	int32_t efd;
	int fd, ret;

	/* Unmasked before: what the old module handed back as it found it. */
	ret = config16(addr, 4, &cmd, 0);
	cmd &= ~INTX_DISABLE;
	ret = ret ? ret : config16(addr, 4, &cmd, 1);
	ret = ret ? ret : config16(addr, 4, &cmd, 0);
	CHECK(ret == 0 && !(cmd & INTX_DISABLE), "INTx unmasked before open: command %#x", cmd);

	fd = open_node(addr);
	CHECK(fd >= 0, "open: %s", fd >= 0 ? "ok" : strerror(errno));
	if (fd < 0)
		return done();
	efd = eventfd(0, EFD_CLOEXEC);
	irq.eventfds = (uintptr_t)&efd;
	ret = ioctl(fd, USRDMA_SET_IRQ, &irq);
	CHECK(ret == 0, "SET_IRQ INTx: %s", ret ? strerror(errno) : "ok");
	ret = config16(addr, 4, &cmd, 0);
	CHECK(ret == 0 && !(cmd & INTX_DISABLE), "INTx unmasked while used: command %#x", cmd);
	close(fd);
	close(efd);
	ret = config16(addr, 4, &cmd, 0);
	CHECK(ret == 0 && (cmd & INTX_DISABLE),
	      "INTx left masked after release, with no handler: command %#x", cmd);
	return done();
}

/* ---- dead-page ----------------------------------------------------------- */

static int all_ones(const volatile uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0xff)
			return 0;
	return 1;
}

static int test_dead_page(const char *addr)
{
	struct usrdma_alloc a = { .argsz = sizeof(a), .size = PAGE };
	struct racer unbind = { .addr = addr };
	volatile uint8_t *one, *two, *bar;
	int fd, ret;

	fd = open_node(addr);
	CHECK(fd >= 0, "open: %s", fd >= 0 ? "ok" : strerror(errno));
	if (fd < 0)
		return done();
	ret = ioctl(fd, USRDMA_ALLOC, &a);
	CHECK(ret == 0, "ALLOC: %s", ret ? strerror(errno) : "ok");
	one = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		   (off_t)a.mmap_offset);
	two = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		   (off_t)a.mmap_offset);
	bar = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		   USRDMA_BAR_OFFSET(0));
	if (ret || one == MAP_FAILED || two == MAP_FAILED || bar == MAP_FAILED) {
		CHECK(0, "mmap the buffer twice and BAR 0: %s", strerror(errno));
		return done();
	}
	one[0] = 1;
	CHECK(two[0] == 1, "both mappings show the buffer before the unbind");

	run_unbind(&unbind);
	CHECK(unbind.ret == 0, "unbind while mapped: %s",
	      unbind.ret ? strerror(unbind.err) : "ok");
	CHECK(all_ones(one, PAGE) && all_ones(two, PAGE) && all_ones(bar, PAGE),
	      "every mapping reads all-ones after the unbind");
	memset((void *)one, 0x11, PAGE);	/* a late write: no fault */
	bar[8] = 0x22;
	CHECK(one[0] == 0x11, "a late write lands in the mapping's own page");
	CHECK(all_ones(two, PAGE),
	      "the other mapping of the buffer still reads all-ones (first byte %#x)",
	      two[0]);
	CHECK(all_ones(bar, 8) && all_ones(bar + 9, PAGE - 9),
	      "the BAR mapping reads all-ones but for its own late write");
	munmap((void *)one, PAGE);
	munmap((void *)two, PAGE);
	munmap((void *)bar, PAGE);
	close(fd);
	CHECK(rebind(addr) == 0, "bound to usrdma again");
	return done();
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && !strcmp(argv[1], "remove-wait"))
		return test_remove_wait(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "reset-bars"))
		return test_reset_bars(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "intx-masked"))
		return test_intx_masked(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "dead-page"))
		return test_dead_page(argv[2]);
	fprintf(stderr, "usage: usrdma-hard remove-wait|reset-bars|intx-masked|dead-page ADDR\n");
	return 2;
}
