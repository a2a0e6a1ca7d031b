"""CLI commands around the library: start the installed apps, get MNIST, move masks to and from
cache-dit. Registered on the main parser by :func:`add_commands` (blockmask/cli/main.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from blockmask.core.errors import BlockmaskError
from blockmask.core.schedulers import SCHEDULER_HELP
from blockmask.core.validate import read_json_file
from blockmask.data.mnist import default_mnist_dir, load_mnist
from blockmask.io.cachedit import from_cachedit, to_cachedit
from blockmask.io.files import atomic_write, atomic_write_json
from blockmask.io.resources import app_dir
from blockmask.viz.access import MAX_UPLOAD_BYTES
from blockmask.workbench import Workbench


def cmd_app(args) -> None:
    """Start an app from the installed files (works from a wheel, any directory)."""

    d = app_dir()
    if args.which == "streamlit":

        # the server enforces the upload limit too (Streamlit's own default is 200 MB)
        cmd = [sys.executable, "-m", "streamlit", "run", str(d / "main.py"), "--server.headless",
               "true" if args.headless else "false", "--server.maxUploadSize", str(max(1, MAX_UPLOAD_BYTES // 1_000_000)),
               "--runner.postScriptGC", "false",  # as .streamlit/config.toml: no 0.3 s full GC after each run
               *(["--server.port", str(args.port)] if args.port else [])]
    else:
        cmd = [sys.executable, str(d / "gradio_demo.py")]
    env = dict(os.environ)
    if args.port and args.which == "gradio":
        env["GRADIO_SERVER_PORT"] = str(args.port)
    if args.model:
        env["BLOCKMASK_APP_MODEL"] = args.model
    print(" ".join(cmd), flush=True)
    sys.exit(subprocess.call(cmd, env=env))


def cmd_data(args) -> None:
    """Put the MNIST IDX files where evaluation finds them: copied from ``--data`` or downloaded with
    torchvision (online only)."""

    out = Path(args.output).expanduser() if args.output else default_mnist_dir()
    splits = ["test", "train"] if args.train else ["test"]
    if args.data:
        src = Path(args.data).expanduser()
        if not src.is_dir():
            raise BlockmaskError(f"--data {src} is not a folder")
        for split in splits:
            try:
                load_mnist(src, split)  # checks every file before anything is copied
            except (FileNotFoundError, ValueError) as e:
                raise BlockmaskError(f"--data {src}: {e}") from None
        if src.resolve() != out.resolve():
            out.mkdir(parents=True, exist_ok=True)
            for p in sorted(src.iterdir()):
                if "-ubyte" in p.name or p.name == "SHA256SUMS":
                    atomic_write(out / p.name, lambda tmp, p=p: shutil.copyfile(p, tmp))
    else:
        if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("BLOCKMASK_OFFLINE") == "1":
            raise BlockmaskError("offline: pass --data PATH with the MNIST IDX files instead of downloading")
        for split in splits:
            try:
                load_mnist(out, split, download=True)
            except Exception as e:  # no network, server error
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise BlockmaskError(f"MNIST download failed ({first[:120]}); pass --data PATH instead") from None
    images, _ = load_mnist(out, "test")
    hint = "" if args.output is None else f" (set BLOCKMASK_MNIST={out} or pass --data {out} to blockmask eval)"
    print(f"MNIST ready in {out}: {len(images)} test images{hint}")


def cmd_cachedit(args) -> None:
    wb = Workbench.load(args.model, scheduler=args.scheduler)
    if args.direction == "export":
        mf, warnings = wb.load_mask(args.source)
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        cfg = to_cachedit(mf.mask, wb.units)
        text = json.dumps(cfg)
        if args.output:
            atomic_write_json(args.output, cfg)
            text += f"\nwrote {args.output}  (cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(**json)))"
        print(text)
        return
    if not args.output:
        raise BlockmaskError("cachedit import needs -o OUTPUT.json")

    # a regular file under 1 MB, strict finite JSON object: a FIFO, /dev/zero or [1, 2] is one line
    cfg = read_json_file(args.source, "cache-dit config", max_bytes=2**20)
    mask = from_cachedit(cfg, wb.units)
    wb.mask_file(mask, meta={"cachedit": cfg}).save(args.output)
    print(f"wrote {args.output}: {mask.shape[0]}×{mask.shape[1]} mask, MACs {wb.macs.ratio(mask):.1%}")


def add_commands(sub) -> None:
    p = sub.add_parser("app", help="start the Streamlit or Gradio app (from the installed package)")
    p.add_argument("which", choices=["streamlit", "gradio"])
    p.add_argument("--model", help="model spec to start on (default: the bundled mnist-ddpm)")
    p.add_argument("--port", type=int)
    p.add_argument("--headless", action="store_true", help="Streamlit: do not open a browser")
    p.set_defaults(fn=cmd_app)

    p = sub.add_parser("data", help="get MNIST for evaluation: download with torchvision, or copy --data PATH")
    p.add_argument("dataset", choices=["mnist"])
    p.add_argument("--data", help="a folder with the MNIST IDX files (t10k-images-idx3-ubyte[.gz], ...)")
    p.add_argument("-o", "--output", help="target folder (default: $BLOCKMASK_MNIST, else ~/.cache/blockmask/mnist)")
    p.add_argument("--train", action="store_true", help="also the 60k training split")
    p.set_defaults(fn=cmd_data)

    p = sub.add_parser("cachedit", help="export a mask to cache-dit's steps_mask config, or import one")
    p.add_argument("direction", choices=["export", "import"])
    p.add_argument("source", help="export: a mask (file, shipped name, hub id); import: a cache-dit config JSON")
    p.add_argument("--model", required=True, help="the model spec the mask is for")
    p.add_argument("--scheduler", default="ddim", help=SCHEDULER_HELP)
    p.add_argument("-o", "--output", help="output JSON (export: the DBCacheConfig fields; import: a mask file)")
    p.set_defaults(fn=cmd_cachedit)
