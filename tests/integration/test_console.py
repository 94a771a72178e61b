"""The web console (`GET /`, backend/web/) end to end in headless Chromium, driven by Playwright.

A real backend process (`python -m backend`: the default embedder, the embedded Qdrant Edge store, API keys
on) answers with `LLM_BACKEND=vllm`, its real VllmClient pointed at the stand-in of vLLM's OpenAI API
(tests/support/openai_server.py) streaming a 30-token answer that cites [1], 80 ms per token: slow enough to
look at the console while the answer arrives. The browser is Debian's chromium (`make browser` installs it;
Playwright's own browser downloads are not used): when it is missing this module fails and says so, unless
`CONSOLE_TEST=skip` asks to skip it. Screenshots go to test-artifacts/console/ (kept, git-ignored).
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import httpx
import pytest

from cli.local_backend import start_backend, stop_backend
from tests.support.openai_server import FakeChatModel, FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "console"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
MODEL = "fake-vllm"
SPACE = "handbook"
ADMIN_KEY = "console-admin-key-0123456789"  # '*'
OTHER_KEY = "console-other-key-0123456789"  # the space `elsewhere` only
# 30 tokens (one per word), citing [1], with markup that must arrive as text, never as HTML.
ANSWER = (
    "Backups run nightly at 02:00 to the NAS in rack B [1]. They are kept for thirty days, "
    "and <b>never</b> on the same disk as the data itself. Restores work."
)
TOKEN_DELAY_S = 0.08
VIEWPORT = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}
GOOD_TEXT = (
    "Backups run nightly at 02:00 to the NAS in rack B and are kept for thirty days.\n"
    'Markup stays text: <img src=x onerror="window.__xss = 1"> and <script>window.__xss = 2</script>.\n'
)
EXPECT_TIMEOUT_MS = 30_000

pytestmark = pytest.mark.integration
assert len(ANSWER.split(" ")) == 30


@pytest.fixture(scope="module")
def chromium() -> str:
    if os.environ.get("CONSOLE_TEST") == "skip":
        pytest.skip("CONSOLE_TEST=skip: the console's browser test was skipped on request")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"the web console test needs Debian's chromium at {CHROMIUM}, which is missing: run `make browser` "
            "(apt-get install -y chromium), or set CONSOLE_TEST=skip to skip this test",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def engine():
    with FakeOpenAI({MODEL: FakeChatModel(answer=ANSWER, token_delay_s=TOKEN_DELAY_S)}) as fake:
        yield fake


@pytest.fixture(scope="module")
def backend(chromium, engine, tmp_path_factory, model_cache):
    """The base URL of a real backend process with API keys, answering through the real VllmClient."""
    env = {
        "DATA_DIR": str(tmp_path_factory.mktemp("console-data")),
        "MODEL_CACHE_DIR": str(model_cache),
        "QDRANT_URL": "",
        "LLM_BACKEND": "vllm",
        "VLLM_BASE_URL": f"{engine.url}/v1",
        "VLLM_MODEL": MODEL,
        "ASK_MIN_SCORE": "-1",  # every question reaches the engine
        "LOG_LEVEL": "warning",
        "API_KEYS": f"{ADMIN_KEY}=*,{OTHER_KEY}=elsewhere",
    }
    proc, url = start_backend(env)
    try:
        yield url
    finally:
        stop_backend(proc)


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    """A fresh page (its own localStorage) that records script errors and CSP violations."""
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and "Content Security Policy" in msg.text
            and problems.append(f"CSP: {msg.text}"))
    yield page
    context.close()
    assert problems == []


def screenshot(page, name: str, size: dict) -> Path:
    """A viewport screenshot kept under test-artifacts/console/, checked to be a PNG of the viewport's size."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (size["width"], size["height"]) and len(data) > 5000, (path, width, height, len(data))
    return path


def use(page, url: str, key: str, space: str) -> None:
    """Open the console, type the key and the space, submit with the keyboard."""
    page.goto(f"{url}/")
    page.get_by_label("API key").fill(key)
    page.get_by_label("Space").fill(space)
    page.get_by_label("Space").press("Enter")


def use_space_with_one_document(page, url: str, space: str) -> None:
    """Upload the backups document into `space` over HTTP, then open the console on it (one document listed)."""
    from playwright.sync_api import expect

    response = httpx.post(
        f"{url}/documents", data={"space_id": space}, files={"file": ("backups.txt", GOOD_TEXT.encode())},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120,
    )
    assert response.status_code == 201, response.text
    use(page, url, ADMIN_KEY, space)
    expect(page.locator("#documents tr")).to_have_count(1)


def ask(page, question: str) -> None:
    page.get_by_label("Question").fill(question)
    page.get_by_label("Question").press("Enter")  # Enter sends (Shift+Enter: a new line)


def wait_streaming(page, words: int) -> None:
    page.wait_for_function(
        """n => document.querySelector('#answer-box').dataset.state === 'streaming'
                && document.querySelector('#answer').textContent.split(' ').length >= n""",
        arg=words, timeout=EXPECT_TIMEOUT_MS,
    )


def answer_state(page) -> str:
    return page.locator("#answer-box").get_attribute("data-state")


def test_console_uploads_streams_an_answer_with_citations_and_deletes(backend, engine, page):
    from playwright.sync_api import expect

    use(page, backend, ADMIN_KEY, SPACE)
    expect(page.locator("#health")).to_have_text(f"vllm · {MODEL}: ok")
    expect(page.locator("#documents-message")).to_have_text(f'No documents in "{SPACE}" yet: upload some.')

    # Two files, sent one by one: the good one is added, the corrupt PDF's error is shown with its type.
    page.get_by_label("Upload files").set_input_files([
        {"name": "backups.txt", "mimeType": "text/plain", "buffer": GOOD_TEXT.encode()},
        {"name": "broken.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 garbage"},
    ])
    page.get_by_role("button", name="Upload", exact=True).click()
    good = page.locator("#uploads li", has_text="backups.txt")
    broken = page.locator("#uploads li", has_text="broken.pdf")
    expect(good).to_have_attribute("data-state", "ok")
    expect(good.locator(".upload-status")).to_have_text("added (1 chunk)")
    expect(broken).to_have_attribute("data-state", "error")
    expect(broken.locator(".upload-status")).to_contain_text("422 corrupt_document: broken.pdf")
    assert good.locator("progress").evaluate("p => p.value === p.max && p.max > 0")
    rows = page.locator("#documents tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td").nth(0)).to_have_text("backups.txt")
    expect(rows.first.locator("td").nth(1)).to_have_text("1")
    expect(rows.first.locator("td").nth(2)).to_have_text(f"{len(GOOD_TEXT.encode())} B")

    # The answer streams: mid-way, the console shows part of it (screenshot), and Stop is offered.
    ask(page, "When do backups run?")
    wait_streaming(page, 4)
    # The stand-in holds its next token for up to 3 s while the screenshot is taken, so that a slow, loaded
    # machine cannot finish the answer in between; the stream itself stays open and goes on afterwards.
    engine.models[MODEL].token_delay_s = 3.0
    try:
        shot = screenshot(page, "console-mid-answer.png", VIEWPORT)
        partial = page.locator("#answer").text_content()
        assert answer_state(page) == "streaming", "the answer finished before the screenshot"
    finally:
        engine.models[MODEL].token_delay_s = TOKEN_DELAY_S
    assert 4 <= len(partial.split(" ")) < 30 and ANSWER.startswith(partial) and partial != ANSWER
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()
    assert shot.stat().st_size > 0

    # Done: the whole answer, the engine, the model and the timings.
    expect(page.locator("#answer-box")).to_have_attribute("data-state", "done")
    expect(page.locator("#answer")).to_have_text(ANSWER)
    assert page.locator("#answer b").count() == 0  # the model's markup is text
    meta = page.locator("#answer-meta")
    expect(meta.locator('[data-field="engine"] dd')).to_have_text("vllm")
    expect(meta.locator('[data-field="model"] dd')).to_have_text(MODEL)
    timings = {f: meta.locator(f'[data-field="{f}"] dd').text_content() for f in ("retrieval", "ttft", "total")}
    assert all(re.fullmatch(r"\d+ ms", v) for v in timings.values()), timings
    assert int(timings["total"].split()[0]) >= 29 * TOKEN_DELAY_S * 1000 * 0.9  # the stand-in's pace, whole
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()

    # [1] is a link to the source: its text (markup as text), its file, its chunk; it is marked as cited.
    expect(page.locator("#sources li")).to_have_count(1)
    expect(page.locator("#sources li").first).to_have_class(re.compile(r"\bcited\b"))
    expect(page.locator("#source-panel")).to_be_hidden()
    page.locator("#answer a.cite", has_text="[1]").click()
    expect(page.locator("#source-panel")).to_be_visible()
    expect(page.locator("#source-title")).to_have_text("Source [1]")
    expect(page.locator('#source-meta [data-field="file"] dd')).to_have_text("backups.txt")
    expect(page.locator('#source-meta [data-field="cited"] dd')).to_have_text("yes")
    expect(page.locator("#source-text")).to_contain_text("Backups run nightly at 02:00 to the NAS in rack B")
    expect(page.locator("#source-text")).to_contain_text('<img src=x onerror="window.__xss = 1">')
    assert page.locator("#source-text img, #source-text script").count() == 0
    assert page.evaluate("window.__xss") is None
    screenshot(page, "console-answer.png", VIEWPORT)

    # Narrow screens: one column, nothing wider than the viewport.
    page.set_viewport_size(NARROW)
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    screenshot(page, "console-narrow.png", NARROW)
    page.set_viewport_size(VIEWPORT)

    # Delete, after a confirmation: the row goes, and the backend no longer has the document.
    dialogs = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Delete backups.txt").click()
    expect(page.locator("#documents-message")).to_have_text("Deleted backups.txt.")
    expect(page.locator("#documents tr")).to_have_count(0)
    assert dialogs and "backups.txt" in dialogs[0]
    listed = httpx.get(f"{backend}/documents", params={"space_id": SPACE}, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert listed.status_code == 200 and listed.json()["documents"] == []


def test_a_wrong_key_shows_401_and_a_key_for_another_space_403(backend, page):
    from playwright.sync_api import expect

    use(page, backend, "not-the-right-key-0000", SPACE)
    auth = page.locator("#auth-message")
    expect(auth).to_be_visible()
    expect(auth).to_have_text("The API key was refused (401 unauthorized). Check the key and press Use.")
    expect(page.locator("#documents-message")).to_contain_text("401 unauthorized: unknown API key")
    ask(page, "When do backups run?")
    expect(page.locator("#answer-box")).to_have_attribute("data-state", "failed")
    expect(page.locator("#answer-error")).to_have_text("401 unauthorized: unknown API key")
    screenshot(page, "console-401.png", VIEWPORT)

    page.get_by_label("API key").fill(OTHER_KEY)
    page.get_by_role("button", name="Use").click()
    expect(auth).to_contain_text(f'This API key does not cover space "{SPACE}" (403 forbidden).')

    # The key is kept only when asked to: unticked, a reload forgets it (the space is remembered).
    page.reload()
    expect(page.get_by_label("Space")).to_have_value(SPACE)
    expect(page.get_by_label("API key")).to_have_value("")
    assert page.evaluate("Object.values(localStorage).filter(v => v.includes('key-0123'))") == []
    page.get_by_label("API key").fill(ADMIN_KEY)
    page.get_by_label("Remember the key in this browser").check()
    page.get_by_role("button", name="Use").click()
    expect(auth).to_be_hidden()
    page.reload()
    expect(page.get_by_label("API key")).to_have_value(ADMIN_KEY)


def test_stop_and_an_engine_error_mid_answer_keep_the_partial_answer(backend, engine, page):
    from playwright.sync_api import expect

    space = "stops"
    use_space_with_one_document(page, backend, space)

    # Stop aborts the stream: what arrived stays, marked as incomplete.
    ask(page, "When do backups run?")
    wait_streaming(page, 3)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#answer-box")).to_have_attribute("data-state", "stopped")
    expect(page.locator("#answer-state")).to_have_text("Stopped: the answer above is incomplete.")
    stopped = page.locator("#answer").text_content()
    assert 3 <= len(stopped.split(" ")) < 30 and ANSWER.startswith(stopped)
    expect(page.locator("#answer")).to_have_class(re.compile(r"\binterrupted\b"))
    expect(page.get_by_role("button", name="Ask")).to_be_enabled()

    # An `error` event after 5 tokens: the 5 tokens stay, the error is shown, the answer is marked.
    engine.models[MODEL].error_after_tokens = 5
    try:
        ask(page, "When do backups run?")
        expect(page.locator("#answer-box")).to_have_attribute("data-state", "interrupted")
    finally:
        engine.models[MODEL].error_after_tokens = None
    expect(page.locator("#answer")).to_have_text(" ".join(ANSWER.split(" ")[:5]))
    expect(page.locator("#answer-state")).to_have_text("Interrupted: the answer above is incomplete.")
    expect(page.locator("#answer-error")).to_contain_text("llm_bad_response: ")
    expect(page.locator("#answer-error")).to_contain_text("failed mid-answer")
    expect(page.locator("#answer-meta")).to_be_hidden()
    screenshot(page, "console-interrupted.png", VIEWPORT)


# Markdown as a model writes it, citing [1] in a list and in code, with the XSS payloads of the documents above
# and two more that only Markdown can carry (a javascript: link, an image from another origin).
MD_ANSWER = (
    "Backups:\n\n- run nightly at 02:00 [1]\n- are kept **thirty days**\n\n"
    "| Job | Time |\n|---|---|\n| backup | 02:00 |\n\n"
    "```\nrestore --from nas [1]\n```\n\n"
    'Payloads: <img src=x onerror="window.__xss = 3"> <script>window.__xss = 4</script> '
    "[click](javascript:window.__xss=5) ![x](http://example.invalid/x.png)"
)


def test_markdown_answers_render_safely_with_citations_and_sources_consulted(backend, engine, page):
    from playwright.sync_api import expect

    space = "markdown"
    use_space_with_one_document(page, backend, space)
    model = engine.models[MODEL]
    model.answer, model.token_delay_s = MD_ANSWER, 0.0
    try:
        ask(page, "When do backups run?")
        expect(page.locator("#answer-box")).to_have_attribute("data-state", "done")
    finally:
        model.answer, model.token_delay_s = ANSWER, TOKEN_DELAY_S
    answer = page.locator("#answer")
    expect(answer.locator("ul > li")).to_have_count(2)
    expect(answer.locator("strong")).to_have_text("thirty days")
    expect(answer.locator("table td").nth(1)).to_have_text("02:00")
    expect(answer.locator("pre code")).to_have_text("restore --from nas [1]")
    assert answer.locator("pre a").count() == 0  # code stays code: no citation link inside
    # Nothing executed or fetched: the HTML is text, the javascript: link lost its href, no image.
    expect(answer).to_contain_text('<img src=x onerror="window.__xss = 3">')
    expect(answer).to_contain_text("<script>window.__xss = 4</script>")
    assert answer.locator("img, script, iframe").count() == 0
    assert not (answer.locator("a", has_text="click").get_attribute("href") or "").lower().startswith("javascript")
    assert page.evaluate("window.__xss") is None
    # The citation in the list is a link that opens (and highlights) its source.
    expect(page.locator("#sources-title")).to_have_text("Sources")
    answer.locator("li a.cite", has_text="[1]").click()
    expect(page.locator("#source-panel")).to_be_visible()
    expect(page.locator("#sources li.selected")).to_have_count(1)
    screenshot(page, "console-markdown.png", VIEWPORT)

    # A model that cites nothing: the sources it was given are still listed, as consulted.
    model.answer = "Backups run nightly at 02:00."
    try:
        ask(page, "When do backups run?")
        expect(page.locator("#answer-box")).to_have_attribute("data-state", "done")
    finally:
        model.answer = ANSWER
    expect(page.locator("#sources-title")).to_have_text("Sources consulted")
    expect(page.locator("#sources li")).to_have_count(1)
    assert page.locator("#sources li.cited").count() == 0


def test_console_responses_carry_a_strict_csp_and_the_api_docs_still_work(backend):
    page = httpx.get(f"{backend}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    html = page.text
    # No inline script, handler or style: every <script> has a src, no on...= or style= attribute anywhere.
    assert re.findall(r"<script\b[^>]*>", html) == [
        '<script src="console/marked.umd.js">', '<script src="console/purify.min.js">',
        '<script type="module" src="console/app.js">']
    assert not re.search(r"\son[a-z]+\s*=", html) and not re.search(r"\sstyle\s*=", html) and "<style" not in html
    assert "http://" not in html and "https://" not in html  # nothing from another origin

    for name, media_type in [("app.js", "text/javascript"), ("console.css", "text/css"), ("favicon.svg", "image/svg+xml"),
                             ("marked.umd.js", "text/javascript"), ("purify.min.js", "text/javascript")]:
        response = httpx.get(f"{backend}/console/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(media_type), name
        assert response.headers["content-security-policy"] == csp
        again = httpx.get(f"{backend}/console/{name}", headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    assert "innerHTML" not in httpx.get(f"{backend}/console/app.js").text

    for missing in ("/console/index.py", "/console/..%2Fapp.js", "/console/"):
        response = httpx.get(f"{backend}{missing}")
        assert response.status_code == 404 and response.json()["error"]["type"] == "not_found", missing
        assert "content-security-policy" not in response.headers

    # The API and its docs are untouched: no console headers there, and / is not in the schema.
    docs = httpx.get(f"{backend}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower() and "content-security-policy" not in docs.headers
    schema = httpx.get(f"{backend}/openapi.json").json()
    assert "/" not in schema["paths"] and not any(p.startswith("/console") for p in schema["paths"])
    health = httpx.get(f"{backend}/health")
    assert health.status_code == 200 and "content-security-policy" not in health.headers
    assert httpx.get(f"{backend}/documents", params={"space_id": SPACE}).status_code == 401  # keys still apply


def test_the_browser_enforces_the_csp_on_the_console(backend, browser):
    """An inline script slipped into the page (what an XSS would need) does not run, and Chromium says why."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        refused = []
        page.on("console", lambda msg: "Content Security Policy" in msg.text and refused.append(msg.text))
        page.goto(f"{backend}/")
        page.evaluate("""() => {
            const script = document.createElement('script');
            script.textContent = 'window.__inline = 1';
            document.body.append(script);
        }""")
        assert page.evaluate("window.__inline") is None
        page.wait_for_timeout(200)
        assert refused, "no CSP violation was reported for an inline script"
    finally:
        context.close()


# Claim checks (issue 19). A source with a character outside the BMP before the span: the backend's offsets count
# code points, JavaScript's strings UTF-16 units, so a console that mixed them up would mark the wrong text.
CHECKED_SOURCE = (
    "Backups \U0001F4BE run nightly at 02:00 to the NAS in rack B. They are kept for thirty days.\n"
    "Restores need a ticket."
)
# Markdown with a [1] inside code before the cited sentences: a console that paired the rendered [n] links with
# the sentences by counting markers would give the first link to the wrong sentence.
CHECKED_ANSWER = (
    "Run `restore --from nas [1]` to restore. Backups run **nightly at 02:00** [1]. "
    "They are kept for ninety days [1]. Restores are approved by Alice.\n\n"
    "https://example.org/restore has the steps. See https://example.org/backups."
)


def checked_citation(sentence: str, status: str, span: tuple[int, int] | None = None) -> dict:
    """One entry of the answer's `citations` in the checker's shape (backend/citations), for a routed /ask."""
    start = CHECKED_ANSWER.index(sentence)
    markers = [int(n) for n in re.findall(r"\[(\d+)\]", sentence)]
    return {
        "sentence": sentence, "start": start, "end": start + len(sentence), "sources": markers,
        "supported": {"supported": True, "unsupported": False}.get(status), "status": status,
        "span": {"n": 1, "start": span[0], "end": span[1]} if span else None,
        "score": 0.9 if status == "supported" else 0.1, "missing": ["ninety"] if status == "unsupported" else [],
    }


def routed_answer(page, done: dict) -> None:
    """Serve POST /ask from the page's own network layer: two token events, then `done` with this data."""
    import json

    events = [("token", {"text": done["answer"][:10]}), ("token", {"text": done["answer"][10:]}), ("done", done)]
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    page.route("**/ask", lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body))


def test_checked_claims_are_marked_and_a_citation_highlights_its_span(backend, page):
    """The page alone, with a fixed `done` event: span highlight, marks, summary line, grounded notice."""
    from playwright.sync_api import expect

    supported = "Backups run **nightly at 02:00** [1]."
    unsupported = "They are kept for ninety days [1]."
    # The supporting span: source offsets in code points, as Python (the backend) counts them.
    span = (CHECKED_SOURCE.index("run nightly"), CHECKED_SOURCE.index(" They"))
    far = (CHECKED_SOURCE.index("They"), CHECKED_SOURCE.index("\n"))
    source = {"n": 1, "doc_id": "d1", "path": "backups.txt", "chunk_index": 0, "score": 0.8, "text": CHECKED_SOURCE,
              "cited": True, "page": None, "heading": None}
    done = {
        "engine": "vllm", "model": MODEL, "answer": CHECKED_ANSWER, "sources": [source], "grounded": True,
        "citations": [
            checked_citation("Run `restore --from nas [1]` to restore.", "no_claim"),
            checked_citation(supported, "supported", span),
            checked_citation(unsupported, "unsupported", far),
            checked_citation("Restores are approved by Alice.", "uncited"),
            # Bare URLs at a sentence's start and end: still links, with nothing added to them.
            checked_citation("https://example.org/restore has the steps.", "uncited"),
            checked_citation("See https://example.org/backups.", "no_claim"),
        ],
    }
    use(page, backend, ADMIN_KEY, "routed")
    routed_answer(page, done)
    ask(page, "How long are backups kept?")
    expect(page.locator("#answer-box")).to_have_attribute("data-state", "done")

    answer = page.locator("#answer")
    rendered = "Run restore --from nas [1] to restore. Backups run nightly at 02:00 [1]. " \
               "They are kept for ninety days [1]. Restores are approved by Alice. " \
               "https://example.org/restore has the steps. See https://example.org/backups."
    expect(answer).to_have_text(rendered)  # no sentinel left anywhere
    links = answer.locator('a[href^="https://example.org/"]')
    expect(links).to_have_text(["https://example.org/restore", "https://example.org/backups"])
    assert [links.nth(i).get_attribute("href") for i in range(2)] == [
        "https://example.org/restore", "https://example.org/backups"]
    expect(answer.locator("code")).to_have_text("restore --from nas [1]")
    expect(answer.locator("strong")).to_have_text("nightly at 02:00")
    expect(answer.locator("a.cite")).to_have_count(2)
    bad = answer.locator(".claim-unsupported")
    expect(bad).to_have_text("They are kept for ninety days [1].")
    expect(bad).to_have_attribute("title", "Not supported by the cited source (not found there: ninety)")
    uncited = answer.locator(".claim-uncited")
    expect(uncited).to_have_text(["Restores are approved by Alice.", "has the steps."])
    expect(uncited.first).to_have_attribute("title", "No source cited")
    assert answer.locator(".claim").count() == 3  # the supported sentence and those without a claim: unmarked
    expect(page.locator("#answer-checks")).to_have_text(
        "1 of 4 sentences supported (1 not supported by the cited source, 2 with no source cited)")
    expect(page.locator("#answer-notice")).to_be_hidden()
    expect(page.locator("#sources-title")).to_have_text("Sources")

    # The supported sentence's [1]: its span, exactly, in a <mark>, as text.
    answer.locator("a.cite").first.click()
    mark = page.locator("#source-text mark")
    expect(mark).to_have_count(1)
    expect(mark).to_have_text(CHECKED_SOURCE[span[0]:span[1]])
    expect(mark).to_have_class(re.compile(r"\bspan-supported\b"))
    expect(page.locator("#source-text")).to_have_text(CHECKED_SOURCE)
    expect(page.locator("#source-note")).to_have_text(
        "Highlighted: the passage that supports “Backups run nightly at 02:00.”")
    screenshot(page, "console-citations-routed.png", VIEWPORT)

    # The unsupported sentence's [1]: the closest passage, marked as not supporting it.
    bad.locator("a.cite").click()
    expect(mark).to_have_text(CHECKED_SOURCE[far[0]:far[1]])
    expect(mark).to_have_class(re.compile(r"\bspan-unsupported\b"))
    expect(page.locator("#source-note")).to_have_text("Highlighted: the closest passage, which does not support "
                                                      "“They are kept for ninety days.” (not found in the source: ninety)")
    # The list's button opens the whole source, with nothing highlighted.
    page.locator("#sources .source-button").click()
    expect(mark).to_have_count(0)
    expect(page.locator("#source-note")).to_be_hidden()


def test_attributed_multi_source_dropped_and_ungrounded_answers(backend, page):
    """A sentence the model did not cite but the checker found in a source gets that source's link; [1, 2] links
    each number, and the span lies in one of them; sentences CITATION_CHECK=drop removed are counted; grounded:
    false is said in words, with and without sources."""
    from playwright.sync_api import expect

    first, second, third = "Restores need a ticket.", "Backups are kept for ninety days.", "The NAS is in rack B [1, 2]."
    text = f"{first} {second} {third}"
    ticket = (CHECKED_SOURCE.index("Restores"), len(CHECKED_SOURCE))
    other = "Rack B holds the NAS and the backup switch."
    source = {"n": 1, "doc_id": "d1", "path": "backups.txt", "chunk_index": 0, "score": 0.8, "text": CHECKED_SOURCE,
              "cited": True, "page": None, "heading": None}
    source2 = {**source, "n": 2, "doc_id": "d2", "path": "racks.txt", "text": other}
    citations = [
        {"sentence": first, "start": 0, "end": len(first), "sources": [1], "supported": True, "status": "supported",
         "span": {"n": 1, "start": ticket[0], "end": ticket[1]}, "score": 1.0, "missing": [], "attributed": True},
        {"sentence": second, "start": len(first) + 1, "end": len(text), "sources": [], "supported": None,
         "status": "uncited", "span": None, "score": 0.0, "missing": [], "attributed": False},
        {"sentence": third, "start": text.index(third), "end": len(text), "sources": [1, 2], "supported": True,
         "status": "supported", "span": {"n": 2, "start": 0, "end": len(other)}, "score": 0.8, "missing": []},
        {"sentence": "They run hourly [1].", "start": None, "end": None, "sources": [1], "supported": False,
         "status": "unsupported", "span": None, "score": 0.0, "missing": ["hourly"], "dropped": True},
    ]
    use(page, backend, ADMIN_KEY, "routed")
    routed_answer(page, {"engine": "vllm", "model": MODEL, "answer": text, "sources": [source, source2],
                         "grounded": False, "citations": citations})
    ask(page, "Who approves restores?")
    expect(page.locator("#answer-box")).to_have_attribute("data-state", "done")
    expect(page.locator("#answer")).to_have_text(f"{first} [1] {second} {third}")
    expect(page.locator("#answer .claim-uncited")).to_have_text(second)
    expect(page.locator("#answer-checks")).to_have_text(
        "2 of 3 sentences supported (1 with no source cited, 1 found by the checker in a source the model did not "
        "cite, 1 unsupported removed from the answer)")
    expect(page.locator("#answer-notice")).to_have_text(
        "Not grounded: the checker did not find this answer supported by the sources it was given. "
        "Verify it against them before relying on it.")
    expect(page.locator("#sources li .tag")).to_have_text(["cited", "cited"])
    page.locator("#answer a.cite-attributed").click()
    expect(page.locator("#source-text mark")).to_have_text(CHECKED_SOURCE[ticket[0]:ticket[1]])
    # [1, 2]: two links; the passage is in source 2, so [1] says where it is and [2] highlights it.
    multi = page.locator('#answer a.cite[data-sentence="2"]')
    expect(multi).to_have_text(["1", "2"])
    multi.nth(0).click()
    expect(page.locator("#source-text mark")).to_have_count(0)
    expect(page.locator("#source-note")).to_have_text("The passage closest to “The NAS is in rack B.” is in source [2]")
    multi.nth(1).click()
    expect(page.locator("#source-title")).to_have_text("Source [2]")
    expect(page.locator("#source-text mark")).to_have_text(other)

    # No sentence cited: the list is titled "Sources consulted", each source tagged so.
    page.unroute("**/ask")
    routed_answer(page, {"engine": "vllm", "model": MODEL, "answer": second, "grounded": True,
                         "sources": [{**source, "cited": False}], "citations": [{**citations[1], "start": 0,
                                                                                "end": len(second)}]})
    ask(page, "How long are backups kept?")
    expect(page.locator("#answer-box")).to_have_attribute("data-state", "done")
    expect(page.locator("#sources-title")).to_have_text("Sources consulted")
    expect(page.locator("#sources li .tag")).to_have_text("consulted")
    expect(page.locator("#answer-checks")).to_have_text("0 of 1 sentence supported (1 with no source cited)")

    # CITATION_CHECK=drop removed every sentence: the backend's own text, and the count of what it removed.
    page.unroute("**/ask")
    removed = "None of this answer's sentences is supported by the sources it was given, so it is not shown."
    routed_answer(page, {"engine": "vllm", "model": MODEL, "answer": removed, "sources": [source], "grounded": False,
                         "citations": [citations[3], {**citations[3], "sentence": "Twice [1]."}]})
    ask(page, "How often do backups run?")
    expect(page.locator("#answer-box")).to_have_attribute("data-state", "done")
    expect(page.locator("#answer")).to_have_text(removed)
    expect(page.locator("#answer-checks")).to_have_text("2 unsupported sentences removed from the answer")

    # Nothing relevant was found: no sources, no checks, the notice says so.
    page.unroute("**/ask")
    routed_answer(page, {"engine": "vllm", "model": MODEL, "answer": "Nothing relevant was found.", "sources": [],
                         "grounded": False, "citations": []})
    ask(page, "Who approves restores?")
    expect(page.locator("#answer-box")).to_have_attribute("data-state", "done")
    expect(page.locator("#answer-notice")).to_have_text(
        "Not grounded: no document in this space was relevant enough, so this answer does not come from your documents.")
    expect(page.locator("#answer-checks")).to_be_hidden()
    expect(page.locator("#source-panel")).to_be_hidden()


def test_the_real_backend_checks_claims_and_the_console_highlights_the_span(backend, engine, page):
    """Through the real backend and its claim checker: one sentence its source supports, one it does not (90 is
    not in the source). The highlight is compared with POST /ask's own span over the source's text."""
    from playwright.sync_api import expect

    space = "checked"
    use_space_with_one_document(page, backend, space)
    question = "When do backups run and how long are they kept?"
    supported = "Backups run nightly at 02:00 to the NAS in rack B [1]."
    unsupported = "They are kept for 90 days [1]."
    model = engine.models[MODEL]
    model.answer, model.token_delay_s = f"{supported} {unsupported}", 0.0
    try:
        reply = httpx.post(f"{backend}/ask", json={"q": question, "space_id": space},
                           headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        ask(page, question)
        expect(page.locator("#answer-box")).to_have_attribute("data-state", "done")
    finally:
        model.answer, model.token_delay_s = ANSWER, TOKEN_DELAY_S
    checks = {c["sentence"]: c for c in body["citations"]}
    assert checks[supported]["status"] == "supported" and checks[unsupported]["status"] == "unsupported", checks
    span = checks[supported]["span"]
    source_text = body["sources"][span["n"] - 1]["text"]
    assert span["n"] == 1 and 0 <= span["start"] < span["end"] <= len(source_text)

    answer = page.locator("#answer")
    expect(answer).to_have_text(f"{supported} {unsupported}")
    expect(answer.locator(".claim-unsupported")).to_have_text(unsupported)
    expect(answer.locator(".claim-unsupported")).to_have_attribute("title", re.compile("^Not supported by the cited source"))
    assert answer.locator(".claim").count() == 1
    expect(page.locator("#answer-checks")).to_have_text("1 of 2 sentences supported (1 not supported by the cited source)")
    expect(page.locator("#answer-notice")).to_be_hidden()

    answer.locator("a.cite").first.click()
    mark = page.locator("#source-text mark")
    expect(mark).to_have_count(1)
    expect(mark).to_have_text(source_text[span["start"]:span["end"]])
    expect(page.locator("#source-text")).to_have_text(source_text)
    # The picture in docs/console.md and docs/answering.md (copied from test-artifacts/console/).
    screenshot(page, "console-citations.png", VIEWPORT)
