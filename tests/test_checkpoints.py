"""Which weights the app serves, and its label map from --conf strings or the studies folder."""

from pathlib import Path

from apps.seg3d.main import app_labels
from lib.configs.checkpoints import choose_checkpoint
from lib.settings import Settings

NO_CONF = Settings()


def touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def test_conf_checkpoint_wins(tmp_path):
    touch(tmp_path / "sam_med3d_turbo.pth")
    conf = {"checkpoint": "/x/mine.pt", "encoder_checkpoint": "/x/enc.pth"}
    choice = choose_checkpoint(tmp_path, Settings.from_conf(conf))
    assert choice.checkpoint == Path("/x/mine.pt") and choice.encoder_checkpoint == Path("/x/enc.pth")


def test_official_files_in_model_dir_before_the_starter(tmp_path):
    touch(tmp_path / "starter.pt")
    sam = touch(tmp_path / "sam_med3d_turbo.pth")
    assert choose_checkpoint(tmp_path, NO_CONF).checkpoint == sam
    fast = touch(tmp_path / "FastSAM3D-encoder.pth")
    choice = choose_checkpoint(tmp_path, NO_CONF)
    assert (choice.checkpoint, choice.encoder_checkpoint) == (sam, fast)


def test_starter_is_the_fallback(tmp_path):
    choice = choose_checkpoint(tmp_path, NO_CONF)
    assert choice.checkpoint == tmp_path / "starter.pt" and choice.encoder_checkpoint is None


def test_labels_from_conf_strings_or_classes_txt(tmp_path):
    assert app_labels(str(tmp_path), Settings.from_conf({"labels": "liver, spleen"})) == {"liver": 1, "spleen": 2}
    assert app_labels(str(tmp_path), Settings.from_conf({"labels": '{"kidney": 3}'})) == {"kidney": 3}
    (tmp_path / "classes.txt").write_text("1 white_matter\n4 tumour\n")
    assert app_labels(str(tmp_path), NO_CONF) == {"white_matter": 1, "tumour": 4}
