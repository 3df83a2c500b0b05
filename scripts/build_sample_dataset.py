"""Write the bundled sample datasets to resources/datasets/ (copies of what `--data sample` builds)."""

import json
from pathlib import Path

from xgblora_engine.data.sample import sample_names, sample_rows

OUT = Path(__file__).resolve().parents[1] / "resources" / "datasets"

if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name in sample_names():
        rows = sample_rows(name)
        with open(OUT / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} rows")
