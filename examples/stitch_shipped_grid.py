"""Stitch the real SEM grid shipped with spectralign, from files on disk.

    python examples/stitch_shipped_grid.py [OUTPUT_FOLDER]

Writes the six tiles as TIFFs, stitches them with only their layout and an
overlap guess, prints the quality report, and writes the montage as
OME-Zarr with its JSON and Fiji TileConfiguration beside it.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

import spectralign

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
out.mkdir(parents=True, exist_ok=True)
grid = spectralign.datasets.stitch2d_grid()
for (r, c), tile in grid.tiles.items():  # acquisition order: row by row
    tifffile.imwrite(out / f"tile_{r * grid.cols + c:03d}.tif",
                     (np.asarray(tile) * 255).astype(np.uint8))

montage = spectralign.stitch_grid(str(out / "tile_*.tif"), grid=(grid.rows, grid.cols),
                                  overlap=0.15)
print(montage.report())
for t in sorted(montage.positions):
    x, y = montage.positions[t]
    print(f"tile {t}: ({x:8.2f}, {y:8.2f})")
montage.to_zarr(out / "montage.ome.zarr", overwrite=True)
montage.to_json(out / "montage.json")
montage.write_tileconfig(out / "TileConfiguration.registered.txt")
print(f"wrote {out / 'montage.ome.zarr'}")
