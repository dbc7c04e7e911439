"""`python -m figures --smoke`: every figure script runs end to end at toy sizes and writes its PNG and PDF."""

import pytest

from figures.__main__ import FIGURES, main


def test_every_figure_is_drawn_in_smoke_mode(tmp_path, capsys):
    assert main(["--smoke", "--out", str(tmp_path)]) == 0
    for name in FIGURES:
        png = tmp_path / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000, name
        assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-", name
    out = capsys.readouterr().out
    assert "total" in out
    for name in FIGURES:  # every path printed is one that exists
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert line.split()[-2:] == [str(tmp_path / f"{name}.png"), str(tmp_path / f"{name}.pdf")], line


def test_unknown_figure_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["no_such_figure", "--smoke"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "unknown figure" in err


def test_the_gallery_page_shows_every_figure_with_its_caption():
    import importlib
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "docs" / "gallery.md").read_text()
    for name in FIGURES:
        caption = importlib.import_module(f"figures.{name}").CAPTION
        assert f"![{name}](figures/{name}.png)" in readme and caption in readme, name
        assert f"python -m figures {name}" in readme
