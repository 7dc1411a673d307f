"""Research harness: offline TFDS input, reference models, a jitted train loop, JSONL results."""
