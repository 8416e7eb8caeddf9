"""The studio's callbacks as plain functions: prompt composition, silhouettes, keyframes to masks, uploads."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.data import vocab
from lapgen.data.mask_motion import animate_mask, mask_centroid
from lapgen.data.masks import read_mask_sequence
from lapgen.data.prompts import triplet_prompt
from lapgen.errors import LapgenError
from lapgen.studio import authoring, prompting, uploads
from lapgen.studio.silhouettes import SILHOUETTES, tip_position, tool_silhouette

# ------------------------------------------------------------------------------------------- prompts


def test_dropdowns_offer_exactly_the_100_triplets():
    offered = set()
    for i in prompting.instrument_choices():
        for v in prompting.verb_choices(i):
            targets = prompting.target_choices(i, v)
            assert targets, (i, v)
            offered |= {f"{i},{v},{t}" for t in targets}
    assert offered == set(vocab.TRIPLETS)


def test_verbs_follow_the_instrument():
    assert "clip" in prompting.verb_choices("clipper") and "clip" not in prompting.verb_choices("grasper")
    assert prompting.target_choices("hook", "aspirate") == []  # not a valid pair: nothing offered
    assert prompting.verb_choices(None) == [] and prompting.target_choices("hook", None) == []
    with pytest.raises(LapgenError, match="unknown instrument"):
        prompting.verb_choices("laser")


def test_several_triplets_and_phase_give_the_paper_prompt():
    sel = prompting.add_triplet([], "irrigator", "aspirate", "fluid")
    sel = prompting.add_triplet(sel, "grasper", "retract", "liver")
    sel = prompting.add_triplet(sel, "grasper", "retract", "liver")  # no duplicate
    assert sel == [19, 82]
    shown = prompting.compose_prompt(sel, "cleaning-and-coagulation")
    assert shown.prompt == triplet_prompt([82, 19], 5)
    assert shown.prompt == "grasper retract liver and irrigator aspirate fluid in cleaning-and-coagulation"
    assert shown.warning == ""
    labels = [prompting.triplet_label(t) for t in sel]
    assert prompting.remove_triplets(sel, labels[:1]) == [82]
    assert prompting.compose_prompt([], "preparation").prompt == "preparation"


def test_incomplete_triplet_is_an_error():
    with pytest.raises(LapgenError, match="choose a target"):
        prompting.add_triplet([], "grasper", "retract", None)


def test_the_triplet_in_the_dropdowns_is_in_the_prompt_before_it_is_added():
    shown = prompting.shown_triplet("grasper", "retract", "liver")
    assert shown == [vocab.triplet_id("grasper", "retract", "liver")]
    assert prompting.shown_triplet("grasper", "retract", None) == []
    assert "aspirate" not in prompting.verb_choices("clipper")
    assert prompting.shown_triplet("clipper", "aspirate", "fluid") == []  # not a CholecT50 triplet
    assert prompting.compose_prompt(shown, "preparation").prompt == "grasper retract liver in preparation"


def test_phase_names_are_unambiguous_and_the_spelling_follows_the_prompt_format():
    labels = dict((value, label) for label, value in prompting.phase_choices())
    assert list(labels) == list(vocab.PHASES)  # the values stay the dataset's names
    assert labels["carlot-triangle-dissection"] == ("Calot's triangle dissection (prompt: "
                                                    "carlot-triangle-dissection, the dataset's spelling)")
    calot = dict((v, k) for k, v in prompting.phase_choices("paper-calot"))["carlot-triangle-dissection"]
    assert calot == "Calot's triangle dissection (prompt: calot-triangle-dissection)"
    assert prompting.compose_prompt([], "carlot-triangle-dissection", "", "paper-calot").prompt == \
        "calot-triangle-dissection"


def test_the_spelling_a_model_learnt_is_read_from_its_training_data(tmp_path, monkeypatch):
    from lapgen import registry
    from lapgen.cards import make_card, write_card

    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    data = tmp_path / "frames"
    write_card(data, make_card("frames-dataset", prompt_format="paper-calot"))
    run = tmp_path / "run"
    (run / "unet").mkdir(parents=True)
    (run / "model_index.json").write_text("{}")
    write_card(run, make_card("pipeline", config={"data": str(data)}, training={"steps": 1}))
    registry.add_entry("calot-model", str(run), kind="pipeline")
    assert prompting.prompt_format_of("calot-model") == "paper-calot"
    assert prompting.prompt_format_of("tiny-sd") is None  # built from configs: nothing says
    assert prompting.prompt_format_of("no-such-model") is None


def test_free_text_override_warns_on_unknown_words():
    shown = prompting.compose_prompt([19], "preparation", "  grasper   retract liver with laser ")
    assert shown.prompt == "grasper retract liver with laser"
    assert shown.unknown == ("with", "laser") and "laser" in shown.warning
    assert prompting.compose_prompt([], None, "hook dissect gallbladder").warning == ""


# --------------------------------------------------------------------------------------- silhouettes


@pytest.mark.parametrize("size", [64, 128])
def test_silhouettes_are_binary_distinct_tools(size):
    masks = [tool_silhouette(name, size) for name in SILHOUETTES]
    for name, mask in zip(SILHOUETTES, masks):
        assert mask.dtype == bool and mask.shape == (size, size)
        assert 0.01 < mask.mean() < 0.2, name  # a tool, not a blob or nothing
        assert mask[-1].any() or mask[:, -1].any(), name  # the shaft enters from the lower-right border
    for a in range(len(masks)):
        for b in range(a + 1, len(masks)):
            assert (masks[a] != masks[b]).sum() > 10, (SILHOUETTES[a], SILHOUETTES[b])
    with pytest.raises(LapgenError, match="unknown tool silhouette"):
        tool_silhouette("laser")


# ------------------------------------------------------------------------------------------ keyframes


def _track(name="grasper", keys=((30, 40, 0, 1), (90, 80, 0, 1)), size=128):
    """A silhouette placed by its centre at each key (the `--path` semantics these tests check)."""
    tracks = authoring.add_track([], name, tool_silhouette(name, size), size)
    for x, y, r, s in keys:
        tracks = authoring.add_keyframe(tracks, x, y, r, s, anchor="centre")
    return tracks


def test_a_click_places_the_silhouette_tip_without_rotation_exactly():
    """Anchor `tip`, no rotation: the placed mask is the silhouette shifted so its tip is at the click."""
    size = 128
    mask = tool_silhouette("hook", size)
    tip = tip_position("hook", size)
    tracks = authoring.add_track([], "hook silhouette", mask, size, tip=tip)
    click = (40.0 + tip[0] % 1, 30.0 + tip[1] % 1)  # an integer shift of the mask
    tracks = authoring.add_keyframe(tracks, *click, 0, 1)
    assert tracks[0].keyframes[0].at == click
    placed = authoring.animate_tracks(tracks, 1, size)[0]
    dx, dy = int(round(click[0] - tip[0])), int(round(click[1] - tip[1]))
    shifted = np.zeros_like(mask)
    shifted[max(dy, 0):size + min(dy, 0), max(dx, 0):size + min(dx, 0)] = mask[max(-dy, 0):size + min(-dy, 0),
                                                                               max(-dx, 0):size + min(-dx, 0)]
    assert (placed != shifted).sum() <= 2  # nearest-neighbour rounding at most


def test_a_click_places_the_tip_under_rotation_and_scale():
    """Rotated 90 degrees counter-clockwise and halved, the tool still has its tip at the click and its body
    (the centroid) where the rotated shaft points: the lower-right shaft now points to the upper right."""
    size = 128
    mask = tool_silhouette("hook", size)  # its end is solid (a grasper's open jaws leave the axis empty)
    tip = tip_position("hook", size)
    tracks = authoring.add_track([], "hook silhouette", mask, size, tip=tip)
    tracks = authoring.add_keyframe(tracks, 64, 64, 90, 0.5)
    placed = authoring.animate_tracks(tracks, 1, size)[0]
    ys, xs = np.nonzero(placed)
    assert np.min(np.hypot(xs - 64, ys - 64)) <= 1.5  # the tool reaches the click
    cx, cy = mask_centroid(mask)
    rx, ry = cy - tip[1], -(cx - tip[0])  # (dx, dy) turned 90 degrees counter-clockwise on screen (y down)
    px, py = mask_centroid(placed)
    assert abs(px - (64 + 0.5 * rx)) < 2 and abs(py - (64 + 0.5 * ry)) < 2
    centre = authoring.add_keyframe(tracks, 64, 64, 90, 0.5, anchor="centre")[0].keyframes[-1]
    assert (centre.x, centre.y, centre.at) == (64, 64, None)


def test_the_tip_of_an_uploaded_mask_is_estimated_from_where_it_enters():
    size = 128
    mask = tool_silhouette("clipper", size)
    est = authoring.estimate_tip(mask)
    tip = tip_position("clipper", size)
    assert est is not None and np.hypot(est[0] - tip[0], est[1] - tip[1]) < 6
    floating = np.zeros((size, size), bool)
    floating[40:60, 40:70] = True
    assert authoring.estimate_tip(floating) is None  # no border entry: a click places its centre
    tracks = authoring.add_keyframe(authoring.add_track([], "uploaded mask", floating, size), 10, 20)
    assert (tracks[0].keyframes[0].x, tracks[0].keyframes[0].y) == (10, 20)


def test_keyframes_need_a_tool_and_undo_works():
    with pytest.raises(LapgenError, match="add a tool first"):
        authoring.add_keyframe([], 1, 2)
    tracks = _track()
    assert len(tracks[0].keyframes) == 2
    tracks = authoring.undo_keyframe(authoring.undo_keyframe(tracks))
    assert tracks[0].keyframes == [] and authoring.undo_keyframe(tracks) == []
    assert authoring.display_to_canvas(192, 96, 128) == (64.0, 32.0)


def test_two_keyframes_move_the_tool_from_first_to_last():
    masks = authoring.animate_tracks(_track(), 9, 128)
    assert masks.shape == (9, 128, 128) and masks.dtype == bool
    for frame, (x, y) in ((0, (30, 40)), (8, (90, 80))):
        cx, cy = mask_centroid(masks[frame])
        # the shaft is clipped at the border, so the centroid moves a little towards the image
        assert abs(cx - x) < 8 and abs(cy - y) < 8


def test_two_keyframes_equal_animate_mask():
    tracks = _track(keys=((30, 40, 10, 1.0), (90, 80, 40, 1.5)))
    expected = animate_mask(
        tracks[0].mask, [(30, 40), (90, 80)], 7, rotate=(10, 40), scale=(1.0, 1.5), size=(128, 128)
    )
    np.testing.assert_array_equal(authoring.animate_tracks(tracks, 7, 128), expected)


def test_rotation_and_scale_per_keyframe():
    tracks = _track(keys=((30, 40, 0, 1.0), (64, 64, 90, 2.0), (90, 80, 0, 1.0)))
    masks = authoring.animate_tracks(tracks, 9, 128)  # keyframes at frames 0, 4, 8
    middle = animate_mask(tracks[0].mask, [(64, 64)], 1, rotate=(90, 90), scale=(2.0, 2.0), size=(128, 128))[
        0
    ]
    np.testing.assert_array_equal(masks[4], middle)
    assert masks[4].sum() > 2 * masks[0].sum()  # scaled up twice at the middle keyframe


def test_several_tools_are_the_union():
    a = _track("grasper", ((30, 40, 0, 1), (60, 60, 0, 1)))
    b = _track("hook", ((90, 30, 0, 1), (70, 90, 0, 1)))
    both = a + b
    np.testing.assert_array_equal(
        authoring.animate_tracks(both, 5, 128),
        authoring.animate_tracks(a, 5, 128) | authoring.animate_tracks(b, 5, 128),
    )
    canvas = authoring.render_canvas(both, 128)
    assert canvas.shape == (authoring.DISPLAY_SIZE, authoring.DISPLAY_SIZE, 3)
    assert "tool 2" in authoring.tracks_summary(both)


def test_shown_command_reproduces_the_masks(tmp_path):
    """The `lapgen masks animate` command the page shows writes the same sequence as the page."""
    from lapgen.data.masks import write_mask

    tracks = _track("grasper", ((30, 40, 0, 1), (60, 60, 20, 1.2))) + _track(
        "hook", ((90, 30, 0, 1), (70, 90, 0, 1))
    )
    files = [write_mask(tmp_path / f"tool_{i}.png", t.mask) for i, t in enumerate(tracks)]
    command = authoring.masks_animate_command(tracks, files, 6, tmp_path / "masks")
    args = shlex.split(command)
    assert args[:3] == ["lapgen", "masks", "animate"]
    result = CliRunner().invoke(app, args[1:])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(
        read_mask_sequence(tmp_path / "masks").masks, authoring.animate_tracks(tracks, 6, 128)
    )


def test_preview_gif_has_every_frame(tmp_path):
    from lapgen.data.video import probe

    masks = authoring.animate_tracks(_track(), 5, 128)
    gif = authoring.preview_gif(masks, tmp_path / "p.gif", fps=8)
    with Image.open(gif) as img:
        assert img.n_frames == 5 or probe(gif).frames == 5


# -------------------------------------------------------------------------------------------- uploads


def test_uploaded_image_is_read_by_content(tmp_path):
    good = tmp_path / "whatever.name"  # the name plays no part
    Image.fromarray((tool_silhouette("hook", 64) * 255).astype(np.uint8)).save(good, format="PNG")
    arr = uploads.read_upload_image(str(good), mode="L")
    assert arr.shape == (64, 64)
    fake = tmp_path / "mask.png"
    fake.write_text("not an image")
    with pytest.raises(LapgenError, match="not a readable image"):
        uploads.read_upload_image(str(fake))
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:40])  # PNG magic, then nothing decodable
    with pytest.raises(LapgenError, match="not a readable image"):
        uploads.read_upload_image(str(truncated))
    gif = tmp_path / "anim.png"
    Image.new("L", (32, 32)).save(gif, format="GIF")
    with pytest.raises(LapgenError, match="unsupported image type GIF"):
        uploads.read_upload_image(str(gif))


def test_upload_size_and_existence_are_checked(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 2048)
    with pytest.raises(LapgenError, match="too large"):
        uploads.read_upload_image(str(big), max_bytes=1024)
    with pytest.raises(LapgenError, match="missing"):
        uploads.check_size(str(tmp_path / "gone.png"))
    with pytest.raises(LapgenError, match="no file uploaded"):
        uploads.check_size(None)


def test_uploaded_video_is_stored_under_a_fixed_name(tmp_path):
    from lapgen.data.video import write_mp4

    frames = np.repeat((authoring.animate_tracks(_track(), 4, 128)[..., None] * 255).astype(np.uint8), 3, -1)
    src = write_mp4(frames, tmp_path / "evil name.mp4.txt", fps=8)
    stored = uploads.store_upload_video(str(src), tmp_path / "run")
    assert stored == tmp_path / "run" / "uploaded_masks.mp4"
    assert read_mask_sequence(stored).masks.shape == (4, 128, 128)
    text = tmp_path / "t.mp4"
    text.write_text("hello")
    with pytest.raises(LapgenError, match="not a video"):
        uploads.store_upload_video(str(text), tmp_path / "run2")
    assert uploads.sniff_video(b"GIF89a" + b"\0" * 10) == ".gif"
