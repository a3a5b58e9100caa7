"""The fingerprint's dev/test split digests identify each split's examples (the demo's digits data).

A registered version's ``dlops.fingerprint`` names its dev and test split by digest
(:func:`dlops.tracking.promotion.split_digests` of the data manifest). The digits manifest once
held only the classes and sizes, so both digests hashed the same object and came out equal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlops.config import load_config
from dlops.data.digits import load_digits_arrays
from dlops.data.sources import load_task
from dlops.tracking.promotion import fingerprint, fingerprint_diff, split_digests

DEMO = Path(__file__).resolve().parents[2] / "examples" / "digits-transfer.yaml"


def _digests(cfg, seed=None):
    seed = cfg.seed if seed is None else seed
    data = load_task(cfg.data, seed, cfg.task)
    return data, split_digests(data.manifest, seed, cfg.data.model_dump(mode="json"))


def test_demo_dev_and_test_digests_differ_and_repeat():
    cfg = load_config(DEMO)
    data, (dev, test) = _digests(cfg)
    assert dev != test  # dev and test are different examples of digits 5-9
    _, again = _digests(cfg)
    assert again == (dev, test)  # the same split, built again, has the same digests
    fps = [fingerprint(cfg.task, data.class_names, *d, cfg.search.metric, cfg.search.mode) for d in ((dev, test), again)]
    assert fingerprint_diff(*fps) is None  # two runs of the project stay comparable for the gate
    _, other = _digests(cfg, seed=cfg.seed + 1)
    assert other[0] != dev and other[1] != test  # another seed, other examples


def test_demo_manifest_lists_the_examples_of_each_split():
    cfg = load_config(DEMO)
    data = load_task(cfg.data, cfg.seed, cfg.task)
    sp = data.manifest["splits"]
    x, y = load_digits_arrays()
    for name in ("train", "train_dev", "dev", "test"):
        idx = np.asarray(sp[name]["target"])
        assert len(idx) == len(data.split(name))
        np.testing.assert_array_equal(x[idx], data.split(name).x)  # indices into scikit-learn's digits
        assert set(y[idx].tolist()) <= set(cfg.data.target_classes)
    assert not set(sp["dev"]["target"]) & set(sp["test"]["target"])
    assert data.manifest["class_map"] == {str(c): i for i, c in enumerate(cfg.data.target_classes)}


def test_a_manifest_without_splits_never_gives_one_digest_to_dev_and_test():
    dev, test = split_digests({"source": "elsewhere", "sizes": {"dev": 10, "test": 10}}, 0, {})
    assert dev != test


def test_the_embedded_digits_are_scikit_learns_element_for_element():
    """dlops/data/digits.npz holds ``load_digits()``'s images and labels, in its order."""
    from sklearn.datasets import load_digits

    from dlops.data.digits import load_raw_digits

    d = load_digits()
    images, target = load_raw_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and target.shape == (1797,)
    np.testing.assert_array_equal(images, d.images)
    np.testing.assert_array_equal(target, d.target)
    x, y = load_digits_arrays()
    np.testing.assert_array_equal(x[..., 0], np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(y, d.target)


def test_loading_the_demo_data_does_not_import_scikit_learn():
    """The demo's data load (what ``dlops run`` does before Ray starts) reads the file beside
    the module: importing scikit-learn took 2.3 s of every run's start-up."""
    import subprocess
    import sys

    code = ("import sys; from dlops.config import load_config; from dlops.data.sources import load_task; "
            f"cfg = load_config({str(DEMO)!r}); d = load_task(cfg.data, cfg.seed, cfg.task); "
            "print(len(d.train), len(d.dev), sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    n_train, n_dev, sk = r.stdout.split(" ", 2)
    assert int(n_train) > 0 and int(n_dev) > 0
    assert sk.strip() == "[]"
