// SPDX-License-Identifier: GPL-2.0
/*
 * use_dma_iommu(): the DMA API calls iommu-dma directly for IOMMU-backed
 * devices, which then have no dma_map_ops (6.12 has it, 6.1 does not).
 */
#include <linux/device.h>
#include <linux/iommu-dma.h>

bool usrdma_probe(struct device *dev);
bool usrdma_probe(struct device *dev)
{
	return use_dma_iommu(dev);
}
