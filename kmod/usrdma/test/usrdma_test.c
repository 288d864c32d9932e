// SPDX-License-Identifier: GPL-2.0
/*
 * usrdma-test: exercises the usrdma module with QEMU's edu device.
 *
 *   usrdma-test dma ADDR          open (bus mastering off), QUIESCED, EBUSY,
 *                                 SET_DMA_MASK 28, ALLOC, mmap, DMA through
 *                                 edu and back, LIST, FREE, close
 *   usrdma-test revoke ADDR       open, ALLOC, mmap, unbind the device while
 *                                 open: ENODEV, POLLHUP, all-ones reads
 *                                 instead of SIGBUS, close
 *   usrdma-test map ADDR          MAP_USER/UNMAP_USER/SYNC with mask 28
 *                                 through edu in both directions: pages
 *                                 above 2^28 (bounced), below (pinned),
 *                                 pinned mappings (mask 64) with the
 *                                 usrdma_stats attribute and VmLck, every
 *                                 documented error, RLIMIT_MEMLOCK, 65536
 *                                 mappings, the usrdma_buffers attribute
 *   usrdma-test irq ADDR          SET_IRQ/IRQ_UNMASK: MSI (raise register,
 *                                 factorial, DMA), INTx with masking and
 *                                 UNMASK, errors, irq statistics; RESET
 *   usrdma-test revoke-wait ADDR  MSI eventfd and user mappings; a child
 *                                 unbinds the device after 200 ms while the
 *                                 parent polls the eventfd and the node:
 *                                 it wakes up to POLLHUP on the node and
 *                                 one count on the (semaphore) eventfd,
 *                                 ioctls give ENODEV, the locked memory
 *                                 is given back
 *   usrdma-test free ADDR         buffer generations: a stale (id,
 *                                 generation) cannot free the buffer that
 *                                 reuses the id, which edu then DMAs
 *                                 through; version-1 callers; LIST entry
 *                                 sizes; FREE by name refused for buffers
 *                                 that are not persistent or still mapped
 *                                 (split, inherited by fork)
 *
 * ADDR is the device's full PCI address (0000:00:03.0), already bound to
 * usrdma. Prints one line per check; exits 0 when all passed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>

#include "usrdma_uapi.h"
#include "counters.h"

#define EDU_ID		0x00
#define EDU_FACT	0x08
#define EDU_STATUS	0x20
#define EDU_IRQ_STATUS	0x24
#define EDU_IRQ_RAISE	0x60
#define EDU_IRQ_ACK	0x64
#define EDU_DMA_SRC	0x80
#define EDU_DMA_DST	0x88
#define EDU_DMA_COUNT	0x90
#define EDU_DMA_CMD	0x98
#define EDU_CMD_START	1
#define EDU_CMD_TO_RAM	2
#define EDU_CMD_IRQ	4
#define EDU_STATUS_IRQ	0x80
#define EDU_WINDOW	0x40000
#define EDU_WINDOW_SIZE	4096
#define EDU_REACH	(1ull << 28)	/* edu drives 28 address bits */
#define XFER		2048	/* ends inside the 4 KiB window */
#define PAGE		4096ul

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
} while (0)

static sigjmp_buf fault_jmp;

static void on_sigbus(int sig)
{
	siglongjmp(fault_jmp, sig);
}

/* Reads one byte; returns the signal it raised, or 0. */
static int touch(volatile uint8_t *p)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old_bus, old_segv;
	int sig;

	sigaction(SIGBUS, &sa, &old_bus);
	sigaction(SIGSEGV, &sa, &old_segv);
	sig = sigsetjmp(fault_jmp, 1);
	if (!sig)
		(void)*p;
	sigaction(SIGBUS, &old_bus, NULL);
	sigaction(SIGSEGV, &old_segv, NULL);
	return sig;
}

/* PCI_COMMAND of the device, from its config file. */
static int pci_command(const char *addr)
{
	char path[128];
	uint16_t cmd = 0;
	int cfd;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/config", addr);
	cfd = open(path, O_RDONLY);
	if (cfd < 0 || pread(cfd, &cmd, 2, 4) != 2)
		cmd = 0xffff;
	if (cfd >= 0)
		close(cfd);
	return cmd;
}

#define BUS_MASTER 0x4

/* Turns bus mastering on or off through the config file; 0 or -1. */
static int set_bus_master(const char *addr, int on)
{
	char path[128];
	int cmd = pci_command(addr), cfd, ret;
	uint16_t v;

	if (cmd == 0xffff)
		return -1;
	v = on ? cmd | BUS_MASTER : cmd & ~BUS_MASTER;
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/config", addr);
	cfd = open(path, O_WRONLY);
	if (cfd < 0)
		return -1;
	ret = pwrite(cfd, &v, 2, 4) == 2 ? 0 : -1;
	close(cfd);
	return ret;
}

/* Opens the node; bus mastering stays off, as the module leaves it. */
static int open_node_raw(const char *addr)
{
	char path[64];

	snprintf(path, sizeof(path), "/dev/usrdma/%s", addr);
	return open(path, O_RDWR | O_CLOEXEC);
}

/* Opens the node and turns bus mastering on, as a driver does before DMA. */
static int open_node(const char *addr)
{
	int fd = open_node_raw(addr);

	if (fd >= 0 && set_bus_master(addr, 1)) {
		close(fd);
		return -1;
	}
	return fd;
}

static int quiesced(int fd, uint32_t flags)
{
	struct usrdma_quiesced q = { .argsz = sizeof(q), .flags = flags };

	return ioctl(fd, USRDMA_QUIESCED, &q);
}

static int alloc_buf(int fd, const char *name, uint32_t flags, uint64_t size,
		     struct usrdma_alloc *out)
{
	memset(out, 0, sizeof(*out));
	out->argsz = sizeof(*out);
	out->flags = flags;
	out->size = size;
	snprintf(out->name, sizeof(out->name), "%s", name);
	return ioctl(fd, USRDMA_ALLOC, out);
}

static void *map_buf(int fd, const struct usrdma_alloc *b)
{
	return mmap(NULL, b->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		    (off_t)b->mmap_offset);
}

static void wr64(volatile uint8_t *bar, unsigned int off, uint64_t v)
{
	*(volatile uint64_t *)(bar + off) = v;
}

static uint64_t rd64(volatile uint8_t *bar, unsigned int off)
{
	return *(volatile uint64_t *)(bar + off);
}

static void wr32(volatile uint8_t *bar, unsigned int off, uint32_t v)
{
	*(volatile uint32_t *)(bar + off) = v;
}

static uint32_t rd32(volatile uint8_t *bar, unsigned int off)
{
	return *(volatile uint32_t *)(bar + off);
}

/* One edu DMA of len bytes; waits for it (5 s at most). */
static int edu_dma_len(volatile uint8_t *bar, uint64_t src, uint64_t dst,
		       uint64_t len, uint64_t cmd)
{
	struct timespec start, now;
	uint64_t ram = (cmd & EDU_CMD_TO_RAM) ? dst : src;
	uint64_t win = (cmd & EDU_CMD_TO_RAM) ? src : dst;

	/* Never let edu touch RAM it cannot address: it would clamp. */
	if (ram + len > EDU_REACH) {
		printf("      refusing an edu DMA at 0x%llx, above 2^28\n",
		       (unsigned long long)ram);
		return -1;
	}
	/* QEMU stops the machine when a DMA reaches the window's last byte. */
	if (!len || win < EDU_WINDOW || win - EDU_WINDOW + len >= EDU_WINDOW_SIZE) {
		printf("      refusing an edu DMA of %llu bytes at window offset 0x%llx\n",
		       (unsigned long long)len, (unsigned long long)(win - EDU_WINDOW));
		return -1;
	}
	wr64(bar, EDU_DMA_SRC, src);
	wr64(bar, EDU_DMA_DST, dst);
	wr64(bar, EDU_DMA_COUNT, len);
	wr64(bar, EDU_DMA_CMD, cmd | EDU_CMD_START);
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (rd64(bar, EDU_DMA_CMD) & EDU_CMD_START) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec > 5)
			return -1;
		usleep(100);
	}
	return 0;
}

static int edu_dma(volatile uint8_t *bar, uint64_t src, uint64_t dst,
		   uint64_t cmd)
{
	return edu_dma_len(bar, src, dst, XFER, cmd);
}

static void list_buffers(int fd)
{
	struct usrdma_buf_entry e[8];
	struct usrdma_list l = {
		.argsz = sizeof(l), .capacity = 8,
		.entries = (uintptr_t)e,
	};
	unsigned int i;
	int ret = ioctl(fd, USRDMA_LIST, &l);

	CHECK(ret == 0, "LIST: %u buffer(s)", l.count);
	for (i = 0; !ret && i < l.count && i < 8; i++)
		printf("      id=%u name='%s' size=%llu dma=0x%llx offset=0x%llx owner=%d flags=%#x\n",
		       e[i].id, e[i].name, (unsigned long long)e[i].size,
		       (unsigned long long)e[i].dma_addr,
		       (unsigned long long)e[i].mmap_offset, e[i].owner_pid,
		       e[i].flags);
}

static int test_dma(const char *addr)
{
	struct usrdma_info info = { .argsz = sizeof(info) };
	struct usrdma_dma_mask mask = { .argsz = sizeof(mask), .bits = 28 };
	struct usrdma_alloc a, b, bad;
	struct usrdma_free fr;
	volatile uint8_t *bar;
	uint8_t *src, *dst;
	int fd, fd2, ret, i, ok;

	fd = open_node_raw(addr);
	CHECK(fd >= 0, "open /dev/usrdma/%s: %s", addr, fd >= 0 ? "ok" : strerror(errno));
	if (fd < 0)
		return 1;
	CHECK(!(pci_command(addr) & BUS_MASTER), "bus mastering off after open: command 0x%x",
	      pci_command(addr));
	ret = quiesced(fd, 0);
	CHECK(ret == 0, "QUIESCED with bus mastering off: %s", ret ? strerror(errno) : "ok");
	ret = quiesced(fd, 1);
	CHECK(ret < 0 && errno == EINVAL, "QUIESCED with a flag: %s",
	      ret ? strerror(errno) : "accepted");
	CHECK(set_bus_master(addr, 1) == 0 && (pci_command(addr) & BUS_MASTER),
	      "bus mastering on through the config file");
	ret = quiesced(fd, 0);
	CHECK(ret < 0 && errno == EBUSY, "QUIESCED with bus mastering on: %s",
	      ret ? strerror(errno) : "accepted");
	fd2 = open_node(addr);
	CHECK(fd2 < 0 && errno == EBUSY, "second open: %s", fd2 < 0 ? strerror(errno) : "succeeded");
	if (fd2 >= 0)
		close(fd2);

	ret = ioctl(fd, USRDMA_GET_INFO, &info);
	CHECK(ret == 0 && info.api_version == USRDMA_API_VERSION,
	      "GET_INFO: api %u, %04x:%02x:%02x.%u, mask %u bits, bar0 %llu bytes",
	      info.api_version, info.pci_domain, info.pci_bus, info.pci_devfn >> 3,
	      info.pci_devfn & 7, info.dma_mask_bits, (unsigned long long)info.bar_size[0]);

	ret = ioctl(fd, USRDMA_SET_DMA_MASK, &mask);
	CHECK(ret == 0, "SET_DMA_MASK 28: %s", ret ? strerror(errno) : "ok");
	mask.reserved = 1;
	ret = ioctl(fd, USRDMA_SET_DMA_MASK, &mask);
	CHECK(ret < 0 && errno == EINVAL, "SET_DMA_MASK with a reserved field set: %s",
	      ret ? strerror(errno) : "accepted");

	ret = alloc_buf(fd, "src", 0, 4096, &a);
	CHECK(ret == 0, "ALLOC src: id %u, dma 0x%llx, size %llu, offset 0x%llx", a.id,
	      (unsigned long long)a.dma_addr, (unsigned long long)a.size,
	      (unsigned long long)a.mmap_offset);
	if (ret)
		return 1;
	CHECK(a.dma_addr + a.size <= (1ull << 28), "src below 2^28");
	ret = alloc_buf(fd, "dst", USRDMA_BUF_PERSISTENT, 100, &b);
	CHECK(ret == 0 && b.size == 4096, "ALLOC dst (persistent, 100 bytes): id %u, dma 0x%llx, size %llu",
	      b.id, (unsigned long long)b.dma_addr, (unsigned long long)b.size);
	if (ret)
		return 1;
	CHECK(b.dma_addr + b.size <= (1ull << 28), "dst below 2^28");

	ret = alloc_buf(fd, "src", 0, 4096, &bad);
	CHECK(ret < 0 && errno == EEXIST, "ALLOC with a taken name: %s", ret ? strerror(errno) : "accepted");
	ret = alloc_buf(fd, "x", 0x80, 4096, &bad);
	CHECK(ret < 0 && errno == EINVAL, "ALLOC with an unknown flag: %s", ret ? strerror(errno) : "accepted");
	ret = alloc_buf(fd, "y", 0, 0, &bad);
	CHECK(ret < 0 && errno == EINVAL, "ALLOC of 0 bytes: %s", ret ? strerror(errno) : "accepted");
	memset(&bad, 0, sizeof(bad));
	bad.argsz = 8;
	ret = ioctl(fd, USRDMA_ALLOC, &bad);
	CHECK(ret < 0 && errno == EINVAL, "ALLOC with a short argsz: %s", ret ? strerror(errno) : "accepted");

	bar = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, USRDMA_BAR_OFFSET(0));
	CHECK(bar != MAP_FAILED, "mmap BAR0: %s", bar != MAP_FAILED ? "ok" : strerror(errno));
	src = map_buf(fd, &a);
	dst = map_buf(fd, &b);
	CHECK(src != MAP_FAILED && dst != MAP_FAILED, "mmap src and dst");
	if (bar == MAP_FAILED || src == MAP_FAILED || dst == MAP_FAILED)
		return 1;
	CHECK(mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd, (off_t)a.mmap_offset) == MAP_FAILED,
	      "mmap past the end of a buffer is refused");
	CHECK(mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, (off_t)a.mmap_offset) == MAP_FAILED,
	      "private mmap is refused");
	CHECK((*(volatile uint32_t *)(bar + EDU_ID) & 0xffff) == 0xed,
	      "edu id register: 0x%08x", *(volatile uint32_t *)(bar + EDU_ID));

	for (i = 0; i < 4096; i++)
		src[i] = (uint8_t)(i * 7 + 3);
	ret = edu_dma(bar, a.dma_addr, EDU_WINDOW, 0);
	CHECK(ret == 0, "edu DMA src -> window (%d bytes)", XFER);
	ret = edu_dma(bar, EDU_WINDOW, b.dma_addr, EDU_CMD_TO_RAM);
	CHECK(ret == 0, "edu DMA window -> dst");
	ok = memcmp(src, dst, XFER) == 0;
	for (i = XFER; i < 4096; i++)
		if (dst[i])
			ok = 0;
	CHECK(ok, "dst holds the pattern (%02x %02x %02x %02x ...), the rest is zero",
	      dst[0], dst[1], dst[2], dst[3]);

	list_buffers(fd);

	memset(&fr, 0, sizeof(fr));
	fr.argsz = sizeof(fr);
	fr.id = a.id;
	fr.generation = a.generation;
	ret = ioctl(fd, USRDMA_FREE, &fr);
	CHECK(ret == 0, "FREE src by id and generation");
	CHECK(touch(src) == SIGBUS, "src mapping faults after FREE");
	ret = ioctl(fd, USRDMA_FREE, &fr);
	CHECK(ret < 0 && errno == ENOENT, "FREE again: %s", ret ? strerror(errno) : "accepted");
	memset(&fr, 0, sizeof(fr));
	fr.argsz = sizeof(fr);
	fr.flags = USRDMA_FREE_BY_NAME;
	strcpy(fr.name, "dst");
	ret = ioctl(fd, USRDMA_FREE, &fr);
	CHECK(ret < 0 && errno == EBUSY, "FREE dst by name while mapped: %s",
	      ret ? strerror(errno) : "accepted");
	munmap(dst, 4096);
	ret = ioctl(fd, USRDMA_FREE, &fr);
	CHECK(ret == 0, "FREE dst by name once unmapped");

	/* A persistent buffer survives close; a plain one does not. */
	ret = alloc_buf(fd, "keep", USRDMA_BUF_PERSISTENT, 8192, &a);
	CHECK(ret == 0, "ALLOC keep (persistent)");
	ret = alloc_buf(fd, "drop", 0, 4096, &b);
	CHECK(ret == 0, "ALLOC drop");
	munmap((void *)bar, 4096);
	munmap(src, 4096);
	close(fd);

	fd = open_node(addr);
	CHECK(fd >= 0, "reopen after close");
	if (fd < 0)
		return 1;
	list_buffers(fd);
	memset(&fr, 0, sizeof(fr));
	fr.argsz = sizeof(fr);
	fr.flags = USRDMA_FREE_BY_NAME;
	strcpy(fr.name, "drop");
	ret = ioctl(fd, USRDMA_FREE, &fr);
	CHECK(ret < 0 && errno == ENOENT, "non-persistent 'drop' was freed at close");
	strcpy(fr.name, "keep");
	ret = ioctl(fd, USRDMA_FREE, &fr);
	CHECK(ret == 0, "persistent 'keep' survived close; FREE by name");
	close(fd);

	printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
	return failures ? 1 : 0;
}

static int test_revoke(const char *addr)
{
	struct usrdma_info info = { .argsz = sizeof(info) };
	struct usrdma_alloc a;
	struct pollfd pfd;
	char path[128];
	uint8_t *p;
	void *bar;
	int fd, ufd, ret;

	fd = open_node(addr);
	CHECK(fd >= 0, "open: %s", fd >= 0 ? "ok" : strerror(errno));
	if (fd < 0)
		return 1;
	ret = alloc_buf(fd, "victim", USRDMA_BUF_PERSISTENT, 4096, &a);
	CHECK(ret == 0, "ALLOC victim");
	p = ret ? MAP_FAILED : map_buf(fd, &a);
	CHECK(p != MAP_FAILED, "mmap victim");
	if (p == MAP_FAILED)
		return 1;
	p[0] = 42;
	bar = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		   USRDMA_BAR_OFFSET(0));
	CHECK(bar != MAP_FAILED && *(volatile uint32_t *)bar == 0x010000ed,
	      "BAR 0 mapped: edu's ID register");

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver/unbind", addr);
	ufd = open(path, O_WRONLY);
	ret = ufd < 0 ? -1 : (int)write(ufd, addr, strlen(addr));
	CHECK(ret > 0, "unbind while open: %s", ret > 0 ? "ok" : strerror(errno));
	if (ufd >= 0)
		close(ufd);

	ret = ioctl(fd, USRDMA_GET_INFO, &info);
	CHECK(ret < 0 && errno == ENODEV, "ioctl after unbind: %s", ret ? strerror(errno) : "succeeded");
	pfd.fd = fd;
	pfd.events = POLLIN;
	ret = poll(&pfd, 1, 1000);
	CHECK(ret == 1 && (pfd.revents & POLLHUP), "poll after unbind: revents %#x", pfd.revents);
	CHECK(touch(p) == 0 && p[0] == 0xff,
	      "buffer mapping reads all-ones after unbind, without SIGBUS: %#x", p[0]);
	CHECK(bar != MAP_FAILED && touch((volatile uint8_t *)bar) == 0 &&
	      *(volatile uint32_t *)bar == 0xffffffff,
	      "BAR 0 reads all-ones after unbind, without SIGBUS");
	p[1] = 7;	/* lands in the dead page: no fault */
	CHECK(p[1] == 7, "a write after unbind lands in the dead page");
	CHECK(map_buf(fd, &a) == MAP_FAILED && errno == ENODEV, "mmap after unbind: %s", strerror(errno));
	munmap(p, 4096);
	if (bar != MAP_FAILED)
		munmap(bar, 4096);
	CHECK(close(fd) == 0, "close after unbind");

	printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
	return failures ? 1 : 0;
}

/* ---- helpers for the new ioctls ------------------------------------------ */

static int set_mask(int fd, uint32_t bits)
{
	struct usrdma_dma_mask m = { .argsz = sizeof(m), .bits = bits };

	return ioctl(fd, USRDMA_SET_DMA_MASK, &m);
}

static int map_user(int fd, const void *p, uint64_t len, uint32_t dir,
		    struct usrdma_sg_entry *e, uint32_t cap,
		    struct usrdma_map_user *out)
{
	memset(out, 0, sizeof(*out));
	out->argsz = sizeof(*out);
	out->flags = dir;
	out->addr = (uintptr_t)p;
	out->length = len;
	out->entries = (uintptr_t)e;
	out->capacity = cap;
	return ioctl(fd, USRDMA_MAP_USER, out);
}

static int unmap_user(int fd, uint32_t handle)
{
	struct usrdma_unmap_user u = { .argsz = sizeof(u), .handle = handle };

	return ioctl(fd, USRDMA_UNMAP_USER, &u);
}

static int sync_user(int fd, uint32_t handle, uint32_t flags, uint64_t off,
		     uint64_t len)
{
	struct usrdma_sync s = {
		.argsz = sizeof(s), .flags = flags, .handle = handle,
		.offset = off, .length = len,
	};

	return ioctl(fd, USRDMA_SYNC, &s);
}

static int set_irq(int fd, uint32_t type, uint32_t count, const int32_t *fds)
{
	struct usrdma_irq irq = {
		.argsz = sizeof(irq), .type = type, .count = count,
		.eventfds = (uintptr_t)fds,
	};

	return ioctl(fd, USRDMA_SET_IRQ, &irq);
}

static int irq_unmask(int fd)
{
	struct usrdma_irq_unmask u = { .argsz = sizeof(u) };

	return ioctl(fd, USRDMA_IRQ_UNMASK, &u);
}

static const char *err(int ret)
{
	return ret < 0 ? strerror(errno) : "ok";
}

/* ret failed with errno e */
static int is_err(int ret, int e)
{
	return ret < 0 && errno == e;
}

/* Whether the entries cover exactly [p, p + len) as MAP_USER promises. */
static int entries_ok(const struct usrdma_map_user *m,
		      const struct usrdma_sg_entry *e)
{
	uint64_t total = 0;
	uint32_t i;

	if (!m->handle || !m->count || m->count > m->capacity)
		return 0;
	if ((e[0].dma_addr & (PAGE - 1)) != (m->addr & (PAGE - 1)))
		return 0;
	for (i = 0; i < m->count; i++)
		total += e[i].length;
	return total == m->length;
}

/* RAM -> device window at woff, entry by entry. */
static int dma_to_window(volatile uint8_t *bar, const struct usrdma_sg_entry *e,
			 uint32_t n, uint64_t woff)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		if (edu_dma_len(bar, e[i].dma_addr, EDU_WINDOW + woff,
				e[i].length, 0))
			return -1;
		woff += e[i].length;
	}
	return 0;
}

/* Device window at woff -> RAM, entry by entry, at most len bytes. */
static int dma_from_window(volatile uint8_t *bar,
			   const struct usrdma_sg_entry *e, uint32_t n,
			   uint64_t woff, uint64_t len)
{
	uint32_t i;

	for (i = 0; i < n && len; i++) {
		uint64_t l = e[i].length < len ? e[i].length : len;

		if (edu_dma_len(bar, EDU_WINDOW + woff, e[i].dma_addr, l,
				EDU_CMD_TO_RAM))
			return -1;
		woff += l;
		len -= l;
	}
	return 0;
}

static void fill(uint8_t *p, size_t n, unsigned int seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 13 + seed * 29 + (i >> 8));
}

static int all_equal(const uint8_t *p, size_t n, uint8_t v)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i] != v)
			return 0;
	return 1;
}

static void *anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* Waits up to ms for the eventfd; returns its counter, 0 on timeout. */
static uint64_t wait_efd(int efd, int ms)
{
	struct pollfd pfd = { .fd = efd, .events = POLLIN };
	uint64_t v = 0;

	if (poll(&pfd, 1, ms) != 1)
		return 0;
	if (read(efd, &v, sizeof(v)) != sizeof(v))
		return 0;
	return v;
}

/* ---- map: MAP_USER, UNMAP_USER, SYNC ------------------------------------- */

/* The physical page frame of a (touched) page, from /proc/self/pagemap. */
static uint64_t pfn_of(const void *p)
{
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY);

	if (fd >= 0 && pread(fd, &e, 8, (off_t)((uintptr_t)p / PAGE * 8)) != 8)
		e = 0;
	if (fd >= 0)
		close(fd);
	return (e >> 63) ? e & ((1ull << 55) - 1) : 0;
}

/*
 * Three pages in [base, base + npages pages): the first above 2^28 (high),
 * or all three present and below it (!high). NULL if there are none.
 */
static uint8_t *pick_pages(uint8_t *base, size_t npages, int high)
{
	const uint64_t limit = EDU_REACH / PAGE;
	size_t i;

	for (i = 0; i + 3 <= npages; i++) {
		uint64_t a = pfn_of(base + i * PAGE);

		if (high && a >= limit)
			return base + i * PAGE;
		if (!high && a && a < limit) {
			uint64_t b = pfn_of(base + (i + 1) * PAGE);
			uint64_t c = pfn_of(base + (i + 2) * PAGE);

			if (b && b < limit && c && c < limit)
				return base + i * PAGE;
		}
	}
	return NULL;
}

/*
 * Mappings (mask 28) through the edu DMA window, both directions: of pages
 * above 2^28 (high: they must be bounced) or below it (they must be pinned).
 */
static void map_roundtrip(int fd, const char *addr, volatile uint8_t *bar,
			  uint8_t *aux, uint64_t aux_dma, int high)
{
	const size_t chunk_pages = 4096;	/* 16 MiB at a time, 512 MiB at most */
	uint8_t *chunks[32] = { NULL };
	struct usrdma_sg_entry e[4];
	struct usrdma_map_user m;
	uint8_t *u = NULL, *v = NULL;
	unsigned int c, nchunks = 0;
	long bounce;
	int ret, bounced, expect_bounce;
	char path[128];

	/* With an IOMMU the device reaches every page through it. */
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", addr);
	expect_bounce = high && access(path, F_OK) != 0;
	printf("      -- pages %s 2^28%s --\n", high ? "above" : "below",
	       expect_bounce || !high ? "" : ", IOMMU: no bouncing");
	CHECK(set_mask(fd, 28) == 0, "SET_DMA_MASK 28");
	/* Which pages a process gets depends on the boot: look until found. */
	while ((!u || !v) && nchunks < 32) {
		uint8_t *chunk = anon(chunk_pages * PAGE);

		if (!chunk)
			break;
		chunks[nchunks++] = chunk;
		memset(chunk, 0x33, chunk_pages * PAGE);
		if (!u)
			u = pick_pages(chunk, chunk_pages / 2, high);
		if (!v)
			v = pick_pages(chunk + chunk_pages / 2 * PAGE, chunk_pages / 2, high);
	}
	if (!u || !v) {
		CHECK(0, "three pages %s 2^28 found in %u MiB", high ? "above" : "below",
		      nchunks * 16);
		goto out;
	}
	printf("      u at pfn 0x%llx, v at pfn 0x%llx\n", (unsigned long long)pfn_of(u),
	       (unsigned long long)pfn_of(v));

	/* TO_DEVICE, 3000 bytes across a page boundary. */
	fill(u, 3 * PAGE, 1);
	ret = map_user(fd, u + 4000, 3000, USRDMA_DIR_TO_DEVICE, e, 4, &m);
	bounced = !ret && (m.out_flags & USRDMA_MAP_BOUNCED);
	CHECK(ret == 0 && entries_ok(&m, e) && bounced == expect_bounce,
	      "MAP_USER TO_DEVICE 3000 bytes at page offset %u: %s, handle %u, %u entr%s, first dma 0x%llx%s",
	      (unsigned int)((uintptr_t)(u + 4000) & (PAGE - 1)), err(ret), m.handle, m.count,
	      m.count == 1 ? "y" : "ies", (unsigned long long)e[0].dma_addr,
	      bounced ? ", BOUNCED" : ", pinned");
	if (ret)
		goto out;
	bounce = stat_get(addr, "bounce_bytes");
	CHECK(bounce == (bounced ? 2 * (long)PAGE : 0), "usrdma_stats bounce_bytes %ld while mapped",
	      bounce);
	CHECK(stat_get(addr, "user_mappings") == 1, "usrdma_stats user_mappings 1");
	ret = sync_user(fd, m.handle, USRDMA_SYNC_FOR_DEVICE, 0, 3000);
	CHECK(ret == 0, "SYNC FOR_DEVICE: %s", err(ret));
	memset(aux, 0, PAGE);
	ret = dma_to_window(bar, e, m.count, 0) ||
	      edu_dma_len(bar, EDU_WINDOW, aux_dma, 3000, EDU_CMD_TO_RAM);
	CHECK(ret == 0 && !memcmp(aux, u + 4000, 3000),
	      "edu read the mapping: window holds the caller's bytes");

	/* Changes reach the device after SYNC FOR_DEVICE. */
	fill(u + 4000 + 1000, 500, 7);
	ret = sync_user(fd, m.handle, USRDMA_SYNC_FOR_DEVICE, 1000, 500);
	CHECK(ret == 0, "SYNC FOR_DEVICE of [1000, 1500) after changing it: %s", err(ret));
	ret = dma_to_window(bar, e, m.count, 0) ||
	      edu_dma_len(bar, EDU_WINDOW, aux_dma, 3000, EDU_CMD_TO_RAM);
	CHECK(ret == 0 && !memcmp(aux, u + 4000, 3000), "the device sees the change");
	ret = unmap_user(fd, m.handle);
	CHECK(ret == 0, "UNMAP_USER: %s", err(ret));
	CHECK(stat_get(addr, "user_mappings") == 0 && stat_get(addr, "bounce_bytes") == 0,
	      "usrdma_stats: no mapping, no bounce bytes after UNMAP");

	/* FROM_DEVICE: window -> mapping, SYNC FOR_CPU brings it back. */
	fill(aux, PAGE, 3);
	ret = edu_dma_len(bar, aux_dma, EDU_WINDOW, 3000, 0);
	CHECK(ret == 0, "edu DMA pattern -> window");
	memset(v, 0x5a, 3 * PAGE);
	ret = map_user(fd, v + 4000, 3000, USRDMA_DIR_FROM_DEVICE, e, 4, &m);
	CHECK(ret == 0 && entries_ok(&m, e) && !!(m.out_flags & USRDMA_MAP_BOUNCED) == expect_bounce,
	      "MAP_USER FROM_DEVICE: %s%s", err(ret),
	      !ret && (m.out_flags & USRDMA_MAP_BOUNCED) ? ", BOUNCED" : "");
	if (ret)
		goto out;
	ret = dma_from_window(bar, e, m.count, 0, 3000);
	CHECK(ret == 0, "edu DMA window -> mapping");
	ret = sync_user(fd, m.handle, USRDMA_SYNC_FOR_CPU, 0, 3000);
	CHECK(ret == 0, "SYNC FOR_CPU: %s", err(ret));
	CHECK(!memcmp(v + 4000, aux, 3000), "the caller's memory holds what the device wrote");
	CHECK(all_equal(v, 4000, 0x5a) && all_equal(v + 7000, 3 * PAGE - 7000, 0x5a),
	      "bytes around the range are untouched");

	/* UNMAP copies back; bytes the device did not write keep their value. */
	ret = unmap_user(fd, m.handle);
	fill(aux, PAGE, 4);
	ret = ret || edu_dma_len(bar, aux_dma, EDU_WINDOW, 1000, 0);
	memset(v, 0x5a, 3 * PAGE);
	ret = ret || map_user(fd, v + 4000, 3000, USRDMA_DIR_FROM_DEVICE, e, 4, &m);
	ret = ret || dma_from_window(bar, e, m.count, 0, 1000);
	ret = ret || unmap_user(fd, m.handle);
	CHECK(ret == 0 && !memcmp(v + 4000, aux, 1000),
	      "UNMAP_USER without SYNC: the device's 1000 bytes are in the caller's memory");
	CHECK(all_equal(v + 5000, 2000, 0x5a) && all_equal(v, 4000, 0x5a),
	      "bytes of the range the device did not write kept their value");

	/* BIDIRECTIONAL: device reads the buffer, writes it back shifted. */
	fill(u, 3 * PAGE, 9);
	ret = map_user(fd, u + 100, 2000, USRDMA_DIR_TO_DEVICE | USRDMA_DIR_FROM_DEVICE,
		       e, 4, &m);
	CHECK(ret == 0 && entries_ok(&m, e) && !!(m.out_flags & USRDMA_MAP_BOUNCED) == expect_bounce,
	      "MAP_USER BIDIRECTIONAL: %s", err(ret));
	if (ret)
		goto out;
	memcpy(aux, u + 100, 2000);
	ret = dma_to_window(bar, e, m.count, 1000) ||	/* window[1000..3000) */
	      dma_from_window(bar, e, m.count, 1500, 1000);	/* = u[600..1600) -> u[100..1100) */
	ret = ret || sync_user(fd, m.handle, USRDMA_SYNC_FOR_CPU, 0, 2000);
	CHECK(ret == 0 && !memcmp(u + 100, aux + 500, 1000) && !memcmp(u + 1100, aux + 1000, 1000),
	      "BIDIRECTIONAL round trip through the window");
	CHECK(unmap_user(fd, m.handle) == 0, "UNMAP_USER BIDIRECTIONAL");

	if (!high)
		goto out;

	/* Untouched memory (zero page) mapped first, written afterwards. */
	v = anon(PAGE);
	ret = map_user(fd, v, PAGE, USRDMA_DIR_TO_DEVICE, e, 1, &m);
	CHECK(ret == 0, "MAP_USER TO_DEVICE of never-touched memory: %s%s", err(ret),
	      !ret && (m.out_flags & USRDMA_MAP_BOUNCED) ? ", BOUNCED" : "");
	if (!ret) {
		fill(v, PAGE, 11);
		ret = sync_user(fd, m.handle, USRDMA_SYNC_FOR_DEVICE, 0, PAGE);
		/* The mapping's first 4000 bytes (the window takes 4095). */
		ret = ret || edu_dma_len(bar, e[0].dma_addr, EDU_WINDOW, 4000, 0);
		ret = ret || edu_dma_len(bar, EDU_WINDOW, aux_dma, 4000, EDU_CMD_TO_RAM);
		CHECK(ret == 0 && !memcmp(aux, v, 4000),
		      "written after MAP_USER + SYNC FOR_DEVICE: the device sees the writes");
		unmap_user(fd, m.handle);
	}
	munmap(v, PAGE);
out:
	for (c = 0; c < nchunks; c++)
		munmap(chunks[c], chunk_pages * PAGE);
}

/* Pinned mappings (mask 64): entries, statistics, VmLck, EBUSY on mask. */
static void map_pinned(int fd, const char *addr, int *closed_fd)
{
	struct usrdma_sg_entry e[20];
	struct usrdma_map_user m, m2;
	long pinned0, lck0, pinned, lck;
	uint8_t *p;
	uint32_t i;
	int ret, above = 0;

	CHECK(set_mask(fd, 64) == 0, "SET_DMA_MASK 64");
	p = anon(16 * PAGE);
	if (!p)
		return;
	memset(p, 1, 16 * PAGE);
	pinned0 = stat_get(addr, "pinned_pages");
	lck0 = vmlck_kb();
	ret = map_user(fd, p + 123, 16 * PAGE - 200, USRDMA_DIR_TO_DEVICE | USRDMA_DIR_FROM_DEVICE,
		       e, 20, &m);
	CHECK(ret == 0 && entries_ok(&m, e) && !(m.out_flags & USRDMA_MAP_BOUNCED),
	      "MAP_USER 16 pages, mask 64: %s, %u entr%s, not bounced", err(ret), m.count,
	      m.count == 1 ? "y" : "ies");
	if (ret)
		return;
	for (i = 0; i < m.count; i++) {
		printf("      entry %u: dma 0x%llx length %llu\n", i,
		       (unsigned long long)e[i].dma_addr, (unsigned long long)e[i].length);
		if (e[i].dma_addr + e[i].length > EDU_REACH)
			above = 1;
	}
	pinned = stat_get(addr, "pinned_pages");
	lck = vmlck_kb();
	CHECK(pinned == pinned0 + 16, "usrdma_stats pinned_pages %ld -> %ld", pinned0, pinned);
	CHECK(lck == lck0 + 64, "VmLck %ld kB -> %ld kB", lck0, lck);
	ret = sync_user(fd, m.handle, USRDMA_SYNC_FOR_CPU, 0, m.length);
	CHECK(ret == 0, "SYNC FOR_CPU of a pinned mapping: %s", err(ret));
	ret = sync_user(fd, m.handle, USRDMA_SYNC_FOR_DEVICE, 100, 1000);
	CHECK(ret == 0, "SYNC FOR_DEVICE of a part: %s", err(ret));
	ret = set_mask(fd, 28);
	if (above) {
		CHECK(is_err(ret, EBUSY), "SET_DMA_MASK 28 with a mapping above 2^28: %s", err(ret));
	} else {
		CHECK(ret == 0, "SET_DMA_MASK 28 with the mapping below 2^28: %s", err(ret));
		set_mask(fd, 64);
	}
	ret = unmap_user(fd, m.handle);
	CHECK(ret == 0, "UNMAP_USER: %s", err(ret));
	CHECK(stat_get(addr, "pinned_pages") == pinned0 && vmlck_kb() == lck0,
	      "after UNMAP: pinned_pages %ld, VmLck %ld kB", stat_get(addr, "pinned_pages"),
	      vmlck_kb());
	ret = unmap_user(fd, m.handle);
	CHECK(is_err(ret, ENOENT), "UNMAP_USER again: %s", err(ret));

	/* Left mapped at close: release unpins and un-accounts. */
	ret = map_user(fd, p, 16 * PAGE, USRDMA_DIR_TO_DEVICE, e, 20, &m);
	ret = ret || map_user(fd, p, PAGE, USRDMA_DIR_FROM_DEVICE, e, 20, &m2);
	CHECK(ret == 0 && stat_get(addr, "pinned_pages") == pinned0 + 17 &&
	      stat_get(addr, "user_mappings") == 2, "two mappings left open: pinned_pages %ld",
	      stat_get(addr, "pinned_pages"));
	close(fd);
	*closed_fd = 1;
	CHECK(stat_get(addr, "pinned_pages") == 0 && stat_get(addr, "user_mappings") == 0 &&
	      stat_get(addr, "opened") == 0, "after close: pinned_pages %ld, user_mappings %ld, opened %ld",
	      stat_get(addr, "pinned_pages"), stat_get(addr, "user_mappings"),
	      stat_get(addr, "opened"));
	/* edu cannot be reset: the pages stay pinned until the next opener says so. */
	CHECK(stat_get(addr, "quarantine_pages") == 17, "after close: quarantine_pages %ld",
	      stat_get(addr, "quarantine_pages"));
	fd = open_node_raw(addr);
	ret = fd < 0 ? -1 : quiesced(fd, 0);
	CHECK(ret == 0 && stat_get(addr, "quarantine_pages") == 0,
	      "reopened, QUIESCED: quarantine_pages %ld", stat_get(addr, "quarantine_pages"));
	if (fd >= 0)
		close(fd);
	CHECK(vmlck_kb() == lck0, "after close: VmLck %ld kB", vmlck_kb());
	munmap(p, 16 * PAGE);
}

/* Every documented error of MAP_USER, UNMAP_USER and SYNC. */
static void map_errors(int fd, const char *addr, volatile uint8_t *bar, uint8_t *aux,
		       const struct usrdma_alloc *auxb)
{
	struct usrdma_sg_entry e[4];
	struct usrdma_map_user m;
	struct {
		struct usrdma_map_user m;
		uint64_t extra;
	} big;
	struct usrdma_sync s;
	struct usrdma_unmap_user u;
	uint8_t *p, *hole, *ro;
	int ret;

	p = anon(4 * PAGE);
	hole = anon(PAGE);
	ro = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!p || !hole || ro == MAP_FAILED)
		return;
	memset(p, 2, 4 * PAGE);
	munmap(hole, PAGE);

	ret = map_user(fd, p, PAGE, 0, e, 4, &m);
	CHECK(is_err(ret, EINVAL), "MAP_USER without a direction: %s", err(ret));
	ret = map_user(fd, p, PAGE, 4 | USRDMA_DIR_TO_DEVICE, e, 4, &m);
	CHECK(is_err(ret, EINVAL), "MAP_USER with an unknown flag: %s", err(ret));
	ret = map_user(fd, p, 0, USRDMA_DIR_TO_DEVICE, e, 4, &m);
	CHECK(is_err(ret, EINVAL), "MAP_USER of length 0: %s", err(ret));
	ret = map_user(fd, p, (1ull << 30) + 1, USRDMA_DIR_TO_DEVICE, e, 4, &m);
	CHECK(is_err(ret, EINVAL), "MAP_USER of 1 GiB + 1: %s", err(ret));
	ret = map_user(fd, (void *)(uintptr_t)(~0ull - 100), 200, USRDMA_DIR_TO_DEVICE, e, 4, &m);
	CHECK(is_err(ret, EINVAL), "MAP_USER of an overflowing range: %s", err(ret));
	ret = map_user(fd, p + 100, 2 * PAGE, USRDMA_DIR_TO_DEVICE, e, 2, &m);
	CHECK(is_err(ret, EINVAL) && m.count == 3 && !m.handle,
	      "MAP_USER with capacity 2 for 3 pages: %s, count %u", err(ret), m.count);
	ret = map_user(fd, p, PAGE, USRDMA_DIR_TO_DEVICE, NULL, 4, &m);
	CHECK(is_err(ret, EINVAL), "MAP_USER with entries NULL: %s", err(ret));
	memset(&m, 0, sizeof(m));
	m.argsz = sizeof(m);
	m.flags = USRDMA_DIR_TO_DEVICE;
	m.addr = (uintptr_t)p;
	m.length = PAGE;
	m.entries = (uintptr_t)e;
	m.capacity = 4;
	m.count = 1;
	ret = ioctl(fd, USRDMA_MAP_USER, &m);
	CHECK(is_err(ret, EINVAL), "MAP_USER with count set: %s", err(ret));
	m.count = 0;
	m.handle = 5;
	ret = ioctl(fd, USRDMA_MAP_USER, &m);
	CHECK(is_err(ret, EINVAL), "MAP_USER with handle set: %s", err(ret));
	m.handle = 0;
	m.out_flags = 1;
	ret = ioctl(fd, USRDMA_MAP_USER, &m);
	CHECK(is_err(ret, EINVAL), "MAP_USER with out_flags set: %s", err(ret));
	m.out_flags = 0;
	m.argsz = 8;
	ret = ioctl(fd, USRDMA_MAP_USER, &m);
	CHECK(is_err(ret, EINVAL), "MAP_USER with a short argsz: %s", err(ret));
	memset(&big, 0, sizeof(big));
	big.m = m;
	big.m.argsz = sizeof(big);
	big.extra = 1;
	ret = ioctl(fd, USRDMA_MAP_USER, &big);
	CHECK(is_err(ret, E2BIG), "MAP_USER, longer structure with non-zero tail: %s", err(ret));
	big.extra = 0;
	ret = ioctl(fd, USRDMA_MAP_USER, &big);
	CHECK(ret == 0 && big.m.handle && big.m.count, "MAP_USER, longer structure with zero tail: %s",
	      err(ret));
	if (!ret)
		unmap_user(fd, big.m.handle);
	ret = map_user(fd, hole, PAGE, USRDMA_DIR_TO_DEVICE, e, 4, &m);
	CHECK(is_err(ret, EFAULT), "MAP_USER of unmapped memory: %s", err(ret));
	hole = anon(2 * PAGE);
	if (hole) {
		hole[0] = 1;
		munmap(hole + PAGE, PAGE);
		ret = map_user(fd, hole, 2 * PAGE, USRDMA_DIR_TO_DEVICE, e, 4, &m);
		CHECK(is_err(ret, EFAULT) && stat_get(addr, "pinned_pages") == 0,
		      "MAP_USER of a range whose second page is unmapped: %s, nothing left pinned",
		      err(ret));
		munmap(hole, PAGE);
	}
	ret = map_user(fd, (void *)(uintptr_t)0xffff888000000000ull, PAGE, USRDMA_DIR_TO_DEVICE,
		       e, 4, &m);
	CHECK(is_err(ret, EFAULT), "MAP_USER of a kernel address: %s", err(ret));
	ret = map_user(fd, (const void *)bar, PAGE, USRDMA_DIR_TO_DEVICE, e, 4, &m);
	CHECK(is_err(ret, EFAULT), "MAP_USER of the BAR mapping: %s", err(ret));
	ret = map_user(fd, aux, PAGE, USRDMA_DIR_TO_DEVICE, e, 4, &m);
	CHECK(is_err(ret, EFAULT), "MAP_USER of a usrdma buffer mapping: %s", err(ret));
	ret = map_user(fd, p, PAGE, USRDMA_DIR_TO_DEVICE, (void *)(uintptr_t)0xffff888000000000ull,
		       4, &m);
	CHECK(is_err(ret, EFAULT), "MAP_USER with entries at a kernel address: %s", err(ret));
	ret = map_user(fd, ro, PAGE, USRDMA_DIR_TO_DEVICE, e, 4, &m);
	CHECK(ret == 0, "MAP_USER TO_DEVICE of read-only memory: %s", err(ret));
	if (!ret)
		unmap_user(fd, m.handle);
	ret = map_user(fd, ro, PAGE, USRDMA_DIR_FROM_DEVICE, e, 4, &m);
	CHECK(is_err(ret, EFAULT), "MAP_USER FROM_DEVICE of read-only memory: %s", err(ret));

	ret = unmap_user(fd, 0);
	CHECK(is_err(ret, ENOENT), "UNMAP_USER of handle 0: %s", err(ret));
	ret = unmap_user(fd, 0x7fff1234);
	CHECK(is_err(ret, ENOENT), "UNMAP_USER of an unknown handle: %s", err(ret));
	memset(&u, 0, sizeof(u));
	u.argsz = sizeof(u);
	u.flags = 1;
	ret = ioctl(fd, USRDMA_UNMAP_USER, &u);
	CHECK(is_err(ret, EINVAL), "UNMAP_USER with a flag: %s", err(ret));
	u.flags = 0;
	u.reserved = 1;
	ret = ioctl(fd, USRDMA_UNMAP_USER, &u);
	CHECK(is_err(ret, EINVAL), "UNMAP_USER with reserved set: %s", err(ret));

	ret = map_user(fd, p + 10, 3 * PAGE, USRDMA_DIR_TO_DEVICE, e, 4, &m);
	CHECK(ret == 0, "MAP_USER for the SYNC checks: %s", err(ret));
	ret = sync_user(fd, m.handle, 0, 0, 1);
	CHECK(is_err(ret, EINVAL), "SYNC without FOR_CPU/FOR_DEVICE: %s", err(ret));
	ret = sync_user(fd, m.handle, USRDMA_SYNC_FOR_CPU | USRDMA_SYNC_FOR_DEVICE, 0, 1);
	CHECK(is_err(ret, EINVAL), "SYNC with both: %s", err(ret));
	ret = sync_user(fd, m.handle, USRDMA_SYNC_FOR_CPU | 8, 0, 1);
	CHECK(is_err(ret, EINVAL), "SYNC with an unknown flag: %s", err(ret));
	memset(&s, 0, sizeof(s));
	s.argsz = sizeof(s);
	s.flags = USRDMA_SYNC_FOR_CPU;
	s.handle = m.handle;
	s.reserved = 1;
	ret = ioctl(fd, USRDMA_SYNC, &s);
	CHECK(is_err(ret, EINVAL), "SYNC with reserved set: %s", err(ret));
	ret = sync_user(fd, m.handle, USRDMA_SYNC_FOR_CPU, 0, 3 * PAGE);
	CHECK(ret == 0, "SYNC of the whole mapping: %s", err(ret));
	ret = sync_user(fd, m.handle, USRDMA_SYNC_FOR_CPU, 1, 3 * PAGE);
	CHECK(is_err(ret, EINVAL), "SYNC one byte past the end: %s", err(ret));
	ret = sync_user(fd, m.handle, USRDMA_SYNC_FOR_DEVICE, ~0ull, 2);
	CHECK(is_err(ret, EINVAL), "SYNC of an overflowing range: %s", err(ret));
	ret = sync_user(fd, m.handle, USRDMA_SYNC_FOR_DEVICE, 3 * PAGE, 0);
	CHECK(ret == 0, "SYNC of length 0 at the end: %s", err(ret));
	ret = sync_user(fd, 0x7fff1234, USRDMA_SYNC_FOR_CPU, 0, 1);
	CHECK(is_err(ret, ENOENT), "SYNC of an unknown handle: %s", err(ret));
	ret = sync_user(fd, auxb->id, USRDMA_SYNC_FOR_CPU | USRDMA_SYNC_BUFFER, 0, auxb->size);
	CHECK(ret == 0, "SYNC BUFFER of a coherent buffer: %s", err(ret));
	ret = sync_user(fd, auxb->id, USRDMA_SYNC_FOR_DEVICE | USRDMA_SYNC_BUFFER, 0,
			auxb->size + 1);
	CHECK(is_err(ret, EINVAL), "SYNC BUFFER past its end: %s", err(ret));
	ret = sync_user(fd, 0xffff, USRDMA_SYNC_FOR_CPU | USRDMA_SYNC_BUFFER, 0, 1);
	CHECK(is_err(ret, ENOENT), "SYNC BUFFER of an unknown id: %s", err(ret));
	unmap_user(fd, m.handle);
	ret = sync_user(fd, m.handle, USRDMA_SYNC_FOR_CPU, 0, 1);
	CHECK(is_err(ret, ENOENT), "SYNC after UNMAP_USER: %s", err(ret));
	munmap(p, 4 * PAGE);
	munmap(ro, PAGE);
}

static int drop_ipc_lock(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];

	if (syscall(SYS_capget, &h, d))
		return -1;
	d[CAP_TO_INDEX(CAP_IPC_LOCK)].effective &= ~CAP_TO_MASK(CAP_IPC_LOCK);
	d[CAP_TO_INDEX(CAP_IPC_LOCK)].permitted &= ~CAP_TO_MASK(CAP_IPC_LOCK);
	return (int)syscall(SYS_capset, &h, d);
}

/* RLIMIT_MEMLOCK without CAP_IPC_LOCK, in a child sharing the open file. */
static void map_rlimit(int fd)
{
	struct rlimit rl = { 64 * 1024, 64 * 1024 };
	pid_t pid;
	int status = -1;

	pid = fork();
	if (pid == 0) {
		struct usrdma_sg_entry e[64];
		struct usrdma_map_user m;
		uint8_t *p = anon(64 * PAGE);
		uint32_t handle;
		int ok = 1, ret;

		if (!p || setrlimit(RLIMIT_MEMLOCK, &rl) || drop_ipc_lock())
			_exit(2);
		memset(p, 3, 64 * PAGE);
		ret = map_user(fd, p, 64 * PAGE, USRDMA_DIR_TO_DEVICE, e, 64, &m);
		printf("      child: MAP_USER 256 KiB with RLIMIT_MEMLOCK 64 KiB, no CAP_IPC_LOCK: %s\n",
		       err(ret));
		ok &= is_err(ret, ENOMEM);
		ret = map_user(fd, p, 16 * PAGE, USRDMA_DIR_TO_DEVICE, e, 64, &m);
		printf("      child: MAP_USER 64 KiB: %s, VmLck %ld kB\n", err(ret), vmlck_kb());
		ok &= ret == 0 && vmlck_kb() == 64;
		handle = m.handle;
		ret = map_user(fd, p, PAGE, USRDMA_DIR_TO_DEVICE, e, 64, &m);
		printf("      child: one more page: %s\n", err(ret));
		ok &= is_err(ret, ENOMEM);
		ret = unmap_user(fd, handle);
		printf("      child: UNMAP_USER: %s, VmLck %ld kB\n", err(ret), vmlck_kb());
		ok &= ret == 0 && vmlck_kb() == 0;
		_exit(ok ? 0 : 1);
	}
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "RLIMIT_MEMLOCK: ENOMEM past the limit without CAP_IPC_LOCK (child status %d)", status);
}

/* ENOSPC past 65536 mappings; closing releases them all. */
static void map_many(int fd, const char *addr)
{
	struct usrdma_sg_entry e;
	struct usrdma_map_user m;
	struct timespec t0, t1;
	uint8_t *p = anon(PAGE);
	unsigned int i, n = 0;
	int ret;

	if (!p)
		return;
	p[0] = 1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < 65536; i++) {
		if (map_user(fd, p, PAGE, USRDMA_DIR_TO_DEVICE, &e, 1, &m))
			break;
		n++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	CHECK(n == 65536, "65536 mappings of one page: %u made in %.1f s (%s)", n,
	      (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
	      n == 65536 ? "ok" : strerror(errno));
	ret = map_user(fd, p, PAGE, USRDMA_DIR_TO_DEVICE, &e, 1, &m);
	CHECK(is_err(ret, ENOSPC), "mapping 65537: %s", err(ret));
	CHECK(stat_get(addr, "user_mappings") == 65536 && stat_get(addr, "pinned_pages") == 65536,
	      "usrdma_stats: user_mappings %ld, pinned_pages %ld", stat_get(addr, "user_mappings"),
	      stat_get(addr, "pinned_pages"));
	close(fd);
	/* edu cannot be reset: close quarantines them, QUIESCED releases them. */
	CHECK(stat_get(addr, "user_mappings") == 0 && stat_get(addr, "pinned_pages") == 0 &&
	      stat_get(addr, "quarantine_pages") == 65536,
	      "after close: user_mappings %ld, pinned_pages %ld, quarantine_pages %ld",
	      stat_get(addr, "user_mappings"), stat_get(addr, "pinned_pages"),
	      stat_get(addr, "quarantine_pages"));
	fd = open_node_raw(addr);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ret = fd < 0 ? -1 : quiesced(fd, 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	CHECK(ret == 0 && stat_get(addr, "quarantine_pages") == 0 && vmlck_kb() == 0,
	      "QUIESCED released them in %.2f s: quarantine_pages %ld, VmLck %ld kB",
	      (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
	      stat_get(addr, "quarantine_pages"), vmlck_kb());
	if (fd >= 0)
		close(fd);
	munmap(p, PAGE);
}

/* The usrdma_buffers attribute: one line per buffer, names escaped. */
static void buffers_attr(int fd, const char *addr)
{
	struct usrdma_alloc a, b;
	char path[128], line[256], expect_a[128], expect_b[128];
	int found_a = 0, found_b = 0, lines = 0;
	FILE *f;

	if (alloc_buf(fd, "a b\\c", 0, 100, &a) || alloc_buf(fd, "", USRDMA_BUF_PERSISTENT, 8192, &b)) {
		CHECK(0, "ALLOC for usrdma_buffers: %s", strerror(errno));
		return;
	}
	snprintf(expect_a, sizeof(expect_a), "%u a\\040b\\134c 0x1000 0x%llx 0x0 %d\n", a.id,
		 (unsigned long long)a.dma_addr, (int)getpid());
	snprintf(expect_b, sizeof(expect_b), "%u - 0x2000 0x%llx 0x2 %d\n", b.id,
		 (unsigned long long)b.dma_addr, (int)getpid());
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/usrdma_buffers", addr);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f)) {
		printf("      usrdma_buffers: %s", line);
		lines++;
		found_a |= !strcmp(line, expect_a);
		found_b |= !strcmp(line, expect_b);
	}
	if (f)
		fclose(f);
	CHECK(found_a && found_b, "usrdma_buffers lists both (escaped name, '-' for no name)");
	CHECK(stat_get(addr, "buffers") == lines && stat_get(addr, "buffer_bytes") >= 12288,
	      "usrdma_stats buffers %ld, buffer_bytes %ld", stat_get(addr, "buffers"),
	      stat_get(addr, "buffer_bytes"));
	{
		struct usrdma_free fr = {
			.argsz = sizeof(fr), .id = a.id, .generation = a.generation,
		};

		ioctl(fd, USRDMA_FREE, &fr);
		fr.id = b.id;
		fr.generation = b.generation;
		ioctl(fd, USRDMA_FREE, &fr);
	}
}

static int test_map(const char *addr)
{
	struct usrdma_alloc auxb;
	volatile uint8_t *bar;
	uint8_t *aux;
	int fd, closed = 0;

	fd = open_node(addr);
	CHECK(fd >= 0, "open: %s", fd >= 0 ? "ok" : strerror(errno));
	if (fd < 0)
		return 1;
	CHECK(stat_get(addr, "opened") == 1, "usrdma_stats opened 1");
	CHECK(set_mask(fd, 28) == 0, "SET_DMA_MASK 28");
	bar = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, USRDMA_BAR_OFFSET(0));
	CHECK(alloc_buf(fd, "aux", 0, PAGE, &auxb) == 0, "ALLOC aux: dma 0x%llx",
	      (unsigned long long)auxb.dma_addr);
	aux = map_buf(fd, &auxb);
	if (bar == MAP_FAILED || aux == MAP_FAILED)
		return 1;

	map_roundtrip(fd, addr, bar, aux, auxb.dma_addr, 1);
	map_roundtrip(fd, addr, bar, aux, auxb.dma_addr, 0);
	set_mask(fd, 64);
	map_errors(fd, addr, bar, aux, &auxb);
	map_rlimit(fd);
	buffers_attr(fd, addr);
	munmap((void *)bar, 4096);
	munmap(aux, PAGE);
	map_pinned(fd, addr, &closed);
	if (!closed)
		close(fd);

	fd = open_node(addr);
	CHECK(fd >= 0, "reopen");
	if (fd >= 0) {
		set_mask(fd, 64);
		map_many(fd, addr);
	}

	printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
	return failures ? 1 : 0;
}

/* ---- irq: SET_IRQ, IRQ_UNMASK, RESET ------------------------------------ */

#define INTX_DISABLE 0x400

static int test_irq(const char *addr)
{
	struct usrdma_irq irq;
	struct usrdma_alloc a;
	volatile uint8_t *bar;
	long count0;
	uint64_t v;
	int32_t efds[2], bad[1];
	int fd, efd, efd2, ret;

	fd = open_node(addr);
	CHECK(fd >= 0, "open: %s", fd >= 0 ? "ok" : strerror(errno));
	if (fd < 0)
		return 1;
	bar = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, USRDMA_BAR_OFFSET(0));
	efd = eventfd(0, EFD_CLOEXEC);
	efd2 = eventfd(0, EFD_CLOEXEC);
	if (bar == MAP_FAILED || efd < 0 || efd2 < 0)
		return 1;
	count0 = stat_get(addr, "irq_count");

	/* MSI */
	efds[0] = efd;
	ret = set_irq(fd, USRDMA_IRQ_MSI, 1, efds);
	CHECK(ret == 0, "SET_IRQ MSI, 1 vector: %s", err(ret));
	CHECK(stat_get(addr, "irqs") == 1, "usrdma_stats irqs 1");
	wr32(bar, EDU_IRQ_RAISE, 0x1000);
	v = wait_efd(efd, 5000);
	CHECK(v == 1 && rd32(bar, EDU_IRQ_STATUS) == 0x1000,
	      "MSI from the raise register: eventfd %llu, status 0x%x", (unsigned long long)v,
	      rd32(bar, EDU_IRQ_STATUS));
	wr32(bar, EDU_IRQ_ACK, 0x1000);
	wr32(bar, EDU_STATUS, EDU_STATUS_IRQ);
	wr32(bar, EDU_FACT, 5);
	v = wait_efd(efd, 5000);
	CHECK(v == 1 && rd32(bar, EDU_FACT) == 120,
	      "MSI at the end of factorial(5): eventfd %llu, result %u, status 0x%x",
	      (unsigned long long)v, rd32(bar, EDU_FACT), rd32(bar, EDU_IRQ_STATUS));
	wr32(bar, EDU_IRQ_ACK, rd32(bar, EDU_IRQ_STATUS));
	wr32(bar, EDU_STATUS, 0);
	ret = set_mask(fd, 28) || alloc_buf(fd, "irqdma", 0, PAGE, &a);
	ret = ret || edu_dma_len(bar, a.dma_addr, EDU_WINDOW, 64, EDU_CMD_IRQ);
	v = ret ? 0 : wait_efd(efd, 5000);
	CHECK(v == 1 && (rd32(bar, EDU_IRQ_STATUS) & 0x100), "MSI at the end of a DMA: status 0x%x",
	      rd32(bar, EDU_IRQ_STATUS));
	wr32(bar, EDU_IRQ_ACK, rd32(bar, EDU_IRQ_STATUS));
	CHECK(stat_get(addr, "irq_count") == count0 + 3, "usrdma_stats irq_count %ld -> %ld",
	      count0, stat_get(addr, "irq_count"));

	/* Argument errors change nothing. */
	efds[1] = efd2;
	ret = set_irq(fd, USRDMA_IRQ_MSI, 2, efds);
	CHECK(is_err(ret, EINVAL), "SET_IRQ MSI with 2 vectors (edu has 1): %s", err(ret));
	ret = set_irq(fd, USRDMA_IRQ_MSIX, 1, efds);
	CHECK(is_err(ret, EINVAL), "SET_IRQ MSI-X (edu has none): %s", err(ret));
	ret = set_irq(fd, 4, 1, efds);
	CHECK(is_err(ret, EINVAL), "SET_IRQ type 4: %s", err(ret));
	ret = set_irq(fd, USRDMA_IRQ_NONE, 1, efds);
	CHECK(is_err(ret, EINVAL), "SET_IRQ NONE with count 1: %s", err(ret));
	ret = set_irq(fd, USRDMA_IRQ_INTX, 2, efds);
	CHECK(is_err(ret, EINVAL), "SET_IRQ INTx with count 2: %s", err(ret));
	ret = set_irq(fd, USRDMA_IRQ_MSI, 0, efds);
	CHECK(is_err(ret, EINVAL), "SET_IRQ MSI with count 0: %s", err(ret));
	ret = set_irq(fd, USRDMA_IRQ_MSI, 33, efds);
	CHECK(is_err(ret, EINVAL), "SET_IRQ MSI with count 33: %s", err(ret));
	bad[0] = -1;
	ret = set_irq(fd, USRDMA_IRQ_MSI, 1, bad);
	CHECK(is_err(ret, EBADF), "SET_IRQ with fd -1: %s", err(ret));
	bad[0] = fd;
	ret = set_irq(fd, USRDMA_IRQ_MSI, 1, bad);
	CHECK(is_err(ret, EINVAL), "SET_IRQ with a fd that is not an eventfd: %s", err(ret));
	ret = set_irq(fd, USRDMA_IRQ_MSI, 1, NULL);
	CHECK(is_err(ret, EFAULT), "SET_IRQ with eventfds NULL: %s", err(ret));
	memset(&irq, 0, sizeof(irq));
	irq.argsz = sizeof(irq);
	irq.flags = 1;
	ret = ioctl(fd, USRDMA_SET_IRQ, &irq);
	CHECK(is_err(ret, EINVAL), "SET_IRQ with a flag: %s", err(ret));
	ret = irq_unmask(fd);
	CHECK(is_err(ret, EINVAL), "IRQ_UNMASK with MSI: %s", err(ret));
	wr32(bar, EDU_IRQ_RAISE, 0x2);
	v = wait_efd(efd, 5000);
	CHECK(v == 1 && stat_get(addr, "irqs") == 1, "MSI still set up after the errors");
	wr32(bar, EDU_IRQ_ACK, 0x2);

	/* INTx */
	efds[0] = efd2;
	ret = set_irq(fd, USRDMA_IRQ_INTX, 1, efds);
	CHECK(ret == 0 && !(pci_command(addr) & INTX_DISABLE),
	      "SET_IRQ INTx: %s, command 0x%x", err(ret), pci_command(addr));
	wr32(bar, EDU_IRQ_RAISE, 0x4);
	v = wait_efd(efd2, 5000);
	CHECK(v == 1 && (pci_command(addr) & INTX_DISABLE),
	      "INTx: eventfd %llu, masked at the device (command 0x%x)", (unsigned long long)v,
	      pci_command(addr));
	CHECK(wait_efd(efd, 200) == 0, "nothing on the old MSI eventfd");
	ret = irq_unmask(fd);
	v = wait_efd(efd2, 2000);
	CHECK(ret == 0 && v == 1 && (pci_command(addr) & INTX_DISABLE),
	      "IRQ_UNMASK while edu still asserts: signalled again, still masked");
	wr32(bar, EDU_IRQ_ACK, 0x4);
	ret = irq_unmask(fd);
	CHECK(ret == 0 && !(pci_command(addr) & INTX_DISABLE) && wait_efd(efd2, 200) == 0,
	      "acknowledged, IRQ_UNMASK: unmasked, no signal");
	wr32(bar, EDU_IRQ_RAISE, 0x8);
	v = wait_efd(efd2, 5000);
	CHECK(v == 1, "second INTx: eventfd %llu", (unsigned long long)v);
	wr32(bar, EDU_IRQ_ACK, 0x8);
	CHECK(irq_unmask(fd) == 0, "IRQ_UNMASK");
	ret = set_irq(fd, USRDMA_IRQ_NONE, 0, NULL);
	CHECK(ret == 0 && stat_get(addr, "irqs") == 0, "SET_IRQ NONE: %s, irqs %ld", err(ret),
	      stat_get(addr, "irqs"));
	ret = irq_unmask(fd);
	CHECK(is_err(ret, EINVAL), "IRQ_UNMASK without INTx: %s", err(ret));
	wr32(bar, EDU_IRQ_RAISE, 0x10);
	CHECK(wait_efd(efd2, 300) == 0 && wait_efd(efd, 10) == 0, "no signal after NONE");
	wr32(bar, EDU_IRQ_ACK, 0x10);
	CHECK(stat_get(addr, "irq_count") == count0 + 7, "usrdma_stats irq_count %ld",
	      stat_get(addr, "irq_count"));

	/* MSI again after INTx, then close with it set up. */
	efds[0] = efd;
	ret = set_irq(fd, USRDMA_IRQ_MSI, 1, efds);
	wr32(bar, EDU_IRQ_RAISE, 0x20);
	v = wait_efd(efd, 5000);
	CHECK(ret == 0 && v == 1, "MSI again after INTx");
	wr32(bar, EDU_IRQ_ACK, 0x20);

	/* RESET */
	{
		struct usrdma_reset r = { .argsz = sizeof(r) };

		ret = ioctl(fd, USRDMA_RESET, &r);
		CHECK(ret == 0 || is_err(ret, ENOTTY), "RESET: %s", err(ret));
		CHECK((rd32(bar, EDU_ID) & 0xffff) == 0xed, "edu answers after RESET");
		r.flags = 1;
		ret = ioctl(fd, USRDMA_RESET, &r);
		CHECK(is_err(ret, EINVAL), "RESET with a flag: %s", err(ret));
	}
	munmap((void *)bar, 4096);
	close(fd);
	CHECK(stat_get(addr, "irqs") == 0 && stat_get(addr, "opened") == 0, "after close: irqs 0");
	close(efd);
	close(efd2);

	printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
	return failures ? 1 : 0;
}

/* ---- revoke-wait ---------------------------------------------------------- */

static int test_revoke_wait(const char *addr)
{
	struct usrdma_info info = { .argsz = sizeof(info) };
	struct usrdma_sg_entry e[16];
	struct usrdma_map_user m;
	struct timespec t0, t1;
	struct pollfd pfd, waits[2];
	char path[128];
	uint8_t *p;
	uint64_t v = 0;
	int32_t efds[1];
	long lck0;
	double ms;
	pid_t pid;
	int fd, efd, ret, status;
	ssize_t n;

	fd = open_node(addr);
	efd = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
	p = anon(16 * PAGE);
	CHECK(fd >= 0 && efd >= 0 && p, "open: %s", fd >= 0 ? "ok" : strerror(errno));
	if (fd < 0 || efd < 0 || !p)
		return 1;
	memset(p, 4, 16 * PAGE);
	lck0 = vmlck_kb();
	ret = set_mask(fd, 28);
	ret = ret || map_user(fd, p, 2 * PAGE, USRDMA_DIR_TO_DEVICE, e, 16, &m);
	CHECK(ret == 0, "MAP_USER 2 pages (mask 28): %s%s", err(ret),
	      !ret && (m.out_flags & USRDMA_MAP_BOUNCED) ? ", BOUNCED" : "");
	ret = set_mask(fd, 32);
	ret = ret || map_user(fd, p, 16 * PAGE, USRDMA_DIR_FROM_DEVICE, e, 16, &m);
	CHECK(ret == 0, "MAP_USER 16 pages (mask 32): %s%s, VmLck %ld kB", err(ret),
	      !ret && (m.out_flags & USRDMA_MAP_BOUNCED) ? ", BOUNCED" : "", vmlck_kb());
	efds[0] = efd;
	ret = set_irq(fd, USRDMA_IRQ_MSI, 1, efds);
	CHECK(ret == 0, "SET_IRQ MSI: %s", err(ret));

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver/unbind", addr);
	pid = fork();
	if (pid == 0) {
		int ufd;

		usleep(200000);
		ufd = open(path, O_WRONLY);
		_exit(ufd >= 0 && write(ufd, addr, strlen(addr)) > 0 ? 0 : 1);
	}
	/*
	 * The documented way to wait (API 4): the eventfd and the node in one
	 * poll set. Revocation marks the node gone, then signals the eventfd
	 * once, so the wake-up that the eventfd brings finds the node hung up.
	 */
	waits[0] = (struct pollfd){ .fd = efd, .events = POLLIN };
	waits[1] = (struct pollfd){ .fd = fd, .events = 0 };
	alarm(20);	/* a hang is a failure, not a stuck test */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ret = poll(waits, 2, -1);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	alarm(0);
	ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
	CHECK(ret >= 1 && (waits[1].revents & (POLLHUP | POLLERR)) && ms >= 150,
	      "poll() of the MSI eventfd and the node woke up after %.0f ms: node revents %#x",
	      ms, waits[1].revents);
	/* A semaphore eventfd: the wake-up is one count, as an interrupt's. */
	n = read(efd, &v, sizeof(v));
	CHECK(n == sizeof(v) && v == 1, "the eventfd (EFD_SEMAPHORE) read %llu at revocation",
	      (unsigned long long)v);
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child unbound the device");

	ret = ioctl(fd, USRDMA_GET_INFO, &info);
	CHECK(is_err(ret, ENODEV), "GET_INFO after revocation: %s", err(ret));
	ret = map_user(fd, p, PAGE, USRDMA_DIR_TO_DEVICE, e, 16, &m);
	CHECK(is_err(ret, ENODEV), "MAP_USER after revocation: %s", err(ret));
	ret = set_irq(fd, USRDMA_IRQ_NONE, 0, NULL);
	CHECK(is_err(ret, ENODEV), "SET_IRQ after revocation: %s", err(ret));
	ret = unmap_user(fd, m.handle);
	CHECK(is_err(ret, ENODEV), "UNMAP_USER after revocation: %s", err(ret));
	ret = irq_unmask(fd);
	CHECK(is_err(ret, ENODEV), "IRQ_UNMASK after revocation: %s", err(ret));
	pfd.fd = fd;
	pfd.events = POLLIN;
	ret = poll(&pfd, 1, 1000);
	CHECK(ret == 1 && (pfd.revents & POLLHUP), "poll: revents %#x", pfd.revents);
	CHECK(vmlck_kb() == lck0, "the pinned pages were un-accounted: VmLck %ld kB", vmlck_kb());
	CHECK(close(fd) == 0, "close after revocation");
	close(efd);
	munmap(p, 16 * PAGE);

	printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
	return failures ? 1 : 0;
}

/* ---- generations and FREE rules (API version 2) -------------------------- */

static int free_id(int fd, uint32_t id, uint64_t generation)
{
	struct usrdma_free fr = {
		.argsz = sizeof(fr), .id = id, .generation = generation,
	};

	return ioctl(fd, USRDMA_FREE, &fr);
}

static int free_name(int fd, const char *name)
{
	struct usrdma_free fr = { .argsz = sizeof(fr), .flags = USRDMA_FREE_BY_NAME };

	snprintf(fr.name, sizeof(fr.name), "%s", name);
	return ioctl(fd, USRDMA_FREE, &fr);
}

/* The LIST entry of buffer id (version 2 entries); 0 if found. */
static int find_entry(int fd, uint32_t id, struct usrdma_buf_entry *out)
{
	struct usrdma_buf_entry e[64];
	struct usrdma_list l = {
		.argsz = sizeof(l), .capacity = 64, .entries = (uintptr_t)e,
		.entry_size = sizeof(e[0]),
	};
	unsigned int i;

	if (ioctl(fd, USRDMA_LIST, &l))
		return -1;
	for (i = 0; i < l.count && i < 64; i++)
		if (e[i].id == id) {
			*out = e[i];
			return 0;
		}
	return -1;
}

static const char *errstr(int ret)
{
	return ret ? strerror(errno) : "accepted";
}

/* Stale ids, the generation, LIST entry sizes and version-1 callers. */
static void generations(int fd, volatile uint8_t *bar)
{
	struct usrdma_alloc a, b, v1;
	struct usrdma_buf_entry e;
	struct usrdma_free old;
	struct usrdma_list l;
	uint8_t raw[5 * 96], want[XFER];
	unsigned int i, n, found;
	uint8_t *p;
	int ret, ok;

	ret = alloc_buf(fd, "", 0, PAGE, &a);
	CHECK(ret == 0 && a.generation, "ALLOC: id %u, generation %llu", a.id,
	      (unsigned long long)a.generation);
	if (ret)
		return;
	ret = find_entry(fd, a.id, &e);
	CHECK(ret == 0 && e.generation == a.generation, "LIST reports generation %llu",
	      ret ? 0ull : (unsigned long long)e.generation);
	ret = free_id(fd, a.id, 0);
	CHECK(ret < 0 && errno == EINVAL, "FREE by id without a generation: %s", errstr(ret));
	ret = free_id(fd, a.id, a.generation + 1000);
	CHECK(ret < 0 && errno == ESTALE, "FREE by id with another generation: %s", errstr(ret));
	ret = free_id(fd, a.id, a.generation);
	CHECK(ret == 0, "FREE (id %u, generation %llu): %s", a.id,
	      (unsigned long long)a.generation, ret ? strerror(errno) : "ok");

	/* The id comes back with a new generation; the old pair cannot free it. */
	ret = alloc_buf(fd, "", 0, PAGE, &b);
	CHECK(ret == 0 && b.id == a.id && b.generation != a.generation,
	      "ALLOC again: id %u (reused), generation %llu (new)", b.id,
	      (unsigned long long)b.generation);
	if (ret)
		return;
	ret = free_id(fd, a.id, a.generation);
	CHECK(ret < 0 && errno == ESTALE, "stale FREE (id %u, generation %llu): %s", a.id,
	      (unsigned long long)a.generation, errstr(ret));
	ret = find_entry(fd, b.id, &e);
	CHECK(ret == 0 && e.generation == b.generation, "the newer buffer is still listed");
	p = map_buf(fd, &b);
	CHECK(p != MAP_FAILED, "mmap the newer buffer");
	if (p == MAP_FAILED)
		return;
	for (i = 0; i < XFER; i++)
		want[i] = p[i] = (uint8_t)(i * 13 + 5);
	ret = edu_dma(bar, b.dma_addr, EDU_WINDOW, 0);
	memset(p, 0, XFER);
	ret |= edu_dma(bar, EDU_WINDOW, b.dma_addr, EDU_CMD_TO_RAM);
	CHECK(ret == 0 && !memcmp(p, want, XFER),
	      "edu DMA out of and back into the newer buffer");
	munmap(p, PAGE);

	/* Version-1 callers: ALLOC and LIST work, FREE by id does not. */
	memset(&v1, 0, sizeof(v1));
	v1.argsz = USRDMA_ALLOC_SIZE_V1;
	v1.size = PAGE;
	ret = ioctl(fd, USRDMA_ALLOC, &v1);
	CHECK(ret == 0 && v1.id && !v1.generation,
	      "version-1 ALLOC: id %u, no generation written", v1.id);
	memset(raw, 0xee, sizeof(raw));
	memset(&l, 0, sizeof(l));
	l.argsz = USRDMA_LIST_SIZE_V1;
	l.capacity = 4;
	l.entries = (uintptr_t)raw;
	ret = ioctl(fd, USRDMA_LIST, &l);
	n = l.count < 4 ? l.count : 4;
	for (i = found = 0; !ret && i < n; i++) {
		uint32_t id;

		memcpy(&id, raw + i * USRDMA_BUF_ENTRY_SIZE_V1, sizeof(id));
		found += id == v1.id || id == b.id;
	}
	CHECK(ret == 0 && found == 2 && raw[n * USRDMA_BUF_ENTRY_SIZE_V1] == 0xee,
	      "version-1 LIST: %u entries of %d bytes, nothing written past them",
	      l.count, USRDMA_BUF_ENTRY_SIZE_V1);
	memset(&old, 0, sizeof(old));
	old.argsz = USRDMA_FREE_SIZE_V1;
	old.id = v1.id;
	ret = ioctl(fd, USRDMA_FREE, &old);
	CHECK(ret < 0 && errno == EINVAL, "version-1 FREE by id: %s", errstr(ret));
	if (!find_entry(fd, v1.id, &e))
		free_id(fd, v1.id, e.generation);

	/* entry_size: larger ones get their tail cleared, bad ones EINVAL. */
	memset(raw, 0xee, sizeof(raw));
	memset(&l, 0, sizeof(l));
	l.argsz = sizeof(l);
	l.capacity = 4;
	l.entries = (uintptr_t)raw;
	l.entry_size = 96;
	ret = ioctl(fd, USRDMA_LIST, &l);
	n = l.count < 4 ? l.count : 4;
	for (i = found = 0, ok = !ret; ok && i < n; i++) {
		memcpy(&e, raw + i * 96, sizeof(e));
		found += e.id == b.id && e.generation == b.generation;
		ok = all_equal(raw + i * 96 + sizeof(e), 96 - sizeof(e), 0);
	}
	CHECK(ok && found == 1 && raw[n * 96] == 0xee,
	      "LIST with 96-byte entries: tails cleared, nothing past the last");
	for (i = 0; i < 4; i++) {
		static const uint32_t bad[] = { 4, 64, 76, PAGE + 8 };

		l.count = 0;
		l.entry_size = bad[i];
		ret = ioctl(fd, USRDMA_LIST, &l);
		CHECK(ret < 0 && errno == EINVAL, "LIST with entry_size %u: %s", bad[i],
		      errstr(ret));
	}
	free_id(fd, b.id, b.generation);
}

/*
 * FREE by name: only persistent buffers that no vma maps, whatever became
 * of the vma (split by a partial munmap, copied by fork).
 */
static void free_by_name_rules(int fd, const char *addr)
{
	struct usrdma_alloc a, k;
	struct usrdma_buf_entry e;
	int ready[2], go[2];
	uint8_t *q;
	char c = 0;
	long before = stat_get(addr, "buffers");
	pid_t child;
	int ret, status;

	/* The review's sequence: a name held by the opener, not persistent. */
	ret = alloc_buf(fd, "rx", 0, PAGE, &a);
	CHECK(ret == 0, "ALLOC rx (not persistent)");
	ret = free_name(fd, "rx");
	CHECK(ret < 0 && errno == EPERM, "FREE rx by name: %s", errstr(ret));
	CHECK(find_entry(fd, a.id, &e) == 0, "rx is still there");
	ret = free_id(fd, a.id, a.generation);
	CHECK(ret == 0, "its opener frees it by id: %s", ret ? strerror(errno) : "ok");

	ret = alloc_buf(fd, "kept", USRDMA_BUF_PERSISTENT, 2 * PAGE, &k);
	CHECK(ret == 0, "ALLOC kept (persistent, 2 pages)");
	if (ret)
		return;
	q = map_buf(fd, &k);
	CHECK(q != MAP_FAILED, "mmap kept");
	if (q == MAP_FAILED)
		return;
	q[0] = 1;
	q[PAGE] = 2;
	ret = free_name(fd, "kept");
	CHECK(ret < 0 && errno == EBUSY, "FREE kept by name while mapped: %s", errstr(ret));
	munmap(q, PAGE);
	ret = free_name(fd, "kept");
	CHECK(ret < 0 && errno == EBUSY, "... while half of it is still mapped: %s",
	      errstr(ret));

	/* A child inherits the mapping; it counts until the child is gone. */
	if (pipe(ready) || pipe(go)) {
		CHECK(0, "pipe: %s", strerror(errno));
		return;
	}
	child = fork();
	if (child == 0) {
		int seen = q[PAGE] == 2;

		if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(3);
		_exit(seen ? 0 : 4);
	}
	CHECK(child > 0 && read(ready[0], &c, 1) == 1, "fork: the child has the mapping");
	munmap(q + PAGE, PAGE);
	ret = free_name(fd, "kept");
	CHECK(ret < 0 && errno == EBUSY, "FREE kept while only the child maps it: %s",
	      errstr(ret));
	if (child > 0) {
		if (write(go[1], "g", 1) != 1)
			kill(child, SIGKILL);
		waitpid(child, &status, 0);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "the child read the buffer through its copy of the mapping");
	}
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	close(go[1]);
	ret = free_name(fd, "kept");
	CHECK(ret == 0, "FREE kept by name once nobody maps it: %s",
	      ret ? strerror(errno) : "ok");
	ret = free_name(fd, "kept");
	CHECK(ret < 0 && errno == ENOENT, "FREE kept again: %s", errstr(ret));
	CHECK(stat_get(addr, "buffers") == before, "usrdma_stats: %ld buffers, as before",
	      stat_get(addr, "buffers"));
}

static int test_free(const char *addr)
{
	volatile uint8_t *bar;
	int fd, ret;

	fd = open_node(addr);
	CHECK(fd >= 0, "open: %s", fd >= 0 ? "ok" : strerror(errno));
	if (fd < 0)
		return 1;
	ret = set_mask(fd, 28);
	CHECK(ret == 0, "SET_DMA_MASK 28");
	bar = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, USRDMA_BAR_OFFSET(0));
	CHECK(bar != MAP_FAILED, "mmap BAR0");
	if (ret || bar == MAP_FAILED)
		return 1;
	generations(fd, bar);
	free_by_name_rules(fd, addr);
	munmap((void *)bar, 4096);
	close(fd);

	printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && !strcmp(argv[1], "dma"))
		return test_dma(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "revoke"))
		return test_revoke(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "map"))
		return test_map(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "irq"))
		return test_irq(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "revoke-wait"))
		return test_revoke_wait(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "free"))
		return test_free(argv[2]);
	fprintf(stderr, "usage: usrdma-test dma|revoke|map|irq|revoke-wait|free ADDR\n");
	return 2;
}
