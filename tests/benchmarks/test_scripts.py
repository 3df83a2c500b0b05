"""Each benchmark script's --quick mode in a fresh process, as a user runs it, on a tiny chat
model (the embedded model runs the same code; tests/e2e trains it)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_compare_writes_a_table_with_ratios_to_lora_r8(tmp_path, tiny_chat_dir):
    env = {**__import__("os").environ, "XGBLORA_BENCH_RESULTS": str(tmp_path)}
    subprocess.run([sys.executable, "-m", "benchmarks.compare", "--quick", "--model", str(tiny_chat_dir)], cwd=ROOT,
                   env=env, check=True, capture_output=True, text=True, timeout=600)
    lines = (tmp_path / "compare_quick.md").read_text().splitlines()
    lora = next(line for line in lines if line.startswith("| LoRA r=8 "))
    xgb = next(line for line in lines if line.startswith("| XGBLoRA "))
    assert lora.split(" | ")[6:8] == ["1.000", "1.000"]  # the baseline's own step-time ratios
    assert float(xgb.split(" | ")[6]) > 0
    assert (tmp_path / "compare_quick_unicode-names_steps.png").stat().st_size > 10_000
