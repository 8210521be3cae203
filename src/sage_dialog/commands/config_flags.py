"""The one command-line generator: every command's options come from a pydantic settings model.

A command declares its settings once, as a model (``MixConfig``, ``SearchRunConfig``, the small
models of ``commands/settings.py`` ...): each field becomes a flag (``valid_fraction`` ->
``--valid-fraction``) whose help is the field's description and default. Nested models are walked:
a field of a section gets ``--section-field`` (``sampling.temperature`` -> ``--sampling-temperature``)
unless the section is flattened (its fields keep their own names). A short alias map keeps the
names people already type (``{"config.latent.k": ["--k-actions"]}``). Every command also takes
``--config FILE`` (YAML with the model's keys) and ``--set KEY=VALUE`` (dotted overrides,
repeatable). Precedence, lowest first: the model's defaults, the file, flags and positionals given on
the command line, ``--set``.

    def add_arguments(parser):
        add_config_flags(parser, MixConfig, positional=["spec"], flags={"output": OUT})

    def run(args):
        cfg = config_from_args(MixConfig, args)

Field types map to flags: ``bool`` -> ``--x`` / ``--no-x``; ``Literal`` -> choices; ``int``,
``float``, ``str``, ``Path`` (optional or not) -> a typed value; ``list[...]`` -> a repeatable flag;
``dict[str, ...]`` -> a repeatable ``KEY=VALUE`` flag (values read as YAML scalars); a nested model
-> its fields. Other types are set through the file or ``--set``. Flags never given are absent from
the namespace (``argparse.SUPPRESS``), so they do not mask the file. A flag of a nested field stores
under its dotted path (``vars(args)["config.turns"]``).

The output option of every command is ``-o/--out`` (:data:`OUT`); ``--output``, the other spelling
some commands used, is accepted as a hidden alias so old command lines keep working.
"""

from __future__ import annotations

import argparse
import copy
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from sage_dialog.core.errors import UserError

OUT = ["-o", "--out"]  # the one name of the output option
_HIDDEN_OUT = "--output"  # the other spelling: accepted, not shown
_NAMES = "_flag_names"  # namespace key: dest (dotted field path) -> the option that sets it
_PAIRS = "pairs"  # marker: a dict field given as repeated KEY=VALUE
# sections no command spells as flags: where work runs is `--ray ADDRESS` or the config file's `engine:`
ALWAYS_SKIP = ("engine",)


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        scalars = [a for a in args if not (isinstance(a, type) and issubclass(a, BaseModel))]
        if len(scalars) == 1:  # X | None, or str | BackendConfig: the command line gives the scalar
            return scalars[0]
    return tp


def _section(info: FieldInfo) -> type[BaseModel] | None:
    """The model of a field that is a nested section (``X`` or ``X | None``), else None."""
    tp = info.annotation
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else None
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


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


def _fields(model: type[BaseModel], prefix: str = "",
            instance: BaseModel | None = None) -> Iterator[tuple[str, FieldInfo]]:
    """(dotted path, field) of every leaf field, nested sections walked. A section whose default is an
    instance (compare's ``sampling`` defaults to compare's own values of the one ``SamplingConfig``)
    shows that instance's values as its fields' defaults."""
    for name, info in model.model_fields.items():
        path = prefix + name
        section = _section(info)
        if section is None:
            if instance is not None:
                info = copy.copy(info)
                info.default, info.default_factory = getattr(instance, name), None
            yield path, info
        else:
            own = getattr(instance, name, None) if instance is not None else None
            if own is None and info.default_factory is not None:
                own = info.default_factory()  # type: ignore[call-arg]
            elif own is None and isinstance(info.default, BaseModel):
                own = info.default
            yield from _fields(section, path + ".", own if isinstance(own, BaseModel) else None)


def _option(path: str, flatten: typing.Sequence[str]) -> str:
    """``--a-b`` for ``a.b``, the longest flattened section dropped from the front."""
    for section in sorted(flatten, key=len, reverse=True):
        if path.startswith(section + "."):
            path = path[len(section) + 1:]
            break
    return "--" + path.replace(".", "-").replace("_", "-")


def add_hidden_alias(parser: argparse.ArgumentParser, action: argparse.Action, *names: str) -> None:
    """Accept ``names`` for ``action`` without listing them in --help or in error messages."""
    for name in names:
        parser._option_string_actions.setdefault(name, action)


def add_output_argument(parser: argparse.ArgumentParser, **kw: Any) -> argparse.Action:
    """``-o/--out`` (``--output`` accepted too): the output option of a command without a settings model."""
    action = parser.add_argument(*OUT, **kw)
    add_hidden_alias(parser, action, _HIDDEN_OUT)
    return action


def register_flag(parser: argparse.ArgumentParser, action: argparse.Action) -> None:
    """Count a hand-written option (``dest`` = the field's dotted path) as a setting of the command."""
    long = [n for n in action.option_strings if n.startswith("--")]
    _register(parser, action.dest, (long or action.option_strings or [action.dest])[0])


def _register(parser: argparse.ArgumentParser, dest: str, option: str) -> None:
    names = dict(parser.get_default(_NAMES) or {})
    names[dest] = option
    parser.set_defaults(**{_NAMES: names})


def add_config_flags(parser: argparse.ArgumentParser, model: type[BaseModel], *,
                     positional: typing.Sequence[str] = (), flags: dict[str, list[str]] | None = None,
                     extra: dict[str, dict[str, Any]] | None = None, skip: typing.Sequence[str] = (),
                     flatten: typing.Sequence[str] = (), only: typing.Sequence[str] | None = None,
                     config: bool = True, key_values: bool = False, what: str | None = None) -> None:
    """Add a flag per field of ``model`` (nested sections walked), plus ``--config`` / ``--set``.

    ``positional``: top-level fields taken as optional positional arguments, in order. ``flags``:
    the option strings of a field (dotted path) when not the generated name (the alias map; names
    people already type stay valid). ``extra``: argparse keywords that refine a field's flag
    (``metavar``, ``nargs``/``const``, ``help`` for a field without a description). ``skip``: fields
    or sections that get no flag (still settable by file or --set). ``flatten``: sections whose fields
    are named without the section's prefix. ``only``: flags for these paths alone (``[]``: none, just
    ``--config`` / ``--set``). ``key_values``: also take ``KEY=VALUE`` overrides as positionals (the
    old syntax of ``run`` and ``demo``). ``what``: how --help names the config (default: the model).
    """
    flags, extra = flags or {}, extra or {}
    for name in positional:
        info = model.model_fields[name]
        # no ``type`` or ``choices``: argparse would check the SUPPRESS default too; pydantic checks the value
        choices = (_inferred(info) or {}).get("choices")
        kw: dict[str, Any] = {"metavar": "{" + ",".join(map(str, choices)) + "}" if choices else name}
        kw.update(extra.get(name, {}))
        kw.setdefault("help", info.description or name)
        parser.add_argument(name, nargs="?", default=argparse.SUPPRESS, **kw)
        _register(parser, name, name)
    for path, info in _fields(model):
        if path in positional or any(path == s or path.startswith(s + ".") for s in (*skip, *ALWAYS_SKIP)):
            continue
        if only is not None and path not in only:
            continue
        inferred = _inferred(info)
        if inferred is None and path not in extra:  # a type the command line cannot spell: file or --set
            continue
        kw = {**(inferred or {}), **extra.get(path, {})}
        pairs = kw.pop(_PAIRS, "")
        helptext = kw.pop("help", None) or info.description or ""
        default = _default_text(info)
        if default and "default" not in helptext:
            helptext = f"{helptext} ({default})" if helptext else default
        names = flags.get(path) or [_option(path, flatten)]
        action = parser.add_argument(*names, dest=path, default=argparse.SUPPRESS, help=helptext or None, **kw)
        if "--out" in names:
            add_hidden_alias(parser, action, _HIDDEN_OUT)
        long = [n for n in names if n.startswith("--")]
        _register(parser, path, long[0] if long else names[0])
        if pairs:
            parser.set_defaults(**{f"_pairs_{path}": (long[0] if long else names[0], pairs,
                                                      kw.get("metavar", "KEY=VALUE"))})
    if key_values:
        parser.add_argument("key_values", nargs="*", metavar="KEY=VALUE",
                            help="dotted overrides of config values, as --set (e.g. rounds=2)")
    if config:
        add_config_option(parser, what or model.__name__)


def add_config_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--config FILE`` and ``--set KEY=VALUE`` (for a command whose flags are written by hand)."""
    parser.add_argument("--config", dest="config_file", type=Path, metavar="FILE",
                        help=f"YAML config with the keys of {what} (flags given here win over it)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, dotted for nested keys (repeatable; wins over flags)")


def config_path(args: argparse.Namespace, positional: str = "config_arg") -> Path | None:
    """The config file, given as a positional (``run CONFIG``) or as ``--config FILE``, not both.

    A positional ``KEY=VALUE`` in the config's place is the first override (``train sft --model M a.b=1``)."""
    pos, opt = getattr(args, positional, None), getattr(args, "config_file", None)
    if pos is not None and "=" in str(pos):
        args.key_values = [str(pos), *(getattr(args, "key_values", None) or [])]
        setattr(args, positional, None)
        pos = None
    if pos is not None and opt is not None:
        raise UserError(f"give the config once: {pos} or --config {opt}")
    return Path(pos) if pos is not None else opt


def overrides_of(args: argparse.Namespace) -> list[str]:
    """Every ``KEY=VALUE`` override given, positional ones first, then ``--set`` (which wins)."""
    return [*(getattr(args, "key_values", None) or []), *(getattr(args, "overrides", None) or [])]


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


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings (dotted paths) given on the command line, pairs flags turned into dicts.

    Every registered flag counts: one the model does not have is refused by its validation
    (``--seed: Extra inputs are not permitted``), never dropped."""
    out: dict[str, Any] = {}
    ns = vars(args)
    for path in ns.get(_NAMES) or {}:
        if path not in ns:
            continue
        value = ns[path]
        if ns.get(f"_pairs_{path}"):
            option, kind, metavar = ns[f"_pairs_{path}"]
            value = parse_pairs(value, option, yaml_values=kind == "yaml", metavar=metavar)
        out[path] = value
    return out


def _put(data: dict[str, Any], path: str, value: Any) -> None:
    node = data
    *sections, leaf = path.split(".")
    for s in sections:
        nxt = node.get(s)
        if not isinstance(nxt, dict):
            nxt = node[s] = {}
        node = nxt
    node[leaf] = value


def _has(data: dict[str, Any], loc: typing.Sequence[str]) -> bool:
    node: Any = data
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def config_from_args(model: type[BaseModel], args: argparse.Namespace, *,
                     base: dict[str, Any] | None = None, rename: dict[str, str] | None = None) -> Any:
    """Build ``model`` from ``base`` < ``--config FILE`` < flags given < ``--set`` overrides.

    ``rename`` maps a flag's field path to the path it sets in ``model`` (one flag serving models
    that spell a field differently). A bad value is reported where it came from: the flag
    (``--min-margin: ...``), the ``--config`` file (``FILE: field ...``) or ``--set KEY``
    (``--set min_margin: ...``); a required field given nowhere names its flag.
    """
    from pydantic import ValidationError

    from sage_dialog.core.config import apply_overrides, read_yaml

    rename = rename or {}
    data: dict[str, Any] = dict(base or {})
    path = getattr(args, "config_file", None)
    from_file = read_yaml(path) if path is not None else {}
    data.update(from_file)
    flags = given(args)
    for dotted, value in flags.items():
        _put(data, rename.get(dotted, dotted), value)
    overrides = overrides_of(args)
    apply_overrides(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        set_keys = {o.partition("=")[0].strip() for o in overrides}
        names = {rename.get(k, k): v for k, v in (vars(args).get(_NAMES) or {}).items()}
        from_flags = {rename.get(k, k) for k in flags}
        lines = []
        for err in e.errors():
            loc = [str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"]]
            src, field = "", ".".join(loc).replace(".[", "[")
            for i in range(len(loc), 0, -1):  # the longest prefix of the field's path that was given
                key = ".".join(loc[:i])
                rest = ".".join(loc[i:]).replace(".[", "[")
                if key in set_keys:
                    src, field = f"--set {key}", rest
                    break
                if key in from_flags:
                    src, field = names.get(key, "--" + key.replace("_", "-")), rest
                    break
            if not src:
                if path is not None and (_has(from_file, loc[:1]) or err["type"] != "missing"):
                    src = str(path)  # the --config file, or a default the command filled in
                elif err["type"] == "missing" and field in names:
                    src, field = names[field], ""  # required and given nowhere: the flag to give
                else:
                    src = str(path) if path is not None else "settings"
            lines.append(f"{src}: field {field}: {err['msg']}" if field else f"{src}: {err['msg']}")
        raise UserError(lines) from None


def settings_into(args: argparse.Namespace, cfg: BaseModel) -> argparse.Namespace:
    """The namespace with every top-level setting of ``cfg`` filled in (for commands that read ``args``)."""
    for name in type(cfg).model_fields:
        setattr(args, name, getattr(cfg, name))
    return args
