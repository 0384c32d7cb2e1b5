"""Render boundary cost: one scene's render wall time inside the local sandbox against unconfined, same code, same run;
and a warm renderer's render (one sandbox per scenes step, manim imported once: `render/warm.py`) beside them.

Both sides run the same entrypoint through the same backend interface (Dagster Pipes, intake and probe of the
video included), from one Dagster asset, interleaved and alternating which goes first, so drift on the machine hits
both alike. The sandbox side pays: stage one (private mount namespace, binds, cgroup, rlimits, setpriv),
bubblewrap's namespaces and view, a tmpfs, and the tree kill. The scene is the template generator's, at low quality.

    python benchmarks/render_bench.py --renders 12 --write
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION_START, SECTION_END = "<!-- render_bench:start -->", "<!-- render_bench:end -->"


def bench(renders: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import dagster as dg

    from t2m_pipeline.render.backends import LocalSandboxBackend, RenderRequest, UnconfinedBackend
    from t2m_pipeline.render.codegen import TemplateCodeGenerator
    from t2m_pipeline.render.outline import JobSpec, plan_outline
    from t2m_pipeline.render.sandbox import sandbox_status

    outline = plan_outline(JobSpec("Pythagorean theorem", "Right triangles. The squares on the legs.", scene_count=1))
    generated = TemplateCodeGenerator().generate(outline, outline.scene(1))
    request = RenderRequest(generated.code, generated.class_name, "low", 120)
    backends = {"sandbox": LocalSandboxBackend(), "unconfined": UnconfinedBackend()}
    sides = ("sandbox", "warm", "unconfined")
    rows: list[dict] = []

    def once(name: str, context) -> float:
        started = time.perf_counter()
        with backends[name].render(context, request) as output:
            output.raise_for_failure()
            elapsed = time.perf_counter() - started
            assert output.info.duration_s > 1
        return elapsed

    @dg.asset
    def render_boundary_bench(context):
        with LocalSandboxBackend().warm(renders_at_once=1) as warm:
            backends["warm"] = warm  # one renderer for every warm render, as a scenes step has; its import is not timed
            for name in sides:  # warm-up: font caches, the page cache, the first namespace: paid by no side
                once(name, context)
            for i in range(renders):
                order = sides[i % 3:] + sides[: i % 3]
                times = {name: once(name, context) for name in order}
                rows.append({"render": i + 1, "first": order[0], **{f"{k}_s": round(v, 3) for k, v in times.items()}})
            assert warm.failure is None and warm.renders == renders + 1, warm.failure
        return dg.MaterializeResult()

    logging_config = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    assert dg.materialize([render_boundary_bench], run_config=logging_config).success
    sandbox = [r["sandbox_s"] for r in rows]
    unconfined = [r["unconfined_s"] for r in rows]
    warm = [r["warm_s"] for r in rows]
    load = os.getloadavg()
    return {
        "renders": renders,
        "rows": rows,
        "sandbox_median_s": round(statistics.median(sandbox), 3),
        "unconfined_median_s": round(statistics.median(unconfined), 3),
        "warm_median_s": round(statistics.median(warm), 3),
        "warm_ratio": round(statistics.median(warm) / statistics.median(sandbox), 4),
        "ratio": round(statistics.median(sandbox) / statistics.median(unconfined), 4),
        "paired_ratio_median": round(statistics.median(s / u for s, u in zip(sandbox, unconfined)), 4),
        "sandbox": sandbox_status().detail,
        "load": [round(x, 2) for x in load],
    }


def bench_startup(runs: int) -> dict:
    """The boundary's fixed cost alone: `python -I -c pass` inside the sandbox against unconfined, interleaved."""
    import tempfile

    from t2m_pipeline.render.sandbox import PROTECTIONS, render_slot, run_sandboxed, run_unconfined, sandbox_env

    sandbox, unconfined = [], []
    for i in range(runs + 2):
        def inside() -> float:
            started = time.perf_counter()
            with render_slot() as slot:
                result = run_sandboxed([sys.executable, "-I", "-c", "pass"], slot=slot, env=sandbox_env({}, PROTECTIONS), files={},
                                       timeout_s=60, on_line=lambda line: None)
            assert result.returncode == 0, result.stderr_tail
            return time.perf_counter() - started

        def outside() -> float:
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                result = run_unconfined([sys.executable, "-I", "-c", "pass"], cwd=Path(tmp), env={"PATH": "/usr/bin:/bin"},
                                        timeout_s=60, on_line=lambda line: None)
            assert result.returncode == 0
            return time.perf_counter() - started

        pair = (inside(), outside()) if i % 2 == 0 else tuple(reversed((outside(), inside())))
        if i >= 2:  # two warm-ups
            sandbox.append(pair[0])
            unconfined.append(pair[1])
    return {
        "runs": runs,
        "sandbox_median_ms": round(statistics.median(sandbox) * 1000, 1),
        "unconfined_median_ms": round(statistics.median(unconfined) * 1000, 1),
        "overhead_ms": round((statistics.median(sandbox) - statistics.median(unconfined)) * 1000, 1),
    }


def markdown(result: dict, command: str) -> str:
    cost = (result["ratio"] - 1) * 100
    lines = [
        SECTION_START,
        "## Render boundary: sandbox against unconfined (benchmarks/render_bench.py)",
        "",
        f"Command: `{command}` (the same as `make bench-render`). Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on a "
        f"2-core machine, as root; 1-minute load average {result['load'][0]} at the end (other work shares the machine: "
        "compare the two columns of this run, not runs). Sandbox: " + result["sandbox"] + ".",
        "",
        "One template scene at low quality (about 2 s of video), rendered through the backend interface each time: "
        "Pipes session, entrypoint, manim, intake and probe of the video. Interleaved, alternating which side goes "
        "first; a warm-up render of each side first, not counted.",
        "",
        "| render | first | sandbox (s) | warm renderer (s) | unconfined (s) |",
        "|---:|---|---:|---:|---:|",
    ]
    lines += [f"| {r['render']} | {r['first']} | {r['sandbox_s']:.3f} | {r['warm_s']:.3f} | {r['unconfined_s']:.3f} |" for r in result["rows"]]
    lines += [
        "",
        "| measure | value |",
        "|---|---:|",
        f"| sandbox, median of {result['renders']} (s) | {result['sandbox_median_s']:.3f} |",
        f"| unconfined, median of {result['renders']} (s) | {result['unconfined_median_s']:.3f} |",
        f"| ratio of medians (sandbox / unconfined) | {result['ratio']:.3f} |",
        f"| median of the per-pair ratios | {result['paired_ratio_median']:.3f} |",
        f"| warm renderer, median of {result['renders']} (s) | {result['warm_median_s']:.3f} |",
        f"| ratio of medians (warm renderer / sandbox) | {result['warm_ratio']:.3f} |",
        "",
        "The warm renderer (`t2m_pipeline/render/warm.py`, SECURITY.md item 9): one sandbox for a scenes step, opened "
        "once here as a step opens it (its manim import not timed, as it overlaps the scenes' code generation in a "
        "step), each render a fork placed in a cgroup of its own; the same Pipes session, intake and probe. "
        f"It takes {result['warm_ratio']:.2f}x the cold sandbox's time per render.",
        "",
        f"The boundary costs {cost:+.1f} % of a render's wall time (target: under 10 %)."
        + (" Below zero: the sandboxed render writes its media to a tmpfs, the unconfined one to disk; within the "
           "noise of this machine either way." if cost < 0 else ""),
        "",
        f"Its fixed cost alone, with less noise: `python -I -c pass` started {result['startup']['runs']} times each way, "
        "interleaved (the same runner functions, two warm-ups first):",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| inside the sandbox, median (ms) | {result['startup']['sandbox_median_ms']:.1f} |",
        f"| unconfined, median (ms) | {result['startup']['unconfined_median_ms']:.1f} |",
        f"| the boundary's fixed cost (ms) | {result['startup']['overhead_ms']:.1f} |",
        "",
        f"That is {result['startup']['overhead_ms'] / 10 / result['unconfined_median_s']:.1f} % of the unconfined render's median.",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    current = path.read_text()
    pattern = re.compile(re.escape(SECTION_START) + ".*?" + re.escape(SECTION_END) + "\n?", re.S)
    updated = pattern.sub(lambda _: text, current) if pattern.search(current) else current.rstrip("\n") + "\n\n" + text
    path.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=12)
    parser.add_argument("--startups", type=int, default=30, help="runs of the fixed-cost measure")
    parser.add_argument("--write", action="store_true", help="write the results into BENCHMARKS.md")
    args = parser.parse_args()
    result = bench(args.renders)
    result["startup"] = bench_startup(args.startups)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    text = markdown(result, f"python benchmarks/render_bench.py --renders {args.renders} --write")
    if args.write:
        write_section(text)
        print("BENCHMARKS.md updated")
    else:
        print(text)


if __name__ == "__main__":
    main()
