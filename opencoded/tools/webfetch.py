"""`webfetch {url, [format]}`: one web page, as Markdown (default), text or HTML.

The daemon runs on a developer's machine, next to services that trust local callers, so
by default it never requests a loopback, private, link-local or otherwise non-public
address. The check cannot be a look-up followed by a request by name (a DNS answer may
change between the two: rebinding): the host is resolved once, every address it has is
checked, and the connection goes to a checked address, with the name kept in the Host
header and for TLS (SNI and certificate). Redirects are followed by hand, five at most,
each hop checked the same way. Proxies from the environment are ignored (a proxy would
resolve the name itself). Config `"webfetch": {"allowPrivate": true}` lifts the check.

Limits: `webfetch.timeout` seconds for the whole fetch, `webfetch.maxBytes` of (decoded)
body. HTML is converted with markdownify (MIT, on BeautifulSoup) in a worker thread.
"""

from __future__ import annotations

import importlib
import ipaddress
import socket
import sys
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..config import WebfetchConfig
from .base import ToolContext, ToolError, ToolOutput

if TYPE_CHECKING:
    import httpx

FORMATS = ("markdown", "text", "html")
MAX_REDIRECTS = 5
USER_AGENT = "opencode-webfetch/1.0"
HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("application/json", "application/xml", "application/javascript", "+json", "+xml")
_DROP = ["script", "style", "noscript", "template", "svg", "iframe"]


@attrs.frozen
class Page:
    url: str
    content_type: str
    text: str


def public_address(ip: str) -> bool:
    """True for an address on the public internet (not loopback, private, link-local...)."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


async def resolve(host: str, port: int, allow_private: bool) -> list[str]:
    """The addresses to connect to: every address of `host` must be public (unless allowed)."""
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ToolError(f"cannot resolve {host}: {exc.strerror}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise ToolError(f"cannot resolve {host}")
    if not allow_private:
        refused = [a for a in addresses if not public_address(a)]
        if refused:
            raise ToolError(
                f"refused: {host} resolves to a non-public address ({refused[0]}); "
                'config "webfetch": {"allowPrivate": true} allows it'
            )
    return addresses


def _target(url: str) -> httpx.URL:
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ToolError(f"invalid URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise ToolError(f"only http and https URLs can be fetched, not {parsed.scheme or url!r}")
    if not parsed.host:
        raise ToolError(f"invalid URL {url!r}: no host")
    return parsed


async def _request(
    client: httpx.AsyncClient, url: httpx.URL, settings: WebfetchConfig
) -> httpx.Response:
    """Send the GET to a checked address of url's host (the next one if it cannot be
    reached); the response is still streaming."""
    import httpx

    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = await resolve(url.host, port, settings.allow_private)
    for ip in addresses:
        request = client.build_request(
            "GET",
            url.copy_with(host=ip),
            headers={"Host": url.netloc.decode("ascii")},
            extensions={"sni_hostname": url.host},
        )
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectError:
            if ip == addresses[-1]:
                raise
    raise AssertionError("unreachable")  # resolve() returns at least one address


async def _body(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ToolError(f"the response is too large ({declared} bytes; the limit is {limit})")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise ToolError(f"the response is too large (over {limit} bytes)")
    return bytes(body)


async def load_httpx() -> Any:
    """httpx, imported on the first fetch and in a worker thread: it costs ~0.1 s of CPU
    and 4 MB (its CLI module brings rich and click), which a daemon that never fetches a
    page should not pay, nor its event loop wait for (docs/performance.md)."""
    if "httpx" not in sys.modules:
        await trio.to_thread.run_sync(importlib.import_module, "httpx")
    return sys.modules["httpx"]


async def fetch(url: str, settings: WebfetchConfig) -> Page:
    httpx = await load_httpx()
    target = _target(url)
    async with httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        timeout=settings.timeout,
        headers={"User-Agent": USER_AGENT, "Accept": "text/html, text/*;q=0.9, */*;q=0.5"},
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            response = await _request(client, target, settings)
            try:
                if response.is_redirect and "location" in response.headers:
                    target = _target(str(target.join(response.headers["location"])))
                    continue
                if not response.is_success:
                    raise ToolError(f"HTTP {response.status_code} {response.reason_phrase}")
                body = await _body(response, settings.max_bytes)
            finally:
                await response.aclose()
            content_type = response.headers.get("content-type", "").split(";")[0].strip()
            encoding = response.charset_encoding or "utf-8"
            return Page(str(target), content_type.lower(), body.decode(encoding, "replace"))
    raise ToolError(f"more than {MAX_REDIRECTS} redirects")


def _soup(html: str) -> Any:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(_DROP):
        tag.decompose()
    return soup


def convert(page: Page, fmt: str) -> str:
    """The page in the asked format (CPU work: run it in a thread)."""
    is_html = page.content_type in HTML_TYPES or (
        not page.content_type and page.text.lstrip()[:15].lower().startswith(("<!doctype", "<html"))
    )
    is_text = page.content_type.startswith("text/") or page.content_type.endswith(TEXT_TYPES)
    if not (is_html or is_text or not page.content_type):
        raise ToolError(f"cannot show content of type {page.content_type}: not text or HTML")
    if fmt == "html" or not is_html:
        return page.text
    if fmt == "text":
        lines = (line.strip() for line in _soup(page.text).get_text("\n").splitlines())
        return "\n".join(line for line in lines if line)
    from markdownify import MarkdownConverter

    markdown = MarkdownConverter(heading_style="ATX").convert_soup(_soup(page.text))
    return "\n\n".join(p.strip() for p in markdown.split("\n\n") if p.strip())


class WebfetchTool:
    name = "webfetch"
    description = (
        "Fetch a web page (http or https) and return its content, as Markdown by default, "
        "or as plain text or raw HTML. Read-only; for documentation and references."
    )
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "url": {"type": "string", "description": "The http(s) URL to fetch"},
            "format": {
                "type": "string",
                "enum": list(FORMATS),
                "description": "markdown (default), text or html",
            },
        },
        "required": ["url"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        fmt = args.get("format", "markdown")
        if fmt not in FORMATS:
            raise ToolError(f"invalid argument 'format': expected one of {', '.join(FORMATS)}")
        settings = ctx.webfetch or WebfetchConfig()
        httpx = await load_httpx()
        with trio.move_on_after(settings.timeout) as scope:
            try:
                page = await fetch(args["url"], settings)
            except httpx.HTTPError as exc:
                raise ToolError(f"fetching {args['url']} failed: {exc}") from None
            text = await trio.to_thread.run_sync(convert, page, fmt, abandon_on_cancel=True)
        if scope.cancelled_caught:
            raise ToolError(f"fetching {args['url']} timed out after {settings.timeout:g} s")
        return ToolOutput(text or "(empty page)")
