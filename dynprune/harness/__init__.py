"""Research harness: offline TFDS input, reference models, a jitted train loop, JSONL results,
and the experiment layer (run configurations as data, one run function, sweeps)."""
