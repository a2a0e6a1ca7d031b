"""Everything that touches a live model: finding units and measuring their order and consumer graph
(``blockmask_measure`` hooks), MACs, masked execution as diffusers ``HookRegistry`` hooks, the step
source, ``enable``/``apply``, compiled row graphs."""
