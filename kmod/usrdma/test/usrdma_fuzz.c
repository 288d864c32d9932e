// SPDX-License-Identifier: GPL-2.0
/*
 * usrdma-fuzz: random ioctls and mmaps against a usrdma node, then proof
 * that the device still works and that nothing was left behind.
 *
 *   usrdma-fuzz ADDR N [SEED]
 *
 * Opens /dev/usrdma/ADDR (QEMU's edu device bound to usrdma) and issues N
 * random ioctls: every valid command and some invalid numbers, argsz from 0
 * to huge, random flags, reserved fields and tails, pointers that are NULL,
 * kernel addresses, unmapped, read-only or valid, random lengths, handles,
 * buffer ids, eventfds, and random mmap offsets and lengths. A second
 * thread races it on the same file with UNMAP_USER, SYNC, SET_DMA_MASK,
 * SET_IRQ and GET_INFO of guessed handles, and FREE of buffers it finds
 * with LIST (by id and generation, or by name). The fuzzer
 * never writes to the device's registers (a random DMA would corrupt the
 * machine), and never hands the kernel a BAR mapping to write into.
 *
 * Then it unmaps, frees and closes everything, reopens to declare the
 * device quiesced (edu cannot be reset: what the close left is
 * quarantined until then), checks that usrdma_stats shows no pinned pages,
 * user mappings, bounce bytes, interrupts or quarantined memory and that
 * VmLck is 0, and runs a sane round trip: DMA through edu between
 * coherent buffers and mapped user memory (mask 28), and an MSI. Prints
 *   usrdma-fuzz: N ioctls, <counts by errno>
 * and exits 0 only if the round trip and the leak checks pass.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "usrdma_uapi.h"
#include "counters.h"

#define PAGE		4096ul
#define EDU_IRQ_STATUS	0x24
#define EDU_IRQ_RAISE	0x60
#define EDU_IRQ_ACK	0x64
#define EDU_DMA_SRC	0x80
#define EDU_DMA_DST	0x88
#define EDU_DMA_COUNT	0x90
#define EDU_DMA_CMD	0x98
#define EDU_CMD_START	1
#define EDU_CMD_TO_RAM	2
#define EDU_WINDOW	0x40000
#define EDU_REACH	(1ull << 28)

#define RW_PAGES	64	/* valid read-write memory to map */
#define MAX_HANDLES	64	/* live mappings kept at most */
#define MAX_BUFS	24	/* live buffers kept at most */
#define MAX_MAPS	16	/* live mmaps of buffers */
#define NEFD		3

/* ---- random numbers (xorshift64*, reproducible from the seed) ----------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Dull;
}

static uint64_t below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

static int chance(unsigned int percent)
{
	return below(100) < percent;
}

/* ---- state --------------------------------------------------------------- */

static int fd;
static const char *addr;
static uint8_t *rw, *ro, *hole;
static volatile uint8_t *bar;
static int efd[NEFD];
static uint32_t handles[MAX_HANDLES];
static unsigned int nhandles;
static uint32_t bufs[MAX_BUFS];
static uint64_t buf_off[MAX_BUFS];
static uint64_t buf_size[MAX_BUFS];
static uint64_t buf_gen[MAX_BUFS];
static unsigned int nbufs;
static struct {
	void *p;
	size_t len;
} maps[MAX_MAPS];
static unsigned int nmaps;
static struct usrdma_sg_entry entries[1024];
static unsigned long counts[256];	/* by errno; [0] = success */
static unsigned long calls;
static int revoked;			/* ENODEV: the device went away */

/* The argument block: big enough for any structure plus a tail. */
static union {
	uint8_t bytes[8192];
	uint64_t align;
	struct usrdma_info info;
	struct usrdma_dma_mask mask;
	struct usrdma_alloc alloc;
	struct usrdma_free free;
	struct usrdma_list list;
	struct usrdma_map_user map;
	struct usrdma_unmap_user unmap;
	struct usrdma_sync sync;
	struct usrdma_irq irq;
	struct usrdma_irq_unmask unmask;
	struct usrdma_reset reset;
	struct usrdma_quiesced quiesced;
} arg;
static int32_t fds[40];

/* A pointer the kernel may read or write: never into a BAR mapping. */
static uint64_t any_ptr(size_t need)
{
	switch (below(12)) {
	case 0:
		return 0;
	case 1:
		return 1 + below(4096);
	case 2:
		return 0xffff888000000000ull + below(1ull << 30);
	case 3:
		return 0xffffffff81000000ull;
	case 4:
		return (uint64_t)-4096 + below(4096);
	case 5:
		return (uintptr_t)hole + below(PAGE);
	case 6:
		return (uintptr_t)ro + below(PAGE);
	case 7:
		return nmaps ? (uintptr_t)maps[below(nmaps)].p + below(PAGE) : 0;
	case 8:
		return (uintptr_t)(rw + RW_PAGES * PAGE) - below(need + 1);
	default:
		return (uintptr_t)rw + below(RW_PAGES * PAGE - (need < RW_PAGES * PAGE ? need : 0));
	}
}

/* An address to map: all of the above, and the BAR (pinning must refuse). */
static uint64_t map_addr(void)
{
	if (chance(5))
		return (uintptr_t)bar + below(PAGE);
	if (chance(70))
		return (uintptr_t)rw + below(RW_PAGES * PAGE);
	return any_ptr(PAGE);
}

static uint64_t rand_len(void)
{
	switch (below(10)) {
	case 0:
		return 0;
	case 1:
		return (1ull << 30) + below(2);
	case 2:
		return rnd();
	case 3:
		return below(1ull << 31);
	case 4:
		return PAGE * (1 + below(RW_PAGES + 2));
	default:
		return 1 + below(64 * 1024);
	}
}

static uint32_t rand_handle(void)
{
	if (nhandles && chance(70))
		return handles[below(nhandles)];
	switch (below(4)) {
	case 0:
		return 0;
	case 1:
		return (uint32_t)rnd();
	default:
		return 1 + below(200);
	}
}

static uint32_t rand_buf_id(void)
{
	if (nbufs && chance(70))
		return bufs[below(nbufs)];
	return chance(50) ? (uint32_t)below(10) : (uint32_t)rnd();
}

/* A generation: mostly the right one for a known id, else a near miss. */
static uint64_t rand_gen(uint32_t id)
{
	unsigned int i;

	for (i = 0; i < nbufs; i++)
		if (bufs[i] == id && chance(80))
			return buf_gen[i];
	switch (below(4)) {
	case 0:
		return 0;
	case 1:
		return rnd();
	default:
		return 1 + below(100000);
	}
}

static uint32_t rand_flags(uint32_t valid)
{
	switch (below(6)) {
	case 0:
		return (uint32_t)rnd();
	case 1:
		return 1u << below(32);
	case 2:
		return 0;
	default:
		return (uint32_t)rnd() & valid;
	}
}

static void rand_name(char *name)
{
	static const char *names[] = { "", "a", "buf", "x y", "pers", "\xa0\xff", "-", "dup" };

	memset(name, 0, USRDMA_NAME_LEN);
	if (chance(10)) {
		memset(name, 'A' + (int)below(26), USRDMA_NAME_LEN);	/* no NUL */
		return;
	}
	if (chance(10)) {
		name[0] = (char)below(32);	/* not printable */
		return;
	}
	if (chance(30)) {
		snprintf(name, USRDMA_NAME_LEN, "n%u", (unsigned int)below(40));
		return;
	}
	strcpy(name, names[below(8)]);
}

/* argsz: mostly right, sometimes anything. */
static uint32_t rand_argsz(uint32_t size)
{
	if (chance(80))
		return size;
	switch (below(9)) {
	case 0:
		return 0;
	case 1:
		return 4;
	case 2:
		return 8;
	case 3:
		return size - 4;
	case 4:
		return size + 8;
	case 5:
		return 4096;
	case 6:
		return 4097;
	case 7:
		return 0xffffffff;
	default:
		return (uint32_t)below(8192);
	}
}

static void count(int ret)
{
	int e = ret < 0 ? errno : 0;

	counts[e < 256 ? e : 255]++;
	calls++;
	if (e == ENODEV)
		revoked = 1;
}

static void forget_handle(uint32_t h)
{
	unsigned int i;

	for (i = 0; i < nhandles; i++)
		if (handles[i] == h) {
			handles[i] = handles[--nhandles];
			return;
		}
}

static void forget_buf(uint32_t id, uint64_t gen)
{
	unsigned int i;

	for (i = 0; i < nbufs; i++)
		if (bufs[i] == id && buf_gen[i] == gen) {
			bufs[i] = bufs[--nbufs];
			buf_off[i] = buf_off[nbufs];
			buf_size[i] = buf_size[nbufs];
			buf_gen[i] = buf_gen[nbufs];
			return;
		}
}

static int do_unmap(uint32_t h)
{
	struct usrdma_unmap_user u = { .argsz = sizeof(u), .handle = h };
	int ret = ioctl(fd, USRDMA_UNMAP_USER, &u);

	count(ret);
	if (!ret)
		forget_handle(h);
	return ret;
}

static int do_free(uint32_t id, uint64_t gen)
{
	struct usrdma_free f = { .argsz = sizeof(f), .id = id, .generation = gen };
	int ret = ioctl(fd, USRDMA_FREE, &f);

	count(ret);
	/* Gone: freed by the racing thread, maybe its id reused (ESTALE). */
	if (!ret || errno == ENOENT || errno == ESTALE)
		forget_buf(id, gen);
	return ret;
}

/* ---- one random operation ------------------------------------------------ */

static sigjmp_buf fault_jmp;
static unsigned long touches, sigbus;

static void on_sigbus(int sig)
{
	siglongjmp(fault_jmp, sig);
}

/*
 * Reads and writes a kept buffer mapping (RAM, never a BAR): the first
 * touch faults it in; a buffer freed (here or by the racing thread) gives
 * SIGBUS.
 */
static void touch_byte(volatile uint8_t *p)
{
	if (sigsetjmp(fault_jmp, 1)) {
		sigbus++;
		return;
	}
	*p += 1;
}

static void fuzz_touch(void)
{
	unsigned int i;

	if (!nmaps)
		return;
	i = below(nmaps);
	touches++;
	touch_byte((volatile uint8_t *)maps[i].p + PAGE * below(maps[i].len / PAGE) +
		   below(PAGE));
}

static void fuzz_mmap(void)
{
	uint64_t off;
	size_t len = PAGE * (1 + below(chance(10) ? 600 : 4));
	int prot = chance(50) ? PROT_READ : PROT_READ | PROT_WRITE;
	int flags = chance(90) ? MAP_SHARED : MAP_PRIVATE;
	void *p;

	switch (below(6)) {
	case 0:
		off = USRDMA_BAR_OFFSET(below(8)) + PAGE * below(300);
		break;
	case 1:
		off = USRDMA_BUF_OFFSET_BASE + PAGE * below(2000);
		break;
	case 2:
		off = (rnd() & ~(PAGE - 1)) & ((1ull << 62) - 1);
		break;
	default:
		if (!nbufs)
			return;
		{
			unsigned int i = below(nbufs);

			off = buf_off[i] + PAGE * below(buf_size[i] / PAGE + 1);
			if (chance(80))
				len = buf_size[i] - (off - buf_off[i]);
			if (!len)
				len = PAGE;
		}
		break;
	}
	p = mmap(NULL, len, prot, flags, fd, (off_t)off);
	if (p == MAP_FAILED)
		return;
	/* Keep buffer mappings (RAM) as pointers; never keep BAR ones. */
	if (off >= USRDMA_BUF_OFFSET_BASE && (prot & PROT_WRITE) && nmaps < MAX_MAPS &&
	    chance(90)) {
		maps[nmaps].p = p;
		maps[nmaps].len = len;
		nmaps++;
		return;
	}
	munmap(p, len);
}

static void fuzz_one(void)
{
	unsigned long cmd;
	uint32_t size = 0;
	uint64_t argp = (uintptr_t)&arg;
	unsigned int i, op = below(100);
	int ret;

	memset(arg.bytes, 0, 512);
	if (op < 4) {
		fuzz_mmap();
		return;
	}
	if (op < 7) {
		fuzz_touch();
		return;
	}
	if (op < 28) {			/* MAP_USER */
		cmd = USRDMA_MAP_USER;
		size = sizeof(arg.map);
		arg.map.flags = rand_flags(USRDMA_DIR_MASK);
		if (chance(80))
			arg.map.flags = 1 + below(3);
		arg.map.addr = map_addr();
		arg.map.length = chance(70) ? 1 + below(8 * PAGE) : rand_len();
		arg.map.entries = chance(85) ? (uintptr_t)entries : any_ptr(64);
		arg.map.capacity = chance(70) ? 1024 : (uint32_t)(chance(50) ? below(4) : rnd());
		if (chance(5))
			arg.map.count = (uint32_t)rnd();
		if (chance(5))
			arg.map.handle = (uint32_t)rnd();
		if (chance(5))
			arg.map.out_flags = (uint32_t)rnd();
	} else if (op < 42) {		/* UNMAP_USER */
		cmd = USRDMA_UNMAP_USER;
		size = sizeof(arg.unmap);
		arg.unmap.handle = rand_handle();
		if (chance(5))
			arg.unmap.flags = (uint32_t)rnd();
		if (chance(5))
			arg.unmap.reserved = (uint32_t)rnd();
	} else if (op < 56) {		/* SYNC */
		cmd = USRDMA_SYNC;
		size = sizeof(arg.sync);
		arg.sync.flags = chance(70) ? (1 + below(2)) | (chance(20) ? USRDMA_SYNC_BUFFER : 0) :
					      rand_flags(7);
		arg.sync.handle = (arg.sync.flags & USRDMA_SYNC_BUFFER) ? rand_buf_id() : rand_handle();
		arg.sync.offset = chance(70) ? below(2 * PAGE) : rnd();
		arg.sync.length = chance(70) ? below(4 * PAGE) : rand_len();
		if (chance(5))
			arg.sync.reserved = (uint32_t)rnd();
	} else if (op < 64) {		/* ALLOC */
		cmd = USRDMA_ALLOC;
		size = sizeof(arg.alloc);
		arg.alloc.flags = rand_flags(USRDMA_BUF_FLAGS);
		arg.alloc.size = chance(80) ? 1 + below(64 * 1024) : rand_len();
		rand_name(arg.alloc.name);
		if (chance(4))
			arg.alloc.id = (uint32_t)rnd();
		if (chance(4))
			arg.alloc.dma_addr = rnd();
		if (chance(4))
			arg.alloc.mmap_offset = rnd();
		if (chance(4))
			arg.alloc.reserved = 1;
		if (chance(4))
			arg.alloc.generation = rnd();
	} else if (op < 70) {		/* FREE */
		cmd = USRDMA_FREE;
		size = sizeof(arg.free);
		arg.free.flags = rand_flags(USRDMA_FREE_BY_NAME);
		if (arg.free.flags & USRDMA_FREE_BY_NAME) {
			rand_name(arg.free.name);
			if (chance(5))
				arg.free.generation = rnd();
		} else {
			arg.free.id = rand_buf_id();
			arg.free.generation = rand_gen(arg.free.id);
		}
		if (chance(5))
			arg.free.reserved = 1;
	} else if (op < 74) {		/* LIST */
		cmd = USRDMA_LIST;
		size = sizeof(arg.list);
		arg.list.capacity = chance(70) ? (uint32_t)below(64) : (uint32_t)rnd();
		/* 0, the sizes of versions 1 and 2, a longer one, or invalid. */
		switch (below(8)) {
		case 0:
			arg.list.entry_size = 0;
			break;
		case 1:
			arg.list.entry_size = USRDMA_BUF_ENTRY_SIZE_V1;
			break;
		case 2:
			arg.list.entry_size = 96;
			break;
		case 3:
			arg.list.entry_size = chance(50) ? (uint32_t)below(80) :
							   (uint32_t)rnd();
			break;
		default:
			arg.list.entry_size = sizeof(struct usrdma_buf_entry);
		}
		arg.list.entries = any_ptr(64 * 96);
		if (chance(5))
			arg.list.reserved = 1;
		if (chance(5))
			arg.list.count = 1;
	} else if (op < 80) {		/* SET_DMA_MASK */
		cmd = USRDMA_SET_DMA_MASK;
		size = sizeof(arg.mask);
		arg.mask.bits = chance(80) ? 24 + (uint32_t)below(41) : (uint32_t)rnd() % 80;
		if (chance(5))
			arg.mask.reserved = 1;
	} else if (op < 88) {		/* SET_IRQ */
		cmd = USRDMA_SET_IRQ;
		size = sizeof(arg.irq);
		arg.irq.type = (uint32_t)below(5);
		arg.irq.count = chance(70) ? (uint32_t)below(3) : (uint32_t)(chance(50) ? 33 : rnd());
		for (i = 0; i < 40; i++) {
			switch (below(8)) {
			case 0:
				fds[i] = -1;
				break;
			case 1:
				fds[i] = fd;	/* not an eventfd */
				break;
			case 2:
				fds[i] = 9999;
				break;
			default:
				fds[i] = efd[below(NEFD)];
			}
		}
		arg.irq.eventfds = chance(85) ? (uintptr_t)fds : any_ptr(160);
		if (chance(5))
			arg.irq.flags = 1;
	} else if (op < 92) {		/* IRQ_UNMASK */
		cmd = USRDMA_IRQ_UNMASK;
		size = sizeof(arg.unmask);
		arg.unmask.flags = chance(90) ? 0 : (uint32_t)rnd();
	} else if (op < 95) {		/* GET_INFO */
		cmd = USRDMA_GET_INFO;
		size = sizeof(arg.info);
		if (chance(10))
			arg.info.reserved0 = 1;
	} else if (op < 96) {		/* RESET */
		cmd = USRDMA_RESET;
		size = sizeof(arg.reset);
		arg.reset.flags = chance(90) ? 0 : 1;
	} else if (op < 97) {		/* QUIESCED */
		cmd = USRDMA_QUIESCED;
		size = sizeof(arg.quiesced);
		arg.quiesced.flags = chance(90) ? 0 : (uint32_t)rnd();
	} else {			/* invalid command numbers */
		static const unsigned long bad[] = {
			_IOWR(USRDMA_IOCTL_TYPE, 0x0c, struct usrdma_reset),
			_IOWR(USRDMA_IOCTL_TYPE, 0xff, struct usrdma_map_user),
			_IO(USRDMA_IOCTL_TYPE, 0x05),
			_IOR(USRDMA_IOCTL_TYPE, 0x05, struct usrdma_map_user),
			_IOWR(USRDMA_IOCTL_TYPE, 0x05, uint64_t),
			_IOWR('V', 0x05, struct usrdma_map_user),
			0,
		};

		cmd = chance(70) ? bad[below(7)] : (unsigned long)(uint32_t)rnd();
		size = 64;
	}

	if (size) {
		uint32_t argsz = rand_argsz(size);

		arg.map.argsz = argsz;	/* argsz is the first field of all */
		if (argsz > size && argsz < 512 && chance(30))
			arg.bytes[size + below(argsz - size)] = 1;	/* non-zero tail */
		if (chance(3))
			argp = any_ptr(size);
	}
	ret = ioctl(fd, cmd, (unsigned long)argp);
	count(ret);
	if (ret || argp != (uintptr_t)&arg)
		return;

	/* Keep track of what was created, and keep it bounded. */
	if (cmd == USRDMA_MAP_USER) {
		if (nhandles < MAX_HANDLES)
			handles[nhandles++] = arg.map.handle;
		else
			do_unmap(arg.map.handle);
	} else if (cmd == USRDMA_UNMAP_USER) {
		forget_handle(arg.unmap.handle);
	} else if (cmd == USRDMA_ALLOC) {
		/* Big ones go at once: the guest has 1 GiB. */
		if (nbufs < MAX_BUFS && arg.alloc.size <= (16u << 20)) {
			bufs[nbufs] = arg.alloc.id;
			buf_off[nbufs] = arg.alloc.mmap_offset;
			buf_size[nbufs] = arg.alloc.size;
			buf_gen[nbufs] = arg.alloc.generation;
			nbufs++;
		} else {
			do_free(arg.alloc.id, arg.alloc.generation);
		}
	} else if (cmd == USRDMA_FREE && !(arg.free.flags & USRDMA_FREE_BY_NAME)) {
		forget_buf(arg.free.id, arg.free.generation);
	}
	if (nhandles > MAX_HANDLES / 2 && chance(20))
		do_unmap(handles[below(nhandles)]);
	if (nbufs > MAX_BUFS / 2 && chance(20)) {
		i = below(nbufs);
		do_free(bufs[i], buf_gen[i]);
	}
	if (nmaps && chance(5)) {
		i = below(nmaps);
		munmap(maps[i].p, maps[i].len);
		maps[i] = maps[--nmaps];
	}
}

/* ---- the racing thread ---------------------------------------------------- */

static volatile int racing;
static unsigned long race_calls, race_ok;

static void *racer(void *unused)
{
	uint64_t st = rng_state ^ 0x9e3779b97f4a7c15ull;
	int32_t rfds[2] = { efd[1], efd[2] };

	(void)unused;
	while (racing) {
		union {
			struct usrdma_unmap_user unmap;
			struct usrdma_sync sync;
			struct usrdma_dma_mask mask;
			struct usrdma_irq irq;
			struct usrdma_free free;
			struct usrdma_info info;
		} a;
		struct usrdma_buf_entry e[16];
		struct usrdma_list l;
		unsigned long cmd;
		unsigned int i;
		uint64_t r;
		int ret;

		st ^= st >> 12;
		st ^= st << 25;
		st ^= st >> 27;
		r = st * 0x2545F4914F6CDD1Dull;
		memset(&a, 0, sizeof(a));
		switch (r % 8) {
		case 0:
		case 1:
			cmd = USRDMA_UNMAP_USER;
			a.unmap.argsz = sizeof(a.unmap);
			a.unmap.handle = (uint32_t)(r >> 8) % 4096;
			break;
		case 2:
		case 3:
			cmd = USRDMA_SYNC;
			a.sync.argsz = sizeof(a.sync);
			a.sync.flags = 1 + (r >> 8) % 2;
			a.sync.handle = (uint32_t)(r >> 16) % 4096;
			a.sync.length = (r >> 32) % (8 * PAGE);
			break;
		case 4:
			cmd = USRDMA_SET_DMA_MASK;
			a.mask.argsz = sizeof(a.mask);
			a.mask.bits = 24 + (r >> 8) % 41;
			break;
		case 5:
			cmd = USRDMA_SET_IRQ;
			a.irq.argsz = sizeof(a.irq);
			a.irq.type = (r >> 8) % 3;
			a.irq.count = a.irq.type ? 1 : 0;
			a.irq.eventfds = (uintptr_t)rfds;
			break;
		case 6:
			/* A buffer the main thread may be using, found by LIST. */
			memset(&l, 0, sizeof(l));
			l.argsz = sizeof(l);
			l.capacity = 16;
			l.entries = (uintptr_t)e;
			l.entry_size = sizeof(e[0]);
			cmd = USRDMA_FREE;
			a.free.argsz = sizeof(a.free);
			if (ioctl(fd, USRDMA_LIST, &l) || !l.count) {
				a.free.id = 1 + (r >> 8) % 64;
				a.free.generation = 1 + (r >> 16) % 4096;
				break;
			}
			i = (r >> 8) % (l.count < 16 ? l.count : 16);
			if ((r >> 24) % 2 && e[i].name[0]) {
				a.free.flags = USRDMA_FREE_BY_NAME;
				memcpy(a.free.name, e[i].name, sizeof(a.free.name));
			} else {
				a.free.id = e[i].id;
				a.free.generation = e[i].generation;
			}
			break;
		default:
			cmd = USRDMA_GET_INFO;
			a.info.argsz = sizeof(a.info);
			break;
		}
		ret = ioctl(fd, cmd, &a);
		race_calls++;
		race_ok += !ret;
	}
	return NULL;
}

/* ---- clean-up and checks --------------------------------------------------- */

static int open_node(void)
{
	char path[64];

	snprintf(path, sizeof(path), "/dev/usrdma/%s", addr);
	return open(path, O_RDWR | O_CLOEXEC);
}

/* Turns bus mastering on through the config file (the module leaves it off). */
static int bus_master_on(void)
{
	char path[128];
	uint16_t cmd;
	int cfd, ok;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/config", addr);
	cfd = open(path, O_RDWR);
	if (cfd < 0)
		return 0;
	ok = pread(cfd, &cmd, 2, 4) == 2;
	cmd |= 0x4;
	ok = ok && pwrite(cfd, &cmd, 2, 4) == 2;
	close(cfd);
	return ok;
}

/*
 * edu cannot be reset, so what a closed file left (buffers, pinned pages)
 * is quarantined: a new open declares the device quiesced (bus mastering
 * is off after open) and the module frees it at once.
 */
static int drain_quarantine(void)
{
	struct usrdma_quiesced q = { .argsz = sizeof(q) };
	int f = open_node(), ok;

	if (f < 0) {
		printf("usrdma-fuzz: FAIL: reopen for QUIESCED: %s\n", strerror(errno));
		return 0;
	}
	ok = ioctl(f, USRDMA_QUIESCED, &q) == 0;
	if (!ok)
		printf("usrdma-fuzz: FAIL: QUIESCED: %s\n", strerror(errno));
	close(f);
	return ok;
}

/* Frees every buffer of the device (persistent ones survive close). */
static void free_all_buffers(int f)
{
	struct usrdma_buf_entry e[64];
	struct usrdma_list l;
	unsigned int i, n;

	do {
		memset(&l, 0, sizeof(l));
		l.argsz = sizeof(l);
		l.capacity = 64;
		l.entries = (uintptr_t)e;
		l.entry_size = sizeof(e[0]);
		if (ioctl(f, USRDMA_LIST, &l))
			return;
		n = l.count < 64 ? l.count : 64;
		for (i = 0; i < n; i++) {
			struct usrdma_free fr = {
				.argsz = sizeof(fr), .id = e[i].id,
				.generation = e[i].generation,
			};

			ioctl(f, USRDMA_FREE, &fr);
		}
	} while (l.count > 64);
}

static int leak_check(const char *when)
{
	static const char *keys[] = {
		"pinned_pages", "user_mappings", "bounce_bytes", "irqs", "opened", "buffers",
		"quarantine_buffers", "quarantine_bytes", "quarantine_pages",
	};
	int ok = drain_quarantine();
	unsigned int i;

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		long v = stat_get(addr, keys[i]);

		if (v != 0) {
			printf("usrdma-fuzz: FAIL: %s: usrdma_stats %s = %ld\n", when, keys[i], v);
			ok = 0;
		}
	}
	if (vmlck_kb() != 0) {
		printf("usrdma-fuzz: FAIL: %s: VmLck %ld kB\n", when, vmlck_kb());
		ok = 0;
	}
	return ok;
}

static void wr64(unsigned int off, uint64_t v)
{
	*(volatile uint64_t *)(bar + off) = v;
}

static int edu_dma(uint64_t src, uint64_t dst, uint64_t len, uint64_t cmd)
{
	uint64_t ram = (cmd & EDU_CMD_TO_RAM) ? dst : src;
	int i;

	if (ram + len > EDU_REACH || len >= 4096)
		return -1;
	wr64(EDU_DMA_SRC, src);
	wr64(EDU_DMA_DST, dst);
	wr64(EDU_DMA_COUNT, len);
	wr64(EDU_DMA_CMD, cmd | EDU_CMD_START);
	for (i = 0; i < 50000; i++) {
		if (!(*(volatile uint64_t *)(bar + EDU_DMA_CMD) & EDU_CMD_START))
			return 0;
		usleep(100);
	}
	return -1;
}

/* A sane DMA round trip and an MSI on a fresh open. */
static int sanity(void)
{
	struct usrdma_dma_mask mask = { .argsz = sizeof(mask), .bits = 28 };
	struct usrdma_alloc a = { .argsz = sizeof(a), .size = PAGE };
	struct usrdma_alloc b = { .argsz = sizeof(b), .size = PAGE };
	struct usrdma_map_user m;
	struct usrdma_unmap_user u = { .argsz = sizeof(u) };
	struct usrdma_irq irq = { .argsz = sizeof(irq), .type = USRDMA_IRQ_MSI, .count = 1 };
	struct pollfd pfd;
	uint8_t *src, *dst, *user;
	int32_t e = efd[0];
	uint64_t v;
	int f, ok = 1, i;

	f = open_node();
	if (f < 0) {
		printf("usrdma-fuzz: FAIL: reopen: %s\n", strerror(errno));
		return 0;
	}
	fd = f;
	bar = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f, USRDMA_BAR_OFFSET(0));
	if (bar == MAP_FAILED || !bus_master_on() || ioctl(f, USRDMA_SET_DMA_MASK, &mask) ||
	    ioctl(f, USRDMA_ALLOC, &a) || ioctl(f, USRDMA_ALLOC, &b)) {
		printf("usrdma-fuzz: FAIL: sanity setup: %s\n", strerror(errno));
		close(f);
		return 0;
	}
	src = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f, (off_t)a.mmap_offset);
	dst = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f, (off_t)b.mmap_offset);
	user = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src == MAP_FAILED || dst == MAP_FAILED || user == MAP_FAILED) {
		printf("usrdma-fuzz: FAIL: sanity mmap\n");
		close(f);
		return 0;
	}
	for (i = 0; i < (int)PAGE; i++)
		src[i] = (uint8_t)(i * 7 + 1);
	ok &= edu_dma(a.dma_addr, EDU_WINDOW, 3000, 0) == 0;
	ok &= edu_dma(EDU_WINDOW, b.dma_addr, 3000, EDU_CMD_TO_RAM) == 0;
	ok &= memcmp(src, dst, 3000) == 0;
	if (!ok)
		printf("usrdma-fuzz: FAIL: coherent round trip\n");

	/* User memory: device reads it, then writes it. */
	for (i = 0; i < (int)(2 * PAGE); i++)
		user[i] = (uint8_t)(i * 11 + 5);
	memset(&m, 0, sizeof(m));
	m.argsz = sizeof(m);
	m.flags = USRDMA_DIR_TO_DEVICE;
	m.addr = (uintptr_t)user + 1000;
	m.length = 3000;
	m.entries = (uintptr_t)entries;
	m.capacity = 4;
	if (ioctl(f, USRDMA_MAP_USER, &m)) {
		printf("usrdma-fuzz: FAIL: MAP_USER: %s\n", strerror(errno));
		ok = 0;
	} else {
		uint64_t woff = 0;

		for (i = 0; i < (int)m.count; i++) {
			ok &= edu_dma(entries[i].dma_addr, EDU_WINDOW + woff, entries[i].length, 0) == 0;
			woff += entries[i].length;
		}
		ok &= edu_dma(EDU_WINDOW, b.dma_addr, 3000, EDU_CMD_TO_RAM) == 0;
		ok &= memcmp(dst, user + 1000, 3000) == 0;
		u.handle = m.handle;
		ok &= ioctl(f, USRDMA_UNMAP_USER, &u) == 0;
		if (!ok)
			printf("usrdma-fuzz: FAIL: MAP_USER TO_DEVICE round trip\n");
	}
	ok &= edu_dma(a.dma_addr, EDU_WINDOW, 3000, 0) == 0;
	m.flags = USRDMA_DIR_FROM_DEVICE;
	m.count = m.handle = m.out_flags = 0;
	if (ioctl(f, USRDMA_MAP_USER, &m)) {
		printf("usrdma-fuzz: FAIL: MAP_USER FROM_DEVICE: %s\n", strerror(errno));
		ok = 0;
	} else {
		uint64_t woff = 0;

		for (i = 0; i < (int)m.count; i++) {
			ok &= edu_dma(EDU_WINDOW + woff, entries[i].dma_addr, entries[i].length,
				      EDU_CMD_TO_RAM) == 0;
			woff += entries[i].length;
		}
		u.handle = m.handle;
		ok &= ioctl(f, USRDMA_UNMAP_USER, &u) == 0;
		ok &= memcmp(user + 1000, src, 3000) == 0;
		if (!ok)
			printf("usrdma-fuzz: FAIL: MAP_USER FROM_DEVICE round trip\n");
	}

	/* An MSI. */
	while (read(efd[0], &v, sizeof(v)) == sizeof(v))
		;	/* drain (non-blocking) */
	irq.eventfds = (uintptr_t)&e;
	if (ioctl(f, USRDMA_SET_IRQ, &irq)) {
		printf("usrdma-fuzz: FAIL: SET_IRQ MSI: %s\n", strerror(errno));
		ok = 0;
	} else {
		*(volatile uint32_t *)(bar + EDU_IRQ_RAISE) = 1;
		pfd.fd = efd[0];
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 5000) != 1) {
			printf("usrdma-fuzz: FAIL: no MSI\n");
			ok = 0;
		}
		*(volatile uint32_t *)(bar + EDU_IRQ_ACK) = *(volatile uint32_t *)(bar + EDU_IRQ_STATUS);
	}
	free_all_buffers(f);
	munmap(src, PAGE);
	munmap(dst, PAGE);
	munmap(user, 2 * PAGE);
	munmap((void *)bar, PAGE);
	close(f);
	return ok;
}

int main(int argc, char **argv)
{
	struct timespec t0, t1;
	pthread_t race_thread;
	unsigned long n, i;
	uint64_t seed;
	int ok, e;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: usrdma-fuzz ADDR N [SEED]\n");
		return 2;
	}
	addr = argv[1];
	n = strtoul(argv[2], NULL, 0);
	seed = argc == 4 ? strtoull(argv[3], NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
	rng_state = seed ? seed : 1;
	printf("usrdma-fuzz: %s, %lu ioctls, seed %llu\n", addr, n, (unsigned long long)seed);

	fd = open_node();
	if (fd < 0) {
		printf("usrdma-fuzz: open: %s\n", strerror(errno));
		return 1;
	}
	rw = mmap(NULL, RW_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ro = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	hole = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	bar = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, USRDMA_BAR_OFFSET(0));
	if (rw == MAP_FAILED || ro == MAP_FAILED || hole == MAP_FAILED || bar == MAP_FAILED) {
		printf("usrdma-fuzz: mmap: %s\n", strerror(errno));
		return 1;
	}
	munmap(hole, PAGE);
	memset(rw, 0x77, RW_PAGES * PAGE);
	for (i = 0; i < NEFD; i++)
		efd[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	{
		struct sigaction sa = { .sa_handler = on_sigbus };

		sigaction(SIGBUS, &sa, NULL);
	}

	clock_gettime(CLOCK_MONOTONIC, &t0);
	racing = 1;
	if (pthread_create(&race_thread, NULL, racer, NULL)) {
		printf("usrdma-fuzz: pthread_create failed\n");
		return 1;
	}
	while (calls < n && !revoked)
		fuzz_one();
	racing = 0;
	pthread_join(race_thread, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);

	/* Clean up what is known; close takes the rest. */
	while (nhandles)
		if (do_unmap(handles[nhandles - 1]))
			forget_handle(handles[nhandles - 1]);
	{
		struct usrdma_irq irq = { .argsz = sizeof(irq), .type = USRDMA_IRQ_NONE };

		ioctl(fd, USRDMA_SET_IRQ, &irq);
	}
	free_all_buffers(fd);
	for (i = 0; i < nmaps; i++)
		munmap(maps[i].p, maps[i].len);
	munmap((void *)bar, PAGE);
	close(fd);
	if (revoked) {
		printf("usrdma-fuzz: the device was revoked (ENODEV) after %lu ioctls; VmLck %ld kB\n",
		       calls, vmlck_kb());
		printf("usrdma-fuzz: FAILED\n");
		return 1;
	}
	ok = leak_check("after close");

	ok &= sanity();
	ok &= leak_check("after the sanity check");

	printf("usrdma-fuzz: %lu ioctls in %.1f s, ", calls,
	       (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	printf("ok %lu", counts[0]);
	for (e = 1; e < 256; e++)
		if (counts[e])
			printf(", %s %lu", e == 255 ? "other" : strerrorname_np(e), counts[e]);
	printf("\n");
	printf("usrdma-fuzz: racing thread: %lu ioctls, %lu succeeded; %lu touches of buffer mappings, %lu SIGBUS\n",
	       race_calls, race_ok, touches, sigbus);
	printf("usrdma-fuzz: %s\n", ok ? "PASSED" : "FAILED");
	return ok ? 0 : 1;
}
