"""Sluice's benchmark suite: real stacks on loopback, measured against llama-cpp-python's anchors."""
