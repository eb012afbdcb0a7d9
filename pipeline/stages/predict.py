"""``vtl predict``: classify files, folders and list files with a trained checkpoint, sampling each
input exactly as evaluation samples a test video (the checkpoint's sampling, every test view, softmax
averaged over the views); with ``--window``, every window of a long video, merged into segments.

Inputs are decoded in DataLoader worker processes while the model runs. An input that cannot be read
is a row with its error and the others go on; the caller decides what "nothing predicted" means.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.data.clips import load_views, probe_row, window_views
from pipeline.data.formats.base import IMAGE_EXTENSIONS, LIST_EXTENSIONS
from pipeline.data.formats.common import walk_media
from pipeline.data.formats.csvlist import read_paths
from pipeline.data.sampling import SamplingConfig
from pipeline.data.timeline import BACKGROUND, merge_segments, sliding_windows, smooth_labels
from pipeline.data.transforms import DeviceNormalize, build_transform
from pipeline.engine import distributed
from pipeline.engine.config import PredictConfig
from pipeline.errors import UserError
from pipeline.files import atomic_write, write_csv
from pipeline.models.classifier import load_classifier
from pipeline.progress import bar

COLUMNS = ("path", "top1", "top1_probability", "topk", "error")  # a row; --window adds WINDOW_COLUMNS
WINDOW_COLUMNS = ("start", "end")
SEGMENT_COLUMNS = ("path", "start", "end", "label", "score")


@dataclass
class PredictResult:
    rows: list[dict[str, Any]]  # one per input (one per window with --window)
    segments: list[dict[str, Any]] = field(default_factory=list)  # --window: merged, every input's
    files: list[Path] = field(default_factory=list)  # what was written

    @property
    def predicted(self) -> int:
        return sum(1 for r in self.rows if not r["error"])

    def failure(self) -> str:
        """The one-line reason when nothing could be predicted."""
        errors = [r["error"] for r in self.rows]
        if len(errors) == 1:
            return errors[0]
        return f"none of the {len(errors)} inputs could be predicted (first: {errors[0] if errors else 'no input'})"


# ----------------------------------------------------------------------------- inputs


def expand_inputs(inputs: Sequence[Path]) -> list[tuple[Path, str]]:
    """``(path, error)`` of every input: folders walked (videos, images, frame folders), list files read;
    ``error`` is empty unless the input is already known to be unusable."""
    items: list[tuple[Path, str]] = []
    for path in map(Path, inputs):
        if path.is_dir():
            found = [(p, "") for p in walk_media(path)]
            items += found or [(path, f"{path} holds no video, image or frame folder")]
        elif path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
            try:
                items += [(p, "") for p in read_paths(path)]
            except UserError as e:
                items.append((path, str(e)))
        elif not path.exists():
            items.append((path, f"{path} does not exist"))
        else:
            items.append((path, ""))
    return items


@dataclass
class _Item:
    path: Path
    error: str = ""
    clips: torch.Tensor | None = None  # uint8 (windows, views, C, T, H, W)
    windows: list[tuple[float, float]] = field(default_factory=list)  # [] without --window
    duration: float = 0.0


class _Inputs(Dataset):
    """One input per item, decoded and transformed (to uint8: the device normalises)."""

    def __init__(self, items: list[tuple[Path, str]], sampling: SamplingConfig,
                 transform: Callable, cfg: PredictConfig):
        self.items, self.sampling, self.transform, self.cfg = items, sampling, transform, cfg

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> _Item:
        path, error = self.items[i]
        if error:
            return _Item(path, error)
        try:
            item, clips = self._decode(path)
        except UserError as e:
            return _Item(path, str(e))
        except Exception as e:  # a decoder's surprise on one bad file must not end the batch
            return _Item(path, f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        item.clips = torch.stack([torch.stack([self.transform(v) for v in views]) for views in clips])
        return item

    def _decode(self, path: Path) -> tuple[_Item, Any]:
        if self.cfg.window is None:
            return _Item(path), load_views(path, self.sampling)[None]
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise UserError(f"{path} is an image: --window needs a video")
        row = probe_row(path)
        if not row["fps"] or row["fps"] <= 0:
            raise UserError(f"{path}: its frame rate is unknown, so it has no timeline for --window")
        duration = row["num_frames"] / row["fps"]
        windows = sliding_windows(duration, self.cfg.window, self.cfg.step)
        return _Item(path, windows=windows, duration=duration), window_views(row, self.sampling, windows)


def _itself(item: _Item) -> _Item:
    return item


# ----------------------------------------------------------------------------- scoring


class _Batcher:
    """Packs the clips of consecutive inputs into batches of ``batch_size``; each input's (or window's)
    probabilities are the softmax averaged over its views, as evaluation averages a video's."""

    def __init__(self, model: torch.nn.Module, normalize: DeviceNormalize, device: torch.device, batch_size: int):
        self.model, self.normalize, self.device, self.batch_size = model, normalize, device, batch_size
        self.pending: list[_Item] = []
        self.count = 0

    def add(self, item: _Item) -> list[tuple[_Item, torch.Tensor | None]]:
        self.pending.append(item)
        if item.clips is not None:
            self.count += item.clips.shape[0] * item.clips.shape[1]
        return self.flush() if self.count >= self.batch_size else []

    def flush(self) -> list[tuple[_Item, torch.Tensor | None]]:
        scored = [i.clips.flatten(0, 1) for i in self.pending if i.clips is not None]
        probs = torch.cat([self._softmax(chunk) for chunk in torch.cat(scored).split(self.batch_size)]) if scored \
            else None
        out, offset = [], 0
        for item in self.pending:
            if item.clips is None or probs is None:
                out.append((item, None))
                continue
            windows, views = item.clips.shape[:2]
            out.append((item, probs[offset:offset + windows * views].view(windows, views, -1).mean(1)))
            offset += windows * views
        self.pending, self.count = [], 0
        return out

    def _softmax(self, clips: torch.Tensor) -> torch.Tensor:
        logits = self.model(self.normalize(clips.to(self.device)))
        return torch.softmax(logits.float(), dim=1).cpu()


def _top(probs: torch.Tensor, classes: list[str], k: int) -> list[dict[str, Any]]:
    top = torch.topk(probs, min(k, len(classes)))
    return [{"class": classes[int(i)], "probability": round(float(p), 6)}
            for p, i in zip(top.values, top.indices, strict=True)]


def _rows(item: _Item, probs: torch.Tensor | None, classes: list[str], topk: int) -> list[dict[str, Any]]:
    if probs is None:
        return [{"path": str(item.path), "top1": "", "top1_probability": "", "topk": [], "error": item.error}]
    rows = []
    for k, p in enumerate(probs):
        top = _top(p, classes, topk)
        row = {"path": str(item.path), "top1": top[0]["class"], "top1_probability": top[0]["probability"],
               "topk": top, "error": ""}
        if item.windows:
            row["start"], row["end"] = (round(t, 3) for t in item.windows[k])
        rows.append(row)
    return rows


def _segments(item: _Item, probs: torch.Tensor, classes: list[str], cfg: PredictConfig) -> list[dict[str, Any]]:
    best, index = probs.max(dim=1)
    labels = [classes[int(i)] if float(p) >= cfg.min_score else BACKGROUND for p, i in zip(best, index, strict=True)]
    merged = merge_segments(item.windows, smooth_labels(labels, cfg.smooth), best.tolist(), item.duration)
    return [{"path": str(item.path), **s} for s in merged]


@torch.inference_mode()
def run_predict(checkpoint: Path, inputs: Sequence[Path], topk: int = 5, cfg: PredictConfig | None = None,
                **options: Any) -> PredictResult:
    """Rows (and, with ``--window``, segments) for every input; writes ``cfg.output`` when set."""
    cfg = cfg or PredictConfig(**options)
    device = distributed.device(distributed.DistInfo(requested=cfg.device))  # --device cuda without one: error
    model, ckpt = load_classifier(checkpoint)
    model.eval().to(device)
    mean, std = ckpt.normalization
    sampling = SamplingConfig(**ckpt.config["sampling_params"])
    transform = build_transform(ckpt.config["input_size"], mean, std, train=False, normalize=False)
    items = expand_inputs(inputs)
    loader = DataLoader(_Inputs(items, sampling, transform, cfg), batch_size=None, collate_fn=_itself,
                        num_workers=min(cfg.workers, len(items)))
    batcher = _Batcher(model, DeviceNormalize(mean, std), device, cfg.batch_size)
    result = PredictResult(rows=[])
    tracks: list[tuple[str, list[dict], float]] = []

    def collect(scored: list[tuple[_Item, torch.Tensor | None]]) -> None:
        for done, probs in scored:
            result.rows.extend(_rows(done, probs, ckpt.classes, topk))
            if done.windows and probs is not None:
                segments = _segments(done, probs, ckpt.classes, cfg)
                result.segments.extend(segments)
                tracks.append((str(done.path), segments, done.duration))

    for item in bar(loader, total=len(items), desc="predict", unit="input"):
        collect(batcher.add(item))
    collect(batcher.flush())
    if cfg.output is not None:
        result.files = write_outputs(Path(cfg.output), result, windows=cfg.window is not None, tracks=tracks)
    return result


# ----------------------------------------------------------------------------- output files


def json_record(row: dict[str, Any]) -> dict[str, Any]:
    """A row as a JSON object: the columns, plus ``input`` and ``top`` (the names `vtl predict --json`
    printed before the columns existed, kept for the scripts that read them)."""
    return {**row, "input": row["path"], "top": row["topk"]}


def segments_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.segments{output.suffix}")


def timeline_png(output: Path) -> Path:
    return output.with_suffix(".png")


def write_outputs(output: Path, result: PredictResult, *, windows: bool,
                  tracks: list[tuple[str, list[dict], float]]) -> list[Path]:
    columns = COLUMNS[:1] + WINDOW_COLUMNS + COLUMNS[1:] if windows else COLUMNS
    _write_table(output, columns, result.rows)
    if not windows:
        return [output]
    from pipeline.report.plots import plot_timeline

    _write_table(segments_path(output), SEGMENT_COLUMNS, result.segments)
    plot_timeline(tracks, timeline_png(output))
    return [output, segments_path(output), timeline_png(output)]


def _write_table(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    if path.suffix.lower() == ".jsonl":
        with atomic_write(path) as f:
            for row in rows:
                f.write(json.dumps(json_record(row) if "topk" in row else row) + "\n")
        return
    flat = [{**row, "topk": json.dumps(row["topk"])} if "topk" in row else row for row in rows]
    write_csv(path, columns, flat)
