"""Click parsing, validation and the simulated annotator."""

import numpy as np
import pytest

from lib.errors import InvalidRequest
from lib.prompts.clicks import check_inside, parse_points
from lib.prompts.simulation import next_click, run_session, took, tried_spot


def test_parse_points_accepts_lists_and_json():
    assert parse_points([[1, 2, 3]], "foreground").tolist() == [[1, 2, 3]]
    assert parse_points("[[1, 2, 3], [4, 5, 6]]", "foreground").shape == (2, 3)
    assert parse_points(None, "background").shape == (0, 3)


MALFORMED = ["[[1, 2]]", "nonsense", [[1, "a", 3]], {"x": 1}, [[1, 2, float("nan")]], [[True, 1, 2]]]


@pytest.mark.parametrize("bad", MALFORMED)
def test_parse_points_rejects_malformed(bad):
    with pytest.raises(InvalidRequest) as e:
        parse_points(bad, "foreground")
    assert e.value.status_code == 422 and "foreground" in e.value.detail


def test_points_outside_the_image_are_refused():
    check_inside(np.array([[0, 0, 0], [9, 19, 29]]), (10, 20, 30), "foreground")
    with pytest.raises(InvalidRequest, match="outside the image"):
        check_inside(np.array([[10, 0, 0]]), (10, 20, 30), "foreground")
    with pytest.raises(InvalidRequest):
        check_inside(np.array([[-3, 0, 0]]), (10, 20, 30), "background")


def test_next_click_targets_the_interior_of_the_largest_error():
    target = np.zeros((40, 40, 40), bool)
    target[5:25, 5:25, 5:25] = True  # large missed region
    target[30:33, 30:33, 30:33] = True  # small missed region
    point, is_foreground = next_click(np.zeros_like(target), target)
    assert is_foreground and np.all(np.abs(point - 14.5) <= 1)
    prediction = target.copy()
    prediction[0:3, 30:40, 30:40] = True  # a false positive is the only error left after the target is covered
    point, is_foreground = next_click(prediction, target)
    assert not is_foreground and prediction[tuple(point)] and not target[tuple(point)]
    assert next_click(target, target) is None


def test_an_annotator_moves_on_from_a_click_that_did_not_take():
    """A segmenter that never fills the large region: after the first click there fails, the session clicks the
    next error region instead of the same voxel again, and fixes it."""
    target = np.zeros((40, 40, 40), bool)
    target[5:25, 5:25, 5:25] = True  # the segmenter ignores clicks here
    target[30:36, 30:36, 30:36] = True

    def segment(clicks):
        mask = np.zeros_like(target)
        if any(point[0] >= 28 for point, _ in clicks):
            mask[30:36, 30:36, 30:36] = True
        return mask

    session = run_session(segment, target, max_clicks=3)
    first, second = session.clicks[0][0], session.clicks[1][0]
    assert np.all(np.abs(first - 14.5) <= 1) and np.all(second >= 30)
    assert session.dices[1] > session.dices[0] > 0 or session.dices[0] == 0 < session.dices[1]
    # with nothing else wrong, the annotator comes back to the region that did not take
    assert target[tuple(session.clicks[2][0])] and session.clicks[2][0][0] < 28


def test_a_stroke_that_holds_only_its_own_voxels_did_not_take():
    """A painted stroke always holds its voxels; it took only when most of the error within its reach went too."""
    target = np.zeros((40, 40, 40), bool)
    target[5:25, 5:25, 5:25] = True
    before = np.zeros_like(target)
    point = np.array([15, 15, 15])
    painted_only = before.copy()
    painted_only[15, 8:22, 15] = True
    reach = tried_spot(before ^ target, point)
    assert took(before, painted_only, target, point) and not took(before, painted_only, target, point, reach)
    filled = target.copy()
    filled[5:25, 5:25, 5:8] = False  # most of the region, though not all
    assert took(before, filled, target, point, reach)
