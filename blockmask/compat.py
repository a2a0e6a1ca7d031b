"""Old module names, kept as thin aliases of their new homes (issue 30: the package layout).

Until 2026-12 blockmask was one flat folder (``blockmask.api``, ``blockmask.train_run``, …). Importing an
old name still works and returns the new module itself (one module object, so patching either name
patches both), with a ``DeprecationWarning`` naming the new one. ``blockmask.io`` and ``blockmask.cli``
are packages now (the old modules are ``blockmask.io.files`` and ``blockmask.cli.main``), and
``blockmask.enable`` is the function, as before. Three old modules were split: ``blockmask.mask`` is
the mask file (:mod:`blockmask.io.maskfile`, which also re-exports ``validate_mask`` and ``mask_hash``);
``blockmask.units`` and ``blockmask.graph`` are the data (:class:`Unit`, :class:`ConsumerGraph`), while
finding units and measuring the graph on a live model is :mod:`blockmask.hooks.discover`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

OLD_TO_NEW = {
    "api": "workbench",
    "baselines": "core.baselines",
    "branchstates": "hooks.branchstates",
    "budget": "hooks.budget",
    "cachedit": "io.cachedit",
    "candidates": "learning.candidates",
    "cli_common": "cli.common",
    "cli_eval": "cli.eval",
    "cli_plan": "cli.plan",
    "cli_tools": "cli.tools",
    "cli_train": "cli.train",
    "costs": "hooks.costs",
    "distributed": "sampling.distributed",
    "errors": "core.errors",
    "evalcache": "eval.cache",
    "evaluate": "eval.evaluate",
    "execution": "hooks.execution",
    "feeders": "hooks.feeders",
    "forecast": "core.forecast",
    "frontiercompute": "learning.frontiercompute",
    "frontierfile": "learning.frontierfile",
    "graph": "core.graph",
    "hub": "io.hub",
    "latency": "learning.latency",
    "mask": "io.maskfile",
    "methods": "learning.methods",
    "methods.budget": "learning.methods.budget",
    "methods.chain": "learning.methods.chain",
    "methods.cli": "cli.method",
    "methods.feature_change": "learning.methods.feature_change",
    "methods.global_opt": "learning.methods.global_opt",
    "methods.progress": "learning.methods.progress",
    "methods.router": "learning.methods.router",
    "models": "io.models",
    "modes": "core.modes",
    "outputs": "core.outputs",
    "pipelearn": "learning.pipelearn",
    "pipesteps": "hooks.pipesteps",
    "planner": "learning.planner",
    "planscore": "learning.planscore",
    "prompting": "sampling.prompting",
    "rectify": "core.rectify",
    "refine": "learning.refine",
    "registry": "hooks.registry",
    "report": "eval.report",
    "resample": "core.resample",
    "resources": "io.resources",
    "rowgraph": "hooks.rowgraph",
    "sample": "sampling.sample",
    "scaling": "learning.scaling",
    "schedulers": "core.schedulers",
    "stepping": "hooks.stepping",
    "sweep": "learning.sweep",
    "tally": "hooks.tally",
    "train": "learning.train",
    "train_auto": "learning.auto",
    "train_ckpt": "learning.checkpoints",
    "train_run": "learning.run",
    "units": "core.units",
    "validate": "core.validate",
}


class AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``blockmask.OLD`` and loads it as the module ``blockmask.NEW``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("blockmask.") and fullname[len("blockmask."):] in OLD_TO_NEW:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        new = "blockmask." + OLD_TO_NEW[module.__name__[len("blockmask."):]]
        warnings.warn(f"{module.__name__} is now {new}; the old name is a deprecated alias",
                      DeprecationWarning, stacklevel=2)
        sys.modules[module.__name__] = importlib.import_module(new)


def install() -> None:
    """Put the alias finder first on ``sys.meta_path``, once. It claims only the old names, none of which
    is a file any more; it must come first because an old package name (``blockmask.methods``) resolves
    to the new package, whose ``__path__`` would let the path finder load ``blockmask.methods.router`` a
    second time, as a separate module object."""
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())
