"""The generated reference (docs/reference/) says what the code says, and CI notices
when it no longer does."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from pydantic import Field

from cascade_notify._reference import COMMAND, render, stale, write
from cascade_notify._reference import policy as policy_page
from cascade_notify._reference.__main__ import main
from cascade_notify.cli import app
from cascade_notify.errors import PolicyError
from cascade_notify.policy import load_config
from cascade_notify.policy.schema import _Step, _Top
from cascade_notify.providers import registry
from cascade_notify.resilience.settings import RetrySettings
from cascade_notify.stores.postgres import store as postgres_store
from cascade_notify.stores.sqlite import store as sqlite_store

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A copy of the committed reference pages to spoil."""
    shutil.copytree(DOCS / "reference", tmp_path / "reference")
    return tmp_path


def test_the_committed_pages_are_up_to_date() -> None:
    """docs/reference/ is what the generator writes now (else: run it and commit)."""
    assert stale(DOCS) == [], f"stale: regenerate with `{COMMAND}`"


def test_check_fails_on_a_stale_page_and_names_it(
    docs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--check` exits 1 naming the stale page and the command that regenerates it."""
    page = docs / "reference" / "policy.md"
    page.write_text(page.read_text(encoding="utf-8").replace("ttl", "tll", 1), encoding="utf-8")
    assert main(["--check", "--docs", str(docs)]) == 1
    err = capsys.readouterr().err
    assert "reference/policy.md" in err
    assert "reference/cli.md" not in err
    assert COMMAND in err


def test_check_fails_on_a_missing_page(docs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A page that was never generated is stale too."""
    (docs / "reference" / "cli.md").unlink()
    assert main(["--check", "--docs", str(docs)]) == 1
    assert "reference/cli.md" in capsys.readouterr().err


def test_check_passes_and_writes_nothing_when_up_to_date(docs: Path) -> None:
    """`--check` on fresh pages exits 0 and leaves them as they were."""
    before = {p: p.read_bytes() for p in (docs / "reference").iterdir()}
    assert main(["--check", "--docs", str(docs)]) == 0
    assert {p: p.read_bytes() for p in (docs / "reference").iterdir()} == before


def test_generating_repairs_a_stale_page(docs: Path) -> None:
    """Without `--check` the stale page is rewritten, and only it."""
    (docs / "reference" / "cli.md").write_text("old\n", encoding="utf-8")
    assert write(docs) == ["reference/cli.md"]
    assert stale(docs) == []


def test_the_module_runs_as_ci_runs_it(docs: Path) -> None:
    """`python -m cascade_notify._reference --check` fails on a stale page (CI's line)."""
    (docs / "reference" / "policy.md").write_text("old\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "cascade_notify._reference", "--check", "--docs", str(docs)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "reference/policy.md" in done.stderr


def test_every_covered_field_has_a_description() -> None:
    """Every field of every model the reference covers says what it is for."""
    assert policy_page.undocumented_fields() == []


def test_the_reference_covers_every_builtin_provider_type() -> None:
    """Each built-in type's settings and options are on the page, under its type name."""
    covered = policy_page.covered_models()
    text = render()["reference/policy.md"]
    for name in registry.BUILTIN:
        cls = registry.get(name)
        assert f"### `type: {name}`" in text
        if cls.Settings.model_fields:
            assert cls.Settings in covered
        for key in cls.Settings.model_fields:
            assert f"| `{key}` |" in text


def test_a_key_added_to_a_model_appears_in_the_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new field (with a nested model) shows up with its type, default and description."""

    class _WithRoutes(_Top):
        routes: dict[str, RetrySettings] = Field(
            default_factory=dict, description="Routes by country, for this test."
        )

    monkeypatch.setattr(policy_page, "_Top", _WithRoutes)
    text = policy_page.render()
    row = next(line for line in text.splitlines() if line.startswith("| `routes` |"))
    assert "Routes by country, for this test." in row
    assert "`{}`" in row
    assert _WithRoutes in policy_page.covered_models()


def test_a_field_without_description_is_reported_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The generator still writes the page, marks the field, and the check names it."""

    class _Bare(_Step):
        shiny: bool = False

    monkeypatch.setattr(policy_page, "_Step", _Bare)
    text = policy_page.render()
    assert "| `shiny` | true or false | `false` | **undocumented** |" in text
    assert any(where.endswith("._Bare.shiny") for where in policy_page.undocumented_fields())


def test_the_store_options_table_matches_the_stores() -> None:
    """Each option the store URLs take is on the page, and nothing else is."""
    listed = {(o.scheme, o.key) for o in policy_page.STORE_OPTIONS}
    taken = {("sqlite", k) for k in sqlite_store._OPTIONS} | {
        ("postgresql", k) for k in postgres_store._OPTIONS
    }
    assert listed == taken


def _keys(data: Any) -> set[tuple[str, str]]:
    """(level, key) of every key a policy file uses at the levels the page documents."""
    found = {("top", k) for k in data}
    for entry in (data.get("providers") or {}).values():
        found |= {("provider", k) for k in entry}
    for policy in (data.get("policies") or {}).values():
        found |= {("policy", k) for k in policy}
        for step in policy.get("steps") or []:
            found |= {("step", k) for k in step}
    return found


def _policy_files() -> list[Path]:
    """The example YAML files that are policies (the others are simulator scenarios)."""
    return [
        p
        for p in sorted(ROOT.glob("examples/**/*.yaml"))
        if "policies" in (yaml.safe_load(p.read_text(encoding="utf-8")) or {})
    ]


@pytest.mark.parametrize("path", _policy_files(), ids=lambda p: p.name)
def test_every_key_the_examples_use_is_on_the_page(path: Path) -> None:
    """The keys of the example policies all have a row on the reference page."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    text = render()["reference/policy.md"]
    for _, key in _keys(data):
        assert f"| `{key}` |" in text, key


def _commands(path: tuple[str, ...], command: Any) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path, command)]
    for name, child in (getattr(command, "commands", None) or {}).items():
        found += _commands((*path, name), child)
    return found


def test_the_cli_page_lists_every_command_and_option() -> None:
    """Each command typer builds has a heading, and each of its options a row."""
    text = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    commands = _commands(("cascade-notify",), typer.main.get_command(app))
    assert len(commands) > 20
    for path, command in commands:
        heading = f"`{' '.join(path)}`"
        found = re.search(rf"^#+ {re.escape(heading)}$", text, re.M)
        assert found, heading
        section = text[found.end() :].split("\n#", 1)[0]
        for param in command.params:
            names = param.opts if param.param_type_name == "option" else [param.name.upper()]
            for name in names:
                assert f"`{name}`" in section, (heading, name)


def test_the_output_is_deterministic_and_machine_free() -> None:
    """Two runs give the same bytes, with no path of this machine in them."""
    first, second = render(), render()
    assert first == second
    for text in first.values():
        assert str(ROOT) not in text
        assert str(Path.home()) not in text
        assert text.endswith("\n") and not text.endswith("\n\n")


def test_the_pages_are_in_the_nav_and_linked() -> None:
    """mkdocs lists both pages, and the hand-written pages link to them."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "reference/policy.md" in nav and "reference/cli.md" in nav
    assert "reference/policy.md" in (DOCS / "policy.md").read_text(encoding="utf-8")
    assert "reference/cli.md" in (DOCS / "cli.md").read_text(encoding="utf-8")


BOGUS = """\
bogus_top: 1
providers:
  wa: {type: whatsapp_cloud, phone_number_id: "1", access_token: a, app_secret: b,
       verify_token: c, bogus_provider: 1}
  sms: {type: smsru, api_id: x, bogus_provider: 1}
policies:
  service:
    bogus_policy: 1
    steps:
      - {channel: sms, providers: [sms], bogus_step: 1}
"""


def test_every_key_the_loader_allows_is_on_the_page() -> None:
    """The keys a typo's error offers (models and the loader's own) all have a row."""
    with pytest.raises(PolicyError) as caught:
        load_config(BOGUS, env={})
    text = render()["reference/policy.md"]
    offered = [
        key.strip()
        for issue in caught.value.issues
        if "allowed: " in issue.message
        for key in issue.message.split("allowed: ", 1)[1].rstrip(")").split(",")
    ]
    assert len(caught.value.issues) == 5
    assert {"providers", "policies", "type", "steps", "channel"} <= set(offered)
    for key in offered:
        assert f"| `{key}` |" in text, key
