import io
import struct
import zlib

import numpy as np
import pytest
import torch
from conftest import colour_crops, write_images
from PIL import Image

import colorize_data as cd
from util import batches, images


def png16_rgb(path, arr16):
    """Write a 16-bit-per-channel RGB PNG by hand (Pillow cannot write one)."""
    h, w, _ = arr16.shape
    raw = b"".join(b"\x00" + arr16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture
def bad_corpus(tmp_path):
    root = tmp_path / "corpus"
    good = colour_crops(6, size=(36, 40), seed=5)
    write_images(root, good[:3], prefix="good")
    buf = io.BytesIO()
    Image.fromarray(good[3]).save(buf, "JPEG")
    jpeg = buf.getvalue()
    (root / "corrupt.jpg").write_bytes(jpeg[:20] + b"\x00garbage" * 50)
    buf = io.BytesIO()
    Image.fromarray(good[4]).save(buf, "PNG")
    (root / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("this is not an image")
    Image.fromarray(good[5][..., 0]).save(root / "grey.png")
    rgba = np.dstack([good[0], np.full(good[0].shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # transparent corner -> white
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    png16_rgb(root / "deep.png", good[1].astype(np.uint16) * 257)
    Image.fromarray(good[2]).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(good[0][:10, :12]).save(root / "small.png")
    pal = Image.fromarray(good[1]).convert("P", palette=Image.ADAPTIVE)
    pal.save(root / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.fromarray(good[2]).save(root / "rotated.jpg", exif=exif.tobytes())
    (root / "readme.txt").write_text("not listed: unknown extension")
    return root


def test_each_kind_of_file(bad_corpus):
    r = bad_corpus
    for name in ("corrupt.jpg", "truncated.png", "empty.jpg", "notes.jpg"):
        with pytest.raises(images.BadImage):
            images.load_rgb(r / name)
    rgba = images.load_rgb(r / "rgba.png")
    assert rgba.shape == (36, 40, 3) and (rgba[:10, :10] == 255).all()
    deep = images.load_rgb(r / "deep.png")
    assert deep.dtype == np.uint8 and np.abs(deep.astype(int) - colour_crops(6, (36, 40), 5)[1]).max() <= 1
    assert images.load_rgb(r / "cmyk.jpg").shape == (36, 40, 3)
    assert images.load_rgb(r / "palette.png").shape == (36, 40, 3)
    assert images.load_rgb(r / "rotated.jpg").shape == (40, 36, 3)  # EXIF orientation applied
    grey = images.load_rgb(r / "grey.png")
    assert grey.shape == (36, 40, 3) and images.is_grey(grey)
    assert not images.is_grey(rgba)


def test_decompression_bomb_guard_gives_a_clear_message(bad_corpus):
    with pytest.raises(images.BadImage, match="decompression-bomb limit.*--max_image_pixels"):
        images.load_rgb(bad_corpus / "good_000.png", max_pixels=100)


def test_bad_files_are_skipped_and_counted_once(bad_corpus, capsys):
    split = cd.make_split(bad_corpus, seed=0, val_fraction=0, test_fraction=0)
    assert len(split["train"]) == 14  # readme.txt is not listed
    images, paths, report = cd.load_train_images(bad_corpus, split["train"], image_size=16)
    assert len(report.bad) == 4 and len(report.grey) == 1
    assert images.shape == (9, 3, 16, 16) and images.dtype == torch.uint8 and "small.png" in paths  # small: scaled up
    report.warn("train")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "skipped 4 unreadable" in out[0] and "1 greyscale" in out[1]


def test_eval_images_keep_grey_and_centre_crop(bad_corpus):
    stacked, paths, report = cd.load_eval_images(bad_corpus, ["grey.png", "good_000.png", "empty.jpg"], 16)
    assert stacked.shape == (2, 3, 16, 16) and stacked.dtype == torch.uint8 and len(report.bad) == 1


def test_identity_when_already_at_size():
    rgb = colour_crops(1, size=(32, 32))[0]
    assert np.array_equal(images.center_crop(images.resize_shorter_side(rgb, 32), 32), rgb)


def test_splits(tmp_path, tiny_data):
    s = cd.make_split(tiny_data, seed=3)
    assert len(s["test"]) == 4 and len(s["val"]) == 1 and len(s["train"]) == 9
    assert all(p.startswith("test/") for p in s["test"])
    assert s == cd.make_split(tiny_data, seed=3)  # deterministic
    flat = tmp_path / "flat"
    write_images(flat / "a" / "b", colour_crops(20, seed=4))
    s1, s2 = cd.make_split(flat, seed=1), cd.make_split(flat, seed=2)
    assert sorted(s1["train"] + s1["val"] + s1["test"]) == sorted(s2["train"] + s2["val"] + s2["test"])
    assert len(s1["test"]) == 2 and s1["test"] != s2["test"]
    (tmp_path / "void").mkdir()
    with pytest.raises(FileNotFoundError, match="void"):
        cd.make_split(tmp_path / "void", seed=0)


def test_demo_dataset_is_built_offline(tmp_path):
    cd.build_demo_dataset(tmp_path / "Dataset", tmp_path / "TestImages", crops_per_photo=4, log=lambda *_: None)
    split = cd.make_split(tmp_path / "Dataset", seed=0)
    assert len(split["train"]) + len(split["val"]) == 4 * len(cd.DEMO_TRAIN_PHOTOS)
    assert len(split["test"]) == 2 * len(cd.DEMO_TEST_PHOTOS)
    assert len(images.find_images(tmp_path / "TestImages")) == len(cd.DEMO_TEST_PHOTOS)
    assert not set(cd.DEMO_TRAIN_PHOTOS) & set(cd.DEMO_TEST_PHOTOS)


def test_shared_data_loads_as_it_is(shared_data):
    cifar = cd.make_split(shared_data / "cifar10", seed=0)
    assert len(cifar["test"]) == 3000 and len(cifar["train"]) + len(cifar["val"]) == 20000
    photos = cd.make_split(shared_data / "photos", seed=0)
    assert len(photos["test"]) == 200 and all(p.startswith("val/") for p in photos["test"])
    images, _, report = cd.load_eval_images(shared_data / "photos", photos["test"][:8], 128)
    assert images.shape == (8, 3, 128, 128) and not report.bad


def test_streaming_matches_the_in_memory_path_in_shape_and_counts_skips(bad_corpus, capsys):
    split = cd.make_split(bad_corpus, seed=0, val_fraction=0, test_fraction=0)
    stream = batches.StreamingTrainBatches(bad_corpus, split["train"], batch_size=7, image_size=16, load_size=20,
                                           crop="resized", seed=0, device="cpu", workers=2)
    assert len(stream) == 2
    for epoch in (1, 2):
        drawn = [b for _, b in stream.epoch(epoch)]
        assert all(b.dtype == torch.uint8 and b.shape[1:] == (3, 16, 16) for b in drawn)
    assert stream.skipped == {1: 8, 2: 2}  # 14 files = 2 batches of 7: every file once per epoch, 2 epochs
    assert "streaming skipped" in capsys.readouterr().out
