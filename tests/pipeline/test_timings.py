import time

from newbie.pipeline.timings import parse_timings, timings_line


def test_the_line_reads_back_in_order_and_progress_lines_are_not_taken_for_it():
    times = {"decode_s": 0.45, "load_s": 3.875, "setup_s": 4.9, "denoise_s": 6.9, "encode_s": 0.31}
    line = timings_line(times, started=time.perf_counter() - 20)
    assert line.startswith("setup 4.90s  load 3.88s  encode 0.31s  denoise 6.90s  decode 0.45s  total 2")
    progress = "denoise  20/20 [####] 22.52 it/s  ETA  0.0s\nseed 5 -> a.png\n"
    back = parse_timings(progress + line + "\n" + progress)
    assert back.keys() == {"setup_s", "load_s", "encode_s", "denoise_s", "decode_s", "total_s"}
    assert back["load_s"] == 3.88 and back["total_s"] >= 20
    assert parse_timings(progress) == {}
    assert "compile" not in line and "compile 1.50s" in timings_line({**times, "compile_s": 1.5})
