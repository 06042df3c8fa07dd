"""CLIP models: open_clip architectures and weights (clip.py), the image classifier that is fine-tuned
and merged (classifier.py), its zero-shot head (zeroshot.py), and the device it runs on (device.py)."""
