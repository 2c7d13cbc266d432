"""The shipped workflows' layout, as declared (the browser tier checks it as drawn)."""

import pytest

from workflows.build import WORKFLOWS
from workflows.layout import NODE_TITLE, columns_of, lay_out, node_size, overlaps


def laid_out(name):
    workflow, _, groups, _ = WORKFLOWS[name]()
    return workflow, groups, lay_out(workflow, groups)


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_every_link_runs_left_to_right(name):
    workflow, _, placed = laid_out(name)
    for target, node in workflow.items():
        for value in node["inputs"].values():
            if isinstance(value, list):
                source = value[0]
                source_right = placed.positions[source][0] + placed.sizes[source][0]
                assert source_right < placed.positions[target][0], (source, target)


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_no_node_or_group_overlaps_another_and_each_node_sits_in_its_group(name):
    workflow, groups, placed = laid_out(name)
    boxes = [(node_id, [x, y - NODE_TITLE, *map(float, (placed.sizes[node_id][0], placed.sizes[node_id][1] + NODE_TITLE))])
             for node_id, (x, y) in placed.positions.items()]
    assert overlaps(boxes) == []
    assert overlaps([(group["title"], group["bounding"]) for group in placed.groups]) == []
    for (title, _, members, *_), group in zip(groups, placed.groups):
        gx, gy, gw, gh = group["bounding"]
        for node_id in members:
            x, y = placed.positions[node_id]
            w, h = placed.sizes[node_id]
            assert gx <= x and x + w <= gx + gw and gy < y - NODE_TITLE and y + h <= gy + gh, (title, node_id)


def test_a14b_puts_the_high_and_low_noise_experts_side_by_side():
    _, _, placed = laid_out("a14b_t2v_lightx2v")
    titles = [group["title"] for group in placed.groups]
    high = placed.groups[titles.index("High-noise expert: first steps")]["bounding"]
    low = placed.groups[titles.index("Low-noise expert: last steps")]["bounding"]
    assert high[0] + high[2] <= low[0], "the low-noise group is to the right of the high-noise one"


def test_a_node_in_no_group_or_a_cycle_is_refused():
    workflow = {"1": {"class_type": "A", "inputs": {}}, "2": {"class_type": "B", "inputs": {"x": ["1", 0]}}}
    with pytest.raises(ValueError, match="missing"):
        lay_out(workflow, [("only one", "models", ["1"])])
    workflow["1"]["inputs"]["y"] = ["2", 0]
    with pytest.raises(ValueError, match="cycle"):
        columns_of(workflow)


def test_unknown_node_types_get_a_default_size():
    assert node_size("SomethingNew") == (320, 130)
