"""Progress of the fit-end stages on rank 0, shown the way Lightning shows its own bar.

A :class:`Progress` is on only on rank 0, only when the Trainer has a progress bar (``enable_progress_bar=True``,
the default) and only when stderr is a terminal (or a notebook runs the code): logs and captured output stay
clean. Every fit-end stage that can last more than a few seconds goes through it: the capture pass, each k-NN
search (with the cost model's estimate of its duration, :mod:`~lightning_difficulty.pipeline.cost`), every
measure and the report's stages.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from tqdm.auto import tqdm

if TYPE_CHECKING:
    import lightning.pytorch as pl

T = TypeVar("T")
STAGES_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} stages [{elapsed}]"
"""Stages differ in length: elapsed time only, no rate or remaining time."""


def _interactive() -> bool:
    """Whether a person watches stderr: a terminal, or a Jupyter kernel (whose stderr is no terminal)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty()) or "ipykernel" in sys.modules


class Progress:
    """Progress bars on stderr for the fit-end work; all of them do nothing when ``enabled`` is false.

    Example::

        >>> progress = Progress(enabled=False)   # Progress.of(trainer) decides from the Trainer
        >>> sum(progress.iterate(range(3), "capture"))
        3
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = bool(enabled)

    @classmethod
    def of(cls, trainer: pl.Trainer) -> Progress:
        """On for rank 0 of a Trainer with a progress bar, when stderr is a terminal."""
        shown = trainer.global_rank == 0 and trainer.progress_bar_callback is not None
        return cls(shown and _interactive())

    def bar(
        self,
        desc: str,
        *,
        total: int | None = None,
        estimate: float | None = None,
        leave: bool = False,
        bar_format: str | None = None,
    ) -> Any:
        """A tqdm bar (a silent one when off); ``estimate`` seconds are shown after ``desc``."""
        return tqdm(
            total=total,
            desc=desc + _estimate_text(estimate),
            disable=not self.enabled,
            leave=leave,
            dynamic_ncols=True,
            bar_format=bar_format,
            file=sys.stderr,  # looked up now: a test or a notebook may have replaced it
        )

    def iterate(self, items: Iterable[T], desc: str, *, total: int | None = None) -> Iterator[T]:
        """``items`` with a bar that advances by one per item."""
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        with self.bar(desc, total=total) as bar:
            for item in items:
                yield item
                bar.update(1)

    def stages(self, title: str, total: int) -> Stages:
        """One bar over ``total`` named stages (the fit-end report), left on screen when done."""
        return Stages(self.bar(title, total=total, leave=True, bar_format=STAGES_FORMAT), title)


class Stages:
    """A bar that counts stages and names the one running: ``title: stage``.

    Example::

        >>> stages = Progress(enabled=False).stages("difficulty report", total=2)
        >>> with stages.step("capture pass"):
        ...     pass
        >>> stages.close()
    """

    def __init__(self, bar: Any, title: str) -> None:
        self._bar, self._title = bar, title

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Name ``name`` as running for the block, then count it done."""
        self._bar.set_description_str(f"{self._title}: {name}", refresh=True)
        yield
        self._bar.update(1)

    def close(self) -> None:
        self._bar.set_description_str(self._title, refresh=False)
        self._bar.close()


def search_estimate(
    progress: Progress, n_reference: int, n_queries: int, dims: int, *, index: str, world: int, use_gpu: Any
) -> float | None:
    """The cost model's seconds for one k-NN search (``None`` when the bar is off or the index runs on a GPU, which
    the cost model does not cover). HNSW is priced as IVF, as ``PredictionDepth`` does."""
    if not progress.enabled or _on_gpu(use_gpu, index):
        return None
    from lightning_difficulty.pipeline.cost import probe_seconds, search_rate  # cost imports neighbours: lazily

    kind = "flat" if index == "flat" else "ivf"
    return probe_seconds(n_reference, n_queries, dims, kind=kind, world=world, rate=search_rate())


def _on_gpu(use_gpu: Any, index: str) -> bool:
    if use_gpu is False or index == "hnsw":
        return False
    import faiss

    return bool(faiss.get_num_gpus() > 0)


def _estimate_text(seconds: float | None) -> str:
    """``" (about 2 min by the cost model)"``; empty without an estimate."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    if seconds < 1:
        shown = "under 1 s"
    elif seconds < 90:
        shown = f"about {seconds:.0f} s"
    elif seconds < 5400:
        shown = f"about {seconds / 60:.0f} min"
    else:
        shown = f"about {seconds / 3600:.1f} h"
    return f" ({shown} by the cost model)"
