"""Quality pictures of a montage (needs matplotlib, an optional extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_montage(montage, folder: Path, n: int = 3) -> list[Path]:
    """Overlap map (residual RMS and SNR over the tile layout) and difference
    images of the ``n`` worst overlaps, as PNG files in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .image import Image

    folder.mkdir(parents=True, exist_ok=True)
    w, h = montage.tilesize
    pos = montage.positions
    centre = {t: np.asarray(p, float) + (w / 2, h / 2) for t, p in pos.items()}
    files = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ax, what, label, cmap in ((axes[0], "rms", "residual RMS (px)", "magma"),
                                  (axes[1], "snr", "median window SNR", "viridis")):
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
                    ls="-" if o.kept else ":")
        for t in montage.unmatched:
            ax.plot(*centre[t], "rx", ms=12)
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.autoscale_view()
        ax.set_title(label)
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.8)
    fig.suptitle("lines join matched tiles (dotted: no kept window; x: tile placed by the "
                 "stage offsets to its neighbours)")
    path = folder / "overlaps.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    files.append(path)
    for k, o in enumerate(montage.worst(n)):
        a, b = Image(montage.tiles[o.t]), Image(montage.tiles[o.t_])
        off = np.asarray(pos[o.t_]) - np.asarray(pos[o.t])
        x0, y0 = int(np.ceil(max(0.0, off[0]))), int(np.ceil(max(0.0, off[1])))
        x1, y1 = int(np.floor(min(w, off[0] + w))), int(np.floor(min(h, off[1] + h)))
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        ia = a.roi((x0, y0, x1 - x0, y1 - y0))
        # the same model pixels in the other tile (window pixel (W//2, H//2) on the point)
        ib = b.straightwindow((x0 + (x1 - x0) // 2 - off[0], y0 + (y1 - y0) // 2 - off[1]),
                              (x1 - x0, y1 - y0))
        diff = ia.delta(ib)
        fig, axes = plt.subplots(1, 3, figsize=(12, 4))
        for ax, img, title in zip(axes, (ia, ib, diff), (repr(o.t), repr(o.t_), "difference")):
            ax.imshow(img, cmap="gray")
            ax.set_title(title)
            ax.axis("off")
        fig.suptitle(f"overlap {o.t!r} - {o.t_!r}: residual RMS {o.rms:.3f} px, SNR {o.snr:.1f}")
        path = folder / f"worst_{k + 1}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        files.append(path)
    return files
