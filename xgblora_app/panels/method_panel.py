"""Method: the XGBLoRA settings (rank, layers per round, merge interval, length, LR,
batch…), presets, a picture of the layers each round boosts, and the resulting rounds T
and trainable parameter count, updated as the settings change."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from xgblora_app.bindings import Bindings
from xgblora_app.context import Studio
from xgblora_app.format import human_count
from xgblora_app.panels.layer_picture import LayerPicture
from xgblora_app.state.presets import PRESETS, preset_changes
from xgblora_app.widgets import Banner, section_title
from xgblora_engine import config as C
from xgblora_engine.boosting.schedule import lr_rule_text
from xgblora_engine.errors import UserError

# What each setting costs, beside what it does (its help text comes from the config).
COSTS = {
    "rank": "booster parameters and optimizer state grow linearly with r (tiny either way)",
    "layers_per_round": "more layers: more trainable parameters per round, and backward reaches deeper",
    "merge_every": "fewer, longer rounds; each merge costs a fraction of a step",
    "sampling": "top-biased rounds stop backward earlier: cheaper steps, less change to low layers; gradient adds one forward and backward pass per round",
    "max_steps": "training time grows linearly",
    "lr": "too high diverges (a NaN round is rolled back and retried at a lower LR)",
    "batch_size": "activation memory grows linearly; the biggest memory lever",
    "grad_accum": "same memory as one micro-batch, proportionally slower steps",
    "seq_len": "activation and logits memory grow linearly with the sequence length",
    "round_warmup": "a few damped steps at the start of every round: for rounds that start cold (B restarted or nothing carried)",
    "init": "gradient: one sketch of the first step's gradient per round, well under 1% of a round",
    "lr_rule": "scaled and linear keep one learning rate right when rank or layers per round change "
               "(scaled: lr·√(L/(k·r)); linear: lr·(L/k)/√r); fixed trains at the rate as given",
    "carry": "each layer's last A and Adam moments stay in memory: up to 3·r·(in+out) values a layer's "
             "target, about 240 MB for a 7B model at r = 8",
    "carry_b": "B and its moments are kept too (r·out more values a target); a drawn layer's forward "
               "adds its start's product once more",
    "line_search": "three forward passes without gradients on one batch a round",
    "eval_every": "each evaluation pauses training for a pass over the held-out set",
}
SAMPLINGS = tuple(s for s in C.SAMPLING if s != "explicit")  # "explicit" comes from a layer list, not from this menu


class MethodPanel(QWidget):
    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.bind = Bindings(studio.settings, COSTS)
        self._build()
        studio.settings.subscribe("changed", lambda *_: self.refresh())
        studio.session.subscribe("model_info", lambda _: self.refresh())
        studio.session.subscribe("data_report", lambda _: self.refresh())
        self.refresh()

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(section_title("Method: gradient boosting over rank-r LoRA boosters"))
        self.banner = Banner()
        layout.addWidget(self.banner)
        presets = QHBoxLayout()
        presets.addWidget(QLabel("Presets:"))
        self.preset_buttons = {}
        for name, preset in PRESETS.items():
            button = QPushButton(preset["label"])
            button.setToolTip(f"<p>{html.escape(preset['tooltip'])}</p>")  # rich text: Qt wraps it
            button.clicked.connect(lambda _=False, n=name: self.apply_preset(n))
            presets.addWidget(button)
            self.preset_buttons[name] = button
        presets.addStretch(1)
        layout.addLayout(presets)
        presets.addWidget(self._settings_files())
        row = QHBoxLayout()
        row.addWidget(self._boost_box())
        row.addWidget(self._train_box())
        layout.addLayout(row)
        self.advanced_toggle = QToolButton(text="Advanced settings", checkable=True)
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_toggle.toggled.connect(self._fold)
        layout.addWidget(self.advanced_toggle)
        self.advanced = self._advanced_box()
        self.advanced.hide()
        layout.addWidget(self.advanced)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        box = QGroupBox("Layers")
        v = QVBoxLayout(box)
        self.picture = LayerPicture()
        v.addWidget(self.picture)
        layout.addWidget(box)
        layout.addStretch(1)

    def _boost_box(self) -> QGroupBox:
        b = self.bind
        box = QGroupBox("Boosting")
        form = QFormLayout(box)
        self.rank = b.spin("boost", "rank", 1, 256)
        self.k = b.spin("boost", "layers_per_round", 0, 1024, auto_text="auto (≈ half)")
        self.sampling = b.combo("boost", "sampling", SAMPLINGS)
        self.kappa = b.spin("boost", "merge_every", 1, 100_000)
        self.warmup = b.spin("train", "round_warmup", 0, 10_000)
        self.init = b.combo("boost", "init", C.INITS)
        self.carry = b.check("boost", "carry", "a layer drawn again keeps its A and Adam moments")
        self.carry_b = b.check("boost", "carry_b", "…and its B: it continues where it stopped")
        self.line_search = b.check("boost", "line_search", "at the multiple that lowers the loss most")
        form.addRow("Rank r", self.rank)
        form.addRow("Layers per round k", self.k)
        form.addRow("Layer sampling", self.sampling)
        form.addRow("Merge every κ steps", self.kappa)
        form.addRow("Warmup steps per round", self.warmup)
        form.addRow("Booster start", self.init)
        form.addRow("Between rounds", self.carry)
        form.addRow("", self.carry_b)
        form.addRow("Merge each round", self.line_search)
        return box

    def _train_box(self) -> QGroupBox:
        b = self.bind
        box = QGroupBox("Training")
        form = QFormLayout(box)
        self.by_steps, self.by_epochs = QRadioButton("steps"), QRadioButton("epochs")
        self.by_steps.setChecked(True)
        self.steps = b.spin("train", "max_steps", 1, 10_000_000)
        self.epochs = QDoubleSpinBox(minimum=0.01, maximum=10_000, decimals=2, singleStep=0.5)
        self.epochs.setToolTip("passes over the training examples; converted to optimizer steps with the batch "
                               "size and accumulation (needs the data's example count)")
        self.epochs.valueChanged.connect(self._epochs_changed)
        length = QHBoxLayout()
        for w in (self.by_steps, self.steps, self.by_epochs, self.epochs):
            length.addWidget(w)
        self.by_steps.toggled.connect(self._length_mode)
        self.lr = b.sci("train", "lr")
        self.lr_rule = b.combo("train", "lr_rule", C.LR_RULES)
        self.batch = b.spin("train", "batch_size", 1, 4096)
        self.accum = b.spin("train", "grad_accum", 1, 4096)
        self.seq_len = b.spin("data", "seq_len", 8, 131072)
        self.seed = b.spin("train", "seed", 0, 2**31 - 1)
        self.eval_every = b.spin("train", "eval_every", 0, 10_000_000)
        form.addRow("Length", length)
        form.addRow("Learning rate", self.lr)
        form.addRow("Learning-rate rule", self.lr_rule)
        form.addRow("Batch size", self.batch)
        form.addRow("Gradient accumulation", self.accum)
        form.addRow("Sequence length", self.seq_len)
        form.addRow("Evaluate every N steps", self.eval_every)
        form.addRow("Seed", self.seed)
        self._length_mode()
        return box

    def _advanced_box(self) -> QGroupBox:
        """Settings most runs leave alone, each with what it does in one line."""
        b = self.bind
        box = QGroupBox()
        form = QFormLayout(box)
        rows = (
            ("Booster scale α", b.number("boost", "alpha", 0.0, 4096.0, 2, auto_text="auto (2r)"),
             "the booster adds (α/r)·B·A; auto keeps the scale at 2 for every rank"),
            ("B's learning rate ×", b.number("train", "lr_ratio_b", 0.01, 256.0, 2),
             "LoRA+: B trains this many times faster than A (1: the same rate)"),
            ("Booster dropout", b.number("boost", "dropout", 0.0, 0.95, 2),
             "dropout on each booster's input; 0 is usual for short runs"),
            ("Weight decay", b.number("train", "weight_decay", 0.0, 1.0, 4), "AdamW decay of the booster factors"),
            ("Schedule", b.combo("train", "schedule", ("cosine", "constant")),
             "the learning rate over the whole run: cosine decays to 0.1×, constant stays"),
            ("Gradient clipping", b.number("train", "max_grad_norm", 0.0, 1000.0, 2),
             "the largest gradient norm a step takes (0: no clipping)"),
            ("Target modules", b.names("model", "target_modules", "all linears of a layer"),
             "which linears inside a layer get boosters, e.g. q_proj, v_proj; empty: all"),
            ("Gradient start pool", b.spin("boost", "init_pool", 1, 64),
             "with the gradient start: A draws its r directions from the top pool·r"),
            ("Sample prompts", b.spin("train", "samples", 0, 64),
             "held-out prompts answered at every evaluation (Train: Samples); 0: none"),
            ("Sample answer length", b.spin("train", "sample_tokens", 1, 4096), "tokens at most per sample answer"),
            ("Also log to", b.combo("train", "report_to", C.REPORT_TO),
             "tensorboard: event files in the run folder (needs the tensorboard package)"),
        )
        for label, widget, what in rows:
            line = QHBoxLayout()
            line.addWidget(widget)
            note = QLabel(what)
            note.setWordWrap(True)
            note.setEnabled(False)  # drawn in the muted text colour
            line.addWidget(note, 1)
            form.addRow(label, line)
        return box

    def _fold(self, open_: bool) -> None:
        self.advanced.setVisible(open_)
        self.advanced_toggle.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)

    def _settings_files(self) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        self.load_button = QPushButton("Load settings…")
        self.load_button.setToolTip("Read a settings file: a run's config.yaml or one saved here "
                                    "(the file `xgblora train --config` reads)")
        self.save_button = QPushButton("Save settings…")
        self.save_button.setToolTip("Write every setting to a YAML file that `xgblora train --config FILE` reads")
        self.defaults_button = QPushButton("Defaults")
        self.defaults_button.setToolTip("Every boosting and training setting back to the engine's defaults "
                                        "(the model and the data stay)")
        self.load_button.clicked.connect(lambda: self.load_settings())
        self.save_button.clicked.connect(lambda: self.save_settings())
        self.defaults_button.clicked.connect(lambda: self.studio.settings.reset())
        row.addWidget(self.defaults_button)
        row.addWidget(self.load_button)
        row.addWidget(self.save_button)
        return box

    def load_settings(self, path: str | None = None) -> None:
        path = path or QFileDialog.getOpenFileName(self, "Load settings", "", "Settings (*.yaml *.yml *.json)")[0]
        if not path:
            return
        try:
            skipped = self.studio.settings.load(C.load_config_file(path))
        except UserError as exc:
            self.banner.show_message("error", exc.message, exc.hint)
            return
        if skipped:
            self.banner.show_message("warning", f"loaded {Path(path).name}, except: {', '.join(skipped)}",
                                     "those values are not valid here; the current ones were kept")
        else:
            self.banner.show_message("info", f"settings loaded from {path}")

    def save_settings(self, path: str | None = None) -> None:
        path = path or QFileDialog.getSaveFileName(self, "Save settings", "xgblora.yaml", "YAML (*.yaml)")[0]
        if not path:
            return
        try:
            C.save_config(self.studio.settings.copy(), path)
        except OSError as exc:
            self.banner.show_message("error", f"could not write {path}: {exc.strerror or exc}",
                                     "choose a folder you can write to")
            return
        self.banner.show_message("info", f"settings saved to {path}: `xgblora train --config {path}` runs them")

    def show_copied(self, run_dir: str) -> None:
        self.banner.show_message("info", f"Settings of {Path(run_dir).name} loaded",
                                 "change what you want to try, then Start (Train) makes a new run")

    # --- actions --------------------------------------------------------------------
    def apply_preset(self, name: str) -> None:
        self.studio.settings.update(preset_changes(name, self.studio.session.n_layers))

    def _length_mode(self) -> None:
        by_steps = self.by_steps.isChecked()
        self.steps.setEnabled(by_steps)
        self.epochs.setEnabled(not by_steps and self._n_train() is not None)

    def _epochs_changed(self, epochs: float) -> None:
        n_train = self._n_train()
        if self.by_epochs.isChecked() and n_train:
            self.studio.settings.set("train", "max_steps", self.studio.settings.epochs_to_steps(epochs, n_train))

    def _n_train(self) -> int | None:
        report = self.studio.session.data_report
        return report.n_train if report else None

    # --- derived --------------------------------------------------------------------
    def refresh(self) -> None:
        s, info = self.studio.settings, self.studio.session.model_info
        n_layers = info.n_layers if info else None
        k = s.k(n_layers)
        n_train = self._n_train()
        self._length_mode()
        if n_train and not self.by_epochs.isChecked():
            self.epochs.blockSignals(True)
            self.epochs.setValue(s.steps_to_epochs(n_train))
            self.epochs.blockSignals(False)
        cfg = s.cfg
        self.carry.setEnabled(cfg.boost.init in C.CARRYING_INITS)  # the other starts set A every round
        self.carry_b.setEnabled(cfg.boost.carries)
        text = (f"<b>T = ⌈{cfg.train.max_steps} / {cfg.boost.merge_every}⌉ = {s.rounds()} rounds</b> of "
                f"{cfg.boost.merge_every} steps, each boosting "
                + (f"<b>{k} of {n_layers} layers</b>" if k and n_layers else "about half the layers")
                + f" with rank-{cfg.boost.rank} boosters. ")
        params = s.trainable_params(info)
        if params is not None:
            share = params / info.n_params * 1000 if info.n_params else None
            text += (f"Trainable parameters per round: <b>≈ {human_count(params)}</b>"
                     + (f" ({share:.3g} ‰ of {human_count(info.n_params)})" if share else "") + ". ")
        else:
            text += "Trainable parameters appear once the model is loaded (Model panel). "
        booster_lr = s.effective_lr(n_layers)
        if booster_lr is not None:
            rule = lr_rule_text(cfg.train.lr, cfg.boost.rank, k, n_layers, cfg.train.lr_rule)
            text += f"Boosters train at a peak rate of <b>{booster_lr:.3g}</b> ({rule}). "
        if cfg.boost.carries:
            text += ("A layer drawn again continues its B from where it stopped, with its A and Adam moments. "
                     if cfg.boost.carry_b else "A layer drawn again starts from its last A and Adam moments. ")
        effective = cfg.train.batch_size * cfg.train.grad_accum
        text += f"Effective batch {effective} examples per step"
        if n_train:
            text += f", ≈ {s.steps_to_epochs(n_train):.2f} epochs over {n_train} examples"
        self.summary.setText(text + ".")
        self.picture.update_draws(n_layers, k, cfg.train.seed, cfg.boost.sampling, cfg.boost.layers, s.rounds())
