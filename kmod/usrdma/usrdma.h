/* SPDX-License-Identifier: GPL-2.0 */
/*
 * usrdma - DMA for user-space PCI drivers on machines without an IOMMU.
 *
 * A PCI driver that binds only through driver_override. Each bound function
 * gets a node /dev/usrdma/DDDD:BB:DD.F. Its single opener (CAP_SYS_RAWIO)
 * can map the device's memory BARs, set the DMA mask, allocate named
 * coherent DMA buffers that it maps through the same file, map its own
 * memory for DMA (pinned, or bounced when it lies above the DMA mask) and
 * receive interrupts through eventfds. The ABI is in usrdma_uapi.h.
 *
 * Locking: usrdma_dev.lock protects everything in usrdma_dev after probe
 * (the statistics that interrupt handlers and unlocked paths update are
 * atomics). No user memory is touched while it is held (mmap and page
 * faults on the node's mappings run with mmap_lock held and then take the
 * device lock, so the reverse order would deadlock): ioctls copy their
 * arguments in, take the lock, work, drop it and copy out. For the same
 * reason pinning, accounting of locked memory (mmap_lock of the pinning
 * mm) and the copies of bounced mappings happen outside the lock, and so
 * does unpinning when mappings are freed (release, remove, the
 * quarantine's end). The quarantine work takes the lock itself; remove()
 * waits for the grace and cancels the work without holding it.
 *
 * Each buffer counts the vmas of the node that map it (usrdma_buf.mmaps,
 * under the lock): mmap adds one, vm_operations open (a vma split, moved
 * by mremap or copied by fork) adds one, close removes one. A vma finds its
 * buffer by its mmap offset, which is never reused, so a vma that outlives
 * its buffer (freed by id) finds none. FREE by name refuses a buffer that
 * any vma maps; FREE by id (the opener's own buffer) removes the PTEs.
 *
 * Mappings of the node (BARs, buffers) are filled in at the first fault,
 * under the lock, with vmf_insert_pfn_prot(), never at mmap time: mmap()
 * links the new vma into the file's mappings only after ->mmap returns, so
 * a FREE in between would miss PTEs made there and leave freed pages
 * mapped; and remap_pfn_range() marks the vma VM_PAT, which makes a zap
 * racing with munmap() of the same vma WARN in untrack_pfn() (6.1).
 *
 * User mappings (struct usrdma_map) live in the xarray ud->maps, which
 * holds one reference. The DMA mapping of pinned pages is created under
 * the lock and removed under it by UNMAP_USER; mappings detached at
 * release or remove keep it until they are freed. Unpinning,
 * un-accounting (with the mapper's mm, held by mmgrab) and freeing happen
 * when the last reference goes, outside the lock. Bounced mappings take
 * an extra reference while their data is copied outside the lock.
 *
 * Bus mastering is off from open until user space turns it on (a write
 * of PCI_COMMAND through the config file in sysfs, which the PCI core
 * serves without telling the module): a driver first stops whatever a
 * previous owner left queued in the device, then allows DMA.
 *
 * Reset: open resets the function where it has a reset method
 * (pci_try_reset_function(); reset_works records whether that worked) and
 * saves its state; release loads that state, resets again and writes the
 * state back, as vfio-pci does, so that nothing a dead owner queued is
 * left in a device that can be reset. RESET first removes the PTEs of the
 * open file's BAR mappings (unmap_mapping_range on ud->mapping) under the
 * lock it resets under: a fault on them takes the lock too, so no access
 * reaches the function mid-reset (CVE-2020-12888 in vfio-pci). Release
 * leaves INTx masked, with no handler.
 *
 * Quarantine: a device that cannot be reset (QEMU's edu has no reset at
 * all) may still hold a transfer the released owner started, which lands
 * the moment bus mastering is on again. Release (and remove) therefore
 * does not give that owner's memory back to the kernel: its
 * non-persistent buffers (usrdma_buf, unlinked from ud->bufs) and its
 * user mappings (usrdma_map, pinned pages or bounce buffer, still DMA
 * mapped) move to ud->q. They are freed when the device is reset (RESET,
 * the reset at the next open or release), when an opener declares the
 * device quiesced (QUIESCED, only while bus mastering is off), or when
 * bus mastering has been off for quarantine_ms since the last release or
 * remove (the grace). Bus mastering is sampled (the module cannot see the
 * write itself): at every ioctl while a quarantine is pending, and by
 * ud->q.work every USRDMA_QUARANTINE_TICK_MS of the grace. Seen on while
 * a file is open, the grace stops (q.mastered) until that owner's
 * release, a reset or QUIESCED; seen on with no file open, it starts
 * again. remove() waits out what is left of the grace (the device is
 * disabled, so bus mastering stays off) and frees the quarantine, with
 * every buffer, persistent ones too, when an owner was open or a
 * quarantine was pending; nothing outlives the binding.
 *
 * Lifetimes: usrdma_dev is reference counted; probe holds one reference,
 * each open file another. Every ioctl counts itself in ud->users for its
 * whole run (usrdma_enter), and the copies of bounced data stop between
 * their 1 MiB pieces once the device is dead. remove() unregisters the
 * node, marks the device dead, waits for the ioctls in progress (they may
 * hold the last reference of a mapping, whose freeing calls the DMA API),
 * removes the open file's mappings, stops DMA, frees the interrupts
 * (signalling each eventfd once so that waiters wake up), quarantines or
 * frees the user mappings and buffers and waits out the quarantine as
 * above; the open file then only gets ENODEV and EPOLLHUP until it is
 * closed. The quarantine work never runs past remove(), which cancels it.
 */

/* What the module's source files share: limits, structures, functions. */

#ifndef USRDMA_H
#define USRDMA_H

#include <linux/atomic.h>
#include <linux/dma-mapping.h>
#include <linux/err.h>
#include <linux/eventfd.h>
#include <linux/idr.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/pci.h>
#include <linux/refcount.h>
#include <linux/scatterlist.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <linux/types.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>

#include "usrdma_uapi.h"
#include "compat.h"	/* generated by the Makefile's feature probes */

#define USRDMA_DEFAULT_MASK_BITS	32
#define USRDMA_MAX_BUF_SIZE		(1ULL << 30)
#define USRDMA_MAX_BUFFERS		4096
#define USRDMA_MAX_MAP_SIZE		(1ULL << 30)
#define USRDMA_MAX_MAPPINGS		65536
/* Copies of bounced mappings go in pieces of this size, rescheduling between. */
#define USRDMA_COPY_CHUNK		SZ_1M
/* Largest argsz accepted; larger structures are not going to happen. */
#define USRDMA_MAX_ARGSZ		PAGE_SIZE
/*
 * Allocations whose size the caller chooses (up to 1 GiB): fail with ENOMEM
 * rather than warn or invoke the OOM killer.
 */
#define USRDMA_GFP_USER_SIZED	(GFP_KERNEL | __GFP_NOWARN | __GFP_RETRY_MAYFAIL)
/* The quarantine's grace: quarantine_ms (module parameter), at most this. */
#define USRDMA_QUARANTINE_DEFAULT_MS	1000
#define USRDMA_QUARANTINE_MAX_MS	60000
/* How often bus mastering is sampled during the grace. */
#define USRDMA_QUARANTINE_TICK_MS	10

struct usrdma_buf {
	struct list_head node;
	u32 id;
	u32 flags;		/* USRDMA_BUF_* */
	u64 seq;		/* unique for the device's lifetime: the generation */
	size_t size;		/* page multiple */
	void *cpu_addr;
	dma_addr_t dma_addr;
	unsigned long attrs;
	bool decrypted;		/* memory encryption: shared with the device */
	u64 offset;		/* mmap offset, bytes */
	struct pid *owner;
	unsigned int mmaps;	/* vmas of the node mapping it, every process */
	char name[USRDMA_NAME_LEN];
};

/*
 * One USRDMA_MAP_USER mapping: pinned pages mapped through the DMA API, or
 * (bounced) a coherent buffer below the DMA mask standing in for them.
 */
struct usrdma_map {
	struct list_head dead_node;	/* on a list of detached mappings */
	refcount_t ref;
	u32 handle;
	u32 dir;			/* USRDMA_DIR_* */
	u64 seq;
	u64 addr;			/* the caller's first byte */
	u64 length;
	unsigned long npages;		/* pages [addr, addr + length) touches */
	struct mm_struct *mm;		/* the mapper's (mmgrab) */

	/* pinned */
	struct page **pages;
	unsigned long npinned;
	bool accounted;			/* npages in mm->locked_vm */
	struct sg_table sgt;
	bool dma_mapped;
	bool dirty;			/* the device may have written the pages */

	/* bounced */
	void *bounce;
	dma_addr_t bounce_dma;
	size_t bounce_size;

	bool counted;			/* in the statistics */
};

/* One interrupt vector bound to an eventfd. */
struct usrdma_vec {
	struct usrdma_dev *ud;
	struct eventfd_ctx *trigger;
	int irq;
	bool requested;
	char name[48];
};

/*
 * Memory of released owners the device may still write (see the top of
 * this file). Everything here is under usrdma_dev.lock; pending is also
 * read without it, as a hint.
 */
struct usrdma_quarantine {
	struct list_head bufs;	/* struct usrdma_buf, by node */
	struct list_head maps;	/* struct usrdma_map, by dead_node */
	unsigned int nbufs;
	u64 bytes;		/* buffers and bounce buffers */
	unsigned long pages;	/* pinned user pages */
	bool pending;		/* anything in bufs or maps */
	unsigned long since;	/* jiffies: the grace runs from here */
	bool mastered;		/* bus mastering seen on by an open owner */
	struct delayed_work work;	/* samples, ends the grace */
};

struct usrdma_dev {
	struct kref ref;
	struct mutex lock;
	struct pci_dev *pdev;
	struct miscdevice misc;
	char name[32];		/* misc name: usrdma-DDDD:BB:DD.F */
	char nodename[32];	/* usrdma/DDDD:BB:DD.F */
	wait_queue_head_t wq;	/* woken when the device goes away */
	/*
	 * ioctls in progress (usrdma_enter/usrdma_exit). They copy bounce
	 * buffers and drop the last reference of mappings outside the lock,
	 * which calls the DMA API: remove() waits for this to reach zero, so
	 * nothing touches the device's DMA API once unbind has returned.
	 */
	atomic_t users;
	wait_queue_head_t users_wq;

	bool dead;		/* removed: everything fails with ENODEV */
	bool open;		/* one opener at a time */
	bool enabled;		/* enabled by open, until release or remove */
	bool reset_works;	/* the reset at open worked */
	struct pci_saved_state *saved_state;	/* at open, for release */
	struct address_space *mapping;	/* of the open file, for zapping */
	unsigned int mask_bits;

	struct list_head bufs;
	unsigned int nbufs;
	u64 buf_bytes;
	struct ida ids;
	u64 next_seq;
	u64 next_offset;

	struct xarray maps;	/* handle -> struct usrdma_map */
	u32 next_handle;
	unsigned int nmaps;

	u32 irq_type;		/* USRDMA_IRQ_* */
	unsigned int nvec;
	struct usrdma_vec *vecs;

	struct usrdma_quarantine q;

	/* statistics that change outside the lock */
	atomic_t user_mappings;
	atomic_long_t pinned_pages;
	atomic_long_t bounce_bytes;
	atomic64_t irq_count;
};

/*
 * Kernel interfaces that differ between the kernels usrdma builds on,
 * chosen by the feature probes in probes/ (see the Makefile), never by
 * version number.
 */
/* Adds 1 to an eventfd (the only count the module ever signals). */
static inline void usrdma_eventfd_signal(struct eventfd_ctx *ctx)
{
#ifdef USRDMA_HAVE_EVENTFD_SIGNAL_NO_COUNT
	eventfd_signal(ctx);
#else
	eventfd_signal(ctx, 1);
#endif
}

/* Whether user space set driver_override for the device (sysfs). */
static inline bool usrdma_has_driver_override(struct pci_dev *pdev)
{
#ifdef USRDMA_HAVE_DEVICE_DRIVER_OVERRIDE
	return device_has_driver_override(&pdev->dev);
#else
	return pdev->driver_override;
#endif
}

/* An array of n elements of size bytes from user space, or an ERR_PTR. */
static inline void *usrdma_memdup_array_user(const void __user *src,
					     size_t n, size_t size)
{
#ifdef USRDMA_HAVE_MEMDUP_ARRAY_USER
	return memdup_array_user(src, n, size);
#else
	size_t bytes;

	if (check_mul_overflow(n, size, &bytes))
		return ERR_PTR(-EOVERFLOW);
	return memdup_user(src, bytes);
#endif
}

/*
 * Counts the caller in the ioctls in progress, or returns false once the
 * device is removed. The full barrier pairs with the one in remove()
 * between setting ud->dead and reading ud->users: either remove() sees
 * this caller and waits, or this caller sees dead.
 */
static inline bool usrdma_enter(struct usrdma_dev *ud)
{
	atomic_inc(&ud->users);
	smp_mb__after_atomic();
	if (READ_ONCE(ud->dead)) {
		if (atomic_dec_and_test(&ud->users))
			wake_up_all(&ud->users_wq);
		return false;
	}
	return true;
}

static inline void usrdma_exit(struct usrdma_dev *ud)
{
	if (atomic_dec_and_test(&ud->users))
		wake_up_all(&ud->users_wq);
}

/* buffers.c */
struct usrdma_buf *usrdma_find_id(struct usrdma_dev *ud, u32 id);
void usrdma_buf_unlink(struct usrdma_dev *ud, struct usrdma_buf *buf);
void usrdma_buf_free(struct usrdma_dev *ud, struct usrdma_buf *buf);
void usrdma_free_buffers(struct usrdma_dev *ud, bool all);
long usrdma_ioctl_alloc(struct usrdma_dev *ud, void __user *uarg);
long usrdma_ioctl_free(struct usrdma_dev *ud, void __user *uarg);
long usrdma_ioctl_list(struct usrdma_dev *ud, void __user *uarg);

/* user_map.c */
void usrdma_detach_maps(struct usrdma_dev *ud, struct list_head *list);
void usrdma_put_maps(struct usrdma_dev *ud, struct list_head *list);
void usrdma_map_uncount(struct usrdma_dev *ud, struct usrdma_map *m);
bool usrdma_map_below(struct usrdma_map *m, u64 mask);
long usrdma_ioctl_map_user(struct usrdma_dev *ud, void __user *uarg);
long usrdma_ioctl_unmap_user(struct usrdma_dev *ud, void __user *uarg);
long usrdma_ioctl_sync(struct usrdma_dev *ud, void __user *uarg);

/* pinnable.c */
int usrdma_check_pinnable(unsigned long start, unsigned long end);

/* limits.c */
u64 usrdma_max_buf_size(struct device *dev, u32 *flags);

/* irq.c */
void usrdma_irq_free(struct usrdma_dev *ud, bool revoke);
long usrdma_ioctl_set_irq(struct usrdma_dev *ud, void __user *uarg);
long usrdma_ioctl_irq_unmask(struct usrdma_dev *ud, void __user *uarg);

/* quarantine.c */
void usrdma_quarantine_init(struct usrdma_dev *ud);
bool usrdma_master_on(struct usrdma_dev *ud);
void usrdma_quarantine_add(struct usrdma_dev *ud, struct list_head *maps,
			   bool all_buffers);
void usrdma_quarantine_restart(struct usrdma_dev *ud);
void usrdma_quarantine_take(struct usrdma_dev *ud, struct list_head *maps);
void usrdma_quarantine_note_master(struct usrdma_dev *ud);
void usrdma_quarantine_drain(struct usrdma_dev *ud);

/* mmap.c */
bool usrdma_dma_translated(struct device *dev);
bool usrdma_coherent_decrypted(struct device *dev);
int usrdma_mmap(struct file *file, struct vm_area_struct *vma);

/* ioctl.c */
int usrdma_copy_in(void *karg, size_t ksize, size_t minsz,
		   void __user *uarg, u32 *argsz);
int usrdma_copy_out(void __user *uarg, const void *karg, size_t ksize,
		    u32 argsz);
int usrdma_check_name(const char *name);
long usrdma_ioctl(struct file *file, unsigned int cmd, unsigned long arg);

/* sysfs.c */
extern const struct attribute_group *usrdma_groups[];

#endif /* USRDMA_H */
