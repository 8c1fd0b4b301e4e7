"""The spec's models: a Service document and its parts, validated into a template for its containers."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import posixpath
from dataclasses import replace
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    PlainSerializer,
    PlainValidator,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from ..errors import SpecError
from ..model import (
    L_DEPENDS_ON,
    L_NAMESPACE,
    L_REPLICA,
    L_SERVICE,
    L_SERVICE_PORTS,
    L_SPEC_HASH,
    L_STOP_GRACE,
    Check,
    ContainerSpec,
    Port,
    Probes,
    Resources,
    RestartPolicy,
    Volume,
    encode_service_ports,
    serviced,
)
from .fields import (
    DNS_LABEL,
    DNS_WORDS,
    AbsolutePath,
    Argv,
    CountOrPercent,
    Cpus,
    DnsLabel,
    Duration,
    HttpPath,
    ImageReference,
    IPAddress,
    Labels,
    Memory,
    MountTarget,
    PortNumber,
    PositiveDuration,
    Size,
    Statuses,
    StringMap,
    User,
    normpath,
)
from .loader import Lines, line_of
from .messages import explain, fail, field_path, show

API_VERSION = "orchestr/v1"
KIND = "Service"
BUILT = "<built>"  # the file named by errors about services made with Service.build
# Changing these adjusts a running container in place, so they stay out of the spec hash.
_UNHASHED = {"replicas", "depends_on", "paused", "runtime", "update"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel)


class Metadata(_Model):
    name: DnsLabel
    namespace: DnsLabel = "default"
    labels: Labels = Field(default_factory=dict)


class ResourcesSpec(_Model):
    cpus: Cpus = None
    memory: Memory = None  # bytes
    pids: StrictInt | None = Field(None, ge=1)


class VolumeSpec(_Model):
    type: Literal["bind", "volume", "tmpfs"]
    source: str | None = None  # host path (bind, made absolute) or volume name (volume)
    target: MountTarget
    read_only: StrictBool = False
    size: Size = None  # bytes, tmpfs only; none: 64Mi
    allow_host_root: StrictBool = False

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if value is None or kind == "tmpfs":
            return value
        if kind == "volume":
            if not DNS_LABEL.fullmatch(value):
                fail(f"expected a volume name ({DNS_WORDS}), got {show(value)}")
            return value
        if not value:
            fail("expected a host path, got ''")
        base = (info.context or {}).get("base_dir") or os.getcwd()
        return normpath(posixpath.join(str(base), value))  # an absolute value ignores base

    @model_validator(mode="after")
    def _by_type(self) -> VolumeSpec:
        if self.type == "tmpfs" and self.source is not None:
            fail("a tmpfs volume takes no source", "source")
        if self.type != "tmpfs" and self.source is None:
            what = "a bind volume needs a host path" if self.type == "bind" else "a named volume needs a volume name"
            fail(f"{what} as its source", "source")
        if self.size is not None and self.type != "tmpfs":
            fail("size applies only to tmpfs volumes", "size")
        if self.allow_host_root and self.type != "bind":
            fail("allowHostRoot applies only to bind volumes", "allowHostRoot")
        if self.type == "bind" and self.source == "/" and not (self.read_only or self.allow_host_root):
            fail("binding the host's / read-write is not allowed; set readOnly: true (or allowHostRoot: true)",
                 "source")
        return self


class PortSpec(_Model):
    container_port: PortNumber
    host_port: PortNumber | None = None
    protocol: Literal["tcp", "udp"] = "tcp"
    host_ip: IPAddress = Field("0.0.0.0", alias="hostIP")
    # ingress: with a hostPort, one host port balancing across the service's ready replicas (a service port);
    # host: each container binds the host port itself (Swarm's names)
    mode: Literal["ingress", "host"] = "ingress"


class UpdateSpec(_Model):
    """How a changed spec replaces the replicas: Kubernetes' Deployment strategy, its names and defaults."""

    strategy: Literal["RollingUpdate", "Recreate"] = "RollingUpdate"
    max_surge: CountOrPercent = "25%"  # replicas above spec.replicas during a rolling update; a % rounds up
    max_unavailable: CountOrPercent = "25%"  # replicas below spec.replicas; a % rounds down
    min_ready_seconds: Duration = 0.0  # a new replica must stay ready this long before it counts
    progress_deadline: Duration = 600.0  # a new replica not ready by then fails the update: it is rolled back

    @model_validator(mode="after")
    def _some_room(self) -> UpdateSpec:
        if self.max_surge in (0, "0%") and self.max_unavailable in (0, "0%"):
            fail("maxSurge and maxUnavailable cannot both be 0: no replica could be replaced", "maxUnavailable")
        if self.progress_deadline <= 0:
            fail(f"expected a duration greater than 0, got {self.progress_deadline:g}", "progressDeadline")
        return self

    def room(self, replicas: int) -> tuple[int, int]:
        """maxSurge and maxUnavailable as counts of replicas, at least one replica of room between them."""
        surge, unavailable = (_resolve(self.max_surge, replicas, up=True),
                              _resolve(self.max_unavailable, replicas, up=False))
        return (surge, 1) if surge == unavailable == 0 else (surge, unavailable)


def _resolve(value: int | str, replicas: int, up: bool) -> int:
    if isinstance(value, int):
        return value
    share = int(value[:-1]) * replicas
    return -(-share // 100) if up else share // 100


class HttpCheckSpec(_Model):
    port: PortNumber
    path: HttpPath = "/"
    status: Statuses = (200, 399)


class TcpCheckSpec(_Model):
    port: PortNumber


class CheckSpec(_Model):
    """A health check, as compose's healthcheck names its settings (and its defaults)."""

    exec: Argv = None  # argv run in the container: exit 0 passes
    http: HttpCheckSpec | None = None  # a GET of the container's port: a status in range passes
    tcp: TcpCheckSpec | None = None  # a connect to the container's port
    interval: PositiveDuration = 30.0
    timeout: PositiveDuration = 30.0
    retries: StrictInt = Field(3, ge=1)
    start_period: Duration = 0.0
    disable: StrictBool = False  # no check at all, not even the image's HEALTHCHECK

    @model_validator(mode="after")
    def _one(self) -> CheckSpec:
        given = [k for k in ("exec", "http", "tcp") if getattr(self, k) is not None]
        if self.disable and given:
            fail("disable: true takes no check; remove it or the check", given[0])
        if not self.disable and len(given) != 1:
            where = given[1:2] or ()
            fail("expected exactly one of exec, http or tcp" + (f", got {' and '.join(given)}" if given else ""),
                 *where)
        return self

    def check(self) -> Check | None:
        """The check as the health module runs it; None when disabled."""
        if self.disable:
            return None
        base = Check("tcp", interval=self.interval, timeout=self.timeout, retries=self.retries,
                     start_period=self.start_period)
        if self.exec is not None:
            return replace(base, kind="exec", argv=self.exec)
        if self.http is not None:
            return replace(base, kind="http", port=self.http.port, path=self.http.path, status=self.http.status)
        assert self.tcp is not None
        return replace(base, port=self.tcp.port)


class ProbesSpec(_Model):
    """Kubernetes' split: readiness gates traffic and dependents, liveness restarts, startup runs before both."""

    liveness: CheckSpec | None = None
    readiness: CheckSpec | None = None
    startup: CheckSpec | None = None


class Dependency(str):
    """A service this one starts after (the string is its name), and what it must have reached first: started,
    healthy or completed."""

    condition: str

    def __new__(cls, name: str, condition: str = "started") -> Dependency:
        dep = super().__new__(cls, name)
        dep.condition = condition
        return dep

    @property
    def name(self) -> str:
        return str(self)


_CONDITIONS = ("started", "healthy", "completed")


def _dependency(value: Any) -> Dependency:
    if isinstance(value, str):  # the plain form: started
        name, condition = value, "started"
    elif isinstance(value, dict):
        for key in value:
            if key not in ("name", "condition"):
                fail("unknown field, expected name or condition", str(key))
        if "name" not in value:
            fail("required field is missing", "name")
        name, condition = value["name"], value.get("condition", "started")
        if condition not in _CONDITIONS:
            fail(f"expected one of {', '.join(_CONDITIONS)}, got {show(condition)}", "condition")
        if not isinstance(name, str):
            fail(f"expected a service name, got {show(name)}", "name")
    else:
        fail(f"expected a service name or a mapping with name and condition, got {show(value)}")
    if not DNS_LABEL.fullmatch(name):
        fail(f"expected a service name ({DNS_WORDS}), got {show(name)}", *(() if isinstance(value, str) else ("name",)))
    return Dependency(name, condition)


def _dependency_data(dep: Dependency) -> Any:
    return str(dep) if dep.condition == "started" else {"name": str(dep), "condition": dep.condition}


DependsOn = Annotated[Dependency, PlainValidator(_dependency), PlainSerializer(_dependency_data)]


class ServiceSpec(_Model):
    runtime: DnsLabel | None = None
    image: ImageReference
    command: Argv = None  # the full argv: replaces the image's entrypoint and cmd
    args: Argv = None  # with no command, replaces the image's cmd only
    env: StringMap = Field(default_factory=dict)
    working_dir: AbsolutePath | None = None
    user: User = None
    replicas: StrictInt = Field(1, ge=0)
    resources: ResourcesSpec = ResourcesSpec()
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    depends_on: tuple[DependsOn, ...] = ()
    stop_grace_period: Duration = 10.0  # seconds
    volumes: tuple[VolumeSpec, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    network: Literal["bridge", "host", "none"] = "bridge"
    paused: StrictBool = False
    init: StrictBool = False
    read_only: StrictBool = False
    seccomp: Literal["default", "unconfined"] = "default"
    healthcheck: CheckSpec | None = None
    probes: ProbesSpec | None = None
    update: UpdateSpec = UpdateSpec()

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSpec:
        for i, dep in enumerate(self.depends_on):
            if dep in self.depends_on[:i]:
                fail(f"'{dep}' is listed twice", "dependsOn", i)
        if self.healthcheck is not None and self.probes is not None:
            fail("give healthcheck or probes, not both", "probes")
        targets: dict[str, int] = {}
        for i, volume in enumerate(self.volumes):
            if volume.target in targets:
                fail(f"{volume.target} is already the target of spec.volumes[{targets[volume.target]}]",
                     "volumes", i, "target")
            targets[volume.target] = i
        if self.ports and self.network != "bridge":
            fail(f"ports are published only with network: bridge, not {self.network}", "ports")
        return self


class Service(_Model):
    """One service of a spec file: a template for `replicas` identical containers."""

    api_version: Literal["orchestr/v1"]
    kind: Literal["Service"]
    metadata: Metadata
    spec: ServiceSpec
    # Set by validate, rather than by defaults pydantic would deep-copy for every instance.
    _source: tuple[str, int]
    _lines: dict[str, int]  # field path -> line, for errors found later
    _origin: dict[str, str]  # field path -> the key it came from, for services translated from compose or Kubernetes

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def source(self) -> tuple[str, int]:
        """The file and line of this service's document."""
        return self._source

    @functools.cached_property
    def spec_hash(self) -> str:
        """Changes exactly when existing containers no longer match the spec and must be recreated."""
        # Fields serialize in declaration order and maps are sorted at validation, so the JSON is canonical;
        # leaving defaults out keeps hashes stable when a field is added. Labels count: a container's
        # labels are fixed when it is created.
        spec = self.spec.model_dump_json(exclude=_UNHASHED, exclude_defaults=True)
        labels = json.dumps(self.metadata.labels, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(f"{labels}\n{spec}".encode()).hexdigest()[:16]

    def probes(self) -> Probes | None:
        """The checks the spec asks for: Probes() when it disables them; None when it says nothing, and the image's
        HEALTHCHECK, if it has one, is run."""
        spec = self.spec
        if spec.healthcheck is not None:
            check = spec.healthcheck.check()
            return Probes(readiness=check, liveness=check, combined=True) if check else Probes()
        if spec.probes is not None:
            p = spec.probes
            return Probes(readiness=p.readiness.check() if p.readiness else None,
                          liveness=p.liveness.check() if p.liveness else None,
                          startup=p.startup.check() if p.startup else None)
        return None

    def line(self, path: str) -> int:
        """The line of path in this service's document, or of the nearest value enclosing it; 0 when not from a file."""
        return line_of(self._lines, path, self._source[1])

    def error(self, path: str, message: str) -> SpecError:
        """An error at path of this service's document, on the line of path or of the nearest value enclosing it."""
        return SpecError(self._source[0], self.line(path) or None, shown_path(self._origin, path), message)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Service:
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("spec_hash", None)  # the cached hash of the original may no longer hold
        return copied

    def container_spec(self, replica: int) -> ContainerSpec:
        if replica < 0:
            raise ValueError(f"replica index must be >= 0, got {replica}")
        spec = self.spec
        labels = {
            **self.metadata.labels,
            L_NAMESPACE: self.namespace,
            L_SERVICE: self.name,
            L_REPLICA: str(replica),
            L_SPEC_HASH: self.spec_hash,
            L_STOP_GRACE: f"{spec.stop_grace_period:g}",
        }
        if spec.depends_on:
            labels[L_DEPENDS_ON] = ",".join(spec.depends_on)
        ports = tuple(Port(container_port=p.container_port, host_port=p.host_port, protocol=p.protocol,
                           host_ip=p.host_ip, mode=p.mode) for p in spec.ports)
        if any(map(serviced, ports)):
            labels[L_SERVICE_PORTS] = encode_service_ports(ports)
        return ContainerSpec(
            name=f"{self.name}-{replica}",
            namespace=self.namespace,
            image=spec.image,
            labels=labels,
            command=spec.command,
            args=spec.args,
            env=dict(spec.env),
            working_dir=spec.working_dir,
            user=spec.user,
            resources=Resources(cpus=spec.resources.cpus, memory=spec.resources.memory, pids=spec.resources.pids),
            restart_policy=spec.restart_policy,
            stop_grace_period=spec.stop_grace_period,
            volumes=tuple(Volume(type=v.type, target=v.target, source=v.source, read_only=v.read_only, size=v.size,
                                 allow_host_root=v.allow_host_root) for v in spec.volumes),
            ports=ports,
            network=spec.network,
            init=spec.init,
            read_only=spec.read_only,
            seccomp=spec.seccomp,
        )

    @classmethod
    def build(
        cls,
        name: str,
        *,
        namespace: str = "default",
        image: str = "busybox:latest",
        labels: dict[str, str] | None = None,
        base_dir: Path | None = None,
        **spec: Any,
    ) -> Service:
        """A Service from keyword arguments (snake_case spec fields), validated like a document; for code and tests."""
        fields = ServiceSpec.model_fields
        body: dict[str, Any] = {"image": image}
        for key, value in spec.items():
            if key not in fields:
                raise TypeError(f"Service.build() got an unknown spec field {key!r}")
            body[fields[key].alias or key] = value
        data = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": body,
        }
        return validate(data, BUILT, 0, Lines(), base_dir)


def shown_path(origin: Mapping[str, str], path: str) -> str:
    """The path an error names: the key of the file it was translated from (its nearest enclosing one), else path."""
    if not origin:
        return path
    at = path
    while at:
        if at in origin:
            return origin[at]
        cut = max(at.rfind("."), at.rfind("["))
        at = at[:cut] if cut > 0 else ""
    return origin.get("", path)


def validate(data: Any, filename: str, line: int, lines: Lines, base_dir: Path | None,
             origin: Mapping[str, str] | None = None) -> Service:
    """The Service in data, the document at line of filename; raises SpecError naming its first problem.

    origin maps field paths to the keys of another format they were translated from, for errors to name."""
    problems = list(lines.problems)
    try:
        service = Service.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as e:
        for error in e.errors(include_url=False):
            loc, message = explain(error, Service)
            path = field_path(loc)
            raw = lines.booleans.get(path)
            # only YAML 1.1's surprises: whoever writes true or false means a boolean
            if raw and raw.lower() not in ("true", "false") and ("a string" in message or "a user" in message):
                message += f" (YAML reads a plain {raw} as a boolean; quote it: \"{raw}\")"
            problems.append((lines.find(path, line, key=error["type"] == "extra_forbidden"), path, message))
    if problems:
        # A wrong apiVersion or kind explains everything else, so it goes first; then file order.
        where, path, message = min(problems, key=lambda p: (p[1] not in ("apiVersion", "kind"), p[0]))
        path = shown_path(origin or {}, path)
        if not path.isprintable():  # a quoted key can hold a newline; the error stays one line
            path = path.encode("unicode_escape").decode()
        raise SpecError(filename, where or None, path, message)
    service._source = (filename, line)
    service._lines = lines.values
    service._origin = dict(origin or {})
    return service

