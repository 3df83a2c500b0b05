"""What `xgblora estimate` and `xgblora train` print for a preflight."""

import io

from xgblora_engine import protocol as P
from xgblora_engine.payloads import DeviceCheck, Remedy
from xgblora_engine.progress import ConsoleReporter

GB = 2**30


def printed(event) -> str:
    stream = io.StringIO()
    ConsoleReporter(stream)(event)
    return stream.getvalue()


def check(device, peak, avail, verdict):
    return DeviceCheck(device=device, predicted_peak=peak, available=avail, verdict=verdict,
                       parts={"weights": peak // 2, "activations": peak // 2})


def test_one_device_prints_its_parts():
    result = P.PreflightResult(verdict="fits", predicted_peak=GB, available=8 * GB, parts={"weights": GB},
                               measured_peak=None, remedies=[], device="cpu", message="predicted peak 1.00 GB ...",
                               devices=[check("cpu", GB, 8 * GB, "fits")])
    assert printed(result).splitlines() == ["memory: predicted peak 1.00 GB ...", "  parts: weights 1.00 GB"]


def test_a_sharded_model_prints_every_gpu_against_its_own_memory():
    devices = [check("cuda:0", 20 * GB, 24 * GB, "tight"), check("cuda:1", 30 * GB, 24 * GB, "wont_fit")]
    result = P.PreflightResult(verdict="wont_fit", predicted_peak=30 * GB, available=24 * GB, parts=devices[1].parts,
                               measured_peak=None, remedies=[Remedy(label="load the frozen base in 4-bit (nf4)",
                                                                    changes={}, saves_bytes=9 * GB)],
                               device="cuda:1", message="predicted peak per device: ...", devices=devices)
    lines = printed(result).splitlines()
    assert lines[1] == "  cuda:0: 20.00 GB of 24.00 GB (tight): weights 10.00 GB, activations 10.00 GB"
    assert lines[2] == "  cuda:1: 30.00 GB of 24.00 GB (will not fit): weights 15.00 GB, activations 15.00 GB"
    assert lines[3] == "  remedy: load the frozen base in 4-bit (nf4) (saves ~9.00 GB)"


def test_the_run_start_names_the_rate_the_boosters_train_at():
    from xgblora_engine.config import RunConfig
    from xgblora_engine.progress import boosters_line

    cfg = RunConfig()
    cfg.train.lr, cfg.boost.rank, cfg.boost.layers_per_round = 6e-3, 4, 10
    line = boosters_line(cfg, 30)
    assert "rank 4 on 10 of 30 layers" in line and "peak learning rate 0.0052 (lr·√(L/(k·r)) = 0.006·√(30/(10·4)))" in line
    cfg.train.lr_rule = "fixed"
    assert "peak learning rate 0.006 (as given)" in boosters_line(cfg, 30)


def test_a_download_prints_a_line_at_each_tenth_and_at_its_end():
    stream = io.StringIO()
    reporter = ConsoleReporter(stream)
    for done in (0, 50, 90, 150, 900, 1000):
        reporter(P.DownloadProgress(repo_id="org/model", done_bytes=done << 20, total_bytes=1000 << 20,
                                    bytes_per_s=10 << 20))
    assert stream.getvalue().splitlines() == [
        "downloading org/model: 0 B of 1000 MB (0 %) at 10 MB/s",
        "downloading org/model: 150 MB of 1000 MB (15 %) at 10 MB/s",
        "downloading org/model: 900 MB of 1000 MB (90 %) at 10 MB/s",
        "downloading org/model: 1000 MB of 1000 MB (100 %) at 10 MB/s"]
