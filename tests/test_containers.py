"""What every runtime decides the same way (orchestr.containers), and the error tree runtimes raise."""

from __future__ import annotations

import inspect
import os

import pytest

import orchestr
from orchestr import errors
from orchestr.containers import argv, rfc3339, volume_key, volumes
from orchestr.errors import TerminalFailure
from orchestr.model import ContainerSpec, Volume
from orchestr.spec import Service


def spec(**fields) -> ContainerSpec:
    return ContainerSpec(name="web-0", namespace="shop", image="example/web:1", **fields)


# Kubernetes' table: command replaces the entrypoint, args the cmd, and a command alone drops the cmd too.
@pytest.mark.parametrize(("command", "args", "expected"), [
    (None, None, ["/entry", "cmd"]),
    (None, ("a", "b"), ["/entry", "a", "b"]),
    (("run",), None, ["run"]),
    (("run",), ("a", "b"), ["run", "a", "b"]),
    ((), (), ["/entry", "cmd"]),  # empty lists count as not given
])
def test_argv_is_resolved_as_kubernetes_documents_it(command, args, expected):
    assert argv(spec(command=command, args=args), ["/entry"], ["cmd"]) == expected


def test_argv_without_anything_to_run_is_a_terminal_failure():
    assert argv(spec(args=("x",)), None, None) == ["x"]
    with pytest.raises(TerminalFailure, match="container web-0: no command: image example/web:1") as raised:
        argv(spec(), [], None)
    assert raised.value.container == "web-0" and not raised.value.retryable


def test_a_service_with_command_and_args_runs_both_on_any_image():
    (service,) = orchestr.loads(
        "apiVersion: orchestr/v1\nkind: Service\nmetadata: {name: web}\n"
        "spec: {image: busybox, command: [httpd, -f], args: [-v]}\n")
    assert argv(service.container_spec(0), ["/bin/sh"], ["-c", "true"]) == ["httpd", "-f", "-v"]


def test_volume_targets_are_normalised_and_bind_sources_resolved(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    checked = volumes(spec(volumes=(
        Volume("bind", "//data/./x/", str(tmp_path / "link")),
        Volume("volume", "/cache", "cache"),
        Volume("tmpfs", "/tmp", size=1 << 20),
    )))
    assert checked == (
        Volume("bind", "/data/x", str(real)),
        Volume("volume", "/cache", "cache"),
        Volume("tmpfs", "/tmp", size=1 << 20),
    )


@pytest.mark.parametrize(("volume", "message"), [
    (Volume("bind", "data", "/srv"), "the target must be an absolute path"),
    (Volume("tmpfs", "/."), "nothing may be mounted over the container's root"),
    (Volume("bind", "/a/..", "/srv"), "nothing may be mounted over the container's root"),
    (Volume("bind", "/data", "relative"), "a bind source must be an absolute host path"),
    (Volume("bind", "/data", "/nonexistent/orchestr-test"), "does not exist"),
    (Volume("volume", "/data", "../escape"), "a volume needs a plain name"),
    (Volume("tmpfs", "/data", "/srv"), "a tmpfs volume takes no source"),
    (Volume("nfs", "/data", "server:/x"), "unknown volume type 'nfs'"),
    (Volume("bind", "/host", "/"), "binding the host's / read-write is refused"),
])
def test_bad_volumes_are_refused_in_one_line(volume, message):
    with pytest.raises(TerminalFailure, match=message) as raised:
        volumes(spec(volumes=(volume,)))
    assert str(raised.value).startswith(f"container web-0: volume {volume.target!r}: ")
    assert "\n" not in str(raised.value)


def test_the_host_root_guard_follows_symlinks_and_honours_allow_host_root(tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to("/")
    with pytest.raises(TerminalFailure, match=f"binding {link}, which is the host's /, read-write is refused"):
        volumes(spec(volumes=(Volume("bind", "/host", str(link)),)))
    assert volumes(spec(volumes=(Volume("bind", "/host", str(link), read_only=True),)))[0].source == "/"
    allowed = Volume("bind", "/host", str(link), allow_host_root=True)
    assert volumes(spec(volumes=(allowed,)))[0].source == "/"


def test_allow_host_root_reaches_the_runtime(tmp_path):
    # a spec that passes validation only because of allowHostRoot must bring it to the runtime's check
    (service,) = orchestr.loads(
        "apiVersion: orchestr/v1\nkind: Service\nmetadata: {name: root}\n"
        "spec:\n  image: busybox\n  volumes: [{type: bind, source: /, target: /host, allowHostRoot: true}]\n")
    (volume,) = service.container_spec(0).volumes
    assert volume.allow_host_root
    assert volumes(service.container_spec(0))[0].source == "/"
    built = Service.build("root", volumes=[{"type": "bind", "source": str(tmp_path), "target": "/t"}])
    assert not built.container_spec(0).volumes[0].allow_host_root


def test_volume_keys_and_times():
    assert volume_key("shop", "cache") == "shop_cache"
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339().endswith("Z")


def test_every_error_class_is_exported_and_says_whether_to_retry():
    classes = {name for name, value in vars(errors).items()
               if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == errors.__name__}
    assert classes <= set(orchestr.__all__)
    assert {name: getattr(orchestr, name).retryable for name in classes
            if issubclass(getattr(orchestr, name), orchestr.RuntimeFailure)} == {
        "RuntimeFailure": True, "RuntimeUnavailable": True, "Timeout": True,
        "NotFound": False, "Conflict": False, "TerminalFailure": False,
    }


def test_located_fills_in_only_what_the_runtime_left_out():
    with pytest.raises(orchestr.NotFound) as raised, errors.located("docker", "abc"):
        raise orchestr.NotFound("gone", container="given")
    assert (raised.value.runtime, raised.value.container) == ("docker", "given")
    with pytest.raises(ValueError), errors.located("docker", "abc"):  # anything else passes untouched
        raise ValueError(os.devnull)
