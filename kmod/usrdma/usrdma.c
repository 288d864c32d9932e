// SPDX-License-Identifier: GPL-2.0
/*
 * usrdma - DMA for user-space PCI drivers on machines without an IOMMU.
 *
 * A PCI driver that binds only through driver_override. Each bound function
 * gets a node /dev/usrdma/DDDD:BB:DD.F. Its single opener (CAP_SYS_RAWIO)
 * can map the device's memory BARs, set the DMA mask and allocate named
 * coherent DMA buffers that it maps through the same file. The ABI is in
 * usrdma_uapi.h.
 *
 * Locking: usrdma_dev.lock protects everything in usrdma_dev after probe.
 * No user memory is touched while it is held (mmap runs with mmap_lock
 * held and then takes the device lock, so the reverse order would
 * deadlock): ioctls copy their arguments in, take the lock, work, drop it
 * and copy out.
 *
 * Lifetimes: usrdma_dev is reference counted; probe holds one reference,
 * each open file another. remove() unregisters the node, marks the device
 * dead, removes the open file's mappings, stops DMA and frees every buffer;
 * the open file then only gets ENODEV and EPOLLHUP until it is closed.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/ctype.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/kernel.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/pid.h>
#include <linux/poll.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

#include "usrdma_uapi.h"

#define USRDMA_DEFAULT_MASK_BITS	32
#define USRDMA_MAX_BUF_SIZE		(1ULL << 30)
#define USRDMA_MAX_BUFFERS		4096
/* Largest argsz accepted; larger structures are not going to happen. */
#define USRDMA_MAX_ARGSZ		PAGE_SIZE

struct usrdma_buf {
	struct list_head node;
	u32 id;
	u32 flags;		/* USRDMA_BUF_* */
	u64 seq;		/* unique for the device's lifetime */
	size_t size;		/* page multiple */
	void *cpu_addr;
	dma_addr_t dma_addr;
	unsigned long attrs;
	u64 offset;		/* mmap offset, bytes */
	struct pid *owner;
	char name[USRDMA_NAME_LEN];
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
	struct address_space *mapping;	/* of the open file, for zapping */
	unsigned int mask_bits;

	struct list_head bufs;
	unsigned int nbufs;
	struct ida ids;
	u64 next_seq;
	u64 next_offset;
};

static void usrdma_dev_free(struct kref *ref)
{
	struct usrdma_dev *ud = container_of(ref, struct usrdma_dev, ref);

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

/* ---- enabling and disabling the device ----------------------------------- */

static int usrdma_enable(struct usrdma_dev *ud)
{
	struct pci_dev *pdev = ud->pdev;
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
	pci_set_master(pdev);
	return 0;

err_release:
	pci_release_regions(pdev);
err_disable:
	pci_disable_device(pdev);
	return ret;
}

/* Stops DMA first, then frees buffers (all, or the non-persistent ones). */
static void usrdma_disable(struct usrdma_dev *ud, bool all_buffers)
{
	struct pci_dev *pdev = ud->pdev;

	pci_clear_master(pdev);
	usrdma_free_buffers(ud, all_buffers);
	pci_release_regions(pdev);
	pci_disable_device(pdev);
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

	mutex_lock(&ud->lock);
	/*
	 * All mappings of this file are gone (each holds the file), so the
	 * buffers can be freed without zapping anything.
	 */
	ud->mapping = NULL;
	if (!ud->dead)
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

/* Accesses to a mapping whose pages were taken away get SIGBUS. */
static vm_fault_t usrdma_vm_fault(struct vm_fault *vmf)
{
	return VM_FAULT_SIGBUS;
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

	vma->vm_ops = &usrdma_vm_ops;
	vma->vm_page_prot = pgprot_noncached(vma->vm_page_prot);
	return io_remap_pfn_range(vma, vma->vm_start,
				  (start + bar_off) >> PAGE_SHIFT, len,
				  vma->vm_page_prot);
}

static int usrdma_mmap_buf(struct usrdma_dev *ud, struct vm_area_struct *vma,
			   u64 off, u64 len)
{
	struct usrdma_buf *buf;
	unsigned long pgoff = vma->vm_pgoff;
	int ret;

	list_for_each_entry(buf, &ud->bufs, node)
		if (off >= buf->offset && off - buf->offset < buf->size)
			break;
	if (list_entry_is_head(buf, &ud->bufs, node))
		return -EINVAL;
	if (len > buf->size - (off - buf->offset))
		return -EINVAL;

	vma->vm_ops = &usrdma_vm_ops;
	/*
	 * dma_mmap_attrs() takes vm_pgoff as the offset into the buffer; put
	 * the file offset back afterwards so that unmap_mapping_range() finds
	 * the mapping when the buffer is freed.
	 */
	vma->vm_pgoff = (off - buf->offset) >> PAGE_SHIFT;
	ret = dma_mmap_attrs(&ud->pdev->dev, vma, buf->cpu_addr, buf->dma_addr,
			     buf->size, buf->attrs);
	vma->vm_pgoff = pgoff;
	return ret;
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
	return ret;
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
					GFP_KERNEL, buf->attrs);
	if (!buf->cpu_addr) {
		ret = -ENOMEM;
		goto err_ida;
	}
	if (buf->dma_addr + buf->size - 1 > DMA_BIT_MASK(ud->mask_bits)) {
		/* Cannot happen with a correct DMA layer; never hand it out. */
		dev_warn(dev, "coherent buffer above the DMA mask\n");
		ret = -EIO;
		goto err_free;
	}
	buf->owner = get_task_pid(current, PIDTYPE_TGID);
	buf->seq = seq = ud->next_seq++;
	buf->offset = ud->next_offset;
	ud->next_offset += buf->size;
	list_add_tail(&buf->node, &ud->bufs);
	ud->nbufs++;

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
	ud->pdev = pci_dev_get(pdev);
	ud->mask_bits = USRDMA_DEFAULT_MASK_BITS;
	ud->next_seq = 1;
	ud->next_offset = USRDMA_BUF_OFFSET_BASE;
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

	/* No new opens once this returns; opens in progress have finished. */
	misc_deregister(&ud->misc);

	mutex_lock(&ud->lock);
	WRITE_ONCE(ud->dead, true);
	if (ud->open) {
		/* Revoke: BAR and buffer mappings go first, then DMA stops. */
		if (ud->mapping)
			unmap_mapping_range(ud->mapping, 0, 0, 1);
		usrdma_disable(ud, true);
		dev_info(&pdev->dev, "removed while open: access revoked\n");
	} else {
		usrdma_free_buffers(ud, true);
	}
	mutex_unlock(&ud->lock);
	wake_up_all(&ud->wq);

	pci_set_drvdata(pdev, NULL);
	kref_put(&ud->ref, usrdma_dev_free);
}

static struct pci_driver usrdma_driver = {
	.name = KBUILD_MODNAME,
	.id_table = NULL,	/* binds only through driver_override */
	.probe = usrdma_probe,
	.remove = usrdma_remove,
};

module_pci_driver(usrdma_driver);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("The usrdrv authors");
MODULE_DESCRIPTION("DMA buffers and device access for user-space PCI drivers without an IOMMU");
