"""Typed settings. Each network here, each way of training in trainers/ and main.py's run options
declare a frozen dataclass, and the command line is generated from it (nanoGPT's GPTConfig,
diffusers' register_to_config: the dataclass is the one statement of a setting's name, type,
default and help).

    @dataclass(frozen=True)
    class Config:
        unet_depth: int = setting(4, "number of halvings")
        norm: str = setting("batch", "normalisation layer", choices=("batch", "group"))

The flag is the field's name (--unet_depth). A subclass may change an inherited default (the
diffusion trainers default to --learning_rate 2e-4). bool fields default to False and become
switches; `int | None` fields take an integer or stay None.

A setting's role is declared beside it, once (nanoGPT forces a listed set of architecture keys on
resume; here each setting says what it is):
    role="resume"     a --resume may change it (its length, how it is watched and saved, where it
                      runs, how it samples); any other setting given differently makes another run
    role="train" / "test" / "colorize" / "serve"
                      in that mode the command line's value wins over a checkpoint's saved one
                      (what this command does, e.g. --weights, --output)
A network's settings are forced back from its checkpoint (they must match its weights); no role.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Mapping

ROLES = ("resume", "train", "test", "colorize", "serve")


def setting(default, help: str, choices=None, minimum=None, maximum=None, above=None, below=None,
            cli: bool = True, role: str | tuple = ()):
    """A dataclass field with what its command-line flag needs: help text, allowed values, and the
    range validation enforces (minimum/maximum inclusive, above/below exclusive; a float must also
    be finite); its role(s) (ROLES, see above). cli=False: no flag (a value derived when the run's
    configuration is resolved, saved with it)."""
    roles = (role,) if isinstance(role, str) else tuple(role)
    assert set(roles) <= set(ROLES), roles
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "minimum": minimum,
                                                        "maximum": maximum, "above": above, "below": below,
                                                        "cli": cli, "roles": roles})


def with_role(role: str, *classes) -> set[str]:
    """The names of the settings of `classes` (config dataclasses) that declare `role`."""
    return {f.name for cls in classes for f in dataclasses.fields(cls) if role in f.metadata.get("roles", ())}


def _type(cls, f: dataclasses.Field):
    """int, float, str or bool of a field (its annotation may be a string: PEP 563), and whether
    None is allowed."""
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return (args[0] if args else hint), len(args) < len(typing.get_args(hint))


def add_fields(parser, cls, names=None) -> None:
    """One flag per field of dataclass `cls` (only `names`, when given) on an argparse parser or
    argument group."""
    for f in dataclasses.fields(cls):
        if (names is not None and f.name not in names) or not f.metadata.get("cli", True):
            continue
        kind, _ = _type(cls, f)
        meta = f.metadata
        if kind is bool:
            parser.add_argument(f"--{f.name}", action="store_true", default=f.default, help=meta.get("help"))
        else:
            parser.add_argument(f"--{f.name}", type=kind, default=f.default, choices=meta.get("choices"),
                                help=meta.get("help"))


def names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def from_values(cls, values: Mapping | argparse.Namespace):
    """An instance of `cls` from the values it declares (a Namespace or a dict); fields that are
    missing keep their defaults."""
    if isinstance(values, argparse.Namespace):
        values = vars(values)
    return cls(**{k: values[k] for k in names(cls) if k in values})


def problems(cfg) -> list[str]:
    """What is wrong with a config's values, one message per field: a value of another type than
    the field declares (a checkpoint's saved settings may be crafted), a float that is not finite,
    a value outside its declared choices or range. Empty when all is well."""
    import math

    bad = []
    for f in dataclasses.fields(cfg):
        kind, optional = _type(type(cfg), f)
        value, meta = getattr(cfg, f.name), f.metadata
        if value is None:
            if not optional:
                bad.append(f"--{f.name} must be given, got None")
            continue
        ok = (isinstance(value, bool) if kind is bool else
              isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
              isinstance(value, kind) and not isinstance(value, bool))
        if not ok:
            words = {int: "a whole number", float: "a number", str: "a text", bool: "true or false"}
            bad.append(f"--{f.name} must be {words.get(kind, kind.__name__)}, got {value!r}")
            continue
        if kind is float and not math.isfinite(value):
            bad.append(f"--{f.name} must be a finite number, got {value}")
            continue
        if meta.get("choices") is not None and value not in meta["choices"]:
            bad.append(f"--{f.name} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
        elif kind in (int, float) and _interval(meta) and not _inside(value, meta):
            bad.append(f"--{f.name} must be in {_interval(meta)}, got {value}")
        elif kind in (int, float):
            for key, fails, words in (("minimum", lambda v, b: v < b, "at least"),
                                      ("maximum", lambda v, b: v > b, "at most"),
                                      ("above", lambda v, b: v <= b, "above"),
                                      ("below", lambda v, b: v >= b, "below")):
                bound = meta.get(key)
                if bound is not None and fails(value, bound):
                    bad.append(f"--{f.name} must be {words} {bound}, got {value}")
                    break
    return bad


def _interval(meta) -> str | None:
    """A two-sided range as an interval, "(0, 1]"; None when a side is open."""
    low = ("[", meta.get("minimum")) if meta.get("minimum") is not None else ("(", meta.get("above"))
    high = ("]", meta.get("maximum")) if meta.get("maximum") is not None else (")", meta.get("below"))
    if low[1] is None or high[1] is None:
        return None
    return f"{low[0]}{low[1]:g}, {high[1]:g}{high[0]}"


def _inside(value, meta) -> bool:
    return ((meta.get("minimum") is None or value >= meta["minimum"]) and (meta.get("maximum") is None
            or value <= meta["maximum"]) and (meta.get("above") is None or value > meta["above"])
            and (meta.get("below") is None or value < meta["below"]))
