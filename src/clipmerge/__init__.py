"""clipmerge: fine-tune CLIP with several seeds, merge the results, compare on ImageNet and its shifts."""

__version__ = "0.1.0"
