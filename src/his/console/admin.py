"""Administration (ADMIN): the hospital's accounts — list and search, one account's roles,
disabling a leaver and enabling again, unlocking, requiring a new password, removing a lost
second factor, making an account — and which roles sign in with a second factor.

Every page asks the public API (`/api/admin/…`) with the administrator's own token: identity
decides, records each change in the audit trail and signs the account out where rights are
taken away; the page shows its answer, refusals included (the last administrator, 409).
"""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from his.console.areas import ROLE_NAMES
from his.console.domain import Answer
from his.console.front_desk import items, refused
from his.console.i18n import N_
from his.console.web import SignedIn, Visit, form_lists, form_of
from his.kernel.json import Json, JsonObject

router = APIRouter(include_in_schema=False)

ADMIN = frozenset({"ADMIN"})
#: The roles an administrator gives, in the order the forms show them.
ROLES = tuple(ROLE_NAMES)
#: What a change's page says once it is done (``?done=``).
DONE = {
    "roles": N_("The roles were changed. The account's sessions were signed out."),
    "disabled": N_("The account was disabled. Its sessions were signed out everywhere."),
    "enabled": N_("The account was enabled again."),
    "unlocked": N_("The account was unlocked."),
    "password": N_("A new password is required at the account's next sign-in. Its sessions were signed out."),
    "second-factor": N_("The second factor was removed. The account sets up a new one at its next sign-in."),
    "created": N_("The account was made."),
}


def admin_only(visit: Visit) -> HTMLResponse | None:
    if visit.roles & ADMIN:
        return None
    return visit.page("problem.html", status=403, message=N_("You may not see or do this."))


def parse_id(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


@router.get("/admin", response_class=HTMLResponse)
async def administration(visit: SignedIn) -> Response:
    if (no := admin_only(visit)) is not None:
        return no
    return RedirectResponse("/admin/users", status_code=303)


@router.get("/admin/users", response_class=HTMLResponse)
async def users(visit: SignedIn, q: str = "") -> Response:
    """The accounts whose address or name holds what was typed (every account, 200 at most)."""
    if (no := admin_only(visit)) is not None:
        return no
    answer = await visit.call("GET", "/api/admin/users", params={"q": q.strip(), "limit": "200"})
    if not answer.ok:
        return refused(visit, answer)
    return visit.page("admin_users.html", q=q, accounts=items(answer))


async def account_page(
    visit: Visit, user_id: uuid.UUID, status: int = 200, *, done: str = "", error: str | None = None
) -> Response:
    answer = await visit.call("GET", f"/api/admin/users/{user_id}")
    if not answer.ok or not isinstance(answer.body, dict):
        return refused(visit, answer)
    notice = DONE.get(done)
    own = str(user_id) == str(visit.live.session.user_id)
    return visit.page(
        "admin_user.html", status=status, account=answer.body, roles_offered=ROLES, notice=notice, error=error, own=own
    )


@router.get("/admin/users/new", response_class=HTMLResponse)
async def new_user(visit: SignedIn) -> Response:
    if (no := admin_only(visit)) is not None:
        return no
    return visit.page("admin_user_new.html", roles_offered=ROLES, chosen=[], errors={}, error=None, form={})


@router.post("/admin/users/new", response_class=HTMLResponse)
async def create_user(visit: SignedIn) -> Response:
    """Make an account with the roles chosen and a first password, which its first sign-in must
    change unless the administrator says otherwise."""
    if (no := admin_only(visit)) is not None:
        return no
    lists = await form_lists(visit.request)
    form = {k: v[0] for k, v in lists.items()}
    chosen = [r for r in lists.get("roles", []) if r in ROLES]
    name, email, password = (
        " ".join(form.get("full_name", "").split()),
        form.get("email", "").strip(),
        form.get("password", ""),
    )
    errors: dict[str, str] = {}
    if not name:
        errors["full_name"] = N_("Enter the full name.")
    if not email:
        errors["email"] = N_("Enter the e-mail address.")
    if not password:
        errors["password"] = N_("Choose a first password.")
    if not chosen:
        errors["roles"] = N_("Choose at least one role.")
    shown = {"full_name": name, "email": email}

    def again(status: int, error: str | None = None) -> HTMLResponse:
        return visit.page(
            "admin_user_new.html",
            status=status,
            roles_offered=ROLES,
            chosen=chosen,
            errors=errors,
            error=error,
            form=shown,
        )

    if errors:
        return again(422)
    body: JsonObject = {"email": email, "password": password, "full_name": name, "roles": list[Json](chosen)}
    answer = await visit.call("POST", "/api/admin/users", body=body)
    if answer.status == 409:
        errors["email"] = N_("An account has this address already.")
        return again(409)
    if answer.status == 422:
        detail = answer.problem().detail or ""
        if detail.startswith("email"):
            errors["email"] = N_("Enter a valid e-mail address.")
        else:
            errors["password"] = detail or N_("This password cannot be used. Choose another.")
        return again(422)
    if not answer.ok or not isinstance(answer.body, dict):
        return refused(visit, answer)
    user_id = str(answer.body.get("user_id"))
    if form.get("change_required", "") == "on":
        changed = await visit.call("PATCH", f"/api/admin/users/{user_id}", body={"password_change_required": True})
        if not changed.ok:
            return refused(visit, changed)
    return RedirectResponse(f"/admin/users/{user_id}?done=created", status_code=303)


@router.get("/admin/users/{user_id}", response_class=HTMLResponse)
async def user(visit: SignedIn, user_id: str, done: str = "") -> Response:
    """One account: what it is, and the changes an administrator makes to it."""
    if (no := admin_only(visit)) is not None:
        return no
    if (uid := parse_id(user_id)) is None:
        return visit.page("problem.html", status=404, message=N_("There is no such account."))
    return await account_page(visit, uid, done=done)


Method = Literal["PATCH", "POST"]


async def change(
    visit: Visit, user_id: str, method: Method, path: str, body: JsonObject | None, *, done: str
) -> Response:
    """Ask identity for one change to the account; back to its page, saying what was done or
    why it was refused."""
    if (no := admin_only(visit)) is not None:
        return no
    if (uid := parse_id(user_id)) is None:
        return visit.page("problem.html", status=404, message=N_("There is no such account."))
    answer: Answer = await visit.call(method, path.format(id=uid), body=body)
    if answer.ok:
        return RedirectResponse(f"/admin/users/{uid}?done={done}", status_code=303)
    if answer.status == 409:
        error = N_("The hospital must keep an active administrator: give the role to another account first.")
        return await account_page(visit, uid, 409, error=error)
    if answer.status == 422:
        return await account_page(visit, uid, 422, error=N_("Choose at least one role."))
    return refused(visit, answer)


@router.post("/admin/users/{user_id}/roles", response_class=HTMLResponse)
async def change_roles(visit: SignedIn, user_id: str) -> Response:
    chosen: list[Json] = [r for r in (await form_lists(visit.request)).get("roles", []) if r in ROLES]
    return await change(visit, user_id, "PATCH", "/api/admin/users/{id}", {"roles": chosen}, done="roles")


@router.post("/admin/users/{user_id}/active", response_class=HTMLResponse)
async def change_active(visit: SignedIn, user_id: str) -> Response:
    active = (await form_of(visit.request)).get("active") == "true"
    body: JsonObject = {"active": active}
    return await change(
        visit, user_id, "PATCH", "/api/admin/users/{id}", body, done="enabled" if active else "disabled"
    )


@router.post("/admin/users/{user_id}/unlock", response_class=HTMLResponse)
async def unlock(visit: SignedIn, user_id: str) -> Response:
    return await change(visit, user_id, "POST", "/api/admin/users/{id}/unlock", None, done="unlocked")


@router.post("/admin/users/{user_id}/password", response_class=HTMLResponse)
async def require_password(visit: SignedIn, user_id: str) -> Response:
    body: JsonObject = {"password_change_required": True}
    return await change(visit, user_id, "PATCH", "/api/admin/users/{id}", body, done="password")


@router.post("/admin/users/{user_id}/second-factor", response_class=HTMLResponse)
async def remove_second_factor(visit: SignedIn, user_id: str) -> Response:
    body: JsonObject = {"mfa": False}
    return await change(visit, user_id, "PATCH", "/api/admin/users/{id}", body, done="second-factor")


@router.get("/admin/second-factor", response_class=HTMLResponse)
async def second_factor_policy(visit: SignedIn, saved: bool = False) -> Response:
    """Which roles sign in with a second factor."""
    if (no := admin_only(visit)) is not None:
        return no
    answer = await visit.call("GET", "/api/admin/mfa-policy")
    if not answer.ok or not isinstance(answer.body, dict):
        return refused(visit, answer)
    required = answer.body.get("roles")
    chosen = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []
    notice = (
        N_("Saved. Accounts of these roles without a second factor set one up at their next sign-in.")
        if saved
        else None
    )
    return visit.page("admin_second_factor.html", roles_offered=ROLES, chosen=chosen, notice=notice)


@router.post("/admin/second-factor", response_class=HTMLResponse)
async def set_second_factor_policy(visit: SignedIn) -> Response:
    if (no := admin_only(visit)) is not None:
        return no
    chosen: list[Json] = [r for r in (await form_lists(visit.request)).get("roles", []) if r in ROLES]
    answer = await visit.call("PUT", "/api/admin/mfa-policy", body={"roles": chosen})
    if not answer.ok:
        return refused(visit, answer)
    return RedirectResponse("/admin/second-factor?saved=1", status_code=303)


REVIEWERS = frozenset({"ADMIN", "AUDITOR"})
#: The review states a queue is shown in.
STATES = {"pending": N_("Waiting for review"), "escalated": N_("Escalated"), "reviewed": N_("Reviewed")}
REVIEWED = {
    "reviewed": N_("Marked reviewed: the access was justified."),
    "escalated": N_("Escalated: it is to be looked into."),
}


@router.get("/admin/emergency-access", response_class=HTMLResponse)
async def emergency_access(visit: SignedIn, state: str = "pending", done: str = "") -> Response:
    """The break-the-glass review queue (ADMIN reviews, AUDITOR reads): each emergency access with
    its clinician, patient, reason, how long it lasted and what was read under it."""
    if not visit.roles & REVIEWERS:
        return visit.page("problem.html", status=403, message=N_("You may not see or do this."))
    return await queue(visit, state, notice=REVIEWED.get(done))


async def queue(
    visit: Visit, state: str, status: int = 200, *, notice: str | None = None, error: str | None = None
) -> Response:
    state = state if state in STATES else "pending"
    answer = await visit.call("GET", "/api/patients/emergency-access", params={"state": state, "limit": "200"})
    if not answer.ok:
        return refused(visit, answer)
    grants = items(answer)
    people = {p["id"]: p for p in items(await staff(visit, {str(g.get("user_id")) for g in grants}))}
    return visit.page(
        "admin_emergency_access.html",
        status=status,
        grants=grants,
        people=people,
        state=state,
        states=STATES,
        notice=notice,
        error=error,
        may_review="ADMIN" in visit.roles,
    )


async def staff(visit: Visit, ids: set[str]) -> Answer:
    """The clinicians' names (the staff directory), when there are any to name."""
    if not ids:
        return Answer(200, {"items": []})
    return await visit.call("GET", "/api/staff", params=[("id", i) for i in sorted(ids)])


@router.post("/admin/emergency-access/{grant_id}/review", response_class=HTMLResponse)
async def review(visit: SignedIn, grant_id: str) -> Response:
    """An administrator's decision on one emergency access: reviewed, or escalated with a note."""
    if (no := admin_only(visit)) is not None:
        return no
    if (gid := parse_id(grant_id)) is None:
        return visit.page("problem.html", status=404, message=N_("There is no such record."))
    form = await form_of(visit.request)
    decision, note = form.get("decision", ""), form.get("note", "").strip()
    state = form.get("state", "pending")
    if decision not in REVIEWED:
        return await queue(visit, state, 422, error=N_("Choose reviewed or escalated."))
    if decision == "escalated" and not note:
        return await queue(visit, state, 422, error=N_("Say in the note why it is escalated."))
    body: JsonObject = {"decision": decision, "note": note or None}
    answer = await visit.call("POST", f"/api/patients/emergency-access/{gid}/review", body=body)
    if answer.ok:
        return RedirectResponse(f"/admin/emergency-access?state={state}&done={decision}", status_code=303)
    match answer.status:
        case 403:
            error = N_("Nobody reviews their own emergency access: another administrator does.")
        case 409:
            error = N_("This emergency access was reviewed already.")
        case 422:
            error = N_("The note was not accepted: at most 2000 characters.")
        case _:
            return refused(visit, answer)
    return await queue(visit, state, answer.status, error=error)


# --- wards and their beds ---------------------------------------------------------------------

WARD_DONE = {
    "created": N_("The ward was made, its beds all available."),
    "corrected": N_("The ward was corrected. Nights posted from now on carry its rate."),
}
#: The ward's fields a form sends, and the API's names for them.
WARD_FIELDS = ("name", "type", "daily_rate", "currency")


def ward_form(form: dict[str, str], *, new: bool) -> tuple[JsonObject, dict[str, str]]:
    """The API's request from a ward's form, and the fields the form itself finds wrong."""
    body: JsonObject = {}
    errors: dict[str, str] = {}
    name = " ".join(form.get("name", "").split())
    if name:
        body["name"] = name
    elif new:
        errors["name"] = N_("Enter the ward's name.")
    kind = form.get("type", "").strip().lower()
    if kind:
        body["type"] = kind
    elif new:
        errors["type"] = N_("Enter the ward's type, such as general or icu.")
    rate = form.get("daily_rate", "").strip().replace(",", ".")
    if rate:
        body["daily_rate"] = rate
    elif new:
        errors["daily_rate"] = N_("Enter the price of a night.")
    currency = form.get("currency", "").strip().upper()
    if currency:
        body["currency"] = currency
    if new:
        for field, low in (("beds", 1), ("rooms", 1)):
            text = form.get(field, "").strip()
            if not text and field == "rooms":
                continue
            if not text.isdigit() or int(text) < low:
                errors[field] = N_("Enter a whole number, 1 or more.")
            else:
                body[field] = int(text)
    return body, errors


def api_errors(answer: Answer) -> dict[str, str]:
    """The fields a 422 of the API names, with its words (a currency billing does not invoice in
    is named by its detail)."""
    problem = answer.problem()
    found = {f: problem.fields[f] for f in (*WARD_FIELDS, "beds", "rooms") if f in problem.fields}
    if not found:
        found["currency" if "currenc" in problem.detail else "daily_rate"] = problem.detail or N_(
            "This was not accepted."
        )
    return found


@router.get("/admin/wards", response_class=HTMLResponse)
async def wards(visit: SignedIn) -> Response:
    """The wards: type, the price of a night, and their beds by state."""
    if (no := admin_only(visit)) is not None:
        return no
    answer = await visit.call("GET", "/api/wards")
    if not answer.ok:
        return refused(visit, answer)
    return visit.page("admin_wards.html", wards=items(answer))


@router.get("/admin/wards/new", response_class=HTMLResponse)
async def new_ward(visit: SignedIn) -> Response:
    if (no := admin_only(visit)) is not None:
        return no
    return visit.page("admin_ward_new.html", form={"currency": "TRY", "rooms": "1"}, errors={})


@router.post("/admin/wards/new", response_class=HTMLResponse)
async def create_ward(visit: SignedIn) -> Response:
    """Make a ward with its beds over its rooms, all available."""
    if (no := admin_only(visit)) is not None:
        return no
    form = await form_of(visit.request)
    body, errors = ward_form(form, new=True)
    if not errors:
        answer = await visit.call("POST", "/api/wards", body=body)
        if answer.ok and isinstance(answer.body, dict):
            return RedirectResponse(f"/admin/wards/{answer.body.get('id')}?done=created", status_code=303)
        if answer.status != 422:
            return refused(visit, answer)
        errors = api_errors(answer)
    return visit.page("admin_ward_new.html", status=422, form=form, errors=errors)


async def ward_page(visit: Visit, ward_id: uuid.UUID, status: int = 200, **values: object) -> Response:
    answer = await visit.call("GET", f"/api/wards/{ward_id}")
    if not answer.ok or not isinstance(answer.body, dict):
        return refused(visit, answer)
    shown: dict[str, object] = {"notice": None, "errors": {}, "form": answer.body}
    return visit.page("admin_ward.html", status=status, ward=answer.body, **(shown | values))


@router.get("/admin/wards/{ward_id}", response_class=HTMLResponse)
async def ward(visit: SignedIn, ward_id: str, done: str = "") -> Response:
    """One ward: its rooms and beds by state, and its details to correct."""
    if (no := admin_only(visit)) is not None:
        return no
    if (wid := parse_id(ward_id)) is None:
        return visit.page("problem.html", status=404, message=N_("There is no such ward."))
    return await ward_page(visit, wid, notice=WARD_DONE.get(done))


@router.post("/admin/wards/{ward_id}", response_class=HTMLResponse)
async def correct_ward(visit: SignedIn, ward_id: str) -> Response:
    """Correct a ward's name, type, price of a night or currency."""
    if (no := admin_only(visit)) is not None:
        return no
    if (wid := parse_id(ward_id)) is None:
        return visit.page("problem.html", status=404, message=N_("There is no such ward."))
    form = await form_of(visit.request)
    body, errors = ward_form(form, new=False)
    if not errors:
        answer = await visit.call("PATCH", f"/api/wards/{wid}", body=body)
        if answer.ok:
            return RedirectResponse(f"/admin/wards/{wid}?done=corrected", status_code=303)
        if answer.status != 422:
            return refused(visit, answer)
        errors = api_errors(answer)
    return await ward_page(visit, wid, 422, errors=errors, form=form)
