"""Serve mode's HTTP API: a photo in, its colorization at full resolution out; hints change it
where they are; bad requests are clear 4xx errors and the server goes on."""
import io
import json
import os
import shutil
import struct
import threading
import urllib.error
import urllib.request
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY
from PIL import Image

import main
from registry import REGISTRY


def form(fields: dict) -> tuple[bytes, str]:
    boundary = "----colorize-test-boundary"
    body = b""
    for name, (filename, data) in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, fields: dict):
    body, kind = form(fields)
    request = urllib.request.Request(url + "/api/colorize", data=body, headers={"Content-Type": kind})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def serving(tmp_path, family: str, train: list[str], serve: list[str]):
    """A tiny run of `family` trained one epoch on tiny data, served on a free port in a thread."""
    from conftest import colour_crops, write_images

    from runs.serve import open_server

    write_images(tmp_path / "data" / "train", colour_crops(10, seed=1))
    write_images(tmp_path / "data" / "test", colour_crops(4, seed=2))
    flags = [*TINY, *REGISTRY[family].smoke_flags(), "--model", family, "--data", str(tmp_path / "data"),
             "--results", str(tmp_path / "R"), "--epochs", "1", "--input", "", *train]
    assert main.main(flags) == 0
    _, args, given = main.parse_args(["--mode", "serve", "--port", "0", *flags, *serve])
    server = open_server(args, given, REGISTRY[family], tmp_path / "R" / family)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, SimpleNamespace(url=f"http://{host}:{port}", port=port, flags=flags)


@pytest.fixture(scope="module")
def guided_server(tmp_path_factory):
    """A guided unet (once for this module)."""
    server, served = serving(tmp_path_factory.mktemp("serve"), "unet", ["--guided"], [])
    yield served
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def sampling_server(tmp_path_factory):
    """A stochastic family without hints (unetddpm, 4 noise levels) served with --num_samples 3."""
    server, served = serving(tmp_path_factory.mktemp("serve_ddpm"), "unetddpm", ["--timesteps", "4"],
                             ["--num_samples", "3"])
    yield served
    server.shutdown()
    server.server_close()


def test_the_api_colorizes_at_full_resolution_and_hints_change_it_where_they_are(guided_server):
    info = json.loads(urllib.request.urlopen(guided_server.url + "/api/info", timeout=30).read())
    assert info["hinted"] and info["model"] == "unet"
    page = urllib.request.urlopen(guided_server.url + "/", timeout=30).read().decode()
    assert "/api/colorize" in page and "<canvas" in page
    rng = np.random.default_rng(0)
    photo = (rng.random((90, 130, 3)) * 255).astype(np.uint8)
    status, kind, body = post(guided_server.url, {"image": ("p.png", png_bytes(photo))})
    assert status == 200 and kind == "image/png"
    plain = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    assert plain.shape == photo.shape
    from skimage.color import rgb2lab

    lightness = np.abs(rgb2lab(plain)[..., 0] - rgb2lab(photo)[..., 0])
    assert lightness.mean() < 3, lightness.mean()  # the photo's own L (up to 8-bit rounding and gamut clipping)
    hints = json.dumps([[100, 20, "#00ff00"], [101, 21, "#00ff00"]]).encode()
    status, _, body = post(guided_server.url, {"image": ("p.png", png_bytes(photo)), "hints": (None, hints)})
    assert status == 200
    hinted = np.asarray(Image.open(io.BytesIO(body)).convert("RGB")).astype(int)
    change = np.abs(hinted - plain.astype(int)).sum(2)
    assert change[15:27, 95:107].mean() > change[60:, :40].mean()  # the change is where the hints are


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, on reading the bomb's header
def test_bad_requests_are_clear_errors_and_the_server_goes_on(guided_server):
    cases = [({"image": ("x.png", b"not an image")}, 400, "image"),
             ({"nothing": (None, b"1")}, 400, "no \"image\""),
             ({"image": ("p.png", png_bytes(np.zeros((20, 20, 3), np.uint8))), "hints": (None, b"[[99, 1, \"#fff\"]]")},
              400, "outside"),
             ({"image": ("p.png", png_bytes(np.zeros((20, 20, 3), np.uint8))), "hints": (None, b"{oops")}, 400, "JSON")]
    for fields, code, words in cases:
        status, kind, body = post(guided_server.url, fields)
        assert status == code and kind == "application/json" and words in json.loads(body)["error"], body
    # a decompression bomb: a small file whose header claims more pixels than --max_image_pixels
    from util.images import DEFAULT_MAX_IMAGE_PIXELS

    side = int(DEFAULT_MAX_IMAGE_PIXELS ** 0.5) + 100
    bomb = bytearray(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    bomb[16:24] = struct.pack(">II", side, side)  # IHDR's width and height, then its CRC
    bomb[29:33] = struct.pack(">I", zlib.crc32(bytes(bomb[12:29])))
    status, _, body = post(guided_server.url, {"image": ("bomb.png", bytes(bomb))})
    assert status == 400 and "max_image_pixels" in json.loads(body)["error"], body
    # an upload over the size limit is refused from its Content-Length, before it is read
    import http.client

    from runs.serve import MAX_UPLOAD_BYTES

    connection = http.client.HTTPConnection("127.0.0.1", guided_server.port, timeout=30)
    connection.putrequest("POST", "/api/colorize")
    connection.putheader("Content-Type", "multipart/form-data; boundary=x")
    connection.putheader("Content-Length", str(MAX_UPLOAD_BYTES + 1))
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 413 and "limit" in json.loads(answer.read())["error"]
    connection.close()
    request = urllib.request.Request(guided_server.url + "/api/colorize", data=b"x" * 10,
                                     headers={"Content-Type": "text/plain"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=30)
    assert e.value.code == 400
    status, _, _ = post(guided_server.url, {"image": ("p.png", png_bytes(np.zeros((20, 20, 3), np.uint8)))})
    assert status == 200  # still serving


@pytest.fixture(scope="module")
def chromium():
    """Headless Chromium (the Debian package) driven by Playwright (requirements-dev.txt): real
    uploads, clicks and drags. Missing either is a skip here and a failure in CI."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("Playwright is not installed: pip install -r requirements-dev.txt")
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        assert not os.environ.get("CI"), "no Chromium: .ci/run installs the Debian package"
        pytest.skip("no Chromium here (.ci/run installs the Debian package)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        yield launched
        launched.close()


def shown(page) -> np.ndarray:
    """The colorization the page shows, as RGB pixels (the PNG the server answered)."""
    data = page.evaluate("""async () => {
        const blob = await (await fetch(document.getElementById("result").src)).blob();
        return Array.from(new Uint8Array(await blob.arrayBuffer())); }""")
    return np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB")).astype(int)


def settled(page, before: str | None = None) -> None:
    """Wait until the page shows a colorization newer than `before` (the result's previous src)."""
    page.wait_for_function("""before => { const r = document.getElementById("result");
        return document.getElementById("status").textContent === "colorized" && r.src && r.src !== before; }""",
                           arg=before, timeout=60_000)


def click_at(page, x: float, y: float, then=None) -> None:
    """Press on the photo's pixel (x, y) of the grey canvas (scaled on screen), then release at
    `then` (a drag) or where it was pressed (a click)."""
    box = page.locator("#photo").bounding_box()
    size = page.evaluate("[document.getElementById('photo').width, bitmap.width]")
    k = box["width"] / size[0] * size[0] / size[1]  # screen pixels per photo pixel

    def screen(px, py):
        return box["x"] + (px + 0.5) * k, box["y"] + (py + 0.5) * k

    page.mouse.move(*screen(x, y))
    page.mouse.down()
    if then is not None:
        page.mouse.move(*screen(*then), steps=5)
    page.mouse.up()


def test_in_chromium_a_person_uploads_places_drags_recolours_undoes_and_downloads(guided_server, chromium, tmp_path):
    """The page as a person uses it: choose a photo (1.2 MP, so the preview is smaller than the
    photo), click a hint, drag it, take a colour from the model's palette, undo, download the
    colorization at full resolution and the hints as the JSON --hints reads."""
    from util import hint_files

    blocks = np.random.default_rng(0).integers(60, 200, (25, 30, 3), dtype=np.uint8)  # texture for the network
    photo = np.kron(blocks, np.ones((40, 40, 1), np.uint8))
    Image.fromarray(photo).save(tmp_path / "photo.png")
    page = chromium.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page.goto(guided_server.url + "/")
    page.wait_for_selector("#hintbar", state="visible")
    page.set_input_files("#file", str(tmp_path / "photo.png"))
    settled(page)
    plain = shown(page)
    assert plain.shape[:2] == (913, 1095)  # the preview: at most a megapixel

    page.locator("#colour").fill("#00ff00")
    before = page.get_attribute("#result", "src")
    click_at(page, 300, 250)
    settled(page, before)
    assert page.evaluate("hints") == [[300, 250, "#00ff00"]]
    green = shown(page)
    change = np.abs(green - plain).sum(2)
    at = change[int(250 * 0.913) - 8:int(250 * 0.913) + 8, int(300 * 0.9125) - 8:int(300 * 0.9125) + 8]
    # a network trained one epoch at 16 px reacts a little, but only there
    assert at.mean() > 0 and at.mean() > 10 * change[700:, 800:].mean(), "no change where the hint is"

    before = page.get_attribute("#result", "src")
    click_at(page, 300, 250, then=(800, 700))  # drag it
    settled(page, before)
    [[x, y, col]] = page.evaluate("hints")
    assert abs(x - 800) <= 2 and abs(y - 700) <= 2 and col == "#00ff00"
    dragged = np.abs(shown(page) - plain).sum(2)
    assert dragged[int(700 * 0.913) - 8:int(700 * 0.913) + 8, int(800 * 0.9125) - 8:int(800 * 0.9125) + 8].mean() > \
        dragged[int(250 * 0.913) - 8:int(250 * 0.913) + 8, int(300 * 0.9125) - 8:int(300 * 0.9125) + 8].mean()

    page.wait_for_selector("#palette .proposal")  # the model's own colours at the selected hint
    proposal = page.get_attribute("#palette .proposal", "title")
    assert proposal.startswith("#") and len(proposal) == 7
    before = page.get_attribute("#result", "src")
    page.click("#palette .proposal")
    settled(page, before)
    assert page.evaluate("hints")[0][2] == proposal
    page.click("#undo")
    page.wait_for_function("hints.length === 1 && hints[0][2] === '#00ff00'")

    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / "colorized.png"
    download.value.save_as(saved)
    full = np.asarray(Image.open(saved).convert("RGB"))
    assert full.shape == photo.shape  # the full resolution, not the preview
    with page.expect_download() as download:
        page.click("#savehints")
    download.value.save_as(tmp_path / "hints.json")
    points = hint_files.read_points(tmp_path / "hints.json", 1200, 1000)  # what --hints reads
    assert len(points) == 1
    page.close()


def test_a_link_opens_the_page_on_a_photo_with_its_hints(guided_server, chromium):
    """?photo=URL&hints=JSON: a link that opens the page with a photo and hints placed."""
    import base64
    import urllib.parse

    photo = "data:image/png;base64," + base64.b64encode(png_bytes(np.full((60, 80, 3), 128, np.uint8))).decode()
    page = chromium.new_page()
    page.goto(f"{guided_server.url}/?" + urllib.parse.urlencode({"photo": photo, "hints": "[[10, 20, \"#0000ff\"]]"}))
    page.wait_for_function("hints.length === 1 && document.getElementById('status').textContent === 'colorized'",
                           timeout=60_000)
    assert page.evaluate("hints") == [[10, 20, "#0000ff"]] and shown(page).shape == (60, 80, 3)
    page.close()


def test_a_stochastic_run_serves_its_samples_as_variants_and_refuses_hints(sampling_server):
    info = json.loads(urllib.request.urlopen(sampling_server.url + "/api/info", timeout=30).read())
    assert info["samples"] == 3 and not info["hinted"]
    photo = ("p.png", png_bytes((np.random.default_rng(1).random((40, 50, 3)) * 255).astype(np.uint8)))
    shots = {}
    for v in ("0", "1", "2", "1"):
        status, kind, body = post(sampling_server.url, {"image": photo, "variant": (None, v.encode())})
        assert status == 200 and kind == "image/png"
        picture = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
        assert shots.setdefault(v, picture) is picture or np.array_equal(shots[v], picture)  # the same draw again
    assert not np.array_equal(shots["1"], shots["2"])  # samples differ
    for fields, words in (({"variant": (None, b"4")}, "1..3"), ({"variant": (None, b"two")}, "whole number"),
                          ({"hints": (None, b"[[1, 1, \"#ff0000\"]]")}, "without colour hints")):
        status, kind, body = post(sampling_server.url, {"image": photo, **fields})
        assert status == 400 and words in json.loads(body)["error"], body
    body, kind = form({"image": photo, "x": (None, b"10"), "y": (None, b"20")})
    request = urllib.request.Request(sampling_server.url + "/api/suggest", data=body, headers={"Content-Type": kind})
    colours = json.loads(urllib.request.urlopen(request, timeout=60).read())["colours"]
    assert 2 <= len(colours) <= 7 and all(c.startswith("#") and len(c) == 7 for c in colours)


def test_in_chromium_a_stochastic_run_offers_its_samples_and_no_hints(sampling_server, chromium, tmp_path):
    Image.fromarray((np.random.default_rng(2).random((60, 80, 3)) * 255).astype(np.uint8)).save(tmp_path / "p.png")
    page = chromium.new_page()
    page.goto(sampling_server.url + "/")
    page.wait_for_selector("#variantbar", state="visible")
    assert page.locator("#hintbar").is_hidden() and page.locator("#variant option").count() == 4
    page.set_input_files("#file", str(tmp_path / "p.png"))
    settled(page)
    first = shown(page)
    before = page.get_attribute("#result", "src")
    page.select_option("#variant", "2")
    settled(page, before)
    assert not np.array_equal(shown(page), first)
    click_at(page, 10, 10)
    assert page.evaluate("hints") == []  # a run without hints takes none
    page.close()


def test_a_taken_port_is_a_clear_error_not_a_traceback(guided_server, capsys):
    assert main.main(["--mode", "serve", "--port", str(guided_server.port), *guided_server.flags]) == 2
    assert "cannot serve on 127.0.0.1" in capsys.readouterr().err
