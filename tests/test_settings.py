"""The typed ``--conf`` settings: defaults, parsing of each type, bad values stop start-up, the README's table."""

import logging
from pathlib import Path

import pytest

from lib.settings import MODEL_SPACING_MM, Settings, SettingsError, TrainSettings

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_defaults():
    settings = Settings.from_conf({})
    assert settings == Settings() == Settings.from_conf(None)
    assert (settings.checkpoint, settings.encoder_checkpoint, settings.device, settings.state_dir) == (None,) * 4
    assert settings.adapter_version is None and settings.keep_adapters == 5 and settings.labels is None
    assert settings.spacing == MODEL_SPACING_MM == 1.5
    assert (settings.volume_cache_mb, settings.embedding_cache_mb) == (1024.0, 512.0)
    assert (settings.train_after_labels, settings.threaded_infer) == (0, True)
    assert (settings.uncertainty_samples, settings.next_sample_window_s) == (4, 600.0)
    assert settings.train.options() == {
        "max_epochs": 100, "max_minutes": 8.0, "val_split": 0.2, "max_clicks": 5, "crops_per_volume": 4,
        "lr": 5e-4, "bottleneck": 32, "train_norms": True, "train_prompt_encoder": True,
        "train_mask_decoder": True, "continue_from_published": True, "keep_known_classes": True, "seed": 0,
        "dataset": "CacheDataset", "dataloader": "ThreadDataLoader", "tracking": "None",
    }


@pytest.mark.parametrize("text, value", [
    ("true", True), ("False", False), (" YES ", True), ("no", False), ("1", True), ("0", False), ("on", True),
    ("Off", False),
])
def test_bools(text, value):
    settings = Settings.from_conf({"threaded_infer": text, "train_train_norms": text})
    assert settings.threaded_infer is value and settings.train.train_norms is value


def test_numbers_paths_and_strings():
    settings = Settings.from_conf({
        "keep_adapters": "3", "train_after_labels": " 2 ", "spacing": "2", "volume_cache_mb": "1.5e3",
        "next_sample_window_s": "30.5", "train_lr": "1e-3", "train_max_epochs": "7", "train_dataset": "Dataset",
        "checkpoint": "/x/sam_med3d.pth", "encoder_checkpoint": "", "state_dir": "/tmp/state", "device": "cpu",
    })
    assert (settings.keep_adapters, settings.train_after_labels) == (3, 2)
    assert (settings.spacing, settings.volume_cache_mb, settings.next_sample_window_s) == (2.0, 1500.0, 30.5)
    assert (settings.train.lr, settings.train.max_epochs, settings.train.dataset) == (1e-3, 7, "Dataset")
    assert settings.checkpoint == Path("/x/sam_med3d.pth") and settings.encoder_checkpoint is None
    assert settings.state_dir == Path("/tmp/state") and settings.device == "cpu"
    assert Settings.from_conf({"device": ""}).device is None
    # the untouched train options keep their defaults
    assert settings.train.max_minutes == TrainSettings().max_minutes


def test_adapter_version_and_labels():
    assert Settings.from_conf({"adapter_version": "latest"}).adapter_version is None
    assert Settings.from_conf({"adapter_version": "0"}).adapter_version == 0
    assert Settings.from_conf({"adapter_version": "12"}).adapter_version == 12
    assert Settings.from_conf({"labels": "liver, spleen,"}).labels == {"liver": 1, "spleen": 2}
    assert Settings.from_conf({"labels": '{"kidney": 3, "liver": "1"}'}).labels == {"kidney": 3, "liver": 1}
    assert Settings.from_conf({"labels": " "}).labels is None


@pytest.mark.parametrize("key, text, why", [
    ("threaded_infer", "maybe", "expected true or false"),
    ("train_train_mask_decoder", "", "expected true or false"),
    ("keep_adapters", "1.5", "expected a whole number"),
    ("keep_adapters", "0", "at least 1"),
    ("train_after_labels", "-1", "at least 0"),
    ("uncertainty_samples", "four", "expected a whole number"),
    ("spacing", "nan", "finite"),
    ("spacing", "0", "at least"),
    ("volume_cache_mb", "1GB", "expected a number"),
    ("next_sample_window_s", "inf", "finite"),
    ("train_lr", "fast", "expected a number"),
    ("train_max_epochs", "0", "at least 1"),
    ("adapter_version", "newest", "'latest' or a version number"),
    ("adapter_version", "-2", "at least 0"),
    ("labels", "{not json", "JSON object"),
    ("labels", '{"liver": "x"}', "JSON object"),
    ("labels", '{"liver": 0}', "1 or more"),
])
def test_bad_values_raise_naming_the_key(key, text, why):
    with pytest.raises(SettingsError, match=why) as error:
        Settings.from_conf({key: text})
    assert str(error.value).startswith(f"--conf {key} {text!r}:")


def test_unknown_keys_are_logged_not_fatal(caplog):
    with caplog.at_level(logging.WARNING, logger="lib.settings"):
        assert Settings.from_conf({"server_mode": "true", "train_after_label": "3"}) == Settings()
    assert "train_after_label" in caplog.text and "server_mode" in caplog.text


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().keep_adapters = 3


def test_the_app_refuses_a_bad_value_at_start_up(tmp_path):
    from apps.seg3d.main import Seg3DApp

    with pytest.raises(SettingsError, match="--conf train_after_labels 'some'"):
        Seg3DApp(str(REPO_ROOT / "apps" / "seg3d"), str(tmp_path), {"train_after_labels": "some"})


def test_the_runtime_is_built_from_the_settings(tmp_path):
    from lib.engine.runtime import Runtime

    settings = Settings.from_conf({"state_dir": str(tmp_path), "adapter_version": "2", "keep_adapters": "3",
                                   "device": "cpu", "spacing": "2.5", "volume_cache_mb": "1", "checkpoint": "/x.pt"})
    runtime = Runtime.from_settings(tmp_path / "model", settings)
    assert runtime.state_dir == tmp_path and runtime.models.adapter_root == tmp_path / "adapters"
    assert (runtime.models.adapter_version, runtime.models.keep_adapters, runtime.models.device) == (2, 3, "cpu")
    assert runtime.models.checkpoint == Path("/x.pt")
    assert runtime.volumes.spacing == 2.5 and runtime.volumes._cache.max_bytes == 1 << 20
    assert Runtime.from_settings(tmp_path, Settings()).state_dir == tmp_path  # default: the model folder


def test_readme_lists_every_key_as_the_settings_define_it():
    readme = (REPO_ROOT / "README.md").read_text()
    assert Settings.markdown_table() in readme, "README's --conf table is stale: paste `python -m lib.settings`"
    assert all(f"| `{key}` |" in readme for key in Settings.keys())


def test_training_request_flags_read_strings_as_the_settings_do():
    from lib.settings import SettingsError
    from lib.trainers.sam3d_adapters import request_flag

    assert request_flag({"train_norms": "false"}, "train_norms") is False
    assert request_flag({"train_norms": True}, "train_norms") is True
    assert request_flag({}, "continue_from_published") is True
    with pytest.raises(SettingsError):
        request_flag({"train_norms": "maybe"}, "train_norms")
