"""Every route of the Difficulty TensorBoard plugin, through werkzeug's test client."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

from lightning_difficulty.dashboard.encoding import decode_columns
from lightning_difficulty.dashboard.plugin import DifficultyPlugin
from lightning_difficulty.dashboard.synthetic import synthetic_run
from lightning_difficulty.storage.manifest import HardSubset, label_fingerprint

SIZES = {"train": 40, "val": 25}


def _dispatch(apps: dict[str, Callable[..., Any]]) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        route = apps.get(environ["PATH_INFO"])
        if route is None:
            start_response("404 NOT FOUND", [("Content-Type", "text/plain")])
            return [b"no route"]
        return route(environ, start_response)

    return app


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("logdir")
    synthetic_run(root / "exp" / "difficulty", SIZES, num_classes=4, num_probes=3, k=3, seed=1)
    synthetic_run(root / "plain" / "difficulty", {"val": 10}, num_classes=4, num_probes=2, images=False, seed=2)
    return root


@pytest.fixture(scope="module")
def table(logdir: Path) -> pd.DataFrame:
    return pd.read_parquet(logdir / "exp" / "difficulty" / "scores.parquet")


@pytest.fixture()
def client(logdir: Path) -> Client:
    plugin = DifficultyPlugin(base_plugin.TBContext(logdir=str(logdir)))
    return Client(_dispatch(plugin.get_plugin_apps()))


def _json(response: Any) -> Any:
    return json.loads(response.get_data(as_text=True))


def _post(client: Client, body: Any) -> Any:
    return client.post("/subsets", data=json.dumps(body), content_type="application/json")


def test_activity_and_frontend(logdir: Path, tmp_path: Path) -> None:
    plugin = DifficultyPlugin(base_plugin.TBContext(logdir=str(logdir)))
    assert plugin.is_active()
    assert plugin.frontend_metadata().es_module_path == "/static/index.js"
    assert not DifficultyPlugin(base_plugin.TBContext(logdir=str(tmp_path))).is_active()
    assert not DifficultyPlugin(base_plugin.TBContext(logdir=None)).is_active()


def test_static_files(client: Client) -> None:
    response = client.get("/static/index.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert b"export async function render" in response.get_data()
    assert client.get("/static/style.css").mimetype == "text/css"
    assert client.get("/static/../plugin.py").status_code == 404


def test_runs_and_meta(client: Client, table: pd.DataFrame) -> None:
    assert _json(client.get("/runs")) == {"runs": ["exp", "plain"]}
    meta = _json(client.get("/meta?run=exp"))
    assert meta["splits"]["val"] == {"num_samples": 25, "projection": "pca", "thumbnails": True, "neighbours": True}
    assert meta["class_names"] == [f"class{c}" for c in range(4)]
    assert meta["probes"] == ["input", "layer1", "layer2"]
    assert meta["perspectives"] == ["confusion", "kdn", "human_difficulty"]  # marked in columns.json, table order
    assert "prediction_depth" in meta["score_columns"] and "label" not in meta["score_columns"]
    assert meta["subsets"] == [] and meta["thumbnail_side"] == 8
    plain = _json(client.get("/meta?run=plain"))
    assert plain["splits"]["val"]["thumbnails"] is False and plain["thumbnail_side"] is None


def test_unknown_run_and_split_are_refused(client: Client) -> None:
    for url in ["/meta?run=../exp", "/meta?run=/tmp", "/columns?run=nope&split=val", "/meta"]:
        response = client.get(url)
        assert response.status_code == 404 and "Expected `run`" in _json(response)["error"]
    response = client.get("/columns?run=exp&split=test")
    assert response.status_code == 400 and "`split`" in _json(response)["error"]


def test_columns_match_the_table(client: Client, table: pd.DataFrame, logdir: Path) -> None:
    response = client.get("/columns?run=exp&split=val")
    assert response.mimetype == "application/octet-stream"
    decoded = decode_columns(response.get_data())
    rows = table[table["split"] == "val"].sort_values("index")
    for name in ["index", "label", "prediction", "prediction_depth", "knn:layer1"]:
        np.testing.assert_array_equal(decoded[name], rows[name].to_numpy())
    np.testing.assert_allclose(decoded["confusion"], rows["confusion"].to_numpy(), rtol=1e-6)
    assert decoded["correct"].tolist() == rows["correct"].astype(int).tolist()
    assert decoded["pattern"].tolist() == rows["pattern"].tolist()
    coords = np.load(logdir / "exp" / "difficulty" / "dashboard" / "projection_s1.npy")
    np.testing.assert_array_equal(decoded["projection:x"], coords[:, 0])


def test_thumbnails_route(client: Client, logdir: Path) -> None:
    folder = logdir / "exp" / "difficulty" / "dashboard"
    meta = json.loads((folder / "dashboard.json").read_text())
    sheet = np.load(folder / "thumbnails.npy")
    offset = meta["splits"]["val"]["thumbnails"]["offset"]
    raw = client.get("/thumbnails?run=exp&split=val&indices=4,0,4").get_data()
    got = np.frombuffer(raw, dtype=np.uint8).reshape(3, 8, 8, 3)
    np.testing.assert_array_equal(got, sheet[[offset + 4, offset, offset + 4]])
    assert client.get("/thumbnails?run=exp&split=val&indices=25").status_code == 400
    assert client.get("/thumbnails?run=exp&split=val&indices=a,b").status_code == 400
    assert client.get("/thumbnails?run=exp&split=val&indices=").status_code == 400
    assert client.get("/thumbnails?run=exp&split=val&indices=" + ",".join(["1"] * 1001)).status_code == 400
    assert client.get("/thumbnails?run=plain&split=val&indices=1").status_code == 404


def test_instance_route(client: Client, table: pd.DataFrame, logdir: Path) -> None:
    body = _json(client.get("/instance?run=exp&split=val&index=7"))
    row = table[(table["split"] == "val") & (table["index"] == 7)].iloc[0]
    assert body["values"]["label"] == row["label"] and body["values"]["pattern"] == row["pattern"]
    assert body["values"]["confusion"] == pytest.approx(row["confusion"])
    folder = logdir / "exp" / "difficulty" / "dashboard"
    ids = np.load(folder / "neighbours_ids_s1.npy")[7]
    train_labels = table[table["split"] == "train"].sort_values("index")["label"].to_numpy()
    assert [n["probe"] for n in body["neighbours"]] == ["input", "layer1", "layer2"]
    second = body["neighbours"][1]["items"]
    assert [item["index"] for item in second] == ids[1].tolist()
    assert [item["label"] for item in second] == train_labels[ids[1]].tolist()
    assert client.get("/instance?run=exp&split=val&index=25").status_code == 400
    assert client.get("/instance?run=exp&split=val&index=x").status_code == 400
    assert _json(client.get("/instance?run=plain&split=val&index=0"))["neighbours"] == []


def test_save_subset_and_read_it_with_hard_subset(client: Client, table: pd.DataFrame, logdir: Path) -> None:
    rows = table[table["split"] == "val"].sort_values("index")
    chosen = rows.loc[rows["label"] == 2, "index"].tolist()
    response = _post(client, {"run": "exp", "split": "val", "name": "label_two", "indices": chosen[::-1]})
    assert response.status_code == 200, response.get_data(as_text=True)
    path = logdir / "exp" / "difficulty" / "subsets" / "label_two.json"
    assert path.is_file()
    labels = rows["label"].to_numpy()
    subset = HardSubset(list(range(len(rows))), path, labels=labels)
    assert list(subset.indices) == sorted(chosen)
    assert subset.manifest.label_fingerprint == label_fingerprint(labels)
    assert subset.manifest.metadata["run"] == "exp"
    listed = _json(client.get("/subsets?run=exp"))["subsets"]
    assert {"name": "label_two", "split": "val", "size": len(chosen)}.items() <= listed[0].items()
    assert _json(client.get("/subset?run=exp&name=label_two"))["indices"] == sorted(chosen)
    # no overwrite without the flag; with it, the new indices replace the old ones
    again = _post(client, {"run": "exp", "split": "val", "name": "label_two", "indices": [0]})
    assert again.status_code == 409 and "overwrite" in _json(again)["error"]
    assert HardSubset(list(range(25)), path).indices == tuple(sorted(chosen))
    ok = _post(client, {"run": "exp", "split": "val", "name": "label_two.json", "indices": [0], "overwrite": True})
    assert ok.status_code == 200 and HardSubset(list(range(25)), path).indices == (0,)
    assert client.get("/subset?run=exp&name=missing").status_code == 404


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("..", "letters, digits"),
        ("../escape", "letters, digits"),
        ("a/b", "letters, digits"),
        ("a\\b", "letters, digits"),
        ("/etc/passwd", "letters, digits"),
        ("a..b", "letters, digits"),
        (".hidden", "letters, digits"),
        ("x" * 65, "at most 64"),
        ("", "non-empty"),
        (7, "non-empty string"),
    ],
)
def test_subset_names_are_refused(client: Client, logdir: Path, name: object, message: str) -> None:
    response = _post(client, {"run": "exp", "split": "val", "name": name, "indices": [1]})
    assert response.status_code == 400 and message in _json(response)["error"]
    assert not list((logdir / "exp").rglob("passwd")) and not (logdir / "escape.json").exists()


def test_subset_bodies_are_checked(client: Client) -> None:
    cases = [
        ({"run": "exp", "split": "test", "name": "a", "indices": [1]}, 400, "`split`"),
        ({"run": "exp", "split": "val", "name": "a", "indices": []}, 400, "non-empty list"),
        ({"run": "exp", "split": "val", "name": "a", "indices": [1, "2"]}, 400, "integers"),
        ({"run": "exp", "split": "val", "name": "a", "indices": [25]}, 400, "[0, 25)"),
        ({"run": "exp", "split": "val", "name": "a", "indices": [-1]}, 400, "non-negative"),
        ({"run": "exp", "split": "val", "name": "a", "indices": [1], "overwrite": "yes"}, 400, "overwrite"),
        ({"run": "../x", "split": "val", "name": "a", "indices": [1]}, 404, "`run`"),
    ]
    for body, status, message in cases:
        response = _post(client, body)
        assert response.status_code == status and message in _json(response)["error"], body
    assert client.post("/subsets", data="[1]", content_type="application/json").status_code == 400
    assert client.post("/subsets", data="{", content_type="application/json").status_code == 400
    form = client.post("/subsets", data={"name": "a"})
    assert form.status_code == 400 and "application/json" in _json(form)["error"]
    assert client.put("/subsets?run=exp").status_code == 405


# ----------------------------------------------------------------------------------------------
# Damaged files and hostile requests: always a JSON answer with a message, never a traceback
# ----------------------------------------------------------------------------------------------


def _json_error(response: Any, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    body = response.get_data(as_text=True)
    assert "Traceback" not in body and "<html" not in body.lower()
    return str(json.loads(body)["error"])


@pytest.fixture()
def damaged(tmp_path: Path) -> Client:
    """A log folder with a sound run ("ok") and one whose scores.parquet was truncated ("cut")."""
    synthetic_run(tmp_path / "ok" / "difficulty", {"val": 10}, num_classes=4, num_probes=2, k=3, seed=3)
    synthetic_run(tmp_path / "cut" / "difficulty", {"val": 10}, num_classes=4, num_probes=2, images=False, seed=4)
    table = tmp_path / "cut" / "difficulty" / "scores.parquet"
    table.write_bytes(table.read_bytes()[:200])
    plugin = DifficultyPlugin(base_plugin.TBContext(logdir=str(tmp_path)))
    return Client(_dispatch(plugin.get_plugin_apps()))


def test_a_truncated_table_is_a_json_error_naming_the_file(damaged: Client, tmp_path: Path) -> None:
    for url in ["/meta?run=cut", "/columns?run=cut&split=val", "/instance?run=cut&split=val&index=0"]:
        message = _json_error(damaged.get(url), 500)
        assert str(tmp_path / "cut" / "difficulty" / "scores.parquet") in message and "truncated" in message
    assert _json(damaged.get("/runs")) == {"runs": ["cut", "ok"]}  # the other run is still served
    assert damaged.get("/meta?run=ok").status_code == 200


def test_malformed_subsets_are_json_errors(damaged: Client, tmp_path: Path) -> None:
    folder = tmp_path / "ok" / "difficulty" / "subsets"
    folder.mkdir()
    (folder / "broken.json").write_text("{not json")
    message = _json_error(damaged.get("/subset?run=ok&name=broken"), 500)
    assert str(folder / "broken.json") in message and "not JSON" in message
    assert _json(damaged.get("/subsets?run=ok")) == {"subsets": []}  # a broken file is left out of the list
    # request bodies of the wrong shape
    for body, status, part in [
        ({"run": ["ok"], "split": "val", "name": "a", "indices": [1]}, 404, "`run`"),
        ({"run": {"x": 1}, "split": "val", "name": "a", "indices": [1]}, 404, "`run`"),
        ({"run": "ok", "split": ["val"], "name": "a", "indices": [1]}, 400, "`split`"),
        ({"run": "ok", "split": "val", "name": "a", "indices": {"0": 1}}, 400, "`indices`"),
        ({"run": "ok", "split": "val", "name": ["a"], "indices": [1]}, 400, "`name`"),
    ]:
        assert part in _json_error(_post(damaged, body), status), body


def test_integers_beyond_int64_are_refused(damaged: Client) -> None:
    huge = 2**70
    body = {"run": "ok", "split": "val", "name": "big", "indices": [1, huge]}
    assert str(huge) in _json_error(_post(damaged, body), 400)
    assert "[0, 10)" in _json_error(damaged.get(f"/thumbnails?run=ok&split=val&indices=1,{huge}"), 400)
    assert "[0, 10)" in _json_error(damaged.get(f"/instance?run=ok&split=val&index={huge}"), 400)
    assert "[0, 10)" in _json_error(damaged.get(f"/instance?run=ok&split=val&index=-{huge}"), 400)


def test_deeply_nested_json_is_refused(damaged: Client) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    message = _json_error(damaged.post("/subsets", data=deep, content_type="application/json"), 400)
    assert "nested too deeply" in message
    nested_object = '{"run": ' + "[" * 100_000 + "]" * 100_000 + "}"
    _json_error(damaged.post("/subsets", data=nested_object, content_type="application/json"), 400)


def test_an_unexpected_failure_is_a_json_500(damaged: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_difficulty.dashboard import runs

    def broken(self: Any) -> dict[str, Any]:
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(runs.RunData, "meta", broken)
    message = _json_error(damaged.get("/meta?run=ok"), 500)
    assert message == "Internal error in /meta: RuntimeError: something nobody foresaw"
