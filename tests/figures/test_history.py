from figures.history import main
from ufm import run
from ufm.config import SimConfig


def test_history_plot_is_written(tmp_path):
    run(SimConfig(K=3, n=4, d=4, steps=20), tmp_path / "run", progress=False)
    assert main([str(tmp_path / "run")]) == 0
    png = tmp_path / "run" / "history.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_missing_history_is_exit_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "history.csv not found" in capsys.readouterr().err
