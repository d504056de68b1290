"""dev/trace/timeline.py (the GPU idle-time analysis) on a made-up timeline with known gaps."""
import importlib.util
import os

from conftest import REPO

spec = importlib.util.spec_from_file_location("timeline", os.path.join(REPO, "dev", "trace", "timeline.py"))
timeline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(timeline)


def write_steps(path, steps=6):
    """Each step (10 ms): matmul 0-4 ms and attention 3-6 ms (overlapping), a 2 ms gap during
    which the host synchronizes, then AdamW in two kernels 8-8.5 and 8.6-9 ms, idle to 10 ms."""
    ms = 1_000_000
    lines = []
    for k in range(steps):
        t = k * 10 * ms
        lines += [f"K,{t},{t + 4 * ms},matmul_kernel(int)", f"K,{t + 3 * ms},{t + 6 * ms},attention_fwd",
                  f"R,{t + 6 * ms},{t + 8 * ms},cudaStreamSynchronize",
                  f"K,{t + 8 * ms},{t + 8 * ms + ms // 2},adamw_kernel<8>",
                  f"K,{t + 8 * ms + 6 * ms // 10},{t + 9 * ms},adamw_kernel<8>",
                  f"M,{t + 9 * ms},{t + 9 * ms + ms // 10},memcpy kind 2 8 B"]
    path.write_text("\n".join(lines) + "\n")


def test_idle_time_and_gaps(tmp_path):
    p = tmp_path / "tl.csv"
    write_steps(p)
    gpu, host = timeline.read(p)
    rows, gaps = timeline.analyse(gpu, host, "adamw", skip=1)
    assert len(rows) == 4  # 6 updates: 5 steps between them, the first skipped
    for span, busy, idle, start, end in rows:
        assert end - start == span
        # from 9 ms to 19 ms: 0.1 memcpy, [10, 16] kernels, [18, 18.5] + [18.6, 19] AdamW
        assert span == 10_000_000 and busy == 100_000 + 6_000_000 + 900_000 and idle == span - busy
    longest = max(gaps, key=lambda g: g[1] - g[0])
    assert longest[1] - longest[0] == 2_000_000
    text = timeline.describe_gap(longest, gpu, host)
    assert "attention_fwd" in text and "adamw_kernel" in text and "cudaStreamSynchronize 2000 us" in text
    # two AdamW kernels 0.1 ms apart are one update, not two steps; with a 50 us split, two
    assert len(timeline.step_ends(gpu, "adamw")) == 6
    assert len(timeline.step_ends(gpu, "adamw", split_ns=50_000)) == 12


def test_sequence_lists_a_step_in_order(tmp_path, capsys):
    """--sequence: the kernels of one step in start order, each with the idle time before it."""
    p = tmp_path / "tl.csv"
    write_steps(p)
    gpu, _ = timeline.read(p)
    timeline.print_sequence(gpu, 9_000_000, 19_000_000)
    lines = capsys.readouterr().out.splitlines()
    names = [line.split(None, 2)[2] for line in lines[1:]]
    assert names == ["matmul_kernel", "attention_fwd", "adamw_kernel", "adamw_kernel", "memcpy kind 2 8 B"]
    idle = [float(line.split()[0]) for line in lines[1:]]
    assert idle == [1000.0, 0.0, 2000.0, 100.0, 0.0]  # us: from the step's start at 9 ms, then gaps
