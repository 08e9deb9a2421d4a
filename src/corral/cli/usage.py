"""``corral usage``: tokens used through the gateway (``GET /api/v1/usage``)."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.client import Client, CliError
from corral.cli.output import JsonOpt, print_json, print_table

DIMENSIONS = ("day", "user", "api_key", "model")


def usage(
    start: Annotated[str | None, typer.Option(help="First UTC day, YYYY-MM-DD.")] = None,
    end: Annotated[str | None, typer.Option(help="Last UTC day, included.")] = None,
    model: Annotated[str | None, typer.Option(help="One model, by name.")] = None,
    user_id: Annotated[int | None, typer.Option(help="One user's (admins).")] = None,
    by: Annotated[
        list[str] | None,
        typer.Option(
            help="Keep apart by day, user, api_key or model (repeat). Default: day, model."
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Requests and tokens, as the engines counted them: yours, or everyone's for admins."""
    group_by = by or ["day", "model"]
    unknown = [d for d in group_by if d not in DIMENSIONS]
    if unknown:
        raise CliError(f"--by takes {', '.join(DIMENSIONS)}; not {', '.join(unknown)}")
    report = Client().get(
        "/api/v1/usage", start=start, end=end, model=model, user_id=user_id, group_by=group_by
    )
    if json_output:
        return print_json(report)
    columns = {"day": "DAY", "user": "USER", "api_key": "KEY", "model": "MODEL"}
    fields = {"day": "day", "user": "username", "api_key": "api_key_id", "model": "model"}
    chosen = [d for d in DIMENSIONS if d in group_by]
    rows = [
        [
            *(row[fields[d]] if row[fields[d]] != "" else "(session)" for d in chosen),
            row["requests"],
            row["prompt_tokens"],
            row["completion_tokens"],
        ]
        for row in report["items"]
    ]
    total = report["total"]
    rows.append(
        ["total", *[""] * (len(chosen) - 1), total["requests"], total["prompt_tokens"],
         total["completion_tokens"]]
    )  # fmt: skip
    print_table([*(columns[d] for d in chosen), "REQUESTS", "PROMPT", "COMPLETION"], rows)
