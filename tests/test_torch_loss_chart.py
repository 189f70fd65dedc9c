"""One loss chart for both trainers: each stage its own series, stage 2 to the right of stage 1."""

import re

from components import reports


def _polylines(page: str) -> list[list[tuple[float, float]]]:
    return [[tuple(map(float, p.split(","))) for p in pts.split()]
            for pts in re.findall(r'<polyline [^>]*points="([^"]*)"', page)]


def test_stages_are_separate_series_that_do_not_draw_back():
    # What both trainers return per stage: steps restart at 1 in stage 2 (Model Garden) / each stage (torch).
    stages = [{"stage": 1, "history": [[1, 9.0], [2, 7.5], [3, 6.0]]},
              {"stage": 2, "history": [[1, 6.5], [2, 5.0]]},
              {"stage": 3, "history": [[1, 5.2], [2, 4.0], [3, None]]}]
    series = reports.stage_loss_series(stages)
    assert list(series) == ["stage 1", "stage 2", "stage 3"]
    assert series["stage 2"] == [(4.0, 6.5), (5.0, 5.0)] and series["stage 3"] == [(6.0, 5.2), (7.0, 4.0)]
    page = reports.loss_curve_html("Training loss", series)
    lines = _polylines(page)
    assert len(lines) == 3
    for line in lines:
        assert [x for x, _ in line] == sorted(x for x, _ in line)
    assert max(x for x, _ in lines[0]) < min(x for x, _ in lines[1]) < min(x for x, _ in lines[2])
    assert len(set(re.findall(r'stroke="(#[0-9a-f]+)"', page))) == 3
    assert "stage 3" in page and "last loss 4.0000 at step 7 (stage 3)" in page


def test_one_series_as_before():
    page = reports.loss_curve_html("t", [(0, 2.0), (10, 1.0)])
    assert len(_polylines(page)) == 1 and "last loss 1.0000 at step 10" in page
    assert "No loss values" in reports.loss_curve_html("t", {"stage 1": []})
