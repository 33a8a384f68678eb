// Shows the pack's notices (e.g. "no face found: passed through unchanged") as toasts.
// Served at /extensions/<pack>/js/, hence three levels up to the frontend's /scripts/.
// The Python side sends them with PromptServer.instance.send_sync("restoreformer.notice", ...).
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

app.registerExtension({
    name: "RestoreFormer.Notices",
    setup() {
        api.addEventListener("restoreformer.notice", (event) => {
            const { title, message, severity } = event.detail ?? {};
            const toast = app.extensionManager?.toast;
            if (toast?.add) {
                toast.add({ severity: severity || "warn", summary: title || "RestoreFormer", detail: message, life: 8000 });
            } else {
                console.warn(`[${title || "RestoreFormer"}] ${message}`);
            }
        });
    },
});
