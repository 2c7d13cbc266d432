"""Where each node of a shipped workflow sits in the graph editor.

Columns follow the data: a node's column is past the columns of the nodes it takes inputs from,
so every link runs left to right. Nodes are gathered in titled groups (models and plan, prompt,
sampling, decode and save), left to right: a group starts in the column after the groups before
it, or, when it is marked to go below, under the previous group. A group is a rectangle over the
columns its nodes use, placed below any group already holding one of those columns, so groups
never overlap.

Node sizes are what the front ends draw (ComfyUI 0.3.64's 1.27 and 0.33's 1.49, measured on the
live graph by tests/browser), rounded up; the browser tier checks that no two drawn nodes overlap.
"""

from dataclasses import dataclass

COLUMN_GAP = 70
ROW_GAP = 36
GROUP_GAP = 60
GROUP_TITLE = 46
GROUP_PADDING = 16
NODE_TITLE = 30  # LiteGraph draws the title above a node's pos
NOTE_SIZE = (440, 560)
DEFAULT_SIZE = (320, 130)
# Width, height (below the title) of each node type as drawn, report areas included.
NODE_SIZES = {
    "WanFitOffloadPlan": (400, 660),
    "WanFitLoadDiffusionModel": (400, 250),
    "WanFitLoadTextEncoder": (400, 250),
    "WanFitLoadVAE": (400, 250),
    "WanFitSwitchToLowNoiseExpert": (400, 330),
    "WanFitSageAttention": (360, 180),
    "WanFitLeanForward": (360, 250),
    "WanFitExpertSwitchStep": (340, 240),
    "WanFitAttentionReport": (380, 250),
    "WanFitVAEDecode": (380, 300),
    "LoraLoaderModelOnly": (340, 90),
    "ModelSamplingSD3": (300, 70),
    "CLIPTextEncode": (420, 200),
    "Wan22ImageToVideoLatent": (320, 170),
    "EmptyHunyuanLatentVideo": (320, 150),
    "WanImageToVideo": (340, 250),
    "LoadImage": (320, 380),
    "KSampler": (340, 280),
    "KSamplerAdvanced": (340, 340),
    "SaveLatent": (320, 70),
    "CreateVideo": (280, 90),
    "SaveVideo": (360, 420),
    "WanFitLoadSavedLatent": (420, 100),
}
GROUP_COLORS = {"models": "#3f789e", "prompt": "#8A8", "high": "#b06634", "low": "#a1309b",
                "sampling": "#b06634", "decode": "#88A"}


@dataclass
class Placed:
    positions: dict  # node id -> (x, y), the node body's top left (its title is above)
    sizes: dict  # node id -> (width, height) of the body
    groups: list  # ComfyUI group dicts: title, bounding [x, y, w, h], color
    note_position: tuple
    view: dict  # the initial view: {"scale", "offset"}


def node_size(class_type):
    return NODE_SIZES.get(class_type, DEFAULT_SIZE)


def columns_of(workflow):
    """Longest path from the graph's sources: a node's column is past every input's column."""
    columns = {}

    def column(node_id, trail=()):
        if node_id in columns:
            return columns[node_id]
        if node_id in trail:
            raise ValueError(f"workflow has a cycle through node {node_id}")
        sources = [value[0] for value in workflow[node_id]["inputs"].values() if isinstance(value, list)]
        columns[node_id] = 1 + max((column(source, trail + (node_id,)) for source in sources), default=-1)
        return columns[node_id]

    for node_id in workflow:
        column(node_id)
    return columns


def grouped_columns(workflow, groups):
    """Columns as columns_of gives them, with each group starting after the ones before it (or in the
    previous group's first column when it goes below it)."""
    columns_of(workflow)  # refuses a cycle
    columns, start, end = {}, 0, -1
    for index, (_, _, members, *below) in enumerate(groups):
        start = start if below and below[0] and index else end + 1
        pending = list(members)
        while pending:
            for node_id in list(pending):
                sources = [value[0] for value in workflow[node_id]["inputs"].values() if isinstance(value, list)]
                if all(source in columns or source not in pending for source in sources):
                    if any(source not in columns for source in sources):
                        raise ValueError(f"node {node_id} takes an input from a later group")
                    columns[node_id] = max([start] + [columns[source] + 1 for source in sources])
                    pending.remove(node_id)
        end = max(end, max(columns[n] for n in members))
    return columns


def lay_out(workflow, groups, note=True):
    """groups: [(title, color key, [node ids][, below])] in reading order; every node in one group.
    below: the group goes under the previous one instead of after it."""
    grouped = [node_id for _, _, members, *_ in groups for node_id in members]
    if sorted(grouped) != sorted(workflow) or len(set(grouped)) != len(grouped):
        raise ValueError("each node must be in exactly one group: "
                         f"missing {sorted(set(workflow) - set(grouped))}, extra {sorted(set(grouped) - set(workflow))}")
    columns = grouped_columns(workflow, groups)
    count = max(columns.values()) + 1
    widths = [max((node_size(workflow[n]["class_type"])[0] for n in workflow if columns[n] == c), default=0)
              for c in range(count)]
    left = NOTE_SIZE[0] + COLUMN_GAP + GROUP_PADDING if note else GROUP_PADDING
    column_x = []
    for width in widths:
        column_x.append(left)
        left += width + COLUMN_GAP
    bottom = [0] * count  # lowest y used so far in each column, group frames included
    positions, sizes, placed_groups = {}, {}, []
    for title, color, members, *_ in groups:
        used = sorted({columns[n] for n in members})
        span = range(used[0], used[-1] + 1)
        top = max(bottom[c] for c in span) + (GROUP_GAP if any(bottom[c] for c in span) else 0)
        lowest = top
        for c in used:
            y = top + GROUP_TITLE + NODE_TITLE
            for node_id in [n for n in members if columns[n] == c]:
                width, height = node_size(workflow[node_id]["class_type"])
                positions[node_id] = (column_x[c], y)
                sizes[node_id] = (width, height)
                y += height + NODE_TITLE + ROW_GAP
            lowest = max(lowest, y - ROW_GAP)
        x0 = column_x[used[0]] - GROUP_PADDING
        x1 = column_x[used[-1]] + widths[used[-1]] + GROUP_PADDING
        y1 = lowest + GROUP_PADDING
        placed_groups.append({"title": title, "bounding": [x0, top, x1 - x0, y1 - top],
                              "color": GROUP_COLORS[color], "font_size": 24, "flags": {}})
        for c in span:
            bottom[c] = y1
    return Placed(positions, sizes, placed_groups, (0, GROUP_TITLE), {"scale": 0.8, "offset": [100, 110]})


def overlaps(boxes):
    """Pairs of (id, [x, y, w, h]) boxes that intersect."""
    found = []
    for index, (first, (x, y, w, h)) in enumerate(boxes):
        for second, (x2, y2, w2, h2) in boxes[index + 1:]:
            if x < x2 + w2 and x2 < x + w and y < y2 + h2 and y2 < y + h:
                found.append((first, second))
    return found
