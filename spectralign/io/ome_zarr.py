"""OME-Zarr 0.5 output: metadata, multiscale pyramid, and resumable writes.

The store is a zarr v3 group whose attributes hold the OME-NGFF 0.5
``multiscales`` metadata and a ``spectralign`` entry (a fingerprint of the
render, and whether it is complete).  Full-resolution chunks are written one
task each; after each chunk is stored an empty marker file is made in
``<store>/.spectralign-progress``, so a render that was killed can resume
where it stopped: chunks with a marker are kept, the rest are (re)written.
The markers go when the render is complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreExistsError

PROGRESS = ".spectralign-progress"
OME_VERSION = "0.5"


def multiscales(ndim: int, nlevels: int, pixel_size: float, unit: str,
                name: str) -> dict[str, Any]:
    """OME-NGFF 0.5 ``ome`` attributes for an (y, x) or (z, y, x) pyramid
    whose level ``k`` is binned by ``2**k`` in y and x."""
    axes = [{"name": n, "type": "space", "unit": unit} for n in "zyx"[3 - ndim:]]
    datasets = []
    for k in range(nlevels):
        scale = [float(pixel_size)] * (ndim - 2) + [float(pixel_size) * 2**k] * 2
        datasets.append({"path": str(k),
                         "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    return {"version": OME_VERSION,
            "multiscales": [{"name": name, "axes": axes, "datasets": datasets}]}


def fingerprint(parts: Any) -> str:
    """A stable hash of a JSON-able description of a render."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def is_ours(path: Path) -> bool:
    meta = path / "zarr.json"
    if not meta.is_file():
        return False
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return "spectralign" in attrs


def prepare(path: Path, *, fp: str, resume: bool, overwrite: bool) -> bool:
    """Check what is at ``path`` before writing; returns True when resuming.

    Raises StoreExistsError for a path that holds something else, a
    finished or different render (unless ``overwrite``), and never deletes
    anything that is not a spectralign store.
    """
    if not path.exists():
        return False
    if path.is_dir() and not any(path.iterdir()):
        return False
    if not is_ours(path):
        raise StoreExistsError(
            f"Expected {path} to be a new path or a spectralign OME-Zarr store. Got an "
            f"existing {'folder' if path.is_dir() else 'file'} that is not one; it is left "
            f"alone. Choose another output path.")
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]["spectralign"]
    if resume and attrs.get("fingerprint") == fp:
        return True
    if overwrite:
        shutil.rmtree(path)
        return False
    if resume:
        raise StoreExistsError(
            f"Cannot resume into {path}: it holds a different render (other tiles, "
            f"transforms or settings). Pass overwrite=True to replace it, or another path.")
    raise StoreExistsError(
        f"{path} already holds a spectralign render. Pass resume=True to finish an "
        f"interrupted render, or overwrite=True to replace it.")


def marker(path: Path, key: tuple[int, ...]) -> Path:
    return path / PROGRESS / ".".join(map(str, key))


def done_blocks(path: Path) -> set[str]:
    folder = path / PROGRESS
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def store_block(data: np.ndarray, array_path: str, region: tuple[slice, ...],
                mark: str) -> int:
    """Write one chunk-aligned block, then its progress marker."""
    import zarr

    arr = zarr.open_array(array_path, mode="r+")
    arr[region] = data
    Path(mark).touch()
    return 1


def _bin_block(src_path: str, dst_path: str, region: tuple[slice, ...]) -> int:
    """Write one chunk of a level as the 2 x 2 mean of the level below."""
    import zarr

    src = zarr.open_array(src_path, mode="r")
    dst = zarr.open_array(dst_path, mode="r+")
    below = tuple(region[:-2]) + tuple(slice(2 * r.start, 2 * r.stop) for r in region[-2:])
    data = np.asarray(src[below], dtype=np.float64)
    h, w = data.shape[-2] // 2, data.shape[-1] // 2
    data = data[..., : 2 * h, : 2 * w]
    mean = data.reshape(data.shape[:-2] + (h, 2, w, 2)).mean(axis=(-3, -1))
    if dst.dtype.kind in "ui":
        mean = np.rint(mean)
    dst[region] = mean.astype(dst.dtype)
    return 1


def write_pyramid(root: Any, path: Path, nlevels: int, chunks: tuple[int, ...]) -> None:
    """Levels 1 .. nlevels-1: 2 x 2 means of the level below, one task per chunk."""
    import dask

    below = root["0"]
    for k in range(1, nlevels):
        shape = below.shape[:-2] + (below.shape[-2] // 2, below.shape[-1] // 2)
        arr = root.create_array(
            str(k), shape=shape, chunks=chunks, dtype=below.dtype, fill_value=below.fill_value,
            dimension_names=list("zyx"[3 - len(shape):]), config={"write_empty_chunks": False},
            overwrite=True)
        c = chunks[-1]
        tasks = []
        for z in range(shape[0] if len(shape) == 3 else 1):
            for i in range(0, shape[-2], c):
                for j in range(0, shape[-1], c):
                    region = (slice(i, min(i + c, shape[-2])), slice(j, min(j + c, shape[-1])))
                    if len(shape) == 3:
                        region = (slice(z, z + 1),) + region
                    tasks.append(dask.delayed(_bin_block, pure=False)(
                        str(path / str(k - 1)), str(path / str(k)), region))
        dask.compute(*tasks)
        below = arr


def finish(root: Any, path: Path, fp: str) -> None:
    """Mark the render complete and drop its progress markers."""
    root.attrs["spectralign"] = {"fingerprint": fp, "complete": True}
    shutil.rmtree(path / PROGRESS, ignore_errors=True)


def pyramid_levels(shape: tuple[int, ...], chunk: int) -> int:
    """Levels until the image fits one chunk (at least 1)."""
    n, size = 1, max(shape[-2:])
    while size > chunk and min(s // 2 ** n for s in shape[-2:]) >= 1:
        n += 1
        size //= 2
    return n
