"""Progress of a producer (:mod:`blockmask.learning.methods`): ``progress`` is a bool (a tqdm bar on stderr,
the CLI) or a callable ``(fraction, text)`` (the apps' progress bars, issue 28)."""

from __future__ import annotations

from tqdm.auto import tqdm


class CallbackBar:
    """What the producers use of tqdm (iteration, ``set_postfix``), reported to ``fn(fraction, text)``."""

    def __init__(self, iterable, desc: str, fn, total: int | None = None):
        self.it, self.desc, self.fn = iterable, desc, fn
        self.total = total if total is not None else len(iterable)
        self.post = ""

    def __iter__(self):
        n = max(1, self.total)
        for i, x in enumerate(self.it):
            self.fn(i / n, f"{self.desc}: {i}/{n}{self.post}")
            yield x
        self.fn(1.0, f"{self.desc}: {n}/{n}{self.post}")

    def set_postfix(self, **kw) -> None:
        self.post = " · " + ", ".join(f"{k} {v}" for k, v in kw.items())


def bar(iterable, *, desc: str, progress, total: int | None = None):
    """A tqdm bar (``progress`` a bool) or a :class:`CallbackBar` (``progress`` callable)."""
    if callable(progress):
        return CallbackBar(iterable, desc, progress, total)
    return tqdm(iterable, desc=desc, disable=not progress, total=total)


def step_callback(progress, desc: str, then=None):
    """A sampling ``callback(done, total)`` that reports to ``progress`` when callable (and calls ``then``)."""
    def cb(done: int, total: int) -> None:
        if then is not None:
            then(done, total)
        if callable(progress):
            progress(done / max(1, total), f"{desc}: step {done}/{total}")
    return cb
