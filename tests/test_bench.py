"""bench.py runs (tiny sizes, CPU) and writes its table; it measures, it asserts no speed."""
import bench


def test_bench_writes_a_row_per_family(tmp_path):
    out = tmp_path / "B.md"
    text = bench.main(["--families", "gray,unet,unetgan,colorful", "--device", "cpu", "--image_size", "16",
                       "--batch_size", "4", "--images", "8", "--iters", "1", "--write", str(out),
                       "--unet_channels", "8", "--unet_depth", "2", "--colorful_width", "8"])
    assert out.read_text() == text and "CPU" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| family")]
    assert [r.split("|")[1].strip() for r in rows] == ["gray", "unet", "unetgan", "colorful"]
    unet = rows[1].split("|")
    assert float(unet[2]) > 0 and float(unet[6]) > 0  # end-to-end img/s, GFLOP/img
