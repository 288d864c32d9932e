// SPDX-License-Identifier: GPL-2.0
/*
 * usrdma: the quarantine of a released owner's memory while the device,
 * which could not be reset, may still write it (usrdma.h has the rules).
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/list.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/sched.h>
#include <linux/workqueue.h>

#include "usrdma.h"

static unsigned int quarantine_ms = USRDMA_QUARANTINE_DEFAULT_MS;

static int usrdma_set_quarantine_ms(const char *val,
				    const struct kernel_param *kp)
{
	return param_set_uint_minmax(val, kp, 0, USRDMA_QUARANTINE_MAX_MS);
}

static const struct kernel_param_ops usrdma_quarantine_ms_ops = {
	.set = usrdma_set_quarantine_ms,
	.get = param_get_uint,
};
module_param_cb(quarantine_ms, &usrdma_quarantine_ms_ops, &quarantine_ms,
		0644);
MODULE_PARM_DESC(quarantine_ms,
		 "How long bus mastering must stay off before a released owner's memory is freed when the device could not be reset (ms, 0-60000, default 1000)");

static unsigned long usrdma_grace(void)
{
	return msecs_to_jiffies(READ_ONCE(quarantine_ms));
}

static unsigned long usrdma_tick(void)
{
	return max(1UL, msecs_to_jiffies(USRDMA_QUARANTINE_TICK_MS));
}

/*
 * Whether the device may master the bus: PCI_COMMAND_MASTER as the device
 * has it (user space writes it through sysfs, which the module does not
 * see). A read that fails or a device that is gone (all ones) counts as on.
 */
bool usrdma_master_on(struct usrdma_dev *ud)
{
	u16 cmd;

	if (pci_read_config_word(ud->pdev, PCI_COMMAND, &cmd))
		return true;
	return cmd & PCI_COMMAND_MASTER;
}

static void usrdma_quarantine_work(struct work_struct *work);

void usrdma_quarantine_init(struct usrdma_dev *ud)
{
	INIT_LIST_HEAD(&ud->q.bufs);
	INIT_LIST_HEAD(&ud->q.maps);
	INIT_DELAYED_WORK(&ud->q.work, usrdma_quarantine_work);
}

/*
 * The grace starts (again) now, for everything in the quarantine; the work
 * samples bus mastering meanwhile.
 */
void usrdma_quarantine_restart(struct usrdma_dev *ud)
{
	lockdep_assert_held(&ud->lock);

	if (!ud->q.pending)
		return;
	ud->q.since = jiffies;
	ud->q.mastered = false;
	mod_delayed_work(system_wq, &ud->q.work, usrdma_tick());
}

/*
 * Moves the mappings on maps (detached, with their table reference) and
 * the non-persistent buffers (or, for remove, all of them) into the
 * quarantine. The caller restarts the grace if an owner was there.
 */
void usrdma_quarantine_add(struct usrdma_dev *ud, struct list_head *maps,
			   bool all_buffers)
{
	struct usrdma_buf *buf, *tmp;
	struct usrdma_map *m;

	lockdep_assert_held(&ud->lock);

	list_for_each_entry_safe(buf, tmp, &ud->bufs, node) {
		if (!all_buffers && (buf->flags & USRDMA_BUF_PERSISTENT))
			continue;
		usrdma_buf_unlink(ud, buf);
		list_add_tail(&buf->node, &ud->q.bufs);
		ud->q.nbufs++;
		ud->q.bytes += buf->size;
	}
	list_for_each_entry(m, maps, dead_node) {
		usrdma_map_uncount(ud, m);
		if (m->bounce)
			ud->q.bytes += m->bounce_size;
		else
			ud->q.pages += m->npages;
	}
	list_splice_tail_init(maps, &ud->q.maps);
	WRITE_ONCE(ud->q.pending,
		   ud->q.nbufs || !list_empty(&ud->q.maps));
}

/*
 * Ends the quarantine: frees its buffers and moves its mappings onto maps,
 * which the caller puts (usrdma_put_maps) after dropping the lock. A
 * queued work finds nothing left and stops.
 */
void usrdma_quarantine_take(struct usrdma_dev *ud, struct list_head *maps)
{
	struct usrdma_buf *buf, *tmp;

	lockdep_assert_held(&ud->lock);

	list_for_each_entry_safe(buf, tmp, &ud->q.bufs, node) {
		list_del(&buf->node);
		usrdma_buf_free(ud, buf);
	}
	list_splice_tail_init(&ud->q.maps, maps);
	ud->q.nbufs = 0;
	ud->q.bytes = 0;
	ud->q.pages = 0;
	ud->q.mastered = false;
	WRITE_ONCE(ud->q.pending, false);
}

static bool usrdma_quarantine_over(struct usrdma_dev *ud)
{
	return time_after_eq(jiffies, ud->q.since + usrdma_grace());
}

/*
 * Notes that the open owner turned bus mastering on while a quarantine is
 * pending (each ioctl calls this): the grace stops until its release, a
 * reset or QUIESCED.
 */
void usrdma_quarantine_note_master(struct usrdma_dev *ud)
{
	if (!READ_ONCE(ud->q.pending))
		return;
	mutex_lock(&ud->lock);
	if (!ud->dead && ud->q.pending && !ud->q.mastered &&
	    usrdma_master_on(ud))
		ud->q.mastered = true;
	mutex_unlock(&ud->lock);
}

/* One sample of the grace; the last frees the quarantine. */
static void usrdma_quarantine_work(struct work_struct *work)
{
	struct usrdma_dev *ud = container_of(to_delayed_work(work),
					     struct usrdma_dev, q.work);
	LIST_HEAD(maps);

	mutex_lock(&ud->lock);
	if (ud->dead || !ud->q.pending || ud->q.mastered)
		goto out;
	if (usrdma_master_on(ud)) {
		if (ud->open) {
			/* The owner may be running the device: wait for it. */
			ud->q.mastered = true;
			goto out;
		}
		/* Someone else turned it on: the grace starts again. */
		ud->q.since = jiffies;
	}
	if (usrdma_quarantine_over(ud))
		usrdma_quarantine_take(ud, &maps);
	else
		queue_delayed_work(system_wq, &ud->q.work, usrdma_tick());
out:
	mutex_unlock(&ud->lock);
	usrdma_put_maps(ud, &maps);
}

/*
 * remove(): the device is disabled, so bus mastering stays off; waits out
 * what is left of the grace (all of it if an owner had mastering on),
 * frees the quarantine and cancels the work.
 */
void usrdma_quarantine_drain(struct usrdma_dev *ud)
{
	unsigned long left = 0;
	LIST_HEAD(maps);

	mutex_lock(&ud->lock);
	if (ud->q.pending) {
		unsigned long end;

		if (ud->q.mastered) {
			ud->q.since = jiffies;
			ud->q.mastered = false;
		}
		end = ud->q.since + usrdma_grace();
		if (time_before(jiffies, end))
			left = end - jiffies;
		dev_info(&ud->pdev->dev,
			 "%llu bytes and %lu pinned pages quarantined: freed in %u ms\n",
			 ud->q.bytes, ud->q.pages, jiffies_to_msecs(left));
	}
	mutex_unlock(&ud->lock);

	if (left)
		schedule_timeout_uninterruptible(left);

	mutex_lock(&ud->lock);
	usrdma_quarantine_take(ud, &maps);
	mutex_unlock(&ud->lock);
	usrdma_put_maps(ud, &maps);
	cancel_delayed_work_sync(&ud->q.work);
}
