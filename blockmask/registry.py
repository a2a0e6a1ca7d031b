"""Registering and removing hooks on modules' diffusers ``HookRegistry`` (all or none; nothing left
in an instance ``__dict__`` once removed)."""

from __future__ import annotations

import torch
from diffusers.hooks import HookRegistry, ModelHook

from .errors import MaskError

HOOK_NAME = "blockmask"


def register_hooks(modules: list[torch.nn.Module], hooks: list[ModelHook], name: str = HOOK_NAME) -> None:
    """Register ``hooks[i]`` on ``modules[i]``'s diffusers HookRegistry; all or none."""
    done = []
    try:
        for mod, hook in zip(modules, hooks):
            registry = HookRegistry.check_if_exists_or_initialize(mod)
            if registry.get_hook(name) is not None:
                raise MaskError(f"{type(mod).__name__} is already hooked by blockmask (nested blockmask executions?)")
            registry.register_hook(hook, name)
            done.append(mod)
    except BaseException:
        remove_hooks(done, name)
        raise


def remove_hooks(modules: list[torch.nn.Module], name: str = HOOK_NAME) -> None:
    """Remove the named hook from each module's registry; a forward that was the class's own goes
    back to being the class's (no instance attribute left behind)."""
    for mod in modules:
        registry = getattr(mod, "_diffusers_hook", None)
        if registry is None or registry.get_hook(name) is None:
            continue
        registry.remove_hook(name, recurse=False)
        fwd = mod.__dict__.get("forward")
        if getattr(fwd, "__self__", None) is mod and getattr(fwd, "__func__", None) is type(mod).forward:
            del mod.forward


def invalidate_children(model: torch.nn.Module) -> None:
    """diffusers caches each registry's list of child registries (for ``cache_context``): rebuild it."""
    registry = getattr(model, "_diffusers_hook", None)
    if registry is not None:
        registry.invalidate_child_registries_cache()
