// SPDX-License-Identifier: GPL-2.0
/*
 * usrdma: interrupts (INTx, MSI, MSI-X) delivered through eventfds
 * (SET_IRQ, IRQ_UNMASK).
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/err.h>
#include <linux/eventfd.h>
#include <linux/interrupt.h>
#include <linux/kernel.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "usrdma.h"

/* ---- interrupts ---------------------------------------------------------- */

static irqreturn_t usrdma_msi_handler(int irq, void *arg)
{
	struct usrdma_vec *vec = arg;

	usrdma_eventfd_signal(vec->trigger);
	atomic64_inc(&vec->ud->irq_count);
	return IRQ_HANDLED;
}

/* As uio_pci_generic: a shared line, masked at the device until UNMASK. */
static irqreturn_t usrdma_intx_handler(int irq, void *arg)
{
	struct usrdma_vec *vec = arg;

	if (!pci_check_and_mask_intx(vec->ud->pdev))
		return IRQ_NONE;
	usrdma_eventfd_signal(vec->trigger);
	atomic64_inc(&vec->ud->irq_count);
	return IRQ_HANDLED;
}

/*
 * Frees the interrupts and releases the eventfds; on revocation each
 * eventfd is signalled once first (a count of 1, as an interrupt: nothing
 * larger can be added on every kernel, and it suits EFD_SEMAPHORE
 * eventfds), so that a waiter wakes up. ud->dead is already set, so the
 * waiter finds the node hung up (EPOLLHUP) when it looks.
 */
void usrdma_irq_free(struct usrdma_dev *ud, bool revoke)
{
	struct pci_dev *pdev = ud->pdev;
	unsigned int i;

	lockdep_assert_held(&ud->lock);
	WARN_ON_ONCE(revoke && !ud->dead);

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
			usrdma_eventfd_signal(ud->vecs[i].trigger);
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

long usrdma_ioctl_set_irq(struct usrdma_dev *ud, void __user *uarg)
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
		fds = usrdma_memdup_array_user(u64_to_user_ptr(arg.eventfds),
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

long usrdma_ioctl_irq_unmask(struct usrdma_dev *ud, void __user *uarg)
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
		usrdma_eventfd_signal(ud->vecs[0].trigger);
		atomic64_inc(&ud->irq_count);
	}
	mutex_unlock(&ud->lock);
	return ret;
}
