"""Settings declared once: a dataclass field carries its default, its help and its protocol section.

``lr: float = setting(1e-3, "Adam learning rate.", protocol="3.1", above=0)`` declares one;
``train: TrainConfig = section(TrainConfig, "train")`` makes a dataclass's settings a section, so
users write ``train.lr``. ``Schema`` reads such a tree of dataclasses and is the only code that
knows the keys: it checks ``KEY=VALUE`` from the command line and the values of a study file's
tables against each field's type, range and choices (a mistake is one sentence naming the key and
where it came from), fills the dataclasses from the checked values, and writes the help that lists
every key with its default. Adding a field to a dataclass adds the setting everywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Iterable, Mapping

from bench.core.errors import BenchError

SECTION = "section"  # metadata key of a section field: the name users write before the dot
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def setting(
    default: Any = None,
    help: str = "",
    *,
    protocol: str | None = None,
    unset: str | None = None,
    choices: tuple | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    **extra: Any,
) -> Any:
    """A settable field. ``unset``: what a default of None resolves to (the mode's, the dataset's, the
    model's); ``minimum`` is inclusive, ``above`` and ``below`` exclusive bounds (of each item of a
    tuple), ``maximum`` inclusive too; ``extra`` goes into the field's metadata for the code that owns the setting."""
    metadata = dict(help=help, protocol=protocol, unset=unset, choices=choices, minimum=minimum, maximum=maximum, above=above, below=below)
    return dataclasses.field(default=default, metadata=metadata | extra)


def section(cls: type, name: str) -> Any:
    """A field holding a dataclass of settings, addressed as ``name.key``."""
    return dataclasses.field(default_factory=cls, metadata={SECTION: name})


def shown(value: Any) -> str:
    """A value as a user writes it after ``--set KEY=``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(shown(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class Key:
    """One setting: its name as users write it and the dataclass field that declares it."""

    name: str  # "train.lr", or "preprocessing" for a field of the root itself
    root: type
    attribute: str | None  # the root's section field holding it; None for the root's own fields
    field: dataclasses.Field
    kind: Any  # the declared type, None left out

    @property
    def typed(self) -> str:
        """The name a user types for it: its flag where it has one (``--cpus-per-run``), else its key."""
        return self.field.metadata.get("flag", self.name).split("/")[0]

    def help_line(self, default: Any = None) -> str:
        """``help Default: x. Protocol 3.1.``; ``default`` where the schema's user changes the declared one."""
        meta = self.field.metadata
        default = self.field.default if default is None else default
        default = meta["unset"] if default in (None, ()) and meta["unset"] else shown(default)
        protocol = f" Protocol {meta['protocol']}." if meta["protocol"] else ""
        return f"{meta['help']} Default: {default}.{protocol}"

    def coerce(self, value: Any, origin: str, from_text: bool = False) -> Any:
        """A value from the command line (text, parsed) or a study file (a TOML value, which must have
        the declared type) as that type, checked; a BenchError naming the key and ``origin`` otherwise."""
        try:
            converted = _convert(self.kind, value, from_text)
        except ValueError:
            raise BenchError(f"{self.name} ({origin}) must be {_described(self.kind)}, got {value!r}.") from None
        problem = self.problem(converted)
        if problem:
            raise BenchError(f"{self.name} ({origin}) {problem}.")
        return converted

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed (``must be ...``), or None; None itself is the unset value."""
        if value is None:
            return None
        meta = self.field.metadata
        if meta["choices"] and value not in meta["choices"]:
            return f"must be one of {', '.join(map(shown, meta['choices']))}, got {shown(value)!r}"
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, float) and not math.isfinite(item):
                return f"must be a finite number, got {shown(item)}"
            if meta["minimum"] is not None and item < meta["minimum"]:
                return f"must be at least {shown(meta['minimum'])}, got {shown(value)}"
            if meta["maximum"] is not None and item > meta["maximum"]:
                return f"must be at most {shown(meta['maximum'])}, got {shown(value)}"
            if meta["above"] is not None and item <= meta["above"]:
                return f"must be above {shown(meta['above'])}, got {shown(value)}"
            if meta["below"] is not None and item >= meta["below"]:
                return f"must be below {shown(meta['below'])}, got {shown(value)}"
        return None


class Schema:
    """Every settable key of a root dataclass: its own ``setting`` fields, and those of each section.

    ``listed_by`` is the command whose ``--help`` lists the keys (named in the errors); ``exclude``
    leaves sections out; ``defaults`` are the values its user starts from where they differ from the
    declared ones (shown in the help). Schemas of different roots combine with ``|`` (a study's own
    settings beside the runs' settings).
    """

    def __init__(
        self,
        root: type | None = None,
        *,
        listed_by: str = "bench run --help",
        exclude: Iterable[str] = (),
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self.listed_by = listed_by
        self.defaults = dict(defaults or {})
        self.keys: dict[str, Key] = {}
        self.sections: dict[str, type] = {}
        if root is not None:
            self._read(root, set(exclude))

    def _read(self, root: type, exclude: set[str]) -> None:
        hints = typing.get_type_hints(root)
        for f in fields(root):
            if SECTION in f.metadata and f.metadata[SECTION] not in exclude:
                name, cls = f.metadata[SECTION], f.default_factory
                self.sections[name] = cls
                inner = typing.get_type_hints(cls)
                for g in fields(cls):
                    if "help" in g.metadata:
                        self.keys[f"{name}.{g.name}"] = Key(f"{name}.{g.name}", root, f.name, g, _declared(inner[g.name]))
            elif "help" in f.metadata:
                self.keys[f.name] = Key(f.name, root, None, f, _declared(hints[f.name]))

    def __or__(self, other: Schema) -> Schema:
        combined = Schema(listed_by=self.listed_by)
        combined.keys = self.keys | other.keys
        combined.sections = self.sections | other.sections
        combined.defaults = self.defaults | other.defaults
        return combined

    def key(self, name: str, origin: str) -> Key:
        if name in self.keys:
            return self.keys[name]
        close = difflib.get_close_matches(name, self.keys, n=1)
        example = f", such as {close[0]}" if close else ""
        raise BenchError(f"Unknown setting {name} ({origin}): use one that `{self.listed_by}` lists{example}.")

    def parse(self, assignments: Iterable[str], origin: str = "command line: --set") -> dict[str, Any]:
        """``["train.lr=3e-4", ...]`` as checked values; a later assignment of a key wins."""
        values: dict[str, Any] = {}
        for text in assignments:
            name, equals, value = text.partition("=")
            where = f"{origin} {text}"
            if not equals or not name.strip() or not value.strip():
                raise BenchError(f"--set takes KEY=VALUE, such as train.lr=3e-4, got {text!r} ({where}).")
            values[name.strip()] = self.key(name.strip(), where).coerce(value.strip(), where, from_text=True)
        return values

    def read_table(self, table: Mapping[str, Any], origin: str, structure: Iterable[str] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
        """A parsed TOML document: (its settings as checked values, its ``structure`` keys as written).

        Settings sit at the top (``preprocessing = "notebook"``) or in a section's table (``[train]``).
        """
        values: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        structure = set(structure)
        for name, value in table.items():
            if name in self.sections:
                where = f"{origin}, table [{name}]"
                if not isinstance(value, dict):
                    raise BenchError(f"{name} ({origin}) must be a table of settings, such as [{name}] on a line of its own.")
                for key, item in value.items():
                    values[f"{name}.{key}"] = self.key(f"{name}.{key}", where).coerce(item, where)
            elif name in structure:
                rest[name] = value
            elif name in self.keys:
                values[name] = self.keys[name].coerce(value, origin)
            else:
                allowed = ", ".join(sorted(structure | {k for k in self.keys if "." not in k} | set(self.sections)))
                raise BenchError(f"Unknown key {name} ({origin}); a study file holds {allowed}.")
        return values, rest

    def build(self, root: type, values: Mapping[str, Any], **given: Any) -> Any:
        """``root`` with ``values`` (checked ones, by key) set on top of every default, and ``given``."""
        own: dict[str, Any] = dict(given)
        by_section: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            key = self.keys[name]
            if key.root is not root:
                continue
            if key.attribute is None:
                own[key.field.name] = value
            else:
                by_section.setdefault(key.attribute, {})[key.field.name] = value
        for f in fields(root):
            if f.name in by_section:
                own[f.name] = dataclasses.replace(own.get(f.name) or f.default_factory(), **by_section[f.name])
        return root(**own)

    def check(self, config: Any) -> None:
        """Every setting of a built ``config`` (of a root) is allowed: a BenchError naming the first that is not."""
        for key in self.keys.values():
            if not isinstance(config, key.root):
                continue
            holder = config if key.attribute is None else getattr(config, key.attribute)
            value = getattr(holder, key.field.name)
            problem = key.problem(value)
            if problem:  # an option is named as it is typed (--cpus-per-run), a setting by its key
                raise BenchError(f"{key.typed} {problem}.")

    def help(self) -> str:
        """One line per key: its name, its help and its default."""
        width = max(map(len, self.keys)) + 2
        return "\n".join(f"  {name.ljust(width)}{key.help_line(self.defaults.get(name))}" for name, key in self.keys.items())


def _declared(kind: Any) -> Any:
    """``int | None`` -> int: None is always the unset value."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        (kind,) = [k for k in typing.get_args(kind) if k is not type(None)]
    return kind


def _convert(kind: Any, value: Any, from_text: bool) -> Any:
    """``value`` as ``kind``; ValueError where it is not one (text from the command line is parsed)."""
    if typing.get_origin(kind) is tuple:
        items = value.split(",") if from_text else value
        if not isinstance(items, (list, tuple)) or not items:
            raise ValueError(value)
        args = typing.get_args(kind)
        if args[-1] is not Ellipsis and len(items) != len(args):
            raise ValueError(value)
        return tuple(_convert(args[0 if args[-1] is Ellipsis else i], item, from_text) for i, item in enumerate(items))
    if from_text:
        value = value.strip()
        if kind is bool:
            if value.lower() not in TRUE + FALSE:
                raise ValueError(value)
            return value.lower() in TRUE
        return kind(value)
    if isinstance(value, bool) != (kind is bool):
        raise ValueError(value)
    if kind is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, kind):
        raise ValueError(value)
    return value


def _described(kind: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text"}
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        plural = {bool: "booleans", int: "integers", float: "numbers", str: "names"}[args[0]]
        if args[-1] is Ellipsis:
            return f"a list of {plural} (a,b,c on the command line)"
        return f"a list of {len(args)} {plural} (LOW,HIGH on the command line)"
    return names.get(kind, kind.__name__)
