"""Write docs/tui.svg: ``opencode tui`` on a real daemon and the fake LLM, exported by Textual.

.venv/bin/python -m tests.make_tui_screenshot
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from opencode_cli import Client
from opencode_cli.tui import OpencodeApp
from tests.cli_support import REPO, rmtree, short_tmp, start_daemon, start_fake_llm
from tests.test_tui_app import say, until

REPLY = [
    "The handler swallows the error. ",
    "Wrap the call and log it:\n\n",
    "```python\ntry:\n    user = await auth.login(name, password)\n",
    'except AuthError as exc:\n    log.warning("login failed: %s", exc)\n    raise\n```\n\n',
    "I also added a test in `tests/test_auth.py`.",
]


async def shoot(url: str, directory: Path, fake) -> str:
    app = OpencodeApp(url, directory=str(directory))
    async with app.run_test(size=(120, 34)) as pilot:
        fake.push(text=[], tool_calls=[{"id": "r1", "name": "list", "input": {}}])
        fake.push(text=REPLY)
        await say(pilot, "Why does login fail silently?")
        await until(pilot, lambda: not app.busy and app.query("AssistantText"), "the reply")
        await pilot.pause(0.5)
        return app.export_screenshot(title="opencode tui")


def main() -> None:
    fake = start_fake_llm()
    daemon = start_daemon(fake.url)
    work = short_tmp("ocs")
    (work / "auth.py").write_text("async def login(name, password): ...\n")
    (work / "tests").mkdir()
    try:
        with Client(daemon.unix_url) as c:
            for title in ("Add retries to the sync job", "Fix flaky upload test"):
                c.sessions.create(directory=str(work.resolve()), title=title)
        svg = asyncio.run(shoot(daemon.unix_url, work.resolve(), fake))
        out = REPO / "docs" / "tui.svg"
        out.write_text(svg)
        print(f"wrote {out}")
    finally:
        daemon.stop()
        fake.stop()
        rmtree(daemon.tmp)
        rmtree(work)


if __name__ == "__main__":
    main()
