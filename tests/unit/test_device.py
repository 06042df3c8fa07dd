"""Device selection never breaks on a CPU-only machine."""

import pytest
import torch

from clipmerge.errors import ClipmergeError
from clipmerge.models.device import autocast, loader_kwargs, pick_device


def test_auto_picks_cuda_only_when_available():
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_explicit_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ClipmergeError, match="CUDA is not available"):
        pick_device("cuda")


def test_cpu_runs_fp32_without_pinned_memory():
    cpu = torch.device("cpu")
    with autocast(cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert loader_kwargs(cpu, 0) == {"num_workers": 0, "pin_memory": False, "persistent_workers": False}


def test_eval_precisions_are_the_schemas():
    import yaml

    from clipmerge.models.device import EVAL_PRECISIONS

    schema = yaml.safe_load(open("workflow/schemas/config.schema.yaml"))
    assert schema["properties"]["eval"]["properties"]["precision"]["enum"] == list(EVAL_PRECISIONS)


def test_bf16_evaluation_keeps_the_head_and_logits_in_fp32():
    """amp_bf16 runs the tower in bf16 (emulated here on the CPU) and the head in fp32 on its output, so
    logits are fp32 and do not tie as bf16 logits do; fp32 is the model's own forward, bit for bit."""
    from clipmerge.evaluation.predict import predict
    from clipmerge.models.classifier import new_classifier

    torch.manual_seed(0)
    model = new_classifier("clipmerge-tiny", 1000)
    batches = [(torch.randn(64, 3, 32, 32), torch.zeros(64, dtype=torch.long))]
    cpu = torch.device("cpu")
    fp32, _ = predict(model, batches, cpu, precision="fp32")
    with torch.no_grad():
        assert torch.equal(fp32, model(batches[0][0]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            tower = model.visual(batches[0][0])
            all_bf16 = model.head(torch.nn.functional.normalize(tower, dim=-1))
    bf16, _ = predict(model, batches, cpu, precision="amp_bf16")
    assert bf16.dtype == torch.float32 and all_bf16.dtype == torch.bfloat16
    assert torch.equal(bf16, model.classify(tower))
    ties = lambda logits: int((logits.topk(2).values.diff(dim=1) == 0).sum())  # noqa: E731
    assert ties(all_bf16.float()) > ties(bf16) == 0
    with pytest.raises(ClipmergeError, match="evaluation precision 'fp16'"):
        predict(model, batches, cpu, precision="fp16")
