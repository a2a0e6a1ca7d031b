"""Registering and removing hooks on modules' diffusers ``HookRegistry`` (all or none; nothing left
in an instance ``__dict__`` once removed)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from diffusers.hooks import HookRegistry, ModelHook

from blockmask.core.errors import MaskError

HOOK_NAME = "blockmask"
MEASURE_HOOK = "blockmask_measure"  # measurement wrappers (unit order, consumer graph, feature change)


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


class ForwardWrapHook(ModelHook):
    """Runs ``make(i, forward)`` in place of a module's forward, ``forward`` being what ran there before
    (the class's own, or an earlier hook's). Measurement only: recorders and freezers."""

    def __init__(self, index: int, make: Callable[[int, Callable], Callable]):
        super().__init__()
        self.index, self.make, self.forward_fn = index, make, None

    def new_forward(self, module, *args, **kwargs):
        return self.forward_fn(*args, **kwargs)


@contextlib.contextmanager
def wrap_forwards(modules: list[torch.nn.Module], make: Callable[[int, Callable], Callable],
                  name: str = MEASURE_HOOK) -> Iterator[None]:
    """While inside, module ``i`` runs ``make(i, original)`` in place of its forward: a hook on its diffusers
    HookRegistry (the one mechanism execution uses too), removed on exit even after an exception. A
    second wrapper under the same name on a module is refused (one :class:`MaskError` line)."""
    hooks = [ForwardWrapHook(i, make) for i in range(len(modules))]
    register_hooks(modules, hooks, name)
    try:
        for hook in hooks:
            hook.forward_fn = make(hook.index, hook.fn_ref.original_forward)
        yield
    finally:
        remove_hooks(modules, name)
