"""Reports of a run: the terminal table, the JSON document, Markdown, and a PNG chart."""

from __future__ import annotations

import datetime
import math
import os
import platform
from importlib import metadata
from typing import Any

from .core import SYSTEMS
from .harness import CaseResult, Settings, SystemResult

SCHEMA_ID = "transfuse-bench/1"
VERSIONED = ("transfuse", "numpy", "numba", "scipy", "jax", "jaxlib", "torch", "matplotlib")
CELL_FOR_STATUS = {"absent": "absent", "unavailable": "n/a", "skipped": "skipped",
                   "error": "ERROR", "mismatch": "MISMATCH"}


# ---------------------------------------------------------------------------------------
# The JSON document (its schema is transfuse.bench.schema.SCHEMA)


def to_document(results: list[CaseResult], settings: Settings, command: list[str]
                ) -> dict[str, Any]:
    """The run as a JSON-able dict: machine, versions, settings and every case's numbers."""
    return {
        "schema": SCHEMA_ID,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": list(command),
        "machine": machine_info(),
        "versions": versions(),
        "settings": {"quick": settings.quick, "repeat": settings.repeat,
                     "warmup": settings.warmup, "baselines": sorted(settings.baselines)},
        "ok": not any(r.failed for r in results),
        "cases": [_case_document(r) for r in results],
    }


def _case_document(result: CaseResult) -> dict[str, Any]:
    case = result.case
    return {
        "suite": case.suite, "name": case.name, "description": case.description,
        "reference": result.reference, "reference_note": result.reference_note,
        "status": "failed" if result.failed else "ok",
        "systems": {name: _system_document(r) for name, r in result.systems.items()},
    }


def _system_document(result: SystemResult) -> dict[str, Any]:
    timing = result.timing
    return {
        "status": result.status, "reason": result.reason,
        "median_ms": timing.median_s * 1e3 if timing else None,
        "min_ms": timing.min_s * 1e3 if timing else None,
        "max_ms": timing.max_s * 1e3 if timing else None,
        "samples": timing.samples if timing else None,
        "calls_per_sample": timing.calls_per_sample if timing else None,
        "cpu_median_ms": timing.cpu_median_s * 1e3
        if timing and timing.cpu_median_s is not None else None,
        "ratio": _finite(result.ratio), "max_error": _finite(result.max_error),
        "first_call_ms": result.first_call_s * 1e3 if result.first_call_s is not None
        else None,
    }


def _finite(value: float | None) -> float | None:
    """JSON has no infinity or NaN: those become null."""
    return value if value is not None and math.isfinite(value) else None


def machine_info() -> dict[str, Any]:
    """What ran the benchmark."""
    return {"platform": platform.platform(), "machine": platform.machine(),
            "processor": _cpu_model(), "cpu_count": os.cpu_count() or 0,
            "python": platform.python_version()}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str | None]:
    """Installed versions of transfuse and the baselines' libraries (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# ---------------------------------------------------------------------------------------
# Tables


def format_seconds(seconds: float) -> str:
    """A duration with a unit that keeps three significant digits readable."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def _cell(name: str, result: SystemResult | None) -> str:
    if result is None:
        return "—"
    if result.timing is None:
        return CELL_FOR_STATUS.get(result.status, result.status)
    text = format_seconds(result.timing.median_s)
    if result.timing.cpu_median_s is not None:
        text += f", CPU {format_seconds(result.timing.cpu_median_s)}"
    if name != "transfuse" and result.ratio is not None:
        text += f" ({result.ratio:.2f}x)"
    return text


def columns(results: list[CaseResult]) -> list[str]:
    """Systems that appear in any case: the standard ones in order, then user-added ones."""
    seen = {name for r in results for name in r.systems}
    extra = sorted(seen - set(SYSTEMS))
    return [s for s in SYSTEMS if s in seen] + extra


def table_rows(results: list[CaseResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per case, each system's median and its ratio to transfuse."""
    cols = columns(results)
    header = ["case"] + cols + ["check"]
    rows = []
    for r in results:
        check = "FAILED" if r.failed else f"ok vs {r.reference}"
        rows.append([r.case.full_name] + [_cell(c, r.systems.get(c)) for c in cols] + [check])
    return header, rows


def notes(results: list[CaseResult]) -> list[str]:
    """Why cells are empty: each distinct reason once, with the systems and cases it hit."""
    seen: dict[str, list[str]] = {}
    for r in results:
        if r.reference_note:
            seen.setdefault(f"reference: {r.reference_note}", []).append(r.case.full_name)
        for name, s in r.systems.items():
            if s.reason and s.status in ("absent", "unavailable", "skipped"):
                seen.setdefault(f"{name} {s.status}: {s.reason}", []).append(r.case.full_name)
    return [f"{reason} [{_summarise(cases)}]" for reason, cases in seen.items()]


def _summarise(cases: list[str]) -> str:
    return ", ".join(cases) if len(cases) <= 3 else f"{len(cases)} cases"


def render_text(results: list[CaseResult]) -> str:
    """The terminal table with its notes."""
    header, rows = table_rows(results)
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("median per call; (Nx) = system time / transfuse time, above 1 means "
                 "transfuse is faster")
    lines += [f"note: {n}" for n in notes(results)]
    return "\n".join(lines)


def render_markdown(document: dict[str, Any], results: list[CaseResult]) -> str:
    """A Markdown section suitable for docs/performance.md."""
    machine, vers = document["machine"], document["versions"]
    installed = ", ".join(f"{k} {v}" for k, v in vers.items() if v)
    header, rows = table_rows(results)
    out = [
        "## Benchmark results", "",
        f"Generated by `{' '.join(document['command']) or 'transfuse bench'}` on "
        f"{document['created']}.", "",
        f"- machine: {machine['processor']}, {machine['cpu_count']} CPUs, "
        f"{machine['platform']}, Python {machine['python']}",
        f"- versions: {installed}",
        f"- settings: repeat {document['settings']['repeat']}, "
        f"{'quick (tiny shapes)' if document['settings']['quick'] else 'full shapes'}", "",
        "Median time per call; in parentheses the ratio to transfuse (above 1: transfuse "
        "is faster).", "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 2) + ["---"]) + "|",
    ]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    extra = notes(results)
    if extra:
        out += ["", "Notes:", ""] + [f"- {n}" for n in extra]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# The chart


class PlotError(RuntimeError):
    """--plot needs matplotlib."""


def write_plot(results: list[CaseResult], path: str) -> None:
    """A PNG bar chart of each baseline's ratio to transfuse (medians when no ratios yet)."""
    try:
        import matplotlib
    except ImportError:
        raise PlotError("--plot needs matplotlib: pip install matplotlib "
                        "(or pip install 'transfuse[bench]')") from None
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    use_ratios = any(s.ratio is not None for r in results for n, s in r.systems.items()
                     if n != "transfuse")
    systems = [c for c in columns(results) if not (use_ratios and c == "transfuse")
               and any(math.isfinite(_bar_value(r.systems.get(c), use_ratios))
                       for r in results)]
    names = [r.case.full_name for r in results]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 4.8))
    width = 0.8 / max(1, len(systems))
    for i, system in enumerate(systems):
        values = [_bar_value(r.systems.get(system), use_ratios) for r in results]
        xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, values, width, label=system)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    if use_ratios:
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel("time / transfuse time (above 1: transfuse faster)")
    else:
        ax.set_ylabel("median ms per call (transfuse ratios unavailable)")
    if systems:
        ax.legend(fontsize=8)
    ax.set_title("transfuse bench")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _bar_value(result: SystemResult | None, use_ratios: bool) -> float:
    if result is None or result.timing is None:
        return float("nan")
    if use_ratios:
        return result.ratio if result.ratio is not None else float("nan")
    return result.timing.median_s * 1e3
