"""DifficultyReport end to end: TensorBoard events and projector files, the table, manifests and file hygiene."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
from google.protobuf import text_format
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from scipy.stats import entropy
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.projector import projector_config_pb2

from lightning_difficulty import (
    ConfusionScore,
    DataDifficulty,
    DifficultyReport,
    ErrorTaxonomy,
    HumanAlignment,
    PredictionDepth,
)
from lightning_difficulty.storage.manifest import GroupsManifest, HardSubsetManifest
from tests.helpers import TinyMLP, blobs
from tests.helpers_integration import ExtraClassMLP, ImageMLP, fit, image_blobs, run_forward

EPOCHS = 3
N_TRAIN, N_VAL = 80, 40
SUPERCLASS = {0: "a", 1: "a", 2: "b", 3: "b"}


def _val_counts() -> np.ndarray:
    """Annotator counts that never make a second class valid (every other class < 10% of the votes).

    Even rows are unanimous (human difficulty 0); odd rows give 7 of 31 votes to other classes
    (human difficulty 0.226 > 0.2, so "high"), at most 3 to any one class (9.7% < the 10% min_share).
    """
    labels = image_blobs(N_VAL, seed=2).tensors[1].numpy()
    counts = np.zeros((N_VAL, 4), dtype=np.int64)
    for i, label in enumerate(labels):
        if i % 2 == 0:
            counts[i, label] = 20
        else:
            others = [c for c in range(4) if c != label]
            counts[i, label] = 24
            counts[i, others] = [3, 2, 2]
    return counts


@dataclass
class Run:
    trainer: L.Trainer
    model: ImageMLP
    log_dir: Path
    run_dir: Path
    table: pd.DataFrame


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("tb")
    model = ImageMLP(side=4)
    callbacks = [
        ConfusionScore(),
        PredictionDepth(layers=["hidden", "out"], k=5),
        DataDifficulty(k=5),
        HumanAlignment(_val_counts(), split="val"),
        DifficultyReport(error_taxonomy=ErrorTaxonomy(superclasses=SUPERCLASS), grid_per_class=0),
    ]
    logger = TensorBoardLogger(save_dir=str(root))
    trainer = fit(
        root, model, callbacks, image_blobs(N_TRAIN, seed=1), image_blobs(N_VAL, seed=2), epochs=EPOCHS, logger=logger
    )
    log_dir = Path(logger.log_dir)
    run_dir = log_dir / "difficulty"  # the default: <trainer.log_dir>/difficulty
    return Run(trainer, model, log_dir, run_dir, pd.read_parquet(run_dir / "scores.parquet"))


def _events(log_dir: Path) -> EventAccumulator:
    guidance = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}
    accumulator = EventAccumulator(str(log_dir), size_guidance=guidance)
    accumulator.Reload()
    return accumulator


def test_tensorboard_scalars_histograms_images_and_text(tb_run: Run) -> None:
    events = _events(tb_run.log_dir)
    tags = events.Tags()
    for split in ("train", "val"):
        points = sorted(events.Scalars(f"difficulty/confusion_mean/{split}"), key=lambda p: p.step)
        assert len(points) == EPOCHS  # on Lightning's global-step axis, one point per epoch
        # each point is the mean entropy of that epoch's recorded softmax vectors
        for epoch, point in enumerate(points):
            probs = np.load(tb_run.run_dir / "records" / split / f"epoch_{epoch:04d}.probs.npy")
            assert point.value == pytest.approx(entropy(probs.astype(np.float64), axis=1).mean(), rel=1e-5)
        for name in ("confusion", "prediction_depth_hist"):
            assert f"difficulty/{name}/{split}" in tags["histograms"]
        for name in (
            "error_rate_by_confusion_band",
            "confusion_matrix",
            "perspectives",
            "prediction_depth",
            "accuracy_by_depth",
            "probe_accuracy",
            "difficulty_flow",
            "error_categories_by_confusion_band",
        ):
            tag = f"difficulty/{name}/{split}"
            assert tag in tags["images"], tag
            image = events.Images(tag)[-1]
            assert image.step == EPOCHS and image.width > 0 and image.height > 0
    val = tb_run.table[tb_run.table["split"] == "val"]
    instances = {t for t in tags["images"] if t.startswith("difficulty/instances/")}
    assert instances == {f"difficulty/instances/val/pattern_{p}" for p in val["pattern"].unique()}
    assert "difficulty/patterns/val/text_summary" in tags["tensors"]
    assert "difficulty/patterns/train/text_summary" not in tags["tensors"]  # no human perspective there
    text = events.Tensors("difficulty/patterns/val/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "5a" in text or "5b" in text or "6" in text


def test_projector_files(tb_run: Run) -> None:
    config = projector_config_pb2.ProjectorConfig()
    text_format.Parse((tb_run.log_dir / "projector_config.pbtxt").read_text(), config)
    assert len(config.embeddings) == 1
    embedding = config.embeddings[0]
    assert list(embedding.tensor_shape) == [N_VAL, 16]  # the penultimate probe: `hidden`
    lines = (tb_run.log_dir / embedding.metadata_path).read_text().splitlines()
    header = lines[0].split("\t")
    for column in ("label", "prediction", "correct", "confusion", "prediction_depth", "kdn", "human_difficulty"):
        assert column in header
    assert "pattern" in header
    assert len(lines) == N_VAL + 1
    rows = [line.split("\t") for line in lines[1:]]
    val = tb_run.table[tb_run.table["split"] == "val"].sort_values("index")
    assert [int(r[header.index("label")]) for r in rows] == val["label"].tolist()
    assert [r[header.index("pattern")] for r in rows] == val["pattern"].tolist()
    tensors = np.loadtxt(tb_run.log_dir / embedding.tensor_path, delimiter="\t")
    assert tensors.shape == (N_VAL, 16)
    assert (tb_run.log_dir / embedding.sprite.image_path).exists()


def test_table_columns_and_predictions(tb_run: Run) -> None:
    table = tb_run.table
    expected = {"split", "index", "label", "prediction", "correct", "confusion", "hard", "group"}
    expected |= {"confusion_band", "error_category"}
    assert expected <= set(table.columns)
    assert list(table.columns[:5]) == ["split", "index", "label", "prediction", "correct"]
    # equal-width confusion bands over the training split's [min, max], 10 bands, shared by every split;
    # an edge belongs to the band above it
    train_confusion = table.loc[table["split"] == "train", "confusion"].to_numpy()
    inner = np.linspace(train_confusion.min(), train_confusion.max(), 11)[1:-1]
    summary = json.loads((tb_run.run_dir / "summary.json").read_text())
    assert summary["confusion_bands"] == {"edges": inner.tolist(), "fitted_on": "train"}
    for split, dataset in (("train", image_blobs(N_TRAIN, seed=1)), ("val", image_blobs(N_VAL, seed=2))):
        rows = table[table["split"] == split].sort_values("index")
        logits, _ = run_forward(tb_run.model, dataset.tensors[0], [])
        np.testing.assert_array_equal(rows["prediction"].to_numpy(), logits.argmax(axis=1))
        np.testing.assert_array_equal(rows["label"].to_numpy(), dataset.tensors[1].numpy())
        np.testing.assert_array_equal(rows["correct"].to_numpy(), logits.argmax(axis=1) == dataset.tensors[1].numpy())
        confusion = rows["confusion"].to_numpy()
        np.testing.assert_array_equal(rows["confusion_band"].to_numpy(), np.digitize(confusion, inner))


def test_error_categories(tb_run: Run) -> None:
    # no second valid label anywhere (see _val_counts), so only the superclass check can fire
    table = tb_run.table
    wrong = table[~table["correct"]]
    assert len(wrong) > 0
    assert (table.loc[table["correct"], "error_category"] == "correct").all()
    for _, row in wrong.iterrows():
        same = SUPERCLASS[int(row["label"])] == SUPERCLASS[int(row["prediction"])]
        assert row["error_category"] == ("fine_grained" if same else "model_failure")


def test_hard_subset_and_groups(tb_run: Run) -> None:
    table = tb_run.table
    manifest = HardSubsetManifest.from_json(tb_run.run_dir / "hard_subset.json")
    val = table[table["split"] == "val"].sort_values("index")
    top = np.sort(np.argsort(-val["confusion"].to_numpy(), kind="stable")[: N_VAL // 10])
    assert manifest.split == "val" and manifest.dataset_size == N_VAL
    assert list(manifest.indices) == top.tolist()
    np.testing.assert_array_equal(np.flatnonzero(val["hard"].to_numpy()), top)

    groups = GroupsManifest.from_json(tb_run.run_dir / "groups.json")
    train_confusion = table.loc[table["split"] == "train", "confusion"].to_numpy()
    assert groups.split == "train" and len(groups.edges) == 1
    assert groups.edges[0] == pytest.approx(np.median(train_confusion))
    for split in ("train", "val"):
        rows = table[table["split"] == split]
        expected = (rows["confusion"].to_numpy() >= groups.edges[0]).astype(int)
        np.testing.assert_array_equal(rows["group"].to_numpy(), expected)
    assert list(groups.sizes) == np.bincount((train_confusion >= groups.edges[0]).astype(int)).tolist()


def test_cache_removed_and_no_temporary_files(tb_run: Run) -> None:
    assert not (tb_run.run_dir / "cache").exists()
    assert [p for p in tb_run.log_dir.rglob("*") if p.name.endswith(".tmp")] == []
    summary = json.loads((tb_run.run_dir / "summary.json").read_text())
    assert summary["splits"]["val"]["num_samples"] == N_VAL


def test_without_logger_only_files_are_written(tmp_path: Path) -> None:
    report = DifficultyReport(dirpath=tmp_path / "out")
    fit(tmp_path, TinyMLP(), [ConfusionScore(), report], blobs(24, seed=1), blobs(10, seed=2), logger=False)
    assert (tmp_path / "out" / "scores.parquet").exists()
    assert (tmp_path / "out" / "summary.json").exists()
    assert list(tmp_path.rglob("events.out.tfevents*")) == []
    assert list(tmp_path.rglob("projector_config.pbtxt")) == []
    assert report.table is not None and len(report.table) == 34


def test_csv_logger_writes_files_and_keeps_the_cache(tmp_path: Path) -> None:
    callbacks = [
        ConfusionScore(),
        PredictionDepth(layers=["hidden", "out"], k=3),
        DifficultyReport(keep_cache=True),
    ]
    trainer = fit(tmp_path, TinyMLP(), callbacks, blobs(24, seed=1), blobs(10, seed=2), logger=CSVLogger(tmp_path))
    assert trainer.log_dir is not None
    run_dir = Path(trainer.log_dir) / "difficulty"  # the default run folder
    table = pd.read_parquet(run_dir / "scores.parquet")
    assert {"confusion", "prediction_depth"} <= set(table.columns)
    assert list(tmp_path.rglob("events.out.tfevents*")) == []
    logits = np.load(run_dir / "cache" / "val" / "logits.npy")  # keep_cache=True
    val = table[table["split"] == "val"].sort_values("index")
    np.testing.assert_array_equal(val["prediction"].to_numpy(), logits.argmax(axis=1))


def test_predictions_beyond_the_largest_label_with_tensorboard(tmp_path: Path) -> None:
    # the model predicts class 4, which no sample has: figures must use the logits' width, not max(label) + 1
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb", version="")
    report = DifficultyReport(dirpath=tmp_path / "out", grid_per_class=0)
    fit(tmp_path, ExtraClassMLP(), [ConfusionScore(num_classes=5), report], blobs(24), blobs(8), logger=logger)
    assert report.table is not None and (report.table["prediction"] == 4).all()


def test_custom_batch_keys_reach_the_image_views(tmp_path: Path) -> None:
    # image grids fetch inputs from the dataset items: they must use the user's BatchKeys, not "input"
    from torch.utils.data import DataLoader

    from lightning_difficulty import BatchKeys
    from tests.helpers import MappedBlobs, MappedMLP, trainer_kwargs

    keys = BatchKeys(input="x", target="y", index="id")
    report = DifficultyReport(dirpath=tmp_path / "out", grid_per_class=1)
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb", version="")
    trainer = L.Trainer(
        max_epochs=1, callbacks=[ConfusionScore(batch_keys=keys), report], **trainer_kwargs(tmp_path, logger=logger)
    )
    trainer.fit(
        MappedMLP(), DataLoader(MappedBlobs(24), batch_size=8), DataLoader(MappedBlobs(8, seed=3), batch_size=8)
    )
    accumulator = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    accumulator.Reload()
    assert "difficulty/hardest_easiest/val" in accumulator.Tags()["images"]


def test_tabular_inputs_skip_the_image_views(tmp_path: Path) -> None:
    # vectors are no images: grids, instance strips and sprites are skipped, every other view is logged
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb", version="")
    callbacks = [ConfusionScore(), PredictionDepth(k=3), DifficultyReport(dirpath=tmp_path / "out")]
    fit(tmp_path, TinyMLP(), callbacks, blobs(24), blobs(8), logger=logger)
    tags = _events(tmp_path / "tb").Tags()["images"]
    assert "difficulty/confusion_matrix/val" in tags and "difficulty/difficulty_flow/val" in tags
    assert not [t for t in tags if "hardest_easiest" in t or "instances" in t]
    assert (tmp_path / "out" / "scores.parquet").exists()
