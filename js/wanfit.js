// WanFit front-end extension: shows a WanFit node's text report on the node after it runs.
// Nodes return {"ui": {"text": [...]}}; ComfyUI passes that to onExecuted.
import { app } from "../../scripts/app.js";

const REPORT_WIDGET = "wanfit_report";

function showReport(node, lines) {
  const text = (lines || []).join("\n");
  let widget = node.widgets?.find((w) => w.name === REPORT_WIDGET);
  if (!widget) {
    widget = node.addWidget("text", REPORT_WIDGET, "", () => {}, { multiline: true, serialize: false });
    widget.serialize = false;
    if (widget.inputEl) {
      widget.inputEl.readOnly = true;
      widget.inputEl.style.opacity = 0.85;
    }
  }
  widget.value = text;
  node.setSize([Math.max(node.size[0], 380), node.computeSize()[1]]);
  app.graph.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "WanFit.Report",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name?.startsWith("WanFit")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (message?.text) showReport(this, message.text);
    };
  },
});
