"""The dashboard's asset writer, projection, column encoding and run discovery (no browser)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA

from lightning_difficulty.dashboard import write_dashboard_assets
from lightning_difficulty.dashboard.encoding import decode_columns, encode_columns
from lightning_difficulty.dashboard.projection import TSNE_MAX_SAMPLES, project_2d
from lightning_difficulty.dashboard.runs import find_runs, perspective_columns, score_columns


def _table(sizes: dict[str, int], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for split, n in sizes.items():
        frames.append(
            pd.DataFrame(
                {
                    "split": split,
                    "index": rng.permutation(n).astype(np.int64),  # rows need not be in index order
                    "label": rng.integers(0, 3, n),
                    "prediction": rng.integers(0, 3, n),
                    "confusion": rng.random(n),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_pca_matches_scikit_learn_up_to_sign() -> None:
    x = np.random.default_rng(1).normal(size=(200, 7)) * np.arange(1, 8)
    ours = project_2d(x).astype(np.float64)
    ref = PCA(n_components=2).fit_transform(x)
    for j in range(2):
        sign = np.sign(ours[:, j] @ ref[:, j])
        np.testing.assert_allclose(ours[:, j], sign * ref[:, j], rtol=1e-4, atol=1e-4)


def test_pca_in_row_blocks_of_a_memmap_matches_scikit_learn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_difficulty.dashboard import projection

    monkeypatch.setattr(projection, "_BLOCK", 7)  # 200 rows in 29 blocks
    x = np.random.default_rng(3).normal(size=(200, 6)) * np.arange(1, 7) + 5.0
    np.save(tmp_path / "emb.npy", x.astype(np.float16))
    stored = np.load(tmp_path / "emb.npy", mmap_mode="r")
    ours = project_2d(stored).astype(np.float64)
    ref = PCA(n_components=2).fit_transform(np.asarray(stored, dtype=np.float64))
    for j in range(2):
        sign = np.sign(ours[:, j] @ ref[:, j])
        np.testing.assert_allclose(ours[:, j], sign * ref[:, j], rtol=1e-4, atol=1e-4)


def test_thumbnails_over_budget_leave_out_the_training_split(tmp_path: Path) -> None:
    sizes = {"train": 40, "val": 10}
    pictures = {s: np.random.default_rng(4).random((n, 3, 8, 8)).astype(np.float32) for s, n in sizes.items()}

    def images(split: str, indices: list[int]) -> torch.Tensor:
        return torch.from_numpy(pictures[split][np.asarray(indices)])

    budget = 20 * 3 * 8 * 8  # room for 20 thumbnails: not the 50 of both splits, the 10 of val
    with pytest.warns(UserWarning, match=r"thumbnail_budget=3,840 .*\['train'\]"):
        out = write_dashboard_assets(
            tmp_path, _table(sizes), class_names=["a", "b", "c"], images=images, thumbnail_budget=budget
        )
    meta = json.loads((out / "dashboard.json").read_text())
    assert "thumbnails" not in meta["splits"]["train"] and meta["splits"]["val"]["thumbnails"]["count"] == 10
    sheet = np.load(out / meta["thumbnails"]["file"])
    assert sheet.shape == (10, 8, 8, 3)
    np.testing.assert_allclose(sheet / 255.0, pictures["val"].transpose(0, 2, 3, 1), atol=0.5 / 255 + 1e-6)


def test_projection_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="embeddings"):
        project_2d(np.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        project_2d(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="tsne"):
        project_2d(np.zeros((TSNE_MAX_SAMPLES + 1, 2)), method="tsne")
    with pytest.raises(ValueError, match="method"):
        project_2d(np.zeros((3, 2)), method="umap")  # type: ignore[arg-type]


def test_tsne_projection_is_two_dimensional() -> None:
    x = np.random.default_rng(0).normal(size=(60, 4))
    coords = project_2d(x, method="tsne")
    assert coords.shape == (60, 2) and np.isfinite(coords).all()


def test_assets_with_every_input(tmp_path: Path) -> None:
    sizes = {"train": 30, "val": 12}
    table = _table(sizes)
    rng = np.random.default_rng(2)
    emb = {s: rng.normal(size=(n, 5)) for s, n in sizes.items()}
    pictures = {s: rng.random((n, 3, 16, 16)).astype(np.float32) for s, n in sizes.items()}

    def images(split: str, indices: list[int]) -> torch.Tensor:
        return torch.from_numpy(pictures[split][np.asarray(indices)])

    probes = ["input", "layer1", "layer2"]
    neighbours = {
        "val": {
            p: (rng.random((12, 4)), rng.integers(0, 30, (12, 4))) for p in ["layer1", "input"]
        }  # given out of order
    }
    budget = (30 + 12) * 3 * 8 * 8  # room for 8x8 thumbnails only
    out = write_dashboard_assets(
        tmp_path,
        table,
        class_names=["a", "b", "c"],
        embeddings=emb,
        images=images,
        neighbours=neighbours,
        probe_names=probes,
        thumbnail_budget=budget,
    )
    assert out == tmp_path / "dashboard"
    meta = json.loads((out / "dashboard.json").read_text())
    assert meta["format"] == "lightning-difficulty/dashboard" and meta["probes"] == probes
    val = meta["splits"]["val"]
    # projection: the PCA of the embeddings, row i = dataset index i
    coords = np.load(out / val["projection"]["file"])
    ref = PCA(n_components=2).fit_transform(emb["val"])
    assert abs(np.corrcoef(coords[:, 0], ref[:, 0])[0, 1]) > 0.9999
    # thumbnails: 2x2 block means of the 16x16 images, rounded to uint8, (N, 8, 8, 3)
    sheet = np.load(out / meta["thumbnails"]["file"])
    assert meta["thumbnails"]["side"] == 8 and sheet.shape == (42, 8, 8, 3) and sheet.dtype == np.uint8
    block = pictures["val"].reshape(12, 3, 8, 2, 8, 2).mean(axis=(3, 5)).transpose(0, 2, 3, 1)
    expected = np.round(block * 255)
    got = sheet[val["thumbnails"]["offset"] : val["thumbnails"]["offset"] + 12].astype(float)
    assert np.abs(got - expected).max() <= 1
    # neighbours: stacked in probe order (input first), whatever order they were given in
    entry = val["neighbours"]
    assert entry["probes"] == ["input", "layer1"]
    ids = np.load(out / entry["ids"])
    dist = np.load(out / entry["distances"])
    np.testing.assert_array_equal(ids[:, 0], neighbours["val"]["input"][1])
    np.testing.assert_allclose(dist[:, 1], neighbours["val"]["layer1"][0], rtol=1e-6)
    assert "neighbours" not in meta["splits"]["train"]


def test_assets_without_optional_inputs(tmp_path: Path) -> None:
    out = write_dashboard_assets(tmp_path, _table({"val": 5}), class_names=["a", "b", "c"])
    meta = json.loads((out / "dashboard.json").read_text())
    assert meta["thumbnails"] is None and meta["probes"] is None
    assert meta["splits"]["val"] == {"key": "s0", "num_samples": 5}
    assert sorted(p.name for p in out.iterdir()) == ["dashboard.json"]


def test_assets_refuse_inconsistent_input(tmp_path: Path) -> None:
    table = _table({"val": 6})
    with pytest.raises(ValueError, match=r"embeddings\['val'\].*\(6, d\)"):
        write_dashboard_assets(tmp_path, table, class_names=["a"], embeddings={"val": np.zeros((5, 2))})
    with pytest.raises(ValueError, match="splits of argument `embeddings`"):
        write_dashboard_assets(tmp_path, table, class_names=["a"], embeddings={"test": np.zeros((6, 2))})
    gappy = table[table["index"] != 2]
    with pytest.raises(ValueError, match="every dataset index"):
        write_dashboard_assets(tmp_path, gappy, class_names=["a"])
    with pytest.raises(ValueError, match="class_names"):
        write_dashboard_assets(tmp_path, table, class_names=[])
    bad = {"val": {"layer9": (np.zeros((6, 2)), np.zeros((6, 2), dtype=int))}}
    with pytest.raises(ValueError, match="probe_names"):
        write_dashboard_assets(tmp_path, table, class_names=["a"], neighbours=bad, probe_names=["input"])


def test_encoding_round_trip_matches_pandas() -> None:
    frame = pd.DataFrame(
        {
            "i": np.array([3, -1, 7], dtype=np.int64),
            "big": np.array([2**40, 0, 1], dtype=np.int64),
            "f": [0.5, np.nan, 2.25],
            "b": [True, False, True],
            "s": pd.Series(["5b", None, "1a"], dtype=object),
            "lists": [[1], [2], [3]],
        }
    )
    decoded = decode_columns(encode_columns(frame, {"projection:x": np.array([1.0, 2.0, 3.0])}))
    assert decoded["i"].dtype == np.int32 and decoded["i"].tolist() == [3, -1, 7]
    assert decoded["big"].dtype == np.float32  # does not fit int32
    np.testing.assert_array_equal(decoded["f"], np.array([0.5, np.nan, 2.25], dtype=np.float32))
    assert decoded["b"].tolist() == [1, 0, 1]
    assert decoded["s"].tolist() == ["5b", None, "1a"]
    assert "lists" in decoded  # objects are encoded as text categories
    assert decoded["projection:x"].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="extra column"):
        encode_columns(frame, {"x": np.zeros(2)})


def test_column_roles_from_columns_json_and_dtypes() -> None:
    table = pd.DataFrame(
        {
            "split": ["v"],
            "index": [0],
            "label": [1],
            "prediction": [1],
            "correct": [True],
            "confusion": [0.1],
            "prediction_depth": [2],
            "knn:input": [1],
            "kdn:input": [0.2],
            "kdn": [0.2],
            "human_difficulty": [0.3],
            "aum": [1.5],
        }
    )
    assert score_columns(table, {}) == ["confusion", "prediction_depth", "kdn:input", "kdn", "human_difficulty", "aum"]
    assert perspective_columns(table, {}) == ["human_difficulty", "kdn", "confusion"]
    info = {
        "aum": {"higher_is_harder": True, "perspective": True},
        "kdn": {"perspective": True},
        "gone": {"perspective": True},
    }
    assert perspective_columns(table, info) == ["aum", "kdn"]
    assert score_columns(table, info) == ["kdn", "aum"]


def test_find_runs(tmp_path: Path) -> None:
    for rel in ["difficulty", "a/difficulty", "b/c/difficulty", ".hidden/difficulty", "d/difficulty"]:
        (tmp_path / rel).mkdir(parents=True)
    for rel in ["difficulty", "a/difficulty", "b/c/difficulty", ".hidden/difficulty"]:
        (tmp_path / rel / "scores.parquet").write_bytes(b"")
    found = find_runs(tmp_path)
    assert found == {".": tmp_path / "difficulty", "a": tmp_path / "a/difficulty", "b/c": tmp_path / "b/c/difficulty"}
    assert find_runs(tmp_path, max_depth=1) == {".": tmp_path / "difficulty", "a": tmp_path / "a/difficulty"}
    assert find_runs(tmp_path / "missing") == {}


# ----------------------------------------------------------------------------------------------
# The pure helpers of the static JavaScript, run in node (skipped where node is not installed)

STATIC = Path(__file__).resolve().parents[1] / "src" / "lightning_difficulty" / "dashboard" / "static"


def _node(expression: str) -> object:
    """The JSON value of ``expression`` evaluated in node with ``util`` and ``summary`` imported."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = (
        f"import * as util from '{(STATIC / 'util.js').as_uri()}';\n"
        f"import * as summary from '{(STATIC / 'summary.js').as_uri()}';\n"
        f"console.log(JSON.stringify({expression}));\n"
    )
    done = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_js_colour_scale_is_viridis() -> None:
    from matplotlib import colormaps

    ts = np.linspace(0.0, 1.0, 41)
    ours = np.array(_node(f"{ts.tolist()}.map((t) => util.viridis(t))"), dtype=float)
    reference = np.array([colormaps["viridis"](t)[:3] for t in ts]) * 255
    np.testing.assert_allclose(ours, reference, atol=5.0)  # 17 stops, linear in between: within 5 of 255 (2 %)
    assert _node("[util.viridis(-1), util.viridis(2), util.viridis(NaN)]") == [[68, 1, 84], [253, 231, 37], [68, 1, 84]]
    # lightness rises monotonically (perceptual order): the Rec. 709 luma of each step
    luma = ours @ np.array([0.2126, 0.7152, 0.0722])
    assert (np.diff(luma) > 0).all()


def test_js_log_share_and_class_text() -> None:
    shares = _node("[util.logShare(1, 100), util.logShare(10, 100), util.logShare(100, 100), util.logShare(1, 1)]")
    assert shares == pytest.approx([0.0, 0.5, 1.0, 1.0], abs=1e-12)  # log(c) / log(max), by hand
    texts = _node(
        "[util.classText({class_names: ['0', '1', '2', '3', '4', '5', '6']}, 6), util.classText({class_names: "
        "['airplane', 'cat']}, 1), util.classText({class_names: []}, 7), util.classText({class_names: ['x']}, -1)]"
    )
    assert texts == ["6", "1 cat", "7", "-1"]


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        (["confusion", "kdn", "label_issue_score", "prediction_depth", "aum"], ["prediction_depth", "kdn"]),
        (["confusion", "kdn", "human_difficulty", "el2n"], ["confusion", "kdn", "human_difficulty"]),
        (["kdn:input", "label_issue_score"], ["kdn:input", "label_issue_score"]),  # topped up to two
        (["aum", "el2n", "forgetting"], ["aum", "el2n"]),
        (["confusion"], ["confusion"]),
    ],
)
def test_js_default_summary_columns_are_the_perspectives(available: list[str], expected: list[str]) -> None:
    assert _node(f"summary.defaultPerspectives({json.dumps(available)})") == expected
