"""Everything that touches a live model: diffusers ``HookRegistry`` hooks for masked execution and for
measurement, the step source, ``enable``/``apply``, compiled row graphs."""
