"""THE sampling loop (:class:`blockmask.sampling.sample.SamplingRun`): conditioning, noise, one mask row
per model call, ``scheduler.step``; schedulers by name, prompts, devices."""
