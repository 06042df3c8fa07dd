"""Weights on disk: safetensors checkpoints read and written whole (checkpoint.py) or streamed tensor
by tensor (streaming.py). Nothing is ever pickled."""
