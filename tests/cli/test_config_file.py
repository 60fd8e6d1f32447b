"""`flask --app wsgi config export` and `config import FILE [--dry-run] [--prune]` (SPEC section 11):
the plan, the summary line, keys from the environment (never printed), every kind of bad input
with its entry, field and line and nothing written, a second import that changes nothing, and
export -> import into an empty database giving the same configuration."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from tests.support import KEY_A, SECRET_KEY, Api, flask_cli, make_token, new_key
from tests.support.db import sql

SAMPLE = """\
version: 1
groups: []
providers:
  - name: openai-main
    type: openai
    display_name: OpenAI
    key_policy: user_preferred
    api_key_env: [OPENAI_KEY_1]
  - name: anthropic
    type: anthropic
model_configs:
  - provider: openai-main
    model: gpt-4o
    display_name: GPT-4o
    is_default: true
    context_limit: 128000
  - provider: openai-main
    model: gpt-4o-mini
    enabled: false
    options: {temperature: 0.2}
  - provider: anthropic
    model: claude-sonnet
    compression_threshold: 80
"""


@pytest.fixture
def config_file(tmp_path):
    def write(text: str, name: str = "switchboard.yaml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)

    return write


@pytest.fixture
def run(runner):
    def invoke(*args, env=None):
        result = runner.invoke(args=["config", *args], env=env or {})
        return result

    return invoke


def state(app):
    """The configuration as the database holds it (what `config export` writes, parsed), and the
    key count."""
    import yaml

    result = app.test_cli_runner().invoke(args=["config", "export"])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.stdout), sql(app, "SELECT count(*) FROM ai_provider_keys")[0][0]


def test_import_creates_then_a_second_import_changes_nothing(app, run, config_file, admin):
    key = new_key("imported")
    path = config_file(SAMPLE)
    first = run("import", path, env={"OPENAI_KEY_1": key})
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [
        "create provider openai-main", "create provider anthropic", "create model_config openai-main/gpt-4o",
        "create model_config openai-main/gpt-4o-mini", "create model_config anthropic/claude-sonnet",
        "5 created, 0 updated, 0 unchanged, 0 errors"]
    assert key not in first.output

    api = Api(app.test_client(), make_token(app, admin))
    providers = {p["name"]: p for p in api.get("/ai-providers").get_json()}
    assert providers["openai-main"]["display_name"] == "OpenAI"
    assert providers["openai-main"]["key_policy"] == "user_preferred"
    assert providers["openai-main"]["has_provider_api_key"] is True
    assert providers["anthropic"]["key_policy"] == "provider_only"  # left out: the API's default
    configs = {c["model"]: c for c in api.get("/model-configs").get_json()}
    assert configs["gpt-4o"]["is_default"] is True
    assert configs["gpt-4o-mini"]["enabled"] is False and configs["gpt-4o-mini"]["options"] == {"temperature": 0.2}
    assert configs["claude-sonnet"]["context_limit"] == 128000 and configs["claude-sonnet"]["compression_threshold"] == 80
    assert len(api.get(f"/ai-providers/{providers['openai-main']['id']}/keys").get_json()) == 1

    events = [e["action"] for e in api.get("/audit-events", query_string={"actor": "cli config import"}).get_json()]
    assert sorted(set(events)) == ["model_config.create", "provider.create", "provider_key.create"]

    before = state(app)
    again = run("import", path, env={"OPENAI_KEY_1": key})
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[-1] == "0 created, 0 updated, 5 unchanged, 0 errors"
    assert all(line.startswith("unchanged ") for line in again.stdout.splitlines()[:-1])
    assert state(app) == before
    assert len(api.get("/audit-events", query_string={"actor": "cli config import"}).get_json()) == len(events)


def test_updates_name_the_fields_that_change_and_leave_the_rest(app, run, config_file):
    key_1, key_2 = new_key("one"), new_key("two")
    assert run("import", config_file(SAMPLE), env={"OPENAI_KEY_1": key_1}).exit_code == 0
    changed = SAMPLE.replace("display_name: OpenAI", "display_name: OpenAI (EU)\n    enabled: false").replace(
        "[OPENAI_KEY_1]", "[OPENAI_KEY_1, OPENAI_KEY_2]").replace("    is_default: true\n", "").replace(
        "    compression_threshold: 80", "    compression_threshold: 80\n    is_default: true")
    result = run("import", config_file(changed), env={"OPENAI_KEY_1": key_1, "OPENAI_KEY_2": key_2})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "update provider openai-main: display_name, enabled, api_key_env (+1 key)",
        "unchanged provider anthropic",
        "update model_config openai-main/gpt-4o: is_default",  # no longer the default
        "unchanged model_config openai-main/gpt-4o-mini",
        "update model_config anthropic/claude-sonnet: is_default",
        "0 created, 3 updated, 2 unchanged, 0 errors"]
    exported, keys = state(app)
    assert keys == 2
    by_model = {c["model"]: c for c in exported["model_configs"]}
    assert (by_model["gpt-4o"]["is_default"], by_model["claude-sonnet"]["is_default"]) == (False, True)
    assert by_model["gpt-4o"]["display_name"] == "GPT-4o"  # not in the file this time: left as it is
    assert {p["name"]: p["enabled"] for p in exported["providers"]} == {"anthropic": True, "openai-main": False}


def test_dry_run_shows_the_plan_and_writes_nothing(app, run, config_file):
    before = state(app)
    result = run("import", config_file(SAMPLE), "--dry-run", env={"OPENAI_KEY_1": new_key("dry")})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "5 created, 0 updated, 0 unchanged, 0 errors"
    assert "Dry run: nothing was written." in result.stderr
    assert state(app) == before
    assert sql(app, "SELECT count(*) FROM audit_events WHERE actor_label = 'cli config import'")[0][0] == 0


def test_prune_deletes_what_the_file_does_not_list_as_the_delete_routes_do(app, run, config_file, admin):
    assert run("import", config_file(SAMPLE), env={"OPENAI_KEY_1": new_key("p")}).exit_code == 0
    smaller = """\
    version: 1
    providers:
      - name: anthropic
        type: anthropic
    model_configs:
      - provider: anthropic
        model: claude-sonnet
    """
    kept = run("import", config_file(smaller))
    assert kept.exit_code == 0, kept.output
    assert kept.stdout.splitlines()[-1] == "0 created, 0 updated, 2 unchanged, 0 errors"  # nothing deleted
    pruned = run("import", config_file(smaller), "--prune")
    assert pruned.exit_code == 0, pruned.output
    assert pruned.stdout.splitlines() == [
        "unchanged provider anthropic", "unchanged model_config anthropic/claude-sonnet",
        "delete model_config openai-main/gpt-4o", "delete model_config openai-main/gpt-4o-mini",
        "delete provider openai-main", "3 deleted (--prune)", "0 created, 0 updated, 2 unchanged, 0 errors"]
    exported, keys = state(app)
    assert [p["name"] for p in exported["providers"]] == ["anthropic"]
    assert [(c["model"], c["is_default"]) for c in exported["model_configs"]] == [("claude-sonnet", True)]
    assert keys == 0  # the provider's keys went with it, as DELETE /ai-providers/{id} does
    actions = {r[0] for r in sql(app, "SELECT action FROM audit_events WHERE actor_label = 'cli config import'")}
    assert {"model_config.delete", "provider.delete", "model_config.promote_default"} <= actions


@pytest.mark.parametrize(("text", "expected"), [
    ("version: 1\nproviders: [\n", "error file (line 3): The file is not valid YAML"),
    ("version: 1\nsettings: {}\n", "error file, settings (line 2): Unknown top-level key"),
    ("version: 2\n", "error file, version (line 1): Must be 1."),
    ("- a list\n", "error file: The file must be a mapping"),
    ("version: 1\nproviders:\n  - name: p1\n    type: openai\n    colour: blue\n",
     "error provider p1, colour (line 5): Unknown field."),
    ("version: 1\nproviders:\n  - name: p1\n    type: openai\n    api_key: sk-oops-not-a-var\n",
     "error provider p1, api_key (line 5): Unknown field. Keys are never written in the file"),
    ("version: 1\nproviders:\n  - name: p1\n    type: openai\n    enabled: maybe\n",
     "error provider p1, enabled (line 5): Invalid request body. Must be true or false."),
    ("version: 1\nproviders:\n  - name: Bad Name\n    type: openai\n",
     "error provider Bad Name, name (line 3): Invalid AI provider name. Names must use lowercase letters"),
    ("version: 1\nproviders:\n  - name: p1\n", "error provider p1, type (line 3): Invalid AI provider type."),
    ("version: 1\nproviders:\n  - name: p1\n    type: openai\n    base_url: http://169.254.169.254\n",
     "error provider p1, base_url (line 5): Invalid provider base URL."),
    ("version: 1\nproviders:\n  - name: p1\n    type: openai\n  - name: p1\n    type: openai\n",
     "error provider p1, name (line 5): Listed twice (first on line 3)."),
    ("version: 1\nproviders:\n  - name: p1\n    type: openai\n    type: anthropic\n",
     "error file (line 5): The key 'type' appears twice in this mapping (first on line 4)."),
    ("version: 1\nproviders:\n  - name: p1\n    type: openai\n    api_key_env: [MISSING_KEY_VAR]\n",
     "error provider p1, api_key_env (line 5): The environment variable MISSING_KEY_VAR is not set."),
    ("version: 1\nmodel_configs:\n  - provider: nowhere\n    model: m\n",
     "error model_config nowhere/m, provider (line 3): No provider named 'nowhere' exists or is in the file."),
    ("version: 1\nproviders:\n  - name: p1\n    type: openai\nmodel_configs:\n  - provider: p1\n    model: m\n"
     "    context_limit: '1000'\n",
     "error model_config p1/m, context_limit (line 8): Invalid context limit."),
    ("version: 1\nproviders:\n  - name: p1\n    type: openai\nmodel_configs:\n  - provider: p1\n    model: m\n"
     "  - provider: p1\n    model: ' m '\n",
     "error model_config p1/m, model (line 9): Listed twice (first on line 6)."),
    ("version: 1\nproviders:\n  - name: p1\n    type: openai\nmodel_configs:\n  - provider: p1\n    model: a\n"
     "    is_default: true\n  - provider: p1\n    model: b\n    is_default: true\n",
     "error model_config p1/b, is_default (line 11): Only one model config can be the default"),
    ("version: 1\nproviders:\n  - name: p1\n    type: openai\nmodel_configs:\n  - provider: p1\n",
     "error model_configs[0], model (line 6): Model is required."),
    ("version: 1\nproviders: {name: p1}\n", "error providers (line 2): Must be a list of providers."),
    ("version: 1\nproviders:\n  - just-a-name\n", "error providers[0] (line 3): Each provider must be a mapping"),
])
def test_bad_input_is_an_error_with_its_place_and_nothing_is_written(app, run, config_file, text, expected):
    before = state(app)
    result = run("import", config_file(text))
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stdout.splitlines() if line.startswith("error ")]
    assert any(line.startswith(expected) for line in errors), result.stdout
    assert result.stdout.splitlines()[-1].endswith(f"{len(errors)} errors")
    assert "Nothing was written" in result.stderr
    assert "sk-oops" not in result.output
    assert state(app) == before


def test_every_error_of_a_file_is_reported_at_once(app, run, config_file):
    text = ("version: 1\nproviders:\n  - name: p1\n    type: openai\n    enabled: 'yes'\n    key_policy: sometimes\n"
            "model_configs:\n  - provider: p1\n    model: m\n    compression_threshold: 101\n"
            "  - provider: ghost\n    model: m\n")
    result = run("import", config_file(text))
    assert result.exit_code == 1
    errors = [line for line in result.stdout.splitlines() if line.startswith("error ")]
    assert [e.split(":")[0] for e in errors] == [
        "error provider p1, enabled (line 5)", "error provider p1, key_policy (line 6)",
        "error model_config p1/m, compression_threshold (line 10)", "error model_config ghost/m, provider (line 11)"]
    assert result.stdout.splitlines()[-1] == "0 created, 0 updated, 0 unchanged, 4 errors"


def test_a_type_change_and_a_key_of_the_wrong_shape_are_errors(app, run, config_file):
    assert run("import", config_file(SAMPLE), env={"OPENAI_KEY_1": new_key("t")}).exit_code == 0
    before = state(app)
    retyped = SAMPLE.replace("    type: openai\n", "    type: azure\n")
    result = run("import", config_file(retyped), env={"OPENAI_KEY_1": new_key("t2")})
    assert result.exit_code == 1
    assert "error provider openai-main, type (line 5): A provider's type cannot change (it is openai)" in result.stdout
    empty_key = run("import", config_file(SAMPLE), env={"OPENAI_KEY_1": "   "})
    assert empty_key.exit_code == 1
    assert "error provider openai-main, api_key_env (line 8): OPENAI_KEY_1: API key is required." in empty_key.stdout
    assert state(app) == before


def test_the_same_key_is_not_added_twice(app, run, config_file):
    key = new_key("same")
    text = SAMPLE.replace("[OPENAI_KEY_1]", "[OPENAI_KEY_1, ALSO_THE_SAME]")
    first = run("import", config_file(text), env={"OPENAI_KEY_1": key, "ALSO_THE_SAME": key})
    assert first.exit_code == 0, first.output
    assert state(app)[1] == 1
    again = run("import", config_file(text), env={"OPENAI_KEY_1": key, "ALSO_THE_SAME": f"  {key}\n"})
    assert "unchanged provider openai-main" in again.stdout
    assert state(app)[1] == 1


def test_a_default_cannot_be_dropped_without_another(app, run, config_file):
    assert run("import", config_file(SAMPLE), env={"OPENAI_KEY_1": new_key("d")}).exit_code == 0
    result = run("import", config_file(SAMPLE.replace("is_default: true", "is_default: false")),
                 env={"OPENAI_KEY_1": new_key("d2")})
    assert result.exit_code == 1
    assert ("error model_config openai-main/gpt-4o, is_default (line 15): A default model is required while "
            "configs exist.") in result.stdout


def test_export_then_import_into_an_empty_database_gives_the_same_configuration(app, run, config_file, admin_api):
    from tests.conftest import truncate_all

    provider = admin_api.post("/ai-providers", json={"type": "openai-compat", "name": "local", "display_name": "Local",
                                                     "base_url": "https://llm.example.com/v1",
                                                     "key_policy": "user_only"}).get_json()
    admin_api.post(f"/ai-providers/{provider['id']}/keys", json={"api_key": new_key("exported")})
    admin_api.post("/model-configs", json={"ai_provider_id": provider["id"], "model": "llama", "options": {"a": [1]}})
    second = admin_api.post("/model-configs", json={"ai_provider_id": provider["id"], "model": "qwen",
                                                    "context_limit": 32000, "is_default": True}).get_json()
    admin_api.patch(f"/ai-providers/{provider['id']}", json={"enabled": False})  # configs on a disabled provider
    assert second["is_default"] is True
    exported = run("export")
    assert exported.exit_code == 0, exported.output
    document = yaml.safe_load(exported.stdout)
    assert list(document) == ["version", "groups", "providers", "model_configs"]
    assert "..." not in exported.stdout and "hint" not in exported.stdout and "key" not in exported.stdout.replace(
        "key_policy", "")
    before = state(app)[0]
    truncate_all(app)
    path = config_file(exported.stdout)
    imported = run("import", path)
    assert imported.exit_code == 0, imported.output
    assert imported.stdout.splitlines()[-1] == "3 created, 0 updated, 0 unchanged, 0 errors"
    assert state(app)[0] == before
    assert run("import", path).stdout.splitlines()[-1] == "0 created, 0 updated, 3 unchanged, 0 errors"


def test_export_to_a_file(app, run, tmp_path, admin_api):
    assert yaml.safe_load(run("export").stdout) == {"version": 1, "groups": [], "providers": [], "model_configs": []}
    admin_api.post("/ai-providers", json={"type": "openai", "name": "filed"})
    target = tmp_path / "out.yaml"
    result = run("export", "--output", str(target))
    assert result.exit_code == 0 and result.stdout == ""
    assert yaml.safe_load(target.read_text())["providers"][0]["name"] == "filed"


def test_the_commands_as_an_operator_runs_them(app, tmp_path):
    """`flask --app wsgi config import` in a subprocess: the key from the environment reaches the
    database and nothing the process prints or logs holds it."""
    from tests.conftest import resolved_database_url

    key = new_key("operator")
    path = tmp_path / "c.yaml"
    path.write_text(SAMPLE)
    env = {"DATABASE_URL": resolved_database_url(), "SECRET_KEY": SECRET_KEY, "ENCRYPTION_KEYS": KEY_A,
           "SWITCHBOARD_ENV": "production", "OPENAI_KEY_1": key}
    dry = flask_cli("config", "import", str(path), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    done = flask_cli("config", "import", str(path), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "5 created, 0 updated, 0 unchanged, 0 errors"
    exported = flask_cli("config", "export", env=env)
    assert exported.returncode == 0
    for output in (dry.stdout, dry.stderr, done.stdout, done.stderr, exported.stdout, exported.stderr):
        assert key not in output and key[-12:] not in output
    assert yaml.safe_load(exported.stdout)["providers"][1]["name"] == "openai-main"


def test_a_config_may_name_a_provider_that_exists_but_is_not_in_the_file(app, run, config_file, admin_api):
    admin_api.post("/ai-providers", json={"type": "anthropic", "name": "already-here"})
    text = "version: 1\nmodel_configs:\n  - provider: already-here\n    model: claude\n"
    result = run("import", config_file(text))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["create model_config already-here/claude",
                                          "1 created, 0 updated, 0 unchanged, 0 errors"]
    pruning = run("import", config_file(text), "--prune")
    assert pruning.exit_code == 1
    assert ("error model_config already-here/claude, provider (line 3): The provider 'already-here' is not in the "
            "file: --prune would delete it with its configs.") in pruning.stdout


GROUPS_SAMPLE = """\
version: 1
groups:
  - name: ml-team
    display_name: ML team
  - name: support
providers:
  - name: openai-main
    type: openai
model_configs:
  - provider: openai-main
    model: gpt-4o
    access: groups
    groups: [ml-team]
  - provider: openai-main
    model: gpt-4o-mini
"""


def test_groups_and_who_may_use_each_config(app, run, config_file, admin_api):
    path = config_file(GROUPS_SAMPLE)
    first = run("import", path)
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[:2] == ["create group ml-team", "create group support"]
    assert first.stdout.splitlines()[-1] == "5 created, 0 updated, 0 unchanged, 0 errors"
    groups = {g["name"]: g for g in admin_api.get("/groups").get_json()}
    assert groups["ml-team"]["display_name"] == "ML team"
    configs = {c["model"]: c for c in admin_api.get("/model-configs").get_json()}
    assert (configs["gpt-4o"]["access"], configs["gpt-4o"]["group_ids"]) == ("groups", [groups["ml-team"]["id"]])
    assert (configs["gpt-4o-mini"]["access"], configs["gpt-4o-mini"]["group_ids"]) == ("everyone", [])
    assert run("import", path).stdout.splitlines()[-1] == "0 created, 0 updated, 5 unchanged, 0 errors"

    widened = GROUPS_SAMPLE.replace("    groups: [ml-team]", "    groups: [ml-team, support]")
    result = run("import", config_file(widened))
    assert "update model_config openai-main/gpt-4o: groups" in result.stdout
    opened = GROUPS_SAMPLE.replace("    access: groups\n    groups: [ml-team]\n", "    access: everyone\n")
    result = run("import", config_file(opened), "--prune")
    assert result.exit_code == 0, result.output
    assert "update model_config openai-main/gpt-4o: access, groups" in result.stdout
    assert admin_api.get(f"/model-configs/{configs['gpt-4o']['id']}").get_json()["access"] == "everyone"

    exported = yaml.safe_load(run("export").stdout)
    assert exported["groups"] == [{"name": "ml-team", "display_name": "ML team"}, {"name": "support", "display_name": ""}]
    assert [(c["model"], c["access"], c["groups"]) for c in exported["model_configs"]] == [
        ("gpt-4o", "everyone", []), ("gpt-4o-mini", "everyone", [])]
    pruned = run("import", config_file(GROUPS_SAMPLE.replace("  - name: support\n", "")), "--prune")
    assert pruned.exit_code == 0, pruned.output
    assert "delete group support" in pruned.stdout
    assert [g["name"] for g in admin_api.get("/groups").get_json()] == ["ml-team"]


@pytest.mark.parametrize(("text", "expected"), [
    (GROUPS_SAMPLE.replace("groups: [ml-team]", "groups: [nobody-here]"),
     "error model_config openai-main/gpt-4o, groups (line 13): No group named 'nobody-here' exists or is in the file."),
    (GROUPS_SAMPLE.replace("    access: groups\n", ""),
     "error model_config openai-main/gpt-4o, groups (line 12): Invalid model access. group_ids must be empty when "
     "access is everyone."),
    (GROUPS_SAMPLE.replace("access: groups", "access: some"), "error model_config openai-main/gpt-4o, access (line 12)"),
    (GROUPS_SAMPLE.replace("  - name: support", "  - name: Support Team"),
     "error group Support Team, name (line 5): Invalid group name."),
    (GROUPS_SAMPLE.replace("  - name: support", "  - name: ml-team"),
     "error group ml-team, name (line 5): Listed twice (first on line 3)."),
])
def test_bad_groups_and_access_are_errors(app, run, config_file, text, expected):
    before = state(app)
    result = run("import", config_file(text))
    assert result.exit_code == 1, result.output
    assert any(line.startswith(expected) for line in result.stdout.splitlines()), result.stdout
    assert state(app) == before
