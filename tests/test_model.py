"""The network: shapes, official checkpoint layouts, golden outputs of the reference code, loading."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

from lib.model import VARIANTS, build_sam3d, detect_variant, load_sam3d, save_sam3d

REFERENCE = Path(os.environ.get("SEG3D_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "reference"))


def manifest(name: str) -> dict:
    return json.loads((REFERENCE / name).read_text())


def seeded():
    spec = importlib.util.spec_from_file_location("seeded", REFERENCE / "seeded.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(REFERENCE / "golden.pt", weights_only=False)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_shapes_end_to_end(variant):
    model = build_sam3d(variant).eval()
    with torch.no_grad():
        embedding = model.encode(torch.randn(1, 1, 128, 128, 128))
        assert embedding.shape == (1, VARIANTS[variant]["prompt_dim"], 8, 8, 8)
        points, labels = torch.tensor([[[60.0, 70.0, 64.0], [10.0, 20.0, 30.0]]]), torch.tensor([[1, 0]])
        logits, iou = model.decode(embedding, points, labels)
        assert logits.shape == (1, 1, 32, 32, 32) and iou.shape == (1, 1)
        refined, _ = model.decode(embedding, points, labels, mask_logits=logits)
        assert refined.shape == logits.shape and not torch.allclose(refined, logits)


def test_sam_med3d_layout_matches_the_official_manifest():
    reference = manifest("sam_med3d_vit_b_ori.json")
    model = build_sam3d("sam_med3d")
    state = model.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == reference["keys"]
    assert sum(p.numel() for p in model.parameters()) == reference["num_params"]


def test_fastsam3d_student_layout_matches_the_official_manifest():
    reference = manifest("fastsam3d_student_encoder.json")
    encoder = build_sam3d("fastsam3d").image_encoder
    assert {k: list(v.shape) for k, v in encoder.state_dict().items()} == reference["keys"]
    assert sum(p.numel() for p in encoder.parameters()) == reference["num_params"]


def test_sam_med3d_reproduces_reference_outputs(golden):
    ref = golden["sam_med3d"]
    model = load_sam3d(seeded().seeded_state(manifest("sam_med3d_vit_b_ori.json")))
    with torch.no_grad():
        assert relative_error(model.encode(seeded().vol()), ref["embedding"]) < 1e-4
        logits, iou = model.decode(ref["embedding"], ref["points"], ref["labels"])
    assert relative_error(logits, ref["low_res_logits"]) < 1e-4
    assert torch.allclose(iou, ref["iou"], atol=1e-5)


def test_fastsam3d_reproduces_reference_embedding(golden, tmp_path):
    s = seeded()
    full = tmp_path / "sam_med3d.pth"
    torch.save({"model_state_dict": s.seeded_state(manifest("sam_med3d_vit_b_ori.json"))}, full)
    student = tmp_path / "fastsam3d_encoder.pth"
    torch.save({"model_state_dict": s.seeded_state(manifest("fastsam3d_student_encoder.json"))}, student)
    model = load_sam3d(full, encoder_checkpoint=student)
    assert model.variant == "fastsam3d"
    with torch.no_grad():
        assert relative_error(model.encode(s.vol()), golden["fastsam3d_student"]["embedding"]) < 1e-4


def test_official_bare_and_wrapped_files_load(tmp_path):
    state = build_sam3d("starter").state_dict()
    torch.save(state, tmp_path / "bare.pth")
    torch.save({"model_state_dict": state, "epoch": 3}, tmp_path / "wrapped.pth")
    for name in ("bare.pth", "wrapped.pth"):
        loaded = load_sam3d(tmp_path / name)
        assert loaded.variant == "starter" and not loaded.training
        assert torch.equal(loaded.state_dict()["mask_decoder.iou_token.weight"], state["mask_decoder.iou_token.weight"])



def _save_as_if_on_cuda(state: dict, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    # torch's zip format records each storage's device as a pickled string; rewrite it to the GPU's name
    source = zipfile.ZipFile(io.BytesIO(data))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as out:
        for info in source.infolist():
            payload = source.read(info)
            if info.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in payload  # pickle BINUNICODE 'cpu'
                payload = payload.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            out.writestr(info, payload)


def test_cuda_saved_checkpoint_loads_on_cpu(tmp_path):
    state = build_sam3d("starter").state_dict()
    path = tmp_path / "gpu.pth"
    _save_as_if_on_cuda({"model_state_dict": state}, path)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=False)  # what a plain load (map_location=None) does on this machine
    model = load_sam3d(path)
    assert next(model.parameters()).device.type == "cpu"
    assert torch.equal(model.state_dict()["image_encoder.pos_embed"], state["image_encoder.pos_embed"])


def test_unknown_layout_names_the_keys():
    state = build_sam3d("starter").state_dict()
    state.pop("mask_decoder.iou_token.weight")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"1 missing \['mask_decoder.iou_token.weight'\].*1 unexpected"):
        load_sam3d(state)
    with pytest.raises(ValueError, match="pos_embed"):
        load_sam3d({"something": torch.zeros(1)})


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_detection(variant):
    assert detect_variant(build_sam3d(variant).state_dict()) == variant


def test_save_sam3d_round_trip_with_metadata_and_half_precision(tmp_path):
    model = build_sam3d("starter")
    path = save_sam3d(model, tmp_path / "s.pt", half=True, record={"steps": 1})
    raw = torch.load(path, weights_only=False)
    assert raw["variant"] == "starter" and raw["record"] == {"steps": 1}
    assert raw["model_state_dict"]["image_encoder.pos_embed"].dtype == torch.float16
    loaded = load_sam3d(path)
    assert loaded.image_encoder.pos_embed.dtype == torch.float32
    assert torch.allclose(loaded.image_encoder.pos_embed, model.image_encoder.pos_embed, atol=1e-3)
