"""The `riposte` command line: run the local stack, inspect it, normalize alert files, blocks."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from riposte.alerts.documents import read_documents
from riposte.alerts.errors import AlertParseError
from riposte.deployments.cli_input import read_alerts


def cmd_normalize(args: argparse.Namespace) -> int:
    from riposte.alerts.sources import SOURCES

    if args.source and args.source not in SOURCES:
        print(
            f"riposte normalize: unknown source '{args.source}' "
            f"(known: {', '.join(sorted(SOURCES))})",
            file=sys.stderr,
        )
        return 2
    out: list[str] = []
    for name in args.files:
        path = Path(name)
        try:
            alerts = read_alerts(path, args.source)
        except AlertParseError as exc:
            print(f"riposte normalize: {path}: {exc}", file=sys.stderr)
            return 2
        out.extend(json.dumps(alert.summary(), sort_keys=True) for alert in alerts)
    # Print only once every file parsed, so a failure never leaves half an output behind.
    if out:
        sys.stdout.write("\n".join(out) + "\n")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    """Sign FILE's alerts and post them to the intake, as a Defender automation would."""
    import httpx

    from riposte.alerts.sources import SOURCES, detect_source, iter_alert_payloads
    from riposte.deployments.signing import SIGNATURE_HEADER, sign
    from riposte.deployments.stack import local_secret
    from riposte.settings import get_settings

    settings = get_settings()
    path = Path(args.file)
    try:
        documents = list(read_documents(path))
        payloads = [p for d in documents for p in iter_alert_payloads(d)]
        if not payloads:
            raise AlertParseError("no alert in the file")
        source = args.source or detect_source(payloads[0])
    except AlertParseError as exc:
        print(f"riposte send: {path}: {exc}", file=sys.stderr)
        return 2
    if source not in SOURCES:
        print(f"riposte send: unknown source '{source}'", file=sys.stderr)
        return 2
    body = json.dumps(documents[0] if len(documents) == 1 else payloads).encode()
    headers = {"Content-Type": "application/json"}
    key = os.environ.get("RIPOSTE_SEND_HMAC_KEY")
    if args.key_file:
        key = Path(args.key_file).read_text().strip()
    if key is None:
        key = local_secret(settings.home.resolve() / "intake.hmac-key")
    headers[SIGNATURE_HEADER] = sign(body, [key.encode()])
    url = f"{(args.url or settings.intake_url).rstrip('/')}/alerts/{source}"
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(
            f"riposte send: cannot reach the intake at {url} ({type(exc).__name__})",
            file=sys.stderr,
        )
        return 1
    print(response.text)
    if response.status_code != 202:
        print(f"riposte send: the intake answered {response.status_code}", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from riposte.deployments.stack import status
    from riposte.settings import get_settings

    info = status(get_settings())
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        state = "running" if info["running"] else "not (fully) running"
        print(f"Riposte local stack: {state}")
        for key in ("responses", "prefect_ui", "prefect_api", "intake", "sandbox"):
            print(f"  {key:<12} {info[key]}")
        for name, url in info["simulators"].items():
            print(f"  {name:<12} {url}")
        for part, ok in info["up"].items():
            print(f"  {part:<12} {'up' if ok else 'DOWN'}")
    return 0 if info["running"] else 3


def cmd_up(args: argparse.Namespace) -> int:
    from riposte.deployments.stack import LocalStack, StackError, print_banner
    from riposte.settings import get_settings

    settings = get_settings()
    stack = LocalStack(settings)
    # `kill` and service managers send SIGTERM: stop the children as Ctrl-C would. SIGINT is
    # set too, since a shell starting us in the background leaves it ignored.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stack.start()
        samples = None if args.no_samples else stack.load_samples()
        print_banner(settings, samples, print)
        stack.watch()
    except KeyboardInterrupt:
        print("\nStopping ...", file=sys.stderr)
        return 0
    except StackError as exc:
        print(f"riposte up: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
    return 0


def cmd_blocks_register(args: argparse.Namespace) -> int:
    from riposte.deployments.local import register_block_types
    from riposte.limits import ensure_rate_limits, rate_budgets

    for slug in register_block_types():
        print(f"registered block type {slug}")
    budgets = rate_budgets()
    changes = ensure_rate_limits(budgets=budgets)
    for budget in budgets:
        done = ", ".join(sorted({changes[name] for name in budget.names}))
        print(f"rate limit {budget.describe()} ({done})")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from riposte.deployments.rollout import deploy

    return deploy(Path(args.prefect_file), run_prefect_deploy=not args.no_prefect_deploy)


def cmd_serve(args: argparse.Namespace) -> int:
    from riposte.deployments.serve import main as serve_main

    serve_main()
    return 0


def cmd_intake(args: argparse.Namespace) -> int:
    from riposte.deployments.intake import main as intake_main

    intake_main()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="riposte", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the local stack (Prefect, sandbox, intake, flows)")
    up.add_argument("--no-samples", action="store_true", help="do not load the sample alerts")
    up.set_defaults(func=cmd_up)

    st = sub.add_parser("status", help="URLs of the running local stack")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_status)

    norm = sub.add_parser("normalize", help="print each alert of FILE as one normalized JSON line")
    norm.add_argument("--source", help="force a parser instead of detecting the source")
    norm.add_argument("files", nargs="+", metavar="FILE")
    norm.set_defaults(func=cmd_normalize)

    send = sub.add_parser("send", help="sign an alert file and post it to the intake")
    send.add_argument("file", metavar="FILE")
    send.add_argument("--source", help="force the source instead of detecting it")
    send.add_argument("--url", help="intake base URL (default: the local stack's)")
    send.add_argument(
        "--key-file",
        help="file holding the HMAC key (default: $RIPOSTE_SEND_HMAC_KEY, else the local "
        "stack's .riposte/intake.hmac-key)",
    )
    send.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    send.set_defaults(func=cmd_send)

    blocks = sub.add_parser("blocks", help="Prefect blocks")
    blocks_sub = blocks.add_subparsers(dest="blocks_command", required=True)
    reg = blocks_sub.add_parser(
        "register", help="register Riposte's block types and create its per-API rate limits"
    )
    reg.set_defaults(func=cmd_blocks_register)

    dep = sub.add_parser(
        "deploy",
        help="roll out to the `riposte` process work pool: the pool, rate limits, lost-run "
        "automations, then `prefect deploy --all`",
    )
    dep.add_argument("--prefect-file", default="prefect.yaml", help="default: ./prefect.yaml")
    dep.add_argument(
        "--no-prefect-deploy",
        action="store_true",
        help="only the pool, limits and automations; run `prefect deploy` yourself",
    )
    dep.set_defaults(func=cmd_deploy)

    sub.add_parser("serve", help="serve the deployments (respond, poll)").set_defaults(
        func=cmd_serve
    )
    sub.add_parser("intake", help="run the intake service").set_defaults(func=cmd_intake)
    from riposte.deployments.policy_cli import add_policy_commands

    add_policy_commands(sub)
    from riposte.deployments.playbook_cli import add_playbook_commands

    add_playbook_commands(sub)
    from riposte.deployments.replay_cli import add_replay_command

    add_replay_command(sub)
    from riposte.deployments.doctor import add_doctor_command

    add_doctor_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
