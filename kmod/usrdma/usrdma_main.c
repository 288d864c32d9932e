// SPDX-License-Identifier: GPL-2.0
/*
 * usrdma: the PCI driver, the module and the node's file operations.
 * usrdma.h describes the design, the locking and the lifetimes.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/device.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/kref.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/sched.h>
#include <linux/security.h>
#include <linux/slab.h>
#include <linux/wait.h>

#include "usrdma.h"

static void usrdma_dev_free(struct kref *ref)
{
	struct usrdma_dev *ud = container_of(ref, struct usrdma_dev, ref);

	xa_destroy(&ud->maps);
	ida_destroy(&ud->ids);
	mutex_destroy(&ud->lock);
	pci_dev_put(ud->pdev);
	kfree(ud);
}

/* ---- enabling and disabling the device ----------------------------------- */

/*
 * Resets the function if it has a reset method (a busy device lock, during
 * a remove or a reset from sysfs, counts as no reset), then saves its state
 * for release. Bus mastering is off: the saved state must not have it.
 * A reset ends any quarantine: nothing queued survives it.
 */
static void usrdma_reset_at_open(struct usrdma_dev *ud, struct list_head *maps)
{
	struct pci_dev *pdev = ud->pdev;

	ud->reset_works = !pci_try_reset_function(pdev);
	if (ud->reset_works)
		usrdma_quarantine_take(ud, maps);
	pci_save_state(pdev);
	ud->saved_state = pci_store_saved_state(pdev);
}

/*
 * Gives the device back in the state saved at open and resets it where the
 * reset at open worked: the state loaded, decoding and interrupts off,
 * the reset, the state written back. Returns whether it was reset, the
 * only case in which nothing the owner queued can still land.
 */
static bool usrdma_reset_at_release(struct usrdma_dev *ud)
{
	struct pci_dev *pdev = ud->pdev;
	bool reset = false;

	/* Without the state from open, the current one (bus mastering off). */
	if (!ud->saved_state ||
	    pci_load_and_free_saved_state(pdev, &ud->saved_state))
		pci_save_state(pdev);
	if (ud->reset_works && pci_dev_trylock(pdev)) {
		pci_write_config_word(pdev, PCI_COMMAND,
				      PCI_COMMAND_INTX_DISABLE);
		reset = !__pci_reset_function_locked(pdev);
		pci_dev_unlock(pdev);
	}
	pci_restore_state(pdev);
	return reset;
}

/*
 * Enables the device for a new opener with bus mastering off: user space
 * turns it on once it has stopped what a previous owner left running.
 * A quarantine that a reset ends goes onto maps, to be put after unlocking.
 */
static int usrdma_enable(struct usrdma_dev *ud, struct list_head *maps)
{
	struct pci_dev *pdev = ud->pdev;
	int ret;

	pci_clear_master(pdev);
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
	/* Off, whatever enabling or an earlier user left. */
	pci_clear_master(pdev);
	usrdma_reset_at_open(ud, maps);
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
 * the interrupts and takes the user mappings out of the table onto maps;
 * the caller quarantines them or unpins them after dropping the lock.
 */
static void usrdma_stop(struct usrdma_dev *ud, bool revoke,
			struct list_head *maps)
{
	lockdep_assert_held(&ud->lock);

	pci_clear_master(ud->pdev);
	usrdma_irq_free(ud, revoke);
	usrdma_detach_maps(ud, maps);
}

/*
 * Second half: frees the buffers left (all, or the non-persistent ones:
 * release quarantined them already when the device could not be reset),
 * disables.
 */
static void usrdma_disable(struct usrdma_dev *ud, bool all_buffers)
{
	struct pci_dev *pdev = ud->pdev;

	lockdep_assert_held(&ud->lock);

	usrdma_free_buffers(ud, all_buffers);
	/*
	 * Leave INTx masked, with no handler (freed by usrdma_stop): a device
	 * that still asserts its line would otherwise interrupt with nobody
	 * to acknowledge it, and on a shared line the kernel would disable
	 * the line ("nobody cared"), taking the other devices' interrupts
	 * with it. The next opener's SET_IRQ (INTx) unmasks it again.
	 */
	if (pdev->pin && pci_intx_mask_supported(pdev))
		pci_intx(pdev, 0);
	pci_release_regions(pdev);
	pci_disable_device(pdev);
	kfree(ud->saved_state);
	ud->saved_state = NULL;
	ud->enabled = false;
}

/* ---- file operations ----------------------------------------------------- */

/*
 * As vfio-noiommu does: a device that is not behind an IOMMU can reach all
 * memory once a process drives its DMA, so the kernel is tainted (for bug
 * reports) and the log says which process opened which device.
 */
static void usrdma_warn_unisolated(struct usrdma_dev *ud)
{
	if (device_iommu_mapped(&ud->pdev->dev))
		return;
	add_taint(TAINT_USER, LOCKDEP_STILL_OK);
	/* Rate-limited: a driver reopening in a loop must not flood the log. */
	dev_warn_ratelimited(&ud->pdev->dev,
		 "opened for DMA without IOMMU isolation by %s (pid %d): the device can reach all memory\n",
		 current->group_leader->comm, task_tgid_nr(current));
}

static int usrdma_open(struct inode *inode, struct file *file)
{
	/* misc_open() set private_data and holds misc_mtx: remove() waits. */
	struct miscdevice *misc = file->private_data;
	struct usrdma_dev *ud = container_of(misc, struct usrdma_dev, misc);
	LIST_HEAD(maps);
	int ret;

	if (!capable(CAP_SYS_RAWIO))
		return -EPERM;
	/*
	 * Under lockdown (Secure Boot on Debian, or lockdown= on the command
	 * line) the kernel refuses user space direct access to PCI devices:
	 * BAR mmap through sysfs, config writes, /dev/mem. usrdma gives the
	 * same access and more (DMA to all memory), so it refuses too, with
	 * the hook's EPERM. A caller that has CAP_SYS_RAWIO and still gets
	 * EPERM is told by that that the kernel is locked down.
	 */
#ifdef USRDMA_HAVE_SECURITY_LOCKED_DOWN
	ret = security_locked_down(LOCKDOWN_PCI_ACCESS);
	if (ret)
		return ret;
#endif

	mutex_lock(&ud->lock);
	if (ud->dead)
		ret = -ENODEV;
	else if (ud->open)
		ret = -EBUSY;
	else
		ret = usrdma_enable(ud, &maps);
	if (!ret) {
		ud->open = true;
		ud->mapping = file->f_mapping;
		kref_get(&ud->ref);
		file->private_data = ud;
	}
	mutex_unlock(&ud->lock);
	/* A quarantine the reset ended. */
	usrdma_put_maps(ud, &maps);
	if (ret)
		return ret;
	usrdma_warn_unisolated(ud);
	return nonseekable_open(inode, file);
}

/*
 * The owner is gone: with bus mastering off and the interrupts freed, the
 * device is reset if it can be, which ends any quarantine with it;
 * otherwise the owner's mappings and non-persistent buffers join the
 * quarantine and the grace starts again.
 */
static void usrdma_release_memory(struct usrdma_dev *ud, struct list_head *maps)
{
	lockdep_assert_held(&ud->lock);

	if (usrdma_reset_at_release(ud)) {
		usrdma_quarantine_take(ud, maps);
	} else {
		usrdma_quarantine_add(ud, maps, false);
		usrdma_quarantine_restart(ud);
	}
}

static int usrdma_release(struct inode *inode, struct file *file)
{
	struct usrdma_dev *ud = file->private_data;
	LIST_HEAD(maps);

	/*
	 * All mappings of this file are gone (each holds the file), so the
	 * buffers can be freed or quarantined without zapping anything.
	 * Order: bus mastering off, interrupts, user mappings out of the
	 * table, the reset (or the quarantine), then the buffers left. A
	 * remove() between the two halves finishes the job itself
	 * (ud->enabled).
	 */
	mutex_lock(&ud->lock);
	ud->mapping = NULL;
	if (ud->enabled) {
		usrdma_stop(ud, false, &maps);
		usrdma_release_memory(ud, &maps);
	}
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

static const struct file_operations usrdma_fops = {
	.owner = THIS_MODULE,
	.open = usrdma_open,
	.release = usrdma_release,
	.unlocked_ioctl = usrdma_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = usrdma_mmap,
	.poll = usrdma_poll,
};

/* ---- PCI driver ---------------------------------------------------------- */

static int usrdma_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct usrdma_dev *ud;
	int ret;

	/* Only ever bound on purpose, through driver_override. */
	if (!usrdma_has_driver_override(pdev))
		return -ENODEV;
	if (pdev->hdr_type != PCI_HEADER_TYPE_NORMAL)
		return -EINVAL;

	ud = kzalloc(sizeof(*ud), GFP_KERNEL);
	if (!ud)
		return -ENOMEM;
	kref_init(&ud->ref);
	mutex_init(&ud->lock);
	init_waitqueue_head(&ud->wq);
	init_waitqueue_head(&ud->users_wq);
	atomic_set(&ud->users, 0);
	INIT_LIST_HEAD(&ud->bufs);
	ida_init(&ud->ids);
	xa_init_flags(&ud->maps, XA_FLAGS_ALLOC1);
	usrdma_quarantine_init(ud);
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
	/*
	 * No reset here (a device that is gone would make it wait for
	 * seconds): while an owner may have queued transfers, every buffer
	 * waits out the grace with its mappings.
	 */
	if (ud->enabled || ud->q.pending)
		usrdma_quarantine_add(ud, &maps, true);
	if (ud->enabled) {
		usrdma_quarantine_restart(ud);
		usrdma_disable(ud, true);
	} else {
		usrdma_free_buffers(ud, true);
	}
	mutex_unlock(&ud->lock);
	wake_up_all(&ud->wq);

	/*
	 * ioctls still running (they saw the device alive) may be copying a
	 * bounce buffer or hold the last reference of a mapping: wait for
	 * them, so that the DMA API is not used for the device once unbind
	 * returns. Copies stop at their next 1 MiB piece (ud->dead); pairs
	 * with the barrier in usrdma_enter().
	 */
	smp_mb();
	wait_event(ud->users_wq, !atomic_read(&ud->users));

	usrdma_quarantine_drain(ud);
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
