"""Delivery functions: what tasks the waiting items become, whatever order they arrive in."""

import random

import pytest

import pipeline_test_stages  # noqa: F401 - user_pairs lives there
from pipeline.delivery import (DeliveryError, Item, NodeState, Part, get_delivery, pair, serialized_frames,
                               serialized_scenes)
from pipeline.spec import FpsExpr
from pipeline import arith


def item(start, count, lineage=None, port="frames", cuts=(), fps=(30, 1)):
    meta = {"scene_cuts": list(cuts)} if cuts else {}
    return Item(f"k/{port}/{start}", "0" * 64, 1, "frames", start // 10 if lineage is None else lineage,
                start, count, fps, meta, f"up:{port}")


def node(options=None, ports=("frames",)):
    return NodeState("n", dict(options or {}), tuple(ports))


def fps_option(text):
    return FpsExpr(text, arith.parse(text), int)


def run_all(fn, nd, arrivals, *, port="frames"):
    """Feed items one at a time (as tasks finish upstream), then call with end=True."""
    waiting = {p: [] for p in nd.ports}
    batches = []
    for it in arrivals:
        waiting[port].append(it)
        batches += fn(nd, waiting, False)
    batches += fn(nd, waiting, True)
    assert not any(waiting.values())
    return batches


def shape(batches):
    return [(b.lineage, [(x.item.key, x.a, x.b) for x in b.inputs["frames"]]) for b in batches]


def test_default_is_one_task_per_item_with_its_lineage():
    d = get_delivery("default_delivery_func")
    waiting = {"frames": [item(0, 10), item(10, 10)]}
    out = d.fn(node(), waiting, False)
    assert [(b.lineage, b.inputs["frames"][0].start) for b in out] == [(0, 0), (1, 10)]
    assert waiting == {"frames": []}


def test_pair_joins_by_time_repeating_the_shorter_input_and_refusing_no_overlap():
    """Joins follow ffmpeg's framesync: the first port drives, the second's frames showing at
    each time go with it (the last one repeated once it ended), then the second's later frames
    with the first's last frame."""
    nd = node(ports=("frames_0", "frames_1"))
    waiting = {"frames_0": [item(0, 10, port="frames_0"), item(10, 10, port="frames_0"), item(20, 5, port="frames_0")],
               "frames_1": [item(10, 10, port="frames_1")]}
    assert pair(nd, waiting, False) == []          # frames 0..9 of frames_1 have not arrived
    waiting["frames_1"].append(item(0, 10, port="frames_1"))
    out = pair(nd, waiting, False)
    assert [(b.lineage, b.inputs["frames_0"][0].start, [(p.start, p.count) for p in b.inputs["frames_1"]])
            for b in out] == [(0, 0, [(0, 10)]), (1, 10, [(10, 10)])]
    out = pair(nd, waiting, True)                  # frames_1 ended at 19: its last frame goes on
    assert [(b.inputs["frames_0"][0].start, [(p.start, p.count) for p in b.inputs["frames_1"]])
            for b in out] == [(20, [(19, 1)])]
    other = node(ports=("frames_0", "frames_1"))
    late = {"frames_0": [item(0, 10, port="frames_0")], "frames_1": [item(40, 10, port="frames_1")]}
    with pytest.raises(DeliveryError, match=r"^node n: frames_0 \(0.000..0.300 s\) and frames_1 "
                                            r"\(1.333..1.633 s\) do not overlap in time"):
        pair(other, late, True)


@pytest.mark.parametrize("seed", range(5))
def test_serialized_frames_regroups_across_chunks_in_order_whatever_the_arrival(seed):
    items = [item(0, 7), item(7, 7), item(14, 3), item(17, 10), item(27, 2)]   # 29 frames
    reference = shape(run_all(serialized_frames, node({"frames_per_chunk": 6}), items))
    assert reference == [
        (0, [("k/frames/0", 0, 6)]),
        (1, [("k/frames/0", 6, 7), ("k/frames/7", 0, 5)]),
        (2, [("k/frames/7", 5, 7), ("k/frames/14", 0, 3), ("k/frames/17", 0, 1)]),
        (3, [("k/frames/17", 1, 7)]),
        (4, [("k/frames/17", 7, 10), ("k/frames/27", 0, 2)]),   # the short last group, at the end
    ]
    shuffled = items[:]
    random.Random(seed).shuffle(shuffled)
    assert shape(run_all(serialized_frames, node({"frames_per_chunk": 6}), shuffled)) == reference


def test_serialized_frames_takes_fps_arithmetic_and_waits_for_the_next_frame():
    nd = node({"frames_per_chunk": fps_option("{fps}/2")})
    waiting = {"frames": [item(10, 10, fps=(20, 1))]}
    assert serialized_frames(nd, waiting, False) == []        # frame 0 has not arrived
    waiting["frames"].append(item(0, 10, fps=(20, 1)))
    out = serialized_frames(nd, waiting, False)
    assert shape(out) == [(0, [("k/frames/0", 0, 10)]), (1, [("k/frames/10", 0, 10)])]
    bad = node({"frames_per_chunk": fps_option("{fps} - {fps}")})
    with pytest.raises(DeliveryError, match="node n: frames_per_chunk is 0 at 20/1 fps"):
        serialized_frames(bad, {"frames": [item(0, 3, fps=(20, 1))]}, False)


@pytest.mark.parametrize("seed", range(4))
def test_serialized_scenes_cut_at_flags_across_chunk_boundaries_and_at_max_length(seed):
    # Cuts before frames 8 (inside the first item), 10 (on a boundary) and 13; max 4 frames.
    items = [item(0, 10, cuts=[8]), item(10, 10, cuts=[10, 13]), item(20, 3)]
    nd = lambda: node({"max_scene_frames": 4})
    reference = shape(run_all(serialized_scenes, nd(), items))
    assert reference == [
        (0, [("k/frames/0", 0, 4)]), (1, [("k/frames/0", 4, 8)]),     # max length
        (2, [("k/frames/0", 8, 10)]),                                   # cut at 8, then at 10
        (3, [("k/frames/10", 0, 3)]),                                   # 10..12, cut at 13
        (4, [("k/frames/10", 3, 7)]), (5, [("k/frames/10", 7, 10), ("k/frames/20", 0, 1)]),  # across
        (6, [("k/frames/20", 1, 3)]),
    ]
    shuffled = items[:]
    random.Random(seed).shuffle(shuffled)
    assert shape(run_all(serialized_scenes, nd(), shuffled)) == reference


def test_a_scene_cut_on_the_first_frame_of_an_item_closes_the_open_scene():
    out = run_all(serialized_scenes, node({"max_scene_frames": 100}), [item(0, 5), item(5, 5, cuts=[5])])
    assert shape(out) == [(0, [("k/frames/0", 0, 5)]), (1, [("k/frames/5", 0, 5)])]


def test_a_user_delivery_function_with_state_and_flush():
    d = get_delivery("pipeline_test_stages:user_pairs")
    assert d.ports == 1
    items = [item(0, 3), item(3, 3), item(6, 3), item(9, 3), item(12, 3)]
    out = run_all(d.fn, node(), list(reversed(items)))
    groups = [(b.lineage, [i.start for i in b.inputs["frames"]]) for b in out]
    assert groups == [(0, [0, 3]), (1, [6, 9]), (2, [12])]     # the lone last one at the end


def test_parts_are_checked():
    it = item(0, 4)
    assert Part(it, 1, 3).start == 1 and Part(it, 1, 3).count == 2
    with pytest.raises(DeliveryError, match="part 2..5 of up:frames lineage 0"):
        Part(it, 2, 5)


def test_unknown_delivery_names():
    with pytest.raises(DeliveryError, match="unknown delivery function 'x'.*serialized_frame_delivery_func"):
        get_delivery("x")
    with pytest.raises(DeliveryError, match="'os:sep' is not callable"):
        get_delivery("os:sep")


@pytest.mark.parametrize("seed", range(3))
def test_the_readme_delivery_function_is_arrival_order_free(seed):
    d = get_delivery("pipeline_test_stages:two_chunks")
    items = [item(10 * k, 10, lineage=k) for k in range(5)]
    shuffled = items[:]
    random.Random(seed).shuffle(shuffled)
    out = run_all(d.fn, node(), shuffled)
    assert sorted((b.lineage, [i.start for i in b.inputs["frames"]]) for b in out) == \
        [(0, [0, 10]), (1, [20, 30]), (2, [40])]
