"""Ten TI2V-5B prompts in a row on one server: all succeed and the server does not grow.

Users of the stock graphs restart ComfyUI every few runs to clear leaks; WanFit must not need that.
"""

import psutil

from tests.fixtures.workflows import for_tiny_fixtures

RUNS = 10
GROWTH_LIMIT = 0.10


def test_ten_consecutive_ti2v_5b_prompts_do_not_grow_the_server(client, server):
    process = psutil.Process(server.process.pid)
    rss_after = {}
    for run in range(1, RUNS + 1):
        workflow, spec = for_tiny_fixtures("ti2v_5b_t2v", server.work_dir / "input")
        for node_id, input_name in spec["fields"]["seed"]:
            workflow[node_id]["inputs"][input_name] = 1000 + run  # a new seed: every prompt really runs
        entry = client.run(workflow, timeout_s=600)
        assert client.output_files(entry, spec["video_node"]), f"run {run} produced no video"
        rss_after[run] = process.memory_info().rss
    growth = (rss_after[RUNS] - rss_after[2]) / rss_after[2]
    summary = ", ".join(f"{run}: {rss / 2**20:.0f} MB" for run, rss in rss_after.items())
    print(f"server RSS after each run: {summary}; growth 2nd -> {RUNS}th: {growth:+.1%}")
    assert growth <= GROWTH_LIMIT, f"server RSS grew {growth:.1%} from run 2 to run {RUNS} ({summary})"
