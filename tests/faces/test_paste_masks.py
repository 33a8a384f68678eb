"""Paste masks that respect what is in front of a face: a user's MASK, face parsing with facexlib's
BiSeNet / ParseNet (random weights of the real architectures, written by the test under facexlib's
file names), and restoring at an upscaled size (faces and masks carried to the new size)."""

from __future__ import annotations

import pytest
import torch
from helpers.detection import network_blocked
from helpers.pipeline import landmarks_at, make_faces

from restoreformer_node.faces.alignment import face_arrays, warp_to_crops
from restoreformer_node.faces.parsing import (
    BISENET_LABELS,
    PARSENET_LABELS,
    FaceParsing,
    ParserWeightsMissing,
    build_network,
    load_parsing,
    parse_regions,
)
from restoreformer_node.faces.pipeline import paste_crops, restore_faces
from restoreformer_node.faces.template import template_points
from restoreformer_node.faces.upscale import upscale_inputs


@pytest.fixture(scope="module", autouse=True)
def no_network():
    with network_blocked():
        yield


class Brighten(torch.nn.Module):
    """Restoration that visibly changes every pixel: x -> x / 2 + 0.5 (in [-1, 1])."""

    crop_size = 128

    def forward(self, x):
        return x / 2 + 0.5


def _scene(h=200, w=220, seed=0):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, 10, 10, generator=g)
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bicubic").clamp(0, 1).permute(0, 2, 3, 1)


@pytest.fixture(scope="module")
def scene():
    image = _scene()
    faces = make_faces([(0, landmarks_at(110, 100, 110))], 1, 200, 220)
    return image, faces


def test_a_mask_limits_the_paste_and_untouched_pixels_stay_bit_identical(scene):
    image, faces = scene
    full = restore_faces(image, Brighten(), faces)
    mask = torch.zeros(1, 200, 220)
    mask[:, :, :110] = 1.0  # only the left half may change
    half = restore_faces(image, Brighten(), faces, mask=mask)
    assert torch.equal(half.images[:, :, 110:], image[:, :, 110:])
    assert torch.equal(half.images[:, :, :110], full.images[:, :, :110])
    assert torch.equal(half.mask, full.mask * mask)
    assert "paste mask: only where the connected mask allows" in half.report.notes
    soft = restore_faces(image, Brighten(), faces, mask=torch.full((200, 220), 0.25))
    changed = full.mask > 0
    expect = image + (full.images - image) * 0.25  # the blend weight is the template mask times 0.25
    assert torch.allclose(soft.images[changed.unsqueeze(-1).expand_as(image)],
                          expect[changed.unsqueeze(-1).expand_as(image)], atol=1e-6)
    with pytest.raises(ValueError, match=r"mask: the mask is 100x50 but the image is 220x200"):
        restore_faces(image, Brighten(), faces, mask=torch.ones(1, 50, 100))
    with pytest.raises(ValueError, match="mask: 3 masks for 1 images"):
        paste_crops(image, full.crops, faces, mask=torch.ones(3, 200, 220))


def test_regions_are_looked_up_in_each_networks_own_label_order():
    assert parse_regions("Skin, lips ,eyes") == ("skin", "lips", "eyes")
    with pytest.raises(ValueError, match=r"unknown region\(s\) 'beard'.*from: skin, brows"):
        parse_regions("skin, beard")
    for kind, labels in (("bisenet", BISENET_LABELS), ("parsenet", PARSENET_LABELS)):
        parsing = FaceParsing(kind, torch.nn.Identity(), regions=("skin", "lips", "glasses"), blur=0.0)
        # a synthetic 4x4 label map: hair, skin, upper lip, glasses, hat ... in this network's order
        names = ["hair", "skin", "u_lip", "eye_g", "hat", "l_lip", "background", "nose"] * 2
        label_map = torch.tensor([labels.index(n) for n in names]).view(1, 4, 4)
        mask = parsing.masks_from_labels(label_map)[0, 0].flatten().tolist()
        assert mask == [0, 1, 1, 1, 0, 1, 0, 0] * 2, kind
    # the two orders really differ: a label id means another region in the other network
    assert BISENET_LABELS.index("hair") != PARSENET_LABELS.index("hair")


def write_parser(folder, kind, seed=0, label=None):
    """facexlib's parsing network of `kind` with random weights, saved under facexlib's file name.
    `label`: rig the output layer so every pixel gets that label (biases one-hot, weights zero)."""
    from restoreformer_node.faces.parsing import PARSERS

    torch.manual_seed(seed)
    net = build_network(kind)
    state = net.state_dict()
    if label is not None:
        index = PARSERS[kind][2].index(label)
        if kind == "bisenet":  # features after BN + ReLU become 1, only `label`'s row reads them
            state["conv_out.conv.bn.weight"].zero_()
            state["conv_out.conv.bn.bias"].fill_(1.0)
            state["conv_out.conv_out.weight"].zero_()
            state["conv_out.conv_out.weight"][index] = 1.0
        else:  # the last convolution's weights zero, its bias one-hot
            state["out_mask_conv.conv2d.weight"].zero_()
            state["out_mask_conv.conv2d.bias"].fill_(-10.0)
            state["out_mask_conv.conv2d.bias"][index] = 10.0
    path = folder / PARSERS[kind][0]
    torch.save(state, path)
    return path


@pytest.mark.parametrize("kind", ["bisenet", pytest.param("parsenet", marks=pytest.mark.slow)])
def test_parsing_networks_label_crops_with_their_own_normalisation(tmp_path, kind):
    path = write_parser(tmp_path, kind)
    parsing = load_parsing(kind, path, regions=("skin",))
    crops = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(3))
    labels = parsing.labels(crops)
    net = build_network(kind)
    net.load_state_dict(torch.load(path))
    mean, std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if kind == "bisenet" else ((0.5,) * 3, (0.5,) * 3)
    with torch.no_grad():
        ref = net.eval()((crops - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))[0]
    assert labels.shape == (1, 512, 512) and torch.equal(labels, ref.argmax(dim=1))
    assert labels.unique().numel() > 1  # random weights: a real map, not one label


def test_rigged_parsers_paste_skin_and_keep_hair(tmp_path, scene):
    # Real BiSeNet networks whose output layer labels every pixel "hair" or "skin".
    image, faces = scene
    full = restore_faces(image, Brighten(), faces)
    (tmp_path / "hair").mkdir()
    hair = load_parsing("bisenet", write_parser(tmp_path / "hair", "bisenet", label="hair"), blur=0.0)
    kept = restore_faces(image, Brighten(), faces, parsing=hair)
    assert torch.equal(kept.images, image) and float(kept.mask.max()) == 0.0
    assert "paste mask: bisenet parsing of the restored faces, pasting skin, brows, eyes, nose, mouth, lips" in kept.report.notes
    (tmp_path / "skin").mkdir()
    skin = load_parsing("bisenet", write_parser(tmp_path / "skin", "bisenet", label="skin"), blur=0.0, source="original")
    pasted = restore_faces(image, Brighten(), faces, parsing=skin)
    assert torch.allclose(pasted.images, full.images, atol=1e-6) and torch.allclose(pasted.mask, full.mask, atol=1e-6)
    out, mask = paste_crops(image, full.crops, faces, parsing=hair)
    assert torch.equal(out, image)


def test_a_missing_parser_file_says_which_file_goes_where(tmp_path):
    with pytest.raises(ParserWeightsMissing) as error:
        load_parsing("parsenet", tmp_path / "parsing_parsenet.pth")
    text = str(error.value)
    assert "parsing_parsenet.pth" in text and str(tmp_path) in text and "models/facedetection" in text
    assert "https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth" in text


def test_resized_faces_align_the_same_face(scene):
    _, faces = scene
    before, after = faces.faces[0], faces.resized(500, 550).faces[0]

    def to_crop(face):
        points = torch.cat([face.landmarks.to(torch.float64), torch.ones(5, 1, dtype=torch.float64)], 1)
        return points @ face.affine.T

    assert torch.allclose(to_crop(after), to_crop(before), atol=1e-4)  # same crop positions
    assert (to_crop(after) - template_points(faces.crop_size).to(torch.float64)).abs().max() < 1.0
    assert torch.allclose(after.box, (before.box.view(2, 2) + 0.5).mul(2.5).sub(0.5).view(4))


def test_restoring_at_twice_the_size_pastes_into_the_upscaled_image(scene):
    image, faces = scene
    mask = torch.zeros(1, 200, 220)
    mask[:, :, :110] = 1.0
    up = upscale_inputs(image, faces, factor=2.0, mask=mask)
    assert up.images.shape == (1, 400, 440, 3) and up.mask.shape == (1, 400, 440)
    assert up.note == "resized (bicubic) to 440x400 (2x the input)"
    result = restore_faces(up.images, Brighten(), up.faces, mask=up.mask)
    assert result.images.shape == (1, 400, 440, 3)
    assert torch.equal(result.images[:, :, 221:], up.images[:, :, 221:])  # right half: mask 0 after resizing
    # the face aligned from the upscaled image is the face aligned from the original (smooth image)
    small = warp_to_crops(image, *face_arrays(faces, 128)[:2], 128).crops
    large = warp_to_crops(up.images, *face_arrays(up.faces, 128)[:2], 128).crops
    assert (small - large).abs().mean() < 0.01
