"""Top-k accuracy and the prediction loop."""

import math

import torch

from clipmerge.evaluation.predict import predict, topk_accuracy
from clipmerge.models.classifier import new_classifier


def test_topk_counts_hits():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5]])
    labels = torch.tensor([0, 1, 1, 0])
    acc = topk_accuracy(logits, labels, ks=(1, 2, 5))
    assert acc[1] == 25.0  # only row 0
    assert acc[2] == 75.0  # rows 0, 1 (0.2 is 2nd), 2 (0.4 is 2nd); not row 3
    assert acc[5] == 100.0  # k capped at the number of classes


def test_empty_set_is_nan():
    assert math.isnan(topk_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))[1])


def test_predict_applies_the_projection():
    model = new_classifier("clipmerge-tiny", 6)
    batches = [(torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2]))]
    logits, labels = predict(model, batches, torch.device("cpu"), project=lambda x: x[:, [5, 0]])
    with torch.no_grad():
        expected = model(batches[0][0])[:, [5, 0]]
    assert torch.allclose(logits, expected) and labels.tolist() == [0, 1, 2]
