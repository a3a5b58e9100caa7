"""Write real image data for the image-folder and multi-label examples, from scikit-learn's digits.

Nothing is downloaded: the 1,797 digits ship with scikit-learn. Creates, under OUT (default
``examples/data``):

- ``digits-target/<5..9>/*.png``: the target distribution (grey digits as RGB, 32x32), with a few
  unusable files mixed in (a truncated PNG, an empty ``.png``, a ``.txt`` note) and a hidden
  ``.cache`` folder, which the pre-scan names and skips.
- ``digits-web/<5..9>/*.png``: other training data from a different distribution (colour-tinted,
  noisy, inverted digits; "web images"). Only dev/test must come from the target distribution.
- ``resnet18-digits04.pt``: a resnet18 state_dict trained briefly on digits 0-4 (the source task),
  saved with ``torch.save`` (the example's ``model.weights``).
- ``digits-multilabel.csv`` + ``digits-multilabel/*.png``: 8x8 grey digits with three labels
  (``even``, ``large`` (>= 5), ``round`` (0, 6, 8, 9)); about 15% of the label entries are missing
  (``missing`` column), and a ``tags`` column (``thin``/``bold`` strokes) for error analysis.

Usage: python examples/make_digits_images.py [OUT] [--no-weights]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8), d.target


def _png(arr: np.ndarray, path: Path, size: int | None = None) -> None:
    from PIL import Image

    im = Image.fromarray(arr)
    if size:
        im = im.resize((size, size), Image.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def write_image_folders(out: Path, seed: int = 0, size: int = 32) -> dict[str, int]:
    """The target and web folders (digits 5-9) with broken files; returns counts."""
    x, y = _digits()
    rng = np.random.default_rng(seed)
    n = {"target": 0, "web": 0, "broken": 0}
    for i in np.flatnonzero(y >= 5):
        img, c = x[i], int(y[i])
        if rng.random() < 0.5:
            _png(np.repeat(img[..., None], 3, axis=2), out / "digits-target" / str(c) / f"{i:04d}.png", size)
            n["target"] += 1
        else:
            tint = rng.uniform(0.3, 1.0, size=3)
            rgb = (255 - img[..., None]) * tint if rng.random() < 0.5 else img[..., None] * tint
            rgb = np.clip(rgb + rng.normal(0, 20, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            _png(rgb, out / "digits-web" / str(c) / f"{i:04d}.png", size)
            n["web"] += 1
    t = out / "digits-target"
    good = next((t / "5").glob("*.png")).read_bytes()
    (t / "5" / "truncated.png").write_bytes(good[: len(good) // 2])
    (t / "6" / "empty.png").write_bytes(b"")
    (t / "7" / "notes.txt").write_text("not an image\n")
    (t / ".cache").mkdir(exist_ok=True)
    (t / ".cache" / "thumb.png").write_bytes(good)
    n["broken"] = 3
    return n


def write_source_weights(path: Path, seed: int = 0, size: int = 32, epochs: int = 6, arch: str = "resnet18") -> float:
    """Train resnet18 briefly on digits 0-4 (RGB, ``size`` px) and save its state_dict; returns
    its final training error (fraction)."""
    import torch

    from dlops.models import create_model

    torch.manual_seed(seed)
    x, y = _digits()
    keep = y < 5
    xt = torch.from_numpy(x[keep]).float().div(255.0)[:, None].repeat(1, 3, 1, 1)
    xt = torch.nn.functional.interpolate(xt, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    xt = (xt - mean) / std
    yt = torch.from_numpy(y[keep]).long()
    model = create_model(arch, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(yt))
        for j in range(0, len(yt), 64):
            b = perm[j : j + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        err = float((model(xt).argmax(1) != yt).float().mean())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return err


def write_multilabel(out: Path, seed: int = 0, missing: float = 0.15) -> int:
    """The multi-label list file and its images; returns the number of rows."""
    x, y = _digits()
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(len(y)):
        c = int(y[i])
        labels = {"even": c % 2 == 0, "large": c >= 5, "round": c in (0, 6, 8, 9)}
        miss = [k for k in labels if rng.random() < missing]
        on = [k for k, v in labels.items() if v and k not in miss]
        ink = float((x[i] > 128).mean())
        tags = ["bold"] if ink > 0.35 else (["thin"] if ink < 0.2 else [])
        rel = f"digits-multilabel/{i:04d}.png"
        _png(x[i], out / rel)
        rows.append({"path": rel, "labels": "|".join(on), "missing": "|".join(miss), "tags": "|".join(tags)})
    with open(out / "digits-multilabel.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "labels", "missing", "tags"])
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(Path(__file__).resolve().parent / "data"))
    ap.add_argument("--no-weights", action="store_true", help="skip training the resnet18 source network")
    args = ap.parse_args()
    out = Path(args.out)
    n = write_image_folders(out)
    print(f"image folders: {n['target']} target + {n['web']} web images, {n['broken']} broken files -> {out}")
    rows = write_multilabel(out)
    print(f"multi-label list: {rows} rows -> {out / 'digits-multilabel.csv'}")
    if not args.no_weights:
        err = write_source_weights(out / "resnet18-digits04.pt")
        print(f"source network: resnet18 on digits 0-4, train error {err:.3f} -> {out / 'resnet18-digits04.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
