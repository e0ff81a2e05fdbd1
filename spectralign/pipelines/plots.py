"""Quality pictures of a montage (needs matplotlib, an optional extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_montage(montage, folder: Path, n: int = 3) -> list[Path]:
    """Overlap map (residual RMS, SNR and seam NCC over the tile layout) and
    pictures of the ``n`` worst seams and the ``n`` worst residuals (both
    tiles resampled over the overlap, and their difference), as PNG files
    in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .quality import overlap_images

    folder.mkdir(parents=True, exist_ok=True)
    w, h = montage.tilesize
    pos = montage.positions
    centre = {t: np.asarray(p, float) + (w / 2, h / 2) for t, p in pos.items()}
    files = []
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    panels = ((axes[0], "rms", "residual RMS (px)", "magma"),
              (axes[1], "snr", "median window SNR", "viridis"),
              (axes[2], "seam_ncc", "seam NCC (pixels)", "RdYlGn"))
    for ax, what, label, cmap in panels:
        vals = np.array([getattr(o, what) for o in montage.overlaps], float)
        finite = vals[np.isfinite(vals)]
        lo, hi = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
        norm = matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1)
        for t, c in centre.items():
            ax.add_patch(plt.Rectangle(pos[t], w, h, fill=False, lw=0.5, color="0.7"))
        for o, v in zip(montage.overlaps, vals):
            a, b = centre[o.t], centre[o.t_]
            color = plt.get_cmap(cmap)(norm(v)) if np.isfinite(v) else "red"
            ax.plot([a[0], b[0]], [a[1], b[1]], color=color, lw=3 if np.isfinite(v) else 1,
                    ls="-" if o.source else ":")
        for t in montage.unmatched:
            ax.plot(*centre[t], "rx", ms=12)
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.autoscale_view()
        ax.set_title(label)
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.8)
    fig.suptitle("lines join overlapping tiles (dotted: not tied by the matching; x: tile "
                 "placed by the stage offsets to its neighbours)")
    path = folder / "overlaps.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    files.append(path)
    scored = [o for o in montage.overlaps if np.isfinite(o.seam_ncc)]
    worst = [("worst_seam", o, f"seam NCC {o.seam_ncc:.3f} (at the stage {o.stage_ncc:.3f})")
             for o in sorted(scored, key=lambda o: o.seam_ncc)[:n]]
    worst += [("worst_residual", o, f"residual RMS {o.rms:.3f} px, SNR {o.snr:.1f}")
              for o in montage.worst(n)]
    counts: dict[str, int] = {}
    for stem, o, what in worst:
        pair = overlap_images(montage.tiles, montage.transforms, o.t, o.t_)
        if pair is None:
            continue
        counts[stem] = counts.get(stem, 0) + 1
        path = folder / f"{stem}_{counts[stem]}.png"
        _strip_figure(plt, pair, (montage.label(o.t), montage.label(o.t_)),
                      f"overlap {montage.label(o.t)} - {montage.label(o.t_)}: {what}", path)
        files.append(path)
    return files


def _strip_figure(plt, pair, names, title: str, path: Path) -> None:
    """The two tiles over an overlap and their difference, readable however
    long the strip: a tall strip is turned on its side, and a long one is
    cut into pieces of about 3:1, one row of (tile, tile, difference) each."""
    a, b = pair
    turned = a.shape[0] > a.shape[1]
    if turned:
        a, b = a.T, b.T
    h, w = a.shape
    pieces = max(1, int(np.ceil(w / (3 * h))))
    edges = np.linspace(0, w, pieces + 1).astype(int)
    def normal(img):  # tiles differ in gain and offset: compare their structure
        v = img[np.isfinite(img)]
        return (img - v.mean()) / (v.std() or 1.0) if len(v) else img

    diff = normal(a) - normal(b)
    span = np.nanpercentile(np.abs(diff), 99) if np.isfinite(diff).any() else 1.0
    both = np.concatenate([a[np.isfinite(a)], b[np.isfinite(b)]])
    lo, hi = (np.percentile(both, [1, 99]) if len(both) else (0.0, 1.0))
    fig, axes = plt.subplots(pieces, 3, figsize=(15, 1.6 * pieces + 1.2), squeeze=False)
    for k in range(pieces):
        cut = slice(edges[k], edges[k + 1])
        shown = ((a, names[0]), (b, names[1]), (diff, "difference, each normalized"))
        for j, (img, name) in enumerate(shown):
            ax = axes[k, j]
            if j < 2:
                ax.imshow(img[:, cut], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            else:
                ax.imshow(img[:, cut], cmap="coolwarm", vmin=-span, vmax=span,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_title(name)
    fig.suptitle(title + (" (turned on its side)" if turned else "")
                 + (f", in {pieces} pieces" if pieces > 1 else ""))
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
