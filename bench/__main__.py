"""`python -m bench` (what `make bench` runs): every benchmark of bench/, each in its own process, then one table.

Each benchmark merges its figures into the results file (bench/results.json) under its own key; here its own
detailed output goes to stderr, and stdout gets one table of every benchmark's summary figures — value, named
baseline, ratio, the issue's target and whether it was met — followed by the notes and, per benchmark, when and
on which machine (and at which load) it was measured. `--table` prints that table from the results file alone.

    python -m bench [--quick] [--only data train_step scaling eval] [--config configs/demo.yaml] [--set ...]
                    [--out bench/results.json] [--table]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.common import RESULTS, figures_of, table
from reid3dsl.config import add_config_args
from reid3dsl.errors import UserError, cli_main

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ("data", "train_step", "scaling", "eval")
CONFIGURED = frozenset({"data", "train_step", "scaling"})  # those that take --config / --set


def command(name: str, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", f"bench.{name}", "--out", str(args.out)]
    if args.quick:
        cmd.append("--quick")
    if name in CONFIGURED:
        cmd += ["--config", args.config] + [x for o in args.overrides for x in ("--set", o)]
    return cmd


def report(results: dict, names: list[str]) -> str:
    """The one table of `names`' summary figures, then their notes and where/when each was measured."""
    figures = figures_of(results, names)
    lines = [table(figures)]
    lines += [f"- {f.bench}: {f.name} vs {f.baseline}: {f.note}" for f in figures if f.note]
    for name in names:
        if name in results:
            entry, m = results[name], results[name]["machine"]
            lines.append(f"- {name}: measured {entry['date']} on {m['cpu']} ({m['logical_cpus']} CPUs, "
                         f"{', '.join(m['simd'])}), torch {m['torch']}, load {m['load_avg_1min_at_start']:.1f} "
                         "at start")
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every benchmark's quick mode")
    parser.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES), help="benchmarks to run")
    add_config_args(parser, default="configs/demo.yaml")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file the benchmarks merge their results into")
    parser.add_argument("--table", action="store_true", help="only print the table of the results file")
    args = parser.parse_args(argv)
    failed = []
    if not args.table:
        for name in args.only:
            print(f"== bench.{name}", file=sys.stderr, flush=True)
            # The benchmark's own tables go to stderr: stdout is for the one table.
            if subprocess.run(command(name, args), cwd=ROOT, stdout=sys.stderr).returncode:
                failed.append(name)
    if not args.out.is_file():
        raise UserError(f"results file '{args.out}': not found (expected the output of python -m bench)")
    print(report(json.loads(args.out.read_text()), args.only))
    if failed:
        print(f"failed: {', '.join(failed)} (their rows above, if any, are from an earlier run)", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
