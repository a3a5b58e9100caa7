"""Data checks before any trial (dlops.data.checks): pure checks, and `dlops validate` refusing bad
image folders with exit 2 and a fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dlops.cli import main
from dlops.data.checks import check_shares, find_duplicates, human_resolvable_n, split_sizes, suggest_shares
from dlops.errors import DataError
from dlops_testing import EXAMPLE


def test_documented_shares_without_a_source_leave_test_empty_and_the_fix_works():
    # target_train_share 0.6 + dev_share 0.5 of 40 images: 24 + 20 > 40
    with pytest.raises(DataError) as ei:
        check_shares(0, 40, 0.6, 0.1, 0.5, where="imgs")
    msg = str(ei.value)
    assert "test would be empty" in msg and "data.dev_share=0.5" in msg and "data.target_train_share=0.6" in msg
    assert "use data.target_train_share=0.6, data.dev_share=0.2" in msg
    s = suggest_shares(0, 40, 0.6, 0.1)
    assert min(split_sizes(0, 40, s["target_train_share"], s["train_dev_share"], s["dev_share"]).values()) >= 1


def test_shares_that_work_return_the_sizes():
    assert split_sizes(0, 100, 0.6, 0.1, 0.2) == {"train": 54, "train_dev": 6, "dev": 20, "test": 20}
    assert check_shares(1000, 100, 0.0, 0.1, 0.5) == {"train": 900, "train_dev": 100, "dev": 50, "test": 50}


def test_too_few_examples_says_so():
    with pytest.raises(DataError, match="too few examples"):
        check_shares(0, 3, 0.6, 0.1, 0.5)


def test_human_resolvable_n():
    assert human_resolvable_n(0.01) == 381  # 1.96^2 * 0.99 / 0.01
    assert human_resolvable_n(0.05) == 73


def test_find_duplicates_by_content(tmp_path: Path):
    a, b, c = tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "c.bin"
    a.write_bytes(b"same"), b.write_bytes(b"same"), c.write_bytes(b"other")
    assert find_duplicates([str(a)], {"dev": [str(c)], "test": [str(b)]}) == [(str(a), "test", str(b))]
    assert find_duplicates([str(a)], {"dev": [str(c)]}) == []


def _folder(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for cls, n in counts.items():
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def _validate(tmp_path: Path, target: Path, *sets: str):
    base = ("data.source=imagefolder", f"data.target_dir={target}", "data.image_size=8", "model.weights=null")
    args = ["validate", str(EXAMPLE)] + [a for s in base + sets for a in ("--set", s)]
    return CliRunner().invoke(main, args)


def test_validate_ok_with_the_default_shares(tmp_path: Path):
    r = _validate(tmp_path, _folder(tmp_path / "imgs", {"a": 20, "b": 20}))
    assert r.exit_code == 0, r.output
    assert "train-dev" in r.output and "dev 8, test 8" in r.output
    # legal but unwise: tiny sets are warnings that name the key to change
    assert "warning:" in r.output and "the dev set has 8 examples" in r.output and "raise data.dev_share" in r.output


@pytest.mark.parametrize("case, expect", [
    ("one_class", "at least 2 classes"),
    ("empty_class", "data.target_dir: class folder"),
    ("shares", "test would be empty"),
    ("duplicates", "same content as a training file"),
    ("small_class", "class 'b' has 2 examples"),
])
def test_validate_refuses_bad_data_with_exit_2(tmp_path: Path, case: str, expect: str):
    sets: tuple[str, ...] = ()
    if case == "one_class":
        root = _folder(tmp_path / "imgs", {"a": 20})
    elif case == "empty_class":
        root = _folder(tmp_path / "imgs", {"a": 20, "b": 20})
        (root / "c").mkdir()
    elif case == "shares":
        root = _folder(tmp_path / "imgs", {"a": 20, "b": 20})
        sets = ("data.target_train_share=0.6", "data.dev_share=0.5")
    elif case == "small_class":
        root = _folder(tmp_path / "imgs", {"a": 20, "b": 2})
    else:
        root = _folder(tmp_path / "imgs", {"a": 20, "b": 20})
        for i in range(20):  # every image of class a twice: some copies land in dev/test
            (root / "a" / f"copy{i}.png").write_bytes((root / "a" / f"{i}.png").read_bytes())
    r = _validate(tmp_path, root, *sets)
    assert r.exit_code == 2, r.output
    assert expect in r.output
    assert "ok (" not in r.output


def test_validate_checks_the_resource_request_against_a_running_cluster(local_ray):
    # no node of the local Ray (2 CPUs, no GPUs asked for) has 64 GPUs: exit 2 naming the key and the fix
    r = CliRunner().invoke(main, ["validate", str(EXAMPLE), "--ray-address", "auto", "--set", "search.resources.gpu=64"])
    assert r.exit_code == 2, r.output
    assert "search.resources" in r.output and "gpu=64" in r.output and "lower the request" in r.output
    ok = CliRunner().invoke(main, ["validate", str(EXAMPLE), "--ray-address", "auto"])
    assert ok.exit_code == 0 and "resources fit auto" in ok.output


def test_validate_refuses_a_list_label_the_training_classes_lack(tmp_path: Path):
    root = _folder(tmp_path / "imgs", {"a": 12, "b": 12, "c": 12})
    src, tgt = tmp_path / "source.csv", tmp_path / "target.csv"
    src.write_text("path,label\n" + "".join(f"{root / c / f'{i}.png'},{c}\n" for c in "ab" for i in range(6)))
    tgt.write_text("path,label\n" + "".join(f"{root / c / f'{i}.png'},{c}\n" for c in "abc" for i in range(6, 12)))
    args = ["validate", str(EXAMPLE), "--set", "data.source=list", "--set", f"data.source_csv={src}",
            "--set", f"data.target_csv={tgt}", "--set", "data.image_size=8", "--set", "model.weights=null"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert "'c'" in r.output and "training classes" in r.output
    assert "data.target_csv: " in r.output and "(and 5 more rows)" in r.output and "data.source_csv" in r.output


def test_a_sliver_of_target_train_is_not_suggested_back():
    # newcomer review: target_train_share=0.01 of 400 got 0.01 suggested back, which the per-class split refused
    s = suggest_shares(0, 400, 0.01, 0.1)
    assert s["target_train_share"] == 0.6 and s["dev_share"] == 0.2
    assert min(split_sizes(0, 400, s["target_train_share"], s["train_dev_share"], s["dev_share"]).values()) >= 20
