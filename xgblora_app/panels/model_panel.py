"""Model: which base model to fine-tune, how to load it, what it is once loaded, and the
devices the engine sees (with several GPUs: over how many to spread the model)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from xgblora_app.bindings import Bindings
from xgblora_app.context import Studio
from xgblora_app.format import device_label, human_bytes, human_count
from xgblora_app.state.hf_cache import cached_models
from xgblora_app.state.run_settings import help_text
from xgblora_app.widgets import Banner, section_title
from xgblora_engine import config as C
from xgblora_engine import protocol as P
from xgblora_engine.devices import gpu_count
from xgblora_engine.payloads import Device, ModelInfo

SOURCES = ("default", "local", "cache", "hub")
INFO_ROWS = (("name", "Model"), ("architecture", "Architecture"), ("n_layers", "Layers"),
             ("hidden_size", "Hidden size"), ("n_params", "Parameters"), ("weight_bytes", "Weights in memory"),
             ("dtype", "Compute dtype"), ("device", "Device"), ("quantization", "Base quantization"),
             ("targets", "Boosted linears"))


class ModelPanel(QWidget):
    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.inspect_ids: set[int] = set()
        self._build()
        self._show_choice(studio.settings.get("model", "name"))
        studio.settings.subscribe("changed", self._on_setting)
        studio.session.subscribe("model_info", self._show_info)
        studio.bridge.inspect_result.connect(self._on_inspect)
        studio.bridge.error.connect(self._on_error)
        studio.bridge.run_started.connect(lambda e: studio.session.set_model_info(e.model_info))
        studio.bridge.hello.connect(lambda e: self.show_devices(e.devices))
        self.show_devices(studio.bridge.devices)  # the worker may have said hello before this panel existed

    # --- layout --------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(section_title("Base model"))
        self.banner = Banner()
        layout.addWidget(self.banner)
        layout.addWidget(self._source_box())
        row = QHBoxLayout()
        row.addWidget(self._info_box(), 3)
        right = QVBoxLayout()
        right.addWidget(self._loading_box())
        right.addWidget(self._devices_box())
        right.addStretch(1)
        row.addLayout(right, 2)
        layout.addLayout(row)
        layout.addStretch(1)

    def _source_box(self) -> QGroupBox:
        box = QGroupBox("Where the model comes from")
        grid = QGridLayout(box)
        self.source = QButtonGroup(self)
        labels = {"default": "Embedded SmolLM2-135M-Instruct (works offline)", "local": "Local folder or .gguf file",
                  "cache": "Already in the Hugging Face cache", "hub": "Hugging Face Hub id"}
        self.radios = {}
        for row, key in enumerate(SOURCES):
            radio = QRadioButton(labels[key])
            self.source.addButton(radio, row)
            self.radios[key] = radio
            grid.addWidget(radio, row, 0)
        self.local_path = QLineEdit()
        self.local_path.setPlaceholderText("a model folder (config.json + weights) or a .gguf file")
        folder, gguf = QPushButton("Folder…"), QPushButton(".gguf file…")
        folder.clicked.connect(self._pick_folder)
        gguf.clicked.connect(self._pick_gguf)
        local = QHBoxLayout()
        for w in (self.local_path, folder, gguf):
            local.addWidget(w)
        grid.addLayout(local, 1, 1)
        self.cache_list = QComboBox()
        self.cache_list.setPlaceholderText("no models in the cache")
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh_cache)
        cache = QHBoxLayout()
        cache.addWidget(self.cache_list, 1)
        cache.addWidget(refresh)
        grid.addLayout(cache, 2, 1)
        self.hub_id = QLineEdit()
        self.hub_id.setPlaceholderText("owner/name, e.g. HuggingFaceTB/SmolLM2-360M-Instruct (needs the network "
                                       "unless cached)")
        grid.addWidget(self.hub_id, 3, 1)
        grid.setColumnStretch(1, 1)
        self.inspect_button = QPushButton("Load model info")
        self.inspect_button.setToolTip("the engine loads the model once to read its layers, size and dtype")
        self.inspect_button.clicked.connect(self.inspect)
        grid.addWidget(self.inspect_button, 4, 1)
        self.refresh_cache()
        self.source.idClicked.connect(lambda _: self._choice_changed())
        self.local_path.editingFinished.connect(self._choice_changed)
        self.hub_id.editingFinished.connect(self._choice_changed)
        self.cache_list.activated.connect(lambda _: self._choice_changed())
        return box

    def _info_box(self) -> QGroupBox:
        box = QGroupBox("What it is")
        form = QFormLayout(box)
        self.info_labels = {}
        for key, label in INFO_ROWS:
            value = QLabel("–")
            value.setWordWrap(True)
            self.info_labels[key] = value
            form.addRow(label, value)
        self.info_state = QLabel("Not loaded yet.")
        form.addRow(self.info_state)
        return box

    def _loading_box(self) -> QGroupBox:
        box = QGroupBox("How to load it")
        form = QFormLayout(box)
        self.dtype = QComboBox()
        self.dtype.addItems(C.DTYPES)
        self.quantize = QComboBox()
        self.quantize.addItems(C.QUANTIZE)
        self.device = QComboBox()
        self.device.setEditable(True)
        self.device.addItems(["auto", "cpu", "cuda"])
        self.checkpointing = QCheckBox("Gradient checkpointing")
        for key, widget in (("dtype", self.dtype), ("quantize", self.quantize), ("device", self.device),
                            ("gradient_checkpointing", self.checkpointing)):
            widget.setToolTip(help_text("model", key))
        form.addRow("Precision", self.dtype)
        form.addRow("Quantized base", self.quantize)
        form.addRow("Device", self.device)
        form.addRow(self.checkpointing)
        s = self.studio.settings
        self.dtype.setCurrentText(s.get("model", "dtype"))
        self.quantize.setCurrentText(s.get("model", "quantize"))
        self.device.setCurrentText(s.get("model", "device"))
        self.checkpointing.setChecked(s.get("model", "gradient_checkpointing"))
        self.dtype.currentTextChanged.connect(lambda v: s.set("model", "dtype", v))
        self.quantize.currentTextChanged.connect(lambda v: s.set("model", "quantize", v))
        self.device.currentTextChanged.connect(lambda v: s.set("model", "device", v.strip() or "auto"))
        self.checkpointing.toggled.connect(lambda v: s.set("model", "gradient_checkpointing", v))
        return box

    def _devices_box(self) -> QGroupBox:
        box = QGroupBox("Devices the engine sees")
        layout = QVBoxLayout(box)
        self.device_list = QVBoxLayout()
        layout.addLayout(self.device_list)
        self.device_labels: list[QLabel] = []
        self.gpu_row = QWidget()
        form = QFormLayout(self.gpu_row)
        form.setContentsMargins(0, 0, 0, 0)
        self.bind = Bindings(self.studio.settings)
        self.gpus_for_run = self.bind.spin("model", "shard_gpus", 1, 64)
        self.gpus_for_run.setSuffix(" GPU(s)")
        form.addRow("GPUs for this run", self.gpus_for_run)
        note = QLabel("More than one spreads the model over the GPUs (layers split between them), for a model "
                      "bigger than one card. To train faster on several GPUs with a copy of the model on each, use "
                      "data-parallel training from the command line: "
                      "<code style='white-space:nowrap'>xgblora train --num-processes N</code>.")
        note.setTextFormat(Qt.TextFormat.RichText)
        note.setWordWrap(True)
        form.addRow(note)
        layout.addWidget(self.gpu_row)
        return box

    def show_devices(self, devices: list[Device]) -> None:
        """List what the worker reported; offer the GPU count only with two GPUs or more."""
        for label in self.device_labels:
            label.deleteLater()
        self.device_labels = [QLabel(device_label(d)) for d in devices] or [QLabel("not known yet")]
        for label in self.device_labels:
            self.device_list.addWidget(label)
        gpus = gpu_count(devices)
        limit = gpus if gpus >= 2 else 1
        if self.studio.settings.get("model", "shard_gpus") > limit:  # a saved choice this machine cannot run
            self.studio.settings.set("model", "shard_gpus", limit)
        self.gpus_for_run.setMaximum(limit)
        self.gpu_row.setVisible(gpus >= 2)

    # --- choosing -----------------------------------------------------------------
    def refresh_cache(self) -> None:
        current = self.cache_list.currentText()
        self.cache_list.clear()
        self.cache_list.addItems(cached_models())
        if current:
            self.cache_list.setCurrentText(current)

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model folder", self.studio.prefs.value("dirs/model", ""))
        self._picked(path)

    def _pick_gguf(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "GGUF model file", self.studio.prefs.value("dirs/model", ""),
                                              "GGUF models (*.gguf)")
        self._picked(path)

    def _picked(self, path: str) -> None:
        if path:
            self.studio.prefs.setValue("dirs/model", path)
            self.local_path.setText(path)
            self.radios["local"].setChecked(True)
            self._choice_changed()

    def chosen_name(self) -> str:
        key = SOURCES[self.source.checkedId()] if self.source.checkedId() >= 0 else "default"
        return {"default": "default", "local": self.local_path.text().strip(),
                "cache": self.cache_list.currentText().strip(), "hub": self.hub_id.text().strip()}[key]

    def _choice_changed(self) -> None:
        name = self.chosen_name()
        if name and name != self.studio.settings.get("model", "name"):
            self.studio.settings.set("model", "name", name)
            self.inspect()

    def _show_choice(self, name: str) -> None:
        if name == "default":
            self.radios["default"].setChecked(True)
        elif name in cached_models():
            self.cache_list.setCurrentText(name)
            self.radios["cache"].setChecked(True)
        elif "/" in name and not name.startswith(("/", ".", "~")) and not name.endswith(".gguf"):
            self.hub_id.setText(name)
            self.radios["hub"].setChecked(True)
        else:
            self.local_path.setText(name)
            self.radios["local"].setChecked(True)

    def _on_setting(self, section: str, key: str, value) -> None:
        """Keep the widgets in step when settings change elsewhere (a remedy, a preset)."""
        if section != "model":
            return
        widgets = {"dtype": self.dtype, "quantize": self.quantize, "device": self.device}
        if key in widgets and widgets[key].currentText() != value:
            widgets[key].setCurrentText(value)
        elif key == "gradient_checkpointing":
            self.checkpointing.setChecked(bool(value))
        elif key == "name" and value != self.chosen_name():
            self._show_choice(value)

    # --- engine ---------------------------------------------------------------------
    def inspect(self) -> None:
        name = self.studio.settings.get("model", "name")
        self.banner.clear()
        self.info_state.setText(f"Loading {name} in the engine…")
        self.studio.bridge.drop_queued(lambda c: isinstance(c, P.Inspect) and c.model is not None)  # only the newest pick matters
        self.inspect_ids.add(self.studio.bridge.submit(P.Inspect(model=name, config=self.studio.settings.copy())))

    def _on_inspect(self, event: P.InspectResult) -> None:
        if event.job_id in self.inspect_ids and event.model_info:
            self.studio.session.set_model_info(event.model_info)

    def _on_error(self, event: P.Error) -> None:
        if event.job_id in self.inspect_ids:
            self.info_state.setText("Could not load the model.")
            self.banner.show_message("error", event.message, event.hint)

    def _show_info(self, info: ModelInfo | None) -> None:
        for key, _ in INFO_ROWS:
            value = getattr(info, key, None)
            if value is None:
                text = "–"
            elif key == "n_params":
                text = human_count(value) + " parameters"
            elif key == "weight_bytes":
                text = human_bytes(value)
            elif key == "targets":
                text = ", ".join(value) or "–"
            elif key == "device" and len(info.devices) > 1:
                text = " + ".join(info.devices) + " (sharded)"
            else:
                text = str(value)
            self.info_labels[key].setText(text)
        self.info_state.setText("Loaded." if info else "Not loaded yet.")
