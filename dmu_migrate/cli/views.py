"""How status and history look: readable in an 80-column terminal or a cron log.

An eight-column table folds every cell into slivers at 80 columns, so the
status table is printed only when it fits; otherwise each migration is a
short block of "field  value" lines. Names that users copy are never elided,
and long free text wraps under its own indent.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text


def when(stamp: str | None) -> str:
    """'2026-12-01T22:54:21+00:00' -> '2026-12-01 22:54:21 UTC': shorter, same information."""
    if not stamp:
        return "-"
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.utcoffset() == timedelta(0):
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return moment.isoformat(sep=" ", timespec="seconds")


def last_run(runs: list[dict[str, Any]]) -> str:
    """What the newest finished run changed in the target: +added ~updated -deleted."""
    for run in reversed(runs):
        if "added" in run:
            return f"+{run['added']} ~{run['updated']} -{run['deleted']}"
    return "-"


def describe_event(event: dict[str, Any]) -> str:
    """One line of a migration's history: a run that finished, a rollback, a prune."""
    if "rolled_back_at" in event:
        return f"{when(event['rolled_back_at'])}  rolled back: {event['what']}"
    if "pruned_at" in event:
        return f"{when(event['pruned_at'])}  pruned: {event['what']}"
    if "backfilled_at" in event:
        when_done = when(event["backfilled_at"])
        return f"{when_done}  backfilled {event['rows']} native rows from {event['input']}"
    changes = (
        f"+{event.get('added', event.get('rows', 0))} ~{event.get('updated', 0)} "
        f"-{event.get('deleted', 0)}"
    )
    return (
        f"{when(event.get('finished_at'))}  run done ({changes}): "
        f"{event.get('cut_over') or 'finished'}"
    )


def _status_fields(r: dict[str, Any]) -> dict[str, str]:
    shards = r.get("shard_status") or []
    done = sum(s["status"] == "done" for s in shards)
    return {
        "migration": r["key"],
        # Evolved from another store (--target-uri): where its old vectors still are.
        "source": r["source"] + (f" in {r['source_uri']}" if r.get("source_uri") else ""),
        "strategy": r["strategy"],
        "status": r["status"]
        + (f" ({done}/{len(shards)} shards done)" if shards else "")
        + (f" (--filter {r['filter']}: alias not moved)" if r.get("filter") else ""),
        "rows": f"{r['rows_done']}/{r['source_rows']}",
        "last run": last_run(r.get("runs") or []),
        "versions": f"{r['from_version']} -> {r['to_version']}",
        "alias": _aliases_cell(r),
        "updated": when(r["updated_at"]),
    }


def _aliases_cell(r: dict[str, Any]) -> str:
    """Each alias the migration moved and where it points now; before its first cut-over,
    the alias it will move."""
    moved = r.get("aliases") or []
    if not moved:
        return f"{r['alias']} -> {r['alias_target']}" if r["alias"] else "-"
    return ", ".join(
        f"{a['alias']} -> {a['points_at'] or '-'}"
        + (" (rolled back)" if a["rolled_back_at"] else "")
        for a in moved
    )


def describe_alias(a: dict[str, Any]) -> str:
    """One alias a migration moved: from where, when, and whether a rollback sent it back."""
    if a["previous"]:
        origin = f"from '{a['previous']}'"
    elif a.get("derived"):
        origin = "(what it named before is unknown: an older ledger record)"
    else:
        origin = "(it named no collection before)"
    moved = f" at {when(a['moved_at'])}" if a.get("moved_at") else ""
    now = (
        f"; rolled back {when(a['rolled_back_at'])}"
        if a["rolled_back_at"]
        else f"; points at '{a['points_at']}'"
    )
    return f"moved alias '{a['alias']}' {origin}{moved}{now}"


def _indented(text: str) -> Padding:
    return Padding(Text(text), (0, 0, 0, 2), expand=False)


def status_view(console: Console, rows: list[dict[str, Any]], title: str) -> RenderableType:
    """The table when it fits the console; else one block per migration."""
    fields = [_status_fields(r) for r in rows]
    table = Table(title=title)
    for name in fields[0]:
        table.add_column(name, overflow="fold")  # names are what users copy: never elide
    for f in fields:
        table.add_row(*f.values())
    # Measured without the console's limit, which a table would otherwise fold itself into.
    wanted = Measurement.get(console, console.options.update_width(10**6), table).maximum
    if wanted <= console.width:
        notes = [Text(f"{r['key']}: {r['quality']}") for r in rows if r.get("quality")]
        return Group(table, *notes)
    blocks: list[RenderableType] = [Text(title)]
    for r, f in zip(rows, fields, strict=True):
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for name, value in f.items():
            if name != "migration":
                grid.add_row(name, value)
        if r.get("quality"):
            grid.add_row("quality", r["quality"])
        blocks += [Text(f["migration"]), Padding(grid, (0, 0, 0, 2), expand=False)]
    return Group(*blocks)


def history_view(rows: list[dict[str, Any]]) -> RenderableType:
    """Each upgrade, oldest first: versions and status, then when and what happened."""
    lines: list[RenderableType] = []
    for r in rows:
        lines.append(Text(f"{r['from_version']} -> {r['to_version']}  {r['key']}  ({r['status']})"))
        origin = f", read from {r['source_uri']}" if r.get("source_uri") else ""
        lines.append(
            _indented(
                f"started {when(r['started_at'])}, adapters: {', '.join(r['adapters'])}{origin}"
            )
        )
        if r.get("quality"):
            lines.append(_indented(r["quality"]))
        lines += [_indented(describe_alias(a)) for a in r.get("aliases") or []]
        lines += [_indented(describe_event(event)) for event in r.get("runs") or []]
    return Group(*lines)
