"""The "Difficulty" TensorBoard plugin: routes over the runs' per-sample tables and dashboard assets.

Runs are found under TensorBoard's ``--logdir`` (``<run>/difficulty/scores.parquet``); the browser
names a run, never a path. The only write is the subset route, into ``<run>/difficulty/subsets/``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from lightning_difficulty.dashboard.runs import RunData, RunFileError, find_runs
from lightning_difficulty.dashboard.subsets import SubsetError, list_subsets, read_subset, save_subset

__all__ = ["PLUGIN_NAME", "DifficultyPlugin"]

PLUGIN_NAME = "difficulty"
STATIC = Path(__file__).parent / "static"
MAX_THUMBNAILS = 1000
_SCAN_SECONDS = 5.0
_MIME = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}

Request = wrappers.Request
Response = wrappers.Response
_LOG = logging.getLogger(__name__)


class RequestError(Exception):
    """A bad request, answered with ``status`` and a JSON ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _json(request: Request, payload: Any, code: int = 200) -> Response:
    return http_util.Respond(request, json.dumps(payload, allow_nan=False), "application/json", code=code)


def _handler(method: Callable[[Any, Request], Response]) -> Callable[..., Any]:
    """Wrap a route: werkzeug request in; every refusal, damaged file or failure answered as JSON ``{"error": ...}``.

    Refusals keep their status (4xx; 500 for a run's damaged file); anything else is a 500 whose message
    names the route and the error, with the traceback in the server's log only, never in the answer.
    """

    def respond(self: Any, request: Request) -> Response:
        try:
            return method(self, request)
        except (RequestError, SubsetError, RunFileError) as error:
            return _json(request, {"error": str(error)}, code=error.status)
        except Exception as error:
            _LOG.exception("Difficulty dashboard: %s failed", request.path)
            message = f"Internal error in {request.path}: {type(error).__name__}: {error}"[:2000]
            return _json(request, {"error": message}, code=500)

    def app(self: Any, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return respond(self, Request(environ))(environ, start_response)

    return app


class DifficultyPlugin(base_plugin.TBPlugin):
    """Interactive, linked views of a run's per-sample difficulty table (the DIFFICULTY tab).

    Example::

        tensorboard --logdir runs/demo   # the tab appears when a run holds difficulty/scores.parquet
    """

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self._logdir = context.logdir
        self._runs: dict[str, RunData] = {}
        self._scanned = -float("inf")

    # -- TensorBoard hooks -------------------------------------------------------------------------
    def get_plugin_apps(self) -> dict[str, Callable[..., Any]]:
        apps: dict[str, Callable[..., Any]] = {
            "/runs": self._serve_runs,
            "/meta": self._serve_meta,
            "/columns": self._serve_columns,
            "/thumbnails": self._serve_thumbnails,
            "/instance": self._serve_instance,
            "/subsets": self._serve_subsets,
            "/subset": self._serve_subset,
        }
        for path in sorted(STATIC.iterdir()):
            if path.suffix in _MIME:
                apps[f"/static/{path.name}"] = self._serve_static
        return apps

    def is_active(self) -> bool:
        return bool(self._scan())

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/static/index.js", tab_name="Difficulty")

    # -- runs --------------------------------------------------------------------------------------
    def _scan(self) -> dict[str, RunData]:
        if not self._logdir:
            return {}
        now = time.monotonic()
        if now - self._scanned > _SCAN_SECONDS:
            found = find_runs(self._logdir)
            old = self._runs
            self._runs = {
                name: old[name] if name in old and old[name].folder == folder else RunData(name, folder)
                for name, folder in found.items()
            }
            self._scanned = now
        return self._runs

    def _run(self, request: Request, name: Any = None) -> RunData:
        name = request.args.get("run") if name is None else name
        runs = self._scan()
        if not isinstance(name, str) or name not in runs:
            raise RequestError(f"Expected `run` to be one of {sorted(runs)}, but got {name!r}.", status=404)
        return runs[name]

    @staticmethod
    def _split(request: Request, run: RunData) -> str:
        split = request.args.get("split")
        splits = sorted(run.meta()["splits"])
        if split is None or split not in splits:
            raise RequestError(f"Expected `split` to be one of {splits}, but got {split!r}.")
        return split

    # -- routes ------------------------------------------------------------------------------------
    @_handler
    def _serve_static(self, request: Request) -> Response:
        name = request.path.rsplit("/", 1)[-1]
        path = STATIC / name
        if path.parent != STATIC or path.suffix not in _MIME or not path.is_file():
            raise RequestError(f"No static file {name!r}.", status=404)
        return http_util.Respond(request, path.read_bytes(), _MIME[path.suffix])

    @_handler
    def _serve_runs(self, request: Request) -> Response:
        return _json(request, {"runs": sorted(self._scan())})

    @_handler
    def _serve_meta(self, request: Request) -> Response:
        run = self._run(request)
        meta = run.meta()
        meta["subsets"] = list_subsets(run.folder)
        return _json(request, meta)

    @_handler
    def _serve_columns(self, request: Request) -> Response:
        run = self._run(request)
        payload = run.encoded_columns(self._split(request, run))
        return http_util.Respond(request, payload, "application/octet-stream")

    @_handler
    def _serve_thumbnails(self, request: Request) -> Response:
        run = self._run(request)
        split = self._split(request, run)
        raw = request.args.get("indices", "")
        try:
            indices = [int(i) for i in raw.split(",") if i != ""]
        except ValueError:
            raise RequestError(f"Expected `indices` to be comma-separated integers, but got {raw[:40]!r}.") from None
        if not 0 < len(indices) <= MAX_THUMBNAILS:
            raise RequestError(f"Expected 1 to {MAX_THUMBNAILS} `indices`, but got {len(indices)}.")
        try:
            payload = run.thumbnails(split, indices)
        except LookupError as error:  # IndexError included
            raise RequestError(str(error), status=404 if not isinstance(error, IndexError) else 400) from None
        return http_util.Respond(request, payload, "application/octet-stream")

    @_handler
    def _serve_instance(self, request: Request) -> Response:
        run = self._run(request)
        split = self._split(request, run)
        raw = request.args.get("index", "")
        try:
            return _json(request, run.instance(split, int(raw)))
        except ValueError:
            raise RequestError(f"Expected `index` to be an integer, but got {raw[:40]!r}.") from None
        except IndexError as error:
            raise RequestError(str(error)) from None

    @_handler
    def _serve_subsets(self, request: Request) -> Response:
        if request.method == "GET":
            return _json(request, {"subsets": list_subsets(self._run(request).folder)})
        if request.method != "POST":
            raise RequestError(f"Expected GET or POST, but got {request.method}.", status=405)
        if request.mimetype != "application/json":
            raise RequestError(f"Expected a JSON body (Content-Type: application/json), got {request.mimetype!r}.")
        try:
            body = json.loads(request.get_data(as_text=True))
        except ValueError:
            raise RequestError("Expected a JSON object as the request body.") from None
        except RecursionError:
            raise RequestError("Expected a JSON object as the request body, but got JSON nested too deeply.") from None
        if not isinstance(body, dict):
            raise RequestError(f"Expected a JSON object as the request body, but got {type(body).__name__}.")
        run = self._run(request, body.get("run"))
        description = body.get("description", "")
        path = save_subset(
            run.folder,
            run.table,
            name=body.get("name"),
            split=body.get("split"),
            indices=body.get("indices"),
            overwrite=body.get("overwrite", False),
            metadata={"run": run.name, "description": str(description)[:500]},
        )
        return _json(request, {"saved": path.name, "subsets": list_subsets(run.folder)})

    @_handler
    def _serve_subset(self, request: Request) -> Response:
        run = self._run(request)
        manifest = read_subset(run.folder, request.args.get("name"))
        return _json(request, {"name": request.args.get("name"), "split": manifest.split, "indices": manifest.indices})
