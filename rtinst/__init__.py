"""rtinst: an ablation harness for real-time instance segmentation."""

__version__ = "0.1.0"
