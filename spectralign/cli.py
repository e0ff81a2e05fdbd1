"""The ``spectralign`` command line: the only module that prints."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .datasets import stitch2d_grid
from .errors import NoOverlapError, OutputFormatError, SpectralignError, StoreExistsError
from .match.matcher import Matcher
from .place.placement import Placement
from .render.renderer import Renderer

__all__ = ["main"]


def _example(args: argparse.Namespace) -> int:
    """Match, place and render the real SEM grid shipped with spectralign."""
    grid = stitch2d_grid()
    h, w = grid.tiles[0, 0].shape
    ox, oy = grid.overlap
    step = np.array([w * (1 - ox), h * (1 - oy)])
    print(f"spectralign {__version__}: matching the shipped {grid.rows} x {grid.cols} "
          f"SEM grid ({w} x {h} tiles, nominal overlap {ox:.0%} in x, {oy:.0%} in y)")
    print(f"{'pair':<18}{'found offset (x, y)':>24}{'reference':>22}{'diff':>8}{'SNR':>8}")
    t0 = time.perf_counter()
    worst = 0.0
    pairs = 0
    placement = Placement()
    for (r, c), img in sorted(grid.tiles.items()):
        for dr, dc in ((0, 1), (1, 0)):
            t_ = (r + dr, c + dc)
            if t_ not in grid.tiles:
                continue
            nominal = step * (dc, dr)
            # a window centred in the nominal overlap, as long as the overlap
            overlap = np.array([w, h]) - nominal
            centre = np.where((dc, dr), nominal + overlap / 2, (w / 2, h / 2))
            size = np.where((dc, dr), overlap * 0.8, (w * 0.8, h * 0.8))
            match = Matcher(img, grid.tiles[t_]).refine(centre, centre - nominal, size, iters=5)
            p, p_ = match
            placement.addmatch((r, c), t_, p, p_)
            found = p - p_
            ref = grid.reference[t_] - grid.reference[r, c]
            diff = float(np.hypot(*(found - ref)))
            worst = max(worst, diff)
            pairs += 1
            pair = f"{(r, c)}->{t_}"
            print(f"{pair:<18}{found[0]:>12.2f}{found[1]:>12.2f}"
                  f"{ref[0]:>11.2f}{ref[1]:>11.2f}{diff:>8.2f}{match.snr:>8.1f}")
    print(f"matched {pairs} pairs in {time.perf_counter() - t0:.2f} s; largest difference "
          f"from the reference aligner {worst:.2f} px")
    result = placement.solve()
    pos = result.positions
    offset = np.mean([pos[t] - grid.reference[t] for t in pos], axis=0)
    err = max(float(np.hypot(*(pos[t] - offset - grid.reference[t]))) for t in pos)
    print(f"placed {len(pos)} tiles: residual RMS {result.rms:.2f} px, largest distance from "
          f"the reference positions {err:.2f} px")
    renderer = Renderer(rigid=pos, tilesize=(w, h), blend=20)
    for t, img in grid.tiles.items():
        renderer.render(t, img)
    if args.output:
        out = renderer.to_zarr(args.output, overwrite=args.overwrite)
        print(f"wrote the {renderer.shape[1]} x {renderer.shape[0]} px montage to {out}")
    else:
        montage = renderer.image
        print(f"rendered a {montage.shape[1]} x {montage.shape[0]} px montage "
              f"(write it with: spectralign example -o montage.ome.zarr)")
    return 0


def _grid(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected ROWSxCOLS such as 4x6, got {text!r}") from None
    if rows < 1 or cols < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1x1, got {text!r}")
    return rows, cols


def _overlap(text: str) -> float | tuple[float, float]:
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction such as 0.15, or X,Y such as 0.2,0.1; got {text!r}") from None
    if len(parts) not in (1, 2) or not all(0 <= v < 1 for v in parts):
        raise argparse.ArgumentTypeError(f"expected fractions in [0, 1), got {text!r}")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def _tiles_arg(values: list[str]) -> str | list[str]:
    """One argument may be a glob pattern or folder; several are files."""
    return values[0] if len(values) == 1 else values


def _render_with_progress(renderer: Renderer, out: str, overwrite: bool, resume: bool,
                          quiet: bool) -> None:
    from dask.diagnostics import ProgressBar

    if quiet:
        renderer.to_zarr(out, overwrite=overwrite, resume=resume)
        return
    print(f"rendering {renderer.shape[1]} x {renderer.shape[0]} px to {out}", flush=True)
    with ProgressBar(dt=0.5):
        renderer.to_zarr(out, overwrite=overwrite, resume=resume)


def _outputs(out: Path, extra: tuple[str, ...]) -> tuple[Path, list[Path]]:
    """OUT's JSON path and every file written beside it."""
    stem = out.name[:-len(".ome.zarr")] if out.name.endswith(".ome.zarr") else out.stem
    json_path = out.with_name(stem + ".json")
    return json_path, [json_path] + [out.with_name(stem + e) for e in extra]


def _check_outputs(out: Path, beside: list[Path], overwrite: bool, resume: bool) -> None:
    """Refuse, before any work, to replace earlier outputs unless asked."""
    if overwrite:
        return
    if out.exists() and not resume:
        raise StoreExistsError(
            f"Expected a new output path. Got {str(out)!r}, which exists; pass --overwrite to "
            f"replace it, --resume to finish an interrupted render, or choose another -o.")
    if not resume:
        taken = [p.name for p in beside if p.exists()]
        if taken:
            raise StoreExistsError(
                f"Expected no earlier outputs beside {out.name}. Got {', '.join(taken)} in "
                f"{str(out.parent)!r}; pass --overwrite to replace them or choose another -o.")


def _stitch(args: argparse.Namespace) -> int:
    """Stitch a grid of tiles into an OME-Zarr montage.

Writes OUT (OME-Zarr 0.5 with a pyramid) and, beside it, OUT's name with
.json (positions, transforms and the quality of every overlap), .csv
(positions and affines), .overlaps.csv (the quality of every overlap:
windows, SNR, residual, seam NCC placed and at the stage), and with
.TileConfiguration.registered.txt (Fiji); earlier outputs are refused
before any work unless --overwrite (or --resume) is given;
prints a quality report. Tiles without a good match with any neighbour
keep the stage layout's offsets to their neighbours and are named in the
report.
"""
    import warnings

    from .pipelines.grid import stitch_grid

    out = Path(args.output)
    json_path, beside = _outputs(out, (".csv", ".overlaps.csv",
                                       ".TileConfiguration.registered.txt"))
    tc_path = beside[-1] if args.tileconfig is None else Path(args.tileconfig)
    _check_outputs(out, beside[:-1] + [tc_path], args.overwrite, args.resume)
    tiles = _tiles_arg(args.tiles)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        montage = stitch_grid(tiles, grid=args.grid, overlap=args.overlap, layout=args.layout,
                              major=args.major, flip=(args.flip_x, args.flip_y),
                              positions=args.positions, model=args.model,
                              regularize=args.regularize, progress=not args.quiet)
    for w in caught:  # e.g. unmatched tiles, poor seams, a montage that changed size
        print(f"spectralign: warning: {w.message}", file=sys.stderr)
    if not args.quiet:
        print(montage.report())
    _render_with_progress(montage.renderer(blend=args.blend), str(out), args.overwrite,
                          args.resume, args.quiet)
    montage.to_json(json_path)
    montage.to_csv(json_path.with_suffix(".csv"))
    montage.to_overlaps_csv(beside[2])
    montage.write_tileconfig(tc_path)
    if args.plots:
        try:
            files = montage.plot(args.plots)
        except ImportError:
            print("spectralign: --plots needs matplotlib: pip install matplotlib",
                  file=sys.stderr)
            return 2
        if not args.quiet:
            print(f"wrote {len(files)} picture(s) to {args.plots}")
    if not args.quiet:
        print(f"wrote {out}, {json_path.name}, {json_path.with_suffix('.csv').name}, "
              f"{beside[2].name} and {tc_path.name}")
    return 1 if caught and args.strict else 0


def _num(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _align_stack(args: argparse.Namespace) -> int:
    """Align a stack of serial sections and write the aligned (z, y, x) volume."""
    import warnings

    from .pipelines.stack import align_stack

    out = Path(args.output)
    json_path, beside = _outputs(out, ())
    _check_outputs(out, beside, args.overwrite, args.resume)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stack = align_stack(_tiles_arg(args.sections), model=args.model,
                            regularize=args.regularize, windows_per_side=args.windows,
                            progress=not args.quiet)
    for w in caught:  # e.g. sections that match neither neighbour
        print(f"spectralign: warning: {w.message}", file=sys.stderr)
    if not args.quiet:
        print(stack.report())
    _render_with_progress(stack.renderer(), str(out), args.overwrite, args.resume, args.quiet)
    json_path.write_text(json.dumps(
        {"model": stack.placement.model,
         "residual_rms": _num(stack.placement.rms),
         "residual_rms_section_px": _num(stack.placement.pixel_rms),
         "sections": [{"name": n, "transform": np.asarray(stack.transforms[z].matrix).tolist(),
                       "matched": z not in stack.unmatched}
                      for z, n in enumerate(stack.names)],
         "neighbours": [{"a": stack.names[s.t], "b": stack.names[s.t_], "seam_ncc": _num(s.ncc),
                         "seam_rms": _num(s.rms), "before_ncc": _num(b.ncc)}
                        for s, b in zip(stack.seams, stack.seams_before)]}, indent=1))
    if not args.quiet:
        print(f"wrote {out} and {json_path.name}")
    return 1 if caught and args.strict else 0

def _diff_picture(reg) -> np.ndarray:
    """The difference image for eyes: mid-gray where the two agree, black
    outside the overlap, +-3 standard deviations to white and black."""
    d = reg.difference(normalize=True)
    spread = float(np.nanstd(d)) if np.isfinite(d).any() else 1.0
    pic = 0.5 + d / (6 * spread or 1.0)
    return np.where(np.isfinite(pic), np.clip(pic, 0, 1), 0.0).astype(np.float32)


def _save(path: Path, data: np.ndarray) -> None:
    from .io.image import Image

    Image(data).save(path)


def _mask_files(arg: str | None, count: int, batch: bool, flag: str) -> list:
    """The mask file of each of ``count`` pairs: none, one file for every
    pair, or (for many pairs) a folder or glob pattern with one mask a
    pair, paired in natural order as the images are."""
    import glob

    from .errors import NoTilesError
    from .io.files import collect_tiles

    if arg is None:
        return [None] * count
    if os.path.isfile(arg):
        return [arg] * count
    if batch and (os.path.isdir(arg) or glob.has_magic(arg)):
        files, _ = collect_tiles(arg)
        if len(files) != count:
            raise NoTilesError(f"Expected one {flag} a pair ({count}) to pair in order. "
                               f"Got {len(files)} matching {arg!r}.")
        return files
    raise FileNotFoundError(f"Expected {flag} as an image file"
                            f"{' (or, for many pairs, a folder or pattern of one mask a pair)' if batch else ''}. "
                            f"Got {arg!r}, which does not exist.")


def _pairs(fixed: str, moving: str) -> tuple[list[tuple[str, str]], bool]:
    """One pair, or two folders or glob patterns paired in natural order
    (and whether they were)."""
    import glob

    from .errors import NoTilesError
    from .io.files import collect_tiles

    # a file's own name may hold glob characters (the shipped grid's
    # "stitch2d_ex[Grid@0 0].jpg"): an existing file is taken as it is
    many = [os.path.isdir(a) or (glob.has_magic(a) and not os.path.isfile(a))
            for a in (fixed, moving)]
    if not any(many):
        for a in (fixed, moving):
            if not os.path.isfile(a):
                raise FileNotFoundError(f"Expected an image file. Got {a!r}, which does not exist.")
        return [(fixed, moving)], False
    if not all(many):
        raise NoTilesError(f"Expected FIXED and MOVING both files, or both folders or glob "
                           f"patterns. Got {fixed!r} and {moving!r}.")
    a, _ = collect_tiles(fixed)
    b, _ = collect_tiles(moving)
    if len(a) != len(b):
        raise NoTilesError(f"Expected as many moving images as fixed ones to pair in order. "
                           f"Got {len(a)} matching {fixed!r} and {len(b)} matching {moving!r}.")
    return list(zip(a, b)), True


def _register(args: argparse.Namespace) -> int:
    """Align MOVING onto FIXED with no prior (any rotation, scale 0.5-2x).

One pair: FIXED and MOVING are image files; -o writes MOVING resampled into
FIXED's frame (TIFF: float32, PNG: 8 bits), --diff the difference picture
(mid-gray where they agree, black outside the overlap), --json the
transform and its quality.

Many pairs: FIXED and MOVING are two folders or quoted glob patterns with as
many images each, paired in natural order (a2 before a10; a mask file
serves every pair, a folder or pattern of masks gives one a pair, paired
in the same order); -o is then a
folder for the warped images (named after the moving ones), --diff a folder
for the difference pictures, and --table a CSV (or .json) of every pair's
transform and quality.  A pair with no overlap found, or an image that
cannot be read as one, is reported in the table and skipped.

Earlier outputs are refused before any work unless --overwrite is given.
Exit status: 0, 1 when a pair failed or (with --strict) warned, 2 for bad input.
"""
    import warnings

    from .registration import register

    pairs, batch = _pairs(args.fixed, args.moving)
    out = Path(args.output) if args.output else None
    diff = Path(args.diff) if args.diff else None
    targets = []
    for f, m in pairs:
        name = Path(m).stem
        targets.append((out / (name + ".tif") if batch and out else out,
                        diff / (name + ".diff.png") if batch and diff else diff))
    # every output's format checked before any work
    checks = [(args.json, "--json", (".json",)), (args.table, "--table", (".csv", ".json"))]
    if not batch:
        checks += [(args.output, "-o", (".tif", ".tiff", ".png")),
                   (args.diff, "--diff", (".png", ".tif", ".tiff"))]
    for path, what, kinds in checks:
        if path and Path(path).suffix.lower() not in kinds:
            raise OutputFormatError(f"Expected {what} ending in {' or '.join(kinds)}. "
                                    f"Got {path!r} instead.")
    written = [p for pair in targets for p in pair if p is not None]
    written += [Path(p) for p in (args.json, args.table) if p]
    if not args.overwrite:
        taken = [str(p) for p in written if p.exists()]
        if taken:
            raise StoreExistsError(
                f"Expected new output paths. Got {', '.join(taken[:3])}"
                f"{' and more' if len(taken) > 3 else ''}, which exist; pass --overwrite "
                f"to replace them or choose other paths.")
    from .io.image import Image

    mask_files = {k: _mask_files(v, len(pairs), batch, flag) for k, v, flag in
                  (("fixed_mask", args.fixed_mask, "--fixed-mask"),
                   ("moving_mask", args.moving_mask, "--moving-mask"))}
    loaded: dict = {}

    def mask(path):
        if path is None:
            return None
        if path not in loaded:  # one mask for every pair is read once
            loaded.clear()
            loaded[path] = np.asarray(Image(path)) > 0.5
        return loaded[path]
    # a single mask file is read before any work
    for files in mask_files.values():
        if files and len(set(files)) == 1:
            mask(files[0])
    if batch:
        for folder in (out, diff):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
    rows, failed, warned, unread = [], 0, 0, 0
    from tqdm import tqdm

    bar = tqdm(list(zip(pairs, targets)), desc="registering", unit="pair",
               disable=args.quiet or not batch, file=sys.stderr)
    for i, ((f, m), (warp_path, diff_path)) in enumerate(bar):
        row = {"fixed": str(f), "moving": str(m)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                masks = {k: mask(files[i]) for k, files in mask_files.items()}
                reg = register(f, m, model=args.model, denoise=args.denoise, **masks)
            except NoOverlapError as exc:
                if not batch:
                    raise
                failed += 1
                row.update(status="no overlap", best_snr=exc.best_snr)
                rows.append(row)
                continue
            except SpectralignError as exc:  # one unreadable pair must not stop a batch
                if not batch:
                    raise
                failed += 1
                unread += 1
                row.update(status=f"error: {exc}")
                bar.write(f"spectralign: {Path(m).name}: {exc}", file=sys.stderr)
                rows.append(row)
                continue
        for w in caught:
            warned += 1
            bar.write(f"spectralign: warning: {Path(m).name}: {w.message}", file=sys.stderr)
        row.update(status="ok", **reg.to_dict())
        rows.append(row)
        if warp_path is not None:
            _save(warp_path, reg.warp())
        if diff_path is not None:
            _save(diff_path, _diff_picture(reg))
        if not batch and not args.quiet:
            d = reg.to_dict()
            print(f"{Path(m).name} -> {Path(f).name}: {args.model}, angle {d['angle_deg']:.3f} "
                  f"deg, scale {d['scale']:.4f}, shift ({d['shift'][0]:.2f}, "
                  f"{d['shift'][1]:.2f}) px; SNR {reg.snr:.1f}, NCC {reg.ncc:.3f} "
                  f"(detail {reg.detail_ncc:.3f}), "
                  f"overlap {reg.overlap:.0%}, {reg.windows} windows")
    if args.json:
        Path(args.json).write_text(json.dumps(rows[0] if not batch else rows, indent=1,
                                              default=_jsonable))
    if args.table:
        _write_table(Path(args.table), rows)
    if batch and not args.quiet:
        print(f"registered {len(rows) - failed} of {len(rows)} pairs"
              f"{f'; {failed - unread} with no overlap found' if failed - unread else ''}"
              f"{f'; {unread} that could not be read (see the table)' if unread else ''}"
              f"{f'; {warned} warning(s)' if warned else ''}")
    return 1 if failed or (warned and args.strict) else 0


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    raise TypeError(f"not JSON: {type(v).__name__}")


def _write_table(path: Path, rows: list[dict]) -> None:
    """Every pair's transform and quality: CSV (one row a pair, the matrix
    as a00 .. a12) or JSON by the name's ending."""
    import csv

    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(rows, indent=1, default=_jsonable))
        return
    cols = ["fixed", "moving", "status", "model", "a00", "a01", "a02", "a10", "a11", "a12",
            "angle_deg", "scale", "snr", "ncc", "overlap", "windows", "residual", "best_snr"]
    with open(path, "w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        out.writeheader()
        for r in rows:
            r = dict(r)
            if "matrix" in r:
                (r["a00"], r["a01"], r["a02"]), (r["a10"], r["a11"], r["a12"]) = r["matrix"]
            out.writerow(r)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectralign",
        description="Spectral stitching of microscopy tiles and serial sections. "
                    "Run without a command to see the shipped example work.")
    parser.add_argument("--version", action="version", version=f"spectralign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    ex = sub.add_parser("example", help="match, place and render the real SEM grid shipped with spectralign",
                        description=_example.__doc__)
    ex.add_argument("-o", "--output", default=None,
                    help="write the montage here as OME-Zarr (e.g. montage.ome.zarr)")
    ex.add_argument("--overwrite", action="store_true",
                    help="replace an earlier montage at --output")
    ex.set_defaults(func=_example)

    st = sub.add_parser(
        "stitch", help="stitch a grid of tiles into an OME-Zarr montage",
        description=_stitch.__doc__,
        epilog="example: spectralign stitch 'tiles/*.tif' --grid 4x6 --overlap 0.15 "
               "--layout snake -o montage.ome.zarr",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    st.add_argument("tiles", nargs="+", metavar="TILES",
                    help="tile files in acquisition order, or one quoted glob pattern or "
                         "folder (sorted naturally: t2 before t10)")
    st.add_argument("--grid", type=_grid, metavar="ROWSxCOLS",
                    help="layout of the grid, e.g. 4x6 (or give --positions)")
    st.add_argument("--overlap", type=_overlap, default=0.15, metavar="F[,FY]",
                    help="nominal overlap fraction, one or x,y (default 0.15)")
    st.add_argument("--layout", choices=("raster", "snake"), default="raster",
                    help="acquisition order within the grid (default raster)")
    st.add_argument("--major", choices=("row", "col"), default="row",
                    help="rows first or columns first (default row)")
    st.add_argument("--flip-x", action="store_true", help="columns run right to left")
    st.add_argument("--flip-y", action="store_true", help="rows run bottom to top")
    st.add_argument("--positions", metavar="TILECONFIG",
                    help="stage positions instead of --grid: a Fiji TileConfiguration.txt, "
                         "or 'ome' to read them from the OME-TIFF tiles")
    st.add_argument("--model", choices=("translation", "euclidean", "similarity", "affine"),
                    default="translation", help="placement model (default translation)")
    st.add_argument("--regularize", type=float, default=None, metavar="W",
                    help="similarity/affine models: pull each tile's linear part towards the "
                         "next simpler model (affine: similarity; similarity: scale 1) with "
                         "weight W (default 0.1 affine, 0 similarity)")
    st.add_argument("--blend", type=float, default=None,
                    help="feather width in px (default: a quarter of the overlap)")
    st.add_argument("-o", "--output", required=True, metavar="OUT.ome.zarr",
                    help="the montage to write (OME-Zarr)")
    st.add_argument("--tileconfig", default=None, metavar="PATH",
                    help="where to write the registered TileConfiguration (default: beside OUT)")
    st.add_argument("--plots", default=None, metavar="FOLDER",
                    help="also save quality pictures (PNG) there; needs matplotlib")
    st.add_argument("--overwrite", action="store_true", help="replace an earlier montage at OUT")
    st.add_argument("--resume", action="store_true", help="finish an interrupted render of OUT")
    st.add_argument("--strict", action="store_true",
                    help="exit with status 1 when a warning was raised (e.g. unmatched tiles)")
    st.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    st.set_defaults(func=_stitch)

    al = sub.add_parser("align-stack", help="align serial sections into an OME-Zarr volume",
                        description=_align_stack.__doc__)
    al.add_argument("sections", nargs="+", metavar="SECTIONS",
                    help="section images in order, or one quoted glob pattern or folder")
    al.add_argument("--model", choices=("translation", "euclidean", "similarity", "affine"),
                    default="euclidean", help="section model (default euclidean: rotation and "
                                              "translation)")
    al.add_argument("--regularize", type=float, default=None, metavar="W",
                    help="similarity/affine models: pull each section's linear part towards "
                         "the next simpler model (affine: similarity; similarity: scale 1) "
                         "with weight W (default 3; 0: plain)")
    al.add_argument("--windows", type=int, default=8,
                    help="windows per side of the grid matched between sections (default 8)")
    al.add_argument("-o", "--output", required=True, metavar="OUT.ome.zarr")
    al.add_argument("--strict", action="store_true",
                    help="exit with status 1 when a warning was raised (e.g. unmatched sections)")
    al.add_argument("--overwrite", action="store_true")
    al.add_argument("--resume", action="store_true")
    al.add_argument("-q", "--quiet", action="store_true")
    al.set_defaults(func=_align_stack)

    rg = sub.add_parser(
        "register", help="align two whole images (or two folders of them) with no prior",
        description=_register.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples: spectralign register ref.tif scan.tif -o warped.tif --diff diff.png\n"
               "          spectralign register 'ref/*.tif' 'scans/*.tif' -o warped/ "
               "--table transforms.csv")
    rg.add_argument("fixed", metavar="FIXED", help="the reference image, folder or pattern")
    rg.add_argument("moving", metavar="MOVING", help="the image to align, folder or pattern")
    from .registration import DENOISERS, MODELS

    rg.add_argument("--model", choices=MODELS,
                    default="affine", help="transform sought (default affine)")
    rg.add_argument("-o", "--output", default=None, metavar="WARPED",
                    help="write MOVING resampled into FIXED's frame (.tif or .png; a folder "
                         "for many pairs)")
    rg.add_argument("--diff", default=None, metavar="DIFF.png",
                    help="write the difference picture (a folder for many pairs)")
    rg.add_argument("--json", default=None, metavar="FILE.json",
                    help="write the transform and its quality as JSON")
    rg.add_argument("--table", default=None, metavar="FILE.csv",
                    help="write every pair's transform and quality (CSV, or JSON by the name)")
    rg.add_argument("--denoise", default=None,
                    choices=tuple(DENOISERS),
                    help="prefilter both images (see docs/benchmarks.md for when it helps)")
    rg.add_argument("--fixed-mask", default=None, metavar="MASK",
                    help="image file, white where FIXED's pixels are valid (for many pairs, "
                         "also a folder or pattern of one mask a pair)")
    rg.add_argument("--moving-mask", default=None, metavar="MASK",
                    help="image file, white where MOVING's pixels are valid (for many pairs, "
                         "also a folder or pattern of one mask a pair)")
    rg.add_argument("--overwrite", action="store_true", help="replace earlier outputs")
    rg.add_argument("--strict", action="store_true",
                    help="exit with status 1 when a warning was raised (e.g. a low SNR)")
    rg.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    rg.set_defaults(func=_register)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["example"])
    if args.command == "stitch" and args.grid is None and args.positions is None:
        parser.error("stitch needs --grid ROWSxCOLS or --positions TILECONFIG")
    if getattr(args, "regularize", None) and args.model not in ("similarity", "affine"):
        parser.error(f"--regularize goes with --model similarity or affine (got --model "
                     f"{args.model})")
    if getattr(args, "regularize", None) is not None and not args.regularize >= 0:
        parser.error(f"--regularize must be 0 or more (got {args.regularize})")
    try:
        return args.func(args)
    except (SpectralignError, FileExistsError, FileNotFoundError) as exc:
        print(f"spectralign: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
