"""Image-folder source: pre-scan of broken files, hidden folders, empty classes, class map, channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlops.data.imagefolder import (
    EmptyClassError,
    ImageFolderSource,
    UnknownClassError,
    check_image_file,
    scan_image_folder,
    to_model_channels,
)


def _png(path: Path, mode: str = "RGB", size=(6, 5), value=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) if value is None else \
        np.full((size[1], size[0], 3), value, dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode == "P":
        img = img.quantize(8)
    elif mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


def _truncated(path: Path) -> Path:
    _png(path, size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "train"
    for i in range(3):
        _png(root / "cat" / f"c{i}.png")
    _png(root / "cat" / "nested" / "c3.png")
    _truncated(root / "cat" / "broken.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00\x01")
    _png(root / "dog" / "grey.png", mode="L")
    _png(root / "dog" / "palette.png", mode="P")
    _png(root / "dog" / "alpha.png", mode="RGBA")
    (root / "dog" / "zero.png").write_bytes(b"")
    (root / "dog" / "fake.jpg").write_bytes(b"this is text with a jpg name")
    _png(root / ".hidden" / "h.png")
    _png(root / ".git" / "x.png")
    (root / "README.md").write_text("data card")
    return root


def test_prescan_names_every_unusable_file_and_skips_it(tree):
    src = ImageFolderSource(tree, channels=3)
    assert src.classes == ["cat", "dog"] and src.class_to_idx == {"cat": 0, "dog": 1}
    assert len(src) == 7 and src.class_counts() == {"cat": 4, "dog": 3}
    reasons = {Path(s.path).name: s.reason for s in src.skipped}
    assert set(reasons) == {"broken.png", "notes.txt", "zero.png", "fake.jpg", "README.md"}
    assert src.num_skipped == 5
    assert "cannot decode" in reasons["broken.png"] and "truncated" in reasons["broken.png"].lower()
    assert reasons["notes.txt"] == "not an image file (.txt)"
    assert reasons["zero.png"] == "empty file (0 bytes)"
    assert "cannot decode" in reasons["fake.jpg"]
    assert reasons["README.md"] == "not in a class folder"
    assert not any(".hidden" in p or ".git" in p for p in src.paths)
    assert any(p.endswith("nested/c3.png") for p in src.paths)
    summary = src.scan_summary()
    assert summary["num_skipped"] == 5 and summary["class_to_idx"] == {"cat": 0, "dog": 1}


def test_items_are_uint8_in_the_model_channels(tree):
    rgb = ImageFolderSource(tree, channels=3)
    grey = ImageFolderSource(tree, channels=1, transform=lambda im: im.astype(np.float32) / 255.0)
    for i in range(len(rgb)):
        img, label = rgb[i]
        assert img.dtype == np.uint8 and img.shape == (5, 6, 3) and label == int(rgb.targets[i])
        g, _ = grey[i]
        assert g.dtype == np.float32 and g.shape == (5, 6, 1) and g.max() <= 1.0


def test_works_with_a_torch_dataloader(tree):
    import torch

    src = ImageFolderSource(tree, channels=3,
                            transform=lambda im: torch.from_numpy(im.transpose(2, 0, 1).copy()).float())
    x, y = next(iter(torch.utils.data.DataLoader(src, batch_size=4)))
    assert x.shape == (4, 3, 5, 6) and y.tolist() == [0, 0, 0, 0]


def test_an_empty_class_folder_raises_naming_it(tmp_path):
    root = tmp_path / "d"
    _png(root / "a" / "1.png")
    (root / "empty_class").mkdir(parents=True)
    with pytest.raises(EmptyClassError, match="empty_class.*the folder is empty"):
        ImageFolderSource(root)


def test_a_class_of_only_broken_files_raises_naming_them(tmp_path):
    root = tmp_path / "d"
    _png(root / "a" / "1.png")
    _truncated(root / "b" / "bad.png")
    (root / "b" / "x.txt").write_text("x")
    with pytest.raises(EmptyClassError) as exc:
        scan_image_folder(root)
    assert "'" + str(root / "b") + "'" in str(exc.value)
    assert "bad.png" in str(exc.value) and "x.txt" in str(exc.value)


def test_dev_uses_the_training_class_map_and_refuses_unseen_classes(tree, tmp_path):
    train = ImageFolderSource(tree)
    dev_root = tmp_path / "dev"
    _png(dev_root / "dog" / "d.png")
    dev = ImageFolderSource(dev_root, class_to_idx=train.class_to_idx)
    assert dev.classes == ["cat", "dog"] and dev.targets.tolist() == [1]
    _png(dev_root / "horse" / "h.png")
    with pytest.raises(UnknownClassError, match=r"\['horse'\] not seen in the training data.*cat"):
        ImageFolderSource(dev_root, class_to_idx=train.class_to_idx)


def test_missing_root_and_root_without_classes(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderSource(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    _png(tmp_path / "flat" / "a.png")
    with pytest.raises(ValueError, match="no class folder"):
        ImageFolderSource(tmp_path / "flat")


def test_verify_false_checks_only_extension_and_size(tree):
    quick = ImageFolderSource(tree, verify=False)
    assert {Path(s.path).name for s in quick.skipped} == {"notes.txt", "zero.png", "README.md"}
    assert any(p.endswith("broken.png") for p in quick.paths)  # not decoded, so not caught
    assert check_image_file(tree / "no_such.png") == "file not found"


def test_to_model_channels_grey_rgb_palette_alpha_16bit():
    grey = Image.fromarray(np.array([[0, 128], [200, 255]], dtype=np.uint8), "L")
    g3 = to_model_channels(grey, 3)
    assert g3.shape == (2, 2, 3) and (g3 == np.array(grey)[:, :, None]).all()
    assert (to_model_channels(grey, 1)[..., 0] == np.array(grey)).all()

    rgb = Image.fromarray(np.array([[[255, 0, 0], [10, 200, 30]]], dtype=np.uint8), "RGB")
    luma = to_model_channels(rgb, 1)[..., 0]
    expect = np.rint(np.array([255 * 0.299, 10 * 0.299 + 200 * 0.587 + 30 * 0.114]))
    assert luma.shape == (1, 2) and np.abs(luma.astype(float) - expect).max() <= 1

    pal = rgb.quantize(2)
    assert (to_model_channels(pal, 3) == np.array(pal.convert("RGB"))).all()

    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, :, :3] = [200, 100, 50]
    rgba[0, :, 3] = [0, 255, 128]
    out = to_model_channels(Image.fromarray(rgba, "RGBA"), 3, background=0)
    assert out[0, 0].tolist() == [0, 0, 0]          # transparent -> background
    assert out[0, 1].tolist() == [200, 100, 50]     # opaque -> colour
    assert out[0, 2].tolist() == [100, 50, 25]      # half -> mix
    white = to_model_channels(Image.fromarray(rgba, "RGBA"), 3, background=255)
    assert white[0, 0].tolist() == [255, 255, 255]

    deep = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert to_model_channels(deep, 1)[..., 0].tolist() == [[0, 255]]

    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        to_model_channels(grey, 2)
    with pytest.raises(ValueError, match="PIL image"):
        to_model_channels(np.zeros((2, 2)), 3)


def test_serving_conversion_equals_training_conversion(tree):
    src = ImageFolderSource(tree, channels=1)
    i = next(j for j, p in enumerate(src.paths) if p.endswith("alpha.png"))
    with Image.open(src.paths[i]) as im:
        assert np.array_equal(to_model_channels(im, 1), src[i][0])
