import pytest

from xgblora_engine.config import RunConfig, load_config_file, save_config, update
from xgblora_engine.errors import UserError


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = RunConfig().validate()
    save_config(cfg, tmp_path / "c.yaml")
    assert RunConfig.from_dict(load_config_file(tmp_path / "c.yaml")) == cfg


def test_scaling_defaults_to_two():
    cfg = RunConfig()
    cfg.boost.rank = 4
    assert cfg.boost.scaling == 2.0
    cfg.boost.alpha = 2.0
    assert cfg.boost.scaling == 0.5


def test_update_coerces_types():
    cfg = update(RunConfig(), {"boost": {"rank": "2", "layers": "1, 5,7"}, "train": {"lr": "1e-3"},
                               "model": {"gradient_checkpointing": "yes"},
                               "data": {"columns": "instruction=q,output=a"}})
    assert cfg.boost.rank == 2 and cfg.boost.layers == [1, 5, 7] and cfg.train.lr == 1e-3
    assert cfg.model.gradient_checkpointing is True
    assert cfg.data.columns == {"instruction": "q", "output": "a"}


@pytest.mark.parametrize("raw, message", [
    ({"boost": {"rank": 0}}, "invalid rank 0"),
    ({"boost": {"rank": "abc"}}, "'boost.rank' has an invalid value 'abc'"),
    ({"boost": {"merge_every": 0}}, "invalid merge interval"),
    ({"boost": {"layers_per_round": 0}}, "invalid layers per round"),
    ({"train": {"lr": -1}}, "invalid learning rate"),
    ({"model": {"quantize": "3bit"}}, "invalid quantization '3bit'"),
    ({"data": {"seq_len": 2}}, "invalid sequence length"),
    ({"boost": {"layers": []}}, "explicit layer list is empty"),
    ({"boosting": {}}, "unknown section 'boosting'"),
    ({"train": {"steps": 3}}, "unknown setting 'train.steps'"),
])
def test_bad_settings_are_named(raw, message):
    with pytest.raises(UserError, match=message) as info:
        update(RunConfig(), raw).validate()
    assert info.value.hint


def test_config_file_errors(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load_config_file(bad)


def test_a_saved_run_config_from_before_the_lr_rule_keeps_its_literal_rate():
    old = RunConfig.from_saved({"train": {"lr": 1e-2, "max_steps": 10}})
    assert old.train.lr_rule == "fixed" and old.train.lr == 1e-2
    assert RunConfig.from_saved(RunConfig().to_dict()).train.lr_rule == RunConfig().train.lr_rule
    assert RunConfig.from_dict({"train": {"lr": 1e-2, "lr_rule": "scaled"}}).train.lr_rule == "scaled"


def test_a_saved_run_config_from_before_carry_starts_every_round_fresh():
    old = RunConfig.from_saved({"boost": {"rank": 4, "merge_every": 20}})
    assert old.boost.carry is False and RunConfig().boost.carry is True
    assert RunConfig.from_saved(RunConfig().to_dict()).boost.carry is True


def test_a_saved_run_config_from_before_carry_b_restarts_b_at_zero():
    saved = RunConfig().to_dict()
    del saved["boost"]["carry_b"]
    assert RunConfig.from_saved(saved).boost.carry_b is False and RunConfig().boost.carry_b is True
    assert RunConfig.from_saved(RunConfig().to_dict()).boost.carry_b is True


def test_only_the_kaiming_start_carries():
    cfg = RunConfig()
    assert cfg.boost.carries
    cfg.boost.init = "gradient"
    assert cfg.boost.carry and not cfg.boost.carries


@pytest.mark.parametrize("section,key,value", [("boost", "init", "orthogonal"), ("boost", "init_pool", 0),
                                               ("train", "lr_rule", "cubic"), ("train", "lr_ratio_b", -1)])
def test_new_method_settings_are_validated(section, key, value):
    with pytest.raises(UserError):
        RunConfig.from_dict({section: {key: value}}).validate()
