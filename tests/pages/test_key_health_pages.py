"""Key health on the pages (SPEC section 11): what a refused key means for a user (/models and
/settings/keys say "Key refused" and when), and what an administrator sees of each shared key
(its age, its last test, "Rotate soon" past KEY_MAX_AGE_DAYS) and of each provider in the list."""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime, timedelta

from tests.support import new_key, post_form
from tests.support.factories import oldest_first


def make_provider(app, name, key_policy="provider_only", keys=0, display_name=None) -> tuple[str, list[str]]:
    from app.services import model_configs, provider_keys, providers
    from app.services.base import Actor

    with app.app_context():
        actor = Actor.system("test")
        provider = providers.create_provider(actor, type="openai", name=name, key_policy=key_policy,
                                             display_name=display_name)
        ids = [provider_keys.add_key(actor, provider.id, new_key(f"{name}-{i}")).id for i in range(keys)]
        oldest_first(ids)
        model_configs.create_config(actor, ai_provider_id=provider.id, model=f"{name}-model",
                                    display_name=f"{name.title()} Model")
        return str(provider.id), ids


def refuse(app, key_id, result="invalid_key", days_ago=0):
    """What a key test or the chat backend's report records (days_ago: when)."""
    from app.db import utcnow
    from app.extensions import db
    from app.models import AIProviderKey, UserAIProviderKey
    from app.services import key_health
    from app.services.secrets import spec_for

    with app.app_context():
        row = db.session.get(AIProviderKey, key_id) or db.session.get(UserAIProviderKey, key_id)
        key_health.record(spec_for(row), key_id, result, when=utcnow() - timedelta(days=days_ago))
        db.session.commit()


def save_own_key(app, user, provider_id) -> uuid.UUID:
    """The user's key saved as the settings page saves it; returns its row id."""
    from app.services import user_keys
    from app.services.base import Actor
    from tests.support.db import sql

    with app.app_context():
        user_keys.upsert_user_key(Actor.for_user(user), provider_id, new_key("own"))
    [(key_id,)] = sql(app, "SELECT id FROM user_ai_provider_keys WHERE user_id = :u AND ai_provider_id = :p",
                      u=user.id, p=uuid.UUID(provider_id))
    return uuid.UUID(str(key_id))


def text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", response.get_data(as_text=True)))


def row_of(page: str, label: str) -> str:
    return next(r for r in re.findall(r"<tr>(.*?)</tr>", page, re.S) if label in r)


def test_models_page_says_when_a_key_was_refused(app, member, member_client):
    _, shared_keys = make_provider(app, "shared", keys=1, display_name="Shared AI")
    own_pid, _ = make_provider(app, "own", key_policy="user_only", display_name="Own AI")
    fallback_pid, _ = make_provider(app, "fallback", key_policy="user_preferred", keys=1, display_name="Fallback AI")
    refuse(app, shared_keys[0])
    refuse(app, save_own_key(app, member, own_pid), "forbidden")
    refuse(app, save_own_key(app, member, fallback_pid))

    page = text(member_client.get("/models"))
    today = f"{datetime.now(UTC):%Y-%m-%d}"  # the refusals were recorded "now", a moment ago
    assert f"Key refused: Shared AI refused the shared key on {today}" in row_of(page, "Shared Model")
    assert f"Key refused: Own AI refused your key on {today}" in row_of(page, "Own Model")
    fallback = row_of(page, "Fallback Model")
    assert "Shared key" in fallback and f"your key was refused on {today}; the shared key is used" in fallback
    # The fallback model is ready; the other two are not.
    ready, blocked = page.split("Not available to you yet", 1)
    assert "Fallback Model" in ready and "Shared Model" in blocked and "Own Model" in blocked


def test_settings_page_shows_a_refused_key_with_its_date(app, member, member_client):
    pid, _ = make_provider(app, "fallback", key_policy="user_preferred", keys=1, display_name="Fallback AI")
    refuse(app, save_own_key(app, member, pid), days_ago=3)
    page = text(member_client.get("/settings/keys"))
    card = page.split(f'id="provider-{pid}"', 1)[1]
    three_days_ago = f"{datetime.now(UTC) - timedelta(days=3):%Y-%m-%d}"
    assert '<span class="badge badge-danger">Key refused</span>' in card
    assert f"The provider refused your key on {three_days_ago}: the shared key is used until you save a new one." in card
    assert "Refused: invalid key" in card
    # Saving a new key starts fresh.
    post_form(member_client, f"/settings/keys/{pid}", {"api_key": new_key("new-own")}, csrf_path="/settings/keys")
    card = text(member_client.get("/settings/keys")).split(f'id="provider-{pid}"', 1)[1]
    assert "Key refused" not in card.split("</section>", 1)[0] and "Key saved" in card.split("</section>", 1)[0]


def test_provider_page_shows_each_keys_age_and_last_test_and_rotate_soon(app, admin_client):
    from app.extensions import db
    from app.models import AIProviderKey

    pid, (old_id, new_id) = make_provider(app, "aged", keys=2)
    with app.app_context():
        db.session.get(AIProviderKey, old_id).created_at -= timedelta(days=40)
        db.session.commit()
    refuse(app, old_id, "forbidden")

    page = text(admin_client.get(f"/admin/providers/{pid}"))
    old_row, new_row = row_of(page, f"/keys/{old_id}/"), row_of(page, f"/keys/{new_id}/")
    assert "40 days old" in old_row and "Refused: not allowed" in old_row and "Key refused" in old_row
    assert "0 days old" in new_row and "Not tested yet" in new_row and "In use" in new_row
    assert "Rotate soon" not in page  # KEY_MAX_AGE_DAYS is off by default

    app.config["KEY_MAX_AGE_DAYS"] = 30
    page = text(admin_client.get(f"/admin/providers/{pid}"))
    assert "Rotate soon" in row_of(page, f"/keys/{old_id}/")
    assert "Rotate soon" not in row_of(page, f"/keys/{new_id}/")
    listing = text(admin_client.get("/admin/providers"))
    assert "Rotate soon" in row_of(listing, "aged")


def test_provider_list_flags_a_provider_whose_every_key_is_refused(app, admin_client):
    _, keys = make_provider(app, "refused", keys=2)
    make_provider(app, "healthy", keys=1)
    refuse(app, keys[0])
    listing = text(admin_client.get("/admin/providers"))
    assert "Keys refused" not in listing  # one key left
    refuse(app, keys[1], "forbidden")
    listing = text(admin_client.get("/admin/providers"))
    assert "Keys refused" in row_of(listing, "refused")
    assert "Keys refused" not in row_of(listing, "healthy")
