"""The weights resolver: tags → packaged file / torch hub cache / explicit path, official-format
key conversion, 2D→3D inflation, user checkpoints as --weights, fetch/import, and the one-line
errors (offline, another architecture, pickles).

Nothing is downloaded: official-format files are written into a temporary ``TORCH_HOME`` from
freshly built (randomly initialised) torchvision / pytorchvideo models, under the exact file
name of the tag's URL.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import video as tvv

from pipeline import progress
from pipeline.errors import UserError
from pipeline.models.checkpoint import Checkpoint
from pipeline.models.classifier import build_model
from pipeline.models.registry import get_spec, list_specs
from pipeline.models.weights import cache_path, fetch, import_file, local_path

torch.set_num_threads(2)

R3D_URL = "https://download.pytorch.org/models/r3d_18-b3b3357e.pth"
RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
_IG65M = "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0/r2plus1d_34_clip"
IG65M = {"ig65m": f"{_IG65M}8_ig65m_from_scratch-9bae36ae.pth",
         "ig65m_clip32": f"{_IG65M}32_ig65m_from_scratch-449a7af9.pth",
         "kinetics400": f"{_IG65M}8_ft_kinetics_from_ig65m-0aa0550b.pth",
         "kinetics400_clip32": f"{_IG65M}32_ft_kinetics_from_ig65m-ade133f1.pth"}


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache (``$TORCH_HOME/hub/checkpoints``) and status lines switched on."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(progress, "_QUIET", False)
    monkeypatch.delenv("RANK", raising=False)
    d = tmp_path / "torch" / "hub" / "checkpoints"
    d.mkdir(parents=True)
    return d


def _fresh(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(123)
    if name in ("resnet18", "resnet50"):
        return getattr(torchvision.models, name)(weights=None, **kwargs)
    if name in ("r3d_18", "mc3_18", "r2plus1d_18"):
        return getattr(tvv, name)(weights=None, **kwargs)
    from pytorchvideo.models import hub as pv_hub

    return getattr(pv_hub, name)(pretrained=False, **kwargs)


def _meta_state(builder, **kwargs) -> dict[str, torch.Tensor]:
    """Official keys/shapes without the init cost (values: one per tensor)."""
    with torch.device("meta"):
        model = builder(weights=None, **kwargs)
    return {k: torch.tensor(i + 1, dtype=v.dtype).expand(v.shape)
            for i, (k, v) in enumerate(model.state_dict().items())}


# ----------------------------------------------------------------------------- tags, URLs, hashes


def test_hash_prefix_comes_from_the_torchvision_file_name() -> None:
    assert get_spec("resnet18").weights["imagenet1k"].hash_prefix == "f37072fd"
    assert get_spec("swin3d_b").weights["kinetics400"].hash_prefix == "24f7c7c6"
    assert get_spec("efficientnet_b0").weights["imagenet1k"].hash_prefix == "7f5810bc"
    assert get_spec("x3d_xs").weights["kinetics400"].hash_prefix is None  # pytorchvideo publishes none


def test_urls_are_the_upstream_ones() -> None:
    from pytorchvideo.models.hub import csn, r2plus1d, resnet, slowfast, x3d

    pv = {**x3d.checkpoint_paths, **resnet.checkpoint_paths, **slowfast.checkpoint_paths, **csn.checkpoint_paths,
          **r2plus1d.checkpoint_paths}
    for spec in list_specs():
        for tag in spec.weights.values():
            if tag.packaged is not None:
                continue
            if tag.loader is not None:  # inflation: the 2D resnet18 file
                assert tag.url == RESNET18_URL == torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
            elif tag.tag == "places365":  # the CSAIL release (CSAILVision/places365)
                assert tag.url == f"http://places2.csail.mit.edu/models_places365/{spec.name}_places365.pth.tar"
            elif spec.family == "vmz":  # moabitcoin/ig65m-pytorch's release
                assert tag.url == IG65M[tag.tag], tag.tag
            elif spec.family == "pytorchvideo":
                assert tag.url == pv[spec.name]
            else:
                enum = torchvision.models.get_model_weights(spec.name)
                assert tag.url == getattr(enum, tag.tag.upper() + "_V1").url, spec.name
    assert get_spec("r3d_18").weights["kinetics400"].url == R3D_URL


# ----------------------------------------------------------------------------- offline errors


def test_missing_tag_offline_is_one_clear_error(hub: Path) -> None:
    with pytest.raises(UserError) as e:
        build_model("r3d_18", 3, weights="kinetics400")
    assert str(e.value) == (
        "weights r3d_18:kinetics400 are not on this machine and vtl does not download during a run: run "
        f"`vtl weights fetch r3d_18:kinetics400` where there is internet, or download {R3D_URL} and copy it to "
        f"{hub / 'r3d_18-b3b3357e.pth'}")


def test_fetch_offline_prints_one_error_line(hub: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(SystemExit) as e:
        main(["weights", "fetch", "r3d_18:kinetics400"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: could not download {R3D_URL} (")
    assert f"copy it to {hub / 'r3d_18-b3b3357e.pth'}" in err
    assert "vtl weights import FILE --backbone r3d_18 --tag kinetics400" in err
    assert not list(hub.iterdir())


def test_fetch_checks_the_published_hash(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def download(url, dst, hash_prefix=None, progress=True):
        seen[url] = hash_prefix
        torch.save({"w": torch.zeros(1)}, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    assert fetch("r3d_18") == hub / "r3d_18-b3b3357e.pth"  # NAME alone: the first tag
    assert fetch("x3d_xs:kinetics400") == hub / "X3D_XS.pyth"
    assert seen == {R3D_URL: "b3b3357e", get_spec("x3d_xs").weights["kinetics400"].url: None}
    # A file already in the cache is verified too: this one is not the published file.
    with pytest.raises(UserError, match=r"does not match the published sha256 of r3d_18:kinetics400 .*b3b3357e"):
        fetch("r3d_18:kinetics400")


def test_fetch_rejects_a_download_with_the_wrong_hash(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def download(url, dst, hash_prefix=None, progress=True):
        raise RuntimeError(f'invalid hash value (expected "{hash_prefix}", got "0000")')

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    with pytest.raises(UserError, match="does not match its published sha256 prefix b3b3357e; nothing was saved"):
        fetch("r3d_18:kinetics400")


# ----------------------------------------------------------------------------- official files load


@pytest.mark.parametrize(("name", "tag", "classifier"), [
    ("resnet18", "imagenet1k", "fc."),
    ("r3d_18", "kinetics400", "fc."),
    ("x3d_xs", "kinetics400", "blocks.5.proj."),
])
def test_official_file_loads_into_the_backbone(hub: Path, name: str, tag: str, classifier: str) -> None:
    official = _fresh(name).state_dict()
    spec = get_spec(name)
    wrapped = {"model_state": official, "epoch": 200} if spec.family == "pytorchvideo" else official
    torch.save(wrapped, hub / spec.weights[tag].filename)
    assert local_path(spec.weights[tag]) == hub / spec.weights[tag].filename

    model, _ = build_model(name, 7, weights=tag)
    ours = (model.backbone.net if spec.kind == "frame" else model.backbone).state_dict()
    expected = {"net." + k: v for k, v in official.items() if not k.startswith(classifier)}
    assert set(ours) == set(expected)
    for k, v in expected.items():
        assert torch.equal(ours[k], v), k
    assert model.head[-1].out_features == 7


@pytest.mark.parametrize("arch", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_imagenet1k_inflates_the_resnet18_file(hub: Path, arch: str, capsys: pytest.CaptureFixture[str]) -> None:
    resnet = _fresh("resnet18").state_dict()
    torch.save(resnet, hub / "resnet18-f37072fd.pth")
    model, spec = build_model(arch, 3, weights="imagenet1k")
    assert spec.weights["imagenet1k"].url == RESNET18_URL
    net = model.backbone.net
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("weights: inflated 2D ImageNet resnet18 into TorchvisionVideoResNet")
    ds = net.layer2[0].downsample  # 1x1x1 conv + BN: inflated in all three architectures
    assert torch.equal(ds[0].weight, resnet["layer2.0.downsample.0.weight"].unsqueeze(2))
    assert torch.equal(ds[1].running_var, resnet["layer2.0.downsample.1.running_var"])
    if arch == "r2plus1d_18":  # factorised convs have no 2D counterpart: reported, kept random
        assert "stem.0.weight" in err[0] and "layer1.0.conv1.0.0.weight" in err[0]
    else:
        stem = resnet["conv1.weight"].unsqueeze(2).repeat(1, 1, 3, 1, 1) / 3
        assert torch.allclose(net.stem[0].weight, stem)
        assert torch.equal(net.layer1[0].conv1[1].weight, resnet["layer1.0.bn1.weight"])
        assert "(random init, 0): -" in err[0]


def test_inflation_refuses_a_bottleneck_resnet(hub: Path) -> None:
    torch.save(_meta_state(torchvision.models.resnet50), hub / "resnet18-f37072fd.pth")
    with pytest.raises(UserError, match=r"does not fit backbone r3d_18: inflation needs a BasicBlock ResNet"):
        build_model("r3d_18", 3, weights="imagenet1k")


def test_source_class_count_does_not_matter(tmp_path: Path, hub: Path) -> None:
    """A torchvision r3d_18 fine-tuned on 10 classes is a valid --weights PATH: its fc is dropped."""
    path = tmp_path / "mine.pth"
    state = _meta_state(tvv.r3d_18, num_classes=10)
    torch.save(state, path)
    model, _ = build_model("r3d_18", 4, weights=str(path))
    assert torch.equal(model.backbone.net.layer4[1].conv2[0].weight, state["layer4.1.conv2.0.weight"])


def test_official_file_named_like_a_tag_uses_that_tag(tmp_path: Path, hub: Path) -> None:
    """--weights ~/Downloads/resnet18-f37072fd.pth on r3d_18 is the imagenet1k file: it is inflated."""
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(_fresh("resnet18").state_dict(), path)
    model, _ = build_model("r3d_18", 3, weights=str(path))
    assert model.backbone.net.stem[0].weight.shape == (64, 3, 3, 7, 7)


# ----------------------------------------------------------------------------- wrong files: one clear error


def test_another_architecture_is_a_clear_error(tmp_path: Path, hub: Path) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save(_meta_state(torchvision.models.resnet50), path)
    with pytest.raises(UserError) as e:
        build_model("resnet18", 3, weights=str(path))
    msg = str(e.value)
    assert msg.startswith(f"{path} does not fit backbone resnet18: ")
    assert ("tensors of another shape (e.g. net.layer1.0.conv1.weight: file (64, 64, 1, 1) vs model "
            "(64, 64, 3, 3))") in msg
    assert "unexpected keys" in msg and "another architecture" in msg and "\n" not in msg

    path = tmp_path / "r3d.pth"  # same key names, other kernel shapes
    torch.save(_meta_state(tvv.r3d_18), path)
    with pytest.raises(UserError, match=r"does not fit backbone mc3_18: \d+ tensors of another shape"):
        build_model("mc3_18", 3, weights=str(path))


@pytest.mark.parametrize(("payload", "fragment"), [
    ([1, 2, 3], "is not a state dict (it holds a list)"),
    ({"epoch": 3, "note": "hi"}, "holds no tensors: not a weights file"),
    ({"model": nn.Linear(2, 2)}, "refusing to load"),  # a pickled module: never executed
])
def test_unusable_files(tmp_path: Path, payload, fragment: str) -> None:
    path = tmp_path / "w.pth"
    torch.save(payload, path)
    with pytest.raises(UserError) as e:
        build_model("resnet18", 3, weights=str(path))
    assert fragment in str(e.value)


def test_unknown_tag_or_path(hub: Path) -> None:
    with pytest.raises(UserError, match=r"neither a tag of resnet18 \(none, imagenet1k, places365\) nor an existing"):
        build_model("resnet18", 3, weights="kinetics400")


# ----------------------------------------------------------------------------- a user's own checkpoint


def _save_run(path: Path, backbone: str, num_classes: int, temporal: str = "avg") -> dict:
    torch.manual_seed(5)
    model, _ = build_model(backbone, num_classes, temporal=temporal)
    state = model.state_dict()
    Checkpoint(backbone=backbone, classes=[f"c{i}" for i in range(num_classes)], model=state,
               temporal=temporal).save(path)
    return state


@pytest.mark.parametrize("temporal", ["avg", "attention"])
def test_a_vtl_train_checkpoint_is_valid_weights(tmp_path: Path, hub: Path, temporal: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Source run (6 classes) → target run (4 classes): the backbone carries over, the head does not."""
    path = tmp_path / "source" / "best.pt"
    source = _save_run(path, "resnet18", 6, temporal)
    model, _ = build_model("resnet18", 4, weights=str(path), temporal=temporal)
    target = model.state_dict()
    backbone_keys = [k for k in source if k.startswith("backbone.")]
    assert backbone_keys and all(torch.equal(target[k], source[k]) for k in backbone_keys)
    assert target["head.1.weight"].shape == (4, 512)
    # Another temporal head on the target: the frame network carries over, the head is reported.
    model, _ = build_model("resnet18", 4, weights=str(path), temporal="conv")
    assert torch.equal(model.backbone.net.net.conv1.weight, source["backbone.net.net.conv1.weight"])
    assert "not carried over" in capsys.readouterr().err


def test_a_checkpoint_of_another_backbone_is_refused(tmp_path: Path, hub: Path) -> None:
    path = tmp_path / "best.pt"
    _save_run(path, "resnet18", 3)
    with pytest.raises(UserError, match=r"was trained with backbone 'resnet18', not 'mobilenet_v3_large': "
                                        r"use --backbone resnet18"):
        build_model("mobilenet_v3_large", 3, weights=str(path))


# ----------------------------------------------------------------------------- import, catalogue commands


def test_import_checks_and_copies(tmp_path: Path, hub: Path) -> None:
    src = tmp_path / "X3D_XS-download.pyth"
    official = _fresh("x3d_xs").state_dict()
    torch.save({"model_state": official}, src)
    dest = import_file(src, "x3d_xs", "kinetics400")
    assert dest == hub / "X3D_XS.pyth" == cache_path(get_spec("x3d_xs").weights["kinetics400"])
    model, _ = build_model("x3d_xs", 2, weights="kinetics400")
    assert torch.equal(model.backbone.net.blocks[1].res_blocks[0].branch2.conv_b.weight,
                       official["blocks.1.res_blocks.0.branch2.conv_b.weight"])

    wrong = tmp_path / "slow.pyth"  # another architecture: refused before anything is copied
    with torch.device("meta"):
        from pytorchvideo.models.hub import slow_r50

        slow = slow_r50(pretrained=False).state_dict()
    torch.save({"model_state": {k: torch.zeros(()).expand(v.shape) for k, v in slow.items()}}, wrong)
    with pytest.raises(UserError, match=r"slow.pyth does not fit backbone x3d_s: "):
        import_file(wrong, "x3d_s", "kinetics400")
    assert not (hub / "X3D_S.pyth").exists()

    fake = tmp_path / "r3d_18-b3b3357e.pth"  # right keys, but not the published file
    torch.save(_meta_state(tvv.r3d_18), fake)
    with pytest.raises(UserError, match="does not match the published sha256 of r3d_18:kinetics400"):
        import_file(fake, "r3d_18", "kinetics400")
    with pytest.raises(UserError, match="ships in a package"):
        import_file(src, "efficientnet_lite0", "imagenet1k")


def test_backbones_and_weights_list_commands(hub: Path) -> None:
    from conftest import invoke_vtl

    torch.save({"w": torch.zeros(1)}, hub / "resnet18-f37072fd.pth")
    out = invoke_vtl("backbones", "--kind", "image").output
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if "any model by name" not in line}
    assert set(rows) == {s.name for s in list_specs("frame")}
    assert rows["resnet18"].split()[1:5] == ["frame", "512", "8", "224"]
    assert rows["resnet18"].endswith("imagenet1k*, places365")
    assert rows["efficientnet_lite0"].endswith("imagenet1k*")  # packaged
    assert rows["vgg16_bn"].endswith("imagenet1k")
    video = invoke_vtl("backbones", "--kind", "video").output
    assert "r3d_18" in video and "kinetics400, imagenet1k*" in video  # the resnet18 file inflates
    assert "resnet18" not in video.replace("r3d_18", "")
    listing = invoke_vtl("weights", "list").output
    assert f"r3d_18:kinetics400\tkinetics400\tmissing (expected at {hub / 'r3d_18-b3b3357e.pth'})" in listing
    assert f"resnet18:imagenet1k\timagenet1k\t{hub / 'resnet18-f37072fd.pth'}" in listing
