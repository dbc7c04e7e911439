"""Long-tailed class counts (issue 24, item 4): `--counts zipf:S:NMAX` and `--counts-file FILE`.

The Zipf counts are n_k = max(1, round(NMAX·k^(−S))) with round half up; the reference here computes them in exact
arithmetic (fractions for rational values, 60-digit decimals otherwise), so every tie k^S | 2·NMAX rounds up where
Python's round() would round to even. The file reader returns exactly the integers written; every bad input is one
line on stderr and exit status 2."""

import math
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest

from ufm.cli.simulate import build_parser, config_from_args, main
from ufm.config import SimConfig
from ufm.counts import ZipfSpec, read_counts_file, zipf_counts
from ufm.errors import ConfigError


def reference_zipf(K, s, nmax):
    """max(1, ⌊NMAX·k^(−S) + ½⌋) with S a decimal string: exact where NMAX·k^(−S) is rational (k a perfect q-th power
    for S = p/q), 60 significant digits elsewhere (irrational: never a tie)."""
    S = Fraction(s)
    p, q = S.numerator, S.denominator
    out = []
    for k in range(1, K + 1):
        root = round(k ** (1 / q))
        root = next((r for r in (root - 1, root, root + 1) if r >= 1 and r**q == k), None)
        if root is not None:
            x = Fraction(nmax, root**p)
            n = (2 * x + 1).numerator // (2 * x + 1).denominator // 2  # ⌊x + ½⌋ = ⌊(2x + 1)/2⌋
        else:
            with localcontext() as ctx:
                ctx.prec = 60
                x = Decimal(nmax) * (-Decimal(S.numerator) / Decimal(S.denominator) * Decimal(k).ln()).exp()
                n = int((x + Decimal("0.5")).to_integral_value(rounding="ROUND_FLOOR"))
        out.append(max(1, n))
    return tuple(out)


@pytest.mark.parametrize("K, s, nmax", [
    (40, "1", 5), (40, "1", 1000), (64, "2", 1000), (50, "0.5", 8), (200, "1.1", 10_000), (30, "0", 7),
    (100, "1.5", 1000), (2, "3", 1), (300, "0.25", 3), (64, "1", 999_999_937), (100, "2.5", 100_000),
    (200, "1", 1127), (200, "1", 343),
])
def test_zipf_counts_are_exactly_the_formula(K, s, nmax):
    assert zipf_counts(K, s, nmax) == reference_zipf(K, s, nmax)
    assert ZipfSpec.parse(f"zipf:{s}:{nmax}").counts(K) == reference_zipf(K, s, nmax)


def test_zipf_ties_round_half_up_not_to_even():
    """NMAX·k^(−S) = j + ½ exactly: 5/2 = 2.5 → 3 and 7/2 = 3.5 → 4 (Python's round gives 2 and 4); 9/2 = 4.5 → 5
    (round: 4); at S = 1/2, 5/√4 = 2.5 → 3; at S = 2, 18/2² = 4.5 → 5."""
    assert zipf_counts(2, 1, 5) == (5, 3) and round(2.5) == 2
    assert zipf_counts(2, 1, 7) == (7, 4)
    assert zipf_counts(2, 1, 9) == (9, 5) and round(4.5) == 4
    assert zipf_counts(4, "0.5", 5)[3] == 3
    assert zipf_counts(2, 2, 18) == (18, 5)
    # ties that float64 misses: 343·98^(−1) = 3.5 exactly, but 343 * 98.0**-1 = 3.4999999999999996 (the naive
    # ⌊x + ½⌋ gives 3); likewise 1127/98 = 11.5
    assert math.floor(343 * 98.0**-1 + 0.5) == 3 and math.floor(1127 * 98.0**-1 + 0.5) == 11
    assert zipf_counts(98, 1, 343)[97] == 4 and zipf_counts(98, 1, 1127)[97] == 12
    # the tail: every class gets at least one sample; S = 0 is balanced
    assert zipf_counts(10, 3, 10)[-1] == 1 and zipf_counts(5, 0, 7) == (7,) * 5


@pytest.mark.parametrize("text, message", [
    ("zipf:-1:5", "S must be"), ("zipf:nan:5", "S must be"), ("zipf:inf:5", "S must be"), ("zipf:1:0", "NMAX must"),
    ("zipf:1:2.5", "NMAX must"), ("zipf:1:-3", "NMAX must"), ("zipf:1:1000000001", "NMAX must"), ("zipf:1", "expected"),
    ("zipf:1:5:3", "expected"), ("zipf::5", "S must be"), ("zipf:1/2:5", "S must be"),
])
def test_zipf_spec_parser_refuses_bad_specs(text, message):
    with pytest.raises(ValueError, match=message):
        ZipfSpec.parse(text)


def test_library_arguments_are_checked():
    with pytest.raises(ValueError, match="K must be"):
        zipf_counts(1, 1, 5)
    with pytest.raises(ValueError, match="nmax must"):
        zipf_counts(4, 1, 0)
    with pytest.raises(ValueError, match="s must be"):
        zipf_counts(4, -0.5, 5)
    with pytest.raises(ConfigError, match="zipf"):
        SimConfig(K=4, counts="zipf:1:0")
    assert SimConfig(K=5, counts="zipf:1:5").counts == (5, 3, 2, 1, 1)


def test_counts_file_is_read_exactly(tmp_path):
    path = tmp_path / "counts.txt"
    path.write_text("\ufeff# a long tail\n1000\n  500  \n\n333 # third\r\n7\n000012\n")
    assert read_counts_file(path) == (1000, 500, 333, 7, 12)
    counts = [(7919 * k) % 997 + 1 for k in range(3000)]
    path.write_text("\n".join(map(str, counts)))
    assert read_counts_file(path) == tuple(counts)


def parse(argv):
    return config_from_args(build_parser().parse_args(argv))


def test_the_flags_build_the_configuration(tmp_path):
    cfg = parse(["--counts", "zipf:1:5", "--K", "6"])
    assert cfg.K == 6 and cfg.counts == (5, 3, 2, 1, 1, 1) and cfg.N == 13
    path = tmp_path / "c.txt"
    path.write_text("4\n4\n2\n")
    cfg = parse(["--counts-file", str(path)])
    assert cfg.K == 3 and cfg.counts == (4, 4, 2)
    assert parse(["--counts-file", str(path), "--K", "3"]).counts == (4, 4, 2)
    # K from a hierarchy when --K is absent
    assert parse(["--counts", "zipf:1:100", "--loss", "ce", "--hierarchy", "balanced:2,2"]).counts == (100, 50, 33, 25)


BAD_FILES = {
    "zero": ("5\n0\n3\n", "line 2: a count must be >= 1, got 0"),
    "negative": ("5\n3\n-4\n", "line 3: a count must be >= 1, got -4"),
    "non-integer": ("5\n2.5\n", "line 2: expected one positive integer per line, got '2.5'"),
    "word": ("five\n5\n", "line 1: expected one positive integer per line, got 'five'"),
    "two per line": ("5 5\n3\n", "line 1: expected one positive integer per line, got '5 5'"),
    "exponent": ("1e3\n5\n", "line 1: expected one positive integer"),
    "single class": ("# one\n7\n", "needs at least 2 classes (one count per line), found 1"),
    "empty": ("\n\n", "needs at least 2 classes"),
}


def one_line_exit_2(argv, capsys, tmp_path) -> str:
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "never"), "--steps", "1", "--quiet", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "never" / "summary.json").exists()
    return err


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_counts_files_one_line_exit_2(name, capsys, tmp_path):
    text, message = BAD_FILES[name]
    path = tmp_path / "counts.txt"
    path.write_text(text)
    assert message in one_line_exit_2(["--counts-file", str(path)], capsys, tmp_path)


def test_unreadable_counts_files_one_line_exit_2(capsys, tmp_path):
    assert "cannot read it" in one_line_exit_2(["--counts-file", str(tmp_path / "missing.txt")], capsys, tmp_path)
    assert "cannot read it" in one_line_exit_2(["--counts-file", str(tmp_path)], capsys, tmp_path)  # a folder
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"5\n\xff\xfe\n")
    assert "not UTF-8" in one_line_exit_2(["--counts-file", str(binary)], capsys, tmp_path)


BAD_FLAGS = {
    "zipf without K": (["--counts", "zipf:1:100"], "needs --K"),
    "negative S": (["--K", "5", "--counts", "zipf:-1:100"], "S must be"),
    "NMAX zero": (["--K", "5", "--counts", "zipf:1:0"], "NMAX must"),
    "NMAX not an integer": (["--K", "5", "--counts", "zipf:1:1e3"], "NMAX must"),
    "malformed zipf": (["--K", "5", "--counts", "zipf:1"], "expected zipf:S:NMAX"),
    "K = 1 with zipf": (["--K", "1", "--counts", "zipf:1:100"], "must be >= 2"),
    "both flags": (["--counts", "5,5", "--counts-file", "FILE"], "not both"),
    "K disagrees with the file": (["--K", "4", "--counts-file", "FILE"], "disagrees with --counts-file"),
    "imbalance with the file": (["--imbalance", "5", "--minority", "1", "--counts-file", "FILE"], "--imbalance"),
    "imbalance with zipf": (["--K", "5", "--imbalance", "5", "--minority", "1", "--counts", "zipf:1:9"], "--imbalance"),
}


@pytest.mark.parametrize("name", BAD_FLAGS)
def test_bad_counts_flags_one_line_exit_2(name, capsys, tmp_path):
    path = tmp_path / "counts.txt"
    path.write_text("5\n5\n2\n")
    argv, message = BAD_FLAGS[name]
    assert message in one_line_exit_2([str(path) if a == "FILE" else a for a in argv], capsys, tmp_path)


def test_sweep_grids_take_zipf_specifications():
    """A sweep's counts may be "zipf:S:NMAX", expanded with each configuration's K; equal counts give one
    configuration (the id hashes the expanded counts); a bad specification names the configuration."""
    from ufm.sweeps.grid import GridError, config_id, expand, parse_assignments, parse_settings

    cfgs = expand(parse_settings(["counts=zipf:1:5", "steps=1"]), parse_assignments(["K=4,6"]))
    assert [c.counts for c in cfgs] == [(5, 3, 2, 1), (5, 3, 2, 1, 1, 1)]
    same = expand({"counts": "zipf:0:5"}, {"K": [3]})[0]
    assert config_id(same) == config_id(SimConfig(counts=(5, 5, 5)))
    with pytest.raises(GridError, match="NMAX must"):
        expand({"counts": "zipf:1:0"}, {"K": [4]})
