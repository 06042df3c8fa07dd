"""A truncated image fails with an error naming the file, from every dataset path."""

import pytest
from PIL import Image

from clipmerge.data.splits import image_folder
from clipmerge.errors import ClipmergeError


def test_truncated_image_names_the_file(tmp_path):
    (tmp_path / "cat").mkdir()
    Image.new("RGB", (64, 64), "red").save(tmp_path / "cat" / "ok.png")
    Image.effect_noise((64, 64), 50).convert("RGB").save(tmp_path / "cat" / "bad.png")
    data = (tmp_path / "cat" / "bad.png").read_bytes()
    (tmp_path / "cat" / "bad.png").write_bytes(data[: len(data) // 2])
    dataset = image_folder(tmp_path)
    assert dataset[1][0].size == (64, 64)  # ok.png
    with pytest.raises(ClipmergeError, match=r"bad.png: cannot decode image"):
        dataset[0]
