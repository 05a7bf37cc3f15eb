"""Markdown pieces for ``perf/gpu_check.sh``: machine facts and a pytest run as tables.

    python perf/gpu_check_report.py facts [NVIDIA_SMI_CSV]
    python perf/gpu_check_report.py pytest JUNIT_XML PYTEST_LOG

Kept out of the shell script so the parsing is plain Python that the CPU dry-run test exercises. Package versions
come from installed metadata, not imports, so the facts stay cheap and are written even when a package is broken.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "accelerate", "peft", "bitsandbytes", "safetensors", "tokenizers",
            "huggingface-hub", "datasets", "numpy", "pytest")
OUTCOMES = ("passed", "failed", "error", "skipped")
# pytest -v lines: "tests/test_x.py::test_y[p] PASSED   [ 10%]" (used when no JUnit file was written)
VERBOSE_LINE = re.compile(r"^(\S+::\S+)\s+(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")


def cell(text: str, limit: int = 160) -> str:
    """One table cell: first line only, pipes escaped, cut to ``limit`` characters."""
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return first.replace("|", "\\|")[:limit]


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def facts(smi_csv: Path | None) -> str:
    """Machine and package facts as a two-column table (the GPU rows come from ``nvidia-smi --format=csv``)."""
    import torch

    rows = [("python", f"{platform.python_version()} ({sys.executable})"), ("platform", platform.platform()),
            ("CPU cores", str(os.cpu_count()))]
    rows += [(name, version(name)) for name in PACKAGES]
    rows.append(("torch CUDA", f"{torch.version.cuda} (available: {torch.cuda.is_available()})"))
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rows.append(("GPU (torch)", f"{props.name}, {props.total_memory / 2**30:.1f} GiB, "
                                    f"{props.multi_processor_count} SMs, capability {props.major}.{props.minor}"))
    if smi_csv is not None and smi_csv.is_file():
        lines = [line for line in smi_csv.read_text().splitlines() if line.strip()]
        if len(lines) >= 2:
            for key, value in zip(lines[0].split(","), lines[1].split(",")):
                rows.append((f"nvidia-smi {key.strip()}", value.strip()))
    return "\n".join(["| fact | value |", "|---|---|", *(f"| {k} | {cell(v, 200)} |" for k, v in rows)])


def junit_results(path: Path) -> list[tuple[str, str, str]]:
    """(test id, outcome, message) for every test case in a JUnit XML file.

    A run interrupted by the time limit leaves one nameless ``<testcase/>`` for the test it stopped in; that one is
    not a result (pytest would otherwise have it count as passed).
    """
    results = []
    for case in ET.parse(path).getroot().iter("testcase"):
        if not case.get("name"):
            continue
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "failed" if tag == "failure" else tag
                message = node.get("message") or (node.text or "")
                break
        results.append((name, outcome, message))
    return results


def log_results(path: Path) -> list[tuple[str, str, str]]:
    """Fallback when pytest was killed before writing JUnit: outcomes from its ``-v`` lines (no messages)."""
    mapping = {"PASSED": "passed", "XPASS": "passed", "FAILED": "failed", "ERROR": "error", "SKIPPED": "skipped",
               "XFAIL": "skipped"}
    text = path.read_text(errors="replace") if path.is_file() else ""
    return [(m.group(1), mapping[m.group(2)], "") for m in map(VERBOSE_LINE.match, text.splitlines()) if m]


def pytest_table(junit: Path, log: Path) -> str:
    """Outcome counts, then one row per failure / error and per distinct skip reason."""
    source = "JUnit XML"
    try:
        results = junit_results(junit)
    except (OSError, ET.ParseError):
        results, source = log_results(log), "pytest -v log (no JUnit file: the run was cut short)"
    counts = Counter(outcome for _, outcome, _ in results)
    lines = [f"Source: {source}.", "", "| outcome | tests |", "|---|---:|"]
    lines += [f"| {outcome} | {counts.get(outcome, 0)} |" for outcome in OUTCOMES]
    bad = [(name, outcome, msg) for name, outcome, msg in results if outcome in ("failed", "error")]
    if bad:
        lines += ["", "| failed test | outcome | message |", "|---|---|---|"]
        lines += [f"| {cell(name)} | {outcome} | {cell(msg)} |" for name, outcome, msg in bad]
    skips = Counter(cell(msg) for _, outcome, msg in results if outcome == "skipped")
    if skips:
        lines += ["", "| skip reason | tests |", "|---|---:|"]
        lines += [f"| {reason or '(no reason recorded)'} | {n} |" for reason, n in skips.most_common()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("facts", help="machine and package facts")
    f.add_argument("smi_csv", nargs="?", type=Path, help="nvidia-smi --query-gpu=... --format=csv output")
    p = sub.add_parser("pytest", help="a pytest run as tables")
    p.add_argument("junit", type=Path)
    p.add_argument("log", type=Path)
    args = parser.parse_args()
    print(facts(args.smi_csv) if args.command == "facts" else pytest_table(args.junit, args.log))


if __name__ == "__main__":
    main()
