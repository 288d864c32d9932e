// SPDX-License-Identifier: GPL-2.0
/*
 * usrdma-test: exercises the usrdma module with QEMU's edu device.
 *
 *   usrdma-test dma ADDR      open, EBUSY, SET_DMA_MASK 28, ALLOC, mmap,
 *                             DMA through edu and back, LIST, FREE, close
 *   usrdma-test revoke ADDR   open, ALLOC, mmap, unbind the device while
 *                             open: ENODEV, POLLHUP, SIGBUS, close
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
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "usrdma_uapi.h"

#define EDU_ID		0x00
#define EDU_DMA_SRC	0x80
#define EDU_DMA_DST	0x88
#define EDU_DMA_COUNT	0x90
#define EDU_DMA_CMD	0x98
#define EDU_CMD_START	1
#define EDU_CMD_TO_RAM	2
#define EDU_WINDOW	0x40000
#define XFER		2048	/* ends inside the 4 KiB window */

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

static int open_node(const char *addr)
{
	char path[64];

	snprintf(path, sizeof(path), "/dev/usrdma/%s", addr);
	return open(path, O_RDWR | O_CLOEXEC);
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

static int edu_dma(volatile uint8_t *bar, uint64_t src, uint64_t dst,
		   uint64_t cmd)
{
	struct timespec start, now;

	wr64(bar, EDU_DMA_SRC, src);
	wr64(bar, EDU_DMA_DST, dst);
	wr64(bar, EDU_DMA_COUNT, XFER);
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

	fd = open_node(addr);
	CHECK(fd >= 0, "open /dev/usrdma/%s: %s", addr, fd >= 0 ? "ok" : strerror(errno));
	if (fd < 0)
		return 1;
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
	ret = ioctl(fd, USRDMA_FREE, &fr);
	CHECK(ret == 0, "FREE src by id");
	CHECK(touch(src) == SIGBUS, "src mapping faults after FREE");
	ret = ioctl(fd, USRDMA_FREE, &fr);
	CHECK(ret < 0 && errno == ENOENT, "FREE again: %s", ret ? strerror(errno) : "accepted");
	memset(&fr, 0, sizeof(fr));
	fr.argsz = sizeof(fr);
	fr.flags = USRDMA_FREE_BY_NAME;
	strcpy(fr.name, "dst");
	ret = ioctl(fd, USRDMA_FREE, &fr);
	CHECK(ret == 0, "FREE dst by name");
	CHECK(touch(dst) == SIGBUS, "dst mapping faults after FREE");

	/* A persistent buffer survives close; a plain one does not. */
	ret = alloc_buf(fd, "keep", USRDMA_BUF_PERSISTENT, 8192, &a);
	CHECK(ret == 0, "ALLOC keep (persistent)");
	ret = alloc_buf(fd, "drop", 0, 4096, &b);
	CHECK(ret == 0, "ALLOC drop");
	munmap((void *)bar, 4096);
	munmap(src, 4096);
	munmap(dst, 4096);
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
	CHECK(touch(p) == SIGBUS, "buffer mapping faults after unbind");
	CHECK(map_buf(fd, &a) == MAP_FAILED && errno == ENODEV, "mmap after unbind: %s", strerror(errno));
	munmap(p, 4096);
	CHECK(close(fd) == 0, "close after unbind");

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
	fprintf(stderr, "usage: usrdma-test dma|revoke ADDR\n");
	return 2;
}
