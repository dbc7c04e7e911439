"""`python -m figures layers RUN`: a backbone run tracked layer by layer drawn against depth and epoch; a run without
per-layer columns is one line and exit status 2."""

from __future__ import annotations

from figures.__main__ import main as figures_main
from figures.layers import layer_names
from ufm.cli.train import main as train_main


def test_a_tracked_run_is_drawn_and_an_untracked_one_refused(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["--dataset", "synthetic", "--classes", "3", "--per-class", "8", "--test-per-class", "3", "--input-shape",
            "6", "--mlp-width", "8", "--epochs", "2", "--device", "cpu", "--quiet"]
    assert train_main([*base, "--track-layers", "all", "--out", str(run)]) == 0
    assert figures_main(["layers", str(run)]) == 0
    png = run / "layers.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert figures_main(["layers", str(run), "--out", str(tmp_path / "l.pdf")]) == 0
    assert (tmp_path / "l.pdf").read_bytes()[:5] == b"%PDF-"
    plain = tmp_path / "plain"
    assert train_main([*base, "--out", str(plain)]) == 0
    capsys.readouterr()
    assert figures_main(["layers", str(plain)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--track-layers" in err


def test_layer_names_keep_the_forward_order():
    row = {"epoch": 0, "stem:nc1": 1.0, "blocks.0:nc1": 0.5, "blocks.10:nc1": 0.2, "nc1": 0.1}
    assert layer_names([row]) == ["stem", "blocks.0", "blocks.10"]
