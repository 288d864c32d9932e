// SPDX-License-Identifier: GPL-2.0
/*
 * usrdma: named coherent DMA buffers (ALLOC, FREE, LIST).
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/dma-mapping.h>
#include <linux/idr.h>
#include <linux/kernel.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "usrdma.h"

/* ---- buffers ------------------------------------------------------------- */

struct usrdma_buf *usrdma_find_id(struct usrdma_dev *ud, u32 id)
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

/*
 * Takes a buffer off the device's list (it is no longer found, mapped,
 * listed or counted), removing the open file's mappings of it first. The
 * memory stays allocated: usrdma_buf_free() gives it back.
 */
void usrdma_buf_unlink(struct usrdma_dev *ud, struct usrdma_buf *buf)
{
	lockdep_assert_held(&ud->lock);

	if (ud->mapping)
		unmap_mapping_range(ud->mapping, buf->offset, buf->size, 1);
	list_del_init(&buf->node);
	ud->nbufs--;
	ud->buf_bytes -= buf->size;
	ida_free(&ud->ids, buf->id);
	buf->id = 0;
}

/* Frees an unlinked buffer's memory and the buffer. */
void usrdma_buf_free(struct usrdma_dev *ud, struct usrdma_buf *buf)
{
	lockdep_assert_held(&ud->lock);

	dma_free_attrs(&ud->pdev->dev, buf->size, buf->cpu_addr, buf->dma_addr,
		       buf->attrs);
	put_pid(buf->owner);
	kfree(buf);
}

/* Frees one buffer, removing the open file's mappings of it first. */
static void usrdma_buf_destroy(struct usrdma_dev *ud, struct usrdma_buf *buf)
{
	usrdma_buf_unlink(ud, buf);
	usrdma_buf_free(ud, buf);
}

/* Frees the non-persistent buffers, or all of them. */
void usrdma_free_buffers(struct usrdma_dev *ud, bool all)
{
	struct usrdma_buf *buf, *tmp;

	list_for_each_entry_safe(buf, tmp, &ud->bufs, node)
		if (all || !(buf->flags & USRDMA_BUF_PERSISTENT))
			usrdma_buf_destroy(ud, buf);
}

long usrdma_ioctl_alloc(struct usrdma_dev *ud, void __user *uarg)
{
	struct device *dev = &ud->pdev->dev;
	struct usrdma_alloc arg;
	struct usrdma_buf *buf;
	u32 argsz, info_flags;
	u64 seq;
	int ret;

	BUILD_BUG_ON(offsetof(struct usrdma_alloc, generation) !=
		     USRDMA_ALLOC_SIZE_V1);
	ret = usrdma_copy_in(&arg, sizeof(arg), USRDMA_ALLOC_SIZE_V1, uarg,
			     &argsz);
	if (ret)
		return ret;
	if ((arg.flags & ~USRDMA_BUF_FLAGS) || arg.reserved || arg.id ||
	    arg.dma_addr || arg.mmap_offset || arg.generation)
		return -EINVAL;
	/* What the kernel can give, not only what the module allows. */
	if (!arg.size ||
	    arg.size > usrdma_max_buf_size(dev, &info_flags))
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
	arg.generation = seq;
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

long usrdma_ioctl_free(struct usrdma_dev *ud, void __user *uarg)
{
	struct usrdma_free arg;
	struct usrdma_buf *buf;
	bool by_name;
	u32 argsz;
	int ret;

	BUILD_BUG_ON(offsetof(struct usrdma_free, generation) !=
		     USRDMA_FREE_SIZE_V1);
	ret = usrdma_copy_in(&arg, sizeof(arg), USRDMA_FREE_SIZE_V1, uarg,
			     &argsz);
	if (ret)
		return ret;
	if ((arg.flags & ~USRDMA_FREE_BY_NAME) || arg.reserved)
		return -EINVAL;
	by_name = arg.flags & USRDMA_FREE_BY_NAME;
	if (by_name) {
		ret = usrdma_check_name(arg.name);
		if (ret <= 0 || arg.id || arg.generation)
			return -EINVAL;
	} else if (!arg.id || !arg.generation ||
		   memchr_inv(arg.name, 0, sizeof(arg.name))) {
		/* Without the generation a stale id could free a newer buffer. */
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
	if (!by_name && buf->seq != arg.generation) {
		/* The buffer asked for is gone; its id was reused. */
		ret = -ESTALE;
		goto out;
	}
	/*
	 * By name, only a persistent buffer nobody maps: a non-persistent one
	 * belongs to the open file, whose code may hold it (and may have given
	 * its address to the device); a mapped one is in use by whoever maps
	 * it. The counts change only under the lock, so no mmap can slip in.
	 */
	if (by_name && !(buf->flags & USRDMA_BUF_PERSISTENT)) {
		ret = -EPERM;
		goto out;
	}
	if (by_name && buf->mmaps) {
		ret = -EBUSY;
		goto out;
	}
	usrdma_buf_destroy(ud, buf);
	ret = 0;
out:
	mutex_unlock(&ud->lock);
	return ret;
}

long usrdma_ioctl_list(struct usrdma_dev *ud, void __user *uarg)
{
	struct usrdma_buf_entry *entries = NULL;
	struct usrdma_list arg;
	struct usrdma_buf *buf;
	unsigned int n = 0, want, i;
	u32 argsz, esize;
	int ret;

	BUILD_BUG_ON(offsetof(struct usrdma_list, entry_size) !=
		     USRDMA_LIST_SIZE_V1);
	BUILD_BUG_ON(offsetof(struct usrdma_buf_entry, generation) !=
		     USRDMA_BUF_ENTRY_SIZE_V1);
	ret = usrdma_copy_in(&arg, sizeof(arg), USRDMA_LIST_SIZE_V1, uarg,
			     &argsz);
	if (ret)
		return ret;
	if (arg.flags || arg.count || arg.reserved ||
	    (arg.capacity && !arg.entries))
		return -EINVAL;
	esize = arg.entry_size ? arg.entry_size : USRDMA_BUF_ENTRY_SIZE_V1;
	if (esize < USRDMA_BUF_ENTRY_SIZE_V1 || esize > USRDMA_MAX_ARGSZ ||
	    esize % 8)
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
		e->generation = buf->seq;
	}
	arg.count = ud->nbufs;
	mutex_unlock(&ud->lock);

	/* Each entry as far as the caller knows it, the rest of it cleared. */
	for (i = 0; i < n; i++) {
		void __user *dst = u64_to_user_ptr(arg.entries) +
				   (unsigned long)i * esize;

		if (copy_to_user(dst, &entries[i],
				 min_t(size_t, esize, sizeof(*entries))) ||
		    (esize > sizeof(*entries) &&
		     clear_user(dst + sizeof(*entries),
				esize - sizeof(*entries)))) {
			ret = -EFAULT;
			goto out;
		}
	}
	ret = usrdma_copy_out(uarg, &arg, sizeof(arg), argsz);
out:
	kvfree(entries);
	return ret;
}
