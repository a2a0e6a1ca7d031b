"""The bundled models, classifier and learned masks, shipped in the wheel as ``blockmask_assets``
(found with ``importlib.resources``; see :func:`blockmask.models.assets_dir`)."""
