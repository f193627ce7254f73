"""TensorBoard Projector files: embeddings with per-sample metadata (scores, labels) and image sprites.

The files follow the layout TensorBoard's projector plugin reads (the same layout as
``SummaryWriter.add_embedding``): ``<log_dir>/projector_config.pbtxt`` lists every embedding,
each in ``<log_dir>/<global_step:05d>/<tag>/`` with ``tensors.tsv``, ``metadata.tsv`` and
``sprite.png``. They are written here rather than through ``add_embedding`` because a new
``SummaryWriter`` rewrites the config with only its own embeddings (so separate calls would lose
earlier ones), writes a header row even for a single metadata column (which the projector then
reads as a data point), does not sanitise tabs and newlines in metadata, draws the sprite square
from the image width only and does not keep it within the projector's 8192 x 8192 pixel limit.
This module merges into an existing config (an entry with the same tensor name is replaced).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import numpy as np
import numpy.typing as npt
import torch
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector.projector_config_pb2 import EmbeddingInfo, ProjectorConfig

from lightning_difficulty.views.images import ImageLike, to_display_images

MAX_SPRITE_SIDE = 8192
"""Largest sprite width and height (pixels) the TensorBoard projector accepts."""

CONFIG_FILENAME = "projector_config.pbtxt"
_CHUNK = 256


def _matrix(embeddings: ImageLike) -> np.ndarray:
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().float().numpy()
    matrix = np.asarray(embeddings, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise ValueError(
            f"Expected argument `embeddings` to have shape (N, d) with N, d >= 1, but got shape {matrix.shape}."
        )
    if not np.all(np.isfinite(matrix)):
        raise ValueError("Expected argument `embeddings` to hold finite values, but it contains NaN or inf.")
    return matrix


def _clean(text: str) -> str:
    """Metadata cells may not hold tabs or line breaks: they separate cells and rows."""
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


DEFAULT_LABEL_COLUMNS = ("label_name", "label")
"""Metadata columns put first, in this order of preference, so the Projector labels points by class name.

TensorBoard's Projector labels points by the first column whose values are not all numbers; a
boolean column such as ``correct`` would otherwise win.
"""


def _cell(value: object) -> str:
    if value is None or value is _pandas_na():
        return "nan"  # as a float NaN: the Projector then treats the column as categories, never as 0
    if isinstance(value, float | np.floating):
        return format(float(value), ".6g")
    return _clean(str(value))


def _pandas_na() -> object:
    """pandas' missing-value marker when pandas is loaded (its nullable columns hold it), else a fresh object."""
    import sys

    pandas = sys.modules.get("pandas")
    return pandas.NA if pandas is not None else object()


def _cells(name: str, values: npt.ArrayLike, length: int) -> list[str]:
    array = np.asarray(values)
    if array.shape != (length,):
        raise ValueError(
            f"Expected metadata column `{name}` to have shape ({length},) like `embeddings`, but got shape"
            f" {array.shape}."
        )
    return [_cell(value) for value in array.tolist()]


def _ordered(metadata: Mapping[str, npt.ArrayLike], label_column: str | None) -> dict[str, npt.ArrayLike]:
    """The metadata with the label column first (``label_column``, else the first of DEFAULT_LABEL_COLUMNS)."""
    if label_column is not None and label_column not in metadata:
        raise ValueError(
            f"Expected argument `label_column`={label_column!r} to name a metadata column, but the columns are"
            f" {list(metadata)}."
        )
    first = label_column or next((c for c in DEFAULT_LABEL_COLUMNS if c in metadata), None)
    columns = dict(metadata)
    return columns if first is None else {first: columns.pop(first), **columns}


def _metadata_lines(metadata: Mapping[str, npt.ArrayLike], length: int) -> list[str]:
    """Rows of metadata.tsv; a header row only with two or more columns, as the projector expects."""
    columns = [_cells(str(name), values, length) for name, values in metadata.items()]
    if not columns:
        return []
    rows = ["\t".join(cells) for cells in zip(*columns, strict=True)]
    if len(columns) == 1:
        return rows
    return ["\t".join(_clean(str(name)) for name in metadata), *rows]


def _sprite_layout(count: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(columns, rows, thumbnail height, thumbnail width) of a sprite within the size limit."""
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    scale = min(1.0, MAX_SPRITE_SIDE / (columns * width), MAX_SPRITE_SIDE / (rows * height))
    return columns, rows, max(1, math.floor(height * scale)), max(1, math.floor(width * scale))


def _image_array(images: ImageLike, length: int) -> np.ndarray:
    array = images.detach().cpu() if isinstance(images, torch.Tensor) else images
    array = np.asarray(array)
    if array.ndim not in (3, 4) or array.shape[0] != length:
        raise ValueError(
            f"Expected argument `images` to hold {length} images, (N, C, H, W), (N, H, W, C) or (N, H, W),"
            f" but got shape {array.shape}."
        )
    return array


def _write_sprite(path: Path, array: np.ndarray) -> tuple[int, int]:
    """Write the sprite (images in row-major order) and return the thumbnail (width, height)."""
    length = array.shape[0]
    scale_each = array.dtype != np.uint8 and bool(array.min() < 0 or array.max() > 1)
    first = to_display_images(array[:1], scale_each=scale_each)
    columns, rows, thumb_h, thumb_w = _sprite_layout(length, first.shape[2], first.shape[3])
    sprite = np.zeros((rows * thumb_h, columns * thumb_w, 3), dtype=np.uint8)
    for start in range(0, length, _CHUNK):
        chunk = torch.from_numpy(to_display_images(array[start : start + _CHUNK], scale_each=scale_each))
        if chunk.shape[2:] != (thumb_h, thumb_w):
            chunk = torch.nn.functional.interpolate(chunk, size=(thumb_h, thumb_w), mode="area")
        pixels = (chunk.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for offset, thumbnail in enumerate(pixels):
            row, column = divmod(start + offset, columns)
            sprite[row * thumb_h : (row + 1) * thumb_h, column * thumb_w : (column + 1) * thumb_w] = thumbnail
    Image.fromarray(sprite).save(path)
    return thumb_w, thumb_h


def _folder_name(tag: str, global_step: int) -> str:
    if not isinstance(tag, str) or tag.strip(".") == "":
        raise ValueError(f"Expected argument `tag` to be a non-empty name, but got {tag!r}.")
    if isinstance(global_step, bool) or not isinstance(global_step, int) or global_step < 0:
        raise ValueError(f"Expected argument `global_step` to be a non-negative integer, but got {global_step!r}.")
    return f"{global_step:05d}/{quote(tag, safe='')}"


def _merge_config(path: Path, embedding: EmbeddingInfo) -> None:
    config = ProjectorConfig()
    if path.exists():
        text_format.Parse(path.read_text(encoding="utf-8"), config)
    kept = [entry for entry in config.embeddings if entry.tensor_name != embedding.tensor_name]
    del config.embeddings[:]
    config.embeddings.extend([*kept, embedding])
    path.write_text(text_format.MessageToString(config), encoding="utf-8")


def write_projector(
    log_dir: str | Path,
    tag: str,
    embeddings: ImageLike,
    metadata: Mapping[str, npt.ArrayLike],
    *,
    images: ImageLike | None = None,
    global_step: int = 0,
    label_column: str | None = None,
) -> Path:
    """Write one embedding for TensorBoard's Projector, with metadata columns and an optional sprite.

    The embedding is listed in ``<log_dir>/projector_config.pbtxt`` under the tensor name
    ``"<tag>:<global_step:05d>"``; entries already there are kept, one with the same name is
    replaced. Metadata floats are written with 6 significant digits; tabs and line breaks in
    names and values become spaces. With a single metadata column no header row is written
    (TensorBoard's rule), so the column's name does not appear. Sprite thumbnails keep the images'
    aspect ratio and are shrunk (area averaging) just enough for the sprite to fit in 8192 x 8192
    pixels, e.g. 81 pixels wide for 10,000 images.

    Args:
        log_dir: the TensorBoard log directory (the run folder, e.g. a Lightning logger's
            ``log_dir``).
        tag: the embedding's name, e.g. ``"penultimate"``.
        embeddings: (N, d) vectors, numpy or torch.
        metadata: column name -> (N,) values of any kind (numbers, booleans, strings, pandas columns
            with missing values); may be empty. Every column becomes a
            "label by" / "colour by" choice in the Projector. Missing values (NaN, None, ``pd.NA``)
            are written as ``nan``.
        images: (N, C, H, W), (N, H, W, C) or (N, H, W) images for the sprite, ideally float in
            [0, 1] (other ranges are converted as in :func:`~.images.to_display_images`).
        global_step: step folder of this embedding.
        label_column: the column that labels the points, written first; default: ``label_name`` if
            present, else ``label`` (:data:`DEFAULT_LABEL_COLUMNS`).

    Returns:
        The folder holding this embedding's files.

    Example::

        write_projector(logger.log_dir, "penultimate", features,
                        {"label": labels, "confusion": confusion}, images=inputs)
    """
    matrix = _matrix(embeddings)
    length = matrix.shape[0]
    relative = PurePosixPath(_folder_name(tag, global_step))
    root = Path(log_dir)
    folder = root / relative
    lines = _metadata_lines(_ordered(metadata, label_column), length)
    image_array = None if images is None else _image_array(images, length)
    folder.mkdir(parents=True, exist_ok=True)
    embedding = EmbeddingInfo(tensor_name=f"{tag}:{global_step:05d}", tensor_path=str(relative / "tensors.tsv"))
    embedding.tensor_shape.extend(matrix.shape)
    np.savetxt(folder / "tensors.tsv", matrix, fmt="%.7g", delimiter="\t")
    if lines:
        (folder / "metadata.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        embedding.metadata_path = str(relative / "metadata.tsv")
    if image_array is not None:
        width, height = _write_sprite(folder / "sprite.png", image_array)
        embedding.sprite.image_path = str(relative / "sprite.png")
        embedding.sprite.single_image_dim.extend([width, height])
    _merge_config(root / CONFIG_FILENAME, embedding)
    return folder
