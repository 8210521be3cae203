"""Command-line flags generated from a stage's pydantic config model: one source of truth for options.

A command that runs a stage with a config model (``MixConfig``, ``AnnotateConfig`` ...) declares
its options once, in the model: each field becomes a flag (``valid_fraction`` -> ``--valid-fraction``)
whose help is the field's description and default. Every such command also takes ``--config FILE``
(YAML with the model's keys) and ``--set KEY=VALUE`` (dotted overrides, repeatable). Precedence,
lowest first: the model's defaults, the file, flags given on the command line, ``--set``.

    def add_arguments(parser):
        add_config_flags(parser, MixConfig, positional=["spec"], flags={"output": ["-o", "--output"]})

    def run(args):
        cfg = config_from_args(MixConfig, args)

Field types map to flags: ``bool`` -> ``--x`` / ``--no-x``; ``Literal`` -> choices; ``int``,
``float``, ``str``, ``Path`` (optional or not) -> a typed value; ``list[...]`` -> a repeatable flag;
``dict[str, ...]`` -> a repeatable ``KEY=VALUE`` flag (values read as YAML scalars). Nested models
and other types are set through the file or ``--set``. Flags never given are absent from the
namespace (``argparse.SUPPRESS``), so they do not mask the file.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from sage_dialog.core.errors import UserError

# model name -> field -> the option string that sets it (errors name the flag the value came from)
_OPTION_NAMES: dict[str, dict[str, str]] = {}
_PAIRS = "pairs"  # marker: a dict field given as repeated KEY=VALUE


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        scalars = [a for a in args if not (isinstance(a, type) and issubclass(a, BaseModel))]
        if len(scalars) == 1:  # X | None, or str | BackendConfig: the command line gives the scalar
            return scalars[0]
    return tp


def _default_text(info: FieldInfo) -> str:
    if info.default is PydanticUndefined:
        return "required" if info.default_factory is None else ""
    if info.default is None or info.default == "" or isinstance(info.default, bool):
        return ""
    return f"default: {info.default}"


def _inferred(info: FieldInfo) -> dict[str, Any] | None:
    """argparse keywords for a field's type, or None when the command line cannot express it."""
    tp = _strip_optional(info.annotation)
    origin = get_origin(tp)
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        return {"choices": list(get_args(tp))}
    if tp in (int, float, str):
        return {"type": tp, "metavar": {int: "N", float: "X", str: "TEXT"}[tp]}
    if tp is Path:
        return {"type": Path, "metavar": "PATH"}
    if origin is list:
        (item,) = get_args(tp) or (str,)
        item = _strip_optional(item)
        return {"action": "append", "type": item if item in (int, float, str, Path) else str}
    if origin is dict:
        value_type = (get_args(tp) or (str, Any))[1]
        # KEY=VALUE, repeatable; values of dict[str, Any] are read as YAML scalars (3 -> int)
        return {"action": "append", "metavar": "KEY=VALUE", _PAIRS: "yaml" if value_type is Any else "text"}
    return None


def add_config_flags(parser: argparse.ArgumentParser, model: type[BaseModel], *,
                     positional: typing.Sequence[str] = (), flags: dict[str, list[str]] | None = None,
                     extra: dict[str, dict[str, Any]] | None = None, skip: typing.Sequence[str] = (),
                     config: bool = True) -> None:
    """Add a flag per field of ``model`` (plus ``--config`` / ``--set`` when ``config``).

    ``positional``: fields taken as optional positional arguments, in order. ``flags``: the option
    strings of a field when not ``--field-name`` (existing names stay valid). ``extra``: argparse
    keywords that refine a field's flag (``metavar``, ``nargs``/``const``, ``help`` for a field
    without a description). ``skip``: fields that get no flag (still settable by file or --set).
    """
    flags, extra = flags or {}, extra or {}
    for name in positional:
        info = model.model_fields[name]
        # no ``type``: argparse would convert the SUPPRESS default too; pydantic converts the value
        kw = {k: v for k, v in (_inferred(info) or {}).items() if k == "choices"}
        kw["metavar"] = name
        kw.update(extra.get(name, {}))
        kw.setdefault("help", info.description or name)
        parser.add_argument(name, nargs="?", default=argparse.SUPPRESS, **kw)
    for name, info in model.model_fields.items():
        if name in positional or name in skip:
            continue
        inferred = _inferred(info)
        if inferred is None:
            continue
        kw = {**inferred, **extra.get(name, {})}
        pairs = kw.pop(_PAIRS, "")
        helptext = kw.pop("help", None) or info.description or ""
        default = _default_text(info)
        if default and "default" not in helptext:
            helptext = f"{helptext} ({default})" if helptext else default
        names = flags.get(name) or ["--" + name.replace("_", "-")]
        parser.add_argument(*names, dest=name, default=argparse.SUPPRESS, help=helptext or None, **kw)
        _OPTION_NAMES.setdefault(model.__name__, {})[name] = names[-1] if names[-1].startswith("--") else names[0]
        if pairs:
            parser.set_defaults(**{f"_pairs_{name}": (names[-1], pairs, kw.get("metavar", "KEY=VALUE"))})
    if config:
        parser.add_argument("--config", type=Path, metavar="FILE",
                            help=f"YAML config with the keys of {model.__name__} (flags given here win over it)")
        parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                            help="override a config key, dotted for nested keys (repeatable; wins over flags)")


def parse_pairs(items: typing.Sequence[str], option: str, *, yaml_values: bool = False,
                metavar: str = "KEY=VALUE") -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: v}``; a malformed item or a name given twice is a UserError."""
    from sage_dialog.core.yamlsafe import load_yaml

    out: dict[str, Any] = {}
    for item in items:
        k, sep, v = item.partition("=")
        k, v = k.strip(), v.strip()
        if not sep or not k or not v:
            raise UserError(f"{option} {item!r}: expected NAME=VALUE ({metavar})")
        if k in out:
            raise UserError(f"{option}: {k!r} is given twice")
        out[k] = load_yaml(v, f"{option} {item!r}") if yaml_values else v
    return out


def given(model: type[BaseModel], args: argparse.Namespace) -> dict[str, Any]:
    """The model's fields that were given on the command line (pairs flags turned into dicts)."""
    out: dict[str, Any] = {}
    ns = vars(args)
    for name in model.model_fields:
        if name not in ns:
            continue
        value = ns[name]
        if ns.get(f"_pairs_{name}"):
            option, kind, metavar = ns[f"_pairs_{name}"]
            value = parse_pairs(value, option, yaml_values=kind == "yaml", metavar=metavar)
        out[name] = value
    return out


def config_from_args(model: type[BaseModel], args: argparse.Namespace, *,
                     base: dict[str, Any] | None = None) -> Any:
    """Build ``model`` from ``base`` < ``--config FILE`` < flags given < ``--set`` overrides.

    A bad value is reported where it came from: the flag (``--min-margin: ...``), the ``--config``
    file (``FILE: field ...``) or ``--set KEY`` (``--set min_margin: ...``).
    """
    from pydantic import ValidationError

    from sage_dialog.core.config import apply_overrides, read_yaml

    data: dict[str, Any] = dict(base or {})
    path = getattr(args, "config", None)
    from_file = read_yaml(path) if path is not None else {}
    data.update(from_file)
    flags = given(model, args)
    data.update(flags)
    overrides = getattr(args, "overrides", []) or []
    apply_overrides(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        set_keys = {o.partition("=")[0].strip().split(".")[0] for o in overrides}
        names = _OPTION_NAMES.get(model.__name__, {})
        lines = []
        for err in e.errors():
            loc = [str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"]]
            top, rest = (loc[0], ".".join(loc[1:]).replace(".[", "[")) if loc else ("", "")
            if top in set_keys:
                src, field = f"--set {top}", rest
            elif top in flags:
                src, field = names.get(top, "--" + top.replace("_", "-")), rest
            else:  # the --config file, or a default the command filled in
                src, field = (str(path) if path is not None else "config"), ".".join(loc).replace(".[", "[")
            lines.append(f"{src}: field {field}: {err['msg']}" if field else f"{src}: {err['msg']}")
        raise UserError(lines) from None
