"""Registry commands: `promote`, `rollback`, `registry list|gc` and `recommend`."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from pipelines.cli.common import command, load
from pipelines.errors import UsageError


def add_commands(sub: argparse._SubParsersAction) -> None:
    pr = command(
        sub,
        "promote",
        _promote,
        help="promote a run's bundle (if its gate passes) or an existing bundle",
    )
    group = pr.add_mutually_exclusive_group(required=True)
    group.add_argument("--run-dir", type=Path, help="an evaluated run")
    group.add_argument("--bundle", help="bundle id in the registry")
    pr.add_argument("--force", action="store_true", help="promote even if gate rules fail")
    pr.add_argument(
        "--reason", help="with --bundle: why (recorded in the registry history and the event)"
    )
    event_flag(pr)

    rb = command(sub, "rollback", _rollback, help="restore the previous production bundle")
    rb.add_argument("--reason", help="why (recorded in the registry history and the event)")
    event_flag(rb)

    reg = sub.add_parser("registry", help="list bundles in the registry")
    reg_sub = reg.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    lst = command(reg_sub, "list", _registry_list, help="bundles, oldest first; * marks production")
    lst.add_argument("--json", action="store_true", help="print JSON")
    gc = command(reg_sub, "gc", _registry_gc, help="remove debris of killed or failed publishes")
    gc.add_argument(
        "--older-than", type=float, default=3600.0, metavar="SECONDS",
        help="only debris untouched for this long (default 3600)",
    )  # fmt: skip

    rec = command(
        sub, "recommend", _recommend, help="top-K recommendations from the production bundle"
    )
    who = rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="one user id")
    who.add_argument("--users", type=Path, help="file with one user id per line")
    rec.add_argument("--out", type=Path, help="JSON lines output (with --users; default stdout)")
    rec.add_argument("--k", type=int, default=10, help="items per user (default 10)")
    seen = rec.add_mutually_exclusive_group()
    seen.add_argument(
        "--exclude-seen",
        dest="exclude_seen",
        action="store_true",
        default=True,
        help="leave out items the user already interacted with (default)",
    )
    seen.add_argument("--include-seen", dest="exclude_seen", action="store_false")
    rec.add_argument("--bundle", help="bundle id (default: production)")


def event_flag(parser: argparse.ArgumentParser) -> None:
    """`--no-airflow-event`: do not record the command's Airflow asset event."""
    parser.add_argument(
        "--airflow-event",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="record an Airflow asset event when AIRFLOW_HOME or "
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN names a deployment (default: yes)",
    )


def _promote(args) -> int:
    """With --run-dir: apply the gate to the run's evaluation and, if it passes (or --force),
    publish the bundle and swap the production pointer atomically. With --bundle: point
    production at a bundle already in the registry.

    The registry history records the change with the OS account as its user (`os:<login>`).
    When this environment names an Airflow deployment (AIRFLOW_HOME or
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN), a `production_bundle` asset event follows the swap
    (extra: action, bundle_id, previous, user, decision, headline metrics), so the asset's
    history in Airflow is production's history; --no-airflow-event skips it.
    """
    import json

    from pipelines.orchestration import events
    from pipelines.registry import Registry, os_user

    cfg = load(args, gate={"force_promote": args.force or None})
    registry = Registry(cfg.data.artifact_root)
    user = os_user()
    if args.bundle:
        before = registry.production()
        pointer = registry.promote(args.bundle, reason=args.reason or "manual promote", actor=user)
        if pointer["bundle_id"] == before:
            print(f"production is already {before}; nothing changed")
            return 0
        print(f"production -> {pointer['bundle_id']} (was {pointer['previous']})")
        _emit(args, events.pointer_event_extra(registry, pointer))
        return 0
    if args.reason:
        raise UsageError("--reason goes with --bundle; a run's promotion records its gate decision")
    from pipelines.layout import RunLayout
    from pipelines.steps.gate import gate
    from pipelines.steps.promote import promote

    layout = RunLayout(args.run_dir)
    decision = gate(cfg, layout)
    champion = registry.production()
    out = promote(cfg, layout, decision, layout.run_id, champion, actor=user)
    print(layout.gate_md.read_text())
    if not out["promoted"]:
        print("not promoted; production unchanged")
        return 1
    print(f"production -> {out['bundle_id']}")
    if out["bundle_id"] != champion:
        _emit(args, events.production_event_extra(
            action="promote", bundle_id=out["bundle_id"], previous=champion, user=user,
            decision=out["decision"],
            metrics=json.loads(layout.metrics.read_text()),
        ))  # fmt: skip
    return 0


def _rollback(args) -> int:
    """Point production back at the bundle it served before the current one.

    Recorded in the registry history with the OS account as its user (`os:<login>`) and, when
    this environment names an Airflow deployment, as a `production_bundle` asset event (see
    `promote`).
    """
    from pipelines.orchestration import events
    from pipelines.registry import Registry, os_user

    cfg = load(args)
    registry = Registry(cfg.data.artifact_root)
    pointer = registry.rollback(reason=args.reason or "rollback", actor=os_user())
    print(f"production -> {pointer['bundle_id']} (rolled back from {pointer['from']})")
    _emit(args, events.pointer_event_extra(registry, pointer))
    return 0


def _emit(args, extra: dict) -> None:
    """The `production_bundle` asset event of a change already made (never fails the command)."""
    from pipelines.orchestration import events

    if args.airflow_event and events.emit_production_event(extra):
        print(f"recorded in Airflow: {events.PRODUCTION_ASSET} asset event")


def _registry_gc(args) -> int:
    """Remove temporary bundle copies, incomplete bundles and temporary pointers left by killed or
    failed publishes. Never touches complete bundles, production or its predecessor, or anything
    younger than --older-than (a publish in flight).
    """
    from pipelines.registry import Registry

    cfg = load(args)
    if args.older_than < 0:
        raise UsageError(f"--older-than must be >= 0 seconds, got {args.older_than}")
    removed = Registry(cfg.data.artifact_root).gc(older_than_s=args.older_than)
    for path in removed:
        print(f"removed {path}")
    print(f"registry gc: {len(removed)} debris entries removed")
    return 0


def _registry_list(args) -> int:
    from pipelines.registry import Registry

    cfg = load(args)
    bundles = Registry(cfg.data.artifact_root).bundles()
    if args.json:
        print(json.dumps(bundles, indent=2))
        return 0
    if not bundles:
        print(f"no bundles in {cfg.data.artifact_root}/registry")
    for b in bundles:
        value = b["primary_value"]
        metric = f"{b['primary_metric']}={value:.4f}" if value is not None else ""
        print(f"{'*' if b['production'] else ' '} {b['bundle_id']}  {b['created_at']}  "
              f"run={b['run_id']}  {metric}  parent={b['parent']}")  # fmt: skip
    return 0


def _recommend(args) -> int:
    """Recommend for one user (--user) or a file of user ids, one per line (--users FILE --out
    FILE: one JSON line per user, {user_id, source, items: [{item_id, score}]}), read and
    written a batch of users at a time (--out appears complete, under its name, at the end).
    Unknown users get the recent-popularity fallback.
    """
    from pipelines.recommend import Recommender, recommend_stream
    from pipelines.registry import Registry

    cfg = load(args)
    registry = Registry(cfg.data.artifact_root)
    bundle = args.bundle or registry.production()
    if bundle is None:
        raise UsageError(
            f"no production bundle in {cfg.data.artifact_root}/registry; run `two-tower run` first"
        )
    recommender = Recommender(registry.fetch(bundle))
    try:
        source = (
            contextlib.nullcontext([args.user]) if args.user else args.users.open(encoding="utf-8")
        )
    except OSError as exc:
        raise UsageError(f"cannot read --users {args.users}: {exc.strerror}") from None
    with source as lines:
        if not args.out:
            recommend_stream(recommender, lines, sys.stdout, args.k, args.exclude_seen)
            return 0
        # Written as the users are answered, under a temporary name until the last one.
        partial = args.out.with_name(f".{args.out.name}.partial")
        try:
            with partial.open("w", encoding="utf-8") as out:
                n = recommend_stream(recommender, lines, out, args.k, args.exclude_seen)
            partial.replace(args.out)
        finally:
            partial.unlink(missing_ok=True)
    print(f"wrote {n} users to {args.out} (bundle {bundle})", file=sys.stderr)
    return 0
