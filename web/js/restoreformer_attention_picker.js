// Attention Map: pick the query point by clicking on the face.
// After a run the node receives the first face's aligned crop (ui key "rf_query_crop", sent by
// nodes/inspect_nodes.py); this extension shows it in the node and, on a click, sets the x and y
// widgets to the clicked point as fractions of the crop (units switched to relative). A ring marks
// the current point. Served at /extensions/<pack>/js/, hence three levels up to /scripts/.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const NODE_TYPE = "RestoreFormerAttentionMap";
const UI_KEY = "rf_query_crop";
const PICKER_HEIGHT = 200;

function widget(node, name) {
    return node.widgets?.find((w) => w.name === name);
}

function setWidget(node, name, value) {
    const w = widget(node, name);
    if (!w) return;
    w.value = value;
    w.callback?.(value, app.canvas, node);
}

// The units choice meaning "fractions of the crop" (the first option; found by its wording so the
// extension needs no copy of the Python list).
function relativeUnits(node) {
    const values = widget(node, "units")?.options?.values ?? [];
    return values.find((v) => String(v).startsWith("relative")) ?? values[0];
}

// The current query point as fractions of the shown crop, or null.
function currentPoint(node, image) {
    const x = Number(widget(node, "x")?.value);
    const y = Number(widget(node, "y")?.value);
    if (!Number.isFinite(x) || !Number.isFinite(y)) return null;
    if (widget(node, "units")?.value === relativeUnits(node)) return [x, y];
    const side = image.naturalWidth || 0;
    return side ? [x / side, y / side] : null;
}

function addPicker(node) {
    const box = document.createElement("div");
    box.className = "restoreformer-attention-picker";
    Object.assign(box.style, {
        position: "relative", display: "flex", alignItems: "center", justifyContent: "center",
        width: "100%", height: "100%", overflow: "hidden",
    });
    const hint = document.createElement("div");
    hint.textContent = "Run once, then click the face to pick the query point";
    Object.assign(hint.style, { fontSize: "12px", opacity: "0.7", textAlign: "center", padding: "8px" });
    const frame = document.createElement("div");  // wraps the image exactly, for the ring's position
    Object.assign(frame.style, { position: "relative", display: "none", maxWidth: "100%", maxHeight: "100%" });
    const image = document.createElement("img");
    image.alt = "face crop: click to pick the query point";
    Object.assign(image.style, {
        display: "block", maxWidth: "100%", maxHeight: `${PICKER_HEIGHT - 10}px`, cursor: "crosshair",
    });
    const ring = document.createElement("div");
    Object.assign(ring.style, {
        position: "absolute", width: "12px", height: "12px", marginLeft: "-6px", marginTop: "-6px",
        border: "2px solid #00e5ff", borderRadius: "50%", pointerEvents: "none", display: "none",
    });
    frame.append(image, ring);
    box.append(hint, frame);

    const placeRing = () => {
        const point = image.complete ? currentPoint(node, image) : null;
        ring.style.display = point ? "block" : "none";
        if (point) {
            ring.style.left = `${point[0] * 100}%`;
            ring.style.top = `${point[1] * 100}%`;
        }
    };
    image.addEventListener("load", placeRing);
    image.addEventListener("click", (event) => {
        const rect = image.getBoundingClientRect();
        if (!rect.width || !rect.height) return;
        const clamp = (v) => Math.min(1, Math.max(0, v));
        const round = (v) => Math.round(v * 1000) / 1000;  // the widgets' step
        const x = round(clamp((event.clientX - rect.left) / rect.width));
        const y = round(clamp((event.clientY - rect.top) / rect.height));
        setWidget(node, "units", relativeUnits(node));
        setWidget(node, "x", x);
        setWidget(node, "y", y);
        placeRing();
        node.setDirtyCanvas?.(true, true);
        event.stopPropagation();
    });
    for (const name of ["x", "y", "units"]) {
        const w = widget(node, name);
        if (!w) continue;
        const callback = w.callback;
        w.callback = function (...args) {
            const result = callback?.apply(this, args);
            placeRing();
            return result;
        };
    }

    const picker = node.addDOMWidget("query_point", "restoreformer_query_point", box, {
        serialize: false,
        hideOnZoom: false,
        getMinHeight: () => PICKER_HEIGHT,
        getMaxHeight: () => PICKER_HEIGHT,
    });
    picker.serialize = false;  // not a node input: keeps widgets_values as the node defines them
    node.restoreformerPicker = {
        image,
        show(entry) {
            const query = new URLSearchParams({
                filename: entry.filename, subfolder: entry.subfolder ?? "", type: entry.type ?? "temp",
            });
            image.src = api.apiURL(`/view?${query}`);
            hint.style.display = "none";
            frame.style.display = "block";
        },
    };
}

app.registerExtension({
    name: "RestoreFormer.AttentionPicker",
    async beforeRegisterNodeDef(nodeType, nodeData) {
        if (nodeData?.name !== NODE_TYPE) return;
        const onNodeCreated = nodeType.prototype.onNodeCreated;
        nodeType.prototype.onNodeCreated = function (...args) {
            const result = onNodeCreated?.apply(this, args);
            addPicker(this);
            return result;
        };
        const onExecuted = nodeType.prototype.onExecuted;
        nodeType.prototype.onExecuted = function (message, ...rest) {
            const result = onExecuted?.apply(this, [message, ...rest]);
            const entry = message?.[UI_KEY]?.[0];
            if (entry) this.restoreformerPicker?.show(entry);
            return result;
        };
    },
});
