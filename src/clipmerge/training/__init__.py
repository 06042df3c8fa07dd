"""Training: the demo's contrastive pre-training (pretrain.py); end-to-end fine-tuning with one seed
(finetune.py) and periodic Model Stock over several (periodic.py), both on the resumable, deterministic
loop of trainer.py, with the recipe (recipe.py), schedule (schedule.py), seeded data order (streams.py,
sampler.py), augmentation (augment.py, mixup.py), checkpoints and stop signals (resume.py), setup
(setup.py) and outputs (outputs.py). docs/finetune.md has every choice the papers leave open."""
