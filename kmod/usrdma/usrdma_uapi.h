/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * usrdma_uapi.h - the ioctl ABI of the usrdma kernel module.
 *
 * This header is the single definition of the ABI: the module includes it,
 * user space (C directly, Rust through generated or mirrored definitions
 * checked against it) uses it as is. It depends only on <linux/types.h>
 * and <linux/ioctl.h>.
 *
 * Every structure starts with __u32 argsz (the size of the structure as
 * the caller knows it) and __u32 flags. The kernel accepts any argsz from
 * the version-1 size up to a page: a shorter structure is rejected with
 * EINVAL, a longer one must have all bytes past the end the kernel knows
 * set to zero (E2BIG otherwise, and for more than a page). Fields past a
 * shorter (older) caller's argsz read as zero. Output is written only up
 * to argsz. The request numbers encode the version-1 sizes
 * (USRDMA_*_SIZE_V1 where a structure has grown since) and never change.
 * Unknown flags and non-zero reserved fields are rejected with EINVAL. Every size is in bytes,
 * every device address is what the device puts on the bus (an IOVA; without
 * an IOMMU a physical address). No kernel virtual address is ever reported.
 *
 * Node: /dev/usrdma/DDDD:BB:DD.F, one per PCI function bound to usrdma.
 * Opening needs CAP_SYS_RAWIO, and fails with EPERM when the kernel is locked
 * down (LOCKDOWN_PCI_ACCESS, version 5); one open file per function at a
 * time (EBUSY).
 * Open enables the function with bus mastering off and resets it when it
 * has a reset method; the opener turns bus mastering on (PCI_COMMAND, bit
 * 2, through /sys/bus/pci/devices/ADDR/config) once it has stopped
 * whatever a previous owner left running in the device, and then declares
 * that with USRDMA_QUIESCED.
 *
 * Release (the last reference to the file) stops DMA, frees the
 * interrupts and resets the function if it can. If it could not be reset,
 * a transfer the owner started may still land once bus mastering is on
 * again, so the owner's non-persistent buffers and user mappings are
 * quarantined rather than freed: they are freed at the next successful
 * reset (USRDMA_RESET, or the reset at the next open or release), at
 * USRDMA_QUIESCED, or once bus mastering has stayed off for the module
 * parameter quarantine_ms (default 1000, at most 60000) after the release;
 * an opener that turns bus mastering on without USRDMA_QUIESCED keeps
 * them quarantined until its own release. Unbind and unload wait out the
 * rest of that time and free everything.
 *
 * mmap offsets of the node:
 *   BAR n (0..5):  USRDMA_BAR_OFFSET(n), length up to the BAR's size
 *   buffer:        the mmap_offset returned by ALLOC and LIST
 * Mappings must be MAP_SHARED. After FREE, accesses to a buffer's mappings
 * get SIGBUS. After revocation (unbind, hot-unplug), accesses to any mapping
 * of the node read all-ones from a dummy page instead (writes go there too,
 * and, since version 5, that page is the mapping's own: other mappings keep
 * reading all-ones), so that a driver that has not yet seen the revocation
 * does not crash.
 */
#ifndef _UAPI_USRDMA_H
#define _UAPI_USRDMA_H

#include <linux/types.h>
#include <linux/ioctl.h>

/*
 * 2: buffer generations (ALLOC and LIST report them, FREE by id needs
 * one); FREE by name only of persistent buffers that are not mapped;
 * LIST entry_size.
 * 3: bus mastering is off after open (turn it on through the config file
 * in sysfs); open and release reset the function where it can be reset;
 * a released owner's memory is quarantined while a device that could not
 * be reset may still write it; QUIESCED. Every version-2 call works as
 * before.
 * 4: at revocation each eventfd is signalled once (1, as an interrupt)
 * instead of getting USRDMA_IRQ_REVOKED; a waiter tells revocation by the
 * node hanging up (EPOLLHUP), which it does before the eventfds are
 * signalled. Every version-3 call works as before.
 * 5: GET_INFO reports max_buf_size (the largest buffer ALLOC can give on
 * this kernel) and info_flags, and ALLOC refuses larger sizes with EINVAL;
 * MAP_USER refuses shared mappings of regular files with EINVAL and
 * USRDMA_MAP_NOT_PINNABLE in out_flags; RESET removes the BAR mappings
 * first (the next access faults them in again after the reset); release
 * leaves INTx masked; open fails with EPERM under lockdown; unbind waits
 * for the ioctls in progress; after revocation each mapping gets its own
 * dead page. Every version-4 call works as before.
 */
#define USRDMA_API_VERSION	5

#define USRDMA_IOCTL_TYPE	0xDA

#define USRDMA_NAME_LEN		32	/* including the terminating NUL */

/* mmap offsets */
#define USRDMA_BAR_SHIFT	40
#define USRDMA_BAR_OFFSET(n)	((__u64)(n) << USRDMA_BAR_SHIFT)
#define USRDMA_BUF_OFFSET_BASE	((__u64)8 << USRDMA_BAR_SHIFT)

/* usrdma_info.info_flags */
#define USRDMA_INFO_CMA		(1u << 0)	/* large buffers come from a CMA area */

/*
 * USRDMA_GET_INFO: describe the device and the API.
 * out: api_version, pci_domain/bus/devfn, dma_mask_bits, num_buffers
 * (buffers on this device, all owners), bar_size[6] (0: no memory BAR),
 * max_buf_size (version 5: the largest buffer ALLOC can give; without an
 * IOMMU and without CMA, one block of the page allocator, 4 MiB on x86;
 * larger DMA memory is the caller's own, e.g. hugetlb pages, mapped with
 * MAP_USER) and info_flags (version 5: USRDMA_INFO_*). A version-4
 * module leaves both 0 (its limit was 1 GiB on paper, 4 MiB in practice).
 */
struct usrdma_info {
	__u32 argsz;
	__u32 flags;		/* in: 0 */
	__u32 api_version;	/* out: USRDMA_API_VERSION */
	__u32 pci_domain;	/* out */
	__u8  pci_bus;		/* out */
	__u8  pci_devfn;	/* out */
	__u16 reserved0;	/* in: 0 */
	__u32 dma_mask_bits;	/* out: the current DMA mask */
	__u32 num_buffers;	/* out */
	__u32 reserved1;	/* in: 0 */
	__u64 bar_size[6];	/* out: size of each memory BAR that can be mapped */
	__u64 max_buf_size;	/* out (version 5) */
	__u32 info_flags;	/* out: USRDMA_INFO_* (version 5) */
	__u32 reserved2;	/* in: 0 (version 5) */
};

#define USRDMA_INFO_SIZE_V1	80

/*
 * USRDMA_SET_DMA_MASK: the number of address bits the device can drive
 * (12..64). The default after open is 32. New buffers get device
 * addresses below 2^bits. EBUSY when a buffer or a user mapping
 * (USRDMA_MAP_USER) of this device lies above the new mask; EIO when the
 * platform cannot honour the mask.
 */
struct usrdma_dma_mask {
	__u32 argsz;
	__u32 flags;		/* in: 0 */
	__u32 bits;		/* in */
	__u32 reserved;		/* in: 0 */
};

/* usrdma_alloc.flags */
#define USRDMA_BUF_WC		(1u << 0)	/* write-combining CPU mapping */
#define USRDMA_BUF_PERSISTENT	(1u << 1)	/* survives close; freed by FREE, unbind or unload */
#define USRDMA_BUF_FLAGS	(USRDMA_BUF_WC | USRDMA_BUF_PERSISTENT)

/*
 * USRDMA_ALLOC: a coherent DMA buffer. size is rounded up to whole pages
 * (at most GET_INFO's max_buf_size, EINVAL above it; at most 1 GiB in any
 * case; ENOMEM when no such block is free below the DMA mask). name is a NUL-terminated printable string, unique per
 * device (EEXIST), or empty for an anonymous buffer. Non-persistent buffers
 * are freed when the file is released (close of the last reference, or
 * process death).
 *
 * generation is unique among all buffers the device ever had while bound
 * (never 0): ids are reused lowest-first after FREE, generations are not.
 * FREE by id needs it, so that a stale id cannot free a newer buffer.
 */
struct usrdma_alloc {
	__u32 argsz;
	__u32 flags;		/* in: USRDMA_BUF_* */
	__u64 size;		/* in: requested; out: allocated (page multiple) */
	char  name[USRDMA_NAME_LEN];	/* in */
	__u32 id;		/* in: 0; out: non-zero */
	__u32 reserved;		/* in: 0 */
	__u64 dma_addr;		/* in: 0; out: device address */
	__u64 mmap_offset;	/* in: 0; out: offset to mmap the buffer at */
	__u64 generation;	/* in: 0; out: non-zero (version 2) */
};

#define USRDMA_ALLOC_SIZE_V1	72

/* usrdma_free.flags */
#define USRDMA_FREE_BY_NAME	(1u << 0)	/* use name, not id */

/*
 * USRDMA_FREE: free a buffer by id and generation, or by name with
 * USRDMA_FREE_BY_NAME. ENOENT when there is no such buffer.
 *
 * By id (the opener freeing its own buffer): generation must be the one
 * ALLOC or LIST reported (EINVAL for 0, so a version-1 caller cannot free
 * by id); ESTALE when the id now names another, newer buffer (the one
 * asked for is gone). The buffer's mappings of the node are removed first
 * (later accesses get SIGBUS).
 *
 * By name (the way to free a persistent buffer an earlier opener left):
 * EPERM when the buffer is not persistent (it belongs to the open file:
 * free it by id, or it goes at release); EBUSY while any process has it
 * mapped (an mmap of the node over it, however split, moved or inherited
 * by fork, that is not yet unmapped).
 */
struct usrdma_free {
	__u32 argsz;
	__u32 flags;		/* in: USRDMA_FREE_* */
	__u32 id;		/* in, without USRDMA_FREE_BY_NAME (else 0) */
	__u32 reserved;		/* in: 0 */
	char  name[USRDMA_NAME_LEN];	/* in, with USRDMA_FREE_BY_NAME (else all 0) */
	__u64 generation;	/* in, without USRDMA_FREE_BY_NAME (else 0) (version 2) */
};

#define USRDMA_FREE_SIZE_V1	48

/* One buffer, as reported by USRDMA_LIST. */
struct usrdma_buf_entry {
	__u32 id;
	__u32 flags;		/* USRDMA_BUF_* */
	__u64 size;
	__u64 dma_addr;
	__u64 mmap_offset;
	__s32 owner_pid;	/* allocating process, in the caller's pid namespace; 0 if not visible */
	__u32 reserved;
	char  name[USRDMA_NAME_LEN];
	__u64 generation;	/* as ALLOC reported it (version 2) */
};

#define USRDMA_BUF_ENTRY_SIZE_V1	72

/*
 * USRDMA_LIST: the buffers of this device. in: capacity (entries the
 * array at entries can hold), entries (user pointer), entry_size (the size
 * of one entry as the caller knows it: 0 for the version-1 size, else a
 * multiple of 8 from that size up to a page; EINVAL otherwise). out: count
 * (all buffers; only min(count, capacity) entries are written, each one
 * entry_size bytes apart, with the bytes past the entry the kernel knows
 * cleared).
 */
struct usrdma_list {
	__u32 argsz;
	__u32 flags;		/* in: 0 */
	__u32 capacity;		/* in */
	__u32 count;		/* in: 0; out */
	__u64 entries;		/* in: pointer to capacity entries of entry_size bytes */
	__u32 entry_size;	/* in (version 2) */
	__u32 reserved;		/* in: 0 (version 2) */
};

#define USRDMA_LIST_SIZE_V1	24

/* usrdma_map_user.flags: the direction (at least one bit) */
#define USRDMA_DIR_TO_DEVICE	(1u << 0)	/* the device reads the memory */
#define USRDMA_DIR_FROM_DEVICE	(1u << 1)	/* the device writes the memory */
#define USRDMA_DIR_MASK		(USRDMA_DIR_TO_DEVICE | USRDMA_DIR_FROM_DEVICE)

/* One run of device addresses, as reported by USRDMA_MAP_USER. */
struct usrdma_sg_entry {
	__u64 dma_addr;
	__u64 length;
};

/* usrdma_map_user.out_flags */
#define USRDMA_MAP_BOUNCED	(1u << 0)	/* the device sees a bounce buffer */
/* with EINVAL (version 5): the memory may not be pinned for the long term */
#define USRDMA_MAP_NOT_PINNABLE	(1u << 1)

/*
 * USRDMA_MAP_USER: map the caller's memory [addr, addr + length) for DMA
 * in the direction of flags. The pages are pinned (FOLL_LONGTERM, and
 * FOLL_WRITE when the device writes) and mapped under the device's DMA
 * mask. When a page lies above the mask the whole range is bounced
 * instead: the device gets one coherent buffer below the mask, and the
 * data moves at USRDMA_SYNC (and, for FROM_DEVICE, at USRDMA_UNMAP_USER);
 * out_flags then has USRDMA_MAP_BOUNCED. The caller's bytes are copied
 * into the bounce buffer at USRDMA_MAP_USER in every direction, so that
 * bytes the device does not write come back unchanged; the pages of a
 * bounced range are not kept pinned. Bounced data moves only in the
 * address space that made the mapping (see USRDMA_SYNC). Pinned pages
 * count against RLIMIT_MEMLOCK unless the caller has CAP_IPC_LOCK (ENOMEM
 * past it).
 *
 * The entries cover exactly the caller's bytes, in order: the first starts
 * at the device address of addr. capacity must be at least the number of
 * pages the range touches (EINVAL otherwise, with count set to that number
 * and nothing mapped). out: handle (non-zero), count (entries written).
 * EFAULT for an address that is not mapped (or not pinnable: device or
 * usrdma mappings); EINVAL for length 0, an overflowing range, more than
 * 1 GiB or entries 0; ENOSPC past 65536 mappings per open file.
 *
 * Only memory that no file system writes back can be mapped (version 5):
 * anonymous memory, shmem (tmpfs, memfd, SysV shm, MAP_SHARED|
 * MAP_ANONYMOUS), hugetlb pages, and private mappings of files. A shared
 * mapping of a regular file (ext4, ramfs, ...) gets EINVAL with
 * USRDMA_MAP_NOT_PINNABLE in out_flags (out_flags is written back).
 */
struct usrdma_map_user {
	__u32 argsz;
	__u32 flags;		/* in: USRDMA_DIR_* */
	__u64 addr;		/* in: user address of the first byte */
	__u64 length;		/* in: bytes */
	__u64 entries;		/* in: pointer to struct usrdma_sg_entry[capacity] */
	__u32 capacity;		/* in */
	__u32 count;		/* in: 0; out */
	__u32 handle;		/* in: 0; out */
	__u32 out_flags;	/* in: 0; out: USRDMA_MAP_* */
};

/*
 * USRDMA_UNMAP_USER: undo USRDMA_MAP_USER by handle (ENOENT if unknown).
 * A bounced FROM_DEVICE mapping is copied back to the caller's memory
 * first (skipped when that memory is gone, or when called from another
 * address space than the mapper's); the pages are unpinned (and marked
 * dirty when the device wrote). Closing the file unmaps what is left
 * without copying back.
 */
struct usrdma_unmap_user {
	__u32 argsz;
	__u32 flags;		/* in: 0 */
	__u32 handle;		/* in */
	__u32 reserved;		/* in: 0 */
};

/* usrdma_sync.flags: exactly one of FOR_CPU / FOR_DEVICE, optionally BUFFER */
#define USRDMA_SYNC_FOR_CPU	(1u << 0)	/* before the CPU reads what the device wrote */
#define USRDMA_SYNC_FOR_DEVICE	(1u << 1)	/* before the device reads what the CPU wrote */
#define USRDMA_SYNC_BUFFER	(1u << 2)	/* handle is a buffer id (coherent: only checked) */

/*
 * USRDMA_SYNC: hand [offset, offset + length) of a mapping (or buffer)
 * to the CPU or to the device: dma_sync_sg_for_cpu/device, or the copy of
 * a bounced mapping (FOR_DEVICE: caller's memory to the bounce buffer;
 * FOR_CPU, for FROM_DEVICE mappings: back). EINVAL when the range is
 * outside it (length 0 is a valid no-op), ENOENT when the handle is
 * unknown, EFAULT when the caller's memory of a bounced mapping is gone,
 * EPERM for a bounced mapping from another address space than the
 * mapper's (after fork()).
 */
struct usrdma_sync {
	__u32 argsz;
	__u32 flags;		/* in: USRDMA_SYNC_* */
	__u32 handle;		/* in */
	__u32 reserved;		/* in: 0 */
	__u64 offset;		/* in */
	__u64 length;		/* in */
};

/* usrdma_irq.type */
#define USRDMA_IRQ_NONE		0	/* disable interrupts */
#define USRDMA_IRQ_INTX		1	/* legacy line: count 1, masked by the handler */
#define USRDMA_IRQ_MSI		2	/* count 1..32 vectors */
#define USRDMA_IRQ_MSIX		3	/* count 1..2048 vectors */

/*
 * USRDMA_SET_IRQ: signal one eventfd per vector. Replaces any earlier
 * setting (type NONE with count 0 just disables). An INTx interrupt is
 * masked at the device (PCI_COMMAND_INTX_DISABLE) before its eventfd is
 * signalled, as uio_pci_generic does; USRDMA_IRQ_UNMASK unmasks it. EINVAL
 * when the device has no such interrupt or not that many vectors; EBADF or
 * EINVAL for a bad eventfd. These argument errors change nothing; a
 * failure while setting up leaves interrupts disabled.
 * On revocation (unbind, hot-unplug) the node is marked gone (poll on it
 * reports EPOLLHUP | EPOLLERR, ioctls fail with ENODEV), then each eventfd
 * is signalled once (1, as an interrupt; EFD_SEMAPHORE eventfds work), so
 * that a waiter wakes up. To tell revocation from an interrupt, wait with
 * the node in the same poll set as the eventfds, or poll the node with
 * timeout 0 after a wake-up: EPOLLHUP means the device is gone.
 */
/*
 * API version 3 added this to each eventfd at revocation; since version 4
 * nothing does (kept so that version-3 sources still compile).
 */
#define USRDMA_IRQ_REVOKED	(1ULL << 48)

struct usrdma_irq {
	__u32 argsz;
	__u32 flags;		/* in: 0 */
	__u32 type;		/* in: USRDMA_IRQ_* */
	__u32 count;		/* in: vectors (0 with NONE) */
	__u64 eventfds;		/* in: pointer to __s32[count] */
};

/*
 * USRDMA_IRQ_UNMASK: unmask INTx after handling it (EINVAL unless INTx).
 * If the device still asserts INTx it stays masked and the eventfd is
 * signalled again.
 */
struct usrdma_irq_unmask {
	__u32 argsz;
	__u32 flags;		/* in: 0 */
};

/*
 * USRDMA_RESET: reset the function (pci_try_reset_function: the config
 * space is saved and restored). ENOTTY when it has no reset method,
 * EAGAIN when the device is busy. A reset frees the quarantine.
 */
struct usrdma_reset {
	__u32 argsz;
	__u32 flags;		/* in: 0 */
};

/*
 * USRDMA_QUIESCED (version 3): the caller declares that nothing a previous
 * owner started is still running in the device (it stopped or drained the
 * device's engines while bus mastering was off). The memory the module
 * quarantined for the device is freed at once. EBUSY while bus mastering
 * is on (declare it before turning bus mastering on); 0 when nothing was
 * quarantined.
 */
struct usrdma_quiesced {
	__u32 argsz;
	__u32 flags;		/* in: 0 */
};

/*
 * Read-only sysfs attributes on the PCI device (/sys/bus/pci/devices/ADDR/),
 * for tools that must not take the single open; they exist while the
 * device is bound to usrdma and describe that device:
 *   usrdma_buffers  (mode 0400) one line per buffer, space-separated:
 *                   id name size dma_addr flags owner_pid
 *                   (name "-" when empty, otherwise with space, backslash,
 *                   bytes outside printable ASCII and a lone "-" written
 *                   as \ooo octal; size, dma_addr, flags in 0x hex;
 *                   owner_pid in the initial pid namespace, 0 when gone;
 *                   at most one page: the lines that fit)
 *   usrdma_stats    one "key value" line each (decimal): opened (0/1),
 *                   buffers, buffer_bytes, user_mappings, pinned_pages,
 *                   bounce_bytes, irqs (vectors set up), irq_count
 *                   (interrupts signalled since the device was bound),
 *                   quarantine_buffers, quarantine_bytes (buffers and
 *                   bounce buffers), quarantine_pages (pinned user pages):
 *                   what released owners left that is not freed yet (not
 *                   in the counts before them)
 */

#define USRDMA_GET_INFO		_IOC(_IOC_READ | _IOC_WRITE, USRDMA_IOCTL_TYPE, 0x00, USRDMA_INFO_SIZE_V1)
#define USRDMA_SET_DMA_MASK	_IOWR(USRDMA_IOCTL_TYPE, 0x01, struct usrdma_dma_mask)
/* The structures that grew since version 1 keep their version-1 numbers. */
#define USRDMA_IOWR_V1(nr, size) \
	_IOC(_IOC_READ | _IOC_WRITE, USRDMA_IOCTL_TYPE, (nr), (size))
#define USRDMA_ALLOC		USRDMA_IOWR_V1(0x02, USRDMA_ALLOC_SIZE_V1)
#define USRDMA_FREE		USRDMA_IOWR_V1(0x03, USRDMA_FREE_SIZE_V1)
#define USRDMA_LIST		USRDMA_IOWR_V1(0x04, USRDMA_LIST_SIZE_V1)
#define USRDMA_MAP_USER		_IOWR(USRDMA_IOCTL_TYPE, 0x05, struct usrdma_map_user)
#define USRDMA_UNMAP_USER	_IOWR(USRDMA_IOCTL_TYPE, 0x06, struct usrdma_unmap_user)
#define USRDMA_SYNC		_IOWR(USRDMA_IOCTL_TYPE, 0x07, struct usrdma_sync)
#define USRDMA_SET_IRQ		_IOWR(USRDMA_IOCTL_TYPE, 0x08, struct usrdma_irq)
#define USRDMA_IRQ_UNMASK	_IOWR(USRDMA_IOCTL_TYPE, 0x09, struct usrdma_irq_unmask)
#define USRDMA_RESET		_IOWR(USRDMA_IOCTL_TYPE, 0x0a, struct usrdma_reset)
#define USRDMA_QUIESCED		_IOWR(USRDMA_IOCTL_TYPE, 0x0b, struct usrdma_quiesced)

#endif /* _UAPI_USRDMA_H */
