"""Hard-subset and groups manifests: round trips, refusals, atomic writes, fingerprints."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_difficulty.storage.manifest import GroupsManifest, HardSubset, HardSubsetManifest, label_fingerprint


class _LabelledList:
    """A tiny map-style dataset with a ``targets`` attribute, like torchvision's."""

    def __init__(self, items: list[str], targets: list[int]) -> None:
        self.items, self.targets = items, targets

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.items[i], self.targets[i]


def test_label_fingerprint_matches_hashlib_on_packed_int64() -> None:
    labels = [3, 0, 2, 2, 9]
    digest = hashlib.sha256(struct.pack("<q", 5) + struct.pack("<5q", *labels)).hexdigest()
    assert label_fingerprint(labels) == f"sha256:{digest}"
    # same labels in other containers and dtypes give the same fingerprint
    assert label_fingerprint(np.array(labels, dtype=np.int32)) == f"sha256:{digest}"
    assert label_fingerprint(torch.tensor(labels)) == f"sha256:{digest}"
    assert label_fingerprint(np.array(labels, dtype=np.float64)) == f"sha256:{digest}"
    # order, values and length all matter
    assert label_fingerprint([0, 3, 2, 2, 9]) != label_fingerprint(labels)
    assert label_fingerprint([3, 0, 2, 2]) != label_fingerprint(labels)
    with pytest.raises(ValueError, match="integer labels"):
        label_fingerprint([0.5, 1.0])


def test_hard_subset_manifest_round_trip(tmp_path: Path) -> None:
    scores = np.array([0.2, 3.0, 1.0, 3.0, 0.1, 2.5])
    labels = [0, 1, 1, 0, 2, 2]
    manifest = HardSubsetManifest.from_scores(
        scores, split="train", fraction=0.5, labels=labels, metadata={"runs": ["a", "b"]}
    )
    assert manifest.indices == (1, 3, 5)  # ceil(0.5 * 6) = 3 highest scores
    assert manifest.threshold == 2.5
    assert manifest.dataset_size == 6
    path = manifest.to_json(tmp_path / "hard.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.json"]  # no temporary file left
    payload = json.loads(path.read_text())
    assert payload["format"] == "lightning-difficulty/hard-subset" and payload["version"] == 1
    assert HardSubsetManifest.from_json(path) == manifest


def test_from_json_refuses_wrong_format_and_version(tmp_path: Path) -> None:
    path = HardSubsetManifest.from_scores([1.0, 2.0], split="val", top_k=1).to_json(tmp_path / "m.json")
    payload = json.loads(path.read_text())
    path.write_text(json.dumps({**payload, "version": 2}))
    with pytest.raises(ValueError, match="version 1"):
        HardSubsetManifest.from_json(path)
    path.write_text(json.dumps({**payload, "format": "something/else"}))
    with pytest.raises(ValueError, match="lightning-difficulty/hard-subset"):
        HardSubsetManifest.from_json(path)
    with pytest.raises(ValueError, match="lightning-difficulty/groups"):
        GroupsManifest.from_json(path)


def test_manifest_validates_indices() -> None:
    with pytest.raises(ValueError, match=r"`indices` to lie in \[0, 3\)"):
        HardSubsetManifest(split="val", indices=(0, 3), score="confusion", threshold=1.0, dataset_size=3)
    with pytest.raises(ValueError, match="strictly increasing"):
        HardSubsetManifest(split="val", indices=(2, 1), score="confusion", threshold=1.0, dataset_size=3)


def test_hard_subset_reads_selected_samples(tmp_path: Path) -> None:
    data = _LabelledList(list("abcdef"), [0, 1, 1, 0, 2, 2])
    manifest = HardSubsetManifest.from_scores(
        [0.2, 3.0, 1.0, 3.0, 0.1, 2.5], split="train", top_k=2, labels=data.targets
    )
    path = manifest.to_json(tmp_path / "hard.json")
    subset = HardSubset(data, path)  # labels read from `.targets`
    assert len(subset) == 2
    assert [subset[i] for i in range(2)] == [("b", 1), ("d", 0)]


def test_hard_subset_refuses_other_dataset_size() -> None:
    manifest = HardSubsetManifest.from_scores([0.2, 3.0, 1.0], split="val", top_k=1)
    with pytest.raises(ValueError, match="dataset of 3 samples, but got a dataset of 4"):
        HardSubset(list("abcd"), manifest)


def test_hard_subset_refuses_other_labels() -> None:
    manifest = HardSubsetManifest.from_scores([0.2, 3.0, 1.0], split="val", top_k=1, labels=[0, 1, 2])
    shuffled = _LabelledList(list("abc"), [1, 0, 2])
    with pytest.raises(ValueError) as err:
        HardSubset(shuffled, manifest)
    message = str(err.value)
    assert label_fingerprint([1, 0, 2]) in message and manifest.label_fingerprint in message  # type: ignore[operator]
    assert "shuffled" in message
    with pytest.raises(ValueError, match="differ from those"):
        HardSubset(list("abc"), manifest, labels=[0, 1, 1])
    # the right labels, given explicitly, are accepted
    assert HardSubset(list("abc"), manifest, labels=[0, 1, 2])[0] == "b"


def test_groups_manifest_round_trip_and_assign(tmp_path: Path) -> None:
    scores = np.array([1.0, 6.0, 5.0, 2.0, 7.5])
    groups = GroupsManifest.from_scores(scores, split="train", thresholds=[5.0], labels=[0, 1, 0, 1, 1])
    assert groups.method == "threshold" and groups.edges == (5.0,)
    assert groups.sizes == (2, 3) and groups.num_groups == 2
    path = groups.to_json(tmp_path / "groups.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["groups.json"]
    loaded = GroupsManifest.from_json(path)
    assert loaded == groups
    assert loaded.assign(scores).tolist() == [0, 1, 1, 0, 1]
    with pytest.raises(ValueError, match=r"band sizes \[3, 2\], but the groups manifest"):
        loaded.assign([1.0, 6.0, 4.0, 2.0, 7.5])

    quantile = GroupsManifest.from_scores(np.arange(8.0), split="val", num_bands=4)
    assert quantile.method == "quantile" and quantile.sizes == (2, 2, 2, 2)
    with pytest.raises(ValueError, match="exactly one of `num_bands` and `thresholds`"):
        GroupsManifest.from_scores(scores, split="train")


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = HardSubsetManifest.from_scores([0.2, 3.0], split="val", top_k=1)
    target = tmp_path / "hard.json"
    manifest.to_json(target)
    before = target.read_text()

    def half_write(self: Path, data: str, *args: object, **kwargs: object) -> int:
        with open(self, "w") as handle:
            handle.write(data[:10])  # a partial temporary file, then the disk fills up
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_write)
    with pytest.raises(OSError, match="disk full"):
        HardSubsetManifest.from_scores([5.0, 3.0], split="val", top_k=1).to_json(target)
    assert target.read_text() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.json"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not JSON"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),  # nested past Python's recursion limit
        (json.dumps({"format": "lightning-difficulty/hard-subset", "version": 1}), "missing field 'split'"),
        (
            json.dumps(
                {"format": "lightning-difficulty/hard-subset", "version": 1, "split": "val", "indices": 5}
                | {"score": "confusion", "threshold": 1.0, "dataset_size": 3}
            ),
            "not a valid",
        ),
    ],
)
def test_a_damaged_manifest_is_refused_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "hard.json"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        HardSubsetManifest.from_json(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert "write it again" in str(err.value)  # the fix


def test_a_damaged_groups_manifest_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "groups.json"
    path.write_text(json.dumps({"format": "lightning-difficulty/groups", "version": 1, "split": "val"}))
    with pytest.raises(ValueError, match=f"{path}.*missing field 'score'"):
        GroupsManifest.from_json(path)


def test_hard_subset_on_one_hot_labels_says_to_pass_labels() -> None:
    labels = [0, 1, 0]
    manifest = HardSubsetManifest.from_scores([0.1, 2.0, 0.3], split="val", top_k=1, labels=labels)
    one_hot = torch.eye(2)[labels]
    dataset = torch.utils.data.TensorDataset(torch.zeros(3, 2), one_hot)
    with pytest.raises(ValueError) as err:
        HardSubset(dataset, manifest)
    message = str(err.value)
    assert "this dataset's labels have shape (3, 2)" in message and "one-hot" in message
    assert "Pass `labels=`" in message and "argmax(1)" in message
    with pytest.raises(ValueError, match=r"the `labels` passed have shape \(3, 2\)"):
        HardSubset(dataset, manifest, labels=one_hot)
    # the fix the message gives is accepted
    assert HardSubset(dataset, manifest, labels=one_hot.argmax(1)).indices == (1,)
