"""The Difficulty dashboard in a real browser (Debian's chromium via Playwright) against a real
``tensorboard`` server: clicks and brushes, with the linked counts checked against pandas."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lightning_difficulty.dashboard.synthetic import synthetic_run
from lightning_difficulty.storage.manifest import HardSubset

CHROMIUM = "/usr/bin/chromium"
SIZES = {"train": 600, "val": 1500, "val_1": 40}  # val_1: few wrong samples, drawn as dots
PROBES = ["input", "layer1", "layer2", "layer3"]
W, H, M = 420, 340, 8  # the scatter canvas of scatter.js

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is part of the dev extra")
if not os.path.exists(CHROMIUM):  # the set-up installs it; without it this module cannot run
    pytest.fail(f"{CHROMIUM} is missing: run `make setup` (apt-get install chromium)", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tb")
    synthetic_run(root / "exp" / "difficulty", SIZES, num_classes=10, num_probes=len(PROBES), seed=3)
    return root


@pytest.fixture(scope="module")
def val(logdir: Path) -> pd.DataFrame:
    table = pd.read_parquet(logdir / "exp" / "difficulty" / "scores.parquet")
    return table[table["split"] == "val"].sort_values("index").reset_index(drop=True)


@pytest.fixture(scope="module")
def server(logdir: Path) -> Iterator[str]:
    port = _free_port()
    exe = Path(sys.executable).with_name("tensorboard")
    proc = subprocess.Popen(
        [str(exe), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 45
        while True:
            try:
                with urllib.request.urlopen(f"{base}/data/plugins_listing", timeout=2) as response:
                    listing = json.loads(response.read())
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tensorboard did not start: {proc.stderr.read()!r}") from None
                time.sleep(0.3)
        assert listing["difficulty"]["enabled"], listing.get("difficulty")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser: Any, server: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1500, "height": 1300})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server}/data/plugin_entry.html?name=difficulty")
    page.wait_for_selector("body[data-ready='exp/val']", state="attached", timeout=15000)
    yield page
    context.close()
    assert not errors, errors


def _count(page: Any) -> int:
    return int(page.get_attribute(".count", "data-selected"))


def _table_indices(page: Any) -> list[int]:
    """Dataset indices of every selected row, page by page."""
    found: list[int] = []
    while True:
        found += [
            int(i) for i in page.eval_on_selector_all(".table-view tbody tr", "rs => rs.map(r => r.dataset.index)")
        ]
        if page.is_disabled(".table-view .pager button:last-child"):
            return found
        page.click(".table-view .pager button:last-child")


def _sum_selected(page: Any, selector: str) -> int:
    return int(page.eval_on_selector_all(selector, "es => es.reduce((s, e) => s + Number(e.dataset.selected), 0)"))


def _assert_linked(page: Any, val: pd.DataFrame, chosen: pd.Series) -> None:
    """Every view shows exactly the rows of ``chosen`` (a boolean mask over ``val``)."""
    n = int(chosen.sum())
    assert _count(page) == n
    assert page.get_attribute(".table-view", "data-selected") == str(n)
    assert page.get_attribute(".scatter", "data-selected") == str(n)
    assert _sum_selected(page, ".confusion .cell") == n
    for p in range(len(PROBES)):
        assert _sum_selected(page, f".flow .node[data-node^='{p}:']") == n
    hist = page.get_attribute(".hist[data-column='confusion']", "data-selected")
    assert int(hist) == int((chosen & val["confusion"].notna()).sum())
    both = val["confusion"].notna() & val["kdn"].notna()
    for outcome, correct in (("correct", True), ("wrong", False)):
        sel = f".heatmap[data-pair='confusion|kdn'][data-outcome='{outcome}']"
        expected = int((chosen & both & (val["correct"] == correct)).sum())
        assert int(page.get_attribute(sel, "data-selected")) == expected


def test_tab_is_listed_in_tensorboard(browser: Any, server: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(server)
    tab = page.wait_for_selector("text=Difficulty", timeout=20000)
    assert tab is not None and tab.is_visible()
    assert tab.inner_text().strip().upper() == "DIFFICULTY"
    context.close()


def test_confusion_cell_selects_its_samples_in_every_view(page: Any, val: pd.DataFrame) -> None:
    assert _count(page) == len(val)
    page.click(".confusion .cell[data-cell='3,5']")
    chosen = (val["label"] == 3) & (val["prediction"] == 5)
    assert chosen.sum() > 0
    _assert_linked(page, val, chosen)
    assert sorted(_table_indices(page)) == val.loc[chosen, "index"].tolist()
    assert page.get_attribute(".confusion .cell[data-cell='3,5']", "data-selected") == str(int(chosen.sum()))
    page.click(".reset")
    assert _count(page) == len(val)


def test_scatter_brush_and_histogram_brush_intersect(page: Any, val: pd.DataFrame, logdir: Path) -> None:
    coords = np.load(logdir / "exp" / "difficulty" / "dashboard" / "projection_s1.npy").astype(np.float64)
    x, y = coords[:, 0], coords[:, 1]
    px = (M + (x - x.min()) / (x.max() - x.min()) * (W - 2 * M)).astype(np.float32)
    py = (H - M - (y - y.min()) / (y.max() - y.min()) * (H - 2 * M)).astype(np.float32)
    box = page.locator(".scatter-canvas").bounding_box()
    x0, y0, x1, y1 = 60, 40, 300, 250
    page.mouse.move(box["x"] + x0, box["y"] + y0)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 200, steps=4)
    page.mouse.move(box["x"] + x1, box["y"] + y1, steps=4)
    page.mouse.up()
    rect = "document.querySelector('.scatter-canvas').getBoundingClientRect()"
    left, top = page.evaluate(f"(() => {{ const r = {rect}; return [r.left, r.top]; }})()")
    ax, ay = box["x"] + x0 - left, box["y"] + y0 - top
    bx, by = box["x"] + x1 - left, box["y"] + y1 - top
    inside = pd.Series((px >= ax) & (px <= bx) & (py >= ay) & (py <= by))
    assert 0 < inside.sum() < len(val)
    _assert_linked(page, val, inside)
    # range-brush the confusion histogram: the selection becomes the intersection of both filters
    hist = page.locator(".hist[data-column='confusion'] svg").bounding_box()
    page.mouse.move(hist["x"] + 40, hist["y"] + 30)
    page.mouse.down()
    page.mouse.move(hist["x"] + 150, hist["y"] + 30, steps=3)
    page.mouse.up()
    lo, hi = page.evaluate("difficultyDashboard.views.distributions.charts.find(c => c.name === 'confusion').active")
    conf = val["confusion"].to_numpy().astype(np.float32)
    in_range = pd.Series((conf >= lo) & (conf <= hi))
    _assert_linked(page, val, inside & in_range)
    assert page.locator(".chip").count() == 2


def test_flow_node_and_link_select_their_samples(page: Any, val: pd.DataFrame) -> None:
    depth = val["prediction_depth"]
    page.click(".flow .node[data-node='1:4']")
    unsettled_four = (depth > 1) & (val["knn:layer1"] == 4)
    _assert_linked(page, val, unsettled_four)
    page.click(".flow .node[data-node='1:4']")  # a second click clears the filter
    assert _count(page) == len(val)
    page.click(".flow .node[data-node='2:11']", force=True)  # settled and wrong at layer2
    settled_wrong = (depth <= 2) & ~val["correct"]
    _assert_linked(page, val, settled_wrong)
    page.click(".reset")
    page.dispatch_event(".flow .link[data-link='1:4:4'] path", "click")  # class 4 at layer1 and at layer2
    stays_four = (depth > 2) & (val["knn:layer1"] == 4) & (val["knn:layer2"] == 4)
    _assert_linked(page, val, stays_four)


def test_sorting_instance_and_neighbours(page: Any, val: pd.DataFrame) -> None:
    page.click(".confusion .cell[data-cell='2,2']")
    page.click(".table-view th[data-column='confusion']")
    page.click(".table-view th[data-column='confusion']")  # descending
    rows = val[(val["label"] == 2) & (val["prediction"] == 2)]
    assert len(rows) > 15  # more than one table page
    first = int(page.get_attribute(".table-view tbody tr", "data-index"))
    assert first == int(rows.loc[rows["confusion"].idxmax(), "index"])
    assert sorted(_table_indices(page)) == rows["index"].tolist()
    page.click(".table-view .pager button:first-child")  # back one page
    page.click(".table-view th[data-column='confusion']")  # ascending again; sorting returns to page 1
    page.click(".table-view th[data-column='confusion']")
    page.click(".table-view tbody tr")
    page.wait_for_selector(f".instance-head[data-index='{first}']")
    assert page.locator(".instance .strip").count() == len(PROBES)
    page.wait_for_selector(".instance-image canvas")  # the thumbnail arrived
    neighbour = page.locator(".instance .strip[data-probe='layer2'] .neighbour").first
    target = neighbour.get_attribute("data-index")
    neighbour.click()
    page.wait_for_selector(f".instance-head[data-split='train'][data-index='{target}']")


def test_subsets_combine_and_save(page: Any, val: pd.DataFrame, logdir: Path) -> None:
    a = (val["label"] == 1) & (val["prediction"] == 7)
    b = (val["label"] == 7) & (val["prediction"] == 1)
    for cell, name in (("1,7", "a"), ("7,1", "b")):
        page.click(f".confusion .cell[data-cell='{cell}']")
        page.fill(".subset-name", name)
        page.click(".subsets .keep")
        page.click(".reset")
    page.check(".subset-list li[data-name='a'] input")
    page.check(".subset-list li[data-name='b'] input")
    page.fill(".subset-name", "a_or_b")
    page.click(".subsets .op-union")
    page.click(".subset-list li[data-name='a_or_b'] .apply")
    page.wait_for_selector(".chip[data-key='subset']")
    _assert_linked(page, val, a | b)
    page.fill(".subset-name", "swapped_1_7")
    page.click(".subsets .save")
    page.wait_for_selector(".subsets .message:has-text('saved')")
    path = logdir / "exp" / "difficulty" / "subsets" / "swapped_1_7.json"
    subset = HardSubset(list(range(len(val))), path, labels=val["label"].to_numpy())
    assert list(subset.indices) == val.loc[a | b, "index"].tolist()
    # saving again without "overwrite" is refused, and a traversal name never leaves subsets/
    page.click(".subsets .save")
    page.wait_for_selector(".subsets .message.error:has-text('already exists')")
    page.fill(".subset-name", "../../escape")
    page.click(".subsets .save")
    page.wait_for_selector(".subsets .message.error:has-text('letters, digits')")
    assert not (logdir / "escape.json").exists()


def test_save_route_refuses_bad_names_over_http(page: Any, server: str) -> None:
    for name, status in (("..", 400), ("a/b", 400), ("/abs", 400), ("x" * 80, 400)):
        response = page.request.post(
            f"{server}/data/plugin/difficulty/subsets",
            data=json.dumps({"run": "exp", "split": "val", "name": name, "indices": [1]}),
            headers={"Content-Type": "application/json"},
        )
        assert response.status == status and "name" in response.json()["error"]


def test_screenshot(page: Any, tmp_path: Path) -> None:
    page.click(".confusion .cell[data-cell='3,5']")
    page.click(".table-view tbody tr")
    page.wait_for_selector(".instance .neighbour canvas")
    out = tmp_path / "dashboard.png"
    page.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 10_000


def _js_codes(values: np.ndarray, bins: int = 10) -> np.ndarray:
    """util.js's binning of a float column, rewritten in numpy: equal-width bins over [min, max], NaN -> -1."""
    values = values.astype(np.float32).astype(np.float64)  # the page receives float32
    lo, hi = np.nanmin(values), np.nanmax(values)
    codes = np.floor((values - lo) / (hi - lo) * bins)
    codes = np.clip(np.nan_to_num(codes, nan=-1), -1, bins - 1).astype(np.int64)
    codes[np.isnan(values)] = -1
    return codes


def test_summary_shows_the_perspectives_with_axis_titles_and_legends(page: Any, val: pd.DataFrame) -> None:
    # by default the three perspectives of the run (model: confusion here, data: kdn, human), not every score
    pairs = page.eval_on_selector_all(".summary .pair", "ps => ps.map(p => p.dataset.pair)")
    assert pairs == ["confusion|kdn", "confusion|human_difficulty", "kdn|human_difficulty"]
    maps = page.locator(".summary .heatmap")
    assert maps.count() == 6  # correct and wrong for each pair
    for i in range(maps.count()):
        x_name, y_name = maps.nth(i).get_attribute("data-pair").split("|")
        titles = maps.nth(i).locator(".axis-title")
        assert titles.count() == 2
        assert titles.nth(0).text_content() == f"{x_name} →" and titles.nth(1).text_content() == f"{y_name} →"
        assert maps.nth(i).locator(".colour-legend").count() == 1
    # the legend's top equals the fullest cell, counted with numpy from the same binning
    both = val["confusion"].notna() & val["kdn"].notna()
    cx, cy = _js_codes(val["confusion"].to_numpy()), _js_codes(val["kdn"].to_numpy())
    for outcome, correct in (("correct", True), ("wrong", False)):
        rows = (both & (val["correct"] == correct)).to_numpy()
        fullest = np.bincount(cx[rows] * 10 + cy[rows]).max()
        legend = page.locator(f".heatmap[data-pair='confusion|kdn'][data-outcome='{outcome}'] .colour-legend")
        assert legend.get_attribute("data-max") == str(fullest)
        assert legend.locator(".legend-hi").text_content() == f"{fullest:,}"
        bar = legend.locator(".legend-bar").evaluate("e => getComputedStyle(e).backgroundImage")
        assert bar.startswith("linear-gradient") and "rgb(68, 1, 84)" in bar and "rgb(253, 231, 37)" in bar  # viridis
    # other scores can be ticked in and out: the perspectives inline, the other scores behind "other scores"
    assert not page.is_visible(".summary-controls input[data-column='prediction_depth']")
    page.click(".summary-controls .more-scores summary")
    page.check(".summary-controls input[data-column='prediction_depth']")
    assert page.locator(".summary .pair").count() == 6  # 4 columns: 6 pairs
    assert page.locator(".summary .pair[data-pair='confusion|prediction_depth']").count() == 1
    page.uncheck(".summary-controls input[data-column='prediction_depth']")
    page.uncheck(".summary-controls input[data-column='human_difficulty']")
    assert page.eval_on_selector_all(".summary .pair", "ps => ps.map(p => p.dataset.pair)") == ["confusion|kdn"]


def test_confusion_matrix_has_a_colour_legend(page: Any, val: pd.DataFrame) -> None:
    legends = page.locator(".panel-confusion .colour-legend")
    assert legends.count() == 2  # correct (diagonal) and wrong
    fullest = int(pd.crosstab(val["label"], val["prediction"]).to_numpy().max())
    for i in range(2):
        assert legends.nth(i).get_attribute("data-max") == str(fullest)
    page.click(".confusion .cell[data-cell='3,5']")
    assert legends.nth(0).get_attribute("data-max") == str(int(((val["label"] == 3) & (val["prediction"] == 5)).sum()))


def test_few_wrong_samples_are_dots_that_open_the_instance(page: Any, logdir: Path) -> None:
    table = pd.read_parquet(logdir / "exp" / "difficulty" / "scores.parquet")
    small = table[table["split"] == "val_1"].sort_values("index").reset_index(drop=True)
    page.select_option(".split-select", "val_1")
    page.wait_for_selector("body[data-ready='exp/val_1']", state="attached")
    wrong = small[~small["correct"] & small["confusion"].notna() & small["kdn"].notna()]
    assert 0 < len(wrong) <= 60
    panel = page.locator(".heatmap[data-pair='confusion|kdn'][data-outcome='wrong']")
    assert panel.get_attribute("data-mode") == "dots"
    assert panel.locator("figcaption").text_content() == f"wrong (n={len(wrong)}), a dot per sample"
    dots = panel.locator("circle.sample")
    shown = sorted(int(dots.nth(i).get_attribute("data-index")) for i in range(dots.count()))
    assert shown == sorted(wrong["index"].tolist())
    assert panel.locator(".axis-title").count() == 2 and panel.locator(".colour-legend .key").count() == 2
    # a confusion cell selects some of them: the selected dots are exactly the wrong samples in that cell
    label, prediction = int(wrong.iloc[0]["label"]), int(wrong.iloc[0]["prediction"])
    page.click(f".confusion .cell[data-cell='{label},{prediction}']")
    chosen = wrong[(wrong["label"] == label) & (wrong["prediction"] == prediction)]
    assert panel.get_attribute("data-selected") == str(len(chosen))
    on = panel.locator("circle.sample[data-selected='1']")
    assert sorted(int(on.nth(i).get_attribute("data-index")) for i in range(on.count())) == sorted(chosen["index"])
    target = int(chosen.iloc[0]["index"])
    panel.locator(f"circle.sample[data-index='{target}']").dispatch_event("click")
    page.wait_for_selector(f".instance-head[data-split='val_1'][data-index='{target}']")


def test_classes_shown_once_in_table_and_instance(page: Any, val: pd.DataFrame) -> None:
    page.click(".confusion .cell[data-cell='3,5']")
    first = page.locator(".table-view tbody tr").first
    cells = first.locator("td")
    headers = page.eval_on_selector_all(".table-view thead th", "hs => hs.map(h => h.textContent)")
    assert cells.nth(headers.index("label")).text_content() == "3 class3"  # id and name differ: both, once
    assert cells.nth(headers.index("prediction")).text_content() == "5 class5"
    first.click()
    page.wait_for_selector(".instance-head")
    assert "label 3 class3 · predicted 5 class5" in page.locator(".instance-head").text_content()
    # where a class's name is its id (the digits' "0".."9"), the table shows it once: "3", not "3 3"
    page.evaluate(
        "(() => { const app = difficultyDashboard;"
        " app.meta.class_names = app.meta.class_names.map((_, i) => String(i)); app.views.table.render(); })()"
    )
    cells = page.locator(".table-view tbody tr").first.locator("td")
    assert cells.nth(headers.index("label")).text_content() == "3"
    assert cells.nth(headers.index("prediction")).text_content() == "5"
    same = page.evaluate(
        "import('./static/util.js').then(u => [u.classText({class_names: ['0', '1', '2', '3', '4', '5', '6']}, 6), "
        "u.classText({class_names: ['cat']}, 0), u.classText({class_names: []}, 4)])"
    )
    assert same == ["6", "0 cat", "4"]
