"""The fault tests' judge: reads every process's log and the store, and sorts each
delivery into ok, lost, duplicated or ambiguous."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cascade_notify.stores import open_store


@dataclass
class Verdicts:
    """Deliveries (by idempotency key) in each class, with why for the bad ones."""

    ok: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"ok {len(self.ok)}, lost {self.lost[:10]}, duplicated {self.duplicated[:10]}, "
            f"ambiguous {len(self.ambiguous)}"
        )


def read_logs(log_dir: Path) -> list[dict[str, Any]]:
    """Every record the processes logged. Each record is one `write` ending in a newline,
    but a SIGKILL can cut a process's last write where it crosses a page of the file
    (Linux looks for a fatal signal between the pages it copies): what follows the last
    newline is such a cut record (the process died in that very write), and is left out."""
    records = []
    for path in sorted(log_dir.glob("*.jsonl")):
        *whole, _cut = path.read_text().split("\n")
        records.extend(json.loads(line) for line in whole if line)
    return records


async def judge(log_dir: Path, store_url: str, zombies: frozenset[int] = frozenset()) -> Verdicts:
    """Sort every delivery a `send` returned:

    - lost: missing from the store, not final, or a provider request was made for an
      attempt the store does not have;
    - duplicated: two deliveries for one key; on one channel, two attempts that may both
      have reached the recipient (accepted, or no answer heard); or one attempt requested
      again after its outcome was recorded;
    - ambiguous: one attempt requested again, with the same key, while the store had no
      outcome for it (a kill, or a lost lease, came between request and record), or by a
      process in `zombies` (paused between its fenced pre-send write and the request,
      it sends the attempt its successor already sent: same key, the provider's to dedupe);
    - ok: all the rest.
    """
    records = read_logs(log_dir)
    returned: dict[str, set[str]] = defaultdict(set)
    requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
    answers: dict[str, str] = {}
    recorded: dict[str, float] = {}  # attempt -> when an outcome of it was first committed
    for r in records:
        if r["kind"] == "send_returned":
            returned[r["key"]].add(r["delivery"])
        elif r["kind"] == "request":
            requests[r["delivery"]].append(r)
        elif r["kind"] == "answer":
            answers[r["attempt"]] = r["outcome"]
        elif r["kind"] == "recorded":
            for attempt, status in r["attempts"]:
                if status != "sending":
                    recorded[attempt] = min(recorded.get(attempt, r["t"]), r["t"])
    verdicts = Verdicts()
    store = open_store(store_url)
    await store.open()
    try:
        for key, ids in sorted(returned.items()):
            if len(ids) > 1:
                verdicts.duplicated.append(f"{key}: {len(ids)} deliveries")
                continue
            [delivery_id] = ids
            delivery = await store.get(delivery_id)
            if delivery is None or not delivery.final:
                verdicts.lost.append(f"{key}: {'missing' if delivery is None else 'pending'}")
                continue
            known = {a.id for a in delivery.attempts}
            made = sorted(requests[delivery_id], key=lambda r: r["t"])
            if any(r["attempt"] not in known for r in made):
                verdicts.lost.append(f"{key}: a request the store has no attempt for")
                continue
            verdict = _verdict(made, answers, recorded, zombies)
            if verdict == "ok":
                verdicts.ok.append(key)
            elif verdict == "ambiguous":
                verdicts.ambiguous.append(key)
            else:
                verdicts.duplicated.append(f"{key}: {verdict}")
    finally:
        await store.close()
    return verdicts


def _verdict(
    made: list[dict[str, Any]],
    answers: dict[str, str],
    recorded: dict[str, float],
    zombies: frozenset[int],
) -> str:
    verdict = "ok"
    reached: dict[str, set[str]] = defaultdict(set)
    first: dict[str, dict[str, Any]] = {}
    for r in made:
        attempt = r["attempt"]
        if answers.get(attempt, "accepted") == "accepted":  # no answer heard: it may have
            reached[r["channel"]].add(attempt)
        if attempt not in first:
            first[attempt] = r
            continue
        if not r["idempotent"]:
            return f"attempt {attempt} requested again from a non-idempotent provider"
        if recorded.get(attempt, float("inf")) < r["t"] and r["pid"] not in zombies:
            return f"attempt {attempt} requested again after its outcome was recorded"
        verdict = "ambiguous"
    for channel, attempts in reached.items():
        if len(attempts) > 1:
            return f"{len(attempts)} attempts on {channel} may have reached the recipient"
    return verdict
