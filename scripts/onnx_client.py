"""Classify videos with a model from `vtl export --format onnx --uint8-input`, using only the .onnx
file and its metadata: decode with PyAV, sample, resize, run, read the labels (docs/serving.md).

    python onnx_client.py MODEL.onnx VIDEO...
"""
import json
import sys

import av
import numpy as np
import onnxruntime as ort
from PIL import Image


def load(model_path):
    session = ort.InferenceSession(model_path)
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["input"]["uint8"] and meta["sampling"]["sampling"] == "uniform", "export with --uint8-input"
    return session, meta


def decode(path, short_side):
    """Every frame as RGB uint8, the short side scaled to short_side (even sizes), as vtl decodes."""
    with av.open(str(path)) as container:
        frames = []
        for f in container.decode(video=0):
            s = short_side / min(f.height, f.width)
            h, w = max(2, round(f.height * s / 2) * 2), max(2, round(f.width * s / 2) * 2)
            frames.append(f.to_ndarray(format="rgb24", width=w, height=h))
    return np.stack(frames)


def views(num_frames, meta):
    """The frame indices of each test view: uniform (TSN) segments, one frame per segment."""
    t, v = meta["frames"], meta["sampling"]["test_views"]
    seg = num_frames / t
    return [np.minimum(np.floor(np.arange(t) * seg + seg * (k + 0.5) / v).astype(int), num_frames - 1)
            for k in range(v)]


def crop(clip, size):
    """Short side to size (bilinear), then the centre size x size crop: uint8 (T, size, size, 3)."""
    h, w = clip.shape[1:3]
    if min(h, w) != size:
        h, w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
        clip = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in clip])
    top, left = int(round((h - size) / 2)), int(round((w - size) / 2))
    return clip[:, top:top + size, left:left + size]


def classify(session, meta, clips):
    """Class probabilities of one video from its views, uint8 (V, T, H, W, 3): softmax, averaged."""
    logits = session.run(None, {meta["input"]["name"]: np.ascontiguousarray(clips)})[0]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).mean(axis=0)


def predict(session, meta, path):
    frames = decode(path, meta["resize"]["short_side"])
    clips = np.stack([crop(frames[idx], meta["input_size"]) for idx in views(len(frames), meta)])
    return classify(session, meta, clips)


if __name__ == "__main__":
    session, meta = load(sys.argv[1])
    for path in sys.argv[2:]:
        probs = predict(session, meta, path)
        best = int(probs.argmax())
        print(f"{path}\t{meta['classes'][best]}\t{probs[best]:.4f}")
