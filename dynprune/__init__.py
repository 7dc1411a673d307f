"""dynprune: dynamic pruning of neural networks in JAX/Flax."""
