"""End-to-end fine-tuning of the zero-shot classifier (wise-ft/model-soups recipe), resumable and
deterministic: recipe.py (hyper-parameters), schedule.py (steps, lr), streams.py + sampler.py (seeded
data order), augment.py, mixup.py, resume.py (checkpoints, stop signals), train.py (the loop),
outputs.py (model, meta.json, history), cli.py (`clipmerge finetune`). docs/finetune.md has the recipe
and every choice the papers leave open."""
