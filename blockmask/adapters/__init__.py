"""Architecture adapters: which modules of a diffusers model are maskable units, how to call it.

Adding an architecture is one small file: subclass :class:`Adapter`, decorate with
:func:`register`, import it here.
"""

from blockmask.adapters import unet as _unet  # noqa: F401  (registers UNet2DModel, UNet2DConditionModel)
from blockmask.adapters import transformer as _transformer  # noqa: F401  (registers DiT, PixArt)
from blockmask.adapters import sd3, flux, sana, hunyuandit, wan  # noqa: F401,E402  (one family each)
from blockmask.adapters.base import Adapter, Conditioning, adapter_for, register, registered

__all__ = ["Adapter", "Conditioning", "adapter_for", "register", "registered"]
