"""Serve mode's HTTP API: a photo in, its colorization at full resolution out; hints change it
where they are; bad requests are clear 4xx errors and the server goes on."""
import io
import json
import threading
import urllib.error
import urllib.request
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


@pytest.fixture(scope="module")
def guided_server(tmp_path_factory):
    """A guided unet trained one epoch on tiny data, served on a free port (once for this module)."""
    from conftest import colour_crops, write_images

    from runs.serve import open_server

    tmp_path = tmp_path_factory.mktemp("serve")
    write_images(tmp_path / "data" / "train", colour_crops(10, seed=1))
    write_images(tmp_path / "data" / "test", colour_crops(4, seed=2))
    flags = [*TINY, *REGISTRY["unet"].smoke_flags(), "--data", str(tmp_path / "data"), "--results",
             str(tmp_path / "R"), "--epochs", "1", "--guided", "--input", ""]
    assert main.main(flags) == 0
    _, args, given = main.parse_args(["--mode", "serve", "--port", "0", *flags])
    server = open_server(args, given, REGISTRY["unet"], tmp_path / "R" / "unet")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    yield SimpleNamespace(url=f"http://{host}:{port}", port=port, flags=flags)
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


def test_bad_requests_are_clear_errors_and_the_server_goes_on(guided_server):
    cases = [({"image": ("x.png", b"not an image")}, 400, "image"),
             ({"nothing": (None, b"1")}, 400, "no \"image\""),
             ({"image": ("p.png", png_bytes(np.zeros((20, 20, 3), np.uint8))), "hints": (None, b"[[99, 1, \"#fff\"]]")},
              400, "outside"),
             ({"image": ("p.png", png_bytes(np.zeros((20, 20, 3), np.uint8))), "hints": (None, b"{oops")}, 400, "JSON")]
    for fields, code, words in cases:
        status, kind, body = post(guided_server.url, fields)
        assert status == code and kind == "application/json" and words in json.loads(body)["error"], body
    request = urllib.request.Request(guided_server.url + "/api/colorize", data=b"x" * 10,
                                     headers={"Content-Type": "text/plain"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=30)
    assert e.value.code == 400
    status, _, _ = post(guided_server.url, {"image": ("p.png", png_bytes(np.zeros((20, 20, 3), np.uint8)))})
    assert status == 200  # still serving


def test_the_page_in_chromium_colorizes_a_photo_and_recolours_it_where_a_hint_is_placed(guided_server, tmp_path):
    """Headless Chromium opens the page on a photo (?photo=), once without and once with a green
    hint (?hints=): the page draws the hint on the grey photo and the colorization it shows changes."""
    import base64
    import shutil
    import subprocess
    import urllib.parse

    import torch

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium here (.ci/run installs the Debian package)")
    photo = np.full((120, 160, 3), 128, np.uint8)
    photo_url = "data:image/png;base64," + base64.b64encode(png_bytes(photo)).decode()

    def coloured(shot):  # the colorization's pixels (the colour picker's swatch is above them)
        mask = (shot.max(-1).values - shot.min(-1).values) > 12
        mask[:shot.shape[0] // 3] = False
        return mask

    def screenshot(name, hints):
        """The page once its colorization is shown: the screenshot may come before the answer does
        (the browser's virtual time runs on while the server colorizes), so it is taken again."""
        query = urllib.parse.urlencode({"photo": photo_url, "hints": json.dumps(hints)})
        shot = tmp_path / name
        for _ in range(4):
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--window-size=900,700", "--virtual-time-budget=30000", f"--screenshot={shot}",
                            f"{guided_server.url}/?{query}"], capture_output=True, timeout=120, check=True)
            image = torch.from_numpy(np.array(Image.open(shot).convert("RGB"))).int()
            if coloured(image).sum() > 1000:
                return image
        raise AssertionError(f"no colorization is shown in {shot}")

    plain = screenshot("plain.png", [])
    hinted = screenshot("hinted.png", [[40, 60, "#00ff00"], [41, 60, "#00ff00"], [40, 61, "#00ff00"]])
    ys, xs = coloured(plain).nonzero(as_tuple=True)
    box = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
    photo_box = (box[0], slice(0, int(xs.min())))  # the grey photo, left of it
    changed = (hinted - plain).abs().sum(-1)
    assert (changed[photo_box] > 100).sum() > 20, "the hint is not drawn on the grey photo"
    assert (changed[box] > 0).sum() > 0, "the colorization did not change with the hint"



def test_a_taken_port_is_a_clear_error_not_a_traceback(guided_server, capsys):
    assert main.main(["--mode", "serve", "--port", str(guided_server.port), *guided_server.flags]) == 2
    assert "cannot serve on 127.0.0.1" in capsys.readouterr().err
