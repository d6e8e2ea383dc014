"""Model library: backbones, necks, heads and the three detectors."""
