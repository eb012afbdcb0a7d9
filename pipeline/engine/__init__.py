"""Training loop, evaluation and checkpoints (modelled on torchvision's references/video_classification)."""
