"""Compose files to Services: the Compose Specification's keys in orchestr's terms, each problem at its file, line and key.

The project (namespace) is -p, else COMPOSE_PROJECT_NAME, else the file's `name:`, else its directory's name.
Every key is translated, ignored with a warning where that is harmless, or refused; the README's table says which.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import SpecError
from .envfile import read_env_file
from .fields import DNS_LABEL, DNS_WORDS
from .loader import Lines
from .messages import show
from .models import Service
from .translated import Translated

Warn = Callable[[str], None]

# Keys that are dropped with a warning: what they do is either done anyway or only cosmetic here.
_IGNORED = {
    "container_name": "containers are named <service>-<replica>",
    "hostname": "a container's hostname is its name",
    "domainname": "a container's hostname is its name",
    "expose": "every port of a container is reachable from its namespace",
    "links": "services reach each other by service name anyway",
    "networks": "the services of a project share one network",
    "logging": "orchestr keeps every container's output itself",
    "stdin_open": "services have no standard input",
    "tty": "services have no terminal",
    "platform": "images run as they are",
    "pull_policy": "images are pulled when absent",
    "mem_reservation": "reservations are not enforced",
    "memswap_limit": "a memory limit also caps swap",
    "oom_score_adj": "not set",
    "build": "",  # replaced by a message naming the image, see _service
}
_TOP_IGNORED = {
    "version": "obsolete; compose ignores it too",
    "networks": "the services of a project share one network",
}
_KNOWN = {  # every other service key of the Compose Specification: refused with one line
    "annotations", "attach", "blkio_config", "cap_add", "cap_drop", "cgroup", "cgroup_parent", "configs",
    "cpu_count", "cpu_percent", "cpu_period", "cpu_quota", "cpu_rt_period", "cpu_rt_runtime", "cpu_shares",
    "cpuset", "credential_spec", "develop", "device_cgroup_rules", "devices", "dns", "dns_opt", "dns_search",
    "extends", "external_links", "extra_hosts", "gpus", "group_add", "ipc", "isolation", "mac_address",
    "oom_kill_disable", "pid", "post_start", "pre_stop", "privileged", "runtime", "secrets", "shm_size",
    "stop_signal", "storage_opt", "sysctls", "ulimits", "userns_mode", "uts", "volumes_from", "models",
    "use_api_socket", "label_file", "provider",
}
_TRANSLATED = {
    "image", "command", "entrypoint", "environment", "env_file", "ports", "volumes", "tmpfs", "depends_on",
    "healthcheck", "restart", "deploy", "mem_limit", "cpus", "pids_limit", "user", "working_dir", "read_only",
    "init", "network_mode", "labels", "stop_grace_period", "profiles", "security_opt", "scale",
}
_RESTART = {"no": "Never", "always": "Always", "on-failure": "OnFailure", "unless-stopped": "Always"}
_DEPLOY_RESTART = {"none": "Never", "on-failure": "OnFailure", "any": "Always"}
_CONDITIONS = {"service_started": "started", "service_healthy": "healthy",
               "service_completed_successfully": "completed"}
_BYTES = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?", re.IGNORECASE)


def recognises(data: Any) -> bool:
    """Whether a document is a compose file rather than an orchestr or Kubernetes document."""
    return isinstance(data, dict) and "services" in data and "apiVersion" not in data and "kind" not in data


def translate(data: dict[str, Any], filename: str, line: int, lines: Lines, base_dir: Path, *,
              project: str | None = None, profiles: tuple[str, ...] = (), environ: Mapping[str, str] | None = None,
              warn: Warn | None = None) -> list[Service]:
    """The Services of a compose document; raises SpecError naming the file, line and key of its first problem."""
    return _Compose(data, filename, line, lines, base_dir, environ if environ is not None else os.environ,
                    warn or (lambda _: None)).services(project, profiles)


def bytes_of(value: Any) -> int:
    """Bytes from a compose size: a number of bytes, or 512m, 1g, 64M, 1.5GB (binary multiples, as Docker's)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (m := _BYTES.fullmatch(value.strip())):
        return int(float(m[1]) * 1024 ** " kmgtp".index((m[2] or " ").lower()))
    raise ValueError("expected a size like 512m or 1g")


class _Compose:
    def __init__(self, data: dict[str, Any], filename: str, line: int, lines: Lines, base_dir: Path,
                 environ: Mapping[str, str], warn: Warn) -> None:
        self.data, self.file, self.line, self.lines, self.base_dir = data, filename, line, lines, base_dir
        self._warn = warn
        self.unset: set[str] = set()
        self.environ: dict[str, str] = {}
        dotenv = base_dir / ".env"
        if filename != "<stdin>" and dotenv.is_file():
            self.environ.update(read_env_file(dotenv, _shown(".env", filename), environ))
        self.environ.update(environ)  # the shell's variables win over .env's, as in compose

    # -- where --------------------------------------------------------------------------------------------
    def at(self, path: str, key: bool = False) -> int:
        return self.lines.find(path, self.line, key=key)

    def error(self, path: str, message: str, key: bool = False) -> SpecError:
        return SpecError(self.file, self.at(path, key) or None, path, message)

    def warn(self, path: str, message: str) -> None:
        self._warn(f"{self.file}:{self.at(path, key=True)}: {path}: {message}")

    # -- the file -----------------------------------------------------------------------------------------
    def services(self, project: str | None, active: tuple[str, ...]) -> list[Service]:
        if problems := self.lines.problems:
            where, path, message = min(problems)
            raise SpecError(self.file, where, path, message)
        self.data = self.interpolate(self.data, "")
        for key in self.data:
            if key in ("services", "name", "volumes") or key.startswith("x-"):
                continue
            if key in _TOP_IGNORED:
                self.warn(key, f"ignored: {_TOP_IGNORED[key]}")
            elif key in ("secrets", "configs", "include", "models"):
                raise self.error(key, f"not supported: orchestr has no {key}", key=True)
            else:
                raise self.error(key, "unknown top-level key, expected services, name, volumes, networks or x-*",
                                 key=True)
        namespace = self.project(project)
        self.volumes = self.named_volumes()
        services = self.data["services"]
        if not isinstance(services, dict) or not services:
            raise self.error("services", f"expected a mapping of service names to services, got {show(services)}")
        active = active or tuple(p for p in self.environ.get("COMPOSE_PROFILES", "").split(",") if p)
        enabled = {}
        for name, body in services.items():
            path = f"services.{name}"
            if not isinstance(body, dict):
                raise self.error(path, f"expected a service (a mapping), got {show(body)}")
            profiles = body.get("profiles", [])
            if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
                raise self.error(f"{path}.profiles", f"expected a list of profile names, got {show(profiles)}")
            if not profiles or set(profiles) & set(active):
                enabled[name] = body
        return [self.service(name, body, namespace, enabled, services) for name, body in enabled.items()]

    def project(self, given: str | None) -> str:
        if given:
            return self.project_name(given, "-p", None)
        if self.environ.get("COMPOSE_PROJECT_NAME"):
            return self.project_name(self.environ["COMPOSE_PROJECT_NAME"], "COMPOSE_PROJECT_NAME", None)
        if self.data.get("name") is not None:
            return self.project_name(self.data["name"], "name", "name")
        # a directory's name is made to fit, as compose does, rather than refused
        name = re.sub(r"[^a-z0-9-]+", "-", self.base_dir.name.lower()).strip("-")[:63].strip("-")
        return self.project_name(name or self.base_dir.name, f"the directory's name {self.base_dir.name!r}", None)

    def project_name(self, value: Any, where: str, path: str | None) -> str:
        name = value.lower().replace("_", "-") if isinstance(value, str) else value
        if isinstance(name, str) and DNS_LABEL.fullmatch(name):
            return name
        message = f"the project name is the namespace: expected {DNS_WORDS} ('_' becomes '-'), got {show(value)}"
        if path:
            raise self.error(path, message)
        raise SpecError(self.file, None, "", f"{where}: {message}; name the project with -p")

    def named_volumes(self) -> dict[str, str]:
        """Top-level volumes: compose name -> orchestr volume name."""
        declared = self.data.get("volumes") or {}
        if not isinstance(declared, dict):
            raise self.error("volumes", f"expected a mapping of volume names, got {show(declared)}")
        out: dict[str, str] = {}
        for key, body in declared.items():
            path = f"volumes.{key}"
            body = body or {}
            if not isinstance(body, dict):
                raise self.error(path, f"expected a volume (a mapping or nothing), got {show(body)}")
            for option, value in body.items():
                sub = f"{path}.{option}"
                if option == "driver" and value not in (None, "local"):
                    raise self.error(sub, f"not supported: orchestr's volumes are local directories, got driver {show(value)}")
                if option == "driver_opts" and value:
                    raise self.error(sub, "not supported: orchestr's volumes are plain directories with no options",
                                     key=True)
                if option == "external" and value:
                    raise self.error(sub, "not supported: a volume belongs to its namespace and is made on first use",
                                     key=True)
                if option == "labels":
                    self.warn(sub, "ignored: volumes carry no labels")
                elif option not in ("driver", "driver_opts", "external", "name") and not option.startswith("x-"):
                    raise self.error(sub, "unknown volume key, expected name, driver, driver_opts, external or labels",
                                     key=True)
            name = body.get("name", key)
            normal = re.sub(r"[_.]", "-", str(name).lower())
            if not DNS_LABEL.fullmatch(normal):
                raise self.error(path, f"expected a volume name of {DNS_WORDS} ('_' and '.' become '-'), got {show(name)}",
                                 key=True)
            if normal in out.values():
                other = next(k for k, v in out.items() if v == normal)
                raise self.error(path, f"becomes volume {normal!r}, as volumes.{other} does", key=True)
            out[key] = normal
        return out

    # -- interpolation ------------------------------------------------------------------------------------
    def interpolate(self, value: Any, path: str) -> Any:
        if isinstance(value, str):
            return self.substitute(value, path)
        if isinstance(value, list):
            return [self.interpolate(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.interpolate(v, f"{path}.{k}" if path else k) for k, v in value.items()}
        return value

    def substitute(self, text: str, path: str) -> str:
        """${VAR}, $VAR, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, ${VAR+alt}; $$ is $."""
        if "$" not in text:
            return text
        out, i = [], 0
        while i < len(text):
            c = text[i]
            if c != "$":
                out.append(c)
                i += 1
                continue
            after = text[i + 1:i + 2]
            if after == "$":
                out.append("$")
                i += 2
            elif after == "{":
                depth, j = 1, i + 2
                while j < len(text) and depth:
                    depth += {"{": 1, "}": -1}.get(text[j], 0)
                    j += 1
                if depth:
                    raise self.error(path, f"'${{' is not closed in {show(text)}")
                out.append(self.expand(text[i + 2:j - 1], path))
                i = j
            elif m := re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(text, i + 1):
                out.append(self.lookup(m[0], path))
                i = m.end()
            else:
                raise self.error(path, f"a '$' starts no variable in {show(text)}; write $$ for a literal $")
        return "".join(out)

    def expand(self, body: str, path: str) -> str:
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", body, re.S)
        if not m:
            raise self.error(path, f"expected ${{NAME}}, ${{NAME:-default}} or ${{NAME:?message}}, got ${{{body}}}")
        name, op, word = m[1], m[2], m[3]
        value = self.environ.get(name)
        if op is None:
            return self.lookup(name, path)
        empty = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return self.substitute(word, path) if empty else value  # type: ignore[return-value]
        if op.endswith("+"):
            return "" if empty else self.substitute(word, path)
        if empty:
            raise self.error(path, f"${name} is {'not set' if value is None else 'empty'}: "
                                   f"{self.substitute(word, path) or 'required'}")
        return value  # type: ignore[return-value]

    def lookup(self, name: str, path: str) -> str:
        if name not in self.environ:
            if name not in self.unset:  # once per variable, however often it is used
                self.unset.add(name)
                self.warn(path, f"${name} is not set; it becomes an empty string")
            return ""
        return self.environ[name]

    # -- a service ----------------------------------------------------------------------------------------
    def service(self, name: str, body: dict[str, Any], namespace: str, enabled: dict[str, Any],
                declared: dict[str, Any]) -> Service:
        root = f"services.{name}"
        if not isinstance(name, str) or not DNS_LABEL.fullmatch(name):
            raise self.error(root, f"a service name becomes a DNS name: expected {DNS_WORDS}, got {show(name)}", key=True)
        doc = Translated(self.file, self.lines, self.base_dir, root, namespace, name, f"{root}.")
        for key in body:
            if isinstance(key, str) and key.startswith("x-"):
                continue
            path = f"{root}.{key}"
            if key in _IGNORED and key != "build":
                self.warn(path, f"ignored: {_IGNORED[key]}")
            elif key not in _TRANSLATED and key != "build":
                if key in _KNOWN:
                    raise self.error(path, "not supported by orchestr (the README's compose table lists what is)",
                                     key=True)
                close = difflib.get_close_matches(str(key), sorted(_TRANSLATED | _KNOWN | set(_IGNORED)), n=1)
                hint = f", did you mean '{close[0]}'?" if close else ""
                raise self.error(path, f"unknown service key{hint}", key=True)
        if "image" not in body:
            if "build" in body:
                raise self.error(f"{root}.build", "not supported: orchestr does not build images; build it, and give "
                                                  "its reference as image", key=True)
            raise self.error(root, "expected an image", key=True)
        if "build" in body:
            self.warn(f"{root}.build", f"ignored: the image {show(body['image'])} must already be there or pullable")
        doc.put("image", body["image"], "image")
        self.argv(doc, body)
        env = self.env_files(body.get("env_file"), f"{root}.env_file") if "env_file" in body else {}
        env.update(self.environment(body.get("environment"), f"{root}.environment"))
        if env:
            doc.put("env", env, "environment" if "environment" in body else "env_file")
        for key, field in (("working_dir", "workingDir"), ("user", "user"), ("read_only", "readOnly"),
                           ("init", "init"), ("stop_grace_period", "stopGracePeriod")):
            if body.get(key) is not None:
                doc.put(field, body[key], key)
        if "labels" in body:
            doc.meta("labels", self.string_map(body["labels"], f"{root}.labels", "labels"), "labels")
        self.restart(doc, body.get("restart"), "restart" in body)
        self.resources(doc, body)
        self.network(doc, body.get("network_mode"))
        self.ports(doc, body.get("ports"))
        self.mounts(doc, body)
        self.depends(doc, body.get("depends_on"), enabled, declared)
        self.health(doc, body.get("healthcheck"))
        self.security(doc, body.get("security_opt"))
        return doc.validate()

    def argv(self, doc: Translated, body: dict[str, Any]) -> None:
        # compose's entrypoint replaces the image's (and drops its cmd), its command replaces the cmd: orchestr's
        # command and args, as in Kubernetes
        entrypoint = self.words(body.get("entrypoint"), f"{doc.root}.entrypoint")
        command = self.words(body.get("command"), f"{doc.root}.command")
        if entrypoint:
            doc.put("command", entrypoint, "entrypoint")
            if command:
                doc.put("args", command, "command")
        elif entrypoint is not None and command:  # an empty entrypoint: the command is the whole argv
            doc.put("command", command, "command")
        elif entrypoint is not None:
            raise self.error(f"{doc.root}.entrypoint", "an empty entrypoint needs a command to run")
        elif command:
            doc.put("args", command, "command")

    def words(self, value: Any, path: str) -> list[str] | None:
        if value is None:
            return None
        if isinstance(value, str):
            try:
                return shlex.split(value)
            except ValueError as e:
                raise self.error(path, f"expected a command line, got {show(value)}: {e}") from None
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                    raise self.error(f"{path}[{i}]", f"expected a string, got {show(item)}")
            return [str(item) for item in value]
        raise self.error(path, f"expected a string or a list of strings, got {show(value)}")

    def env_files(self, value: Any, path: str) -> dict[str, str]:
        items = value if isinstance(value, list) else [value]
        out: dict[str, str] = {}
        for i, item in enumerate(items):
            at = f"{path}[{i}]" if isinstance(value, list) else path
            required = True
            if isinstance(item, dict):
                required = item.get("required", True)
                item = item.get("path")
            if not isinstance(item, str) or not item:
                raise self.error(at, f"expected a file path, got {show(item)}")
            file = self.base_dir / os.path.expanduser(item)
            if not file.is_file():
                if not required:
                    continue
                raise self.error(at, f"no such env file: {file}")
            out.update(read_env_file(file, _shown(item, self.file), self.environ))
        return out

    def environment(self, value: Any, path: str) -> dict[str, str]:
        if value is None:
            return {}
        if isinstance(value, list):
            out = {}
            for i, item in enumerate(value):
                if not isinstance(item, str) or not item or item.startswith("="):
                    raise self.error(f"{path}[{i}]", f"expected KEY=VALUE or KEY, got {show(item)}")
                key, sep, val = item.partition("=")
                if sep:
                    out[key] = val
                elif key in self.environ:  # a bare name takes the value it has where compose runs
                    out[key] = self.environ[key]
            return out
        if isinstance(value, dict):
            out = {}
            for key, val in value.items():
                if val is None:
                    if key in self.environ:
                        out[key] = self.environ[key]
                elif isinstance(val, bool):
                    out[key] = "true" if val else "false"
                elif isinstance(val, (str, int, float)):
                    out[key] = str(val)
                else:
                    raise self.error(f"{path}.{key}", f"expected a string or a number, got {show(val)}")
            return out
        raise self.error(path, f"expected a list of KEY=VALUE or a mapping, got {show(value)}")

    def string_map(self, value: Any, path: str, what: str) -> dict[str, str]:
        if isinstance(value, list):
            out = {}
            for i, item in enumerate(value):
                if not isinstance(item, str) or not item:
                    raise self.error(f"{path}[{i}]", f"expected KEY=VALUE, got {show(item)}")
                key, _, val = item.partition("=")
                out[key] = val
            return out
        if isinstance(value, dict):
            return {k: ("" if v is None else str(v).lower() if isinstance(v, bool) else v) for k, v in value.items()}
        raise self.error(path, f"expected {what} as a list of KEY=VALUE or a mapping, got {show(value)}")

    def restart(self, doc: Translated, value: Any, given: bool) -> None:
        if not given:
            doc.put("restartPolicy", "Never", None)  # compose restarts nothing unless told
            return
        path = f"{doc.root}.restart"
        if value is False:  # YAML 1.1 reads an unquoted no as false
            value = "no"
        policy, _, retries = str(value).partition(":") if isinstance(value, str) else ("", "", "")
        if policy not in _RESTART or (retries and policy != "on-failure") or (retries and not retries.isdigit()):
            raise self.error(path, f"expected no, always, on-failure[:N] or unless-stopped, got {show(value)}")
        if retries:
            self.warn(path, f"the retry limit {retries} is ignored: a failed container is started again at each apply")
        doc.put("restartPolicy", _RESTART[policy], "restart")

    def resources(self, doc: Translated, body: dict[str, Any]) -> None:
        root = doc.root
        limits: dict[str, tuple[Any, str]] = {}
        for key, field in (("cpus", "cpus"), ("mem_limit", "memory"), ("pids_limit", "pids")):
            if body.get(key) is not None:
                limits[field] = (body[key], key)
        if "scale" in body:
            doc.put("replicas", body["scale"], "scale")
        deploy = body.get("deploy")
        if deploy is not None:
            if not isinstance(deploy, dict):
                raise self.error(f"{root}.deploy", f"expected a mapping, got {show(deploy)}")
            for key, value in deploy.items():
                path = f"{root}.deploy.{key}"
                if key == "replicas":
                    doc.put("replicas", value, "deploy.replicas")
                elif key == "resources":
                    self.deploy_resources(value, path, limits)
                elif key == "restart_policy":
                    self.deploy_restart(doc, value, path)
                elif key == "mode":
                    if value not in ("replicated", "replicated-job"):
                        raise self.error(path, f"not supported: orchestr runs services on one host, got mode {show(value)}")
                elif key in ("labels", "placement", "update_config", "rollback_config", "endpoint_mode"):
                    self.warn(path, "ignored: a swarm setting, and orchestr runs on one host")
                elif not key.startswith("x-"):
                    raise self.error(path, "unknown deploy key, expected replicas, resources or restart_policy", key=True)
        for field, (value, key) in limits.items():
            if field == "memory":
                try:
                    value = bytes_of(value)
                except ValueError as e:
                    raise self.error(f"{root}.{key}", f"{e}, got {show(value)}") from None
            if field == "pids" and value == -1:  # compose's "no limit"
                continue
            doc.put(f"resources.{field}", value, key)

    def deploy_resources(self, value: Any, path: str, limits: dict[str, tuple[Any, str]]) -> None:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {show(value)}")
        for key, body in value.items():
            if key == "reservations":
                self.warn(f"{path}.reservations", "ignored: reservations are not enforced")
                continue
            if key != "limits":
                raise self.error(f"{path}.{key}", "unknown key, expected limits or reservations", key=True)
            if not isinstance(body, dict):
                raise self.error(f"{path}.limits", f"expected a mapping, got {show(body)}")
            for name, limit in body.items():
                field = {"cpus": "cpus", "memory": "memory", "pids": "pids"}.get(name)
                at = f"{path}.limits.{name}"
                if field is None:
                    raise self.error(at, "not supported: expected cpus, memory or pids", key=True)
                if field in limits and limits[field][0] != limit:
                    raise self.error(at, f"conflicts with {limits[field][1]}: give the limit once")
                limits[field] = (limit, at.split(".", 2)[2])

    def deploy_restart(self, doc: Translated, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {show(value)}")
        for key, item in value.items():
            if key == "condition":
                if item not in _DEPLOY_RESTART:
                    raise self.error(f"{path}.condition", f"expected none, on-failure or any, got {show(item)}")
                doc.put("restartPolicy", _DEPLOY_RESTART[item], "deploy.restart_policy.condition")
            elif key in ("delay", "max_attempts", "window"):
                self.warn(f"{path}.{key}", "ignored: a stopped container is started again at each apply")
            else:
                raise self.error(f"{path}.{key}", "unknown key, expected condition", key=True)

    def network(self, doc: Translated, value: Any) -> None:
        if value is None:
            return
        if value not in ("bridge", "host", "none"):
            raise self.error(f"{doc.root}.network_mode", f"expected bridge, host or none, got {show(value)} "
                                                         "(sharing another service's or container's network is not supported)")
        doc.put("network", value, "network_mode")

    # -- ports --------------------------------------------------------------------------------------------
    def ports(self, doc: Translated, value: Any) -> None:
        if value is None:
            return
        path = f"{doc.root}.ports"
        if not isinstance(value, list):
            raise self.error(path, f"expected a list of ports, got {show(value)}")
        for i, item in enumerate(value):
            at = f"{path}[{i}]"
            for port in (self.long_port(item, at) if isinstance(item, dict) else self.short_port(item, at)):
                doc.append("ports", port, f"ports[{i}]")

    def short_port(self, item: Any, at: str) -> list[dict[str, Any]]:
        if isinstance(item, int) and not isinstance(item, bool):
            return [{"containerPort": item}]
        if not isinstance(item, str):
            raise self.error(at, f"expected a port like 8080:80, 127.0.0.1:8080:80/udp or a mapping, got {show(item)}")
        text, _, protocol = item.partition("/")
        ip = None
        if text.startswith("["):
            ip, close, text = text[1:].partition("]")
            if not close or not text.startswith(":"):
                raise self.error(at, f"expected [IPv6]:HOST:CONTAINER, got {show(item)}")
            parts = [ip, *text[1:].split(":")]
        else:
            parts = text.split(":")
        if len(parts) == 3:
            ip, host, container = parts
        elif len(parts) == 2:
            host, container = parts
        elif len(parts) == 1:
            host, container = "", parts[0]
        else:
            raise self.error(at, f"expected [IP:][HOST:]CONTAINER[/PROTOCOL], got {show(item)}")
        return self.port_range(host, container, ip or None, protocol or "tcp", at)

    def long_port(self, item: dict[str, Any], at: str) -> list[dict[str, Any]]:
        for key in item:
            if key not in ("target", "published", "host_ip", "protocol", "mode", "name", "app_protocol"):
                raise self.error(f"{at}.{key}", "unknown port key, expected target, published, host_ip or protocol",
                                 key=True)
        if "target" not in item:
            raise self.error(at, "expected a target (the container's port)")
        published = item.get("published")
        ports = self.port_range("" if published is None else str(published), str(item["target"]),
                                item.get("host_ip"), item.get("protocol") or "tcp", at)
        mode = item.get("mode", "ingress")
        if mode not in ("ingress", "host"):
            raise self.error(f"{at}.mode", f"expected ingress or host, got {show(mode)}")
        if mode == "host":  # the container's own binding, as compose's host mode; ingress: a service port
            for entry in ports:
                entry["mode"] = "host"
        return ports

    def port_range(self, host: str, container: str, ip: str | None, protocol: str, at: str) -> list[dict[str, Any]]:
        if protocol not in ("tcp", "udp"):
            raise self.error(at, f"expected protocol tcp or udp, got {show(protocol)}")
        containers = self.numbers(container, at)
        hosts = self.numbers(host, at) if host else []
        if hosts and len(hosts) != len(containers):
            raise self.error(at, f"the host range has {len(hosts)} ports and the container range {len(containers)}: "
                                 "orchestr publishes port to port (without a host port, it picks a free one)")
        out = []
        for i, port in enumerate(containers):
            entry: dict[str, Any] = {"containerPort": port, "protocol": protocol}
            if hosts:
                entry["hostPort"] = hosts[i]
            if ip:
                entry["hostIP"] = ip
            out.append(entry)
        return out

    def numbers(self, text: str, at: str) -> list[int]:
        first, dash, last = text.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise self.error(at, f"expected a port number or a range like 8000-8010, got {show(text)}")
        low, high = int(first), int(last) if dash else int(first)
        if not 1 <= low <= high <= 65535:
            raise self.error(at, f"expected ports from 1 to 65535, the range low to high, got {show(text)}")
        return list(range(low, high + 1))

    # -- volumes ------------------------------------------------------------------------------------------
    def mounts(self, doc: Translated, body: dict[str, Any]) -> None:
        volumes, tmpfs = body.get("volumes"), body.get("tmpfs")
        if volumes is not None:
            path = f"{doc.root}.volumes"
            if not isinstance(volumes, list):
                raise self.error(path, f"expected a list of volumes, got {show(volumes)}")
            for i, item in enumerate(volumes):
                at = f"{path}[{i}]"
                volume = self.long_volume(item, at) if isinstance(item, dict) else self.short_volume(item, at)
                doc.append("volumes", volume, f"volumes[{i}]")
        if tmpfs is not None:
            items = tmpfs if isinstance(tmpfs, list) else [tmpfs]
            for i, item in enumerate(items):
                at = f"{doc.root}.tmpfs" + (f"[{i}]" if isinstance(tmpfs, list) else "")
                if not isinstance(item, str):
                    raise self.error(at, f"expected a path like /run or /tmp:size=64m, got {show(item)}")
                target, _, options = item.partition(":")
                volume: dict[str, Any] = {"type": "tmpfs", "target": target}
                for option in filter(None, options.split(",")):
                    key, _, val = option.partition("=")
                    if key == "size":
                        volume["size"] = self.size(val, at)
                    elif key != "mode":
                        raise self.error(at, f"expected the options size and mode, got {show(option)}")
                doc.append("volumes", volume, "tmpfs" + (f"[{i}]" if isinstance(tmpfs, list) else ""))

    def size(self, value: Any, at: str) -> int:
        try:
            return bytes_of(value)
        except ValueError as e:
            raise self.error(at, f"{e}, got {show(value)}") from None

    def source(self, source: str, at: str) -> tuple[str, str]:
        """type and orchestr source of a compose volume source."""
        if source.startswith(("/", ".", "~")):
            return "bind", os.path.expanduser(source)
        if source not in self.volumes:
            declared = ", ".join(self.volumes) or "none"
            raise self.error(at, f"volume {source!r} is not declared under the top-level volumes (declared: {declared})")
        return "volume", self.volumes[source]

    def short_volume(self, item: Any, at: str) -> dict[str, Any]:
        if not isinstance(item, str) or not item:
            raise self.error(at, f"expected SOURCE:TARGET[:ro] or a mapping, got {show(item)}")
        parts = item.split(":")
        if len(parts) == 1:
            raise self.error(at, "not supported: an anonymous volume; name it (NAME:TARGET, declared under the "
                                 "top-level volumes) or use tmpfs")
        if len(parts) > 3:
            raise self.error(at, f"expected SOURCE:TARGET[:MODE], got {show(item)}")
        kind, source = self.source(parts[0], at)
        volume: dict[str, Any] = {"type": kind, "source": source, "target": parts[1]}
        for mode in filter(None, (parts[2] if len(parts) == 3 else "").split(",")):
            if mode == "ro":
                volume["readOnly"] = True
            elif mode not in ("rw", "z", "Z", "cached", "delegated", "consistent", "nocopy"):
                raise self.error(at, f"expected the modes ro, rw, z, Z, cached, delegated or nocopy, got {show(mode)}")
        return volume

    def long_volume(self, item: dict[str, Any], at: str) -> dict[str, Any]:
        kind = item.get("type", "volume")
        if kind not in ("bind", "volume", "tmpfs"):
            raise self.error(f"{at}.type", f"expected bind, volume or tmpfs, got {show(kind)}")
        if "target" not in item:
            raise self.error(at, "expected a target (the path in the container)")
        volume: dict[str, Any] = {"type": kind, "target": item["target"]}
        for key, value in item.items():
            sub = f"{at}.{key}"
            if key in ("type", "target", "consistency"):
                continue
            if key == "source":
                if kind == "tmpfs":
                    raise self.error(sub, "a tmpfs volume takes no source", key=True)
                if not isinstance(value, str) or not value:
                    raise self.error(sub, f"expected a host path or a volume name, got {show(value)}")
                found, source = self.source(value, sub)
                if kind == "bind" and found != "bind":
                    source = value  # a bind's source is a path even when it does not start with / or .
                elif kind == "volume" and found != "volume":
                    raise self.error(sub, f"expected a volume name, got the path {show(value)}")
                volume["source"] = source
            elif key == "read_only":
                volume["readOnly"] = value
            elif key == "tmpfs" and kind == "tmpfs" and isinstance(value, dict):
                for option, setting in value.items():
                    if option == "size":
                        volume["size"] = self.size(setting, f"{sub}.size")
                    elif option != "mode":
                        raise self.error(f"{sub}.{option}", "expected size or mode", key=True)
            elif key == "bind" and kind == "bind" and isinstance(value, dict):
                for option, setting in value.items():
                    if option == "propagation" and setting not in ("rprivate", "private"):
                        raise self.error(f"{sub}.{option}", "not supported: binds are private to the container")
                    if option not in ("propagation", "create_host_path", "selinux"):
                        raise self.error(f"{sub}.{option}", "expected propagation, create_host_path or selinux", key=True)
            elif key == "volume" and kind == "volume" and isinstance(value, dict):
                for option in value:
                    if option != "nocopy":
                        raise self.error(f"{sub}.{option}", "not supported: expected nocopy", key=True)
            else:
                raise self.error(sub, f"not supported for a {kind} volume", key=True)
        if kind == "volume" and "source" not in volume:
            raise self.error(at, "not supported: an anonymous volume; give it a source declared under the top-level "
                                 "volumes, or use tmpfs")
        return volume

    # -- order and health -------------------------------------------------------------------------------
    def depends(self, doc: Translated, value: Any, enabled: dict[str, Any], declared: dict[str, Any]) -> None:
        if value is None:
            return
        path = f"{doc.root}.depends_on"
        if isinstance(value, list):
            entries = [(name, {}, f"{path}[{i}]") for i, name in enumerate(value)]
        elif isinstance(value, dict):
            entries = [(name, body or {}, f"{path}.{name}") for name, body in value.items()]
        else:
            raise self.error(path, f"expected a list of services or a mapping, got {show(value)}")
        for name, body, at in entries:
            if not isinstance(name, str) or not isinstance(body, dict):
                raise self.error(at, f"expected a service name, got {show(name if not isinstance(name, str) else body)}")
            required = body.get("required", True)
            condition = None
            for key, setting in body.items():
                if key == "condition":
                    condition = _CONDITIONS.get(setting)
                    if condition is None:
                        raise self.error(f"{at}.condition", "expected service_started, service_healthy or "
                                                            f"service_completed_successfully, got {show(setting)}")
                elif key == "restart":
                    if setting:
                        self.warn(f"{at}.restart", f"ignored: a new {name} does not restart this service")
                elif key != "required":
                    raise self.error(f"{at}.{key}", "expected condition, restart or required", key=True)
            if name not in enabled:
                if not required:
                    continue
                if name in declared:
                    raise self.error(at, f"{name} is not in an active profile (COMPOSE_PROFILES, --profile)")
                raise self.error(at, f"no service {name!r} in this file")
            entry = name if condition in (None, "started") else {"name": name, "condition": condition}
            doc.append("dependsOn", entry, at.removeprefix(doc.root + "."))

    def health(self, doc: Translated, value: Any) -> None:
        if value is None:
            return
        path = f"{doc.root}.healthcheck"
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {show(value)}")
        check: dict[str, Any] = {}
        for key, setting in value.items():
            if key == "test":
                test = setting
                if isinstance(test, str):
                    test = ["CMD-SHELL", test]
                if not isinstance(test, list) or not test or test[0] not in ("CMD", "CMD-SHELL", "NONE"):
                    raise self.error(f"{path}.test", "expected a command string, or a list starting with CMD, "
                                                     f"CMD-SHELL or NONE, got {show(setting)}")
                if test[0] == "NONE":
                    check["disable"] = True
                elif test[0] == "CMD-SHELL":
                    if len(test) != 2:
                        raise self.error(f"{path}.test", "expected CMD-SHELL and one command string")
                    check["exec"] = ["/bin/sh", "-c", test[1]]
                else:
                    check["exec"] = test[1:]
            elif key in ("interval", "timeout", "retries", "start_period", "disable"):
                field = "startPeriod" if key == "start_period" else key
                check[field] = setting
            elif key == "start_interval":
                self.warn(f"{path}.{key}", "ignored: checks run every interval, the first as soon as the container "
                                           "runs")
            else:
                raise self.error(f"{path}.{key}", "expected test, interval, timeout, retries, start_period, "
                                                  "start_interval or disable", key=True)
        if check.get("disable"):
            check.pop("exec", None)
        doc.put("healthcheck", check, "healthcheck")
        for field in check:
            doc.note(f"spec.healthcheck.{field}", "healthcheck." + {"startPeriod": "start_period",
                                                                     "exec": "test"}.get(field, field))

    def security(self, doc: Translated, value: Any) -> None:
        if value is None:
            return
        path = f"{doc.root}.security_opt"
        if not isinstance(value, list):
            raise self.error(path, f"expected a list, got {show(value)}")
        for i, item in enumerate(value):
            option = str(item).replace("=", ":", 1)
            if option in ("seccomp:unconfined",):
                doc.put("seccomp", "unconfined", f"security_opt[{i}]")
            elif option not in ("no-new-privileges:true", "no-new-privileges"):  # orchestr always sets it
                raise self.error(f"{path}[{i}]", f"not supported: expected seccomp:unconfined or "
                                                 f"no-new-privileges:true, got {show(item)}")


def _shown(path: str, compose_file: str) -> str:
    """An env file's name as errors show it: relative to the compose file's name as it was given."""
    return os.path.normpath(os.path.join(os.path.dirname(compose_file), os.path.expanduser(path)))
