// SPDX-License-Identifier: GPL-2.0
/*
 * usrdma: copying of ioctl arguments, the ioctl dispatcher and the ioctls
 * on the device as a whole (GET_INFO, SET_DMA_MASK, RESET,
 * QUIESCED).
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/ctype.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/xarray.h>

#include "usrdma.h"

/* ---- argument copying ---------------------------------------------------- */

/*
 * Copies a versioned argument structure in: argsz must be at least minsz;
 * bytes past ksize must be zero (copy_struct_from_user checks that).
 */
int usrdma_copy_in(void *karg, size_t ksize, size_t minsz,
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

int usrdma_copy_out(void __user *uarg, const void *karg, size_t ksize,
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
int usrdma_check_name(const char *name)
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

/* ---- ioctls -------------------------------------------------------------- */

static long usrdma_ioctl_info(struct usrdma_dev *ud, void __user *uarg)
{
	struct pci_dev *pdev = ud->pdev;
	struct usrdma_info info;
	unsigned int i;
	u32 argsz;
	int ret;

	BUILD_BUG_ON(offsetof(struct usrdma_info, max_buf_size) !=
		     USRDMA_INFO_SIZE_V1);
	ret = usrdma_copy_in(&info, sizeof(info), USRDMA_INFO_SIZE_V1, uarg,
			     &argsz);
	if (ret)
		return ret;
	if (info.flags || info.reserved0 || info.reserved1 ||
	    info.max_buf_size || info.info_flags || info.reserved2)
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
	info.max_buf_size = usrdma_max_buf_size(&pdev->dev, &info.info_flags);
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

static long usrdma_ioctl_reset(struct usrdma_dev *ud, void __user *uarg)
{
	struct usrdma_reset arg;
	LIST_HEAD(maps);
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
	if (ud->dead) {
		ret = -ENODEV;
	} else {
		/*
		 * As vfio-pci does (CVE-2020-12888): an access to a BAR while
		 * the function is reset (memory decoding off, the device not
		 * answering) can make the platform raise an error, and what it
		 * reads is garbage. So the user's BAR mappings go first; a
		 * fault on them takes ud->lock (usrdma_vm_fault) and so waits
		 * until the reset is over and the state restored, then maps
		 * the BAR again. Buffers are memory, not the device: they stay.
		 */
		if (ud->mapping)
			unmap_mapping_range(ud->mapping, 0,
					    USRDMA_BUF_OFFSET_BASE, 1);
		ret = pci_try_reset_function(ud->pdev);
	}
	/* Nothing queued before survives a reset. */
	if (!ret)
		usrdma_quarantine_take(ud, &maps);
	mutex_unlock(&ud->lock);
	usrdma_put_maps(ud, &maps);
	return ret;
}

static long usrdma_ioctl_quiesced(struct usrdma_dev *ud, void __user *uarg)
{
	struct usrdma_quiesced arg;
	LIST_HEAD(maps);
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
	} else if (usrdma_master_on(ud)) {
		/* A transfer may be landing right now: too late to say. */
		ret = -EBUSY;
	} else {
		usrdma_quarantine_take(ud, &maps);
		ret = 0;
	}
	mutex_unlock(&ud->lock);
	usrdma_put_maps(ud, &maps);
	return ret;
}

static long usrdma_dispatch(struct usrdma_dev *ud, unsigned int cmd,
			    void __user *uarg)
{
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
	case USRDMA_QUIESCED:
		return usrdma_ioctl_quiesced(ud, uarg);
	default:
		return -ENOTTY;
	}
}

long usrdma_ioctl(struct file *file, unsigned int cmd,
		  unsigned long arg)
{
	struct usrdma_dev *ud = file->private_data;
	long ret;

	/* remove() waits for this to return (see usrdma_enter). */
	if (!usrdma_enter(ud))
		return -ENODEV;
	/* The owner may have turned bus mastering on: a quarantine waits. */
	usrdma_quarantine_note_master(ud);
	ret = usrdma_dispatch(ud, cmd, (void __user *)arg);
	usrdma_exit(ud);
	return ret;
}
