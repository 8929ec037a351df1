//! The HTML document a rendered widget is served in, for a sandboxed iframe.

use serde_json::Value;

/// A complete HTML document for a sandboxed iframe. The CSP `sandbox` directive keeps the
/// document in an opaque origin even when opened directly, and the nonces allow only the
/// addon's own inline style and script: no other script, no network, no forms, no plugins.
pub fn frame_document(widget: &Value, nonce: &str) -> (String, String) {
    let t = |k: &str| widget.get(k).and_then(Value::as_str).unwrap_or("");
    // `</` inside inline style/script would end the element early.
    let css = t("css").replace("</", "<\\/");
    let js = t("javascript").replace("</", "<\\/");
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n<style nonce=\"{nonce}\">{css}</style></head>\n<body>\n{}\n<script nonce=\"{nonce}\">{js}</script>\n</body></html>\n",
        t("html")
    );
    let csp = format!(
        "sandbox allow-scripts; default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src data:; font-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'; frame-ancestors *"
    );
    (html, csp)
}
