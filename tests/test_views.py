"""Tests for the views: figures, image helpers and TensorBoard Projector files.

Expected numbers are written out by hand; the projector files are read back with TensorBoard's
own protobuf and projector plugin.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from google.protobuf import text_format
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

from lightning_difficulty.views import figures, images, projector, style

BAND_TABLE = {
    "band": ["[0, 0.5)", "[0.5, 1)", "[1, 1.5)", "[1.5, 2]"],
    "mean_score": [0.25, 0.75, 1.25, 1.75],
    "count": [500, 300, 200, 0],
    "error_rate": [0.05, 0.2, 0.5, np.nan],
}


def _rendered(fig: Figure) -> np.ndarray:
    pixels = images.figure_to_image(fig)
    assert pixels.dtype == np.uint8
    assert pixels.ndim == 3
    assert pixels.shape[0] > 0
    assert pixels.shape[1] > 0
    assert pixels.shape[2] == 3
    assert pixels.std() > 0  # something was drawn
    return pixels


def _bar_heights(fig: Figure, axes_index: int = 0, container: int = 0) -> list[float]:
    return [patch.get_height() for patch in fig.axes[axes_index].containers[container]]


# ----------------------------------------------------------------------------- images
def test_to_display_images_uint8_channels_last() -> None:
    pixels = np.zeros((1, 2, 2, 3), dtype=np.uint8)  # NHWC
    pixels[0, 0, 0] = [0, 51, 255]
    pixels[0, 1, 1] = [255, 102, 0]
    shown = images.to_display_images(pixels)
    assert shown.shape == (1, 3, 2, 2)
    assert shown.dtype == np.float32
    np.testing.assert_allclose(shown[0, :, 0, 0], [0.0, 0.2, 1.0], atol=1e-7)
    np.testing.assert_allclose(shown[0, :, 1, 1], [1.0, 0.4, 0.0], atol=1e-7)
    np.testing.assert_allclose(shown[0, :, 0, 1], [0.0, 0.0, 0.0])


def test_to_display_images_keeps_unit_range_and_replicates_gray() -> None:
    gray = np.array([[[0.0, 0.25], [0.5, 1.0]]])  # (1, 2, 2) in [0, 1]
    for batch in (gray, torch.tensor(gray[:, None], dtype=torch.float16)):
        shown = images.to_display_images(batch)
        assert shown.shape == (1, 3, 2, 2)
        for channel in range(3):
            np.testing.assert_allclose(shown[0, channel], [[0.0, 0.25], [0.5, 1.0]])


def test_to_display_images_min_max_per_image() -> None:
    batch = np.array([[[[-1.0, 0.0], [1.0, 3.0]]], [[[5.0, 5.0], [5.0, 5.0]]]])  # (2, 1, 2, 2)
    shown = images.to_display_images(batch)
    np.testing.assert_allclose(shown[0, 0], [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(shown[1], np.zeros((3, 2, 2)))  # a constant image becomes black
    clipped = images.to_display_images(batch, scale_each=False)
    np.testing.assert_allclose(clipped[0, 1], [[0.0, 0.0], [1.0, 1.0]])


def test_to_display_images_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="`inputs`"):
        images.to_display_images(np.zeros((2, 5, 4, 4)))
    with pytest.raises(ValueError, match="finite"):
        images.to_display_images(np.array([[[np.nan, 2.0]]]))


def test_figure_to_image_and_save_figure(tmp_path: Path) -> None:
    fig = Figure(figsize=(2, 1), dpi=50)
    fig.add_subplot().plot([0, 1], [1, 0])
    assert images.figure_to_image(fig).shape == (50, 100, 3)
    written = images.save_figure(fig, tmp_path / "nested" / "line.png")
    assert written == tmp_path / "nested" / "line.png"
    assert Image.open(written).size == (100, 50)


def test_hardest_easiest_grid_picks_and_places_by_score() -> None:
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    scores = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.6, 0.4, np.nan, 0.8])
    rng = np.random.default_rng(0)
    fig = images.hardest_easiest_grid_figure(
        rng.random((10, 3, 6, 6)), scores, labels, class_names=["cat", "dog", "frog"], per_class=2
    )
    assert len(fig.axes) == 3 * 4
    titles = [[fig.axes[row * 4 + column].get_title() for column in range(4)] for row in range(3)]
    # easiest two on the left, hardest two on the right, ascending; NaN scores left out
    assert titles == [["0.1", "0.3", "0.7", "0.9"], ["0.2", "", "0.4", "0.6"], ["", "", "", "0.8"]]
    assert [fig.axes[row * 4].get_ylabel() for row in range(3)] == ["cat", "dog", "frog"]
    _rendered(fig)


def test_hardest_easiest_grid_validates() -> None:
    with pytest.raises(ValueError, match="`labels`"):
        images.hardest_easiest_grid_figure(np.zeros((2, 4, 4)), [0.0, 1.0], [0, 3], class_names=["a", "b"])
    with pytest.raises(ValueError, match="`per_class`"):
        images.hardest_easiest_grid_figure(np.zeros((2, 4, 4)), [0.0, 1.0], [0, 1], class_names="ab", per_class=0)


def test_neighbour_strip_layout_and_captions() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((3, 8, 8))
    rows = [
        ("input", [(image, "cat d=1.0"), (image, "dog d=2.0"), (image, "cat d=3.0")]),
        ("layer1", [(image.transpose(1, 2, 0), "cat d=0.5"), (image[0], "cat d=0.7")]),
        ("logits", []),
    ]
    fig = images.neighbour_strip_figure(image, "query: cat", rows)
    assert len(fig.axes) == 1 + 3 + 2 + 1
    assert fig.axes[0].get_title() == "query: cat"
    assert [ax.get_title() for ax in fig.axes[1:6]] == [
        "cat d=1.0",
        "dog d=2.0",
        "cat d=3.0",
        "cat d=0.5",
        "cat d=0.7",
    ]
    assert fig.axes[1].get_ylabel() == "input"
    assert fig.axes[4].get_ylabel() == "layer1"
    _rendered(fig)


# ----------------------------------------------------------------------------- band figures
def test_error_rate_by_band_figure() -> None:
    fig = figures.error_rate_by_band_figure(BAND_TABLE, rho=0.97, split="val")
    assert len(fig.axes) == 1
    title = fig.axes[0].get_title()
    assert "(val)" in title
    assert title.endswith("= 0.970")
    np.testing.assert_allclose(_bar_heights(fig), [5.0, 20.0, 50.0, 0.0])  # %, the empty band drawn as 0
    assert fig.axes[0].get_xlabel()
    assert fig.axes[0].get_ylabel() == "top-1 error (%)"
    _rendered(fig)
    assert figures.error_rate_by_band_figure(BAND_TABLE, rho=None, split="train").axes[0].get_title().endswith("n/a")


def test_error_rate_by_band_validates_the_table() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        figures.error_rate_by_band_figure({"band": [0], "mean_score": [0.1], "count": [3]}, rho=0.5, split="val")
    percent = {**BAND_TABLE, "error_rate": [5.0, 20.0, 50.0, np.nan]}
    with pytest.raises(ValueError, match="fractions in"):
        figures.error_rate_by_band_figure(percent, rho=0.5, split="val")


def test_error_rate_by_band_accepts_a_dataframe() -> None:
    pd = pytest.importorskip("pandas")
    fig = figures.error_rate_by_band_figure(pd.DataFrame(BAND_TABLE), rho=0.9, split="train")
    np.testing.assert_allclose(_bar_heights(fig), [5.0, 20.0, 50.0, 0.0])


def test_accuracy_by_band_comparison_figure() -> None:
    small = {"band": ["easy", "hard"], "mean_score": [0.2, 2.0], "count": [8, 2], "error_rate": [0.1, 0.5]}
    large = {"band": ["easy", "hard"], "mean_score": [0.2, 2.0], "count": [8, 2], "error_rate": [0.0, 0.3]}
    fig = figures.accuracy_by_band_comparison_figure({"small": small, "large": large})
    assert len(fig.axes) == 2
    assert len(fig.axes[0].get_lines()) == 2
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [10.0, 50.0])
    # overall = (8 * 0.1 + 2 * 0.5) / 10 = 18 %; (8 * 0 + 2 * 0.3) / 10 = 6 %
    np.testing.assert_allclose(_bar_heights(fig, 1, 0), [18.0, 6.0])
    np.testing.assert_allclose(_bar_heights(fig, 1, 1), [50.0, 30.0])
    assert all(ax.get_title() for ax in fig.axes)
    _rendered(fig)


# ----------------------------------------------------------------------------- prediction depth
def test_prediction_depth_histogram_counts() -> None:
    fig = figures.prediction_depth_histogram_figure([0, 1, 1, 3, 3, 3], num_probes=3, split="val")
    np.testing.assert_allclose(_bar_heights(fig), [1, 2, 0, 3])
    assert fig.axes[0].get_title() == "Prediction depth (val, n=6)"
    _rendered(fig)
    with pytest.raises(ValueError, match=r"`pd_values` to lie in \[0, 3\]"):
        figures.prediction_depth_histogram_figure([0, 4], num_probes=3, split="val")


def test_accuracy_by_depth_drops_nan_depths() -> None:
    depths = np.array([0, 0, 1, np.nan, 2, 2, 2])
    correct = np.array([True, False, True, False, True, True, False])
    fig = figures.accuracy_by_depth_figure(depths, correct, num_probes=3)
    np.testing.assert_allclose(_bar_heights(fig), [50.0, 100.0, 200.0 / 3.0, 0.0])
    assert fig.axes[0].get_title() == "Accuracy by prediction depth (n=6)"
    assert [text.get_text() for text in fig.axes[0].texts] == ["n=2", "n=1", "n=3", "n=0"]
    _rendered(fig)


def test_probe_accuracy_figure_two_series() -> None:
    names = ["input", "block1", "block2", "logits"]
    fig = figures.probe_accuracy_figure(
        names, {"k-NN vs labels": [0.3, 0.5, 0.7, 0.9], "k-NN vs final prediction": [0.3, 0.6, 0.8, 1.0]}
    )
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["k-NN vs labels", "k-NN vs final prediction"]
    np.testing.assert_allclose(lines[1].get_ydata(), [0.3, 0.6, 0.8, 1.0])
    assert [tick.get_text() for tick in fig.axes[0].get_xticklabels()] == names
    _rendered(fig)
    with pytest.raises(ValueError, match="4 entries"):
        figures.probe_accuracy_figure(names, {"short": [0.1, 0.2]})


# ----------------------------------------------------------------------------- difficulty flow
# Hand-worked case: 3 probes (input, hidden, logits), 5 samples, 2 classes.
#   sample:            0  1  2  3  4
#   probe 0 predicts:  0  0  1  1  0
#   probe 1 predicts:  0  1  1  1  0
#   probe 2 predicts:  0  1  1  0  0
#   final prediction:  0  1  1  0  1
#   label:             0  1  0  0  0   -> correct: yes yes no yes no
#   prediction depth:  0  1  0  2  3   (sample 4 never agrees with its final prediction)
PROBES = np.array([[0, 0, 1, 1, 0], [0, 1, 1, 1, 0], [0, 1, 1, 0, 0]])
FINAL = np.array([0, 1, 1, 0, 1])
LABELS = np.array([0, 1, 0, 0, 0])
DEPTH = np.array([0, 1, 0, 2, 3])


def test_difficulty_flow_counts_hand_computed() -> None:
    counts = figures.difficulty_flow_counts(PROBES, FINAL, LABELS, DEPTH)
    assert counts.num_classes == 2
    assert (counts.settled_correct, counts.settled_wrong) == (2, 3)
    # node order: class 0, class 1, settled correct, settled wrong
    # column 0: settled {0 correct, 2 wrong}; open 1 -> 0, 3 -> 1, 4 -> 0
    # column 1: settled {0, 1 correct; 2 wrong}; open 3 -> 1, 4 -> 0
    # column 2: settled {0, 1, 3 correct; 2 wrong}; open 4 -> 0
    np.testing.assert_array_equal(counts.node_counts, [[2, 1, 1, 1], [1, 1, 2, 1], [1, 0, 3, 1]])
    # column 0 by true label: class-0 node holds samples 1 (label 1) and 4 (label 0), class-1 node
    # sample 3 (label 0), settled correct sample 0 (label 0), settled wrong sample 2 (label 0)
    np.testing.assert_array_equal(counts.node_label_counts[0], [[1, 1], [1, 0], [1, 0], [1, 0]])
    np.testing.assert_array_equal(counts.node_label_counts[2], [[1, 0], [0, 0], [2, 1], [1, 0]])
    expected_flows = np.zeros((2, 4, 4), dtype=int)
    # 0 -> 1: sample 0 SC->SC, 1 c0->SC, 2 SW->SW, 3 c1->c1, 4 c0->c0
    expected_flows[0, 2, 2] = expected_flows[0, 0, 2] = expected_flows[0, 3, 3] = 1
    expected_flows[0, 1, 1] = expected_flows[0, 0, 0] = 1
    # 1 -> 2: samples 0, 1 SC->SC, 2 SW->SW, 3 c1->SC, 4 c0->c0
    expected_flows[1, 2, 2] = 2
    expected_flows[1, 3, 3] = expected_flows[1, 1, 2] = expected_flows[1, 0, 0] = 1
    np.testing.assert_array_equal(counts.flows, expected_flows)
    # the same moves by true label: only sample 1 (label 1) moves c0 -> SC at 0 -> 1 and only
    # sample 3 (label 0) moves c1 -> SC at 1 -> 2
    assert counts.label_flows.shape == (2, 4, 4, 2)
    np.testing.assert_array_equal(counts.label_flows[0, 0, 2], [0, 1])
    np.testing.assert_array_equal(counts.label_flows[0, 0, 0], [1, 0])
    np.testing.assert_array_equal(counts.label_flows[1, 1, 2], [1, 0])
    np.testing.assert_array_equal(counts.label_flows[1, 2, 2], [1, 1])


def test_difficulty_flow_counts_extra_classes_and_single_probe() -> None:
    counts = figures.difficulty_flow_counts(PROBES, FINAL, LABELS, DEPTH, num_classes=3)
    np.testing.assert_array_equal(counts.node_counts[0], [2, 1, 0, 1, 1])
    single = figures.difficulty_flow_counts([[1, 0, 1]], [1, 1, 1], [1, 1, 0], [0, 1, 0])
    # probe 0 agrees with samples 0 and 2 (depth 0); sample 1 never settles and sits in class 0
    np.testing.assert_array_equal(single.node_counts, [[1, 0, 1, 1]])
    assert single.flows.shape == (0, 4, 4)


def test_difficulty_flow_counts_rejects_inconsistent_depth() -> None:
    wrong_depth = np.array([0, 0, 0, 2, 3])  # sample 1: probe 0 predicts 0, final prediction 1
    with pytest.raises(ValueError, match="sample 1 has prediction depth 0 but probe 0 predicts 0"):
        figures.difficulty_flow_counts(PROBES, FINAL, LABELS, wrong_depth)
    with pytest.raises(ValueError, match=r"`prediction_depth` to lie in \[0, 3\]"):
        figures.difficulty_flow_counts(PROBES, FINAL, LABELS, [0, 1, 0, 2, 4])


def test_difficulty_flow_figure_small_case() -> None:
    fig = figures.difficulty_flow_figure(
        PROBES, FINAL, LABELS, DEPTH, layer_names=["input", "hidden", "logits"], class_names=["cat", "dog"]
    )
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_title().endswith("(n=5)")
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["input", "hidden", "logits"]
    texts = {text.get_text() for text in ax.texts}
    assert {"cat (2)", "dog (1)", "settled correct (3)", "settled wrong (1)"} <= texts
    _rendered(fig)
    with pytest.raises(ValueError, match="`layer_names`"):
        figures.difficulty_flow_figure(PROBES, FINAL, LABELS, DEPTH, layer_names=["input"])


def test_difficulty_flow_figure_ten_classes_ten_probes() -> None:
    rng = np.random.default_rng(0)
    num_probes, num_samples = 11, 300
    labels = rng.integers(0, 10, num_samples)
    final = np.where(rng.random(num_samples) < 0.8, labels, rng.integers(0, 10, num_samples))
    agree_from = rng.integers(0, num_probes + 1, num_samples)  # a prediction depth per sample
    probes = rng.integers(0, 10, (num_probes, num_samples))
    depth_grid = np.arange(num_probes)[:, None]
    probes = np.where(depth_grid >= agree_from, final, probes)
    before = (depth_grid == agree_from - 1) & (probes == final)  # make probe PD - 1 disagree
    probes = np.where(before, (final + 1) % 10, probes)
    names = ["input", *[f"block{i}" for i in range(1, num_probes - 1)], "logits"]
    fig = figures.difficulty_flow_figure(probes, final, labels, agree_from, layer_names=names)
    assert len(fig.axes) == 1
    _rendered(fig)


# ----------------------------------------------------------------------------- perspectives, performance
def test_perspective_heatmaps_shares() -> None:
    perspectives = {"human": [0, 0, 1, 1], "data": [0, 1, 1, 1]}
    fig = figures.perspective_heatmaps_figure(perspectives, [True, True, True, False])
    assert len(fig.axes) == 3  # two heatmaps and one colour bar
    assert fig.axes[0].get_title() == "data vs human: correct (n=3)"
    assert fig.axes[1].get_title() == "data vs human: wrong (n=1)"
    # rows = data bins (0, 1), columns = human bins (0, 1); shares of each group
    correct = np.asarray(fig.axes[0].collections[0].get_array()).reshape(2, 2)
    wrong = np.asarray(fig.axes[1].collections[0].get_array()).reshape(2, 2)
    np.testing.assert_allclose(correct, [[1 / 3, 0.0], [1 / 3, 1 / 3]])
    np.testing.assert_allclose(wrong, [[0.0, 0.0], [0.0, 1.0]])
    _rendered(fig)


def test_perspective_heatmaps_three_perspectives() -> None:
    rng = np.random.default_rng(2)
    perspectives = {"human": rng.random(50), "data": rng.integers(0, 6, 50) / 5, "model": rng.integers(0, 8, 50)}
    perspectives["human"][:5] = np.nan  # not annotated
    fig = figures.perspective_heatmaps_figure(perspectives, rng.random(50) > 0.3)
    assert len(fig.axes) == 3 * 2 + 3
    heatmap_titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(heatmap_titles) == 6
    assert sum(": correct (n=" in title for title in heatmap_titles) == 3
    _rendered(fig)
    with pytest.raises(ValueError, match="at least two"):
        figures.perspective_heatmaps_figure({"human": [0.1]}, [True])


def test_confusion_matrix_figure_values() -> None:
    labels, predictions = [0, 0, 1, 2], [0, 1, 1, 0]
    fig = figures.confusion_matrix_figure(labels, predictions, class_names=["a", "b", "c"])
    assert len(fig.axes) == 2  # matrix and colour bar
    shown = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_allclose(shown, [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    counts = figures.confusion_matrix_figure(labels, predictions, normalize=False)
    np.testing.assert_allclose(np.asarray(counts.axes[0].images[0].get_array()), [[1, 1, 0], [0, 1, 0], [1, 0, 0]])
    assert fig.axes[0].get_xlabel() == "predicted class"
    _rendered(fig)


def test_category_shares_figure_values() -> None:
    categories = ["fine-grained", "model failure", "fine-grained", "fine-grained", "ambiguous"]
    groups = ["1b", "1b", "5b", "5b", "5b"]
    fig = figures.category_shares_figure(categories, groups, group_name="pattern")
    ax = fig.axes[0]
    assert ax.get_title() == "Error categories by pattern"
    assert [container.get_label() for container in ax.containers] == ["ambiguous", "fine-grained", "model failure"]
    np.testing.assert_allclose(_bar_heights(fig, 0, 0), [0.0, 1 / 3])
    np.testing.assert_allclose(_bar_heights(fig, 0, 1), [0.5, 2 / 3])
    np.testing.assert_allclose(_bar_heights(fig, 0, 2), [0.5, 0.0])
    assert [text.get_text() for text in ax.texts] == ["n=2", "n=3"]
    _rendered(fig)


# ----------------------------------------------------------------------------- markdown
def test_dict_table_markdown() -> None:
    rows = [{"band": "low", "error": 0.051234, "n": 90}, {"band": "a|b\nc", "n": 10}]
    assert figures.dict_table_markdown(rows, ["band", "error", "n"]) == (
        "| band | error | n |\n| --- | --- | --- |\n| low | 0.05123 | 90 |\n| a\\|b c |  | 10 |"
    )


def test_pattern_table_markdown() -> None:
    assert figures.pattern_table_markdown({"1a": 3, "5b": 1}) == (
        "| pattern | meaning | count | share |\n"
        "| --- | --- | --- | --- |\n"
        "| 1a | clean, representative, easy | 3 | 0.75 |\n"
        "| 5b | likely irreducible error | 1 | 0.25 |"
    )
    table = figures.pattern_table_markdown({"2b": {"count": 4, "share": 0.4, "accuracy": 0.0}})
    assert table.splitlines()[0] == "| pattern | meaning | count | share | accuracy |"
    assert table.splitlines()[2] == "| 2b | misleading raw-feature similarity (e.g. background) | 4 | 0.4 | 0 |"


# ----------------------------------------------------------------------------- projector
def _config(log_dir: Path) -> ProjectorConfig:
    config = ProjectorConfig()
    text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), config)
    return config


def test_write_projector_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(10, 4)).astype(np.float32)
    sprites = rng.random((10, 3, 8, 8))
    metadata = {
        "label": np.arange(10),
        "confusion": np.linspace(0.0, 0.9, 10),
        "class\tname": np.array(["cat\tdog"] + ["ship\nx"] * 9),
    }
    folder = projector.write_projector(tmp_path, "penultimate", torch.from_numpy(vectors), metadata, images=sprites)
    assert folder == tmp_path / "00000" / "penultimate"

    (embedding,) = _config(tmp_path).embeddings
    assert embedding.tensor_name == "penultimate:00000"
    assert embedding.tensor_path == "00000/penultimate/tensors.tsv"
    assert embedding.metadata_path == "00000/penultimate/metadata.tsv"
    assert embedding.sprite.image_path == "00000/penultimate/sprite.png"
    assert list(embedding.sprite.single_image_dim) == [8, 8]

    tensors = np.loadtxt(tmp_path / embedding.tensor_path, delimiter="\t")
    assert tensors.shape == (10, 4)
    np.testing.assert_allclose(tensors, vectors, rtol=1e-6)

    lines = (tmp_path / embedding.metadata_path).read_text().splitlines()
    assert len(lines) == 11
    assert lines[0] == "label\tconfusion\tclass name"
    assert lines[1] == "0\t0\tcat dog"
    assert lines[2] == "1\t0.1\tship x"
    assert lines[10] == "9\t0.9\tship x"

    sprite = np.asarray(Image.open(tmp_path / embedding.sprite.image_path))
    assert sprite.shape == (3 * 8, 4 * 8, 3)  # ceil(sqrt(10)) = 4 columns, 3 rows
    np.testing.assert_array_equal(sprite[:8, :8], np.round(sprites[0].transpose(1, 2, 0) * 255))
    np.testing.assert_array_equal(sprite[8:16, 8:16], np.round(sprites[5].transpose(1, 2, 0) * 255))
    assert not sprite[16:, 16:].any()  # slots 10 and 11 are empty


def test_write_projector_merges_and_replaces(tmp_path: Path) -> None:
    vectors = np.eye(3)
    projector.write_projector(tmp_path, "input", vectors, {"label": [0, 1, 2]})
    projector.write_projector(tmp_path, "layer/2", vectors, {"label": [0, 1, 2]}, global_step=7)
    projector.write_projector(tmp_path, "input", 2 * vectors, {"label": [2, 1, 0]})
    names = [embedding.tensor_name for embedding in _config(tmp_path).embeddings]
    assert names == ["layer/2:00007", "input:00000"]
    np.testing.assert_allclose(np.loadtxt(tmp_path / "00000" / "input" / "tensors.tsv"), 2 * vectors)
    # one column: no header row (TensorBoard's rule for single-column metadata)
    assert (tmp_path / "00000" / "input" / "metadata.tsv").read_text() == "2\n1\n0\n"
    assert (tmp_path / "00007" / "layer%2F2" / "tensors.tsv").exists()


def test_write_projector_caps_the_sprite(tmp_path: Path) -> None:
    wide = np.random.default_rng(4).random((150, 3, 8, 1000)).astype(np.float32)
    projector.write_projector(tmp_path, "wide", np.zeros((150, 2)), {}, images=wide)
    (embedding,) = _config(tmp_path).embeddings
    # 13 columns x 12 rows; scale = 8192 / (13 * 1000) -> thumbnails 630 x 5 pixels
    assert list(embedding.sprite.single_image_dim) == [630, 5]
    assert Image.open(tmp_path / embedding.sprite.image_path).size == (13 * 630, 12 * 5)
    assert not embedding.metadata_path


def test_write_projector_validates_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metadata column `label`"):
        projector.write_projector(tmp_path, "bad", np.zeros((4, 2)), {"label": [0, 1]})
    with pytest.raises(ValueError, match="`images`"):
        projector.write_projector(tmp_path, "bad", np.zeros((4, 2)), {}, images=np.zeros((3, 3, 4, 4)))
    with pytest.raises(ValueError, match="`tag`"):
        projector.write_projector(tmp_path, "..", np.zeros((4, 2)), {})
    with pytest.raises(ValueError, match="`embeddings`"):
        projector.write_projector(tmp_path, "nan", np.full((4, 2), np.nan), {})
    assert list(tmp_path.iterdir()) == []


def test_write_projector_is_served_by_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(6, 3)).astype(np.float32)
    projector.write_projector(
        tmp_path, "emb", vectors, {"label": [0, 1, 2, 0, 1, 2], "score": [0.5] * 6}, images=rng.random((6, 8, 8))
    )
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(tmp_path))
    plugin = ProjectorPlugin(base_plugin.TBContext(logdir=str(tmp_path), data_provider=provider))
    apps = plugin.get_plugin_apps()

    def get(route: str, **query: str) -> bytes:
        response = Client(apps[route], Response).get(route, query_string=query)
        assert response.status_code == 200, response.data
        return response.data

    served = np.frombuffer(get("/tensor", run=".", name="emb:00000"), dtype=np.float32).reshape(6, 3)
    np.testing.assert_allclose(served, vectors, rtol=1e-6)
    assert get("/metadata", run=".", name="emb:00000").decode().splitlines()[:2] == ["label\tscore", "0\t0.5"]
    assert Image.open(io.BytesIO(get("/sprite_image", run=".", name="emb:00000"))).size == (24, 16)


# ----------------------------------------------------------------------------- first-hour readability
def _texts(fig: Figure) -> list[Text]:
    images.figure_to_image(fig)  # lay out and draw, so tick labels exist
    return [t for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]


def test_every_figure_uses_thumbnail_readable_type() -> None:
    rng = np.random.default_rng(7)
    built = [
        figures.error_rate_by_band_figure(BAND_TABLE, rho=0.9, split="val"),
        figures.prediction_depth_histogram_figure([0, 1, 1, 3], num_probes=3, split="val"),
        figures.perspective_heatmaps_figure({"a": rng.random(30), "b": rng.random(30)}, rng.random(30) > 0.5),
        figures.confusion_matrix_figure([0, 1, 1], [0, 1, 0]),
        images.hardest_easiest_grid_figure(rng.random((4, 3, 4, 4)), np.arange(4.0), [0, 0, 1, 1], class_names="ab"),
        images.neighbour_strip_figure(np.zeros((3, 4, 4)), "query", [("input", [(np.zeros((3, 4, 4)), "d=1")])]),
    ]
    for fig in built:
        sizes = [t.get_fontsize() for t in _texts(fig)]
        assert min(sizes) >= style.NOTE, f"{fig.texts or fig.axes[0].get_title()}: type of {min(sizes)} pt"


def test_error_rate_by_band_edges_empty_band_and_rho_caveat() -> None:
    table = {**BAND_TABLE, "low": [0.0, 0.5, 1.0, 1.5], "high": [0.5, 1.0, 1.5, 2.0]}
    fig = figures.error_rate_by_band_figure(table, rho=0.97, split="val")
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["0.00\n-0.50", "0.50\n-1.00", "1.00\n-1.50", "1.50\n-2.00"]
    assert fig.axes[0].texts[-1].get_text() == "n=0"  # the empty band: a count, no "nan"
    # without edges an empty band says so instead of "nan"
    plain = [
        t.get_text()
        for t in figures.error_rate_by_band_figure(BAND_TABLE, rho=0.9, split="v").axes[0].get_xticklabels()
    ]
    assert plain[-1] == "[1.5, 2]\nempty" and not any("nan" in t for t in plain)
    # 185 errors (500 * 0.05 + 300 * 0.2 + 200 * 0.5): no caveat; 2 errors: a caveat
    assert not any("rests on" in t.get_text() for t in fig.axes[0].texts)
    few = {"band": ["a", "b"], "mean_score": [0.1, 1.0], "count": [40, 4], "error_rate": [0.0, 0.5]}
    notes = [t.get_text() for t in figures.error_rate_by_band_figure(few, rho=1.0, split="val").axes[0].texts]
    assert "rho rests on 2 errors only" in notes


def test_prediction_depth_histogram_is_integer_bars_with_counts() -> None:
    fig = figures.prediction_depth_histogram_figure([0, 1, 1, 3, 3, 3], num_probes=3, split="val")
    bars = fig.axes[0].containers[0]
    assert [patch.get_x() + patch.get_width() / 2 for patch in bars] == [0.0, 1.0, 2.0, 3.0]
    assert all(patch.get_width() < 1.0 for patch in bars)  # separate bars, not a smeared histogram
    assert [t.get_text() for t in fig.axes[0].texts] == ["n=1", "n=2", "n=0", "n=3"]
    images.figure_to_image(fig)
    assert all(float(tick).is_integer() for tick in fig.axes[0].get_yticks())


def test_perspective_heatmaps_log_scale_keeps_sparse_cells_visible() -> None:
    # 98 of 100 correct samples in one cell, 1 each in two others; 2 wrong samples
    human = np.array([0.0] * 98 + [1.0, 2.0] + [0.0, 2.0])
    data = np.array([0.0] * 98 + [1.0, 2.0] + [2.0, 2.0])
    correct = np.array([True] * 100 + [False] * 2)
    fig = figures.perspective_heatmaps_figure({"human": human, "data": data}, correct)
    mesh = fig.axes[0].collections[0]
    shares = np.asarray(mesh.get_array().filled(0.0)).reshape(3, 3)
    np.testing.assert_allclose(shares, [[0.98, 0, 0], [0, 0.01, 0], [0, 0, 0.01]])
    assert np.ma.getmaskarray(mesh.get_array()).sum() == 6  # empty cells are blank, not dark
    norm = mesh.norm
    assert isinstance(norm, LogNorm) and norm.vmin == pytest.approx(0.01) and norm.vmax == pytest.approx(0.98)
    # on the log scale a 1 % cell sits at the bottom and the 98 % cell at the top; their geometric mean halfway
    assert float(norm(np.sqrt(0.01 * 0.98))) == pytest.approx(0.5)
    assert fig.axes[1].collections[0].norm is norm  # one scale per row: correct and wrong panels compare


def test_grid_and_instance_view_show_dataset_indices_and_whole_captions() -> None:
    rng = np.random.default_rng(8)
    grid = images.hardest_easiest_grid_figure(
        rng.random((4, 3, 4, 4)),
        [0.1, 0.9, 0.2, 0.8],
        [0, 0, 1, 1],
        class_names="ab",
        per_class=1,
        indices=[10, 11, 12, 13],
    )
    assert [ax.get_title() for ax in grid.axes] == ["#10\n0.1", "#11\n0.9", "#12\n0.2", "#13\n0.8"]
    with pytest.raises(ValueError, match="`indices` to hold 4 integer dataset indices"):
        images.hardest_easiest_grid_figure(
            rng.random((4, 3, 4, 4)), np.zeros(4), [0, 0, 1, 1], class_names="ab", indices=[1]
        )

    image = rng.random((3, 8, 8))
    caption = "pattern 2b: label automobile, prediction truck, confusion 1.234, depth 6"
    rows = [("input", [(image, "automobile d=12.34"), (image, "truck d=13.0")]), ("block1", [(image, "truck d=2.5")])]
    fig = images.neighbour_strip_figure(image, caption, rows, query_index=4321, neighbour_indices=[[7, 8], [9]])
    assert fig.axes[0].get_title().replace("\n", " ") == f"#4321 {caption}"
    assert [ax.get_title().replace("\n", " ") for ax in fig.axes[1:]] == [
        "#7 automobile d=12.34",
        "#8 truck d=13.0",
        "#9 truck d=2.5",
    ]
    pixels = images.figure_to_image(fig)  # drawn: every caption lies inside the figure
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    for ax in fig.axes:
        box = ax.title.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= pixels.shape[1] and box.y1 <= pixels.shape[0]
    with pytest.raises(ValueError, match="one dataset index per neighbour"):
        images.neighbour_strip_figure(image, "q", rows, neighbour_indices=[[7], [9]])


def test_projector_takes_any_column_and_labels_by_class_name(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    table = pd.DataFrame(
        {
            "index": [0, 1, 2],
            "correct": [True, False, True],
            "confusion": [0.5, np.nan, 1.25],
            "human_difficulty": pd.array([0, None, 2], dtype="Int64"),
            "knn:input": [1, 2, 0],
            "split": pd.Categorical(["val", "val", "val"]),
            "label_name": ["cat", "dog", "ship"],
        }
    )
    metadata = {column: table[column] for column in table.columns}
    projector.write_projector(tmp_path, "val", np.eye(3), metadata)
    lines = (tmp_path / "00000" / "val" / "metadata.tsv").read_text().splitlines()
    assert lines[0].split("\t") == [
        "label_name",
        "index",
        "correct",
        "confusion",
        "human_difficulty",
        "knn:input",
        "split",
    ]
    assert lines[1].split("\t") == ["cat", "0", "True", "0.5", "0", "1", "val"]
    assert lines[2].split("\t") == ["dog", "1", "False", "nan", "nan", "2", "val"]
    projector.write_projector(tmp_path, "val", np.eye(3), metadata, label_column="split")
    assert (tmp_path / "00000" / "val" / "metadata.tsv").read_text().startswith("split\tindex\t")
    with pytest.raises(ValueError, match="`label_column`='pattern'"):
        projector.write_projector(tmp_path, "val", np.eye(3), metadata, label_column="pattern")


class _Figures:
    """Stands in for a TensorBoard writer: keeps each figure's tag and size in inches."""

    def __init__(self) -> None:
        self.sizes: dict[str, tuple[float, float]] = {}

    def add_figure(self, tag: str, figure: Any, step: int) -> None:
        self.sizes[tag] = tuple(figure.get_size_inches())

    def add_histogram(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_views_of_a_thousand_classes_with_sampled_depths_stay_small() -> None:
    from lightning_difficulty.functional.prediction_depth import prediction_depth
    from lightning_difficulty.views.report_views import MAX_FLOW_CLASSES, ViewOptions, log_split_depth_views

    rng = np.random.default_rng(0)
    n, classes, probes = 600, 1000, ["input", "a", "b"]
    labels = rng.integers(0, classes, n)
    final = np.where(rng.random(n) < 0.6, labels, rng.integers(0, classes, n))
    votes = np.where(rng.random((3, n)) < 0.5, final, rng.integers(0, classes, (3, n)))
    depth = prediction_depth(votes, final).astype(float)
    scored = rng.random(n) < 0.5  # train_queries scored a sample: the other rows are NaN
    table = pd.DataFrame({"label": labels, "prediction": final, "correct": final == labels, "prediction_depth": depth})
    for p, vote in zip(probes, votes, strict=True):
        table[f"knn:{p}"] = vote.astype(float)
    table.loc[~scored, ["prediction_depth", *(f"knn:{p}" for p in probes)]] = np.nan
    writer = _Figures()
    options = ViewOptions(class_names=[f"c{i}" for i in range(classes)])
    log_split_depth_views(writer, "train", table[scored], probes, 0, options)
    assert set(writer.sizes) >= {"difficulty/difficulty_flow/train", "difficulty/probe_accuracy/train"}
    assert all(max(size) <= 40 for size in writer.sizes.values())  # no figure sized by the class count
    matrix = figures.confusion_matrix_figure(labels, final, class_names=options.class_names)
    assert max(matrix.get_size_inches()) <= figures.MAX_MATRIX_INCHES + 1  # + 1 inch for the colour bar
    assert not any(t.get_text().startswith("c") for t in matrix.axes[0].get_xticklabels())  # indices, not 1,000 names
    assert classes > MAX_FLOW_CLASSES


def test_hardest_easiest_grid_of_many_classes_shows_the_most_confused() -> None:
    from lightning_difficulty.views.report_views import MAX_GRID_CLASSES, ViewOptions, log_split_views

    rng = np.random.default_rng(1)
    n, classes = 900, 45
    labels = rng.integers(0, classes, n)
    confusion = rng.random(n) + (labels >= classes - MAX_GRID_CLASSES)  # the last 20 classes are the most confused
    rows = pd.DataFrame({"index": np.arange(n), "label": labels, "confusion": confusion})
    grids: list[Figure] = []

    class Writer(_Figures):
        def add_figure(self, tag: str, figure: Any, step: int) -> None:
            grids.append(figure) if "hardest_easiest" in tag else None

    def fetch(split: str, indices: list[int]) -> torch.Tensor:
        return torch.rand(len(indices), 3, 4, 4)

    options = ViewOptions(class_names=[f"k{i}" for i in range(classes)], grid_per_class=1)
    log_split_views(Writer(), "train", rows, {}, 0, options, fetch)
    [grid] = grids
    titles = {ax.get_ylabel() for ax in grid.axes if ax.get_ylabel()}
    assert titles == {f"k{c} (#{c})" for c in range(classes - MAX_GRID_CLASSES, classes)}
