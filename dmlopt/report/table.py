"""The paper-style comparison table, as text, from ``final.json`` data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KINDS = (("concatenated", "concat"), ("separated", "sep"))
METRICS = (("map_at_r", "MAP@R"), ("r_precision", "RP"), ("precision_at_1", "P@1"))
METRIC_NAMES = {"map_at_r": "MAP@R", "r_precision": "R-Precision", "precision_at_1": "P@1"}


def has_interval(summary: Mapping[str, Any]) -> bool:
    """One rerun has no spread: its interval is not zero, it does not exist."""
    return len(summary.get("values", [])) > 1


def _cell(summary: Mapping[str, Any]) -> str:
    low, high = summary["ci95"]
    spread = f"±{100 * (high - low) / 2:5.2f}" if has_interval(summary) else "  n/a "
    return f"{100 * summary['mean']:6.2f} {spread}"


def _val(entry: Mapping[str, Any]) -> str:
    std = entry.get("val_map_at_r_std")
    return f"{entry['val_map_at_r']:.4f}" + ("" if std is None else f" ±{std:.4f}")


def _row(name: str, val: str, test: Mapping[str, Any]) -> list[str]:
    return [name, val] + [_cell(test[kind][m]) for kind, _ in KINDS for m, _ in METRICS]


def _line(cells: list[str], widths: list[int]) -> str:
    """The first column left-aligned, the numbers right-aligned."""
    (name, width), *numbers = zip(cells, widths, strict=True)
    return "  ".join([name.ljust(width), *(c.rjust(w) for c, w in numbers)])


def _marks(entry: Mapping[str, Any]) -> str:
    return (
        ("*" if entry.get("rescored") else "")
        + ("R" if entry.get("reproduction_of") else "")
        + ("†" if entry.get("diverged") else "")
    )


def _notes(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per mark used in the table, saying what it means for which loss."""
    notes = []
    if any(e.get("rescored") for e in results.values()):
        notes.append("* test set scored more than once (--rescore)")
    for loss, entry in results.items():
        origin = entry.get("reproduction_of")
        if origin:
            notes.append(
                f"R {loss}: a reproduction of {origin['study']} trial {origin['trial']} from "
                "an exported config, not that study's scoring of record"
            )
    for loss, entry in results.items():
        diverged = entry.get("diverged")
        if diverged:
            folds = len(entry.get("seeds", [[]])[0]) * entry["runs"]
            notes.append(
                f"† {loss}: {len(diverged)} of {folds} fold trainings diverged; each kept its "
                "best finite checkpoint (its initial weights if none) and was scored with it"
            )
    return notes


def _one_table(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    first = next(iter(results.values()))
    header = ["loss", "val MAP@R"] + [f"{s} {label}" for _, s in KINDS for _, label in METRICS]
    rows = [_row("(untrained)", "-", first["untrained"])] if "untrained" in first else []
    for loss, entry in results.items():
        rows.append(_row(loss + _marks(entry), _val(entry), entry["test"]))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [_line(row, widths) for row in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"test metrics in %, mean ± half of the 95% interval over {first['runs']} reruns")
    return lines + _notes(results)


def split_groups(
    results: Mapping[str, Mapping[str, Any]],
) -> dict[str | None, dict[str, Mapping[str, Any]]]:
    """Results by test-split fingerprint (``None`` for scorings that predate fingerprints):
    scores on different data never share a table."""
    groups: dict[str | None, dict[str, Mapping[str, Any]]] = {}
    for loss, entry in results.items():
        fingerprint = (entry.get("fingerprints") or {}).get("test")
        groups.setdefault(fingerprint, {})[loss] = entry
    return groups


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Per loss: best mean val MAP@R of the search (± its std over folds), then test MAP@R,
    R-Precision and P@1 (%, mean ± half the 95% interval over reruns), concatenated and
    separated, after the untrained network as the baseline. Rescores are marked ``*``,
    reproductions ``R`` and losses with diverged fold trainings ``†``; scorings on different
    test data (fingerprints) get separate tables."""
    if not results:
        return "no test scores recorded"
    groups = split_groups(results)
    tables = []
    for fingerprint, group in groups.items():
        lines = _one_table(group)
        if len(groups) > 1:
            lines.insert(0, f"scored on test split {fingerprint or '(not recorded)'}:")
        elif fingerprint is not None:
            lines.append(f"test split fingerprint {fingerprint}")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)
