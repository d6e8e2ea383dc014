"""Training, evaluation (COCO mask AP, TIDE) and benchmarking engines."""
