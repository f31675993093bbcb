"""The playground page of `transformer serve` (transformer/serve/static/) in a real browser: Debian's Chromium,
driven by Playwright, over the real app (create_app, served by uvicorn on a free port) and a tiny model trained
here. These check that the page works (it shows the server's answers, the heatmap follows the hovered or focused
token), not what the model translates."""

import socket
import threading
import time
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own browsers are never downloaded (.ci/run)

ALPHA = 0.003  # the browser keeps an opacity to 1/255

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def base_url(translation_dir):
    """The URL of `transformer serve`'s app over conftest's translation_dir (80 updates: several output tokens
    to hover), run by uvicorn in a thread on a free port."""
    import uvicorn

    from transformer.serve.app import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(translation_dir), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, base_url):
    """The page, loaded; fails the test on any JavaScript error it raised."""
    context = browser.new_context(viewport={"width": 1000, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(base_url)
    expect(page.locator("#model-info")).to_contain_text("Task: translation")
    yield page
    context.close()
    assert errors == [], errors


def translate(page, text: str, nbest: int = 2) -> dict:
    """Type `text`, press Enter, and return the server's JSON answer once the page has shown it."""
    page.get_by_label("Text to translate", exact=True).fill(text)
    page.get_by_label("N-best", exact=True).fill(str(nbest))
    with page.expect_response("**/api/translate") as response:
        page.get_by_label("Text to translate", exact=True).press("Enter")
    answer = response.value.json()
    assert response.value.ok, answer
    expect(page.get_by_role("button", name="Translate")).to_be_enabled()
    return answer


def weights(attention: dict, layer: int, head: int | None, t: int) -> list[float]:
    """The row the page shades by: output token t's weights in `layer`, `head` (None: averaged over heads)."""
    heads = attention["cross"][layer]
    rows = heads if head is None else [heads[head]]
    return [sum(row[t][s] for row in rows) / len(rows) for s in range(len(attention["source_tokens"]))]


def shades(page) -> list[float]:
    """Each source token's background opacity, as the browser computed it (0: unshaded)."""
    colours = page.locator("#source-tokens .token").evaluate_all(
        "spans => spans.map(span => getComputedStyle(span).backgroundColor)")
    # "rgb(255, 255, 255)": unshaded; "rgba(37, 99, 235, 0.157)" and "rgb(37, 99, 235)": shaded
    return [0.0 if c == "rgb(255, 255, 255)" else float(c.split(",")[3][:-1]) if c.startswith("rgba") else 1.0
            for c in colours]


def expected_shades(row: list[float]) -> list[float]:
    return [w / max(row) for w in row]


def source_pixels(page) -> tuple[bytes, list[tuple[int, int, int]]]:
    """A screenshot of the source tokens, and the rendered colour of each token's background (a pixel of its
    left padding, beside the text)."""
    region = page.locator("#source-tokens")
    box = region.bounding_box()
    png = region.screenshot()
    image = Image.open(BytesIO(png)).convert("RGB")
    colours = []
    for span in page.locator("#source-tokens .token").all():
        b = span.bounding_box()
        colours.append(image.getpixel((round(b["x"] - box["x"] + 3), round(b["y"] - box["y"] + b["height"] / 2))))
    return png, colours


def choose(attention: dict) -> tuple[float, int, int, int, int]:
    """The layer, head and two output tokens whose heatmaps differ most (the tiny model's are close to uniform),
    after the largest difference of a source token's shade between the two."""
    cross = attention["cross"]
    best, choice = -1.0, None
    for layer in range(len(cross)):
        for head in range(len(cross[layer])):
            rows = [expected_shades(weights(attention, layer, head, t)) for t in range(len(cross[layer][head]))]
            for t1 in range(len(rows)):
                for t2 in range(t1 + 1, len(rows)):
                    gap = max(abs(a - b) for a, b in zip(rows[t1], rows[t2], strict=True))
                    if gap > best:
                        best, choice = gap, (gap, layer, head, t1, t2)
    return choice


def test_the_page_shows_the_translation_the_n_best_list_and_the_attention_controls(page):
    with page.expect_request("**/api/translate") as request:
        answer = translate(page, "haus baum hund katze", nbest=3)
    assert request.value.post_data_json == {"text": "haus baum hund katze", "nbest": 3, "beam": None,
                                            "attention": True}
    assert page.locator("#translation").text_content() == answer["translation"]
    items = page.locator("#nbest-list li")
    assert [item.locator(".hypothesis").text_content() for item in items.all()] == [h["text"] for h in answer["nbest"]]
    assert [item.locator(".score").text_content() for item in items.all()] == [
        f"{h['score']:.3f}" for h in answer["nbest"]]
    assert answer["nbest"]

    attention = answer["attention"]
    layers, heads = len(attention["cross"]), len(attention["cross"][0])
    assert page.locator("#target-tokens .token").all_text_contents() == attention["target_tokens"]
    assert page.locator("#source-tokens .token").all_text_contents() == attention["source_tokens"]
    assert page.locator("#layer option").all_text_contents() == [f"{i} of {layers}" for i in range(1, layers + 1)]
    assert page.locator("#head option").all_text_contents() == [
        *(f"{i} of {heads}" for i in range(1, heads + 1)), "Average of heads"]
    assert page.get_by_label("Layer", exact=True).input_value() == str(layers - 1)  # the last layer, heads averaged
    assert page.get_by_label("Head", exact=True).input_value() == "mean"
    assert shades(page) == [0.0] * len(attention["source_tokens"])  # nothing hovered yet


def test_hovering_an_output_token_shades_the_source_tokens_it_attended_to(page):
    attention = translate(page, "wort gott licht erde")["attention"]
    assert len(attention["target_tokens"]) >= 2, attention["target_tokens"]
    gap, layer, head, t1, t2 = choose(attention)
    assert gap > 0.05, "the tiny model's heatmaps are all alike: train it longer"
    page.get_by_label("Layer", exact=True).select_option(str(layer))
    page.get_by_label("Head", exact=True).select_option(str(head))
    targets = page.locator("#target-tokens .token")
    blank_png, blank = source_pixels(page)
    assert len(set(blank)) == 1  # un-hovered: one colour, the page's white

    targets.nth(t1).hover()
    row1 = weights(attention, layer, head, t1)
    assert shades(page) == pytest.approx(expected_shades(row1), abs=ALPHA)
    png1, colours1 = source_pixels(page)
    assert len(set(colours1)) > 1, colours1  # a heatmap, not a blank region
    assert png1 != blank_png
    luminance = [sum(c) for c in colours1]
    assert luminance[row1.index(max(row1))] == min(luminance)  # darkest where the weight is largest
    expect(targets.nth(t1)).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#attention-caption")).to_contain_text(f"“{attention['target_tokens'][t1]}”")

    targets.nth(t2).hover()
    assert shades(page) == pytest.approx(expected_shades(weights(attention, layer, head, t2)), abs=ALPHA)
    png2, colours2 = source_pixels(page)
    assert png2 != png1 and colours2 != colours1
    expect(targets.nth(t1)).to_have_attribute("aria-pressed", "false")

    page.get_by_label("Head", exact=True).select_option("mean")  # the hovered token's heatmap follows the selectors
    assert shades(page) == pytest.approx(expected_shades(weights(attention, layer, None, t2)), abs=ALPHA)


def test_the_keyboard_focus_on_an_output_token_shades_as_hovering_does(page):
    attention = translate(page, "himmel erde mann frau")["attention"]
    layer = len(attention["cross"]) - 1
    page.get_by_label("Head", exact=True).focus()
    page.keyboard.press("Tab")
    first = page.locator("#target-tokens .token").nth(0)
    expect(first).to_be_focused()
    expect(first).to_have_attribute("aria-pressed", "true")
    assert shades(page) == pytest.approx(expected_shades(weights(attention, layer, None, 0)), abs=ALPHA)
    page.keyboard.press("Tab")
    expect(page.locator("#target-tokens .token").nth(1)).to_be_focused()
    assert shades(page) == pytest.approx(expected_shades(weights(attention, layer, None, 1)), abs=ALPHA)


def test_without_attention_the_page_shows_the_translation_alone(page):
    page.get_by_label("Show attention", exact=True).uncheck()
    with page.expect_request("**/api/translate") as request:
        answer = translate(page, "hund wasser", nbest=1)
    assert request.value.post_data_json == {"text": "hund wasser", "nbest": 1, "beam": None, "attention": False}
    assert answer["attention"] is None
    assert page.locator("#translation").text_content() == answer["translation"]
    expect(page.locator("#result")).to_be_visible()
    expect(page.locator("#attention")).to_be_hidden()
    expect(page.locator("#nbest-list li")).to_have_count(1)


def test_the_servers_error_message_is_shown(page):
    page.get_by_label("Text to translate", exact=True).fill("haus " * 500)  # over the server's --max-input-chars 2000
    with page.expect_response("**/api/translate") as response:
        page.get_by_role("button", name="Translate").click()
    assert response.value.status == 422
    message = response.value.json()["detail"][0]["msg"]
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text(message)
    translate(page, "haus")  # a good request clears the error
    expect(page.get_by_role("alert")).to_be_hidden()
