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
import torch.nn.functional as F

from lib.model import VARIANTS, build_sam3d, detect_variant, load_sam3d, save_sam3d
from lib.model.fast_conv import OneDnnConv3d, PatchConvTranspose3d
from lib.model.image_encoder import Attention
from lib.model.prompt_encoder import PromptEncoder3D

# Copies of the reference manifests, golden outputs and seeded-weights recipe (tests/fixtures/reference/README.md).
# SEG3D_REFERENCE_DIR points the tests at another copy, for example the team's ../shared/reference.
REFERENCE = Path(os.environ.get("SEG3D_REFERENCE_DIR") or Path(__file__).resolve().parent / "fixtures" / "reference")


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
        multi, multi_iou = model.decode(embedding, points, labels, multimask_output=True)
        assert multi.shape == (1, 3, 32, 32, 32) and multi_iou.shape == (1, 3)


def test_starter_forward_end_to_end_batched():
    torch.manual_seed(0)
    model = build_sam3d("starter").eval()
    image = torch.randn(2, 1, 128, 128, 128)
    points, labels = torch.tensor([[[60.0, 70.0, 64.0]], [[10.0, 20.0, 30.0]]]), torch.tensor([[1], [0]])
    with torch.no_grad():
        logits, iou = model(image, points, labels)
        assert logits.shape == (2, 1, 32, 32, 32) and iou.shape == (2, 1)
        single, single_iou = model(image[1:], points[1:], labels[1:])  # batch items do not mix
        refined, _ = model(image[1:], points[1:], labels[1:], mask_logits=single)
    assert torch.allclose(single, logits[1:], atol=1e-5) and torch.allclose(single_iou, iou[1:], atol=1e-5)
    assert refined.shape == single.shape and not torch.allclose(refined, single)


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


def reference_attention(attn: Attention, x: torch.Tensor, window: int) -> torch.Tensor:
    """SAM-Med3D's block attention transcribed literally: zero-pad the (normed) tokens to one window, attend over
    all window^3 tokens with the reference's decomposed rel-pos broadcast, crop back to the grid."""
    b, g, heads = x.shape[0], x.shape[1], attn.num_heads
    x = F.pad(x, (0, 0, 0, window - g, 0, window - g, 0, window - g))
    n = window**3
    q, k, v = attn.qkv(x).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4).reshape(3, b * heads, n, -1).unbind(0)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    offsets = torch.arange(window)[:, None] - torch.arange(window)[None, :] + window - 1
    r_q = q.reshape(b * heads, window, window, window, -1)
    rel_d = torch.einsum("bdhwc,dkc->bdhwk", r_q, attn.rel_pos_d[offsets])
    rel_h = torch.einsum("bdhwc,hkc->bdhwk", r_q, attn.rel_pos_h[offsets])
    rel_w = torch.einsum("bdhwc,wkc->bdhwk", r_q, attn.rel_pos_w[offsets])
    logits = (logits.view(b * heads, *(window,) * 6) + rel_d[:, :, :, :, None, None] + rel_h[:, :, :, None, :, None]
              + rel_w[:, :, :, None, None, :]).view(b * heads, n, n)
    out = (logits.softmax(dim=-1) @ v).view(b, heads, window, window, window, -1).permute(0, 2, 3, 4, 1, 5)
    return attn.proj(out.reshape(b, window, window, window, -1))[:, :g, :g, :g]


@pytest.mark.parametrize("window", [14, 0])
def test_attention_equals_the_padded_reference_with_strong_position_terms(window):
    # seeded weights (std 0.02) make position terms tiny; here biases and rel-pos tables are large, so a wrong
    # padded-key aggregation or padded query (the query bias) would show
    torch.manual_seed(0)
    attn = Attention(32, 2, input_size=8, window_size=window)
    with torch.no_grad():
        for name, parameter in attn.named_parameters():
            parameter.normal_(0.0, 0.2 if name.endswith("weight") else 1.0)
        x = torch.randn(2, 8, 8, 8, 32)
        expected = reference_attention(attn, x, max(window, 8))
        assert relative_error(attn(x), expected) < 1e-5


def test_several_attention_windows_are_refused():
    with pytest.raises(ValueError, match="windows smaller"):
        Attention(32, 2, input_size=8, window_size=4)(torch.zeros(1, 8, 8, 8, 32))


def test_sam_med3d_reproduces_reference_outputs(golden):
    ref = golden["sam_med3d"]
    model = load_sam3d(seeded().seeded_state(manifest("sam_med3d_vit_b_ori.json")))
    with torch.no_grad():
        assert relative_error(model.encode(seeded().vol()), ref["embedding"]) < 1e-4
        logits, iou = model.decode(ref["embedding"], ref["points"], ref["labels"])
    # tight: with seeded weights a transposed dense grid moves the logits by only 6e-5 of their scale
    assert relative_error(logits, ref["low_res_logits"]) < 1e-5
    assert relative_error(iou, ref["iou"]) < 1e-5


def test_points_match_the_dense_grid_with_the_first_two_axes_swapped():
    torch.manual_seed(0)
    encoder = build_sam3d("starter").prompt_encoder
    dense = encoder.get_dense_pe()[0]
    i, j, k = 1, 5, 6
    point = torch.tensor([[[16 * j + 7.5, 16 * i + 7.5, 16 * k + 7.5]]])  # +0.5 puts it at the centre of cell (i, j, k)
    sparse, _ = encoder(points=(point, torch.tensor([[0]])), boxes=None, masks=None)
    assert sparse.shape == (1, 2, 192)  # the click and SAM's padding point
    encoding = sparse[0, 0] - encoder.point_embeddings[0].weight[0]
    assert torch.allclose(encoding, dense[:, i, j, k], atol=1e-5)
    assert not torch.allclose(encoding, dense[:, j, i, k], atol=1e-2)
    assert torch.equal(sparse[0, 1], encoder.not_a_point_embed.weight[0])


def test_box_prompts_are_refused():
    encoder = PromptEncoder3D(384, (8, 8, 8), (128, 128, 128))
    with pytest.raises(ValueError, match="box prompts are not supported"):
        encoder(points=None, boxes=torch.tensor([[10.0, 20.0, 30.0, 50.0, 60.0, 70.0]]), masks=None)


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


def test_encoder_checkpoint_replaces_the_encoder_of_a_checkpoint_with_its_own_variant():
    sam, fast = build_sam3d("sam_med3d").state_dict(), build_sam3d("fastsam3d").state_dict()
    # a checkpoint of ours (with a variant tag) plus a full FastSAM3D model as the encoder file: only its encoder counts
    model = load_sam3d({"model_state_dict": sam, "variant": "sam_med3d"}, encoder_checkpoint=fast)
    assert model.variant == "fastsam3d"
    state = model.state_dict()
    assert torch.equal(state["image_encoder.blocks.5.attn.qkv.weight"], fast["image_encoder.blocks.5.attn.qkv.weight"])
    assert torch.equal(state["mask_decoder.iou_token.weight"], sam["mask_decoder.iou_token.weight"])


def test_a_bare_encoder_file_alone_is_explained():
    encoder = build_sam3d("starter").image_encoder.state_dict()
    with pytest.raises(ValueError, match="encoder_checkpoint"):
        load_sam3d({"model_state_dict": encoder})


def test_official_bare_and_wrapped_files_load(tmp_path):
    state = build_sam3d("starter").state_dict()
    torch.save(state, tmp_path / "bare.pth")
    torch.save({"model_state_dict": state, "epoch": 3}, tmp_path / "wrapped.pth")
    torch.save({"state_dict": state}, tmp_path / "lightning.pth")
    for name in ("bare.pth", "wrapped.pth", "lightning.pth"):
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
    with pytest.raises(ValueError, match=r"pos_embed.*\['something'\]"):
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


def test_convolutions_run_on_faster_kernels_at_inference_with_the_reference_results():
    torch.manual_seed(0)
    model = build_sam3d("starter", refiner="clicks")
    convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convolutions and all(type(m) is OneDnnConv3d for m in convolutions)
    upscaling = [m for m in model.mask_decoder.output_upscaling if isinstance(m, torch.nn.ConvTranspose3d)]
    assert len(upscaling) == 2 and all(type(m) is PatchConvTranspose3d for m in upscaling)
    tokens = torch.randn(2, upscaling[0].in_channels, 4, 5, 6)
    with torch.no_grad():
        fast = upscaling[0](tokens)
    with torch.enable_grad():
        assert torch.allclose(fast, upscaling[0](tokens).detach(), atol=1e-5)
    embedding = torch.randn(2, tokens.shape[1], model.embed_size, model.embed_size, model.embed_size)
    points, labels = torch.tensor([[[20.0, 30.0, 40.0]]] * 2), torch.tensor([[1]] * 2)
    with torch.no_grad():  # the decoder's masks from the last upscaling layer's blocks
        fast_masks, _ = model.decode(embedding, points, labels, multimask_output=True)
    with torch.enable_grad():
        reference_masks, _ = model.decode(embedding, points, labels, multimask_output=True)
    assert fast_masks.shape == (2, 3, *(model.low_res_size,) * 3)
    assert torch.allclose(fast_masks, reference_masks.detach(), atol=1e-5)
    x = torch.randn(1, 5, 32, 32, 32)
    unet = model.mask_refiner.unet
    with torch.no_grad(), torch.profiler.profile() as profile:
        fast = unet(x)
    assert any(e.key == "aten::mkldnn_convolution" for e in profile.key_averages())
    with torch.enable_grad():  # training keeps PyTorch's own kernels and gradients
        reference = unet(x)
    assert reference.requires_grad and torch.allclose(fast, reference.detach(), atol=1e-4)
