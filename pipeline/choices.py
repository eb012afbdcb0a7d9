"""The names users choose from in options (strategies, temporal poolings, augmentations), in one
module light enough for the command line to import without torch: a ``--help`` stays instant and
the decoding workers that ``prepare``/``sample`` spawn never load torch."""

# Transfer strategies (pipeline.transfer.strategies): how a pretrained backbone is adapted.
STRATEGIES = ("scratch", "linear", "partial", "finetune", "gradual")
# Strategies that train a pretrained backbone, so they may start from a head fitted on frozen features.
BACKBONE_TRAINING = ("partial", "finetune", "gradual")

# How a frame backbone pools its per-frame features over time (pipeline.models.temporal).
TEMPORAL_POOLINGS = ("avg", "max", "conv", "attention")
# Poolings with parameters of their own: they train, so their output cannot be cached as frozen features.
LEARNABLE_POOLINGS = ("conv", "attention")

# Training augmentation presets (pipeline.data.transforms).
AUGMENTATIONS = ("standard", "crop", "none")

# The strategy that trains from random initialisation: the baseline every transfer is compared with.
SCRATCH = STRATEGIES[0]

# Formats of `vtl export` (pipeline.stages.export); the first is the default.
EXPORT_FORMATS = ("torchscript", "onnx")

# Imbalanced classes (pipeline.data.balance): loss weights, and how a training epoch draws its examples.
CLASS_WEIGHTS = ("none", "auto")
SAMPLERS = ("random", "balanced")
