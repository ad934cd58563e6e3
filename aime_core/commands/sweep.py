"""`aime sweep`: create a sweep on a running service, list and show them (leaderboard), cancel, promote."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser(
        "sweep", help="Hyperparameter sweeps on the service: create, list, show, cancel, promote."
    )
    sw.add_argument("--url", default=None, help="API URL (default AIME_API_URL or http://127.0.0.1:8000).")
    sw.add_argument(
        "--token", default=None, help="API token (default AIME_API_TOKEN, or asked of a local server)."
    )
    actions = sw.add_subparsers(dest="action", metavar="ACTION")

    c = actions.add_parser(
        "create",
        help="Create a sweep.",
        description="Example: aime sweep create --tier 1 --preset debug --synthetic --grid lr=1e-3,3e-4 "
        "--grid latent_dim=4,8 --seeds 0,1 --parallel 2 --set num_epochs=1",
    )
    c.add_argument(
        "--spec", default=None, help="JSON file with the whole POST /api/sweeps body (flags add to it)."
    )
    c.add_argument("--tier", type=int, default=None, help="Tier of the base launch (1, 2, 3).")
    c.add_argument("--preset", default=None, help="Extra preset on the tier, e.g. debug.")
    c.add_argument("--domain", default=None)
    c.add_argument("--task", default=None)
    c.add_argument("--synthetic", action="store_true", default=None, help="Train on the procedural dataset.")
    c.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="Base override (repeat)."
    )
    c.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2", help="Grid values (repeat).")
    c.add_argument(
        "--random",
        action="append",
        default=[],
        metavar="FIELD=KIND:A:B",
        help="Random spec, KIND uniform|loguniform|int with bounds, or choice:V1,V2 (repeat).",
    )
    c.add_argument("--count", type=int, default=None, help="Random configurations to draw.")
    c.add_argument("--sweep-seed", type=int, default=None, help="Seed of the random draws (reproducible).")
    c.add_argument("--seeds", default=None, help="Seeds per configuration, e.g. 0,1 (default 0).")
    c.add_argument("--metric", default=None, help="Metric to rank by (default eval/rollout_mse).")
    c.add_argument(
        "--mode", choices=("min", "max"), default=None, help="Lower (min) or higher (max) is better."
    )
    c.add_argument(
        "--parallel", type=int, default=None, help="Runs of the sweep allowed at once (default 2)."
    )
    c.add_argument(
        "--k", type=float, default=None, help="Early stop: loss above k x the sweep median (default 3)."
    )
    c.add_argument(
        "--patience", type=int, default=None, help="Early stop: for this many logged points (default 3)."
    )
    c.add_argument("--no-early-stop", action="store_true", help="Never stop runs early.")
    c.add_argument("--name", default=None)
    c.add_argument(
        "--wait", action="store_true", help="Wait for the sweep to finish, then print the leaderboard."
    )
    c.set_defaults(func=cmd_create)

    actions.add_parser("list", help="List sweeps.").set_defaults(func=cmd_list)
    s = actions.add_parser("show", help="A sweep's leaderboard and runs.")
    s.add_argument("id", type=int)
    s.add_argument("--json", action="store_true", help="Print the API's JSON.")
    s.set_defaults(func=cmd_show)
    x = actions.add_parser("cancel", help="Cancel a sweep's held, queued and running runs.")
    x.add_argument("id", type=int)
    x.set_defaults(func=cmd_cancel)
    p = actions.add_parser("promote", help="Launch the best configurations at the next tier.")
    p.add_argument("id", type=int)
    p.add_argument("--top-k", type=int, default=3, help="How many configurations (default 3).")
    p.add_argument("--tier", type=int, default=None, help="Target tier (default: the next one).")
    p.add_argument("--seeds", default=None, help="Seeds (default: the sweep's; 1,2,3,4,5 at tier 3).")
    p.add_argument("--parallel", type=int, default=None)
    p.add_argument("--no-preset", action="store_true", help="Drop the sweep's extra preset (e.g. debug).")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="Override (repeat).")
    p.set_defaults(func=cmd_promote)
    sw.set_defaults(func=lambda args: sw.print_help() or 0)


# ---------------------------------------------------------------------------------------------------------------


class UsageError(ValueError):
    pass


def _value(text: str) -> Any:
    """`1e-3` -> 0.001, `true` -> True, `8` -> 8; anything that is not JSON stays a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pair(text: str, flag: str) -> tuple[str, str]:
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise UsageError(f"{flag} {text!r}: expected FIELD=VALUE")
    return name.strip(), rest.strip()


def _random_spec(text: str) -> tuple[str, dict]:
    name, rest = _pair(text, "--random")
    kind, _, args = rest.partition(":")
    if kind == "choice":
        return name, {"choice": [_value(v) for v in args.split(",") if v]}
    parts = args.split(":")
    if kind not in ("uniform", "loguniform", "int") or len(parts) != 2:
        raise UsageError(
            f"--random {text!r}: use FIELD=uniform|loguniform|int:LOW:HIGH or FIELD=choice:V1,V2"
        )
    return name, {kind: [_value(parts[0]), _value(parts[1])]}


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None


def build_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /api/sweeps body from --spec and the flags (flags win)."""
    body: dict[str, Any] = json.loads(Path(args.spec).read_text()) if args.spec else {}
    base = {"kind": "train", **body.get("base", {})}
    for name in ("tier", "preset", "domain", "task", "synthetic"):
        if getattr(args, name) is not None:
            base[name] = getattr(args, name)
    sets = dict(_pair(t, "--set") for t in args.set)
    base["overrides"] = {**base.get("overrides", {}), **{k: _value(v) for k, v in sets.items()}}
    body["base"] = base
    grid = dict(body.get("grid", {}))
    for text in args.grid:
        name, values = _pair(text, "--grid")
        grid[name] = [_value(v) for v in values.split(",") if v]
    random = dict(body.get("random", {}))
    for text in args.random:
        name, spec = _random_spec(text)
        random[name] = spec
    if args.count is not None:
        random["count"] = args.count
    body["grid"], body["random"] = grid, random
    for name in ("sweep_seed", "metric", "mode", "parallel", "name"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if _seeds(args.seeds) is not None:
        body["seeds"] = _seeds(args.seeds)
    if args.no_early_stop:
        body["early_stop"] = False
    elif args.k is not None or args.patience is not None:
        es = {"k": args.k, "patience": args.patience}
        body["early_stop"] = {k: v for k, v in es.items() if v is not None}
    return body


def _client(args: argparse.Namespace):
    from aime_core.client import Client

    return Client(args.url or os.environ.get("AIME_API_URL", "http://127.0.0.1:8000"), token=args.token)


def _run(args: argparse.Namespace, fn) -> int:
    import httpx

    try:
        return fn(_client(args)) or 0
    except UsageError as exc:
        print(f"aime sweep: error: {exc}", file=sys.stderr)
        return 2
    except httpx.TransportError as exc:
        url = args.url or os.environ.get("AIME_API_URL", "http://127.0.0.1:8000")
        print(
            f"aime sweep: cannot reach the API at {url} ({exc}); is `aime up` running? (--url)",
            file=sys.stderr,
        )
        return 1
    except RuntimeError as exc:  # the API's answer (422 names the field and configuration)
        print(f"aime sweep: {exc}", file=sys.stderr)
        return 1


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_sweep(s: dict) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s["counts"].items()) if v)
    print(f"sweep {s['id']} [{s['status']}] tier {s['tier']}: {s['name']} ({counts})")
    print(
        f"ranked by {s['metric']} ({'lower' if s['mode'] == 'min' else 'higher'} is better), seeds {s['seeds']}"
    )
    varied = s.get("varied", [])
    head = ["rank", "config", *varied, "mean", "std", "n", "stopped", "runs"]
    rows = [
        [
            r["rank"] or "-",
            r["key"],
            *[_fmt(r["params"].get(v)) for v in varied],
            _fmt(r["mean"]),
            _fmt(r["std"]),
        ]
        + [r["n"], r["stopped"], ",".join(map(str, r["runs"]))]
        for r in s["leaderboard"]
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    for row in [head, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))
    for c in s.get("children", []):
        print(f"promoted to sweep {c['id']} (tier {c['tier']}): {[p['config'] for p in c['picks']]}")


def cmd_create(args: argparse.Namespace) -> int:
    try:
        body = build_body(args)  # flag mistakes are reported before any connection
    except (UsageError, OSError, json.JSONDecodeError) as exc:
        print(f"aime sweep: error: {exc}", file=sys.stderr)
        return 2

    def go(client) -> int:
        sweep = client._call("POST", "/api/sweeps", json=body)
        print(f"sweep {sweep['id']}: {len(sweep['configs'])} configurations x {len(sweep['seeds'])} seeds")
        if args.wait:
            while (sweep := client.sweep_info(sweep["id"]))["status"] == "running":
                time.sleep(2)
        print_sweep(client.sweep_info(sweep["id"]))
        return 0

    return _run(args, go)


def cmd_list(args: argparse.Namespace) -> int:
    def go(client) -> int:
        for s in client.sweeps():
            counts = ", ".join(f"{k} {v}" for k, v in sorted(s["counts"].items()) if v)
            print(
                f"{s['id']:>4}  {s['status']:<9}  tier {s['tier']}  {s['total_runs']:>3} runs  {s['name']}  ({counts})"
            )
        return 0

    return _run(args, go)


def cmd_show(args: argparse.Namespace) -> int:
    def go(client) -> int:
        s = client.sweep_info(args.id)
        print(json.dumps(s, indent=2, default=str)) if args.json else print_sweep(s)
        return 0

    return _run(args, go)


def cmd_cancel(args: argparse.Namespace) -> int:
    return _run(args, lambda client: print_sweep(client.cancel_sweep(args.id)))


def cmd_promote(args: argparse.Namespace) -> int:
    def go(client) -> int:
        body: dict[str, Any] = {"top_k": args.top_k, "tier": args.tier, "seeds": _seeds(args.seeds)}
        body["parallel"] = args.parallel
        body = {k: v for k, v in body.items() if v is not None}
        if args.no_preset:
            body["preset"] = None
        body["overrides"] = {k: _value(v) for k, v in (_pair(t, "--set") for t in args.set)}
        print_sweep(client._call("POST", f"/api/sweeps/{args.id}/promote", json=body))
        return 0

    return _run(args, go)
