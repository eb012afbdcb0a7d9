"""Model construction: backbones, heads and weight conversion for video classifiers."""
