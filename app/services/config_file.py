"""Configuration as code (SPEC section 11): `config export` and `config import FILE`.

The file (YAML, read with PyYAML's safe loader only):

    version: 1
    groups:
      - name: ml-team              # matched by name
        display_name: ML team
    providers:
      - name: openai-main          # matched by name
        type: openai               # immutable: a different type for an existing provider is an error
        display_name: OpenAI
        enabled: true
        base_url: ""
        key_policy: provider_only
        api_key_env: [OPENAI_KEY_1] # import only: variables holding keys; never the key itself
    model_configs:
      - provider: openai-main      # matched by (provider name, model)
        model: gpt-4o
        display_name: GPT-4o
        enabled: true
        is_default: true
        context_limit: 128000
        compression_threshold: 70
        options: {}
        access: groups             # everyone (the default) or groups
        groups: [ml-team]          # group names: existing or in the file

Import rules:

- Every field goes through the rules the API applies (`providers.clean_fields`,
  `model_configs.clean_fields`, `provider_keys.clean_api_key`): one set of rules. A field left
  out takes the API's default on create and is left as it is on update.
- One transaction for the whole file. The plan is made and applied inside it, through the flush-only
  helpers of the services (`insert_provider`, `apply_provider_update`, `store_key`, `insert_config`,
  `apply_config_update`, `remove_config`, `remove_provider`), so each change is audited as the API
  would audit it, by the actor "cli config import". Any error writes nothing; `--dry-run` applies
  the plan and rolls it back (so it also meets what only the database can tell, such as a duplicate).
- Errors name the entry, the field and the line of the file; the whole file is checked, so every
  error is reported at once. An error's message never holds a value from the file (that might be a
  key pasted by mistake), nor the YAML parser's excerpt of the file.
- `api_key_env`: each variable is read at import; not set is an error naming it; its value follows
  the key rules and is added unless the provider already has it (the keys' fingerprints tell).
  Keys are never printed, logged or exported, and `--prune` never deletes keys.
- The default: `is_default: true` on one config makes it the default (two is an error);
  `is_default: false` on the current default needs another config of the file to be the default.
- Decisions where the SPEC is silent: a config may be declared on a disabled provider (the API
  refuses to *add* one there, but the state is reachable by disabling the provider afterwards, and
  the file states the end state, so an export of it imports). Legacy configs (no AI provider) are
  neither exported nor pruned. A provider under the reserved `agents-` prefix (migrated from legacy)
  is exported and may be updated, but cannot be created by an import, as the API cannot create one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import yaml
from psycopg.errors import DeadlockDetected, SerializationFailure
from sqlalchemy.exc import DBAPIError

from app.errors import DomainError, InvalidInput
from app.extensions import db
from app.models import AIProvider, AIProviderKey, ChatModelConfig, Group
from app.services import access as access_rules
from app.services import groups as group_rules
from app.services import model_configs, provider_keys, providers
from app.services.base import Actor

VERSION = 1
TOP_LEVEL = ("version", "groups", "providers", "model_configs")
PROVIDER_FIELDS = ("name", "type", "display_name", "enabled", "base_url", "key_policy", "api_key_env")
CONFIG_FIELDS = ("provider", "model", "display_name", "enabled", "is_default", "context_limit",
                 "compression_threshold", "options", "access", "groups")
GROUP_FIELDS = ("name", "display_name")
UPDATED = ("display_name", "enabled", "context_limit", "compression_threshold", "options")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
ACTOR_LABEL = "cli config import"


# --- reading the file, with lines ---------------------------------------------------------------

class Entry(dict):
    """A mapping of the file, with the line it starts on and the line of each of its keys."""

    line: int = 0
    lines: dict[Any, int]


class Items(list):
    """A list of the file, with the line of each item."""

    line: int = 0
    lines: list[int]


class FileProblem(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message, self.line = message, line


_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAP_TAG, SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
MAX_EXPANDED = 1_000_000  # values a file may stand for once its aliases are expanded


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """PyYAML's safe loader (the C parser when libyaml is there): its events, resolver and scalar
    constructors only. `parse` builds the document from the events itself, one value at a time,
    so no node tree of the whole file is ever held (memory stays near the size of the result)."""


def parse(text: str | bytes) -> Any:
    """The YAML document, its mappings as `Entry` (with lines, duplicate keys refused) and its lists
    as `Items`. Scalars are typed by PyYAML's safe resolver and constructors (no Python objects);
    aliases may not expand to more than MAX_EXPANDED values (no "billion laughs").

    :raise FileProblem: not YAML, more than one document, a duplicate key, an unknown tag.
    """
    loader = _Loader(text)
    try:
        loader.get_event()  # stream start
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # document start
        value, _ = _read(loader, {}, [0])
        loader.get_event()  # document end
        if not loader.check_event(yaml.StreamEndEvent):
            raise FileProblem("The file must hold one YAML document.", loader.peek_event().start_mark.line + 1)
        return value
    except FileProblem:
        raise
    except yaml.constructor.ConstructorError as error:
        mark = error.problem_mark or error.context_mark
        raise FileProblem("The file uses a tag that is not allowed (only plain YAML values are).",
                          mark.line + 1 if mark else None) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        # The problem only: the error's text quotes the file around it, which may hold anything.
        raise FileProblem(f"The file is not valid YAML: {error.problem or error.context}.",
                          mark.line + 1 if mark else None) from None
    except yaml.YAMLError:
        raise FileProblem("The file is not valid YAML.", None) from None
    finally:
        loader.dispose()


def _read(loader: Any, anchors: dict[str, tuple[Any, int]], expanded: list[int]) -> tuple[Any, int]:
    """The next value of the event stream, and how many values it stands for."""
    event = loader.get_event()
    line = event.start_mark.line + 1
    if isinstance(event, yaml.AliasEvent):
        if event.anchor not in anchors:
            raise FileProblem("An alias names an anchor that is not defined before it.", line)
        value, size = anchors[event.anchor]
    elif isinstance(event, yaml.ScalarEvent):
        tag = event.tag if event.tag not in (None, "!") else loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        constructor = loader.yaml_constructors.get(tag) or loader.yaml_constructors[None]  # unknown: refused
        value, size = constructor(loader, node), 1
    elif isinstance(event, yaml.MappingStartEvent):
        if event.tag not in (None, "!", MAP_TAG):
            raise FileProblem("Tags are not allowed on mappings.", line)
        value, size = Entry(), 1
        value.line, value.lines = line, {}
        while not loader.check_event(yaml.MappingEndEvent):
            key_line = loader.peek_event().start_mark.line + 1
            key, key_size = _read(loader, anchors, expanded)
            if (not isinstance(key, str | int | float | bool) and key is not None) or key == "<<":
                raise FileProblem("Keys must be plain names (merge keys are not supported).", key_line)
            if key in value:
                raise FileProblem(f"The key {_shown(key)} appears twice in this mapping (first on line "
                                  f"{value.lines[key]}).", key_line)
            value[key], item_size = _read(loader, anchors, expanded)
            value.lines[key] = key_line
            size += key_size + item_size
        loader.get_event()
    elif isinstance(event, yaml.SequenceStartEvent):
        if event.tag not in (None, "!", SEQ_TAG):
            raise FileProblem("Tags are not allowed on lists.", line)
        value, size = Items(), 1
        value.line, value.lines = line, []
        while not loader.check_event(yaml.SequenceEndEvent):
            value.lines.append(loader.peek_event().start_mark.line + 1)
            item, item_size = _read(loader, anchors, expanded)
            value.append(item)
            size += item_size
        loader.get_event()
    else:  # pragma: no cover (the parser yields nothing else here)
        raise FileProblem("The file is not valid YAML.", line)
    expanded[0] += size if isinstance(event, yaml.AliasEvent) else 0
    if expanded[0] > MAX_EXPANDED or size > MAX_EXPANDED:
        raise FileProblem("The file's aliases stand for too many values.", line)
    if getattr(event, "anchor", None) and not isinstance(event, yaml.AliasEvent):
        anchors[event.anchor] = (value, size)
    return value, size


def _shown(name: Any) -> str:
    """A key of the file as an error message may show it: short, and only if it looks like a name."""
    text = str(name)
    return repr(text) if len(text) <= 64 and re.fullmatch(r"[A-Za-z0-9_.-]*", text) else "(a key that is not a name)"


# --- the plan -------------------------------------------------------------------------------------

@dataclass
class Problem:
    entry: str
    field: str | None
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        about = f"{self.entry}, {self.field}" if self.field else self.entry
        return f"error {about}{where}: {self.message}"


@dataclass
class Change:
    verb: str  # create, update, unchanged, delete
    kind: str  # group, provider, model_config
    name: str
    fields: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.verb} {self.kind} {self.name}"
        return f"{text}: {', '.join(self.fields)}" if self.verb == "update" else text


@dataclass
class ImportResult:
    """The plan (one line per object, errors among them) and whether it was written."""

    lines: list[Change | Problem] = field(default_factory=list)
    dry_run: bool = False
    written: bool = False

    @property
    def problems(self) -> list[Problem]:
        return [line for line in self.lines if isinstance(line, Problem)]

    def count(self, verb: str) -> int:
        return sum(1 for line in self.lines if isinstance(line, Change) and line.verb == verb)

    def summary(self) -> str:
        return (f"{self.count('create')} created, {self.count('update')} updated, {self.count('unchanged')} unchanged, "
                f"{len(self.problems)} errors")


@dataclass
class _GroupPlan:
    name: str
    change: Change
    fields: dict[str, Any]  # cleaned; on update only those that change
    row_id: Any = None


@dataclass
class _ProviderPlan:
    entry: Entry
    name: str
    change: Change
    fields: dict[str, Any]  # cleaned; on update only those that change
    new_keys: list[str] = field(default_factory=list, repr=False)
    row: AIProvider | None = None


@dataclass
class _ConfigPlan:
    entry: Entry
    label: str
    provider: str
    change: Change
    model: str
    fields: dict[str, Any]  # cleaned (without is_default); on update only those that change
    wants_default: bool | None = None  # as the file says
    make_default: bool = False  # becomes the default now
    row: Any = None  # the existing config's compared columns
    access: str | None = None  # as the file says (None: not said)
    groups: list[str] | None = None  # group names, as the file says (None: not said)


class _Checker:
    """Collects every problem of the file, each with its entry, field and line."""

    def __init__(self, result: ImportResult) -> None:
        self.result = result

    def problem(self, entry: str, field_name: str | None, line: int | None, message: str) -> None:
        self.result.lines.append(Problem(entry, field_name, line, message))

    def error(self, entry: str, node: Entry, error: DomainError, default_field: str | None = None) -> None:
        """A service's rule broken: its message, detail and validations, at the field's line."""
        details = [(v.field, v.detail) for v in error.validations] or [(error.field or default_field, error.detail)]
        for field_name, detail in details:
            line = node.lines.get(field_name, node.line) if field_name else node.line
            message = error.message + (f" {detail}" if detail and detail != error.message else "")
            self.problem(entry, field_name, line, message)


def _line_of(items: Items, index: int) -> int:
    return items.lines[index] if index < len(items.lines) else items.line


def _entries(doc: Entry, key: str, noun: str, check: _Checker) -> Iterator[tuple[int, Entry]]:
    items = doc.get(key)
    if items is None:
        return
    if not isinstance(items, list):
        check.problem(key, None, doc.lines.get(key), f"Must be a list of {noun}s.")
        return
    for index, item in enumerate(items):
        if not isinstance(item, Entry):
            check.problem(f"{key}[{index}]", None, _line_of(items, index), f"Each {noun} must be a mapping of fields.")
            continue
        yield index, item


def _unknown_fields(entry: Entry, known: tuple[str, ...], label: str, check: _Checker) -> bool:
    unknown = [k for k in entry if k not in known]
    for key in unknown:
        hint = (" Keys are never written in the file: name the environment variables that hold them in "
                "api_key_env." if key in ("api_key", "api_keys", "key") else "")
        check.problem(label, _shown(key).strip("'"), entry.lines.get(key), "Unknown field." + hint)
    return bool(unknown)


# --- import ---------------------------------------------------------------------------------------

LOCK_CONFLICT_ATTEMPTS = 3


def import_config(actor: Actor, text: str | bytes, environ: Mapping[str, str], *, dry_run: bool = False,
                  prune: bool = False) -> ImportResult:
    """Apply a configuration file in ONE transaction (see the module docstring). Returns the plan;
    `written` tells whether it was committed (never with a problem, never on a dry run)."""
    result = ImportResult(dry_run=dry_run)
    check = _Checker(result)
    try:
        doc = parse(text)
    except FileProblem as problem:
        check.problem("file", None, problem.line, problem.message)
        return result
    if not _check_top_level(doc, check):
        return result
    for attempt in range(LOCK_CONFLICT_ATTEMPTS):
        try:
            return _import(actor, doc, environ, dry_run=dry_run, prune=prune)
        except DBAPIError as error:
            # Two transactions that lock the same rows in different orders: PostgreSQL aborts one
            # (deadlock) and the import, all or nothing, simply runs again.
            if not isinstance(error.orig, DeadlockDetected | SerializationFailure) or attempt + 1 == LOCK_CONFLICT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _import(actor: Actor, doc: Entry, environ: Mapping[str, str], *, dry_run: bool, prune: bool) -> ImportResult:
    result = ImportResult(dry_run=dry_run)
    check = _Checker(result)
    session = db.session
    try:
        plan = _plan(doc, environ, prune, check)
        problems = result.problems
        result.lines[:] = plan["changes"] + problems  # one line per object, then the errors
        if not problems:
            _apply(actor, plan, check)
        if result.problems or dry_run:
            session.rollback()
        else:
            session.commit()
            result.written = True
    except BaseException:
        session.rollback()
        raise
    return result


def _check_top_level(doc: Any, check: _Checker) -> bool:
    if not isinstance(doc, Entry):
        check.problem("file", None, None, f"The file must be a mapping with version: {VERSION}, groups, providers "
                                          "and model_configs.")
        return False
    for key in doc:
        if key not in TOP_LEVEL:
            check.problem("file", _shown(key).strip("'"), doc.lines.get(key),
                          "Unknown top-level key (use version, groups, providers, model_configs).")
    version = doc.get("version")
    if version != VERSION or isinstance(version, bool):
        check.problem("file", "version", doc.lines.get("version", doc.line), f"Must be {VERSION}.")
    return not check.result.problems


def _plan(doc: Entry, environ: Mapping[str, str], prune: bool, check: _Checker) -> dict[str, Any]:
    group_entries = list(_entries(doc, "groups", "group", check))
    provider_entries = list(_entries(doc, "providers", "provider", check))
    config_entries = list(_entries(doc, "model_configs", "model config", check))
    named = {e.get("name").strip() for _, e in provider_entries if isinstance(e.get("name"), str)}
    named |= {e.get("provider").strip() for _, e in config_entries if isinstance(e.get("provider"), str)}
    # Locks in the order the API takes them (providers, then the groups a config names), only on
    # what the file names (everything with --prune), held for the rest of the transaction.
    stmt = sa.select(AIProvider).where(AIProvider.deleted.is_(False))
    if not prune:
        stmt = stmt.where(AIProvider.name.in_(sorted(named)))
    live = {p.name: p for p in db.session.execute(stmt.order_by(AIProvider.id).with_for_update()).scalars()}
    group_names = {e.get("name").strip() for _, e in group_entries if isinstance(e.get("name"), str)}
    for _, entry in config_entries:
        listed = entry.get("groups")
        group_names |= {g.strip() for g in listed if isinstance(g, str)} if isinstance(listed, list) else set()
    groups = sa.select(Group)
    if not prune:
        groups = groups.where(Group.name.in_(sorted(group_names)))
    live_groups = {g.name: g for g in db.session.execute(groups.order_by(Group.id).with_for_update()).scalars()}
    group_plans = _plan_groups(group_entries, live_groups, check)
    provider_plans = _plan_providers(provider_entries, live, environ, check)
    known_groups = {**{name: g.id for name, g in live_groups.items()}, **dict.fromkeys(group_plans)}
    config_plans, existing_configs = _plan_configs(config_entries, provider_plans, live, known_groups, prune, check)
    changes = [g.change for g in group_plans.values() if g.change.verb != "error"]
    changes += [p.change for p in provider_plans.values() if p.change.verb != "error"]
    changes += [c.change for c in config_plans.values()]
    pruned_configs, pruned_providers, pruned_groups = [], [], []
    if prune:
        for (provider_name, model), config in sorted(existing_configs.items()):
            if (provider_name, model) not in config_plans:
                pruned_configs.append(config)
                changes.append(Change("delete", "model_config", f"{provider_name}/{model}"))
        for name, provider in sorted(live.items()):
            if name not in provider_plans:
                pruned_providers.append(provider)
                changes.append(Change("delete", "provider", name))
        for name, group in sorted(live_groups.items()):
            if name not in group_plans:
                pruned_groups.append(group.id)
                changes.append(Change("delete", "group", name))
    return {"groups": group_plans, "providers": provider_plans, "configs": config_plans, "changes": changes,
            "pruned_configs": pruned_configs, "pruned_providers": pruned_providers, "pruned_groups": pruned_groups}


def _plan_groups(entries: list[tuple[int, Entry]], live: dict[str, Group], check: _Checker) -> dict[str, _GroupPlan]:
    plans: dict[str, _GroupPlan] = {}
    for index, entry in entries:
        raw_name = entry.get("name")
        name = raw_name.strip() if isinstance(raw_name, str) else None
        label = f"group {name}" if name else f"groups[{index}]"
        before = len(check.result.problems)
        _unknown_fields(entry, GROUP_FIELDS, label, check)
        cleaned: dict[str, Any] = {}
        for field_name, rule in (("name", group_rules.clean_name), ("display_name", group_rules.clean_display_name)):
            if field_name in entry or field_name == "name":
                try:
                    cleaned[field_name] = rule(entry.get(field_name))
                except InvalidInput as error:
                    check.error(label, entry, error, field_name)
        if name and name in plans:
            check.problem(label, "name", entry.lines.get("name"), f"Listed twice (first on line {plans[name].line}).")
        if len(check.result.problems) > before:
            if name and name not in plans:
                plans[name] = _GroupPlan(name, Change("error", "group", name), {})
                plans[name].line = entry.line  # type: ignore[attr-defined]
            continue
        name = cleaned["name"]
        current = live.get(name)
        if current is None:
            plan = _GroupPlan(name, Change("create", "group", name), cleaned)
        else:
            changed = {k: v for k, v in cleaned.items() if k != "name" and getattr(current, k) != v}
            plan = _GroupPlan(name, Change("update" if changed else "unchanged", "group", name, list(changed)), changed,
                              row_id=current.id)
        plan.line = entry.line  # type: ignore[attr-defined]
        plans[name] = plan
    return plans


def _plan_providers(entries: list[tuple[int, Entry]], live: dict[str, AIProvider], environ: Mapping[str, str],
                    check: _Checker) -> dict[str, _ProviderPlan]:
    plans: dict[str, _ProviderPlan] = {}
    fingerprints = _fingerprints([live[n].id for n in live])
    for index, entry in entries:
        raw_name = entry.get("name")
        label = f"provider {raw_name.strip()}" if isinstance(raw_name, str) and raw_name.strip() else f"providers[{index}]"
        problems_before = len(check.result.problems)
        _unknown_fields(entry, PROVIDER_FIELDS, label, check)
        name = raw_name.strip() if isinstance(raw_name, str) else raw_name
        existing = live.get(name) if isinstance(name, str) else None
        sent = {k: v for k, v in entry.items() if k in PROVIDER_FIELDS and k != "api_key_env"}
        if existing is None:
            sent.setdefault("type", None)  # required on create: the API's message when it is missing
            sent.setdefault("name", None)
        cleaned, errors = providers.clean_fields(sent, current_name=existing.name if existing else None)
        for error in errors:
            check.error(label, entry, error)
        if existing is not None and "type" in cleaned and cleaned["type"] != existing.type:
            check.problem(label, "type", entry.lines.get("type"),
                          f"A provider's type cannot change (it is {existing.type}); add a provider under another name.")
        if isinstance(name, str) and name in plans:
            check.problem(label, "name", entry.lines.get("name", entry.line),
                          f"Listed twice (first on line {plans[name].entry.line}).")
        keys = _keys_from_environment(entry, label, environ, check)
        if len(check.result.problems) > problems_before:
            if isinstance(name, str) and name not in plans:
                plans[name] = _ProviderPlan(entry, name, Change("error", "provider", name), {})
            continue
        fields = {k: v for k, v in cleaned.items() if k != "name"}
        if existing is None:
            plan = _ProviderPlan(entry, name, Change("create", "provider", name), {"name": name, **fields},
                                 new_keys=list(dict.fromkeys(keys)))
        else:
            changed = {k: v for k, v in fields.items() if k != "type" and getattr(existing, k) != v}
            have = fingerprints.get(existing.id, set())
            new_keys = [k for k in dict.fromkeys(keys) if provider_keys.key_fingerprint(existing.id, k) not in have]
            shown = list(changed) + ([f"api_key_env (+{len(new_keys)} key{'s' if len(new_keys) > 1 else ''})"]
                                     if new_keys else [])
            plan = _ProviderPlan(entry, name, Change("update" if shown else "unchanged", "provider", name, shown),
                                 changed, new_keys=new_keys, row=existing)
        plans[name] = plan
    return plans


def _access_of(entry: Entry, label: str, known_groups: dict[str, Any], check: _Checker
               ) -> tuple[str | None, list[str] | None]:
    """`access` and `groups` (names) of a config entry, checked by the access rules of the API: a
    mode it knows, groups that exist or are in the file, and none while access is everyone."""
    access, names = entry.get("access"), entry.get("groups")
    before = len(check.result.problems)
    if access is not None:
        try:
            access = access_rules.clean_access(access)
        except InvalidInput as error:
            check.error(label, entry, error, "access")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            check.problem(label, "groups", entry.lines.get("groups"), "Must be a list of group names.")
        else:
            names = list(dict.fromkeys(n.strip() for n in names))
            for name in names:
                if name not in known_groups:
                    check.problem(label, "groups", entry.lines.get("groups"),
                                  f"No group named {_shown(name)} exists or is in the file.")
    if len(check.result.problems) > before:
        return None, None
    return access, names


def _check_access_combination(plan: _ConfigPlan, current_access: str | None, check: _Checker) -> None:
    """Groups named while access is (or stays) everyone: the API's rule, with placeholder ids (the
    names were checked already)."""
    if plan.access is None and plan.groups is None:
        return
    try:
        access_rules.access_change(access=plan.access,
                                   group_ids=None if plan.groups is None else [str(uuid.uuid4()) for _ in plan.groups],
                                   current=current_access)
    except InvalidInput as error:
        check.problem(plan.label, "groups", plan.entry.lines.get("groups", plan.entry.line),
                      f"{error.message} {error.detail}" if error.detail else error.message)


def _group_names_by_config(config_ids: list[Any]) -> dict[Any, list[str]]:
    return {cid: [g.name for g in groups] for cid, groups in access_rules.groups_by_config(config_ids).items()}


def _keys_from_environment(entry: Entry, label: str, environ: Mapping[str, str], check: _Checker) -> list[str]:
    """The keys the entry's `api_key_env` names, each checked by the key rules (never shown)."""
    names = entry.get("api_key_env")
    line = entry.lines.get("api_key_env")
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        check.problem(label, "api_key_env", line, "Must be a list of environment variable names.")
        return []
    keys = []
    for name in names:
        if not ENV_NAME.match(name):
            check.problem(label, "api_key_env", line, f"{_shown(name)} is not an environment variable name.")
        elif name not in environ:
            check.problem(label, "api_key_env", line, f"The environment variable {name} is not set.")
        else:
            try:
                keys.append(provider_keys.clean_api_key(environ[name]))
            except InvalidInput as error:
                check.problem(label, "api_key_env", line, f"{name}: {error.message}")
    return keys


def _fingerprints(provider_ids: list[Any]) -> dict[Any, set[str]]:
    found: dict[Any, set[str]] = {}
    if provider_ids:
        rows = db.session.execute(sa.select(AIProviderKey.provider_id, AIProviderKey.fingerprint)
                                  .where(AIProviderKey.provider_id.in_(provider_ids)))
        for pid, fingerprint in rows:
            found.setdefault(pid, set()).add(fingerprint)
    return found


def _plan_configs(entries: list[tuple[int, Entry]], provider_plans: dict[str, _ProviderPlan],
                  live: dict[str, AIProvider], known_groups: dict[str, Any], prune: bool, check: _Checker
                  ) -> tuple[dict[tuple[str, str], _ConfigPlan], dict[tuple[str, str], Any]]:
    by_id = {p.id: name for name, p in live.items()}
    existing: dict[tuple[str, str], Any] = {}
    if by_id:
        # Rows of the compared columns, not ORM objects: ten thousand configs stay light.
        columns = [getattr(ChatModelConfig, c)
                   for c in ("id", "ai_provider_id", "model", "is_default", "access", *UPDATED)]
        for config in db.session.execute(
                sa.select(*columns).where(ChatModelConfig.deleted.is_(False),
                                          ChatModelConfig.ai_provider_id.in_(list(by_id)))):
            existing[(by_id[config.ai_provider_id], config.model)] = config
    plans: dict[tuple[str, str], _ConfigPlan] = {}
    default_at: tuple[str, int] | None = None
    for index, entry in entries:
        raw_provider, raw_model = entry.get("provider"), entry.get("model")
        provider = raw_provider.strip() if isinstance(raw_provider, str) else None
        model = raw_model.strip() if isinstance(raw_model, str) else None
        label = f"model_config {provider}/{model}" if provider and model else f"model_configs[{index}]"
        problems_before = len(check.result.problems)
        _unknown_fields(entry, CONFIG_FIELDS, label, check)
        if not provider:
            check.problem(label, "provider", entry.lines.get("provider", entry.line),
                          "Name the provider (its name) the config runs on.")
        elif provider not in provider_plans and provider not in live:
            check.problem(label, "provider", entry.lines.get("provider"),
                          f"No provider named {_shown(provider)} exists or is in the file.")
        elif provider not in provider_plans and prune:
            check.problem(label, "provider", entry.lines.get("provider"),
                          f"The provider {_shown(provider)} is not in the file: --prune would delete it with its configs.")
        access, group_names = _access_of(entry, label, known_groups, check)
        sent = {k: v for k, v in entry.items() if k in CONFIG_FIELDS and k not in ("provider", "access", "groups")}
        sent.setdefault("model", None)
        cleaned, errors = model_configs.clean_fields(sent)
        for error in errors:
            check.error(label, entry, error)
        model = cleaned.get("model", model)
        key = (provider, model)
        if provider and model and key in plans:
            check.problem(label, "model", entry.lines.get("model", entry.line),
                          f"Listed twice (first on line {plans[key].entry.line}).")
        wants_default = cleaned.pop("is_default", None)
        if wants_default:
            if default_at is not None:
                check.problem(label, "is_default", entry.lines.get("is_default"),
                              f"Only one model config can be the default ({default_at[0]}, line {default_at[1]}, is too).")
            else:
                default_at = (f"{provider}/{model}", entry.lines.get("is_default", entry.line))
        if len(check.result.problems) > problems_before:
            continue
        current = existing.get(key)
        cleaned.pop("model", None)
        name = f"{provider}/{model}"
        if current is None:
            plans[key] = _ConfigPlan(entry, label, provider, Change("create", "model_config", name), model,
                                     {"model": model, **cleaned}, wants_default, make_default=bool(wants_default),
                                     access=access, groups=group_names)
        else:
            changed = {k: v for k, v in cleaned.items() if getattr(current, k) != v}
            plans[key] = _ConfigPlan(entry, label, provider, Change("update", "model_config", name), model, changed,
                                     wants_default, make_default=bool(wants_default) and not current.is_default,
                                     row=current, access=access, groups=group_names)
    for plan in plans.values():
        _check_access_combination(plan, plan.row.access if plan.row is not None else None, check)
    target = default_at[0] if default_at else None
    current_groups = _group_names_by_config([p.row.id for p in plans.values() if p.row is not None])
    for plan in plans.values():  # what the file says of the default, for configs that exist
        if plan.row is None:
            continue
        shown = list(plan.fields)
        if plan.access is not None and plan.access != plan.row.access:
            shown.append("access")
        had = current_groups.get(plan.row.id, [])
        wanted = plan.groups if plan.groups is not None else (had if (plan.access or plan.row.access) == "groups" else [])
        if sorted(wanted) != sorted(had):
            shown.append("groups")
        elif plan.groups is not None and plan.access is None:
            plan.groups = None  # the same list: nothing to write
        if plan.make_default:
            shown.append("is_default")
        elif plan.row.is_default and target is not None and target != plan.change.name:
            shown.append("is_default")  # another config of the file becomes the default
        elif plan.row.is_default and plan.wants_default is False:
            check.problem(plan.label, "is_default", plan.entry.lines.get("is_default"),
                          f"{model_configs.DEFAULT_REQUIRED} Make another config of the file the default.")
        plan.change.fields = shown
        plan.change.verb = "update" if shown else "unchanged"
    return plans, existing


# --- applying the plan -----------------------------------------------------------------------------

def _apply(actor: Actor, plan: dict[str, Any], check: _Checker) -> None:
    """Write the plan through the services' flush-only helpers, in the caller's transaction. A
    rule only the database can check (a duplicate) becomes the problem of its entry, and stops."""
    current = ""
    try:
        for name, item in plan["groups"].items():
            current = f"group {name}"
            if item.row_id is None:
                item.row_id = group_rules.insert_group(actor, item.fields).id
            elif item.fields:
                group_rules.apply_group_update(actor, item.row_id, item.fields)
        group_ids = dict(db.session.execute(sa.select(Group.name, Group.id)).all())
        for name, item in plan["providers"].items():
            current = f"provider {name}"
            if item.row is None:
                item.row = providers.insert_provider(actor, item.fields)
            elif item.fields:
                providers.apply_provider_update(actor, item.row.id, item.fields)
            for key in item.new_keys:
                provider_keys.store_key(actor, item.row.id, key)
        outside = {p.name: p for p in db.session.execute(  # providers that exist and are not in the file
            sa.select(AIProvider).where(AIProvider.deleted.is_(False),
                                        AIProvider.name.not_in(list(plan["providers"])))).scalars()}
        for item in plan["configs"].values():
            current = item.label
            provider = plan["providers"].get(item.provider)
            row = provider.row if provider is not None else outside[item.provider]
            who = {**({"access": item.access} if item.access is not None else {}),
                   **({"group_ids": [group_ids[n] for n in item.groups]} if item.groups is not None else {})}
            if item.row is None:
                model_configs.insert_config(actor, row.id, row.type, item.fields, wants_default=item.make_default,
                                            who=access_rules.access_change(**who))
            elif item.fields or item.make_default or who:
                model_configs.apply_config_update(actor, item.row.id, {
                    **item.fields, **({"is_default": True} if item.make_default else {}), **who})
        for config in plan["pruned_configs"]:
            current = "model_config (pruned)"
            model_configs.remove_config(actor, config.id)
        for provider in plan["pruned_providers"]:
            current = f"provider {provider.name} (pruned)"
            providers.remove_provider(actor, provider.id)
        for group_id in plan["pruned_groups"]:
            current = "group (pruned)"
            group_rules.remove_group(actor, group_id)
    except DomainError as error:
        check.problem(current, error.field, None, error.message)


# --- export ---------------------------------------------------------------------------------------

def _exported_providers() -> Iterator[dict[str, Any]]:
    rows = db.session.execute(sa.select(AIProvider).where(AIProvider.deleted.is_(False)).order_by(AIProvider.name)
                              .execution_options(yield_per=500)).scalars()
    for p in rows:
        yield {"name": p.name, "type": p.type, "display_name": p.display_name, "enabled": p.enabled,
               "base_url": p.base_url, "key_policy": p.key_policy}


def _exported_groups() -> Iterator[dict[str, Any]]:
    for g in db.session.execute(sa.select(Group).order_by(Group.name)).scalars():
        yield {"name": g.name, "display_name": g.display_name}


def _exported_configs() -> Iterator[dict[str, Any]]:
    from app.models import ModelConfigGroup

    names: dict[Any, list[str]] = {}
    for config_id, name in db.session.execute(sa.select(ModelConfigGroup.model_config_id, Group.name)
                                              .join(Group, Group.id == ModelConfigGroup.group_id)
                                              .join(ChatModelConfig, ChatModelConfig.id == ModelConfigGroup.model_config_id)
                                              .where(ChatModelConfig.deleted.is_(False), ChatModelConfig.access == "groups")
                                              .order_by(Group.name)):
        names.setdefault(config_id, []).append(name)
    rows = db.session.execute(
        sa.select(ChatModelConfig, AIProvider.name)
        .join(AIProvider, AIProvider.id == ChatModelConfig.ai_provider_id)
        .where(ChatModelConfig.deleted.is_(False), AIProvider.deleted.is_(False))
        .order_by(AIProvider.name, ChatModelConfig.model).execution_options(yield_per=500))
    for c, provider_name in rows:
        yield {"provider": provider_name, "model": c.model, "display_name": c.display_name, "enabled": c.enabled,
               "is_default": c.is_default, "context_limit": c.context_limit,
               "compression_threshold": c.compression_threshold, "options": c.options, "access": c.access,
               "groups": names.get(c.id, [])}


def export_yaml() -> Iterator[str]:
    """The configuration as a file states it, as YAML text: `version`, then live groups, live
    providers by name and their live configs by (provider, model); never a key, hint or
    ciphertext (legacy configs have no provider name: left out). Written entry by entry as the
    rows are read (memory stays flat whatever the number of configs): block style, keys in the
    file's order, unicode as is."""
    yield f"version: {VERSION}\n"
    for key, entries in (("groups", _exported_groups()), ("providers", _exported_providers()),
                         ("model_configs", _exported_configs())):
        first = next(entries, None)
        if first is None:
            yield f"{key}: []\n"
            continue
        yield f"{key}:\n"
        for entry in _chain(first, entries):
            yield yaml.safe_dump([entry], sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
