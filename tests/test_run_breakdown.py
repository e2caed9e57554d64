"""benchmarks/run_breakdown.py: the commands it times (the timing itself is a benchmark)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import run_breakdown  # noqa: E402


def _value(command, flag):
    return [command[i + 1] for i, c in enumerate(command) if c == flag]


def test_cache_modes_give_the_fast_path_one_shared_a_fresh_or_no_cache_folder(tmp_path):
    base = ["--data_path", "synthetic_data", "--split", str(tmp_path), "--fast_loader"]
    for mode, expected in (("warm", ["cache", "cache"]), ("cold", ["cache_0", "cache_1"]), ("none", [])):
        args = run_breakdown.parse_args(base + ["--cache", mode])
        folders = [os.path.basename(d) for i in range(2)
                   for d in _value(run_breakdown.our_command(args, str(tmp_path), i)[1], "--cache_dir")]
        assert folders == expected
    # the default input path never gets a cache
    args = run_breakdown.parse_args(["--data_path", "synthetic_data", "--split", str(tmp_path), "--cache", "warm"])
    command = run_breakdown.our_command(args, str(tmp_path), 0)[1]
    assert "--cache_dir" not in command and "--fast_loader" not in command


def test_flags_after_the_separator_come_last_so_they_win(tmp_path):
    args = run_breakdown.parse_args(["--data_path", "synthetic_data", "--split", str(tmp_path), "--num_workers", "2",
                                     "--", "--num_workers", "0"])
    name, command = run_breakdown.our_command(args, str(tmp_path), 3)
    assert name == "ours_3" and _value(command, "--num_workers") == ["2", "0"]
    assert command[-2:] == ["--num_workers", "0"]
