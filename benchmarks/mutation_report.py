"""Write the mutation score and every surviving mutant of the last `mutmut run` to benchmarks/results/mutation.md.

Run by `make mutation` after `mutmut run`, from the project root. Reads mutmut's results through its command line
(`mutmut results --all true`, `mutmut show NAME`). A survivor that `benchmarks/mutation_equivalents.toml` lists (by
its function and its changed lines, so that renumbering does not matter) is equivalent: no test could tell it from
the original, for the reason given there. Every other survivor is a gap in the tests.

    score = killed / (mutants - equivalent - skipped)

where killed counts mutants a test failed on, that timed out (a mutant that hangs the stream is caught) or that
pyright rejected (`make test` runs it), and "no tests" mutants (code no selected test runs) count against the score
like survivors -- unless listed as equivalent: a listed mutant's tests are not run (tests/mutation_equivalents.py),
so mutmut records it as "no tests".

Usage: python benchmarks/mutation_report.py [--seconds N] [--output PATH]
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the list is read as tests/mutation_equivalents.py reads it under mutmut

from tests.mutation_equivalents import Equivalent, changed_lines, load_equivalents  # noqa: E402

EQUIVALENTS = ROOT / "benchmarks" / "mutation_equivalents.toml"
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "mutation.md"
KILLED = {"killed", "timeout", "caught by type check"}
NOT_SCORED = {"skipped", "not checked"}  # "not checked": the run was stopped before it reached them
TARGET = 95.0
_RESULT_LINE = re.compile(r"^\s+(?P<name>\S+__mutmut_\d+): (?P<status>.+)$")


@dataclass(frozen=True)
class Survivor:
    name: str
    status: str
    diff: str

    @property
    def function(self) -> str:
        return self.name.rsplit("__mutmut_", 1)[0]

    @property
    def mutation(self) -> str:
        return changed_lines(self.diff)


def mutmut(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mutmut", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"mutmut {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def show(name: str) -> str:
    return mutmut("show", name)


def statuses() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in mutmut("results", "--all", "true").splitlines():
        match = _RESULT_LINE.match(line)
        if match:
            found[match["name"]] = match["status"].strip()
    if not found:
        raise SystemExit("no mutmut results: run `make mutation` (or `mutmut run`) first")
    return found


def report(
    found: dict[str, str], survivors: list[Survivor], equivalents: list[Equivalent], seconds: float | None
) -> str:
    by_key = {(e.function, e.mutation): e for e in equivalents}
    equivalent = [(s, by_key[(s.function, s.mutation)]) for s in survivors if (s.function, s.mutation) in by_key]
    matched = {(s.function, s.mutation) for s, _ in equivalent}
    gaps = [s for s in survivors if (s.function, s.mutation) not in matched]
    stale = [e for e in equivalents if (e.function, e.mutation) not in matched]
    not_run = sum(1 for survivor, _ in equivalent if survivor.status == "no tests")
    counts = Counter(found.values())
    killed = sum(counts[status] for status in KILLED)
    scored = len(found) - sum(counts[status] for status in NOT_SCORED) - len(equivalent)
    score = 100.0 * killed / scored if scored else 0.0
    per_module: dict[str, Counter[str]] = {}
    for name, status in found.items():
        module = name.split(".x", 1)[0]
        per_module.setdefault(module, Counter())["killed" if status in KILLED else status] += 1

    lines = [
        "# Mutation testing: streamscope",
        "",
        f"- Run: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, mutmut {metadata.version('mutmut')}"
        + (f", {seconds / 60:.1f} min" if seconds is not None else ""),
        f"- Mutants: {len(found)}; " + ", ".join(f"{status} {count}" for status, count in counts.most_common()),
        *(
            [f"- **Incomplete run**: {counts['not checked']} mutants not checked yet (`mutmut run` goes on from here)"]
            if counts["not checked"]
            else []
        ),
        f"- Equivalent (listed in benchmarks/mutation_equivalents.toml): {len(equivalent)}"
        + (f", {not_run} of them not run (tests/mutation_equivalents.py)" if not_run else ""),
        f"- **Score: {score:.1f} %** ({killed} killed of {scored} non-equivalent mutants; target {TARGET:.0f} %)",
        "",
        "## By module",
        "",
        "| module | mutants | killed | survived | no tests | other |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for module, c in sorted(per_module.items()):
        other = sum(c.values()) - c["killed"] - c["survived"] - c["no tests"]
        lines.append(f"| {module} | {sum(c.values())} | {c['killed']} | {c['survived']} | {c['no tests']} | {other} |")
    lines += ["", f"## Survivors that are gaps in the tests ({len(gaps)})", ""]
    for survivor in gaps:
        lines += [f"### {survivor.name} ({survivor.status})", "", "```diff", survivor.mutation, "```", ""]
    lines += [f"## Equivalent survivors ({len(equivalent)})", ""]
    for survivor, entry in equivalent:
        lines += [f"- `{survivor.name}`: {entry.reason}", "", "  ```diff"]
        lines += [f"  {line}" for line in survivor.mutation.splitlines()]
        lines += ["  ```", ""]
    if stale:
        lines += [f"## Listed as equivalent but not surviving any more ({len(stale)}): remove them", ""]
        lines += [f"- {entry.function}: {entry.mutation.splitlines()[0] if entry.mutation else ''}" for entry in stale]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=None, help="how long `mutmut run` took")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    options = parser.parse_args()
    found = statuses()
    pending = [(name, status) for name, status in sorted(found.items()) if status not in KILLED | NOT_SCORED]
    with ThreadPoolExecutor(max_workers=4) as pool:  # one `mutmut show` process per survivor
        diffs = list(pool.map(show, [name for name, _ in pending]))
    survivors = [Survivor(name, status, diff) for (name, status), diff in zip(pending, diffs, strict=True)]
    text = report(found, survivors, load_equivalents(EQUIVALENTS), options.seconds)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text, "utf-8")
    print("\n".join(text.splitlines()[2:6]))
    print(f"written to {options.output.relative_to(ROOT) if options.output.is_relative_to(ROOT) else options.output}")


if __name__ == "__main__":
    main()
