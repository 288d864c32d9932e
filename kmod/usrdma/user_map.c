// SPDX-License-Identifier: GPL-2.0
/*
 * usrdma: the caller's memory mapped for DMA (MAP_USER, UNMAP_USER, SYNC),
 * pinned or bounced through a coherent buffer below the DMA mask.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/dma-direct.h>
#include <linux/dma-map-ops.h>
#include <linux/dma-mapping.h>
#include <linux/kernel.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/refcount.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/xarray.h>

#include "usrdma.h"

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
	usrdma_map_uncount(ud, m);
	if (m->mm)
		mmdrop(m->mm);
	kfree(m);
}

/*
 * Takes a mapping out of the statistics of live mappings (when it goes, or
 * into the quarantine, which counts it itself).
 */
void usrdma_map_uncount(struct usrdma_dev *ud, struct usrdma_map *m)
{
	if (!m->counted)
		return;
	atomic_dec(&ud->user_mappings);
	if (m->bounce)
		atomic_long_sub(m->bounce_size, &ud->bounce_bytes);
	else
		atomic_long_sub(m->npages, &ud->pinned_pages);
	m->counted = false;
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

/*
 * Takes every mapping out of the table onto list (release, remove), with
 * the table's reference. Their DMA mappings stay until they are freed: a
 * device that could not be reset may still write them (the quarantine),
 * and a swiotlb slot given back now could be handed to someone else.
 */
void usrdma_detach_maps(struct usrdma_dev *ud, struct list_head *list)
{
	struct usrdma_map *m;
	unsigned long idx;

	lockdep_assert_held(&ud->lock);

	xa_for_each(&ud->maps, idx, m) {
		xa_erase(&ud->maps, m->handle);
		ud->nmaps--;
		list_add_tail(&m->dead_node, list);
	}
}

/* Drops the table's references of detached mappings. Never under ud->lock. */
void usrdma_put_maps(struct usrdma_dev *ud, struct list_head *list)
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
 * Whether every page can be reached by the device under its DMA mask. The
 * DMA API says when the mask covers all memory (dma_addressing_limited());
 * otherwise, through an IOMMU the mapping picks addresses below the mask,
 * and for dma-direct the bus address of each page is checked here, because
 * mapping an unreachable page WARNs when swiotlb is not active. Whatever
 * this says, the addresses dma_map_sgtable() returns are checked against
 * the mask before they are handed out.
 */
static bool usrdma_pages_reachable(struct device *dev, struct page **pages,
				   unsigned long npages)
{
	u64 limit;
	unsigned long i;

	if (!dma_addressing_limited(dev) || usrdma_dma_translated(dev))
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
bool usrdma_map_below(struct usrdma_map *m, u64 mask)
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
 * rescheduling between them (a mapping can be 1 GiB), and stopping with
 * ENODEV once the device is removed: remove() waits for the copy.
 */
static int usrdma_copy_user(struct usrdma_dev *ud, void *kbuf, u64 uaddr,
			    u64 len, bool to_user)
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
			if (READ_ONCE(ud->dead))
				return -ENODEV;
			cond_resched();
		}
	}
	return 0;
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
	ret = usrdma_copy_user(ud, m->bounce + offset_in_page(m->addr), m->addr,
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

long usrdma_ioctl_map_user(struct usrdma_dev *ud, void __user *uarg)
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

	/*
	 * Only memory no file system writes back (pinnable.c). out_flags tells
	 * this EINVAL from the others, so that the caller can say what to use.
	 */
	ret = usrdma_check_pinnable(arg.addr & PAGE_MASK, PAGE_ALIGN(end));
	if (ret == -EINVAL) {
		arg.out_flags = USRDMA_MAP_NOT_PINNABLE;
		ret = usrdma_copy_out(uarg, &arg, sizeof(arg), argsz);
		return ret ? ret : -EINVAL;
	}
	if (ret)
		return ret;

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

long usrdma_ioctl_unmap_user(struct usrdma_dev *ud, void __user *uarg)
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
		usrdma_copy_user(ud, m->bounce + offset_in_page(m->addr), m->addr,
				 m->length, true);
	}
	usrdma_map_put(ud, m);
	return 0;
}

long usrdma_ioctl_sync(struct usrdma_dev *ud, void __user *uarg)
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
		ret = usrdma_copy_user(ud, m->bounce + offset_in_page(m->addr) +
				       arg.offset, m->addr + arg.offset,
				       arg.length, true);
	} else {
		ret = usrdma_copy_user(ud, m->bounce + offset_in_page(m->addr) +
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
