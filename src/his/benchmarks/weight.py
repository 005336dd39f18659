"""What a page weighs as a browser receives it: the page, and every asset its markup names
(stylesheets, scripts, icon, images) and the fonts its stylesheets declare that the page's text
is set in, each fetched as a browser asks (``Accept-Encoding``), counted as transferred (the
body as sent, compressed if the server compressed it, and the response's headers).

Which fonts a page uses is worked out from its markup and its stylesheets, as a browser does it
but simplified (``used_faces``): each element's ``font-family``, ``font-weight`` and
``font-style`` come from the rules whose selectors match it (element, classes, id, attributes,
and the ancestors that descendant and child combinators name), the most specific and then the
last one winning, or from its parent; sibling combinators and structural pseudo-classes are
taken as matching, and rules for a state (``:hover``, ``:focus`` …) or for print as not. A face
counts when an element with text (or a button or an input) is set in it. For the sign-in page
this finds the two faces Chromium downloads (Source Sans Pro regular and bold;
docs/performance.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TypedDict
from urllib.parse import urljoin, urlsplit

import httpx

#: What Chromium sends.
BROWSER_ACCEPT_ENCODING = "gzip, deflate, br, zstd"
#: A desktop browser's viewport width (px), for the stylesheets' ``min-width`` / ``max-width``.
VIEWPORT = 1280
STATES = re.compile(
    r":(hover|focus|focus-visible|focus-within|active|visited|checked|disabled|invalid|target|indeterminate|"
    r"placeholder-shown|autofill|-webkit-autofill|open|popover-open)\b|::?(before|after|placeholder|marker|"
    r"selection|file-selector-button|-webkit|-moz|-ms)"
)
WEIGHTS = {"normal": 400, "bold": 700, "lighter": 300, "bolder": 700}


class Asset(TypedDict):
    path: str
    status: int
    content_type: str
    encoding: str
    body_bytes: int
    header_bytes: int
    uncompressed_bytes: int


class Weight(TypedDict):
    """A page and what it loads: bytes transferred (bodies, headers), and each file."""

    page: str
    transferred_bytes: int
    body_bytes: int
    uncompressed_bytes: int
    assets: list[Asset]


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parent: Element | None
    text: bool = False
    style: dict[str, str] = field(default_factory=dict)


class Markup(HTMLParser):
    """The elements of a page (with their parents), and the assets it names."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("html-root", {}, None)
        self.elements: list[Element] = []
        self.open: list[Element] = [self.root]
        self.stylesheets: list[str] = []
        self.others: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {k: v or "" for k, v in attrs}
        rel = named.get("rel", "").lower().split()
        if tag == "link" and "stylesheet" in rel and named.get("href"):
            self.stylesheets.append(named["href"])
        elif (tag == "link" and "icon" in rel and named.get("href")) or (tag in ("script", "img") and named.get("src")):
            self.others.append(named.get("href") or named["src"])
        el = Element(tag, named, self.open[-1], text=tag in ("button", "input", "select", "textarea"))
        if tag == "input" and named.get("type") == "hidden":
            el.text = False
        self.elements.append(el)
        if tag not in self.VOID:
            self.open.append(el)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, 0, -1):
            if self.open[i].tag == tag:
                del self.open[i:]
                return

    def handle_data(self, data: str) -> None:
        if data.strip() and self.open[-1].tag not in ("script", "style", "title", "html-root"):
            self.open[-1].text = True


@dataclass(frozen=True)
class Rule:
    selector: str
    specificity: tuple[int, int, int]
    order: int
    props: dict[str, str]


@dataclass(frozen=True)
class Face:
    family: str
    weight: int
    style: str
    url: str


def _blocks(css: str) -> Iterator[tuple[str, str]]:
    """(prelude, body) of each top-level block of ``css`` (comments removed)."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    i, n = 0, len(css)
    while i < n:
        brace = css.find("{", i)
        if brace < 0:
            return
        depth, j = 1, brace + 1
        while j < n and depth:
            if css[j] == "{":
                depth += 1
            elif css[j] == "}":
                depth -= 1
            j += 1
        yield css[i:brace].strip().rsplit(";", 1)[-1].strip(), css[brace + 1 : j - 1]
        i = j


def _media_applies(query: str) -> bool:
    q = query.lower()
    if "print" in q or "forced-colors" in q or "prefers-contrast" in q:
        return False
    for kind, value, unit in re.findall(r"(min|max)-width:\s*([\d.]+)(px|em|rem)", q):
        px = float(value) * (16 if unit in ("em", "rem") else 1)
        if (kind == "min" and px > VIEWPORT) or (kind == "max" and px < VIEWPORT):
            return False
    return True


def _props(body: str) -> dict[str, str]:
    out = {}
    for decl in body.split(";"):
        name, _, value = decl.partition(":")
        out[name.strip().lower()] = value.replace("!important", "").strip()
    return out


def _specificity(selector: str) -> tuple[int, int, int]:
    return (
        len(re.findall(r"#[\w-]+", selector)),
        len(re.findall(r"\.[\w\\:-]+|\[[^\]]*\]|:(?!:)[\w-]+", selector)),
        len(re.findall(r"(?:^|[\s>+~])[a-z][\w-]*", selector)),
    )


def rules_and_faces(css: str, base: str, order: int = 0) -> tuple[list[Rule], list[Face]]:
    """The style rules that set a font (in order) and the ``@font-face`` faces of a stylesheet at ``base``."""
    rules: list[Rule] = []
    faces: list[Face] = []
    for prelude, body in _blocks(css):
        if prelude.startswith("@media"):
            if _media_applies(prelude):
                inner, more = rules_and_faces(body, base, order + len(rules))
                rules += inner
                faces += more
            continue
        if prelude.startswith("@font-face"):
            p = _props(body)
            url = re.search(r"url\(([^)]+)\)", p.get("src", ""))
            if url:
                weight = p.get("font-weight", "400")
                faces.append(
                    Face(
                        p.get("font-family", "").strip("\"' "),
                        WEIGHTS.get(weight, int(weight) if weight.isdigit() else 400),
                        p.get("font-style", "normal"),
                        urljoin(base, url.group(1).strip("\"' ")),
                    )
                )
            continue
        if prelude.startswith("@"):
            continue
        props = {k: v for k, v in _props(body).items() if k in ("font-family", "font-weight", "font-style", "font")}
        if not props:
            continue
        for one in (part.strip() for part in prelude.split(",")):
            if one and not STATES.search(one):
                rules.append(Rule(one, _specificity(one), order + len(rules), props))
    return rules, faces


def _compound(last: str, el: Element) -> bool:
    """Whether ``el`` matches one compound selector (structural pseudo-classes taken as matching)."""
    last = re.sub(r":[\w-]+(\([^)]*\))?", "", last)
    tag = re.match(r"^[a-z][\w-]*|^\*", last)
    if tag and tag.group(0) not in ("*", el.tag):
        return False
    classes = set(el.attrs.get("class", "").split())
    for cls in re.findall(r"\.((?:[\w-]|\\.)+)", last):
        if cls.replace("\\", "") not in classes:
            return False
    for ident in re.findall(r"#([\w-]+)", last):
        if el.attrs.get("id") != ident:
            return False
    for name, value in re.findall(r"\[([\w-]+)(?:[~|^$*]?=[\"']?([^\"'\]]*)[\"']?)?\]", last):
        if name not in el.attrs or (value and value not in el.attrs[name]):
            return False
    return True


def _matches(selector: str, el: Element) -> bool:
    """Whether ``el`` matches ``selector``: descendant and child combinators followed up the tree,
    sibling combinators (``+``, ``~``) taken as matching."""
    parts = re.split(r"\s*([\s>+~])\s*", selector.strip())
    compounds, combinators = parts[::2], parts[1::2]
    if not _compound(compounds[-1], el):
        return False
    node: Element | None = el
    for compound, combinator in zip(reversed(compounds[:-1]), reversed(combinators), strict=True):
        if combinator in "+~":
            continue
        node = node.parent if node is not None else None
        if combinator == ">":
            if node is None or not _compound(compound, node):
                return False
            continue
        while node is not None and not _compound(compound, node):
            node = node.parent
        if node is None:
            return False
    return True


def _font_shorthand(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    m = re.search(r"([\d.]+(?:px|em|rem|%)(?:/[\w.%]+)?)\s+(.+)$", value)
    if m:
        out["font-family"] = m.group(2)
        head = value[: m.start()].split()
        out["font-weight"] = next((w for w in head if w.isdigit() or w in WEIGHTS), "normal")
        out["font-style"] = "italic" if "italic" in head else "normal"
    return out


def used_faces(markup: Markup, rules: list[Rule], faces: list[Face]) -> set[Face]:
    """The faces an element with text is set in (see the module's docstring for the simplification)."""
    inherited = {"font-family": "serif", "font-weight": "400", "font-style": "normal"}
    used: set[Face] = set()
    defaults = {"h1": "700", "h2": "700", "h3": "700", "h4": "700", "th": "700", "strong": "700", "b": "700"}
    for el in markup.elements:  # in document order: parents before children
        parent = el.parent.style if el.parent is not None and el.parent.style else inherited
        style = dict(parent)
        if el.tag in defaults:
            style["font-weight"] = defaults[el.tag]
        if el.tag in ("em", "i"):
            style["font-style"] = "italic"
        for rule in sorted((r for r in rules if _matches(r.selector, el)), key=lambda r: (r.specificity, r.order)):
            props = dict(rule.props)
            if "font" in props:
                props = {**_font_shorthand(props.pop("font")), **props}
            for k, v in props.items():
                if k in style and v not in ("inherit", "unset", ""):
                    style[k] = v
        if style["font-weight"] in WEIGHTS:
            base = int(parent["font-weight"]) if parent["font-weight"].isdigit() else 400
            style["font-weight"] = str(
                {"bolder": max(base, 700), "lighter": min(base, 300)}.get(style["font-weight"], 0)
                or WEIGHTS[style["font-weight"]]
            )
        el.style = style
        if el.text:
            face = _face_for(style, faces)
            if face is not None:
                used.add(face)
    return used


def _face_for(style: dict[str, str], faces: list[Face]) -> Face | None:
    for family in (f.strip().strip("\"'") for f in style["font-family"].split(",")):
        same = [f for f in faces if f.family == family]
        if not same:
            continue
        wanted = int(style["font-weight"]) if style["font-weight"].isdigit() else 400
        italic = style["font-style"] in ("italic", "oblique")
        styled = [f for f in same if (f.style == "italic") == italic] or same
        return min(styled, key=lambda f: (abs(f.weight - wanted), f.weight))
    return None


async def fetch(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> tuple[Asset, bytes]:
    """One file as a browser receives it: (what it cost, its decoded body). Any status but 200 is an error."""
    async with client.stream("GET", url, headers={"accept-encoding": BROWSER_ACCEPT_ENCODING, **headers}) as r:
        raw = b"".join([chunk async for chunk in r.aiter_raw()])
        status = r.status_code
        head = sum(len(k) + len(v) + 4 for k, v in r.headers.raw) + len(f"HTTP/1.1 {status} {r.reason_phrase}\r\n\r\n")
        encoding = r.headers.get("content-encoding", "")
        content_type = r.headers.get("content-type", "")
    body = httpx.Response(200, content=raw, headers={"content-encoding": encoding} if encoding else {}).content
    if status != 200:
        raise ValueError(f"GET {url} answered {status}")
    asset: Asset = {
        "path": urlsplit(url).path,
        "status": status,
        "content_type": content_type.split(";")[0],
        "encoding": encoding or "identity",
        "body_bytes": len(raw),
        "header_bytes": head,
        "uncompressed_bytes": len(body),
    }
    return asset, body


async def weigh(client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> Weight:
    """The page at ``url`` and everything it loads, as a browser with an empty cache receives them."""
    page, html = await fetch(client, url, {"accept": "text/html", **(headers or {})})
    markup = Markup()
    markup.feed(html.decode("utf-8", errors="replace"))
    assets = [page]
    rules: list[Rule] = []
    faces: list[Face] = []
    for href in markup.stylesheets:
        sheet, css = await fetch(client, urljoin(url, href), headers or {})
        assets.append(sheet)
        more_rules, more_faces = rules_and_faces(css.decode("utf-8", errors="replace"), urljoin(url, href), len(rules))
        rules += more_rules
        faces += more_faces
    for src in markup.others:
        assets.append((await fetch(client, urljoin(url, src), headers or {}))[0])
    for face in sorted(used_faces(markup, rules, faces), key=lambda f: f.url):
        assets.append((await fetch(client, face.url, headers or {}))[0])
    return {
        "page": urlsplit(url).path,
        "transferred_bytes": sum(a["body_bytes"] + a["header_bytes"] for a in assets),
        "body_bytes": sum(a["body_bytes"] for a in assets),
        "uncompressed_bytes": sum(a["uncompressed_bytes"] for a in assets),
        "assets": assets,
    }
