"""The real `xgblora` command on the embedded SmolLM2: train, export, reload elsewhere."""

import json
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow


def xgblora(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "xgblora_engine.cli", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"xgblora {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    xgblora("train", "--max-steps", "20", "--batch-size", "2", "--seq-len", "128", "--merge-every", "5",
            "--eval-every", "0", "--out", str(run))
    return run


def test_training_lowers_held_out_loss_and_records_the_run(trained_run):
    metrics = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
    steps = [m for m in metrics if "loss" in m]
    assert len(evals) == 2 and evals[-1] < evals[0] - 0.05, evals
    assert [m["step"] for m in steps] == list(range(1, 21))
    assert {m["round"] for m in steps} == {1, 2, 3, 4}
    assert all(len(m["layers"]) == 15 and {"lr", "seconds"} <= m.keys() for m in steps)  # half of 30
    assert (trained_run / "ledger.safetensors").is_file() and (trained_run / "config.yaml").is_file()
    assert json.loads((trained_run / "run.json").read_text())["status"] == "completed"


def test_export_reloads_in_plain_transformers_with_identical_logits(trained_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xgblora_engine.export import load_merged

    out = tmp_path / "merged"
    xgblora("export", str(trained_run), "--out", str(out))
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    merged, _, _ = load_merged(trained_run)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What does `len` do in Python?"}],
                                           tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        diff = (reloaded(input_ids=ids).logits - merged.eval()(input_ids=ids).logits).abs().max().item()
    assert diff == 0.0
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in reloaded.generation_config.eos_token_id
    with torch.no_grad():
        out_ids = reloaded.generate(ids, max_new_tokens=120, do_sample=False)
    assert out_ids.shape[1] < ids.shape[1] + 120, "greedy generation should stop at <|im_end|>"
    assert tokenizer.decode(out_ids[0, -1]) == "<|im_end|>"


def test_export_refuses_to_overwrite(trained_run, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    result = xgblora("export", str(trained_run), "--out", str(tmp_path / "taken"), check=False)
    assert result.returncode == 2 and "not empty" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
