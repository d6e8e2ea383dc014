"""Run configs from YAML and overrides, checked key by key against the schema; YAML out.

A run config is read from YAML (which may name a ``base:`` YAML to start from), then
``key.path=value`` overrides are applied, then every key and value is checked against the
dataclasses of :mod:`rtinst.config_schema`:

- an unknown key is an error naming the closest valid key (``model.decoder_layer`` ->
  "did you mean 'model.decoder_layers'?");
- a bad value is an error naming the key and what is allowed (``Literal`` choices, minimum
  values from ``field(metadata={"min": ...})``).

The model section is a tagged union: ``model.name`` picks the dataclass it is built as.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from rtinst.config_schema import MODEL_CONFIGS, ModelConfig, RunConfig
from rtinst.errors import UserError, did_you_mean


class ConfigError(UserError):
    """A config key or value is invalid; the message names the key (and the file)."""


# --------------------------------------------------------------------------------------
# Building dataclasses from plain data, with errors that name the key
# --------------------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown_key(key: str, prefix: str, candidates: list[str]) -> ConfigError:
    hint = did_you_mean(key, candidates, prefix=prefix, listing="valid keys")
    return ConfigError(f"unknown key '{prefix}{key}'{hint}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to type ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key}: invalid value {value!r}; allowed values: {allowed}")
        return value
    if origin in (Union, types.UnionType):
        if tp == ModelConfig:
            return _build_model(value, key)
        non_none = [a for a in args if a is not type(None)]
        if value is None and len(non_none) < len(args):
            return None
        if len(non_none) == 1:
            return _convert(value, non_none[0], key)
        raise ConfigError(f"{key}: unsupported union type {tp}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for section '{key}', got {value!r}")
        return _build(tp, value, prefix=f"{key}.")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, e.g. {{name: value}}, got {value!r}")
        key_tp, value_tp = args or (Any, Any)
        return {_convert(k, key_tp, f"{key} key"): _convert(v, value_tp, f"{key}.{k}")
                for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads "1e-4" as a string; accept what float() accepts.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def _check_min(value: Any, f: dataclasses.Field, key: str) -> None:
    lo = f.metadata.get("min")
    if lo is None or value is None:
        return
    items = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
    for v in items:
        if v < lo:
            raise ConfigError(f"{key}: invalid value {v!r}; must be >= {lo}")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise _unknown_key(str(key), prefix, sorted(fields))
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        converted = _convert(value, hints[name], key)
        _check_min(converted, fields[name], key)
        kwargs[name] = converted
    return cls(**kwargs)


def _build_model(value: Any, key: str) -> Any:
    if isinstance(value, tuple(MODEL_CONFIGS.values())):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping with a 'name', got {value!r}")
    name = value.get("name", "sparseinst")
    if name not in MODEL_CONFIGS:
        allowed = ", ".join(repr(n) for n in MODEL_CONFIGS)
        raise ConfigError(f"{key}.name: invalid value {name!r}; allowed values: {allowed}")
    return _build(MODEL_CONFIGS[name], value, prefix=f"{key}.")


def from_dict(data: dict, cls: type = RunConfig) -> Any:
    """Build ``cls`` from nested plain data; every unspecified key takes its default."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(data).__name__}")
    return _build(cls, data)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


# --------------------------------------------------------------------------------------
# YAML, overrides, hash
# --------------------------------------------------------------------------------------


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML config, resolving ``base:`` (a path relative to this file) recursively."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    return _deep_merge(_read_yaml(path.parent / base, seen + (path,)), data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.decoder_layers=1"`` -> (["model", "decoder_layers"], 1). Values are YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. model.decoder_layers=1")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in nested plain data (validation happens in ``from_dict``)."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: '{p}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read YAML (or start from defaults), apply overrides, validate.

    Errors name the file and the key, e.g.
    ``cfg.yaml: unknown key 'model.decoder_layer'; did you mean 'model.decoder_layers'?``
    """
    data = _read_yaml(Path(path)) if path is not None else {}
    try:
        return from_dict(apply_overrides(data, overrides or []))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg: Any, path: str | Path) -> None:
    from rtinst.io import atomic_write_text

    atomic_write_text(path, to_yaml(cfg))
