"""CSV list source: single- and multi-label lists, missing labels, tags, unusable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlops.data.imagefolder import UnknownClassError
from dlops.data.listsource import ListSource, parse_list


def _png(path: Path, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 5, 3), 90, dtype=np.uint8)).convert(mode).save(path)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    for n in ("a", "b", "c", "d"):
        _png(tmp_path / "img" / f"{n}.png")
    _png(tmp_path / "img" / "grey.png", mode="L")
    (tmp_path / "img" / "zero.png").write_bytes(b"")
    return tmp_path


def _write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def test_multi_label_list_with_missing_labels_and_tags(folder):
    csv = _write(folder / "train.csv", """
path,labels,missing,tags
img/a.png,cat|dog,,blurry
img/b.png,cat,bird,night|blurry
img/c.png,,,
img/gone.png,cat,,
img/zero.png,dog,,
img/grey.png,bird,,night
""")
    src = ListSource(csv, channels=3)
    assert src.kind == "multi" and src.classes == ["bird", "cat", "dog"]
    assert len(src) == 4 and src.num_skipped == 2
    reasons = {Path(s.path).name: s.reason for s in src.skipped}
    assert reasons == {"gone.png": "line 5: file not found", "zero.png": "line 6: empty file (0 bytes)"}
    t = src.targets
    assert t.shape == (4, 3) and t.dtype == np.float32
    assert t[0].tolist() == [0, 1, 1]
    assert np.isnan(t[1, 0]) and t[1, 1:].tolist() == [1, 0]
    assert t[2].tolist() == [0, 0, 0]
    assert src.tags == [["blurry"], ["night", "blurry"], [], ["night"]]
    assert src.tag_names == ["blurry", "night"]
    assert src.tag_matrix().tolist() == [[True, False], [True, True], [False, False], [False, True]]
    img, target = src[3]
    assert img.shape == (4, 5, 3) and img.dtype == np.uint8 and target.tolist() == [1, 0, 0]


def test_single_label_list_and_dev_with_the_training_map(folder):
    train = ListSource(_write(folder / "train.csv", "path,label\nimg/a.png,cat\nimg/b.png,dog\n"), channels=1)
    assert train.kind == "single" and train.targets.tolist() == [0, 1]
    img, y = train[1]
    assert img.shape == (4, 5, 1) and y == 1
    dev = ListSource(_write(folder / "dev.csv", "path,label\nimg/c.png,dog\n"), class_to_idx=train.class_to_idx)
    assert dev.targets.tolist() == [1] and dev.classes == ["cat", "dog"]
    with pytest.raises(UnknownClassError, match="line 3.*'horse'.*training classes"):
        ListSource(_write(folder / "bad.csv", "path,label\nimg/c.png,dog\nimg/d.png,horse\n"),
                   class_to_idx=train.class_to_idx)


def test_absolute_paths_and_root(folder, tmp_path):
    other = tmp_path / "lists"
    other.mkdir()
    csv = _write(other / "l.csv", f"path,label\n{folder / 'img' / 'a.png'},x\nimg/b.png,y\n")
    src = ListSource(csv, root=folder)
    assert len(src) == 2 and src.num_skipped == 0


@pytest.mark.parametrize("text, match", [
    ("file,label\na.png,x", "no 'path' column"),
    ("path,label,labels\na.png,x,x", "exactly one of 'label'"),
    ("path\na.png", "exactly one of 'label'"),
    ("path,label\nimg/a.png,", "line 2: empty label"),
    ("path,label\n,x", "line 2: empty path"),
    ("path,label,missing\nimg/a.png,x,y", "'missing' column needs"),
    ("path,labels,missing\nimg/a.png,x|y,y", "both positive and missing"),
])
def test_bad_lists_name_the_problem(folder, text, match):
    with pytest.raises(ValueError, match=match):
        parse_list(_write(folder / "bad.csv", text))


def test_a_list_without_usable_images_raises(folder):
    with pytest.raises(ValueError, match="no usable image"):
        ListSource(_write(folder / "l.csv", "path,label\nimg/zero.png,x\n"))
    with pytest.raises(FileNotFoundError):
        ListSource(folder / "absent.csv")


def test_multilabel_targets_feed_the_masked_loss(folder):
    import torch

    from dlops.train.multilabel import masked_bce_with_logits

    src = ListSource(_write(folder / "l.csv", "path,labels,missing\nimg/a.png,x,y\nimg/b.png,y,\n"))
    logits = torch.zeros(len(src), len(src.classes), requires_grad=True)
    loss = masked_bce_with_logits(logits, torch.from_numpy(src.targets))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(np.log(2))
    assert logits.grad[0, src.class_to_idx["y"]] == 0
