import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

/**
 * Swagger UI served from the swagger-ui-dist package: the servers are air-gapped, so nothing may
 * come from a CDN (and @elysiajs/swagger hard-codes unpkg.com for its script). Only the listed
 * files are served; the page and its initializer are ours and point the UI at /docs/json.
 */
const ASSETS: Record<string, string> = {
  "swagger-ui.css": "text/css; charset=utf-8",
  "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
  "swagger-ui-standalone-preset.js": "text/javascript; charset=utf-8",
  "favicon-32x32.png": "image/png",
  "favicon-16x16.png": "image/png",
};

export const DOCS_ASSET_PREFIX = "/docs/assets/";

const PAGE = `<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>AutoAudit API</title>
    <link rel="stylesheet" type="text/css" href="${DOCS_ASSET_PREFIX}swagger-ui.css" />
    <link rel="icon" type="image/png" href="${DOCS_ASSET_PREFIX}favicon-32x32.png" sizes="32x32" />
    <style>html { box-sizing: border-box; overflow-y: scroll; } body { margin: 0; background: #fafafa; }</style>
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="${DOCS_ASSET_PREFIX}swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="${DOCS_ASSET_PREFIX}swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script src="${DOCS_ASSET_PREFIX}init.js" charset="UTF-8"></script>
  </body>
</html>
`;

const INIT = `window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/docs/json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
  });
};
`;

let distDir: string | undefined;
const loaded = new Map<string, Uint8Array<ArrayBuffer>>();

function asset(name: string): Uint8Array<ArrayBuffer> {
  let bytes = loaded.get(name);
  if (!bytes) {
    distDir ??= dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));
    bytes = new Uint8Array(readFileSync(join(distDir, name)));
    loaded.set(name, bytes);
  }
  return bytes;
}

/**
 * What the page may load: its own scripts and styles from this server, and calls to this API
 * ("Try it out"). Swagger UI styles elements inline and draws icons as data: images.
 */
export const DOCS_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
  "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

export function docsPage(): Response {
  return new Response(PAGE, { headers: { "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": DOCS_CSP } });
}

/** A file of the Swagger UI, or undefined for a name that is not one of them. */
export function docsAsset(name: string): Response | undefined {
  if (name === "init.js") {
    return new Response(INIT, { headers: { "Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "no-cache" } });
  }
  const type = ASSETS[name];
  if (!type) return undefined;
  return new Response(asset(name), { headers: { "Content-Type": type, "Cache-Control": "public, max-age=86400" } });
}
