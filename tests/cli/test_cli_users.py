"""`flask users ...` and `flask tokens ...`, through the Flask CLI runner."""

from __future__ import annotations

from tests.support import PASSWORD, Api, login, make_token, make_user


def invoke(runner, *args, **kw):
    return runner.invoke(args=list(args), **kw)


def test_users_create_with_password(app, runner, client):
    result = invoke(runner, "users", "create", "Cli@Example.com", "--name", "Cli User", "--password", PASSWORD)
    assert result.exit_code == 0, result.output
    assert "Created member cli@example.com" in result.output
    assert PASSWORD not in result.output

    assert login(client, "cli@example.com").status_code == 302
    me = client.get("/api/experimental/chats/me").get_json()
    assert me["name"] == "Cli User"
    assert me["role"] == "member"


def test_users_create_admin(app, runner, client):
    result = invoke(runner, "users", "create", "boss@example.com", "--admin", "--password", PASSWORD)
    assert result.exit_code == 0, result.output
    login(client, "boss@example.com")
    assert client.get("/admin/users").status_code == 200


def test_users_create_prompts_for_the_password(app, runner, client):
    result = invoke(runner, "users", "create", "prompted@example.com", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "Password" in result.output
    assert PASSWORD not in result.output  # hidden input is not echoed
    assert login(client, "prompted@example.com").status_code == 302


def test_users_create_refuses_bad_input(app, runner, member):
    weak = invoke(runner, "users", "create", "weak@example.com", "--password", "short")
    assert weak.exit_code != 0
    assert "at least 12 characters" in weak.output
    duplicate = invoke(runner, "users", "create", "MEMBER@example.com", "--password", PASSWORD)
    assert duplicate.exit_code != 0
    assert "User already exists." in duplicate.output
    bad_email = invoke(runner, "users", "create", "not-an-email", "--password", PASSWORD)
    assert bad_email.exit_code != 0
    assert "valid email" in bad_email.output


def test_users_deactivate(app, runner, member):
    browser = app.test_client()
    login(browser, member.email)
    token = invoke(runner, "tokens", "create", member.email).stdout.strip().splitlines()[-1]
    assert Api(app.test_client(), token).get("/me").status_code == 200

    result = invoke(runner, "users", "deactivate", "Member@Example.com")
    assert result.exit_code == 0, result.output
    assert "Deactivated member@example.com" in result.output

    assert browser.get("/settings/tokens").headers["Location"].startswith("/login")
    assert Api(app.test_client(), token).get("/me").status_code == 401
    assert login(app.test_client(), member.email).status_code == 401

    unknown = invoke(runner, "users", "deactivate", "nobody@example.com")
    assert unknown.exit_code != 0
    assert "User not found." in unknown.output


def test_users_deactivate_keeps_the_last_admin(app, runner, admin):
    result = invoke(runner, "users", "deactivate", admin.email)
    assert result.exit_code != 0
    assert "last active administrator" in result.output
    assert login(app.test_client(), admin.email).status_code == 302


def test_tokens_create_prints_the_token_last_on_stdout(app, runner, member):
    result = invoke(runner, "tokens", "create", member.email, "--name", "ci runner")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    token = lines[-1]
    assert token.startswith("sb_")
    assert " " not in token
    assert "shown once" in result.stderr  # the explanation goes to stderr, stdout is just the token
    response = Api(app.test_client(), token).get("/me")
    assert response.status_code == 200
    assert response.get_json()["email"] == member.email

    browser = app.test_client()
    login(browser, member.email)
    page = browser.get("/settings/tokens").get_data(as_text=True)
    assert "ci runner" in page
    assert token not in page  # shown once, never again


def test_service_token_from_cli_may_not_act_as_a_user(app, runner, admin):
    result = invoke(runner, "tokens", "create", admin.email, "--service", "--name", "chat backend")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    response = Api(app.test_client(), token).get("/me")
    assert response.status_code == 403
    assert response.get_json() == {"message": "Forbidden."}


def test_tokens_create_refuses_unknown_and_deactivated_users(app, runner, admin):
    unknown = invoke(runner, "tokens", "create", "nobody@example.com")
    assert unknown.exit_code != 0
    assert "User not found." in unknown.output

    user = make_user(app, "gone@example.com")
    assert invoke(runner, "users", "deactivate", user.email).exit_code == 0
    gone = invoke(runner, "tokens", "create", user.email)
    assert gone.exit_code != 0
    assert "User is deactivated." in gone.output
    assert "sb_" not in gone.stdout


def test_users_set_role(app, runner, admin, member):
    browser = app.test_client()
    login(browser, member.email)
    assert browser.get("/admin/groups").status_code == 403

    result = invoke(runner, "users", "set-role", "Member@Example.com", "admin")
    assert result.exit_code == 0, result.output
    assert "member@example.com is now an administrator." in result.output
    assert browser.get("/admin/groups").headers["Location"].startswith("/login")  # their sessions ended
    login(browser, member.email)
    assert browser.get("/admin/groups").status_code == 200

    back = invoke(runner, "users", "set-role", member.email, "member")
    assert back.exit_code == 0, back.output
    assert "member@example.com is now a member." in back.output


def test_users_set_role_refuses_the_last_admin_an_unknown_email_and_a_bad_role(app, runner, admin):
    last = invoke(runner, "users", "set-role", admin.email, "member")
    assert last.exit_code == 1
    assert "The last administrator cannot lose that role." in last.output
    assert login(app.test_client(), admin.email).status_code == 302
    me = Api(app.test_client(), make_token(app, admin)).get("/me").get_json()
    assert me["role"] == "admin"

    unknown = invoke(runner, "users", "set-role", "nobody@example.com", "admin")
    assert unknown.exit_code == 1
    assert "User not found." in unknown.output

    bad = invoke(runner, "users", "set-role", admin.email, "owner")
    assert bad.exit_code != 0
    assert "'owner' is not one of 'admin', 'member'" in bad.output
