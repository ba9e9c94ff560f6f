"""The README and the docs say true things: their policies validate, their Python runs
(or is marked as a fragment, see CONTRIBUTING.md), the README's script runs as written."""

from __future__ import annotations

import ast
import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cascade_notify.errors import PolicyError
from cascade_notify.policy import load_config, load_config_data
from cascade_notify.providers.registry import get as provider_class

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)
MARKER = re.compile(r"<!--\s*(fragment|tested)\b:?\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    text: str
    marker: tuple[str, str] | None  # ("fragment", why) or ("tested", "tests/...")

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _blocks(language: str) -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(1) != language:
                continue
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marked = MARKER.fullmatch(before.strip())
            marker = (marked.group(1), marked.group(2)) if marked else None
            line = text.count("\n", 0, match.start()) + 1
            found.append(Block(page, line, language, match.group(2), marker))
    return found


class _AnyEnv(Mapping[str, str]):
    """Every `${VAR}` a page names, with a value of the right shape for its name."""

    def __getitem__(self, name: str) -> str:
        if name.endswith("LINK_SECRET"):
            return "4f0c2a9e8b7d6c5b4a3928171605f4e3d2c1b0a99887766554433221100ffeed"
        if name.endswith("WEBHOOK_SECRET"):
            return "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        if "TOKEN" in name and ("TG" in name or "TELEGRAM" in name):
            return "123456789:AAEexampleexampleexampleexampleexa"
        if name.endswith("PHONE_ID"):
            return "106540352242922"
        if name.endswith("URL"):
            return "https://hooks.example.com/inbox"
        if "PORT" in name:
            return "587"
        if "FROM" in name or "EMAIL" in name:
            return "parcels@example.com"
        if "SID" in name:
            return "AC" + "0" * 32
        if "PHONE" in name or "NUMBER" in name:
            return "+15005550006"
        return "example-value-123456"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def get(self, name: str, default: Any = None) -> str:  # type: ignore[override]
        return self[name]


def _is_scenario(path: Path) -> bool:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return isinstance(data, dict) and "providers" not in data and "traffic" in data


SCENARIOS = [p for p in sorted((ROOT / "examples").rglob("*.yaml")) if _is_scenario(p)]


def _policy_blocks() -> list[Any]:
    cases = []
    for block in _blocks("yaml"):
        data = yaml.safe_load(block.text)
        if isinstance(data, dict) and "providers" in data:
            cases.append(pytest.param(block, id=str(block)))
    for path in sorted([*(ROOT / "examples").rglob("*.yaml"), *(ROOT / "docs").rglob("*.yaml")]):
        text = path.read_text(encoding="utf-8")
        if path in SCENARIOS:
            continue  # a simulation scenario, not a policy: test_every_scenario_loads
        cases.append(
            pytest.param(Block(path, 1, "yaml", text, None), id=str(path.relative_to(ROOT)))
        )
    return cases


@pytest.mark.parametrize("block", _policy_blocks())
def test_every_policy_on_the_pages_validates(block: Block) -> None:
    """Each policy a page or an example shows loads as `cascade-notify validate` loads
    it (a page showing only `providers:` gets a step per provider to check them)."""
    data = yaml.safe_load(block.text)
    try:
        if "policies" in data:
            load_config(block.text, env=_AnyEnv())
        else:
            steps = []
            for name, settings in data["providers"].items():
                channel = (
                    settings.get("channel") or provider_class(settings["type"]).default_channel
                )
                steps.append({"channel": channel, "providers": [name], "wait_for": "accepted"})
            load_config_data({**data, "policies": {"p": {"steps": steps}}}, env=_AnyEnv())
    except PolicyError as exc:
        # a path to a file on the reader's machine (a CA bundle) is theirs to give
        issues = [i for i in exc.issues if "does not point to a file" not in i.message]
        if issues:
            listed = "\n".join(f"  {issue}" for issue in issues)
            pytest.fail(f"{block}: the policy shown there is refused:\n{listed}")


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_scenario_loads(path: Path) -> None:
    """Each `cascade-notify simulate` scenario in examples/ loads as the command loads it."""
    from cascade_notify.simulate import load_scenario

    load_scenario(path)


def test_the_bundled_scenarios_are_found() -> None:
    assert {p.name for p in SCENARIOS} >= {"outage-2021-10-04.yaml", "blocked-messenger.yaml"}


def _python_blocks() -> list[Any]:
    return [pytest.param(block, id=str(block)) for block in _blocks("python")]


@pytest.mark.parametrize("block", _python_blocks())
def test_every_python_block_runs_or_is_marked(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Python block on a page runs as written, in a folder of its own; or the line
    before it says `<!-- fragment -->` (a piece of a larger program) or
    `<!-- tested: tests/... -->` (that test runs it, and names the page)."""
    if block.marker is not None and block.marker[0] == "fragment":
        ast.parse(block.text)  # a fragment is still Python
        return
    if block.marker is not None:
        test_file = ROOT / block.marker[1]
        assert test_file.is_file(), f"{block}: no test {block.marker[1]}"
        assert block.page.name in test_file.read_text(), f"{test_file} does not read {block}"
        return
    monkeypatch.chdir(tmp_path)
    code = compile(block.text, str(block), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    try:
        result = eval(code, namespace)  # noqa: S307  (our own docs)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    except Exception as exc:
        pytest.fail(
            f"{block} does not run ({type(exc).__name__}: {exc}); make it run, or mark "
            "it `<!-- fragment -->` on the line before (see CONTRIBUTING.md)"
        )


def _use_it() -> tuple[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use it", 1)[1].split("\n## ", 1)[0]
    blocks = {m.group(1): m.group(2) for m in FENCE.finditer(section)}
    return blocks["yaml"], blocks["python"]


def test_the_readme_use_it_script_runs_as_written(tmp_path: Path) -> None:
    """The "Use it" policy saved as cascade.yaml and the script beside it, run with
    python: it prints what its comment says, and the store file is where the README
    says (cascade.db in the working directory)."""
    policy, script = _use_it()
    assert policy.startswith("# cascade.yaml\n")
    (tmp_path / "cascade.yaml").write_text(policy)
    (tmp_path / "use_it.py").write_text(script)
    run = subprocess.run(
        [sys.executable, "use_it.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["delivered", "whatsapp"]
    assert run.stderr == ""
    assert (tmp_path / "cascade.db").is_file()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("*.db", "*.db-wal", "*.db-shm", "*.db-lock"):
        assert name in readme


def test_the_readme_keeps_its_two_commands() -> None:
    """The two set-up commands, exactly (.ci/run greps the second)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert (
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/cascade-notify demo"
        in lines
    )
    assert 'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && .venv/bin/pytest' in lines


def test_each_example_says_which_extras_it_needs() -> None:
    """examples/README.md lists every example with the extras it needs."""
    listing = (ROOT / "examples" / "README.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "examples").iterdir()):
        if path.suffix in (".py", ".yaml"):
            assert f"`{path.name}`" in listing, path.name
