"""Dense prompt channels: rasterised in crops, seen by a ``prompts`` refiner, simulated in training sessions."""

from __future__ import annotations

import numpy as np
import torch
from monai.losses import DiceCELoss
from scipy import ndimage

from lib.engine.model_store import ModelStore
from lib.engine.predictor import InteractivePredictor
from lib.model import build_sam3d, load_sam3d, save_sam3d
from lib.model.click_refiner import INPUTS, PROMPT_INPUTS, widened_inputs
from lib.model.mask_refiner import MaskRefiner3D
from lib.prompts.box import box_prompt
from lib.prompts.channels import PromptChannels, crop_channels
from lib.prompts.geometry import Crop, original_to_volume
from lib.prompts.grid_prompts import GridPrompts
from lib.prompts.simulation import simulated_click_loss
from lib.training.object_crops import ObjectCropSampler, make_volume
from lib.training.pretrain import initial_model
from lib.transforms.preprocess import load_model_volume
from tests.conftest import lps_anisotropic_affine, write_nifti
from tests.test_training_objects import phantom


def test_a_box_fills_its_voxels_and_a_stroke_stays_unbroken_when_zoomed_in():
    stroke = np.zeros((64, 64, 64), dtype=bool)
    stroke[20, 20, 10:30] = True
    channels = PromptChannels(box=np.array([[3.0, 10.0], [0.0, 4.0], [60.0, 70.0]]), foreground=(stroke,))
    out = crop_channels(channels, Crop((0.0, 0.0, 0.0), 64), np.eye(4), 64)
    assert out.shape == (1, len(PROMPT_INPUTS), 64, 64, 64)
    expected = torch.zeros(64, 64, 64)
    expected[3:11, 0:5, 60:64] = 1  # clipped at the grid's end
    assert torch.equal(out[0, 0], expected)
    assert int(out[0, 1].sum()) == 20 and not out[0, 2].any()
    # a crop at zoom 0.25 on a 128 grid makes each stored voxel 2 refiner voxels wide: no gaps along the stroke
    zoomed = crop_channels(channels, Crop((10.0, 10.0, 10.0), 128, 0.25), np.eye(4), 64)
    _, pieces = ndimage.label(zoomed[0, 1].numpy())
    assert pieces == 1 and int(zoomed[0, 1].sum()) > 20


def test_a_widened_refiner_answers_as_the_click_refiner_until_trained_and_its_kind_survives_saving(tmp_path):
    torch.manual_seed(0)
    clicks = build_sam3d("starter", refiner="clicks").eval()
    prompts = build_sam3d("starter", refiner="prompts").eval()
    prompts.load_state_dict(widened_inputs(clicks.state_dict()))
    logits, guide = torch.randn(1, 1, 32, 32, 32), MaskRefiner3D.guide(torch.randn(1, 1, 128, 128, 128))
    points, labels = torch.tensor([[[40.0, 64.0, 64.0]]]), torch.tensor([[1]])
    channels = (torch.rand(1, len(PROMPT_INPUTS), 64, 64, 64) > 0.5).float()
    with torch.no_grad():
        before = clicks.refine(logits, guide, points, labels)
        assert torch.allclose(prompts.refine(logits, guide, points, labels, prompts=channels), before, atol=1e-5)
    loaded = load_sam3d(save_sam3d(prompts, tmp_path / "prompts.pt"))
    assert loaded.takes_prompt_channels and not load_sam3d(save_sam3d(clicks, tmp_path / "c.pt")).takes_prompt_channels


def test_simulated_sessions_send_each_region_as_the_server_does():
    target = np.zeros((64, 64, 64), dtype=bool)
    target[20:40, 25:35, 30:44] = True
    rng = np.random.default_rng(0)
    box = GridPrompts("box", target, rng)
    first = box.first_click()
    sent = box.network_clicks([(first, True)], np.zeros_like(target))
    served = box_prompt(box.box(), target.shape)
    assert np.array_equal(sent[0][0], served.foreground[0]) and sent[0][1] and len(sent) == 1
    assert np.array_equal(box.prior, served.prior)
    low, high = box.box()[:, 0].astype(int), box.box()[:, 1].astype(int)
    assert int(box.channels()[0, 0].sum()) == int(np.prod(high - low + 1))
    assert not box.served(torch.ones(64, 64, 64, dtype=torch.bool))[0, 0, 0]  # nothing outside the box
    lasso = GridPrompts("lasso", target, rng)
    sent = lasso.network_clicks([(np.array([30, 30, 37]), True), (np.array([5, 5, 5]), False)], target)
    assert sum(fg for _, fg in sent) == 3 and np.array_equal(sent[-1][0], [5, 5, 5])
    area = lasso.channels()[0, 1].numpy() > 0
    assert area.sum() > 20 and len(np.unique(np.nonzero(area)[lasso.axis])) == 1  # filled, on one slice
    line = np.zeros_like(target)
    line[20:40, 30, 30] = True  # no lasso encloses a voxel of it on any slice: the annotator clicks instead
    thin = GridPrompts("lasso", line, rng)
    assert len(thin.network_clicks([(np.array([30, 30, 30]), True)], line)) == 1 and thin.channels() is None
    scribbles = GridPrompts("scribbles", target, rng)
    one = scribbles.network_clicks([(np.array([30, 30, 37]), True)], np.zeros_like(target))
    two = scribbles.network_clicks([(np.array([30, 30, 37]), True), (np.array([10, 10, 10]), False)], target)
    assert len(two) > len(one)  # earlier strokes' clicks come first, in their order
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(one, two[: len(one)], strict=True))
    strokes = scribbles.channels()[0]
    assert strokes[1].any() and strokes[2][10, 10, 10] == 1 and not strokes[0].any()


def test_box_sessions_train_the_new_inputs():
    torch.manual_seed(0)
    image = phantom()
    volume = make_volume("phantom", torch.from_numpy(((image - image.mean()) / image.std())[None]), {})
    rng = np.random.default_rng(0)
    crop, target, _ = ObjectCropSampler([volume], 128, {"blobs": 1.0})(rng)
    model = build_sam3d("starter", refiner="prompts")
    outcome = simulated_click_loss(model, crop, target, 2, DiceCELoss(sigmoid=True), rng, train_decoder=False,
                                   prompt="box")
    outcome.loss.backward()
    first_layer = model.mask_refiner.unet.model[0].conv.unit0.conv.weight
    assert first_layer.grad[:, len(INPUTS):].abs().sum() > 0  # the box and stroke inputs learn


def test_the_predictor_gives_a_prompts_refiner_the_box_where_it_lies_in_the_crop(tmp_path):
    affine = lps_anisotropic_affine()
    path = write_nifti(tmp_path / "image.nii.gz", phantom().astype(np.float32), affine)
    volume = load_model_volume(str(path), 1.5)
    checkpoint = save_sam3d(build_sam3d("starter", refiner="prompts"), tmp_path / "prompts.pt")
    predictor = InteractivePredictor(ModelStore(checkpoint), autozoom=False)
    refiner, seen = predictor.model()[0].mask_refiner, []
    forward = refiner.forward
    refiner.forward = lambda *args: seen.append(args[-1]) or forward(*args)  # records the prompt channels
    box = np.array([[20.0, 40.0], [22.0, 36.0], [10.0, 18.0]])
    region = box_prompt(box, volume.original_shape)
    orig_to_vol = original_to_volume(volume.original_affine, volume.affine)
    centre = (orig_to_vol @ np.append(box.mean(axis=1), 1.0))[:3]
    segmentation = predictor.segment(volume, centre[None], np.zeros((0, 3)), anchor=centre,
                                     channels=region.channels)
    crop = segmentation.fine.crop
    expected = crop_channels(region.channels, crop, orig_to_vol, 64)
    assert seen[-1] is not None and torch.equal(seen[-1], expected) and expected[0, 0].sum() > 50


def test_pretraining_starts_a_prompts_refiner_from_a_click_refiner_or_from_the_decoder_alone(tmp_path):
    torch.manual_seed(0)
    clicks = build_sam3d("starter", refiner="clicks")
    widened, _ = initial_model(save_sam3d(clicks, tmp_path / "clicks.pt"), "prompts")
    weight = widened.mask_refiner.unet.model[0].conv.unit0.conv.weight
    assert torch.equal(weight[:, : len(INPUTS)], clicks.mask_refiner.unet.model[0].conv.unit0.conv.weight)
    assert not weight[:, len(INPUTS):].any()
    decoder_only, _ = initial_model(save_sam3d(build_sam3d("starter"), tmp_path / "edges.pt"), "prompts")
    assert decoder_only.takes_prompt_channels  # the edge refiner's weights are left out; the new one starts afresh
