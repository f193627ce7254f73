"""Speed of the Difficulty dashboard on a synthetic 50,000-sample run (10 classes, 6 probes).

Starts a real ``tensorboard`` on 127.0.0.1, opens the plugin's page in Debian's chromium through
Playwright and reads ``performance.now()`` in the page:

- first render: from navigation start to every view drawn (after the next animation frame);
- scatter brush: one box selection in the projection updating every other view, synchronously
  (``setFilter``) and up to the next painted frame.

Usage: ``.venv/bin/python benchmarks/dashboard.py [--samples 50000] [--screenshot docs/x.png]``, or on a real
run's log folder instead of the synthetic one: ``--logdir runs/cifar10 --screenshot docs/dashboard_cifar10.png``.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from lightning_difficulty.dashboard.synthetic import synthetic_run

BRUSH_JS = """async ([x0, y0, x1, y1]) => {
  const app = window.difficultyDashboard;
  const t0 = performance.now();
  app.views.projection.selectBox(x0, y0, x1, y1);
  const sync = performance.now() - t0;
  await new Promise((r) => requestAnimationFrame(() => r()));
  return [sync, performance.now() - t0, app.selection.count];
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if json.loads(response.read()).get("difficulty", {}).get("enabled"):
                    return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("tensorboard exited") from None
        time.sleep(0.3)
    raise RuntimeError("tensorboard did not list the difficulty plugin within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3, help="page loads for the first-render figure")
    parser.add_argument("--screenshot", type=Path, default=None, help="save a PNG of the dashboard here")
    parser.add_argument("--logdir", type=Path, default=None, help="a real log folder instead of the synthetic run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.logdir is None:
            start = time.perf_counter()
            synthetic_run(Path(tmp) / "bench" / "difficulty", {"train": args.samples}, num_classes=10, num_probes=6)
            print(f"synthetic run written in {time.perf_counter() - start:.1f} s")
        port = _free_port()
        exe = Path(sys.executable).with_name("tensorboard")
        logdir = str(args.logdir or tmp)
        cmd = [str(exe), "--logdir", logdir, "--host", "127.0.0.1", "--port", str(port)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(f"http://127.0.0.1:{port}/data/plugins_listing", proc)
            url = f"http://127.0.0.1:{port}/data/plugin_entry.html?name=difficulty"
            rows = _measure(url, args.repeats, args.screenshot)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    what = f"run {args.logdir}" if args.logdir else f"{args.samples:,} samples, 10 classes, 6 probes"
    print(f"\nDifficulty dashboard, {what} (chromium, Playwright)")
    print(f"{'measure':<46}{'median ms':>10}{'max ms':>10}{'budget ms':>11}")
    for name, values, budget in rows:
        print(f"{name:<46}{statistics.median(values):>10.1f}{max(values):>10.1f}{budget:>11}")


def _measure(url: str, repeats: int, screenshot: Path | None) -> list[tuple[str, list[float], int]]:
    first, columns, brush_sync, brush_frame = [], [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        for repeat in range(repeats + 1):  # the first load warms the server's caches
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            page.goto(url)
            page.wait_for_selector("body[data-ready]", state="attached", timeout=60_000)
            if repeat:
                first.append(page.evaluate("window.difficultyDashboard.renders[0].at"))
                columns.append(page.evaluate("window.difficultyDashboard.renders[0].ms"))
            page.close()
        page = browser.new_page(viewport={"width": 1500, "height": 1300})
        page.goto(url)
        page.wait_for_selector("body[data-ready]", state="attached", timeout=60_000)
        for k in range(12):
            box = [40 + 10 * k, 30 + 5 * k, 220 + 8 * k, 200 + 6 * k]
            sync, frame, _count = page.evaluate(BRUSH_JS, box)
            brush_sync.append(sync)
            brush_frame.append(frame)
        # and once with real mouse events, as a user drags (timings kept by the app)
        canvas = page.locator(".scatter-canvas").bounding_box()
        assert canvas is not None
        page.mouse.move(canvas["x"] + 50, canvas["y"] + 50)
        page.mouse.down()
        page.mouse.move(canvas["x"] + 300, canvas["y"] + 260, steps=10)
        page.mouse.up()
        drags = [t["ms"] for t in page.evaluate("window.difficultyDashboard.timings") if t["key"] == "projection"]
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"screenshot: {screenshot}")
        browser.close()
    return [
        ("first render (navigation start -> all views)", first, 2000),
        ("  of which: columns fetch + views + frame", columns, 2000),
        ("scatter brush -> all views updated (sync)", brush_sync, 100),
        ("scatter brush -> next painted frame", brush_frame, 100),
        ("mouse drag in scatter, per update (sync)", drags[-10:], 100),
    ]


if __name__ == "__main__":
    main()
