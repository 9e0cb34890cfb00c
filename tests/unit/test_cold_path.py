"""Cold-path shortcuts must behave exactly like what they replace."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from policies import config
from policies.env import is_secret_name
from sandbox.stubs import _key

PATTERNS = ["*KEY*", "AWS_*", "*_TOKEN", "EXACT", "*", "**", "", "A*B", "?X", "[AB]*", "*x", "X*Y*", "é*"]
NAMES = ["", "KEY", "mykey", "aws_x", "AWS", "xaws_", "A_TOKEN", "_TOKEN", "EXACT", "exact", "EXACTX",
         "AB", "aXb", "QX", "X", "xx", "XAYB", "a\nkey", "É1"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_secret_patterns_match_like_fnmatch(pattern: str) -> None:
    for name in NAMES:
        assert is_secret_name(name, (pattern,)) == fnmatch.fnmatchcase(name.upper(), pattern.upper()), name


def test_stub_keys_are_distinct_and_fit_a_file_name() -> None:
    paths = ["/a/b", "/a%2Fb", "/a/b/", "/a%b", "%2F", "/" + "x" * 300, "/" + "x" * 301, "/ü/\udcff"]
    keys = [_key(p) for p in paths]
    assert len(set(keys)) == len(keys)
    assert all("/" not in k and len(k.encode("utf-8", "surrogateescape")) + len(".users") <= 255 for k in keys)


def test_parsed_toml_cache_gives_the_same_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = tmp_path / "p.toml"
    src.write_text('a = 1\nb = 1.5\nc = "x"\nd = [1, 2]\n[e]\nf = true\ng = inf\n')
    first = config._parse_toml(src.read_bytes())
    assert list((tmp_path / "cache" / "stockade").glob("toml-*.json"))
    second = config._parse_toml(src.read_bytes())
    assert first == second and type(second["b"]) is float and second["e"]["g"] == float("inf")
    src.write_text("a = 2\n")
    assert config._parse_toml(src.read_bytes()) == {"a": 2}
    src.write_text("a = 1979-05-27\n")  # no JSON form: parsed each time, never cached wrongly
    assert str(config._parse_toml(src.read_bytes())["a"]) == "1979-05-27"
    assert str(config._parse_toml(src.read_bytes())["a"]) == "1979-05-27"
    with pytest.raises(config._TomlError):
        config._parse_toml(b"a = = 1\n")
