"""The API explorer at ``/docs``: Swagger UI served by the gateway itself, nothing from elsewhere.

Swagger UI's built files are vendored in ``static/swagger-ui/`` (version, source and licence in
its ``VENDORED.md``); the page, its initializer (``static/docs.js``) and those files are answered
with a Content-Security-Policy that allows scripts, styles and requests to this origin only and
no inline script.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from his.kernel.problems import problem

#: Scripts and styles from the gateway only (no inline script or style element); images also as
#: data: URIs (Swagger UI's icons); requests to the gateway only (/openapi.json and "Try it out").
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PREFIX = "/docs/assets"
#: Every file the page may load: public name → (file under static/, media type).
ASSETS = {
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", "text/css; charset=utf-8"),
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "docs.js": ("docs.js", "text/javascript; charset=utf-8"),
    "LICENSE": ("swagger-ui/LICENSE", "text/plain; charset=utf-8"),
    "NOTICE": ("swagger-ui/NOTICE", "text/plain; charset=utf-8"),
    "swagger-ui-bundle.js.LICENSE.txt": ("swagger-ui/swagger-ui-bundle.js.LICENSE.txt", "text/plain; charset=utf-8"),
}
PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>his API explorer</title>
<link rel="stylesheet" href="{PREFIX}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{PREFIX}/swagger-ui-bundle.js"></script>
<script src="{PREFIX}/docs.js"></script>
</body>
</html>
"""
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@cache
def _read(name: str) -> bytes:
    return resources.files("his.gateway").joinpath("static", *ASSETS[name][0].split("/")).read_bytes()


def router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/docs")
    async def page() -> HTMLResponse:
        """The explorer's page: it loads the assets below and reads /openapi.json."""
        return HTMLResponse(PAGE, headers=HEADERS | {"Cache-Control": "no-cache"})

    @r.get(PREFIX + "/{name}")
    async def asset(name: str) -> Response:
        """One of the explorer's files, by its name in ``ASSETS``; nothing else is served here."""
        if name not in ASSETS:
            return problem(404, f"no such file: {name}")
        cached = HEADERS | {"Cache-Control": "public, max-age=3600"}
        return Response(_read(name), media_type=ASSETS[name][1], headers=cached)

    return r
