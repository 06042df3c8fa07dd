"""The embedded demo's synthetic world: a captioned miniature of ImageNet and its five shifts.

Ten shape classes drawn with nuisance colour, size, position, rotation and background, in six
styles (photo, drifted photo, rendition, sketch, odd pose, clutter). ``clipmerge make-world`` writes
the pre-training captions, the fine-tuning and test folders and the shifted sets; see docs/world.md.
"""
