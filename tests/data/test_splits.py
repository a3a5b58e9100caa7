"""Split builder: the distribution rule, stratification, determinism, the manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlops.data.splits import Splits, build_splits


@pytest.fixture()
def data():
    rng = np.random.default_rng(0)
    y_src = rng.choice(["cat", "dog", "fox"], size=3000, p=[0.6, 0.3, 0.1])
    y_tgt = rng.choice(["cat", "dog", "fox"], size=1000, p=[0.2, 0.3, 0.5])
    return y_src, y_tgt


def _build(y_src, y_tgt, **kw):
    args = dict(target_train_share=0.4, train_dev_share=0.1, dev_share=0.3, seed=7) | kw
    return build_splits(len(y_src), y_src, len(y_tgt), y_tgt, **args)


def test_every_example_in_exactly_one_split_and_dev_test_from_target_only(data):
    y_src, y_tgt = data
    s = _build(y_src, y_tgt)
    src = np.concatenate([s.train_source, s.train_dev_source])
    tgt = np.concatenate([s.train_target, s.train_dev_target, s.dev, s.test])
    assert sorted(src.tolist()) == list(range(3000))
    assert sorted(tgt.tolist()) == list(range(1000))
    assert s.indices("dev")[0].size == 0 and s.indices("test")[0].size == 0
    assert s.sizes == {"train": 3000 + 400 - 340, "train_dev": 340, "dev": 300, "test": 300}
    for a in (s.train_source, s.dev, s.test):
        assert a.dtype == np.int64 and np.all(np.diff(a) > 0)


def test_train_dev_has_the_training_mix(data):
    y_src, y_tgt = data
    s = _build(y_src, y_tgt)
    # pool: 3000 source + 400 target; train-dev 340 -> 300 source, 40 target (within one)
    assert abs(len(s.train_dev_target) - 40) <= 1 and abs(len(s.train_dev_source) - 300) <= 1


def test_splits_are_stratified(data):
    y_src, y_tgt = data
    s = _build(y_src, y_tgt)
    for cls in ("cat", "dog", "fox"):
        n_c = int((y_tgt == cls).sum())
        to_train = np.concatenate([s.train_target, s.train_dev_target])  # target share of the training pool
        for part, size in ((s.dev, 300), (s.test, 300), (to_train, 400)):
            got = int((y_tgt[part] == cls).sum())
            assert abs(got - n_c * size / 1000) < 2, (cls, got)
        n_s = int((y_src == cls).sum())
        got = int((y_src[s.train_dev_source] == cls).sum())
        assert abs(got - n_s * 300 / 3000) < 2.5
    assert s.class_counts["dev"] == {c: int((y_tgt[s.dev] == c).sum()) for c in ("cat", "dog", "fox")}


def test_deterministic_for_a_seed(data):
    y_src, y_tgt = data
    a, b, c = _build(y_src, y_tgt), _build(y_src, y_tgt), _build(y_src, y_tgt, seed=8)
    assert np.array_equal(a.dev, b.dev) and np.array_equal(a.train_dev_source, b.train_dev_source)
    assert not np.array_equal(a.dev, c.dev)


def test_int_shares_are_counts_like_train_test_split(data):
    y_src, y_tgt = data
    s = _build(y_src, y_tgt, target_train_share=0, dev_share=123, train_dev_share=50)
    assert s.sizes == {"train": 2950, "train_dev": 50, "dev": 123, "test": 877}
    assert len(s.train_target) == 0


def test_single_distribution_and_select():
    x = np.arange(100) * 10
    y = np.repeat([0, 1], 50)
    s = build_splits(0, None, 100, y, target_train_share=0.6, train_dev_share=0.1, dev_share=0.2, seed=1)
    assert s.sizes == {"train": 54, "train_dev": 6, "dev": 20, "test": 20}
    assert np.array_equal(s.select("dev", None, x), x[s.dev])
    assert np.array_equal(np.sort(s.select("train", None, x)), np.sort(x[s.train_target]))
    names = [f"f{i}.png" for i in range(100)]
    assert s.select("test", None, names) == [names[i] for i in s.test]
    assert (s.select("dev", None, y) == 0).sum() == 10
    with pytest.raises(ValueError, match="unknown split"):
        s.indices("validation")


def test_select_concatenates_source_then_target(data):
    y_src, y_tgt = data
    s = _build(y_src, y_tgt)
    out = s.select("train", np.zeros(3000), np.ones(1000))
    assert out.tolist() == [0.0] * len(s.train_source) + [1.0] * len(s.train_target)
    with pytest.raises(ValueError, match="source is None"):
        s.select("train", None, np.ones(1000))


def test_manifest_is_json_and_round_trips(data):
    y_src, y_tgt = data
    s = _build(y_src, y_tgt)
    m = s.manifest(class_map={"cat": 0, "dog": 1, "fox": 2})
    back = Splits.from_manifest(json.loads(json.dumps(m)))
    for f in ("train_source", "train_target", "train_dev_source", "train_dev_target", "dev", "test"):
        assert np.array_equal(getattr(back, f), getattr(s, f)), f
    assert m["seed"] == 7 and m["sizes"] == s.sizes and m["class_map"]["fox"] == 2
    assert m["params"]["dev_share"] == 0.3
    files = s.manifest(source_ids=[f"web/{i}.jpg" for i in range(3000)],
                       target_ids=np.array([f"app/{i}.jpg" for i in range(1000)]))
    json.dumps(files)
    assert files["splits"]["dev"]["target"][0] == f"app/{s.dev[0]}.jpg"
    with pytest.raises(ValueError, match="not indices"):
        Splits.from_manifest(files)
    with pytest.raises(ValueError, match="out of range"):
        s.manifest(target_ids=["x"])


def test_multilabel_targets_stratify_by_pattern():
    y = np.array([[1, 0], [0, 1], [1, np.nan]] * 20, dtype=np.float32)
    s = build_splits(0, None, 60, y, target_train_share=0.5, train_dev_share=0.0, dev_share=0.25, seed=0)
    assert s.sizes["dev"] == 15
    assert sorted(np.unique(np.nan_to_num(y[s.dev], nan=-1), axis=0, return_counts=True)[1].tolist()) == [5, 5, 5]


@pytest.mark.parametrize("kw, match", [
    (dict(n_target=1), "n_target=1"),
    (dict(dev_share=0.0), "dev would be empty"),
    (dict(target_train_share=0.5, dev_share=0.5), "test would be empty"),
    (dict(dev_share=1.0), "fraction in"),
    (dict(dev_share=-3), "outside"),
    (dict(train_dev_share=0.999999), "train would be empty"),
    (dict(n_source=0, target_train_share=0.0), "train would be empty"),
    (dict(y_target=[0, 1]), "y_target has 2 labels"),
    (dict(dev_share="0.2"), "dev_share must be"),
])
def test_bad_arguments_say_what_to_change(kw, match):
    args = dict(n_source=10, y_source=None, n_target=10, y_target=None,
                target_train_share=0.0, train_dev_share=0.1, dev_share=0.5, seed=0) | kw
    with pytest.raises(ValueError, match=match):
        build_splits(**args)


def test_manifest_logs_to_mlflow(tmp_path, data):
    import mlflow

    y_src, y_tgt = data
    s = _build(y_src, y_tgt)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        exp = mlflow.create_experiment("splits", artifact_location=(tmp_path / "art").as_uri())
        with mlflow.start_run(experiment_id=exp) as run:
            s.log_to_mlflow(class_map={"cat": 0, "dog": 1, "fox": 2})
        logged = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/splits/manifest.json")
        assert Splits.from_manifest(logged).dev.tolist() == s.dev.tolist()
        params = mlflow.get_run(run.info.run_id).data.params
        assert params["split/dev"] == "300" and params["split/seed"] == "7"
    finally:
        mlflow.set_tracking_uri(previous)
