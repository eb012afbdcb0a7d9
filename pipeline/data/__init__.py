"""Data: dataset formats, decoders, samplers, caches, datasets and transforms."""
