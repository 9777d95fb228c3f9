"""Tables, JSON, the latency plot and the regression check. Everything but the plot is pure.

A run's summary is a flat dict of named figures in seconds ("ours.v2v.median", ...); the
committed `bench/baseline.json` holds the same names, and any *median* more than
`REGRESSION_TOLERANCE` worse than its baseline is reported as a regression.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.timeline import STAGES, BargeIn, TurnTiming

REGRESSION_TOLERANCE = 0.20
# The headline figures the regression check watches. Stage medians are tens of
# milliseconds, where 20 % is noise; p90s of ten turns are one turn.
TRACKED_SUFFIXES: tuple[str, ...] = (".v2v.median", ".barge_in_stop.median", ".startup.median")


# ----------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between closest ranks, as
    numpy's default; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0-100")
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Iterable[float]) -> float | None:
    return percentile(values, 50)


def p90(values: Iterable[float]) -> float | None:
    return percentile(values, 90)


def _present(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def summarize_system(
    name: str,
    turns: Sequence[TurnTiming],
    barge_ins: Sequence[BargeIn] = (),
    startup: float | None = None,
) -> dict[str, float | None]:
    """The named figures for one system: v2v median/p90, per-stage medians, barge-in."""
    v2v = _present(t.voice_to_voice for t in turns)
    out: dict[str, float | None] = {
        f"{name}.v2v.median": median(v2v),
        f"{name}.v2v.p90": p90(v2v),
    }
    for stage in STAGES:
        out[f"{name}.stage.{stage}.median"] = median(_present(t.stages.get(stage) for t in turns))
    stops = _present(b.stop_latency for b in barge_ins)
    if barge_ins:
        out[f"{name}.barge_in_stop.median"] = median(stops)
    if startup is not None:
        out[f"{name}.startup.median"] = startup
    return out


# ----------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------


def fmt_secs(value: float | None) -> str:
    """Seconds as "1.234", or "-" when not measured."""
    return "-" if value is None else f"{value:.3f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (readable as plain text too), columns padded to their widest cell."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def turns_table(turns: Sequence[TurnTiming]) -> str:
    """Per-turn voice-to-voice and its stages, with what the STT heard."""
    headers = ["#", "v2v s", *STAGES, "heard"]
    rows = []
    for i, t in enumerate(turns, 1):
        heard = t.error or t.transcript
        if t.early_response:
            heard = "[bot spoke early] " + heard
        stages = [fmt_secs(t.stages.get(s)) for s in STAGES]
        rows.append([str(i), fmt_secs(t.voice_to_voice), *stages, _clip(heard, 44)])
    return table(headers, rows)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def comparison_table(
    reference: Sequence[TurnTiming] | None, ours: Sequence[TurnTiming] | None
) -> str:
    """Per-question voice-to-voice side by side, then median, p90 and ours/reference."""
    ref = list(reference or [])
    our = list(ours or [])
    rows = []
    for i in range(max(len(ref), len(our))):
        r = ref[i] if i < len(ref) else None
        o = our[i] if i < len(our) else None
        question = (r or o).question if (r or o) else ""  # type: ignore[union-attr]
        rows.append(
            [
                _clip(question, 44),
                fmt_secs(r.voice_to_voice if r else None),
                fmt_secs(o.voice_to_voice if o else None),
            ]
        )
    ref_v = _present(t.voice_to_voice for t in ref)
    our_v = _present(t.voice_to_voice for t in our)
    for label, stat in (("median", median), ("p90", p90)):
        rows.append([f"**{label}**", fmt_secs(stat(ref_v)), fmt_secs(stat(our_v))])
    ratio = ratio_text(median(our_v), median(ref_v))
    rows.append(["**ours / reference (median)**", "", ratio])
    return table(["question", "reference v2v s", "ours v2v s"], rows)


def ratio_text(ours: float | None, reference: float | None) -> str:
    if ours is None or reference is None or reference <= 0 or ours <= 0:
        return "-"
    if ours <= reference:
        return f"{ours / reference:.2f} ({reference / ours:.1f}x faster)"
    return f"{ours / reference:.2f} ({ours / reference:.1f}x slower)"


def stage_table(summary: Mapping[str, float | None], systems: Sequence[str]) -> str:
    """Median of each stage, one column per system."""
    rows = [
        [stage, *(fmt_secs(summary.get(f"{s}.stage.{stage}.median")) for s in systems)]
        for stage in STAGES
    ]
    rows.append(["**v2v (median)**", *(fmt_secs(summary.get(f"{s}.v2v.median")) for s in systems)])
    return table(["stage (median s)", *systems], rows)


# ----------------------------------------------------------------------------------------
# Regression check
# ----------------------------------------------------------------------------------------


def regressions(
    current: Mapping[str, float | None],
    baseline: Mapping[str, float | None],
    tolerance: float = REGRESSION_TOLERANCE,
    tracked: Sequence[str] = TRACKED_SUFFIXES,
    *,
    same_machine: bool = True,
) -> list[str]:
    """One line per tracked median, in both runs, more than `tolerance` worse (slower).

    Also the voice-to-voice ratio ours / reference, which holds across machines: with
    `same_machine` False (the baseline came from another CPU, so its times say little
    about this one) only the ratio is checked.
    """
    found = []
    for name, base in sorted(baseline.items()):
        now = current.get(name)
        if not same_machine or not name.endswith(tuple(tracked)):
            continue
        if now is None or base is None or base <= 0:
            continue
        if now > base * (1 + tolerance):
            found.append(
                f"REGRESSION: {name} = {now:.3f} s vs baseline {base:.3f} s "
                f"(+{(now / base - 1) * 100:.0f} %, tolerance {tolerance * 100:.0f} %)"
            )
    now_ratio, base_ratio = v2v_ratio(current), v2v_ratio(baseline)
    if (
        now_ratio is not None
        and base_ratio is not None
        and now_ratio > base_ratio * (1 + tolerance)
    ):
        found.append(
            f"REGRESSION: ours / reference v2v median = {now_ratio:.2f} vs baseline "
            f"{base_ratio:.2f} (+{(now_ratio / base_ratio - 1) * 100:.0f} %, tolerance "
            f"{tolerance * 100:.0f} %)"
        )
    return found


def v2v_ratio(summary: Mapping[str, float | None]) -> float | None:
    """Median voice-to-voice, ours over the reference's, when both were measured."""
    ours, reference = summary.get("ours.v2v.median"), summary.get("reference.v2v.median")
    if ours is None or reference is None or ours <= 0 or reference <= 0:
        return None
    return ours / reference


def baseline_cpu(path: Path) -> str | None:
    """The CPU model the baseline was measured on, if it says."""
    if not path.is_file():
        return None
    model = json.loads(path.read_text()).get("machine", {}).get("cpu_model")
    return str(model) if model else None


def load_baseline(path: Path) -> dict[str, float | None]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    summary = data.get("summary", data)
    return {k: v for k, v in summary.items() if isinstance(v, int | float) or v is None}


# ----------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------


def write_json(path: Path, results: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    return path


def plot_latencies(
    path: Path, per_system: Mapping[str, Sequence[TurnTiming]], summary: Mapping[str, Any]
) -> Path:
    """Voice-to-voice distribution per system, and the median stage breakdown beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s, turns in per_system.items() if turns]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    data = [_present(t.voice_to_voice for t in per_system[s]) for s in systems]
    left.boxplot(data, showfliers=False)
    left.set_xticks(range(1, len(systems) + 1), systems)
    for i, values in enumerate(data, 1):
        left.scatter([i] * len(values), values, alpha=0.6, zorder=3)
    left.set_ylabel("voice-to-voice latency (s)")
    left.set_title("End of caller speech -> first bot audio")
    left.set_ylim(bottom=0)

    bottoms = [0.0] * len(systems)
    for stage in STAGES:
        heights = [max(0.0, summary.get(f"{s}.stage.{stage}.median") or 0.0) for s in systems]
        right.bar(systems, heights, bottom=bottoms, label=stage)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    right.set_ylabel("median per stage (s)")
    right.set_title("Where the time goes (median of each stage)")
    right.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
