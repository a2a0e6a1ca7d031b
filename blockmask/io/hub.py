"""Masks on the Hugging Face hub (through ``huggingface_hub``), and every way a mask can be named.

A hub mask is a folder (a model repo, or a subfolder of the model's own repo) holding
``blockmask_mask.json`` (format ``blockmask/1``) and a short model card. ``MaskFile.save_pretrained``
writes such a folder, ``MaskFile.from_pretrained`` reads it from a local folder or a hub repo id
(through the hub cache, so it works offline once downloaded, or with ``HF_HUB_OFFLINE=1``), and
``MaskFile.push_to_hub`` uploads it. This module finds and writes the files; :mod:`blockmask.core.mask`
reads them (it never imports ``MaskFile``: the mask module sits above it).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from blockmask.core.errors import MaskError
from blockmask.core.validate import MAX_JSON_BYTES
from blockmask.io.files import atomic_write_text
from blockmask.io.resources import bundled_masks

MASK_FILENAME = "blockmask_mask.json"
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def model_card(mf) -> str:
    macs = (mf.meta.get("macs") or {}).get("ratio")
    lines = ["---", "library_name: blockmask", "tags:", "- blockmask", "- diffusers", "- block-caching", "---", "",
             f"# blockmask mask for `{mf.model or 'a diffusers model'}`", "",
             f"A {mf.num_steps}×{len(mf.units)} block mask (steps × units) for {mf.scheduler.get('class', 'its scheduler')}"
             + (f", {macs:.1%} of the plain model's MACs" if isinstance(macs, float) else "") + ".", "",
             "```python", "import blockmask", "mask = blockmask.MaskFile.from_pretrained(REPO_ID)",
             "with blockmask.apply(pipe, mask):", f"    images = pipe(num_inference_steps={mf.num_steps}).images", "```", ""]
    return "\n".join(lines)


def save_pretrained(mf, save_directory) -> Path:
    """Write ``blockmask_mask.json`` and ``README.md`` into ``save_directory`` (atomic files)."""
    d = Path(save_directory)
    d.mkdir(parents=True, exist_ok=True)
    mf.save(d / MASK_FILENAME)
    if not (d / "README.md").exists():  # never overwrite a model's own card
        atomic_write_text(d / "README.md", model_card(mf))
    return d


def fetch(source, *, filename: str = MASK_FILENAME, subfolder: str | None = None, revision: str | None = None,
          cache_dir=None, token=None, local_files_only: bool = False, max_bytes: int | None = None) -> Path:
    """The mask file of a local folder saved with ``save_pretrained``, or of a hub repo id (downloaded
    into the hub cache); ``MaskFile.from_pretrained`` loads it. A hub file larger than ``max_bytes``
    (default: the mask loader's limit) is refused from its metadata, before any of it is downloaded."""
    local = Path(source) / (subfolder or "") / filename
    if Path(source).is_dir():
        if not local.is_file():
            raise MaskError(f"{source} holds no {filename} (save one with MaskFile.save_pretrained)")
        return local
    if not _REPO_ID.match(str(source)):
        raise MaskError(f"mask {source!r} is not a file, a folder or a hub repo id (owner/name)")
    from huggingface_hub import hf_hub_download

    if not local_files_only:
        _check_remote_size(str(source), filename, subfolder=subfolder, revision=revision, token=token,
                           max_bytes=max_bytes)
    try:
        path = hf_hub_download(str(source), filename, subfolder=subfolder, revision=revision, cache_dir=cache_dir,
                               token=token, local_files_only=local_files_only)
    except Exception as e:  # offline without a cached copy, unknown repo, no such file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MaskError(f"could not get mask {filename} from hub repo {source!r}: {first[:160]}") from None
    return Path(path)


def _check_remote_size(repo: str, filename: str, *, subfolder, revision, token, max_bytes) -> None:
    """Refuse a hub file over ``max_bytes`` from its HEAD metadata. Offline (or when the hub does not
    answer) there is nothing to check here: the download then fails or comes from the cache, and the
    loader checks the size of what is on disk."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    limit = MAX_JSON_BYTES if max_bytes is None else max_bytes
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo, filename, subfolder=subfolder, revision=revision), token=token)
    except Exception:  # offline, unknown repo or file: hf_hub_download reports it
        return
    if meta.size is not None and meta.size > limit:
        raise MaskError(f"mask {filename} in hub repo {repo!r} is too large ({meta.size} bytes, limit {limit}); "
                        "not downloaded")


def push_to_hub(mf, repo_id: str, *, subfolder: str | None = None, commit_message: str = "Upload blockmask mask",
                private: bool | None = None, token=None, revision: str | None = None):
    """Create (if needed) the hub repo and upload the mask folder; returns the commit info."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(mf, tmp)
        return api.upload_folder(repo_id=repo_id, folder_path=tmp, path_in_repo=subfolder or "",
                                 commit_message=commit_message, revision=revision)


def mask_source_path(source, *, cache_dir=None, max_bytes: int | None = None) -> Path:
    """The mask file that a mask named any accepted way stands for: a mask file path, a folder with
    ``blockmask_mask.json``, the name of a shipped mask (``mnist-ddpm-050steps-b45``), or a hub repo id
    (``owner/name``, optionally ``owner/name:path/in/repo.json``), downloaded then.
    :func:`blockmask.io.maskfile.load_mask_source` loads it."""
    s = str(source)
    p = Path(s).expanduser()
    if p.is_dir():
        return fetch(p)
    if p.exists():  # a file, or a FIFO/device that the loader refuses with its own message
        return p
    shipped = bundled_masks()
    if s in shipped:
        return shipped[s]
    repo, _, inner = s.partition(":")
    if _REPO_ID.match(repo) and (inner or not s.endswith(".json")):  # "a/b.json" is a missing file, not a repo
        sub, _, name = inner.rpartition("/") if inner else ("", "", MASK_FILENAME)
        return fetch(repo, filename=name or MASK_FILENAME, subfolder=sub or None, cache_dir=cache_dir,
                     max_bytes=max_bytes)
    raise MaskError(f"mask file not found: {s} (not a file, a folder, a shipped mask name or a hub repo id)")
