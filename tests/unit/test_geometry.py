"""Model Stock's geometry by layer: every key of a real tiny classifier placed at its depth and kind,
and the per-(depth, kind) means, checked against values worked out by hand."""

import json
from collections import Counter

import pytest

from clipmerge.errors import ClipmergeError
from clipmerge.reporting import geometry

TINY_BLOCKS = 4  # clipmerge-tiny.json: vision_cfg.layers


@pytest.fixture(scope="module")
def tiny_keys():
    """The state-dict keys of a real classifier on the clipmerge-tiny open_clip tower."""
    from clipmerge.models.classifier import new_classifier

    return list(new_classifier("clipmerge-tiny", 5).state_dict())


def test_every_key_of_the_tiny_classifier_is_placed(tiny_keys):
    groups = geometry.group_keys(tiny_keys)
    assert set(groups) == set(tiny_keys)
    assert geometry.block_count(tiny_keys) == TINY_BLOCKS
    assert all(depth is not None and kind != "other" for depth, kind in groups.values()), groups
    for key, (depth, _) in groups.items():
        if key.startswith("visual.transformer.resblocks."):
            assert depth == int(key.split(".")[3]), key
    # Per block: ln_1/ln_2 weight+bias, attn in_proj/out_proj weight+bias, mlp c_fc/c_proj weight+bias.
    for block in range(TINY_BLOCKS):
        kinds = Counter(kind for depth, kind in groups.values() if depth == block)
        assert kinds == {"layernorm": 4, "attention": 4, "mlp": 4}, block
    assert groups["visual.conv1.weight"] == groups["visual.class_embedding"] == (-1, "embedding")
    assert groups["visual.positional_embedding"] == (-1, "embedding")
    assert groups["visual.ln_pre.weight"] == groups["visual.ln_pre.bias"] == (-1, "layernorm")
    assert groups["visual.transformer.resblocks.2.attn.in_proj_weight"] == (2, "attention")
    assert groups["visual.transformer.resblocks.3.mlp.c_proj.bias"] == (3, "mlp")
    assert groups["visual.transformer.resblocks.0.ln_2.weight"] == (0, "layernorm")
    assert groups["visual.ln_post.weight"] == groups["visual.ln_post.bias"] == (TINY_BLOCKS, "layernorm")
    assert groups["visual.proj"] == (TINY_BLOCKS, "projection")
    assert groups["head.weight"] == groups["head.bias"] == (TINY_BLOCKS, "head")


def test_unknown_keys_are_other_at_their_block_or_without_depth():
    keys = ["visual.transformer.resblocks.11.attn.in_proj_weight",
            "visual.transformer.resblocks.2.ls_1.gamma",  # LayerScale
            "visual.transformer.resblocks.2.mlp.ln.weight",  # open_clip's scale_fc norm
            "visual.attnpool.c_proj.weight", "visual.proj"]
    assert geometry.group_keys(keys) == {
        keys[0]: (11, "attention"), keys[1]: (2, "other"), keys[2]: (2, "layernorm"),
        keys[3]: (None, "other"), keys[4]: (12, "projection")}
    assert geometry.block_count(["head.weight"]) == 0


def entry(angle, t, norms, guard=None):
    return {"cos": None, "angle_deg": angle, "t": t, "guard": guard, "norms": norms}


# Two blocks: block 0's attention has two tensors, block 1's one; a non-float tensor has nulls.
TENSORS = {
    "visual.transformer.resblocks.0.attn.in_proj_weight": entry(80.0, 0.2, [1.0, 3.0]),
    "visual.transformer.resblocks.0.attn.out_proj.weight": entry(60.0, 0.6, [2.0, 2.0]),
    "visual.transformer.resblocks.0.ln_1.weight": entry(90.0, 0.0, [0.0, 0.5], guard="zero_delta"),
    "visual.transformer.resblocks.1.attn.in_proj_weight": entry(70.0, 0.4, [4.0, 6.0]),
    "visual.class_embedding": entry(45.0, 0.8, [0.1, 0.3]),
    "head.weight": entry(30.0, 0.9, [5.0, 7.0]),
    "visual.counter": entry(None, None, None, guard="non_float"),
}


def test_aggregate_per_depth_and_kind_by_hand():
    rows = geometry.aggregate(TENSORS)
    by_group = {(r["depth"], r["kind"]): r for r in rows}
    assert [(r["depth"], r["kind"]) for r in rows] == [  # KINDS order, then depth, no depth last
        (-1, "embedding"), (0, "attention"), (1, "attention"), (0, "layernorm"), (2, "head"), (None, "other")]
    attn0 = by_group[0, "attention"]
    assert attn0["n_tensors"] == 2
    assert attn0["angle_deg_mean"] == pytest.approx((80 + 60) / 2)
    assert attn0["t_mean"] == pytest.approx((0.2 + 0.6) / 2)
    assert attn0["delta_norm_mean"] == pytest.approx(((1 + 3) / 2 + (2 + 2) / 2) / 2)  # 2.0
    assert attn0["keys"] == ["visual.transformer.resblocks.0.attn.in_proj_weight",
                             "visual.transformer.resblocks.0.attn.out_proj.weight"]
    assert by_group[1, "attention"]["delta_norm_mean"] == pytest.approx(5.0)
    assert by_group[0, "layernorm"]["delta_norm_mean"] == pytest.approx(0.25)
    assert by_group[2, "head"]["angle_deg_mean"] == 30.0  # L = 2 blocks: the head is at depth 2
    other = by_group[None, "other"]
    assert other["n_tensors"] == 1 and other["angle_deg_mean"] is other["t_mean"] is other["delta_norm_mean"] is None
    json.dumps(rows)  # plain JSON values


def test_aggregate_per_kind_and_per_depth_by_hand():
    by_kind = {r["kind"]: r for r in geometry.aggregate(TENSORS, ("kind",))}
    assert "depth" not in by_kind["attention"]
    assert by_kind["attention"]["n_tensors"] == 3
    assert by_kind["attention"]["angle_deg_mean"] == pytest.approx((80 + 60 + 70) / 3)
    assert by_kind["attention"]["delta_norm_mean"] == pytest.approx((2 + 2 + 5) / 3)
    by_depth = {r["depth"]: r for r in geometry.aggregate(TENSORS, ("depth",))}
    assert list(by_depth) == [-1, 0, 1, 2, None] and "kind" not in by_depth[0]
    assert by_depth[0]["n_tensors"] == 3
    assert by_depth[0]["t_mean"] == pytest.approx((0.2 + 0.6 + 0.0) / 3)
    assert by_depth[0]["angle_deg_mean"] == pytest.approx((80 + 60 + 90) / 3)
    with pytest.raises(ClipmergeError, match="'by'"):
        geometry.aggregate(TENSORS, ("layer",))


def test_missing_norms_give_a_null_mean_not_an_error():
    old = {"head.weight": {"cos": 0.5, "angle_deg": 60.0, "t": 0.6667, "guard": None}}  # merge.json before norms
    (row,) = geometry.aggregate(old)
    assert row["delta_norm_mean"] is None and row["angle_deg_mean"] == 60.0


def test_malformed_diagnostics_are_named():
    with pytest.raises(ClipmergeError, match="merge.json: 'tensors' must be"):
        geometry.check_tensors([], "merge.json")
    with pytest.raises(ClipmergeError, match="tensor 'head.weight' needs 't' and 'angle_deg'"):
        geometry.check_tensors({"head.weight": {"cos": 0.1}}, "merge.json")
    with pytest.raises(ClipmergeError, match="non-empty list of merges"):
        geometry.merge_steps({"step": 3}, "merge_history.json")
    with pytest.raises(ClipmergeError, match=r"merge 1 \(step 6\): 'tensors' must be"):
        geometry.merge_steps([{"step": 3, "tensors": TENSORS}, {"step": 6}], "merge_history.json")
