"""The paper-style comparison table, as text, from ``final.json`` data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KINDS = (("concatenated", "concat"), ("separated", "sep"))
METRICS = (("map_at_r", "MAP@R"), ("r_precision", "RP"), ("precision_at_1", "P@1"))


def _cell(summary: Mapping[str, Any]) -> str:
    low, high = summary["ci95"]
    return f"{100 * summary['mean']:6.2f} ±{100 * (high - low) / 2:5.2f}"


def _row(name: str, val: str, test: Mapping[str, Any]) -> list[str]:
    return [name, val] + [_cell(test[kind][m]) for kind, _ in KINDS for m, _ in METRICS]


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Per loss: best mean val MAP@R of the search, then test MAP@R, R-Precision and P@1 (%,
    mean ± half the 95% interval over reruns), concatenated and separated, with the untrained
    network first as the baseline. Rescored results are marked with ``*``."""
    header = ["loss", "val MAP@R"] + [
        f"{short} {label}" for _, short in KINDS for _, label in METRICS
    ]
    rows = []
    first = next(iter(results.values()), None)
    if first is not None and "untrained" in first:
        rows.append(_row("(untrained)", "-", first["untrained"]))
    for loss, entry in results.items():
        name = loss + ("*" if entry.get("rescored") else "")
        rows.append(_row(name, f"{entry['val_map_at_r']:.4f}", entry["test"]))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    notes = (
        [f"test metrics in %, mean ± half of the 95% interval over {first['runs']} reruns"]
        if first
        else []
    )
    if any(e.get("rescored") for e in results.values()):
        notes.append("* test set scored more than once (--rescore)")
    return "\n".join(lines + notes)
