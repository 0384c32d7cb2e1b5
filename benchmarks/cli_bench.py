"""CLI start-up: CPU time and import time of `t2m` commands, against the eager CLI (every command module imported).

Each case runs in a fresh interpreter, `--runs` times, with `python -X importtime`; reported: median CPU seconds of
the child (user + system, from wait4) and median total import time (the sum of every module's own import time, as
`-X importtime` prints it), and the heaviest top-level imports of one run. The baseline is what `t2m` did before
its commands were imported lazily: importing all six command modules, then printing the help.

Run: `python benchmarks/cli_bench.py [--runs 7] [--write]` (`make bench-cli`).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTION_START = "<!-- cli_bench:start -->"
SECTION_END = "<!-- cli_bench:end -->"
EAGER = (
    "import sys; import t2m_pipeline.cli.audit, t2m_pipeline.cli.db, t2m_pipeline.cli.doctor, t2m_pipeline.cli.infra, "
    "t2m_pipeline.cli.jobs, t2m_pipeline.cli.migrate; from t2m_pipeline.cli import main; main(sys.argv[1:])"
)
CASES = [
    ("t2m --help", ["-m", "t2m_pipeline.cli", "--help"]),
    ("t2m db current --help", ["-m", "t2m_pipeline.cli", "db", "current", "--help"]),
    ("t2m jobs show --help", ["-m", "t2m_pipeline.cli", "jobs", "show", "--help"]),
    ("t2m audit --help", ["-m", "t2m_pipeline.cli", "audit", "--help"]),
    ("baseline: eager imports + --help", ["-c", EAGER, "--help"]),
]
LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)$")


def measure(args: list[str], runs: int) -> dict:
    cpu, imports, top = [], [], []
    for _ in range(runs):
        # Popen + wait4 ourselves, so the usage is this child's alone.
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", *args], cwd=ROOT, env={**os.environ, "T2M_LOCAL_STACK_FILE": ""},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        stderr = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{args} failed: {stderr[-500:]}")
        own_total, heads = 0, []
        for line in stderr.splitlines():
            m = LINE.match(line)
            if m:
                own_total += int(m.group(1))
                if len(m.group(3)) == 1:
                    heads.append((int(m.group(2)), m.group(4)))
        cpu.append(usage.ru_utime + usage.ru_stime)
        imports.append(own_total / 1e6)
        top = sorted(heads, reverse=True)
    return {"cpu_s": statistics.median(cpu), "import_s": statistics.median(imports), "top": top[:4]}


def render(results: dict[str, dict], runs: int, command: str) -> str:
    base = results[CASES[-1][0]]
    lines = [
        SECTION_START,
        "## CLI start-up",
        "",
        f"Command: `{command}` (2-core machine; each case a fresh interpreter with `-X importtime`, median of {runs} "
        "runs). CPU = the child's user + system time (wait4); imports = the sum of every module's own import time as "
        "`-X importtime` reports it. Baseline: the eager CLI of before (all six command modules imported, then `--help`).",
        "",
        "| command | CPU s | imports s | CPU vs baseline | heaviest top-level imports (cumulative ms) |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        heavy = ", ".join(f"{mod} {us / 1000:.0f}" for us, mod in r["top"])
        lines.append(f"| `{name}` | {r['cpu_s']:.3f} | {r['import_s']:.3f} | {r['cpu_s'] / base['cpu_s']:.2f}x | {heavy} |")
    help_ = results[CASES[0][0]]
    lines += [
        "",
        f"`t2m --help` takes {help_['cpu_s']:.2f} s of CPU (target: under 0.3 s), {base['cpu_s'] / help_['cpu_s']:.1f}x less "
        f"than the eager baseline's {base['cpu_s']:.2f} s; a command pays only for the modules it runs.",
        SECTION_END,
        "",
    ]
    return "\n".join(lines)


def write_section(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    current = path.read_text()
    pattern = re.compile(re.escape(SECTION_START) + ".*?" + re.escape(SECTION_END) + "\n?", re.S)
    path.write_text(pattern.sub(lambda _: text, current) if pattern.search(current) else current.rstrip("\n") + "\n\n" + text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="write the results into BENCHMARKS.md")
    args = parser.parse_args()
    results = {}
    for name, case in CASES:
        measure(case, 1)  # warm the file cache and the bytecode
        results[name] = measure(case, args.runs)
        print(f"{name}: {results[name]['cpu_s']:.3f} s CPU, {results[name]['import_s']:.3f} s imports", flush=True)
    text = render(results, args.runs, "python benchmarks/cli_bench.py" + (" --write" if args.write else ""))
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
