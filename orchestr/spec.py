"""Service specs: loading YAML with line-precise errors, validating, hashing, and resolving replicas."""

from __future__ import annotations

import difflib
import functools
import hashlib
import ipaddress
import json
import os
import posixpath
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from orchestr.errors import SpecError
from orchestr.model import (
    L_DEPENDS_ON,
    L_NAMESPACE,
    L_REPLICA,
    L_SERVICE,
    L_SPEC_HASH,
    L_STOP_GRACE,
    LABEL_PREFIX,
    ContainerSpec,
    Port,
    Resources,
    RestartPolicy,
    Volume,
)
from orchestr.quantity import parse_cpus, parse_duration, parse_quantity

API_VERSION = "orchestr/v1"
KIND = "Service"
BUILT = "<built>"  # the file named by errors about services made with Service.build

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAX_NODES = 100_000  # per document; stops alias bombs from expanding without end
# Changing these adjusts a running container in place, so they stay out of the spec hash.
_UNHASHED = {"replicas", "depends_on", "paused", "runtime"}

_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_IMAGE = re.compile(
    rf"(?:{_HOST}(?:\.{_HOST})*(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
_DNS_WORDS = "lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit"


def _show(value: Any) -> str:
    """A value in the user's YAML notation, for the 'got ...' part of messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return str(value)


def _fail(message: str, *at: str | int) -> NoReturn:
    """Reject a value with message shown as it is, at sub-path `at` of what is being validated."""
    raise PydanticCustomError("orchestr", "{message}", {"message": message, "at": at})


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.fullmatch(value):
        _fail(f"expected a DNS label ({_DNS_WORDS}), got {_show(value)}")
    return value


def _string_map(value: Any) -> dict[str, str]:
    """env and labels: names to strings; numbers become strings, as compose does."""
    if not isinstance(value, dict):
        _fail(f"expected a mapping of names to strings, got {_show(value)}")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key:
            _fail(f"expected a name without '=', got {_show(key)}", str(key))
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            _fail(f"expected a string or a number, got {_show(item)}", key)
        out[key] = item if isinstance(item, str) else str(item)
    return dict(sorted(out.items()))  # sorted, so the spec hash ignores key order


def _labels(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if key.startswith(LABEL_PREFIX):
            _fail(f"label names starting with '{LABEL_PREFIX}' are reserved for orchestr, got {_show(key)}", key)
    return value


def _argv(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        _fail(f"expected a non-empty list of strings, got {_show(value)}")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            _fail(f"expected a string, got {_show(item)}", i)
    return tuple(item if isinstance(item, str) else str(item) for item in value)


def _image(value: str) -> str:
    if not _IMAGE.fullmatch(value):
        _fail(f"expected an image reference like busybox:latest, got {_show(value)}")
    return value


def _user(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and _USER.fullmatch(value):
        return value
    if value is None:
        return None
    _fail(f"expected a user like 1000, 1000:1000 or www-data, got {_show(value)}")


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        _fail(f"expected an absolute path, got {_show(value)}")
    return value


def _normpath(path: str) -> str:
    return "/" + posixpath.normpath(path).lstrip("/")  # normpath keeps a leading '//'


def _target(value: str) -> str:
    if not value.startswith("/") or ".." in value.split("/"):
        _fail(f"expected an absolute path without '..', got {_show(value)}")
    path = _normpath(value)
    if path == "/":
        _fail("mounting over the container's root is not allowed")
    return path


def _unit(parse, positive: bool = False):
    """A before-validator from a quantity.py parser; None passes for optional fields."""

    def check(value: Any) -> Any:
        if value is None:
            return None
        try:
            result = parse(value)
        except ValueError as e:
            _fail(f"{e}, got {_show(value)}")
        if positive and result <= 0:
            _fail(f"expected a quantity greater than 0, got {_show(value)}")
        return result

    return BeforeValidator(check)


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        _fail(f"expected a port number from 1 to 65535, got {value}")
    return value


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        _fail(f"expected an IP address like 127.0.0.1, got {_show(value)}")


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
StringMap = Annotated[dict[str, str], BeforeValidator(_string_map)]
Argv = Annotated[tuple[str, ...] | None, BeforeValidator(_argv)]
PortNumber = Annotated[StrictInt, AfterValidator(_port)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel)


class Metadata(_Model):
    name: DnsLabel
    namespace: DnsLabel = "default"
    labels: Annotated[StringMap, AfterValidator(_labels)] = Field(default_factory=dict)


class ResourcesSpec(_Model):
    cpus: Annotated[float | None, _unit(parse_cpus)] = None
    memory: Annotated[int | None, _unit(parse_quantity, positive=True)] = None  # bytes
    pids: StrictInt | None = Field(None, ge=1)


class VolumeSpec(_Model):
    type: Literal["bind", "volume", "tmpfs"]
    source: str | None = None  # host path (bind, made absolute) or volume name (volume)
    target: Annotated[str, AfterValidator(_target)]
    read_only: StrictBool = False
    size: Annotated[int | None, _unit(parse_quantity, positive=True)] = None  # bytes, tmpfs only; none: 64Mi
    allow_host_root: StrictBool = False

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if value is None or kind == "tmpfs":
            return value
        if kind == "volume":
            if not _DNS_LABEL.fullmatch(value):
                _fail(f"expected a volume name ({_DNS_WORDS}), got {_show(value)}")
            return value
        if not value:
            _fail("expected a host path, got ''")
        base = (info.context or {}).get("base_dir") or os.getcwd()
        return _normpath(posixpath.join(str(base), value))  # an absolute value ignores base

    @model_validator(mode="after")
    def _by_type(self) -> VolumeSpec:
        if self.type == "tmpfs" and self.source is not None:
            _fail("a tmpfs volume takes no source", "source")
        if self.type != "tmpfs" and self.source is None:
            what = "a bind volume needs a host path" if self.type == "bind" else "a named volume needs a volume name"
            _fail(f"{what} as its source", "source")
        if self.size is not None and self.type != "tmpfs":
            _fail("size applies only to tmpfs volumes", "size")
        if self.allow_host_root and self.type != "bind":
            _fail("allowHostRoot applies only to bind volumes", "allowHostRoot")
        if self.type == "bind" and self.source == "/" and not (self.read_only or self.allow_host_root):
            _fail("binding the host's / read-write is not allowed; set readOnly: true (or allowHostRoot: true)",
                  "source")
        return self


class PortSpec(_Model):
    container_port: PortNumber
    host_port: PortNumber | None = None
    protocol: Literal["tcp", "udp"] = "tcp"
    host_ip: Annotated[str, AfterValidator(_ip)] = Field("0.0.0.0", alias="hostIP")


class ServiceSpec(_Model):
    runtime: DnsLabel | None = None
    image: Annotated[str, AfterValidator(_image)]
    command: Argv = None  # the full argv: replaces the image's entrypoint and cmd
    args: Argv = None  # with no command, replaces the image's cmd only
    env: StringMap = Field(default_factory=dict)
    working_dir: Annotated[str, AfterValidator(_absolute)] | None = None
    user: Annotated[str | None, BeforeValidator(_user)] = None
    replicas: StrictInt = Field(1, ge=0)
    resources: ResourcesSpec = ResourcesSpec()
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    depends_on: tuple[DnsLabel, ...] = ()
    stop_grace_period: Annotated[float, _unit(parse_duration)] = 10.0  # seconds
    volumes: tuple[VolumeSpec, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    network: Literal["bridge", "host", "none"] = "bridge"
    paused: StrictBool = False
    init: StrictBool = False
    read_only: StrictBool = False
    seccomp: Literal["default", "unconfined"] = "default"

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSpec:
        for i, dep in enumerate(self.depends_on):
            if dep in self.depends_on[:i]:
                _fail(f"'{dep}' is listed twice", "dependsOn", i)
        targets: dict[str, int] = {}
        for i, volume in enumerate(self.volumes):
            if volume.target in targets:
                _fail(f"{volume.target} is already the target of spec.volumes[{targets[volume.target]}]",
                      "volumes", i, "target")
            targets[volume.target] = i
        if self.ports and self.network != "bridge":
            _fail(f"ports are published only with network: bridge, not {self.network}", "ports")
        return self


class Service(_Model):
    """One service of a spec file: a template for `replicas` identical containers."""

    api_version: Literal["orchestr/v1"]
    kind: Literal["Service"]
    metadata: Metadata
    spec: ServiceSpec
    # Set by _validate, rather than by defaults pydantic would deep-copy for every instance.
    _source: tuple[str, int]
    _lines: dict[str, int]  # field path -> line, for errors found later

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
            ports=tuple(Port(container_port=p.container_port, host_port=p.host_port, protocol=p.protocol,
                             host_ip=p.host_ip) for p in spec.ports),
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
            body[fields[key].alias] = value
        data = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": body,
        }
        return _validate(data, BUILT, 0, _Lines(), base_dir)


class _Lines:
    """Where each value (and each mapping key) sits in a document, by field path like spec.ports[0]."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.keys: dict[str, int] = {}
        self.problems: list[tuple[int, str, str]] = []  # line, path, message

    def find(self, path: str, default: int, key: bool = False) -> int:
        if key and path in self.keys:
            return self.keys[path]
        return _line_of(self.values, path, default)


def _line_of(lines: dict[str, int], path: str, default: int) -> int:
    """The line of path, or of the nearest enclosing value that has one (the mapping missing a field)."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return lines.get("", default)


def _path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Tree:
    """Plain data from a composed YAML document, recording lines in a _Lines as it goes."""

    def __init__(self, loader: Any, filename: str) -> None:
        self.loader, self.filename = loader, filename
        self.lines = _Lines()
        self.count = 0
        self.open: set[int] = set()  # ids of collections being built: an alias into one is a loop

    def build(self, node: yaml.Node, path: str) -> Any:
        line = node.start_mark.line + 1
        self.lines.values[path] = line
        self.count += 1
        if self.count > _MAX_NODES or id(node) in self.open:
            why = "too many values" if self.count > _MAX_NODES else "a recursive alias"
            raise SpecError(self.filename, line, path, f"expected a spec document, got {why}")
        if isinstance(node, yaml.ScalarNode):
            return self.loader.construct_object(node)
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
            self.loader.flatten_mapping(node)  # applies '<<' merge keys
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    self.lines.problems.append((key_line, path, "expected a field name, got a collection as a key"))
                    continue
                key = key_node.value  # as written: keys like 'on' or 'yes' stay strings
                sub = f"{path}.{key}" if path else key
                if key in out:
                    self.lines.problems.append((key_line, sub, "duplicate field, expected each field once"))
                self.lines.keys[sub] = key_line
                out[key] = self.build(value_node, sub)
            return out
        finally:
            self.open.discard(id(node))


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model whose fields are at loc, following aliases, tuples and optionals from Service."""
    model: type[BaseModel] = Service
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        if part not in fields:
            return None
        ann = fields[part].annotation
        found = [a for a in (get_args(ann) or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not found:
            return None
        model = found[0]
    return model


_KINDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}
_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"),
           "less_than_equal": ("le", "<="), "less_than": ("lt", "<")}


def _explain(error: dict[str, Any]) -> tuple[tuple[str | int, ...], str]:
    """Field path and message of one pydantic error, in orchestr's words."""
    kind, loc, ctx = error["type"], tuple(error["loc"]), error.get("ctx") or {}
    got = _show(error.get("input"))
    if kind == "orchestr":
        return loc + tuple(ctx["at"]), ctx["message"]
    if kind == "missing":
        return loc, "required field is missing"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        names = [f.alias or n for n, f in model.model_fields.items()] if model else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        if close:
            return loc, f"unknown field, did you mean '{close[0]}'?"
        return loc, f"unknown field, expected one of: {', '.join(names)}"
    if kind in ("literal_error", "enum"):
        expected = ctx.get("expected", "")
        return loc, f"expected {'one of ' if ' or ' in expected else ''}{expected}, got {got}"
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        what = "an integer" if isinstance(ctx.get(key), int) else "a number"
        return loc, f"expected {what} {op} {ctx.get(key)}, got {got}"
    if kind in _KINDS:
        return loc, f"expected {_KINDS[kind]}, got {got}"
    return loc, f"invalid value {got}"


def _validate(data: Any, filename: str, line: int, lines: _Lines, base_dir: Path | None) -> Service:
    problems = list(lines.problems)
    try:
        service = Service.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as e:
        for error in e.errors(include_url=False):
            loc, message = _explain(error)
            path = _path(loc)
            problems.append((lines.find(path, line, key=error["type"] == "extra_forbidden"), path, message))
    if problems:
        # A wrong apiVersion or kind explains everything else, so it goes first; then file order.
        where, path, message = min(problems, key=lambda p: (p[1] not in ("apiVersion", "kind"), p[0]))
        if not path.isprintable():  # a quoted key can hold a newline; the error stays one line
            path = path.encode("unicode_escape").decode()
        raise SpecError(filename, where or None, path, message)
    service._source = (filename, line)
    service._lines = lines.values
    return service


def _parse(text: str, filename: str, base_dir: Path) -> list[Service]:
    loader = _Loader(text)
    services = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
                continue  # an empty document, e.g. after a trailing '---'
            line = node.start_mark.line + 1
            if not isinstance(node, yaml.MappingNode):
                got = _show(loader.construct_object(node)) if isinstance(node, yaml.ScalarNode) else "a list"
                raise SpecError(filename, line, "", f"expected a Service document (a mapping), got {got}")
            tree = _Tree(loader, filename)
            data = tree.build(node, "")
            loader.constructed_objects = {}
            services.append(_validate(data, filename, line, tree.lines, base_dir))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or "malformed"
        where = f" ({e.context})" if e.context else ""
        raise SpecError(filename, mark.line + 1 if mark else None, "", f"invalid YAML: {problem}{where}") from None
    except yaml.YAMLError as e:  # reader errors: bad characters, with an offset rather than a line
        position = getattr(e, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
        raise SpecError(filename, line, "", f"invalid YAML: {getattr(e, 'reason', e)}") from None
    finally:
        loader.dispose()
    return services


def _read(path: str | Path) -> tuple[str, str, Path]:
    """Text, name to show and base directory of one spec file; '-' is stdin."""
    name = str(path)
    if name == "-":
        return sys.stdin.read(), "<stdin>", Path.cwd()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(name, None, "", "expected a UTF-8 text file") from None
    except OSError as e:
        raise SpecError(name, None, "", f"cannot read the spec file: {e.strerror or e}") from None
    return text, name, Path(os.path.abspath(os.path.dirname(name) or "."))


def load(paths: Iterable[str | Path]) -> list[Service]:
    """Every Service in the given spec files, checked one by one and as a set; raises SpecError."""
    services: list[Service] = []
    for path in paths:
        text, name, base_dir = _read(path)
        services += _parse(text, name, base_dir)
    validate_set(services)
    return services


def loads(text: str, filename: str = "<string>", base_dir: Path | None = None) -> list[Service]:
    """Every Service in spec text; relative bind sources resolve against base_dir (default: cwd)."""
    base = Path(os.path.abspath(base_dir)) if base_dir is not None else Path.cwd()
    services = _parse(text, filename, base)
    validate_set(services)
    return services


def _overlap(a: str, b: str) -> bool:
    return a == b or ipaddress.ip_address(a).is_unspecified or ipaddress.ip_address(b).is_unspecified


def validate_set(services: Sequence[Service]) -> None:
    """Checks across services: unique names, known and acyclic dependsOn, host ports used once."""
    files: dict[str, int] = {}
    for service in services:
        files.setdefault(service.source[0], len(files))
    problems: list[tuple[tuple[int, int], SpecError]] = []

    def report(service: Service, path: str, message: str) -> None:
        file, line = service.source
        line = _line_of(service._lines, path, line)
        problems.append(((files[file], line), SpecError(file, line or None, path, message)))

    def where(service: Service, path: str) -> str:
        file, line = service.source
        line = _line_of(service._lines, path, line)
        return f"{file}:{line}" if line else file

    by_key: dict[tuple[str, str], Service] = {}
    for service in services:
        key = (service.namespace, service.name)
        if key in by_key:
            first = by_key[key]
            report(service, "metadata.name",
                   f"service {key[0]}/{key[1]} is already defined at {where(first, 'metadata.name')}")
        else:
            by_key[key] = service

    edges: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for key, service in by_key.items():
        edges[key] = []
        for i, dep in enumerate(service.spec.depends_on):
            if dep == service.name:
                report(service, f"spec.dependsOn[{i}]", "a service cannot depend on itself")
            elif (service.namespace, dep) not in by_key:
                report(service, f"spec.dependsOn[{i}]", f"no service '{dep}' in namespace '{service.namespace}'")
            else:
                edges[key].append((service.namespace, dep))
    for cycle in _cycles(edges):
        service = by_key[cycle[0]]
        i = service.spec.depends_on.index(cycle[1][1])
        report(service, f"spec.dependsOn[{i}]", "dependency cycle: " + " -> ".join(name for _, name in cycle))

    claims: dict[tuple[str, int], list[tuple[str, Service, str]]] = {}
    for service in services:
        for i, port in enumerate(service.spec.ports):
            if port.host_port is None:
                continue
            path = f"spec.ports[{i}].hostPort"
            shown = f"{port.host_ip}:{port.host_port}/{port.protocol}"
            if service.spec.replicas > 1:
                report(service, path, f"host port {shown} cannot be published by {service.spec.replicas} replicas; "
                                      "set replicas: 1 or leave hostPort out")
            for ip, other, other_path in claims.get((port.protocol, port.host_port), ()):
                if _overlap(ip, port.host_ip):
                    report(service, path, f"host port {shown} is already published by "
                                          f"{other.namespace}/{other.name} at {where(other, other_path)}")
                    break
            claims.setdefault((port.protocol, port.host_port), []).append((port.host_ip, service, path))

    if problems:
        raise min(problems, key=lambda p: p[0])[1]


def _cycles(edges: dict[Any, list[Any]]) -> Iterator[list[Any]]:
    """Each dependency cycle found by a depth-first walk, starting at its member listed first, closed."""
    order = {key: i for i, key in enumerate(edges)}
    state: dict[Any, int] = {}  # 1: on the current path, 2: done
    for start in edges:
        if start in state:
            continue
        path, stack = [start], [iter(edges[start])]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                cycle = path[path.index(nxt):]
                first = min(range(len(cycle)), key=lambda i: order[cycle[i]])
                cycle = cycle[first:] + cycle[:first]
                yield cycle + [cycle[0]]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(edges[nxt]))
