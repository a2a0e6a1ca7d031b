"""THE sampling loop (:class:`blockmask.sampling.sample.SamplingRun`): conditioning, noise, one mask row
per model call, ``scheduler.step``; prompts for text models; devices and processes."""
