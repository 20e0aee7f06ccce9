"""Dotted config keys as a user writes them: command-line overrides ('curriculum.mix_ratio=0.3': parsed as YAML,
applied to a raw config, a repeat refused) and the error messages that name a key (a pydantic error as key path,
value given and type expected; the closest valid key for a typo; the nested form of a dotted key written in a file).

The schema and the config file's loading are :mod:`saerl.config`'s; its :func:`saerl.config.load_config` applies the
overrides with :func:`apply_overrides` and :func:`saerl.config.build_config` words a refused config with
:func:`format_errors`.
"""

from __future__ import annotations

import datetime
import difflib
import json
import re
import reprlib
import types
from collections.abc import Sequence
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from saerl.config import (
    ConfigError,
    PipelineConfig,
    field_paths,
    leaf_annotations,
    mapping_fields,
    section_names,
    without_empty_sections,
)

# how a config error shows the value it refused: a few levels, items and characters (YAML aliases can make a small
# file's value astronomically long to print: nine nested levels of ten aliases each ran out of memory)
SHORT_REPR = reprlib.Repr()
SHORT_REPR.maxlevel, SHORT_REPR.maxstring, SHORT_REPR.maxother = 2, 160, 160
SHORT_REPR.maxdict = SHORT_REPR.maxlist = SHORT_REPR.maxtuple = SHORT_REPR.maxset = 6


# keys users write for a knob that lives elsewhere, which difflib matched to another stage's knob or an unrelated one
# (train.batch_size -> sae.batch_size, the SAE's token batch, where the RL batch is curriculum.batch_size): checked
# before difflib by suggest_key. {unknown key: the valid key meant}
KEY_ALIASES: dict[str, str] = {
    "train.batch_size": "curriculum.batch_size", "train.batch": "curriculum.batch_size",
    "train.epochs": "curriculum.epochs", "train.lr": "train.learning_rate", "curriculum.lr": "train.learning_rate",
    "sae.learning_rate": "sae.lr", "testbed.learning_rate": "testbed.lr", "eval.k": "eval.k_samples",
    "train.group_size": "train.num_generations", "train.kl_coef": "train.beta", "train.temp": "train.temperature",
    "train.max_new_tokens": "train.max_completion_length",
    "score.k": "score.n_clusters", "data.file": "data.path",
}


def closest_key(path: str) -> str | None:
    """The key `path` stands for (KEY_ALIASES), else the valid key closest to it, or None."""
    if path in KEY_ALIASES:
        return KEY_ALIASES[path]
    entry, _, last = path.rpartition(".")
    mapping = next((m for m in mapping_fields() if entry.startswith(f"{m}.")), None)
    if mapping is not None:  # a field of a mapping's entry (eval.sets.a.promt): the entry's fields, not the data's
        close = difflib.get_close_matches(last, entry_fields(mapping), n=1, cutoff=0.6)
        return f"{entry}.{close[0]}" if close else None
    section, _, rest = path.partition(".")
    in_section = [p for p in field_paths() if rest and p.startswith(f"{section}.")]
    # a key of a real section (runtime.root) names a field, not the section itself ('did you mean runtime?')
    valid = field_paths() + ([] if in_section else [p.split(".")[0] for p in field_paths()])
    last = path.split(".")[-1]
    close = difflib.get_close_matches(path, valid, n=1, cutoff=0.6)
    if not close:  # a word of the field's name (runtime.root: runtime.artifact_root), where one field has it
        close = [p for p in in_section if last in p.split(".")[-1].split("_")][:2]
        close = close if len(close) == 1 else []
    if not close:
        same_leaf = [p for p in field_paths() if difflib.get_close_matches(last, [p.split(".")[-1]], cutoff=0.75)]
        close = same_leaf[:1]
    return close[0] if close else None


def suggest_key(path: str) -> str:
    """' (did you mean 'x.y'?)' for the key `path` stands for (:func:`closest_key`), or ''."""
    close = closest_key(path)
    return f" (did you mean '{close}'?)" if close else ""


def scalar_text(value: Any) -> str:
    """A value as YAML reads it back, for an example in a message: text as it is where YAML reads it so (local),
    else a scalar in JSON (0.3, true, null, "0123"), which YAML reads alike; anything else '...'."""
    if isinstance(value, str) and value.isprintable() and value.strip() == value != "":
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:  # '[' and the like: quoted below
            pass
    return json.dumps(value) if value is None or isinstance(value, (bool, int, float, str)) else "..."


def nested_form(path: str, value: Any) -> str:
    """A dotted key and its value as a YAML file or a dict nests them, on one line: ('curriculum.mix_ratio', 0.3) ->
    'curriculum: {mix_ratio: 0.3}' (:func:`scalar_text`)."""
    *parents, leaf = path.split(".")
    text = f"{leaf}: {scalar_text(value)}"
    for part in reversed(parents):
        text = f"{part}: {{{text}}}"
    return text


def dotted_key_error(path: str, key: str, value: Any) -> str:
    """The error for a dotted key written in a YAML file or a dict (`curriculum.mix_ratio: 0.3` at the top level),
    which said "did you mean 'curriculum.mix_ratio'?", itself: dotted keys are the command line's, and the
    nested form of the key meant. in: the error's dotted path, the dotted key as written, its value; out: one line."""
    meant = key if key in field_paths() else closest_key(key)
    if meant is None:
        return (f"unknown key '{path}': dotted keys are for command-line overrides ({key}=VALUE); in a YAML file or a "
                "dict nest each part under the one before")
    return (f"unknown key '{path}': dotted keys are for command-line overrides ({meant}={scalar_text(value)}); "
            f"in a YAML file or a dict nest it under its section: {nested_form(meant, value)}")


def _is_union(annotation: Any) -> bool:
    """True for a union of two or more types besides None (int | Literal['auto']), whose validation errors
    pydantic locates one per member, after the field: score.n_clusters.int."""
    return get_origin(annotation) in (Union, types.UnionType) and sum(
        a is not type(None) for a in get_args(annotation)) > 1


def error_path(loc: tuple[int | str, ...]) -> str:
    """The dotted key path of a pydantic error location, without the union member pydantic appends after a
    field of a union type ('score.n_clusters.int' -> 'score.n_clusters'); list indices and dict keys stay."""
    parts: list[str] = []
    model: type[BaseModel] | None = PipelineConfig
    items = iter(loc)
    for part in items:
        parts.append(str(part))
        info = model.model_fields.get(str(part)) if model is not None else None
        model = None
        if info is None:
            continue
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            model = info.annotation
        elif _is_union(info.annotation):
            next(items, None)
        elif get_origin(info.annotation) is dict and _is_union(value := get_args(info.annotation)[1]):
            key = next(items, None)  # a mapping of a union (eval.sets: a path or a HeldOutSet): its key, then the
            if key is not None:  # member tag, and into the member when it is a section ('eval.sets.x.path')
                parts.append(str(key))
                tag = next(items, None)
                model = next((a for a in get_args(value) if isinstance(a, type) and issubclass(a, BaseModel)
                              and a.__name__ == tag), None)
    return ".".join(parts)


def shape_fix(kind: str, path: str, value: Any) -> str:
    """The fix for a value of the wrong shape, where pydantic's words give none: a scalar where a list goes
    ('train.seeds=5': "Input should be a valid list"), a list where a mapping goes (eval.sets), a pair given one
    value (score.k_range=[1]: "field 'score.k_range.1' ... Field required"). in: the pydantic error type, the
    dotted path, the value; out: '; ...' or ''."""
    if kind in ("list_type", "tuple_type") and value is not None and not isinstance(value, dict):
        return f"; write a list: {path}=[{scalar_text(value)}] (quote it for the shell)"
    if kind == "dict_type":
        return f"; write a mapping of names to values: {path}.NAME=VALUE, or NAME: VALUE under {path} in YAML"
    parent, _, index = path.rpartition(".")
    if kind == "missing" and index.isdigit() and isinstance(value, list | tuple):
        return f"; {parent} takes {int(index) + 1} values, got {len(value)}: {parent}=[{', '.join(['...'] * (int(index) + 1))}]"
    return ""


def format_errors(err: ValidationError, where: str) -> str:
    """Turn pydantic errors into one line per problem naming key path, value and expectation (a value no
    member of a union type accepts: one line, each member's expectation joined by 'or')."""
    lines: list[str] = []
    fields: dict[str, int] = {}  # key path -> its line, to join the union members' errors
    for e in err.errors():
        path = error_path(e["loc"])
        if not path:  # a cross-field check of the whole config: its message names the fields and the fix
            lines.append(str(e.get("ctx", {}).get("error", e["msg"])))
        elif e["type"] == "extra_forbidden" and "." in str(e["loc"][-1]):
            lines.append(dotted_key_error(path, str(e["loc"][-1]), e.get("input")))
        elif e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{path}'{suggest_key(path)}")
        elif path in fields:
            lines[fields[path]] += f"; or {e['msg']}"
        else:
            value = e.get("input")
            fields[path] = len(lines)
            said = e.get("ctx", {}).get("error", e["msg"]) if e["type"] == "value_error" else e["msg"]  # no "Value error, "
            lines.append(f"field '{path}': got {SHORT_REPR.repr(value)} ({type(value).__name__}); {said}"
                         f"{shape_fix(e['type'], path, value)}")
    return f"invalid config ({where}):\n  " + "\n  ".join(lines)


LEADING_ZERO_INT = re.compile(r"[-+]?0[0-9_]+")  # an integer with a leading zero, which YAML 1.1 reads as octal


class OverrideLoader(yaml.SafeLoader):
    """yaml's safe loader for override values, reading an integer written with a leading zero (LEADING_ZERO_INT)
    as the text it is, not as YAML 1.1's octal ('train.max_steps=010' trained 8 steps): a number field reads that
    text in decimal (10), a text field keeps it ('model.revision=0123456')."""


def _leading_zero_as_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    """An override's integer: its text where it has a leading zero, else the number. in: loader, node; out: value."""
    return node.value if LEADING_ZERO_INT.fullmatch(node.value) else loader.construct_yaml_int(node)


OverrideLoader.add_constructor("tag:yaml.org,2002:int", _leading_zero_as_text)


CONFIG_SUFFIXES = (".yaml", ".yml")  # a word of the command line with one of these names a config file
BRACKETS = {"[": "]", "{": "}"}  # the YAML flow collections an override's value may open: opener -> closer


def unclosed(text: str) -> bool:
    """Does `text` open more YAML flow brackets ('[', '{') than it closes? ('train.seeds=[0,' does.)"""
    return any(text.count(opener) > text.count(closer) for opener, closer in BRACKETS.items())


def split_value(words: Sequence[str], at: int) -> str | None:
    """The override the shell split at spaces into `words[at]` and its neighbours, put back together: from the
    nearest earlier override (a word with '=') whose value stays open (:func:`unclosed`) up to `at`, then on while
    it stays open ('train.seeds=[0,' '1,' '2]' -> 'train.seeds=[0, 1, 2]'); None when no earlier override is open.
    in: the overrides as given, the index of a word without '='; out: the whole override or None."""
    start = next((j for j in range(at - 1, -1, -1) if "=" in words[j]), None)
    if start is None or not unclosed(" ".join(words[start:at])):
        return None
    end = at + 1
    while end < len(words) and "=" not in words[end] and unclosed(" ".join(words[start:end])):
        end += 1
    return " ".join(words[start:end])


def no_equals_error(words: Sequence[str], at: int) -> str:
    """The error for an override without '=', saying what it looks like: a config file given after an override
    (`saerl run curriculum.mix_ratio=0.5 configs/smoke.yaml`), the rest of a list or mapping the shell split at a
    space (`train.seeds=[0, 1]` unquoted gave '1]'), else the form an override takes. in: the overrides as given,
    the index of the one without '='; out: one line naming the word and the fix."""
    text = words[at]
    if text.lower().endswith(CONFIG_SUFFIXES):
        return (f"override '{text}' has no '=' and looks like a config file: the config file comes first, the "
                "overrides after it (saerl run CONFIG KEY=VALUE ..., e.g. saerl run configs/smoke.yaml "
                "curriculum.mix_ratio=0.2)")
    whole = split_value(words, at)
    if whole is not None or any(text.count(closer) > text.count(opener) for opener, closer in BRACKETS.items()):
        example = f"'{whole}'" if whole else "(e.g. 'train.seeds=[0, 1]')"
        return (f"override '{text}' looks like the rest of a list or mapping the shell split at a space: quote the "
                f"whole override {example}, or write it without spaces")
    return f"override '{text}' is not of the form key.path=value (e.g. curriculum.mix_ratio=0.2)"


def check_override_words(overrides: Sequence[str]) -> None:
    """Refuse a list of overrides one of which has no '=' (:func:`no_equals_error` says what it looks like, with
    the other words at hand). in: the overrides as given; raises ConfigError."""
    for at, text in enumerate(overrides):
        if "=" not in text:
            raise ConfigError(no_equals_error(overrides, at))


def parse_override(text: str) -> tuple[str, Any]:
    """Split 'a.b=value' into ('a.b', value) with the value parsed as YAML (numbers, lists, null...); an integer
    with a leading zero stays its text, read in decimal by a number field (:class:`OverrideLoader`)."""
    if "=" not in text:
        raise ConfigError(no_equals_error([text], 0))
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.load(raw, Loader=OverrideLoader) if raw.strip() else ""  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        value = raw
    text = raw.strip()
    if isinstance(value, str) and value != text and re.search(r"\s#", text) and text.startswith(value):
        value = text  # ' #...' was read as a YAML comment: in a path or a name it is part of the value
    elif isinstance(value, (datetime.date, datetime.datetime)):
        value = text  # a YAML date (model.revision=2024-05-01) stays the text it was written as
    return key, value


def text_fields() -> set[str]:
    """The dotted paths of fields that hold text alone (str or str | None: model.revision, name, data.prompt...),
    whose override value stays the text it was written as rather than the number, boolean or mapping YAML reads
    in it."""
    return {path for path, ann in leaf_annotations().items()
            if ann is str or (get_origin(ann) in (Union, types.UnionType) and set(get_args(ann)) == {str, type(None)})}


def override_paths(key: str, value: Any, sections: set[str], mappings: set[str]) -> tuple[list[str], list[str]]:
    """What one override does to a raw config: (the dotted paths it replaces whole, the dotted paths it sets). A
    field replaces and sets itself; a section mapping ('train={max_steps: 50}') its fields; a mapping field given
    whole ('eval.sets={a: F}') replaces the mapping and sets its entries ('eval.sets.a'); an entry
    ('eval.sets.a=F') itself. in: the override's key and parsed value, the section names, the mapping fields'
    paths; out: (replaced, set)."""
    if key in sections and isinstance(value, dict):
        parts = [override_paths(f"{key}.{name}", v, sections, mappings) for name, v in value.items()]
        return [p for replaced, _ in parts for p in replaced], [p for _, done in parts for p in done]
    if key in mappings and isinstance(value, dict):
        return [key], [f"{key}.{entry}" for entry in value]
    return [key], [key]


def refuse_rewrites(overrides: Sequence[str]) -> None:
    """Refuse overrides given in one go (a command line's, a flow's `overrides` parameter) one of which undoes an
    earlier one, which apply_overrides lets win without a word: the same key again ('train.max_steps=5
    train.max_steps=6'), or a mapping given whole after one of its entries ('eval.sets.a=F' then
    'eval.sets={b: G}' dropped set a). A YAML file refuses a key given twice too. Code that layers its own
    overrides under a user's (benchmarks' defaults, then the user's; --root after the overrides) passes the
    layers to apply_overrides as one list, the later winning, and checks only the user's with this. in: the
    overrides; raises ConfigError naming both overrides and the fix."""
    check_override_words(overrides)
    sections, mappings = section_names(), mapping_fields()
    written: dict[str, str] = {}  # each dotted path an override set: that override
    for text in overrides:
        key, value = parse_override(text)
        replaced, done = override_paths(key, value, sections, mappings)
        for path in replaced:
            whole = path in sections or path in mappings  # what has entries; an entry's name may hold dots
            earlier = next((w for w in written if w == path or (whole and w.startswith(f"{path}."))), None)
            if earlier == path:
                raise ConfigError(f"override '{text}' sets {path} again, after '{written[earlier]}': the last one "
                                  "would win without a word; give each key once")
            if earlier is not None:
                raise ConfigError(f"override '{text}' replaces {path} whole, dropping {earlier}, which "
                                  f"'{written[earlier]}' set: give {path} once with every entry ({path}={{NAME: ..., "
                                  f"NAME2: ...}}), or each entry by an override of its own ({path}.NAME=...)")
        written.update(dict.fromkeys(done, text))


def entry_fields(mapping: str) -> list[str]:
    """The fields of a mapping field's entries where an entry may be a section (eval.sets: HeldOutSet's path,
    prompt, ...), else []. in: the mapping's dotted path; out: field names."""
    value = get_args(leaf_annotations()[mapping])[1]
    return [name for a in (get_args(value) or (value,)) if isinstance(a, type) and issubclass(a, BaseModel)
            for name in a.model_fields]


def refuse_entry_field(text: str, mapping: str, entry: str, current: Any) -> None:
    """Refuse an override of one field of a mapping's entry ('eval.sets.a.prompt=q': a HeldOutSet field), which
    was read as an unknown key and matched to the data mapping's field: an entry is set whole. A dotted name
    whose last part is no entry field is a name ('eval.sets.asdiv-v1.2=F'). in: the override's text, the mapping's
    path, what follows it in the key, the mapping as it stands; raises ConfigError with the entry as a mapping."""
    name, _, field = entry.rpartition(".")
    fields = entry_fields(mapping)
    if not name or field not in fields:
        return
    entry_now = current.get(name) if isinstance(current, dict) else None
    path = entry_now.get("path") if isinstance(entry_now, dict) else entry_now
    example = {"path": path or "FILE", field: text.split("=", 1)[1].strip()}
    raise ConfigError(f"override '{text}': an entry of {mapping} is set whole, not field by field: give it as a "
                      f"mapping, {mapping}.{name}={{{', '.join(f'{k}: {v}' for k, v in example.items())}}} (its "
                      f"fields: {', '.join(fields)})")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of a raw config dict with dotted overrides set; unknown paths are errors. A whole section
    given as a mapping ('train={max_steps: 50}') sets the fields it names, as 'train.max_steps=50' would, and
    keeps the section's other fields; one entry of a mapping field is set by its name ('eval.sets.gsm8k=PATH',
    'testbed.defect_kinds.garbled=0.3'; a name may hold dots), keeping the mapping's other entries, and set whole
    (:func:`refuse_entry_field`). A text field keeps a value that YAML reads as something else (a number,
    boolean, mapping) as written: 'model.revision=0123456' is that commit, not the octal 42798, and
    'data.prompt=Solve: {question}' a template, not a mapping. A key given twice takes the later value (callers
    layer overrides: a benchmark's defaults, then the user's); :func:`refuse_rewrites` refuses it in overrides a
    user gives in one go. An empty section (None) is an absent one (:func:`saerl.config.without_empty_sections`)."""
    check_override_words(overrides)
    out = without_empty_sections(json.loads(json.dumps(raw)))
    valid, sections = set(field_paths()), section_names()
    mappings, texts = mapping_fields(), text_fields()
    for text in overrides:
        key, value = parse_override(text)
        value = _as_written(text, key, value, texts)
        mapping = next((m for m in mappings if key.startswith(f"{m}.")), None)
        _refuse_override_key(text, key, value, valid, sections, mapping)
        if mapping is not None:  # one entry of a mapping: the mapping as it stands, plus it
            _set_mapping_entry(out, text, key, value, mapping)
        else:
            _set_dotted(out, text, key, value, sections)
    return out


def _as_written(text: str, key: str, value: Any, texts: set[str]) -> Any:
    """An override's value for a text field kept as written where YAML read it as something else (a number, boolean,
    mapping: 'model.revision=0123456'), else the parsed value. in: the override, its key and parsed value, the text
    fields' paths; out: the value to set."""
    if key in texts and value is not None and not isinstance(value, str):
        return text.split("=", 1)[1].strip()
    return value


def _refuse_override_key(text: str, key: str, value: Any, valid: set[str], sections: set[str],
                         mapping: str | None) -> None:
    """Refuse an override that sets a section to a non-mapping, or names no field, section or mapping's entry:
    ConfigError naming the override with a fix. in: the override, its key and value, the valid field paths, the
    section names, the mapping field whose entry it sets (or None)."""
    if key in sections and not isinstance(value, dict):
        example = next(p for p in sorted(valid) if p.startswith(f"{key}."))
        raise ConfigError(f"override '{text}': '{key}' is a section, not a field; set one of its fields "
                          f"({example}=...) or several as a mapping ({key}={{{example.split('.', 1)[1]}: ...}})")
    if key not in valid and key not in sections and mapping is None:
        raise ConfigError(f"unknown key '{key}' in override '{text}'{suggest_key(key)}")


def _set_mapping_entry(out: dict[str, Any], text: str, key: str, value: Any, mapping: str) -> None:
    """Set one entry of a mapping field in the raw config `out` (in place): the mapping as it stands (else its
    default), plus the entry; :func:`refuse_entry_field` refuses one field of an entry. in: the raw config, the
    override, its key and value, the mapping field's dotted path."""
    section, name = mapping.split(".")
    current, entry = out.get(section, {}).get(name), key[len(mapping) + 1:]
    refuse_entry_field(text, mapping, entry, current)
    default = getattr(getattr(PipelineConfig(), section), name)
    out.setdefault(section, {})[name] = {**(current if isinstance(current, dict) else default), entry: value}


def _set_dotted(out: dict[str, Any], text: str, key: str, value: Any, sections: set[str]) -> None:
    """Set a dotted key in the raw config `out` (in place), making the sections on its way; a section given as a
    mapping sets the fields it names and keeps its others. ConfigError where a part of the path is not a section.
    in: the raw config, the override, its key and value, the section names."""
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{text}': '{part}' is not a section")
    if key in sections and isinstance(value, dict) and isinstance(node.get(key), dict):
        node[key] = {**node[key], **value}
    else:
        node[parts[-1]] = value


def require_override_list(overrides: Any) -> None:
    """Refuse overrides that are not a list of 'key=value' strings (a dict {'curriculum.mix_ratio': 0.3} was read
    key by key and said "override 'curriculum.mix_ratio' is not of the form key.path=value"; one string
    'curriculum.mix_ratio=0.3' letter by letter): TypeError naming the argument and the form, with the value given
    as such a list where it can be. in: load_config's overrides."""
    if overrides is None or (isinstance(overrides, (list, tuple)) and all(isinstance(o, str) for o in overrides)):
        return
    if isinstance(overrides, dict):
        fix = f"[{', '.join(repr(f'{k}={scalar_text(v)}') for k, v in list(overrides.items())[:2])}]"
    elif isinstance(overrides, str):
        fix = f"[{overrides!r}]"
    else:
        fix = "['curriculum.mix_ratio=0.3']"
    raise TypeError(f"load_config's overrides must be a list of 'key=value' strings, not a {type(overrides).__name__}"
                    f"{' holding other things' if isinstance(overrides, (list, tuple)) else ''}: e.g. {fix}")
