"""Result tables through pandas: CSV round trip, markdown, and `blockmask report` never writing over
its input or half-way."""

import math

import pytest

from blockmask.cli.main import main
from blockmask.core.errors import BlockmaskError
from blockmask.eval.report import frame, read_csv, to_csv, to_markdown, write_report

ROWS = [{"method": "original", "steps": 4, "macs_ratio": 1.0, "speedup": 1.0, "n": 8, "fid": 3.25, "kid": 0.0012,
         "psnr": math.inf, "seconds": 1.5, "device": "CPU x"},
        {"method": "FORA N=2", "steps": 4, "macs_ratio": 0.5, "speedup": 1.7, "n": 8, "fid": 5.0, "kid": None,
         "psnr": 21.5, "seconds": 0.9, "device": "CPU x"}]


def test_csv_round_trip_and_markdown(tmp_path):
    p = tmp_path / "results.csv"
    p.write_text(to_csv(ROWS))
    back = read_csv(p)
    assert back[0]["steps"] == 4 and isinstance(back[0]["steps"], int) and back[0]["psnr"] == math.inf
    assert back[1]["kid"] is None and back[1]["fid"] == 5.0
    assert to_csv(back) == to_csv(ROWS)
    assert list(frame(ROWS).columns)[:6] == ["method", "steps", "macs_ratio", "speedup", "n", "fid"]
    md = to_markdown(ROWS)
    assert "50.0%" in md and "1.70x" in md and "5.00 (8)" in md and "Speedups measured on: CPU x" in md


def test_report_never_overwrites_its_input(tmp_path, capsys):
    src = tmp_path / "res" / "results.csv"
    src.parent.mkdir()
    src.write_text(to_csv(ROWS))
    before = src.read_bytes()
    assert main(["report", str(src), "-o", str(src.parent)]) == 2
    err = capsys.readouterr().err
    assert "would overwrite the input" in err and len(err.strip().splitlines()) == 1
    assert src.read_bytes() == before and sorted(p.name for p in src.parent.iterdir()) == ["results.csv"]
    with pytest.raises(BlockmaskError, match="overwrite"):
        write_report(ROWS, tmp_path / "res" / ".", source=src)


@pytest.mark.parametrize("text,msg", [
    ("method,steps,macs_ratio,speedup,n,fid,\norig,4,1.0,1.0,8,3.0,\n", "column without a name"),
    ("method,steps,macs_ratio,speedup,n,fid\norig,4,1.0,1.0,8,\nb,4,0.5,1.0,8,\n", "column 'fid' is empty"),
    ("method,steps,macs_ratio,speedup,n,fid\na,4,1,1.0,8,3\nb,4,,1.0,8,3\n", "line 3: macs_ratio is empty"),
    ("method,steps,macs_ratio,speedup,n,fid\n", "holds no rows"),
    ("", "not a readable CSV"),
])
def test_garbage_csv_is_one_error_and_writes_nothing(tmp_path, capsys, text, msg):
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    assert main(["report", str(bad), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
