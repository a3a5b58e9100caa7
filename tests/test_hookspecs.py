"""Every hook spec has a test (Datasette's ``test_plugin_hooks_have_tests``): a spec that no test
file names fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlops import hookspecs

TESTS = Path(__file__).resolve().parent
SPECS = sorted(n for n in dir(hookspecs) if n.startswith("dlops_") and callable(getattr(hookspecs, n)))


def test_there_are_specs():
    assert {"dlops_before_phase", "dlops_after_phase", "dlops_on_phase_error", "dlops_reporters",
            "dlops_augment_policies", "dlops_ensemble_methods"} <= set(SPECS)


@pytest.mark.parametrize("name", SPECS)
def test_hook_has_a_test(name):
    sources = [p for p in TESTS.rglob("*.py") if p.resolve() != Path(__file__).resolve()]
    assert any(name in p.read_text() for p in sources), f"no test names the hook {name}"
