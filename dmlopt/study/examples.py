"""Retrieval examples for the report: a few test queries and their nearest neighbours, as small
thumbnails, the way people inspect a metric learning model.

Made in the final stage from embeddings it computes anyway (the first rerun's fold models,
concatenated), so the report never opens the test set itself. Only for image datasets.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from dmlopt.data.base import Samples

QUERIES = 4
NEIGHBOURS = 5
THUMBNAIL = 64  # pixels, the longer side


def thumbnail(image: np.ndarray) -> str:
    """A ``(C, H, W)`` array (normalised any way) as a PNG or JPEG data URI, contrast
    stretched."""
    from PIL import Image

    low, high = float(image.min()), float(image.max())
    scaled = np.zeros_like(image) if high <= low else (image - low) / (high - low)
    pixels = (255 * scaled).astype(np.uint8)
    picture = (
        Image.fromarray(pixels[0], mode="L")
        if pixels.shape[0] == 1
        else Image.fromarray(np.ascontiguousarray(pixels[:3].transpose(1, 2, 0)), mode="RGB")
    )
    picture.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    # colour photographs compress far better as JPEG; small gray images stay exact as PNG
    kind = "jpeg" if picture.mode == "RGB" else "png"
    picture.save(buffer, format=kind.upper(), quality=80, optimize=True)
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode()


def retrieval_examples(
    per_fold: Sequence[np.ndarray], test: Samples, *, queries: int = QUERIES,
    neighbours: int = NEIGHBOURS,
) -> dict[str, Any] | None:  # fmt: skip
    """``{"k", "queries": [{"index", "label", "image", "neighbours": [{"index", "label",
    "correct", "image"}]}]}`` (indices into the test split, labels as class names), or None
    when the samples are not images or the embeddings are not finite."""
    dataset = test.dataset
    if len(dataset.input_shape) != 3 or len(test) < 2:
        return None
    joined = np.concatenate(
        [e / np.linalg.norm(e, axis=1, keepdims=True).clip(min=1e-12) for e in per_fold], axis=1
    )
    if not np.isfinite(joined).all():
        return None
    joined /= np.linalg.norm(joined, axis=1, keepdims=True).clip(min=1e-12)
    labels = test.labels
    classes = np.unique(labels)
    # the first sample of classes spread evenly over the test classes: fixed, not cherry-picked
    picked = classes[np.linspace(0, len(classes) - 1, min(queries, len(classes))).astype(int)]
    k = min(neighbours, len(test) - 1)

    def item(i: int) -> dict[str, Any]:
        original = int(test.indices[i])
        return {
            "index": i,
            "label": dataset.class_names[int(dataset.labels[original])],
            "image": thumbnail(dataset.read(original, train=False).numpy()),
        }

    shown = []
    for c in picked:
        q = int(np.flatnonzero(labels == c)[0])
        similarity = joined @ joined[q]
        similarity[q] = -np.inf  # a query is not its own neighbour
        nearest = np.argsort(-similarity, kind="stable")[:k]
        shown.append(
            {**item(q),
             "neighbours": [{**item(int(n)), "correct": bool(labels[n] == labels[q])}
                            for n in nearest]}
        )  # fmt: skip
    return {"k": k, "queries": shown}
