"""Saved predictions, the bootstrap intervals, the paired comparisons and the output-space ensemble,
each checked against values worked out here (by hand, or by an independent float64 computation)."""

import math
from pathlib import Path

import numpy as np
import pytest

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.evaluation.ensemble import build_ensemble
from clipmerge.evaluation.predictions import check_same_images, read_predictions, write_predictions
from clipmerge.evaluation.records import read_evals, write_eval
from clipmerge.files import write_json
from clipmerge.reporting.uncertainty import (
    AVG_SHIFTS,
    BEST_FINETUNE,
    Bootstrap,
    Study,
    all_paired,
    baselines,
    mcnemar_p,
    read_correct,
)

SAMPLES = [f"c{i % 3}/{i}.png" for i in range(6)]


def save(root, model, eval_set, logits, labels, samples=SAMPLES):
    """An eval JSON and its predictions file, top-1 from the logits (as `clipmerge evaluate` writes them)."""
    logits, labels = np.asarray(logits, dtype=np.float32), np.asarray(labels)
    top1 = logits.argmax(axis=1)
    out = root / "eval" / model / f"{eval_set}.json"
    write_predictions(layout.predictions_beside(out), model=model, eval_set=eval_set, logits=logits, labels=labels,
                      top1=top1, samples=samples)
    write_eval(out, model, eval_set, "imagefolder", {1: 100.0 * float(np.mean(top1 == labels)), 5: 100.0},
               len(labels), logits.shape[1])
    return out


def one_hot(predicted, classes=3):
    return np.eye(classes)[predicted] * 5.0


def test_predictions_round_trip_and_record_the_image_order(tmp_path):
    labels = np.array([0, 1, 2, 0, 1, 2])
    path = layout.predictions_beside(save(tmp_path, "zeroshot", "test", one_hot([0, 1, 0, 0, 2, 2]), labels))
    assert path.endswith("eval/zeroshot/test.predictions.safetensors")
    pred = read_predictions(path, logits=True)
    assert (pred.model, pred.eval_set, pred.samples) == ("zeroshot", "test", SAMPLES)
    assert pred.correct.tolist() == [True, True, False, True, False, True]
    assert pred.logits.dtype == np.float32 and pred.logits.shape == (6, 3)
    assert layout.parse_predictions(path) == ("zeroshot", "test")


def test_the_same_predictions_give_the_same_bytes(tmp_path):
    labels = np.array([0, 1, 2, 0, 1, 2])
    first = layout.predictions_beside(save(tmp_path / "a", "zeroshot", "test", one_hot([0, 1, 0, 0, 2, 2]), labels))
    second = layout.predictions_beside(save(tmp_path / "b", "zeroshot", "test", one_hot([0, 1, 0, 0, 2, 2]), labels))
    assert Path(first).read_bytes() == Path(second).read_bytes()


def test_a_file_that_is_not_predictions_is_named(tmp_path):
    bad = tmp_path / "eval" / "zeroshot" / "test.predictions.safetensors"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not safetensors")
    with pytest.raises(ClipmergeError, match="test.predictions.safetensors: unreadable"):
        read_predictions(bad)
    with pytest.raises(ClipmergeError, match="file not found"):
        read_predictions(tmp_path / "missing.predictions.safetensors")
    with pytest.raises(ClipmergeError, match=r"logits \[n, classes\]"):
        write_predictions(bad, model="m", eval_set="s", logits=np.zeros((2, 3)), labels=np.zeros(3, dtype=int),
                          top1=np.zeros(3, dtype=int), samples=["a", "b", "c"])


def test_predictions_of_other_images_are_refused(tmp_path):
    labels = [0, 1, 2, 0, 1, 2]
    a = save(tmp_path, "finetune_seed0", "test", one_hot([0, 1, 2, 0, 1, 2]), labels)
    b = save(tmp_path, "finetune_seed1", "test", one_hot([0, 1, 2, 0, 1, 2]), labels, samples=SAMPLES[::-1])
    first, other = (read_predictions(layout.predictions_beside(p)) for p in (a, b))
    with pytest.raises(ClipmergeError, match="not the same images"):
        check_same_images(first, other)


def test_predictions_that_disagree_with_their_eval_json_are_refused(tmp_path):
    labels = [0, 1, 2, 0, 1, 2]
    out = save(tmp_path, "zeroshot", "test", one_hot([0, 1, 2, 0, 1, 2]), labels)
    write_eval(out, "zeroshot", "test", "imagefolder", {1: 50.0, 5: 100.0}, 6, 3)  # re-written: 100 % is right
    with pytest.raises(ClipmergeError, match="differs from .*test.json"):
        read_correct([layout.predictions_beside(out)], read_evals([out]))


@pytest.mark.parametrize(("better", "worse", "expected"), [
    (0, 5, 2 / 32),                      # 2 * P(X <= 0), X ~ Bin(5, 1/2)
    (2, 8, 2 * (1 + 10 + 45) / 1024),    # 2 * P(X <= 2), X ~ Bin(10, 1/2)
    (1, 1, 1.0),                         # 2 * 3/4 > 1: capped
    (0, 0, 1.0),
])
def test_mcnemar_exact_p_value_by_hand(better, worse, expected):
    assert mcnemar_p(better, worse) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_p(worse, better) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_p_value_at_imagenet_scale_is_finite():
    # 3000 discordant images split 1400 / 1600: normal approximation z = 200 / sqrt(3000) = 3.65
    p = mcnemar_p(1400, 1600)
    assert p == pytest.approx(math.erfc(3.65 / math.sqrt(2)), rel=0.1)


def study_of(correct, id_set="test", shifts=("r",), **protocol):
    return Study.of(correct, id_set, list(shifts), Bootstrap(**protocol))


def test_the_interval_matches_the_binomial_normal_approximation():
    n, k = 2000, 1400  # 70 %: standard error sqrt(.7 * .3 / 2000) = 1.025 points
    correct = np.zeros(n, dtype=bool)
    correct[np.random.default_rng(1).permutation(n)[:k]] = True
    study = study_of({"test": {"m": correct}, "r": {"m": correct}})
    lo, hi = study.intervals("m")["test"]
    half = 1.959964 * 100 * math.sqrt(0.7 * 0.3 / n)
    assert lo == pytest.approx(70.0 - half, abs=0.25) and hi == pytest.approx(70.0 + half, abs=0.25)


def test_the_bootstrap_is_a_function_of_its_seed():
    correct = np.random.default_rng(2).random(300) < 0.6
    sets = {"test": {"m": correct}, "r": {"m": correct}}
    once, again = study_of(sets).intervals("m"), study_of(sets).intervals("m")
    other = study_of(sets, bootstrap_seed=1).intervals("m")
    assert once == again and once != other
    # A model alone gets the interval it gets in a study with others (its MLflow run = the table).
    with_other = study_of({"test": {"m": correct, "o": ~correct}, "r": {"m": correct, "o": correct}})
    assert with_other.intervals("m") == once


def test_the_shift_average_replicates_are_the_mean_of_each_shifts():
    rng = np.random.default_rng(3)
    sets = {s: {"m": rng.random(200) < p} for s, p in (("test", 0.7), ("r", 0.4), ("sketch", 0.5))}
    study = study_of(sets, shifts=("r", "sketch"))
    expected = (study.reps["r"]["m"] + study.reps["sketch"]["m"]) / 2
    assert np.array_equal(study.column_replicates("m", AVG_SHIFTS), expected)
    shift_means = [100 * sets[s]["m"].mean() for s in ("r", "sketch")]
    assert study.point("m", AVG_SHIFTS) == pytest.approx(sum(shift_means) / 2)


def test_resamples_are_shared_by_the_models_of_a_set():
    """Resample b draws the same images for every model: a count of each model's hits on it that is
    computed here, image by image, from the drawn indices equals the study's replicate."""
    rng = np.random.default_rng(4)
    a, b = rng.random(50) < 0.5, rng.random(50) < 0.5
    study = study_of({"test": {"a": a, "b": b}, "r": {"a": a, "b": b}}, resamples=100)
    from clipmerge.reporting.uncertainty import resample_counts
    counts = next(iter(resample_counts(50, "test", Bootstrap(resamples=100))))
    drawn = [i for i in range(50) for _ in range(counts[i])]
    assert len(drawn) == 50
    assert study.reps["test"]["a"][0] == pytest.approx(100 * sum(a[i] for i in drawn) / 50)
    assert study.reps["test"]["b"][0] == pytest.approx(100 * sum(b[i] for i in drawn) / 50)


def test_paired_comparisons_mark_a_real_gain_and_not_an_identical_model():
    rng = np.random.default_rng(5)
    base = rng.random(1000) < 0.6
    better = base.copy()
    better[np.flatnonzero(~base)[:80]] = True  # 80 more images right, none lost: +8 points
    sets = {s: {"finetune_seed0": base, "finetune_seed1": base, "model_stock": better, "uniform_soup": base}
            for s in ("test", "r")}
    study = study_of(sets)
    top1 = {m: 100 * c.mean() for m, c in sets["test"].items()}
    rows = {(r.model, r.role, r.column): r for r in all_paired(study, top1)}
    gain = rows["model_stock", BEST_FINETUNE, "test"]
    assert gain.baseline == "finetune_seed0"  # equal ID top-1: the first in table order
    assert gain.diff == pytest.approx(8.0) and gain.significant and gain.direction == 1 and gain.lo > 0
    assert gain.p_value == pytest.approx(2 / 2**80)
    same = rows["uniform_soup", BEST_FINETUNE, "test"]
    assert (same.diff, same.lo, same.hi, same.significant, same.p_value) == (0.0, 0.0, 0.0, False, 1.0)
    assert ("uniform_soup", "uniform_soup", "test") not in rows  # never against itself
    assert rows["model_stock", "uniform_soup", AVG_SHIFTS].p_value is None


def test_the_best_fine_tune_is_chosen_by_id_top1():
    correct = {"finetune_seed0": np.array([True, False]), "imported_model_3": np.array([True, True])}
    study = study_of({"test": correct, "r": correct})
    assert baselines(study, {"finetune_seed0": 50.0, "imported_model_3": 100.0, "zeroshot": 100.0}) == {
        BEST_FINETUNE: "imported_model_3"}


def test_the_ensemble_averages_its_members_logits(tmp_path):
    labels = [0, 1, 0, 1, 2, 2]
    first = [[2, 0, 0], [0, 1, 0], [0, 0, 1], [1, 2, 0], [0, 0, 4], [3, 0, 0]]
    second = [[0, 1, 0], [3, 0, 0], [2, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 5]]
    members = []
    for model, logits in (("finetune_seed0", first), ("finetune_seed1", second)):
        members.append(save(tmp_path, model, "test", logits, labels))
        write_json(tmp_path / "models" / model / "meta.json",
                   layout.model_meta_record(model, "finetune", "tiny", "demo"))
    out = tmp_path / "eval" / "ensemble" / "test.json"
    build_ensemble("ensemble", [str(p) for p in members],
                   [str(tmp_path / "models" / m / "meta.json") for m in ("finetune_seed0", "finetune_seed1")],
                   [str(out)], tmp_path / "models" / "ensemble" / "meta.json")
    # mean logits by hand: [1, .5, 0], [1.5, .5, 0], [1, 0, .5], [.5, 1, 0], [0, .5, 2], [1.5, 0, 2.5]
    # -> top-1 0, 0, 0, 1, 2, 2 against labels 0, 1, 0, 1, 2, 2: 5 of 6 right
    result = read_evals([out])["ensemble"]["test"]
    assert result.top1 == pytest.approx(100 * 5 / 6) and result.n == 6 and result.adapter == "imagefolder"
    pred = read_predictions(layout.predictions_beside(out), logits=True)
    assert pred.top1.tolist() == [0, 0, 0, 1, 2, 2] and pred.samples == SAMPLES
    assert np.allclose(pred.logits[5], [1.5, 0, 2.5])
    meta = layout.read_meta(tmp_path / "models" / "ensemble" / "meta.json")
    assert (meta["method"], meta["ingredients"]) == ("ensemble", ["finetune_seed0", "finetune_seed1"])


def test_an_ensemble_of_one_is_refused(tmp_path):
    member = save(tmp_path, "finetune_seed0", "test", one_hot([0, 1, 2, 0, 1, 2]), [0, 1, 2, 0, 1, 2])
    meta = tmp_path / "models" / "finetune_seed0" / "meta.json"
    write_json(meta, layout.model_meta_record("finetune_seed0", "finetune", "tiny", "demo"))
    with pytest.raises(ClipmergeError, match="at least 2 members"):
        build_ensemble("ensemble", [str(member)], [str(meta)],
                       [str(tmp_path / "eval" / "ensemble" / "test.json")], tmp_path / "models/ensemble/meta.json")


def write_table_study(root):
    """Predictions, eval JSONs, meta.json and benchmarks of a study whose Model Stock gets 80 more of
    1000 images right than either fine-tune, on both sets; returns the `clipmerge table` inputs."""
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, 1000)
    samples = [f"img{i}.png" for i in range(1000)]
    wrong = (labels + 1) % 3
    base = rng.random(1000) < 0.6
    better = base.copy()
    better[np.flatnonzero(~base)[:80]] = True
    hits = {"zeroshot": rng.random(1000) < 0.4, "finetune_seed0": base, "finetune_seed1": base,
            "uniform_soup": base, "model_stock": better}
    evals, metas = [], []
    for model, right in hits.items():
        method = "finetune" if model.startswith("finetune") else model
        ingredients = ["finetune_seed0", "finetune_seed1"] if model in ("uniform_soup", "model_stock") else []
        meta = root / "models" / model / "meta.json"
        write_json(meta, layout.model_meta_record(model, method, "tiny", "demo", ingredients=ingredients,
                                                  hparams={"device": "cpu"} if method == "finetune" else {}))
        metas.append(meta)
        for eval_set in ("test", "r"):
            evals.append(save(root, model, eval_set, one_hot(np.where(right, labels, wrong)), labels, samples))
        bench = root / "benchmarks" / "models" / f"{model}.tsv"
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text("s\tmax_rss\tcpu_time\n36.0\t100\t30\n")
    return evals, metas


def test_table_command_writes_intervals_marks_and_paired_comparisons(tmp_path):
    import pandas as pd

    from clipmerge.cli import main

    root, out = tmp_path / "results" / "s", tmp_path / "tables"
    evals, metas = write_table_study(root)
    predictions = [layout.predictions_beside(p) for p in evals]
    assert main(["table", "--evals", *map(str, evals), "--metas", *map(str, metas), "--benchmarks",
                 *map(str, (root / "benchmarks").rglob("*.tsv")), "--id", "test", "--shifts", "r",
                 "--predictions", *predictions, "--resamples", "200",
                 "--out-csv", str(out / "c.csv"), "--out-md", str(out / "c.md"),
                 "--out-intervals-md", str(out / "i.md"), "--out-paired-csv", str(out / "p.csv"),
                 "--out-paired-md", str(out / "p.md")]) == 0
    table = pd.read_csv(out / "c.csv", index_col="model")
    for column in ("test", "r", "id", "avg_shifts"):
        assert (table[column + "_lo"] <= table[column]).all() and (table[column] <= table[column + "_hi"]).all()
    assert table["inference_passes"].tolist() == [1, 1, 1, 1, 1]
    stock = next(line for line in (out / "c.md").read_text().splitlines() if line.startswith("| model_stock "))
    assert stock.count("↑") == 4 and "⇑" in stock  # above the best fine-tune on every column, and the soup
    soup = next(line for line in (out / "c.md").read_text().splitlines() if line.startswith("| uniform_soup "))
    assert "↑" not in soup and "↓" not in soup  # identical to the best fine-tune
    paired = pd.read_csv(out / "p.csv")
    row = paired[(paired.model == "model_stock") & (paired.vs == "best_finetune") & (paired.column == "test")].iloc[0]
    assert row["diff"] == pytest.approx(8.0) and row["significant"] and row["diff_lo"] > 0
    assert "model_stock − finetune_seed0" in (out / "p.md").read_text()
    lo, hi = table.loc["model_stock", ["test_lo", "test_hi"]]
    assert f"{lo:.2f}–{hi:.2f}" in (out / "i.md").read_text()


def test_the_mlflow_run_carries_the_same_bounds_as_the_table(tmp_path):
    from clipmerge.tracking.runs import model_payload

    root = tmp_path / "results" / "s"
    evals, _ = write_table_study(root)
    protocol = Bootstrap(resamples=200)
    study = Study.of(read_correct([layout.predictions_beside(p) for p in evals], read_evals(evals)), "test", ["r"],
                     protocol)
    own = [str(p) for p in evals if layout.parse_eval_result(p)[0] == "model_stock"]
    payload = model_payload("s", root / "models" / "model_stock" / "meta.json", own, "test", ["r"],
                            predictions=[layout.predictions_beside(p) for p in own], protocol=protocol)
    for column, (lo, hi) in study.intervals("model_stock").items():
        assert (payload.metrics[f"top1_lo/{column}"], payload.metrics[f"top1_hi/{column}"]) == (lo, hi)
    assert set(study.intervals("model_stock")) == {"test", "r", "id", "avg_shifts"}
