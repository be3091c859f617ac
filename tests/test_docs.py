"""The docs the code cites exist, cover what is cited, are linked, and say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("python", "cpp", "tests", "benchmarks") for p in (REPO / d).rglob("*")
           if p.suffix in (".py", ".hpp", ".cpp", ".cu") and p.is_file()]


def _sections(doc: Path):
    return {int(m.group(1)) for m in re.finditer(r"^## (\d+)\.", doc.read_text(), re.M)}


@pytest.mark.parametrize("doc", ["METHOD.md", "DESIGN.md"])
def test_every_cited_section_exists(doc):
    path = REPO / "docs" / doc
    assert path.is_file(), f"docs/{doc} is cited but missing"
    have = _sections(path)
    cited = set()
    for src in SOURCES + [REPO / "README.md"]:
        for m in re.finditer(rf"{doc} sections? (\d+)(?:-(\d+))?", src.read_text(errors="replace")):
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            cited |= set(range(lo, hi + 1))
    assert cited and cited <= have, (sorted(cited - have), sorted(have))


def test_docs_are_linked_and_extras_documented():
    readme = (REPO / "README.md").read_text()
    for doc in ("docs/METHOD.md", "docs/DESIGN.md", "docs/TRAINER.md"):
        assert f"]({doc})" in readme, doc
    assert '".[lora]"' in readme and "lora" in (REPO / "pyproject.toml").read_text()
    method = (REPO / "docs" / "METHOD.md").read_text()
    for formula in ("L_SPIN", "L_DAM", "L_OAL", "p_max(v | x)", "V(y)", "gamma"):
        assert formula in method, formula


def test_bench_outside_a_checkout_says_how(monkeypatch, tmp_path):
    from drift import cli

    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site-packages" / "drift" / "cli.py"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DRIFT_BENCHMARKS", raising=False)
    with pytest.raises(FileNotFoundError, match="ship with the source repository.*DRIFT_BENCHMARKS"):
        cli.benchmarks_dir()


def test_the_loop_docstring_maps_every_trainer_module():
    import drift.trainer.loop as loop

    modules = {p.stem for p in (REPO / "python" / "drift" / "trainer").glob("*.py")} - {"__init__", "loop"}
    mapped = set(re.findall(r"(\w+)\.py", loop.__doc__))
    assert modules - mapped == set(), "modules missing from loop.py's map"
    assert mapped - modules == set(), "loop.py's map names modules that do not exist"


DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _chunks(text: str):
    """Paragraphs and list items: the units a claim lives in."""
    return [c for c in re.split(r"\n\s*\n|\n(?=\s*- )", text) if c.strip()]


def _custom_op_functions() -> set:
    """The public drift functions backed by a ``torch.ops.drift`` custom op: ``drift::<op>_forward``
    is defined in ``drift.ops.<op>``, the module the public function lives in."""
    import torch

    import drift

    ops = {n[: -len("_forward")] for n in dir(torch.ops.drift) if n.endswith("_forward")}
    assert ops, "no drift custom ops registered"
    return {n for n in drift.__all__ if getattr(getattr(drift, n), "__module__", "") in {f"drift.ops.{op}" for op in ops}}


def test_docs_call_custom_ops_only_what_is_one():
    """A paragraph or list item that says "custom op" / "torch.library" names only op-backed functions."""
    import drift

    backed = _custom_op_functions()
    assert backed == {"oal_loss", "token_logps"}, backed
    claimed = set()
    for doc in DOCS:
        for chunk in _chunks(doc.read_text()):
            if "custom op" not in chunk and "torch.library" not in chunk:
                continue
            named = {n for n in re.findall(r"`drift\.(\w+)", chunk) if n in drift.__all__}
            assert named <= backed, f"{doc.name}: {sorted(named - backed)} called custom ops in: {chunk.strip()[:200]}"
            claimed |= named
    assert claimed == backed, claimed  # README names both ops as such


def _cli_commands() -> set:
    import argparse

    from drift.cli import build_parser

    subs = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subs) == 1
    return set(subs[0].choices)


def test_every_drift_command_the_docs_show_exists():
    commands = _cli_commands()
    shown = set()
    for doc in DOCS + [REPO / "experiments" / "paper_orderings" / "README.md"]:
        text = doc.read_text()
        inline = re.findall(r"`drift ([a-z][\w-]*)", text)
        blocks = [ln.split()[1] for b in re.findall(r"```bash\n(.*?)```", text, re.S) for ln in b.splitlines()
                  if ln.startswith("drift ") and len(ln.split()) > 1 and not ln.split()[1].startswith("-")]
        unknown = set(inline + blocks) - commands
        assert not unknown, f"{doc.name} shows drift commands the CLI lacks: {sorted(unknown)}"
        shown |= set(inline + blocks)
    assert shown == commands, sorted(commands - shown)  # every command is documented somewhere
    listed = re.search(r"every\s+CLI\s+command\s+\(([^)]*)\)", (REPO / "README.md").read_text())
    assert listed and set(re.findall(r"`(\w+)`", listed.group(1))) == commands, listed


def test_the_demo_time_is_the_same_wherever_it_is_stated():
    where = [REPO / "README.md", REPO / "docs" / "TRAINER.md", REPO / "python" / "drift" / "configs" / "demo_xsum.yaml"]
    times = {p.name: set(re.findall(r"(\d+ min \d+ s|about \d+ minutes|\d+ minutes)", p.read_text())) for p in where}
    for name, found in times.items():
        assert "4 min 35 s" in found, (name, found)
    assert not re.search(r"about \d+ minutes|<= \d+ minutes|up to \d+ minutes", " ".join(p.read_text() for p in where))


def test_trainer_doc_lists_every_setting_that_may_change_on_resume():
    from drift.trainer.rundir import FREE_SETTINGS

    text = (REPO / "docs" / "TRAINER.md").read_text()
    section = text[text.index("### Resuming"):]
    section = section[: section.index("\n### ", 1)]
    missing = sorted(n for n in FREE_SETTINGS if f"`{n}`" not in section)
    assert not missing, missing


def test_method_doc_has_a_formula_for_every_loss_type():
    import drift

    method = (REPO / "docs" / "METHOD.md").read_text()
    for loss_type in drift.LOSS_TYPES:
        assert re.search(rf"^\s+{loss_type}\b.*l_{loss_type}\(h\)\s*=", method, re.M), loss_type
