// SPDX-License-Identifier: GPL-2.0
/*
 * usrdma: the read-only sysfs attributes on the PCI device (usrdma_buffers,
 * usrdma_stats).
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/device.h>
#include <linux/kernel.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/rcupdate.h>
#include <linux/string.h>
#include <linux/sysfs.h>

#include "usrdma.h"

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
	unsigned int opened, buffers, irqs, q_buffers;
	u64 buffer_bytes, q_bytes;
	unsigned long q_pages;

	if (!ud)
		return -ENODEV;
	mutex_lock(&ud->lock);
	opened = ud->open && !ud->dead;
	buffers = ud->nbufs;
	buffer_bytes = ud->buf_bytes;
	irqs = ud->nvec;
	q_buffers = ud->q.nbufs;
	q_bytes = ud->q.bytes;
	q_pages = ud->q.pages;
	mutex_unlock(&ud->lock);
	return sysfs_emit(page,
			  "opened %u\nbuffers %u\nbuffer_bytes %llu\n"
			  "user_mappings %d\npinned_pages %ld\n"
			  "bounce_bytes %ld\nirqs %u\nirq_count %lld\n"
			  "quarantine_buffers %u\nquarantine_bytes %llu\n"
			  "quarantine_pages %lu\n",
			  opened, buffers, buffer_bytes,
			  atomic_read(&ud->user_mappings),
			  atomic_long_read(&ud->pinned_pages),
			  atomic_long_read(&ud->bounce_bytes), irqs,
			  (long long)atomic64_read(&ud->irq_count),
			  q_buffers, q_bytes, q_pages);
}
static DEVICE_ATTR_RO(usrdma_stats);

static struct attribute *usrdma_attrs[] = {
	&dev_attr_usrdma_buffers.attr,
	&dev_attr_usrdma_stats.attr,
	NULL,
};
static const struct attribute_group usrdma_group = {
	.attrs = usrdma_attrs,
};

const struct attribute_group *usrdma_groups[] = {
	&usrdma_group,
	NULL,
};
