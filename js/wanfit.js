// WanFit front-end extension.
// - Every WanFit node that reports (its io.NodeOutput carries ui {"text": [...]}) carries a read-only, multi-line,
//   scrollable report area of a fixed height from the start, so a run never grows the node over its neighbours.
// - The Offload Plan node shows, before Run and live as its widgets change, what GET /wanfit/plan/preview says of
//   the job on this machine: whether it fits, predicted VRAM/RAM, the main choices, or what would fit.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const REPORT_WIDGET = "wanfit_report";
const PLAN_NODE = "WanFitOffloadPlan";
const PLAN_INPUTS = ["model_variant", "width", "height", "frames", "batch", "cfg", "mode", "reserve_vram_gb",
  "weight_dtype", "text_encoder_device"];
const PREVIEW_DELAY_MS = 400;
// Report area height (graph units) per node type; the shipped workflows' layout leaves this room.
const REPORT_HEIGHTS = {
  WanFitOffloadPlan: 230,
  WanFitLoadDiffusionModel: 110,
  WanFitLoadA14BExperts: 110,
  WanFitSwitchToLowNoiseExpert: 110,
  WanFitLoadTextEncoder: 110,
  WanFitSageAttention: 80,
  WanFitLeanForward: 110,
  WanFitExpertSwitchStep: 110,
  WanFitAttentionReport: 120,
  WanFitVAEDecode: 120,
  WanFitDeviceInfo: 160,
};
const PLACEHOLDERS = {
  WanFitOffloadPlan: "The plan for this machine appears here as you edit, before Run.",
};

function reportWidget(node) {
  return node.widgets?.find((widget) => widget.name === REPORT_WIDGET);
}

function addReportArea(node, height) {
  const area = document.createElement("textarea");
  area.readOnly = true;
  area.spellcheck = false;
  area.className = "wanfit-report";
  area.placeholder = PLACEHOLDERS[node.comfyClass ?? node.type] ?? "This node's report appears here after Run.";
  Object.assign(area.style, {
    width: "100%", height: "100%", boxSizing: "border-box", resize: "none", overflow: "auto",
    whiteSpace: "pre-wrap", wordBreak: "break-word", fontFamily: "monospace", fontSize: "11px", lineHeight: "1.35",
    padding: "4px 6px", margin: "0", borderRadius: "4px", border: "1px solid var(--border-color, #444)",
    background: "var(--comfy-input-bg, #222)", color: "var(--input-text, #ddd)",
  });
  const widget = node.addDOMWidget(REPORT_WIDGET, "wanfit_report", area, {
    serialize: false,
    hideOnZoom: true,
    // The node's own area only. Front end 1.58 lists a selected node's widgets in a side panel and
    // draws a widget type it does not know there as a canvas, setting its width to the panel's: the area on
    // the node then shrank to two thirds of it for good. Older front ends ignore the option.
    hideInPanel: true,
    getValue: () => area.value,
    setValue: (value) => { area.value = value ?? ""; },
    getMinHeight: () => height,
    getMaxHeight: () => height,
  });
  widget.serialize = false;
  widget.computeSize = (width) => [width, height];
  return widget;
}

function setReport(node, text) {
  const widget = reportWidget(node);
  if (!widget) return;
  widget.value = text;
  if (widget.element) widget.element.value = text;
  node.setDirtyCanvas?.(true, true);
}

function fitNode(node) {
  const needed = node.computeSize();
  node.setSize([Math.max(node.size[0], needed[0]), Math.max(node.size[1], needed[1])]);
}

// --- the plan before Run ------------------------------------------------------------------

function planQuery(node) {
  const params = new URLSearchParams();
  for (const name of PLAN_INPUTS) {
    const widget = node.widgets?.find((w) => w.name === name);
    if (widget) params.set(name, String(widget.value));
  }
  return params.toString();
}

const PREVIEW_TIMEOUT_MS = 15000;
const PREVIEW_MAX_CHARS = 20000;
const NOT_A_PLAN = "Plan preview unavailable: the server's answer is not a WanFit plan (is this ComfyUI's WanFit " +
  "the same version as this page? Reload the page). Run still plans the job.";

function clip(text) {
  return text.length > PREVIEW_MAX_CHARS ? `${text.slice(0, PREVIEW_MAX_CHARS)}\n[... cut]` : text;
}

// The text for an answer of GET /wanfit/plan/preview (or of a server without it). Whatever the server
// sends is only ever shown as text in the report area.
function previewText(node, response, body) {
  if (!response.ok) return `Plan preview unavailable: the server answered ${response.status}. Run still plans the job.`;
  if (body === null || typeof body !== "object" || typeof body.status !== "number") return NOT_A_PLAN;
  if (body.status === 200) {
    if (typeof body.summary !== "string") return NOT_A_PLAN;
    const mode = node.widgets?.find((w) => w.name === "mode")?.value ?? "auto";
    const heading = mode === "auto" ? "Before Run, on this machine:" : `Before Run, for a ${mode} card with this machine's RAM:`;
    return clip(`${heading}\n${body.summary}`);
  }
  if (typeof body.error !== "string") return NOT_A_PLAN;
  if (body.status === 422) return clip(`Does not fit this machine (before Run):\n${body.error}`);
  const field = typeof body.field === "string" ? ` (${body.field})` : "";
  return clip(`Cannot plan this${field} (before Run):\n${body.error}`);
}

async function previewPlan(node) {
  const query = planQuery(node);
  const ticket = (node.wanfitPreviewTicket = (node.wanfitPreviewTicket ?? 0) + 1);
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), PREVIEW_TIMEOUT_MS);
  let text;
  try {
    // the preview route answers 200 with the outcome inside, so a job that does not fit is no console error
    const response = await api.fetchApi(`/wanfit/plan/preview?${query}`, { cache: "no-store", signal: abort.signal });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    text = previewText(node, response, body);
  } catch (error) {
    text = abort.signal.aborted
      ? `Plan preview unavailable: no answer within ${PREVIEW_TIMEOUT_MS / 1000} s. Run still plans the job.`
      : `Plan preview unavailable: ${error?.message ?? error}. Run still plans the job.`;
  } finally {
    clearTimeout(timer);
  }
  if (ticket !== node.wanfitPreviewTicket) return; // a newer edit asked again
  setReport(node, text);
}

function schedulePreview(node) {
  clearTimeout(node.wanfitPreviewTimer);
  node.wanfitPreviewTimer = setTimeout(() => previewPlan(node), PREVIEW_DELAY_MS);
}

function watchPlanWidgets(node) {
  for (const widget of node.widgets ?? []) {
    if (!PLAN_INPUTS.includes(widget.name) || widget.wanfitWatched) continue;
    const callback = widget.callback;
    widget.callback = function () {
      const result = callback?.apply(this, arguments);
      schedulePreview(node);
      return result;
    };
    widget.wanfitWatched = true;
  }
}

app.registerExtension({
  name: "WanFit.Editor",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const height = REPORT_HEIGHTS[nodeData.name];
    if (!height) return;
    const isPlan = nodeData.name === PLAN_NODE;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      addReportArea(this, height);
      fitNode(this);
      if (isPlan) {
        watchPlanWidgets(this);
        schedulePreview(this);
      }
      return result;
    };

    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      fitNode(this);
      if (isPlan) schedulePreview(this); // the loaded workflow's values, not the defaults
      return result;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (message?.text) setReport(this, message.text.join("\n"));
    };
  },
});
