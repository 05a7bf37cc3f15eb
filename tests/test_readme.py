"""Every fenced code block of the README and of ``docs/*.md`` runs as written, so the docs cannot drift from the code.

Convention (stated in docs/conventions.md): bash and Python blocks run offline, in a temporary folder that holds a
``photo.jpg`` (a block of plain ``detecture ...`` lines runs through the same CLI entry point in-process, any other
bash block in a bash subprocess with this checkout's ``detecture`` first on PATH); a block that needs hub weights, a GPU, a download or a dataset is preceded by the line
``<!-- readme-test: skip (reason) -->``. The ``detecture`` command lines of a skipped bash block are still parsed by
the real CLI parser, so options cannot drift either; a ``...`` placeholder stands for omitted arguments, and
``[--opt X]`` marks an optional part. Blocks in other languages (yaml, text) are not run.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCUMENTS = [README, *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*```\s*([\w+-]*)\s*$")
SKIP = re.compile(r"^\s*<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]*\S[^)]*)\)\s*-->\s*$")
MARKER = re.compile(r"readme-test")
SHELLS = {"bash", "sh", "shell", "console"}
PYTHONS = {"python", "py", "python3"}
OPERATORS = {"&&", "||", ";", "|", "&"}


@dataclass(frozen=True)
class Block:
    source: str  # the document, relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason, when marked

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}:{self.lang}" + (":skip" if self.skip else "")


def readme_blocks(text: str, source: str = "README.md") -> list[Block]:
    """Fenced blocks with their language and skip marker (the nearest non-blank line before the fence)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if FENCE.match(lines[j]))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = SKIP.match(before)
        if MARKER.search(before) and not marker:
            raise AssertionError(f"{source}:{i}: malformed marker {before!r}; use <!-- readme-test: skip (reason) -->")
        blocks.append(Block(source, i + 1, match.group(1).lower(), "\n".join(lines[i + 1:end]) + "\n",
                            marker.group("reason").strip() if marker else None))
        i = end + 1
    return blocks


BLOCKS = [block for doc in DOCUMENTS
          for block in readme_blocks(doc.read_text(encoding="utf-8"), str(doc.relative_to(REPO)))]
RUN = [b for b in BLOCKS if b.lang in SHELLS | PYTHONS and not b.skip]
SHELL_BLOCKS = [b for b in BLOCKS if b.lang in SHELLS]
PYTHON_SKIPPED = [b for b in BLOCKS if b.lang in PYTHONS and b.skip]


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    """The folder blocks run in: a small ``photo.jpg`` (a real texture photo) and a ``detecture`` / ``python`` on
    PATH that run this checkout with this interpreter."""
    from PIL import Image
    from skimage import data

    Image.fromarray(data.coffee()).resize((240, 160)).save(tmp_path / "photo.jpg")
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    for name, command in (("detecture", f'"{sys.executable}" -m detecture'), ("python", f'"{sys.executable}"'),
                          ("python3", f'"{sys.executable}"')):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def test_readme_has_runnable_blocks():
    assert any(b.lang in SHELLS for b in RUN) and any(b.lang in PYTHONS for b in RUN)


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.id)
def test_block_runs(block: Block, workdir: Path, monkeypatch):
    if block.lang in PYTHONS:
        monkeypatch.chdir(workdir)
        exec(compile(block.code, f"{block.source}:{block.line}", "exec"), {"__name__": "__readme__"})
        return
    commands = _commands(block.code)
    if all(c[0] == "detecture" for c in commands) and "$" not in block.code:
        # Plain `detecture ...` lines: the same entry point in-process, sparing a Python start-up per block.
        from detecture.cli import main

        monkeypatch.chdir(workdir)
        for command in commands:
            assert main(command[1:]) == 0, f"{block.source}:{block.line}: {' '.join(command)} failed"
        return
    env = {**os.environ, "PATH": f"{workdir / '.bin'}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{block.source}:{block.line} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("block", PYTHON_SKIPPED, ids=lambda b: b.id)
def test_skipped_python_block_compiles(block: Block):
    compile(block.code, f"{block.source}:{block.line}", "exec")


def _commands(code: str) -> list[list[str]]:
    """Shell commands of a block: continuation lines joined, comments dropped, split at && || ; | &."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in lexer:
            if token in OPERATORS:
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


def _detecture_args(tokens: list[str]) -> list[str] | None:
    """Arguments after ``detecture`` / ``-m detecture`` (also under ``accelerate launch``), else None."""
    while tokens and re.match(r"^\w+=", tokens[0]):  # VAR=value prefixes
        tokens = tokens[1:]
    if tokens and tokens[0] == "detecture":
        return tokens[1:]
    for i in range(len(tokens) - 1):
        if tokens[i] == "-m" and tokens[i + 1] == "detecture":
            return tokens[i + 2:]
    return None


class _ParseError(Exception):
    pass


def _raise(self, message):  # argparse.ArgumentParser.error, raising instead of exiting
    raise _ParseError(message)


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda b: b.id)
def test_detecture_command_lines_parse(block: Block, monkeypatch):
    from detecture.cli import build_parser

    monkeypatch.setattr(argparse.ArgumentParser, "error", _raise)
    for tokens in _commands(block.code):
        args = _detecture_args(tokens)
        if args is None:
            continue
        elided = "..." in args
        args = [t.strip("[]") for t in args if t != "..."]
        args = [t for t in args if t]
        try:
            build_parser().parse_args(args)
        except _ParseError as exc:
            if not (elided and str(exc).startswith("the following arguments are required")):
                raise AssertionError(f"{block.source}:{block.line}: detecture {' '.join(args)}: {exc}") from None


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda d: str(d.relative_to(REPO)))
def test_relative_links_and_pictures_exist(doc: Path):
    """Every relative link and image of a document points at a file of the repository (the README's picture too)."""
    missing = [target for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8"))
               if "://" not in target and not (doc.parent / target).exists()]
    assert not missing, f"{doc.name}: links to missing files: {missing}"


def test_every_docs_page_is_linked_from_the_readme():
    text = README.read_text(encoding="utf-8")
    assert [d.name for d in DOCUMENTS[1:] if f"docs/{d.name}" not in text] == []


def test_marker_parsing():
    text = "x\n<!-- readme-test: skip (needs hub weights) -->\n\n```bash\nls\n```\n```python\nprint(1)\n```\n"
    blocks = readme_blocks(text)
    assert [(b.lang, b.skip, b.code) for b in blocks] == [("bash", "needs hub weights", "ls\n"),
                                                          ("python", None, "print(1)\n")]
    with pytest.raises(AssertionError, match="malformed marker"):
        readme_blocks("<!-- readme-test: skip -->\n```bash\nls\n```\n")
    assert _commands("detecture a --b 1 \\\n  --c 2 && echo x  # note\n") == [
        ["detecture", "a", "--b", "1", "--c", "2"], ["echo", "x"]]


def test_the_readme_states_the_default_methods_the_code_has():
    """The README warns that the Python call and the command line default to different methods: it must name the
    defaults the code has."""
    import inspect

    import detecture
    from detecture.cli import build_parser

    api = inspect.signature(detecture.segment).parameters["method"].default
    cli = build_parser().parse_args(["segment", "x.png"]).method
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert f'`detecture.segment()` runs `method="{api}"`' in text
    assert f"`detecture segment` on the command line runs `--method {cli}`" in text
