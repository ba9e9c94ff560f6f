"""`cascade-notify demo` says true things: titles, labels, columns, the closing line."""

from __future__ import annotations

from pathlib import Path

from rich.cells import cell_len
from typer.testing import CliRunner

from cascade_notify.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def _demo(*args: str) -> list[str]:
    result = runner.invoke(app, ["demo", *args])
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_the_bundled_policy_tells_its_stories() -> None:
    """The bundled policy (also as examples/demo.yaml) gets its stories' titles."""
    for args in ((), ("-p", str(ROOT / "examples" / "demo.yaml"))):
        lines = _demo(*args)
        assert "Anna: WhatsApp is down, she blocked the bot, Viber gets through" in lines


def test_another_policy_gets_neutral_titles(tmp_path: Path) -> None:
    """A user's policy plays another scenario: no title claims what happened."""
    path = tmp_path / "other.yaml"
    path.write_text(
        "providers:\n"
        "  wa: {type: fake, channel: whatsapp}\n"
        "  sms: {type: fake, channel: sms}\n"
        "policies:\n"
        "  p: {steps: [{channel: whatsapp, providers: [wa]}, {channel: sms, providers: [sms]}]}\n"
    )
    out = "\n".join(_demo("-p", str(path)))
    assert "WhatsApp is down" not in out and "operator calls" not in out
    assert "Anna, who has whatsapp, telegram, viber and sms" in out
    assert "⇒ delivered on whatsapp" in out


def test_the_last_failure_of_a_step_is_not_a_retry() -> None:
    """WhatsApp is down for Anna: two retries, then the third failure says no tries
    are left (the cascade moves on, it does not retry)."""
    lines = _demo()
    anna = lines[lines.index("Anna: WhatsApp is down, she blocked the bot, Viber gets through") :]
    whatsapp = [line for line in anna[:8] if " whatsapp " in line]
    assert ["retry" in line for line in whatsapp] == [True, True, False]
    assert "no tries left" in whatsapp[-1]


def test_columns_line_up_in_terminal_cells_and_no_line_ends_in_spaces() -> None:
    """Every timeline row starts its words at the same cell as the rows around it,
    double-width glyphs (⌛, ✓✓) included; no line has trailing spaces."""
    lines = _demo()
    assert all(line == line.rstrip() for line in lines)
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line.startswith("  ") and line[2:3].isdigit():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    blocks = [b for b in blocks if b]
    assert len(blocks) == 3
    assert any("⌛" in line for block in blocks for line in block)
    for block in blocks:
        # the words start after the mark column: the same cell on every row
        starts = set()
        for line in block:
            mark = line.split()[2]
            head = line[: line.index(mark) + len(mark)]
            rest = line[len(head) :]
            starts.add(cell_len(head) + len(rest) - len(rest.lstrip()))
        assert len(starts) == 1, block


def test_the_closing_line_says_the_store_was_temporary() -> None:
    """The demo's SQLite file is deleted at the end, and the last line says so."""
    assert "temporary SQLite file, deleted now" in _demo()[-1]


def test_the_demo_ends_with_the_2021_outage_under_two_orders() -> None:
    """The last scene: the bundled 2021 scenario, cut down, fixed against learned order,
    with delivery rate, p95 and SMS sends and cost."""
    lines = _demo()
    start = lines.index(
        "The outage of 4 October 2021, simulated: fixed order against learned order"
    )
    table = lines[start:]
    header = next(line for line in table if line.strip().startswith("order"))
    assert header.split() == ["order", "delivered", "p95", "SMS", "sends", "SMS", "cost"]
    rows = [line.split() for line in table if line.strip().startswith(("fixed", "learned"))]
    assert [row[0] for row in rows] == ["fixed", "learned"]
    assert all(row[1].endswith("%") and row[-1] == "EUR" for row in rows)


def test_the_packaged_outage_files_are_the_examples() -> None:
    """The demo's copies of the scenario and the two policies are examples/scenarios'."""
    packaged = ROOT / "src" / "cascade_notify" / "cli" / "outage"
    for name in ("outage-2021-10-04.yaml", "parcel-policy.yaml", "parcel-policy-learned.yaml"):
        assert (packaged / name).read_text() == (ROOT / "examples" / "scenarios" / name).read_text()
