"""What each CLI command does, over orchestr.api; printing only, no logic of its own.

The parser names these handlers, so `--help` loads this module too: what a command needs beyond the standard
library it imports when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence

from .errors import OrchestrError
from .output import EXIT_ERROR, EXIT_FAILED, colour, dumps, print_error, print_table

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, which would cost `--help` the import of typing
if TYPE_CHECKING:
    from .api import ApplyResult, Client, Sample
    from .executor import Outcome
    from .model import Container, LogLine
    from .planner import Action, Plan


async def run(args: argparse.Namespace) -> int:
    """The command args.handler, with a Client open for it."""
    from .api import Client

    async with Client(state_dir=args.state_dir, runtime=getattr(args, "runtime", None)) as oc:
        return await args.handler(oc, args)


# -- reconcile ---------------------------------------------------------------------------
def _load(args):
    from .spec import load

    return load(args.files, project=args.project_name, profiles=args.profiles,
                warn=lambda line: print_error(f"warning: {line}"))


def _cache_key(args) -> str | None:
    from . import speccache

    return speccache.key(args.files, f"{args.project_name}\0{','.join(args.profiles)}")


def complete(parser: argparse.ArgumentParser, words: list[str]) -> int:
    """Prints what may come at the last of words, one a line, for the completion scripts."""
    from .completion import Ask, answer, candidates

    found = candidates(parser, words)
    if isinstance(found, Ask):
        import anyio

        from .api import Client

        async def ask(question: Ask) -> list[str]:
            async with Client() as oc:
                return await answer(oc, question)

        try:
            found = anyio.run(ask, found, backend="asyncio")
        except Exception:  # noqa: BLE001 - a runtime that is down completes nothing
            found = []
    print(found if isinstance(found, str) else "\n".join(found))
    return 0


def cmd_convert(args) -> int:
    from .spec import dump

    print(dump(_load(args)), end="")
    return 0


_KIND_COLOURS = {"create": "green", "start": "green", "unpause": "green", "delete": "red", "stop": "red",
                 "recreate": "yellow", "pause": "yellow"}


def _describe(a: Action) -> str:
    kind = colour(f"{a.kind.value:<9}", _KIND_COLOURS.get(a.kind.value, "cyan"))
    return f"{kind} {a.namespace}/{a.name:<24} {a.runtime:<8} ({a.reason})"


def _print_plan(plan: Plan | None) -> None:
    if not plan:
        print("nothing to do: every service is as specified")
        return
    print(f"plan: {len(plan)} action{'s' * (len(plan) != 1)}")
    for a in plan:
        print(f"  {_describe(a)}")


def _print_outcome(o: Outcome) -> None:
    a = o.action
    if o.ok:
        print(f"  {colour('done', 'green')}     {a.kind.value} {a.namespace}/{a.name}", flush=True)
    elif o.skipped:
        print(f"  {colour('skipped', 'yellow')}  {a.kind.value} {a.namespace}/{a.name}: {o.error}", flush=True)
    else:  # an error: on stderr, as every error is
        sys.stdout.flush()  # what came before it comes first where both streams go to one place
        failed = colour("FAILED", "red", sys.stderr)
        print(f"  {failed}   {a.kind.value} {a.namespace}/{a.name}: {o.error}", file=sys.stderr, flush=True)


def _summary(result: ApplyResult) -> int:
    if not result.plan:
        return 0
    failed = [o for o in result.outcomes if not o.ok and not o.skipped]
    skipped = [o for o in result.outcomes if o.skipped]
    done = len(result.outcomes) - len(failed) - len(skipped)
    print(f"{done} done, {len(failed)} failed, {len(skipped)} skipped")
    return 0 if result.ok else EXIT_FAILED


async def cmd_apply(oc: Client, args) -> int:
    from . import speccache

    digest = _cache_key(args)
    cached = speccache.lookup(oc.config.state_dir, digest) if digest else None
    # the cache only ever tells that nothing needs doing: any other plan is made from validated files below
    if cached and not await oc.plan(cached, prune=args.prune, runtime=args.runtime, check_capacity=False):
        _print_plan(None)  # unchanged files, and nothing to do: no need to validate them again
        return await _wait(oc, args, cached)
    services = _load(args)
    if digest:
        speccache.remember(oc.config.state_dir, digest, services)
    if args.dry_run:
        _print_plan(await oc.plan(services, prune=args.prune, runtime=args.runtime))
        return 0
    from .progress import PullPrinter

    with PullPrinter(quiet=args.quiet) as progress:
        result = await oc.apply(
            services, prune=args.prune, runtime=args.runtime, on_plan=_print_plan,
            on_event=lambda outcome: progress.above(lambda: _print_outcome(outcome)), sources=args.files,
            settle=args.settle, wait_timeout=args.wait_timeout,
            on_rollback=lambda line: progress.above(lambda: _print_rollback(line)), progress=progress,
        )
    code = _summary(result)
    deployed = {a.namespace for a in result.plan if a.kind.value == "deploy"}
    if code or args.wait is not None:
        return code or await _wait(oc, args, services)
    if deployed:  # said, as what apply guarantees differs from the other runtimes'
        print(f"the runtime starts the replicas of the services deployed: `orchestr get -n "
              f"{' / -n '.join(sorted(deployed))}` shows them, `apply --wait DURATION` waits for them")
    return code


async def _wait(oc: Client, args, services) -> int:
    if args.wait is None:
        return 0
    short = await oc.wait_running(services, timeout=args.wait, runtime=args.runtime)
    if short:
        print_error(f"not every replica runs {args.wait:g}s after apply: {', '.join(short)}")
        return EXIT_FAILED
    print("every replica runs")
    return 0


def _print_rollback(line: str) -> None:
    sys.stdout.flush()
    print(f"{colour('ROLLBACK', 'red', sys.stderr)} {line}", file=sys.stderr, flush=True)


async def cmd_diff(oc: Client, args) -> int:
    try:
        plan = await oc.plan(_load(args), prune=args.prune, runtime=args.runtime)
    except OrchestrError as exc:
        print_error(str(exc))
        return EXIT_ERROR
    _print_plan(plan)
    return 1 if plan else 0


async def cmd_delete(oc: Client, args) -> int:
    if args.files and (args.namespace or args.all):
        raise OrchestrError("delete takes either -f FILE... or -n NAMESPACE --all, not both")
    if args.files:
        from . import speccache

        # files an apply validated as they are name their services in the cache: no validation (nor pydantic) again
        digest = _cache_key(args)
        services = (speccache.lookup(oc.config.state_dir, digest) if digest else None) or _load(args)
        result = await oc.delete(services, on_event=_print_outcome, sources=args.files)
    elif args.namespace and args.all:
        result = await oc.delete(namespace=args.namespace, on_event=_print_outcome)
    else:
        raise OrchestrError("delete needs -f FILE... or -n NAMESPACE --all")
    if not result.plan:
        print("nothing to delete")
    return _summary(result)


# -- reading -----------------------------------------------------------------------------
TABLE = ("NAMESPACE", "NAME", "STATE", "HEALTH", "RESTARTS", "RUNTIME", "IMAGE", "ID")
WIDE = TABLE + ("PID", "IP", "PORTS", "EXIT", "SPEC-HASH", "CREATED")


def _row(c: Container, wide: bool) -> tuple:
    state = str(c.state)
    if c.state == "exited":
        state = f"exited ({c.exit_code}{', OOMKilled' if c.oom_killed else ''})"
        if c.next_restart:  # RFC 3339, UTC: the time of day is what a reader wants
            state = f"backoff until {c.next_restart[11:19]}Z ({c.exit_code}{', OOMKilled' if c.oom_killed else ''})"
    row = (c.namespace, c.name, state, "" if c.health is None else str(c.health),
           "" if c.restarts is None else c.restarts, c.runtime, c.image, c.id[:12])
    if wide:
        ports = ",".join(f"{p.host_ip}:{p.host_port}->{p.container_port}/{p.protocol}" for p in c.ports)
        row += (c.pid or "", c.ip or "", ports, "" if c.exit_code is None else c.exit_code, c.spec_hash,
                c.created_at or "")
    return row


WATCH_INTERVAL = 0.5  # seconds between two looks of get -w


async def cmd_get(oc: Client, args) -> int:
    if not args.watch:
        _print_get(await oc.get(None if args.all_namespaces else args.namespace, runtime=args.runtime), oc, args)
        return 0
    import anyio

    last = None
    while True:  # until interrupted, as kubectl get -w
        containers = await oc.get(None if args.all_namespaces else args.namespace, runtime=args.runtime)
        now = [c.as_dict() for c in containers]
        if now != last:
            if sys.stdout.isatty() and args.output in ("table", "wide"):
                print("\x1b[H\x1b[2J", end="")  # redrawn in place on a terminal
            elif last is not None and args.output == "yaml":
                print("---")
            _print_get(containers, oc, args)
            sys.stdout.flush()
            last = now
        await anyio.sleep(WATCH_INTERVAL)


def _print_get(containers: list[Container], oc: Client, args) -> None:
    for warning in oc.warnings:
        print_error(f"warning: {warning}")
    if args.output in ("json", "yaml"):
        print(dumps([c.as_dict() for c in containers], args.output))
    elif not containers:
        where = "any namespace" if args.all_namespaces else f"namespace {args.namespace!r}"
        print(f"no containers in {where}", file=sys.stderr)
    else:
        wide = args.output == "wide"
        print_table(WIDE if wide else TABLE, [_row(c, wide) for c in containers])


async def cmd_inspect(oc: Client, args) -> int:
    c = await oc.inspect(args.name, args.namespace)
    print(dumps({**c.as_dict(), "labels": dict(sorted(c.labels.items()))}, args.output))
    return 0


def _write_line(line: LogLine, timestamps: bool = False, prefix: bytes = b"") -> None:
    out = sys.stdout.buffer if line.stream == "stdout" else sys.stderr.buffer
    out.write(prefix)
    if timestamps and line.time:
        out.write(line.time.encode() + b" ")
    out.write(line.data)
    out.flush()


_REPLICA_COLOURS = ("cyan", "yellow", "green", "magenta", "blue")


async def cmd_logs(oc: Client, args) -> int:
    kind, slash, service = args.name.partition("/")
    if not slash:
        async for line in oc.logs(args.name, args.namespace, follow=args.follow, tail=args.tail):
            _write_line(line, args.timestamps)
        return 0
    if kind not in ("svc", "service") or not service:
        raise OrchestrError(f"logs {args.name!r}: expected a container name like web-0 or svc/SERVICE")
    prefixes: dict[str, bytes] = {}
    async for name, line in oc.service_logs(service, args.namespace, follow=args.follow, tail=args.tail):
        if name not in prefixes:  # as compose does: the replica's name, padded, then '|'
            out = sys.stdout if line.stream == "stdout" else sys.stderr
            tint = _REPLICA_COLOURS[len(prefixes) % len(_REPLICA_COLOURS)]
            prefixes[name] = colour(f"{name:<{len(service) + 3}} |", tint, out).encode() + b" "
        _write_line(line, args.timestamps, prefixes[name])
    return 0


STATS = ("NAMESPACE", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS")
STATS_INTERVAL = 1.0  # seconds between two samples; CPU % is the CPU time used between them


async def cmd_stats(oc: Client, args) -> int:
    import anyio

    from .runtime import supports

    before = {s.container.id: s for s in await oc.stats(args.namespace, args.names)}
    for name in sorted({s.container.runtime for s in before.values()}):
        if not supports(oc.runtime(name), "stats"):
            print_error(f"warning: the {name} runtime reports no stats")
    while True:
        await anyio.sleep(STATS_INTERVAL)
        samples = await oc.stats(args.namespace, args.names)
        usage = [_usage(before.get(s.container.id), s) for s in samples]
        before = {s.container.id: s for s in samples}
        if args.output == "json":
            print(dumps(usage, "json") if args.no_stream else json.dumps(usage), flush=True)
        elif args.output == "yaml":
            print(dumps(usage, "yaml") if args.no_stream else f"---\n{dumps(usage, 'yaml')}", flush=True)
        elif not usage and args.no_stream:
            print(f"no running containers in namespace {args.namespace!r}", file=sys.stderr)
        else:
            if not args.no_stream and sys.stdout.isatty():
                print("\x1b[H\x1b[2J", end="")  # top-like: each sample replaces the last on the screen
            print_table(STATS, [_stats_row(u) for u in usage])
            sys.stdout.flush()
        if args.no_stream:
            return 0


def _usage(before: Sample | None, now: Sample) -> dict:
    """What `stats -o json` prints for one container: now's sample, with CPU % since before."""
    c, st = now.container, now.stats
    cpu = None
    if before and before.stats and st and None not in (before.stats.cpu_seconds, st.cpu_seconds) and \
            before.taken and now.taken and now.taken > before.taken:
        cpu = round((st.cpu_seconds - before.stats.cpu_seconds) / (now.taken - before.taken) * 100, 2)
    memory_percent = None
    if st and st.memory is not None and st.memory_limit:
        memory_percent = round(st.memory / st.memory_limit * 100, 2)
    return {
        "namespace": c.namespace, "name": c.name, "runtime": c.runtime, "id": c.id, "state": str(c.state),
        "cpuPercent": cpu, "memory": st and st.memory, "memoryLimit": st and st.memory_limit,
        "memoryPercent": memory_percent, "pids": st and st.pids, "netRx": st and st.net_rx,
        "netTx": st and st.net_tx, "blockRead": st and st.block_read, "blockWrite": st and st.block_write,
    }


def _stats_row(u: dict) -> tuple:
    def pair(a: int | None, b: int | None) -> str:
        return "--" if a is None and b is None else f"{_size(a or 0)} / {_size(b or 0)}"

    cpu = "--" if u["cpuPercent"] is None else f"{u['cpuPercent']:.2f}%"
    memory = "--" if u["memory"] is None else \
        f"{_size(u['memory'], 1024)} / {'unlimited' if u['memoryLimit'] is None else _size(u['memoryLimit'], 1024)}"
    percent = "--" if u["memoryPercent"] is None else f"{u['memoryPercent']:.2f}%"
    return (u["namespace"], u["name"], cpu, memory, percent, pair(u["netRx"], u["netTx"]),
            pair(u["blockRead"], u["blockWrite"]), "--" if u["pids"] is None else u["pids"])


def _env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OrchestrError(f"-e {pair!r}: expected KEY=VALUE")
        env[key] = value
    return env


async def cmd_exec(oc: Client, args) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise OrchestrError("exec needs a command: orchestr exec NAME -- CMD...")
    if args.tty:
        sys.stdout.flush()
        with _raw_terminal(args.interactive):
            return await oc.exec_terminal(args.name, argv, args.namespace, env=_env(args.env) or None, user=args.user,
                                          stdin=sys.stdin.fileno() if args.interactive else None,
                                          stdout=sys.stdout.fileno())
    if args.interactive:
        raise OrchestrError("exec -i needs -t here: the command's input comes through a terminal (exec -it)")
    # streamed as it comes: nothing is kept, however much the command writes
    result = await oc.exec(args.name, argv, args.namespace, env=_env(args.env) or None, user=args.user,
                           output=_write_line)
    return result.exit_code


async def cmd_start(oc: Client, args) -> int:
    await oc.start(args.name, args.namespace)
    return 0


async def cmd_stop(oc: Client, args) -> int:
    await oc.stop(args.name, args.namespace, timeout=args.time)
    return 0


async def cmd_pause(oc: Client, args) -> int:
    await oc.pause(args.name, args.namespace)
    return 0


async def cmd_unpause(oc: Client, args) -> int:
    await oc.unpause(args.name, args.namespace)
    return 0


def _get_blocking(args: argparse.Namespace) -> int | None:
    """get, when every runtime it asks can list without an event loop (native); None otherwise."""
    from .api import Client

    oc = Client(state_dir=args.state_dir, runtime=getattr(args, "runtime", None))
    try:
        containers = oc.get_blocking(None if args.all_namespaces else args.namespace, runtime=args.runtime)
        if containers is None:
            return None
        _print_get(containers, oc, args)
        return 0
    finally:
        oc.store.close()


def run_blocking(args: argparse.Namespace) -> int | None:
    """`run` in the foreground on a runtime that needs no event loop for it (native, docker); None for every
    other command and case, which anyio.run(run, args) then does. A run whose image is missing has it pulled
    first, then runs here all the same. export needs no
    runtime at all, and runs here too; so does get, on runtimes that list without an event loop."""
    if args.command == "convert":
        return cmd_convert(args)
    if args.command == "completion":
        from .completion import SCRIPTS

        print(SCRIPTS[args.shell], end="")
        return 0
    if args.command == "get" and not args.watch:
        return _get_blocking(args)
    if args.command == "export":
        return cmd_export(args)
    if args.command != "run":
        return None
    attached = args.interactive or args.tty
    if args.detach:
        if attached:
            raise OrchestrError("run -d takes no -i or -t: a detached container has no terminal here to use")
        return None
    from .api import Client
    from .runtime import supports

    oc = Client(state_dir=args.state_dir, runtime=args.runtime)
    try:
        def once():  # type: ignore[no-untyped-def]
            with _raw_terminal(args.tty and args.interactive):
                return oc.run_blocking(
                    args.image, _argv(args), name=args.name, namespace=args.namespace, runtime=args.runtime,
                    remove=args.rm, env=_env(args.env), network=args.network, output=_write_line,
                    stdin=sys.stdin.fileno() if args.interactive else None, tty=args.tty, on_signal=_on_signal(args),
                )

        ran = once()
        rt = oc.runtime(args.runtime)
        if ran is None and attached and not supports(rt, "run_tty"):
            raise OrchestrError(f"run -i/-t needs a runtime that relays a terminal (native does); "
                                f"{args.runtime or oc.default_runtime} does not")
        if ran is None and supports(rt, "blocking_run"):  # the image is missing: pulled, then run here all the same
            import anyio

            anyio.run(_pull, oc, args, backend="asyncio")
            ran = once()
    finally:
        oc.store.close()
    return None if ran is None else _ran(*ran)


def cmd_export(args) -> int:
    from .export.kubernetes import to_kubernetes
    from .quantity import parse_quantity
    from .spec.fields import DNS_LABEL, _IMAGE

    if not _IMAGE.fullmatch(args.wait_image):
        raise OrchestrError(f"--wait-image: expected an image reference like busybox:1.36, got {args.wait_image!r}")
    if not all(DNS_LABEL.fullmatch(part) for part in args.cluster_domain.split(".")):
        raise OrchestrError(f"--cluster-domain: expected a DNS name like cluster.local, got {args.cluster_domain!r}")
    try:
        if parse_quantity(args.volume_size) <= 0:
            raise ValueError("expected a quantity greater than 0")
    except ValueError as e:
        raise OrchestrError(f"--volume-size: {e}, got {args.volume_size!r}") from None
    manifests = to_kubernetes(_load(args), wait_image=args.wait_image, cluster_domain=args.cluster_domain,
                              volume_size=args.volume_size)
    for warning in manifests.warnings:
        print_error(f"warning: {warning}")
    sys.stdout.write(manifests.dump())
    return 0


async def _pull(oc: Client, args) -> None:
    from .progress import PullPrinter

    with PullPrinter(quiet=args.quiet) as progress:
        await oc.runtime(args.runtime).ensure_image(args.image, progress)


@contextlib.contextmanager
def _raw_terminal(raw: bool) -> Iterator[None]:
    """Standard input as a raw terminal meanwhile, so every key goes to the container's terminal as it is."""
    if not raw or not sys.stdin.isatty():
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def cmd_run(oc: Client, args) -> int:
    from .progress import PullPrinter

    with PullPrinter(quiet=args.quiet) as progress:
        container, code = await oc.run(
            args.image, _argv(args), name=args.name, namespace=args.namespace, runtime=args.runtime, remove=args.rm,
            detach=args.detach, env=_env(args.env), network=args.network, output=_write_line, progress=progress,
            on_signal=_on_signal(args),
        )
    if args.detach:
        print(container.id)
        return 0
    return _ran(container, code)


def _on_signal(args) -> str:
    return "forward" if args.sig_proxy == "true" else "leave"


def _argv(args) -> list[str]:
    return args.argv[1:] if args.argv[:1] == ["--"] else args.argv


def _ran(container: Container, code: int | None) -> int:
    if container.oom_killed:
        print_error(f"{container.name} was killed: out of memory")
    return code if code is not None else EXIT_FAILED


async def cmd_controller(oc: Client, args) -> int:
    if args.action == "status":
        return _controller_status(oc)
    import signal

    import anyio

    from .containers import rfc3339

    def log(entry: dict) -> None:
        print(json.dumps(entry, separators=(",", ":")), file=sys.stderr, flush=True)

    async with anyio.create_task_group() as tg:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for sig in signals:
                    log({"time": rfc3339(), "level": "info",
                         "msg": f"{signal.Signals(sig).name}: stopping, containers keep running"})
                    tg.cancel_scope.cancel()

        async def control() -> None:
            from .controller import Controller

            await Controller(oc, files=args.files or (), metrics_address=args.metrics_address or None,
                             resync=args.resync, on_log=log).run()
            tg.cancel_scope.cancel()

        tg.start_soon(stop_on_signal)
        tg.start_soon(control)
    return 0


def _controller_status(oc: Client) -> int:
    status = oc.store.controller_status()
    if status is None:
        print(f"no controller runs for state dir {oc.config.state_dir}")
        return EXIT_FAILED
    fields = [f"pid {status.get('pid')}", f"since {status.get('startedAt')}"]
    if status.get("metricsAddress"):
        fields.append(f"metrics http://{status['metricsAddress']}/metrics")
    if status.get("lastPass"):
        last = f"last pass {status['lastPass']} ({status.get('lastTrigger')}, {status.get('lastActions')} actions"
        fields.append(last + (f", failed: {status['lastError']})" if status.get("lastError") else ")"))
    if status.get("files"):
        fields.append("watching " + " ".join(status["files"]))
    print("controller running: " + "; ".join(fields))
    return 0


async def cmd_events(oc: Client, args) -> int:
    def show(event: dict) -> None:
        if args.output == "yaml":
            print(f"---\n{dumps(event, 'yaml')}", flush=True)
            return
        print(json.dumps(event, separators=(",", ":")) if args.output == "json" else _event_line(event), flush=True)

    await oc.events(show, args.namespace)
    return 0


def _event_line(e: dict) -> str:
    """One event for people: time, where, what, and the details that matter for that kind."""
    what = e.get("action", "")
    if what == "reconcile":
        actions = ", ".join(f"{a['kind']} {a['namespace']}/{a['name']} {a['outcome']}" for a in e.get("plan", []))
        detail = f"trigger={e.get('trigger')} duration={e.get('duration', 0):.3f}s " + (actions or "nothing to do")
        if e.get("error"):
            detail += f" error={e['error']}"
        return f"{e.get('time', '')}  controller  reconcile  {detail}"
    where = f"{e.get('namespace', '')}/{e.get('name', '')}" if e.get("name") else ""
    who = e.get("runtime", "") if e.get("source") != "controller" else f"controller({e.get('runtime', '')})"
    details = []
    if "exitCode" in e:
        details.append(f"exitCode={e['exitCode']}")
    if "restarts" in e:
        details.append(f"restarts={e['restarts']}")
    if "delay" in e:
        details.append(f"delay={e['delay']:g}s")
    if "health" in e:
        details.append(e["health"])
    if "reason" in e:
        details.append(f"({e['reason']})")
    if "error" in e:
        details.append(f"error={e['error']}")
    return "  ".join(x for x in (e.get("time", ""), who, where, what, " ".join(details)) if x)


async def cmd_history(oc: Client, args) -> int:
    revisions = oc.store.revisions(args.namespace)
    if not revisions:
        print("no revisions yet", file=sys.stderr)
        return 0
    print_table(
        ("REVISION", "APPLIED", "ACTION", "STATUS", "NAMESPACES", "FILES"),
        [(r.id, r.applied_at, r.action, r.status, ",".join(r.namespaces), " ".join(r.sources)) for r in revisions],
    )
    return 0


async def cmd_rollout(oc: Client, args) -> int:
    """rollout status|history|undo of one service, from the state store's revisions and its runtime's containers."""
    from .endpoints import ready
    from .spec.loader import Lines
    from .spec.models import validate

    ns, name = args.namespace, args.service
    history = oc.store.service_history(ns, name)
    if not history:
        raise OrchestrError(f"no service {name!r} was ever applied in namespace {ns!r} (see `orchestr history -n {ns}`)")

    def service(revision: int, doc: dict):  # type: ignore[no-untyped-def]
        return validate(doc, f"revision {revision}: {ns}/{name}", 0, Lines(), None)

    current = oc.store.services(ns).get((ns, name))
    if args.action == "history":
        rows = []
        for r, doc in history:
            shown = service(r.id, doc) if doc is not None else None
            rows.append((r.id, r.applied_at, r.action, r.status, shown.spec_hash if shown else "(removed)",
                         shown.spec.image if shown else "", "*" if doc is not None and doc == current else ""))
        print_table(("REVISION", "APPLIED", "ACTION", "STATUS", "SPEC-HASH", "IMAGE", "CURRENT"), rows)
        return 0
    if args.action == "undo":
        if args.to_revision is not None:
            chosen = [(r, doc) for r, doc in history if r.id == args.to_revision]
            if not chosen or chosen[0][1] is None:
                raise OrchestrError(f"revision {args.to_revision} holds no spec of {ns}/{name} "
                                    f"(see `orchestr rollout history -n {ns} {name}`)")
        else:
            chosen = [(r, doc) for r, doc in history if doc is not None and doc != current][-1:]
            if not chosen:
                raise OrchestrError(f"{ns}/{name} has no earlier revision to go back to")
        revision, doc = chosen[0]
        print(f"rolling {ns}/{name} back to revision {revision.id}")
        result = await oc.apply([service(revision.id, doc)], on_plan=_print_plan, on_event=_print_outcome,
                                sources=[f"rollout undo {ns}/{name}"], on_rollback=_print_rollback)
        return _summary(result)
    if current is None:
        print(f"{ns}/{name} was deleted at revision {history[-1][0].id}")
        return EXIT_FAILED
    wanted = service(history[-1][0].id, current)
    replicas = [c for c in await oc.get(ns) if c.service == name and not c.oneoff]
    updated = [c for c in replicas if c.spec_hash == wanted.spec_hash]
    ready_ = [c for c in updated if ready(c)]
    last, _ = history[-1]
    print(f"{ns}/{name}: revision {last.id} ({last.action}, {last.status}), spec hash {wanted.spec_hash}: "
          f"{len(ready_)} of {wanted.spec.replicas} replicas updated and ready"
          + (f", {len(replicas) - len(updated)} of an older spec" if len(replicas) > len(updated) else ""))
    done = len(ready_) == wanted.spec.replicas == len(replicas)
    print("rollout complete" if done else "rollout not complete")
    return 0 if done else EXIT_FAILED


async def cmd_plugins(oc: Client, args) -> int:
    from .plugins import offers

    found = sorted(offers(), key=lambda r: r.shadowed_by is not None)  # the winners first
    default = oc.default_runtime if found else ""
    print_table(
        ("RUNTIME", "PLUGIN", "PACKAGE", "DEFAULT", "NOTE"),
        [(r.name, r.plugin, r.package, "*" if r.name == default and not r.shadowed_by else "",
          f"shadowed by {r.shadowed_by}" if r.shadowed_by else "") for r in found],
    )
    return 0


# -- images ------------------------------------------------------------------------------
def _size(n: float, step: int = 1000) -> str:
    """n bytes for people: in kB, MB, GB as docker images shows sizes; with step 1024 in KiB, MiB, GiB as
    docker stats shows memory."""
    units = ("B", "kB", "MB", "GB") if step == 1000 else ("B", "KiB", "MiB", "GiB")
    for unit in units:
        if n < step or unit == units[-1]:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= step
    return str(n)


async def cmd_images_pull(oc: Client, args) -> int:
    from .progress import PullPrinter

    with PullPrinter(quiet=args.quiet or args.output != "text") as progress:
        image = await oc.runtime(args.runtime).pull(args.ref, progress)
    if args.output != "text":
        print(dumps(image.as_dict(), args.output))
    else:
        print(image.digest or image.id if args.quiet else f"{args.ref}: {image.digest or image.id}")
    return 0


async def cmd_images_import(oc: Client, args) -> int:
    from .progress import PullPrinter
    from .runtime import require

    rt = oc.runtime(args.runtime)
    require(rt, "image_import", "import image archives")
    if not args.path.is_file():
        raise OrchestrError(f"{args.path}: no such file")
    with PullPrinter(quiet=args.quiet or args.output != "text") as progress:
        images = await rt.import_image(args.path, progress)
    if args.output != "text":
        print(dumps([i.as_dict() for i in images], args.output))
        return 0
    for image in images:
        print(image.id if args.quiet else f"imported {', '.join(image.references) or image.id}")
    return 0


async def cmd_images_export(oc: Client, args) -> int:
    from .runtime import require

    rt = oc.runtime(args.runtime)
    require(rt, "image_export", "export images")
    await rt.export_image(args.ref, args.path)  # type: ignore[attr-defined]  # ImageExporter, as require found
    print(f"exported {args.ref} to {args.path}")
    return 0


async def cmd_images_ls(oc: Client, args) -> int:
    images = await oc.runtime(args.runtime).images()
    if args.output != "table":
        print(dumps([i.as_dict() for i in images], args.output))
        return 0
    rows = []
    for i in images:
        refs = [r for r in i.references if "@" not in r] or ["<none>"]
        rows += [(r, i.id.removeprefix("sha256:")[:12], i.created or "", _size(i.size)) for r in refs]
    print_table(("REFERENCE", "IMAGE ID", "CREATED", "SIZE"), rows)
    return 0


async def cmd_images_inspect(oc: Client, args) -> int:
    print(dumps([await oc.runtime(args.runtime).image_inspect(args.ref)], args.output))
    return 0


async def cmd_images_history(oc: Client, args) -> int:
    rows = [
        ((h.id or "<missing>").removeprefix("sha256:")[:12], h.created or "", (h.created_by or "")[:60],
         _size(h.size), h.comment or "")
        for h in await oc.runtime(args.runtime).image_history(args.ref)
    ]
    print_table(("IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"), rows)
    return 0


async def cmd_images_rm(oc: Client, args) -> int:
    await oc.runtime(args.runtime).image_remove(args.ref, force=args.force)
    print(f"removed {args.ref}")
    return 0


async def cmd_images_prune(oc: Client, args) -> int:
    removed = await oc.runtime(args.runtime).image_prune()
    for item in removed:
        print(f"removed {item}")
    print(f"{len(removed)} removed")
    return 0
