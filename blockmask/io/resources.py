"""Where the files blockmask needs at run time live: the bundled models, classifier and masks
(``blockmask_assets``) and the app files (``blockmask_app``).

Both are packages of the wheel mapped onto the repository's ``assets/`` and ``app/`` folders
(see setup.py), so they are found with :mod:`importlib.resources` the same way from a wheel, an
editable install or a Hugging Face Space; no path is derived from this file's location.
``$BLOCKMASK_ASSETS`` overrides the assets folder.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
from pathlib import Path

from blockmask.core.errors import BlockmaskError

ASSETS_PACKAGE = "blockmask_assets"
APP_PACKAGE = "blockmask_app"


def _package_dir(package: str) -> Path | None:
    if importlib.util.find_spec(package) is None:
        return None
    return Path(str(importlib.resources.files(package)))


def assets_dir() -> Path:
    """The bundled assets folder (``models/``, ``classifier/``, ``masks/``); $BLOCKMASK_ASSETS overrides it.
    A missing folder is returned as a path that does not exist (callers then list nothing bundled)."""
    env = os.environ.get("BLOCKMASK_ASSETS")
    if env:
        return Path(env).expanduser()
    return _package_dir(ASSETS_PACKAGE) or Path(os.devnull) / ASSETS_PACKAGE


def app_dir() -> Path:
    """The folder of the app files (``main.py``, ``gradio_demo.py``, ``components/``, ``fallback-unet.json``)."""
    d = _package_dir(APP_PACKAGE)
    if d is None or not (d / "main.py").is_file():
        raise BlockmaskError(f"the app files ({APP_PACKAGE}) are not installed; reinstall blockmask")
    return d


def bundled_masks() -> dict[str, Path]:
    """Shipped masks by name (file stem, e.g. ``mnist-ddpm-050steps-b35``) → path."""
    d = assets_dir() / "masks"
    # a training run in progress leaves NAME.json.ckpt.json / .search.json beside the masks: not masks
    return {p.stem: p for p in sorted(d.glob("*.json")) if "." not in p.stem} if d.is_dir() else {}
