"""Serve mode: a local page and an HTTP API that colorize a photo with a trained run, and with
colour hints for a --guided one (Zhang et al. 2017's interactive colorization).

    python main.py --mode serve --model unet --run_name unet_guided [--port 8000] [--host 127.0.0.1]

    GET  /                 the page (runs/serve.html)
    GET  /api/info         {"model", "weights", "hinted", "image_size", "samples", "max_upload_bytes"}
    POST /api/colorize     multipart form: "image" (a photo), optional "hints" (the JSON --hints
                           reads: [[x, y, "#rrggbb"], ...] at the photo's resolution), optional
                           "variant" (0: the colorization; 1..samples: a stochastic family's
                           samples, drawn with --seed) -> image/png, the photo's own L with the
                           colours the network predicts at the run's size
    POST /api/suggest      the same form with "x" and "y" -> {"colours": ["#rrggbb", ...]}: what
                           the model proposes at that pixel, most likely first (the page's palette)
    errors                 {"error": "..."} with 400 (a bad photo or hints), 404, 405, 413 (too
                           large), 500 (anything unforeseen: the server goes on)

The colorizer is loaded once. Uploads are written only into a temporary folder (deleted after the
request) and decoded with the same guards as every other image (util/images.py: the
decompression-bomb limit read from the header). Only localhost is served unless --host says
otherwise. Colorizations run one at a time.
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from models import hints as hint_maps
from runs.settings import pick_device, resolve
from runs.weights import load_colorizer, load_weights
from util import colour, hint_files, images, visuals

MAX_UPLOAD_BYTES = 40 * 2 ** 20  # a 12-megapixel JPEG is 3-8 MB; a PNG of one up to ~36 MB
PAGE = Path(__file__).with_name("serve.html")


class RequestError(Exception):
    """A request that cannot be served; `status` is its HTTP status, the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Colorizing:
    """The run's colorizer and what one request needs: a photo (and hints) in, a PNG out."""

    def __init__(self, colorizer, image_size: int, max_pixels: int, info: dict, seed: int = 0):
        self.colorizer, self.image_size, self.max_pixels, self.info = colorizer, image_size, max_pixels, info
        self.seed = seed
        self.lock = threading.Lock()

    def png(self, photo: bytes, hints_json: str | None, variant: str | None = None) -> bytes:
        rgb, hint_map = self._inputs(photo, hints_json)
        v, samples = self._number(variant or "0", "variant"), self.info["samples"]
        if not 0 <= v <= (samples if samples > 1 else 0):
            more = f" and 1..{samples} (the samples)" if samples > 1 else ": this run has no samples"
            raise RequestError(400, f"variant: {v} is not one of 0 (the colorization){more}")

        def predict(L):
            if v == 0:
                return self.colorizer.predict_ab(L, hint_map)
            with self._seeded():  # sample v of the same draw, whatever came before
                return self.colorizer.sample_ab(L, samples, hint_map)[v - 1]

        original = images.to_chw_tensor(rgb)[None].to(self.colorizer.device)
        with self.lock, torch.no_grad(), self.colorizer.autocast():
            out = colour.colorize_full_resolution(predict, original, self.image_size)
        buffer = io.BytesIO()
        visuals.to_pil(out[0]).save(buffer, format="PNG", compress_level=1)  # level 1: 3x faster at 12 MP
        return buffer.getvalue()

    def suggest(self, photo: bytes, hints_json: str | None, x: str | None, y: str | None, k: int = 6) -> list[str]:
        """The colours the model proposes at pixel (x, y) of the photo, with the photo's L there."""
        rgb, hint_map = self._inputs(photo, hints_json)
        (h, w), x, y = rgb.shape[:2], self._number(x, "x"), self._number(y, "y")
        if not (0 <= x < w and 0 <= y < h):
            raise RequestError(400, f"x, y: ({x}, {y}) is outside the {w}x{h} photo")
        original = images.to_chw_tensor(rgb)[None].to(self.colorizer.device).float() / 255
        L = colour.rgb_to_model(original)[0]
        small = colour.L_at_model_size(L, self.image_size)
        with self.lock, torch.no_grad(), self.colorizer.autocast():
            with self._seeded():
                ab = self.colorizer.proposals(small, k, hint_map).float()  # (n, 1, 2, S, S)
        sy, sx = (y + 0.5) * self.image_size // h, (x + 0.5) * self.image_size // w
        ab = ab[:, 0, :, int(sy), int(sx)]
        rgb_points = colour.compose_rgb(L[:, :, y, x].expand(len(ab), 1)[..., None, None], ab[..., None, None])
        colours = []
        for r, g, b in (rgb_points[:, :, 0, 0].clamp(0, 1) * 255).round().int().tolist():
            if all(abs(r - r2) + abs(g - g2) + abs(b - b2) > 12 for r2, g2, b2 in colours):  # distinct ones
                colours.append((r, g, b))
        return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in colours]

    def _inputs(self, photo: bytes, hints_json: str | None):
        """The decoded photo (H, W, 3) and its hint map (None without hints), checked."""
        rgb = self._decode(photo)
        h, w = rgb.shape[:2]
        if not hints_json:
            return rgb, None
        try:
            points = hint_files.points_from_json(json.loads(hints_json), "hints", w, h)
            hint_map = hint_maps.map_from_points(points, w, h, self.image_size).to(self.colorizer.device)
            self.colorizer.check_hints(hint_map)  # a run trained without hints refuses them
        except json.JSONDecodeError as e:
            raise RequestError(400, f"hints: not valid JSON ({e})") from None
        except hint_files.HintError as e:
            raise RequestError(400, str(e)) from None
        return rgb, hint_map

    @contextlib.contextmanager
    def _seeded(self):
        """Random draws from --seed, the process's generators (the colorizer's device's) left as they were."""
        device = self.colorizer.device
        cuda = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed)
            yield

    @staticmethod
    def _number(text: str | None, name: str) -> int:
        try:
            return int(text)
        except (TypeError, ValueError):
            raise RequestError(400, f"{name}: {text!r} is not a whole number") from None

    def _decode(self, photo: bytes):
        """The upload as (H, W, 3) uint8, decoded from a temporary file with util/images' guards."""
        with tempfile.TemporaryDirectory(prefix="colorize-serve-") as folder:
            path = Path(folder) / "upload"
            path.write_bytes(photo)
            try:
                return images.load_rgb(path, self.max_pixels)
            except images.BadImage as e:
                raise RequestError(400, f"image: {str(e).replace(repr(str(path)), 'the upload')}") from None


def form_fields(content_type: str, body: bytes) -> dict:
    """The fields of a multipart/form-data body: {name: bytes}."""
    if not content_type.startswith("multipart/form-data"):
        raise RequestError(400, "expected a multipart/form-data upload with an \"image\" field")
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not message.is_multipart():
        raise RequestError(400, "the multipart form cannot be read")
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True) or b""
            for part in message.iter_parts()}


def handler_for(colorizing: Colorizing):
    class Handler(BaseHTTPRequestHandler):
        server_version = "colorize-serve"
        colorizing = None  # set below: what the requests are served with

        def log_message(self, fmt, *args):  # one line per request on stderr, as http.server does
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            self._send(status, json.dumps({"error": message}).encode(), "application/json")

        def do_GET(self):
            path = self.path.split("?", 1)[0]  # the page reads its own query (?photo=...&hints=...)
            if path in ("/", "/index.html"):
                self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
            elif path == "/api/info":
                self._send(200, json.dumps({**colorizing.info, "max_upload_bytes": MAX_UPLOAD_BYTES}).encode(),
                           "application/json")
            else:
                self._error(404, f"no such page: {self.path}")

        def do_POST(self):
            try:
                if self.path not in ("/api/colorize", "/api/suggest"):
                    raise RequestError(404, f"no such endpoint: {self.path} (POST /api/colorize or /api/suggest)")
                length = int(self.headers.get("Content-Length") or -1)
                if length < 0:
                    raise RequestError(411, "a Content-Length is needed")
                if length > MAX_UPLOAD_BYTES:
                    raise RequestError(413, f"the upload is {length} bytes, more than the limit of "
                                            f"{MAX_UPLOAD_BYTES}")
                fields = form_fields(self.headers.get("Content-Type", ""), self.rfile.read(length))
                if not fields.get("image"):
                    raise RequestError(400, "no \"image\" field in the form")
                text = {k: v.decode("utf-8", "replace") for k, v in fields.items() if k != "image" and v}
                if self.path == "/api/suggest":
                    colours = colorizing.suggest(fields["image"], text.get("hints"), text.get("x"), text.get("y"))
                    self._send(200, json.dumps({"colours": colours}).encode(), "application/json")
                else:
                    self._send(200, colorizing.png(fields["image"], text.get("hints"), text.get("variant")),
                               "image/png")
            except RequestError as e:
                self._error(e.status, str(e))
            except Exception as e:  # what no check foresaw: said, and the server goes on
                self._error(500, f"{type(e).__name__}: {e}")

        def do_PUT(self):
            self._error(405, "POST /api/colorize or /api/suggest, GET / or GET /api/info")

        do_DELETE = do_PATCH = do_PUT

    Handler.colorizing = colorizing
    return Handler


def make_server(colorizing: Colorizing, host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), handler_for(colorizing))
    server.daemon_threads = True
    return server


def open_server(args, given, family, run_dir: Path) -> ThreadingHTTPServer:
    """The run's colorizer, loaded once, behind a server bound to --host and --port (not yet serving)."""
    device = pick_device(args.device)
    saved, weights = load_weights(args, family, run_dir)
    settings = resolve(family, args, given, saved)
    args = settings.args
    colorizer = load_colorizer(family, settings, saved, device)
    info = {"model": args.model, "weights": weights, "hinted": colorizer.hinted, "image_size": args.image_size,
            "samples": colorizer.sampling().get("num_samples", 1)}
    return make_server(Colorizing(colorizer, args.image_size, args.max_image_pixels, info, args.seed),
                       args.host, args.port)


def serve(args, given, family, run_dir: Path) -> int:
    """--mode serve: the page and API until Ctrl-C."""
    try:
        server = open_server(args, given, family, run_dir)
    except OSError as e:  # the port is taken, the address is not this machine's, ...
        print(f"error: cannot serve on {args.host}:{args.port}: {e.strerror or e}; choose another --port "
              f"(0: any free one)", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    info = server.RequestHandlerClass.colorizing.info
    print(f"serving {info['model']} ({info['weights']}) on http://{host}:{port}/"
          + ("" if info["hinted"] else " (this run takes no colour hints: automatic colorization only)")
          + (f" with its {info['samples']} samples as variants" if info["samples"] > 1 else "")
          + "; Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0
