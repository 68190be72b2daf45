"""Staff sign-in: a username and password for a short-lived access token (JWT) and a
refresh token; refresh (rotating the refresh token); sign out; who the caller is
(``/me``, any valid token or key).

Sign-in, refresh and sign-out are the only routes besides ``/healthz`` and ``/metrics``
without a caller. Failed sign-ins are counted in the database per username and per
client address; past the limit the answer is 429 with Retry-After, whether or not the
password is right. Passwords and tokens are never logged.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from api.deps import CallerDep, ConnDep, SettingsDep, jwt_secret_of, unauthorized
from api.errors import AUTH_RESPONSES
from api.schemas import LoginIn, MeOut, RefreshIn, TokenOut
from ganzhi import accounts, apikeys
from ganzhi.observability import get_logger

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
log = get_logger("api.auth")

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Wrong credentials, or a token unknown, expired or revoked"},
    429: {"description": "Too many failed sign-ins: see Retry-After"},
}


def _client_ip(request: Request) -> str:
    """The peer address (behind a proxy: uvicorn's --forwarded-allow-ips sets it)."""
    return request.client.host if request.client else "unknown"


def _out(tokens: accounts.Tokens) -> TokenOut:
    u = tokens.user
    return TokenOut(access_token=tokens.access_token, expires_in=tokens.expires_in,
                    refresh_token=tokens.refresh_token, username=u.username, role=u.role,
                    jurisdiction_path=u.jurisdiction_path)


@router.post("/login", response_model=TokenOut, responses=_ERRORS)
async def login(request: Request, conn: ConnDep, settings: SettingsDep,
                body: LoginIn) -> TokenOut:
    """Sign in. An unknown name, a wrong password and a disabled account are answered
    alike (401), in about the same time."""
    ip = _client_ip(request)
    try:
        tokens = await accounts.login(conn, body.username, body.password, ip, settings.auth,
                                      jwt_secret_of(request))
    except accounts.Throttled as exc:
        log.warning("login_throttled", username=body.username[:64], ip=ip)
        raise HTTPException(429, str(exc),
                            headers={"Retry-After": str(exc.retry_after_s)}) from None
    except accounts.InvalidCredentials:
        log.info("login_failed", username=body.username[:64], ip=ip)
        raise unauthorized("invalid username or password") from None
    log.info("login", username=tokens.user.username, ip=ip)
    return _out(tokens)


@router.post("/refresh", response_model=TokenOut, responses=_ERRORS)
async def refresh(request: Request, conn: ConnDep, settings: SettingsDep,
                  body: RefreshIn) -> TokenOut:
    """A new access token and a new refresh token; the one sent is used up. Sending a
    used-up one again ends every session of that sign-in (a stolen copy is suspected)."""
    try:
        tokens = await accounts.refresh(conn, body.refresh_token, settings.auth,
                                        jwt_secret_of(request))
    except accounts.InvalidToken as exc:
        log.info("refresh_refused", reason=str(exc))
        raise unauthorized(str(exc)) from None
    return _out(tokens)


@router.post("/logout", status_code=204, response_class=Response,
             responses={401: {"description": "Unknown refresh token"}})
async def logout(conn: ConnDep, body: RefreshIn) -> Response:
    """End the session of this refresh token (and its predecessors' and successors');
    access tokens already issued run out on their own within minutes."""
    if not await accounts.logout(conn, body.refresh_token):
        raise unauthorized("unknown refresh token")
    return Response(status_code=204)


def _bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@router.get("/me", response_model=MeOut, responses=AUTH_RESPONSES)
async def me(request: Request, conn: ConnDep, caller: CallerDep) -> MeOut:
    """Who the caller is: its name, role (accounts) or limits (keys), node, and
    permissions, for the console to show what it may do."""
    permissions = sorted(p.value for p in caller.permissions)
    everything = caller.scope.everything
    if caller.kind == "user":
        assert caller.user_id is not None
        user = await accounts.active_user(conn, caller.user_id)
        if user is None:  # disabled between the check and now
            raise unauthorized("this account is disabled or no longer exists")
        return MeOut(kind="user", username=user.username, display_name=user.display_name,
                     role=user.role, jurisdiction_id=user.jurisdiction_id,
                     jurisdiction_path=user.jurisdiction_path, site_ids=None,
                     sees_everything=everything, permissions=permissions)
    key = await apikeys.lookup(conn, _bearer_token(request))
    if key is None:  # revoked between the check and now
        raise unauthorized("invalid, expired or revoked API key")
    return MeOut(kind="key", username=key.name, display_name=None, role=None,
                 jurisdiction_id=key.jurisdiction_id,
                 jurisdiction_path=key.jurisdiction_path,
                 site_ids=sorted(key.site_ids) if key.site_ids is not None else None,
                 sees_everything=everything, permissions=permissions)
