"""CholecT45 text format: synthetic release, reader, writer, errors."""

from __future__ import annotations

import numpy as np
import pytest

from lapgen.data import cholect45, synthetic, vocab
from lapgen.errors import LapgenError


def test_round_trip(tmp_path):
    root = synthetic.write_cholect45(tmp_path / "T45", videos=(1, 2), num_frames=8)
    assert cholect45.read_dict(root / "dict" / "triplet.txt") == dict(enumerate(vocab.TRIPLETS))
    assert (root / "dict" / "maps.txt").read_text().startswith("#")
    data = cholect45.read_cholect45(root)
    assert sorted(data) == ["VID01", "VID02"] and len(data["VID02"]) == 1  # one-row files stay 2-D
    f3 = data["VID01"][3]
    assert (f3.frame, f3.triplets, f3.instruments, f3.verbs, f3.targets) == (3, [17, 60], [0, 2], [1, 2], [0])
    assert data["VID01"][0].triplets == [] and data["VID01"][1].triplets == [94]
    row = (root / "triplet" / "VID01.txt").read_text().splitlines()[1]
    assert row.startswith("1,") and len(row.split(",")) == 101
    rgb, _ = synthetic.cholect50_frame(1, 2, num_frames=8)
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(data["VID01"][2].path)), rgb)


def test_errors(tmp_path):
    root = synthetic.write_cholect45(tmp_path / "T45", videos=(1, 2), num_frames=8)
    (root / "verb" / "VID01.txt").write_text("0,1,0\n")
    with pytest.raises(LapgenError, match="expected 11 columns"):
        cholect45.read_cholect45(root)
    (root / "verb" / "VID01.txt").write_text("0," + ",".join(["2"] * 10) + "\n")
    with pytest.raises(LapgenError, match="0 or 1"):
        cholect45.read_cholect45(root, ["VID01"])
    with pytest.raises(LapgenError, match="no labels for VID09"):
        cholect45.read_cholect45(root, ["VID09"])
    (root / "data" / "VID02" / "000000.png").unlink()
    with pytest.raises(LapgenError, match="no PNG"):
        cholect45.read_cholect45(root, ["VID02"])
    with pytest.raises(LapgenError, match="no triplet/ subfolder"):
        cholect45.read_cholect45(tmp_path)
