"""What the apps need to run as Hugging Face Spaces, and nothing when they do not.

* :func:`gpu` is ``spaces.GPU`` when the ``spaces`` package is importable (ZeroGPU attaches a GPU
  for the duration of each decorated call) and a no-op decorator otherwise. Both spellings work:
  ``@gpu`` and ``@gpu(duration=120)``. Off ZeroGPU, ``spaces.GPU`` itself returns the function
  unchanged, so installing ``spaces`` elsewhere is harmless.
* ``spaces`` is imported here, before anything initialises CUDA (ZeroGPU refuses to start
  otherwise): the Gradio entry point imports this module before gradio, torch and blockmask.
* :func:`use_checkout` makes a checkout that was never ``pip install``-ed serve its own bundled
  models and app files. A Gradio Space installs ``requirements.txt`` before the repository is
  copied in, so the project cannot be installed there; blockmask finds its assets as the packages
  ``blockmask_assets`` and ``blockmask_app`` (see setup.py), which this maps onto ``assets/`` and
  ``app/`` when they are not installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
CHECKOUT_PACKAGES = {"blockmask_assets": "assets", "blockmask_app": "app"}

try:  # ZeroGPU on Hugging Face Spaces
    import spaces
except ImportError:
    spaces = None

ZERO_GPU = spaces is not None and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def gpu(fn: Callable | None = None, *, duration: int | None = None):
    """``spaces.GPU`` (``@gpu`` or ``@gpu(duration=…)``, seconds) when ``spaces`` is importable,
    else the function unchanged."""
    if spaces is None:
        return fn if fn is not None else (lambda f: f)
    kw = {} if duration is None else {"duration": duration}
    if fn is None:
        return spaces.GPU(**kw)
    return spaces.GPU(fn, **kw)


def use_checkout(root: Path = ROOT) -> list[str]:
    """Map ``blockmask_assets`` / ``blockmask_app`` onto ``root/assets`` and ``root/app`` when they are
    not installed; returns the names mapped (none when blockmask is installed, as with pip or CI)."""
    done = []
    for name, folder in CHECKOUT_PACKAGES.items():
        init = Path(root) / folder / "__init__.py"
        if name in sys.modules or not init.is_file() or importlib.util.find_spec(name) is not None:
            continue
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        done.append(name)
    return done
