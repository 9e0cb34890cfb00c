"""Policy building: profiles, user/project files, CLI overrides and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.config import Overrides, PolicyError, build_policy, load_profile
from policies.model import EnvInherit, Mode, NetworkMode


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def user_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    return write(tmp_path / "cfg" / "stockade" / "config.toml", text)


@pytest.mark.parametrize("name", ["read-only", "workspace-write", "full-access", "ci"])
def test_builtin_profiles_load(name: str, tmp_path: Path) -> None:
    policy = build_policy(Overrides(policy=name, workspace=str(tmp_path)))
    assert policy.mode.value == ("workspace-write" if name == "ci" else name)
    assert policy.workspace == str(tmp_path)


def test_default_is_workspace_write_network_off(tmp_path: Path) -> None:
    policy = build_policy(Overrides(workspace=str(tmp_path)))
    assert policy.mode is Mode.WORKSPACE_WRITE
    assert policy.network.mode is NetworkMode.OFF
    assert ".git" in policy.protected and ".stockade" in policy.protected
    assert "~/.ssh" in policy.deny_read and "/etc/shadow" in policy.deny_read


def test_unknown_profile_names_known_ones(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        build_policy(Overrides(policy="nope", workspace=str(tmp_path)))
    assert "unknown profile 'nope'" in str(err.value)
    assert "read-only" in str(err.value)


def test_policy_file_unknown_key(tmp_path: Path) -> None:
    f = write(tmp_path / "p.toml", 'mode = "read-only"\n[network]\nmod = "on"\n')
    with pytest.raises(PolicyError) as err:
        build_policy(Overrides(policy=str(f), workspace=str(tmp_path)))
    msg = str(err.value)
    assert msg.startswith(str(f)) and "network.mod" in msg and "unknown key" in msg
    assert "\n" not in msg


def test_policy_file_wrong_type(tmp_path: Path) -> None:
    f = write(tmp_path / "p.toml", '[limits]\ntimeout = "soon"\n')
    with pytest.raises(PolicyError, match=r"limits.timeout: expected a number, got a string"):
        build_policy(Overrides(policy=str(f), workspace=str(tmp_path)))


def test_policy_file_bad_enum(tmp_path: Path) -> None:
    f = write(tmp_path / "p.toml", 'mode = "yolo"\n')
    with pytest.raises(PolicyError, match=r"mode: 'yolo' is not one of"):
        build_policy(Overrides(policy=str(f), workspace=str(tmp_path)))


def test_policy_file_missing(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="policy file not found"):
        build_policy(Overrides(policy=str(tmp_path / "gone.toml"), workspace=str(tmp_path)))


def test_invalid_toml(tmp_path: Path) -> None:
    f = write(tmp_path / "p.toml", "mode = \n")
    with pytest.raises(PolicyError, match="invalid TOML"):
        build_policy(Overrides(policy=str(f), workspace=str(tmp_path)))


def test_extends(tmp_path: Path) -> None:
    f = write(tmp_path / "p.toml", 'extends = "read-only"\n[limits]\ntimeout = 5\n')
    policy = build_policy(Overrides(policy=str(f), workspace=str(tmp_path)))
    assert policy.mode is Mode.READ_ONLY and policy.limits.timeout == 5
    assert load_profile("read-only")["mode"] is Mode.READ_ONLY


def test_user_file_then_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    user_file(monkeypatch, tmp_path, 'profile = "read-only"\n[limits]\ntimeout = 7\n')
    ws = tmp_path / "ws"
    ws.mkdir()
    policy = build_policy(Overrides(workspace=str(ws)))
    assert policy.mode is Mode.READ_ONLY and policy.limits.timeout == 7
    policy = build_policy(Overrides(workspace=str(ws), policy="workspace-write", timeout=3))
    assert policy.mode is Mode.WORKSPACE_WRITE and policy.limits.timeout == 3


def test_user_file_error_names_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = user_file(monkeypatch, tmp_path, "[env]\ninherit = 3\n")
    with pytest.raises(PolicyError) as err:
        build_policy(Overrides(workspace=str(tmp_path)))
    assert str(err.value).startswith(str(f) + ": env.inherit")


def test_project_file_may_tighten(tmp_path: Path) -> None:
    write(tmp_path / ".stockade" / "config.toml", 'profile = "read-only"\n[limits]\ntimeout = 9\n')
    policy = build_policy(Overrides(workspace=str(tmp_path)))
    assert policy.mode is Mode.READ_ONLY and policy.limits.timeout == 9


@pytest.mark.parametrize("text,key", [
    ('profile = "full-access"\n', "profile"),
    ('[network]\nmode = "on"\n', "network.mode"),
    ('writable_roots = ["/etc"]\n', "writable_roots"),
    ('deny_read = []\n', "deny_read"),
    ('protected = []\n', "protected"),
    ('[env]\npassthrough = ["AWS_SECRET_ACCESS_KEY"]\n', "env.passthrough"),
    ('[env]\ninherit = "all"\n', "env.inherit"),
])
def test_project_file_cannot_weaken(tmp_path: Path, text: str, key: str) -> None:
    f = write(tmp_path / ".stockade" / "config.toml", text)
    with pytest.raises(PolicyError) as err:
        build_policy(Overrides(workspace=str(tmp_path)))
    assert str(err.value).startswith(f"{f}: {key}")
    assert "only tighten" in str(err.value)


def test_trusted_project_may_widen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / ".stockade" / "config.toml", '[network]\nmode = "on"\n')
    user_file(monkeypatch, tmp_path, f'trusted_projects = ["{ws}"]\n')
    assert build_policy(Overrides(workspace=str(ws))).network.mode is NetworkMode.ON


def test_no_config_ignores_files(tmp_path: Path) -> None:
    write(tmp_path / ".stockade" / "config.toml", "garbage = 1\n")
    policy = build_policy(Overrides(workspace=str(tmp_path)), use_project_config=False)
    assert policy.mode is Mode.WORKSPACE_WRITE


def test_overrides(tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    policy = build_policy(Overrides(workspace=str(tmp_path), writable=(str(extra),), network="on",
                                    timeout=2.5, env_passthrough=("GH_TOKEN",), env_set=(("A", "b"),)))
    assert policy.writable_roots == (str(extra),)
    assert policy.network.mode is NetworkMode.ON
    assert policy.limits.timeout == 2.5
    assert policy.env.passthrough == ("GH_TOKEN",) and policy.env.set == {"A": "b"}
    assert policy.env.inherit is EnvInherit.CORE


@pytest.mark.parametrize("ov,match", [
    (Overrides(writable=("/no/such/dir",)), "--writable"),
    (Overrides(network="maybe"), "--network"),
    (Overrides(timeout=-1), "--timeout"),
])
def test_bad_overrides(tmp_path: Path, ov: Overrides, match: str) -> None:
    ov.workspace = str(tmp_path)
    with pytest.raises(PolicyError, match=match):
        build_policy(ov)


def test_missing_workspace(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not a directory"):
        build_policy(Overrides(workspace=str(tmp_path / "nope")))


def test_missing_writable_root_in_file(tmp_path: Path) -> None:
    f = write(tmp_path / "p.toml", 'writable_roots = ["/no/such/dir"]\n')
    with pytest.raises(PolicyError) as err:
        build_policy(Overrides(policy=str(f), workspace=str(tmp_path)))
    assert str(err.value) == f"{f}: writable_roots: /no/such/dir: no such directory"


def test_missing_writable_root_in_user_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = user_file(monkeypatch, tmp_path, 'writable_roots = ["~/nope-xyz"]\n')
    with pytest.raises(PolicyError, match=f"^{f}: writable_roots: ~/nope-xyz: no such directory$"):
        build_policy(Overrides(workspace=str(tmp_path)))
