"""The `orchestr` command: argument parsing over orchestr.commands; every error is one line."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

from . import commands
from .output import report


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with only, one that knows that command alone (building them all takes argparse about
    10 ms here, one under 1), or the whole one when only names no command."""
    p = _Parser(
        prog="orchestr", description="Declarative containers on one host: apply YAML specs to native, docker or plugin runtimes."
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--state-dir", metavar="DIR", help="state directory (env ORCHESTR_STATE_DIR)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str):
        return sub.add_parser(name, help=help) if only in (None, name) else _UNUSED

    def files(sp, required=True):
        sp.add_argument("-f", "--filename", dest="files", action="append", required=required, metavar="FILE",
                        help="spec, compose or Kubernetes file (repeatable; - for stdin)")
        sp.add_argument("-p", "--project-name", metavar="NAME",
                        help="compose files: the project, which is the namespace (default: name:, else the directory)")
        sp.add_argument("--profile", dest="profiles", action="append", default=[], metavar="PROFILE",
                        help="compose files: a profile to enable (repeatable; env COMPOSE_PROFILES)")

    def ns(sp):
        sp.add_argument("-n", "--namespace", default="default")

    sp = command("apply", help="converge the runtimes to spec files")
    sp.set_defaults(handler=commands.cmd_apply)
    files(sp)
    sp.add_argument("--runtime", help="runtime for services that name none")
    sp.add_argument("--dry-run", action="store_true", help="print the plan, do nothing")
    sp.add_argument("--prune", action="store_true", help="delete services of these namespaces the files omit")
    sp.add_argument("--wait-timeout", type=_duration, default="5m", metavar="DURATION",
                    help="how long a service waits for a dependency to become healthy or complete (default 5m)")
    sp.add_argument("--settle", type=_duration, default="250ms", metavar="DURATION",
                    help="watch containers this long after their start for a crash (default 250ms; 0: do not watch)")
    sp.add_argument("-q", "--quiet", action="store_true", help="pull images without printing progress")
    sp.add_argument("--wait", type=_duration, metavar="DURATION",
                    help="then wait, at most this long, until every replica runs (swarm starts them after apply "
                         "returns); exit 1 if some do not")

    sp = command("diff", help="print the plan; exit 0 if nothing would change, 1 if something would")
    sp.set_defaults(handler=commands.cmd_diff)
    files(sp)
    sp.add_argument("--runtime")
    sp.add_argument("--prune", action="store_true")

    sp = command("convert", help="print the orchestr spec of compose files or Kubernetes manifests")
    sp.set_defaults(handler=None)
    files(sp)

    sp = command("get", help="list containers")
    sp.set_defaults(handler=commands.cmd_get)
    sp.add_argument("-n", "--namespace", default="default")
    sp.add_argument("-A", "--all-namespaces", action="store_true")
    sp.add_argument("-o", "--output", choices=["table", "wide", "json", "yaml"], default="table")
    sp.add_argument("--runtime", help="ask only this runtime")
    sp.add_argument("-w", "--watch", action="store_true", help="print again whenever something changes, until ^C")

    sp = command("inspect", help="a container's state, ports, times and labels")
    sp.set_defaults(handler=commands.cmd_inspect)
    ns(sp)
    sp.add_argument("name")
    sp.add_argument("-o", "--output", choices=["json", "yaml"], default="json")

    sp = command("delete", help="delete the services of spec files, or a whole namespace")
    sp.set_defaults(handler=commands.cmd_delete)
    files(sp, required=False)
    sp.add_argument("-n", "--namespace")
    sp.add_argument("--all", action="store_true", help="with -n: every container of the namespace")

    sp = command("logs", help="print a container's output, or every replica's of svc/SERVICE")
    sp.set_defaults(handler=commands.cmd_logs)
    ns(sp)
    sp.add_argument("name", help="a container (web-0), or svc/SERVICE for every replica, each line prefixed")
    sp.add_argument("-f", "--follow", action="store_true")
    sp.add_argument("--tail", type=int, metavar="N")
    sp.add_argument("-t", "--timestamps", action="store_true")

    sp = command("stats", help="resource use of running containers, refreshed every second, as top")
    sp.set_defaults(handler=commands.cmd_stats)
    ns(sp)
    sp.add_argument("names", nargs="*", metavar="NAME", help="only these containers (default: every running one)")
    sp.add_argument("--no-stream", action="store_true", help="print one sample and exit")
    sp.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table",
                    help="json: one array per sample, on one line unless --no-stream; yaml: one document per sample")

    sp = command("exec", help="run a command in a running container")
    sp.set_defaults(handler=commands.cmd_exec)
    ns(sp)
    sp.add_argument("name")
    sp.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD...")
    sp.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("-u", "--user")
    sp.add_argument("-i", "--interactive", action="store_true", help="with -t: type this standard input into it")
    sp.add_argument("-t", "--tty", action="store_true",
                    help="give the command a terminal of its own, relayed here (raw, window size followed)")

    for verb, text, handler in (("start", "start a container", commands.cmd_start),
                                ("stop", "stop a container", commands.cmd_stop),
                                ("pause", "freeze a container", commands.cmd_pause),
                                ("unpause", "thaw a container", commands.cmd_unpause)):
        sp = command(verb, help=text)
        sp.set_defaults(handler=handler)
        ns(sp)
        sp.add_argument("name")
        if verb == "stop":
            sp.add_argument("-t", "--time", type=float, default=10.0, help="grace period in seconds")

    sp = command("run", help="run a one-off container, as `docker run`")
    sp.set_defaults(handler=commands.cmd_run)
    sp.add_argument("--rm", action="store_true", help="delete the container when it exits")
    sp.add_argument("-d", "--detach", action="store_true")
    sp.add_argument("-i", "--interactive", action="store_true", help="give the container this standard input")
    sp.add_argument("-t", "--tty", action="store_true", help="give the container a terminal (relayed here)")
    sp.add_argument("--sig-proxy", choices=["true", "false"], default="true",
                    help="pass SIGTERM, SIGHUP and SIGINT on to the container (default true); false: such a signal "
                         "leaves the container running, or stops and removes it with --rm")
    sp.add_argument("--runtime")
    sp.add_argument("--name")
    sp.add_argument("-n", "--namespace", default="default")
    sp.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--network", choices=["bridge", "host", "none"])
    sp.add_argument("-q", "--quiet", action="store_true", help="pull the image without printing progress")
    sp.add_argument("image")
    sp.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD...")

    sp = command("controller", help="keep every applied service converged, in the foreground")
    sp.set_defaults(handler=commands.cmd_controller)
    sp.add_argument("action", nargs="?", choices=["run", "status"], default="run",
                    help="run (the default) or status: whether a controller runs for the state dir, and how it does")
    sp.add_argument("-f", "--filename", dest="files", action="append", metavar="DIR_OR_FILE",
                    help="spec files, or directories of them, to watch: each change is validated and applied")
    sp.add_argument("--metrics-address", default="127.0.0.1:9377", metavar="HOST:PORT",
                    help="serve Prometheus metrics at /metrics and health at /healthz here (default 127.0.0.1:9377; "
                         "'' : not at all)")
    sp.add_argument("--resync", type=_duration, default="30s", metavar="DURATION",
                    help="a full pass this often, whatever the events (default 30s)")

    sp = command("events", help="stream what happens: container events and the controller's passes")
    sp.set_defaults(handler=commands.cmd_events)
    sp.add_argument("-n", "--namespace", help="only this namespace (default: every one)")
    sp.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table",
                    help="json: one object a line; yaml: one document each")

    sp = command("export", help="write spec files as another engine's objects (Kubernetes manifests)")
    sp.set_defaults(handler=commands.cmd_export)
    files(sp)
    sp.add_argument("--format", choices=["kubernetes"], required=True)
    sp.add_argument("--wait-image", default="busybox:1.36", metavar="IMAGE",
                    help="the image of the init containers that wait for dependsOn (needs sh and nslookup)")
    sp.add_argument("--cluster-domain", default="cluster.local", metavar="DOMAIN",
                    help="the cluster's DNS domain, for those waits (default cluster.local)")
    sp.add_argument("--volume-size", default="1Gi", metavar="QUANTITY",
                    help="the storage each named volume's claim asks for (default 1Gi)")

    sp = command("history", help="revisions applied to the state store")
    sp.set_defaults(handler=commands.cmd_history)
    sp.add_argument("-n", "--namespace")

    sp = command("rollout", help="a service's rolling update: its status, its revisions, going back")
    sp.set_defaults(handler=commands.cmd_rollout)
    sp.add_argument("action", choices=["status", "history", "undo"])
    ns(sp)
    sp.add_argument("service")
    sp.add_argument("--to-revision", type=int, metavar="N", help="undo: go back to this revision (default: the one "
                    "before the current spec)")

    sp = command("completion", help="print the shell completion script: . <(orchestr completion bash)")
    sp.set_defaults(handler=None)
    sp.add_argument("shell", choices=["bash", "zsh", "fish"])

    sp = command("plugins", help="the runtimes found and the package each came from")
    sp.set_defaults(handler=commands.cmd_plugins)

    img = command("images", "manage a runtime's images").add_subparsers(
        dest="images_command", metavar="COMMAND", required=True)

    def image_cmd(name, text, handler):
        sp = img.add_parser(name, help=text)
        sp.set_defaults(handler=handler)
        sp.add_argument("--runtime")
        return sp

    for name, text, handler, what in (
            ("pull", "fetch an image from its registry", commands.cmd_images_pull, "ref"),
            ("import", "load a docker-archive or OCI layout tarball", commands.cmd_images_import, "path")):
        sp = image_cmd(name, text, handler)
        sp.add_argument(what, type=Path if what == "path" else str)
        sp.add_argument("-q", "--quiet", action="store_true",
                        help="no progress; print only the image's digest (pull) or id (import)")
        sp.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text",
                        help="json, yaml: the image as `images ls -o json` lists it, and no progress")
    sp = image_cmd("export", "write an image as an OCI layout tarball", commands.cmd_images_export)
    sp.add_argument("ref")
    sp.add_argument("path", type=Path)
    image_cmd("ls", "list images", commands.cmd_images_ls).add_argument(
        "-o", "--output", choices=["table", "json", "yaml"], default="table")
    sp = image_cmd("inspect", "show an image's config and layers", commands.cmd_images_inspect)
    sp.add_argument("ref")
    sp.add_argument("-o", "--output", choices=["json", "yaml"], default="json")
    image_cmd("history", "show how an image's layers were made", commands.cmd_images_history).add_argument("ref")
    sp = image_cmd("rm", "remove an image", commands.cmd_images_rm)
    sp.add_argument("ref")
    sp.add_argument("--force", action="store_true")
    image_cmd("prune", "remove unused images and layers", commands.cmd_images_prune)
    if only is not None and only not in sub.choices:
        return build_parser()
    return p


class _Parser(argparse.ArgumentParser):
    """argparse's, whose formatters (it makes one for every argument defined, help or not) learn the terminal's
    width as shutil.get_terminal_size tells it, without importing shutil: that import, with its compression
    modules, is a fiftieth of `orchestr get`. Subcommands' parsers are of the same class."""

    def _get_formatter(self) -> argparse.HelpFormatter:
        try:
            columns = int(os.environ["COLUMNS"])
        except (KeyError, ValueError):
            columns = 0
        if columns <= 0:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
            except (AttributeError, ValueError, OSError):
                columns = 0
        width = (columns if columns > 0 else 80) - 2
        return self.formatter_class(prog=self.prog, width=width)  # type: ignore[call-arg]


class _Unused:
    """Takes a command's definition, keeping none of it: that of each command other than the one run."""

    def __getattr__(self, name: str):
        return lambda *args, **kw: self


_UNUSED = _Unused()


def _command(argv: list[str]) -> str | None:
    """The command argv runs when only the top-level options that are spelt out in full come before it; None
    otherwise (help, an abbreviated option, ...), for which the whole parser is built."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--state-dir":
            i += 2
        elif word == "--debug" or word.startswith("--state-dir="):
            i += 1
        else:
            return None if word.startswith("-") else word
    return None


def _duration(text: str) -> float:
    from .quantity import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    # Starting (imports above all) makes hundreds of thousands of objects and no garbage worth collecting; the
    # collector would walk them all many times over (about 4% of `orchestr get`). Once the command is known it
    # collects again, but for a one-shot listing, over in milliseconds.
    gc.disable()
    if argv[:1] == ["__complete"]:  # what the completion scripts ask: never an error, never a traceback
        raise SystemExit(commands.complete(build_parser(), argv[1:]))
    args = build_parser(_command(argv)).parse_args(argv)
    if args.command != "get" or args.watch:
        gc.enable()
    # pydantic looks for its own plugins through every installed package's metadata; the CLI has none.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        code = commands.run_blocking(args)
        if code is None:
            import anyio

            code = anyio.run(commands.run, args, backend="asyncio")
    except KeyboardInterrupt:
        code = 130
    except BaseException as exc:  # noqa: BLE001 - the one place errors become one line
        code = report(exc, args.debug)
    sys.stdout.flush()
    # Everything the command made is garbage now; collecting it at exit walks every object, several times
    # over (40-50 ms here). Frozen objects are skipped, and the process ends anyway.
    gc.freeze()
    raise SystemExit(code)
