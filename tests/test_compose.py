"""Compose files as input: every key's translation, warnings and one-line errors at file:line:key, the convert
round trip, and compose files in the shape of real projects brought up on the native runtime."""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from orchestr.errors import SpecError
from orchestr.model import Probes, RestartPolicy
from orchestr.spec import dump, load, loads


def compose(tmp_path: Path, text: str, name: str = "docker-compose.yml", **files: str) -> Path:
    """A compose file (and files beside it: env files, .env) in a project directory named app."""
    project = tmp_path / "app"
    project.mkdir(exist_ok=True)
    for file, content in files.items():
        (project / file.replace("_dot_", ".")).write_text(textwrap.dedent(content))
    path = project / name
    path.write_text(textwrap.dedent(text))
    return path


def load_one(path: Path, environ: dict[str, str] | None = None, **options):
    warnings: list[str] = []
    services = load([path], environ=environ or {}, warn=warnings.append, **options)
    return {s.name: s for s in services}, warnings


def error_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None, **files: str) -> str:
    path = compose(tmp_path, text, **files)
    with pytest.raises(SpecError) as info:
        load_one(path, environ)
    return str(info.value).replace(str(path), "FILE").replace(str(path.parent), "DIR")


FULL = """\
    name: shop
    x-common: &common
      restart: unless-stopped
      labels: {tier: front}
    services:
      web:
        <<: *common
        image: ${REGISTRY:-docker.io}/library/busybox:${TAG}
        command: httpd -f -p "8080"
        environment:
          - DB_HOST=db
          - FROM_SHELL
          - UNSET_IN_SHELL
        env_file: [web.env, {path: missing.env, required: false}]
        ports:
          - "127.0.0.1:18080:8080"
          - "9000-9001:9000-9001/udp"
          - 53/udp
          - "[::1]:18443:443"
          - {target: 81, published: "18081", host_ip: 127.0.0.1, protocol: tcp, mode: host}
        volumes:
          - ./static:/srv:ro
          - data:/data
          - {type: bind, source: /etc, target: /host-etc, read_only: true}
          - {type: volume, source: db_data, target: /shared}
          - {type: tmpfs, target: /run, tmpfs: {size: 1m}}
        tmpfs: /tmp:size=2m,mode=1777
        depends_on:
          db: {condition: service_started}
          cache:
            condition: service_started
            required: true
        deploy:
          replicas: 1
          resources: {limits: {cpus: "0.5", memory: 64M, pids: 40}}
        user: "1000:1000"
        working_dir: /srv
        read_only: true
        init: true
        stop_grace_period: 1m30s
        security_opt: [no-new-privileges:true]
      db:
        image: busybox
        entrypoint: [sh, -c]
        command: ["exec sleep 3600"]
        environment:
          POSTGRES_DB: app
          PORT: 5432
          DEBUG: false
          PASSWORD: "$$ecret"
          FROM_SHELL:
        mem_limit: 128m
        cpus: 0.25
        pids_limit: 50
        restart: "no"
        volumes: [db_data:/var/lib/db]
      cache:
        image: busybox
        entrypoint: ""
        command: [sleep, "3600"]
        restart: on-failure
        network_mode: host
        labels: [cache=yes, role]
        scale: 1
      debug:
        image: busybox
        profiles: [debug]
        depends_on: [db]
    volumes:
      data:
      db_data: {driver: local}
"""


def test_every_translated_key_lands_in_the_orchestr_spec(tmp_path):
    path = compose(tmp_path, FULL, web_dot_env="")
    (path.parent / "web.env").write_text("# the web's settings\nexport A=1\nB='two words'  \nC=\"x\\ny\" # note\nD=plain # note\n")
    services, warnings = load_one(path, {"TAG": "1.36", "FROM_SHELL": "yes", "DB_HOST": "not this"})
    assert list(services) == ["web", "db", "cache"]  # debug is in a profile that is not active
    web, db, cache = services["web"], services["db"], services["cache"]
    assert {s.namespace for s in services.values()} == {"shop"}
    w = web.spec
    assert w.image == "docker.io/library/busybox:1.36"
    assert w.command is None and w.args == ("httpd", "-f", "-p", "8080")
    assert dict(w.env) == {"A": "1", "B": "two words", "C": "x\ny", "D": "plain", "DB_HOST": "db", "FROM_SHELL": "yes"}
    assert [(p.host_ip, p.host_port, p.container_port, p.protocol) for p in w.ports] == [
        ("127.0.0.1", 18080, 8080, "tcp"), ("0.0.0.0", 9000, 9000, "udp"), ("0.0.0.0", 9001, 9001, "udp"),
        ("0.0.0.0", None, 53, "udp"), ("::1", 18443, 443, "tcp"), ("127.0.0.1", 18081, 81, "tcp")]
    assert [(v.type, v.source, v.target, v.read_only, v.size) for v in w.volumes] == [
        ("bind", str(path.parent / "static"), "/srv", True, None),
        ("volume", "data", "/data", False, None),
        ("bind", "/etc", "/host-etc", True, None),
        ("volume", "db-data", "/shared", False, None),
        ("tmpfs", None, "/run", False, 1 << 20),
        ("tmpfs", None, "/tmp", False, 2 << 20)]
    assert w.depends_on == ("db", "cache")
    assert (w.replicas, w.resources.cpus, w.resources.memory, w.resources.pids) == (1, 0.5, 64 << 20, 40)
    assert (w.user, w.working_dir, w.read_only, w.init, w.stop_grace_period) == ("1000:1000", "/srv", True, True, 90)
    assert w.restart_policy == RestartPolicy.ALWAYS and web.metadata.labels == {"tier": "front"}
    d = db.spec
    assert d.command == ("sh", "-c") and d.args == ("exec sleep 3600",)
    assert dict(d.env) == {"POSTGRES_DB": "app", "PORT": "5432", "DEBUG": "false", "PASSWORD": "$ecret",
                           "FROM_SHELL": "yes"}
    assert (d.resources.memory, d.resources.cpus, d.resources.pids) == (128 << 20, 0.25, 50)
    assert d.restart_policy == RestartPolicy.NEVER
    c = cache.spec
    assert c.command == ("sleep", "3600") and c.args is None  # an empty entrypoint: the command is all
    assert c.restart_policy == RestartPolicy.ON_FAILURE and c.network == "host"
    assert cache.metadata.labels == {"cache": "yes", "role": ""}
    assert warnings == []  # a bare name missing from the shell is left out, as compose does


def test_profiles_enable_services_from_the_flag_or_compose_profiles(tmp_path):
    path = compose(tmp_path, FULL, **{"web.env": "A=1\n"})
    for options, environ in (({"profiles": ["debug"]}, {}), ({}, {"COMPOSE_PROFILES": "x,debug"})):
        services, _ = load_one(path, {"TAG": "1", **environ}, **options)
        assert list(services) == ["web", "db", "cache", "debug"]


def test_a_service_without_restart_is_never_restarted_as_in_compose(tmp_path):
    services, _ = load_one(compose(tmp_path, "services: {job: {image: busybox}}"))
    assert services["job"].spec.restart_policy == RestartPolicy.NEVER


@pytest.mark.parametrize("given, environ, expected", [
    ("${A}", {"A": "x"}, "x"), ("$A-b", {"A": "x"}, "x-b"), ("${A:-d}", {"A": ""}, "d"), ("${A-d}", {"A": ""}, ""),
    ("${A:-${B:-deep}}", {}, "deep"), ("${A:+alt}", {"A": "x"}, "alt"), ("${A+alt}", {}, ""), ("$$A", {}, "$A"),
    ("${A:?}", {"A": "ok"}, "ok"), ("a$${A}b", {}, "a${A}b"),
])
def test_interpolation(tmp_path, given, environ, expected):
    path = compose(tmp_path, f"services:\n  web:\n    image: busybox\n    environment: {{V: '{given}'}}\n")
    services, _ = load_one(path, environ)
    assert services["web"].spec.env["V"] == expected


def test_dot_env_beside_the_file_interpolates_and_the_shell_wins(tmp_path):
    text = "services:\n  web:\n    image: busybox:${TAG}\n    environment: ['WHO=${WHO}']\n"
    path = compose(tmp_path, text, _dot_env="TAG=1.36\nWHO=dotenv\nCOMPOSE_PROJECT_NAME=from_env\n")
    services, _ = load_one(path, {"WHO": "shell"})
    web = services["web"]
    assert web.spec.image == "busybox:1.36" and web.spec.env["WHO"] == "shell" and web.namespace == "from-env"


def test_an_unset_variable_warns_and_becomes_empty(tmp_path):
    path = compose(tmp_path, "services:\n  web:\n    image: busybox\n    environment: ['X=a${NOPE}b']\n")
    services, warnings = load_one(path)
    assert services["web"].spec.env["X"] == "ab"
    assert warnings == [f"{path}:4: services.web.environment[0]: $NOPE is not set; it becomes an empty string"]


def test_the_project_name_comes_from_p_then_name_then_the_directory(tmp_path):
    path = compose(tmp_path, "services: {web: {image: busybox}}")
    assert load_one(path)[0]["web"].namespace == "app"
    assert load_one(path, project="other")[0]["web"].namespace == "other"
    path.write_text("name: My_Shop\nservices: {web: {image: busybox}}")
    assert load_one(path)[0]["web"].namespace == "my-shop"
    odd = tmp_path / "Odd Dir_1."
    odd.mkdir()
    (odd / "compose.yaml").write_text("services: {web: {image: busybox}}")
    assert load_one(odd / "compose.yaml")[0]["web"].namespace == "odd-dir-1"
    with pytest.raises(SpecError, match=r"-p: the project name is the namespace: expected lowercase"):
        load_one(path, project="no/slashes")


def test_warnings_name_file_line_and_key_for_what_is_ignored(tmp_path):
    path = compose(tmp_path, """\
        version: "3"
        services:
          web:
            image: busybox
            build: .
            container_name: my-web
            healthcheck: {test: [CMD, "true"], interval: 5s}
            depends_on: {db: {condition: service_healthy, restart: true}}
            restart: on-failure:3
            deploy: {resources: {reservations: {memory: 10M}}, placement: {constraints: []}}
          db:
            image: busybox
            healthcheck: {disable: true}
    """)
    services, warnings = load_one(path)
    assert services["web"].spec.depends_on == ("db",) and services["web"].spec.depends_on[0].condition == "healthy"
    assert services["web"].spec.healthcheck.exec == ("true",) and services["web"].spec.healthcheck.interval == 5
    assert services["db"].probes() == Probes()  # disabled: not even the image's HEALTHCHECK
    assert [w.replace(str(path), "FILE") for w in warnings] == [
        "FILE:1: version: ignored: obsolete; compose ignores it too",
        "FILE:6: services.web.container_name: ignored: containers are named <service>-<replica>",
        "FILE:5: services.web.build: ignored: the image 'busybox' must already be there or pullable",
        "FILE:9: services.web.restart: the retry limit 3 is ignored: a failed container is started again at each apply",
        "FILE:10: services.web.deploy.resources.reservations: ignored: reservations are not enforced",
        "FILE:10: services.web.deploy.placement: ignored: a swarm setting, and orchestr runs on one host",
        "FILE:8: services.web.depends_on.db.restart: ignored: a new db does not restart this service",
    ]


BROKEN = {
    "unknown key with a suggestion": (
        "services:\n  web:\n    image: busybox\n    enviroment: [A=1]\n",
        "FILE:4: services.web.enviroment: unknown service key, did you mean 'environment'?"),
    "a key orchestr cannot honour": (
        "services:\n  web:\n    image: busybox\n    privileged: true\n",
        "FILE:4: services.web.privileged: not supported by orchestr (the README's compose table lists what is)"),
    "build without image": (
        "services:\n  web:\n    build: .\n",
        "FILE:3: services.web.build: not supported: orchestr does not build images; build it, and give its reference "
        "as image"),
    "no image": ("services:\n  web:\n    command: [x]\n", "FILE:2: services.web: expected an image"),
    "service name that is no DNS label": (
        "services:\n  Web_1:\n    image: busybox\n",
        "FILE:2: services.Web_1: a service name becomes a DNS name: expected lowercase letters, digits and '-', at "
        "most 63, starting and ending with a letter or digit, got 'Web_1'"),
    "bad image from orchestr's own check": (
        "services:\n  web:\n    image: 'Not An Image'\n",
        "FILE:3: services.web.image: expected an image reference like busybox:latest, got 'Not An Image'"),
    "bad memory": (
        "services:\n  web:\n    image: busybox\n    mem_limit: lots\n",
        "FILE:4: services.web.mem_limit: expected a size like 512m or 1g, got 'lots'"),
    "too little memory, from orchestr's range check": (
        "services:\n  web:\n    image: busybox\n    deploy:\n      resources:\n        limits: {memory: 1m}\n",
        "FILE:6: services.web.deploy.resources.limits.memory: expected at least 6Mi, too little memory for a process "
        "to start, got 1Mi"),
    "conflicting limits": (
        "services:\n  web:\n    image: busybox\n    cpus: 1\n    deploy: {resources: {limits: {cpus: 0.5}}}\n",
        "FILE:5: services.web.deploy.resources.limits.cpus: conflicts with cpus: give the limit once"),
    "bad port": (
        "services:\n  web:\n    image: busybox\n    ports: ['80:http']\n",
        "FILE:4: services.web.ports[0]: expected a port number or a range like 8000-8010, got 'http'"),
    "mismatched port ranges": (
        "services:\n  web:\n    image: busybox\n    ports: ['8000-8002:80']\n",
        "FILE:4: services.web.ports[0]: the host range has 3 ports and the container range 1: orchestr publishes "
        "port to port (without a host port, it picks a free one)"),
    "sctp": (
        "services:\n  web:\n    image: busybox\n    ports: ['80/sctp']\n",
        "FILE:4: services.web.ports[0]: expected protocol tcp or udp, got 'sctp'"),
    "bad host IP, from orchestr's check": (
        "services:\n  web:\n    image: busybox\n    ports:\n      - 1.2.3:80:80\n",
        "FILE:5: services.web.ports[0]: expected an IP address like 127.0.0.1, got '1.2.3'"),
    "a host port twice, from the set check": (
        "services:\n  a:\n    image: busybox\n    ports: ['8080:80']\n  b:\n    image: busybox\n    ports: ['8080:81']\n",
        "FILE:7: services.b.ports[0]: host port 0.0.0.0:8080/tcp is already published by app/a at FILE:4"),
    "undeclared named volume": (
        "services:\n  web:\n    image: busybox\n    volumes: ['data:/data']\n",
        "FILE:4: services.web.volumes[0]: volume 'data' is not declared under the top-level volumes (declared: none)"),
    "anonymous volume": (
        "services:\n  web:\n    image: busybox\n    volumes: [/data]\n",
        "FILE:4: services.web.volumes[0]: not supported: an anonymous volume; name it (NAME:TARGET, declared under "
        "the top-level volumes) or use tmpfs"),
    "relative target, from orchestr's check": (
        "services:\n  web:\n    image: busybox\n    volumes: ['./x:data']\n",
        "FILE:4: services.web.volumes[0]: expected an absolute path without '..', got 'data'"),
    "external volume": (
        "services:\n  web:\n    image: busybox\nvolumes:\n  data:\n    external: true\n",
        "FILE:6: volumes.data.external: not supported: a volume belongs to its namespace and is made on first use"),
    "unknown dependency": (
        "services:\n  web:\n    image: busybox\n    depends_on: [db]\n",
        "FILE:4: services.web.depends_on[0]: no service 'db' in this file"),
    "dependency in an inactive profile": (
        "services:\n  web:\n    image: busybox\n    depends_on: [db]\n  db:\n    image: busybox\n    profiles: [x]\n",
        "FILE:4: services.web.depends_on[0]: db is not in an active profile (COMPOSE_PROFILES, --profile)"),
    "dependency cycle, from the set check": (
        "services:\n  a:\n    image: busybox\n    depends_on: [b]\n  b:\n    image: busybox\n    depends_on: [a]\n",
        "FILE:4: services.a.depends_on[0]: dependency cycle: a -> b -> a"),
    "completed successfully": (
        "services:\n  web:\n    image: busybox\n    depends_on:\n      migrate:\n"
        "        condition: service_completed_successfully\n  migrate:\n    image: busybox\n    restart: always\n",
        "FILE:6: services.web.depends_on.migrate: migrate never completes: its restartPolicy is Always; "
        "give it OnFailure or Never"),
    "healthcheck test": (
        "services:\n  web:\n    image: busybox\n    healthcheck:\n      test: [CMD-FOO, x]\n",
        "FILE:5: services.web.healthcheck.test: expected a command string, or a list starting with CMD, CMD-SHELL "
        "or NONE, got a list"),
    "healthcheck interval": (
        "services:\n  web:\n    image: busybox\n    healthcheck:\n      test: [CMD, x]\n      interval: soon\n",
        "FILE:6: services.web.healthcheck.interval: expected a duration like 10s, 1m30s or 500ms, got 'soon'"),
    "network of another service": (
        "services:\n  web:\n    image: busybox\n    network_mode: service:db\n",
        "FILE:4: services.web.network_mode: expected bridge, host or none, got 'service:db' (sharing another "
        "service's or container's network is not supported)"),
    "bad restart": (
        "services:\n  web:\n    image: busybox\n    restart: sometimes\n",
        "FILE:4: services.web.restart: expected no, always, on-failure[:N] or unless-stopped, got 'sometimes'"),
    "bad read_only, from orchestr's check": (
        "services:\n  web:\n    image: busybox\n    read_only: maybe\n",
        "FILE:4: services.web.read_only: expected true or false, got 'maybe'"),
    "bad stop_grace_period": (
        "services:\n  web:\n    image: busybox\n    stop_grace_period: soon\n",
        "FILE:4: services.web.stop_grace_period: expected a duration like 10s, 1m30s or 500ms, got 'soon'"),
    "required variable": (
        "services:\n  web:\n    image: busybox:${TAG:?give a TAG}\n",
        "FILE:3: services.web.image: $TAG is not set: give a TAG"),
    "unclosed variable": (
        "services:\n  web:\n    image: busybox\n    environment: ['A=${B']\n",
        "FILE:4: services.web.environment[0]: '${' is not closed in 'A=${B'"),
    "bad variable": (
        "services:\n  web:\n    image: busybox\n    environment: ['A=${B C}']\n",
        "FILE:4: services.web.environment[0]: expected ${NAME}, ${NAME:-default} or ${NAME:?message}, got ${B C}"),
    "secrets": (
        "services:\n  web:\n    image: busybox\nsecrets:\n  key: {file: ./key}\n",
        "FILE:4: secrets: not supported: orchestr has no secrets"),
    "missing env file": (
        "services:\n  web:\n    image: busybox\n    env_file: nope.env\n",
        "FILE:4: services.web.env_file: no such env file: DIR/nope.env"),
    "bad line in an env file": (
        "services:\n  web:\n    image: busybox\n    env_file: [web.env]\n",
        "DIR/web.env:2: expected KEY=VALUE with a variable name as KEY, got 'not a pair = x'"),
    "bad security option": (
        "services:\n  web:\n    image: busybox\n    security_opt: ['apparmor:unconfined']\n",
        "FILE:4: services.web.security_opt[0]: not supported: expected seccomp:unconfined or "
        "no-new-privileges:true, got 'apparmor:unconfined'"),
    "invalid YAML": ("services:\n  web:\n\timage: busybox\n",
                     "FILE:3: invalid YAML: a tab at column 1; YAML indents with spaces only (while scanning for the "
                     "next token)"),
    "services not a mapping": ("services: [web]\n", "FILE:1: services: expected a mapping of service names to "
                                                    "services, got a list"),
    "unknown top-level key": ("services: {web: {image: busybox}}\nservice: {}\n",
                              "FILE:2: service: unknown top-level key, expected services, name, volumes, networks or "
                              "x-*"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_compose_files_give_one_line_at_file_line_and_key(tmp_path, case):
    text, expected = BROKEN[case]
    assert error_of(tmp_path, text, **{"web.env": "A=1\nnot a pair = x\n"}) == expected


def test_convert_round_trips_through_the_orchestr_spec(tmp_path):
    path = compose(tmp_path, FULL, **{"web.env": "A=1\n"})
    services = load([path], environ={"TAG": "1"}, profiles=["debug"])
    text = dump(services)
    again = loads(text, "converted.yaml")
    assert [(s.namespace, s.name, s.spec_hash) for s in again] == [(s.namespace, s.name, s.spec_hash) for s in services]
    assert [s.spec for s in again] == [s.spec for s in services]
    assert dump(again) == text


# -- real-project shapes, brought up on the native runtime ------------------------------------------------------

native = pytest.mark.skipif(os.geteuid() != 0, reason="the native runtime needs root")


@pytest.fixture
def ns(namespace, state_dir, busybox_archive):
    """A project (namespace) on a fresh native state dir holding the test image; nothing may be left afterwards."""
    from test_native_cli import assert_nothing_left, orc

    orc("images", "import", str(busybox_archive), state_dir=state_dir, check=True)
    yield namespace
    assert_nothing_left(namespace, state_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# A web app with a database and a cache, as the compose files of Django, Rails or Node apps are laid out:
# the database keeps its data in a named volume, the web serves a bind-mounted directory on a published port and
# finds the database by its service name, settings come from .env and an env file.
WEB_APP = """\
    services:
      web:
        image: ${IMAGE}
        command: ["sh", "-c", "echo \\"db=$$DATABASE_URL cache=$$CACHE_URL\\" > /srv/www/env.txt; exec httpd -f -p 8000 -h /srv/www"]
        environment:
          DATABASE_URL: postgres://app:${DB_PASSWORD}@db:5432/app
          CACHE_URL: redis://cache:6379/0
        env_file: .web.env
        ports:
          - "127.0.0.1:${WEB_PORT}:8000"
        volumes:
          - ./public:/srv/www
        depends_on:
          db:
            condition: service_healthy
          cache:
            condition: service_started
        restart: unless-stopped
        stop_grace_period: 1s
        deploy:
          resources:
            limits: {cpus: "0.5", memory: 64M}
      db:
        image: ${IMAGE}
        command: ["sh", "-c", "echo ready > /var/lib/postgresql/data/PG_VERSION; exec httpd -f -p 5432 -h /var/lib/postgresql/data"]
        environment:
          - POSTGRES_PASSWORD=${DB_PASSWORD}
        volumes:
          - db_data:/var/lib/postgresql/data
        healthcheck:
          test: ["CMD-SHELL", "wget -q -O- http://localhost:5432/PG_VERSION"]
          interval: 5s
        restart: always
        stop_grace_period: 1s
      cache:
        image: ${IMAGE}
        command: httpd -f -p 6379 -h /data
        tmpfs: /data:size=8m
        mem_limit: 32m
        stop_grace_period: 1s
        restart: always
    volumes:
      db_data:
"""

# A worker with a queue, as Celery or Sidekiq deployments are laid out: the queue is a service the workers
# poll by name, the workers are replicas with a pids limit, a profile adds a monitor.
WORKER_QUEUE = """\
    x-worker: &worker
      image: ${IMAGE}
      stop_grace_period: 1s
      restart: on-failure
    services:
      queue:
        <<: *worker
        entrypoint: ["/bin/sh", "-c"]
        command: ["mkdir -p /q && echo job-42 > /q/next && exec httpd -f -p 5672 -h /q"]
        restart: always
      worker:
        <<: *worker
        command: >-
          sh -c 'while true; do wget -q -O- http://queue:5672/next && sleep 0.2 || sleep 0.2; done'
        depends_on: [queue]
        pids_limit: 20
        deploy:
          replicas: 2
      flower:
        <<: *worker
        command: sleep 3600
        profiles: [monitoring]
"""


def up(path: Path, ns: str, state_dir: Path, *args: str) -> str:
    from test_native_cli import orc

    out = orc("apply", "-p", ns, "-f", str(path), *args, state_dir=state_dir, check=True)
    return out.stdout + out.stderr


@native
def test_a_web_app_with_a_database_and_a_cache_comes_up(ns, tmp_path, state_dir):
    from test_native_cli import get_json, orc, until

    from conftest import TEST_IMAGE

    port = free_port()
    path = compose(tmp_path, WEB_APP, _dot_env=f"IMAGE={TEST_IMAGE}\nWEB_PORT={port}\nDB_PASSWORD=s3cret\n",
                   _dot_web_dot_env="SECRET_KEY='not so secret'\n")
    (path.parent / "public").mkdir()
    (path.parent / "public" / "index.html").write_text("hello from compose\n")

    out = up(path, ns, state_dir)
    assert "3 done, 0 failed" in out
    done = [line.split()[-1] for line in out.splitlines() if line.strip().startswith("done")]
    assert done[-1] == f"{ns}/web-0"  # after what it depends on
    containers = {c["name"]: c for c in get_json(ns, state_dir)}
    assert sorted(containers) == ["cache-0", "db-0", "web-0"]
    assert all(c["state"] == "running" for c in containers.values())

    assert fetch(f"http://127.0.0.1:{port}/index.html") == "hello from compose\n"
    assert fetch(f"http://127.0.0.1:{port}/env.txt") == \
        "db=postgres://app:s3cret@db:5432/app cache=redis://cache:6379/0\n"
    # the web finds the database and the cache by their service names
    for url, expected in (("http://db:5432/PG_VERSION", "ready"), ("http://cache:6379/", "")):
        got = orc("exec", "-n", ns, "web-0", "--", "wget", "-q", "-O-", url, state_dir=state_dir)
        assert got.returncode == 0 or (expected == "" and "404" in got.stderr), got.stderr
        assert expected in got.stdout
    env = orc("exec", "-n", ns, "web-0", "--", "sh", "-c", "echo $SECRET_KEY", state_dir=state_dir, check=True)
    assert env.stdout == "not so secret\n"
    mounts = orc("exec", "-n", ns, "cache-0", "--", "grep", " /data ", "/proc/mounts", state_dir=state_dir,
                 check=True).stdout
    assert mounts.startswith("tmpfs /data tmpfs") and "size=8192k" in mounts

    # unchanged: nothing to do; the plan and diff read the same compose file
    assert "nothing to do" in up(path, ns, state_dir)
    assert orc("diff", "-p", ns, "-f", str(path), state_dir=state_dir).returncode == 0
    # a changed .env changes the web only
    port = free_port()
    (path.parent / ".env").write_text(f"IMAGE={TEST_IMAGE}\nWEB_PORT={port}\nDB_PASSWORD=s3cret\n")
    assert orc("diff", "-p", ns, "-f", str(path), state_dir=state_dir).returncode == 1
    out = up(path, ns, state_dir)
    # rolled out: the new web-0 made beside the old one, which then goes
    assert "2 done" in out and f"{ns}/web-0" in out and f"{ns}/db-0" not in out
    assert fetch(f"http://127.0.0.1:{port}/index.html") == "hello from compose\n"

    converted = orc("convert", "-p", ns, "-f", str(path), state_dir=state_dir, check=True).stdout
    (tmp_path / "orchestr.yaml").write_text(converted)
    assert "nothing to do" in orc("apply", "-f", str(tmp_path / "orchestr.yaml"), state_dir=state_dir,
                                  check=True).stdout  # the converted spec is the same services
    orc("delete", "-p", ns, "-f", str(path), state_dir=state_dir, check=True)
    until(lambda: get_json(ns, state_dir) == [], "the project to be gone")


@native
def test_workers_and_a_queue_come_up_and_talk_by_service_name(ns, tmp_path, state_dir):
    from test_native_cli import get_json, orc, until

    from conftest import TEST_IMAGE

    path = compose(tmp_path, WORKER_QUEUE, "compose.yaml")
    env = {**os.environ, "IMAGE": TEST_IMAGE, "ORCHESTR_STATE_DIR": str(state_dir), "ORCHESTR_RUNTIME": "native"}

    def orchestr(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([_orchestr(), *args], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc

    assert "3 done, 0 failed" in orchestr("apply", "-p", ns, "-f", str(path)).stdout
    containers = {c["name"]: c for c in get_json(ns, state_dir)}
    assert sorted(containers) == ["queue-0", "worker-0", "worker-1"]  # flower is in a profile not enabled

    for worker in ("worker-0", "worker-1"):
        until(lambda: "job-42" in orc("logs", "-n", ns, worker, state_dir=state_dir).stdout,
              f"{worker} to fetch a job from the queue")
    pids = [Path(d, "pids.max").read_text().strip() for d in _cgroups(containers["worker-0"]["id"], "pids")]
    assert pids == ["20"]
    # the profile adds the monitor and leaves the rest as it is
    out = orchestr("apply", "-p", ns, "--profile", "monitoring", "-f", str(path)).stdout
    assert "1 done" in out and f"{ns}/flower-0" in out
    orchestr("delete", "-p", ns, "--profile", "monitoring", "-f", str(path))
    assert get_json(ns, state_dir) == []


def _orchestr() -> str:
    import sys

    return str(Path(sys.executable).parent / "orchestr")


def _cgroups(container_id: str, controller: str) -> list[str]:
    from test_native_cli import cgroup_dirs

    return [d for d in cgroup_dirs({container_id}) if f"/{controller}/" in d or "/sys/fs/cgroup/orchestr/" in d]


def test_convert_prints_the_spec_and_a_broken_file_is_one_line(tmp_path):
    path = compose(tmp_path, "services:\n  web:\n    image: busybox\n    ports: ['8080:80']\n    hostname: w\n")
    env = {**os.environ, "ORCHESTR_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.run([_orchestr(), "convert", "-p", "shop", "-f", str(path)], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("apiVersion: orchestr/v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n")
    assert proc.stderr == f"orchestr: warning: {path}:5: services.web.hostname: ignored: a container's hostname is " \
                          "its name\n"
    assert [s.spec_hash for s in loads(proc.stdout)] == [s.spec_hash for s in load([path], project="shop")]
    path.write_text("services:\n  web:\n    image: busybox\n    cap_add: [NET_ADMIN]\n")
    for command in ("convert", "apply", "diff", "delete"):
        proc = subprocess.run([_orchestr(), command, "-f", str(path)], capture_output=True, text=True, env=env)
        assert (proc.returncode, proc.stdout) == (2, "")
        assert proc.stderr == f"orchestr: {path}:4: services.web.cap_add: not supported by orchestr (the README's " \
                              "compose table lists what is)\n"


def test_the_spec_cache_key_of_a_compose_file_follows_what_it_reads(tmp_path, monkeypatch):
    from orchestr import speccache

    path = compose(tmp_path, "services:\n  web:\n    image: busybox:${TAG:-1}\n    environment: [FROM_SHELL]\n")
    monkeypatch.delenv("TAG", raising=False)
    first = speccache.key([str(path)])
    monkeypatch.setenv("UNRELATED", "x")
    assert speccache.key([str(path)]) == first  # a variable the file does not read changes nothing
    for name in ("TAG", "FROM_SHELL", "COMPOSE_PROJECT_NAME"):
        monkeypatch.setenv(name, "2")
        assert speccache.key([str(path)]) != first
        monkeypatch.delenv(name)
    assert speccache.key([str(path)]) == first
    (path.parent / ".env").write_text("TAG=3\n")
    assert speccache.key([str(path)]) != first
    assert speccache.key([str(path)], "project\0") != speccache.key([str(path)])
    path.write_text(path.read_text() + "    env_file: web.env\n")
    assert speccache.key([str(path)]) is None  # what env files hold is not looked at: always validated
