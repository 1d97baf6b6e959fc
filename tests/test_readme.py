"""README.md opens with the two set-up commands, CI runs exactly its test command, and every
command block of README.md says whether tests/test_readme_walkthrough.py runs it.

The convention (parsed here, used by tests/test_readme_walkthrough.py): every fenced block
whose language is ``bash`` (or ``sh``, ``shell``, ``console``) is preceded, on the line just
above its fence, by one HTML comment, invisible on GitHub:

    <!-- readme-test: run NAME -->        run it in the walk-through's shell, in README order
    <!-- readme-test: serve NAME URL -->  a server in the foreground: start it, wait until URL
                                          answers, then stop it (Ctrl-C, by process group)
    <!-- readme-test: skip REASON -->     not run (AWS, the test suite itself, hours of training)

NAME is unique in README.md and names the block in failure messages and the walk-through's
checks. Blocks without a language (layouts, tables of output) are not commands and need no
marker. A new ``bash`` block without a marker fails ``test_every_command_block_is_marked``.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
COMMAND_LANGUAGES = {"bash", "sh", "shell", "console"}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                    re.M | re.S)
_MARKER = re.compile(r"^[ \t]*<!--\s*readme-test:\s*(?P<spec>.*?)\s*-->[ \t]*$")
_ANY_MARKER = re.compile(r"<!--\s*readme-test:")
# What the walk-through must never run: these stop other people's processes on a shared host.
FORBIDDEN = re.compile(r"\bray\s+stop\b|\bpkill\b|\bkillall\b")


@dataclass(frozen=True)
class Block:
    kind: str           # "run", "serve", "skip", or "" when the marker is missing
    name: str           # run/serve: the block's name; skip: ""
    arg: str            # serve: the URL; skip: the reason
    text: str           # the commands, dedented
    lang: str
    line: int           # line of the opening fence in README.md

    @property
    def runs(self) -> bool:
        return self.kind in ("run", "serve")


def _parse_marker(spec: str) -> tuple[str, str, str]:
    kind, _, rest = spec.partition(" ")
    rest = rest.strip()
    if kind == "skip" and rest:
        return kind, "", rest
    if kind == "run" and re.fullmatch(r"[\w-]+", rest):
        return kind, rest, ""
    if kind == "serve" and re.fullmatch(r"[\w-]+ https?://\S+", rest):
        name, url = rest.split()
        return kind, name, url
    raise ValueError(f"bad readme-test marker {spec!r}: use 'run NAME', 'serve NAME URL' or 'skip REASON'")


def blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of README.md with a command language, in order, with its marker."""
    text = README.read_text() if text is None else text
    found = []
    for m in _FENCE.finditer(text):
        lang = m["lang"].lower()
        if lang not in COMMAND_LANGUAGES:
            continue
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _MARKER.match(before)
        kind, name, arg = _parse_marker(marker["spec"]) if marker else ("", "", "")
        found.append(Block(kind, name, arg, textwrap.dedent(m["body"]).rstrip("\n"), lang,
                           text.count("\n", 0, m.start()) + 1))
    return found


def marker_problems(text: str | None = None) -> list[str]:
    """What breaks the convention: unmarked blocks, bad or stray markers, duplicate names,
    forbidden commands in blocks that run."""
    text = README.read_text() if text is None else text
    problems = []
    try:
        found = blocks(text)
    except ValueError as e:
        return [str(e)]
    for b in found:
        if not b.kind:
            problems.append(f"README.md:{b.line}: ```{b.lang} block without a readme-test marker")
        elif b.runs and FORBIDDEN.search(b.text):
            problems.append(f"README.md:{b.line}: block {b.name!r} runs `ray stop`, pkill or killall")
    names = [b.name for b in found if b.runs]
    problems += [f"two blocks are named {n!r}" for n in sorted({n for n in names if names.count(n) > 1})]
    if len(_ANY_MARKER.findall(text)) != sum(1 for b in found if b.kind):
        problems.append("a readme-test marker is not on the line just above a command block")
    return problems


def _opening_commands():
    text = README.read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)[:2]


def test_readme_opens_with_main_job_and_test_commands():
    main_job, tests = _opening_commands()
    assert main_job.startswith("./scripts/setup.sh && ") and "python -m study.run ablation_pretraining" in main_job
    assert tests.startswith("./scripts/setup.sh && ") and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    _, tests = _opening_commands()
    ci_lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci_lines


def test_every_command_block_is_marked():
    assert marker_problems() == []
    assert [b for b in blocks() if b.runs], "no README block is run by the walk-through"


def test_marker_convention_catches_mistakes():
    good = "<!-- readme-test: run a -->\n```bash\necho a\n```\n"
    assert marker_problems(good) == []
    assert blocks(good)[0] == Block("run", "a", "", "echo a", "bash", 2)
    indented = "1. step\n\n   <!-- readme-test: serve ui http://127.0.0.1:5000/ -->\n   ```bash\n   ui --port 5000\n   ```\n"
    assert blocks(indented)[0].text == "ui --port 5000" and blocks(indented)[0].arg == "http://127.0.0.1:5000/"
    assert "without a readme-test marker" in marker_problems("```bash\necho a\n```\n")[0]
    assert "not on the line just above" in marker_problems("<!-- readme-test: run a -->\n\ntext\n```bash\necho\n```\n"
                                                             "<!-- readme-test: skip x -->\n```\nlayout\n```\n")[-1]
    assert "bad readme-test marker" in marker_problems("<!-- readme-test: run -->\n```bash\necho\n```\n")[0]
    assert "named 'a'" in marker_problems(good + good)[0]
    assert "ray stop" in marker_problems("<!-- readme-test: run b -->\n```bash\nray stop --force\n```\n")[0]
    assert marker_problems("<!-- readme-test: skip AWS only -->\n```bash\nray stop\n```\n") == []
    assert marker_problems("```\nno language: a layout\n```\n") == []
