"""The one-way architecture (issue 9): composed columns, logger-agnostic curves, merged requests, records,
the per-sample accumulator as an extension point, and no imports from the pipeline up into a callback.

Numbers are checked against independent recomputations (scikit-learn, numpy, hashlib) from logits and
activations this file captures with its own hooks.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from torch import Tensor
from torch.utils.data import DataLoader

import lightning_difficulty
from lightning_difficulty import (
    ConfusionScore,
    DataDifficulty,
    PerSampleAccumulator,
    PredictionDepth,
    SampleState,
    combine_runs,
)
from lightning_difficulty.storage.manifest import label_fingerprint
from tests.helpers import blobs
from tests.helpers_integration import literal_prediction_depth, majority_vote, run_forward
from tests.test_robustness import (
    BATCH,
    N_TRAIN,
    N_VAL,
    LogitRecorder,
    Net,
    ResumableLoader,
    column,
    dataset,
    entropy_of,
    fit,
    make_loaders,
    mean_over_epochs,
    per_epoch_mean,
    read_table,
    report,
)

PACKAGE = Path(lightning_difficulty.__file__).parent


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------
# 1. Two PredictionDepth instances
# ----------------------------------------------------------------------------------------------


def _depth_reference(model: Net, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, k: int) -> dict:
    """Prediction depth per split with scikit-learn brute-force k-NN (training samples leave themselves out)."""
    embeddings, finals = {}, {}
    for split, x in (("train", train_x), ("val", val_x)):
        logits, layers = run_forward(model, torch.tensor(x), ["hidden", "out"])
        embeddings[split] = {"input": x.astype(np.float64), **layers}
        finals[split] = logits.argmax(axis=1)
    votes: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    for probe in ("input", "hidden", "out"):
        reference = embeddings["train"][probe]
        clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(reference, train_y)
        votes["val"].append(clf.predict(embeddings["val"][probe]))
        _, ids = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(reference).kneighbors(reference)
        loo = np.array([[j for j in row if j != i][:k] for i, row in enumerate(ids)])
        votes["train"].append(majority_vote(train_y[loo], 4))
    return {split: literal_prediction_depth(np.stack(v), finals[split]) for split, v in votes.items()}


def test_two_prediction_depths_get_distinct_columns_and_summaries(tmp_path: Path) -> None:
    train_set, val_set = blobs(60, seed=1), blobs(20, seed=2)
    train, val = make_loaders(dataset(60, seed=1), dataset(20, seed=2))
    model = Net()
    pd3 = PredictionDepth(layers=["hidden", "out"], k=3, reduction=None)
    pd9 = PredictionDepth(layers=["hidden", "out"], k=9, reduction=None)
    rep = report()
    with pytest.warns(UserWarning, match="prefixed"):
        fit(tmp_path, model, [pd3, pd9, rep], epochs=3, train=train, val=val)

    x, y, vx = train_set.tensors[0].numpy(), train_set.tensors[1].numpy(), val_set.tensors[0].numpy()
    expected = {k: _depth_reference(model, x, y, vx, k) for k in (3, 9)}
    assert any((expected[3][s] != expected[9][s]).any() for s in ("train", "val"))  # the columns can be told apart
    table = read_table(tmp_path / "difficulty")
    for split in ("train", "val"):
        np.testing.assert_array_equal(column(table, split, "prediction_depth"), expected[3][split])
        np.testing.assert_array_equal(column(table, split, "PredictionDepth#2:prediction_depth"), expected[9][split])
    measures = json.loads((tmp_path / "difficulty" / "summary.json").read_text())["measures"]
    assert pd3.state_key != pd9.state_key
    assert measures[pd3.state_key]["k"] == 3 and measures[pd9.state_key]["k"] == 9
    for key, k in ((pd3.state_key, 3), (pd9.state_key, 9)):
        mean = float(np.mean(expected[k]["val"]))
        assert measures[key]["val"]["mean_prediction_depth"] == pytest.approx(mean), key


# ----------------------------------------------------------------------------------------------
# 2. Per-epoch curves reach every logger
# ----------------------------------------------------------------------------------------------


def test_csv_logger_gets_the_per_epoch_confusion_curve(tmp_path: Path) -> None:
    recorder, logger = LogitRecorder(), CSVLogger(tmp_path, name="csv")
    fit(tmp_path, Net(), [ConfusionScore(), recorder], epochs=3, logger=logger)

    metrics = pd.read_csv(Path(logger.log_dir) / "metrics.csv")
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        name = f"difficulty/confusion_mean/{split}"
        assert name in metrics.columns, list(metrics.columns)
        rows = metrics[metrics[name].notna()].sort_values("step")
        per_epoch = per_epoch_mean(recorder.kept[split], n, entropy_of)
        expected = [float(np.nanmean(per_epoch[e])) for e in sorted(per_epoch)]
        # Lightning's step axis (the global step), with the epoch in its own column
        assert rows["epoch"].tolist() == sorted(per_epoch)
        assert rows["step"].is_monotonic_increasing and rows["step"].iloc[-1] > rows["epoch"].iloc[-1]
        np.testing.assert_allclose(rows[name].to_numpy(), expected, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# 3. Conflicting fit-end requests are refused at setup
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "names", "field"),
    [
        (
            lambda: [PredictionDepth(layers=["hidden"], k=3, input_size=2), DataDifficulty(k=3, input_size=4)],
            ("PredictionDepth", "DataDifficulty"),
            "input_size",
        ),
        (
            lambda: [ConfusionScore(logits_from="out"), PredictionDepth(layers=["hidden"], k=3, logits_from="hidden")],
            ("ConfusionScore", "PredictionDepth"),
            "logits_from",
        ),
    ],
    ids=["input_size", "logits_from"],
)
def test_conflicting_requests_are_refused_before_training(tmp_path: Path, make: Any, names: tuple, field: str) -> None:
    model = Net()
    with pytest.raises(ValueError, match=field) as info:
        fit(tmp_path, model, [*make(), report()], epochs=1)
    assert all(name in str(info.value) for name in names), str(info.value)
    assert model.steps == 0


# ----------------------------------------------------------------------------------------------
# 4. Records carry the label fingerprint; combine refuses other labels
# ----------------------------------------------------------------------------------------------


def _sha256_of_labels(labels: np.ndarray) -> str:
    data = np.ascontiguousarray(labels, dtype="<i8")
    return "sha256:" + hashlib.sha256(int(data.size).to_bytes(8, "little") + data.tobytes()).hexdigest()


def test_records_carry_the_label_fingerprint_and_combine_refuses_other_labels(tmp_path: Path) -> None:
    labels = blobs(N_TRAIN, seed=1).tensors[1]
    runs = {}
    for name, run_labels in (("a", labels), ("b", (labels + 1) % 4)):
        train = DataLoader(dataset(N_TRAIN, seed=1, labels=run_labels), batch_size=BATCH)
        fit(tmp_path / name, Net(), [ConfusionScore(), report()], epochs=2, train=train)
        runs[name] = tmp_path / name / "difficulty"

    manifest = json.loads((runs["a"] / "records" / "train" / "manifest.json").read_text())
    assert manifest["label_fingerprint"] == label_fingerprint(labels.numpy()) == _sha256_of_labels(labels.numpy())
    with pytest.raises(ValueError, match="label_fingerprint"):
        combine_runs([runs["a"], runs["b"]], tmp_path / "ensemble", split="train")
    assert not (tmp_path / "ensemble" / "scores.parquet").exists()


# ----------------------------------------------------------------------------------------------
# 5. A training-time measure on the per-sample accumulator
# ----------------------------------------------------------------------------------------------


class MeanMargin(PerSampleAccumulator):
    """Logit of the label minus the largest other logit, averaged over the epochs a sample was seen."""

    values = ("margin",)
    states = (SampleState("margin_sum"), SampleState("epochs", np.int32))

    def per_batch(self, logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
        own = logits.gather(1, targets[:, None])[:, 0]
        others = logits.scatter(1, targets[:, None], float("-inf")).amax(dim=1)
        return {"margin": own - others}

    def fold(self, states: dict[str, np.ndarray], epoch: dict[str, np.ndarray], seen: np.ndarray) -> None:
        states["margin_sum"][seen] += epoch["margin"][seen]
        states["epochs"][seen] += 1

    def split_columns(self, states: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
        epochs = states["epochs"]
        return {"margin": np.where(epochs > 0, states["margin_sum"] / np.maximum(epochs, 1), np.nan)}


def _numpy_margin(recorder: LogitRecorder, split: str, labels: np.ndarray) -> np.ndarray:
    def margin(logits: np.ndarray, index: np.ndarray) -> np.ndarray:
        rows = np.arange(len(index))
        own = logits[rows, labels[index]]
        others = np.where(np.eye(logits.shape[1], dtype=bool)[labels[index]], -np.inf, logits).max(axis=1)
        return own - others

    return mean_over_epochs(per_epoch_mean(recorder.kept[split], len(labels), margin))


def test_accumulator_subclass_matches_numpy_including_mid_epoch_resume(tmp_path: Path) -> None:
    labels = {"train": blobs(N_TRAIN, seed=1).tensors[1].numpy(), "val": blobs(N_VAL, seed=2).tensors[1].numpy()}
    full, recorder = MeanMargin(), LogitRecorder()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    fit(tmp_path / "full", Net(), [full, recorder, ckpt], epochs=3, enable_checkpointing=True)
    for split, y in labels.items():
        expected = _numpy_margin(recorder, split, y)
        assert (expected < 0).any() and (expected > 0).any()
        np.testing.assert_allclose(full.columns()[split]["margin"], expected, rtol=1e-6, err_msg=split)

    train, val = make_loaders(loader=ResumableLoader)
    train.skip = 3  # the checkpoint at step 9 is three batches into epoch 1
    resumed = MeanMargin()
    fit(
        tmp_path / "resumed",
        Net(),
        [resumed],
        epochs=3,
        train=train,
        val=val,
        ckpt_path=str(tmp_path / "ckpt" / "epoch=1-step=9.ckpt"),
    )
    for split in labels:
        np.testing.assert_allclose(resumed.columns()[split]["margin"], full.columns()[split]["margin"], rtol=1e-9)
        np.testing.assert_array_equal(resumed.columns()[split]["label"], labels[split])


def test_accumulator_subclass_columns_reach_the_table(tmp_path: Path) -> None:
    recorder = LogitRecorder()
    fit(tmp_path, Net(), [MeanMargin(), report(), recorder], epochs=2)
    table = read_table(tmp_path / "difficulty")
    assert "margin" in table.columns, f"MeanMargin's column is not in the table: {list(table.columns)}"
    y = blobs(N_VAL, seed=2).tensors[1].numpy()
    np.testing.assert_allclose(
        column(table, "val", "margin"), _numpy_margin(recorder, "val", y), rtol=1e-6, atol=1e-6
    )  # float32 logits: margins near 0


# ----------------------------------------------------------------------------------------------
# 6. No import from the pipeline or the report up into a specific callback
# ----------------------------------------------------------------------------------------------

CALLBACK_MODULES = {
    f"lightning_difficulty.callbacks.{m}" for m in ("confusion", "prediction_depth", "data_difficulty", "human")
}
CALLBACK_CLASSES = {"ConfusionScore", "PredictionDepth", "DataDifficulty", "HumanAlignment"}


def _callback_imports(source: str, module: str) -> list[str]:
    """Imports in ``source`` (of dotted ``module``) that reach a specific callback's module or class."""
    package = module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name in CALLBACK_MODULES]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = {base} | {f"{base}.{a.name}" for a in node.names}
            names = {a.name for a in node.names}
            if targets & CALLBACK_MODULES or (
                base in ("lightning_difficulty", "lightning_difficulty.callbacks") and names & CALLBACK_CLASSES
            ):
                found.append(f"from {'.' * node.level}{node.module or ''} import {sorted(names)}")
    return found


def test_import_checker_detects_callback_imports() -> None:
    module = "lightning_difficulty.pipeline.example"
    assert _callback_imports("from lightning_difficulty.callbacks.confusion import ConfusionScore", module)
    assert _callback_imports("from ..callbacks import prediction_depth", module)
    assert _callback_imports("from lightning_difficulty import HumanAlignment", module)
    assert _callback_imports("import lightning_difficulty.callbacks.data_difficulty", module)
    assert not _callback_imports("from lightning_difficulty.callbacks.base import DifficultyCallback", module)


def test_pipeline_and_report_import_no_callback() -> None:
    files = [*sorted((PACKAGE / "pipeline").glob("*.py")), PACKAGE / "callbacks" / "report.py"]
    assert len(files) > 3
    offending = {}
    for path in files:
        module = "lightning_difficulty." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        found = _callback_imports(path.read_text(), module)
        if found:
            offending[str(path.relative_to(PACKAGE))] = found
    assert not offending, offending


# ----------------------------------------------------------------------------------------------
# 7. A fit-end measure without a report
# ----------------------------------------------------------------------------------------------


def test_fit_end_measure_without_a_report_says_to_add_one(tmp_path: Path) -> None:
    model = Net()
    with pytest.raises(MisconfigurationException, match=r"DifficultyReport\(\)"):
        fit(tmp_path, model, [PredictionDepth(layers=["hidden"], k=3)], epochs=1)
    assert model.steps == 0


class _TwoPartStep(L.LightningModule):
    """A user's module written for (x, y) batches, trained on IndexedDataset's (x, y, index)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_step_that_unpacks_two_parts_gets_the_fix_in_its_error(tmp_path: Path) -> None:
    from lightning_difficulty.callbacks.base import UNPACK_HINT

    with pytest.raises(ValueError, match="too many values to unpack") as caught:
        fit(tmp_path, _TwoPartStep(), [ConfusionScore(), report()], epochs=1, no_val=True)
    assert caught.value.__notes__ == [UNPACK_HINT]  # once, although two callbacks saw the exception
    assert "x, y, index = batch" in UNPACK_HINT


def test_prediction_depth_and_kdn_share_one_input_space_search(tmp_path: Path, monkeypatch: Any) -> None:
    from lightning_difficulty import PredictionDepth
    from lightning_difficulty.pipeline import capture

    calls: list[int] = []
    search = capture.FitEndArrays.search

    def counted(self: Any, name: str, reference: Any, queries: Any, config: Any, rows: Any = None) -> Any:
        if name == "input":
            calls.append(config.k)
        return search(self, name, reference, queries, config, rows)

    monkeypatch.setattr(capture.FitEndArrays, "search", counted)
    columns = ["split", "index", "kdn", "knn:input", "kdn:input", "prediction_depth"]
    fit(tmp_path / "both", Net(), [PredictionDepth(k=7), DataDifficulty(k=4), report()], epochs=1)
    assert calls == [7]  # one input-space search, with the larger k; the other probes search elsewhere
    both = read_table(tmp_path / "both" / "difficulty")

    fit(tmp_path / "pd", Net(), [PredictionDepth(k=7), report()], epochs=1)
    fit(tmp_path / "kdn", Net(), [DataDifficulty(k=4), report()], epochs=1)
    alone = read_table(tmp_path / "pd" / "difficulty").merge(
        read_table(tmp_path / "kdn" / "difficulty")[["split", "index", "kdn"]], on=["split", "index"]
    )
    pd.testing.assert_frame_equal(both[columns].reset_index(drop=True), alone[columns].reset_index(drop=True))
    # and kDN against scikit-learn, k=4, leave-one-out on the training inputs
    train_x, train_y = (t.numpy() for t in dataset(N_TRAIN, seed=1).dataset.tensors)
    _, ids = NearestNeighbors(n_neighbors=5, algorithm="brute").fit(train_x).kneighbors(train_x)
    loo = np.array([[j for j in row if j != i][:4] for i, row in enumerate(ids)])
    np.testing.assert_allclose(column(both, "train", "kdn"), (train_y[loo] != train_y[:, None]).mean(axis=1))


def test_summary_times_every_fit_end_stage(tmp_path: Path) -> None:
    fit(tmp_path, Net(), [ConfusionScore(), DataDifficulty(k=3), report()], epochs=1)
    summary = json.loads((tmp_path / "difficulty" / "summary.json").read_text())
    seconds = summary["fit_end_seconds"]
    stages = {"capture pass", "table and summary", "dashboard", "views", *summary["measures"]}
    assert set(seconds) == stages  # one entry per stage and per measure, keyed as in `measures`
    assert all(value >= 0.0 for value in seconds.values()) and seconds["capture pass"] > 0.0


def test_raw_and_reduced_layer_requests_conflict_naming_both_callbacks() -> None:
    from lightning_difficulty.pipeline.capture import CaptureRequest, merge_requests

    raw = ("PredictionDepth{raw}", CaptureRequest(layers=("fc",), reduction=None))
    auto = ("PredictionDepth{auto}", CaptureRequest(layers=("fc",), reduction="auto"))
    for first, second in ((raw, auto), (auto, raw)):
        with pytest.raises(ValueError, match=r"Conflicting .* reduction of layer 'fc'.*None \(raw activations\)"):
            merge_requests([first, second])
    assert merge_requests([raw, raw]).layers == {"fc": None}
