// SPDX-License-Identifier: GPL-2.0
/*
 * usrdma: mmap of the node (BARs and buffers), filled in at the first fault.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cc_platform.h>
#include <linux/dma-map-ops.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/mem_encrypt.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/refcount.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "usrdma.h"	/* and compat.h, which the next include needs */

#ifdef USRDMA_HAVE_USE_DMA_IOMMU
#include <linux/iommu-dma.h>
#endif

/*
 * What every vma made by one mmap() of the node shares (a split, mremap or
 * fork adds vmas to it, each holding a reference): the device, and the
 * page that revocation maps in place of the BAR or buffer. That page is
 * this mapping's own, so a late write through it is seen only through
 * this mapping: every other mapping of the node, in this process and in
 * others, keeps reading all-ones, as from a vanished device. Allocated at
 * the first fault after revocation; freed with the last vma, after its
 * page tables are gone.
 */
struct usrdma_vma {
	refcount_t ref;
	struct usrdma_dev *ud;
	struct page *dead_page;	/* under ud->lock */
};

static struct usrdma_dev *usrdma_vma_dev(struct vm_area_struct *vma)
{
	return ((struct usrdma_vma *)vma->vm_private_data)->ud;
}

static void usrdma_vma_put(struct usrdma_vma *uv)
{
	if (!refcount_dec_and_test(&uv->ref))
		return;
	if (uv->dead_page)
		__free_page(uv->dead_page);
	kfree(uv);
}

/* This mapping's page of all-ones, allocated at the first need, or NULL. */
static struct page *usrdma_dead_page(struct vm_area_struct *vma)
{
	struct usrdma_vma *uv = vma->vm_private_data;

	lockdep_assert_held(&uv->ud->lock);
	if (!uv->dead_page) {
		uv->dead_page = alloc_page(GFP_KERNEL);
		if (uv->dead_page)
			memset(page_address(uv->dead_page), 0xff, PAGE_SIZE);
	}
	return uv->dead_page;
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
 * Whether the DMA API maps for dev through something other than dma-direct
 * (an IOMMU's DMA domain, Xen's swiotlb): then the mapping chooses the bus
 * addresses, and coherent memory does not come from dma-direct. Such
 * devices used to have dma_map_ops; where the DMA API calls iommu-dma
 * directly (use_dma_iommu(), found by a probe) IOMMU-backed ones have none,
 * so get_dma_ops() alone would take them for dma-direct.
 */
bool usrdma_dma_translated(struct device *dev)
{
#ifdef USRDMA_HAVE_USE_DMA_IOMMU
	if (use_dma_iommu(dev))
		return true;
#endif
	return get_dma_ops(dev);
}

/*
 * Whether dma-direct handed this device unencrypted (shared) coherent
 * memory, which must be mapped decrypted: x86's force_dma_unencrypted(),
 * which is not exported. Decided at allocation, as the DMA layer did.
 */
bool usrdma_coherent_decrypted(struct device *dev)
{
#if defined(CONFIG_X86) && defined(CONFIG_ARCH_HAS_FORCE_DMA_UNENCRYPTED)
	if (usrdma_dma_translated(dev))
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
 * fault. After a FREE zapped a buffer's mappings, faults get SIGBUS (the
 * process used memory it freed). After revocation zapped everything, each
 * faulting page gets the device's dead page instead: reads return all-ones,
 * as from a vanished device, writes land nowhere that matters, and a driver
 * that had not yet seen the revocation does not crash. The dead page is
 * the mapping's own (struct usrdma_vma), so its writes show nowhere else.
 */
static vm_fault_t usrdma_vm_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct usrdma_dev *ud = usrdma_vma_dev(vma);
	u64 base = (u64)vma->vm_pgoff << PAGE_SHIFT;
	u64 fault_off = (u64)vmf->pgoff << PAGE_SHIFT;
	struct pci_dev *pdev = ud->pdev;
	struct usrdma_buf *buf = NULL;
	resource_size_t bar_start = 0;
	vm_fault_t ret = VM_FAULT_SIGBUS;
	unsigned long addr;
	pgprot_t prot;

	mutex_lock(&ud->lock);
	if (ud->dead) {
		struct page *dead = usrdma_dead_page(vma);

		ret = dead ? vmf_insert_pfn(vma, vmf->address & PAGE_MASK,
					    page_to_pfn(dead)) : VM_FAULT_OOM;
		goto out;
	}
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

/*
 * The buffer a vma of the node maps, or NULL (a BAR, a freed buffer, a
 * removed device). Called with the lock held.
 */
static struct usrdma_buf *usrdma_vma_buf(struct vm_area_struct *vma)
{
	struct usrdma_dev *ud = usrdma_vma_dev(vma);
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;

	lockdep_assert_held(&ud->lock);
	if (ud->dead || off < USRDMA_BUF_OFFSET_BASE)
		return NULL;
	return usrdma_find_offset(ud, off);
}

/* A new vma over a buffer: a split, a move (mremap) or a copy (fork). */
static void usrdma_vm_open(struct vm_area_struct *vma)
{
	struct usrdma_vma *uv = vma->vm_private_data;
	struct usrdma_dev *ud = uv->ud;
	struct usrdma_buf *buf;

	/* Its PTEs may map the dead page already (fork copies them). */
	refcount_inc(&uv->ref);
	mutex_lock(&ud->lock);
	buf = usrdma_vma_buf(vma);
	if (buf)
		buf->mmaps++;
	mutex_unlock(&ud->lock);
}

/*
 * A vma goes away (munmap, exit, or an mmap that failed after ->mmap).
 * Offsets are never reused, so a vma whose buffer was freed finds none.
 */
static void usrdma_vm_close(struct vm_area_struct *vma)
{
	struct usrdma_vma *uv = vma->vm_private_data;
	struct usrdma_dev *ud = uv->ud;
	struct usrdma_buf *buf;

	mutex_lock(&ud->lock);
	buf = usrdma_vma_buf(vma);
	if (buf && !WARN_ON_ONCE(!buf->mmaps))
		buf->mmaps--;
	mutex_unlock(&ud->lock);
	/* The vma's page tables are gone: the dead page may go with the last. */
	usrdma_vma_put(uv);
}

static const struct vm_operations_struct usrdma_vm_ops = {
	.open = usrdma_vm_open,
	.close = usrdma_vm_close,
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
	/*
	 * Counted now, under the lock, so that a FREE by name cannot slip in
	 * before the vma is linked; usrdma_vm_close() (set below, before
	 * anything can fail) takes it back.
	 */
	buf->mmaps++;
	return 0;
}

int usrdma_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct usrdma_dev *ud = file->private_data;
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;
	u64 len = vma->vm_end - vma->vm_start;
	struct usrdma_vma *uv;
	int ret;

	/* Private mappings would copy on write, away from the device. */
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	/* Before the lock: nothing may fail after usrdma_mmap_buf counts. */
	uv = kzalloc(sizeof(*uv), GFP_KERNEL);
	if (!uv)
		return -ENOMEM;
	refcount_set(&uv->ref, 1);
	uv->ud = ud;

	mutex_lock(&ud->lock);
	if (ud->dead)
		ret = -ENODEV;
	else if (off < USRDMA_BUF_OFFSET_BASE)
		ret = usrdma_mmap_bar(ud, vma, off, len);
	else
		ret = usrdma_mmap_buf(ud, vma, off, len);
	mutex_unlock(&ud->lock);
	if (ret) {
		kfree(uv);
		return ret;
	}
	/* Filled at the first fault; the file (and so ud) outlives the vma. */
#ifdef USRDMA_HAVE_VM_FLAGS_SET
	vm_flags_set(vma, VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP);
#else
	vma->vm_flags |= VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP;
#endif
	vma->vm_ops = &usrdma_vm_ops;
	vma->vm_private_data = uv;
	return 0;
}
