"""The package layout (issue 30): the old flat module names stay importable as deprecated aliases of
their new homes (one module object, so a patch through either name is seen by both), and
``python -m blockmask.cli`` is still the command line."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

from blockmask.compat import OLD_TO_NEW


@pytest.mark.parametrize("old", sorted(OLD_TO_NEW))
def test_old_module_name_is_the_new_module_with_a_deprecation_warning(old):
    new = importlib.import_module("blockmask." + OLD_TO_NEW[old])
    sys.modules.pop("blockmask." + old, None)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        mod = importlib.import_module("blockmask." + old)
    assert mod is new
    assert any(issubclass(w.category, DeprecationWarning) and OLD_TO_NEW[old] in str(w.message) for w in seen)


def test_readme_api_through_old_names():
    """The names the README used before the move still resolve to the same objects."""
    import blockmask
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from blockmask.api import Workbench, apply
        from blockmask.train_run import run_training
    from blockmask.learning.run import run_training as new_run
    assert Workbench is blockmask.Workbench and apply is blockmask.apply and run_training is new_run
    assert callable(blockmask.enable) and callable(blockmask.learn)  # not shadowed by a module


def test_a_new_name_wins_over_an_alias():
    """``blockmask.io`` and ``blockmask.cli`` are packages now, not aliases."""
    import blockmask.cli
    import blockmask.io
    assert blockmask.io.__path__ and blockmask.cli.__path__
    assert "io" not in OLD_TO_NEW and "cli" not in OLD_TO_NEW and "enable" not in OLD_TO_NEW


def test_python_m_blockmask_cli():
    r = subprocess.run([sys.executable, "-m", "blockmask.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "plan" in r.stdout, r.stderr[-500:]


def test_public_surface():
    """``blockmask`` exports the one-call entry points (issue 30), not shadowed by a module of that name."""
    import blockmask
    from blockmask.learning.pipelearn import learn
    from blockmask.learning.planner import PlanConfig, plan

    assert blockmask.plan is plan and blockmask.learn is learn and blockmask.PlanConfig is PlanConfig
    assert {"Workbench", "apply", "enable", "disable", "summary", "learn", "plan", "MaskFile", "BlockMaskConfig",
            "apply_block_mask", "remove_block_mask"} <= set(blockmask.__all__)
    assert all(hasattr(blockmask, n) for n in blockmask.__all__)
