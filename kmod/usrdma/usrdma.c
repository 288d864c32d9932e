// SPDX-License-Identifier: GPL-2.0
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
 * mm) and the copies of bounced mappings happen outside the lock.
 *
 * Mappings of the node (BARs, buffers) are filled in at the first fault,
 * under the lock, with vmf_insert_pfn_prot(), never at mmap time: mmap()
 * links the new vma into the file's mappings only after ->mmap returns, so
 * a FREE in between would miss PTEs made there and leave freed pages
 * mapped; and remap_pfn_range() marks the vma VM_PAT, which makes a zap
 * racing with munmap() of the same vma WARN in untrack_pfn() (6.1).
 *
 * User mappings (struct usrdma_map) live in the xarray ud->maps, which
 * holds one reference. The DMA mapping of pinned pages is created and
 * removed under the lock; unpinning, un-accounting and freeing happen when
 * the last reference goes, outside the lock. Bounced mappings take an extra
 * reference while their data is copied outside the lock.
 *
 * Lifetimes: usrdma_dev is reference counted; probe holds one reference,
 * each open file another. remove() unregisters the node, marks the device
 * dead, removes the open file's mappings, stops DMA, frees the interrupts
 * (signalling each eventfd once so that waiters wake up), unmaps and
 * unpins the user mappings and frees every buffer; the open file then only
 * gets ENODEV and EPOLLHUP until it is closed.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/capability.h>
#include <linux/cc_platform.h>
#include <linux/ctype.h>
#include <linux/device.h>
#include <linux/dma-direct.h>
#include <linux/dma-map-ops.h>
#include <linux/dma-mapping.h>
#include <linux/eventfd.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/kernel.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mem_encrypt.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/pci.h>
#include <linux/pid.h>
#include <linux/poll.h>
#include <linux/refcount.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/scatterlist.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/vmalloc.h>
#include <linux/wait.h>
#include <linux/xarray.h>

#include "usrdma_uapi.h"

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

struct usrdma_buf {
	struct list_head node;
	u32 id;
	u32 flags;		/* USRDMA_BUF_* */
	u64 seq;		/* unique for the device's lifetime */
	size_t size;		/* page multiple */
	void *cpu_addr;
	dma_addr_t dma_addr;
	unsigned long attrs;
	bool decrypted;		/* memory encryption: shared with the device */
	u64 offset;		/* mmap offset, bytes */
	struct pid *owner;
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

struct usrdma_dev {
	struct kref ref;
	struct mutex lock;
	struct pci_dev *pdev;
	struct miscdevice misc;
	char name[32];		/* misc name: usrdma-DDDD:BB:DD.F */
	char nodename[32];	/* usrdma/DDDD:BB:DD.F */
	wait_queue_head_t wq;	/* woken when the device goes away */

	bool dead;		/* removed: everything fails with ENODEV */
	bool open;		/* one opener at a time */
	bool enabled;		/* enabled by open, until release or remove */
	bool intx_masked;	/* PCI_COMMAND_INTX_DISABLE at open */
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

	/* statistics that change outside the lock */
	atomic_t user_mappings;
	atomic_long_t pinned_pages;
	atomic_long_t bounce_bytes;
	atomic64_t irq_count;
};

static void usrdma_dev_free(struct kref *ref)
{
	struct usrdma_dev *ud = container_of(ref, struct usrdma_dev, ref);

	xa_destroy(&ud->maps);
	ida_destroy(&ud->ids);
	mutex_destroy(&ud->lock);
	pci_dev_put(ud->pdev);
	kfree(ud);
}

/* ---- argument copying ---------------------------------------------------- */

/*
 * Copies a versioned argument structure in: argsz must be at least minsz;
 * bytes past ksize must be zero (copy_struct_from_user checks that).
 */
static int usrdma_copy_in(void *karg, size_t ksize, size_t minsz,
			  void __user *uarg, u32 *argsz)
{
	int ret;

	if (get_user(*argsz, (u32 __user *)uarg))
		return -EFAULT;
	if (*argsz < minsz)
		return -EINVAL;
	if (*argsz > USRDMA_MAX_ARGSZ)
		return -E2BIG;
	ret = copy_struct_from_user(karg, ksize, uarg, *argsz);
	if (ret)
		return ret;
	/* Keep what the caller said, not what the kernel knows. */
	*(u32 *)karg = *argsz;
	return 0;
}

static int usrdma_copy_out(void __user *uarg, const void *karg, size_t ksize,
			   u32 argsz)
{
	if (copy_to_user(uarg, karg, min_t(size_t, ksize, argsz)))
		return -EFAULT;
	return 0;
}

/*
 * A name must be NUL-terminated within USRDMA_NAME_LEN and printable.
 * Returns its length.
 */
static int usrdma_check_name(const char *name)
{
	size_t len = strnlen(name, USRDMA_NAME_LEN);
	size_t i;

	if (len == USRDMA_NAME_LEN)
		return -EINVAL;
	for (i = 0; i < len; i++)
		if (!isprint(name[i]))
			return -EINVAL;
	return len;
}

/* ---- buffers ------------------------------------------------------------- */

static struct usrdma_buf *usrdma_find_id(struct usrdma_dev *ud, u32 id)
{
	struct usrdma_buf *buf;

	list_for_each_entry(buf, &ud->bufs, node)
		if (buf->id == id)
			return buf;
	return NULL;
}

static struct usrdma_buf *usrdma_find_name(struct usrdma_dev *ud,
					   const char *name)
{
	struct usrdma_buf *buf;

	list_for_each_entry(buf, &ud->bufs, node)
		if (buf->name[0] && !strcmp(buf->name, name))
			return buf;
	return NULL;
}

/* Frees one buffer, removing the open file's mappings of it first. */
static void usrdma_buf_destroy(struct usrdma_dev *ud, struct usrdma_buf *buf)
{
	lockdep_assert_held(&ud->lock);

	if (ud->mapping)
		unmap_mapping_range(ud->mapping, buf->offset, buf->size, 1);
	list_del(&buf->node);
	ud->nbufs--;
	ud->buf_bytes -= buf->size;
	dma_free_attrs(&ud->pdev->dev, buf->size, buf->cpu_addr, buf->dma_addr,
		       buf->attrs);
	put_pid(buf->owner);
	ida_free(&ud->ids, buf->id);
	kfree(buf);
}

/* Frees the non-persistent buffers, or all of them. */
static void usrdma_free_buffers(struct usrdma_dev *ud, bool all)
{
	struct usrdma_buf *buf, *tmp;

	list_for_each_entry_safe(buf, tmp, &ud->bufs, node)
		if (all || !(buf->flags & USRDMA_BUF_PERSISTENT))
			usrdma_buf_destroy(ud, buf);
}

/* ---- user mappings ------------------------------------------------------- */

static enum dma_data_direction usrdma_dma_dir(u32 dir)
{
	switch (dir & USRDMA_DIR_MASK) {
	case USRDMA_DIR_TO_DEVICE:
		return DMA_TO_DEVICE;
	case USRDMA_DIR_FROM_DEVICE:
		return DMA_FROM_DEVICE;
	default:
		return DMA_BIDIRECTIONAL;
	}
}

/* Removes npages from the locked memory of mm, if mm still has users. */
static void usrdma_unaccount(struct mm_struct *mm, unsigned long npages)
{
	if (mmget_not_zero(mm)) {
		account_locked_vm(mm, npages, false);
		mmput(mm);
	}
}

/* Unpins (and un-accounts) the pages of a mapping that is not DMA-mapped. */
static void usrdma_map_unpin(struct usrdma_map *m)
{
	if (m->npinned)
		unpin_user_pages_dirty_lock(m->pages, m->npinned, m->dirty);
	m->npinned = 0;
	if (m->accounted)
		usrdma_unaccount(m->mm, m->npages);
	m->accounted = false;
	sg_free_table(&m->sgt);
	memset(&m->sgt, 0, sizeof(m->sgt));
	kvfree(m->pages);
	m->pages = NULL;
}

/* Frees a mapping whose last reference is gone. Never under ud->lock. */
static void usrdma_map_free(struct usrdma_dev *ud, struct usrdma_map *m)
{
	struct device *dev = &ud->pdev->dev;

	if (m->dma_mapped)
		dma_unmap_sgtable(dev, &m->sgt, usrdma_dma_dir(m->dir), 0);
	m->dma_mapped = false;
	usrdma_map_unpin(m);
	if (m->bounce)
		dma_free_coherent(dev, m->bounce_size, m->bounce, m->bounce_dma);
	if (m->counted) {
		atomic_dec(&ud->user_mappings);
		if (m->bounce)
			atomic_long_sub(m->bounce_size, &ud->bounce_bytes);
		else
			atomic_long_sub(m->npages, &ud->pinned_pages);
	}
	if (m->mm)
		mmdrop(m->mm);
	kfree(m);
}

static void usrdma_map_put(struct usrdma_dev *ud, struct usrdma_map *m)
{
	if (refcount_dec_and_test(&m->ref))
		usrdma_map_free(ud, m);
}

/*
 * Takes a mapping out of the table and removes its DMA mapping; the
 * caller drops the table's reference after unlocking.
 */
static void usrdma_map_detach(struct usrdma_dev *ud, struct usrdma_map *m)
{
	lockdep_assert_held(&ud->lock);

	xa_erase(&ud->maps, m->handle);
	ud->nmaps--;
	if (m->dma_mapped)
		dma_unmap_sgtable(&ud->pdev->dev, &m->sgt,
				  usrdma_dma_dir(m->dir), 0);
	m->dma_mapped = false;
}

/* Detaches every mapping onto list (release, remove). */
static void usrdma_detach_maps(struct usrdma_dev *ud, struct list_head *list)
{
	struct usrdma_map *m;
	unsigned long idx;

	lockdep_assert_held(&ud->lock);

	xa_for_each(&ud->maps, idx, m) {
		usrdma_map_detach(ud, m);
		list_add_tail(&m->dead_node, list);
	}
}

/* Drops the table's references of detached mappings. Never under ud->lock. */
static void usrdma_put_maps(struct usrdma_dev *ud, struct list_head *list)
{
	struct usrdma_map *m, *tmp;

	list_for_each_entry_safe(m, tmp, list, dead_node) {
		list_del(&m->dead_node);
		usrdma_map_put(ud, m);
		cond_resched();
	}
}

/* Removes the mapping handle if it is still the one with sequence seq. */
static void usrdma_map_remove(struct usrdma_dev *ud, u32 handle, u64 seq)
{
	struct usrdma_map *m;

	mutex_lock(&ud->lock);
	m = xa_load(&ud->maps, handle);
	if (m && m->seq == seq)
		usrdma_map_detach(ud, m);
	else
		m = NULL;
	mutex_unlock(&ud->lock);
	if (m)
		usrdma_map_put(ud, m);
}

/* Puts a new mapping in the table, which then holds its reference. */
static int usrdma_map_insert(struct usrdma_dev *ud, struct usrdma_map *m)
{
	u32 handle;
	int ret;

	lockdep_assert_held(&ud->lock);

	if (ud->dead)
		return -ENODEV;
	if (ud->nmaps >= USRDMA_MAX_MAPPINGS)
		return -ENOSPC;
	ret = xa_alloc_cyclic(&ud->maps, &handle, m, XA_LIMIT(1, U32_MAX),
			      &ud->next_handle, GFP_KERNEL);
	if (ret < 0)
		return ret == -EBUSY ? -ENOSPC : ret;
	m->handle = handle;
	m->seq = ud->next_seq++;
	ud->nmaps++;
	m->counted = true;
	atomic_inc(&ud->user_mappings);
	if (m->bounce)
		atomic_long_add(m->bounce_size, &ud->bounce_bytes);
	else
		atomic_long_add(m->npages, &ud->pinned_pages);
	return 0;
}

/*
 * Whether every page can be reached by the device under its DMA mask.
 * With DMA ops (an IOMMU) the mapping picks addresses below the mask; for
 * dma-direct check the bus address of each page here, because mapping an
 * unreachable page WARNs when swiotlb is not active.
 */
static bool usrdma_pages_reachable(struct device *dev, struct page **pages,
				   unsigned long npages)
{
	u64 limit;
	unsigned long i;

	if (get_dma_ops(dev))
		return true;
	limit = min_not_zero(*dev->dma_mask, dev->bus_dma_limit);
	for (i = 0; i < npages; i++) {
		dma_addr_t dma = phys_to_dma(dev, page_to_phys(pages[i]));

		if (dma == DMA_MAPPING_ERROR || dma > limit ||
		    limit - dma < PAGE_SIZE - 1)
			return false;
	}
	return true;
}

/* Whether a mapping lies entirely below mask (SET_DMA_MASK). */
static bool usrdma_map_below(struct usrdma_map *m, u64 mask)
{
	struct scatterlist *sg;
	unsigned int i;

	if (m->bounce)
		return m->bounce_dma + m->bounce_size - 1 <= mask;
	if (!m->dma_mapped)
		return true;
	for_each_sgtable_dma_sg(&m->sgt, sg, i)
		if (sg_dma_address(sg) + sg_dma_len(sg) - 1 > mask)
			return false;
	return true;
}

/* The DMA segments of a pinned mapping, adjacent ones merged. */
static u32 usrdma_map_entries(struct usrdma_map *m,
			      struct usrdma_sg_entry *entries)
{
	struct scatterlist *sg;
	unsigned int i;
	u32 n = 0;

	for_each_sgtable_dma_sg(&m->sgt, sg, i) {
		u64 addr = sg_dma_address(sg);
		u64 len = sg_dma_len(sg);

		if (n && entries[n - 1].dma_addr + entries[n - 1].length == addr) {
			entries[n - 1].length += len;
		} else {
			entries[n].dma_addr = addr;
			entries[n].length = len;
			n++;
		}
	}
	return n;
}

/*
 * Linux 6.1 can satisfy a read-only FOLL_LONGTERM pin in a private
 * writable mapping with the shared zero page or a page-cache page that the
 * process's next write replaces (copy on write), leaving the device with a
 * stale page. Later kernels unshare such pages; here a TO_DEVICE range in
 * writable mappings, at least one of them private, is pinned writable,
 * which breaks COW now. Ranges with read-only parts keep a read-only pin.
 */
static bool usrdma_want_write_pin(unsigned long start, unsigned long end)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	bool private = false;

	if (mmap_read_lock_killable(mm))
		return false;
	while (start < end) {
		vma = find_vma(mm, start);
		if (!vma || vma->vm_start > start ||
		    !(vma->vm_flags & VM_WRITE)) {
			private = false;
			break;
		}
		if (!(vma->vm_flags & VM_SHARED))
			private = true;
		start = vma->vm_end;
	}
	mmap_read_unlock(mm);
	return private;
}

/*
 * Copies len bytes between a kernel buffer and user memory in pieces,
 * rescheduling between them (a mapping can be 1 GiB).
 */
static int usrdma_copy_user(void *kbuf, u64 uaddr, u64 len, bool to_user)
{
	while (len) {
		size_t n = min_t(u64, len, USRDMA_COPY_CHUNK);
		void __user *u = u64_to_user_ptr(uaddr);

		if (to_user ? copy_to_user(u, kbuf, n) :
			      copy_from_user(kbuf, u, n))
			return -EFAULT;
		kbuf += n;
		uaddr += n;
		len -= n;
		if (len) {
			if (fatal_signal_pending(current))
				return -EINTR;
			cond_resched();
		}
	}
	return 0;
}

/* ---- enabling and disabling the device ----------------------------------- */

static void usrdma_irq_free(struct usrdma_dev *ud, bool revoke);

static int usrdma_enable(struct usrdma_dev *ud)
{
	struct pci_dev *pdev = ud->pdev;
	u16 cmd;
	int ret;

	ret = pci_enable_device(pdev);
	if (ret)
		return ret;
	ret = pci_request_regions(pdev, KBUILD_MODNAME);
	if (ret)
		goto err_disable;
	ret = dma_set_mask_and_coherent(&pdev->dev,
					DMA_BIT_MASK(USRDMA_DEFAULT_MASK_BITS));
	if (ret)
		goto err_release;
	ud->mask_bits = USRDMA_DEFAULT_MASK_BITS;
	pci_read_config_word(pdev, PCI_COMMAND, &cmd);
	ud->intx_masked = cmd & PCI_COMMAND_INTX_DISABLE;
	pci_set_master(pdev);
	ud->enabled = true;
	return 0;

err_release:
	pci_release_regions(pdev);
err_disable:
	pci_disable_device(pdev);
	return ret;
}

/*
 * First half of taking the device away from its user: stops DMA, frees
 * the interrupts and removes the DMA mappings of the user mappings, which
 * go onto maps; the caller unpins them after dropping the lock.
 */
static void usrdma_stop(struct usrdma_dev *ud, bool revoke,
			struct list_head *maps)
{
	lockdep_assert_held(&ud->lock);

	pci_clear_master(ud->pdev);
	usrdma_irq_free(ud, revoke);
	usrdma_detach_maps(ud, maps);
}

/* Second half: frees buffers (all, or the non-persistent ones), disables. */
static void usrdma_disable(struct usrdma_dev *ud, bool all_buffers)
{
	struct pci_dev *pdev = ud->pdev;

	lockdep_assert_held(&ud->lock);

	usrdma_free_buffers(ud, all_buffers);
	/* Hand INTx over as it was found. */
	if (pdev->pin && pci_intx_mask_supported(pdev))
		pci_intx(pdev, !ud->intx_masked);
	pci_release_regions(pdev);
	pci_disable_device(pdev);
	ud->enabled = false;
}

/* ---- interrupts ---------------------------------------------------------- */

static irqreturn_t usrdma_msi_handler(int irq, void *arg)
{
	struct usrdma_vec *vec = arg;

	eventfd_signal(vec->trigger, 1);
	atomic64_inc(&vec->ud->irq_count);
	return IRQ_HANDLED;
}

/* As uio_pci_generic: a shared line, masked at the device until UNMASK. */
static irqreturn_t usrdma_intx_handler(int irq, void *arg)
{
	struct usrdma_vec *vec = arg;

	if (!pci_check_and_mask_intx(vec->ud->pdev))
		return IRQ_NONE;
	eventfd_signal(vec->trigger, 1);
	atomic64_inc(&vec->ud->irq_count);
	return IRQ_HANDLED;
}

/*
 * Frees the interrupts and releases the eventfds; on revocation each
 * eventfd is signalled once first, so that a waiter wakes up and finds
 * the device gone.
 */
static void usrdma_irq_free(struct usrdma_dev *ud, bool revoke)
{
	struct pci_dev *pdev = ud->pdev;
	unsigned int i;

	lockdep_assert_held(&ud->lock);

	if (!ud->vecs)
		return;
	for (i = 0; i < ud->nvec; i++)
		if (ud->vecs[i].requested)
			free_irq(ud->vecs[i].irq, &ud->vecs[i]);
	if (ud->irq_type == USRDMA_IRQ_MSI || ud->irq_type == USRDMA_IRQ_MSIX)
		pci_free_irq_vectors(pdev);
	/* No handler now: keep a level interrupt off a possibly shared line. */
	if (pdev->pin && pci_intx_mask_supported(pdev))
		pci_intx(pdev, 0);
	for (i = 0; i < ud->nvec; i++) {
		if (!ud->vecs[i].trigger)
			continue;
		if (revoke)
			eventfd_signal(ud->vecs[i].trigger, USRDMA_IRQ_REVOKED);
		eventfd_ctx_put(ud->vecs[i].trigger);
	}
	kfree(ud->vecs);
	ud->vecs = NULL;
	ud->nvec = 0;
	ud->irq_type = USRDMA_IRQ_NONE;
}

/* Whether the device has this kind of interrupt with count vectors. */
static bool usrdma_irq_supported(struct pci_dev *pdev, u32 type, u32 count)
{
	switch (type) {
	case USRDMA_IRQ_INTX:
		return pdev->pin && pdev->irq && pci_intx_mask_supported(pdev);
	case USRDMA_IRQ_MSI:
		return pdev->msi_cap && pci_msi_vec_count(pdev) >= (int)count;
	case USRDMA_IRQ_MSIX:
		return pdev->msix_cap && pci_msix_vec_count(pdev) >= (int)count;
	default:
		return false;
	}
}

/*
 * Sets up type with the vectors in vecs (their eventfds taken), which ud
 * owns from here on. On failure everything is freed and interrupts are off.
 */
static int usrdma_irq_setup(struct usrdma_dev *ud, u32 type, u32 count,
			    struct usrdma_vec *vecs)
{
	static const char * const kind[] = {
		[USRDMA_IRQ_INTX] = "intx",
		[USRDMA_IRQ_MSI] = "msi",
		[USRDMA_IRQ_MSIX] = "msix",
	};
	struct pci_dev *pdev = ud->pdev;
	unsigned int i;
	int ret;

	lockdep_assert_held(&ud->lock);

	ud->vecs = vecs;
	ud->nvec = count;
	ud->irq_type = type;
	if (type != USRDMA_IRQ_INTX) {
		ret = pci_alloc_irq_vectors(pdev, count, count,
					    type == USRDMA_IRQ_MSI ?
					    PCI_IRQ_MSI : PCI_IRQ_MSIX);
		if (ret < 0) {
			/* Not that many vectors on this platform. */
			if (ret == -ENOSPC)
				ret = -EINVAL;
			/* Nothing allocated: pci_free_irq_vectors is harmless. */
			goto err;
		}
	}
	for (i = 0; i < count; i++) {
		struct usrdma_vec *vec = &vecs[i];

		vec->ud = ud;
		vec->irq = type == USRDMA_IRQ_INTX ? pdev->irq :
						     pci_irq_vector(pdev, i);
		if (vec->irq < 0) {
			ret = vec->irq;
			goto err;
		}
		snprintf(vec->name, sizeof(vec->name), "usrdma-%s-%s%u",
			 pci_name(pdev), kind[type], i);
		ret = request_irq(vec->irq, type == USRDMA_IRQ_INTX ?
				  usrdma_intx_handler : usrdma_msi_handler,
				  type == USRDMA_IRQ_INTX ? IRQF_SHARED : 0,
				  vec->name, vec);
		if (ret)
			goto err;
		vec->requested = true;
	}
	if (type == USRDMA_IRQ_INTX)
		pci_intx(pdev, 1);
	return 0;

err:
	usrdma_irq_free(ud, false);
	return ret;
}

/* ---- file operations ----------------------------------------------------- */

static int usrdma_open(struct inode *inode, struct file *file)
{
	/* misc_open() set private_data and holds misc_mtx: remove() waits. */
	struct miscdevice *misc = file->private_data;
	struct usrdma_dev *ud = container_of(misc, struct usrdma_dev, misc);
	int ret;

	if (!capable(CAP_SYS_RAWIO))
		return -EPERM;

	mutex_lock(&ud->lock);
	if (ud->dead)
		ret = -ENODEV;
	else if (ud->open)
		ret = -EBUSY;
	else
		ret = usrdma_enable(ud);
	if (!ret) {
		ud->open = true;
		ud->mapping = file->f_mapping;
		kref_get(&ud->ref);
		file->private_data = ud;
	}
	mutex_unlock(&ud->lock);
	if (ret)
		return ret;
	return nonseekable_open(inode, file);
}

static int usrdma_release(struct inode *inode, struct file *file)
{
	struct usrdma_dev *ud = file->private_data;
	LIST_HEAD(maps);

	/*
	 * All mappings of this file are gone (each holds the file), so the
	 * buffers can be freed without zapping anything. Order: bus
	 * mastering off, interrupts, user mappings, then buffers. A remove()
	 * between the two halves finishes the job itself (ud->enabled).
	 */
	mutex_lock(&ud->lock);
	ud->mapping = NULL;
	if (ud->enabled)
		usrdma_stop(ud, false, &maps);
	mutex_unlock(&ud->lock);

	/* Unpin and un-account (the mapper's mm, saved) outside the lock. */
	usrdma_put_maps(ud, &maps);

	mutex_lock(&ud->lock);
	if (ud->enabled)
		usrdma_disable(ud, false);
	ud->open = false;
	mutex_unlock(&ud->lock);
	kref_put(&ud->ref, usrdma_dev_free);
	return 0;
}

static __poll_t usrdma_poll(struct file *file, poll_table *wait)
{
	struct usrdma_dev *ud = file->private_data;

	poll_wait(file, &ud->wq, wait);
	return READ_ONCE(ud->dead) ? EPOLLHUP | EPOLLERR : 0;
}

/* The buffer that holds mmap offset off, or NULL. */
static struct usrdma_buf *usrdma_find_offset(struct usrdma_dev *ud, u64 off)
{
	struct usrdma_buf *buf;

	list_for_each_entry(buf, &ud->bufs, node)
		if (off >= buf->offset && off - buf->offset < buf->size)
			return buf;
	return NULL;
}

/*
 * Whether dma-direct handed this device unencrypted (shared) coherent
 * memory, which must be mapped decrypted: x86's force_dma_unencrypted(),
 * which is not exported. Decided at allocation, as the DMA layer did.
 */
static bool usrdma_coherent_decrypted(struct device *dev)
{
#if defined(CONFIG_X86) && defined(CONFIG_ARCH_HAS_FORCE_DMA_UNENCRYPTED)
	if (get_dma_ops(dev))
		return false;
	if (cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT))
		return true;
	if (cc_platform_has(CC_ATTR_HOST_MEM_ENCRYPT) && sme_me_mask) {
		u64 enc_mask = DMA_BIT_MASK(__ffs64(sme_me_mask));

		return min_not_zero(dev->coherent_dma_mask,
				    dev->bus_dma_limit) <= enc_mask;
	}
#endif
	return false;
}

/* The protection dma_mmap_attrs() would give a buffer (dma_pgprot()). */
static pgprot_t usrdma_buf_prot(struct device *dev, struct usrdma_buf *buf,
				pgprot_t prot)
{
	if (!dev_is_dma_coherent(dev)) {
#ifdef CONFIG_ARCH_HAS_DMA_WRITE_COMBINE
		if (buf->attrs & DMA_ATTR_WRITE_COMBINE)
			prot = pgprot_writecombine(prot);
		else
#endif
			prot = pgprot_dmacoherent(prot);
	}
	if (buf->decrypted)
		prot = pgprot_decrypted(prot);
	return prot;
}

/* The page frame of byte off of a buffer. */
static unsigned long usrdma_buf_pfn(struct usrdma_buf *buf, u64 off)
{
	void *kaddr = buf->cpu_addr + off;

	if (is_vmalloc_addr(kaddr))
		return vmalloc_to_pfn(kaddr);
	return PHYS_PFN(virt_to_phys(kaddr));
}

/*
 * Fills the whole vma (all of it maps one BAR or one buffer) on its first
 * fault; after a FREE or revocation zapped it, faults get SIGBUS.
 */
static vm_fault_t usrdma_vm_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct usrdma_dev *ud = vma->vm_private_data;
	u64 base = (u64)vma->vm_pgoff << PAGE_SHIFT;
	u64 fault_off = (u64)vmf->pgoff << PAGE_SHIFT;
	struct pci_dev *pdev = ud->pdev;
	struct usrdma_buf *buf = NULL;
	resource_size_t bar_start = 0;
	vm_fault_t ret = VM_FAULT_SIGBUS;
	unsigned long addr;
	pgprot_t prot;

	mutex_lock(&ud->lock);
	if (ud->dead)
		goto out;
	if (fault_off < USRDMA_BUF_OFFSET_BASE) {
		unsigned int bar = fault_off >> USRDMA_BAR_SHIFT;

		/* Checked at mmap; the BAR cannot change while bound. */
		if (bar >= PCI_STD_NUM_BARS ||
		    !(pci_resource_flags(pdev, bar) & IORESOURCE_MEM))
			goto out;
		bar_start = pci_resource_start(pdev, bar);
		/* What io_remap_pfn_range() does. */
		prot = pgprot_decrypted(vma->vm_page_prot);
	} else {
		buf = usrdma_find_offset(ud, fault_off);
		if (!buf)
			goto out;
		prot = usrdma_buf_prot(&pdev->dev, buf, vma->vm_page_prot);
	}

	for (addr = vma->vm_start; addr < vma->vm_end; addr += PAGE_SIZE) {
		u64 off = base + (addr - vma->vm_start);
		unsigned long pfn;
		vm_fault_t r;

		if (buf) {
			if (off < buf->offset || off - buf->offset >= buf->size)
				continue;
			pfn = usrdma_buf_pfn(buf, off - buf->offset);
		} else {
			pfn = (bar_start + (off & (USRDMA_BAR_OFFSET(1) - 1))) >>
			      PAGE_SHIFT;
		}
		/* Only the faulting page's result counts; others fault later. */
		r = vmf_insert_pfn_prot(vma, addr, pfn, prot);
		if (addr == (vmf->address & PAGE_MASK))
			ret = r;
		if (!((addr >> PAGE_SHIFT) & 511))
			cond_resched();
	}
out:
	mutex_unlock(&ud->lock);
	return ret;
}

static const struct vm_operations_struct usrdma_vm_ops = {
	.fault = usrdma_vm_fault,
};

static int usrdma_mmap_bar(struct usrdma_dev *ud, struct vm_area_struct *vma,
			   u64 off, u64 len)
{
	struct pci_dev *pdev = ud->pdev;
	unsigned int bar = off >> USRDMA_BAR_SHIFT;
	u64 bar_off = off & (USRDMA_BAR_OFFSET(1) - 1);
	resource_size_t start, size;

	if (bar >= PCI_STD_NUM_BARS)
		return -EINVAL;
	if (!(pci_resource_flags(pdev, bar) & IORESOURCE_MEM))
		return -EINVAL;
	start = pci_resource_start(pdev, bar);
	size = pci_resource_len(pdev, bar);
	if (!PAGE_ALIGNED(start) || bar_off >= size || len > size - bar_off)
		return -EINVAL;
	vma->vm_page_prot = pgprot_noncached(vma->vm_page_prot);
	return 0;
}

static int usrdma_mmap_buf(struct usrdma_dev *ud, struct vm_area_struct *vma,
			   u64 off, u64 len)
{
	struct usrdma_buf *buf = usrdma_find_offset(ud, off);

	if (!buf || len > buf->size - (off - buf->offset))
		return -EINVAL;
	return 0;
}

static int usrdma_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct usrdma_dev *ud = file->private_data;
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;
	u64 len = vma->vm_end - vma->vm_start;
	int ret;

	/* Private mappings would copy on write, away from the device. */
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;

	mutex_lock(&ud->lock);
	if (ud->dead)
		ret = -ENODEV;
	else if (off < USRDMA_BUF_OFFSET_BASE)
		ret = usrdma_mmap_bar(ud, vma, off, len);
	else
		ret = usrdma_mmap_buf(ud, vma, off, len);
	mutex_unlock(&ud->lock);
	if (ret)
		return ret;
	/* Filled at the first fault; the file (and so ud) outlives the vma. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_set(vma, VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP);
#else
	vma->vm_flags |= VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP;
#endif
	vma->vm_ops = &usrdma_vm_ops;
	vma->vm_private_data = ud;
	return 0;
}

/* ---- ioctls -------------------------------------------------------------- */

static long usrdma_ioctl_info(struct usrdma_dev *ud, void __user *uarg)
{
	struct pci_dev *pdev = ud->pdev;
	struct usrdma_info info;
	unsigned int i;
	u32 argsz;
	int ret;

	ret = usrdma_copy_in(&info, sizeof(info), sizeof(info), uarg, &argsz);
	if (ret)
		return ret;
	if (info.flags || info.reserved0 || info.reserved1)
		return -EINVAL;

	mutex_lock(&ud->lock);
	if (ud->dead) {
		mutex_unlock(&ud->lock);
		return -ENODEV;
	}
	info.api_version = USRDMA_API_VERSION;
	info.pci_domain = pci_domain_nr(pdev->bus);
	info.pci_bus = pdev->bus->number;
	info.pci_devfn = pdev->devfn;
	info.dma_mask_bits = ud->mask_bits;
	info.num_buffers = ud->nbufs;
	for (i = 0; i < PCI_STD_NUM_BARS; i++) {
		bool mappable = (pci_resource_flags(pdev, i) & IORESOURCE_MEM) &&
				PAGE_ALIGNED(pci_resource_start(pdev, i));

		info.bar_size[i] = mappable ? pci_resource_len(pdev, i) : 0;
	}
	mutex_unlock(&ud->lock);
	return usrdma_copy_out(uarg, &info, sizeof(info), argsz);
}

static long usrdma_ioctl_set_mask(struct usrdma_dev *ud, void __user *uarg)
{
	struct device *dev = &ud->pdev->dev;
	struct usrdma_dma_mask arg;
	struct usrdma_buf *buf;
	struct usrdma_map *m;
	unsigned long idx;
	u64 mask;
	u32 argsz;
	int ret;

	ret = usrdma_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &argsz);
	if (ret)
		return ret;
	if (arg.flags || arg.reserved || arg.bits < 12 || arg.bits > 64)
		return -EINVAL;
	mask = DMA_BIT_MASK(arg.bits);

	mutex_lock(&ud->lock);
	if (ud->dead) {
		ret = -ENODEV;
		goto out;
	}
	list_for_each_entry(buf, &ud->bufs, node) {
		if (buf->dma_addr + buf->size - 1 > mask) {
			ret = -EBUSY;
			goto out;
		}
	}
	xa_for_each(&ud->maps, idx, m) {
		if (!usrdma_map_below(m, mask)) {
			ret = -EBUSY;
			goto out;
		}
	}
	ret = dma_set_mask_and_coherent(dev, mask);
	if (ret) {
		/* Put back the mask that worked. */
		dma_set_mask_and_coherent(dev, DMA_BIT_MASK(ud->mask_bits));
		ret = -EIO;
		goto out;
	}
	ud->mask_bits = arg.bits;
out:
	mutex_unlock(&ud->lock);
	return ret;
}

static long usrdma_ioctl_alloc(struct usrdma_dev *ud, void __user *uarg)
{
	struct device *dev = &ud->pdev->dev;
	struct usrdma_alloc arg;
	struct usrdma_buf *buf;
	u64 seq;
	u32 argsz;
	int ret;

	ret = usrdma_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &argsz);
	if (ret)
		return ret;
	if ((arg.flags & ~USRDMA_BUF_FLAGS) || arg.reserved || arg.id ||
	    arg.dma_addr || arg.mmap_offset)
		return -EINVAL;
	if (!arg.size || arg.size > USRDMA_MAX_BUF_SIZE)
		return -EINVAL;
	ret = usrdma_check_name(arg.name);
	if (ret < 0)
		return ret;

	buf = kzalloc(sizeof(*buf), GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	buf->flags = arg.flags;
	buf->size = PAGE_ALIGN(arg.size);
	buf->attrs = (arg.flags & USRDMA_BUF_WC) ? DMA_ATTR_WRITE_COMBINE : 0;
	strscpy(buf->name, arg.name, sizeof(buf->name));

	mutex_lock(&ud->lock);
	if (ud->dead) {
		ret = -ENODEV;
		goto err_unlock;
	}
	if (buf->name[0] && usrdma_find_name(ud, buf->name)) {
		ret = -EEXIST;
		goto err_unlock;
	}
	if (ud->nbufs >= USRDMA_MAX_BUFFERS) {
		ret = -ENOSPC;
		goto err_unlock;
	}
	ret = ida_alloc_min(&ud->ids, 1, GFP_KERNEL);
	if (ret < 0)
		goto err_unlock;
	buf->id = ret;
	/* Zeroed memory: the DMA API clears coherent allocations. */
	buf->cpu_addr = dma_alloc_attrs(dev, buf->size, &buf->dma_addr,
					USRDMA_GFP_USER_SIZED, buf->attrs);
	if (!buf->cpu_addr) {
		ret = -ENOMEM;
		goto err_ida;
	}
	buf->decrypted = usrdma_coherent_decrypted(dev);
	if (buf->dma_addr + buf->size - 1 > DMA_BIT_MASK(ud->mask_bits)) {
		/* A DMA layer bug (seen with an IOMMU and tiny masks): refuse. */
		dev_warn_ratelimited(dev, "coherent buffer above the DMA mask\n");
		ret = -EIO;
		goto err_free;
	}
	buf->owner = get_task_pid(current, PIDTYPE_TGID);
	buf->seq = seq = ud->next_seq++;
	buf->offset = ud->next_offset;
	ud->next_offset += buf->size;
	list_add_tail(&buf->node, &ud->bufs);
	ud->nbufs++;
	ud->buf_bytes += buf->size;

	arg.size = buf->size;
	arg.id = buf->id;
	arg.dma_addr = buf->dma_addr;
	arg.mmap_offset = buf->offset;
	mutex_unlock(&ud->lock);

	ret = usrdma_copy_out(uarg, &arg, sizeof(arg), argsz);
	if (ret) {
		/* The caller cannot know the buffer: take it back. */
		mutex_lock(&ud->lock);
		buf = ud->dead ? NULL : usrdma_find_id(ud, arg.id);
		if (buf && buf->seq == seq)
			usrdma_buf_destroy(ud, buf);
		mutex_unlock(&ud->lock);
	}
	return ret;

err_free:
	dma_free_attrs(dev, buf->size, buf->cpu_addr, buf->dma_addr,
		       buf->attrs);
err_ida:
	ida_free(&ud->ids, buf->id);
err_unlock:
	mutex_unlock(&ud->lock);
	kfree(buf);
	return ret;
}

static long usrdma_ioctl_free(struct usrdma_dev *ud, void __user *uarg)
{
	struct usrdma_free arg;
	struct usrdma_buf *buf;
	bool by_name;
	u32 argsz;
	int ret;

	ret = usrdma_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &argsz);
	if (ret)
		return ret;
	if ((arg.flags & ~USRDMA_FREE_BY_NAME) || arg.reserved)
		return -EINVAL;
	by_name = arg.flags & USRDMA_FREE_BY_NAME;
	if (by_name) {
		ret = usrdma_check_name(arg.name);
		if (ret <= 0 || arg.id)
			return -EINVAL;
	} else if (!arg.id || memchr_inv(arg.name, 0, sizeof(arg.name))) {
		return -EINVAL;
	}

	mutex_lock(&ud->lock);
	if (ud->dead) {
		ret = -ENODEV;
		goto out;
	}
	buf = by_name ? usrdma_find_name(ud, arg.name) :
			usrdma_find_id(ud, arg.id);
	if (!buf) {
		ret = -ENOENT;
		goto out;
	}
	usrdma_buf_destroy(ud, buf);
	ret = 0;
out:
	mutex_unlock(&ud->lock);
	return ret;
}

static long usrdma_ioctl_list(struct usrdma_dev *ud, void __user *uarg)
{
	struct usrdma_buf_entry *entries = NULL;
	struct usrdma_list arg;
	struct usrdma_buf *buf;
	unsigned int n = 0, want;
	u32 argsz;
	int ret;

	ret = usrdma_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &argsz);
	if (ret)
		return ret;
	if (arg.flags || arg.count || (arg.capacity && !arg.entries))
		return -EINVAL;
	want = min_t(u32, arg.capacity, USRDMA_MAX_BUFFERS);
	if (want) {
		entries = kvcalloc(want, sizeof(*entries), GFP_KERNEL);
		if (!entries)
			return -ENOMEM;
	}

	mutex_lock(&ud->lock);
	if (ud->dead) {
		mutex_unlock(&ud->lock);
		ret = -ENODEV;
		goto out;
	}
	list_for_each_entry(buf, &ud->bufs, node) {
		struct usrdma_buf_entry *e;

		if (n >= want)
			break;
		e = &entries[n++];
		e->id = buf->id;
		e->flags = buf->flags;
		e->size = buf->size;
		e->dma_addr = buf->dma_addr;
		e->mmap_offset = buf->offset;
		e->owner_pid = pid_vnr(buf->owner);
		memcpy(e->name, buf->name, sizeof(e->name));
	}
	arg.count = ud->nbufs;
	mutex_unlock(&ud->lock);

	if (n && copy_to_user(u64_to_user_ptr(arg.entries), entries,
			      array_size(n, sizeof(*entries)))) {
		ret = -EFAULT;
		goto out;
	}
	ret = usrdma_copy_out(uarg, &arg, sizeof(arg), argsz);
out:
	kvfree(entries);
	return ret;
}

/*
 * Pins [addr, addr + length) of the caller for m and accounts the pages
 * as locked memory. On error what was done is undone by usrdma_map_free.
 */
static int usrdma_map_pin(struct usrdma_map *m)
{
	unsigned long start = m->addr & PAGE_MASK;
	unsigned int gup = FOLL_LONGTERM;
	long ret;

	m->pages = kvmalloc_array(m->npages, sizeof(*m->pages),
				  USRDMA_GFP_USER_SIZED | __GFP_ACCOUNT);
	if (!m->pages)
		return -ENOMEM;
	if ((m->dir & USRDMA_DIR_FROM_DEVICE) ||
	    usrdma_want_write_pin(start, start + m->npages * PAGE_SIZE))
		gup |= FOLL_WRITE;
	ret = pin_user_pages_fast(start, m->npages, gup, m->pages);
	if (ret < 0)
		return ret;
	m->npinned = ret;
	if (m->npinned != m->npages)
		return -EFAULT;

	m->mm = current->mm;
	mmgrab(m->mm);
	/* RLIMIT_MEMLOCK, unless CAP_IPC_LOCK. */
	ret = account_locked_vm(m->mm, m->npages, true);
	if (ret)
		return ret;
	m->accounted = true;
	return sg_alloc_table_from_pages(&m->sgt, m->pages, m->npages,
					 offset_in_page(m->addr), m->length,
					 USRDMA_GFP_USER_SIZED | __GFP_ACCOUNT);
}

/*
 * The pages of m lie above the DMA mask: give the device a coherent
 * buffer below it instead, with the caller's bytes copied in (for every
 * direction, so that bytes the device does not write come back unchanged).
 * Returns with m in the table (m may be gone by then: a racing UNMAP);
 * *handle and *seq identify it.
 */
static int usrdma_map_bounce(struct usrdma_dev *ud, struct usrdma_map *m,
			     struct usrdma_sg_entry *entry, u32 *handle,
			     u64 *seq)
{
	struct device *dev = &ud->pdev->dev;
	int ret;

	/* The pages are not needed any more: the data is copied. */
	usrdma_map_unpin(m);
	m->bounce_size = m->npages * PAGE_SIZE;

	mutex_lock(&ud->lock);
	if (ud->dead) {
		ret = -ENODEV;
		goto err_unlock;
	}
	if (ud->nmaps >= USRDMA_MAX_MAPPINGS) {
		ret = -ENOSPC;
		goto err_unlock;
	}
	/* Coherent mask = DMA mask (dma_set_mask_and_coherent). */
	m->bounce = dma_alloc_coherent(dev, m->bounce_size, &m->bounce_dma,
				       USRDMA_GFP_USER_SIZED);
	if (!m->bounce) {
		ret = -ENOMEM;
		goto err_unlock;
	}
	if (m->bounce_dma + m->bounce_size - 1 > dev->coherent_dma_mask) {
		/* A DMA layer bug (seen with an IOMMU and tiny masks): refuse. */
		dev_warn_ratelimited(dev, "bounce buffer above the DMA mask\n");
		ret = -EIO;
		goto err_unlock;
	}
	ret = usrdma_map_insert(ud, m);
	if (ret)
		goto err_unlock;
	/* Keep it while copying; an UNMAP meanwhile only drops the table's. */
	refcount_inc(&m->ref);
	*handle = m->handle;
	*seq = m->seq;
	mutex_unlock(&ud->lock);

	entry->dma_addr = m->bounce_dma + offset_in_page(m->addr);
	entry->length = m->length;
	ret = usrdma_copy_user(m->bounce + offset_in_page(m->addr), m->addr,
			       m->length, false);
	usrdma_map_put(ud, m);
	if (ret)
		usrdma_map_remove(ud, *handle, *seq);
	return ret;

err_unlock:
	mutex_unlock(&ud->lock);
	usrdma_map_free(ud, m);
	return ret;
}

static long usrdma_ioctl_map_user(struct usrdma_dev *ud, void __user *uarg)
{
	struct device *dev = &ud->pdev->dev;
	struct usrdma_sg_entry *entries = NULL;
	struct usrdma_map_user arg;
	struct usrdma_map *m;
	unsigned long npages;
	u64 end, seq;
	u32 argsz, count;
	int ret;

	ret = usrdma_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &argsz);
	if (ret)
		return ret;
	if ((arg.flags & ~USRDMA_DIR_MASK) || !(arg.flags & USRDMA_DIR_MASK) ||
	    arg.count || arg.handle || arg.out_flags)
		return -EINVAL;
	if (!arg.length || arg.length > USRDMA_MAX_MAP_SIZE ||
	    check_add_overflow(arg.addr, arg.length, &end))
		return -EINVAL;
	/* No overflow: the offset is below a page, length at most 1 GiB. */
	npages = DIV_ROUND_UP(offset_in_page(arg.addr) + arg.length, PAGE_SIZE);
	if (arg.capacity < npages) {
		arg.count = npages;
		ret = usrdma_copy_out(uarg, &arg, sizeof(arg), argsz);
		return ret ? ret : -EINVAL;
	}
	if (!arg.entries)
		return -EINVAL;
	if (arg.addr != (unsigned long)arg.addr ||
	    !access_ok(u64_to_user_ptr(arg.addr), arg.length) ||
	    !access_ok(u64_to_user_ptr(arg.entries),
		       npages * sizeof(*entries)))
		return -EFAULT;
	if (READ_ONCE(ud->dead))
		return -ENODEV;
	if (READ_ONCE(ud->nmaps) >= USRDMA_MAX_MAPPINGS)
		return -ENOSPC;

	m = kzalloc(sizeof(*m), GFP_KERNEL_ACCOUNT);
	entries = kvmalloc_array(npages, sizeof(*entries),
				 USRDMA_GFP_USER_SIZED | __GFP_ACCOUNT);
	if (!m || !entries) {
		kfree(m);
		kvfree(entries);
		return -ENOMEM;
	}
	refcount_set(&m->ref, 1);
	m->dir = arg.flags & USRDMA_DIR_MASK;
	m->addr = arg.addr;
	m->length = arg.length;
	m->npages = npages;

	/* Pinning faults pages in (mmap_lock): not under ud->lock. */
	ret = usrdma_map_pin(m);
	if (ret) {
		usrdma_map_free(ud, m);
		goto out;
	}

	mutex_lock(&ud->lock);
	if (ud->dead) {
		ret = -ENODEV;
	} else if (ud->nmaps >= USRDMA_MAX_MAPPINGS) {
		ret = -ENOSPC;
	} else if (!usrdma_pages_reachable(dev, m->pages, m->npages)) {
		mutex_unlock(&ud->lock);
		ret = usrdma_map_bounce(ud, m, entries, &arg.handle, &seq);
		if (ret)
			goto out;
		arg.out_flags = USRDMA_MAP_BOUNCED;
		count = 1;
		goto copy_out;
	} else {
		ret = dma_map_sgtable(dev, &m->sgt, usrdma_dma_dir(m->dir), 0);
		if (!ret) {
			m->dma_mapped = true;
			m->dirty = m->dir & USRDMA_DIR_FROM_DEVICE;
			if (usrdma_map_below(m, DMA_BIT_MASK(ud->mask_bits))) {
				ret = usrdma_map_insert(ud, m);
			} else {
				/* As for buffers: never hand it out. */
				dev_warn_ratelimited(dev, "user mapping above the DMA mask\n");
				ret = -EIO;
			}
		}
	}
	if (ret) {
		mutex_unlock(&ud->lock);
		usrdma_map_free(ud, m);
		goto out;
	}
	count = usrdma_map_entries(m, entries);
	arg.handle = m->handle;
	seq = m->seq;
	mutex_unlock(&ud->lock);

copy_out:
	/* m may be gone (a racing UNMAP of the handle): use copies only. */
	arg.count = count;
	if (copy_to_user(u64_to_user_ptr(arg.entries), entries,
			 array_size(count, sizeof(*entries))))
		ret = -EFAULT;
	else
		ret = usrdma_copy_out(uarg, &arg, sizeof(arg), argsz);
	if (ret)
		/* The caller cannot know the mapping: take it back. */
		usrdma_map_remove(ud, arg.handle, seq);
out:
	kvfree(entries);
	return ret;
}

static long usrdma_ioctl_unmap_user(struct usrdma_dev *ud, void __user *uarg)
{
	struct usrdma_unmap_user arg;
	struct usrdma_map *m;
	u32 argsz;
	int ret;

	ret = usrdma_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &argsz);
	if (ret)
		return ret;
	if (arg.flags || arg.reserved)
		return -EINVAL;

	mutex_lock(&ud->lock);
	if (ud->dead) {
		mutex_unlock(&ud->lock);
		return -ENODEV;
	}
	m = xa_load(&ud->maps, arg.handle);
	if (!m) {
		mutex_unlock(&ud->lock);
		return -ENOENT;
	}
	/* The DMA mapping goes now; the table's reference is ours. */
	usrdma_map_detach(ud, m);
	mutex_unlock(&ud->lock);

	/*
	 * What the device wrote into a bounce buffer goes back to the caller's
	 * memory, if that is still there (and only into the mapper's address
	 * space: after fork() the same address means other memory).
	 */
	if (m->bounce && (m->dir & USRDMA_DIR_FROM_DEVICE) &&
	    current->mm == m->mm) {
		dma_rmb();
		usrdma_copy_user(m->bounce + offset_in_page(m->addr), m->addr,
				 m->length, true);
	}
	usrdma_map_put(ud, m);
	return 0;
}

static long usrdma_ioctl_sync(struct usrdma_dev *ud, void __user *uarg)
{
	struct device *dev = &ud->pdev->dev;
	struct usrdma_sync arg;
	struct usrdma_map *m;
	struct usrdma_buf *buf;
	bool for_cpu;
	u64 end;
	u32 argsz;
	int ret;

	ret = usrdma_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &argsz);
	if (ret)
		return ret;
	if ((arg.flags & ~(USRDMA_SYNC_FOR_CPU | USRDMA_SYNC_FOR_DEVICE |
			   USRDMA_SYNC_BUFFER)) || arg.reserved)
		return -EINVAL;
	switch (arg.flags & (USRDMA_SYNC_FOR_CPU | USRDMA_SYNC_FOR_DEVICE)) {
	case USRDMA_SYNC_FOR_CPU:
		for_cpu = true;
		break;
	case USRDMA_SYNC_FOR_DEVICE:
		for_cpu = false;
		break;
	default:
		return -EINVAL;
	}
	if (check_add_overflow(arg.offset, arg.length, &end))
		return -EINVAL;

	mutex_lock(&ud->lock);
	if (ud->dead) {
		ret = -ENODEV;
		goto out_unlock;
	}
	if (arg.flags & USRDMA_SYNC_BUFFER) {
		/* Coherent: nothing to do but check. */
		buf = usrdma_find_id(ud, arg.handle);
		if (!buf)
			ret = -ENOENT;
		else if (end > buf->size)
			ret = -EINVAL;
		goto out_unlock;
	}
	m = xa_load(&ud->maps, arg.handle);
	if (!m) {
		ret = -ENOENT;
		goto out_unlock;
	}
	if (end > m->length) {
		ret = -EINVAL;
		goto out_unlock;
	}
	if (!m->bounce) {
		/* The whole table: the range is only a hint. */
		if (for_cpu)
			dma_sync_sgtable_for_cpu(dev, &m->sgt,
						 usrdma_dma_dir(m->dir));
		else
			dma_sync_sgtable_for_device(dev, &m->sgt,
						    usrdma_dma_dir(m->dir));
		goto out_unlock;
	}
	/* Bounced: copy, in the mapper's address space only. */
	if (current->mm != m->mm) {
		ret = -EPERM;
		goto out_unlock;
	}
	if (!arg.length || (for_cpu && !(m->dir & USRDMA_DIR_FROM_DEVICE)))
		goto out_unlock;	/* the device did not write */
	refcount_inc(&m->ref);
	mutex_unlock(&ud->lock);

	if (for_cpu) {
		dma_rmb();
		ret = usrdma_copy_user(m->bounce + offset_in_page(m->addr) +
				       arg.offset, m->addr + arg.offset,
				       arg.length, true);
	} else {
		ret = usrdma_copy_user(m->bounce + offset_in_page(m->addr) +
				       arg.offset, m->addr + arg.offset,
				       arg.length, false);
		/* The copy is visible before the caller's doorbell write. */
		dma_wmb();
	}
	usrdma_map_put(ud, m);
	return ret;

out_unlock:
	mutex_unlock(&ud->lock);
	return ret;
}

static long usrdma_ioctl_set_irq(struct usrdma_dev *ud, void __user *uarg)
{
	struct usrdma_vec *vecs = NULL;
	struct usrdma_irq arg;
	s32 *fds = NULL;
	u32 argsz, i, max;
	int ret;

	ret = usrdma_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &argsz);
	if (ret)
		return ret;
	switch (arg.type) {
	case USRDMA_IRQ_NONE:
		max = 0;
		break;
	case USRDMA_IRQ_INTX:
		max = 1;
		break;
	case USRDMA_IRQ_MSI:
		max = 32;
		break;
	case USRDMA_IRQ_MSIX:
		max = 2048;
		break;
	default:
		return -EINVAL;
	}
	if (arg.flags || arg.count > max ||
	    (arg.type != USRDMA_IRQ_NONE && !arg.count))
		return -EINVAL;

	/* The eventfds first: a bad one changes nothing. */
	if (arg.count) {
		fds = memdup_array_user(u64_to_user_ptr(arg.eventfds),
					arg.count, sizeof(*fds));
		if (IS_ERR(fds))
			return PTR_ERR(fds);
		vecs = kcalloc(arg.count, sizeof(*vecs), GFP_KERNEL_ACCOUNT);
		if (!vecs) {
			ret = -ENOMEM;
			goto err_put;
		}
		for (i = 0; i < arg.count; i++) {
			struct eventfd_ctx *ctx = eventfd_ctx_fdget(fds[i]);

			if (IS_ERR(ctx)) {
				ret = PTR_ERR(ctx);
				goto err_put;
			}
			vecs[i].trigger = ctx;
		}
	}

	mutex_lock(&ud->lock);
	if (ud->dead) {
		ret = -ENODEV;
		goto err_unlock;
	}
	if (arg.count && !usrdma_irq_supported(ud->pdev, arg.type, arg.count)) {
		ret = -EINVAL;
		goto err_unlock;
	}
	usrdma_irq_free(ud, false);
	ret = arg.count ? usrdma_irq_setup(ud, arg.type, arg.count, vecs) : 0;
	mutex_unlock(&ud->lock);
	kfree(fds);
	return ret;

err_unlock:
	mutex_unlock(&ud->lock);
err_put:
	for (i = 0; vecs && i < arg.count; i++)
		if (vecs[i].trigger)
			eventfd_ctx_put(vecs[i].trigger);
	kfree(vecs);
	kfree(fds);
	return ret;
}

static long usrdma_ioctl_irq_unmask(struct usrdma_dev *ud, void __user *uarg)
{
	struct usrdma_irq_unmask arg;
	u32 argsz;
	int ret;

	ret = usrdma_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &argsz);
	if (ret)
		return ret;
	if (arg.flags)
		return -EINVAL;

	mutex_lock(&ud->lock);
	if (ud->dead) {
		ret = -ENODEV;
	} else if (ud->irq_type != USRDMA_IRQ_INTX) {
		ret = -EINVAL;
	} else if (!pci_check_and_unmask_intx(ud->pdev)) {
		/*
		 * The device still asserts INTx: it stays masked and the
		 * interrupt is signalled again (as vfio-pci does).
		 */
		eventfd_signal(ud->vecs[0].trigger, 1);
		atomic64_inc(&ud->irq_count);
	}
	mutex_unlock(&ud->lock);
	return ret;
}

static long usrdma_ioctl_reset(struct usrdma_dev *ud, void __user *uarg)
{
	struct usrdma_reset arg;
	u32 argsz;
	int ret;

	ret = usrdma_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &argsz);
	if (ret)
		return ret;
	if (arg.flags)
		return -EINVAL;

	/*
	 * Holding ud->lock keeps remove() from finishing while the device is
	 * reset, and cannot deadlock with it: remove() holds the device lock,
	 * which pci_try_reset_function() only tries to take (EAGAIN).
	 */
	mutex_lock(&ud->lock);
	if (ud->dead)
		ret = -ENODEV;
	else
		ret = pci_try_reset_function(ud->pdev);
	mutex_unlock(&ud->lock);
	return ret;
}

static long usrdma_ioctl(struct file *file, unsigned int cmd,
			 unsigned long arg)
{
	struct usrdma_dev *ud = file->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case USRDMA_GET_INFO:
		return usrdma_ioctl_info(ud, uarg);
	case USRDMA_SET_DMA_MASK:
		return usrdma_ioctl_set_mask(ud, uarg);
	case USRDMA_ALLOC:
		return usrdma_ioctl_alloc(ud, uarg);
	case USRDMA_FREE:
		return usrdma_ioctl_free(ud, uarg);
	case USRDMA_LIST:
		return usrdma_ioctl_list(ud, uarg);
	case USRDMA_MAP_USER:
		return usrdma_ioctl_map_user(ud, uarg);
	case USRDMA_UNMAP_USER:
		return usrdma_ioctl_unmap_user(ud, uarg);
	case USRDMA_SYNC:
		return usrdma_ioctl_sync(ud, uarg);
	case USRDMA_SET_IRQ:
		return usrdma_ioctl_set_irq(ud, uarg);
	case USRDMA_IRQ_UNMASK:
		return usrdma_ioctl_irq_unmask(ud, uarg);
	case USRDMA_RESET:
		return usrdma_ioctl_reset(ud, uarg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations usrdma_fops = {
	.owner = THIS_MODULE,
	.open = usrdma_open,
	.release = usrdma_release,
	.unlocked_ioctl = usrdma_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = usrdma_mmap,
	.poll = usrdma_poll,
	.llseek = no_llseek,
};

/* ---- sysfs --------------------------------------------------------------- */

/*
 * A buffer name as one space-free word: "-" when empty; bytes other than
 * printable ASCII, space and backslash (and a lone "-") as \ooo octal.
 */
static void usrdma_escape_name(char *out, const char *name)
{
	const unsigned char *c = (const unsigned char *)name;

	if (!*c) {
		strcpy(out, "-");
		return;
	}
	for (; *c; c++) {
		if (*c > ' ' && *c < 0x7f && *c != '\\' &&
		    !(*c == '-' && c == (const unsigned char *)name && !c[1]))
			*out++ = *c;
		else
			out += sprintf(out, "\\%03o", *c);
	}
	*out = '\0';
}

static ssize_t usrdma_buffers_show(struct device *dev,
				   struct device_attribute *attr, char *page)
{
	struct usrdma_dev *ud = dev_get_drvdata(dev);
	char name[USRDMA_NAME_LEN * 4];
	struct usrdma_buf *buf;
	char line[256];
	size_t len = 0;
	int n;

	if (!ud)
		return -ENODEV;
	mutex_lock(&ud->lock);
	list_for_each_entry(buf, &ud->bufs, node) {
		pid_t pid = 0;

		rcu_read_lock();
		if (pid_has_task(buf->owner, PIDTYPE_TGID))
			pid = pid_nr(buf->owner);
		rcu_read_unlock();
		usrdma_escape_name(name, buf->name);
		n = scnprintf(line, sizeof(line), "%u %s 0x%zx 0x%llx 0x%x %d\n",
			      buf->id, name, buf->size,
			      (unsigned long long)buf->dma_addr, buf->flags,
			      pid);
		/* Whole lines, as many as fit in the page. */
		if (len + n >= PAGE_SIZE)
			break;
		memcpy(page + len, line, n);
		len += n;
	}
	mutex_unlock(&ud->lock);
	return len;
}
static DEVICE_ATTR_ADMIN_RO(usrdma_buffers);

static ssize_t usrdma_stats_show(struct device *dev,
				 struct device_attribute *attr, char *page)
{
	struct usrdma_dev *ud = dev_get_drvdata(dev);
	unsigned int opened, buffers, irqs;
	u64 buffer_bytes;

	if (!ud)
		return -ENODEV;
	mutex_lock(&ud->lock);
	opened = ud->open && !ud->dead;
	buffers = ud->nbufs;
	buffer_bytes = ud->buf_bytes;
	irqs = ud->nvec;
	mutex_unlock(&ud->lock);
	return sysfs_emit(page,
			  "opened %u\nbuffers %u\nbuffer_bytes %llu\n"
			  "user_mappings %d\npinned_pages %ld\n"
			  "bounce_bytes %ld\nirqs %u\nirq_count %lld\n",
			  opened, buffers, buffer_bytes,
			  atomic_read(&ud->user_mappings),
			  atomic_long_read(&ud->pinned_pages),
			  atomic_long_read(&ud->bounce_bytes), irqs,
			  (long long)atomic64_read(&ud->irq_count));
}
static DEVICE_ATTR_RO(usrdma_stats);

static struct attribute *usrdma_attrs[] = {
	&dev_attr_usrdma_buffers.attr,
	&dev_attr_usrdma_stats.attr,
	NULL,
};
ATTRIBUTE_GROUPS(usrdma);

/* ---- PCI driver ---------------------------------------------------------- */

static int usrdma_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct usrdma_dev *ud;
	int ret;

	/* Only ever bound on purpose, through driver_override. */
	if (!pdev->driver_override)
		return -ENODEV;
	if (pdev->hdr_type != PCI_HEADER_TYPE_NORMAL)
		return -EINVAL;

	ud = kzalloc(sizeof(*ud), GFP_KERNEL);
	if (!ud)
		return -ENOMEM;
	kref_init(&ud->ref);
	mutex_init(&ud->lock);
	init_waitqueue_head(&ud->wq);
	INIT_LIST_HEAD(&ud->bufs);
	ida_init(&ud->ids);
	xa_init_flags(&ud->maps, XA_FLAGS_ALLOC1);
	ud->next_handle = 1;
	ud->pdev = pci_dev_get(pdev);
	ud->mask_bits = USRDMA_DEFAULT_MASK_BITS;
	ud->next_seq = 1;
	ud->next_offset = USRDMA_BUF_OFFSET_BASE;
	ud->irq_type = USRDMA_IRQ_NONE;
	snprintf(ud->name, sizeof(ud->name), "usrdma-%s", pci_name(pdev));
	snprintf(ud->nodename, sizeof(ud->nodename), "usrdma/%s",
		 pci_name(pdev));

	ud->misc.minor = MISC_DYNAMIC_MINOR;
	ud->misc.name = ud->name;
	ud->misc.nodename = ud->nodename;
	ud->misc.mode = 0600;
	ud->misc.fops = &usrdma_fops;
	ud->misc.parent = &pdev->dev;

	pci_set_drvdata(pdev, ud);
	ret = misc_register(&ud->misc);
	if (ret) {
		pci_set_drvdata(pdev, NULL);
		kref_put(&ud->ref, usrdma_dev_free);
		return ret;
	}
	dev_info(&pdev->dev, "/dev/%s\n", ud->nodename);
	return 0;
}

static void usrdma_remove(struct pci_dev *pdev)
{
	struct usrdma_dev *ud = pci_get_drvdata(pdev);
	bool was_open;
	LIST_HEAD(maps);

	/* No new opens once this returns; opens in progress have finished. */
	misc_deregister(&ud->misc);

	mutex_lock(&ud->lock);
	WRITE_ONCE(ud->dead, true);
	was_open = ud->open;
	/* Revoke: BAR and buffer mappings go first, then DMA stops. */
	if (ud->mapping)
		unmap_mapping_range(ud->mapping, 0, 0, 1);
	if (ud->enabled)
		usrdma_stop(ud, true, &maps);
	mutex_unlock(&ud->lock);
	wake_up_all(&ud->wq);

	usrdma_put_maps(ud, &maps);

	mutex_lock(&ud->lock);
	if (ud->enabled)
		usrdma_disable(ud, true);
	else
		usrdma_free_buffers(ud, true);
	mutex_unlock(&ud->lock);
	if (was_open)
		dev_info(&pdev->dev, "removed while open: access revoked\n");

	pci_set_drvdata(pdev, NULL);
	kref_put(&ud->ref, usrdma_dev_free);
}

static struct pci_driver usrdma_driver = {
	.name = KBUILD_MODNAME,
	.id_table = NULL,	/* binds only through driver_override */
	.probe = usrdma_probe,
	.remove = usrdma_remove,
	.dev_groups = usrdma_groups,
};

module_pci_driver(usrdma_driver);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("The usrdrv authors");
MODULE_DESCRIPTION("DMA buffers, user memory mapping and interrupts for user-space PCI drivers without an IOMMU");
