import json

from benchmarks.suite import add_row


def _row(name: str, seed: int, loss: float) -> dict:
    return {"method": {"name": name}, "setup": {"seed": seed}, "final_eval_loss": loss}


def test_rows_added_by_two_scripts_to_one_file_all_stay(tmp_path):
    path = tmp_path / "levers.json"
    add_row(path, _row("a", 0, 1.0))  # one script's result
    add_row(path, _row("b", 0, 2.0))  # the other's, written after it
    add_row(path, _row("a", 0, 1.5))  # the same job again replaces its row
    rows = json.loads(path.read_text())["rows"]
    assert sorted((r["method"]["name"], r["final_eval_loss"]) for r in rows) == [("a", 1.5), ("b", 2.0)]
