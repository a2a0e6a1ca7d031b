"""Presenter layer shared by the Streamlit and Gradio apps (no UI framework imports here).

* :mod:`.context` — one loaded model, read-only and shareable across users (:class:`ModelContext`);
* :mod:`.presenter` — per-user mask editing state (:class:`MaskEditor`): edits, undo/redo, rectify;
* :mod:`.presets` — the model's own shipped masks (``assets/masks/``, with provenance) and baselines;
* :mod:`.compare` — original vs masked generation, Δ_k (METHOD.md Eq. 9), image helpers;
* :mod:`.figures` — plotly figures and the clickable mask image.
"""

from blockmask.viz.context import ModelContext, default_model_spec, load_context, model_choices
from blockmask.viz.presenter import MaskEditor, Message

__all__ = ["ModelContext", "MaskEditor", "Message", "default_model_spec", "load_context", "model_choices"]
