"""Tests of cagnet.config_io: dataclass trees from plain data, overrides, YAML files."""
from dataclasses import dataclass, field
from typing import Literal

import pytest

from cagnet.config_io import apply_overrides, from_dict, parse_override, read_yaml, to_dict
from cagnet.errors import ConfigError


@dataclass
class Optim:
    lr: float = 0.1
    kind: Literal["sgd", "adam"] = "sgd"
    warmup: int | None = None
    scale_range: tuple[float, float] = (0.5, 1.5)


@dataclass
class Root:
    optim: Optim = field(default_factory=Optim)
    name: str = "run"
    tags: list[str] = field(default_factory=list)


def test_defaults_and_nested_values():
    cfg = from_dict(Root, {"optim": {"lr": 0.01, "kind": "adam"}, "tags": ["a"]})
    assert cfg == Root(optim=Optim(lr=0.01, kind="adam"), tags=["a"])


def test_yaml_style_exponent_string_is_a_float():
    assert from_dict(Optim, {"lr": "1e-4"}).lr == pytest.approx(1e-4)


@pytest.mark.parametrize("data, message", [
    ({"optim": {"lrr": 1}}, "unknown config key 'optim.lrr' (did you mean 'lr'?)"),
    ({"nmae": "x"}, "unknown config key 'nmae' (did you mean 'name'?)"),
    ({"optim": {"kind": "sgdd"}}, "optim.kind: expected one of 'sgd', 'adam', got 'sgdd'"),
    ({"optim": {"warmup": "soon"}}, "optim.warmup"),
    ({"optim": {"warmup": True}}, "optim.warmup"),
    ({"optim": {"scale_range": [1.0]}}, "optim.scale_range: expected 2 values"),
    ({"optim": 3}, "optim: expected a mapping"),
    ({"tags": "a"}, "tags: expected a list"),
])
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError) as info:
        from_dict(Root, data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_overrides_are_parsed_as_yaml_and_validated():
    assert parse_override("optim.lr=0.5") == (["optim", "lr"], 0.5)
    data = apply_overrides({}, ["optim.kind=adam", "optim.scale_range=[0.25, 2]", "name=long run"])
    cfg = from_dict(Root, data)
    assert cfg.optim.kind == "adam" and cfg.optim.scale_range == (0.25, 2.0) and cfg.name == "long run"
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match="unknown config key 'optim.lrate'"):
        from_dict(Root, apply_overrides({}, ["optim.lrate=1"]))


def test_round_trip_through_plain_data():
    cfg = Root(optim=Optim(lr=0.2, warmup=3), tags=["x", "y"])
    assert from_dict(Root, to_dict(cfg)) == cfg


def test_read_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        read_yaml(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        read_yaml(listing)
