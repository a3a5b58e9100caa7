"""The registry's pure parts: gate spec, fingerprints, the gate's decision, the history stack."""

from __future__ import annotations

import json

import pytest

from dlops.search.space import Constraint
from dlops.tracking.promotion import (Candidate, Event, GateSpec, decide, fingerprint, fingerprint_diff,
                                      history_key, parse_constraint, parse_history, rollback_target, split_digests)

FP10 = fingerprint("classification", [str(i) for i in range(10)], "aaaa", "bbbb", "dev/error", "min")
SPEC = GateSpec("dev/error", "min", (Constraint("latency_ms", "<=", 50.0),))


def test_gate_spec_round_trips_through_its_tag():
    back = GateSpec.from_json(SPEC.to_json())
    assert back == SPEC
    assert json.loads(SPEC.to_json())["constraints"] == ["latency_ms <= 50"]
    with pytest.raises(ValueError, match="not a dlops gate spec"):
        GateSpec.from_json('{"metric": "dev/error", "mode": "sideways"}')


@pytest.mark.parametrize("text,ok", [("latency_ms <= 50", True), ("size_mb<2.5", True), ("dev/f1 >= 0.9", True),
                                     ("latency_ms == 3", False), ("fast", False)])
def test_parse_constraint_is_the_inverse_of_str(text, ok):
    if ok:
        c = parse_constraint(text)
        assert parse_constraint(str(c)) == c
    else:
        with pytest.raises(ValueError, match="METRIC OP NUMBER"):
            parse_constraint(text)


def test_fingerprint_diff_names_the_part_that_differs():
    assert fingerprint_diff(FP10, dict(FP10)) is None
    two = dict(FP10, classes=["cat", "dog"])
    assert fingerprint_diff(two, FP10) == "classes differ (2 classes vs 10)"
    assert "test split differs" in fingerprint_diff(dict(FP10, test_split="cccc"), FP10)
    assert "metric differs" in fingerprint_diff(dict(FP10, metric="dev/f1"), FP10)
    assert "no fingerprint" in fingerprint_diff(None, FP10)


def test_split_digests_per_split_or_whole():
    m = {"format": 1, "class_map": {"a": 0}, "splits": {"dev": {"target": [1, 2]}, "test": {"target": [3]}}}
    dev, test = split_digests(m, 0, {})
    assert dev != test
    m2 = json.loads(json.dumps(m))
    m2["splits"]["train"] = {"target": [9]}  # train does not change what the dev/test metric means
    assert split_digests(m2, 0, {}) == (dev, test)
    m2["splits"]["test"]["target"] = [4]
    assert split_digests(m2, 0, {})[1] != test and split_digests(m2, 0, {})[0] == dev
    digits = {"source": "sklearn", "sizes": {"dev": 10}}
    assert split_digests(digits, 0, {}) != split_digests(digits, 1, {})  # the seed decides the split


def test_decide_two_classes_never_take_champion_from_ten():
    champ = Candidate("1", {"dev/error": 0.05, "latency_ms": 1.0}, FP10)
    easy = Candidate("2", {"dev/error": 0.0, "latency_ms": 1.0}, dict(FP10, classes=["a", "b"]))
    ok, why = decide(easy, champ, SPEC)
    assert not ok and "not comparable with champion version 1" in why and "2 classes vs 10" in why
    better = Candidate("3", {"dev/error": 0.01, "latency_ms": 1.0}, FP10)
    assert decide(better, champ, SPEC) == (True, "dev/error 0.01 beats champion version 1's 0.05")
    slow = Candidate("4", {"dev/error": 0.001, "latency_ms": 99.0}, FP10)
    assert decide(slow, champ, SPEC) == (False, "version 4 breaks latency_ms <= 50")
    ok, why = decide(better, None, SPEC)
    assert ok and why == "no version held champion"
    worse = Candidate("5", {"dev/error": 0.07, "latency_ms": 1.0}, FP10)
    assert not decide(worse, champ, SPEC)[0]


def test_decide_ensemble_must_beat_its_best_member():
    spec = GateSpec("dev/error", "min")
    ens = Candidate("1", {"dev/error": 0.86}, FP10)
    ok, why = decide(ens, None, spec, baseline={"dev/error": 0.04})
    assert not ok and "best member" in why
    assert decide(Candidate("1", {"dev/error": 0.03}, FP10), None, spec, baseline={"dev/error": 0.04})[0]


def _ev(alias, frm, to, decision="gate"):
    return Event("t", "u", alias, frm, to, decision, "r")


def test_rollback_target_is_a_stack_per_alias():
    evs = [_ev("champion", None, "1"), _ev("challenger", None, "2"), _ev("champion", "1", "3"),
           _ev("champion", "3", "4", "forced")]
    assert rollback_target(evs, "champion") == "3"
    evs.append(_ev("champion", "4", "3", "rollback"))
    assert rollback_target(evs, "champion") == "1"
    evs.append(_ev("champion", "3", "1", "rollback"))
    assert rollback_target(evs, "champion") is None  # the first champion had no predecessor
    assert rollback_target(evs, "challenger") is None
    assert rollback_target([], "champion") is None


def test_history_tags_parse_in_time_order():
    a, b = _ev("champion", None, "1"), _ev("champion", "1", "2")
    tags = {history_key(2000, "bb"): b.to_json(), history_key(1000, "aa"): a.to_json(), "other": "x",
            history_key(3000, "cc"): "not json"}
    got = parse_history(tags)
    assert [e.to_version for e in got] == ["1", "2"]
    assert got[0].key == "dlops.history.0000000001000-aa"


def test_decide_challenger_needs_eligible_and_comparable_not_better():
    from dlops.tracking.promotion import decide_challenger

    champ = Candidate("1", {"dev/error": 0.05, "latency_ms": 1.0}, FP10)
    worse = Candidate("2", {"dev/error": 0.30, "latency_ms": 1.0}, FP10)
    ok, why = decide_challenger(worse, champ, SPEC)
    assert ok and "comparable with champion version 1" in why  # worse than the champion: still a challenger
    assert decide(worse, champ, SPEC)[0] is False  # ... but never champion
    slow = Candidate("3", {"dev/error": 0.01, "latency_ms": 99.0}, FP10)
    assert decide_challenger(slow, champ, SPEC) == (False, "version 3 breaks latency_ms <= 50")
    two = Candidate("4", {"dev/error": 0.0, "latency_ms": 1.0}, dict(FP10, classes=["a", "b"]))
    ok, why = decide_challenger(two, champ, SPEC)
    assert not ok and "2 classes vs 10" in why
    assert decide_challenger(two, None, SPEC)[0]  # no champion to compare with
    ens = Candidate("5", {"dev/error": 0.06, "latency_ms": 1.0}, FP10)
    ok, why = decide_challenger(ens, champ, SPEC, baseline={"dev/error": 0.04})
    assert not ok and "best member" in why
