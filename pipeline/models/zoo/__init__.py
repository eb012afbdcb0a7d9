"""The built-in backbones, one module per family; importing this package registers them all
(in this order, which is the order of ``vtl backbones``):

* :mod:`.frame`: 2D ImageNet-1k networks run per frame (torchvision, and the packaged efficientnet_lite0);
* :mod:`.torchvision_video`: ``torchvision.models.video`` with Kinetics-400 weights;
* :mod:`.pytorchvideo_video`: ``pytorchvideo.models`` with the Kinetics-400 checkpoints of its model zoo;
* :mod:`.timm_frame`: ``timm:<model>.<tag>``, any timm model by name (weights from the Hugging Face cache);
* :mod:`.hf_video`: ``hf:<repo id>``, VideoMAE through transformers (weights from the Hugging Face cache).

The last two are families named by a prefix: a spec is made on first use of a name
(:func:`pipeline.models.registry.register_family`); timm and transformers are imported only then.

Each builder returns a :class:`~pipeline.models.registry.Backbone` without classifier;
:mod:`pipeline.models.classifier` adds the head for the target classes.
"""

from importlib import import_module

for _module in ("frame", "torchvision_video", "pytorchvideo_video", "timm_frame", "hf_video"):
    import_module(f"{__name__}.{_module}")
