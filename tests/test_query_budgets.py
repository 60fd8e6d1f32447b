"""Query budgets: how many SQL statements each route may send, whatever the size of the data.

Each route runs at two sizes: 3 providers (9 provider keys, 30 users with a key each, 15 model
configs, 3 groups of 10 members, a config of each provider open only to its group and one to no
group), then 30 (90, 300, 150, 30), seeded in bulk by `bench.seed.insert_rows`, the benchmarks'
own seeding. The number of statements must be the same at both sizes (no N+1: nothing may run a
query per row) and within the route's budget in `BUDGETS`. Authentication is included (one
statement for a bearer token or a session cookie); transaction starts are not (see
tests/support/query_budget.py). bench/run.py copies this table into bench/results.md.

Writes run on a different row at each size, on the same path through the service (an update of
a key the caller holds at both sizes, a config that is not the default at both sizes...), so the
two counts compare like with like.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bench.seed import (
    CALLER_KEY_PROVIDERS,
    CONFIGS_PER_PROVIDER,
    KEYS_PER_PROVIDER,
    USERS_PER_PROVIDER,
    Seeded,
    insert_rows,
    provider_policy,
)
from tests.support import login, new_key
from tests.support.query_budget import QueryCount, count_queries

BUDGETS: dict[str, int] = {
    # JSON reads
    "GET /me": 1,
    "GET /ai-providers": 4,
    "GET /ai-providers/{id}": 3,
    "GET /ai-providers/{id}/keys": 4,
    "GET /user-ai-provider-keys": 3,
    "GET /model-configs (admin)": 4,  # + the groups of the configs open to groups (one query)
    "GET /model-configs (member)": 4,  # + their groups
    "GET /model-configs/enabled": 4,  # + their groups
    "GET /model-configs/{id} (admin)": 2,
    "GET /model-configs/{id} (member)": 2,
    "GET /model-configs/{id}/resolution": 5,
    "GET /providers": 3,
    "GET /user-provider-configs": 3,
    "GET /audit-events": 2,
    # JSON writes
    "POST /ai-providers": 4,
    "PATCH /ai-providers/{id}": 6,
    "DELETE /ai-providers/{id}": 8,
    "POST /ai-providers/{id}/keys": 5,
    "DELETE /ai-providers/{id}/keys/{key_id}": 4,
    "PUT /user-ai-provider-keys/{id}": 9,
    "DELETE /user-ai-provider-keys/{id}": 3,
    "POST /model-configs": 9,
    "PATCH /model-configs/{id}": 6,  # + its groups (the config is open to a group)
    "DELETE /model-configs/{id}": 7,
    "POST /credentials": 7,
    "GET /groups": 4,
    "GET /groups/{id}": 3,
    "GET /groups/{id}/members": 4,
    "POST /groups": 4,
    "PATCH /groups/{id}": 6,
    "DELETE /groups/{id}": 7,
    "PUT /groups/{id}/members/{user_id}": 8,
    "DELETE /groups/{id}/members/{user_id}": 5,
    # Pages
    "GET /admin/providers": 4,
    "GET /admin/providers/{id}": 9,  # + the key in use (oldest_key) and who holds a user key (count, first 50)
    "GET /admin/model-configs": 4,  # + the groups of the configs open to groups
    "GET /admin/users": 6,  # + each listed user's groups (one query)
    "GET /admin/groups": 4,
    "GET /admin/groups/{id}": 5,  # the group, its members (count, page) and the configs open to it
    "GET /settings/keys": 3,
    "GET /models": 4,
    "GET /admin/audit": 4,  # session, page, count (up to 10,000), one query per resource type shown (here users)
}

SIZES = ((0, 3), (3, 27))  # (first provider index, how many): 3 providers, then 30


@dataclass
class Env:
    """What a route call needs: the API clients, the signed-in browsers and the newest batch."""

    admin_api: Any
    member_api: Any
    service_api: Any
    admin_page: Any
    member_page: Any
    member_id: uuid.UUID
    batch: Seeded
    step: int = 0

    def provider(self, want: Callable[[int], bool] = lambda i: True) -> tuple[int, uuid.UUID]:
        """The first provider of the batch that `want`s (by index), with its id."""
        for offset, pid in enumerate(self.batch.provider_ids):
            if want(self.batch.start + offset):
                return self.batch.start + offset, pid
        raise AssertionError("no such provider in the batch")

    def provider_id(self, want: Callable[[int], bool] = lambda i: True) -> uuid.UUID:
        return self.provider(want)[1]

    def config_id(self, index: int, model: int) -> uuid.UUID:
        return self.batch.config_ids[(index - self.batch.start) * CONFIGS_PER_PROVIDER + model]

    def key_id(self, index: int, key: int) -> uuid.UUID:
        return self.batch.provider_key_ids[(index - self.batch.start) * KEYS_PER_PROVIDER + key]

    def group_id(self, offset: int = 0) -> uuid.UUID:
        """The group of the batch's provider `offset` (its ten users are its members)."""
        return self.batch.group_ids[offset]

    def user_id(self, offset: int = 0, user: int = 0) -> uuid.UUID:
        return self.batch.user_ids[offset * USERS_PER_PROVIDER + user]


def member_holds_key(i: int) -> bool:
    """The member holds a key for provider i (see `insert_rows`): an odd one that takes user keys."""
    return provider_policy(i) != "provider_only" and i % 2 == 1 and i < CALLER_KEY_PROVIDERS


def held_config(env: Env) -> uuid.UUID:
    """A config of the enabled set on a provider the member holds a key for."""
    index, _ = env.provider(member_holds_key)
    return env.config_id(index, 0)


@dataclass(frozen=True)
class Case:
    call: Callable[[Env], Any]
    status: int = 200
    warm: bool = True  # reads run once before being counted; writes cannot repeat
    grows: bool = False  # a list: it must show more rows at 30 than at 3 (else the sizes prove nothing)


CASES: dict[str, Case] = {
    "GET /me": Case(lambda e: e.member_api.get("/me")),
    "GET /ai-providers": Case(lambda e: e.admin_api.get("/ai-providers"), grows=True),
    "GET /ai-providers/{id}": Case(lambda e: e.admin_api.get(f"/ai-providers/{e.provider_id()}")),
    "GET /ai-providers/{id}/keys": Case(lambda e: e.admin_api.get(f"/ai-providers/{e.provider_id()}/keys")),
    "GET /user-ai-provider-keys": Case(lambda e: e.member_api.get("/user-ai-provider-keys"), grows=True),
    "GET /model-configs (admin)": Case(lambda e: e.admin_api.get("/model-configs"), grows=True),
    "GET /model-configs (member)": Case(lambda e: e.member_api.get("/model-configs"), grows=True),
    "GET /model-configs/enabled": Case(lambda e: e.member_api.get("/model-configs/enabled"), grows=True),
    "GET /model-configs/{id} (admin)": Case(lambda e: e.admin_api.get(f"/model-configs/{e.config_id(e.batch.start, 0)}")),
    "GET /model-configs/{id} (member)": Case(lambda e: e.member_api.get(f"/model-configs/{held_config(e)}")),
    "GET /model-configs/{id}/resolution": Case(lambda e: e.member_api.get(f"/model-configs/{held_config(e)}/resolution")),
    "GET /providers": Case(lambda e: e.admin_api.get("/providers")),
    "GET /user-provider-configs": Case(lambda e: e.member_api.get("/user-provider-configs")),
    "GET /audit-events": Case(lambda e: e.admin_api.get("/audit-events", query_string={"limit": 50})),
    "POST /ai-providers": Case(
        lambda e: e.admin_api.post("/ai-providers", json={"type": "openai", "name": f"new-provider-{e.step}"}), 201, False),
    "PATCH /ai-providers/{id}": Case(
        lambda e: e.admin_api.patch(f"/ai-providers/{e.provider_id()}", json={"display_name": f"Renamed {e.step}"}),
        200, False),
    # Not the first provider: provider 0 holds the default config, whose deletion also promotes another.
    "DELETE /ai-providers/{id}": Case(
        lambda e: e.admin_api.delete(f"/ai-providers/{e.provider_id(lambda i: i % 3 == 1)}"), 204, False),
    "POST /ai-providers/{id}/keys": Case(
        lambda e: e.admin_api.post(f"/ai-providers/{e.provider_id()}/keys", json={"api_key": new_key("budget")}),
        201, False),
    "DELETE /ai-providers/{id}/keys/{key_id}": Case(
        lambda e: e.admin_api.delete(f"/ai-providers/{e.provider_id()}/keys/{e.key_id(e.batch.start, 1)}"), 204, False),
    "PUT /user-ai-provider-keys/{id}": Case(
        lambda e: e.member_api.put(f"/user-ai-provider-keys/{e.provider_id(member_holds_key)}",
                                   json={"api_key": new_key("budget")}), 200, False),
    "DELETE /user-ai-provider-keys/{id}": Case(
        lambda e: e.member_api.delete(f"/user-ai-provider-keys/{e.provider_id(member_holds_key)}"), 204, False),
    "POST /model-configs": Case(
        lambda e: e.admin_api.post("/model-configs", json={"ai_provider_id": str(e.provider_id()),
                                                           "model": f"new-model-{e.step}"}), 201, False),
    "PATCH /model-configs/{id}": Case(
        lambda e: e.admin_api.patch(f"/model-configs/{e.config_id(e.batch.start, 1)}",
                                    json={"display_name": f"Renamed {e.step}"}), 200, False),
    "DELETE /model-configs/{id}": Case(
        lambda e: e.admin_api.delete(f"/model-configs/{e.config_id(e.batch.start, 2)}"), 204, False),
    "POST /credentials": Case(
        lambda e: e.service_api.post("/credentials", json={"user_id": str(e.member_id),
                                                           "model_config_id": str(held_config(e))}), 200, False),
    "GET /groups": Case(lambda e: e.admin_api.get("/groups"), grows=True),
    "GET /groups/{id}": Case(lambda e: e.admin_api.get(f"/groups/{e.group_id()}")),
    "GET /groups/{id}/members": Case(lambda e: e.admin_api.get(f"/groups/{e.group_id()}/members")),
    "POST /groups": Case(lambda e: e.admin_api.post("/groups", json={"name": f"new-group-{e.step}"}), 201, False),
    "PATCH /groups/{id}": Case(
        lambda e: e.admin_api.patch(f"/groups/{e.group_id()}", json={"display_name": f"Renamed {e.step}"}), 200, False),
    # Not the first group: its provider's config 1 is the one PATCH /model-configs/{id} changes.
    "DELETE /groups/{id}": Case(lambda e: e.admin_api.delete(f"/groups/{e.group_id(2)}"), 204, False),
    # A user of another provider's group joins the first group.
    "PUT /groups/{id}/members/{user_id}": Case(
        lambda e: e.admin_api.put(f"/groups/{e.group_id()}/members/{e.user_id(1)}"), 200, False),
    "DELETE /groups/{id}/members/{user_id}": Case(
        lambda e: e.admin_api.delete(f"/groups/{e.group_id()}/members/{e.user_id(0, 3)}"), 204, False),
    "GET /admin/providers": Case(lambda e: e.admin_page.get("/admin/providers"), grows=True),
    "GET /admin/providers/{id}": Case(lambda e: e.admin_page.get(f"/admin/providers/{e.provider_id()}")),
    "GET /admin/model-configs": Case(lambda e: e.admin_page.get("/admin/model-configs"), grows=True),
    "GET /admin/users": Case(lambda e: e.admin_page.get("/admin/users"), grows=True),
    "GET /admin/groups": Case(lambda e: e.admin_page.get("/admin/groups"), grows=True),
    "GET /admin/groups/{id}": Case(lambda e: e.admin_page.get(f"/admin/groups/{e.group_id()}")),
    "GET /settings/keys": Case(lambda e: e.member_page.get("/settings/keys"), grows=True),
    "GET /models": Case(lambda e: e.member_page.get("/models"), grows=True),
    "GET /admin/audit": Case(lambda e: e.admin_page.get("/admin/audit")),
}


_PASSWORD_HASHES: dict[int, str] = {}


def seed(app, start: int, count: int, callers: tuple[uuid.UUID, ...]) -> Seeded:
    """Bulk-insert one batch (see `bench.seed.insert_rows`) and commit."""
    from app.extensions import db
    from app.services.passwords import hash_password
    from app.services.secrets import ensure_key_registered, keyring

    with app.app_context():
        memory = app.config["ARGON2_MEMORY_COST"]
        if memory not in _PASSWORD_HASHES:
            _PASSWORD_HASHES[memory] = hash_password("seeded users never sign in")
        batch = insert_rows(db.session, start, count, password_hash=_PASSWORD_HASHES[memory], callers=callers)
        db.session.commit()
        # Now that the key's digest row is committed, remember it (as a running app would have).
        ensure_key_registered(keyring().primary_digest)
        db.session.commit()
    return batch


def test_every_case_has_a_budget():
    assert set(CASES) == set(BUDGETS)


@pytest.mark.parametrize("route", list(CASES))
def test_query_budget(route, app, admin, member, admin_api, member_api, service_api):
    case = CASES[route]
    admin_page, member_page = app.test_client(), app.test_client()
    login(admin_page, admin.email)
    login(member_page, member.email)
    counts: list[QueryCount] = []
    sizes: list[int] = []  # X-Total-Count of a JSON list, else the length of the page
    for step, (start, count) in enumerate(SIZES):
        env = Env(admin_api, member_api, service_api, admin_page, member_page, member.id,
                  seed(app, start, count, (member.id,)), step)
        if case.warm:
            assert case.call(env).status_code == case.status
        with count_queries(app) as queries:
            response = case.call(env)
        assert response.status_code == case.status, response.get_data(as_text=True)[:500]
        counts.append(queries)
        sizes.append(int(response.headers.get("X-Total-Count", len(response.get_data()))))
    small, large = counts
    if case.grows:
        assert sizes[1] > sizes[0], f"{route} shows no more at 30 providers than at 3"
    assert small.count == large.count, (
        f"{route}: {small.count} statements with 3 providers, {large.count} with 30 (a query per row?)\n"
        f"with 3: {small.report()}\nwith 30: {large.report()}"
    )
    assert large.count <= BUDGETS[route], f"{route} is over its budget of {BUDGETS[route]}: {large.report()}"
