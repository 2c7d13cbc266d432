"""UI -> API conversion of V3 dynamic combos (0.33's SaveVideo), from a hand-written object_info."""

from wanfit.workflows import DYNAMIC_COMBO, ui_to_api

CODEC = [DYNAMIC_COMBO, {"options": [
    {"key": "auto", "inputs": {"required": {}}},
    {"key": "h264", "inputs": {"optional": {"encoding": [DYNAMIC_COMBO, {"options": [
        {"key": "auto", "inputs": {"required": {}}},
        {"key": "re-encode", "inputs": {"required": {"crf": ["FLOAT", {"default": 23.0}]}}}]}]}}}]}]
SAVE_VIDEO_0_33 = {
    "input": {"required": {"video": ["VIDEO", {}], "filename_prefix": ["STRING", {"default": "video/ComfyUI"}],
                           "format": [DYNAMIC_COMBO, {"options": [{"key": "auto", "inputs": {"required": {"codec": CODEC}}},
                                                                  {"key": "mp4", "inputs": {"required": {"codec": CODEC}}}]}]},
              "optional": {"codec": [DYNAMIC_COMBO, dict(CODEC[1], hidden=True)]}},
    "input_order": {"required": ["video", "filename_prefix", "format"], "optional": ["codec"]},
}


def save_video_ui(widgets_values):
    return {"nodes": [{"id": 71, "type": "SaveVideo", "inputs": [{"name": "video", "type": "VIDEO", "link": None}],
                       "widgets_values": widgets_values}], "links": []}


def test_a_dynamic_combo_hands_the_next_values_to_its_chosen_option():
    api = ui_to_api(save_video_ui(["video/x", "mp4", "h264", "re-encode", 18.0]), {"SaveVideo": SAVE_VIDEO_0_33})
    assert api["71"]["inputs"] == {"filename_prefix": "video/x", "format": "mp4", "format.codec": "h264",
                                   "format.codec.encoding": "re-encode", "format.codec.encoding.crf": 18.0}


def test_the_hidden_top_level_codec_takes_no_widget_value():
    api = ui_to_api(save_video_ui(["video/x", "auto", "auto"]), {"SaveVideo": SAVE_VIDEO_0_33})
    assert api["71"]["inputs"] == {"filename_prefix": "video/x", "format": "auto", "format.codec": "auto"}
