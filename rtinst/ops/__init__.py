"""Post-processing operators (NMS variants; their batched IoU kernels in ``box_iou``).

The config dispatcher is ``rtinst.ops.nms.nms(kind, boxes, scores, ...)``; it is not
re-exported here so that the name ``rtinst.ops.nms`` keeps meaning the module.
"""

from rtinst.ops.nms import (
    NMS_KINDS,
    Detections,
    NMSKind,
    batched_pairwise_iou,
    cluster_nms,
    fast_nms,
    mask_iou,
    matrix_nms,
    matrix_nms_masks,
    standard_nms,
)

__all__ = [
    "NMS_KINDS",
    "Detections",
    "NMSKind",
    "batched_pairwise_iou",
    "cluster_nms",
    "fast_nms",
    "mask_iou",
    "matrix_nms",
    "matrix_nms_masks",
    "standard_nms",
]
