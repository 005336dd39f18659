"""Account security in the console, over the in-memory API answering as identity does
(``his.testing.console.Identity``): signing in with a second factor's code, choosing a new
password identity requires, enrolling an authenticator app that a role requires (its QR code
inline, its secret spelled out, its recovery codes shown once); the account page (password,
second factor); a forgotten password's link, whose page sends its address to no other site. The password typed
at one step is never written into a page.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from his.console.domain import Answer
from his.console.web import CSP
from his.testing.console import Call, Identity, Reply
from tests.support.console import PASSWORD, PUBLIC, SAME_ORIGIN, Desk, console_desk, tokens

EMAIL = "desk@hospital.example"
NEW = "violet harbour under the lantern"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
URI = f"otpauth://totp/his:desk%40hospital.example?secret={SECRET}&issuer=his"


@pytest.fixture
async def desk() -> AsyncIterator[Desk]:
    async with console_desk() as found:
        yield found


def replies(*answers: Answer) -> Reply:
    """A reply giving ``answers`` in turn, the last one from then on."""
    left = list(answers)

    def reply(_: Call) -> Answer:
        return left.pop(0) if len(left) > 1 else left[0]

    return reply


def hidden_values(page: str) -> list[str]:
    return re.findall(r'<input type="hidden" name="[\w]+" value="([^"]*)"', page)


async def sign_in(desk: Desk, **fields: str) -> httpx.Response:
    data = {"email": EMAIL, "password": PASSWORD, "next": "/"} | fields
    return await desk.client.post("/sign-in", data=data, headers=SAME_ORIGIN)


async def test_a_second_factor_is_asked_with_the_address_kept_and_a_wrong_code_said(desk: Desk) -> None:
    desk.api.answer("POST", "/api/auth/login", Identity.MFA_REQUIRED)
    r = await sign_in(desk)
    assert r.status_code == 401 and "set-cookie" not in r.headers
    assert "Your account has a second factor" in r.text and f'value="{EMAIL}"' in r.text
    code = re.search(r"<input[^>]*id=\"code\"[^>]*>", r.text)
    assert code is not None
    assert 'autocomplete="one-time-code"' in code.group(0) and 'type="text"' in code.group(0)
    assert "inputmode" not in code.group(0)  # a recovery code has letters
    assert "Code from your authenticator app, or a recovery code" in r.text
    assert PASSWORD not in r.text

    desk.api.answer("POST", "/api/auth/login", Identity.INVALID_CODE)
    r = await sign_in(desk, code="123 456")
    assert r.status_code == 401 and "The code is not right" in r.text and 'id="code"' in r.text
    assert desk.api.calls[-1].body == {"email": EMAIL, "password": PASSWORD, "code": "123456"}

    desk.api.answer("POST", "/api/auth/login", Answer(200, tokens(["DOCTOR"])))
    r = await sign_in(desk, code="k7qm-3xd2-p9wa")
    assert r.status_code == 303 and r.headers["location"] == "/day-list" and "his_session=" in r.headers["set-cookie"]
    assert desk.api.calls[-1].body == {"email": EMAIL, "password": PASSWORD, "code": "k7qm-3xd2-p9wa"}


async def test_a_required_new_password_is_chosen_at_sign_in(desk: Desk) -> None:
    desk.api.answer("POST", "/api/auth/login", Identity.PASSWORD_CHANGE_REQUIRED)
    r = await sign_in(desk)
    assert r.status_code == 200 and "Choose a new password" in r.text and 'action="/sign-in/password"' in r.text
    assert f'value="{EMAIL}"' in r.text and PASSWORD not in r.text and 'id="code"' not in r.text
    form = {"email": EMAIL, "current_password": PASSWORD, "new_password": NEW, "next": "/"}

    calls = len(desk.api.calls)
    r = await desk.client.post("/sign-in/password", data=form | {"new_password_again": NEW + "x"}, headers=SAME_ORIGIN)
    assert r.status_code == 422 and "The two new passwords are not the same." in r.text
    assert len(desk.api.calls) == calls  # refused here, never asked of the API
    assert PASSWORD not in r.text and NEW not in r.text

    desk.api.answer("POST", "/api/auth/login/password", Identity.WEAK)
    r = await desk.client.post("/sign-in/password", data=form | {"new_password_again": NEW}, headers=SAME_ORIGIN)
    assert r.status_code == 422
    assert re.search(r'id="new_password-error">password must not contain the e-mail address<', r.text)

    desk.api.answer("POST", "/api/auth/login/password", Identity.MFA_REQUIRED)
    r = await desk.client.post("/sign-in/password", data=form | {"new_password_again": NEW}, headers=SAME_ORIGIN)
    assert r.status_code == 401 and 'id="code"' in r.text and "Your account has a second factor" in r.text

    desk.api.answer("POST", "/api/auth/login/password", Answer(200, tokens(["RECEPTIONIST"])))
    data = form | {"new_password_again": NEW, "code": "123456"}
    r = await desk.client.post("/sign-in/password", data=data, headers=SAME_ORIGIN)
    assert r.status_code == 303 and r.headers["location"] == "/front-desk" and len(desk.fake.state.sessions) == 1
    assert desk.api.calls[-1] == Call(
        "POST",
        "/api/auth/login/password",
        "203.0.113.7",
        None,
        {"email": EMAIL, "current_password": PASSWORD, "new_password": NEW, "code": "123456"},
        None,
    )


async def test_a_role_that_needs_a_second_factor_enrols_at_sign_in_and_sees_its_recovery_codes_once(
    desk: Desk,
) -> None:
    desk.api.answer("POST", "/api/auth/login", Identity.ENROLMENT_REQUIRED)
    desk.api.answer("POST", "/api/auth/login/totp", Identity.enrolment(EMAIL, SECRET))
    r = await sign_in(desk)
    assert r.status_code == 200 and "Set up an authenticator app" in r.text
    assert desk.api.calls[-1].path == "/api/auth/login/totp"
    assert desk.api.calls[-1].body == {"email": EMAIL, "password": PASSWORD}
    # The QR code is inline SVG in the page (no image source the CSP would refuse), named once.
    assert re.search(r'<div class="his-qr-frame" role="img" aria-label="QR code[^"]*"><svg aria-hidden="true"', r.text)
    assert "<path" in r.text and "data:" not in r.text and "img-src 'self'" in CSP
    assert "JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP" in r.text  # for typing by hand
    assert PASSWORD not in r.text and all(PASSWORD not in v for v in hidden_values(r.text))
    assert Identity.enrolment(EMAIL, SECRET).body == {"secret": SECRET, "uri": URI}
    uri = URI

    desk.api.answer("POST", "/api/auth/login", replies(Identity.INVALID_CODE))
    r = await sign_in(desk, code="000000", uri=uri)
    assert r.status_code == 401 and "The code is not right" in r.text and "JBSW Y3DP" in r.text  # the same key
    assert [c.path for c in desk.api.calls].count("/api/auth/login/totp") == 1  # not begun again

    confirmed = tokens(["LAB_TECH"]) | {"recovery_codes": list(Identity.RECOVERY_CODES)}
    desk.api.answer("POST", "/api/auth/login", Answer(200, confirmed))
    r = await sign_in(desk, code="123456", uri=uri)
    assert r.status_code == 200 and "his_session=" in r.headers["set-cookie"]
    assert all(c in r.text for c in Identity.RECOVERY_CODES) and "shown this once" in r.text
    assert 'href="/"' in r.text and "I have stored them: continue" in r.text
    assert desk.api.calls[-1].body == {"email": EMAIL, "password": PASSWORD, "code": "123456"}
    assert r.headers["cache-control"] == "no-store"
    home = await desk.client.get("/")
    assert home.status_code == 200 and not any(c in home.text for c in Identity.RECOVERY_CODES)


async def test_an_enrolment_page_carrying_anything_but_an_otpauth_uri_begins_again(desk: Desk) -> None:
    desk.api.answer("POST", "/api/auth/login", Identity.ENROLMENT_REQUIRED)
    desk.api.answer("POST", "/api/auth/login/totp", Identity.enrolment(EMAIL, SECRET))
    r = await sign_in(desk, code="123456", uri="javascript:alert(1)")
    # Not an enrolment being confirmed: the code went to the API, which asked to enrol first.
    assert r.status_code == 200 and "JBSW Y3DP" in r.text and "javascript" not in r.text


async def test_the_account_page_changes_the_password(desk: Desk) -> None:
    await desk.sign_in()
    page = await desk.client.get("/account")
    assert page.status_code == 200 and 'href="/account"' in page.text and "Change your password" in page.text
    assert 'href="/account" aria-current="page"' in page.text
    form = {"current_password": PASSWORD, "new_password": NEW}
    r = await desk.post("/account/password", form | {"new_password_again": "other"})
    assert r.status_code == 422 and "The two new passwords are not the same." in r.text
    assert all(c.path != "/api/auth/password" for c in desk.api.calls)

    for answer, status, message in (
        (problem_403 := Answer(403, {"detail": "invalid password"}), 403, "The current password is not right."),
        (Identity.WEAK, 422, "password must not contain the e-mail address"),
        (Answer(429, {"detail": "too many"}), 429, "Too many wrong passwords"),
    ):
        desk.api.answer("POST", "/api/auth/password", answer)
        r = await desk.post("/account/password", form | {"new_password_again": NEW})
        assert r.status_code == status and message in r.text, (problem_403, r.text)
        assert PASSWORD not in r.text and NEW not in r.text

    desk.api.answer("POST", "/api/auth/password", Answer(204))
    r = await desk.post("/account/password", form | {"new_password_again": NEW})
    assert r.status_code == 303 and r.headers["location"] == "/account?changed=1"
    assert desk.api.calls[-1].body == {"current_password": PASSWORD, "new_password": NEW}
    assert desk.api.calls[-1].token is not None  # as the user
    assert "Your other sessions were signed out" in (await desk.client.get("/account?changed=1")).text
    # Without the session's CSRF token: refused, nothing asked of the API.
    calls = len(desk.api.calls)
    refused = await desk.client.post("/account/password", data=form, headers=SAME_ORIGIN)
    assert refused.status_code == 403 and len(desk.api.calls) == calls


async def test_the_account_page_sets_up_a_second_factor(desk: Desk) -> None:
    await desk.sign_in()
    desk.api.answer("POST", "/api/auth/mfa/totp", Identity.enrolment(EMAIL, SECRET))
    r = await desk.post("/account/second-factor", {})
    assert r.status_code == 200 and "<svg" in r.text and "JBSW Y3DP" in r.text
    assert 'action="/account/second-factor/confirm"' in r.text and 'name="password"' not in r.text
    code = re.search(r"<input[^>]*id=\"code\"[^>]*>", r.text)
    assert code is not None and 'inputmode="numeric"' in code.group(0)  # the app's six digits here
    uri = URI

    desk.api.answer("POST", "/api/auth/mfa/totp/verify", Identity.WRONG_CODE)
    r = await desk.post("/account/second-factor/confirm", {"code": "000000", "uri": uri})
    assert r.status_code == 403 and "The code is not right" in r.text and "JBSW Y3DP" in r.text

    desk.api.answer("POST", "/api/auth/mfa/totp/verify", Answer(200, {"recovery_codes": list(Identity.RECOVERY_CODES)}))
    r = await desk.post("/account/second-factor/confirm", {"code": "123456", "uri": uri})
    assert r.status_code == 200 and all(c in r.text for c in Identity.RECOVERY_CODES)
    assert 'href="/account"' in r.text and desk.api.calls[-1].body == {"code": "123456"}

    desk.api.answer("POST", "/api/auth/mfa/totp", Identity.ALREADY_ENROLLED)
    r = await desk.post("/account/second-factor", {})
    assert r.status_code == 409 and "has a second factor already" in r.text and "administrator can reset" in r.text
    desk.api.answer("POST", "/api/auth/mfa/totp/verify", Identity.NOT_ENROLLING)
    r = await desk.post("/account/second-factor/confirm", {"code": "123456", "uri": uri})
    assert r.status_code == 409 and "Start again" in r.text


async def test_a_forgotten_password_asks_for_a_link_and_answers_alike(desk: Desk) -> None:
    page = await desk.client.get("/sign-in")
    assert 'href="/password-reset"' in page.text and "Forgot your password?" in page.text
    asked = await desk.client.get("/password-reset")
    assert asked.status_code == 200 and 'action="/password-reset"' in asked.text
    desk.api.answer("POST", "/api/auth/password-reset", Answer(202))
    r = await desk.client.post("/password-reset", data={"email": EMAIL}, headers=SAME_ORIGIN)
    assert r.status_code == 200 and "If an account has this address, a link" in r.text
    assert desk.api.calls[-1] == Call("POST", "/api/auth/password-reset", "203.0.113.7", None, {"email": EMAIL}, None)
    desk.api.answer("POST", "/api/auth/password-reset", Answer(429, {"detail": "too many"}))
    r = await desk.client.post("/password-reset", data={"email": EMAIL}, headers=SAME_ORIGIN)
    assert r.status_code == 429 and "Too many links were asked for from here" in r.text
    # From another site: refused like every form, without a session too.
    r = await desk.client.post("/password-reset", data={"email": EMAIL}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and desk.api.calls[-1].body == {"email": EMAIL} and len(desk.api.calls) == 2


async def test_the_links_page_sets_the_new_password_and_leaks_its_token_nowhere(desk: Desk) -> None:
    token = "tok_" + "a" * 40
    page = await desk.client.get(f"/password-reset?token={token}")
    assert page.status_code == 200 and page.headers["referrer-policy"] == "same-origin"  # no other site sees it
    assert page.headers["cache-control"] == "no-store"
    # The token is in the form's body only (the language's form names the path without it; the
    # browser's Referer gives it back: test_choosing_a_language_on_a_links_page_keeps_its_token).
    assert hidden_values(page.text) == ["/password-reset", token] and page.text.count(token) == 1
    assert 'action="/password-reset/new"' in page.text

    form = {"token": token, "new_password": NEW}
    calls = len(desk.api.calls)
    r = await desk.client.post("/password-reset/new", data=form | {"new_password_again": "x"}, headers=SAME_ORIGIN)
    assert r.status_code == 422 and "not the same" in r.text and len(desk.api.calls) == calls
    assert r.headers["referrer-policy"] == "same-origin" and r.text.count(token) == 1

    desk.api.answer("POST", "/api/auth/password-reset/confirm", Identity.WEAK)
    r = await desk.client.post("/password-reset/new", data=form | {"new_password_again": NEW}, headers=SAME_ORIGIN)
    assert r.status_code == 422 and "must not contain the e-mail address" in r.text and NEW not in r.text

    desk.api.answer("POST", "/api/auth/password-reset/confirm", Identity.DEAD_LINK)
    r = await desk.client.post("/password-reset/new", data=form | {"new_password_again": NEW}, headers=SAME_ORIGIN)
    assert r.status_code == 400 and "This link no longer works" in r.text and 'href="/password-reset"' in r.text

    desk.api.answer("POST", "/api/auth/password-reset/confirm", Answer(204))
    r = await desk.client.post("/password-reset/new", data=form | {"new_password_again": NEW}, headers=SAME_ORIGIN)
    assert r.status_code == 303 and r.headers["location"] == "/sign-in?reset=1"
    assert desk.api.calls[-1].body == {"token": token, "new_password": NEW} and desk.api.calls[-1].token is None
    assert "Your password was changed. Sign in with the new one." in (await desk.client.get(r.headers["location"])).text


@pytest.mark.parametrize("page", ["/password-reset", "/verify-email"])
async def test_choosing_a_language_on_a_links_page_keeps_its_token(desk: Desk, page: str) -> None:
    """The language's form names the page's path only; the browser's ``Referer`` (sent to the
    console's own origin alone) gives the query back, and nothing else's does."""
    token = "tok_" + "c" * 40
    form = {"locale": "tr", "next": page}
    at = {"referer": f"{PUBLIC}{page}?token={token}"}
    r = await desk.client.post("/language", data=form, headers=SAME_ORIGIN | at)
    assert r.status_code == 303 and r.headers["location"] == f"{page}?token={token}"
    elsewhere = {"referer": f"http://evil.example{page}?token=planted"}
    r = await desk.client.post("/language", data=form, headers=SAME_ORIGIN | elsewhere)
    assert r.headers["location"] == page
    other_page = {"referer": f"{PUBLIC}/sign-in?next=/x"}
    r = await desk.client.post("/language", data=form, headers=SAME_ORIGIN | other_page)
    assert r.headers["location"] == page


@pytest.mark.parametrize("path", ["/password-reset", "/password-reset/new", "/register", "/verify-email", "/sign-in"])
@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "null", "sec-fetch-site": "same-origin"},
        {"origin": "null"},
        {"origin": "null", "sec-fetch-site": "cross-site"},
    ],
    ids=["same-origin", "alone", "cross-site"],
)
async def test_a_form_that_names_its_origin_null_is_refused_everywhere(
    desk: Desk, path: str, headers: dict[str, str]
) -> None:
    """Every page keeps ``Referrer-Policy: same-origin``, those whose URL holds a link's token
    too, so a browser names the console's origin with their forms: an opaque ``null`` origin is
    nobody's word for where a form came from, on any page."""
    r = await desk.client.post(path, data={"email": EMAIL, "password": PASSWORD, "token": "t"}, headers=headers)
    assert r.status_code == 403
    assert desk.api.calls == []
